//! Who may call the HTTP API: backends with the API key, operators with the
//! admin key, and, while no key is configured, callers on this host only,
//! addressing it by a local name (not a DNS-rebinding domain).
//!
//! Taking [`ApiAccess`] or [`AdminAccess`] as a handler argument is what
//! guards a route.

use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::auth::bearer;
use crate::client_ip::is_trusted;
use crate::state::AppState;

/// The caller may publish and message users: it presented the API key (or
/// the admin key), or no key is configured and it called from this host.
pub struct ApiAccess;

/// The caller may do what operators do (kick users, read stats and
/// topics): it presented the admin key, or the API key while no admin key
/// is configured, or no key is configured at all and it called from this
/// host.
pub struct AdminAccess;

/// Headers a reverse proxy adds: a request carrying one came from
/// somewhere else, whatever its socket peer says.
const PROXY_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

impl FromRequest for ApiAccess {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(check(req, Need::Api).map(|()| ApiAccess))
    }
}

impl FromRequest for AdminAccess {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(check(req, Need::Admin).map(|()| AdminAccess))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Api,
    Admin,
}

/// Whether `given` is `key`, compared in constant time.
fn same_key(given: &str, key: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(key.as_bytes()))
}

/// Whether `req` may read what operators read, by the rule of
/// [`AdminAccess`]; the dashboard's own routes add its login cookie to it.
pub(crate) fn check_admin(req: &HttpRequest) -> Result<(), ApiError> {
    check(req, Need::Admin)
}

/// The key that opens operators' endpoints, if any is configured.
pub(crate) fn operator_key(state: &AppState) -> Option<&str> {
    state.admin_key.as_deref().or(state.api_key.as_deref())
}

/// Whether `given` is the operators' key, compared in constant time.
pub(crate) fn is_operator_key(state: &AppState, given: &str) -> bool {
    operator_key(state).is_some_and(|key| same_key(given, key))
}

fn check(req: &HttpRequest, need: Need) -> Result<(), ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("application state missing"))?;
    let admin = state.admin_key.as_deref();
    let api = state.api_key.as_deref();
    let given = bearer(req).or_else(|| req.headers().get("x-api-key")?.to_str().ok());
    // The keys that open what is asked for, the stronger first.
    let accepted: Vec<&str> = match need {
        Need::Admin => admin.or(api).into_iter().collect(),
        // With no API key, backends' endpoints stay open to this host (the
        // admin key, if any, opens them too).
        Need::Api if api.is_none() => {
            let admin_given = admin
                .zip(given)
                .is_some_and(|(admin, given)| same_key(given, admin));
            return if admin_given {
                Ok(())
            } else {
                local_only(req, state)
            };
        }
        Need::Api => api.into_iter().chain(admin).collect(),
    };
    if accepted.is_empty() {
        return local_only(req, state);
    }
    let Some(given) = given else {
        return Err(ApiError::unauthorized(
            "a key is required (Authorization: Bearer KEY or X-API-Key)",
        ));
    };
    // Every key is compared, in constant time, whichever matches.
    let matched = accepted
        .iter()
        .fold(false, |any, key| any | same_key(given, key));
    if matched {
        Ok(())
    } else if need == Need::Admin && api.is_some_and(|api| same_key(given, api)) {
        Err(ApiError::forbidden(
            "this needs the admin key (HERALD_ADMIN_KEY); the API key opens publishing only",
        ))
    } else {
        Err(ApiError::forbidden("wrong key"))
    }
}

/// With no key configured, the API serves this host only: a loopback peer
/// that is no trusted proxy, whose request carries no forwarding header
/// (behind a reverse proxy on the same host every caller would look local;
/// one that adds no header is caught only by listing it as a proxy, or by
/// setting a key, as the docs say) and whose `Host` is a local name.
fn local_only(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let peer = req.peer_addr().map(|addr| addr.ip());
    // A listed proxy forwards others' requests, headers or not.
    let from_proxy = peer.is_some_and(|ip| is_trusted(ip, &state.trusted_proxies));
    let proxied = from_proxy
        || PROXY_HEADERS
            .iter()
            .any(|name| req.headers().contains_key(*name));
    if proxied {
        return Err(ApiError::forbidden(
            "this request came through a proxy, and the HTTP API is open to this host only while no key is configured: set HERALD_API_KEY (and HERALD_ADMIN_KEY) and send it as Authorization: Bearer KEY",
        ));
    }
    let loopback = peer.is_some_and(|ip: IpAddr| ip.is_loopback());
    if !loopback {
        return Err(ApiError::forbidden(
            "the HTTP API answers only callers on this host while no key is configured: set HERALD_API_KEY",
        ));
    }
    // A loopback peer may still be a web page in the developer's browser:
    // a page on a domain that rebinds its name to 127.0.0.1 reaches this
    // port as a same-origin request, and could mint and read tokens or kick
    // users. Its requests carry that domain in `Host`; only names an
    // attacker cannot own pass.
    if !local_host(req) {
        return Err(ApiError::forbidden(
            "while no key is configured the HTTP API answers only requests addressed to localhost, 127.0.0.1, [::1] or this node's listen address (the Host header): use one of those, or set HERALD_API_KEY (and HERALD_ADMIN_KEY) and send it as Authorization: Bearer KEY",
        ));
    }
    // A page on any other site can still make the browser send a form
    // POST (drain, publish, kick) to http://127.0.0.1: the Host is then
    // local and the peer loopback. Browsers say where such a request came
    // from; curl and backends send neither header and pass.
    if cross_site(req) {
        return Err(ApiError::forbidden(
            "this request came from a web page on another site, and while no key is configured the HTTP API answers only calls made from this host (curl, a backend): set HERALD_API_KEY (and HERALD_ADMIN_KEY) and send it as Authorization: Bearer KEY, or call from the host without a browser",
        ));
    }
    Ok(())
}

