//! The one error type of the HTTP API: `{"error": CODE, "message": TEXT}`
//! with a fitting status, CODE from the one catalogue, [`ErrorCode`]. Client
//! mistakes are not logged; internal faults are logged once, here, and their
//! details never leave the node.

use actix_web::error::JsonPayloadError;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use herald_actors::protocol::ErrorCode;
use herald_actors::topic::TopicError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        )
    }

    /// 429: the client is over one of its own limits, not the node.
    pub fn too_many(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
    }

    pub fn internal(message: &str) -> Self {
        log::error!("internal error: {message}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        )
    }

    /// The JSON body parser's failures, in the API's shape.
    pub fn from_json(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
        let api = match &err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                ApiError::too_large(err.to_string())
            }
            _ => ApiError::bad_request(err.to_string()),
        };
        api.into()
    }
}

impl From<TopicError> for ApiError {
    fn from(err: TopicError) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidTopic,
            err.to_string(),
        )
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Unavailable => {
                ApiError::unavailable("the message could not be handed on; nothing was delivered")
            }
            ErrorCode::TooLarge => ApiError::too_large("payload too large"),
            ErrorCode::Forbidden => ApiError::forbidden("forbidden"),
            ErrorCode::Unauthorized => ApiError::unauthorized("unauthorized"),
            ErrorCode::NotFound => ApiError::not_found(),
            ErrorCode::Internal => ApiError::internal("an operation failed inside the node"),
            other => ApiError::new(StatusCode::BAD_REQUEST, other, other.as_str()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .json(json!({"error": self.code.as_str(), "message": self.message}))
    }
}

impl ApiError {
    /// 404 for a request naming a service that is not configured.
    pub fn unknown_service(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::UnknownService, message)
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such endpoint",
        )
    }
}
