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
//!
//! The Broker also closes (4001) the sessions whose token the revocation
//! list voids: it keeps each member's token id and issue time, checks them
//! when a session joins or refreshes ([`Retoken`]), and sweeps every member
//! when the list grows ([`CloseRevoked`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use log::{debug, info};

use crate::frame::{now_millis, Body, Prepared};
use crate::membership::{Membership, Subscribed};
use crate::ports::{Interest, Lifecycle, Ports, PublishOut, PublishReply, SessionEvent};
use crate::protocol::{Disconnect, ErrorCode};
use crate::reply::{answer, Ack, Outcome, Reply};
use crate::revocation::{unix_now, RevocationList};
use crate::session::{Close, Deliver, OutboundMeter};
use crate::stats::Counters;
use crate::topic::{user_pattern, users_pattern, Pattern, Topic};

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
    /// The session's token id (`jti`) and issue time (`iat`), for the
    /// revocation list.
    pub token_id: Option<Arc<str>>,
    pub issued_at: Option<SystemTime>,
    pub deliver: Recipient<Deliver>,
    pub close: Recipient<Close>,
    pub meter: Arc<OutboundMeter>,
    pub reply: Reply,
}

/// A session took a fresh token (`refresh`): from now on it is judged by
/// that one. Sent on [`Lane::Internal`]: losing it would leave the Broker
/// judging the session by its old token.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retoken {
    pub key: SessionKey,
    pub token_id: Option<Arc<str>>,
    pub issued_at: Option<SystemTime>,
    pub reply: Reply,
}

/// Closes (4001) every session whose token the revocation list now voids;
/// sent after entries were added. Answers how many were closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseRevoked {
    pub reply: Reply<usize>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseSchedule {
    pub per_tick: usize,
    pub tick: Duration,
    /// When set, each session is told, just before its close, to come back
    /// after a delay drawn uniformly from `[0, reconnect_within]`.
    pub reconnect_within: Option<Duration>,
}

impl Default for CloseSchedule {
    fn default() -> Self {
        CloseSchedule {
            per_tick: 1000,
            tick: Duration::from_millis(5),
            reconnect_within: None,
        }
    }
}

/// How often a drain closes its next share of sessions.
pub const DRAIN_TICK: Duration = Duration::from_millis(50);

impl CloseSchedule {
    /// Closes `sessions` evenly over `window`, one share every
    /// [`DRAIN_TICK`], the last share by the window's end, and hints each
    /// client to come back within `window` of its own close: clients closed
    /// at spread times who wait spread delays reach the other nodes at no
    /// more than about `sessions / window` per second.
    pub fn spread(sessions: usize, window: Duration) -> Self {
        let ticks = (window.as_millis() / DRAIN_TICK.as_millis()).max(1);
        let ticks = usize::try_from(ticks).unwrap_or(usize::MAX);
        let (per_tick, tick) = if sessions > ticks {
            (sessions.div_ceil(ticks), DRAIN_TICK)
        } else {
            // Fewer sessions than ticks: one at a time, evenly apart.
            let apart = u32::try_from(sessions.max(1)).unwrap_or(u32::MAX);
            (1, (window / apart).max(Duration::from_millis(1)))
        };
        CloseSchedule {
            per_tick,
            tick,
            reconnect_within: Some(window),
        }
    }

    /// When, counted from the start, the `i`-th session closes.
    pub fn close_at(&self, i: usize) -> Duration {
        let tick = u32::try_from(i / self.per_tick.max(1)).unwrap_or(u32::MAX);
        self.tick.saturating_mul(tick)
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
    /// The token the session holds now, as far as revocation cares.
    token_id: Option<Arc<str>>,
    issued_at: Option<SystemTime>,
    deliver: Recipient<Deliver>,
    close: Recipient<Close>,
    meter: Arc<OutboundMeter>,
}

/// Subscribes (and registrations, for `user.{id}`) waiting for a
/// pattern's bind.
struct PendingBind {
    /// Tells this bind's answer from that of an earlier one which a `Lost`
    /// superseded.
    round: u64,
    waiters: Vec<Reply>,
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
    /// Whether a `Shutdown` came.
    shut_down: bool,
    draining: Arc<AtomicBool>,
    /// The node's revocation list, shared with the token checker.
    revocations: Arc<RevocationList>,
}

/// How often expired revocations are forgotten.
const PRUNE_REVOCATIONS_EVERY: Duration = Duration::from_secs(5);

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

