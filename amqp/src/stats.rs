//! The bridge's numbers, read by `/api/stats`, `/metrics` and `/readyz`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use herald_actors::stats::{Counter, MailboxCounters};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Connected,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
        }
    }
}

#[derive(Debug, Default)]
pub struct BridgeStats {
    connected: AtomicU8,
    /// Connections re-established after one was lost.
    pub reconnects: Counter,
    /// Messages published to RabbitMQ.
    pub published: Counter,
    /// Publishes RabbitMQ confirmed.
    pub confirmed: Counter,
    /// Messages consumed from the node's queue.
    pub consumed: Counter,
    /// The Bridge actor's mailbox.
    pub mailbox: Arc<MailboxCounters>,
}

impl BridgeStats {
    pub fn state(&self) -> LinkState {
        if self.connected.load(Ordering::Acquire) == 1 {
            LinkState::Connected
        } else {
            LinkState::Connecting
        }
    }

    pub(crate) fn set_state(&self, state: LinkState) {
        self.connected
            .store(u8::from(state == LinkState::Connected), Ordering::Release);
    }
}
