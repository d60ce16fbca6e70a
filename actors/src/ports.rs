//! Every edge leaving the core. The Broker and the sessions send these
//! messages outward without knowing who handles them; with RabbitMQ on, the
//! bridge does, and with it off every port is `None` and the node works
//! in-process.

use std::sync::Arc;

use actix::prelude::*;

use crate::broker::{Outcome, Reply};
use crate::frame::Prepared;
use crate::stats::MailboxCounters;
use crate::topic::Pattern;

/// The node now has a local subscriber to `pattern` and must receive it.
/// The reply comes once that holds, so a subscriber's `ack` means messages
/// published from then on reach it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BindPattern {
    pub pattern: Pattern,
    pub reply: Reply,
}

/// The node's last local subscriber to `pattern` left.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnbindPattern {
    pub pattern: Pattern,
}

/// Publishes a message to every node (this one included); the reply comes
/// once the message is safely on its way.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishOut {
    pub message: Arc<Prepared>,
    pub reply: Reply,
}

/// A client's message for the backends (`send`, STOMP `/app/...`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendToBackend {
    pub destination: String,
    /// The payload as JSON text.
    pub data: String,
    pub user: Option<Arc<str>>,
    pub session: Arc<str>,
    pub reply: Reply,
}

/// Asks every other node to close the sessions of `user`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KickEverywhere {
    pub user: String,
    pub reply: Reply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    Connected,
    Disconnected,
}

/// A session came or went, for services that track presence.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Lifecycle {
    pub event: SessionEvent,
    pub session: Arc<str>,
    pub user: Option<Arc<str>>,
    /// Why the session ended; `None` for `Connected`.
    pub reason: Option<&'static str>,
    pub ts: u64,
}

/// The handlers of the outward messages. Sending through these keeps the
/// bridge's mailbox counters right.
#[derive(Clone, Default)]
pub struct Ports {
    pub bind: Option<Recipient<BindPattern>>,
    pub unbind: Option<Recipient<UnbindPattern>>,
    pub publish: Option<Recipient<PublishOut>>,
    pub send: Option<Recipient<SendToBackend>>,
    pub kick: Option<Recipient<KickEverywhere>>,
    pub lifecycle: Option<Recipient<Lifecycle>>,
    /// Mailbox counters of whatever handles these messages.
    pub mailbox: Option<Arc<MailboxCounters>>,
}

impl Ports {
    /// In-process only: nothing leaves the node.
    pub fn none() -> Self {
        Ports::default()
    }

    /// Queues a request on `port` and returns its outcome to come, or `None`
    /// when nothing handles that port on this node.
    pub fn ask<M>(
        &self,
        port: &Option<Recipient<M>>,
        build: impl FnOnce(Reply) -> M,
    ) -> Option<Outcome>
    where
        M: Message + Send,
        M::Result: Send,
    {
        let (reply, outcome) = Outcome::channel();
        self.offer(port, build(reply)).ok()?;
        Some(outcome)
    }

    /// Sends `msg` to `port` if it is connected; gives the message back if not.
    pub fn offer<M>(&self, port: &Option<Recipient<M>>, msg: M) -> Result<(), M>
    where
        M: Message + Send,
        M::Result: Send,
    {
        match port {
            Some(port) => {
                if let Some(mailbox) = &self.mailbox {
                    mailbox.enqueued.inc();
                }
                port.do_send(msg);
                Ok(())
            }
            None => Err(msg),
        }
    }
}
