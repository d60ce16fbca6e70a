//! Fan-out at scale: a thousand concurrent sessions on one topic each get
//! every publish exactly once.

mod support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use support::*;

const SESSIONS: usize = 1000;
const MESSAGES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_each_receive_every_publish_exactly_once() {
    // Every session comes from one address, faster than one client may
    // connect: the per-IP limits are not what this measures.
    let node = TestNode::start(&[
        "--handshake-rate-per-ip",
        "1000000",
        "--max-connections-per-ip",
        "1000000",
    ]);
    let topic = unique_topic("broadcast");

    let mut clients = Vec::with_capacity(SESSIONS);
    for chunk in 0..SESSIONS / 100 {
        let opened = join_all((0..100).map(|_| async {
            let mut client = node.connect().await;
            client.subscribe(&topic).await;
            client
        }))
        .await;
        clients.extend(opened);
        assert_eq!(clients.len(), (chunk + 1) * 100);
    }
    let stats = node.stats().await;
    assert_eq!(stats["connections"]["current"], SESSIONS);
    assert_eq!(stats["subscriptions"], SESSIONS);

    let started = Instant::now();
    for n in 0..MESSAGES {
        node.publish(&topic, json!({"n": n})).await;
    }
    let readers = clients.into_iter().map(|mut client| {
        tokio::spawn(async move {
            for n in 0..MESSAGES {
                assert_eq!(client.expect_message().await["data"]["n"], n);
            }
            client.expect_silence(Duration::from_millis(200)).await;
        })
    });
    for reader in join_all(readers).await {
        reader.expect("every session got every message once, in order");
    }
    let elapsed = started.elapsed();
    let deliveries = SESSIONS * MESSAGES;
    println!(
        "fan-out: {deliveries} deliveries to {SESSIONS} sessions in {:.0} ms ({:.0} deliveries/s, debug build)",
        elapsed.as_secs_f64() * 1000.0,
        deliveries as f64 / elapsed.as_secs_f64()
    );
    let stats = node.stats().await;
    assert_eq!(stats["messages"]["in"], MESSAGES);
    assert_eq!(stats["messages"]["out"], deliveries);
    assert_eq!(stats["messages"]["dropped"], 0);
}
