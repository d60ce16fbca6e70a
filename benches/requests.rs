//! The request pipeline's benchmark: a real upstream HTTP service on
//! loopback, the real (release) herald binary in front of it, and prints
//!
//! 1. the latency of one request at a time called directly and through
//!    Herald over a WebSocket (median and p99 of `BENCH_REQUESTS`, default
//!    10,000, each), and the difference: what Herald adds;
//! 2. the requests per second one node sustains with `BENCH_CLIENTS`
//!    sessions (default 32) keeping `BENCH_WINDOW` requests (default 8) in
//!    flight each for `BENCH_SECONDS` (default 5), beside the same load on
//!    the service directly.
//!
//! `cargo bench --bench requests`. Client, Herald and the service share the
//! machine's cores, so the figures are for comparing, not for capacity
//! planning.

#[path = "../tests/support/upstream.rs"]
mod upstream;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

mod support;

use support::{setting, Server};

fn start_herald(service: &str) -> (Server, String) {
    let services = format!("svc={service}");
    let server = Server::start(&["--services", &services]);
    let addr = server.addr.clone();
    (server, addr)
}

async fn connect(addr: &str) -> Socket {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("ws");
    let welcome = next_json(&mut socket).await;
    assert_eq!(welcome["op"], "welcome");
    socket
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        match socket.next().await.expect("open").expect("frame") {
            Message::Text(text) => return serde_json::from_str(&text).expect("json"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn request(id: u64) -> Message {
    Message::text(
        json!({"op":"request","id":id,"service":"svc","method":"GET","path":"/status/200"})
            .to_string(),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn sequential_direct(url: &str, n: usize) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = client.get(url).send().await.expect("direct GET");
        let _ = response.bytes().await.expect("body");
        took.push(started.elapsed());
    }
    took.sort();
    took
}

async fn sequential_herald(addr: &str, n: usize) -> Vec<Duration> {
    let mut socket = connect(addr).await;
    let mut took = Vec::with_capacity(n);
    for id in 0..n as u64 {
        let started = Instant::now();
        socket.send(request(id)).await.expect("send");
        let reply = next_json(&mut socket).await;
        assert_eq!(reply["status"], 200, "{reply}");
        took.push(started.elapsed());
    }
    took.sort();
    took
}

async fn load_herald(addr: &str, clients: usize, window: usize, seconds: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut socket = connect(&addr).await;
            let (mut sent, mut done) = (0u64, 0u64);
            for _ in 0..window {
                socket.send(request(sent)).await.expect("send");
                sent += 1;
            }
            while done < sent {
                let reply = next_json(&mut socket).await;
                assert_eq!(reply["op"], "response", "{reply}");
                done += 1;
                if Instant::now() < deadline {
                    socket.send(request(sent)).await.expect("send");
                    sent += 1;
                }
            }
            done
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn load_direct(url: &str, concurrency: usize, seconds: u64) -> f64 {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let response = client.get(&url).send().await.expect("GET");
                let _ = response.bytes().await.expect("body");
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = setting("BENCH_REQUESTS", 10_000);
    let clients = setting("BENCH_CLIENTS", 32);
    let window = setting("BENCH_WINDOW", 8);
    let seconds = setting("BENCH_SECONDS", 5) as u64;
    let service = upstream::start();
    let direct_url = format!("{}/status/200", service.url());
    let (_herald, addr) = start_herald(&service.url());

    // Warm both paths (connection pools, caches) before measuring.
    sequential_direct(&direct_url, 500).await;
    sequential_herald(&addr, 500).await;
    let direct = sequential_direct(&direct_url, n).await;
    let through = sequential_herald(&addr, n).await;
    let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
    let (h50, h99) = (percentile(&through, 0.5), percentile(&through, 0.99));
    println!("latency, one request at a time, {n} requests each:");
    println!(
        "  direct HTTP      median {:8.1} µs   p99 {:8.1} µs",
        micros(d50),
        micros(d99)
    );
    println!(
        "  through Herald   median {:8.1} µs   p99 {:8.1} µs",
        micros(h50),
        micros(h99)
    );
    println!(
        "  added by Herald  median {:8.1} µs   p99 {:8.1} µs",
        micros(h50) - micros(d50),
        micros(h99) - micros(d99)
    );

    let through = load_herald(&addr, clients, window, seconds).await;
    let direct = load_direct(&direct_url, clients * window, seconds).await;
    println!("throughput, {clients} sessions x {window} in flight for {seconds} s:");
    println!("  through Herald   {through:10.0} requests/s");
    println!(
        "  direct HTTP      {direct:10.0} requests/s ({} concurrent callers)",
        clients * window
    );
}
