//! Who is calling a WebSocket: client tokens (JWT, HS256 or RS256) at the
//! handshake and in STOMP's CONNECT. The HTTP API's keys are in
//! `api::access`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use actix_web::{web, HttpRequest};
use herald_actors::session::{Identity, VerifyToken};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{AuthMode, Config, JwtKey};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required: pass it as ?token= or an Authorization: Bearer header")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot load the JWT public key {path}: {reason}")]
pub struct KeyError {
    path: String,
    reason: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: Option<u64>,
}

/// Checks client tokens as configured.
pub struct Authenticator {
    mode: AuthMode,
    verifier: Option<(DecodingKey, Validation)>,
}

impl Authenticator {
    pub fn from_config(config: &Config) -> Result<Self, KeyError> {
        let verifier = match &config.jwt {
            None => None,
            Some(JwtKey::Secret(secret)) => Some((
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )),
            Some(JwtKey::PublicKeyFile(path)) => {
                let failed = |reason: String| KeyError {
                    path: path.display().to_string(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
                let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| failed(e.to_string()))?;
                Some((key, Algorithm::RS256))
            }
        }
        .map(|(key, algorithm)| {
            let mut validation = Validation::new(algorithm);
            validation.required_spec_claims = HashSet::from(["sub".to_owned()]);
            validation.leeway = 0;
            (key, validation)
        });
        Ok(Authenticator {
            mode: config.auth,
            verifier,
        })
    }

    /// The identity a handshake's token (if any) proves.
    pub fn identify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some((key, validation)) = &self.verifier else {
            return Ok(Identity::default());
        };
        let Some(token) = token else {
            return match self.mode {
                AuthMode::Required => Err(AuthError::Missing),
                AuthMode::Optional => Ok(Identity::default()),
            };
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(err.to_string()),
            })?
            .claims;
        if claims.sub.is_empty()
            || !claims
                .sub
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
        {
            return Err(AuthError::Invalid(
                "`sub` must be one or more of A-Z a-z 0-9 _ : -".to_owned(),
            ));
        }
        Ok(Identity {
            user: Some(Arc::from(claims.sub)),
            expires_at: claims.exp.map(|exp| UNIX_EPOCH + Duration::from_secs(exp)),
        })
    }
}

/// Tokens a STOMP client presents in CONNECT are checked the same way as
/// a handshake's.
impl VerifyToken for Authenticator {
    fn enabled(&self) -> bool {
        self.verifier.is_some()
    }

    fn verify(&self, token: &str) -> Result<Identity, String> {
        self.identify(Some(token)).map_err(|err| err.to_string())
    }
}

/// The token a WebSocket handshake carries: `?token=` (what browsers can
/// send) or an `Authorization: Bearer` header.
pub fn handshake_token(req: &HttpRequest) -> Option<String> {
    #[derive(Deserialize)]
    struct TokenQuery {
        token: Option<String>,
    }
    if let Some(token) = bearer(req) {
        return Some(token.to_owned());
    }
    web::Query::<TokenQuery>::from_query(req.query_string())
        .ok()
        .and_then(|query| query.into_inner().token)
        .filter(|token| !token.is_empty())
}

/// The token or key after `Authorization: Bearer`.
pub(crate) fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}
