//! Backend-initiated requests from RabbitMQ: one durable queue,
//! `herald.requests`, bound to the direct exchange `herald.requests` with
//! routing key `request`, consumed by every node that has services
//! configured. RabbitMQ hands each message to one consumer, so exactly one
//! node performs each call; it acknowledges the message once the call
//! finished and its result was handed to the Broker, so a node that dies
//! mid-call leaves the message to another node (at least once, then).
//!
//! The consumer keeps its own connection, reconnecting with the same
//! backoff as the bridge; what a message means is the handler's business.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::ExchangeKind;
use log::{info, warn};

use crate::bridge::AmqpConfig;
use crate::error::Error;
use crate::link::{self, Backoff, Role};
use crate::topology;

/// The exchange and the queue, by the same name.
pub const REQUESTS: &str = "herald.requests";
/// The routing key the queue is bound with.
pub const REQUEST_KEY: &str = "request";
/// Calls one node performs at once from the queue.
pub const PREFETCH: u16 = 32;

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Performed (or refused for good after a look): acknowledged.
    Done,
    /// Unusable (not a request at all): rejected without requeue.
    Rejected,
}

/// Handles one message body.
pub type Handler = Arc<dyn Fn(Vec<u8>) -> BoxFuture<'static, Handled> + Send + Sync>;

/// Consumes `herald.requests` for as long as the process runs.
pub fn consume(config: AmqpConfig, handler: Handler) {
    actix::spawn(async move {
        let mut backoff = Backoff::default();
        loop {
            let why = match run(&config, &handler, &mut backoff).await {
                Ok(()) => "the consumer was cancelled".to_owned(),
                Err(err) => err.to_string(),
            };
            let delay = backoff.failed();
            if backoff.should_warn() {
                warn!("backend requests: {why}; reconnecting in {delay:?}");
            }
            tokio::time::sleep(delay).await;
        }
    });
}

async fn run(config: &AmqpConfig, handler: &Handler, backoff: &mut Backoff) -> Result<(), Error> {
    let connection = link::connect(config, Role::Consuming).await?;
    let channel = connection.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            REQUESTS.into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    let queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(REQUESTS.into(), queue, FieldTable::default())
        .await?;
    topology::bind(&channel, &REQUESTS.into(), REQUESTS, REQUEST_KEY).await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut deliveries = channel
        .basic_consume(
            REQUESTS.into(),
            format!("herald-requests-{}", config.node_id).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    info!("consuming backend requests from {REQUESTS}");
    backoff.reset();
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let handler = handler.clone();
        // Side by side, up to the prefetch: one slow service does not hold
        // up calls to the others.
        actix::spawn(async move {
            let acker = delivery.acker;
            match handler(delivery.data).await {
                Handled::Done => {
                    let _ = acker.ack(BasicAckOptions::default()).await;
                }
                Handled::Rejected => {
                    let _ = acker.reject(BasicRejectOptions { requeue: false }).await;
                }
            }
        });
    }
    link::close(connection, "backend requests consumer ending").await;
    Ok(())
}
