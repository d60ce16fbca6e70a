//! Backend-initiated requests: a microservice asks Herald (through the
//! `herald.requests` queue or `POST /api/users/{u}/requests`) to call a
//! service as a user and deliver the result to every session of that user.
//!
//! The result travels as a message on the user's private topic
//! `user.{id}`, the path every session of a user receives on every node
//! without subscribing; [`Prepared::response`] marks it so that JSON
//! sessions get the result frame itself rather than a `message`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{body, frame, normalize_method, CallError, CallServices, Caller, ServiceCall};
use crate::broker::{BrokerHandle, Lane, Publish};
use crate::frame::{now_millis, Prepared};
use crate::protocol::ErrorCode;
use crate::topic::{Topic, USER_PREFIX};

/// What a backend sends: `{"user","service","method","path","query"?,
/// "headers"?,"body"?,"body_encoding"?,"id"?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRequest {
    pub user: String,
    pub service: String,
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: Option<Box<RawValue>>,
    #[serde(default)]
    pub headers: Option<Box<RawValue>>,
    #[serde(default)]
    pub body: Option<Box<RawValue>>,
    #[serde(default)]
    pub body_encoding: Option<String>,
    /// Echoed in the result, so the user's pages can match it.
    #[serde(default)]
    pub id: Option<Box<RawValue>>,
}

fn get() -> String {
    "GET".to_owned()
}

/// What became of a backend-initiated request that was performed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Performed {
    /// The service's status, when it answered.
    pub status: Option<u16>,
    /// Why there is no answer, when it did not (the user got an `error`).
    pub error: Option<ErrorCode>,
    /// The result reached this node's sessions but RabbitMQ could not take
    /// it for the other nodes.
    pub local_only: bool,
}

/// Performs `request` as `user` (already a topic segment) and hands the
/// result to the Broker for every session of that user. Refused before any
/// call (`Err`) when the request names no configured service, a method or
/// path it may not use, or is malformed: nothing is delivered then. A call
/// that was made and failed is delivered as an `error` frame.
pub async fn perform(
    broker: BrokerHandle,
    services: Arc<dyn CallServices>,
    user: String,
    request: BackendRequest,
    lane: Lane,
) -> Result<Performed, CallError> {
    let topic = Topic::parse(&format!("{USER_PREFIX}.{user}"))
        .map_err(|err| CallError::BadRequest(format!("user `{user}`: {err}")))?;
    let method = normalize_method(&request.method).ok_or_else(|| {
        CallError::BadRequest(format!("method `{}` is not allowed", request.method))
    })?;
    let headers = body::headers(request.headers.as_deref()).map_err(CallError::BadRequest)?;
    let query = body::query(request.query.as_deref()).map_err(CallError::BadRequest)?;
    let request_body = body::from_json(
        request.body.as_deref().unwrap_or(RawValue::NULL),
        request.body_encoding.as_deref(),
        body::content_type(&headers),
    )
    .map_err(CallError::BadRequest)?;
    let id: Box<RawValue> = request.id.unwrap_or_else(|| RawValue::NULL.to_owned());
    let call = ServiceCall {
        service: request.service.clone(),
        method: method.to_owned(),
        path: request.path.clone(),
        query,
        headers,
        body: request_body,
        caller: Caller {
            user: Some(Arc::from(user.as_str())),
            session: None,
            token: None,
        },
        request_id: broker.message_id(),
    };
    let (service, path) = (request.service, request.path);
    let encode_id = id.clone();
    let (encode_service, encode_path) = (service.clone(), path.clone());
    let encode: super::Encode = Box::new(move |answer| {
        let target = frame::Origin {
            service: &encode_service,
            method,
            path: &encode_path,
        };
        frame::backend_response(&encode_id, &target, answer)
    });
    let (encoded, performed) = match services.call(call, encode).await {
        Ok(encoded) => {
            let status = serde_json::from_slice::<serde_json::Value>(&encoded.bytes)
                .ok()
                .and_then(|frame| frame["status"].as_u64())
                .and_then(|status| u16::try_from(status).ok());
            (
                encoded,
                Performed {
                    status,
                    error: None,
                    local_only: false,
                },
            )
        }
        Err(
            refused @ (CallError::UnknownService(_)
            | CallError::BadRequest(_)
            | CallError::Forbidden(_)),
        ) => return Err(refused),
        Err(failed) => {
            let target = frame::Origin {
                service: &service,
                method,
                path: &path,
            };
            let encoded = frame::backend_failure(&id, &target, &failed);
            let error = Some(failed.code());
            (
                encoded,
                Performed {
                    status: None,
                    error,
                    local_only: false,
                },
            )
        }
    };
    let Some(message) = Prepared::response(topic, encoded.bytes, broker.message_id(), now_millis())
    else {
        return Err(CallError::Upstream(
            "the result could not be encoded".to_owned(),
        ));
    };
    let ack = broker
        .ask(lane, |reply| Publish { message, reply })
        .await
        .map_err(|_| CallError::Unavailable("the node could not take the result now".to_owned()))?;
    Ok(Performed {
        local_only: ack.local_only,
        ..performed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_request_reads_as_the_contract_writes_it() {
        let request: BackendRequest = serde_json::from_str(
            r#"{"user":"alice","service":"account","method":"POST","path":"/cash-out","body":{"amount":5},"id":"c-1"}"#,
        )
        .expect("valid");
        assert_eq!(request.method, "POST");
        assert_eq!(request.id.as_deref().map(RawValue::get), Some(r#""c-1""#));
        let request: BackendRequest =
            serde_json::from_str(r#"{"user":"a","service":"s","path":"/x"}"#).expect("valid");
        assert_eq!(request.method, "GET");
        assert!(serde_json::from_str::<BackendRequest>(r#"{"user":"a","path":"/x"}"#).is_err());
    }
}
