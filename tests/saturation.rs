//! A node under a storm of operations: many sessions firing publishes at a
//! topic with hundreds of subscribers, without waiting for answers, faster
//! than its Broker can fan them out. Every op must still get exactly one
//! answer in bounded time (`ack`, or `unavailable` once the Broker's bounded
//! queue is full), the node's memory must stay flat instead of queueing the
//! storm, and an HTTP publisher must still get through meanwhile.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const SESSIONS: usize = 50;
const OPS_PER_SESSION: usize = 2000;
const SUBSCRIBERS: usize = 200;
const PAYLOAD_BYTES: usize = 64;
/// The Broker's mailbox bound the node runs with.
const BROKER_QUEUE: u64 = 64;
/// Every op of the storm must be answered within this, counted from the
/// storm's start.
const STORM_ANSWERED_WITHIN: Duration = Duration::from_secs(20);
/// An HTTP publish during the storm gets through within this: the storm
/// never starves the API. The first one shares a worker thread with the
/// storm's sessions, which on a busy 2-core machine takes seconds.
const HTTP_ANSWER: Duration = Duration::from_secs(8);
/// How much the node's resident memory may grow over the storm.
const RSS_GROWTH_KIB: u64 = 64 * 1024;

/// What one storming session got back.
#[derive(Debug, Default)]
struct Tally {
    acked: usize,
    refused: usize,
    /// Answers that were neither `ack` nor `unavailable`, or came twice.
    wrong: Vec<Value>,
    unanswered: usize,
}

/// Fires `OPS_PER_SESSION` publishes with ids through `client` without
/// waiting, while reading its answers, until all are answered or `deadline`.
async fn storm(client: WsClient, session: usize, topic: String, deadline: Instant) -> Tally {
    let (mut sink, mut stream) = client.into_socket().split();
    let padding = "x".repeat(PAYLOAD_BYTES);
    let writer = tokio::spawn(async move {
        for n in 0..OPS_PER_SESSION {
            let op = json!({
                "op": "publish",
                "topic": topic,
                "id": format!("{session}-{n}"),
                "data": {"n": n, "padding": padding},
            });
            if sink.feed(Message::text(op.to_string())).await.is_err() {
                return sink;
            }
        }
        let _ = sink.flush().await;
        sink
    });
    let mut answered = vec![false; OPS_PER_SESSION];
    let mut tally = Tally::default();
    let mut left = OPS_PER_SESSION;
    while left > 0 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let frame = match tokio::time::timeout(remaining, stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(other))) => panic!("storming session {session} got {other:?}"),
            Ok(Some(Err(err))) => panic!("storming session {session} failed: {err}"),
            Ok(None) => panic!("storming session {session} was closed"),
            Err(_) => break,
        };
        let frame: Value = serde_json::from_str(&frame).expect("server sends JSON");
        let n = frame["id"]
            .as_str()
            .and_then(|id| id.strip_prefix(&format!("{session}-")))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < OPS_PER_SESSION);
        let Some(n) = n else {
            tally.wrong.push(frame);
            continue;
        };
        if std::mem::replace(&mut answered[n], true) {
            tally.wrong.push(frame);
            continue;
        }
        left -= 1;
        match (frame["op"].as_str(), frame["code"].as_str()) {
            (Some("ack"), _) => tally.acked += 1,
            (Some("error"), Some("unavailable")) => tally.refused += 1,
            _ => tally.wrong.push(frame),
        }
    }
    tally.unanswered = left;
    writer.abort();
    tally
}

