//! `POST /api/publish` and `POST /api/notification`: backends publishing to
//! topics over HTTP.

use actix_web::{web, HttpResponse};
use herald_actors::topic::Topic;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::ApiError;
use crate::auth::ApiAccess;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct PublishBody {
    topic: String,
    data: Box<RawValue>,
}

/// The shape of the Spring STOMP tutorial's notification endpoint.
#[derive(Deserialize)]
pub struct NotificationBody {
    topic: String,
    message: Box<RawValue>,
}

pub async fn publish(
    _: ApiAccess,
    state: web::Data<AppState>,
    body: web::Json<PublishBody>,
) -> Result<HttpResponse, ApiError> {
    publish_to(&state, Topic::parse(&body.topic)?, &body.data).await
}

pub async fn notification(
    _: ApiAccess,
    state: web::Data<AppState>,
    body: web::Json<NotificationBody>,
) -> Result<HttpResponse, ApiError> {
    let topic = body.topic.strip_prefix("/topic/").unwrap_or(&body.topic);
    publish_to(&state, Topic::parse(topic)?, &body.message).await
}

/// Hands a message to the Broker and answers 202 once it took it.
pub(super) async fn publish_to(
    state: &AppState,
    topic: Topic,
    data: &RawValue,
) -> Result<HttpResponse, ApiError> {
    let message = state.broker.prepare(topic, data);
    let mid = message.mid.clone();
    state
        .broker
        .ask_when_ready(|reply| herald_actors::broker::Publish { message, reply })
        .await?;
    Ok(HttpResponse::Accepted().json(json!({"accepted": true, "mid": &*mid})))
}
