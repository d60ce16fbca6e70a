//! `GET /ws` and `GET /stomp`: the WebSocket handshake. Checks origin, token
//! and the connection limit, then starts a Session whose outgoing byte stream
//! is metered, so its outbound queue bound is measured where the transport
//! takes bytes.

use actix_http::ws::Codec;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self, WebsocketContext};
use herald_actors::session::{MeteredStream, Session};
use log::debug;

use crate::api::ApiError;
use crate::auth::{handshake_token, AuthError};
use crate::state::AppState;

pub async fn websocket(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if state.broker.is_draining() {
        return Err(ApiError::unavailable(
            "this node is shutting down; connect to another",
        ));
    }
    check_origin(&req, &state)?;
    let identity = state
        .auth
        .identify(handshake_token(&req).as_deref())
        .map_err(|err| match err {
            AuthError::Missing | AuthError::Expired | AuthError::Invalid(_) => {
                ApiError::unauthorized(err.to_string())
            }
        })?;
    let mut response = ws::handshake(&req).map_err(|err| ApiError::bad_request(err.to_string()))?;
    if state.counters.connections_current.get() as usize >= state.max_connections {
        state.counters.connections_rejected.inc();
        debug!(
            "refused a WebSocket: {} connections open",
            state.max_connections
        );
        return Err(ApiError::unavailable(
            "this node holds as many connections as it may",
        ));
    }
    let session = Session::new(identity, state.broker.clone(), state.session.clone());
    let meter = session.meter();
    let codec = Codec::new().max_size(state.max_frame);
    let frames = WebsocketContext::with_codec(session, payload, codec);
    Ok(response.streaming(MeteredStream::new(Box::pin(frames), meter)))
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