/// Reads everything a subscriber gets, so that it is not the one falling
/// behind.
fn drain(client: WsClient) -> tokio::task::JoinHandle<()> {
    let mut socket = client.into_socket();
    tokio::spawn(async move { while let Some(Ok(_)) = socket.next().await {} })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_ops_is_answered_one_by_one_with_flat_memory_and_http_publishers_get_through() {
    let node = TestNode::start(&[
        "--broker-queue",
        &BROKER_QUEUE.to_string(),
        // Rate limiting is not what should refuse here.
        "--rate-limit",
        "100000",
        // Hundreds of sessions from one address in a few seconds.
        "--handshake-rate-per-ip",
        "1000000",
        // Subscribers' own queues stay small, so that what memory does
        // is the Broker's doing.
        "--outbound-queue-bytes",
        "131072",
    ]);
    let topic = unique_topic("storm");
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut client = node.connect().await;
        client.subscribe(&topic).await;
        subscribers.push(drain(client));
    }
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(node.connect().await);
    }
    // Warm-up: every session publishes a little and waits for the answers,
    // so that what a session costs anyway is in the baseline.
    for client in &mut sessions {
        let ops = (0..5)
            .map(|n| json!({"op": "publish", "topic": topic, "data": {"warm": n}}))
            .collect();
        for reply in client.call_all(ops).await {
            assert_eq!(reply["op"], "ack", "warm-up publish: {reply}");
        }
    }
    let before_kib = rss_kib(node.pid());

    let started = Instant::now();
    let deadline = started + STORM_ANSWERED_WITHIN;
    let storming = sessions
        .into_iter()
        .enumerate()
        .map(|(session, client)| tokio::spawn(storm(client, session, topic.clone(), deadline)));
    let storming: Vec<_> = storming.collect();

    // Meanwhile: an HTTP publisher, and the Broker's backlog as reported.
    let done = Arc::new(AtomicBool::new(false));
    let http_topic = unique_topic("storm.http");
    let url = node.url("/api/publish");
    let publishing = done.clone();
    let http_publisher = tokio::spawn(async move {
        let mut answers = Vec::new();
        loop {
            let ((status, _), took) = timed(post_json(
                &url,
                json!({"topic": http_topic, "data": "still here"}),
            ))
            .await;
            answers.push((status, took));
            if publishing.load(Ordering::SeqCst) {
                return answers;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let stats_url = node.url("/api/stats");
    let sampling = done.clone();
    let backlog_sampler = tokio::spawn(async move {
        let mut peak = 0;
        while !sampling.load(Ordering::SeqCst) {
            let stats = get_json(&stats_url).await;
            peak = peak.max(stats["broker"]["backlog"].as_u64().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak
    });

    let tallies: Vec<Tally> = join_all(storming)
        .await
        .into_iter()
        .map(|tally| tally.expect("storming session ran"))
        .collect();
    let storm_took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let http_answers = http_publisher.await.expect("HTTP publisher ran");
    let peak_backlog = backlog_sampler.await.expect("sampler ran");
    let after_kib = rss_kib(node.pid());

    let acked: usize = tallies.iter().map(|t| t.acked).sum();
    let refused: usize = tallies.iter().map(|t| t.refused).sum();
    let unanswered: usize = tallies.iter().map(|t| t.unanswered).sum();
    let wrong: Vec<&Value> = tallies.iter().flat_map(|t| &t.wrong).collect();
    println!(
        "{} ops in {storm_took:?}: {acked} acked, {refused} refused, {unanswered} unanswered; \
         peak Broker backlog {peak_backlog}; RSS {before_kib} KiB -> {after_kib} KiB; \
         HTTP publishes {http_answers:?}",
        SESSIONS * OPS_PER_SESSION
    );
    assert!(
        wrong.is_empty(),
        "answers other than one ack or unavailable per op: {wrong:?}"
    );
    assert_eq!(
        unanswered, 0,
        "ops without an answer {STORM_ANSWERED_WITHIN:?} into the storm"
    );
    assert!(
        refused > 0 || peak_backlog <= BROKER_QUEUE,
        "the storm was neither refused nor held back: every op was queued (peak Broker backlog \
         {peak_backlog} against a bound of {BROKER_QUEUE})"
    );
    assert!(
        after_kib.saturating_sub(before_kib) <= RSS_GROWTH_KIB,
        "the node's memory grew from {before_kib} KiB to {after_kib} KiB over the storm"
    );
    for (status, took) in &http_answers {
        assert_eq!(*status, 202, "an HTTP publish during the storm");
        assert!(
            *took < HTTP_ANSWER,
            "an HTTP publish during the storm took {took:?}"
        );
    }

    // The storm over, the node serves as before.
    let mut client = node.connect().await;
    client.assert_alive().await;
    let accepted = eventually(WAIT, || async {
        node.post("/api/publish", json!({"topic": topic, "data": "after"}))
            .await
            .0
            == 202
    })
    .await;
    assert!(accepted, "the node did not take publishes after the storm");
    for subscriber in subscribers {
        subscriber.abort();
    }
}
