//! Reaching RabbitMQ: one connection attempt under a deadline, and the
//! capped, jittered backoff between failed attempts. The publishing and the
//! consuming side each hold a connection of their own (RabbitMQ blocks
//! connections that publish while it has a resource alarm, and a blocked
//! connection carries nothing, acks and binds included), and each
//! reconnects on its own schedule.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use crate::bridge::AmqpConfig;
use crate::error::Error;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Which of the node's two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publishing,
    Consuming,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publishing => "publishing",
            Role::Consuming => "consuming",
        }
    }
}

/// Opens a connection, named after the node and its role in RabbitMQ's
/// management views.
pub async fn connect(config: &AmqpConfig, role: Role) -> Result<Connection, Error> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("herald {} {}", config.node_id, role.as_str()).into());
    match tokio::time::timeout(
        config.connect_timeout,
        Connection::connect(&config.url, properties),
    )
    .await
    {
        Ok(connected) => Ok(connected?),
        Err(_) => Err(Error::TimedOut(config.connect_timeout)),
    }
}

/// Closes a connection without waiting on a dead socket for long.
pub async fn close(connection: Connection, why: &str) {
    let closing = connection.close(200, why.into());
    let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
}

/// Delays between attempts: 0.1 s doubling to 5 s, each jittered by ±20%
/// so that nodes cut off together do not come back in lockstep.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Counts a failure and returns how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doubled = FIRST_RETRY.saturating_mul(1 << self.failures.min(10));
        doubled.min(MAX_RETRY).mul_f64(rand::random_range(0.8..1.2))
    }

    /// Failed attempts in a row; worth a warning on the first and every
    /// tenth, not on each.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn should_warn(&self) -> bool {
        self.failures == 1 || self.failures % 10 == 0
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The pause before reconnecting after a link that was up failed.
    pub fn first() -> Duration {
        FIRST_RETRY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut backoff = Backoff::default();
        let first = backoff.failed();
        assert!(first >= Duration::from_millis(160) && first <= Duration::from_millis(240));
        for _ in 0..20 {
            assert!(backoff.failed() <= MAX_RETRY.mul_f64(1.2));
        }
        assert!(backoff.failed() >= MAX_RETRY.mul_f64(0.8));
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
    }
}
