//! RabbitMQ going away the way a network does, played by a TCP proxy
//! between the node and RabbitMQ: the node's connection is cut without
//! RabbitMQ noticing, and new connections may be refused for a while.
//! Meanwhile the node's own subscribers keep getting what is published on
//! the node, every op is answered, and once RabbitMQ is reachable again the
//! node reconnects at once and delivery from RabbitMQ resumes.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::proxy::Proxy;
use support::*;

/// How long any op may take to be answered during the outage.
const ANSWER: Duration = Duration::from_secs(2);

/// Waits until the node reports that it lost RabbitMQ.
async fn wait_disconnected(node: &TestNode) {
    let lost = eventually(WAIT, || async {
        node.stats().await["amqp"]["state"] == "connecting"
    })
    .await;
    assert!(
        lost,
        "the node did not notice the cut: {}",
        node.stats().await["amqp"]
    );
}

fn assert_quick(took: Duration, what: &str) {
    assert!(
        took < ANSWER,
        "{what} took {took:?} during the outage; every op must be answered at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_local_pubsub_goes_on_and_subscriptions_made_meanwhile_bind_when_it_ends()
{
    let proxy = Proxy::to_rabbitmq().await;
    let node = TestNode::start_amqp_at(&proxy.amqp_url(), &[]).await;
    let before = unique_topic("outage.before");
    let during = unique_topic("outage.during");
    let mut old_subscriber = node.connect().await;
    old_subscriber.subscribe(&before).await;
    let mut publisher = node.connect().await;

    // Refused first, so the node cannot slip a new connection in between.
    proxy.refuse();
    assert!(
        proxy.cut().await >= 1,
        "the node's connection went through the proxy"
    );
    wait_disconnected(&node).await;

    let (reply, took) = timed(publisher.call(json!({
        "op": "publish", "topic": before, "data": "over the WebSocket"
    })))
    .await;
    assert_quick(took, "a publish");
    assert_eq!(reply["op"], "ack", "a publish during the outage: {reply}");
    assert_eq!(reply["local_only"], true, "{reply}");
    assert_eq!(
        old_subscriber.expect_message().await["data"],
        "over the WebSocket"
    );

    let ((status, body), took) = timed(node.post(
        "/api/publish",
        json!({"topic": before, "data": "over HTTP"}),
    ))
    .await;
    assert_quick(took, "POST /api/publish");
    assert_eq!(status, 202, "POST /api/publish during the outage: {body}");
    assert_eq!(body["local_only"], true, "{body}");
    assert_eq!(old_subscriber.expect_message().await["data"], "over HTTP");

    let mut new_subscriber = node.connect().await;
    let (reply, took) =
        timed(new_subscriber.call(json!({"op": "subscribe", "topic": during}))).await;
    assert_quick(took, "a subscribe");
    assert_eq!(reply["op"], "ack", "a subscribe during the outage: {reply}");
    let reply = publisher
        .call(json!({"op": "publish", "topic": during, "data": "local"}))
        .await;
    assert_eq!(reply["op"], "ack", "{reply}");
    assert_eq!(reply["local_only"], true, "{reply}");
    assert_eq!(new_subscriber.expect_message().await["data"], "local");

    let (reply, took) = timed(publisher.call(json!({
        "op": "send", "destination": unique_topic("outage.orders"), "data": 1
    })))
    .await;
    assert_quick(took, "a send");
    assert_eq!(reply["op"], "error", "a send during the outage: {reply}");
    assert_eq!(reply["code"], "unavailable", "{reply}");

    proxy.restore();
    let back = eventually(Duration::from_secs(15), || async {
        let amqp = node.stats().await["amqp"].clone();
        amqp["state"] == "connected" && amqp["reconnects"].as_u64() >= Some(1)
    })
    .await;
    assert!(
        back,
        "the node did not reconnect: {}",
        node.stats().await["amqp"]
    );

    // Both the subscription from before and the one made during the outage
    // are bound again: a microservice's messages reach them.
    let rabbit = Rabbit::connect().await;
    rabbit
        .publish("herald.topics", &during, b"\"from a microservice\"")
        .await;
    assert_eq!(
        new_subscriber.expect_message().await["data"],
        "from a microservice"
    );
    rabbit
        .publish("herald.topics", &before, b"\"still bound\"")
        .await;
    assert_eq!(old_subscriber.expect_message().await["data"], "still bound");
    proxy.release_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cut_connection_the_node_reconnects_at_once_without_resource_locked() {
    let proxy = Proxy::to_rabbitmq().await;
    let node = TestNode::start_amqp_at(&proxy.amqp_url(), &[]).await;
    let topic = unique_topic("outage.cut");
    let mut client = node.connect().await;
    client.subscribe(&topic).await;

    // RabbitMQ still holds the old connection, and whatever it owns, for as
    // long as the proxy keeps its socket open: the node must not need it.
    assert!(
        proxy.cut().await >= 1,
        "the node's connection went through the proxy"
    );
    let cut_at = Instant::now();
    let back = eventually(Duration::from_secs(10), || async {
        let amqp = node.stats().await["amqp"].clone();
        amqp["state"] == "connected" && amqp["reconnects"].as_u64() >= Some(1)
    })
    .await;
    let locked: Vec<String> = node
        .logs()
        .into_iter()
        .filter(|line| line.contains("RESOURCE_LOCKED"))
        .collect();
    assert!(
        back,
        "the node was not connected again 10 s after the cut ({} failed redeclares): {}",
        locked.len(),
        node.stats().await["amqp"]
    );
    println!(
        "reconnected {} ms after the cut",
        cut_at.elapsed().as_millis()
    );
    assert!(
        proxy.held() >= 1,
        "RabbitMQ's side of the old connection is still open"
    );

    let rabbit = Rabbit::connect().await;
    rabbit
        .publish("herald.topics", &topic, b"\"after the cut\"")
        .await;
    assert_eq!(client.expect_message().await["data"], "after the cut");
    assert!(locked.is_empty(), "{locked:?}");
    proxy.release_held();
}
