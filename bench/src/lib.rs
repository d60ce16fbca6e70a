//! herald-bench: a load generator for Herald and for RabbitMQ's Web-STOMP
//! plugin, so the two can be measured by the same client in one run.
//!
//! A run opens N subscriber connections (JSON or STOMP, from source
//! addresses spread over 127.0.0.2-127.0.0.254 so large runs do not run out
//! of ephemeral ports), subscribes each to one of K topics, publishes M
//! messages at a rate through RabbitMQ, the HTTP API or a WebSocket (each
//! payload carries a sequence number and its send time), and reports what
//! arrived (expected, received, lost, duplicated, out of order), how fast,
//! how late (an HDR histogram), how fast connections were made, and what
//! the server spent per delivery and per connection, read from `/proc`.
//!
//! `sink` is a trivial fan-out server ([`sink`]) to measure the bench itself
//! against. `main.rs` is the CLI over [`run`]; the test suite calls [`run`]
//! in-process.

#![forbid(unsafe_code)]

pub mod procfs;
pub mod sink;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Socket = WebSocketStream<TcpStream>;

/// What subscribers (and a WebSocket publisher) speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Herald's JSON protocol (also the sink's).
    Json,
    /// STOMP 1.2 over WebSocket (Herald's, or RabbitMQ Web-STOMP's).
    Stomp,
}

/// Where the published messages enter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Publish {
    /// One AMQP channel to `--exchange` (routing key = topic).
    Amqp,
    /// Sequential `POST /api/publish` requests to `--http-url`.
    Http,
    /// One WebSocket client speaking `--protocol`.
    Ws,
    /// Nothing: connect, hold, measure memory and connect cost.
    None,
}

/// One run's settings (the CLI's `run` subcommand).
#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// WebSocket URL(s) subscribers connect to, in turn (several = several nodes).
    #[arg(long = "url", required = true, num_args = 1..)]
    pub urls: Vec<String>,
    /// Subscriber protocol.
    #[arg(long, value_enum, default_value = "json")]
    pub protocol: Protocol,
    /// STOMP destination prefix before the topic: `/topic/` (Herald, Web-STOMP)
    /// or `/exchange/amq.topic/` (Web-STOMP).
    #[arg(long, default_value = "/topic/")]
    pub stomp_prefix: String,
    /// STOMP `login:passcode` (Web-STOMP needs `guest:guest`; Herald reads a passcode as a token).
    #[arg(long)]
    pub stomp_login: Option<String>,
    /// STOMP `host` header (Web-STOMP's virtual host).
    #[arg(long, default_value = "/")]
    pub stomp_host: String,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Topics; subscriber i takes topic i mod K (fan-out N/K).
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Topic name prefix (`PREFIX.tK`); unique per run by default.
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// Messages to publish.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Publish rate in messages/s; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Where messages enter.
    #[arg(long, value_enum, default_value = "ws")]
    pub publish: Publish,
    /// RabbitMQ URL for `--publish amqp`.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// Exchange for `--publish amqp`: `herald.topics` (Herald) or `amq.topic` (Web-STOMP).
    #[arg(long, default_value = "herald.topics")]
    pub exchange: String,
    /// Herald's HTTP base URL for `--publish http` (e.g. `http://127.0.0.1:8080`).
    #[arg(long)]
    pub http_url: Option<String>,
    /// WebSocket URL of the publisher for `--publish ws` (default: the first `--url`).
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Approximate payload size in bytes (sequence, send time, padding).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Server process(es) to charge CPU and memory to (one per node).
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// RabbitMQ's pid (its CPU reported apart); default: the one `beam.smp`, 0 = none.
    #[arg(long)]
    pub rabbit_pid: Option<u32>,
    /// Seconds to hold the subscribed connections before publishing (idle memory).
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Source address range for subscribers (`FIRST-LAST`, IPv4 loopback).
    #[arg(long, default_value = "127.0.0.2-127.0.0.254")]
    pub source_ips: String,
    /// Seconds between WebSocket pings from each subscriber (0 = none); Web-STOMP
    /// closes a silent connection after 60 s.
    #[arg(long, default_value_t = 20.0)]
    pub keepalive: f64,
    /// Seconds one connection may take from its turn to its subscription.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Seconds between the last subscription and the first publish (bindings settle).
    #[arg(long, default_value_t = 0.5)]
    pub settle: f64,
    /// Seconds to wait for stragglers once publishing has ended.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Seed for the topic each message goes to when there are several.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A name for the run, carried into the report.
    #[arg(long, default_value = "")]
    pub label: String,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl Options {
    /// Options from command-line words (without the program name), as the
    /// `run` subcommand takes them: how tests and scripts build a run.
    pub fn from_args(args: &[&str]) -> Result<Options, String> {
        #[derive(clap::Parser)]
        #[command(args_override_self = true)]
        struct Words {
            #[command(flatten)]
            options: Options,
        }
        use clap::Parser;
        Words::try_parse_from(std::iter::once("herald-bench").chain(args.iter().copied()))
            .map(|w| w.options)
            .map_err(|e| e.to_string())
    }
}

