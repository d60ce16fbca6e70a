//! Herald's benchmark: runs the real (release) binary on loopback and prints
//! fan-out throughput, delivery latency percentiles, and memory per idle
//! connection.
//!
//! `cargo bench --bench fanout`; sizes can be changed with
//! `BENCH_SUBSCRIBERS`, `BENCH_MESSAGES`, `BENCH_IDLE`, and
//! `BENCH_HERALD_BIN` runs another build of herald (to compare two builds
//! on one machine). Client and server share the machine's cores, so compare
//! figures from one run as ratios.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let binary = std::env::var("BENCH_HERALD_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_herald").to_owned());
        let mut child = Command::new(binary)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--rate-limit",
                "1000000",
                "--outbound-queue-frames",
                "100000",
                "--outbound-queue-bytes",
                "67108864",
            ])
            .args(extra)
            .env("RUST_LOG", "warn,herald::server=info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("herald starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("herald prints its address")
                .expect("line");
            if let Some(at) = line.find("listening on http://") {
                break line[at + 20..].trim().to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

fn report_latency(label: &str, mut micros: Vec<u64>) {
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
}

/// Where fan-out messages come from.
enum Source {
    /// A WebSocket client's `publish`, in-process node.
    WebSocket,
    /// A microservice publishing to RabbitMQ's `herald.topics`.
    Rabbit(lapin::Channel),
}

/// One publisher, many subscribers on one topic, messages sent back to back.
async fn fan_out(addr: &str, subscribers: usize, messages: usize, source: Source) {
    let topic = "bench.fanout";
    let mut sockets = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let mut socket = connect(addr).await;
        subscribe(&mut socket, topic).await;
        sockets.push(socket);
    }
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(messages);
                let mut last = Instant::now();
                for _ in 0..messages {
                    let frame = next_json(&mut socket).await;
                    let sent = frame["data"]["sent_us"].as_u64().unwrap_or(0);
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
    let label = match &source {
        Source::WebSocket => "a WebSocket client",
        Source::Rabbit(_) => "RabbitMQ (herald.topics)",
    };
    for n in 0..messages {
        let data = json!({"n": n, "sent_us": now_micros(), "pad": padding});
        match &source {
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
    println!("fan-out from {label}: {messages} messages (~160 B) x {subscribers} subscribers");
    println!(
        "  throughput: {:.0} deliveries/s ({deliveries} in {:.0} ms), {:.0} publishes/s",
        deliveries as f64 / elapsed,
        elapsed * 1000.0,
        messages as f64 / elapsed
    );
    report_latency("delivery", all);
}

/// One publisher, one subscriber, one message in flight at a time.
async fn round_trip(addr: &str, messages: usize) {
    let topic = "bench.rtt";
    let mut subscriber = connect(addr).await;
    subscribe(&mut subscriber, topic).await;
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
        next_json(&mut subscriber).await;
        latencies.push(sent.elapsed().as_micros() as u64);
    }
    println!("round trip: {messages} messages, one in flight");
    println!(
        "  rate: {:.0} messages/s",
        messages as f64 / started.elapsed().as_secs_f64()
    );
    report_latency("publish-to-delivery", latencies);
}

/// Memory the server holds per idle, subscribed connection.
async fn idle_memory(server: &Server, connections: usize) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib();
    let mut sockets = Vec::with_capacity(connections);
    for n in 0..connections {
        let mut socket = connect(&server.addr).await;
        subscribe(&mut socket, &format!("bench.idle.{}", n % 100)).await;
        sockets.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kib();
    println!("memory: {connections} idle subscribed connections");
    println!(
        "  server RSS {before} KiB -> {after} KiB: {:.1} KiB per connection",
        after.saturating_sub(before) as f64 / connections as f64
    );
    drop(sockets);
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
    let amqp_url = std::env::var("BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = Server::start(&[]);
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "optimized"
        };
        let run = if full { "" } else { ", smoke run" };
        println!(
            "herald benchmark against {} ({profile} build, loopback{run})",
            server.addr
        );
        round_trip(&server.addr, round_trips).await;
        fan_out(&server.addr, subscribers, messages, Source::WebSocket).await;
        idle_memory(&server, idle).await;
        drop(server);

        match lapin::Connection::connect(&amqp_url, lapin::ConnectionProperties::default()).await {
            Ok(connection) => {
                let server = Server::start(&["--amqp-url", &amqp_url]);
                wait_connected(&server.addr).await;
                let channel = connection.create_channel().await.expect("channel");
                fan_out(&server.addr, subscribers, messages, Source::Rabbit(channel)).await;
            }
            Err(err) => println!("RabbitMQ fan-out skipped: cannot reach {amqp_url}: {err}"),
        }
    });
}
