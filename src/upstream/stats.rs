//! Per-service figures for `/api/stats` and `/metrics`: calls, errors by
//! kind, answers by status class, a latency histogram, calls in flight and
//! calls cancelled by their session closing; and what became of
//! backend-initiated requests.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_actors::request::CallError;
use herald_actors::stats::Counter;
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use serde::Serialize;

/// Upper bounds of the latency buckets, in milliseconds.
pub const BUCKETS_MS: [u64; 14] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000,
];

/// Error kinds as the contract names them.
pub const KINDS: [&str; 6] = [
    "timeout",
    "upstream_error",
    "too_large",
    "unavailable",
    "bad_request",
    "forbidden",
];

#[derive(Debug, Default)]
pub struct ServiceStats {
    pub requests: Counter,
    pub in_flight: Counter,
    /// Calls dropped before they finished: their session closed.
    pub cancelled: Counter,
    errors: [Counter; KINDS.len()],
    /// Answers by status class: 1xx to 5xx.
    statuses: [Counter; 5],
    /// Finished calls per latency bucket (the last one: above them all).
    buckets: [Counter; BUCKETS_MS.len() + 1],
    latency_sum_us: Counter,
}

fn kind_index(error: &CallError) -> Option<usize> {
    let kind = error.code().as_str();
    KINDS.iter().position(|known| *known == kind)
}

impl ServiceStats {
    pub fn refused(&self, error: &CallError) {
        if let Some(index) = kind_index(error) {
            self.errors[index].inc();
        }
    }

