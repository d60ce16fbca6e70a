//! Wire codecs and the two catalogues every client sees: error codes and
//! close codes. Pure code: no actors, no I/O, so it is tested on its own.

pub mod destination;
pub mod json;
pub mod stomp;

use serde::Serialize;

/// Why a client's operation failed. One catalogue for every protocol and the
/// HTTP API, so a code means the same thing wherever it appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, an unknown op, a missing or mistyped field.
    BadRequest,
    /// A topic or pattern that breaks the naming rules.
    InvalidTopic,
    /// Valid, but not allowed for this client (private topics, API key).
    Forbidden,
    /// The payload is over the configured size limit.
    TooLarge,
    /// The session sent faster than its inbound rate limit.
    RateLimited,
    /// The session holds as many subscriptions as it may.
    TooManySubscriptions,
    /// The client's user or address holds as many connections as one may.
    TooManyConnections,
    /// A backend path (RabbitMQ) is off or down: nothing was delivered.
    Unavailable,
    /// `request` named a service that is not configured.
    UnknownService,
    /// A backend did not answer in time.
    Timeout,
    /// A backend answered with a failure.
    UpstreamError,
    /// HTTP API only: the API key is missing, or a WebSocket handshake
    /// carries no valid token.
    Unauthorized,
    /// HTTP API only: no endpoint at that path.
    NotFound,
    /// HTTP API only: a fault inside the node; its details stay in the log.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::UnknownService => "unknown_service",
            ErrorCode::Timeout => "timeout",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ErrorCode {
    /// What a client should know about a failure it cannot read more into.
    pub fn explain(self) -> &'static str {
        match self {
            ErrorCode::TooManySubscriptions => {
                "this session holds the maximum number of subscriptions"
            }
            ErrorCode::TooManyConnections => {
                "this user or client address holds as many connections as one may; close one first"
            }
            ErrorCode::Unavailable => {
                "the node or RabbitMQ could not take this now (saturated, unreachable, blocked by an alarm, or no queue bound for a send); nothing was delivered, so it is safe to retry"
            }
            ErrorCode::Timeout => {
                "RabbitMQ did not confirm in time; the message may still reach the backends"
            }
            _ => "the operation failed",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why Herald ended a session. Each maps to the WebSocket close code clients
/// branch on, and to the `reason` word used in logs and lifecycle events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The node is shutting down (1001).
    Shutdown,
    /// The client stopped answering pings (1001).
    NoHeartbeat,
    /// A frame was over the size limit (1009).
    FrameTooLarge,
    /// The client broke the WebSocket protocol (1002).
    ProtocolError,
    /// A text message was not UTF-8 (1007).
    InvalidUtf8,
    /// The session's outbound queue overflowed (1013).
    SlowConsumer,
    /// The node had no room to take the session; try again later (1013).
    Overloaded,
    /// The client sent more than its rate limit's burst before the
    /// session was even established (1008).
    Flooded,
    /// The session kept sending past its rate limit after being refused
    /// for it (1008).
    Abusive,
    /// The session's token expired (4001).
    TokenExpired,
    /// The session's token was revoked (4001, as for an expired token: the
    /// client needs a fresh one either way).
    Revoked,
    /// An operator closed the user's sessions through the API (4003).
    Kicked,
    /// A STOMP session broke a rule it was told about in an `ERROR` frame:
    /// forbidden, over a limit, not authenticated (1008).
    Refused,
}

impl Disconnect {
    pub fn code(self) -> u16 {
        match self {
            Disconnect::Shutdown | Disconnect::NoHeartbeat => 1001,
            Disconnect::ProtocolError => 1002,
            Disconnect::InvalidUtf8 => 1007,
            Disconnect::FrameTooLarge => 1009,
            Disconnect::Flooded | Disconnect::Abusive | Disconnect::Refused => 1008,
            Disconnect::SlowConsumer | Disconnect::Overloaded => 1013,
            Disconnect::TokenExpired | Disconnect::Revoked => 4001,
            Disconnect::Kicked => 4003,
        }
    }

    /// What a person reading the close should know.
    pub fn explain(self) -> &'static str {
        match self {
            Disconnect::Shutdown => "the node is shutting down; reconnect",
            Disconnect::NoHeartbeat => "nothing was heard from the client in time",
            Disconnect::FrameTooLarge => "a message was over the size limit",
            Disconnect::ProtocolError => "the client broke the protocol",
            Disconnect::InvalidUtf8 => "a text message was not valid UTF-8",
            Disconnect::SlowConsumer => {
                "the session fell too far behind its messages; reconnect and read faster"
            }
            Disconnect::Overloaded => "the node has no room for this session now; retry later",
            Disconnect::Flooded => "the client sent faster than its rate limit allows",
            Disconnect::Abusive => {
                "the client kept sending faster than its rate limit allows after being told to slow down"
            }
            Disconnect::TokenExpired => "the token has expired; reconnect with a fresh one",
            Disconnect::Revoked => "the token was revoked; reconnect with a fresh one",
            Disconnect::Kicked => "an operator closed this user's sessions",
            Disconnect::Refused => "the server refused a frame",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Disconnect::Shutdown => "shutdown",
            Disconnect::NoHeartbeat => "no_heartbeat",
            Disconnect::FrameTooLarge => "frame_too_large",
            Disconnect::ProtocolError => "protocol_error",
            Disconnect::InvalidUtf8 => "invalid_utf8",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::Overloaded => "overloaded",
            Disconnect::Flooded => "flooded",
            Disconnect::Abusive => "abusive",
            Disconnect::TokenExpired => "token_expired",
            Disconnect::Revoked => "token_revoked",
            Disconnect::Kicked => "kicked",
            Disconnect::Refused => "refused",
        }
    }
}
