//! The Bridge actor: RabbitMQ on one side, the Broker on the other.
//!
//! It handles the core's ports. Interest changes drive the node queue's
//! bindings ([`crate::bindings`]) on the consuming connection; publishes,
//! sends, kicks and lifecycle events go to the publishing task
//! ([`crate::publish`]) on a connection of its own; deliveries from the
//! node queue are sorted ([`crate::consume`]) and handed to the Broker.
//!
//! Revocations travel as signed control messages ([`crate::control`]): the
//! ones made here go out to every node, those of other nodes are added to
//! this node's list (which closes the sessions they void), and each time the
//! consuming link comes up the bridge asks its peers for their whole list,
//! retrying until RabbitMQ took the question. Peers answer for the asker by
//! name, so the other nodes drop the answers unmerged.
//!
//! No handler waits: every RabbitMQ operation runs beside the actor under
//! a deadline and reports back, so one stalled operation never holds up the
//! rest, and the mailbox drains at the pace of the CPU.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use herald_actors::broker::{BrokerHandle, CloseRevoked, Fanout, KickUser, Lane};
use herald_actors::frame::{now_millis, JSON_CONTENT_TYPE};
use herald_actors::ports::{
    Interest, KickEverywhere, Lifecycle, Ports, PublishOut, RevokeEverywhere, SendToBackend,
    SessionEvent,
};
use herald_actors::reply::{answer, Ack, Outcome, Reply};
use herald_actors::revocation::{unix_now, Revocation};
use herald_actors::topic::Pattern;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Acker;
use lapin::{BasicProperties, Channel, Connection};
use log::{debug, info, warn};
use serde::Serialize;

use crate::bindings::{Bindings, Effects, Op};
use crate::consume::{self, Inbound, KIND_HEADER, NODE_HEADER, ORIGIN_HEADER, TS_HEADER};
use crate::control::{ControlAuth, ControlMessage, NodeStatus, Request, ANNOUNCE_EVERY};
use crate::error::Error;
use crate::inbound::InboundMapping;
use crate::link::{self, Backoff, Role};
use crate::publish::{self, Job, Payload, Publisher, Purpose};
use crate::stats::BridgeStats;
use crate::topology::{self, CLIENT, CONTROL, LIFECYCLE, TOPICS};

/// How the bridge reaches RabbitMQ and what it consumes.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// The brokers to use, tried in turn (see [`crate::link`]).
    pub brokers: Arc<crate::link::Brokers>,
    pub node_id: Arc<str>,
    /// Unacknowledged deliveries RabbitMQ may hand the node at once.
    pub prefetch: u16,
    pub inbound: Vec<InboundMapping>,
    /// How long a publish may wait for RabbitMQ's confirm.
    pub confirm_timeout: Duration,
    /// How long one connection attempt (with its declarations) may take,
    /// and one bind or unbind.
    pub connect_timeout: Duration,
    /// Messages that may wait for the bridge (its mailbox, and the
    /// publishing queue) before senders are refused.
    pub queue_bound: usize,
    /// Signs and checks node-to-node control messages; without it no other
    /// node is believed.
    pub cluster_secret: Option<String>,
}

/// Closes both RabbitMQ connections and stops the bridge, without undoing
/// bindings one by one: the node queue goes away with its connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop {
    /// How long closing may take in all.
    pub within: Duration,
}

/// Bind and unbind operations under way at once on the consuming link.
const MAX_BINDS_IN_FLIGHT: usize = 64;
/// Revocations per control message when a node hands out its list, so
/// that no message grows with the list.
const REVOCATIONS_PER_MESSAGE: usize = 500;
/// How often, and how many times, a node asks its peers for their
/// revocations while RabbitMQ does not take the question (the publishing
/// connection may come up after the consuming one).
const ASK_REVOCATIONS_RETRY: Duration = Duration::from_secs(1);
const ASK_REVOCATIONS_ATTEMPTS: u32 = 60;

/// The live consuming connection: the node queue and the channel its
/// bindings are made on.
struct ConsumingLink {
    connection: Connection,
    channel: Channel,
    queue: ShortString,
}

