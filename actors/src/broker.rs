//! The Broker actor: the one owner of topic membership on a node.
//!
//! Sessions register with it and subscribe through it; every message
//! published on this node or arriving from RabbitMQ passes through it once
//! and is fanned out with `try_send` against each session's outbound meter,
//! so one slow reader is closed with 1013 instead of holding up the rest.
//! A message published here reaches local subscribers directly and is then
//! handed to the bridge for the other nodes.
//!
//! The Broker reports each pattern's first local holder and last one to the
//! bridge, in order, through [`Ports::report`]; a subscribe that made a
//! pattern's first holder (and every subscribe of that pattern meanwhile) is
//! answered once the bridge says the pattern is bound.
//!
//! Everything reaches the Broker through [`BrokerHandle::ask`], which refuses
//! at once when the Broker's backlog is at the bound of the caller's
//! [`Lane`]: sessions stop at three quarters of it, so HTTP publishers and
//! RabbitMQ deliveries always find room.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use log::{debug, info};
use serde_json::value::RawValue;

use crate::frame::{now_millis, Prepared};
use crate::membership::{Change, Membership, Subscribed};
use crate::ports::{Interest, Lifecycle, Ports, PublishOut, SessionEvent};
use crate::protocol::{Disconnect, ErrorCode};
use crate::reply::{answer, Ack, Outcome, Reply};
use crate::session::{Close, Deliver, OutboundMeter};
use crate::stats::Counters;
use crate::topic::{user_pattern, Pattern, Topic};

pub use crate::membership::{SessionKey, TopicDirectory};

/// Registers a session so that it can subscribe and receive. Answered once
/// the session receives its user's private topic on every path.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub key: SessionKey,
    /// Public name, for lifecycle events.
    pub name: Arc<str>,
    pub user: Option<Arc<str>>,
    pub deliver: Recipient<Deliver>,
    pub close: Recipient<Close>,
    pub meter: Arc<OutboundMeter>,
    pub reply: Reply,
}

/// Forgets a session and every subscription it held. Sent on
/// [`Lane::Internal`]: each session sends it once, and losing it would leak
/// the session's state.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub key: SessionKey,
    /// Why the session ended, as in lifecycle events.
    pub reason: &'static str,
    pub reply: Reply,
}

/// Adds a subscription, within the per-session limit; answered once the
/// subscription is in force on every path a message can take to it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub key: SessionKey,
    pub pattern: Pattern,
    pub reply: Reply,
}

/// Removes a subscription; removing one the session does not hold succeeds.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub key: SessionKey,
    pub pattern: Pattern,
    pub reply: Reply,
}

/// Publishes a message made on this node: to its subscribers here at once,
/// then to every other node through the bridge.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub message: Arc<Prepared>,
    pub reply: Reply,
}

/// Delivers a message that arrived from another node or a microservice to
/// this node's subscribers only.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fanout {
    pub message: Arc<Prepared>,
    pub reply: Reply,
}

/// Closes every session of a user with 4003; answers how many.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KickUser {
    pub user: String,
    pub reply: Reply<usize>,
}

/// Starts closing every session with 1001, `per_tick` sessions every
/// `tick`, and refuses new ones; answers how many will be closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub schedule: CloseSchedule,
    pub reply: Reply<usize>,
}

/// How fast a shutdown closes sessions: in batches, so that a node with
/// many thousands does not stall on one turn of the Broker.
#[derive(Debug, Clone, Copy)]
pub struct CloseSchedule {
    pub per_tick: usize,
    pub tick: Duration,
}

impl Default for CloseSchedule {
    fn default() -> Self {
        CloseSchedule {
            per_tick: 1000,
            tick: Duration::from_millis(5),
        }
    }
}

/// Who is asking, which decides how much of the Broker's bound they may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Client sessions: refused at three quarters of the bound, so that
    /// browsers can never starve backends.
    Session,
    /// HTTP API callers: refused at the bound.
    Backend,
    /// Messages whose volume is bounded where they come from (a session's
    /// one `Unregister`, RabbitMQ deliveries within the prefetch): never
    /// refused, since losing them would lose state.
    Internal,
}

/// What the Broker keeps of one registered session.
struct Member {
    name: Arc<str>,
    user: Option<Arc<str>>,
    deliver: Recipient<Deliver>,
    close: Recipient<Close>,
    meter: Arc<OutboundMeter>,
}

/// Subscribers waiting for a pattern's bind.
struct PendingBind {
    /// Tells this bind's answer from that of an earlier one which a `Lost`
    /// superseded.
    round: u64,
    waiters: Vec<Waiter>,
}

struct Waiter {
    key: SessionKey,
    reply: Reply,
    /// A subscribe (rolled back if the bind fails) or a registration.
    subscribe: bool,
}

