//! Ordered shutdown: on SIGTERM or SIGINT, close every session with 1001
//! through the Broker, wait for them to go (up to the grace period), then
//! stop the HTTP server.

use std::future::Future;
use std::time::{Duration, Instant};

use herald_actors::broker::{BrokerHandle, Shutdown};
use log::{info, warn};

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

/// Closes every session and waits until they are gone or `grace` ran out.
pub async fn drain(broker: &BrokerHandle, grace: Duration) {
    let deadline = Instant::now() + grace;
    let closing = broker.send(Shutdown).await.unwrap_or(0);
    info!("closing {closing} session(s)");
    let counters = broker.counters();
    while counters.connections_current.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = counters.connections_current.get();
    if left > 0 {
        warn!("shutdown grace of {grace:?} ran out with {left} session(s) still open");
    }
}

/// Closes the RabbitMQ connection, after the sessions (whose departure it
/// announces) are gone.
pub async fn stop_bridge(bridge: &actix::Addr<herald_amqp::Bridge>) {
    if tokio::time::timeout(Duration::from_secs(2), bridge.send(herald_amqp::Stop))
        .await
        .is_err()
    {
        warn!("RabbitMQ did not close the connection in time");
    }
}