pub struct Bridge {
    config: Arc<AmqpConfig>,
    /// Marks this process's own topic messages, so that it knows them when
    /// they come back. Random, not the node id: a backend that copies the
    /// headers it received, or a second node started with the same id, must
    /// not have its messages taken for this node's.
    origin: Arc<str>,
    broker: BrokerHandle,
    stats: Arc<BridgeStats>,
    publisher: Option<Publisher>,
    control: ControlAuth,
    bindings: Bindings<Reply>,
    consuming: Option<ConsumingLink>,
    /// Numbers consuming links; what an older link reports is ignored.
    generation: u64,
    backoff: Backoff,
    /// Whether a consuming link was ever up, so later ones count as
    /// reconnects.
    was_connected: bool,
    stopping: bool,
}

/// Creates the bridge's address before the bridge itself, because the Broker
/// needs the bridge's ports and the bridge needs the Broker.
pub struct BridgeStarter {
    context: Context<Bridge>,
    stats: Arc<BridgeStats>,
}

impl BridgeStarter {
    /// A bridge whose mailbox takes `queue_bound` messages before senders
    /// are refused.
    pub fn new(queue_bound: usize) -> Self {
        BridgeStarter {
            context: Context::new(),
            stats: Arc::new(BridgeStats::new(queue_bound)),
        }
    }

    /// The core's outward ports, all handled by this bridge.
    pub fn ports(&self) -> Ports {
        let addr = self.context.address();
        Ports {
            interest: Some(addr.clone().recipient()),
            publish: Some(addr.clone().recipient()),
            send: Some(addr.clone().recipient()),
            kick: Some(addr.clone().recipient()),
            revoke: Some(addr.clone().recipient()),
            lifecycle: Some(addr.recipient()),
            mailbox: self.stats.mailbox.clone(),
        }
    }

    pub fn stats(&self) -> Arc<BridgeStats> {
        self.stats.clone()
    }

