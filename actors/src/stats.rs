//! Counters behind `/api/stats` and `/metrics`. Plain atomics, written by the
//! actors and the HTTP edge and read without messaging any actor, so an
//! operator's scrape never waits behind a busy Broker.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A monotonic counter or a gauge; which one is a matter of how it is used.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) -> u64 {
        self.add(1)
    }

    /// Adds `n`, returning the new value.
    pub fn add(&self, n: u64) -> u64 {
        self.0.fetch_add(n, Ordering::Relaxed) + n
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every number the node reports. One instance per node, shared by `Arc`.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections_current: Counter,
    pub connections_total: Counter,
    /// Handshakes refused for the node's connection limit.
    pub connections_rejected: Counter,
    /// Connections refused because their user held as many as one may.
    pub refused_per_user: Counter,
    /// Handshakes refused because their client address held as many
    /// connections as one may.
    pub refused_per_ip: Counter,
    /// Handshakes refused because their client address made too many.
    pub refused_handshake_rate: Counter,
    /// Inbound WebSocket messages and STOMP frames over a session's rate.
    pub frames_rate_limited: Counter,
    /// Sessions closed (1008) for exceeding their rate limit again and again.
    pub sessions_closed_for_abuse: Counter,
    /// Sessions closed (1007) for a text message that is not UTF-8.
    pub invalid_utf8: Counter,
    pub users_online: Counter,
    pub topics: Counter,
    pub subscriptions: Counter,
    /// Messages published into the node (clients, HTTP API, RabbitMQ).
    pub messages_in: Counter,
    /// Deliveries handed to sessions: one message to N subscribers counts N.
    pub messages_out: Counter,
    /// Deliveries refused because a session's outbound queue was full.
    pub messages_dropped: Counter,
    /// Entries on the revocation list (a gauge, kept by the list).
    pub revoked_tokens: Counter,
    /// Sessions closed (4001) because the list voids their token.
    pub revocation_closed: Counter,
    /// Tokens refused at the handshake, in CONNECT or on `refresh` because
    /// the list voids them.
    pub revocation_refused: Counter,
    /// Entries from other nodes this node could not keep (its list full).
    pub revocations_dropped: Counter,
    pub broker: MailboxCounters,
}

/// Mailbox traffic of one actor: what was sent to it and what it handled.
/// The difference is its backlog, which senders keep under `bound`.
#[derive(Debug, Default)]
pub struct MailboxCounters {
    pub enqueued: Counter,
    pub handled: Counter,
    /// Messages refused because the backlog was at the bound.
    pub refused: Counter,
    bound: Counter,
}

impl MailboxCounters {
    pub fn with_bound(bound: usize) -> Self {
        let counters = MailboxCounters::default();
        counters.bound.set(bound as u64);
        counters
    }

    pub fn bound(&self) -> u64 {
        self.bound.get()
    }

    pub fn backlog(&self) -> u64 {
        self.enqueued.get().saturating_sub(self.handled.get())
    }

    /// Whether one more message fits under `limit` (at most the bound).
    pub fn has_room(&self, limit: u64) -> bool {
        self.backlog() < limit
    }

    /// Counts one message in if it fits under `limit`, or as refused if it
    /// does not; returns whether it was let in.
    pub fn admit(&self, limit: u64) -> bool {
        let room = self.has_room(limit);
        if room {
            self.enqueued.inc();
        } else {
            self.refused.inc();
        }
        room
    }

    pub fn snapshot(&self) -> MailboxSnapshot {
        let handled = self.handled.get();
        let enqueued = self.enqueued.get();
        MailboxSnapshot {
            backlog: enqueued.saturating_sub(handled),
            bound: self.bound(),
            enqueued,
            handled,
            refused: self.refused.get(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MailboxSnapshot {
    pub backlog: u64,
    /// The backlog past which senders are refused.
    pub bound: u64,
    pub enqueued: u64,
    pub handled: u64,
    pub refused: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsSnapshot {
    pub current: u64,
    pub total: u64,
    pub rejected: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessagesSnapshot {
    #[serde(rename = "in")]
    pub received: u64,
    #[serde(rename = "out")]
    pub delivered: u64,
    pub dropped: u64,
}

/// What the abuse limits refused, by limit.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsSnapshot {
    pub connections_per_node: u64,
    pub connections_per_user: u64,
    pub connections_per_ip: u64,
    pub handshake_rate: u64,
    pub frames_rate_limited: u64,
    pub sessions_closed_for_abuse: u64,
    pub invalid_utf8: u64,
}

/// What the revocation list did; the entries it holds are
/// `revoked_tokens` beside it.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationSnapshot {
    pub sessions_closed: u64,
    pub tokens_refused: u64,
    /// Entries other nodes sent that did not fit in this node's list.
    pub dropped: u64,
}

/// The core's share of `/api/stats`; the HTTP edge adds node, uptime, amqp.
#[derive(Debug, Clone, Serialize)]
pub struct CoreSnapshot {
    pub connections: ConnectionsSnapshot,
    pub users_online: u64,
    pub topics: u64,
    pub subscriptions: u64,
    pub messages: MessagesSnapshot,
    pub broker: MailboxSnapshot,
    /// Refusals of the abuse limits.
    pub refused: LimitsSnapshot,
    /// Entries on the revocation list.
    pub revoked_tokens: u64,
    pub revocation: RevocationSnapshot,
}

impl Counters {
    /// Counters for a node whose Broker takes at most `broker_bound` queued
    /// messages.
    pub fn new(broker_bound: usize) -> Self {
        Counters {
            broker: MailboxCounters::with_bound(broker_bound),
            ..Counters::default()
        }
    }

    pub fn snapshot(&self) -> CoreSnapshot {
        CoreSnapshot {
            connections: ConnectionsSnapshot {
                current: self.connections_current.get(),
                total: self.connections_total.get(),
                rejected: self.connections_rejected.get(),
            },
            users_online: self.users_online.get(),
            topics: self.topics.get(),
            subscriptions: self.subscriptions.get(),
            messages: MessagesSnapshot {
                received: self.messages_in.get(),
                delivered: self.messages_out.get(),
                dropped: self.messages_dropped.get(),
            },
            broker: self.broker.snapshot(),
            refused: LimitsSnapshot {
                connections_per_node: self.connections_rejected.get(),
                connections_per_user: self.refused_per_user.get(),
                connections_per_ip: self.refused_per_ip.get(),
                handshake_rate: self.refused_handshake_rate.get(),
                frames_rate_limited: self.frames_rate_limited.get(),
                sessions_closed_for_abuse: self.sessions_closed_for_abuse.get(),
                invalid_utf8: self.invalid_utf8.get(),
            },
            revoked_tokens: self.revoked_tokens.get(),
            revocation: RevocationSnapshot {
                sessions_closed: self.revocation_closed.get(),
                tokens_refused: self.revocation_refused.get(),
                dropped: self.revocations_dropped.get(),
            },
        }
    }
}
