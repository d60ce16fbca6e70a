//! Backend-initiated requests: `POST /api/users/{user}/requests` and the
//! `herald.requests` queue both make Herald call a service as that user
//! and deliver the result to every session of the user on every node
//! (`{"op":"response","origin":"backend",...}`, or an `error` with
//! `origin` when the call failed).
//!
//! Herald performs the call whether or not the user has a session: the
//! backend asked for it, and a cash-out must not depend on whether a tab is
//! open. A result for a user with no session anywhere reaches nobody and is
//! not kept; it is counted as delivered (handed to the Broker), since no
//! node can tell cheaply that no other node holds a session of that user.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use futures_util::FutureExt;
use herald_actors::broker::{BrokerHandle, Lane};
use herald_actors::request::backend::{perform, BackendRequest, Performed};
use herald_actors::request::{CallError, CallServices};
use herald_amqp::requests::Handled;
use herald_amqp::AmqpConfig;
use log::debug;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::access::ApiAccess;
use super::ApiError;
use crate::auth::user_id;
use crate::state::AppState;
use crate::upstream::HttpServices;

/// The body of `POST /api/users/{user}/requests`: a backend request
/// without `user`, which the path names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiRequest {
    service: String,
    #[serde(default)]
    method: Option<String>,
    path: String,
    #[serde(default)]
    query: Option<Box<RawValue>>,
    #[serde(default)]
    headers: Option<Box<RawValue>>,
    #[serde(default)]
    body: Option<Box<RawValue>>,
    #[serde(default)]
    body_encoding: Option<String>,
    #[serde(default)]
    id: Option<Box<RawValue>>,
}

/// Performs one backend request and counts what became of it.
async fn run(
    broker: BrokerHandle,
    services: Arc<HttpServices>,
    request: BackendRequest,
    lane: Lane,
) -> Result<Performed, CallError> {
    services.backend.received.inc();
    let user = user_id::segment_from_path(&request.user).map_err(|err| {
        services.backend.refused.inc();
        CallError::BadRequest(format!("user `{}`: {err}", request.user))
    })?;
    let caller: Arc<dyn CallServices> = services.clone();
    match perform(broker, caller, user, request, lane).await {
        Ok(performed) => {
            services.backend.delivered.inc();
            if performed.local_only {
                services.backend.local_only.inc();
            }
            Ok(performed)
        }
        Err(CallError::Unavailable(why)) => {
            services.backend.undelivered.inc();
            Err(CallError::Unavailable(why))
        }
        Err(refused) => {
            services.backend.refused.inc();
            Err(refused)
        }
    }
}

pub async fn request(
    _: ApiAccess,
    state: web::Data<AppState>,
    user: web::Path<String>,
    body: web::Json<ApiRequest>,
) -> Result<HttpResponse, ApiError> {
    let Some(services) = state.services.clone() else {
        return Err(ApiError::unknown_service(
            "no services are configured on this node",
        ));
    };
    let body = body.into_inner();
    let id = body.id.as_deref().map(|id| id.get().to_owned());
    let request = BackendRequest {
        user: user.into_inner(),
        service: body.service,
        method: body.method.unwrap_or_else(|| "GET".to_owned()),
        path: body.path,
        query: body.query,
        headers: body.headers,
        body: body.body,
        body_encoding: body.body_encoding,
        id: body.id,
    };
    let id: serde_json::Value = id
        .and_then(|id| serde_json::from_str(&id).ok())
        .unwrap_or(serde_json::Value::Null);
    match run(state.broker.clone(), services, request, Lane::Backend).await {
        Ok(performed) => Ok(HttpResponse::Ok().json(json!({
            "id": id,
            "status": performed.status,
            "error": performed.error,
            "local_only": performed.local_only,
        }))),
        Err(CallError::UnknownService(name)) => Err(ApiError::unknown_service(format!(
            "no service named `{name}` is configured"
        ))),
        Err(CallError::Unavailable(why)) => Err(ApiError::unavailable(why)),
        Err(refused) => Err(ApiError::bad_request(refused.to_string())),
    }
}

/// Consumes `herald.requests` on this node.
pub fn consume(config: AmqpConfig, broker: BrokerHandle, services: Arc<HttpServices>) {
    let handler = Arc::new(move |body: Vec<u8>| {
        let (broker, services) = (broker.clone(), services.clone());
        async move {
            let request = match serde_json::from_slice::<BackendRequest>(&body) {
                Ok(request) => request,
                Err(err) => {
                    services.backend.received.inc();
                    services.backend.refused.inc();
                    debug!("refused a message on herald.requests: {err}");
                    return Handled::Rejected;
                }
            };
            match run(broker, services, request, Lane::Internal).await {
                Ok(performed) => debug!("backend request performed: {performed:?}"),
                Err(refused) => debug!("refused a backend request: {refused}"),
            }
            Handled::Done
        }
        .boxed()
    });
    herald_amqp::requests::consume(config, handler);
}
