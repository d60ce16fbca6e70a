//! Who is calling a WebSocket: client tokens (JWTs from a secret, PEM
//! public keys or an identity provider's JWKS) at the handshake and in
//! STOMP's CONNECT. The HTTP API's keys are in `api::access`.
//!
//! A token is checked in this order: its shape and header (`alg` must be
//! one Herald supports, never `none`), then the keys its `alg` and `kid`
//! select among those configured (HMAC tokens only against the secret, so
//! a public key can never be used as an HMAC secret), then its signature,
//! then its claims (`exp`, `nbf`, `iss`, `aud`), then the user claim, then
//! the revocation list (a token revoked by its `jti`, or one of a user whose
//! tokens issued before some time were revoked, proves nothing any more).

mod jwks;
mod keys;
pub mod user_id;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use herald_actors::revocation::RevocationList;
use herald_actors::session::{Identity, VerifyToken};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use log::info;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{AuthMode, Config, JwtSettings};
use jwks::Jwks;
pub use keys::KeyError;
use keys::PublicKey;
use user_id::UserIdError;

/// Tokens longer than this are refused unread: no identity provider issues
/// them, and parsing costs would be the attacker's to choose.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token proves no identity. The messages go to the client (HTTP 401
/// body, STOMP `ERROR`) and to the log; none of them quotes the token.
/// A client's text in messages and logs: quoted, escaped, and cut short,
/// so a hostile token cannot flood or forge log lines.
fn shown(text: &str) -> String {
    const LONGEST: usize = 64;
    let cut: String = text.chars().take(LONGEST).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    format!("{cut:?}{more}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required: pass it as ?token= or an Authorization: Bearer header")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    #[error("unknown key id {}: no configured key has it (the identity provider's keys are refetched, at most every 30 s)", shown(.0))]
    UnknownKeyId(String),
    #[error("the identity provider's keys have not been fetched yet from {0}: tokens cannot be verified until they are")]
    KeysNotFetched(String),
    #[error("wrong signature: no configured key verifies this token")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not yet valid (`nbf` is in the future)")]
    NotYetValid,
    #[error("wrong issuer: the token's `iss` is not the configured issuer")]
    WrongIssuer,
    #[error("wrong audience: the token's `aud` does not name the configured audience")]
    WrongAudience,
    #[error("the token has no `{0}` claim{hint}", hint = if .0 == "exp" { " (tokens without one are accepted only with HERALD_JWT_ALLOW_NO_EXP=true)" } else { "" })]
    MissingClaim(String),
    #[error("the `{claim}` claim cannot name a user: {reason}")]
    BadUser { claim: String, reason: String },
    #[error("the token was revoked")]
    Revoked,
}

/// What the first part of a token says about how it is signed.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// Everything needed to check a token, built once from the settings.
struct Verifier {
    secret: Option<Arc<DecodingKey>>,
    pem_keys: Vec<PublicKey>,
    jwks: Option<Arc<Jwks>>,
    /// Claim rules shared by every algorithm; `algorithms` is filled in per
    /// token.
    validation: Validation,
    user_claim: String,
}

/// Checks client tokens as configured.
pub struct Authenticator {
    mode: AuthMode,
    verifier: Option<Verifier>,
    /// Tokens revoked before their expiry; `None` checks none.
    revocations: Option<Arc<RevocationList>>,
}

impl Authenticator {
    pub fn from_config(config: &Config) -> Result<Self, KeyError> {
        let verifier = config.jwt.as_ref().map(Verifier::new).transpose()?;
        Ok(Authenticator {
            mode: config.auth,
            verifier,
            revocations: None,
        })
    }

    /// Refuses, from now on, every token `revocations` voids.
    pub fn with_revocations(mut self, revocations: Arc<RevocationList>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// Starts fetching the identity provider's keys, when a JWKS URL is
    /// set. Must run inside the actix system.
    pub fn spawn_key_refresh(&self) {
        if let Some(jwks) = self.verifier.as_ref().and_then(|v| v.jwks.clone()) {
            actix_web::rt::spawn(jwks.keep_fresh());
        }
    }

    /// Why the node cannot verify tokens yet, if it cannot.
    pub fn not_ready_because(&self) -> Option<String> {
        let jwks = self.verifier.as_ref()?.jwks.as_ref()?;
        (!jwks.is_ready()).then(|| {
            format!(
                "the token keys have not been fetched yet from {}",
                jwks.url()
            )
        })
    }

    /// The identity a handshake's token (if any) proves.
    pub fn identify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some(verifier) = &self.verifier else {
            return Ok(Identity::default());
        };
        let Some(token) = token else {
            return match self.mode {
                AuthMode::Required => Err(AuthError::Missing),
                AuthMode::Optional => Ok(Identity::default()),
            };
        };
        verifier
            .verify(token)
            .and_then(|identity| self.unless_revoked(identity))
            .map(|identity| Identity {
                // Kept for services that are configured to receive it.
                token: Some(herald_actors::request::Secret(Arc::from(token))),
                ..identity
            })
            .inspect_err(|err| {
                // The reason only: a token is a credential and never logged.
                info!("refused a token: {err}");
            })
    }