    /// Starts the bridge on the current arbiter; it connects at once.
    pub fn start(self, config: AmqpConfig, broker: BrokerHandle) -> Addr<Bridge> {
        let control = ControlAuth::new(config.cluster_secret.as_deref());
        let bridge = Bridge {
            config: Arc::new(config),
            origin: format!("{:016x}", rand::random::<u64>()).into(),
            broker,
            stats: self.stats,
            publisher: None,
            control,
            bindings: Bindings::new(MAX_BINDS_IN_FLIGHT),
            consuming: None,
            generation: 0,
            backoff: Backoff::default(),
            was_connected: false,
            stopping: false,
        };
        self.context.run(bridge)
    }
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
        let attempt = async move {
            let setup = async {
                let connection = link::connect(&config, Role::Consuming).await?;
                let queue = topology::consume_node_queue(&connection, &config).await?;
                Ok::<_, Error>((connection, queue))
            };
            match tokio::time::timeout(config.connect_timeout, setup).await {
                Ok(established) => established,
                Err(_) => Err(Error::TimedOut(config.connect_timeout)),
            }
        };
        ctx.spawn(attempt.into_actor(self).map(|established, bridge, ctx| {
            if bridge.stopping {
                if let Ok((connection, _)) = established {
                    actix::spawn(link::close(connection, "herald node shutting down"));
                }
                return;
            }
            match established {
                Ok((connection, queue)) => bridge.connected(connection, queue, ctx),
                Err(err) => {
                    let delay = bridge.backoff.failed();
                    if bridge.backoff.should_warn() {
                        warn!(
                            "cannot reach RabbitMQ ({err}); attempt {} failed, retrying in {delay:?}",
                            bridge.backoff.failures()
                        );
                    }
                    ctx.run_later(delay, |bridge, ctx| bridge.connect(ctx));
                }
            }
        }));
    }

    fn connected(
        &mut self,
        connection: Connection,
        queue: topology::NodeQueue,
        ctx: &mut Context<Self>,
    ) {
        self.generation += 1;
        ctx.add_stream(topology::tagged(queue.deliveries, self.generation));
        self.consuming = Some(ConsumingLink {
            connection,
            channel: queue.channel,
            queue: queue.name,
        });
        self.stats.consuming_up(true);
        self.stats
            .set_broker(self.config.brokers.current(Role::Consuming));
        if self.was_connected {
            self.stats.reconnects.inc();
        }
        self.was_connected = true;
        self.backoff.reset();
        info!(
            "connected to RabbitMQ; binding the node queue for {} pattern(s)",
            self.bindings.desired().len()
        );
        let effects = self.bindings.link_up();
        self.apply(effects, ctx);
        // The node queue is bound to the control exchange by now, so the
        // answers will reach it.
        self.ask_for_revocations(self.generation, 1, ctx);
    }

    /// Asks every other node for its revocation list; retried while
    /// RabbitMQ does not take the question and the link is the same.
    fn ask_for_revocations(&mut self, generation: u64, attempt: u32, ctx: &mut Context<Self>) {
        let (reply, outcome) = Outcome::channel();
        if !self.publish_control(Request::RevocationsWanted {}, reply) {
            return;
        }
        ctx.spawn(outcome.into_actor(self).map(move |sent, bridge, ctx| {
            if sent.is_ok() || generation != bridge.generation || bridge.stopping {
                return;
            }
            if attempt >= ASK_REVOCATIONS_ATTEMPTS {
                warn!("could not ask the other nodes for their revocations; tokens revoked before this node started may be accepted here until revoked again");
                return;
            }
            ctx.run_later(ASK_REVOCATIONS_RETRY, move |bridge, ctx| {
                bridge.ask_for_revocations(generation, attempt + 1, ctx)
            });
        }));
    }

    /// Signs `request` and publishes it on the control exchange; `false`
    /// (and `reply` answered) without a cluster secret, since no other
    /// node would believe it.
    fn publish_control(&self, request: Request, reply: Reply) -> bool {
        let Some(control) = self
            .control
            .sign(request, &self.config.node_id, now_millis())
        else {
            answer(reply, Ok(Ack::default()));
            return false;
        };
        self.offer(Job {
            exchange: CONTROL,
            routing_key: String::new(),
            payload: Payload::Owned(serde_json::to_vec(&control).unwrap_or_default()),
            properties: self.properties(
                JSON_CONTENT_TYPE,
                &self.broker.message_id(),
                now_millis(),
                [],
            ),
            mandatory: false,
            purpose: Purpose::Control(reply),
        });
        true
    }

    /// Does what a believed control message asks; `acker` is answered once
    /// it is done.
    fn on_control(&mut self, control: ControlMessage, acker: Acker) {
        let broker = &self.broker;
        let done: BoxFuture<'static, ()> = match control.request {
            Request::Kick(user) => {
                let kicked = broker.ask(Lane::Internal, |reply| KickUser { user, reply });
                Box::pin(async move {
                    let _ = kicked.await;
                })
            }
            // `consume::sort` dropped answers addressed to other nodes.
            Request::Revoke(entries) | Request::RevocationsFor { entries, .. } => {
                self.merge_revocations(&control.origin, &entries)
            }
            Request::RevocationsWanted {} => {
                self.hand_out_revocations(&control.origin);
                Box::pin(async {})
            }
            // The signer is the node it speaks for, whatever the body says.
            Request::NodeStatus(mut status) => {
                status.node = control.origin.clone();
                self.stats.peers.record(status);
                Box::pin(async {})
            }
        };
        actix::spawn(async move {
            let _ = done.await;
            let _ = acker.ack(BasicAckOptions::default()).await;
        });
    }

    /// Adds another node's entries to the list; done once the sessions
    /// that new entries void are closed.
    fn merge_revocations(&self, origin: &str, entries: &[Revocation]) -> BoxFuture<'static, ()> {
        let broker = &self.broker;
        if !broker.revocations().merge(entries, unix_now()) {
            return Box::pin(async {});
        }
        let origin: String = origin.chars().take(64).collect();
        info!(
            "node {origin:?} sent {} revocation(s) new here; closing the sessions they void",
            entries.len()
        );
        let closed = broker.ask(Lane::Internal, |reply| CloseRevoked { reply });
        Box::pin(async move {
            let _ = closed.await;
        })
    }

    /// Answers `asker`'s question with this node's whole list, in pieces
    /// addressed to it; an empty list says nothing, so a cluster without
    /// revocations sends no answers at all.
    fn hand_out_revocations(&self, asker: &str) {
        let entries: Vec<Revocation> = self.broker.revocations().entries(unix_now());
        for chunk in entries.chunks(REVOCATIONS_PER_MESSAGE) {
            // Nobody waits: a peer that misses an answer asks again when
            // its link comes back.
            let (reply, _) = Outcome::channel();
            let answer = Request::RevocationsFor {
                node: asker.to_owned(),
                entries: chunk.to_vec(),
            };
            self.publish_control(answer, reply);
        }
    }

    /// The consuming link of `generation` failed: its queue and bindings
    /// are gone with it; the next link is bound from scratch.
    fn lost(&mut self, generation: u64, why: &str, ctx: &mut Context<Self>) {
        if generation != self.generation {
            return;
        }
        let Some(link) = self.consuming.take() else {
            return;
        };
        actix::spawn(link::close(link.connection, "herald reconnecting"));
        self.stats.consuming_up(false);
        self.stats.set_broker(None);
        let effects = self.bindings.link_down();
        self.apply(effects, ctx);
        if self.stopping {
            return;
        }
        warn!("lost the RabbitMQ consuming connection ({why}); reconnecting");
        ctx.run_later(Backoff::first(), |bridge, ctx| bridge.connect(ctx));
    }

    /// Answers the waiters the bindings released and starts the operations
    /// they asked for, each under a deadline.
    fn apply(&mut self, effects: Effects<Reply>, ctx: &mut Context<Self>) {
        for waiter in effects.answer {
            answer(waiter, Ok(Ack::default()));
        }
        let Some(link) = &self.consuming else {
            return;
        };
        for (pattern, op) in effects.start {
            let (channel, queue) = (link.channel.clone(), link.queue.clone());
            let generation = self.generation;
            let deadline = self.config.connect_timeout;
            let key = pattern.as_str().to_owned();
            let run = async move {
                let done = async {
                    match op {
                        Op::Bind => topology::bind(&channel, &queue, TOPICS, &key).await,
                        Op::Unbind => topology::unbind(&channel, &queue, TOPICS, &key).await,
                    }
                };
                match tokio::time::timeout(deadline, done).await {
                    Ok(done) => done.map_err(|err| err.to_string()),
                    Err(_) => Err(format!("a {op:?} took longer than {deadline:?}")),
                }
            };
            ctx.spawn(
                run.into_actor(self).map(move |done, bridge, ctx| {
                    bridge.op_done(generation, pattern, op, done, ctx)
                }),
            );
        }
    }

    fn op_done(
        &mut self,
        generation: u64,
        pattern: Pattern,
        op: Op,
        done: Result<(), String>,
        ctx: &mut Context<Self>,
    ) {
        if generation != self.generation {
            return;
        }
        match done {
            Ok(()) => {
                debug!("{op:?} {pattern} done");
                let effects = self.bindings.done(pattern, op);
                self.apply(effects, ctx);
            }
            Err(why) => self.lost(generation, &why, ctx),
        }
    }

    /// Herald's properties and headers for a message, with `extra` headers
    /// of its kind.
    fn properties<'a>(
        &self,
        content_type: &str,
        message_id: &str,
        ts: u64,
        extra: impl IntoIterator<Item = (&'static str, &'a [u8])>,
    ) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in extra {
            headers.insert(name.into(), AMQPValue::LongString(value.into()));
        }
        headers.insert(
            NODE_HEADER.into(),
            AMQPValue::LongString(self.config.node_id.as_bytes().into()),
        );
        headers.insert(
            TS_HEADER.into(),
            AMQPValue::LongLongInt(i64::try_from(ts).unwrap_or(i64::MAX)),
        );
        BasicProperties::default()
            // Longer content types cannot be an AMQP short string; sessions
            // refuse them, so this only guards the bridge against panics.
            .with_content_type(
                ShortString::try_new(content_type)
                    .unwrap_or_else(|_| ShortString::from("application/octet-stream")),
            )
            .with_message_id(message_id.into())
            .with_timestamp(ts / 1000)
            .with_headers(headers)
    }

    fn offer(&self, job: Job) {
        match &self.publisher {
            Some(publisher) => publisher.offer(job),
            None => publish::refuse(job.purpose, &self.stats),
        }
    }

    /// A control message not believed: counted, logged, and dropped.
    fn refuse_control(&self, why: &str, acker: Acker) {
        self.stats.control_rejected.inc();
        warn!("refused a control message {why}");
        actix::spawn(async move {
            let _ = acker.reject(BasicRejectOptions { requeue: false }).await;
        });
    }

    fn on_delivery(&mut self, delivery: Delivery) {
        self.stats.consumed.inc();
        let broker = &self.broker;
        let sorted = consume::sort(&delivery, &self.config, &self.origin, || {
            broker.message_id()
        });
        let acker = delivery.acker;
        match sorted {
            Inbound::Message(message) => {
                // Acknowledged once the Broker took it, so at most
                // `prefetch` deliveries wait in the Broker's mailbox.
                let taken = broker.ask(Lane::Internal, |reply| Fanout { message, reply });
                actix::spawn(async move {
                    let _ = taken.await;
                    let _ = acker.ack(BasicAckOptions::default()).await;
                });
            }
            Inbound::Control(control) => match self.control.verify(&control, now_millis()) {
                Ok(()) => self.on_control(control, acker),
                Err(why) => {
                    let origin: String = control.origin.chars().take(64).collect();
                    let why = format!("naming node {origin:?}: {why}");
                    self.refuse_control(&why, acker);
                }
            },
            Inbound::BadControl(why) => self.refuse_control(&why, acker),
            Inbound::Own | Inbound::Ignore => {
                if matches!(sorted, Inbound::Own) {
                    self.stats.own_dropped.inc();
                }
                actix::spawn(async move {
                    let _ = acker.ack(BasicAckOptions::default()).await;
                });
            }
            Inbound::Reject(why) => {
                warn!("dropping {why}");
                actix::spawn(async move {
                    let _ = acker.reject(BasicRejectOptions { requeue: false }).await;
                });
            }
        }
    }
}