    /// A call that finished: answered with `status`, or failed.
    pub fn finished(&self, outcome: Result<u16, &CallError>, took: Duration) {
        match outcome {
            Ok(status) => {
                let class = usize::from(status / 100).clamp(1, 5) - 1;
                self.statuses[class].inc();
            }
            Err(error) => self.refused(error),
        }
        let ms = herald_actors::millis(took);
        let bucket = BUCKETS_MS
            .iter()
            .position(|le| ms <= *le)
            .unwrap_or(BUCKETS_MS.len());
        self.buckets[bucket].inc();
        self.latency_sum_us
            .add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn snapshot(&self) -> ServiceSnapshot {
        let mut cumulative = 0;
        let mut buckets: BTreeMap<String, u64> = BTreeMap::new();
        for (le, count) in BUCKETS_MS.iter().zip(&self.buckets) {
            cumulative += count.get();
            buckets.insert(le.to_string(), cumulative);
        }
        buckets.insert(
            "+Inf".to_owned(),
            cumulative + self.buckets[BUCKETS_MS.len()].get(),
        );
        ServiceSnapshot {
            requests: self.requests.get(),
            in_flight: self.in_flight.get(),
            cancelled: self.cancelled.get(),
            errors: KINDS
                .iter()
                .zip(&self.errors)
                .map(|(kind, n)| ((*kind).to_owned(), n.get()))
                .collect(),
            status: ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .iter()
                .zip(&self.statuses)
                .map(|(class, n)| ((*class).to_owned(), n.get()))
                .collect(),
            latency_ms: LatencySnapshot {
                buckets,
                sum_ms: self.latency_sum_us.get() as f64 / 1000.0,
            },
        }
    }
}

/// What became of backend-initiated requests on this node.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Taken from `herald.requests` or `POST /api/users/{u}/requests`.
    pub received: Counter,
    /// Refused before any call: malformed, unknown service, bad path.
    pub refused: Counter,
    /// Calls made whose result (a response, or the error) was handed to
    /// the Broker for the user's sessions on every node.
    pub delivered: Counter,
    /// Of those, results that reached only this node's sessions
    /// (RabbitMQ could not take them for the others).
    pub local_only: Counter,
    /// Results that could not even be handed to the Broker.
    pub undelivered: Counter,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct LatencySnapshot {
    /// Cumulative counts per upper bound in ms, as Prometheus has them.
    pub buckets: BTreeMap<String, u64>,
    pub sum_ms: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ServiceSnapshot {
    pub requests: u64,
    pub in_flight: u64,
    pub cancelled: u64,
    pub errors: BTreeMap<String, u64>,
    pub status: BTreeMap<String, u64>,
    pub latency_ms: LatencySnapshot,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct BackendSnapshot {
    pub received: u64,
    pub refused: u64,
    pub delivered: u64,
    pub local_only: u64,
    pub undelivered: u64,
}

/// The pipeline's share of `/api/stats`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RequestsSnapshot {
    /// Requests naming a service that is not configured (not kept per
    /// name: the name is the client's).
    pub unknown_service: u64,
    pub services: BTreeMap<String, ServiceSnapshot>,
    pub backend: BackendSnapshot,
}

impl BackendStats {
    pub fn snapshot(&self) -> BackendSnapshot {
        BackendSnapshot {
            received: self.received.get(),
            refused: self.refused.get(),
            delivered: self.delivered.get(),
            local_only: self.local_only.get(),
            undelivered: self.undelivered.get(),
        }
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn sample(labels: Vec<LabelPair>, value: u64, counter: bool) -> Metric {
    let mut metric = Metric::from_label(labels);
    if counter {
        let mut c = prometheus::proto::Counter::default();
        c.set_value(value as f64);
        metric.set_counter(c);
    } else {
        let mut g = prometheus::proto::Gauge::default();
        g.set_value(value as f64);
        metric.set_gauge(g);
    }
    metric
}

/// `/metrics` families for `snapshot`, labelled with `node`.
pub fn families(snapshot: &RequestsSnapshot, node: &str) -> Vec<MetricFamily> {
    let (mut requests, mut errors, mut in_flight, mut cancelled, mut statuses, mut latency) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (service, stats) in &snapshot.services {
        let labels = || vec![label("node", node), label("service", service)];
        requests.push(sample(labels(), stats.requests, true));
        in_flight.push(sample(labels(), stats.in_flight, false));
        cancelled.push(sample(labels(), stats.cancelled, true));
        for (kind, count) in &stats.errors {
            let mut labels = labels();
            labels.push(label("kind", kind));
            errors.push(sample(labels, *count, true));
        }
        for (class, count) in &stats.status {
            let mut labels = labels();
            labels.push(label("class", class));
            statuses.push(sample(labels, *count, true));
        }
        let mut histogram = Histogram::default();
        let mut count = 0;
        let buckets = BUCKETS_MS
            .iter()
            .map(|le| {
                count = stats
                    .latency_ms
                    .buckets
                    .get(&le.to_string())
                    .copied()
                    .unwrap_or(count);
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(*le as f64 / 1000.0);
                bucket.set_cumulative_count(count);
                bucket
            })
            .collect();
        histogram.set_bucket(buckets);
        histogram.set_sample_count(
            stats
                .latency_ms
                .buckets
                .get("+Inf")
                .copied()
                .unwrap_or(count),
        );
        histogram.set_sample_sum(stats.latency_ms.sum_ms / 1000.0);
        let mut metric = Metric::from_label(labels());
        metric.set_histogram(histogram);
        latency.push(metric);
    }
    let mut out = Vec::new();
    let mut push = |name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>| {
        if !metrics.is_empty() {
            out.push(family(name, help, kind, metrics));
        }
    };
    push(
        "herald_service_requests_total",
        "Calls to a configured service that were started",
        MetricType::COUNTER,
        requests,
    );
    push(
        "herald_service_errors_total",
        "Calls to a service that ended in an error, by kind",
        MetricType::COUNTER,
        errors,
    );
    push(
        "herald_service_responses_total",
        "Answers from a service, by status class",
        MetricType::COUNTER,
        statuses,
    );
    push(
        "herald_service_requests_in_flight",
        "Calls to a service under way",
        MetricType::GAUGE,
        in_flight,
    );
    push(
        "herald_service_requests_cancelled_total",
        "Calls dropped because their session closed",
        MetricType::COUNTER,
        cancelled,
    );
    push(
        "herald_service_request_duration_seconds",
        "Time from sending a call to its encoded answer",
        MetricType::HISTOGRAM,
        latency,
    );
    let node_only = || vec![label("node", node)];
    push(
        "herald_requests_unknown_service_total",
        "Requests naming a service that is not configured",
        MetricType::COUNTER,
        vec![sample(node_only(), snapshot.unknown_service, true)],
    );
    let backend = &snapshot.backend;
    let outcomes = [
        ("received", backend.received),
        ("refused", backend.refused),
        ("delivered", backend.delivered),
        ("local_only", backend.local_only),
        ("undelivered", backend.undelivered),
    ];
    push(
        "herald_backend_requests_total",
        "Backend-initiated requests, by what became of them",
        MetricType::COUNTER,
        outcomes
            .iter()
            .map(|(outcome, n)| {
                let mut labels = node_only();
                labels.push(label("outcome", outcome));
                sample(labels, *n, true)
            })
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_into_cumulative_buckets_and_errors_by_kind() {
        let stats = ServiceStats::default();
        stats.finished(Ok(200), Duration::from_millis(3));
        stats.finished(Ok(404), Duration::from_millis(40));
        stats.finished(Err(&CallError::Timeout(100)), Duration::from_secs(60));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.latency_ms.buckets["5"], 1);
        assert_eq!(snapshot.latency_ms.buckets["50"], 2);
        assert_eq!(snapshot.latency_ms.buckets["30000"], 2);
        assert_eq!(snapshot.latency_ms.buckets["+Inf"], 3);
        assert_eq!(snapshot.errors["timeout"], 1);
        assert_eq!((snapshot.status["2xx"], snapshot.status["4xx"]), (1, 1));
    }
}
