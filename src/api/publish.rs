//! `POST /api/publish` and `POST /api/notification`: backends publishing to
//! topics over HTTP.

use actix_web::{web, HttpResponse};
use herald_actors::broker::{Lane, Publish};
use herald_actors::frame::Body;
use herald_actors::topic::Topic;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::access::ApiAccess;
use super::ApiError;
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

/// Hands a message to the Broker and answers 202 once this node's
/// subscribers have it and RabbitMQ took it for the others, or 202 with
/// `local_only` when RabbitMQ could not (down, blocked, saturated); 503
/// only when nothing was delivered.
pub(super) async fn publish_to(
    state: &AppState,
    topic: Topic,
    data: &RawValue,
) -> Result<HttpResponse, ApiError> {
    let message = state.broker.prepare(topic, Body::json(data));
    let mid = message.mid.clone();
    let ack = state
        .broker
        .ask(Lane::Backend, |reply| Publish { message, reply })
        .await?;
    let mut body = json!({"accepted": true, "mid": &*mid});
    if ack.local_only {
        body["local_only"] = json!(true);
    }
    Ok(HttpResponse::Accepted().json(body))
}