    /// Checked after the signature: only a token that proves its claims
    /// may be told apart from the revoked ones by them.
    fn unless_revoked(&self, identity: Identity) -> Result<Identity, AuthError> {
        let Some(list) = &self.revocations else {
            return Ok(identity);
        };
        if list.refuses(
            identity.user.as_deref(),
            identity.token_id.as_deref(),
            identity.issued_at,
        ) {
            return Err(AuthError::Revoked);
        }
        Ok(identity)
    }
}

impl Verifier {
    fn new(settings: &JwtSettings) -> Result<Verifier, KeyError> {
        let pem_keys = settings
            .public_keys
            .iter()
            .map(|path| keys::load_pem(path))
            .collect::<Result<Vec<_>, _>>()?;
        let jwks = settings
            .jwks_url
            .as_deref()
            .map(|url| Jwks::new(url, settings.jwks_refresh).map(Arc::new))
            .transpose()?;
        let mut validation = Validation::new(Algorithm::HS256);
        // Seconds, rounded up, so that a leeway of 500ms is not none.
        validation.leeway = settings.leeway.as_millis().div_ceil(1000) as u64;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = HashSet::new();
        if !settings.allow_no_exp {
            required.insert("exp".to_owned());
        }
        if settings.issuers.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&settings.issuers);
            required.insert("iss".to_owned());
        }
        if settings.audiences.is_empty() {
            // Providers put an `aud` in nearly every token; with no audience
            // configured it is not Herald's to judge.
            validation.validate_aud = false;
        } else {
            validation.set_audience(&settings.audiences);
            required.insert("aud".to_owned());
        }
        validation.required_spec_claims = required;
        Ok(Verifier {
            secret: settings
                .secret
                .as_ref()
                .map(|secret| Arc::new(DecodingKey::from_secret(secret.as_bytes()))),
            pem_keys,
            jwks,
            validation,
            user_claim: settings.user_claim.clone(),
        })
    }

    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let (algorithm, kid) = read_header(token)?;
        let (candidates, unknown_kid) = self.keys_for(algorithm, kid.as_deref())?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![algorithm];
        let mut claims = None;
        for key in &candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                // This key is not the one; another may be.
                Err(err) if key_did_not_fit(err.kind()) => continue,
                Err(err) => return Err(refusal(err.kind())),
            }
        }
        let Some(claims) = claims else {
            return Err(match unknown_kid {
                Some(kid) => AuthError::UnknownKeyId(kid),
                None => AuthError::BadSignature,
            });
        };
        self.identity(&claims)
    }

    /// The keys that may verify a token signed with `algorithm` and naming
    /// `kid`, and the key id if it named one nobody has.
    fn keys_for(
        &self,
        algorithm: Algorithm,
        kid: Option<&str>,
    ) -> Result<(Vec<Arc<DecodingKey>>, Option<String>), AuthError> {
        if is_hmac(algorithm) {
            return match &self.secret {
                Some(secret) => Ok((vec![secret.clone()], None)),
                None => Err(AuthError::AlgorithmNotAllowed(format!(
                    "{algorithm:?} needs an HMAC secret, and none is configured"
                ))),
            };
        }
        let from_provider = self.jwks.as_ref().map(|jwks| jwks.current());
        let fetched: &[PublicKey] = match &from_provider {
            Some(Some(keys)) => keys,
            _ => &[],
        };
        let mut keys: Vec<Arc<DecodingKey>> = Vec::new();
        let mut unknown_kid = None;
        if let Some(kid) = kid {
            keys.extend(
                fetched
                    .iter()
                    .filter(|key| key.kid.as_deref() == Some(kid) && key.verifies(algorithm))
                    .map(|key| key.key.clone()),
            );
            if let Some(named) = fetched.iter().find(|key| key.kid.as_deref() == Some(kid)) {
                if keys.is_empty() {
                    // The key exists but is for another algorithm: swapping
                    // `alg` on a real key id is an attack, not a rotation.
                    return Err(AuthError::AlgorithmNotAllowed(format!(
                        "{algorithm:?}: key `{kid}` is for {:?}",
                        named.algorithms
                    )));
                }
            } else if let Some(jwks) = &self.jwks {
                unknown_kid = Some(kid.to_owned());
                jwks.request_refetch();
            }
        } else {
            keys.extend(
                fetched
                    .iter()
                    .filter(|key| key.verifies(algorithm))
                    .map(|key| key.key.clone()),
            );
        }
        if keys.is_empty() {
            // PEM files carry no key id; a token naming one may still be
            // signed by them.
            keys.extend(
                self.pem_keys
                    .iter()
                    .filter(|key| key.verifies(algorithm))
                    .map(|key| key.key.clone()),
            );
        }
        if keys.is_empty() {
            if let (Some(jwks), Some(None)) = (&self.jwks, &from_provider) {
                return Err(AuthError::KeysNotFetched(jwks.url().to_owned()));
            }
            if let Some(kid) = unknown_kid {
                return Err(AuthError::UnknownKeyId(kid));
            }
            return Err(AuthError::AlgorithmNotAllowed(format!(
                "no configured key verifies {algorithm:?}"
            )));
        }
        Ok((keys, unknown_kid))
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthError> {
        let bad_user = |reason: String| AuthError::BadUser {
            claim: self.user_claim.clone(),
            reason,
        };
        let user = match claims.get(&self.user_claim) {
            None | Some(Value::Null) => {
                return Err(AuthError::MissingClaim(self.user_claim.clone()))
            }
            Some(Value::String(user)) => user.clone(),
            Some(Value::Number(number)) if number.is_u64() || number.is_i64() => number.to_string(),
            Some(_) => return Err(bad_user("it is neither a string nor an integer".to_owned())),
        };
        let segment =
            user_id::to_segment(&user).map_err(|err: UserIdError| bad_user(err.to_string()))?;
        Ok(Identity {
            user: Some(Arc::from(segment)),
            expires_at: unix_time(claims, "exp"),
            issued_at: unix_time(claims, "iat"),
            token_id: claims.get("jti").and_then(Value::as_str).map(Arc::from),
            claims: Some(Arc::new(claims.clone())),
            token: None,
        })
    }
}