/// Delivery latency percentiles, in milliseconds.
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Everything a run measured; printed as a table and as one JSON line.
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    pub label: String,
    pub protocol: String,
    pub publish: String,
    pub subscribers: usize,
    pub connected: usize,
    pub connect_failures: usize,
    pub topics: usize,
    pub messages: usize,
    pub published: usize,
    pub publish_errors: u64,
    pub rate: f64,
    pub payload_bytes: usize,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// ERROR frames, `error` ops and connections closed by the server.
    pub errors: u64,
    pub deliveries_per_s: f64,
    pub publishes_per_s: f64,
    pub delivery_s: f64,
    pub latency_ms: Latency,
    pub connect_s: f64,
    pub connects_per_s: f64,
    pub server_cpu_us_per_delivery: Option<f64>,
    /// One figure per `--server-pid`, in order.
    pub server_cpu_us_per_delivery_by_node: Vec<f64>,
    pub server_cpu_us_per_connection: Option<f64>,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    pub server_kib_per_connection: Option<f64>,
    pub rabbit_cpu_us_per_delivery: Option<f64>,
    pub rabbit_cpu_us_per_connection: Option<f64>,
    pub bench_cpu_us_per_delivery: Option<f64>,
    /// No loss, no duplicates, in order, no errors, everyone connected.
    pub ok: bool,
    /// The first error seen, for the reader of a failed run.
    pub first_error: Option<String>,
}

/// Where the figures are kept while subscribers run.
struct Shared {
    received: AtomicU64,
    /// Latency in µs, sharded so subscribers on two threads rarely meet.
    histograms: Vec<Mutex<Histogram<u64>>>,
    first_error: Mutex<Option<String>>,
    errors: AtomicU64,
}

impl Shared {
    fn error(&self, text: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(text);
        }
    }
}

/// One subscriber's count of what it got.
#[derive(Default)]
struct Tally {
    unique: u64,
    duplicated: u64,
    out_of_order: u64,
    /// Highest sequence seen (+1), for order: one publisher per run.
    next: u64,
    seen: Vec<u64>,
    last_arrival: Option<Instant>,
}

impl Tally {
    fn new(messages: usize) -> Tally {
        Tally {
            seen: vec![0; messages.div_ceil(64)],
            ..Tally::default()
        }
    }
}

const SEQ_KEY: &[u8] = b"\"hb_s\":";
const TIME_KEY: &[u8] = b"\"hb_t\":";

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The number right after `key` in `text`, from `from` on; and where it ended.
fn number_after(text: &[u8], key: &memchr::memmem::Finder, from: usize) -> Option<(u64, usize)> {
    let at = from + key.find(&text[from..])? + key.needle().len();
    let mut value: u64 = 0;
    let mut end = at;
    while let Some(d) = text.get(end).filter(|b| b.is_ascii_digit()) {
        value = value.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        end += 1;
    }
    (end > at).then_some((value, end))
}

/// The payload of message `seq`: its sequence and send time first (found
/// fast by the subscribers' scan), then padding to about `size` bytes.
fn payload(seq: usize, size: usize) -> String {
    let head = format!("{{\"hb_s\":{seq},\"hb_t\":{}", now_micros());
    let pad = size.saturating_sub(head.len() + 10);
    format!("{head},\"pad\":\"{}\"}}", "x".repeat(pad))
}

/// A xorshift generator: the topic of each message, the same for a seed.
fn topic_plan(messages: usize, topics: usize, seed: u64) -> Vec<usize> {
    let mut x = seed.max(1);
    (0..messages)
        .map(|_| {
            if topics <= 1 {
                return 0;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % topics as u64) as usize
        })
        .collect()
}

