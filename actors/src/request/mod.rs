//! The WebSocket-to-REST pipeline as the core sees it: a `request` op (or a
//! STOMP `SEND` to `/service/...`, or a backend-initiated request) becomes a
//! [`ServiceCall`] handed to whatever implements [`CallServices`], and the
//! answer comes back already encoded for the asker.
//!
//! The core never learns how a call travels (the binary makes it over
//! HTTP): it builds the call from the client's fields, checks the caller may
//! make it ([`may_request`]), and spawns the returned future on the
//! session's own context, so a session that closes drops, and so cancels,
//! every call it still has in flight.

pub mod backend;
pub mod body;
pub mod frame;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::value::RawValue;

use crate::protocol::ErrorCode;
use crate::session::Identity;
use crate::topic::Permissions;

/// A bearer token kept to forward it; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Arc<str>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// On whose behalf a call is made.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The user's topic segment, as `user.{id}` and `X-Herald-User` show it.
    pub user: Option<Arc<str>>,
    /// The session's public name; `None` for backend-initiated calls.
    pub session: Option<Arc<str>>,
    /// The token the session presented, for services that want it.
    pub token: Option<Secret>,
}

impl Caller {
    pub fn of(identity: &Identity, session: &Arc<str>) -> Caller {
        Caller {
            user: identity.user.clone(),
            session: Some(session.clone()),
            token: identity.token.clone(),
        }
    }
}

/// The query a client gave: pairs to encode, or a query string as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Query {
    #[default]
    None,
    Pairs(Vec<(String, String)>),
    /// Checked by the caller's implementation before use.
    Raw(String),
}

/// A request body with its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBody {
    pub bytes: Bytes,
    pub content_type: String,
}

/// One call to a configured service, as the client described it.
#[derive(Debug, Clone)]
pub struct ServiceCall {
    pub service: String,
    /// Upper case.
    pub method: String,
    /// A path on the service, not yet checked.
    pub path: String,
    pub query: Query,
    /// The client's headers, names lower case, not yet filtered.
    pub headers: Vec<(String, String)>,
    pub body: Option<RequestBody>,
    pub caller: Caller,
    /// Sent as `X-Request-Id`, for tracing a call through the service.
    pub request_id: Arc<str>,
}

/// What the service answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Names lower case, repeated headers joined by `, `, in order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub content_type: Option<String>,
}

/// An answer encoded for its asker: a JSON frame, a STOMP frame, or what a
/// backend-initiated call delivers.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Bytes,
    /// Whether `bytes` is UTF-8 (a text WebSocket message).
    pub text: bool,
}

/// Turns an answer into what the asker receives; the frame it makes is what
/// the service's size cap applies to.
pub type Encode = Box<dyn FnOnce(&Answer) -> Encoded + Send>;

/// Why a call has no answer. Each maps to the client-facing code of the
/// contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no service named `{0}` is configured")]
    UnknownService(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the service did not answer within {0} ms")]
    Timeout(u64),
    #[error("the service could not be reached or failed mid-answer: {0}")]
    Upstream(String),
    #[error("the response is over {0} bytes once encoded")]
    TooLarge(usize),
    #[error("{0}")]
    Unavailable(String),
}

impl CallError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::UnknownService(_) => ErrorCode::UnknownService,
            CallError::Forbidden(_) => ErrorCode::Forbidden,
            CallError::BadRequest(_) => ErrorCode::BadRequest,
            CallError::Timeout(_) => ErrorCode::Timeout,
            CallError::Upstream(_) => ErrorCode::UpstreamError,
            CallError::TooLarge(_) => ErrorCode::TooLarge,
            CallError::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

/// Makes calls to the configured services.
pub trait CallServices: Send + Sync {
    /// Performs `call` and encodes its answer with `encode`. Refusals
    /// (unknown service, a path that is not the service's, a saturated
    /// service or session) resolve at once; the future never outlives the
    /// service's timeout. Dropping the future cancels the call.
    fn call(
        &self,
        call: ServiceCall,
        encode: Encode,
    ) -> BoxFuture<'static, Result<Encoded, CallError>>;
}

/// The node's services, if any are configured.
#[derive(Clone, Default)]
pub struct Services(pub Option<Arc<dyn CallServices>>);

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Services(configured)"
        } else {
            "Services(none)"
        })
    }
}

/// Whether `identity` may call `service`: the one place a session's call is
/// checked, by the `[[permissions]]` rules' `request = ...` for the service
/// (a service no rule names is open to every session).
pub fn may_request(permissions: &Permissions, service: &str, identity: &Identity) -> bool {
    permissions.may_request(service, identity.claims.as_deref())
}

/// The methods a client may ask for; TRACE only where a service opts in.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

/// The method in upper case, if it is one of [`METHODS`].
pub fn normalize_method(method: &str) -> Option<&'static str> {
    METHODS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(method))
        .copied()
}

/// A JSON id, or `null` when the asker gave none.
pub fn id_or_null(id: Option<&RawValue>) -> &RawValue {
    id.unwrap_or(RawValue::NULL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_matched_whatever_their_case_and_others_are_refused() {
        assert_eq!(normalize_method("get"), Some("GET"));
        assert_eq!(normalize_method("Patch"), Some("PATCH"));
        assert_eq!(normalize_method("CONNECT"), None);
        assert_eq!(normalize_method("GET "), None);
    }

    #[test]
    fn a_secret_never_prints() {
        let caller = Caller {
            token: Some(Secret(Arc::from("eyJ.secret.x"))),
            ..Caller::default()
        };
        assert!(!format!("{caller:?}").contains("secret.x"));
    }
}