impl Actor for Bridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.publisher = Some(Publisher::start(
            self.config.clone(),
            self.stats.clone(),
            self.config.queue_bound,
        ));
        self.connect(ctx);
        self.announce_every(ctx);
    }
}

impl Bridge {
    /// Tells the other nodes how this one is doing, every
    /// [`ANNOUNCE_EVERY`] while the link is up (and never without a
    /// cluster secret: nobody would believe it).
    fn announce_every(&self, ctx: &mut Context<Self>) {
        let started_at_ms = now_millis();
        let mut last: Option<(std::time::Instant, u64, u64)> = None;
        ctx.run_interval(ANNOUNCE_EVERY, move |bridge, _| {
            let counters = bridge.broker.counters();
            let (sent_in, sent_out) = (counters.messages_in.get(), counters.messages_out.get());
            let (in_per_s, out_per_s) = match last {
                Some((at, before_in, before_out)) => {
                    let secs = at.elapsed().as_secs_f64().max(0.001);
                    (
                        (sent_in.saturating_sub(before_in) as f64 / secs).round() as u64,
                        (sent_out.saturating_sub(before_out) as f64 / secs).round() as u64,
                    )
                }
                None => (0, 0),
            };
            last = Some((std::time::Instant::now(), sent_in, sent_out));
            let state = bridge.stats.state();
            if state == crate::stats::LinkState::Connecting {
                return;
            }
            let status = NodeStatus {
                node: bridge.config.node_id.to_string(),
                started_at_ms,
                version: env!("CARGO_PKG_VERSION").to_string(),
                connections: counters.connections_current.get(),
                users: counters.users_online.get(),
                in_per_s,
                out_per_s,
                draining: bridge.broker.is_draining(),
                amqp: state.as_str().to_string(),
            };
            let (reply, _) = tokio::sync::oneshot::channel();
            bridge.publish_control(Request::NodeStatus(status), reply);
        });
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
            // A link being replaced may still hand over what its queue
            // held; the new queue is bound for the same patterns, so taking
            // both would deliver twice.
            Some(Ok(_)) if generation != self.generation => {}
            Some(Ok(delivery)) => self.on_delivery(delivery),
            Some(Err(err)) => self.lost(generation, &err.to_string(), ctx),
            None => self.lost(generation, "the consumer was cancelled", ctx),
        }
    }

    /// A link's stream ending is handled above; the bridge lives on.
    fn finished(&mut self, _: &mut Self::Context) {}
}

