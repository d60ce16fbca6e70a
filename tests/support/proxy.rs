//! A TCP proxy between Herald and RabbitMQ that can make RabbitMQ "go away"
//! the way a network does: `cut` resets every client-side socket at once
//! while keeping the proxy's own sockets to RabbitMQ open, so RabbitMQ does
//! not learn that those connections are dead (and keeps what they own, such
//! as exclusive queues); `refuse` resets new connections as soon as they
//! arrive; `restore` lets them through again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

struct Shared {
    upstream: String,
    refusing: AtomicBool,
    /// Bumped by every `cut`; each relay watches it.
    cuts: watch::Sender<u64>,
    /// Upstream sockets of cut connections, open and unread.
    held: Mutex<Vec<TcpStream>>,
    /// Relays running now.
    live: AtomicUsize,
    relays: Mutex<Vec<AbortHandle>>,
}

pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: AbortHandle,
}

/// Closes `socket` with a reset rather than a FIN, as a dead peer or a
/// firewall would.
fn reset(socket: TcpStream) {
    let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
    drop(socket);
}

impl Proxy {
    /// A proxy on 127.0.0.1:0 in front of the RabbitMQ of [`super::amqp_url`].
    pub async fn to_rabbitmq() -> Proxy {
        Proxy::start(&rabbitmq_authority()).await
    }

    /// A proxy on 127.0.0.1:0 forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listens");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            refusing: AtomicBool::new(false),
            cuts: watch::channel(0).0,
            held: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            relays: Mutex::new(Vec::new()),
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // Out of descriptors, say: let some go before retrying.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if accepting.refusing.load(Ordering::SeqCst) {
                    reset(client);
                    continue;
                }
                // Subscribed before the relay starts, so a cut from now on
                // reaches it and none from before does.
                let cuts = accepting.cuts.subscribe();
                let relay = tokio::spawn(relay(client, accepting.clone(), cuts));
                let mut relays = accepting.relays.lock().expect("relays lock");
                relays.retain(|relay| !relay.is_finished());
                relays.push(relay.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The RabbitMQ URL of [`super::amqp_url`] with this proxy as its host.
    pub fn amqp_url(&self) -> String {
        super::amqp_url().replacen(&rabbitmq_host(), &self.addr.to_string(), 1)
    }

    /// Resets every client-side socket, keeping each one's upstream socket
    /// open; returns, once they are cut, how many connections were.
    pub async fn cut(&self) -> usize {
        let held_before = self.held();
        let live = self.shared.live.load(Ordering::SeqCst);
        self.shared.cuts.send_modify(|cuts| *cuts += 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.held() < held_before + live && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.held() - held_before
    }

    /// From now on, new connections are reset as soon as they arrive.
    pub fn refuse(&self) {
        self.shared.refusing.store(true, Ordering::SeqCst);
    }

    /// New connections are forwarded again.
    pub fn restore(&self) {
        self.shared.refusing.store(false, Ordering::SeqCst);
    }

    /// Upstream sockets kept open after a cut.
    pub fn held(&self) -> usize {
        self.shared.held.lock().expect("held lock").len()
    }

    /// Closes the upstream sockets kept open after cuts, so that RabbitMQ
    /// sees those connections end.
    pub fn release_held(&self) {
        self.shared.held.lock().expect("held lock").clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for relay in self.shared.relays.lock().expect("relays lock").drain(..) {
            relay.abort();
        }
        self.release_held();
    }
}

/// Counts a relay as live while it runs.
struct Live<'a>(&'a AtomicUsize);

impl<'a> Live<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Live(count)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn relay(mut client: TcpStream, shared: Arc<Shared>, mut cuts: watch::Receiver<u64>) {
    let _live = Live::new(&shared.live);
    let Ok(mut upstream) = TcpStream::connect(&shared.upstream).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let cut = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => false,
        changed = cuts.changed() => changed.is_ok(),
    };
    if cut {
        reset(client);
        shared.held.lock().expect("held lock").push(upstream);
    }
}

/// The host (and port, if given) of the RabbitMQ URL the tests use, as
/// written in it.
fn rabbitmq_host() -> String {
    let url = super::amqp_url();
    let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or(after_scheme);
    authority.rsplit('@').next().unwrap_or(authority).to_owned()
}

/// `host:port` of the RabbitMQ the tests use.
fn rabbitmq_authority() -> String {
    let host = rabbitmq_host();
    if host.contains(':') {
        host
    } else {
        format!("{host}:5672")
    }
}
