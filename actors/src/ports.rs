//! Every edge leaving the core. The Broker and the sessions send these
//! messages outward without knowing who handles them; with RabbitMQ on, the
//! bridge does, and with it off every port is `None` and the node works
//! in-process.
//!
//! The way out is bounded: [`Ports::offer`] queues only while the handler's
//! backlog is under its bound and gives the message back otherwise, so the
//! caller answers at once (`unavailable`, or `local_only` for a publish)
//! instead of queuing without limit. Interest changes are the exception:
//! they must never be lost or reordered, and their volume is bounded by the
//! subscribes that produce them, which [`Ports::has_room`] refuses first.

use std::sync::Arc;

use actix::prelude::*;

use crate::frame::{Body, Prepared};
use crate::protocol::ErrorCode;
use crate::reply::{answer, Ack, Outcome, Reply};
use crate::revocation::Revocation;
use crate::stats::MailboxCounters;
use crate::topic::Pattern;

/// A change in what this node must receive, reported in the order it
/// happened. The bridge keeps RabbitMQ bound for exactly the patterns whose
/// last report was `Gained`.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Interest {
    /// `pattern` has its first local holder. `bound` is answered once
    /// messages published from then on reach this node (at once while
    /// RabbitMQ is down: it is bound when the link is back).
    Gained { pattern: Pattern, bound: Reply },
    /// `pattern` lost its last local holder.
    Lost { pattern: Pattern },
}

/// Publishes a message, already delivered on this node, to every other
/// node. Answered `local_only` when it could not be handed to RabbitMQ.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishOut {
    pub message: Arc<Prepared>,
    pub reply: PublishReply,
}

/// The answer to a publish already delivered on this node. Dropped
/// unanswered (its handler stopped, its job was discarded) it answers
/// `local_only` itself: `unavailable` would claim nothing was delivered.
pub struct PublishReply(Option<Reply>);

impl PublishReply {
    pub fn new(reply: Reply) -> Self {
        PublishReply(Some(reply))
    }

    pub fn answer(mut self, ack: Ack) {
        if let Some(reply) = self.0.take() {
            answer(reply, Ok(ack));
        }
    }
}

impl Drop for PublishReply {
    fn drop(&mut self) {
        if let Some(reply) = self.0.take() {
            answer(reply, Ok(Ack::LOCAL_ONLY));
        }
    }
}

/// A client's message for the backends (`send`, STOMP `/app/...`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendToBackend {
    pub destination: String,
    /// The payload, byte-exact, with its content type.
    pub body: Body,
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

/// Tells every other node of revocations added here, so that they refuse
/// those tokens too and close the sessions holding them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RevokeEverywhere {
    pub entries: Vec<Revocation>,
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

/// The handlers of the outward messages, and the backlog they share.
#[derive(Clone, Default)]
pub struct Ports {
    pub interest: Option<Recipient<Interest>>,
    pub publish: Option<Recipient<PublishOut>>,
    pub send: Option<Recipient<SendToBackend>>,
    pub kick: Option<Recipient<KickEverywhere>>,
    pub revoke: Option<Recipient<RevokeEverywhere>>,
    pub lifecycle: Option<Recipient<Lifecycle>>,
    /// Mailbox counters (and bound) of whatever handles these messages.
    pub mailbox: Arc<MailboxCounters>,
}

impl Ports {
    /// In-process only: nothing leaves the node.
    pub fn none() -> Self {
        Ports::default()
    }

    /// Whether the handler's backlog is under its bound.
    pub fn has_room(&self) -> bool {
        self.mailbox.has_room(self.mailbox.bound())
    }

    /// Queues `msg` on `port` if it is connected and has room; gives the
    /// message back if not.
    pub fn offer<M>(&self, port: &Option<Recipient<M>>, msg: M) -> Result<(), M>
    where
        M: Message + Send,
        M::Result: Send,
    {
        let Some(port) = port else {
            return Err(msg);
        };
        if !self.mailbox.admit(self.mailbox.bound()) {
            return Err(msg);
        }
        port.do_send(msg);
        Ok(())
    }

    /// Asks `port` and returns the outcome to come: `None` when nothing
    /// handles that port on this node, `unavailable` at once when it has no
    /// room.
    pub fn ask<M>(
        &self,
        port: &Option<Recipient<M>>,
        build: impl FnOnce(Reply) -> M,
    ) -> Option<Outcome>
    where
        M: Message + Send,
        M::Result: Send,
    {
        port.as_ref()?;
        let (reply, outcome) = Outcome::channel();
        Some(match self.offer(port, build(reply)) {
            Ok(()) => outcome,
            Err(_) => Outcome::ready(Err(ErrorCode::Unavailable)),
        })
    }

    /// Reports an interest change; never refused, never reordered.
    pub fn report(&self, interest: Interest) {
        if let Some(port) = &self.interest {
            self.mailbox.enqueued.inc();
            port.do_send(interest);
        }
    }
}
