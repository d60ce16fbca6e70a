//! The RabbitMQ side of a node: names, and declaring what each of the
//! node's two connections needs on a fresh connection. Declarations are
//! idempotent and re-run after every reconnect.
//!
//! The node queue is exclusive and auto-deleted, and named afresh for every
//! consuming connection: after a network cut RabbitMQ may keep the old
//! connection (and its queue) alive until its own heartbeat timeout, and a
//! fixed name would make every redeclare fail with RESOURCE_LOCKED until
//! then.

use futures_util::{Stream, StreamExt};
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, Consumer, ExchangeKind};
use log::warn;

use crate::bridge::AmqpConfig;
use crate::error::Error;

pub const TOPICS: &str = "herald.topics";
pub const CLIENT: &str = "herald.client";
pub const LIFECYCLE: &str = "herald.lifecycle";
pub const CONTROL: &str = "herald.control";

/// The exchanges Herald owns, with their types.
const EXCHANGES: [(&str, ExchangeKind); 4] = [
    (TOPICS, ExchangeKind::Topic),
    (CLIENT, ExchangeKind::Topic),
    (LIFECYCLE, ExchangeKind::Topic),
    (CONTROL, ExchangeKind::Fanout),
];

/// A node queue name no earlier connection of this node used.
pub fn node_queue(node: &str) -> ShortString {
    let nonce: u32 = rand::random();
    format!("herald.node.{node}.{nonce:08x}").into()
}

/// Declares Herald's exchanges (durable) on `channel`.
pub async fn declare_exchanges(channel: &Channel) -> Result<(), Error> {
    for (name, kind) in EXCHANGES {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(name.into(), kind, durable, FieldTable::default())
            .await?;
    }
    Ok(())
}

/// The consuming connection's side: the node queue, bound for control
/// messages and for the mapped foreign exchanges (topic bindings follow),
/// and the stream of its deliveries.
pub struct NodeQueue {
    pub name: ShortString,
    /// The channel bindings are made on.
    pub channel: Channel,
    pub deliveries: Consumer,
}

/// Declares the node queue on `connection` and starts consuming it.
pub async fn consume_node_queue(
    connection: &Connection,
    config: &AmqpConfig,
) -> Result<NodeQueue, Error> {
    let channel = connection.create_channel().await?;
    declare_exchanges(&channel).await?;
    let name = node_queue(&config.node_id);
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.clone(), exclusive, FieldTable::default())
        .await?;
    bind(&channel, &name, CONTROL, "").await?;
    for mapping in &config.inbound {
        // A foreign exchange that is missing closes the channel it was
        // named on, so each mapping gets a channel of its own.
        let scratch = connection.create_channel().await?;
        if let Err(err) = bind_foreign(&scratch, &name, mapping).await {
            warn!("cannot consume exchange `{}`: {err}", mapping.exchange);
        }
    }
    let consuming = connection.create_channel().await?;
    consuming
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    let deliveries = consuming
        .basic_consume(
            name.clone(),
            format!("herald-{}", config.node_id).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(NodeQueue {
        name,
        channel,
        deliveries,
    })
}

pub async fn bind(
    channel: &Channel,
    queue: &ShortString,
    exchange: &str,
    key: &str,
) -> Result<(), lapin::Error> {
    channel
        .queue_bind(
            queue.clone(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

pub async fn unbind(
    channel: &Channel,
    queue: &ShortString,
    exchange: &str,
    key: &str,
) -> Result<(), lapin::Error> {
    channel
        .queue_unbind(
            queue.clone(),
            exchange.into(),
            key.into(),
            FieldTable::default(),
        )
        .await
}

async fn bind_foreign(
    channel: &Channel,
    queue: &ShortString,
    mapping: &crate::InboundMapping,
) -> Result<(), lapin::Error> {
    let (kind, passive) = match mapping.exchange_type.as_deref() {
        None => (ExchangeKind::Topic, true),
        Some("topic") => (ExchangeKind::Topic, false),
        Some("fanout") => (ExchangeKind::Fanout, false),
        Some("direct") => (ExchangeKind::Direct, false),
        Some("headers") => (ExchangeKind::Headers, false),
        Some(other) => (ExchangeKind::Custom(other.to_owned()), false),
    };
    let options = ExchangeDeclareOptions {
        passive,
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            mapping.exchange.as_str().into(),
            kind,
            options,
            FieldTable::default(),
        )
        .await?;
    bind(channel, queue, &mapping.exchange, &mapping.binding).await?;
    let _ = channel.close(200, "mapping bound".into()).await;
    Ok(())
}

/// Tags each delivery with the link it came from and ends with `None`, so
/// the bridge can tell a lost link from an old one winding down.
pub fn tagged(
    consumer: Consumer,
    generation: u64,
) -> impl Stream<Item = (u64, Option<Result<lapin::message::Delivery, lapin::Error>>)> {
    consumer
        .map(Some)
        .chain(futures_util::stream::once(async { None }))
        .map(move |item| (generation, item))
}
