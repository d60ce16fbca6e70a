//! Two Herald nodes on one RabbitMQ act as one gateway: every subscriber on
//! either node gets every message exactly once, whoever published it.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use support::*;

const QUIET: Duration = Duration::from_millis(500);
const CLUSTER: &str = "cluster-test-secret";

#[tokio::test]
async fn subscribers_on_both_nodes_get_every_message_exactly_once() {
    let node_a = TestNode::start_amqp(&["--node-id", &format!("n-a{}", std::process::id())]).await;
    let node_b = TestNode::start_amqp(&["--node-id", &format!("n-b{}", std::process::id())]).await;
    let rabbit = Rabbit::connect().await;
    let topic = unique_topic("cluster");

    let mut subscribers = Vec::new();
    for node in [&node_a, &node_a, &node_b, &node_b] {
        let mut client = node.connect().await;
        client.subscribe(&topic).await;
        subscribers.push(client);
    }
    // One more on each node through a wildcard, also matched by its exact
    // subscription: still one copy.
    for node in [&node_a, &node_b] {
        let mut client = node.connect().await;
        client.subscribe(&topic).await;
        client.subscribe(&format!("{topic}.#")).await;
        subscribers.push(client);
    }

    let mut publisher = node_a.connect().await;
    publisher
        .publish(&topic, json!("from a WebSocket on node A"))
        .await;
    node_b
        .publish(&topic, json!("from the HTTP API of node B"))
        .await;
    rabbit
        .publish("herald.topics", &topic, b"\"from a microservice\"")
        .await;

    let expected = [
        "from a WebSocket on node A",
        "from the HTTP API of node B",
        "from a microservice",
    ];
    let checks = subscribers.into_iter().map(|mut client| async move {
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            got.push(
                client.expect_message().await["data"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        client.expect_silence(QUIET).await;
        got.sort();
        got
    });
    let mut sorted = expected.map(str::to_owned).to_vec();
    sorted.sort();
    for got in join_all(checks).await {
        assert_eq!(got, sorted);
    }
}

#[tokio::test]
async fn messages_from_one_publisher_stay_in_order_across_nodes() {
    let node_a = TestNode::start_amqp(&["--rate-limit", "1000"]).await;
    let node_b = TestNode::start_amqp(&[]).await;
    let topic = unique_topic("ordered");
    let mut far = node_b.connect().await;
    far.subscribe(&topic).await;
    let mut near = node_a.connect().await;
    near.subscribe(&topic).await;
    let mut publisher = node_a.connect().await;
    for n in 0..200 {
        publisher
            .send_json(json!({"op": "publish", "topic": topic, "data": n}))
            .await;
    }
    for client in [&mut far, &mut near] {
        for n in 0..200 {
            assert_eq!(client.expect_message().await["data"], n);
        }
    }
}

#[tokio::test]
async fn kicking_a_user_on_one_node_closes_their_sessions_on_every_node() {
    let node_a = TestNode::start_amqp(&["--jwt-secret", "s", "--cluster-secret", CLUSTER]).await;
    let node_b = TestNode::start_amqp(&["--jwt-secret", "s", "--cluster-secret", CLUSTER]).await;
    let user = format!("kicked{}", std::process::id());
    let mut sessions = Vec::new();
    for node in [&node_a, &node_b, &node_b] {
        sessions.push(node.connect_as("s", &user).await.0);
    }
    let (mut bystander, _) = node_b.connect_as("s", "bystander").await;

    let response = http()
        .delete(node_a.url(&format!("/api/users/{user}/sessions")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["closed"], 1, "closed locally: {body}");
    for client in &mut sessions {
        assert_eq!(client.expect_close().await, 4003);
    }
    bystander.assert_alive().await;
}

#[tokio::test]
async fn user_messages_through_the_api_reach_the_user_on_any_node() {
    let node_a = TestNode::start_amqp(&["--jwt-secret", "s"]).await;
    let node_b = TestNode::start_amqp(&["--jwt-secret", "s"]).await;
    let user = format!("roamer{}", std::process::id());
    let (mut client, _) = node_b.connect_as("s", &user).await;
    client.subscribe(&format!("user.{user}")).await;
    let response = http()
        .post(node_a.url(&format!("/api/users/{user}/messages")))
        .json(&json!({"data": {"unread": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(client.expect_message().await["data"]["unread"], 3);
}

/// A publisher far faster than a small bridge queue: every publish is
/// answered, this node's subscriber gets every message once and in order,
/// and every publish acknowledged without `local_only` reaches the other
/// node too, in order.
#[tokio::test]
async fn a_saturated_bridge_answers_local_only_and_every_plain_ack_reaches_the_other_node() {
    // Subscribers are read only after the storm: their queues hold it all.
    let roomy = ["--outbound-queue-frames", "10000"];
    let near_node = TestNode::start_amqp(&[
        "--bridge-queue",
        "16",
        "--rate-limit",
        "100000",
        roomy[0],
        roomy[1],
    ])
    .await;
    let far_node = TestNode::start_amqp(&roomy).await;
    let topic = unique_topic("saturated");
    let mut near = near_node.connect().await;
    near.subscribe(&topic).await;
    let mut far = far_node.connect().await;
    far.subscribe(&topic).await;
    let mut publisher = near_node.connect().await;
    const COUNT: usize = 3000;
    let ops = (0..COUNT)
        .map(|n| json!({"op": "publish", "topic": topic, "data": n}))
        .collect();
    let ids = publisher.send_all(ops).await;
    let replies = publisher.replies(&ids).await;
    let mut everywhere = Vec::new();
    for (n, reply) in replies.iter().enumerate() {
        assert_eq!(reply["op"], "ack", "publish {n}: {reply}");
        if reply["local_only"] != true {
            everywhere.push(n);
        }
    }
    for n in 0..COUNT {
        assert_eq!(near.expect_message().await["data"], n, "this node's copy");
    }
    near.expect_silence(QUIET).await;
    // The far node may get some local_only ones too (RabbitMQ took them
    // but a confirm came late): the plain acks must all be there, in order.
    let mut far_got = Vec::new();
    while let Some(frame) = far.try_next_json(QUIET).await {
        far_got.push(frame["data"].as_u64().unwrap_or(u64::MAX) as usize);
    }
    let mut sorted = far_got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), far_got.len(), "no duplicates on the far node");
    assert_eq!(sorted, far_got, "the far node keeps the publisher's order");
    let missing: Vec<&usize> = everywhere.iter().filter(|n| !far_got.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "acked without local_only but lost: {missing:?}"
    );
    println!(
        "{} of {COUNT} publishes acked for every node, {} local_only; the far node got {}",
        everywhere.len(),
        COUNT - everywhere.len(),
        far_got.len()
    );
}

#[tokio::test]
async fn without_a_cluster_secret_a_kick_stays_on_its_node() {
    let node_a = TestNode::start_amqp(&["--jwt-secret", "s"]).await;
    let node_b = TestNode::start_amqp(&["--jwt-secret", "s"]).await;
    let user = format!("local{}", std::process::id());
    let (mut here, _) = node_a.connect_as("s", &user).await;
    let (mut there, _) = node_b.connect_as("s", &user).await;
    let response = http()
        .delete(node_a.url(&format!("/api/users/{user}/sessions")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["closed"], 1, "{body}");
    assert!(
        body.get("other_nodes").is_none(),
        "nobody else asked: {body}"
    );
    assert_eq!(here.expect_close().await, 4003);
    there.expect_silence(QUIET).await;
    there.assert_alive().await;
    assert!(node_a
        .logs()
        .iter()
        .any(|line| line.contains("HERALD_CLUSTER_SECRET")));
}

/// Publishes `body` to `herald.control` as another node would.
async fn publish_control(rabbit: &Rabbit, body: &[u8]) {
    rabbit
        .publish_with(
            "herald.control",
            "",
            body,
            lapin::BasicProperties::default(),
        )
        .await;
}

async fn control_rejected(node: &TestNode) -> u64 {
    node.stats().await["amqp"]["control_rejected"]
        .as_u64()
        .expect("a count")
}

#[tokio::test]
async fn forged_and_replayed_kicks_are_refused_and_counted() {
    let node_a = TestNode::start_amqp(&["--jwt-secret", "s", "--cluster-secret", CLUSTER]).await;
    let node_b = TestNode::start_amqp(&["--jwt-secret", "s", "--cluster-secret", CLUSTER]).await;
    let rabbit = Rabbit::connect().await;
    // A queue of the test's own sees what nodes send on the control
    // exchange, as an eavesdropper on the vhost would.
    let captured = unique_topic("test-control");
    rabbit.queue(&captured, "herald.control", "", false).await;

    let victim = format!("victim{}", std::process::id());
    let (mut session, _) = node_b.connect_as("s", &victim).await;

    // Unsigned, as before signing existed, and signed with a guess.
    let unsigned = json!({"kick": victim, "origin": "n-forger"});
    publish_control(&rabbit, unsigned.to_string().as_bytes()).await;
    let guessed = json!({
        "kick": victim, "origin": "n-forger", "ts": 1, "nonce": "00", "mac": "00"
    });
    publish_control(&rabbit, guessed.to_string().as_bytes()).await;
    assert!(
        eventually(WAIT, || async { control_rejected(&node_b).await >= 2 }).await,
        "both forgeries counted"
    );
    session.assert_alive().await;

    // A real kick of someone else, captured and replayed against the victim
    // (altered) and as it was (replayed): neither gets through.
    let other = format!("other{}", std::process::id());
    let (mut other_session, _) = node_b.connect_as("s", &other).await;
    let response = http()
        .delete(node_a.url(&format!("/api/users/{other}/sessions")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(other_session.expect_close().await, 4003);
    let real = rabbit.expect_get(&captured).await.delivery.data;
    let mut altered: serde_json::Value = serde_json::from_slice(&real).expect("JSON");
    altered["kick"] = json!(victim);
    let before = control_rejected(&node_b).await;
    publish_control(&rabbit, altered.to_string().as_bytes()).await;
    publish_control(&rabbit, &real).await;
    assert!(
        eventually(WAIT, || async {
            control_rejected(&node_b).await >= before + 2
        })
        .await,
        "the altered and the replayed kick counted"
    );
    session.assert_alive().await;
    rabbit.delete_queue(&captured).await;
}
