//! Two Herald nodes on two brokers of one RabbitMQ cluster: a second
//! RabbitMQ node is started on this machine and joined to the first
//! (tests/fixtures/rabbit-second-node.sh), node A uses broker 1 and node B
//! broker 2, each listing both. Delivery crosses the brokers both ways; when
//! broker 2 stops, B moves to broker 1 and its clients, still connected,
//! receive again. The second broker is removed afterwards, also when the
//! test fails, and the first is checked to be alone again.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const BROKER_1: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const BROKER_2: &str = "amqp://guest:guest@127.0.0.1:5673/%2f";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rabbit-second-node.sh")
}

fn run_script(action: &str) -> bool {
    Command::new(script())
        .arg(action)
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

fn cluster_status() -> String {
    Command::new("rabbitmqctl")
        .args(["-q", "cluster_status"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// The second broker, removed from the cluster when dropped.
struct SecondBroker;

impl SecondBroker {
    fn start() -> SecondBroker {
        // A run that died before its guard did may have left one behind.
        run_script("stop");
        let guard = SecondBroker;
        assert!(
            run_script("start"),
            "the second RabbitMQ node did not start and join"
        );
        guard
    }
}

impl Drop for SecondBroker {
    fn drop(&mut self) {
        run_script("stop");
    }
}

async fn broker_of(node: &TestNode) -> String {
    node.stats().await["amqp"]["broker"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn nodes_on_two_brokers_deliver_across_and_a_node_whose_broker_stops_moves_to_the_other() {
    let began = Instant::now();
    let before = cluster_status();
    assert!(
        !before.contains("herald-test-2"),
        "the first RabbitMQ node must start alone: {before}"
    );
    {
        let _broker = SecondBroker::start();
        let joined = Instant::now() - began;

        let a = TestNode::start(&["--amqp-url", &format!("{BROKER_1},{BROKER_2}")]);
        let b = TestNode::start(&["--amqp-url", &format!("{BROKER_2},{BROKER_1}")]);
        a.wait_amqp_connected().await;
        b.wait_amqp_connected().await;
        assert_eq!(broker_of(&a).await, "127.0.0.1:5672");
        assert_eq!(broker_of(&b).await, "127.0.0.1:5673");

        let topic = unique_topic("cluster");
        let mut on_a = a.connect().await;
        let mut on_b = b.connect().await;
        on_a.subscribe(&topic).await;
        on_b.subscribe(&topic).await;

        b.publish(&topic, json!("from b")).await;
        assert_eq!(on_a.expect_message().await["data"], "from b");
        assert_eq!(on_b.expect_message().await["data"], "from b");
        a.publish(&topic, json!("from a")).await;
        assert_eq!(on_b.expect_message().await["data"], "from a");
        assert_eq!(on_a.expect_message().await["data"], "from a");

        assert!(run_script("stop-app"), "broker 2 did not stop");
        let stopped = Instant::now();
        let moved = eventually(Duration::from_secs(20), || async {
            let stats = b.stats().await;
            stats["amqp"]["state"] == "connected" && stats["amqp"]["broker"] == "127.0.0.1:5672"
        })
        .await;
        assert!(moved, "node B did not move to broker 1: {:?}", b.logs());
        let failover = stopped.elapsed();

        // B's client never reconnected: its subscription was rebound on
        // broker 1 with the new node queue. Publishing from A checks that
        // RabbitMQ routes to B again.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut delivered = false;
        while !delivered && Instant::now() < deadline {
            a.publish(&topic, json!("after failover")).await;
            on_a.expect_message().await;
            delivered = matches!(
                on_b.try_next_json(Duration::from_millis(500)).await,
                Some(frame) if frame["data"] == "after failover"
            );
        }
        assert!(
            delivered,
            "node B's client gets nothing after failover: {:?}",
            b.logs()
        );
        on_b.assert_alive().await;
        assert!(b.stats().await["amqp"]["reconnects"].as_u64() >= Some(1));
        eprintln!(
            "second broker started and joined in {joined:?}; node B on broker 1 {failover:?} after broker 2 stopped"
        );
    }
    let after = cluster_status();
    assert!(
        !after.contains("herald-test-2"),
        "the second node is still in the cluster: {after}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(90),
        "the cluster test took {:?}",
        began.elapsed()
    );
}