/// `127.0.0.2-127.0.0.254` as the list of its addresses.
fn source_ips(range: &str) -> Result<Vec<Ipv4Addr>, String> {
    let (first, last) = range
        .split_once('-')
        .ok_or_else(|| format!("--source-ips {range:?}: want FIRST-LAST"))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<Ipv4Addr>()
            .map(u32::from)
            .map_err(|e| format!("--source-ips {s:?}: {e}"))
    };
    let (first, last) = (parse(first)?, parse(last)?);
    if first > last || last - first > 1 << 20 {
        return Err(format!("--source-ips {range:?}: empty or too wide"));
    }
    Ok((first..=last).map(Ipv4Addr::from).collect())
}

/// The socket address of a `ws://HOST:PORT/...` URL.
async fn ws_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    tokio::net::lookup_host(authority)
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("{url}: no IPv4 address"))
}

/// Small buffers: the bench holds up to ~20,000 connections, and
/// tungstenite's default 128 KiB read buffer each would be 2.5 GiB.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8192)
        .write_buffer_size(0)
}

/// Opens a WebSocket from `source` (any port), offering `v12.stomp` for STOMP.
async fn open(
    url: &str,
    addr: SocketAddr,
    source: IpAddr,
    protocol: Protocol,
) -> Result<Socket, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr} from {source}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if protocol == Protocol::Stomp {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "v12.stomp".parse().map_err(|_| "header")?,
        );
    }
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
        .await
        .map_err(|e| format!("handshake {url}: {e}"))?;
    Ok(ws)
}

/// The next text (or binary) message's bytes, skipping control frames.
async fn next_text(ws: &mut Socket) -> Result<Vec<u8>, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_bytes().to_vec()),
            Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
            Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        }
    }
}

/// Waits for a frame starting with `want` (a STOMP command, or a JSON op's
/// text), failing on ERROR frames and error ops.
async fn expect(ws: &mut Socket, want: &str) -> Result<(), String> {
    loop {
        let text = next_text(ws).await?;
        let s = String::from_utf8_lossy(&text);
        let s = s.trim_start_matches(['\n', '\r']);
        if s.starts_with(want) || (want.starts_with('"') && s.contains(want)) {
            return Ok(());
        }
        if s.starts_with("ERROR") || s.contains("\"op\":\"error\"") {
            return Err(format!("refused: {}", s.replace(['\n', '\0'], " ")));
        }
        // Heart-beat EOLs, user messages, anything else: not what we wait for.
    }
}

/// What a connection needs to say to be a subscriber or a publisher.
#[derive(Clone)]
struct Speak {
    protocol: Protocol,
    stomp_prefix: String,
    stomp_login: Option<String>,
    stomp_host: String,
}

impl Speak {
    /// Handshake in the protocol: JSON welcome; STOMP CONNECT → CONNECTED.
    async fn hello(&self, ws: &mut Socket) -> Result<(), String> {
        match self.protocol {
            Protocol::Json => expect(ws, "\"op\":\"welcome\"").await,
            Protocol::Stomp => {
                let login = match &self.stomp_login {
                    Some(pair) => {
                        let (user, pass) = pair.split_once(':').unwrap_or((pair, ""));
                        format!("login:{user}\npasscode:{pass}\n")
                    }
                    None => String::new(),
                };
                // No STOMP heart-beats: WebSocket pings keep idle sessions open.
                let connect = format!(
                    "CONNECT\naccept-version:1.2\nhost:{}\nheart-beat:0,0\n{login}\n\0",
                    self.stomp_host
                );
                ws.send(Message::text(connect))
                    .await
                    .map_err(|e| e.to_string())?;
                expect(ws, "CONNECTED").await
            }
        }
    }

