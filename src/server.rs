//! Builds a node: the Broker, the shared state, the HTTP server on the given
//! listener, and the shutdown sequence that ends it.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpServer};
use herald_actors::authorize::Authorizer;
use herald_actors::broker::{BrokerHandle, BrokerSettings};
use herald_actors::limits::{ConnectionLimits, LimitSettings};
use herald_actors::ports::Ports;
use herald_actors::revocation::{RevocationList, RevocationSettings};
use herald_actors::session::{OutboundLimits, SessionSettings, Tokens};
use herald_actors::stats::Counters;
use herald_amqp::{AmqpConfig, BridgeStarter};
use log::{info, warn};

use crate::api;
use crate::api::backend_requests;
use crate::auth::Authenticator;
use crate::authorize::HttpAuthorizer;
use crate::config::Config;
use crate::shutdown;
use crate::state::AppState;
use crate::tls::ReloadingCert;
use crate::upstream::HttpServices;
use herald_actors::request::{CallServices, Services};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("HERALD_JWT_PUBLIC_KEY: {0} (set it to readable PEM files with public keys)")]
    Key(#[from] crate::auth::KeyError),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("HERALD_TLS_CERT / HERALD_TLS_KEY: {0} (set them to a readable PEM certificate chain and its private key)")]
    Tls(#[from] crate::tls::TlsError),
    #[error("HERALD_AUTHORIZE_URL: {0}")]
    Authorize(String),
    #[error("HERALD_SERVICES: {0}")]
    Services(String),
}

impl ServeError {
    /// Whether the failure comes from a setting the operator gave, found
    /// only while starting; the binary ends with exit code 2 for these so a
    /// supervisor can tell a bad deployment from a node that failed later.
    pub fn is_setting(&self) -> bool {
        !matches!(self, Self::Io(_))
    }
}

/// Serves on `listener` until `stop` resolves, then shuts down in order.
/// Must run inside an actix `System`.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    stop: impl Future<Output = ()> + 'static,
) -> Result<(), ServeError> {
    // Everything that can fail on a setting is loaded before the first actor
    // starts: an actor spawned but never run would otherwise be dropped
    // with the runtime after an early return, and actix runs its `started`
    // then, outside any runtime, which panics instead of reporting.
    let authenticator = Authenticator::from_config(&config)?;
    let services = match config.requests.services.is_empty() {
        true => None,
        false => Some(Arc::new(
            HttpServices::new(&config.requests).map_err(ServeError::Services)?,
        )),
    };
    let authorizer = match &config.authorize {
        Some(settings) => {
            let asker =
                HttpAuthorizer::new(&settings.url, settings.key.as_deref(), settings.timeout)
                    .map_err(ServeError::Authorize)?;
            Authorizer(Some(Arc::new(asker)))
        }
        None => Authorizer::default(),
    };
    let addr = listener.local_addr()?;
    let certificate = config.tls.clone().map(ReloadingCert::load).transpose()?;
    let tls = certificate
        .map(|certificate| Ok::<_, ServeError>((certificate.server_config()?, certificate)))
        .transpose()?;
    let node_id: Arc<str> = config.node_id.as_str().into();
    let counters = Arc::new(Counters::new(config.broker_queue));
    let bridge = config
        .amqp
        .as_ref()
        .map(|_| BridgeStarter::new(config.bridge_queue));
    let mut ports = bridge
        .as_ref()
        .map_or_else(Ports::none, BridgeStarter::ports);
    if bridge.is_some() && config.cluster_secret.is_none() {
        // Other nodes believe only signed requests.
        ports.kick = None;
        ports.revoke = None;
        warn!("no cluster secret (HERALD_CLUSTER_SECRET): kicks close sessions and revocations void tokens on this node only, and control messages from other nodes are refused");
    }
    let bridge_stats = bridge.as_ref().map(BridgeStarter::stats);
    let revocations = RevocationList::new(
        RevocationSettings {
            retention: config.revocation_retention,
            max_entries: config.revocation_max_entries,
            grace: config.jwt.as_ref().map_or(Duration::ZERO, |jwt| jwt.leeway),
        },
        counters.clone(),
    );
    let (broker, directory) = BrokerHandle::start(
        BrokerSettings {
            node: node_id.clone(),
            max_subscriptions: config.max_subscriptions,
            ports,
            revocations: revocations.clone(),
        },
        counters.clone(),
    );
    let call_services = Services(
        services
            .clone()
            .map(|services| services as Arc<dyn CallServices>),
    );
    let bridge = bridge.zip(config.amqp.as_ref()).map(|(starter, amqp)| {
        let settings = AmqpConfig {
            brokers: Arc::new(herald_amqp::link::Brokers::parse(&amqp.url)),
            node_id: node_id.clone(),
            prefetch: amqp.prefetch,
            inbound: amqp.inbound.clone(),
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            queue_bound: config.bridge_queue,
            cluster_secret: config.cluster_secret.clone(),
        };
        let addr = starter.start(settings.clone(), broker.clone());
        if let Some(services) = &services {
            backend_requests::consume(settings, broker.clone(), services.clone());
        }
        addr
    });
    if config.allowed_origins.is_none() {
        warn!("no allowed origins configured: pages from any site may open WebSockets here");
    }
    let auth = Arc::new(authenticator.with_revocations(revocations));
    let dev_tokens = dev_tokens(&config);
    auth.spawn_key_refresh();
    let limits = ConnectionLimits::new(
        LimitSettings {
            max_connections: config.max_connections,
            max_per_user: config.max_connections_per_user,
            max_per_ip: config.max_connections_per_ip,
            handshakes_per_ip: config.handshake_rate_per_ip,
        },
        counters.clone(),
    );
    forget_quiet_addresses(limits.clone());
    let trigger = shutdown::DrainTrigger::new(config.drain_window);
    let state = web::Data::new(AppState {
        drain: trigger.clone(),
        node_id: node_id.clone(),
        started: Instant::now(),
        broker: broker.clone(),
        directory,
        counters,
        auth: auth.clone(),
        dev_tokens,
        api_key: config.api_key.clone(),
        admin_key: config.admin_key.clone(),
        allowed_origins: config.allowed_origins.clone(),
        session: Arc::new(SessionSettings {
            ping_interval: config.ping_interval,
            client_timeout: config.client_timeout,
            rate_limit: config.rate_limit,
            max_frame: config.max_frame,
            outbound: OutboundLimits {
                max_frames: config.outbound_queue_frames,
                max_bytes: config.outbound_queue_bytes,
            },
            max_subscriptions: config.max_subscriptions,
            stomp_heartbeat: config.stomp_heartbeat,
            tokens: Tokens(auth.clone()),
            limits: limits.clone(),
            authorizer,
            answer_cache: config
                .authorize
                .as_ref()
                .map_or(Duration::ZERO, |settings| settings.cache),
            services: call_services.clone(),
            permissions: config.permissions.clone(),
        }),
        services: services.clone(),
        limits,
        trusted_proxies: config.trusted_proxies.clone(),
        max_frame: config.max_frame,
        bridge: bridge_stats,
        dashboard: Default::default(),
    });

    let max_body = config.max_frame;
    let unacked_limit = config.client_timeout;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(|cfg| api::routes(cfg, max_body))
    })
    .on_connect(move |conn, _| tune_socket(conn, unacked_limit))
    .max_connections(config.max_connections.saturating_add(1024))
    .disable_signals()
    // Sessions are closed by the drain below; what is left when the server
    // stops are ordinary requests, which get one second to finish.
    .shutdown_timeout(1);
    // The soft limit was raised to the hard one when the config was read
    // (config::open_file_limit); an operator sizing a node needs the figure.
    if let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        info!(
            "open-file limit {soft} (hard {hard}): at most {} connections",
            config.max_connections
        );
    }
    let server = match tls {
        None => {
            let server = server.listen(listener)?.run();
            info!("node {node_id} listening on http://{addr}");
            server
        }
        Some((tls, certificate)) => {
            let server = server.listen_rustls_0_23(listener, tls)?.run();
            certificate.reload_on_sighup();
            info!("node {node_id} listening on https://{addr}");
            server
        }
    };

    let handle = server.handle();
    let grace = config.shutdown_grace;
    actix_web::rt::spawn(async move {
        tokio::select! {
            () = stop => {}
            () = trigger.started() => info!("POST /api/drain: draining"),
        }
        // A signal during the drain stops the node at once.
        let again = shutdown::signal();
        tokio::select! {
            () = shutdown::run(handle.clone(), &broker, bridge, &trigger, grace) => {}
            () = again => {
                warn!("a signal during the drain: stopping now");
                shutdown::now(handle, &broker).await;
            }
        }
    });
    server.await?;
    info!("stopped");
    Ok(())
}

