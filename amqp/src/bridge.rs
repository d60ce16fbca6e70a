//! The Bridge actor: RabbitMQ on one side, the Broker on the other.
//!
//! It handles the core's ports (binding the node queue as subscriptions come
//! and go, publishing client and API messages with confirms), consumes the
//! node queue into the Broker, and keeps the link alive: a lost connection is
//! re-established with backoff and the whole topology declared again.
//!
//! Every channel operation runs under `ctx.wait`, so operations reach
//! RabbitMQ in the order their messages reached this actor; that is what
//! keeps one publisher's messages in order. Only the waits for confirms run
//! side by side.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use herald_actors::broker::{BrokerHandle, Fanout, KickUser, Reply};
use herald_actors::frame::{now_millis, Prepared};
use herald_actors::ports::{
    BindPattern, KickEverywhere, Lifecycle, Ports, PublishOut, SendToBackend, SessionEvent,
    UnbindPattern,
};
use herald_actors::protocol::ErrorCode;
use herald_actors::topic::{Pattern, Topic};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicPublishOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use lapin::Confirmation;
use log::{debug, info, warn};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::inbound::{payload, InboundMapping};
use crate::stats::{BridgeStats, LinkState};
use crate::topology::{self, Link, CLIENT, CONTROL, LIFECYCLE, TOPICS};

/// How the bridge reaches RabbitMQ and what it consumes.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    pub url: String,
    pub node_id: Arc<str>,
    /// Unacknowledged deliveries RabbitMQ may hand the node at once.
    pub prefetch: u16,
    pub inbound: Vec<InboundMapping>,
    /// How long a publish may wait for RabbitMQ's confirm.
    pub confirm_timeout: Duration,
    /// How long one connection attempt (with its declarations) may take.
    pub connect_timeout: Duration,
}

/// Closes the RabbitMQ connection and stops the bridge; for shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

pub struct Bridge {
    config: Arc<AmqpConfig>,
    broker: BrokerHandle,
    stats: Arc<BridgeStats>,
    /// Patterns the node's queue must be bound for: those local sessions hold.
    patterns: HashSet<Pattern>,
    link: Option<Link>,
    /// Numbers links; what an older link reports is ignored.
    generation: u64,
    /// Failed connection attempts in a row, for the backoff.
    failures: u32,
    /// Whether a link was ever up, so that later ones count as reconnects.
    was_connected: bool,
    stopping: bool,
}

/// Creates the bridge's address before the bridge itself, because the Broker
/// needs the bridge's ports and the bridge needs the Broker.
pub struct BridgeStarter {
    context: Context<Bridge>,
    stats: Arc<BridgeStats>,
}

impl Default for BridgeStarter {
    fn default() -> Self {
        Self::new()
    }
}

impl BridgeStarter {
    pub fn new() -> Self {
        BridgeStarter {
            context: Context::new(),
            stats: Arc::new(BridgeStats::default()),
        }
    }

    /// The core's outward ports, all handled by this bridge.
    pub fn ports(&self) -> Ports {
        let addr = self.context.address();
        Ports {
            bind: Some(addr.clone().recipient()),
            unbind: Some(addr.clone().recipient()),
            publish: Some(addr.clone().recipient()),
            send: Some(addr.clone().recipient()),
            kick: Some(addr.clone().recipient()),
            lifecycle: Some(addr.recipient()),
            mailbox: Some(self.stats.mailbox.clone()),
        }
    }

    pub fn stats(&self) -> Arc<BridgeStats> {
        self.stats.clone()
    }

    /// Starts the bridge on the current arbiter; it connects at once.
    pub fn start(self, config: AmqpConfig, broker: BrokerHandle) -> Addr<Bridge> {
        let bridge = Bridge {
            config: Arc::new(config),
            broker,
            stats: self.stats,
            patterns: HashSet::new(),
            link: None,
            generation: 0,
            failures: 0,
            was_connected: false,
            stopping: false,
        };
        self.context.run(bridge)
    }
}

/// One message on its way to RabbitMQ.
struct Outgoing<P> {
    exchange: &'static str,
    routing_key: String,
    payload: P,
    properties: BasicProperties,
    /// Have RabbitMQ return it (and Herald report failure) if no queue takes it.
    mandatory: bool,
}

#[derive(Serialize, Deserialize)]
struct ControlMessage {
    kick: String,
    origin: String,
}

#[derive(Serialize)]
struct LifecycleMessage<'a> {
    event: &'static str,
    user: Option<&'a str>,
    session: &'a str,
    node: &'a str,
    reason: Option<&'static str>,
    ts: u64,
}

