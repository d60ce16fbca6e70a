//! Every JSON error code that applies to a node without backends: each bad
//! frame gets a clear error carrying its id, and the session goes on.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message;

use futures_util::SinkExt;

#[tokio::test]
async fn frames_that_are_not_operations_are_bad_requests() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;

    for text in ["not json", "[1,2]", "{\"op\":", "\"just a string\"", "{}"] {
        client.send_text(text).await;
        let reply = client.expect_op("error").await;
        assert_eq!(reply["code"], "bad_request", "{text}: {reply}");
        assert!(reply.get("id").is_none(), "{reply}");
        client.assert_alive().await;
    }

    let reply = client
        .expect_error(json!({"op": "dance"}), "bad_request")
        .await;
    assert!(reply["message"].as_str().unwrap().contains("dance"));
    client.assert_alive().await;

    let reply = client
        .expect_error(json!({"op": "subscribe"}), "bad_request")
        .await;
    assert!(reply["message"].as_str().unwrap().contains("topic"));
    client.assert_alive().await;

    client
        .expect_error(json!({"op": "subscribe", "topic": 42}), "bad_request")
        .await;
    client
        .expect_error(json!({"op": "send", "data": 1}), "bad_request")
        .await;
    client
        .expect_error(json!({"op": "request", "service": "a"}), "bad_request")
        .await;
    client.assert_alive().await;
}

#[tokio::test]
async fn an_id_that_is_neither_string_nor_number_is_refused() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;
    client
        .send_json(json!({"op": "ping", "id": {"nested": true}}))
        .await;
    let reply = client.expect_op("error").await;
    assert_eq!(reply["code"], "bad_request");
    client.send_json(json!({"op": "ping", "id": 17})).await;
    assert_eq!(client.expect_op("pong").await["id"], 17);
}

#[tokio::test]
async fn binary_frames_are_bad_requests() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;
    client
        .socket
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(client.expect_op("error").await["code"], "bad_request");
    client.assert_alive().await;
}

#[tokio::test]
async fn malformed_topics_are_invalid_topic() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;
    let long = "a".repeat(256);
    for topic in [
        "",
        "a..b",
        ".a",
        "a.",
        "a b",
        "a/b",
        "news.sp*rts",
        long.as_str(),
    ] {
        client
            .expect_error(json!({"op": "subscribe", "topic": topic}), "invalid_topic")
            .await;
        client
            .expect_error(
                json!({"op": "publish", "topic": topic, "data": 1}),
                "invalid_topic",
            )
            .await;
    }
    client.assert_alive().await;
}

#[tokio::test]
async fn publishing_to_a_wildcard_is_invalid_topic() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;
    client
        .expect_error(
            json!({"op": "publish", "topic": "news.*", "data": 1}),
            "invalid_topic",
        )
        .await;
    client
        .expect_error(
            json!({"op": "publish", "topic": "#", "data": 1}),
            "invalid_topic",
        )
        .await;
    client.assert_alive().await;
}

#[tokio::test]
async fn publishing_to_another_users_private_topic_is_forbidden_and_wildcards_never_reach_it() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;
    // Any pattern may be subscribed: privacy is kept at delivery.
    for pattern in ["user.bob", "user.*", "user.#", "#", "*.bob", "*.*"] {
        client.subscribe(pattern).await;
    }
    client
        .expect_error(
            json!({"op": "publish", "topic": "user.bob", "data": "spoof"}),
            "forbidden",
        )
        .await;
    let response = http()
        .post(node.url("/api/users/bob/messages"))
        .json(&json!({"data": "for bob only"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    client.expect_silence(Duration::from_millis(300)).await;
    client.assert_alive().await;
}

#[tokio::test]
async fn a_burst_beyond_the_rate_limit_is_rate_limited_and_the_session_recovers() {
    let node = TestNode::start(&["--rate-limit", "5"]);
    let mut client = node.connect().await;
    for n in 0..40 {
        client.send_json(json!({"op": "ping", "id": n})).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    for n in 0..40 {
        let reply = client.next_json().await;
        assert_eq!(reply["id"], n, "one answer per op, in order: {reply}");
        match reply["op"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(reply["code"], "rate_limited");
                limited += 1;
            }
            _ => panic!("{reply}"),
        }
    }
    // The burst allowance is twice the rate; a slow run may refill one more.
    assert!((10..=12).contains(&pongs), "{pongs} pongs");
    assert_eq!(pongs + limited, 40);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    client.assert_alive().await;
}

#[tokio::test]
async fn subscriptions_beyond_the_limit_are_too_many_subscriptions() {
    let node = TestNode::start(&["--max-subscriptions", "2"]);
    let mut client = node.connect().await;
    client.subscribe("a").await;
    client.subscribe("b").await;
    client.subscribe("a").await; // already held: no new slot
    client
        .expect_error(
            json!({"op": "subscribe", "topic": "c"}),
            "too_many_subscriptions",
        )
        .await;
    client.unsubscribe("a").await;
    client.subscribe("c").await;
}

#[tokio::test]
async fn send_without_backend_messaging_is_unavailable() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;
    let reply = client
        .expect_error(
            json!({"op": "send", "destination": "orders.create", "data": {"sku": 42}}),
            "unavailable",
        )
        .await;
    assert!(reply["message"]
        .as_str()
        .unwrap()
        .contains("nothing was sent"));
    client
        .expect_error(
            json!({"op": "send", "destination": "bad dest", "data": 1}),
            "invalid_topic",
        )
        .await;
    client.assert_alive().await;
}

#[tokio::test]
async fn request_to_an_unconfigured_service_is_unknown_service() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;
    client
        .expect_error(
            json!({"op": "request", "service": "account", "method": "GET", "path": "/accounts/42", "body": null}),
            "unknown_service",
        )
        .await;
    client.assert_alive().await;
}

#[tokio::test]
async fn errors_without_an_id_carry_no_id() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;
    client
        .send_json(json!({"op": "subscribe", "topic": "a..b"}))
        .await;
    let reply = client.expect_op("error").await;
    assert_eq!(reply["code"], "invalid_topic");
    assert!(reply.get("id").is_none());
}
