//! Herald's RabbitMQ bridge: the only crate that names lapin.
//!
//! With `HERALD_AMQP_URL` set, each node declares this topology and keeps it
//! declared across reconnects:
//!
//! | exchange (durable) | type | who publishes | what |
//! |---|---|---|---|
//! | `herald.topics` | topic | microservices; Herald for client `publish` and `POST /api/publish` | routing key = topic |
//! | `herald.client` | topic | Herald, with publisher confirms | client `send`: routing key = destination, headers `x-herald-user`, `x-herald-session`, `x-herald-node` |
//! | `herald.lifecycle` | topic | Herald | `session.connected` / `session.disconnected` events |
//! | `herald.control` | fanout | Herald | node-to-node requests (closing a user's sessions everywhere) |
//! | `herald.requests` | direct | microservices | backend-initiated requests (routing key `request`), one shared durable queue consumed competitively |
//!
//! Each node holds two connections: one publishes (with confirms), the
//! other consumes through the node's own exclusive, auto-deleted queue
//! `herald.node.<id>.<nonce>` (named afresh on every connection), bound to
//! `herald.topics` for exactly the patterns its sessions hold, so RabbitMQ
//! does the routing and N nodes act as one gateway. A message published on
//! a node is delivered to that node's subscribers directly; when it comes
//! back through the node queue it is recognised by its `x-herald-node`
//! header and dropped.
//!
//! ```text
//!  each connection, on its own:
//!            ┌────────── connect (timeout) ──────────┐
//!  Connecting ──ok──▶ Connected ──connection lost──▶ Connecting
//!      ▲   └──fail── wait backoff (0.1 s doubling to 5 s, jittered) ◀┘
//!  publishing connection: Connected ⇄ Blocked (RabbitMQ resource alarm)
//! ```
//!
//! - [`bridge`]: the Bridge actor, handling the core's ports.
//! - [`bindings`]: reconciling the node queue's bindings with the node's interest.
//! - [`publish`]: the publishing connection, its bounded queue and confirms.
//! - [`consume`]: sorting what arrives on the node queue.
//! - [`requests`]: consuming backend-initiated requests from `herald.requests`.
//! - [`link`]: connecting, and the backoff between attempts.
//! - [`topology`]: names, declarations, and applying them on a channel.
//! - [`inbound`]: foreign exchanges mapped onto topics; message bodies.
//! - [`stats`]: the bridge's numbers for `/api/stats`.
#![forbid(unsafe_code)]

pub mod bindings;
pub mod bridge;
pub mod consume;
pub mod control;
mod error;
pub mod inbound;
pub mod link;
pub mod publish;
pub mod requests;
pub mod stats;
mod topology;

pub use bridge::{AmqpConfig, Bridge, BridgeStarter, Stop};
pub use error::Error;
pub use inbound::InboundMapping;
pub use stats::{BridgeStats, LinkState};
