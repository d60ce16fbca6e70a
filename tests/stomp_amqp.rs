//! STOMP sessions and RabbitMQ: a SEND to `/app/...` reaches the backends
//! through `herald.client`, byte-exact, and is receipted only once RabbitMQ
//! confirmed it; one that cannot be confirmed is an ERROR and the close;
//! what a microservice publishes to `herald.topics` reaches STOMP
//! subscribers byte-exact with its content-type.

mod support;

use support::stomp::*;
use support::*;

const SECRET: &str = "stomp-amqp-secret";

#[tokio::test]
async fn send_to_app_reaches_the_backend_byte_exact_with_its_headers_before_the_receipt() {
    let node = TestNode::start_amqp(&["--jwt-secret", SECRET]).await;
    let rabbit = Rabbit::connect().await;
    // `/app/orders/create` is routing key `orders.create`; this test's own
    // segment in the middle keeps other tests' sends out of its queue.
    let base = unique_topic("orders");
    let key = format!("{base}.create");
    let destination = format!("/app/{}/create", base.replace('.', "/"));
    let queue = format!("test-{key}");
    rabbit.queue(&queue, "herald.client", &key, false).await;

    let alice = token(SECRET, "alice", 3600);
    let (mut client, connected) = node.stomp_with(&[("passcode", &alice)]).await;
    let body = "{\"sku\":42,\"note\":\"d\u{e9}j\u{e0} vu\"}".as_bytes();
    client
        .send_to(&destination, "application/vnd.order+json", body)
        .await;

    // The RECEIPT means RabbitMQ confirmed: the message is queued already.
    let delivery = rabbit
        .get(&queue)
        .await
        .expect("queued before the RECEIPT")
        .delivery;
    assert_eq!(&delivery.data[..], body);
    assert_eq!(delivery.routing_key.as_str(), key);
    let properties = &delivery.properties;
    assert_eq!(
        properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/vnd.order+json")
    );
    assert_eq!(
        header(properties, "x-herald-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        header(properties, "x-herald-session").as_deref(),
        connected.get("session")
    );

    // Without a content-type, bytes as they are, labelled by what they are:
    // these are neither JSON nor UTF-8.
    let bytes = [0u8, 0xff, b'{', 0x80, 0];
    client
        .with_receipt(
            StompFrame::new("SEND")
                .header("destination", &destination)
                .sized_body(&bytes[..]),
        )
        .await;
    let delivery = rabbit
        .get(&queue)
        .await
        .expect("queued before the RECEIPT")
        .delivery;
    assert_eq!(&delivery.data[..], &bytes[..]);
    assert_eq!(
        delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str()),
        Some("application/octet-stream")
    );
    rabbit.delete_queue(&queue).await;
}

#[tokio::test]
async fn send_to_app_with_amqp_off_is_an_error_naming_the_receipt_and_closes_1013() {
    let node = TestNode::start(&[]);
    let mut client = node.stomp().await;
    client
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", "/app/orders/create")
                .header("content-type", "application/json")
                .header("receipt", "order-1")
                .body("{\"sku\":42}"),
        )
        .await;
    let error = client.expect_error_then_close(1013).await;
    assert_eq!(error.get("receipt-id"), Some("order-1"), "{error:?}");
}

#[tokio::test]
async fn send_to_app_no_backend_consumes_is_an_error_and_closes_1013() {
    let node = TestNode::start_amqp(&[]).await;
    let mut client = node.stomp().await;
    let destination = format!("/app/{}", unique_topic("nobody.listens"));
    client
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", &destination)
                .header("receipt", "unroutable")
                .body("1"),
        )
        .await;
    let error = client.expect_error_then_close(1013).await;
    assert_eq!(error.get("receipt-id"), Some("unroutable"), "{error:?}");
}

#[tokio::test]
async fn a_binary_message_published_to_herald_topics_reaches_stomp_byte_exact_with_its_type() {
    let node = TestNode::start_amqp(&[]).await;
    let rabbit = Rabbit::connect().await;
    let base = unique_topic("feed");
    let topic = format!("{base}.raw");
    let mut exact = node.stomp().await;
    exact.subscribe(&format!("/topic/{topic}"), "exact").await;
    let mut wildcard = node.stomp().await;
    wildcard.subscribe(&format!("/topic/{base}.#"), "all").await;

    let body = [0xffu8, 0, b'a', 0xc3, 0x28, b'\n', 0, 0x80];
    rabbit
        .publish_with(
            "herald.topics",
            &topic,
            &body,
            lapin::BasicProperties::default().with_content_type("text/plain".into()),
        )
        .await;
    for (client, subscription) in [(&mut exact, "exact"), (&mut wildcard, "all")] {
        let message = client.expect_message().await;
        assert_eq!(message.body, body, "{message:?}");
        assert_eq!(message.get("content-type"), Some("text/plain"));
        assert_eq!(message.get("content-length"), Some("8"));
        assert_eq!(message.get("subscription"), Some(subscription));
        assert_eq!(
            message.get("destination"),
            Some(format!("/topic/{topic}").as_str())
        );
        assert!(
            message.binary,
            "non-UTF-8 goes in a binary WebSocket message"
        );
    }
}

#[tokio::test]
async fn a_content_type_too_long_for_amqp_is_refused_and_the_bridge_stays_up() {
    let node = TestNode::start_amqp(&[]).await;
    let topic = unique_topic("long.type");
    let mut client = node.stomp().await;
    let content_type = format!("text/plain;x={}", "a".repeat(300));
    client
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", &topic_destination(&topic))
                .header("content-type", &content_type)
                .header("receipt", "long")
                .body("hi"),
        )
        .await;
    let error = client.expect_error_then_close(1008).await;
    assert_eq!(error.get("receipt-id"), Some("long"), "{error:?}");
    // Publishing to the other nodes still works: nothing took the bridge down.
    let (status, body) = node
        .post(
            "/api/publish",
            serde_json::json!({"topic": topic, "data": 1}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(body.get("local_only").is_none(), "{body}");
    assert_eq!(node.readyz().await.0, 200);
}

#[tokio::test]
async fn a_commit_whose_send_cannot_be_confirmed_gets_an_error_and_no_receipt() {
    let node = TestNode::start_amqp(&[]).await;
    let mut client = node.stomp().await;
    let destination = format!("/app/{}", unique_topic("nobody.listens"));
    client
        .with_receipt(StompFrame::new("BEGIN").header("transaction", "t"))
        .await;
    client
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", &destination)
                .header("transaction", "t")
                .header("receipt", "held")
                .body("1"),
        )
        .await;
    client
        .send_frame(
            &StompFrame::new("COMMIT")
                .header("transaction", "t")
                .header("receipt", "commit"),
        )
        .await;
    // The first frame back must be the ERROR: no RECEIPT for the COMMIT or
    // its SEND comes before (or instead of) it.
    let error = client.expect_error_then_close(1013).await;
    assert_eq!(error.get("receipt-id"), Some("held"), "{error:?}");
}

fn topic_destination(topic: &str) -> String {
    format!("/topic/{topic}")
}
