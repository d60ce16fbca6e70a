//! The bound on a session's outbound queue.
//!
//! A session's undelivered frames sit in two places Herald does not see from
//! one spot: the actor's mailbox and `WebsocketContext`'s own frame buffer,
//! which has no bound at all. The meter counts both. The Broker reserves a
//! frame's cost before handing it over, and [`MeteredStream`], wrapped around
//! the context's byte stream, releases it when the transport takes the bytes.
//! A reservation that would pass the limits is refused, and the Broker closes
//! that session with 1013 while every other subscriber keeps receiving.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;

/// How much may wait for one session before it counts as a slow consumer.
#[derive(Debug, Clone, Copy)]
pub struct OutboundLimits {
    pub max_frames: usize,
    pub max_bytes: usize,
}

#[derive(Debug)]
pub struct OutboundMeter {
    limits: OutboundLimits,
    /// Frames reserved and not yet taken by the transport.
    queued_frames: AtomicUsize,
    queued_bytes: AtomicUsize,
    /// Of those, the ones the session already wrote into its context.
    written_frames: AtomicUsize,
    written_bytes: AtomicUsize,
}

impl OutboundMeter {
    pub fn new(limits: OutboundLimits) -> Arc<Self> {
        Arc::new(OutboundMeter {
            limits,
            queued_frames: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            written_frames: AtomicUsize::new(0),
            written_bytes: AtomicUsize::new(0),
        })
    }

    pub fn limits(&self) -> OutboundLimits {
        self.limits
    }

    /// Reserves room for one frame of `bytes`; false if that would overflow.
    /// The Broker reserves for each delivery, and a STOMP session for the
    /// extra frames of a delivery several of its ids match; check-then-add
    /// between the two can overshoot the limits by one frame, no more.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        let frames = self.queued_frames.load(Ordering::Acquire);
        let queued = self.queued_bytes.load(Ordering::Acquire);
        if frames >= self.limits.max_frames || queued + bytes > self.limits.max_bytes {
            return false;
        }
        self.queued_frames.fetch_add(1, Ordering::AcqRel);
        self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        true
    }

    /// Gives back a reservation whose frame never reached the session.
    pub fn cancel(&self, bytes: usize) {
        self.queued_frames.fetch_sub(1, Ordering::AcqRel);
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// The session wrote a reserved frame into its context.
    pub fn note_written(&self, bytes: usize) {
        self.written_frames.fetch_add(1, Ordering::AcqRel);
        self.written_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// The transport took everything written so far.
    fn release_written(&self) {
        let frames = self.written_frames.swap(0, Ordering::AcqRel);
        let bytes = self.written_bytes.swap(0, Ordering::AcqRel);
        if frames > 0 {
            self.queued_frames.fetch_sub(frames, Ordering::AcqRel);
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    pub fn queued_frames(&self) -> usize {
        self.queued_frames.load(Ordering::Acquire)
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }
}

/// The session's outgoing byte stream, releasing the meter as the transport
/// pulls bytes. The session actor runs inside this stream's poll, so frames
/// it writes are encoded into the very chunk handed over next.
pub struct MeteredStream<S> {
    inner: S,
    meter: Arc<OutboundMeter>,
}

impl<S> MeteredStream<S> {
    pub fn new(inner: S, meter: Arc<OutboundMeter>) -> Self {
        MeteredStream { inner, meter }
    }
}

impl<S, T, E> Stream for MeteredStream<S>
where
    S: Stream<Item = Result<T, E>> + Unpin,
{
    type Item = Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.meter.release_written();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn refuses_past_either_limit_and_frees_room_when_the_transport_takes_bytes() {
        let meter = OutboundMeter::new(OutboundLimits {
            max_frames: 2,
            max_bytes: 100,
        });
        assert!(meter.try_reserve(40));
        assert!(!meter.try_reserve(61), "bytes limit");
        assert!(meter.try_reserve(60));
        assert!(!meter.try_reserve(0), "frames limit");
        meter.note_written(40);
        meter.release_written();
        assert_eq!((meter.queued_frames(), meter.queued_bytes()), (1, 60));
        assert!(meter.try_reserve(40));
    }

    #[test]
    fn the_stream_wrapper_releases_on_every_chunk() {
        let meter = OutboundMeter::new(OutboundLimits {
            max_frames: 4,
            max_bytes: 100,
        });
        assert!(meter.try_reserve(10));
        meter.note_written(10);
        let chunks = futures_util::stream::iter([Ok::<_, ()>(1)]);
        let mut metered = MeteredStream::new(chunks, meter.clone());
        let mut cx = Context::from_waker(Waker::noop());
        let _ = Pin::new(&mut metered).poll_next(&mut cx);
        assert_eq!(meter.queued_frames(), 0);
    }
}