    async fn subscribe(&self, ws: &mut Socket, topic: &str) -> Result<(), String> {
        let frame = match self.protocol {
            Protocol::Json => format!(r#"{{"op":"subscribe","topic":"{topic}","id":"s"}}"#),
            Protocol::Stomp => format!(
                "SUBSCRIBE\nid:0\ndestination:{}{topic}\nack:auto\nreceipt:r\n\n\0",
                self.stomp_prefix
            ),
        };
        ws.send(Message::text(frame))
            .await
            .map_err(|e| e.to_string())?;
        match self.protocol {
            Protocol::Json => expect(ws, "\"op\":\"ack\"").await,
            Protocol::Stomp => expect(ws, "RECEIPT").await,
        }
    }

    fn publish_frame(&self, topic: &str, body: &str) -> String {
        match self.protocol {
            Protocol::Json => format!(r#"{{"op":"publish","topic":"{topic}","data":{body}}}"#),
            Protocol::Stomp => format!(
                "SEND\ndestination:{}{topic}\ncontent-type:application/json\n\n{body}\0",
                self.stomp_prefix
            ),
        }
    }
}

/// Counts one WebSocket message's deliveries (a STOMP peer may put several
/// frames in one message; a frame is never split across messages here).
fn tally_message(text: &[u8], tally: &mut Tally, shared: &Shared, shard: usize) {
    thread_local! {
        static KEYS: (memchr::memmem::Finder<'static>, memchr::memmem::Finder<'static>) =
            (memchr::memmem::Finder::new(SEQ_KEY), memchr::memmem::Finder::new(TIME_KEY));
    }
    let now = now_micros();
    let mut latencies = [0u64; 16];
    let mut count = 0;
    KEYS.with(|(seq_key, time_key)| {
        let mut from = 0;
        while let Some((seq, end)) = number_after(text, seq_key, from) {
            let sent = number_after(text, time_key, end).map_or(0, |(t, _)| t);
            from = end;
            let (word, bit) = ((seq / 64) as usize, seq % 64);
            let Some(slot) = tally.seen.get_mut(word) else {
                shared.error(format!("sequence {seq} out of range"));
                continue;
            };
            if *slot & (1 << bit) != 0 {
                tally.duplicated += 1;
                continue;
            }
            *slot |= 1 << bit;
            tally.unique += 1;
            if seq + 1 < tally.next {
                tally.out_of_order += 1;
            }
            tally.next = tally.next.max(seq + 1);
            if count < latencies.len() {
                latencies[count] = now.saturating_sub(sent).max(1);
                count += 1;
            }
        }
    });
    if count == 0 {
        let s = String::from_utf8_lossy(text);
        if s.trim_start().starts_with("ERROR") || s.contains("\"op\":\"error\"") {
            shared.error(s.replace(['\n', '\0'], " "));
        }
        return;
    }
    tally.last_arrival = Some(Instant::now());
    shared.received.fetch_add(count as u64, Ordering::Relaxed);
    if let Ok(mut h) = shared.histograms[shard % shared.histograms.len()].lock() {
        for &l in &latencies[..count] {
            let _ = h.record(l);
        }
    }
}

/// One subscriber: connect, subscribe, report ready, count until stopped.
#[allow(clippy::too_many_arguments)]
async fn subscriber(
    index: usize,
    url: String,
    addr: SocketAddr,
    source: IpAddr,
    topic: String,
    speak: Speak,
    messages: usize,
    keepalive: f64,
    connect_timeout: f64,
    gate: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
) -> Tally {
    let mut tally = Tally::new(messages);
    let setup = async {
        let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
        let mut ws = open(&url, addr, source, speak.protocol).await?;
        speak.hello(&mut ws).await?;
        speak.subscribe(&mut ws, &topic).await?;
        Ok::<_, String>(ws)
    };
    let setup = async {
        tokio::time::timeout(Duration::from_secs_f64(connect_timeout), setup)
            .await
            .map_err(|_| format!("no subscription within {connect_timeout} s"))?
    };
    let mut ws = match setup.await {
        Ok(ws) => {
            let _ = ready.send(Ok(()));
            ws
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return tally;
        }
    };
    drop(ready);
    let period = Duration::from_secs_f64(if keepalive > 0.0 { keepalive } else { 1e6 });
    let ping = tokio::time::sleep(period);
    tokio::pin!(ping);
    // The flag only ever goes from false to true: any change is the stop.
    let stopped = async move {
        let _ = stop.changed().await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(t))) => tally_message(t.as_bytes(), &mut tally, &shared, index),
                Some(Ok(Message::Binary(b))) => tally_message(&b, &mut tally, &shared, index),
                Some(Ok(Message::Close(frame))) => {
                    shared.error(format!("subscriber {index} closed by the server: {frame:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    shared.error(format!("subscriber {index}: {e}"));
                    break;
                }
                None => {
                    shared.error(format!("subscriber {index}: connection ended"));
                    break;
                }
            },
            _ = &mut ping => {
                if keepalive > 0.0 {
                    let _ = ws.send(Message::Ping(bytes::Bytes::new())).await;
                }
                ping.as_mut().reset(tokio::time::Instant::now() + period);
            }
            _ = &mut stopped => break,
        }
    }
    tally
}

