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
use herald_actors::broker::{BrokerHandle, CloseSchedule, Lane, Shutdown};
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

    /// Starts closing the sessions; answers how many will be closed. A
    /// second call starts nothing new.
    pub async fn start(&self, broker: &BrokerHandle) -> usize {
        let schedule = self.schedule();
        let closing = broker
            .ask(Lane::Internal, |reply| Shutdown { schedule, reply })
            .await
            .unwrap_or(0);
        self.started.notify_one();
        closing
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

/// Runs the whole drain and shutdown; returns within the window plus
/// `grace` (give or take the server's last second for ordinary requests).
pub async fn run(
    server: ServerHandle,
    broker: &BrokerHandle,
    bridge: Option<actix::Addr<herald_amqp::Bridge>>,
    trigger: &DrainTrigger,
    grace: Duration,
) {
    let deadline = Instant::now() + trigger.window + grace;
    let sessions_by = deadline
        .checked_sub(WIND_DOWN)
        .filter(|by| *by > Instant::now())
        .unwrap_or_else(|| Instant::now() + (trigger.window + grace) / 2);
    drain(broker, trigger.schedule(), sessions_by).await;
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

/// Closes every session on `schedule` and waits until they are gone or
/// `until` came.
pub async fn drain(broker: &BrokerHandle, schedule: CloseSchedule, until: Instant) {
    let closing = broker
        .ask(Lane::Internal, |reply| Shutdown { schedule, reply })
        .await
        .unwrap_or(0);
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