impl Bridge {
    fn handled(&self) {
        self.stats.mailbox.handled.inc();
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        let config = self.config.clone();
        let patterns: Vec<Pattern> = self.patterns.iter().cloned().collect();
        let attempt = async move {
            match tokio::time::timeout(
                config.connect_timeout,
                topology::establish(&config, patterns),
            )
            .await
            {
                Ok(established) => established,
                Err(_) => Err(Error::TimedOut(config.connect_timeout)),
            }
        };
        // Waiting keeps `patterns` as it was when the attempt began; messages
        // that arrive meanwhile are handled once the link is up or not.
        ctx.wait(
            attempt
                .into_actor(self)
                .map(|established, bridge, ctx| match established {
                    Ok((link, consumer)) => {
                        bridge.generation += 1;
                        ctx.add_stream(topology::tagged(consumer, bridge.generation));
                        bridge.link = Some(link);
                        bridge.stats.set_state(LinkState::Connected);
                        if bridge.was_connected {
                            bridge.stats.reconnects.inc();
                        }
                        bridge.was_connected = true;
                        bridge.failures = 0;
                        info!(
                            "connected to RabbitMQ; node queue bound for {} pattern(s)",
                            bridge.patterns.len()
                        );
                    }
                    Err(err) => bridge.retry_later(&err, ctx),
                }),
        );
    }

    fn retry_later(&mut self, err: &Error, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.failures += 1;
        let doubled = FIRST_RETRY.saturating_mul(1 << self.failures.min(10));
        let delay = doubled.min(MAX_RETRY).mul_f64(rand::random_range(0.8..1.2));
        if self.failures == 1 || self.failures % 10 == 0 {
            warn!(
                "cannot reach RabbitMQ ({err}); attempt {} failed, retrying in {delay:?}",
                self.failures
            );
        }
        ctx.run_later(delay, |bridge, ctx| bridge.connect(ctx));
    }

    /// The link of `generation` failed. Everything in flight on it is
    /// answered by its own error; the next link is built from scratch.
    fn lost(&mut self, generation: u64, why: &str, ctx: &mut Context<Self>) {
        if generation != self.generation || self.link.is_none() {
            return;
        }
        self.link = None;
        self.stats.set_state(LinkState::Connecting);
        if self.stopping {
            return;
        }
        warn!("lost the RabbitMQ connection ({why}); reconnecting");
        self.failures = 0;
        ctx.run_later(FIRST_RETRY, |bridge, ctx| bridge.connect(ctx));
    }

    /// Publishes in mailbox order and answers `reply` (if any) once RabbitMQ
    /// confirmed, refused, or did not answer in time.
    fn publish<P>(&mut self, ctx: &mut Context<Self>, out: Outgoing<P>, reply: Option<Reply>)
    where
        P: AsRef<[u8]> + 'static,
    {
        let Some(link) = &self.link else {
            if let Some(reply) = reply {
                let _ = reply.send(Err(ErrorCode::Unavailable));
            }
            return;
        };
        let channel = link.channel.clone();
        let generation = self.generation;
        let stats = self.stats.clone();
        let timeout = self.config.confirm_timeout;
        let options = BasicPublishOptions {
            mandatory: out.mandatory,
            ..BasicPublishOptions::default()
        };
        let sent = async move {
            channel
                .basic_publish(
                    out.exchange.into(),
                    out.routing_key.into(),
                    options,
                    out.payload.as_ref(),
                    out.properties,
                )
                .await
        };
        ctx.wait(sent.into_actor(self).map(move |sent, bridge, ctx| {
            let confirm = match sent {
                Ok(confirm) => confirm,
                Err(err) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(ErrorCode::Unavailable));
                    }
                    bridge.lost(generation, &err.to_string(), ctx);
                    return;
                }
            };
            stats.published.inc();
            actix::spawn(async move {
                let outcome = match tokio::time::timeout(timeout, confirm).await {
                    Ok(Ok(Confirmation::Ack(returned))) => {
                        stats.confirmed.inc();
                        match returned {
                            None => Ok(()),
                            Some(_) => {
                                debug!("RabbitMQ returned an unroutable message");
                                Err(ErrorCode::Unavailable)
                            }
                        }
                    }
                    Ok(Ok(_)) | Ok(Err(_)) => Err(ErrorCode::Unavailable),
                    Err(_) => {
                        warn!("RabbitMQ did not confirm a publish within {timeout:?}");
                        Err(ErrorCode::Unavailable)
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            });
        }));
    }

    fn properties(&self, message_id: &str, ts: u64) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-herald-node".into(),
            AMQPValue::LongString(self.config.node_id.as_bytes().into()),
        );
        headers.insert(
            "x-herald-ts".into(),
            AMQPValue::LongLongInt(i64::try_from(ts).unwrap_or(i64::MAX)),
        );
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(message_id.into())
            .with_timestamp(ts / 1000)
            .with_headers(headers)
    }

    fn on_delivery(&mut self, delivery: Delivery) {
        self.stats.consumed.inc();
        let exchange = delivery.exchange.as_str();
        if exchange == CONTROL {
            return self.on_control(delivery);
        }
        let topic = if exchange == TOPICS {
            delivery.routing_key.as_str().to_owned()
        } else if let Some(mapping) = self.config.inbound.iter().find(|m| m.exchange == exchange) {
            mapping.topic_for(delivery.routing_key.as_str())
        } else {
            warn!("dropping a message from unexpected exchange `{exchange}`");
            return reject(delivery);
        };
        let Ok(topic) = Topic::parse(&topic) else {
            warn!("dropping a message for `{topic}`, which is not a valid topic");
            return reject(delivery);
        };
        let mid = message_id(&delivery.properties).unwrap_or_else(|| self.broker.message_id());
        let ts = timestamp(&delivery.properties).unwrap_or_else(now_millis);
        let message = Prepared::new(topic, &payload(&delivery.data), mid, ts);
        // Acknowledged once the Broker took the message, so at most
        // `prefetch` deliveries wait in the Broker's mailbox at any time.
        let taken = self.broker.ask(|reply| Fanout { message, reply });
        let acker = delivery.acker;
        actix::spawn(async move {
            let _ = taken.await;
            let _ = acker.ack(BasicAckOptions::default()).await;
        });
    }

    fn on_control(&mut self, delivery: Delivery) {
        match serde_json::from_slice::<ControlMessage>(&delivery.data) {
            Ok(control) if control.origin.as_str() != &*self.config.node_id => {
                let broker = self.broker.clone();
                actix::spawn(async move {
                    let _ = broker.send(KickUser { user: control.kick }).await;
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                });
            }
            Ok(_) => {
                actix::spawn(async move {
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                });
            }
            Err(err) => {
                warn!("dropping a malformed control message: {err}");
                reject(delivery);
            }
        }
    }
}