/// CPU seconds of each pid, or None when one is unreadable.
fn cpu_of(pids: &[u32]) -> Vec<Option<f64>> {
    pids.iter().map(|&p| procfs::cpu_seconds(p)).collect()
}

fn delta_us(before: &[Option<f64>], after: &[Option<f64>], per: f64) -> Vec<Option<f64>> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| Some((a.as_ref()? - b.as_ref()?) * 1e6 / per.max(1.0)))
        .collect()
}

fn total(values: &[Option<f64>]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.iter().copied().sum()
}

/// The publisher: sends `plan.len()` messages at `rate`, returns how many
/// went out and how many failed.
async fn publish(
    options: &Options,
    speak: &Speak,
    topics: &[String],
    plan: &[usize],
    shared: &Arc<Shared>,
    published: &AtomicU64,
) -> Result<u64, String> {
    let start = tokio::time::Instant::now();
    let pace = |n: usize| {
        let rate = options.rate;
        async move {
            if rate > 0.0 {
                tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate)).await;
            }
        }
    };
    let mut failures = 0u64;
    match options.publish {
        Publish::None => {}
        Publish::Amqp => {
            let connection = lapin::Connection::connect(
                &options.amqp_url,
                lapin::ConnectionProperties::default(),
            )
            .await
            .map_err(|e| format!("RabbitMQ at {}: {e}", options.amqp_url))?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| format!("RabbitMQ channel: {e}"))?;
            for (n, &t) in plan.iter().enumerate() {
                pace(n).await;
                let body = payload(n, options.payload_bytes);
                let sent = channel
                    .basic_publish(
                        options.exchange.as_str().into(),
                        topics[t].as_str().into(),
                        Default::default(),
                        body.as_bytes(),
                        lapin::BasicProperties::default()
                            .with_content_type("application/json".into()),
                    )
                    .await;
                match sent {
                    Ok(_) => published.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures += 1;
                        shared.error(format!("AMQP publish: {e}"));
                        0
                    }
                };
            }
            // Closing flushes what lapin still holds.
            let _ = channel.close(200, "done".into()).await;
            let _ = connection.close(200, "done".into()).await;
        }
        Publish::Http => {
            let base = options
                .http_url
                .as_deref()
                .ok_or("--publish http needs --http-url")?;
            let url = format!("{}/api/publish", base.trim_end_matches('/'));
            let client = reqwest::Client::new();
            for (n, &t) in plan.iter().enumerate() {
                pace(n).await;
                let body = format!(
                    r#"{{"topic":"{}","data":{}}}"#,
                    topics[t],
                    payload(n, options.payload_bytes)
                );
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => {
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        failures += 1;
                        shared.error(format!("POST {url}: {}", r.status()));
                    }
                    Err(e) => {
                        failures += 1;
                        shared.error(format!("POST {url}: {e}"));
                    }
                }
            }
        }
        Publish::Ws => {
            let url = options.publish_url.as_ref().unwrap_or(&options.urls[0]);
            let addr = ws_addr(url).await?;
            let mut ws = open(url, addr, IpAddr::V4(Ipv4Addr::LOCALHOST), speak.protocol).await?;
            speak.hello(&mut ws).await?;
            let (mut sink, mut stream) = ws.split();
            // Refusals (rate limits, permissions) come back on the socket.
            let watcher = {
                let shared = shared.clone();
                tokio::spawn(async move {
                    while let Some(Ok(m)) = stream.next().await {
                        if let Message::Text(t) = m {
                            let s = t.as_str();
                            if s.starts_with("ERROR") || s.contains("\"op\":\"error\"") {
                                shared.error(format!(
                                    "publisher refused: {}",
                                    s.replace(['\n', '\0'], " ")
                                ));
                            }
                        }
                    }
                })
            };
            for (n, &t) in plan.iter().enumerate() {
                pace(n).await;
                let frame = speak.publish_frame(&topics[t], &payload(n, options.payload_bytes));
                let sent = if options.rate > 0.0 {
                    sink.send(Message::text(frame)).await
                } else {
                    sink.feed(Message::text(frame)).await
                };
                match sent {
                    Ok(()) => published.fetch_add(1, Ordering::Relaxed),
                    Err(e) => return Err(format!("WebSocket publish: {e}")),
                };
            }
            sink.flush()
                .await
                .map_err(|e| format!("WebSocket publish: {e}"))?;
            // Held open until the run ends: closing could drop what is in flight.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(sink);
                watcher.abort();
            });
        }
    }
    Ok(failures)
}

