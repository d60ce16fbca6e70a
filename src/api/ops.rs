//! Operator endpoints: `/api/stats`, `/api/topics`, `/metrics`, `/healthz`,
//! `/readyz`. They read shared counters and never wait on an actor.

use actix_web::{web, HttpResponse};
use herald_actors::stats::CoreSnapshot;
use herald_amqp::LinkState;
use serde::Serialize;
use serde_json::json;

use crate::auth::ApiAccess;
use crate::metrics;
use crate::state::AppState;

/// The RabbitMQ bridge's share of the stats.
#[derive(Serialize, Default)]
pub struct AmqpSnapshot {
    pub state: &'static str,
    pub reconnects: u64,
    pub published: u64,
    pub confirmed: u64,
    pub consumed: u64,
    pub backlog: u64,
}

#[derive(Serialize)]
pub struct Stats {
    pub node: String,
    pub uptime_s: u64,
    #[serde(flatten)]
    pub core: CoreSnapshot,
    pub amqp: AmqpSnapshot,
}

pub fn snapshot(state: &AppState) -> Stats {
    Stats {
        node: state.node_id.to_string(),
        uptime_s: state.started.elapsed().as_secs(),
        core: state.counters.snapshot(),
        amqp: match &state.bridge {
            None => AmqpSnapshot {
                state: "disabled",
                ..AmqpSnapshot::default()
            },
            Some(bridge) => AmqpSnapshot {
                state: bridge.state().as_str(),
                reconnects: bridge.reconnects.get(),
                published: bridge.published.get(),
                confirmed: bridge.confirmed.get(),
                consumed: bridge.consumed.get(),
                backlog: bridge.mailbox.snapshot().backlog,
            },
        },
    }
}

pub async fn stats(_: ApiAccess, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(snapshot(&state))
}

pub async fn topics(_: ApiAccess, state: web::Data<AppState>) -> HttpResponse {
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

/// Ready unless a configured RabbitMQ is not connected.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match &state.bridge {
        Some(bridge) if bridge.state() != LinkState::Connected => {
            HttpResponse::ServiceUnavailable()
                .json(json!({"ready": false, "amqp": bridge.state().as_str()}))
        }
        _ => HttpResponse::Ok().json(json!({"ready": true})),
    }
}