    /// Tells the bridge which patterns lost their last local holder. While
    /// draining nothing is reported: the node's queue goes away with its
    /// connection.
    fn report_lost(&mut self, lost: Vec<Pattern>) {
        for pattern in lost {
            // Everyone still waiting for this pattern has let go of it.
            if let Some(pending) = self.pending.remove(&pattern) {
                for waiter in pending.waiters {
                    answer(waiter, Ok(Ack::default()));
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
        waiter: Reply,
        ctx: &mut Context<Self>,
    ) {
        if !gained {
            match self.pending.get_mut(&pattern) {
                Some(pending) => pending.waiters.push(waiter),
                None => answer(waiter, Ok(Ack::default())),
            }
            return;
        }
        if self.ports.interest.is_none() {
            return answer(waiter, Ok(Ack::default()));
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
        ctx.spawn(outcome.into_actor(self).map(move |bound, broker, _| {
            broker.bind_done(&pattern, round, bound);
        }));
    }

    /// Answers everyone waiting for this round of `pattern`'s bind. The
    /// bridge answers every bind `Ok` (a failed one becomes a lost link and
    /// a full rebind, and subscribing while RabbitMQ is down succeeds); only
    /// a bridge that stopped leaves it unanswered, which reads as
    /// `unavailable`.
    fn bind_done(&mut self, pattern: &Pattern, round: u64, bound: Result<Ack, ErrorCode>) {
        if self.pending.get(pattern).map(|p| p.round) != Some(round) {
            return;
        }
        for waiter in self
            .pending
            .remove(pattern)
            .into_iter()
            .flat_map(|p| p.waiters)
        {
            answer(waiter, bound);
        }
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
        self.close_hinted(key, reason, None);
    }

    fn close_hinted(&mut self, key: SessionKey, reason: Disconnect, after: Option<Duration>) {
        let mut lost = Vec::new();
        self.members.clear(key, &mut lost);
        self.report_lost(lost);
        if let Some(member) = self.members.get(key) {
            member.close.do_send(Close {
                reason,
                reconnect_after: after,
            });
        }
    }

    /// Whether the list voids the token `key` holds.
    fn is_revoked(&self, key: SessionKey, now: u64) -> bool {
        self.members.get(key).is_some_and(|member| {
            self.revocations.voids_at(
                member.user.as_deref(),
                member.token_id.as_deref(),
                member.issued_at,
                now,
            )
        })
    }

    fn close_revoked(&mut self, key: SessionKey) {
        self.counters.revocation_closed.inc();
        if let Some(member) = self.members.get(key) {
            info!(
                "session {} holds a revoked token: closing with 4001",
                member.name
            );
        }
        self.close(key, Disconnect::Revoked);
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
            let hint = schedule.reconnect_within.map(|within| {
                let ms = crate::millis(within);
                Duration::from_millis(rand::random_range(0..=ms))
            });
            self.close_hinted(key, Disconnect::Shutdown, hint);
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

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(PRUNE_REVOCATIONS_EVERY, |broker, _| {
            broker.revocations.prune(unix_now());
        });
    }
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
            token_id: msg.token_id,
            issued_at: msg.issued_at,
            deliver: msg.deliver,
            close: msg.close,
            meter: msg.meter,
        };
        self.announce(SessionEvent::Connected, &member, None);
        // A signed-in session's `welcome` waits until the node receives
        // `user.*` on every path: only the first one's does, in practice.
        let private = msg.user.as_deref().and_then(user_pattern).is_some();
        let gained = self.members.join(msg.key, msg.user, member);
        self.sync_gauges();
        if private {
            self.when_bound(users_pattern(), gained, msg.reply, ctx);
        } else {
            answer(msg.reply, Ok(Ack::default()));
        }
        // Revoked after the handshake checked it, before the sweep could
        // see the session: closed now.
        if self.is_revoked(msg.key, unix_now()) {
            self.close_revoked(msg.key);
        }
    }
}

/// Judges a session by the token it refreshed to.
///
/// Why the Broker and not the session decides: the Broker must count what
/// a revocation closed and find the sessions without waking every one.
/// The session tells the Broker its new token right after taking it; a
/// revocation of that token which reached the list in between is caught
/// here, and one of the old token that the Broker handles before this
/// message closes the session (on the safe side: its client reconnects
/// with the new token).
impl Handler<Retoken> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Retoken, _: &mut Self::Context) {
        self.handled();
        if let Some(member) = self.members.get_mut(msg.key) {
            member.token_id = msg.token_id;
            member.issued_at = msg.issued_at;
        }
        if self.is_revoked(msg.key, unix_now()) {
            self.close_revoked(msg.key);
        }
        answer(msg.reply, Ok(Ack::default()));
    }
}

