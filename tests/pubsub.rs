//! Subscribing, publishing and unsubscribing over the JSON protocol,
//! including AMQP-style wildcards.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn the_first_frame_is_a_welcome_naming_session_and_node() {
    let node = TestNode::start(&["--node-id", "n-test1"]);
    let mut client = WsClient::open(&node.ws_url()).await.unwrap();
    let welcome = client.expect_op("welcome").await;
    assert!(welcome["session"].as_str().unwrap().starts_with("s-"));
    assert_eq!(welcome["node"], "n-test1");
    assert_eq!(welcome["user"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_subscriber_receives_what_is_published_until_it_unsubscribes() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("news");
    let mut reader = node.connect().await;
    let mut writer = node.connect().await;
    reader.subscribe(&topic).await;

    writer.publish(&topic, json!({"text": "hi"})).await;
    let message = reader.expect_message().await;
    assert_eq!(message["topic"], topic.as_str());
    assert_eq!(message["data"], json!({"text": "hi"}));
    assert!(message["mid"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(message["ts"].as_u64().unwrap() > 1_700_000_000_000);

    reader.unsubscribe(&topic).await;
    writer.publish(&topic, json!("after")).await;
    reader.expect_silence(QUIET).await;
}

#[tokio::test]
async fn the_publisher_receives_its_own_message_when_subscribed() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("chat");
    let mut client = node.connect().await;
    client.subscribe(&topic).await;
    client
        .send_json(json!({"op": "publish", "topic": topic, "data": [1, 2], "id": "p"}))
        .await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(client.next_json().await["op"].as_str().unwrap().to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["ack", "message"]);
}

#[tokio::test]
async fn star_matches_exactly_one_segment() {
    let node = TestNode::start(&[]);
    let base = unique_topic("scores");
    let mut client = node.connect().await;
    client.subscribe(&format!("{base}.*")).await;

    node.publish(&format!("{base}.football"), json!(1)).await;
    assert_eq!(
        client.expect_message().await["topic"],
        format!("{base}.football")
    );

    node.publish(&base, json!("parent")).await;
    node.publish(&format!("{base}.football.uk"), json!("grandchild"))
        .await;
    client.expect_silence(QUIET).await;
}

#[tokio::test]
async fn hash_matches_zero_or_more_segments() {
    let node = TestNode::start(&[]);
    let base = unique_topic("feed");
    let mut client = node.connect().await;
    client.subscribe(&format!("{base}.#")).await;

    for topic in [base.clone(), format!("{base}.a"), format!("{base}.a.b.c")] {
        node.publish(&topic, json!(topic)).await;
        assert_eq!(client.expect_message().await["topic"], topic.as_str());
    }
    node.publish(&format!("{base}x.a"), json!("sibling")).await;
    node.publish("other.topic", json!("elsewhere")).await;
    client.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_session_matching_through_two_patterns_gets_one_copy() {
    let node = TestNode::start(&[]);
    let base = unique_topic("dup");
    let mut client = node.connect().await;
    client.subscribe(&format!("{base}.*")).await;
    client.subscribe(&format!("{base}.#")).await;
    client.subscribe(&format!("{base}.x")).await;
    node.publish(&format!("{base}.x"), json!(1)).await;
    client.expect_message().await;
    client.expect_silence(QUIET).await;
}

#[tokio::test]
async fn messages_from_one_publisher_arrive_in_order() {
    let node = TestNode::start(&["--rate-limit", "1000"]);
    let topic = unique_topic("ordered");
    let mut reader = node.connect().await;
    let mut writer = node.connect().await;
    reader.subscribe(&topic).await;
    for n in 0..300 {
        writer
            .send_json(json!({"op": "publish", "topic": topic, "data": n}))
            .await;
    }
    for n in 0..300 {
        assert_eq!(reader.expect_message().await["data"], n);
    }
}

#[tokio::test]
async fn payloads_of_every_json_type_arrive_unchanged() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("types");
    let mut client = node.connect().await;
    client.subscribe(&topic).await;
    let payloads = [
        json!(null),
        json!(true),
        json!(-1.5),
        json!("é \"q\" \\ \u{1F600}"),
        json!([1, {"a": []}]),
        json!({"nested": {"x": null}}),
    ];
    for payload in &payloads {
        client
            .send_json(json!({"op": "publish", "topic": topic, "data": payload}))
            .await;
    }
    for payload in &payloads {
        assert_eq!(&client.expect_message().await["data"], payload);
    }
}
