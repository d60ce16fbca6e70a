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
//!
//! Each node consumes through its own exclusive queue `herald.node.<id>`,
//! bound to `herald.topics` for exactly the patterns its sessions hold, so
//! RabbitMQ does the routing and N nodes act as one gateway.
//!
//! ```text
//!            ┌────────── connect (timeout) ──────────┐
//!  Connecting ──ok──▶ Connected ──channel/connection lost──▶ Connecting
//!      ▲   └──fail── wait backoff (0.1 s doubling to 5 s, jittered) ◀┘
//! ```
//!
//! - [`bridge`]: the Bridge actor, handling the core's ports.
//! - [`topology`]: names, declarations, and applying them on a channel.
//! - [`inbound`]: foreign exchanges mapped onto topics; message bodies.
//! - [`stats`]: the bridge's numbers for `/api/stats`.
#![forbid(unsafe_code)]

pub mod bridge;
mod error;
pub mod inbound;
pub mod stats;
mod topology;

pub use bridge::{AmqpConfig, Bridge, BridgeStarter, Stop};
pub use error::Error;
pub use inbound::InboundMapping;
pub use stats::{BridgeStats, LinkState};
