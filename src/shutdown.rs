//! Draining a node, then stopping it: on SIGTERM, SIGINT or `POST
//! /api/drain`, refuse new WebSockets (and answer `/readyz` 503) at once,
//! close every session with 1001 spread over the drain window, each told
//! when to come back, close the RabbitMQ connections (the node queue and
//! its bindings go with them: no unbinding one by one), then stop the HTTP
//! server. The server keeps accepting HTTP until the sessions are gone, so
//! `/readyz`, `/api/*` and `/metrics` answer throughout the drain.
//!
//! When sessions are closed is the Broker's [`CloseSchedule`]; the deadline
//! is the window plus `HERALD_SHUTDOWN_GRACE`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use herald_actors::broker::{BrokerHandle, CloseSchedule};
use log::{info, warn};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How a drain is started from an HTTP request: the request starts the
/// closes itself, so its answer can say how many, and wakes the task that
/// waits for the sessions and stops the node.
pub struct DrainTrigger {
    pub window: Duration,
    started: Notify,
}

impl DrainTrigger {
    pub fn new(window: Duration) -> Arc<Self> {
        Arc::new(DrainTrigger {
            window,
            started: Notify::new(),
        })
    }

    /// The schedule every drain of this node uses.
    pub fn schedule(&self) -> CloseSchedule {
        if self.window.is_zero() {
            CloseSchedule::default()
        } else {
            CloseSchedule::spread(0, self.window)
        }
    }

    /// Starts the drain, the one place that does: the node is draining
    /// from this call on, and the Broker closes its sessions on
    /// [`DrainTrigger::schedule`]. Answers whether a drain had begun before
    /// (of concurrent calls exactly one answers `false`; later calls start
    /// nothing new) and how many sessions are being closed.
    pub async fn start(&self, broker: &BrokerHandle) -> (bool, usize) {
        let (already, closing) = broker.drain(self.schedule()).await;
        if !already {
            self.started.notify_one();
        }
        (already, closing)
    }

    /// Resolves once a drain was started by [`DrainTrigger::start`].
    pub async fn started(&self) {
        self.started.notified().await;
    }
}

/// Time kept back from the grace period for closing RabbitMQ and stopping
/// the server once the sessions are gone.
const WIND_DOWN: Duration = Duration::from_millis(1500);

/// Installs the SIGTERM and SIGINT handlers now, so that a signal arriving
/// before the server is up is not lost, and returns a future that resolves on
/// the first of them. Must be called inside the runtime.
pub fn signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            warn!("cannot listen for signals; stop Herald by killing it");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
        }
    }
}

/// The least time the sessions get past the window before the node stops
/// waiting for them, however short the grace: the last closes of the
/// schedule land at the window's end.
const CLOSE_MARGIN: Duration = Duration::from_millis(500);

/// The longest drain window or shutdown grace Herald takes: longer ones are
/// cut to this at configuration load, so deadlines never overflow.
pub const LONGEST: Duration = Duration::from_secs(24 * 60 * 60);

/// Runs the whole drain and shutdown. The sessions get the window plus
/// the grace less [`WIND_DOWN`], but at least the window plus
/// [`CLOSE_MARGIN`]; the process is gone at most the window plus the grace
/// (plus about a second for RabbitMQ and the server's last requests) after
/// the drain starts.
pub async fn run(
    server: ServerHandle,
    broker: &BrokerHandle,
    bridge: Option<actix::Addr<herald_amqp::Bridge>>,
    trigger: &DrainTrigger,
    grace: Duration,
) {
    let start = Instant::now();
    let far = |after: Duration| {
        start
            .checked_add(after)
            .unwrap_or_else(|| start + LONGEST * 2)
    };
    let sessions_by = far(trigger
        .window
        .saturating_add(grace.saturating_sub(WIND_DOWN).max(CLOSE_MARGIN)));
    let deadline = far(trigger.window.saturating_add(grace)).max(sessions_by);
    drain(broker, trigger, sessions_by).await;
    // Only now: until the sessions are gone, HTTP is still served.
    server.pause().await;
    if let Some(bridge) = bridge {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(200));
        stop_bridge(&bridge, left.min(Duration::from_secs(1))).await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(left, server.stop(true)).await.is_err() {
        server.stop(false).await;
    }
}

/// Stops at once, on a second signal during a drain: closes every session
/// still open with 1001 now (no hint), gives them a moment to go, and stops
/// the server without waiting for its requests.
pub async fn now(server: ServerHandle, broker: &BrokerHandle) {
    let closing = broker.drain(CloseSchedule::default()).await.1;
    info!("closing the {closing} session(s) left now");
    let counters = broker.counters();
    let until = Instant::now() + Duration::from_millis(500);
    while counters.connections_current.get() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop(false).await;
}

/// Starts the drain (if an HTTP request has not) and waits until the
/// sessions are gone or `until` came.
pub async fn drain(broker: &BrokerHandle, trigger: &DrainTrigger, until: Instant) {
    let (_, closing) = trigger.start(broker).await;
    info!("closing {closing} session(s)");
    let counters = broker.counters();
    while counters.connections_current.get() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = counters.connections_current.get();
    if left > 0 {
        warn!("the shutdown grace ran out with {left} session(s) still open");
    }
}

/// Closes the RabbitMQ connections, after the sessions (whose departure it
/// announces) are gone.
pub async fn stop_bridge(bridge: &actix::Addr<herald_amqp::Bridge>, within: Duration) {
    let stopped = bridge.send(herald_amqp::Stop { within });
    if tokio::time::timeout(within + Duration::from_millis(100), stopped)
        .await
        .is_err()
    {
        warn!("RabbitMQ did not close the connections in time");
    }
}
