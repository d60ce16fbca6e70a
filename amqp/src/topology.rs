//! The RabbitMQ side of a node: names, and declaring everything a node needs
//! on a fresh connection. Declarations are idempotent and re-run after every
//! reconnect, because the node's exclusive queue (and with it its bindings)
//! disappears with the connection that owned it.

use futures_util::{Stream, StreamExt};
use herald_actors::topic::Pattern;
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
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

pub fn node_queue(node: &str) -> ShortString {
    format!("herald.node.{node}").into()
}

/// A live connection with the channel Herald publishes and binds on (in
/// confirm mode) and the name of the node's queue.
pub struct Link {
    pub connection: Connection,
    pub channel: Channel,
    pub queue: ShortString,
}

/// Connects and declares the node's topology, binding the queue for
/// `patterns`. Returns the link and the stream of deliveries.
pub async fn establish(
    config: &AmqpConfig,
    patterns: Vec<Pattern>,
) -> Result<(Link, Consumer), Error> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("herald {}", config.node_id).into());
    let connection = Connection::connect(&config.url, properties).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    for (name, kind) in EXCHANGES {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(name.into(), kind, durable, FieldTable::default())
            .await?;
    }
    let queue = node_queue(&config.node_id);
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.clone(), exclusive, FieldTable::default())
        .await?;
    bind(&channel, &queue, CONTROL, "").await?;
    for pattern in patterns {
        bind(&channel, &queue, TOPICS, pattern.as_str()).await?;
    }
    for mapping in &config.inbound {
        // A foreign exchange that is missing closes the channel it was
        // named on, so each mapping gets a channel of its own.
        let scratch = connection.create_channel().await?;
        if let Err(err) = bind_foreign(&scratch, &queue, mapping).await {
            warn!("cannot consume exchange `{}`: {err}", mapping.exchange);
        }
    }
    let consuming = connection.create_channel().await?;
    consuming
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = consuming
        .basic_consume(
            queue.clone(),
            format!("herald-{}", config.node_id).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((
        Link {
            connection,
            channel,
            queue,
        },
        consumer,
    ))
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
