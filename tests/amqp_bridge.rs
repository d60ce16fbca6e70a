//! One node with the RabbitMQ bridge: microservices (played by lapin)
//! publishing to browsers, browsers sending to microservices with confirms,
//! bindings that follow subscriptions, and exchanges mapped in.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const QUIET: Duration = Duration::from_millis(400);

#[tokio::test]
async fn a_message_published_to_herald_topics_reaches_exact_and_wildcard_subscribers() {
    let node = TestNode::start_amqp(&[]).await;
    let rabbit = Rabbit::connect().await;
    let base = unique_topic("prices");
    let mut exact = node.connect().await;
    exact.subscribe(&format!("{base}.eur")).await;
    let mut star = node.connect().await;
    star.subscribe(&format!("{base}.*")).await;
    let mut hash = node.connect().await;
    hash.subscribe(&format!("{base}.#")).await;

    rabbit
        .publish("herald.topics", &format!("{base}.eur"), br#"{"bid": 1.08}"#)
        .await;
    for client in [&mut exact, &mut star, &mut hash] {
        let message = client.expect_message().await;
        assert_eq!(message["topic"], format!("{base}.eur"));
        assert_eq!(message["data"], json!({"bid": 1.08}));
        assert!(message["mid"].as_str().is_some_and(|m| !m.is_empty()));
    }

    rabbit
        .publish(
            "herald.topics",
            &format!("{base}.usd.spot"),
            b"plain text, not JSON",
        )
        .await;
    assert_eq!(hash.expect_message().await["data"], "plain text, not JSON");
    exact.expect_silence(QUIET).await;
    star.expect_silence(QUIET).await;
}

#[tokio::test]
async fn the_publishers_message_id_and_timestamp_are_kept() {
    let node = TestNode::start_amqp(&[]).await;
    let rabbit = Rabbit::connect().await;
    let topic = unique_topic("stamped");
    let mut client = node.connect().await;
    client.subscribe(&topic).await;
    let properties = lapin::BasicProperties::default()
        .with_message_id("order-77".into())
        .with_timestamp(1_700_000_000);
    rabbit
        .publish_with("herald.topics", &topic, b"1", properties)
        .await;
    let message = client.expect_message().await;
    assert_eq!(message["mid"], "order-77");
    assert_eq!(message["ts"], 1_700_000_000_000u64);
}

#[tokio::test]
async fn send_reaches_the_backend_with_headers_and_is_acked_only_after_the_confirm() {
    let node = TestNode::start_amqp(&["--jwt-secret", "s"]).await;
    let rabbit = Rabbit::connect().await;
    let destination = unique_topic("orders.create");
    let queue = format!("test-{destination}");
    rabbit
        .queue(&queue, "herald.client", &destination, false)
        .await;

    let (mut client, welcome) = node.connect_as("s", "alice").await;
    let reply = client
        .call(json!({"op": "send", "destination": destination, "data": {"sku": 42}}))
        .await;
    assert_eq!(reply["op"], "ack", "{reply}");

    // The ack means RabbitMQ confirmed: the message is already queued.
    let message = rabbit.get(&queue).await.expect("queued before the ack");
    let delivery = message.delivery;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&delivery.data).unwrap(),
        json!({"sku": 42})
    );
    assert_eq!(delivery.routing_key.as_str(), destination);
    let properties = &delivery.properties;
    assert_eq!(
        header(properties, "x-herald-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        header(properties, "x-herald-session").as_deref(),
        welcome["session"].as_str()
    );
    assert_eq!(
        header(properties, "x-herald-node").as_deref(),
        welcome["node"].as_str()
    );
    assert_eq!(
        properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert!(properties.message_id().is_some());
    assert!(properties.timestamp().is_some());
    rabbit.delete_queue(&queue).await;
}

#[tokio::test]
async fn send_to_a_destination_no_backend_consumes_is_unavailable_not_lost() {
    let node = TestNode::start_amqp(&[]).await;
    let mut client = node.connect().await;
    let destination = unique_topic("nobody.listens");
    let reply = client
        .expect_error(
            json!({"op": "send", "destination": destination, "data": 1}),
            "unavailable",
        )
        .await;
    assert!(reply["message"]
        .as_str()
        .unwrap()
        .contains("nothing was delivered"));
    client.assert_alive().await;
}

#[tokio::test]
async fn bindings_follow_subscriptions() {
    let node = TestNode::start_amqp(&[]).await;
    let rabbit = Rabbit::connect().await;
    let topic = unique_topic("bound");
    let mut first = node.connect().await;
    let mut second = node.connect().await;
    first.subscribe(&topic).await;
    second.subscribe(&topic).await;

    // One leaves: the pattern stays bound for the other.
    first.unsubscribe(&topic).await;
    rabbit
        .publish("herald.topics", &topic, b"\"still bound\"")
        .await;
    assert_eq!(second.expect_message().await["data"], "still bound");

    // The last one leaves: RabbitMQ stops routing the topic to this node
    // at all (the unbind follows the unsubscribe's ack), so a message
    // published then never enters the node. (Other tests' kicks on the
    // control exchange reach every node, so `messages.in` is the measure,
    // not `amqp.consumed`.)
    second.unsubscribe(&topic).await;
    let unbound = eventually(WAIT, || async { bindings_for(&topic).is_empty() }).await;
    assert!(unbound, "still bound: {:?}", bindings_for(&topic));
    let entered = node.stats().await["messages"]["in"].as_u64().unwrap();
    rabbit
        .publish("herald.topics", &topic, b"\"unbound\"")
        .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        node.stats().await["messages"]["in"].as_u64().unwrap(),
        entered
    );
    second.expect_silence(Duration::from_millis(50)).await;

    // Subscribing again binds again.
    first.subscribe(&topic).await;
    rabbit
        .publish("herald.topics", &topic, b"\"bound again\"")
        .await;
    assert_eq!(first.expect_message().await["data"], "bound again");
}

