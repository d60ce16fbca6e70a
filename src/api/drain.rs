//! `POST /api/drain`: an operator takes this node out of service, as
//! SIGTERM does, and learns how many sessions it will close and over what
//! window.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::access::AdminAccess;
use crate::state::AppState;

/// Answers 202 at once: the drain runs on after the answer, and the node
/// exits when it is done. A second call changes nothing and says so.
pub async fn drain(_: AdminAccess, state: web::Data<AppState>) -> HttpResponse {
    let (already, closing) = state.drain.start(&state.broker).await;
    let window_ms = herald_actors::millis(state.drain.window);
    HttpResponse::Accepted().json(json!({
        "draining": true,
        "already": already,
        "sessions": closing,
        "window_ms": window_ms,
    }))
}