fn reject(delivery: Delivery) {
    actix::spawn(async move {
        let _ = delivery
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await;
    });
}

/// The publisher's message id, when it is safe to use as Herald's `mid`.
fn message_id(properties: &BasicProperties) -> Option<Arc<str>> {
    let id: &ShortString = properties.message_id().as_ref()?;
    let id = id.as_str();
    let safe = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'));
    safe.then(|| Arc::from(id))
}

/// Milliseconds since the epoch: Herald's own header, else the AMQP
/// timestamp (whole seconds).
fn timestamp(properties: &BasicProperties) -> Option<u64> {
    let from_header = properties.headers().as_ref().and_then(|headers| {
        match headers.inner().get("x-herald-ts") {
            Some(AMQPValue::LongLongInt(ms)) => u64::try_from(*ms).ok(),
            Some(AMQPValue::Timestamp(ms)) => Some(*ms),
            _ => None,
        }
    });
    from_header.or_else(|| properties.timestamp().map(|secs| secs.saturating_mul(1000)))
}

impl Actor for Bridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.stats.set_state(LinkState::Connecting);
        self.connect(ctx);
    }
}

/// Deliveries from the node's queue, tagged with their link; `None` ends a
/// link's stream.
impl StreamHandler<(u64, Option<Result<Delivery, lapin::Error>>)> for Bridge {
    fn handle(
        &mut self,
        (generation, item): (u64, Option<Result<Delivery, lapin::Error>>),
        ctx: &mut Self::Context,
    ) {
        match item {
            Some(Ok(delivery)) => self.on_delivery(delivery),
            Some(Err(err)) => self.lost(generation, &err.to_string(), ctx),
            None => self.lost(generation, "the consumer was cancelled", ctx),
        }
    }

    /// A link's stream ending is handled above; the bridge lives on.
    fn finished(&mut self, _: &mut Self::Context) {}
}

/// Binds the node queue for a pattern its first local subscriber asked for.
impl Handler<BindPattern> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: BindPattern, ctx: &mut Self::Context) {
        self.handled();
        self.patterns.insert(msg.pattern.clone());
        let Some(link) = &self.link else {
            // Bound when the link comes back; the subscriber need not wait.
            let _ = msg.reply.send(Ok(()));
            return;
        };
        let (channel, queue, generation) =
            (link.channel.clone(), link.queue.clone(), self.generation);
        let pattern = msg.pattern;
        let key = pattern.as_str().to_owned();
        let bound = async move { topology::bind(&channel, &queue, TOPICS, &key).await };
        ctx.wait(
            bound
                .into_actor(self)
                .map(move |bound, bridge, ctx| match bound {
                    Ok(()) => {
                        let _ = msg.reply.send(Ok(()));
                    }
                    Err(err) => {
                        bridge.patterns.remove(&pattern);
                        let _ = msg.reply.send(Err(ErrorCode::Unavailable));
                        bridge.lost(generation, &err.to_string(), ctx);
                    }
                }),
        );
    }
}