#[tokio::test]
async fn publish_from_a_client_goes_through_rabbitmq_and_arrives_once() {
    let node = TestNode::start_amqp(&[]).await;
    let rabbit = Rabbit::connect().await;
    let topic = unique_topic("roundtrip");
    let queue = format!("test-{topic}");
    rabbit.queue(&queue, "herald.topics", &topic, false).await;
    let mut client = node.connect().await;
    client.subscribe(&topic).await;
    client
        .send_json(json!({"op": "publish", "topic": topic, "data": "hello", "id": "p1"}))
        .await;
    let mut ops = vec![
        client.next_json().await["op"].clone(),
        client.next_json().await["op"].clone(),
    ];
    ops.sort_by_key(|op| op.to_string());
    assert_eq!(ops, [json!("ack"), json!("message")]);
    client.expect_silence(QUIET).await;
    // Backends bound to herald.topics see client publishes too.
    let seen = rabbit.expect_get(&queue).await;
    assert_eq!(&seen.delivery.data[..], b"\"hello\"");
    rabbit.delete_queue(&queue).await;
}

#[tokio::test]
async fn an_existing_exchange_is_mapped_onto_topics_without_changing_its_publisher() {
    let rabbit = Rabbit::connect().await;
    let exchange = unique_topic("legacy-greetings");
    rabbit
        .channel
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Direct,
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("herald-inbound-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{exchange}.toml"));
    std::fs::write(
        &file,
        format!("[[amqp.inbound]]\nexchange = \"{exchange}\"\nbinding = \"hello\"\ntopic = \"greetings.{{routing_key}}\"\n"),
    )
    .unwrap();
    let node = TestNode::start_amqp(&["--config", file.to_str().unwrap()]).await;
    let mut client = node.connect().await;
    client.subscribe("greetings.hello").await;

    rabbit
        .publish(&exchange, "hello", br#"{"content": "Hello, World!"}"#)
        .await;
    let message = client.expect_message().await;
    assert_eq!(message["topic"], "greetings.hello");
    assert_eq!(message["data"]["content"], "Hello, World!");
    rabbit.publish(&exchange, "other-key", b"1").await;
    client.expect_silence(QUIET).await;
    let _ = rabbit
        .channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sessions_coming_and_going_are_announced_on_herald_lifecycle() {
    let rabbit = Rabbit::connect().await;
    let queue = unique_topic("test-lifecycle");
    rabbit
        .queue(&queue, "herald.lifecycle", "session.*", false)
        .await;
    let node = TestNode::start_amqp(&["--jwt-secret", "s"]).await;
    let (mut client, welcome) = node.connect_as("s", "bob").await;
    let session = welcome["session"].clone();
    let response = http()
        .delete(node.url("/api/users/bob/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(client.expect_close().await, 4003);

    let mut events = Vec::new();
    while events.len() < 2 {
        let message = rabbit.expect_get(&queue).await;
        let event: serde_json::Value = serde_json::from_slice(&message.delivery.data).unwrap();
        if event["session"] == session {
            events.push((message.delivery.routing_key.to_string(), event));
        }
    }
    assert_eq!(events[0].0, "session.connected");
    assert_eq!(events[0].1["event"], "session.connected");
    assert_eq!(events[0].1["user"], "bob");
    assert_eq!(events[1].0, "session.disconnected");
    assert_eq!(events[1].1["reason"], "kicked");
    assert!(events[1].1["ts"].as_u64().unwrap() >= events[0].1["ts"].as_u64().unwrap());
    assert_eq!(events[1].1["node"], node.stats().await["node"]);
    rabbit.delete_queue(&queue).await;
}

#[tokio::test]
async fn with_rabbitmq_unreachable_the_node_serves_websockets_delivers_locally_and_refuses_sends() {
    let node = TestNode::start(&["--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2f"]);
    let stats = node.stats().await;
    assert_eq!(stats["amqp"]["state"], "connecting");
    let response = http().get(node.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        http()
            .get(node.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let mut client = node.connect().await;
    client.subscribe("news.local").await;
    client
        .expect_error(
            json!({"op": "send", "destination": "orders", "data": 1}),
            "unavailable",
        )
        .await;
    // Publishes still reach this node's subscribers, and say that is all
    // they reached.
    let reply = client
        .call(json!({"op": "publish", "topic": "news.local", "data": 1}))
        .await;
    assert_eq!(reply["op"], "ack", "{reply}");
    assert_eq!(reply["local_only"], true, "{reply}");
    assert_eq!(client.expect_message().await["data"], 1);
    let response = http()
        .post(node.url("/api/publish"))
        .json(&json!({"topic": "news.local", "data": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["local_only"],
        true
    );
    assert_eq!(client.expect_message().await["data"], 2);
    client.expect_silence(QUIET).await;
    client.assert_alive().await;
}

/// The node queues bound to `herald.topics` with `key`, as RabbitMQ lists
/// them.
fn bindings_for(key: &str) -> Vec<String> {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_bindings",
            "--quiet",
            "--no-table-headers",
            "source_name",
            "destination_name",
            "routing_key",
        ])
        .output()
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            fields.len() == 3
                && fields[0] == "herald.topics"
                && fields[1].starts_with("herald.node.")
                && fields[2] == key
        })
        .map(str::to_owned)
        .collect()
}
