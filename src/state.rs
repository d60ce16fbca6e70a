//! What every HTTP and WebSocket handler of a node shares.

use std::sync::Arc;
use std::time::Instant;

use herald_actors::broker::{BrokerHandle, TopicDirectory};
use herald_actors::limits::ConnectionLimits;
use herald_actors::session::SessionSettings;
use herald_actors::stats::Counters;
use herald_amqp::BridgeStats;
use ipnet::IpNet;

use crate::api::DevTokens;
use crate::auth::Authenticator;

pub struct AppState {
    pub node_id: Arc<str>,
    pub started: Instant,
    pub broker: BrokerHandle,
    pub directory: Arc<TopicDirectory>,
    pub counters: Arc<Counters>,
    pub auth: Arc<Authenticator>,
    /// The development token minter; `None` unless `HERALD_DEV_TOKENS`.
    pub dev_tokens: Option<Arc<DevTokens>>,
    pub api_key: Option<String>,
    /// The key for operators' endpoints; `None`: the API key serves both.
    pub admin_key: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    pub session: Arc<SessionSettings>,
    /// Connections per node, user and client IP; handshakes per IP.
    pub limits: Arc<ConnectionLimits>,
    /// Peers whose forwarding headers name the client IP.
    pub trusted_proxies: Vec<IpNet>,
    pub max_frame: usize,
    /// The RabbitMQ bridge's numbers; `None` when AMQP is off.
    pub bridge: Option<Arc<BridgeStats>>,
    /// The services `request` may call; `None` when none is configured.
    pub services: Option<Arc<crate::upstream::HttpServices>>,
    /// Starts this node's drain from `POST /api/drain`.
    pub drain: Arc<crate::shutdown::DrainTrigger>,
    /// Operators logged in to `/dashboard`.
    pub dashboard: crate::dashboard::DashboardSessions,
}
