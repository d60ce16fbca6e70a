//! Herald's benchmark: runs the real (release) binary on loopback and prints
//! fan-out throughput, delivery latency percentiles, and memory per idle
//! connection, with subscribers speaking the JSON protocol and then STOMP
//! (publishers are the same in both: a JSON WebSocket client, RabbitMQ), and
//! the two side by side at the end.
//!
//! `cargo bench --bench fanout`; sizes can be changed with
//! `BENCH_SUBSCRIBERS`, `BENCH_MESSAGES`, `BENCH_IDLE`, `BENCH_ROUND_TRIPS`;
//! `BENCH_PROTOCOL=json` or `stomp` runs one kind of subscriber only, and
//! `BENCH_HERALD_BIN` runs another build of herald (to compare two builds
//! on one machine). Client and server share the machine's cores, so compare
//! figures from one run as ratios.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

mod support;

use support::{setting, Server};

/// Outbound queues deep enough that a benchmark measures fan-out, not the
/// slow-consumer bound.
const DEEP_QUEUES: [&str; 4] = [
    "--outbound-queue-frames",
    "100000",
    "--outbound-queue-bytes",
    "67108864",
];

fn start_server(extra: &[&str]) -> Server {
    Server::start(&[&DEEP_QUEUES[..], extra].concat())
}

/// The protocol subscribers speak; publishers always speak JSON (or AMQP).
#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Json,
    Stomp,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Json => "JSON",
            Protocol::Stomp => "STOMP",
        }
    }

    /// What a section title adds for this protocol: nothing for JSON, so its
    /// lines read as they always have.
    fn to_subscribers(self) -> &'static str {
        match self {
            Protocol::Json => "",
            Protocol::Stomp => " to STOMP subscribers",
        }
    }
}

/// A subscribed session of either protocol, reading the `data` of each
/// message it gets.
struct Subscriber {
    socket: Socket,
    protocol: Protocol,
    /// STOMP bytes received and not yet cut into frames.
    pending: Vec<u8>,
}

impl Subscriber {
    async fn connect(addr: &str, protocol: Protocol, topic: &str) -> Subscriber {
        let socket = match protocol {
            Protocol::Json => {
                let mut socket = connect(addr).await;
                subscribe(&mut socket, topic).await;
                socket
            }
            Protocol::Stomp => stomp_subscribe(addr, topic).await,
        };
        Subscriber {
            socket,
            protocol,
            pending: Vec::new(),
        }
    }

    /// The next message's data: the JSON `data`, or a STOMP MESSAGE's body
    /// (the same JSON text).
    async fn next_data(&mut self) -> Value {
        match self.protocol {
            Protocol::Json => next_json(&mut self.socket).await["data"].take(),
            Protocol::Stomp => loop {
                let (command, body) = next_stomp_frame(&mut self.socket, &mut self.pending).await;
                if command == "MESSAGE" {
                    break serde_json::from_slice(&body).expect("a JSON body");
                }
            },
        }
    }
}

/// A STOMP session on `/stomp`, CONNECTED without heart-beats (idle
/// sessions stay open) and subscribed to `topic` once its RECEIPT came.
async fn stomp_subscribe(addr: &str, topic: &str) -> Socket {
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/stomp"), None, true)
            .await
            .expect("connect");
    let mut pending = Vec::new();
    socket
        .send(Message::text(
            "CONNECT\naccept-version:1.2\nhost:herald\nheart-beat:0,0\n\n\0",
        ))
        .await
        .expect("send");
    let (command, _) = next_stomp_frame(&mut socket, &mut pending).await;
    assert_eq!(command, "CONNECTED");
    socket
        .send(Message::text(format!(
            "SUBSCRIBE\nid:0\ndestination:/topic/{topic}\nreceipt:s\n\n\0"
        )))
        .await
        .expect("send");
    let (command, _) = next_stomp_frame(&mut socket, &mut pending).await;
    assert_eq!(command, "RECEIPT");
    socket
}