/// Closes every session the revocation list voids now: one pass over the
/// members, a lookup or two each, whatever was added.
impl Handler<CloseRevoked> for Broker {
    type Result = ();

    fn handle(&mut self, msg: CloseRevoked, _: &mut Self::Context) {
        self.handled();
        let now = unix_now();
        let revoked: Vec<SessionKey> = self
            .members
            .keys()
            .filter(|key| self.is_revoked(*key, now))
            .collect();
        for key in &revoked {
            self.close_revoked(*key);
        }
        answer(msg.reply, Ok(revoked.len()));
    }
}

/// Removes a session and its subscriptions.
impl Handler<Unregister> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Self::Context) {
        self.handled();
        let mut lost = Vec::new();
        let member = self.members.leave(msg.key, &mut lost);
        self.report_lost(lost);
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
            self.ports.mailbox.refused.inc();
            return answer(reply, Err(ErrorCode::Unavailable));
        }
        match self.members.subscribe(key, &pattern) {
            Err(code) => answer(reply, Err(code)),
            Ok(Subscribed::Already) => self.when_bound(pattern, false, reply, ctx),
            Ok(Subscribed::Added { gained }) => {
                debug!("session {key} subscribed to {pattern}");
                self.sync_gauges();
                self.when_bound(pattern, gained, reply, ctx);
            }
        }
    }
}

/// Removes a pattern from a session.
impl Handler<Unsubscribe> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        self.handled();
        if self.members.unsubscribe(msg.key, &msg.pattern) {
            self.report_lost(vec![msg.pattern]);
        } else {
            self.sync_gauges();
        }
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
            // Answers `local_only` however the bridge fails to answer.
            reply: PublishReply::new(msg.reply),
        };
        let _ = self.ports.offer(&self.ports.publish, out);
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
        // The handle raised the flag already (see [`BrokerHandle::drain`]);
        // raised here too for those who send `Shutdown` themselves.
        self.draining.store(true, Ordering::Release);
        if std::mem::replace(&mut self.shut_down, true) {
            // Already draining: a second request starts nothing new, but
            // one without a window closes all that are left at once.
            let left = self.closing.len();
            if msg.schedule.reconnect_within.is_none() {
                while let Some(key) = self.closing.pop_front() {
                    self.close(key, Disconnect::Shutdown);
                }
            }
            return answer(msg.reply, Ok(left));
        }
        let already = self.closing.len();
        self.closing.extend(self.members.keys());
        let count = self.closing.len();
        // A drain's share per tick depends on how many there are to close.
        let schedule = match msg.schedule.reconnect_within {
            Some(window) => CloseSchedule::spread(count, window),
            None => msg.schedule,
        };
        if already == 0 {
            self.close_batch(schedule, ctx);
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
    revocations: Arc<RevocationList>,
}

