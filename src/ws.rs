//! `GET /ws`, `GET /stomp` and SockJS's WebSocket transport under
//! `/stomp`: the WebSocket handshake. Settles the protocol (JSON or STOMP,
//! from the path and the offered subprotocols), checks the client IP's
//! handshake rate, origin and token, reserves the session's connection
//! slots (node, client IP, user), then starts a Session whose outgoing
//! byte stream is metered, so its outbound queue bound is measured where
//! the transport takes bytes.

use actix_http::ws::Codec;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self, WebsocketContext};
use herald_actors::limits::{LimitRefusal, Slot};
use herald_actors::protocol::stomp::Version;
use herald_actors::protocol::ErrorCode;
use herald_actors::session::{Dialect, Framing, Handshake, MeteredStream, Session};
use log::debug;
use rand::Rng;
use serde_json::json;

use crate::api::ApiError;
use crate::auth::{handshake_token, AuthError};
use crate::client_ip::client_ip;
use crate::state::AppState;

/// `GET /ws`: JSON, unless the client offers a STOMP subprotocol.
pub async fn websocket(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    upgrade(req, payload, state, Dialect::Json, Framing::Plain)
}

/// `GET /stomp`: STOMP whether or not the client names a subprotocol, as
/// Spring-configured clients expect.
pub async fn stomp(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    upgrade(req, payload, state, Dialect::Stomp, Framing::Plain)
}

/// `GET /stomp/{server}/{session}/websocket`: SockJS's WebSocket transport,
/// STOMP inside SockJS framing.
pub async fn sockjs(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    upgrade(req, payload, state, Dialect::Stomp, Framing::SockJs)
}

/// `GET /stomp/info`: what a SockJS client asks before it picks a
/// transport. Only the WebSocket transport is served.
pub async fn sockjs_info() -> HttpResponse {
    let entropy: u32 = rand::rng().random();
    HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            "no-store, no-cache, must-revalidate, max-age=0",
        ))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .json(json!({
            "websocket": true,
            "origins": ["*:*"],
            "cookie_needed": false,
            "entropy": entropy,
        }))
}

/// The STOMP subprotocol to answer with: the highest version the client
/// offers.
fn offered_stomp(req: &HttpRequest) -> Option<Version> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| Version::from_subprotocol(name.trim()))
        .max()
}

fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    path_dialect: Dialect,
    framing: Framing,
) -> Result<HttpResponse, ApiError> {
    if state.broker.is_draining() {
        return Err(ApiError::unavailable(
            "this node is shutting down; connect to another",
        ));
    }
    let ip = client_ip(&req, &state.trusted_proxies);
    // Before the token is checked: a flood of handshakes should cost as
    // little as possible.
    state.limits.admit_handshake(ip).map_err(|refused| {
        debug!("refused a WebSocket from {ip}: {refused}");
        refusal(refused)
    })?;
    check_origin(&req, &state)?;
    let subprotocol = offered_stomp(&req);
    let dialect = if subprotocol.is_some() {
        Dialect::Stomp
    } else {
        path_dialect
    };
    let (identity, token_pending) = match state.auth.identify(handshake_token(&req).as_deref()) {
        Ok(identity) => (identity, false),
        // A browser's STOMP client cannot set handshake headers: its token
        // comes in CONNECT.
        Err(AuthError::Missing) if dialect == Dialect::Stomp => (Default::default(), true),
        Err(err) => return Err(ApiError::unauthorized(err.to_string())),
    };
    let mut response = ws::handshake(&req).map_err(|err| ApiError::bad_request(err.to_string()))?;
    // Reserved before the session starts and given back when it stops (or
    // when the upgrade never gets that far), so concurrent handshakes
    // cannot overshoot a limit.
    let slots = reserve(&state, ip, identity.user.as_ref()).map_err(|refused| {
        debug!("refused a WebSocket from {ip}: {refused}");
        refusal(refused)
    })?;
    if let Some(version) = subprotocol {
        response.insert_header((
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(version.subprotocol()),
        ));
    }
    let handshake = Handshake {
        identity,
        dialect,
        framing,
        token_pending,
        slots,
        remote: ip,
    };
    let session = Session::new(handshake, state.broker.clone(), state.session.clone());
    let meter = session.meter();
    let codec = Codec::new().max_size(state.max_frame);
    let frames = WebsocketContext::with_codec(session, payload, codec);
    Ok(response.streaming(MeteredStream::new(Box::pin(frames), meter)))
}

/// Takes a slot on the node, for the client IP and for the user (when the
/// handshake names one); the slots already taken are given back when a
/// later one is refused.
fn reserve(
    state: &AppState,
    ip: std::net::IpAddr,
    user: Option<&std::sync::Arc<str>>,
) -> Result<Vec<Slot>, LimitRefusal> {
    let mut slots = vec![state.limits.admit_node()?, state.limits.admit_ip(ip)?];
    if let Some(user) = user {
        slots.push(state.limits.admit_user(user)?);
    }
    Ok(slots)
}

/// The HTTP answer to a refused handshake: 503 when the node is full (the
/// client may try another node), 429 when the client is over its own share.
fn refusal(refused: LimitRefusal) -> ApiError {
    match refused {
        LimitRefusal::Node => ApiError::unavailable(refused.to_string()),
        LimitRefusal::HandshakeRate => {
            ApiError::too_many(ErrorCode::RateLimited, refused.to_string())
        }
        LimitRefusal::User | LimitRefusal::Ip => {
            ApiError::too_many(ErrorCode::TooManyConnections, refused.to_string())
        }
    }
}

fn check_origin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let Some(allowed) = &state.allowed_origins else {
        return Ok(());
    };
    // Clients without an Origin header are not browsers; CORS-style origin
    // checks exist to stop other sites' pages, not backends.
    let Some(origin) = req.headers().get("origin") else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    if allowed
        .iter()
        .any(|allowed| allowed == origin || allowed == "*")
    {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "origin `{origin}` is not allowed"
        )))
    }
}