/// The next STOMP frame's command and body. Enough for what Herald sends
/// here: JSON bodies (never a NUL inside), heart-beat EOLs skipped.
async fn next_stomp_frame(socket: &mut Socket, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    loop {
        let start = pending
            .iter()
            .position(|&b| b != b'\n' && b != b'\r')
            .unwrap_or(pending.len());
        pending.drain(..start);
        if let Some(end) = pending.iter().position(|&b| b == 0) {
            let frame: Vec<u8> = pending.drain(..=end).take(end).collect();
            let head_end = frame
                .windows(2)
                .position(|pair| pair == b"\n\n")
                .expect("a frame head");
            let command = String::from_utf8_lossy(&frame[..head_end])
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            return (command, frame[head_end + 2..].to_vec());
        }
        match socket.next().await {
            Some(Ok(Message::Text(text))) => pending.extend_from_slice(text.as_bytes()),
            Some(Ok(Message::Binary(bytes))) => pending.extend_from_slice(&bytes),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

async fn connect(addr: &str) -> Socket {
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/ws"), None, true)
            .await
            .expect("connect");
    next_json(&mut socket).await; // welcome
    socket
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).expect("json"),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

async fn subscribe(socket: &mut Socket, topic: &str) {
    socket
        .send(Message::text(
            json!({"op": "subscribe", "topic": topic, "id": "s"}).to_string(),
        ))
        .await
        .expect("send");
    while next_json(socket).await["op"] != "ack" {}
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank] as f64 / 1000.0
}

/// Prints the percentiles and returns p99 in ms.
fn report_latency(label: &str, mut micros: Vec<u64>) -> f64 {
    micros.sort_unstable();
    println!(
        "  {label} latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
        percentile(&micros, 50.0),
        percentile(&micros, 90.0),
        percentile(&micros, 99.0),
        percentile(&micros, 99.9),
        percentile(&micros, 100.0),
        micros.len()
    );
    percentile(&micros, 99.0)
}

/// A rate and its p99 latency in ms.
#[derive(Clone, Copy, Default)]
struct Measured {
    per_second: f64,
    p99_ms: f64,
}

/// What one kind of subscriber measured, for the side-by-side summary.
#[derive(Default)]
struct Figures {
    round_trip: Measured,
    fan_out: Measured,
    rabbit_fan_out: Option<Measured>,
    idle_kib: f64,
}

/// Where fan-out messages come from.
enum Source {
    /// A WebSocket client's `publish`, in-process node.
    WebSocket,
    /// A microservice publishing to RabbitMQ's `herald.topics`.
    Rabbit(lapin::Channel),
}

/// One publisher, many subscribers on one topic, messages sent back to back.
async fn fan_out(
    addr: &str,
    subscribers: usize,
    messages: usize,
    source: &Source,
    protocol: Protocol,
) -> Measured {
    // One topic per protocol, so one kind's departing sessions never get
    // the other's messages.
    let topic = match protocol {
        Protocol::Json => "bench.fanout",
        Protocol::Stomp => "bench.fanout.stomp",
    };
    let mut sockets = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        sockets.push(Subscriber::connect(addr, protocol, topic).await);
    }
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut subscriber| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(messages);
                let mut last = Instant::now();
                for _ in 0..messages {
                    let data = subscriber.next_data().await;
                    let sent = data["sent_us"].as_u64().unwrap_or(0);
                    latencies.push(now_micros().saturating_sub(sent));
                    last = Instant::now();
                }
                (latencies, last)
            })
        })
        .collect();
    let mut publisher = connect(addr).await;
    let padding = "x".repeat(100);
    let started = Instant::now();
    let label = match source {
        Source::WebSocket => "a WebSocket client",
        Source::Rabbit(_) => "RabbitMQ (herald.topics)",
    };
    for n in 0..messages {
        let data = json!({"n": n, "sent_us": now_micros(), "pad": padding});
        match source {
            Source::WebSocket => {
                let frame = json!({"op": "publish", "topic": topic, "data": data});
                publisher
                    .send(Message::text(frame.to_string()))
                    .await
                    .expect("publish");
            }
            Source::Rabbit(channel) => {
                let body = data.to_string();
                let _confirm = channel
                    .basic_publish(
                        "herald.topics".into(),
                        topic.into(),
                        Default::default(),
                        body.as_bytes(),
                        Default::default(),
                    )
                    .await
                    .expect("publish to RabbitMQ");
            }
        }
    }
    let mut all = Vec::with_capacity(subscribers * messages);
    let mut finished = started;
    for reader in readers {
        let (latencies, last) = reader.await.expect("reader");
        all.extend(latencies);
        finished = finished.max(last);
    }
    let elapsed = finished.duration_since(started).as_secs_f64();
    let deliveries = subscribers * messages;
    println!(
        "fan-out from {label}{}: {messages} messages (~160 B) x {subscribers} subscribers",
        protocol.to_subscribers()
    );
    let per_second = deliveries as f64 / elapsed;
    println!(
        "  throughput: {per_second:.0} deliveries/s ({deliveries} in {:.0} ms), {:.0} publishes/s",
        elapsed * 1000.0,
        messages as f64 / elapsed
    );
    let p99_ms = report_latency("delivery", all);
    Measured { per_second, p99_ms }
}

