//! Reaching RabbitMQ: one connection attempt under a deadline, and the
//! capped, jittered backoff between failed attempts. The publishing and the
//! consuming side each hold a connection of their own (RabbitMQ blocks
//! connections that publish while it has a resource alarm, and a blocked
//! connection carries nothing, acks and binds included), and each
//! reconnects on its own schedule.
//!
//! With several brokers listed (a RabbitMQ cluster), every attempt starts
//! at the broker the last one used, so a node stays on its own broker
//! while it answers, and moves on to the next in the list after a failed
//! attempt; the backoff's jitter keeps nodes that lost the same broker from
//! arriving at the next one in lockstep.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
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

/// The brokers a node may use, in the order they were listed, and where
/// each of its two connections stands in that list.
#[derive(Debug)]
pub struct Brokers {
    urls: Vec<String>,
    /// Per role, the index of the broker the next attempt goes to.
    cursors: [AtomicUsize; 2],
    /// Per role, `host:port` of the broker its connection is on.
    current: [Mutex<Option<String>>; 2],
}

impl Brokers {
    /// The brokers of a comma-separated list, blanks around commas ignored.
    pub fn parse(list: &str) -> Self {
        Brokers {
            urls: split_urls(list),
            cursors: Default::default(),
            current: Default::default(),
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// `host:port` of the broker the role's connection is on, when up.
    pub fn current(&self, role: Role) -> Option<String> {
        self.current[role as usize]
            .lock()
            .ok()
            .and_then(|current| current.clone())
    }

    fn target(&self, role: Role) -> (usize, &str) {
        let index = self.cursors[role as usize].load(Ordering::Relaxed) % self.urls.len().max(1);
        (index, self.urls.get(index).map_or("", String::as_str))
    }

    fn succeeded(&self, role: Role, index: usize) {
        if let Ok(mut current) = self.current[role as usize].lock() {
            *current = self.urls.get(index).map(|url| broker_label(url));
        }
    }

    fn failed(&self, role: Role, index: usize) {
        self.cursors[role as usize].store(after_failure(index, self.urls.len()), Ordering::Relaxed);
        if let Ok(mut current) = self.current[role as usize].lock() {
            *current = None;
        }
    }
}

/// The URLs of a comma-separated list, in order, blanks dropped.
pub fn split_urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Why an AMQP URL cannot be used, checked once at start so that a typo
/// ends the node rather than a reconnect loop.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err(format!(
            "{:?} must start with amqp:// or amqps://",
            broker_label(url)
        ));
    }
    // lapin reads `amqp://` alone as localhost: a URL naming no host is a
    // typo, not a wish for the default.
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() || host.starts_with(':') {
        return Err(
            "an AMQP URL must name its broker's host (amqp://user:password@host:5672/vhost)"
                .to_owned(),
        );
    }
    url.parse::<lapin::uri::AMQPUri>()
        .map(|_| ())
        .map_err(|why| format!("{:?} is not a valid AMQP URL ({why})", broker_label(url)))
}

/// The broker to try after the one at `index` failed: the next in the
/// list, wrapping round.
pub fn after_failure(index: usize, brokers: usize) -> usize {
    if brokers == 0 {
        0
    } else {
        (index + 1) % brokers
    }
}

/// `host:port` of an AMQP URL, without scheme, credentials or vhost, so
/// that it can be shown to operators. A URL that does not parse is cut at
/// its last `@` first: a password with an unencoded `/`, `?` or `#` must not
/// show through in an error line.
pub fn broker_label(url: &str) -> String {
    // lapin's parser does not keep a bracketed IPv6 host as written.
    if !url.contains('[') {
        if let Ok(uri) = url.parse::<lapin::uri::AMQPUri>() {
            return format!("{}:{}", uri.authority.host, uri.authority.port);
        }
    }
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Opens a connection, named after the node and its role in RabbitMQ's
/// management views, to the broker the role's last attempt left it at.
pub async fn connect(config: &AmqpConfig, role: Role) -> Result<Connection, Error> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("herald {} {}", config.node_id, role.as_str()).into());
    let (index, url) = config.brokers.target(role);
    let attempt =
        tokio::time::timeout(config.connect_timeout, Connection::connect(url, properties));
    let outcome = match attempt.await {
        Ok(connected) => connected.map_err(Error::from),
        Err(_) => Err(Error::TimedOut(config.connect_timeout)),
    };
    match &outcome {
        Ok(_) => config.brokers.succeeded(role, index),
        Err(_) => config.brokers.failed(role, index),
    }
    outcome
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

    #[test]
    fn a_failed_broker_hands_over_to_the_next_wrapping_round() {
        assert_eq!(after_failure(0, 3), 1);
        assert_eq!(after_failure(2, 3), 0);
        assert_eq!(after_failure(0, 1), 0);
        assert_eq!(after_failure(5, 0), 0);
    }

    #[test]
    fn brokers_rotate_per_role_and_report_where_they_are() {
        let brokers = Brokers::parse(" amqp://u:p@one:5673/%2f , amqp://two ,");
        assert_eq!(brokers.urls().len(), 2);
        let (first, _) = brokers.target(Role::Consuming);
        assert_eq!(first, 0);
        brokers.succeeded(Role::Consuming, first);
        assert_eq!(
            brokers.current(Role::Consuming).as_deref(),
            Some("one:5673")
        );
        brokers.failed(Role::Consuming, first);
        assert_eq!(brokers.current(Role::Consuming), None);
        assert_eq!(brokers.target(Role::Consuming), (1, "amqp://two"));
        assert_eq!(brokers.target(Role::Publishing).0, 0);
        brokers.failed(Role::Consuming, 1);
        assert_eq!(brokers.target(Role::Consuming).0, 0);
    }

    #[test]
    fn urls_are_checked_one_by_one() {
        assert!(check_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(check_url("http://rabbit").is_err());
        assert!(check_url("amqp://rabbit:notaport").is_err());
        assert!(check_url("amqp://").is_err());
        assert!(check_url("amqp://guest:guest@/vhost").is_err());
        assert!(check_url("amqp://rabbit").is_ok());
    }

    #[test]
    fn labels_carry_no_credentials_and_name_the_port() {
        assert_eq!(
            broker_label("amqp://guest:secret@10.0.0.1:5673/%2f"),
            "10.0.0.1:5673"
        );
        assert_eq!(broker_label("amqp://rabbit"), "rabbit:5672");
        assert_eq!(broker_label("amqps://u:p@rabbit/vh"), "rabbit:5671");
        assert_eq!(broker_label("amqp://[::1]:5673"), "[::1]:5673");
        // Not a valid URL (an unencoded `/` in the password): nothing of the
        // password shows.
        assert_eq!(broker_label("amqp://u:pa/ss@rabbit:x/vh"), "rabbit:x");
    }
}
