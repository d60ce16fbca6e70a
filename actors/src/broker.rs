//! The Broker actor: the one owner of topic membership on a node.
//!
//! Sessions register with it, subscribe and unsubscribe through it, and every
//! published message passes through it once on its way out. It fans a message
//! out with `try_send` against each session's outbound meter, so one slow
//! reader is closed with 1013 instead of holding up the rest. Other code reads
//! the node's numbers from [`Counters`] and the topic list from the shared
//! [`TopicDirectory`], neither of which needs a round trip through here.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use actix::prelude::*;
use dashmap::DashMap;
use log::{debug, info};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::frame::{now_millis, Prepared};
use crate::ports::{BindPattern, Lifecycle, Ports, PublishOut, SessionEvent, UnbindPattern};
use crate::protocol::{Disconnect, ErrorCode};
use crate::session::{Close, Deliver, OutboundMeter};
use crate::stats::Counters;
use crate::topic::{Pattern, SubscriptionIndex, Topic};

/// A session's number on this node; its public name is `s-<node>-<key>`.
pub type SessionKey = u64;

/// Local subscriber counts per pattern, kept by the Broker and read by the
/// HTTP edge for `/api/topics`.
pub type TopicDirectory = DashMap<Pattern, usize>;

/// Registers a session so that it can subscribe and receive.
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
}

/// Forgets a session and every subscription it held.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub key: SessionKey,
    /// Why the session ended, as in lifecycle events.
    pub reason: &'static str,
}

/// Where the Broker sends the outcome of a client's operation. Outcomes go
/// back on their own channel, not as the message's result, so that senders
/// can queue with `do_send`, which keeps one publisher's operations in order.
pub type Reply = oneshot::Sender<Result<(), ErrorCode>>;

/// Adds a subscription. Access rules are the session's to check first; the
/// Broker enforces the per-session subscription limit.
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

/// Publishes an encoded message: to every node through the bridge when one
/// is connected, else to this node's subscribers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub message: Arc<Prepared>,
    pub reply: Reply,
}

/// Delivers a message that arrived from outside (RabbitMQ) to this node's
/// subscribers only.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fanout {
    pub message: Arc<Prepared>,
    pub reply: Reply,
}

/// Closes every session of a user with 4003; answers how many were closed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct KickUser {
    pub user: String,
}

/// Closes every session with 1001; answers how many were closed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown;

/// What the Broker knows of one registered session.
struct Member {
    name: Arc<str>,
    deliver: Recipient<Deliver>,
    close: Recipient<Close>,
    meter: Arc<OutboundMeter>,
    user: Option<Arc<str>>,
    /// Patterns this session holds, to clean the index when it leaves.
    patterns: HashSet<Pattern>,
}

pub struct Broker {
    /// Registered sessions by key.
    members: HashMap<SessionKey, Member>,
    /// Sessions of each signed-in user, for kicks and `users_online`.
    users: HashMap<Arc<str>, HashSet<SessionKey>>,
    /// Which sessions hold which patterns, searchable by topic.
    index: SubscriptionIndex<SessionKey>,
    directory: Arc<TopicDirectory>,
    counters: Arc<Counters>,
    max_subscriptions: usize,
    /// Reused buffer of matched sessions, so a publish does not allocate.
    matched: Vec<SessionKey>,
    ports: Ports,
    /// Patterns whose bind is under way, with the subscribers waiting for it.
    pending_binds: HashMap<Pattern, Vec<(SessionKey, Reply)>>,
}

impl Broker {
    pub fn new(counters: Arc<Counters>, max_subscriptions: usize, ports: Ports) -> Self {
        Broker {
            ports,
            pending_binds: HashMap::new(),
            members: HashMap::new(),
            users: HashMap::new(),
            index: SubscriptionIndex::new(),
            directory: Arc::new(TopicDirectory::new()),
            counters,
            max_subscriptions,
            matched: Vec::new(),
        }
    }

    pub fn directory(&self) -> Arc<TopicDirectory> {
        self.directory.clone()
    }

    fn handled(&self) {
        self.counters.broker.handled.inc();
    }