/// Unbinds a pattern no local session holds any more.
impl Handler<UnbindPattern> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: UnbindPattern, ctx: &mut Self::Context) {
        self.handled();
        self.patterns.remove(&msg.pattern);
        let Some(link) = &self.link else {
            return;
        };
        let (channel, queue, generation) =
            (link.channel.clone(), link.queue.clone(), self.generation);
        let key = msg.pattern.as_str().to_owned();
        let unbound = async move { topology::unbind(&channel, &queue, TOPICS, &key).await };
        ctx.wait(unbound.into_actor(self).map(move |unbound, bridge, ctx| {
            if let Err(err) = unbound {
                bridge.lost(generation, &err.to_string(), ctx);
            }
        }));
    }
}

/// Publishes a message to every node through `herald.topics`.
impl Handler<PublishOut> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: PublishOut, ctx: &mut Self::Context) {
        self.handled();
        let message = msg.message;
        let out = Outgoing {
            exchange: TOPICS,
            routing_key: message.topic.as_str().to_owned(),
            properties: self.properties(&message.mid, message.ts),
            payload: PreparedPayload(message),
            mandatory: false,
        };
        self.publish(ctx, out, Some(msg.reply));
    }
}

/// A published message's payload, borrowed from its encoded frame.
struct PreparedPayload(Arc<Prepared>);

impl AsRef<[u8]> for PreparedPayload {
    fn as_ref(&self) -> &[u8] {
        self.0.data().as_bytes()
    }
}

/// Hands a client's message to the backends through `herald.client`.
impl Handler<SendToBackend> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: SendToBackend, ctx: &mut Self::Context) {
        self.handled();
        let mut properties = self.properties(&self.broker.message_id(), now_millis());
        let mut headers = properties.headers().clone().unwrap_or_default();
        if let Some(user) = &msg.user {
            headers.insert(
                "x-herald-user".into(),
                AMQPValue::LongString(user.as_bytes().into()),
            );
        }
        headers.insert(
            "x-herald-session".into(),
            AMQPValue::LongString(msg.session.as_bytes().into()),
        );
        properties = properties.with_headers(headers);
        // Backends' commands outlive a RabbitMQ restart in durable queues.
        properties = properties.with_delivery_mode(2);
        let out = Outgoing {
            exchange: CLIENT,
            routing_key: msg.destination,
            payload: msg.data,
            properties,
            mandatory: true,
        };
        self.publish(ctx, out, Some(msg.reply));
    }
}

/// Asks every node to close a user's sessions.
impl Handler<KickEverywhere> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: KickEverywhere, ctx: &mut Self::Context) {
        self.handled();
        let control = ControlMessage {
            kick: msg.user,
            origin: self.config.node_id.to_string(),
        };
        let out = Outgoing {
            exchange: CONTROL,
            routing_key: String::new(),
            payload: serde_json::to_vec(&control).unwrap_or_default(),
            properties: self.properties(&self.broker.message_id(), now_millis()),
            mandatory: false,
        };
        self.publish(ctx, out, Some(msg.reply));
    }
}

/// Announces a session coming or going on `herald.lifecycle`.
impl Handler<Lifecycle> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: Lifecycle, ctx: &mut Self::Context) {
        self.handled();
        let event = match msg.event {
            SessionEvent::Connected => "session.connected",
            SessionEvent::Disconnected => "session.disconnected",
        };
        let body = LifecycleMessage {
            event,
            user: msg.user.as_deref(),
            session: &msg.session,
            node: &self.config.node_id,
            reason: msg.reason,
            ts: msg.ts,
        };
        let out = Outgoing {
            exchange: LIFECYCLE,
            routing_key: event.to_owned(),
            payload: serde_json::to_vec(&body).unwrap_or_default(),
            properties: self.properties(&self.broker.message_id(), msg.ts),
            mandatory: false,
        };
        self.publish(ctx, out, None);
    }
}

/// Closes the connection for shutdown.
impl Handler<Stop> for Bridge {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Stop, _: &mut Self::Context) -> Self::Result {
        self.handled();
        self.stopping = true;
        let link = self.link.take();
        self.stats.set_state(LinkState::Connecting);
        Box::pin(
            async move {
                if let Some(link) = link {
                    let _ = link
                        .connection
                        .close(200, "herald node shutting down".into())
                        .await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
