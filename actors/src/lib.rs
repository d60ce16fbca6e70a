//! Herald's core: the actors that hold WebSocket sessions and topic
//! membership, and the pure code they stand on.
//!
//! ```text
//!  src/ws.rs ──starts──▶ Session (one per WebSocket) ──Subscribe/Publish──▶ Broker
//!                           ▲                                                │
//!                           └──────────── Deliver (try_send, metered) ◀──────┘
//!  src/api ──Publish/KickUser──▶ Broker ──Interest/PublishOut──▶ ports (the bridge)
//! ```
//!
//! - [`authorize`]: asking the application whether a session may act.
//! - [`broker`]: the Broker actor, owner of topic membership and fan-out.
//! - [`membership`]: the sessions and subscriptions the Broker keeps.
//! - [`reply`]: how answers travel back to whoever asked.
//! - [`request`]: the WebSocket-to-REST pipeline: calls to configured services.
//! - [`ports`]: every message leaving the core.
//! - [`session`]: the Session actor and its outbound queue bound.
//! - [`protocol`]: wire codecs and the error and close code catalogues.
//! - [`topic`]: topic names, patterns, the subscription trie, private topics.
//! - [`frame`]: a published message encoded once for every subscriber.
//! - [`revocation`]: the tokens revoked before their expiry.
//! - [`limits`]: connections per node, user and client IP; handshake rate.
//! - [`stats`]: the counters behind `/api/stats` and `/metrics`.
//!
//! Nothing here names an HTTP route or a message broker client library.
#![forbid(unsafe_code)]

pub mod authorize;
pub mod broker;
pub mod frame;
pub mod limits;
pub mod membership;
pub mod ports;
pub mod protocol;
pub mod reply;
pub mod request;
pub mod revocation;
pub mod session;
pub mod stats;
pub mod topic;

/// A duration in whole milliseconds, as Herald's messages and logs carry
/// it; one too long for a `u64` reads as `u64::MAX`.
pub fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