    fn announce(
        &self,
        event: SessionEvent,
        session: &Arc<str>,
        user: Option<Arc<str>>,
        reason: Option<&'static str>,
    ) {
        let lifecycle = Lifecycle {
            event,
            session: session.clone(),
            user,
            reason,
            ts: now_millis(),
        };
        let _ = self.ports.offer(&self.ports.lifecycle, lifecycle);
    }

    /// Returns whether this is the node's first subscriber to `pattern`.
    fn add_pattern(&mut self, key: SessionKey, pattern: &Pattern) -> bool {
        let first = self.index.insert(pattern, key);
        *self.directory.entry(pattern.clone()).or_insert(0) += 1;
        self.counters.subscriptions.inc();
        self.counters.topics.set(self.index.pattern_count() as u64);
        first
    }

    fn remove_pattern(&mut self, key: SessionKey, pattern: &Pattern) {
        if self.index.remove(pattern, key) {
            let _ = self.ports.offer(
                &self.ports.unbind,
                UnbindPattern {
                    pattern: pattern.clone(),
                },
            );
        }
        if let dashmap::Entry::Occupied(mut count) = self.directory.entry(pattern.clone()) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
        self.counters.subscriptions.dec();
        self.counters.topics.set(self.index.pattern_count() as u64);
    }

    /// Drops every subscription of a session, keeping its registration.
    fn clear_patterns(&mut self, key: SessionKey) {
        let Some(member) = self.members.get_mut(&key) else {
            return;
        };
        for pattern in std::mem::take(&mut member.patterns) {
            self.remove_pattern(key, &pattern);
        }
    }

    fn fan_out(&mut self, message: &Arc<Prepared>) {
        self.counters.messages_in.inc();
        let mut matched = std::mem::take(&mut self.matched);
        matched.clear();
        let mut sets = 0;
        self.index.for_each_match(&message.topic, |subscribers| {
            sets += 1;
            matched.extend(subscribers);
        });
        if sets > 1 {
            // One delivery per session, however many of its patterns match.
            matched.sort_unstable();
            matched.dedup();
        }
        let cost = message.cost();
        let mut delivered = 0;
        let mut overflowed = Vec::new();
        for key in &matched {
            let Some(member) = self.members.get(key) else {
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
        self.matched = matched;
    }

    fn close_slow_consumer(&mut self, key: SessionKey) {
        self.counters.messages_dropped.inc();
        self.clear_patterns(key);
        if let Some(member) = self.members.get(&key) {
            info!(
                "session {key} is a slow consumer ({} frames, {} bytes queued): closing with 1013",
                member.meter.queued_frames(),
                member.meter.queued_bytes()
            );
            member.close.do_send(Close {
                reason: Disconnect::SlowConsumer,
            });
        }
    }
}

impl Actor for Broker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Publishers are throttled by `BrokerHandle::send` awaiting room here.
        ctx.set_mailbox_capacity(4096);
    }
}

/// Adds a session to the node.
impl Handler<Register> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Self::Context) {
        self.handled();
        if let Some(user) = &msg.user {
            self.users.entry(user.clone()).or_default().insert(msg.key);
            self.counters.users_online.set(self.users.len() as u64);
        }
        self.announce(SessionEvent::Connected, &msg.name, msg.user.clone(), None);
        self.members.insert(
            msg.key,
            Member {
                name: msg.name,
                deliver: msg.deliver,
                close: msg.close,
                meter: msg.meter,
                user: msg.user,
                patterns: HashSet::new(),
            },
        );
    }
}

/// Removes a session and its subscriptions.
impl Handler<Unregister> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Self::Context) {
        self.handled();
        self.clear_patterns(msg.key);
        let Some(member) = self.members.remove(&msg.key) else {
            return;
        };
        self.announce(
            SessionEvent::Disconnected,
            &member.name,
            member.user.clone(),
            Some(msg.reason),
        );
        if let Some(user) = member.user {
            if let Some(sessions) = self.users.get_mut(&user) {
                sessions.remove(&msg.key);
                if sessions.is_empty() {
                    self.users.remove(&user);
                }
            }
            self.counters.users_online.set(self.users.len() as u64);
        }
    }
}