/// Prints a progress line every 2 s on stderr until `done`.
fn progress(
    quiet: bool,
    what: impl Fn() -> String + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    (!quiet).then(|| {
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                eprintln!(
                    "[herald-bench {:>5.1}s] {}",
                    started.elapsed().as_secs_f64(),
                    what()
                );
            }
        })
    })
}

/// Runs one benchmark and returns its report.
pub async fn run(options: &Options) -> Result<Report, String> {
    // Up to the hard limit: a full node's worth of connections needs it.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    if options.subscribers == 0 || options.topics == 0 {
        return Err("--subscribers and --topics must be at least 1".into());
    }
    let ips = source_ips(&options.source_ips)?;
    let mut addrs = Vec::new();
    for url in &options.urls {
        addrs.push(ws_addr(url).await?);
    }
    let prefix = options
        .topic_prefix
        .clone()
        .unwrap_or_else(|| format!("hb{:x}", now_micros() & 0xff_ffff));
    let topics: Vec<String> = (0..options.topics)
        .map(|k| format!("{prefix}.t{k}"))
        .collect();
    let speak = Speak {
        protocol: options.protocol,
        stomp_prefix: options.stomp_prefix.clone(),
        stomp_login: options.stomp_login.clone(),
        stomp_host: options.stomp_host.clone(),
    };
    let rabbit = match options.rabbit_pid {
        Some(0) => None,
        Some(pid) => Some(pid),
        None => procfs::find_beam(),
    }
    .filter(|pid| !options.server_pids.contains(pid));
    let rabbit_pids: Vec<u32> = rabbit.into_iter().collect();
    let me = [std::process::id()];

    let shared = Arc::new(Shared {
        received: AtomicU64::new(0),
        histograms: (0..16)
            .map(|_| {
                Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .map(Mutex::new)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, String>>()?,
        first_error: Mutex::new(None),
        errors: AtomicU64::new(0),
    });

    // Connect and subscribe.
    let rss_before = procfs::sum(&options.server_pids, |p| {
        procfs::rss_kib(p).map(|k| k as f64)
    });
    let cpu_before_connect = cpu_of(&options.server_pids);
    let rabbit_before_connect = cpu_of(&rabbit_pids);
    let gate = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let connect_started = Instant::now();
    let mut tasks = Vec::with_capacity(options.subscribers);
    for i in 0..options.subscribers {
        tasks.push(tokio::spawn(subscriber(
            i,
            options.urls[i % options.urls.len()].clone(),
            addrs[i % addrs.len()],
            IpAddr::V4(ips[i % ips.len()]),
            topics[i % topics.len()].clone(),
            speak.clone(),
            options.messages,
            options.keepalive,
            options.connect_timeout,
            gate.clone(),
            ready_tx.clone(),
            stop_rx.clone(),
            shared.clone(),
        )));
    }
    drop(ready_tx);
    let connected_count = Arc::new(AtomicU64::new(0));
    let ticker = {
        let c = connected_count.clone();
        let n = options.subscribers;
        progress(options.quiet, move || {
            format!("connected {}/{n}", c.load(Ordering::Relaxed))
        })
    };
    let (mut connected, mut failures) = (0usize, 0usize);
    while let Some(result) = ready_rx.recv().await {
        match result {
            Ok(()) => connected += 1,
            Err(e) => {
                failures += 1;
                shared.error(format!("subscriber setup: {e}"));
            }
        }
        connected_count.store(connected as u64, Ordering::Relaxed);
    }
    let connect_s = connect_started.elapsed().as_secs_f64();
    let server_connect_us = delta_us(
        &cpu_before_connect,
        &cpu_of(&options.server_pids),
        connected as f64,
    );
    let rabbit_connect_us = delta_us(
        &rabbit_before_connect,
        &cpu_of(&rabbit_pids),
        connected as f64,
    );
    if let Some(t) = ticker {
        t.abort();
    }

    tokio::time::sleep(Duration::from_secs_f64(options.settle + options.hold)).await;
    let rss_after = procfs::sum(&options.server_pids, |p| {
        procfs::rss_kib(p).map(|k| k as f64)
    });

    // Publish, then wait for every delivery (or the drain timeout).
    let plan = topic_plan(options.messages, topics.len(), options.seed);
    let mut per_topic = vec![0u64; topics.len()];
    for i in 0..options.subscribers {
        per_topic[i % topics.len()] += 1;
    }
    let expected: u64 = if options.publish == Publish::None {
        0
    } else {
        plan.iter().map(|&t| per_topic[t]).sum()
    };
    let published = Arc::new(AtomicU64::new(0));
    let ticker = {
        let (p, s) = (published.clone(), shared.clone());
        let m = options.messages;
        progress(options.quiet, move || {
            format!(
                "published {}/{m}, received {}/{expected}",
                p.load(Ordering::Relaxed),
                s.received.load(Ordering::Relaxed)
            )
        })
    };
    let cpu_before = cpu_of(&options.server_pids);
    let rabbit_before = cpu_of(&rabbit_pids);
    let me_before = cpu_of(&me);
    let publish_started = Instant::now();
    let publish_errors = publish(options, &speak, &topics, &plan, &shared, &published).await?;
    let publish_s = publish_started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs_f64(options.drain_timeout);
    while shared.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if expected > 0 {
        // Room for duplicates to show up.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu_after = cpu_of(&options.server_pids);
    let rabbit_after = cpu_of(&rabbit_pids);
    let me_after = cpu_of(&me);
    if let Some(t) = ticker {
        t.abort();
    }
    let _ = stop_tx.send(true);

    let mut unique = 0;
    let mut duplicated = 0;
    let mut out_of_order = 0;
    let mut last = None::<Instant>;
    for task in tasks {
        let tally = task.await.map_err(|e| format!("subscriber task: {e}"))?;
        unique += tally.unique;
        duplicated += tally.duplicated;
        out_of_order += tally.out_of_order;
        last = last.max(tally.last_arrival);
    }
    let delivery_s = last.map_or(0.0, |l| l.duration_since(publish_started).as_secs_f64());
    let mut merged =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?;
    for h in &shared.histograms {
        if let Ok(h) = h.lock() {
            let _ = merged.add(&*h);
        }
    }
    let ms = |q: f64| merged.value_at_quantile(q) as f64 / 1000.0;
    let deliveries = unique as f64;
    let by_node = delta_us(&cpu_before, &cpu_after, deliveries);
    let lost = expected.saturating_sub(unique);
    let errors = shared.errors.load(Ordering::Relaxed);
    let first_error = shared.first_error.lock().ok().and_then(|e| e.clone());
    let report = Report {
        label: options.label.clone(),
        protocol: format!("{:?}", options.protocol).to_lowercase(),
        publish: format!("{:?}", options.publish).to_lowercase(),
        subscribers: options.subscribers,
        connected,
        connect_failures: failures,
        topics: topics.len(),
        messages: options.messages,
        published: published.load(Ordering::Relaxed) as usize,
        publish_errors,
        rate: options.rate,
        payload_bytes: options.payload_bytes,
        expected,
        received: unique,
        lost,
        duplicated,
        out_of_order,
        errors,
        deliveries_per_s: if delivery_s > 0.0 {
            deliveries / delivery_s
        } else {
            0.0
        },
        publishes_per_s: if publish_s > 0.0 {
            options.messages as f64 / publish_s
        } else {
            0.0
        },
        delivery_s,
        latency_ms: Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: merged.max() as f64 / 1000.0,
        },
        connect_s,
        connects_per_s: connected as f64 / connect_s.max(1e-9),
        server_cpu_us_per_delivery: (expected > 0).then(|| total(&by_node)).flatten(),
        server_cpu_us_per_delivery_by_node: if expected > 0 {
            by_node.iter().flatten().copied().collect()
        } else {
            Vec::new()
        },
        server_cpu_us_per_connection: total(&server_connect_us),
        server_rss_kib_before: rss_before.map(|k| k as u64),
        server_rss_kib_after: rss_after.map(|k| k as u64),
        server_kib_per_connection: match (rss_before, rss_after) {
            (Some(b), Some(a)) if connected > 0 => Some((a - b) / connected as f64),
            _ => None,
        },
        rabbit_cpu_us_per_delivery: (expected > 0)
            .then(|| total(&delta_us(&rabbit_before, &rabbit_after, deliveries)))
            .flatten(),
        rabbit_cpu_us_per_connection: total(&rabbit_connect_us),
        bench_cpu_us_per_delivery: (expected > 0)
            .then(|| total(&delta_us(&me_before, &me_after, deliveries)))
            .flatten(),
        ok: lost == 0
            && duplicated == 0
            && out_of_order == 0
            && errors == 0
            && failures == 0
            && publish_errors == 0,
        first_error,
    };
    Ok(report)
}

/// The report as a table for people.
pub fn table(r: &Report) -> String {
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<34} {v}\n"));
    row(
        "run",
        format!(
            "{} ({} subscribers, {} publisher)",
            r.label, r.protocol, r.publish
        ),
    );
    row(
        "subscribers connected",
        format!(
            "{}/{} ({} failed)",
            r.connected, r.subscribers, r.connect_failures
        ),
    );
    row(
        "topics / messages / rate",
        format!(
            "{} / {} / {}",
            r.topics,
            r.messages,
            if r.rate > 0.0 {
                format!("{}/s", r.rate)
            } else {
                "max".into()
            }
        ),
    );
    row(
        "deliveries expected / received",
        format!("{} / {}", r.expected, r.received),
    );
    row(
        "lost / duplicated / out of order",
        format!("{} / {} / {}", r.lost, r.duplicated, r.out_of_order),
    );
    row(
        "errors",
        format!(
            "{}{}",
            r.errors,
            r.first_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        ),
    );
    row(
        "deliveries/s",
        format!(
            "{:.0} (in {:.3} s; {:.0} publishes/s)",
            r.deliveries_per_s, r.delivery_s, r.publishes_per_s
        ),
    );
    let l = &r.latency_ms;
    row(
        "latency ms p50/p90/p99/p99.9/max",
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2} / {:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max
        ),
    );
    row(
        "connect + subscribe",
        format!("{:.0}/s ({:.3} s)", r.connects_per_s, r.connect_s),
    );
    row(
        "server CPU µs per delivery",
        format!(
            "{} (by node: {:?})",
            opt(r.server_cpu_us_per_delivery, 3),
            r.server_cpu_us_per_delivery_by_node
                .iter()
                .map(|v| format!("{v:.3}"))
                .collect::<Vec<_>>()
        ),
    );
    row(
        "server CPU µs per connection",
        opt(r.server_cpu_us_per_connection, 1),
    );
    row(
        "server KiB per connection",
        format!(
            "{} (RSS {} -> {} KiB)",
            opt(r.server_kib_per_connection, 2),
            r.server_rss_kib_before
                .map_or("-".into(), |v| v.to_string()),
            r.server_rss_kib_after.map_or("-".into(), |v| v.to_string())
        ),
    );
    row(
        "RabbitMQ CPU µs per delivery / conn",
        format!(
            "{} / {}",
            opt(r.rabbit_cpu_us_per_delivery, 3),
            opt(r.rabbit_cpu_us_per_connection, 1)
        ),
    );
    row(
        "bench CPU µs per delivery",
        opt(r.bench_cpu_us_per_delivery, 3),
    );
    row(
        "verdict",
        if r.ok {
            "ok: no loss, no duplicates, in order".into()
        } else {
            "FAILED".into()
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_delivery_in_a_message() {
        let a = payload(3, 100);
        let b = payload(4, 100);
        let text = format!("MESSAGE\n\n{a}\0MESSAGE\n\n{b}\0");
        let shared = Shared {
            received: AtomicU64::new(0),
            histograms: vec![Mutex::new(Histogram::new(2).unwrap())],
            first_error: Mutex::new(None),
            errors: AtomicU64::new(0),
        };
        let mut tally = Tally::new(10);
        tally_message(text.as_bytes(), &mut tally, &shared, 0);
        tally_message(a.as_bytes(), &mut tally, &shared, 0);
        tally_message(payload(1, 50).as_bytes(), &mut tally, &shared, 0);
        assert_eq!(
            (tally.unique, tally.duplicated, tally.out_of_order),
            (3, 1, 1)
        );
        assert!(a.len() >= 95 && a.len() <= 105, "{}", a.len());
    }

    #[test]
    fn spreads_sources_and_topics() {
        assert_eq!(source_ips("127.0.0.2-127.0.0.254").unwrap().len(), 253);
        assert!(source_ips("127.0.0.9-127.0.0.2").is_err());
        let plan = topic_plan(1000, 10, 7);
        assert!(plan.iter().all(|&t| t < 10));
        assert_eq!(plan, topic_plan(1000, 10, 7));
        assert!(topic_plan(5, 1, 7).iter().all(|&t| t == 0));
    }
}
