//! Draining a node without a reconnect storm, measured: two herald nodes on
//! one RabbitMQ, `BENCH_CLIENTS` (3,000) JSON clients on node A, each
//! subscribed to one topic; node A is drained with `BENCH_WINDOW_MS`
//! (10,000) and every client reconnects to node B and subscribes again.
//! Printed for three runs: clients that wait the `after_ms` they were told
//! ("hinted"); the same drain with clients that ignore it and come back at
//! their close ("no hint"); and a zero window, every session closed at once
//! and every client straight back, the storm a drain avoids ("at once"):
//! node B's accepts per 100 ms and per 1 s (max and p99),
//! how many clients ended up on B, and whether a publish after the drain
//! reached every one of them.
//!
//! `cargo bench --bench drain` (RabbitMQ at `BENCH_AMQP_URL`, default
//! guest@127.0.0.1:5672). "Accepted" is when a client read its `welcome`
//! from B.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

mod support;

use support::{setting, Server};

const TOPIC: &str = "bench.drain";

async fn next_json(ws: &mut Socket) -> Option<Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

async fn expect_op(ws: &mut Socket, op: &str) -> Option<Value> {
    loop {
        let frame = next_json(ws).await?;
        if frame["op"] == op {
            return Some(frame);
        }
    }
}

/// Opens a session, reads its welcome and subscribes; returns the socket and
/// when the welcome came.
async fn join(url: &str) -> Result<(Socket, Instant), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    expect_op(&mut ws, "welcome").await.ok_or("no welcome")?;
    let welcomed = Instant::now();
    ws.send(Message::text(
        json!({"op": "subscribe", "topic": TOPIC, "id": "s"}).to_string(),
    ))
    .await
    .map_err(|e| format!("subscribe: {e}"))?;
    expect_op(&mut ws, "ack").await.ok_or("no ack")?;
    Ok((ws, welcomed))
}

/// What one client did.
#[derive(Default)]
struct Outcome {
    after_ms: Option<u64>,
    accepted_on_b: Option<Instant>,
    got_final: bool,
}

struct Run {
    accepts: Vec<Instant>,
    on_b: usize,
    got_final: usize,
    told: usize,
    max_after: u64,
    a_exit: Option<i32>,
    drain_started: Instant,
    last_accept: Option<Instant>,
}

