//! How an operation's answer travels back: a [`Reply`] goes with the request,
//! the matching [`Outcome`] is awaited by whoever asked. Answers travel on
//! their own channel rather than as an actor message's result, so a request
//! can be queued without waiting and still be answered later by another
//! actor (a subscribe is answered by the bridge once its binding holds).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::protocol::ErrorCode;

/// What a successful operation tells the client beyond "done".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ack {
    /// A publish reached this node's subscribers but not RabbitMQ (down,
    /// blocked by an alarm, or saturated), so other nodes may not get it.
    pub local_only: bool,
}

impl Ack {
    pub const LOCAL_ONLY: Ack = Ack { local_only: true };
}

/// Where the answer to one operation goes. Dropping it unanswered counts as
/// `unavailable` on the other side, so no request can be left hanging by an
/// actor that stopped.
pub type Reply<T = Ack> = oneshot::Sender<Result<T, ErrorCode>>;

/// Answers `reply`; the asker may have gone, which is nobody's failure.
pub fn answer<T>(reply: Reply<T>, outcome: Result<T, ErrorCode>) {
    let _ = reply.send(outcome);
}

/// The answer to come for one operation.
pub struct Outcome<T = Ack>(State<T>);

enum State<T> {
    Waiting(oneshot::Receiver<Result<T, ErrorCode>>),
    /// Answered before it was queued (refused for lack of room).
    Ready(Option<Result<T, ErrorCode>>),
}

impl<T> Outcome<T> {
    /// A reply channel: the `Reply` goes with the request.
    pub fn channel() -> (Reply<T>, Outcome<T>) {
        let (reply, outcome) = oneshot::channel();
        (reply, Outcome(State::Waiting(outcome)))
    }

    /// For requests nobody waits on: the answer is dropped when it comes.
    pub fn ignore(self) {}

    /// An outcome known at once.
    pub fn ready(outcome: Result<T, ErrorCode>) -> Self {
        Outcome(State::Ready(Some(outcome)))
    }
}

impl<T: Unpin> Future for Outcome<T> {
    type Output = Result<T, ErrorCode>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            State::Waiting(receiver) => Pin::new(receiver)
                .poll(cx)
                .map(|outcome| outcome.unwrap_or(Err(ErrorCode::Unavailable))),
            State::Ready(outcome) => {
                Poll::Ready(outcome.take().unwrap_or(Err(ErrorCode::Unavailable)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn a_dropped_reply_reads_as_unavailable() {
        let (reply, outcome) = Outcome::<Ack>::channel();
        drop(reply);
        assert_eq!(outcome.await, Err(ErrorCode::Unavailable));
    }

    #[actix::test]
    async fn an_answer_arrives_through_the_channel() {
        let (reply, outcome) = Outcome::channel();
        answer(reply, Ok(Ack::LOCAL_ONLY));
        assert_eq!(outcome.await, Ok(Ack::LOCAL_ONLY));
        assert_eq!(
            Outcome::<Ack>::ready(Err(ErrorCode::Unavailable)).await,
            Err(ErrorCode::Unavailable)
        );
    }
}
