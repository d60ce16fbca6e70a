//! The Broker actor: the one owner of topic membership on a node.
//!
//! Sessions register with it, subscribe and unsubscribe through it, and every
//! published message passes through it once on its way out. It fans a message
//! out with `try_send` against each session's outbound meter, so one slow
//! reader is closed with 1013 instead of holding up the rest. Other code reads
//! the node's numbers from [`Counters`] and the topic list from the shared
//! [`TopicDirectory`], neither of which needs a round trip through here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;
use log::{debug, info};
use serde_json::value::RawValue;

use crate::frame::{now_millis, Prepared};
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
}

/// Adds a subscription. Access rules are the session's to check first; the
/// Broker enforces the per-session subscription limit.
#[derive(Message)]
#[rtype(result = "Result<(), ErrorCode>")]
pub struct Subscribe {
    pub key: SessionKey,
    pub pattern: Pattern,
}

/// Removes a subscription; removing one the session does not hold succeeds.
#[derive(Message)]
#[rtype(result = "Result<(), ErrorCode>")]
pub struct Unsubscribe {
    pub key: SessionKey,
    pub pattern: Pattern,
}

/// Delivers an already encoded message to every local subscriber of its topic.
#[derive(Message)]
#[rtype(result = "Result<(), ErrorCode>")]
pub struct Publish {
    pub message: Arc<Prepared>,
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
}

impl Broker {
    pub fn new(counters: Arc<Counters>, max_subscriptions: usize) -> Self {
        Broker {
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

    fn add_pattern(&mut self, key: SessionKey, pattern: &Pattern) {
        self.index.insert(pattern, key);
        *self.directory.entry(pattern.clone()).or_insert(0) += 1;
        self.counters.subscriptions.inc();
        self.counters.topics.set(self.index.pattern_count() as u64);
    }

    fn remove_pattern(&mut self, key: SessionKey, pattern: &Pattern) {
        self.index.remove(pattern, key);
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
        self.members.insert(
            msg.key,
            Member {
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
impl Handler<Subscribe> for Broker {
    type Result = Result<(), ErrorCode>;

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) -> Self::Result {
        self.handled();
        let Some(member) = self.members.get_mut(&msg.key) else {
            return Err(ErrorCode::Unavailable);
        };
        if member.patterns.contains(&msg.pattern) {
            return Ok(());
        }
        if member.patterns.len() >= self.max_subscriptions {
            return Err(ErrorCode::TooManySubscriptions);
        }
        member.patterns.insert(msg.pattern.clone());
        self.add_pattern(msg.key, &msg.pattern);
        debug!("session {} subscribed to {}", msg.key, msg.pattern);
        Ok(())
    }
}

/// Removes a pattern from a session.
impl Handler<Unsubscribe> for Broker {
    type Result = Result<(), ErrorCode>;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) -> Self::Result {
        self.handled();
        let held = self
            .members
            .get_mut(&msg.key)
            .is_some_and(|member| member.patterns.remove(&msg.pattern));
        if held {
            self.remove_pattern(msg.key, &msg.pattern);
        }
        Ok(())
    }
}

/// Fans a message out to this node's subscribers.
impl Handler<Publish> for Broker {
    type Result = Result<(), ErrorCode>;

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) -> Self::Result {
        self.handled();
        self.fan_out(&msg.message);
        Ok(())
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
}

impl BrokerHandle {
    /// Starts a Broker on the current arbiter.
    pub fn start(
        node: Arc<str>,
        counters: Arc<Counters>,
        max_subscriptions: usize,
    ) -> (Self, Arc<TopicDirectory>) {
        let broker = Broker::new(counters.clone(), max_subscriptions);
        let directory = broker.directory();
        let handle = BrokerHandle {
            addr: broker.start(),
            counters,
            ids: Arc::new(MessageIds::new(node.clone())),
            node,
        };
        (handle, directory)
    }

    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Encodes a message once, stamped with a fresh id and the current time.
    pub fn prepare(&self, topic: Topic, data: &RawValue) -> Arc<Prepared> {
        Prepared::new(topic, data, self.ids.next(), now_millis())
    }

    /// Sends and awaits the answer. Waits while the Broker's mailbox is full,
    /// which is how publishers are slowed to the Broker's pace.
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
