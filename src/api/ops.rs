//! Operator endpoints: `/api/stats`, `/api/topics`, `/metrics`, `/healthz`,
//! `/readyz`. They read shared counters and never wait on an actor.

use actix_web::{web, HttpResponse};
use herald_actors::stats::CoreSnapshot;
use serde::Serialize;
use serde_json::json;

use super::access::AdminAccess;
use crate::metrics;
use crate::state::AppState;
use crate::upstream::stats::RequestsSnapshot;

/// The RabbitMQ bridge's share of the stats.
#[derive(Serialize, Default)]
pub struct AmqpSnapshot {
    pub state: &'static str,
    /// `host:port` of the broker the node queue is on; none while
    /// reconnecting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// RabbitMQ blocks publishing (a memory or disk alarm).
    pub blocked: bool,
    pub reconnects: u64,
    pub published: u64,
    pub confirmed: u64,
    pub consumed: u64,
    /// This node's own messages consumed back and dropped.
    pub own_dropped: u64,
    pub lifecycle_dropped: u64,
    /// Control messages from other nodes that were not believed.
    pub control_rejected: u64,
    /// The bridge's mailbox backlog, against the bound past which senders
    /// are refused.
    pub backlog: u64,
    pub bound: u64,
    /// Messages refused because the backlog was at the bound.
    pub refused: u64,
    /// Messages waiting to be handed to RabbitMQ, against their bound.
    pub publishing: PublishingSnapshot,
}

#[derive(Serialize, Default)]
pub struct PublishingSnapshot {
    pub backlog: u64,
    pub bound: u64,
}

#[derive(Serialize)]
pub struct Stats {
    pub node: String,
    pub uptime_s: u64,
    #[serde(flatten)]
    pub core: CoreSnapshot,
    pub amqp: AmqpSnapshot,
    /// The WebSocket-to-REST pipeline: per service, and backend-initiated.
    pub requests: RequestsSnapshot,
    /// The other nodes heard from over RabbitMQ.
    pub cluster: ClusterSnapshot,
}

#[derive(Serialize, Default)]
pub struct ClusterSnapshot {
    pub nodes: Vec<herald_amqp::stats::PeerView>,
}

pub fn snapshot(state: &AppState) -> Stats {
    Stats {
        node: state.node_id.to_string(),
        uptime_s: state.started.elapsed().as_secs(),
        core: state.counters.snapshot(),
        requests: state
            .services
            .as_ref()
            .map(|services| services.snapshot())
            .unwrap_or_default(),
        cluster: ClusterSnapshot {
            nodes: state
                .bridge
                .as_ref()
                .map(|bridge| bridge.peers.alive())
                .unwrap_or_default(),
        },
        amqp: match &state.bridge {
            None => AmqpSnapshot {
                state: "disabled",
                ..AmqpSnapshot::default()
            },
            Some(bridge) => AmqpSnapshot {
                state: bridge.state().as_str(),
                broker: bridge.broker(),
                blocked: bridge.is_blocked(),
                reconnects: bridge.reconnects.get(),
                published: bridge.published.get(),
                confirmed: bridge.confirmed.get(),
                consumed: bridge.consumed.get(),
                own_dropped: bridge.own_dropped.get(),
                lifecycle_dropped: bridge.lifecycle_dropped.get(),
                control_rejected: bridge.control_rejected.get(),
                backlog: bridge.mailbox.backlog(),
                bound: bridge.mailbox.bound(),
                refused: bridge.mailbox.refused.get() + bridge.publishing_queue.refused.get(),
                publishing: PublishingSnapshot {
                    backlog: bridge.publishing_queue.backlog(),
                    bound: bridge.publishing_queue.bound(),
                },
            },
        },
    }
}

pub async fn stats(_: AdminAccess, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(snapshot(&state))
}

pub async fn topics(_: AdminAccess, state: web::Data<AppState>) -> HttpResponse {
    let mut topics: Vec<(String, usize)> = state
        .directory
        .iter()
        .map(|entry| (entry.key().to_string(), *entry.value()))
        .collect();
    topics.sort();
    let topics: Vec<_> = topics
        .into_iter()
        .map(|(topic, subscribers)| json!({"topic": topic, "subscribers": subscribers}))
        .collect();
    HttpResponse::Ok().json(json!({"topics": topics}))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics::render(&snapshot(&state)))
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready unless the node is shutting down, has not yet fetched its
/// identity provider's keys, or a configured RabbitMQ is not connected or
/// blocks publishing; the body says why.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.broker.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"ready": false, "reason": "the node is shutting down"}));
    }
    if let Some(reason) = state.auth.not_ready_because() {
        return HttpResponse::ServiceUnavailable().json(json!({"ready": false, "reason": reason}));
    }
    let Some(bridge) = &state.bridge else {
        return HttpResponse::Ok().json(json!({"ready": true}));
    };
    match bridge.not_ready_because() {
        None => HttpResponse::Ok().json(json!({"ready": true, "amqp": "connected"})),
        Some(reason) => HttpResponse::ServiceUnavailable().json(json!({
            "ready": false,
            "amqp": bridge.state().as_str(),
            "reason": reason,
        })),
    }
}
