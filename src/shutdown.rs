//! Ordered shutdown: on SIGTERM or SIGINT, close every session with 1001
//! through the Broker, wait for them to go (up to the grace period), then
//! stop the HTTP server.

use std::time::{Duration, Instant};

use herald_actors::broker::{BrokerHandle, Shutdown};
use log::{info, warn};

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot listen for signals; stop Herald by killing it");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
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