/// One publisher, one subscriber, one message in flight at a time.
async fn round_trip(addr: &str, messages: usize, protocol: Protocol) -> Measured {
    let topic = "bench.rtt";
    let mut subscriber = Subscriber::connect(addr, protocol, topic).await;
    let mut publisher = connect(addr).await;
    let mut latencies = Vec::with_capacity(messages);
    let started = Instant::now();
    for n in 0..messages {
        let sent = Instant::now();
        publisher
            .send(Message::text(
                json!({"op": "publish", "topic": topic, "data": n}).to_string(),
            ))
            .await
            .expect("publish");
        subscriber.next_data().await;
        latencies.push(sent.elapsed().as_micros() as u64);
    }
    let per_second = messages as f64 / started.elapsed().as_secs_f64();
    match protocol {
        Protocol::Json => println!("round trip: {messages} messages, one in flight"),
        Protocol::Stomp => {
            println!("round trip to a STOMP subscriber: {messages} messages, one in flight")
        }
    }
    println!("  rate: {per_second:.0} messages/s");
    let p99_ms = report_latency("publish-to-delivery", latencies);
    Measured { per_second, p99_ms }
}

/// Memory the server holds per idle, subscribed connection.
async fn idle_memory(server: &Server, connections: usize, protocol: Protocol) -> f64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib();
    let mut sockets = Vec::with_capacity(connections);
    for n in 0..connections {
        let topic = format!("bench.idle.{}", n % 100);
        sockets.push(Subscriber::connect(&server.addr, protocol, &topic).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kib();
    let kind = match protocol {
        Protocol::Json => "",
        Protocol::Stomp => " STOMP",
    };
    println!("memory: {connections} idle subscribed{kind} connections");
    let per_connection = after.saturating_sub(before) as f64 / connections as f64;
    println!("  server RSS {before} KiB -> {after} KiB: {per_connection:.1} KiB per connection");
    drop(sockets);
    per_connection
}

/// Both kinds of subscriber's figures next to each other.
fn report_side_by_side(figures: &[(Protocol, Figures)]) {
    if figures.len() < 2 {
        return;
    }
    println!("subscribers side by side:");
    let mut header = format!("  {:<44}", "");
    for (protocol, _) in figures {
        header.push_str(&format!("{:>12}", protocol.name()));
    }
    println!("{header}");
    let row = |label: &str, value: &dyn Fn(&Figures) -> Option<String>| {
        let mut line = format!("  {label:<44}");
        for (_, figures) in figures {
            let text = value(figures).unwrap_or_else(|| "-".to_owned());
            line.push_str(&format!("{text:>12}"));
        }
        println!("{line}");
    };
    row("round trip, messages/s", &|f| {
        Some(format!("{:.0}", f.round_trip.per_second))
    });
    row("round trip, p99 ms", &|f| {
        Some(format!("{:.2}", f.round_trip.p99_ms))
    });
    row("fan-out from a WebSocket client, deliveries/s", &|f| {
        Some(format!("{:.0}", f.fan_out.per_second))
    });
    row("fan-out from a WebSocket client, p99 ms", &|f| {
        Some(format!("{:.2}", f.fan_out.p99_ms))
    });
    row("fan-out from RabbitMQ, deliveries/s", &|f| {
        f.rabbit_fan_out.map(|m| format!("{:.0}", m.per_second))
    });
    row("fan-out from RabbitMQ, p99 ms", &|f| {
        f.rabbit_fan_out.map(|m| format!("{:.2}", m.p99_ms))
    });
    row("memory per idle subscribed connection, KiB", &|f| {
        Some(format!("{:.1}", f.idle_kib))
    });
}

/// Waits until the node reports its RabbitMQ link up.
async fn wait_connected(addr: &str) {
    for _ in 0..200 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request =
            format!("GET /api/stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("request");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        if response.contains("\"state\":\"connected\"") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node did not connect to RabbitMQ");
}

fn main() {
    // `cargo bench` passes `--bench`; listing or filtering is not supported.
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and
    // gets a small smoke run proving the benchmark still works.
    let full = std::env::args().any(|arg| arg == "--bench");
    let scale =
        |name, full_size, smoke_size| setting(name, if full { full_size } else { smoke_size });
    let subscribers = scale("BENCH_SUBSCRIBERS", 1000, 20);
    let messages = scale("BENCH_MESSAGES", 200, 5);
    let idle = scale("BENCH_IDLE", 5000, 50);
    let round_trips = scale("BENCH_ROUND_TRIPS", 2000, 20);
    let protocols = match std::env::var("BENCH_PROTOCOL").as_deref() {
        Ok("json") => vec![Protocol::Json],
        Ok("stomp") => vec![Protocol::Stomp],
        Ok("both") | Err(_) => vec![Protocol::Json, Protocol::Stomp],
        Ok(other) => panic!("BENCH_PROTOCOL is json, stomp or both, not {other:?}"),
    };
    let amqp_url = std::env::var("BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "optimized"
        };
        let run = if full { "" } else { ", smoke run" };
        let mut figures = Vec::new();
        for &protocol in &protocols {
            // A fresh server per protocol: memory per connection starts
            // from the same empty node.
            let server = start_server(&[]);
            if figures.is_empty() {
                println!(
                    "herald benchmark against {} ({profile} build, loopback{run})",
                    server.addr
                );
            } else {
                println!("{} subscribers, against {}:", protocol.name(), server.addr);
            }
            let round_trip = round_trip(&server.addr, round_trips, protocol).await;
            let fan_out = fan_out(
                &server.addr,
                subscribers,
                messages,
                &Source::WebSocket,
                protocol,
            )
            .await;
            let idle_kib = idle_memory(&server, idle, protocol).await;
            figures.push((
                protocol,
                Figures {
                    round_trip,
                    fan_out,
                    rabbit_fan_out: None,
                    idle_kib,
                },
            ));
        }

        match lapin::Connection::connect(&amqp_url, lapin::ConnectionProperties::default()).await {
            Ok(connection) => {
                let server = start_server(&["--amqp-url", &amqp_url]);
                wait_connected(&server.addr).await;
                let channel = connection.create_channel().await.expect("channel");
                let source = Source::Rabbit(channel);
                for (protocol, figures) in &mut figures {
                    let measured =
                        fan_out(&server.addr, subscribers, messages, &source, *protocol).await;
                    figures.rabbit_fan_out = Some(measured);
                }
            }
            Err(err) => println!("RabbitMQ fan-out skipped: cannot reach {amqp_url}: {err}"),
        }
        report_side_by_side(&figures);
    });
}