async fn publish(addr: &str, data: Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/publish"))
        .json(&json!({"topic": TOPIC, "data": data}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 202);
}

async fn connections(addr: &str) -> u64 {
    let stats: Value = reqwest::get(format!("http://{addr}/api/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats JSON");
    stats["connections"]["current"].as_u64().unwrap_or(0)
}

async fn wait_amqp(addr: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Ok(response) = reqwest::get(format!("http://{addr}/readyz")).await {
            if response.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("node {addr} never became ready");
}

async fn one_run(clients: usize, window_ms: u64, honour: bool, amqp: &str) -> Run {
    let window = format!("{window_ms}ms");
    let flags = [
        "--amqp-url",
        amqp,
        "--drain-window",
        &window,
        "--max-connections",
        "100000",
    ];
    let mut a = Server::start(&flags);
    let b = Server::start(&flags);
    wait_amqp(&a.addr).await;
    wait_amqp(&b.addr).await;
    let a_url = format!("ws://{}/ws", a.addr);
    let b_url = Arc::new(format!("ws://{}/ws", b.addr));

    // Every client on A, subscribed.
    let sockets: Vec<Socket> = futures_util::stream::iter(0..clients)
        .map(|_| {
            let url = a_url.clone();
            async move { join(&url).await.expect("a client joins node A").0 }
        })
        .buffer_unordered(100)
        .collect()
        .await;

    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(clients)));
    let (final_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let b_url = b_url.clone();
        let outcomes = outcomes.clone();
        let mut final_rx = final_tx.subscribe();
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            // Read to A's close, keeping the hint.
            while let Some(frame) = next_json(&mut ws).await {
                if frame["op"] == "reconnect" {
                    outcome.after_ms = frame["after_ms"].as_u64();
                }
            }
            if honour {
                let wait = outcome.after_ms.unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            // Retry while B is busy: a refused client is not a lost one.
            let mut joined = None;
            for _ in 0..20 {
                match join(&b_url).await {
                    Ok(ok) => {
                        joined = Some(ok);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            if let Some((mut ws, welcomed)) = joined {
                outcome.accepted_on_b = Some(welcomed);
                // The publish after the drain; the main task says when to stop.
                tokio::select! {
                    got = expect_op(&mut ws, "message") => {
                        outcome.got_final = got.is_some_and(|m| m["data"] == "after the drain");
                    }
                    _ = final_rx.recv() => {}
                }
            }
            outcomes.lock().await.push(outcome);
        }));
    }

    let drain_started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/drain", a.addr))
        .send()
        .await
        .expect("drain");
    assert_eq!(response.status(), 202);

    // All back on B (or the window plus a margin gone by).
    let until = drain_started + Duration::from_millis(2 * window_ms) + Duration::from_secs(20);
    while connections(&b.addr).await < clients as u64 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on_b = connections(&b.addr).await as usize;
    let a_exit = {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = a.child.try_wait() {
                break status.code();
            }
            if Instant::now() > until {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    publish(&b.addr, json!("after the drain")).await;
    let waited = Instant::now() + Duration::from_secs(10);
    while outcomes.lock().await.len() < clients && Instant::now() < waited {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = final_tx.send(());
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let outcomes = outcomes.lock().await;
    let mut accepts: Vec<Instant> = outcomes.iter().filter_map(|o| o.accepted_on_b).collect();
    accepts.sort();
    Run {
        last_accept: accepts.last().copied(),
        accepts,
        on_b,
        got_final: outcomes.iter().filter(|o| o.got_final).count(),
        told: outcomes.iter().filter(|o| o.after_ms.is_some()).count(),
        max_after: outcomes
            .iter()
            .filter_map(|o| o.after_ms)
            .max()
            .unwrap_or(0),
        a_exit,
        drain_started,
    }
}

/// Accepts per bucket of `width`, from the drain's start: (max, p99).
fn rates(run: &Run, width: Duration) -> (f64, f64) {
    let Some(last) = run.last_accept else {
        return (0.0, 0.0);
    };
    let buckets =
        (last.duration_since(run.drain_started).as_micros() / width.as_micros()) as usize + 1;
    let mut counts = vec![0usize; buckets];
    for at in &run.accepts {
        let i = (at.duration_since(run.drain_started).as_micros() / width.as_micros()) as usize;
        counts[i] += 1;
    }
    counts.sort_unstable();
    let per_s = 1.0 / width.as_secs_f64();
    let max = *counts.last().unwrap_or(&0) as f64 * per_s;
    let p99 = counts[(counts.len() * 99 / 100).min(counts.len() - 1)] as f64 * per_s;
    (max, p99)
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and
    // gets a small smoke run proving the benchmark still works.
    let full = std::env::args().any(|arg| arg == "--bench");
    let clients = setting("BENCH_CLIENTS", if full { 3000 } else { 30 });
    let window_ms = setting("BENCH_WINDOW_MS", if full { 10_000 } else { 1_000 }) as u64;
    let amqp = std::env::var("BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    // Two sockets per client at the switch, plus the nodes' own.
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("drain: {clients} clients on node A, window {window_ms} ms, reconnecting to node B");
    println!(
        "{:<10} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8} {:>7}",
        "clients",
        "told",
        "max_after",
        "max/100ms",
        "p99/100ms",
        "max/1s",
        "p99/1s",
        "on B",
        "got pub",
        "A exit"
    );
    // The drain as built; the same drain with clients that ignore the hint;
    // and every session closed at once with clients coming straight back.
    for (label, window_ms, honour) in [
        ("hinted", window_ms, true),
        ("no hint", window_ms, false),
        ("at once", 0, false),
    ] {
        let run = runtime.block_on(one_run(clients, window_ms, honour, &amqp));
        let (max100, p99_100) = rates(&run, Duration::from_millis(100));
        let (max1, p99_1) = rates(&run, Duration::from_secs(1));
        println!(
            "{:<10} {:>8} {:>8} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>9} {:>8} {:>7}",
            label,
            run.told,
            run.max_after,
            max100,
            p99_100,
            max1,
            p99_1,
            run.on_b,
            run.got_final,
            run.a_exit.map_or("-".to_owned(), |c| c.to_string()),
        );
    }
    runtime.shutdown_background();
}
