//! A RabbitMQ resource alarm (memory or disk): RabbitMQ stops reading from
//! every connection that publishes, so whatever waits on such a connection
//! waits forever. Herald must go on answering every op at once (a `send` is
//! `unavailable`, a `publish` reaches this node's subscribers and says it went
//! no further), say that it is blocked on `/readyz` and `/api/stats`, keep
//! delivering what RabbitMQ hands it, and recover when the alarm ends.
//!
//! The alarm is node-wide and would stall every other test's publishes, so
//! this file holds a single test: cargo runs test files one at a time.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicRejectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{json, Value};
use support::*;

/// How long any op may take to be answered during the alarm.
const ANSWER: Duration = Duration::from_secs(2);
const QUIET: Duration = Duration::from_millis(500);
/// Messages RabbitMQ routes to the node during the alarm; several times the
/// node's prefetch, so they only all arrive if the node's acks reach RabbitMQ.
const PARKED: usize = 40;
const PREFETCH: &str = "8";

/// RabbitMQ's memory alarm, raised for as long as this lives. Dropping it
/// restores the default watermark, also when the test panics, so that the
/// test files after this one find RabbitMQ taking publishes.
struct MemoryAlarm;

impl MemoryAlarm {
    fn raise() -> MemoryAlarm {
        // Made first, so that a raise that fails half-way is undone too.
        let alarm = MemoryAlarm;
        run_rabbitmqctl(&["set_vm_memory_high_watermark", "0"]);
        alarm
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["set_vm_memory_high_watermark", "0.4"])
            .output();
    }
}

