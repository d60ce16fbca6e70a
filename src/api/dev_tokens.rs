//! `GET` and `POST /api/dev/token`: the development-only token minter, for
//! trying Herald (and its demo page) without an identity provider.
//!
//! Off unless `HERALD_DEV_TOKENS=true`, and then only with an HMAC secret
//! to sign with (the config refuses it otherwise). While off, both routes
//! answer 404 exactly as a path Herald does not serve, whatever the caller
//! sends. While on, they take the same access rule as the rest of the
//! backends' API ([`ApiAccess`]): the API key, or with no key set, a caller
//! on this host that names it `localhost`, `127.0.0.1`, `[::1]` or the
//! listen address in `Host`, so that a page on a DNS-rebinding domain open
//! in the developer's browser cannot mint itself a token. A minted token is an ordinary HS256 JWT carrying the
//! configured user claim, `iat`, `exp`, a random `jti`, and the configured
//! issuer and audience, so this node (and any node sharing the secret)
//! accepts it like one from an identity provider.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::access::ApiAccess;
use super::ApiError;
use crate::auth::user_id;
use crate::config::JwtSettings;
use crate::state::AppState;

/// A token lives this long unless the request says otherwise.
pub const DEFAULT_TTL_SECS: u64 = 300;
/// The longest lifetime a minted token may ask for: a day, so a forgotten
/// development token does not outlive the trial by much.
pub const MAX_TTL_SECS: u64 = 86_400;
/// The longest user id accepted, in bytes, before it is mapped to a topic
/// segment (which has its own, tighter bound for ids that need encoding).
pub const MAX_USER_BYTES: usize = 128;
/// A request body is a user, a number and a few claims: anything bigger
/// is a mistake, refused before it is parsed.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Claims the minter sets itself. A request may not write them through
/// `claims`, since that would undo the bounded lifetime or the node's own
/// issuer and audience.
const MINTED_CLAIMS: [&str; 6] = ["iat", "exp", "nbf", "jti", "iss", "aud"];

/// Why a mint request is refused; each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("the body must be a JSON object such as {{\"user\":\"alice\",\"ttl_secs\":60}}: {0}")]
    Body(String),
    #[error("`user` must be a non-empty string")]
    NoUser,
    #[error("`user` is {0} bytes long; at most {MAX_USER_BYTES} are allowed")]
    UserTooLong(usize),
    #[error("`user` cannot name a user: {0}")]
    BadUser(String),
    #[error("`ttl_secs` must be a whole number of seconds from 1 to {MAX_TTL_SECS}")]
    BadTtl,
    #[error("`claims` must be a JSON object of extra claims")]
    BadClaims,
    #[error("`claims` may not set `{0}`: the token's lifetime, id, issuer, audience and user come from `ttl_secs`, `user` and the node's settings")]
    ReservedClaim(String),
    #[error("cannot sign the token: {0}")]
    Signing(String),
}

/// Signs development tokens with the node's HMAC secret.
pub struct DevTokens {
    key: EncodingKey,
    user_claim: String,
    issuer: Option<String>,
    audience: Option<String>,
}

/// A token the minter signed, and when it stops being accepted.
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    pub expires_at: u64,
    pub token_id: String,
    /// The user as the node names it (`user.{id}`, the `welcome` frame).
    pub user: String,
}

/// `POST /api/dev/token`'s body. The fields are read as any JSON value and
/// checked by [`DevTokens::mint`], so that a mistyped one is refused with
/// a message naming it (serde's own names only the type it expected).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    pub user: Option<Value>,
    pub ttl_secs: Option<Value>,
    pub claims: Option<Value>,
}

impl DevTokens {
    /// A minter for these token settings; `None` when they have no HMAC
    /// secret (the config makes that a start-up error when dev tokens are
    /// on, so this is a second line of defence only).
    pub fn new(settings: &JwtSettings) -> Option<DevTokens> {
        let secret = settings.secret.as_deref().filter(|s| !s.is_empty())?;
        Some(DevTokens {
            key: EncodingKey::from_secret(secret.as_bytes()),
            user_claim: settings.user_claim.clone(),
            // Several accepted values: any one passes the node's check.
            issuer: settings.issuers.first().cloned(),
            audience: settings.audiences.first().cloned(),
        })
    }