/// Adds a pattern to a session, within the session's subscription limit.
/// The first local subscriber to a pattern makes the node bind it; everyone
/// subscribing while that bind is under way is answered when it is done.
impl Handler<Subscribe> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) {
        self.handled();
        let Subscribe {
            key,
            pattern,
            reply,
        } = msg;
        let first = match self.subscribe(key, &pattern) {
            Ok(first) => first,
            Err(code) => {
                let _ = reply.send(Err(code));
                return;
            }
        };
        if let Some(waiting) = self.pending_binds.get_mut(&pattern) {
            waiting.push((key, reply));
            return;
        }
        if !first {
            let _ = reply.send(Ok(()));
            return;
        }
        let (bound, outcome) = Outcome::channel();
        let bind = BindPattern {
            pattern: pattern.clone(),
            reply: bound,
        };
        if let Err(BindPattern { .. }) = self.ports.offer(&self.ports.bind, bind) {
            let _ = reply.send(Ok(()));
            return;
        }
        self.pending_binds
            .insert(pattern.clone(), vec![(key, reply)]);
        ctx.spawn(outcome.into_actor(self).map(move |bound, broker, _| {
            broker.bind_done(&pattern, bound);
        }));
    }
}

impl Broker {
    /// Returns whether `key` is the node's first subscriber to `pattern`.
    fn subscribe(&mut self, key: SessionKey, pattern: &Pattern) -> Result<bool, ErrorCode> {
        let Some(member) = self.members.get_mut(&key) else {
            return Err(ErrorCode::Unavailable);
        };
        if member.patterns.contains(pattern) {
            return Ok(false);
        }
        if member.patterns.len() >= self.max_subscriptions {
            return Err(ErrorCode::TooManySubscriptions);
        }
        member.patterns.insert(pattern.clone());
        debug!("session {key} subscribed to {pattern}");
        Ok(self.add_pattern(key, pattern))
    }

    /// Answers everyone waiting for `pattern`'s bind; on failure their
    /// subscriptions are rolled back, so no one holds a pattern that the
    /// node does not receive.
    fn bind_done(&mut self, pattern: &Pattern, bound: Result<(), ErrorCode>) {
        for (key, reply) in self.pending_binds.remove(pattern).unwrap_or_default() {
            if bound.is_err() {
                let held = self
                    .members
                    .get_mut(&key)
                    .is_some_and(|member| member.patterns.remove(pattern));
                if held {
                    self.remove_pattern(key, pattern);
                }
            }
            let _ = reply.send(bound);
        }
    }
}

/// Removes a pattern from a session.
impl Handler<Unsubscribe> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        self.handled();
        let held = self
            .members
            .get_mut(&msg.key)
            .is_some_and(|member| member.patterns.remove(&msg.pattern));
        if held {
            self.remove_pattern(msg.key, &msg.pattern);
        }
        let _ = msg.reply.send(Ok(()));
    }
}

/// Fans a message out to this node's subscribers.
impl Handler<Publish> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) {
        self.handled();
        // With a bridge, local subscribers get the message when it comes
        // back from RabbitMQ, like every other node's: once, in order.
        let Err(msg) = self.ports.offer(
            &self.ports.publish,
            PublishOut {
                message: msg.message,
                reply: msg.reply,
            },
        ) else {
            return;
        };
        self.fan_out(&msg.message);
        let _ = msg.reply.send(Ok(()));
    }
}

/// Fans out a message that arrived from RabbitMQ.
impl Handler<Fanout> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Fanout, _: &mut Self::Context) {
        self.handled();
        self.fan_out(&msg.message);
        let _ = msg.reply.send(Ok(()));
    }
}

/// Closes a user's sessions.
impl Handler<KickUser> for Broker {
    type Result = usize;

    fn handle(&mut self, msg: KickUser, _: &mut Self::Context) -> usize {
        self.handled();
        let keys = self
            .users
            .get(msg.user.as_str())
            .cloned()
            .unwrap_or_default();
        for key in &keys {
            self.clear_patterns(*key);
            if let Some(member) = self.members.get(key) {
                member.close.do_send(Close {
                    reason: Disconnect::Kicked,
                });
            }
        }
        if !keys.is_empty() {
            info!("closed {} session(s) of user {}", keys.len(), msg.user);
        }
        keys.len()
    }
}