/// A NumericDate claim (seconds since the epoch) as a time.
fn unix_time(claims: &Map<String, Value>, name: &str) -> Option<SystemTime> {
    claims
        .get(name)
        .and_then(Value::as_f64)
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .and_then(|since| UNIX_EPOCH.checked_add(since))
}

fn is_hmac(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

/// The algorithm and key id a token's header names, checked before any
/// key is touched.
fn read_header(token: &str) -> Result<(Algorithm, Option<String>), AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed(format!(
            "longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "a JWT is three base64url parts separated by dots".to_owned(),
        ));
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            AuthError::Malformed("the header is not base64url JSON with an `alg`".to_owned())
        })?;
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(AuthError::AlgorithmNotAllowed(
            "`none`: unsigned tokens are never accepted".to_owned(),
        ));
    }
    let algorithm: Algorithm = header.alg.parse().map_err(|_| {
        AuthError::AlgorithmNotAllowed(format!(
            "`{}` is not one of HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA",
            header.alg.chars().take(32).collect::<String>()
        ))
    })?;
    if signature.is_empty() {
        return Err(AuthError::Malformed("the signature is empty".to_owned()));
    }
    Ok((algorithm, header.kid))
}

/// Whether a failure only says this key is not the one that signed.
fn key_did_not_fit(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidAlgorithm
    )
}

fn refusal(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::Malformed(format!("the `{claim}` claim has the wrong type"))
        }
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm => {
            AuthError::AlgorithmNotAllowed("the key does not fit the algorithm".to_owned())
        }
        ErrorKind::Base64(_) => AuthError::Malformed("a part is not base64url".to_owned()),
        ErrorKind::Json(_) => AuthError::Malformed("the claims are not a JSON object".to_owned()),
        ErrorKind::Utf8(_) => AuthError::Malformed("a part is not UTF-8".to_owned()),
        other => AuthError::Malformed(format!("{other:?}")),
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

pub(crate) fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}