    /// The claim the node reads the user from.
    pub fn user_claim(&self) -> &str {
        &self.user_claim
    }

    /// Checks a request and signs its token, valid from `now` (seconds
    /// since the epoch).
    pub fn mint(&self, request: MintRequest, now: u64) -> Result<Minted, MintError> {
        let user = match request.user {
            Some(Value::String(user)) if !user.is_empty() => user,
            _ => return Err(MintError::NoUser),
        };
        if user.len() > MAX_USER_BYTES {
            return Err(MintError::UserTooLong(user.len()));
        }
        // The same mapping the node applies to the token's claim, so a
        // token is never minted for an id the node would refuse.
        let segment =
            user_id::to_segment(&user).map_err(|err| MintError::BadUser(err.to_string()))?;
        let ttl = match request.ttl_secs {
            None => DEFAULT_TTL_SECS,
            Some(ttl) => ttl
                .as_u64()
                .filter(|ttl| (1..=MAX_TTL_SECS).contains(ttl))
                .ok_or(MintError::BadTtl)?,
        };
        let mut claims = match request.claims {
            None => Map::new(),
            Some(Value::Object(claims)) => claims,
            Some(_) => return Err(MintError::BadClaims),
        };
        let reserved = claims
            .keys()
            .find(|name| MINTED_CLAIMS.contains(&name.as_str()) || **name == self.user_claim);
        if let Some(name) = reserved {
            return Err(MintError::ReservedClaim(name.clone()));
        }
        let expires_at = now.saturating_add(ttl);
        let token_id = format!("dev-{:032x}", rand::random::<u128>());
        claims.insert(self.user_claim.clone(), Value::String(user));
        claims.insert("iat".to_owned(), json!(now));
        claims.insert("exp".to_owned(), json!(expires_at));
        claims.insert("jti".to_owned(), Value::String(token_id.clone()));
        if let Some(issuer) = &self.issuer {
            claims.insert("iss".to_owned(), Value::String(issuer.clone()));
        }
        if let Some(audience) = &self.audience {
            claims.insert("aud".to_owned(), Value::String(audience.clone()));
        }
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|err| MintError::Signing(err.to_string()))?;
        Ok(Minted {
            token,
            expires_at,
            token_id,
            user: segment,
        })
    }
}

