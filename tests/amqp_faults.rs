//! RabbitMQ going away never stops Herald. This file disturbs the shared
//! RabbitMQ (closing every connection, stopping the broker), so it holds a
//! single test: cargo runs test files one at a time.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use tokio::sync::Mutex;

/// Starts the RabbitMQ app again if the test stops before it did, so that
/// the test files after this one find RabbitMQ running.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
    }
}

async fn wait_reconnected(node: &TestNode, reconnects: u64, since: Instant) -> Duration {
    let back = eventually(Duration::from_secs(60), || async {
        let stats = node.stats().await;
        stats["amqp"]["state"] == "connected"
            && stats["amqp"]["reconnects"].as_u64() >= Some(reconnects)
    })
    .await;
    assert!(back, "the node did not reconnect: {:?}", node.stats().await);
    since.elapsed()
}

/// The client gets the message published by a microservice after the fault:
/// the node redeclared its queue and rebound the client's pattern.
async fn delivery_resumes(client: &mut WsClient, topic: &str, label: &str) {
    let rabbit = Rabbit::connect().await;
    rabbit
        .publish("herald.topics", topic, format!("\"{label}\"").as_bytes())
        .await;
    assert_eq!(client.expect_message().await["data"], label);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_rides_out_closed_connections_and_a_stopped_broker_without_losing_a_confirmed_send()
{
    let node = TestNode::start_amqp(&[]).await;
    let topic = unique_topic("resilient");
    let destination = unique_topic("fault.orders");
    let queue = format!("test-durable-{destination}");
    let setup = Rabbit::connect().await;
    setup
        .queue(&queue, "herald.client", &destination, true)
        .await;
    drop(setup);

    let mut client = node.connect().await;
    client.subscribe(&topic).await;
    let sender = node.connect().await;

    // A client sends steadily through the first fault; every send it sees
    // acknowledged must reach the backend's queue.
    let sender = Arc::new(Mutex::new(sender));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (sending, acks, to) = (sender.clone(), acked.clone(), destination.clone());
    let steady = tokio::spawn(async move {
        let mut refused = 0;
        for n in 0..150 {
            let reply = sending
                .lock()
                .await
                .call(json!({"op": "send", "destination": to, "data": {"n": n}}))
                .await;
            match reply["op"].as_str() {
                Some("ack") => acks.lock().await.push(n),
                // Refused before RabbitMQ took it, or taken by a connection
                // that died before confirming (it may still arrive).
                Some("error") => {
                    assert!(
                        reply["code"] == "unavailable" || reply["code"] == "timeout",
                        "{reply}"
                    );
                    refused += 1;
                }
                _ => panic!("{reply}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        refused
    });

    // Fault 1: RabbitMQ closes every connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closed_at = Instant::now();
    run_rabbitmqctl(&["close_all_connections", "herald fault test"]);
    let reconnect = wait_reconnected(&node, 1, closed_at).await;
    println!(
        "reconnect after close_all_connections: {} ms",
        reconnect.as_millis()
    );
    let refused = steady.await.expect("sender ran");
    println!(
        "sends during the first fault: {} acked, {refused} refused as unavailable",
        acked.lock().await.len()
    );
    delivery_resumes(&mut client, &topic, "after closed connections").await;

    // Fault 2: the broker itself stops for a while.
    let restart = RestartOnDrop;
    run_rabbitmqctl(&["stop_app"]);
    let down = eventually(WAIT, || async {
        http()
            .get(node.url("/readyz"))
            .send()
            .await
            .map(|r| r.status() == 503)
            .unwrap_or(false)
    })
    .await;
    assert!(down, "readyz should report the outage");
    assert_eq!(node.stats().await["amqp"]["state"], "connecting");
    let mut sender = sender.lock().await;
    sender
        .expect_error(
            json!({"op": "send", "destination": "fault.anything", "data": 1}),
            "unavailable",
        )
        .await;
    // Publishes reach this node's subscribers and say that is all.
    let reply = sender
        .call(json!({"op": "publish", "topic": topic, "data": "during the outage"}))
        .await;
    assert_eq!(reply["local_only"], true, "{reply}");
    assert_eq!(client.expect_message().await["data"], "during the outage");
    let response = http()
        .post(node.url("/api/publish"))
        .json(&json!({"topic": topic, "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(client.expect_message().await["data"], 1);
    client.assert_alive().await;
    sender.assert_alive().await;

    let started_at = Instant::now();
    run_rabbitmqctl(&["start_app"]);
    std::mem::forget(restart);
    let reconnect = wait_reconnected(&node, 2, started_at).await;
    println!("reconnect after start_app: {} ms", reconnect.as_millis());
    delivery_resumes(&mut client, &topic, "after a broker restart").await;
    let reply = sender
        .call(json!({"op": "send", "destination": destination, "data": {"n": 1000}}))
        .await;
    assert_eq!(reply["op"], "ack", "{reply}");
    acked.lock().await.push(1000);

    // Every acknowledged send is in the backend's durable queue.
    let rabbit = Rabbit::connect().await;
    let mut delivered = Vec::new();
    while let Some(message) = rabbit.get(&queue).await {
        let body: Value = serde_json::from_slice(&message.delivery.data).unwrap();
        delivered.push(body["n"].as_i64().unwrap());
    }
    let acked = acked.lock().await.clone();
    for n in &acked {
        assert!(
            delivered.contains(n),
            "send {n} was acknowledged but never reached the backend"
        );
    }
    println!(
        "{} acknowledged sends, {} delivered to the backend's queue",
        acked.len(),
        delivered.len()
    );
    rabbit.delete_queue(&queue).await;

    assert!(
        !node.logs().iter().any(|line| line.contains("panicked")),
        "{:?}",
        node.logs()
    );
    assert_eq!(node.stats().await["connections"]["current"], 2);
}