/// How a Broker is set up.
pub struct BrokerSettings {
    pub node: Arc<str>,
    pub max_subscriptions: usize,
    pub ports: Ports,
    /// The node's revocation list (the token checker holds it too).
    pub revocations: Arc<RevocationList>,
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
            shut_down: false,
            draining: draining.clone(),
            revocations: settings.revocations.clone(),
        };
        let handle = BrokerHandle {
            addr: broker.start(),
            counters,
            ids: Arc::new(MessageIds::new(settings.node.clone())),
            node: settings.node,
            ports: settings.ports,
            draining,
            revocations: settings.revocations,
        };
        (handle, directory)
    }

    /// The node's revocation list.
    pub fn revocations(&self) -> &Arc<RevocationList> {
        &self.revocations
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

    /// Starts the node's drain on `schedule`: from this call on the node
    /// is draining (so `/readyz` and new sessions see it at once, whatever
    /// the Broker's backlog), and the Broker closes its sessions. Answers
    /// whether a drain had begun before this call (of concurrent calls,
    /// exactly one answers `false`) and how many sessions are being closed.
    pub async fn drain(&self, schedule: CloseSchedule) -> (bool, usize) {
        let already = self.draining.swap(true, Ordering::AcqRel);
        let closing = self
            .ask(Lane::Internal, |reply| Shutdown { schedule, reply })
            .await
            .unwrap_or(0);
        (already, closing)
    }

    /// A fresh message id, unique on this node.
    pub fn message_id(&self) -> Arc<str> {
        self.ids.next()
    }

    /// Encodes a message once, stamped with a fresh id and the current time.
    pub fn prepare(&self, topic: Topic, body: Body) -> Arc<Prepared> {
        Prepared::new(topic, body, self.ids.next(), now_millis())
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
        if !mailbox.admit(limit) {
            return Outcome::ready(Err(ErrorCode::Unavailable));
        }
        let (reply, outcome) = Outcome::channel();
        self.addr.do_send(build(reply));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::OutboundLimits;
    use crate::stats::MailboxCounters;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    #[test]
    fn a_spread_schedule_closes_evenly_and_within_the_window() {
        let window = Duration::from_secs(2);
        let few = CloseSchedule::spread(40, window);
        assert_eq!((few.per_tick, few.tick), (1, Duration::from_millis(50)));
        assert_eq!(few.close_at(0), Duration::ZERO);
        assert_eq!(few.close_at(39), Duration::from_millis(1950));
        let four = CloseSchedule::spread(4, window);
        let times: Vec<_> = (0..4).map(|i| four.close_at(i)).collect();
        assert_eq!(times, [0, 500, 1000, 1500].map(Duration::from_millis));
        let many = CloseSchedule::spread(3000, Duration::from_secs(10));
        assert_eq!((many.per_tick, many.tick), (15, DRAIN_TICK));
        assert_eq!(many.close_at(2999), Duration::from_millis(9950));
        // No share is more than one tick's worth of the even rate.
        let per_second = (0..3000)
            .filter(|i| many.close_at(*i) < Duration::from_secs(1))
            .count();
        assert_eq!(per_second, 300);
        assert_eq!(CloseSchedule::spread(0, window).per_tick, 1);
        assert_eq!(CloseSchedule::spread(1, window).close_at(0), Duration::ZERO);
        assert_eq!(CloseSchedule::spread(5, Duration::ZERO).per_tick, 5);
        assert_eq!(many.reconnect_within, Some(Duration::from_secs(10)));
    }
    use std::sync::Mutex;

    /// What the fake bridge saw, in order.
    #[derive(Default)]
    struct Seen {
        events: Vec<(bool, Pattern)>,
        /// Binds not answered yet, oldest first.
        unanswered: VecDeque<(Pattern, Reply)>,
        published: Vec<Arc<Prepared>>,
    }

    /// Stands in for the RabbitMQ bridge: records interest and publishes,
    /// answers binds only when the test says so.
    struct FakeBridge(Arc<Mutex<Seen>>);

    impl Actor for FakeBridge {
        type Context = Context<Self>;
    }

    impl Handler<Interest> for FakeBridge {
        type Result = ();
        fn handle(&mut self, msg: Interest, _: &mut Self::Context) {
            let mut seen = self.0.lock().expect("lock");
            match msg {
                Interest::Gained { pattern, bound } => {
                    seen.events.push((true, pattern.clone()));
                    seen.unanswered.push_back((pattern, bound));
                }
                Interest::Lost { pattern } => seen.events.push((false, pattern)),
            }
        }
    }

    impl Handler<PublishOut> for FakeBridge {
        type Result = ();
        fn handle(&mut self, msg: PublishOut, _: &mut Self::Context) {
            self.0.lock().expect("lock").published.push(msg.message);
            msg.reply.answer(Ack::default());
        }
    }

    /// Stands in for a WebSocket session: records what it is handed.
    struct FakeSession(Arc<Mutex<Vec<String>>>);

    impl Actor for FakeSession {
        type Context = Context<Self>;

        fn started(&mut self, ctx: &mut Self::Context) {
            ctx.set_mailbox_capacity(1024);
        }
    }

    impl Handler<Deliver> for FakeSession {
        type Result = ();
        fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
            let text = format!("{}={}", msg.message.topic, msg.message.data());
            self.0.lock().expect("lock").push(text);
        }
    }

    impl Handler<Close> for FakeSession {
        type Result = ();
        fn handle(&mut self, msg: Close, _: &mut Self::Context) {
            let text = format!("closed {}", msg.reason.code());
            self.0.lock().expect("lock").push(text);
        }
    }

    struct Node {
        broker: BrokerHandle,
        seen: Arc<Mutex<Seen>>,
    }

    fn node(with_bridge: bool, bound: usize, bridge_bound: usize) -> Node {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let ports = if with_bridge {
            let bridge = FakeBridge(seen.clone()).start();
            Ports {
                interest: Some(bridge.clone().recipient()),
                publish: Some(bridge.recipient()),
                mailbox: Arc::new(MailboxCounters::with_bound(bridge_bound)),
                ..Ports::none()
            }
        } else {
            Ports::none()
        };
        let counters = Arc::new(Counters::new(bound));
        let settings = BrokerSettings {
            node: "n-test".into(),
            max_subscriptions: 64,
            ports,
            revocations: RevocationList::new(Default::default(), counters.clone()),
        };
        let (broker, _) = BrokerHandle::start(settings, counters);
        Node { broker, seen }
    }

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).expect("valid test input")
    }

    impl Node {
        fn register(
            &self,
            key: SessionKey,
            user: Option<&str>,
        ) -> (Arc<Mutex<Vec<String>>>, Outcome) {
            let got = Arc::new(Mutex::new(Vec::new()));
            let session = FakeSession(got.clone()).start();
            let meter = OutboundMeter::new(OutboundLimits {
                max_frames: 1 << 20,
                max_bytes: 1 << 30,
            });
            let outcome = self.broker.ask(Lane::Session, |reply| Register {
                key,
                name: format!("s-{key}").into(),
                user: user.map(Arc::from),
                token_id: Some(format!("jti-{key}").into()),
                issued_at: Some(SystemTime::now() - Duration::from_secs(1_000)),
                deliver: session.clone().recipient(),
                close: session.recipient(),
                meter,
                reply,
            });
            (got, outcome)
        }

        fn subscribe(&self, key: SessionKey, text: &str) -> Outcome {
            let pattern = pattern(text);
            self.broker.ask(Lane::Session, |reply| Subscribe {
                key,
                pattern,
                reply,
            })
        }

        fn unsubscribe(&self, key: SessionKey, text: &str) -> Outcome {
            let pattern = pattern(text);
            self.broker.ask(Lane::Session, |reply| Unsubscribe {
                key,
                pattern,
                reply,
            })
        }

        fn unregister(&self, key: SessionKey) -> Outcome {
            self.broker.ask(Lane::Internal, |reply| Unregister {
                key,
                reason: "client_closed",
                reply,
            })
        }

        fn publish(&self, topic: &str, data: &str) -> Outcome {
            let data = serde_json::value::RawValue::from_string(data.to_owned())
                .expect("valid test input");
            let message = self.broker.prepare(
                Topic::parse(topic).expect("valid test input"),
                Body::json(&data),
            );
            self.broker
                .ask(Lane::Backend, |reply| Publish { message, reply })
        }

        /// Lets the Broker and the fakes handle what is queued.
        async fn settle(&self) {
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        fn events(&self) -> Vec<(bool, String)> {
            let seen = self.seen.lock().expect("lock");
            seen.events
                .iter()
                .map(|(g, p)| (*g, p.to_string()))
                .collect()
        }

        /// Answers the oldest bind still waiting.
        fn answer_bind(&self) -> Option<Pattern> {
            let (pattern, reply) = self.seen.lock().expect("lock").unanswered.pop_front()?;
            answer(reply, Ok(Ack::default()));
            Some(pattern)
        }

        /// Whether the latest report for `pattern` is a gain whose bind is
        /// not answered yet: nobody holding it may have been acknowledged.
        fn bind_awaited(&self, pattern: &str) -> bool {
            let seen = self.seen.lock().expect("lock");
            let latest = seen
                .events
                .iter()
                .rev()
                .find(|(_, p)| p.as_str() == pattern);
            let awaited = seen.unanswered.iter().any(|(p, _)| p.as_str() == pattern);
            matches!(latest, Some((true, _))) && awaited
        }
    }

    /// Whether an outcome is already in, without waiting for it.
    fn answered<T: Unpin>(outcome: &mut Outcome<T>) -> Option<Result<T, ErrorCode>> {
        futures_util::FutureExt::now_or_never(outcome)
    }

    #[actix::test]
    async fn revoked_tokens_close_their_sessions_4001_and_a_refreshed_session_is_judged_by_its_new_token(
    ) {
        let node = node(false, 1024, 1024);
        let (one, _) = node.register(1, Some("alice"));
        let (two, _) = node.register(2, Some("alice"));
        let (three, _) = node.register(3, Some("bob"));
        // Session 2 refreshed to a token issued after the cut below.
        node.broker
            .ask(Lane::Internal, |reply| Retoken {
                key: 2,
                token_id: Some("fresh".into()),
                issued_at: Some(SystemTime::now()),
                reply,
            })
            .ignore();
        node.settle().await;
        let list = node.broker.revocations().clone();
        let now = unix_now();
        list.add(&list.jti_entry("jti-3".into(), None, now), now)
            .expect("room");
        list.add(&list.user_entry("alice".into(), now - 500), now)
            .expect("room");
        let mut closed = node
            .broker
            .ask(Lane::Backend, |reply| CloseRevoked { reply });
        node.settle().await;
        assert_eq!(answered(&mut closed), Some(Ok(2)));
        assert_eq!(*one.lock().expect("lock"), vec!["closed 4001".to_owned()]);
        assert!(
            two.lock().expect("lock").is_empty(),
            "judged by its new token"
        );
        assert_eq!(*three.lock().expect("lock"), vec!["closed 4001".to_owned()]);
        // Refreshing to a revoked token closes the session too.
        node.broker
            .ask(Lane::Internal, |reply| Retoken {
                key: 2,
                token_id: Some("jti-3".into()),
                issued_at: None,
                reply,
            })
            .ignore();
        // And so does joining with one.
        let (four, _) = node.register(4, Some("alice"));
        node.settle().await;
        assert_eq!(*two.lock().expect("lock"), vec!["closed 4001".to_owned()]);
        assert_eq!(*four.lock().expect("lock"), vec!["closed 4001".to_owned()]);
        assert_eq!(node.broker.counters().revocation_closed.get(), 4);
    }

    #[actix::test]
    async fn subscribe_unsubscribe_subscribe_asks_for_a_second_bind_and_waits_for_it() {
        let node = node(true, 1024, 1024);
        let (_, mut registered) = node.register(1, None);
        let mut first = node.subscribe(1, "t");
        let mut left = node.unsubscribe(1, "t");
        let mut again = node.subscribe(1, "t");
        node.settle().await;
        assert_eq!(answered(&mut registered), Some(Ok(Ack::default())));
        assert_eq!(
            node.events(),
            vec![(true, "t".into()), (false, "t".into()), (true, "t".into())],
            "every gain and loss is reported, in order"
        );
        assert!(answered(&mut first).is_some(), "answered once it let go");
        assert!(answered(&mut left).is_some());
        node.answer_bind();
        node.settle().await;
        assert_eq!(answered(&mut again), None, "the first bind does not count");
        node.answer_bind();
        node.settle().await;
        assert_eq!(answered(&mut again), Some(Ok(Ack::default())));
    }

    #[actix::test]
    async fn a_disconnect_between_two_subscribes_is_reported_as_a_loss() {
        let node = node(true, 1024, 1024);
        node.register(1, None).1.ignore();
        node.register(2, None).1.ignore();
        node.subscribe(1, "t").ignore();
        node.unregister(1).ignore();
        let mut second = node.subscribe(2, "t");
        node.settle().await;
        assert_eq!(
            node.events(),
            vec![(true, "t".into()), (false, "t".into()), (true, "t".into())]
        );
        node.answer_bind();
        node.answer_bind();
        node.settle().await;
        assert_eq!(answered(&mut second), Some(Ok(Ack::default())));
    }

    #[actix::test]
    async fn later_subscribers_of_a_pattern_wait_for_the_bind_under_way() {
        let node = node(true, 1024, 1024);
        node.register(1, None).1.ignore();
        node.register(2, None).1.ignore();
        let mut first = node.subscribe(1, "t");
        let mut second = node.subscribe(2, "t");
        node.settle().await;
        assert_eq!(node.events(), vec![(true, "t".into())]);
        assert_eq!((answered(&mut first), answered(&mut second)), (None, None));
        node.answer_bind();
        node.settle().await;
        assert!(answered(&mut first).is_some() && answered(&mut second).is_some());
        let mut third = node.subscribe(1, "t");
        node.settle().await;
        assert_eq!(
            answered(&mut third),
            Some(Ok(Ack::default())),
            "bound: at once"
        );
    }

    #[actix::test]
    async fn a_local_publish_reaches_local_subscribers_and_goes_out_once() {
        let node = node(true, 1024, 1024);
        let (got, _) = node.register(1, None);
        node.subscribe(1, "news").ignore();
        node.settle().await;
        node.answer_bind();
        let mut published = node.publish("news", "1");
        node.settle().await;
        assert_eq!(*got.lock().expect("lock"), vec!["news=1".to_owned()]);
        assert_eq!(answered(&mut published), Some(Ok(Ack::default())));
        assert_eq!(node.seen.lock().expect("lock").published.len(), 1);
    }

    #[actix::test]
    async fn a_publish_the_bridge_has_no_room_for_is_acked_local_only() {
        let node = node(true, 1024, 16);
        let (got, _) = node.register(1, None);
        node.subscribe(1, "news").ignore();
        node.settle().await;
        // The fake bridge never runs while the test holds the thread, so
        // its backlog grows to the bound.
        let outcomes: Vec<Outcome> = (0..40)
            .map(|n| node.publish("news", &n.to_string()))
            .collect();
        node.settle().await;
        let mut local_only = 0;
        for mut outcome in outcomes {
            match answered(&mut outcome) {
                Some(Ok(ack)) if ack.local_only => local_only += 1,
                Some(Ok(_)) => {}
                other => panic!("every publish is acked: {other:?}"),
            }
        }
        assert!(local_only > 0, "some publishes found the bridge full");
        assert_eq!(got.lock().expect("lock").len(), 40, "all delivered here");
    }

    #[actix::test]
    async fn sessions_are_refused_before_backends_when_the_broker_is_saturated() {
        let node = node(false, 64, 64);
        node.register(1, None).1.ignore();
        node.settle().await;
        // Nothing runs while the test holds the thread: the backlog grows.
        let sessions: Vec<Outcome> = (0..100).map(|_| node.subscribe(1, "a")).collect();
        let mut backend = node.publish("a", "1");
        let refused = sessions
            .into_iter()
            .map(|mut o| answered(&mut o))
            .filter(|o| *o == Some(Err(ErrorCode::Unavailable)))
            .count();
        assert_eq!(refused, 100 - 48, "sessions stop at three quarters of 64");
        node.settle().await;
        assert_eq!(
            answered(&mut backend),
            Some(Ok(Ack::default())),
            "the backend got in"
        );
        assert_eq!(node.broker.counters().broker.refused.get(), 52);
    }

    #[actix::test]
    async fn private_messages_reach_only_their_users_sessions_without_subscribing() {
        let node = node(false, 1024, 1024);
        let (alice, _) = node.register(1, Some("alice"));
        let (bob, _) = node.register(2, Some("bob"));
        let (anonymous, _) = node.register(3, None);
        node.subscribe(2, "#").ignore();
        node.subscribe(3, "user.*").ignore();
        node.subscribe(1, "user.alice").ignore();
        node.publish("user.alice", "1").ignore();
        node.settle().await;
        assert_eq!(
            *alice.lock().expect("lock"),
            vec!["user.alice=1".to_owned()]
        );
        assert!(bob.lock().expect("lock").is_empty());
        assert!(anonymous.lock().expect("lock").is_empty());
    }

    #[actix::test]
    async fn shutdown_closes_every_session_and_refuses_new_ones_without_unbinding() {
        let node = node(true, 1024, 1024);
        let (got, _) = node.register(1, None);
        node.subscribe(1, "t").ignore();
        node.settle().await;
        let events_before = node.events().len();
        let mut closing = node.broker.ask(Lane::Internal, |reply| Shutdown {
            schedule: CloseSchedule::default(),
            reply,
        });
        node.settle().await;
        assert_eq!(answered(&mut closing), Some(Ok(1)));
        assert_eq!(*got.lock().expect("lock"), vec!["closed 1001".to_owned()]);
        assert_eq!(node.events().len(), events_before, "no unbind per pattern");
        let (_, mut late) = node.register(2, None);
        node.settle().await;
        assert_eq!(answered(&mut late), Some(Err(ErrorCode::Unavailable)));
        assert!(node.broker.is_draining());
    }

    /// Random interleavings of subscribes, unsubscribes, departures and
    /// bind answers from several sessions: the reported interest always
    /// replays to the patterns held, every subscribe is answered, and none
    /// that still holds its pattern is acknowledged while the bind for that
    /// pattern's latest gain is unanswered.
    #[actix::test]
    async fn random_churn_keeps_the_reported_interest_equal_to_what_is_held() {
        const PATTERNS: [&str; 3] = ["a", "a.*", "#"];
        for seed in 0..40u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let node = node(true, 1 << 16, 1 << 16);
            let mut held: HashMap<SessionKey, BTreeSet<&str>> = HashMap::new();
            let mut acks: Vec<(Outcome, &str)> = Vec::new();
            // Each session's latest subscribe of each pattern, and whether
            // it was answered yet.
            let mut latest: HashMap<(SessionKey, &str), (Outcome, bool)> = HashMap::new();
            for key in 0..4 {
                node.register(key, None).1.ignore();
                held.insert(key, BTreeSet::new());
            }
            let mut next_key = 4;
            for _ in 0..60 {
                let key = rng.random_range(0..next_key);
                let p = PATTERNS[rng.random_range(0..PATTERNS.len())];
                match rng.random_range(0..10) {
                    0..=3 => {
                        if let Some(set) = held.get_mut(&key) {
                            set.insert(p);
                        }
                        if let Some((earlier, done)) = latest.remove(&(key, p)) {
                            if !done {
                                acks.push((earlier, p));
                            }
                        }
                        latest.insert((key, p), (node.subscribe(key, p), false));
                    }
                    4..=6 => {
                        if let Some(set) = held.get_mut(&key) {
                            set.remove(p);
                        }
                        node.unsubscribe(key, p).ignore();
                    }
                    7 => {
                        held.remove(&key);
                        node.unregister(key).ignore();
                        node.register(next_key, None).1.ignore();
                        held.insert(next_key, BTreeSet::new());
                        next_key += 1;
                    }
                    _ => {
                        node.settle().await;
                        node.answer_bind();
                    }
                }
                if rng.random_bool(0.3) {
                    node.settle().await;
                }
                for ((key, p), (outcome, done)) in latest.iter_mut() {
                    if *done || !held.get(key).is_some_and(|set| set.contains(p)) {
                        continue;
                    }
                    if answered(outcome).is_some() {
                        *done = true;
                        assert!(
                            !node.bind_awaited(p),
                            "seed {seed}: session {key} acked on {p} before its bind"
                        );
                    }
                }
            }
            node.settle().await;
            while node.answer_bind().is_some() {
                node.settle().await;
            }
            let mut interest = BTreeSet::new();
            for (gained, p) in node.events() {
                assert!(
                    if gained {
                        interest.insert(p.clone())
                    } else {
                        interest.remove(&p)
                    },
                    "seed {seed}: {p} reported twice in a row"
                );
            }
            let expected: BTreeSet<String> =
                held.values().flatten().map(|p| p.to_string()).collect();
            assert_eq!(interest, expected, "seed {seed}");
            acks.extend(
                latest
                    .into_iter()
                    .filter(|(_, (_, done))| !done)
                    .map(|((_, p), (outcome, _))| (outcome, p)),
            );
            for (mut outcome, p) in acks {
                assert!(
                    answered(&mut outcome).is_some(),
                    "seed {seed}: subscribe {p} never answered"
                );
            }
        }
    }
}