pub struct Broker {
    members: Membership<Member>,
    counters: Arc<Counters>,
    ports: Ports,
    /// Reused buffer of recipients, so a publish does not allocate.
    recipients: Vec<SessionKey>,
    pending: HashMap<Pattern, PendingBind>,
    rounds: u64,
    /// Sessions still to be closed by a shutdown.
    closing: VecDeque<SessionKey>,
    draining: Arc<AtomicBool>,
}

impl Broker {
    fn handled(&self) {
        self.counters.broker.handled.inc();
    }

    fn sync_gauges(&self) {
        let counters = &self.counters;
        counters
            .subscriptions
            .set(self.members.subscription_count() as u64);
        counters.topics.set(self.members.pattern_count() as u64);
        counters.users_online.set(self.members.user_count() as u64);
    }

    fn announce(&self, event: SessionEvent, member: &Member, reason: Option<&'static str>) {
        let lifecycle = Lifecycle {
            event,
            session: member.name.clone(),
            user: member.user.clone(),
            reason,
            ts: now_millis(),
        };
        let _ = self.ports.offer(&self.ports.lifecycle, lifecycle);
    }

    /// Tells the bridge what changed. While draining nothing is reported:
    /// the node's queue goes away with its connection.
    fn report(&mut self, changes: Vec<Change>) {
        for change in changes {
            let Change::Lost(pattern) = change else {
                continue;
            };
            // Everyone still waiting for this pattern has let go of it.
            if let Some(pending) = self.pending.remove(&pattern) {
                for waiter in pending.waiters {
                    answer(waiter.reply, Ok(Ack::default()));
                }
            }
            if !self.draining.load(Ordering::Acquire) {
                self.ports.report(Interest::Lost { pattern });
            }
        }
        self.sync_gauges();
    }

    /// Answers `waiter` once `pattern` is bound: now if nothing is pending
    /// for it, else with the bind under way. A gained pattern starts a bind.
    fn when_bound(
        &mut self,
        pattern: Pattern,
        gained: bool,
        waiter: Waiter,
        ctx: &mut Context<Self>,
    ) {
        if !gained {
            match self.pending.get_mut(&pattern) {
                Some(pending) => pending.waiters.push(waiter),
                None => answer(waiter.reply, Ok(Ack::default())),
            }
            return;
        }
        if self.ports.interest.is_none() {
            return answer(waiter.reply, Ok(Ack::default()));
        }
        self.rounds += 1;
        let round = self.rounds;
        self.pending.insert(
            pattern.clone(),
            PendingBind {
                round,
                waiters: vec![waiter],
            },
        );
        let (bound, outcome) = Outcome::channel();
        self.ports.report(Interest::Gained {
            pattern: pattern.clone(),
            bound,
        });
        ctx.spawn(outcome.into_actor(self).map(move |outcome, broker, _| {
            broker.bind_done(&pattern, round, outcome.map(drop));
        }));
    }

    /// Answers everyone waiting for this round of `pattern`'s bind; on
    /// failure their subscriptions are rolled back, so no one holds a
    /// pattern that the node does not receive.
    fn bind_done(&mut self, pattern: &Pattern, round: u64, bound: Result<(), ErrorCode>) {
        if self.pending.get(pattern).map(|p| p.round) != Some(round) {
            return;
        }
        let Some(pending) = self.pending.remove(pattern) else {
            return;
        };
        let mut changes = Vec::new();
        for waiter in pending.waiters {
            if let Err(code) = bound {
                if waiter.subscribe {
                    changes.extend(self.members.unsubscribe(waiter.key, pattern));
                    answer(waiter.reply, Err(code));
                    continue;
                }
            }
            answer(waiter.reply, Ok(Ack::default()));
        }
        self.report(changes);
    }

    fn fan_out(&mut self, message: &Arc<Prepared>) {
        self.counters.messages_in.inc();
        let mut recipients = std::mem::take(&mut self.recipients);
        self.members.recipients(&message.topic, &mut recipients);
        let cost = message.cost();
        let mut delivered = 0;
        let mut overflowed = Vec::new();
        for key in &recipients {
            let Some(member) = self.members.get(*key) else {
                continue;
            };
            if !member.meter.try_reserve(cost) {
                overflowed.push(*key);
                continue;
            }
            match member.deliver.try_send(Deliver {
                message: message.clone(),
            }) {
                Ok(()) => delivered += 1,
                Err(SendError::Full(_)) => {
                    member.meter.cancel(cost);
                    overflowed.push(*key);
                }
                // Already gone; its Unregister is on the way.
                Err(SendError::Closed(_)) => member.meter.cancel(cost),
            }
        }
        self.counters.messages_out.add(delivered);
        for key in overflowed {
            self.close_slow_consumer(key);
        }
        self.recipients = recipients;
    }