/// Closes every session for shutdown.
impl Handler<Shutdown> for Broker {
    type Result = usize;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> usize {
        self.handled();
        let keys: Vec<SessionKey> = self.members.keys().copied().collect();
        for key in &keys {
            self.clear_patterns(*key);
        }
        for member in self.members.values() {
            member.close.do_send(Close {
                reason: Disconnect::Shutdown,
            });
        }
        keys.len()
    }
}

/// The outcome of an operation queued with [`BrokerHandle::ask`]. A Broker
/// that stopped before answering counts as `unavailable`.
pub struct Outcome(oneshot::Receiver<Result<(), ErrorCode>>);

impl Outcome {
    /// A reply channel: the `Reply` goes with the request, the `Outcome` is
    /// awaited by whoever asked.
    pub fn channel() -> (Reply, Outcome) {
        let (reply, outcome) = oneshot::channel();
        (reply, Outcome(outcome))
    }
}

impl Future for Outcome {
    type Output = Result<(), ErrorCode>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|outcome| outcome.unwrap_or(Err(ErrorCode::Unavailable)))
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

/// What every publisher (session, HTTP handler, bridge) holds to reach the
/// Broker: its address, plus the node-wide pieces a publish needs. Sending
/// through it keeps the Broker's mailbox counters right.
#[derive(Clone)]
pub struct BrokerHandle {
    addr: Addr<Broker>,
    counters: Arc<Counters>,
    ids: Arc<MessageIds>,
    node: Arc<str>,
    ports: Ports,
}

impl BrokerHandle {
    /// Starts a Broker on the current arbiter, sending outward through
    /// `ports` (use [`Ports::none`] for an in-process node).
    pub fn start(
        node: Arc<str>,
        counters: Arc<Counters>,
        max_subscriptions: usize,
        ports: Ports,
    ) -> (Self, Arc<TopicDirectory>) {
        let broker = Broker::new(counters.clone(), max_subscriptions, ports.clone());
        let directory = broker.directory();
        let handle = BrokerHandle {
            addr: broker.start(),
            counters,
            ids: Arc::new(MessageIds::new(node.clone())),
            node,
            ports,
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

    /// A fresh message id, unique on this node.
    pub fn message_id(&self) -> Arc<str> {
        self.ids.next()
    }

    /// Encodes a message once, stamped with a fresh id and the current time.
    pub fn prepare(&self, topic: Topic, data: &RawValue) -> Arc<Prepared> {
        Prepared::new(topic, data, self.ids.next(), now_millis())
    }

    /// Queues an operation now, in call order, and returns its outcome to
    /// come. For sessions: their inbound rate is already limited, and queuing
    /// at once is what keeps one session's operations in order.
    pub fn ask<M>(&self, build: impl FnOnce(Reply) -> M) -> Outcome
    where
        M: Message<Result = ()> + Send + 'static,
        Broker: Handler<M>,
    {
        let (reply, outcome) = Outcome::channel();
        self.do_send(build(reply));
        outcome
    }

    /// Like [`ask`](Self::ask), but first waits for room in the Broker's
    /// mailbox: for HTTP callers, who are slowed to the Broker's pace this way
    /// and whose sequential requests are ordered by the awaiting itself.
    pub async fn ask_when_ready<M>(&self, build: impl FnOnce(Reply) -> M) -> Result<(), ErrorCode>
    where
        M: Message<Result = ()> + Send + 'static,
        Broker: Handler<M>,
    {
        let (reply, outcome) = Outcome::channel();
        self.send(build(reply))
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
        outcome.await
    }

    /// Sends and awaits the answer, waiting while the mailbox is full.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Broker: Handler<M>,
    {
        self.counters.broker.enqueued.inc();
        self.addr.send(msg).await
    }

    /// Sends without waiting for room or an answer: for messages that must
    /// not be lost to back-pressure, such as a session leaving.
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Broker: Handler<M>,
    {
        self.counters.broker.enqueued.inc();
        self.addr.do_send(msg);
    }
}
