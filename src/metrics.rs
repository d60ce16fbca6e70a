//! `/metrics` in the Prometheus text format, rendered from the same snapshot
//! `/api/stats` shows, so the two never disagree. Names follow
//! `herald_<subsystem>_<name>`.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounter, IntGauge, Opts, Registry, TextEncoder};

use crate::api::ops::Stats;

/// One scrape's worth of metrics, built from a stats snapshot.
struct SnapshotCollector {
    families: Vec<MetricFamily>,
}

impl SnapshotCollector {
    fn new(stats: &Stats, node: &str) -> Self {
        let core = &stats.core;
        let mut families = Vec::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            if let Ok(metric) =
                IntCounter::with_opts(Opts::new(name, help).const_label("node", node))
            {
                metric.inc_by(value);
                families.extend(metric.collect());
            }
        };
        counter(
            "herald_connections_total",
            "WebSocket sessions opened",
            core.connections.total,
        );
        counter(
            "herald_connections_rejected_total",
            "WebSocket handshakes refused for the connection limit",
            core.connections.rejected,
        );
        let refused = &core.refused;
        counter(
            "herald_connections_refused_per_user_total",
            "WebSocket connections refused because their user held as many as one may",
            refused.connections_per_user,
        );
        counter(
            "herald_connections_refused_per_ip_total",
            "WebSocket handshakes refused because their client IP held as many connections as one may",
            refused.connections_per_ip,
        );
        counter(
            "herald_handshakes_rate_limited_total",
            "WebSocket handshakes refused because their client IP made too many per second",
            refused.handshake_rate,
        );
        counter(
            "herald_frames_rate_limited_total",
            "Inbound WebSocket messages and STOMP frames over their session's rate limit",
            refused.frames_rate_limited,
        );
        counter(
            "herald_sessions_closed_for_abuse_total",
            "Sessions closed with 1008 for sending past their rate limit",
            refused.sessions_closed_for_abuse,
        );
        counter(
            "herald_sessions_invalid_utf8_total",
            "Sessions closed with 1007 for a text message that is not UTF-8",
            refused.invalid_utf8,
        );
        counter(
            "herald_revocation_sessions_closed_total",
            "Sessions closed with 4001 because their token was revoked",
            core.revocation.sessions_closed,
        );
        counter(
            "herald_revocation_tokens_refused_total",
            "Tokens refused at the handshake, in STOMP CONNECT or on refresh because they were revoked",
            core.revocation.tokens_refused,
        );
        counter(
            "herald_revocation_dropped_total",
            "Revocations from other nodes this node's full list could not keep",
            core.revocation.dropped,
        );
        counter(
            "herald_messages_in_total",
            "Messages published into the node",
            core.messages.received,
        );
        counter(
            "herald_messages_out_total",
            "Deliveries to sessions",
            core.messages.delivered,
        );
        counter(
            "herald_messages_dropped_total",
            "Deliveries refused because a session's queue was full",
            core.messages.dropped,
        );
        counter(
            "herald_broker_handled_total",
            "Messages the Broker actor handled",
            core.broker.handled,
        );
        counter(
            "herald_broker_refused_total",
            "Operations refused because the Broker's backlog was at its bound",
            core.broker.refused,
        );
        counter(
            "herald_amqp_refused_total",
            "Messages for RabbitMQ refused because the bridge's backlog was at its bound",
            stats.amqp.refused,
        );
        counter(
            "herald_amqp_lifecycle_dropped_total",
            "Lifecycle events RabbitMQ could not take",
            stats.amqp.lifecycle_dropped,
        );
        counter(
            "herald_amqp_control_rejected_total",
            "Control messages from other nodes that were not believed (forged, replayed, stale, or no cluster secret)",
            stats.amqp.control_rejected,
        );
        counter(
            "herald_amqp_reconnects_total",
            "RabbitMQ reconnections",
            stats.amqp.reconnects,
        );
        counter(
            "herald_amqp_published_total",
            "Messages published to RabbitMQ",
            stats.amqp.published,
        );
        counter(
            "herald_amqp_confirmed_total",
            "Publishes RabbitMQ confirmed",
            stats.amqp.confirmed,
        );
        counter(
            "herald_amqp_consumed_total",
            "Messages consumed from RabbitMQ",
            stats.amqp.consumed,
        );
        let mut gauge = |name: &str, help: &str, value: u64| {
            if let Ok(metric) = IntGauge::with_opts(Opts::new(name, help).const_label("node", node))
            {
                metric.set(i64::try_from(value).unwrap_or(i64::MAX));
                families.extend(metric.collect());
            }
        };
        gauge(
            "herald_connections_current",
            "Open WebSocket sessions",
            core.connections.current,
        );
        gauge(
            "herald_users_online",
            "Distinct signed-in users with a session",
            core.users_online,
        );
        gauge(
            "herald_revoked_tokens",
            "Entries on the revocation list (revoked token ids and users' revoked issue times)",
            core.revoked_tokens,
        );
        gauge(
            "herald_topics",
            "Distinct patterns with a local subscriber",
            core.topics,
        );
        gauge(
            "herald_subscriptions",
            "Subscriptions held by local sessions",
            core.subscriptions,
        );
        gauge(
            "herald_broker_mailbox_backlog",
            "Messages waiting for the Broker actor",
            core.broker.backlog,
        );
        gauge(
            "herald_broker_mailbox_bound",
            "Backlog past which the Broker refuses operations",
            core.broker.bound,
        );
        gauge(
            "herald_amqp_mailbox_backlog",
            "Messages waiting for the RabbitMQ bridge",
            stats.amqp.backlog,
        );
        gauge(
            "herald_amqp_blocked",
            "1 while RabbitMQ blocks publishing (a resource alarm)",
            u64::from(stats.amqp.blocked),
        );
        gauge(
            "herald_uptime_seconds",
            "Seconds since the node started",
            stats.uptime_s,
        );
        families.extend(crate::upstream::stats::families(&stats.requests, node));
        SnapshotCollector { families }
    }
}

impl Collector for SnapshotCollector {
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.families.clone()
    }
}

pub fn render(stats: &Stats) -> String {
    let registry = Registry::new();
    let collector = SnapshotCollector::new(stats, &stats.node);
    let families = if registry.register(Box::new(collector)).is_ok() {
        registry.gather()
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    if TextEncoder::new().encode(&families, &mut out).is_err() {
        log::error!("cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}