    /// Drops a session's subscriptions and closes it with `reason`.
    fn close(&mut self, key: SessionKey, reason: Disconnect) {
        let mut changes = Vec::new();
        self.members.clear(key, &mut changes);
        self.report(changes);
        if let Some(member) = self.members.get(key) {
            member.close.do_send(Close { reason });
        }
    }

    fn close_slow_consumer(&mut self, key: SessionKey) {
        self.counters.messages_dropped.inc();
        if let Some(member) = self.members.get(key) {
            info!(
                "session {} is a slow consumer ({} frames, {} bytes queued): closing with 1013",
                member.name,
                member.meter.queued_frames(),
                member.meter.queued_bytes()
            );
        }
        self.close(key, Disconnect::SlowConsumer);
    }

    /// Closes the next batch of a shutdown; schedules the one after.
    fn close_batch(&mut self, schedule: CloseSchedule, ctx: &mut Context<Self>) {
        for _ in 0..schedule.per_tick {
            let Some(key) = self.closing.pop_front() else {
                return;
            };
            self.close(key, Disconnect::Shutdown);
        }
        if !self.closing.is_empty() {
            ctx.run_later(schedule.tick, move |broker, ctx| {
                broker.close_batch(schedule, ctx)
            });
        }
    }
}

/// The Broker's bound is enforced by [`BrokerHandle::ask`], which counts the
/// backlog itself and sends with `do_send`, so the mailbox's own capacity
/// never refuses what the bound let in.
impl Actor for Broker {
    type Context = Context<Self>;
}

/// Adds a session to the node.
impl Handler<Register> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Register, ctx: &mut Self::Context) {
        self.handled();
        if self.draining.load(Ordering::Acquire) {
            return answer(msg.reply, Err(ErrorCode::Unavailable));
        }
        let member = Member {
            name: msg.name,
            user: msg.user.clone(),
            deliver: msg.deliver,
            close: msg.close,
            meter: msg.meter,
        };
        self.announce(SessionEvent::Connected, &member, None);
        let implicit = msg.user.as_deref().and_then(user_pattern);
        let gained = self.members.join(msg.key, msg.user, member).is_some();
        self.sync_gauges();
        let waiter = Waiter {
            key: msg.key,
            reply: msg.reply,
            subscribe: false,
        };
        match implicit {
            Some(pattern) => self.when_bound(pattern, gained, waiter, ctx),
            None => answer(waiter.reply, Ok(Ack::default())),
        }
    }
}

/// Removes a session and its subscriptions.
impl Handler<Unregister> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Self::Context) {
        self.handled();
        let mut changes = Vec::new();
        let member = self.members.leave(msg.key, &mut changes);
        self.report(changes);
        if let Some(member) = member {
            self.announce(SessionEvent::Disconnected, &member, Some(msg.reason));
        }
        answer(msg.reply, Ok(Ack::default()));
    }
}

/// Adds a pattern to a session.
impl Handler<Subscribe> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) {
        self.handled();
        let Subscribe {
            key,
            pattern,
            reply,
        } = msg;
        // A new pattern costs the bridge a bind: refuse it rather than queue
        // beyond the bridge's bound.
        let would_gain = !self.members.is_held(&pattern);
        if would_gain && self.ports.interest.is_some() && !self.ports.has_room() {
            self.counters.refused_overload.inc();
            return answer(reply, Err(ErrorCode::Unavailable));
        }
        match self.members.subscribe(key, &pattern) {
            Err(code) => answer(reply, Err(code)),
            Ok(Subscribed::Already) => {
                let waiter = Waiter {
                    key,
                    reply,
                    subscribe: false,
                };
                self.when_bound(pattern, false, waiter, ctx);
            }
            Ok(Subscribed::Added { gained }) => {
                debug!("session {key} subscribed to {pattern}");
                self.sync_gauges();
                let waiter = Waiter {
                    key,
                    reply,
                    subscribe: true,
                };
                self.when_bound(pattern, gained, waiter, ctx);
            }
        }
    }
}

/// Removes a pattern from a session.
impl Handler<Unsubscribe> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        self.handled();
        let change = self.members.unsubscribe(msg.key, &msg.pattern);
        self.report(change.into_iter().collect());
        answer(msg.reply, Ok(Ack::default()));
    }
}

/// Delivers a message made here, then hands it on to the other nodes.
impl Handler<Publish> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) {
        self.handled();
        self.fan_out(&msg.message);
        if self.ports.publish.is_none() {
            return answer(msg.reply, Ok(Ack::default()));
        }
        let out = PublishOut {
            message: msg.message,
            reply: msg.reply,
        };
        if let Err(out) = self.ports.offer(&self.ports.publish, out) {
            answer(out.reply, Ok(Ack::LOCAL_ONLY));
        }
    }
}