/// The development token minter, when the settings ask for it, with the
/// warning an operator must not miss.
fn dev_tokens(config: &Config) -> Option<Arc<api::DevTokens>> {
    if !config.dev_tokens {
        return None;
    }
    let minter = config.jwt.as_ref().and_then(api::DevTokens::new)?;
    // The same rule as the rest of the backends' API (api::access).
    let who = match (&config.api_key, &config.admin_key) {
        (Some(_), _) => "anyone holding the API key",
        (None, Some(_)) => "anyone on this host or holding the admin key",
        (None, None) => "anyone on this host",
    };
    warn!("DEVELOPMENT TOKENS ARE ON (HERALD_DEV_TOKENS): {who} can mint a valid token for any user with POST /api/dev/token; never enable this in production");
    Some(Arc::new(minter))
}

/// How often the handshake rate forgets addresses that went quiet.
const FORGET_QUIET_EVERY: Duration = Duration::from_secs(10);

/// Keeps the per-address handshake state as small as the set of addresses
/// seen lately, so a scan from many addresses cannot grow it without end.
fn forget_quiet_addresses(limits: Arc<ConnectionLimits>) {
    actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(FORGET_QUIET_EVERY);
        loop {
            every.tick().await;
            limits.forget_quiet_addresses();
        }
    });
}

/// Per-connection socket options: no Nagle delay for small frames, and,
/// where the kernel has `TCP_USER_TIMEOUT` (Linux and its kin), a limit on
/// how long sent data may stay unacknowledged, so a peer that stops reading
/// (its window stuck at zero) is eventually dropped by the kernel. Other
/// systems (macOS) lack the option and leave such a peer to their own TCP
/// timeouts.
fn tune_socket(conn: &dyn std::any::Any, unacked_limit: Duration) {
    type TlsStream = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let tcp = conn
        .downcast_ref::<actix_web::rt::net::TcpStream>()
        .or_else(|| conn.downcast_ref::<TlsStream>().map(|tls| tls.get_ref().0));
    if let Some(tcp) = tcp {
        let _ = tcp.set_nodelay(true);
        // The same platforms socket2 offers the option on.
        #[cfg(any(
            target_os = "android",
            target_os = "fuchsia",
            target_os = "linux",
            target_os = "cygwin",
        ))]
        let _ = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(unacked_limit));
        #[cfg(not(any(
            target_os = "android",
            target_os = "fuchsia",
            target_os = "linux",
            target_os = "cygwin",
        )))]
        let _ = unacked_limit;
    }
}
