//! Ordered shutdown within the grace period: on SIGTERM or SIGINT, stop
//! accepting connections, refuse new WebSockets, close every session with
//! 1001 through the Broker (in batches), close the RabbitMQ connections
//! (the node queue and its bindings go with them: no unbinding one by one),
//! then stop the HTTP server.
//!
//! When sessions are closed is the Broker's [`CloseSchedule`]: spreading the
//! closes over a drain window is a different schedule, not a different
//! sequence.

use std::future::Future;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use herald_actors::broker::{BrokerHandle, CloseSchedule, Lane, Shutdown};
use log::{info, warn};
use tokio::time::Instant;

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

/// Runs the whole shutdown; returns within `grace` (give or take the
/// server's last second for ordinary requests).
pub async fn run(
    server: ServerHandle,
    broker: &BrokerHandle,
    bridge: Option<actix::Addr<herald_amqp::Bridge>>,
    grace: Duration,
) {
    let deadline = Instant::now() + grace;
    server.pause().await;
    let sessions_by = deadline
        .checked_sub(WIND_DOWN)
        .filter(|by| *by > Instant::now())
        .unwrap_or_else(|| Instant::now() + grace / 2);
    drain(broker, CloseSchedule::default(), sessions_by).await;
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
