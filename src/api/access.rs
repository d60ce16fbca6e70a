//! Who may call the HTTP API: backends with the API key, operators with the
//! admin key, and, while no key is configured, callers on this host only.
//!
//! Taking [`ApiAccess`] or [`AdminAccess`] as a handler argument is what
//! guards a route.

use std::net::IpAddr;

use actix_web::dev::Payload;
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
/// that is no trusted proxy and whose request carries no forwarding header
/// (behind a reverse proxy on the same host every caller would look local;
/// one that adds no header is caught only by listing it as a proxy, or by
/// setting a key, as the docs say).
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
    if loopback {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "the HTTP API answers only callers on this host while no key is configured: set HERALD_API_KEY",
        ))
    }
}
