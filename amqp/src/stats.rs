//! The bridge's numbers, read by `/api/stats`, `/metrics` and `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::collections::HashMap;
use std::time::Instant;

use herald_actors::stats::{Counter, MailboxCounters};
use serde::Serialize;

use crate::control::{NodeStatus, PEER_TIMEOUT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// One of the two connections is not up yet.
    Connecting,
    Connected,
    /// Connected, but RabbitMQ blocks publishing (a memory or disk alarm).
    Blocked,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Blocked => "blocked",
        }
    }
}

#[derive(Debug, Default)]
pub struct BridgeStats {
    publishing: AtomicBool,
    consuming: AtomicBool,
    /// RabbitMQ's reason while it blocks the publishing connection.
    blocked: Mutex<Option<String>>,
    /// `host:port` of the broker the consuming connection (and with it the
    /// node queue) is on.
    broker: Mutex<Option<String>>,
    /// Connections re-established after one was lost.
    pub reconnects: Counter,
    /// Messages published to RabbitMQ.
    pub published: Counter,
    /// Publishes RabbitMQ confirmed.
    pub confirmed: Counter,
    /// Messages consumed from the node's queue.
    pub consumed: Counter,
    /// This node's own messages, consumed back and dropped (they were
    /// delivered here already).
    pub own_dropped: Counter,
    /// Lifecycle events that could not be published.
    pub lifecycle_dropped: Counter,
    /// Control messages from "other nodes" that were not believed (forged,
    /// replayed, stale, or no cluster secret to check them with).
    pub control_rejected: Counter,
    /// The Bridge actor's mailbox, with its bound.
    pub mailbox: Arc<MailboxCounters>,
    /// Messages waiting to be handed to RabbitMQ, with their bound.
    pub publishing_queue: MailboxCounters,
    /// The other nodes' latest announcements.
    pub peers: Peers,
}

/// The other nodes of the cluster, as they last announced themselves.
#[derive(Debug, Default)]
pub struct Peers {
    latest: Mutex<HashMap<String, (Instant, NodeStatus)>>,
}

/// A peer as the dashboard and `/api/stats` show it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    #[serde(flatten)]
    pub status: NodeStatus,
    /// Seconds since its last announcement arrived.
    pub age_s: u64,
}

impl Peers {
    pub fn record(&self, status: NodeStatus) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.retain(|_, (seen, _)| seen.elapsed() <= PEER_TIMEOUT);
        latest.insert(status.node.clone(), (Instant::now(), status));
    }

    /// The nodes heard from within [`PEER_TIMEOUT`], by node id.
    pub fn alive(&self) -> Vec<PeerView> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let mut peers: Vec<PeerView> = latest
            .values()
            .filter(|(seen, _)| seen.elapsed() <= PEER_TIMEOUT)
            .map(|(seen, status)| PeerView {
                status: status.clone(),
                age_s: seen.elapsed().as_secs(),
            })
            .collect();
        peers.sort_by(|a, b| a.status.node.cmp(&b.status.node));
        peers
    }
}

impl BridgeStats {
    /// Numbers for a bridge whose mailbox and publishing queue each take
    /// `bound` messages.
    pub fn new(bound: usize) -> Self {
        BridgeStats {
            mailbox: Arc::new(MailboxCounters::with_bound(bound)),
            publishing_queue: MailboxCounters::with_bound(bound),
            ..BridgeStats::default()
        }
    }

    pub fn state(&self) -> LinkState {
        let up = self.publishing.load(Ordering::Acquire) && self.consuming.load(Ordering::Acquire);
        if !up {
            LinkState::Connecting
        } else if self.blocked_reason().is_some() {
            LinkState::Blocked
        } else {
            LinkState::Connected
        }
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked_reason().is_some()
    }

    pub fn blocked_reason(&self) -> Option<String> {
        self.blocked.lock().ok().and_then(|reason| reason.clone())
    }

    /// Why the link is not fully usable, for `/readyz`; `None` when it is.
    pub fn not_ready_because(&self) -> Option<String> {
        match self.state() {
            LinkState::Connected => None,
            LinkState::Connecting => Some("RabbitMQ is not connected; reconnecting".to_owned()),
            LinkState::Blocked => Some(format!(
                "RabbitMQ blocks publishing ({}): sends are refused, publishes reach this node only",
                self.blocked_reason().unwrap_or_default()
            )),
        }
    }

    pub(crate) fn publishing_up(&self, up: bool) {
        self.publishing.store(up, Ordering::Release);
    }

    pub(crate) fn consuming_up(&self, up: bool) {
        self.consuming.store(up, Ordering::Release);
    }

    pub fn broker(&self) -> Option<String> {
        self.broker.lock().ok().and_then(|broker| broker.clone())
    }

    pub(crate) fn set_broker(&self, broker: Option<String>) {
        if let Ok(mut current) = self.broker.lock() {
            *current = broker;
        }
    }

    pub(crate) fn set_blocked(&self, reason: Option<String>) {
        if let Ok(mut blocked) = self.blocked.lock() {
            *blocked = reason;
        }
    }
}