/// Whether a browser marked `req` as sent by a page of another site:
/// `Sec-Fetch-Site` says `cross-site` or `same-site`, or `Origin` names a
/// host other than a loopback or local name. An `Origin` that cannot be
/// read, or is `null` (sandboxed frames, file pages), counts as foreign.
fn cross_site(req: &HttpRequest) -> bool {
    let headers = req.headers();
    let fetch_site = headers.get("sec-fetch-site").map(|value| {
        value
            .to_str()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    if matches!(fetch_site.as_deref(), Some("cross-site" | "same-site")) {
        return true;
    }
    match headers.get(header::ORIGIN) {
        None => false,
        Some(origin) => !matches!(
            origin.to_str().ok().and_then(origin_host),
            Some(host) if is_local_name(req, host)
        ),
    }
}

/// The host of an origin `scheme://host[:port]`, without its port; `None`
/// for `null` or anything not shaped like an origin.
fn origin_host(origin: &str) -> Option<&str> {
    let (_, rest) = origin.trim().split_once("://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let name = host_name(authority);
    (!name.is_empty()).then_some(name)
}

/// Whether the request names this host as `localhost`, `127.0.0.1`,
/// `[::1]` or the address the node listens on, with any port.
fn local_host(req: &HttpRequest) -> bool {
    // HTTP/2 carries the name in the URI's authority instead of `Host`.
    let given = match req.headers().get(header::HOST) {
        Some(value) => value.to_str().ok(),
        None => req.uri().authority().map(|authority| authority.as_str()),
    };
    let Some(given) = given else {
        return false;
    };
    is_local_name(req, host_name(given))
}

/// Whether `name` (a host without its port) is `localhost`, `127.0.0.1`,
/// `[::1]` or the address the node listens on.
fn is_local_name(req: &HttpRequest, name: &str) -> bool {
    let listen = req.app_config().local_addr().ip();
    name.eq_ignore_ascii_case("localhost")
        || name == "127.0.0.1"
        || name == "[::1]"
        || name == listen.to_string()
        || name == format!("[{listen}]")
}

/// `given` without its port: `[::1]:8080` is `[::1]`, `localhost:8080` is
/// `localhost`, `localhost` stays.
fn host_name(given: &str) -> &str {
    let port_at = if given.starts_with('[') {
        // An IPv6 literal: the port, if any, follows the bracket.
        given.find("]:").map(|at| at + 1)
    } else {
        given.rfind(':')
    };
    match port_at {
        Some(at) => &given[..at],
        None => given,
    }
}

#[cfg(test)]
mod tests {
    use super::{host_name, origin_host};

    #[test]
    fn an_origin_gives_its_host_without_scheme_or_port() {
        for (given, host) in [
            ("http://127.0.0.1:8080", Some("127.0.0.1")),
            ("http://localhost", Some("localhost")),
            ("https://[::1]:443", Some("[::1]")),
            ("http://evil.example", Some("evil.example")),
            ("null", None),
            ("", None),
        ] {
            assert_eq!(origin_host(given), host, "{given}");
        }
    }

    #[test]
    fn a_host_loses_only_its_port() {
        for (given, name) in [
            ("localhost", "localhost"),
            ("localhost:8080", "localhost"),
            ("127.0.0.1:1", "127.0.0.1"),
            ("[::1]", "[::1]"),
            ("[::1]:8080", "[::1]"),
            ("evil.example:80", "evil.example"),
            ("localhost.evil.example", "localhost.evil.example"),
            ("", ""),
        ] {
            assert_eq!(host_name(given), name, "{given}");
        }
    }
}
