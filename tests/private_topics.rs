//! Private topics by delivery: every session of an authenticated user
//! receives what is sent to `user.{id}` from its `welcome` on, without
//! subscribing, on every node; nobody else does, whatever pattern they hold,
//! so wildcards such as `#` or `*.alice` may be subscribed by anyone.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const SECRET: &str = "private-topics-secret";
const QUIET: Duration = Duration::from_millis(400);

async fn connect_as(node: &TestNode, user: &str) -> WsClient {
    node.connect_as(SECRET, user).await.0
}

async fn message_user(node: &TestNode, user: &str, data: Value) {
    let (status, body) = node
        .post(
            &format!("/api/users/{user}/messages"),
            json!({"data": data}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

async fn expect_user_message(client: &mut WsClient, user: &str, data: &Value) {
    let message = client.expect_message().await;
    assert_eq!(message["topic"], format!("user.{user}"), "{message}");
    assert_eq!(&message["data"], data, "{message}");
}

/// A topic of two segments ending in `last`, used by no other test.
fn topic_ending_in(last: &str) -> String {
    format!("{}.{last}", unique_topic("news").replace('.', "-"))
}

#[tokio::test]
async fn a_users_messages_reach_every_session_of_that_user_without_a_subscription() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    // Nothing but the welcome: no subscribe, no other op.
    let mut alice_phone = connect_as(&node, "alice").await;
    let mut alice_laptop = connect_as(&node, "alice").await;
    let mut bob = connect_as(&node, "bob").await;
    let mut anonymous = node.connect().await;

    let data = json!({"unread": 3});
    message_user(&node, "alice", data.clone()).await;
    for client in [&mut alice_phone, &mut alice_laptop] {
        expect_user_message(client, "alice", &data).await;
    }
    bob.expect_silence(QUIET).await;
    anonymous.expect_silence(Duration::from_millis(50)).await;
    alice_phone.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn wildcards_are_allowed_but_never_deliver_another_users_private_messages() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let mut alice = connect_as(&node, "alice").await;
    let mut bob = connect_as(&node, "bob").await;
    let mut anonymous = node.connect().await;
    for pattern in ["#", "*.alice"] {
        bob.subscribe(pattern).await;
    }
    anonymous.subscribe("#").await;

    let private = json!("for alice only");
    message_user(&node, "alice", private.clone()).await;
    // Also published as a plain topic, the way a backend may.
    node.publish("user.alice", json!("also for alice only"))
        .await;
    expect_user_message(&mut alice, "alice", &private).await;
    expect_user_message(&mut alice, "alice", &json!("also for alice only")).await;
    bob.expect_silence(QUIET).await;
    anonymous.expect_silence(Duration::from_millis(50)).await;

    // Public topics do reach them, once each however many patterns match.
    let public = topic_ending_in("alice");
    node.publish(&public, json!("public")).await;
    for client in [&mut bob, &mut anonymous] {
        let message = client.expect_message().await;
        assert_eq!(message["topic"], public.as_str(), "{message}");
        assert_eq!(message["data"], "public", "{message}");
    }
    bob.expect_silence(QUIET).await;
    anonymous.expect_silence(Duration::from_millis(50)).await;
    alice.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn an_explicit_subscription_to_the_users_own_topic_adds_no_copy_and_dropping_it_keeps_the_implicit_one(
) {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let mut alice = connect_as(&node, "alice").await;
    alice.subscribe("user.alice").await;
    alice.subscribe("user.alice.#").await;
    let data = json!({"n": 1});
    message_user(&node, "alice", data.clone()).await;
    expect_user_message(&mut alice, "alice", &data).await;
    alice.expect_silence(QUIET).await;
    // Unsubscribing the explicit one keeps the implicit one.
    alice.unsubscribe("user.alice").await;
    alice.unsubscribe("user.alice.#").await;
    let data = json!({"n": 2});
    message_user(&node, "alice", data.clone()).await;
    expect_user_message(&mut alice, "alice", &data).await;
    alice.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_subscription_below_the_users_topic_works_for_that_user_only() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let mut alice_subscribed = connect_as(&node, "alice").await;
    let mut alice_not = connect_as(&node, "alice").await;
    let mut bob = connect_as(&node, "bob").await;
    alice_subscribed.subscribe("user.alice.orders").await;
    bob.subscribe("#").await;

    node.publish("user.alice.orders", json!({"order": 7})).await;
    let message = alice_subscribed.expect_message().await;
    assert_eq!(message["topic"], "user.alice.orders", "{message}");
    assert_eq!(message["data"], json!({"order": 7}), "{message}");
    alice_subscribed.expect_silence(QUIET).await;
    // The implicit subscription is `user.alice` itself, nothing below it.
    alice_not.expect_silence(Duration::from_millis(50)).await;
    bob.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn with_rabbitmq_a_users_messages_reach_them_on_another_node_without_a_subscription() {
    let here = TestNode::start_amqp(&["--jwt-secret", SECRET]).await;
    let there = TestNode::start_amqp(&["--jwt-secret", SECRET]).await;
    let alice = format!("alice{}", std::process::id());
    // Straight after the welcome, with no op in between.
    let mut alice_there = connect_as(&there, &alice).await;
    let data = json!({"unread": 1});
    message_user(&here, &alice, data.clone()).await;
    expect_user_message(&mut alice_there, &alice, &data).await;

    // Nobody else on that node gets it, whatever they subscribed.
    let mut bob_there = connect_as(&there, &format!("bob{}", std::process::id())).await;
    bob_there.subscribe("#").await;
    let data = json!({"unread": 2});
    message_user(&here, &alice, data.clone()).await;
    expect_user_message(&mut alice_there, &alice, &data).await;
    alice_there.expect_silence(QUIET).await;
    bob_there.expect_silence(Duration::from_millis(50)).await;
}

/// A signed-in session's `welcome` waits for the node to be bound for
/// `user.{id}`; whatever the client sends meanwhile is held and handled
/// after the `welcome`, in the order it was sent.
#[tokio::test]
async fn ops_sent_before_the_welcome_are_answered_after_it_in_order() {
    let node = TestNode::start_amqp(&["--jwt-secret", SECRET]).await;
    let user = format!("early{}", std::process::id());
    let topic = unique_topic("early");
    for round in 0..5 {
        let mut client = WsClient::open(&node.ws_url_as(SECRET, &format!("{user}x{round}"), 60))
            .await
            .expect("WebSocket opens");
        // Sent before anything is read: subscribe, unsubscribe, subscribe,
        // then pings, each answered by id.
        let ops = vec![
            json!({"op": "subscribe", "topic": topic}),
            json!({"op": "unsubscribe", "topic": topic}),
            json!({"op": "subscribe", "topic": topic}),
            json!({"op": "ping"}),
            json!({"op": "ping"}),
        ];
        let ids = client.send_all(ops).await;
        let welcome = client.next_json().await;
        assert_eq!(welcome["op"], "welcome", "round {round}: {welcome}");
        // Pings are answered at once, so they come after the first three
        // ops' answers only if the ops were handled in order.
        let mut order = Vec::new();
        for _ in 0..ids.len() {
            let frame = client.next_json().await;
            assert!(frame["op"] == "ack" || frame["op"] == "pong", "{frame}");
            order.push(frame["id"].as_str().unwrap_or_default().to_owned());
        }
        let pongs: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|(_, id)| **id == ids[3] || **id == ids[4])
            .map(|(at, _)| at)
            .collect();
        assert_eq!(pongs.len(), 2, "{order:?}");
        assert!(
            pongs[0] < pongs[1],
            "pings answered out of order: {order:?}"
        );
        // The last op to take effect was the second subscribe.
        node.publish(&topic, json!(round)).await;
        assert_eq!(client.expect_message().await["data"], round);
    }
}
