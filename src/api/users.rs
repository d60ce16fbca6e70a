//! `POST /api/users/{user}/messages` and `DELETE /api/users/{user}/sessions`:
//! reaching, or closing, every session of one user.

use actix_web::{web, HttpResponse};
use herald_actors::broker::{KickUser, Lane};
use herald_actors::ports::KickEverywhere;
use herald_actors::topic::{Topic, USER_PREFIX};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::access::{AdminAccess, ApiAccess};
use super::publish::publish_to;
use super::ApiError;
use crate::auth::user_id;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct UserMessage {
    data: Box<RawValue>,
}

/// The user's topic segment, through the same mapping tokens go through,
/// so that `user.{id}` is that user's alone whatever characters the id has.
fn user_id(user: &str) -> Result<String, ApiError> {
    user_id::segment_from_path(user).map_err(|err| ApiError::bad_request(err.to_string()))
}

pub async fn message(
    _: ApiAccess,
    state: web::Data<AppState>,
    user: web::Path<String>,
    body: web::Json<UserMessage>,
) -> Result<HttpResponse, ApiError> {
    let topic = Topic::parse(&format!("{USER_PREFIX}.{}", user_id(&user)?))?;
    publish_to(&state, topic, &body.data).await
}

/// Closes the user's sessions here, and asks every other node to do the same.
pub async fn kick(
    _: AdminAccess,
    state: web::Data<AppState>,
    user: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = user_id(&user)?;
    let ports = state.broker.ports();
    let elsewhere = ports.ask(&ports.kick, |reply| KickEverywhere {
        user: user.clone(),
        reply,
    });
    let closed = state
        .broker
        .ask(Lane::Backend, |reply| KickUser { user, reply })
        .await?;
    match elsewhere {
        None => Ok(HttpResponse::Ok().json(json!({"closed": closed}))),
        Some(outcome) => match outcome.await {
            Ok(_) => Ok(HttpResponse::Ok().json(json!({"closed": closed, "other_nodes": "asked"}))),
            Err(_) => Err(ApiError::unavailable(format!(
                "closed {closed} session(s) on this node, but RabbitMQ could not take the request, so other nodes were not asked"
            ))),
        },
    }
}