impl From<MintError> for ApiError {
    fn from(err: MintError) -> Self {
        match err {
            MintError::Signing(why) => ApiError::internal(&format!("dev token: {why}")),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

/// The minter, when dev tokens are on; 404 otherwise. Access is checked
/// only after that, so a node without them looks like one that never had
/// the route.
async fn enabled<'a>(req: &HttpRequest, state: &'a AppState) -> Result<&'a DevTokens, ApiError> {
    let minter = state
        .dev_tokens
        .as_deref()
        .ok_or_else(ApiError::not_found)?;
    ApiAccess::extract(req).await?;
    Ok(minter)
}

/// `GET /api/dev/token`: whether this node mints development tokens (what
/// the demo page asks before it offers "sign in as"), and within what
/// bounds.
pub async fn info(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let minter = enabled(&req, &state).await?;
    Ok(HttpResponse::Ok().json(json!({
        "enabled": true,
        "default_ttl_secs": DEFAULT_TTL_SECS,
        "max_ttl_secs": MAX_TTL_SECS,
        "max_user_bytes": MAX_USER_BYTES,
        "user_claim": minter.user_claim(),
    })))
}

/// `POST /api/dev/token`: `{"user", "ttl_secs"?, "claims"?}` →
/// `{"token", "expires_at", "jti", "user"}`.
pub async fn mint(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let minter = enabled(&req, &state).await?;
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large(format!(
            "a dev token request is at most {MAX_BODY_BYTES} bytes"
        )));
    }
    let request: MintRequest =
        serde_json::from_slice(&body).map_err(|err| MintError::Body(err.to_string()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ApiError::internal("the system clock is before 1970"))?
        .as_secs();
    let minted = minter.mint(request, now)?;
    log::info!(
        "minted a development token for user {} (jti {}, expires at {})",
        minted.user,
        minted.token_id,
        minted.expires_at
    );
    Ok(HttpResponse::Ok().json(json!({
        "token": minted.token,
        "expires_at": minted.expires_at,
        "jti": minted.token_id,
        "user": minted.user,
    })))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings(secret: Option<&str>) -> JwtSettings {
        JwtSettings {
            secret: secret.map(str::to_owned),
            public_keys: Vec::new(),
            jwks_url: None,
            jwks_refresh: Duration::from_secs(300),
            issuers: vec!["https://idp.test".to_owned(), "other".to_owned()],
            audiences: vec!["herald".to_owned()],
            leeway: Duration::from_secs(5),
            user_claim: "sub".to_owned(),
            allow_no_exp: false,
        }
    }

    fn request(body: Value) -> MintRequest {
        serde_json::from_value(body).expect("a request body")
    }

    fn payload(token: &str) -> Map<String, Value> {
        use base64::Engine;
        let part = token.split('.').nth(1).expect("three parts");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON claims")
    }

    #[test]
    fn no_secret_no_minter() {
        assert!(DevTokens::new(&settings(None)).is_none());
        assert!(DevTokens::new(&settings(Some(""))).is_none());
    }

    #[test]
    fn a_token_carries_user_times_id_issuer_audience_and_extra_claims() {
        let minter = DevTokens::new(&settings(Some("s"))).expect("a minter");
        let minted = minter
            .mint(
                request(json!({"user": "alice", "ttl_secs": 60, "claims": {"team": "42"}})),
                1_000,
            )
            .expect("minted");
        assert_eq!(minted.expires_at, 1_060);
        let claims = payload(&minted.token);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["iat"], 1_000);
        assert_eq!(claims["exp"], 1_060);
        assert_eq!(claims["iss"], "https://idp.test");
        assert_eq!(claims["aud"], "herald");
        assert_eq!(claims["team"], "42");
        assert_eq!(claims["jti"], minted.token_id.as_str());
        let again = minter
            .mint(request(json!({"user": "alice"})), 1_000)
            .expect("minted");
        assert_ne!(again.token_id, minted.token_id, "a fresh jti each time");
        assert_eq!(again.expires_at, 1_000 + DEFAULT_TTL_SECS);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let minter = DevTokens::new(&settings(Some("s"))).expect("a minter");
        let refused = |body: Value| minter.mint(request(body), 1_000).expect_err("refused");
        assert_eq!(refused(json!({})), MintError::NoUser);
        assert_eq!(refused(json!({"user": ""})), MintError::NoUser);
        assert_eq!(
            refused(json!({"user": "a".repeat(MAX_USER_BYTES + 1)})),
            MintError::UserTooLong(MAX_USER_BYTES + 1)
        );
        assert_eq!(
            refused(json!({"user": "a", "ttl_secs": 0})),
            MintError::BadTtl
        );
        for ttl in [json!(MAX_TTL_SECS + 1), json!(-1), json!(1.5), json!("60")] {
            assert_eq!(
                refused(json!({"user": "a", "ttl_secs": ttl})),
                MintError::BadTtl
            );
        }
        assert_eq!(refused(json!({"user": 7})), MintError::NoUser);
        assert_eq!(
            refused(json!({"user": "a", "claims": [1]})),
            MintError::BadClaims
        );
        for claim in ["exp", "iat", "jti", "iss", "aud", "nbf", "sub"] {
            assert_eq!(
                refused(json!({"user": "a", "claims": {claim: 1}})),
                MintError::ReservedClaim(claim.to_owned())
            );
        }
        // An id that is no topic segment is minted as it is; the node
        // names the user by its encoded form.
        let minted = minter
            .mint(request(json!({"user": "alice@example.com"})), 1_000)
            .expect("minted");
        assert_eq!(minted.user, "b64:YWxpY2VAZXhhbXBsZS5jb20");
        assert_eq!(payload(&minted.token)["sub"], "alice@example.com");
    }
}