/// Declares a queue owned by `rabbit`'s connection (so it goes away with
/// that connection, even if the test fails) and binds it.
async fn exclusive_queue(
    rabbit: &Rabbit,
    name: &str,
    binding: Option<(&str, &str)>,
    arguments: FieldTable,
) {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    rabbit
        .channel
        .queue_declare(name.into(), options, arguments)
        .await
        .expect("queue declare");
    if let Some((exchange, key)) = binding {
        rabbit.bind(name, exchange, key).await;
    }
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

fn assert_quick(took: Duration, what: &str) {
    assert!(
        took < ANSWER,
        "{what} took {took:?} during the alarm; every op must be answered within about a second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rabbitmq_alarm_every_op_is_answered_at_once_and_deliveries_keep_flowing() {
    let node = TestNode::start_amqp(&["--amqp-prefetch", PREFETCH]).await;
    let local = unique_topic("alarm.local");
    let remote = unique_topic("alarm.remote");
    let destination = unique_topic("alarm.orders");

    // How a message can reach the node while RabbitMQ blocks every
    // publishing connection: it cannot be published during the alarm, so it
    // is parked before it, in a queue that dead-letters into herald.topics
    // under `remote`. During the alarm, a connection that never published
    // (RabbitMQ keeps reading those) rejects the parked messages; RabbitMQ
    // dead-letters them itself, and routes them to the node's queue like
    // any publish. They are several times the node's prefetch, so they all
    // arrive only if the node's consumer acks keep reaching RabbitMQ, that
    // is, only if nothing the node publishes can block its consuming side.
    let feeder = Rabbit::connect().await;
    let watcher = Rabbit::connect().await;
    let parked = format!("test-parked-{remote}");
    let mut dead_letter = FieldTable::default();
    dead_letter.insert(
        "x-dead-letter-exchange".into(),
        long_string("herald.topics"),
    );
    dead_letter.insert("x-dead-letter-routing-key".into(), long_string(&remote));
    exclusive_queue(&watcher, &parked, None, dead_letter).await;
    for n in 0..PARKED {
        feeder.publish("", &parked, n.to_string().as_bytes()).await;
    }
    // What reaches RabbitMQ under `local` (must be nothing) and what
    // reaches the backend's queue for `destination`.
    let local_witness = format!("test-witness-{local}");
    exclusive_queue(
        &watcher,
        &local_witness,
        Some(("herald.topics", &local)),
        FieldTable::default(),
    )
    .await;
    let backend = format!("test-backend-{destination}");
    exclusive_queue(
        &watcher,
        &backend,
        Some(("herald.client", &destination)),
        FieldTable::default(),
    )
    .await;

    let mut subscriber = node.connect().await;
    subscriber.subscribe(&local).await;
    subscriber.subscribe(&remote).await;
    let mut client = node.connect().await;
    let reply = client
        .call(json!({"op": "send", "destination": destination, "data": {"n": "before"}}))
        .await;
    assert_eq!(reply["op"], "ack", "a send before the alarm: {reply}");

    let alarm = MemoryAlarm::raise();

    // RabbitMQ tells a connection that it is blocked only when that
    // connection next publishes, and that publish then waits for the alarm
    // to end. So one publish comes first, to a topic nobody holds: it must be
    // answered within the bound every op has (either way: it reached no
    // subscriber here and RabbitMQ holds it), and it lets the node learn of
    // the alarm. Every op after it must be answered at once.
    let nudge = unique_topic("alarm.nudge");
    let ((status, body), took) =
        timed(node.post("/api/publish", json!({"topic": nudge, "data": 0}))).await;
    assert!(
        status == 202 || status == 503,
        "the first publish of the alarm: {status} {body}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the first publish of the alarm took {took:?}"
    );
    let noticed = eventually(WAIT, || async {
        node.stats().await["amqp"]["state"] == "blocked"
    })
    .await;
    assert!(
        noticed,
        "the node never reported the alarm: {}",
        node.stats().await["amqp"]
    );

    let (reply, took) = timed(client.call(json!({
        "op": "send", "destination": destination, "data": {"n": "during"}
    })))
    .await;
    assert_quick(took, "a send");
    assert_eq!(reply["op"], "error", "a send during the alarm: {reply}");
    assert_eq!(reply["code"], "unavailable", "{reply}");

    let (reply, took) = timed(client.call(json!({
        "op": "publish", "topic": local, "data": "from a WebSocket"
    })))
    .await;
    assert_quick(took, "a publish");
    assert_eq!(reply["op"], "ack", "a publish during the alarm: {reply}");
    assert_eq!(reply["local_only"], true, "{reply}");
    let message = subscriber.expect_message().await;
    assert_eq!(
        (&message["topic"], &message["data"]),
        (&json!(local), &json!("from a WebSocket"))
    );

    let ((status, body), took) = timed(node.post(
        "/api/publish",
        json!({"topic": local, "data": "from the HTTP API"}),
    ))
    .await;
    assert_quick(took, "POST /api/publish");
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["local_only"], true, "{body}");
    let message = subscriber.expect_message().await;
    assert_eq!(
        (&message["topic"], &message["data"]),
        (&json!(local), &json!("from the HTTP API"))
    );

    let (status, body) = node.readyz().await;
    assert_eq!(status, 503, "/readyz during the alarm: {body}");
    assert_eq!(body["amqp"], "blocked", "{body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "/readyz must say why: {body}"
    );
    let stats = node.stats().await;
    assert_eq!(stats["amqp"]["state"], "blocked", "{}", stats["amqp"]);
    assert_eq!(stats["amqp"]["blocked"], true, "{}", stats["amqp"]);

    for n in 0..PARKED {
        let parked_message = watcher
            .channel
            .basic_get(parked.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get on a connection that never published")
            .unwrap_or_else(|| panic!("parked message {n} is missing"));
        parked_message
            .delivery
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await
            .expect("reject");
    }
    for n in 0..PARKED {
        let frame = subscriber.try_next_json(WAIT).await.unwrap_or_else(|| {
            panic!("delivery from RabbitMQ stopped during the alarm after {n} of {PARKED}")
        });
        assert_eq!(frame["op"], "message", "{frame}");
        assert_eq!(frame["topic"], remote.as_str(), "{frame}");
        assert_eq!(frame["data"], n, "{frame}");
    }

    // The alarm ends: the node says so and RabbitMQ takes sends again.
    drop(alarm);
    let recovered = eventually(WAIT, || async {
        let amqp = node.stats().await["amqp"].clone();
        amqp["state"] == "connected" && amqp["blocked"] == false
    })
    .await;
    assert!(
        recovered,
        "the node did not recover from the alarm: {}",
        node.stats().await["amqp"]
    );
    let mut acked_after = Vec::new();
    let deadline = Instant::now() + WAIT;
    for attempt in 1.. {
        let data = json!({"n": format!("after {attempt}")});
        let reply = client
            .call(json!({"op": "send", "destination": destination, "data": data}))
            .await;
        if reply["op"] == "ack" {
            acked_after.push(data);
            break;
        }
        assert_eq!(reply["code"], "unavailable", "{reply}");
        assert!(
            Instant::now() < deadline,
            "no send was acknowledged after the alarm ended"
        );
        // RabbitMQ may take a moment to read from the connection again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.readyz().await.0, 200);

    // What was answered `unavailable` or `local_only` during the alarm must
    // not have been written out once RabbitMQ read again: the backend has
    // the sends acknowledged before and after, nothing else, and nothing
    // published under `local` reached RabbitMQ.
    let mut in_backend = Vec::new();
    while let Some(message) = watcher.get(&backend).await {
        let body: Value = serde_json::from_slice(&message.delivery.data).expect("JSON send");
        in_backend.push(body);
    }
    let mut expected = vec![json!({"n": "before"})];
    expected.extend(acked_after);
    assert_eq!(in_backend, expected, "sends in the backend's queue");
    subscriber.expect_silence(QUIET).await;
    assert!(
        watcher.get(&local_witness).await.is_none(),
        "a publish answered local_only reached RabbitMQ after the alarm"
    );
}