/// Fans out a message that arrived from RabbitMQ.
impl Handler<Fanout> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Fanout, _: &mut Self::Context) {
        self.handled();
        self.fan_out(&msg.message);
        answer(msg.reply, Ok(Ack::default()));
    }
}

/// Closes a user's sessions.
impl Handler<KickUser> for Broker {
    type Result = ();

    fn handle(&mut self, msg: KickUser, _: &mut Self::Context) {
        self.handled();
        let keys = self.members.sessions_of(&msg.user);
        for key in &keys {
            self.close(*key, Disconnect::Kicked);
        }
        if !keys.is_empty() {
            info!("closed {} session(s) of user {}", keys.len(), msg.user);
        }
        answer(msg.reply, Ok(keys.len()));
    }
}

/// Closes every session for shutdown, in batches.
impl Handler<Shutdown> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Self::Context) {
        self.handled();
        self.draining.store(true, Ordering::Release);
        let already = self.closing.len();
        self.closing.extend(self.members.keys());
        let count = self.closing.len();
        if already == 0 {
            self.close_batch(msg.schedule, ctx);
        }
        answer(msg.reply, Ok(count));
    }
}

/// Produces message ids unique on this node: `<node>:<sequence>`.
#[derive(Debug)]
pub struct MessageIds {
    node: Arc<str>,
    next: AtomicU64,
}

impl MessageIds {
    pub fn new(node: Arc<str>) -> Self {
        MessageIds {
            node,
            next: AtomicU64::new(1),
        }
    }

    pub fn next(&self) -> Arc<str> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}:{seq:x}", self.node).into()
    }
}

/// What every caller (session, HTTP handler, bridge) holds to reach the
/// Broker: its address, plus the node-wide pieces a publish needs.
#[derive(Clone)]
pub struct BrokerHandle {
    addr: Addr<Broker>,
    counters: Arc<Counters>,
    ids: Arc<MessageIds>,
    node: Arc<str>,
    ports: Ports,
    draining: Arc<AtomicBool>,
}

/// How a Broker is set up.
pub struct BrokerSettings {
    pub node: Arc<str>,
    pub max_subscriptions: usize,
    pub ports: Ports,
}

impl BrokerHandle {
    /// Starts a Broker on the current arbiter, sending outward through
    /// `ports` (use [`Ports::none`] for an in-process node). The Broker's
    /// bound is the one in `counters.broker`.
    pub fn start(settings: BrokerSettings, counters: Arc<Counters>) -> (Self, Arc<TopicDirectory>) {
        let members = Membership::new(settings.max_subscriptions);
        let directory = members.directory();
        let draining = Arc::new(AtomicBool::new(false));
        let broker = Broker {
            members,
            counters: counters.clone(),
            ports: settings.ports.clone(),
            recipients: Vec::new(),
            pending: HashMap::new(),
            rounds: 0,
            closing: VecDeque::new(),
            draining: draining.clone(),
        };
        let handle = BrokerHandle {
            addr: broker.start(),
            counters,
            ids: Arc::new(MessageIds::new(settings.node.clone())),
            node: settings.node,
            ports: settings.ports,
            draining,
        };
        (handle, directory)
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Whether the node is shutting down: no new sessions are taken.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// A fresh message id, unique on this node.
    pub fn message_id(&self) -> Arc<str> {
        self.ids.next()
    }

    /// Encodes a message once, stamped with a fresh id and the current time.
    pub fn prepare(&self, topic: Topic, data: &RawValue) -> Arc<Prepared> {
        Prepared::new(topic, data, self.ids.next(), now_millis())
    }

    /// The one way to the Broker: queues the request now, in call order,
    /// if the Broker's backlog leaves room for `lane`, and returns its
    /// outcome to come; refused at once with `unavailable` otherwise.
    pub fn ask<M, T>(&self, lane: Lane, build: impl FnOnce(Reply<T>) -> M) -> Outcome<T>
    where
        M: Message<Result = ()> + Send + 'static,
        Broker: Handler<M>,
    {
        let mailbox = &self.counters.broker;
        let limit = match lane {
            Lane::Session => mailbox.bound() / 4 * 3,
            Lane::Backend => mailbox.bound(),
            Lane::Internal => u64::MAX,
        };
        if !mailbox.has_room(limit) {
            self.counters.refused_overload.inc();
            return Outcome::ready(Err(ErrorCode::Unavailable));
        }
        let (reply, outcome) = Outcome::channel();
        mailbox.enqueued.inc();
        self.addr.do_send(build(reply));
        outcome
    }
}