/// Keeps the node queue bound for what the node's sessions hold.
impl Handler<Interest> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: Interest, ctx: &mut Self::Context) {
        self.handled();
        let effects = match msg {
            Interest::Gained { pattern, bound } => self.bindings.gained(pattern, bound),
            Interest::Lost { pattern } => self.bindings.lost(pattern),
        };
        self.apply(effects, ctx);
    }
}

/// Publishes a message to the other nodes through `herald.topics`.
impl Handler<PublishOut> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: PublishOut, _: &mut Self::Context) {
        self.handled();
        let message = msg.message;
        let origin = [(ORIGIN_HEADER, self.origin.as_bytes())];
        // A backend-initiated call's result says so, for the other nodes.
        let kind = message
            .is_response()
            .then_some((KIND_HEADER, consume::RESPONSE_KIND.as_bytes()));
        let properties = self.properties(
            message.body.content_type(),
            &message.mid,
            message.ts,
            origin.into_iter().chain(kind),
        );
        self.offer(Job {
            exchange: TOPICS,
            routing_key: message.topic.as_str().to_owned(),
            properties,
            payload: Payload::Prepared(message),
            mandatory: false,
            purpose: Purpose::Topic(msg.reply),
        });
    }
}

/// Hands a client's message to the backends through `herald.client`.
impl Handler<SendToBackend> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: SendToBackend, _: &mut Self::Context) {
        self.handled();
        let user = msg
            .user
            .as_deref()
            .map(|user| ("x-herald-user", user.as_bytes()));
        let session = ("x-herald-session", msg.session.as_bytes());
        let properties = self
            .properties(
                msg.body.content_type(),
                &self.broker.message_id(),
                now_millis(),
                user.into_iter().chain([session]),
            )
            // Backends' commands outlive a RabbitMQ restart in durable queues.
            .with_delivery_mode(2);
        self.offer(Job {
            exchange: CLIENT,
            routing_key: msg.destination,
            payload: Payload::Bytes(msg.body.bytes().clone()),
            properties,
            mandatory: true,
            purpose: Purpose::Send(msg.reply),
        });
    }
}

/// Asks every node to close a user's sessions.
impl Handler<KickEverywhere> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: KickEverywhere, _: &mut Self::Context) {
        self.handled();
        // Without a secret no other node would believe it; the kick stays
        // on this node.
        self.publish_control(Request::Kick(msg.user), msg.reply);
    }
}

/// Tells every node of revocations made here.
impl Handler<RevokeEverywhere> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: RevokeEverywhere, _: &mut Self::Context) {
        self.handled();
        self.publish_control(Request::Revoke(msg.entries), msg.reply);
    }
}

/// Announces a session coming or going on `herald.lifecycle`.
impl Handler<Lifecycle> for Bridge {
    type Result = ();

    fn handle(&mut self, msg: Lifecycle, _: &mut Self::Context) {
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
        self.offer(Job {
            exchange: LIFECYCLE,
            routing_key: event.to_owned(),
            payload: Payload::Owned(serde_json::to_vec(&body).unwrap_or_default()),
            properties: self.properties(JSON_CONTENT_TYPE, &self.broker.message_id(), msg.ts, []),
            mandatory: false,
            purpose: Purpose::Lifecycle,
        });
    }
}

/// Closes both connections for shutdown.
impl Handler<Stop> for Bridge {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Stop, ctx: &mut Self::Context) -> Self::Result {
        self.handled();
        self.stopping = true;
        let publisher = self.publisher.take();
        let consuming = self.consuming.take();
        self.stats.consuming_up(false);
        self.stats.set_broker(None);
        // Whoever subscribes from now on is answered at once.
        let effects = self.bindings.link_down();
        self.apply(effects, ctx);
        Box::pin(
            async move {
                let closing_consumer = async {
                    if let Some(link) = consuming {
                        link::close(link.connection, "herald node shutting down").await;
                    }
                };
                let closing_publisher = async {
                    if let Some(publisher) = publisher {
                        publisher.stop(msg.within).await;
                    }
                };
                let both = futures_util::future::join(closing_consumer, closing_publisher);
                let _ = tokio::time::timeout(msg.within, both).await;
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
