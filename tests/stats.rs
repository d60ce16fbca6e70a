//! `/api/stats`, `/api/topics` and `/metrics` move as the node's traffic does.

mod support;

use serde_json::{json, Value};
use support::*;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

async fn metrics(node: &TestNode) -> String {
    let response = http().get(node.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    response.text().await.unwrap()
}

#[tokio::test]
async fn stats_report_the_contract_fields() {
    let node = TestNode::start(&["--node-id", "n-stats"]);
    let stats = node.stats().await;
    assert_eq!(stats["node"], "n-stats");
    assert!(stats["uptime_s"].is_u64());
    for path in [
        "/connections/current",
        "/connections/total",
        "/connections/rejected",
        "/users_online",
        "/topics",
        "/subscriptions",
        "/messages/in",
        "/messages/out",
        "/messages/dropped",
        "/broker/backlog",
        "/broker/handled",
        "/amqp/reconnects",
        "/amqp/published",
        "/amqp/confirmed",
        "/amqp/consumed",
        "/amqp/backlog",
    ] {
        assert!(
            stats.pointer(path).is_some_and(Value::is_u64),
            "{path} in {stats}"
        );
    }
    assert_eq!(stats["amqp"]["state"], "disabled");
}

#[tokio::test]
async fn stats_and_metrics_follow_connections_subscriptions_and_messages() {
    let node = TestNode::start(&["--jwt-secret", "s"]);
    let before = node.stats().await;
    assert_eq!(before["connections"]["current"], 0);

    let topic = unique_topic("metered");
    let mut a = node.connect().await;
    let (mut b, _) = node.connect_as("s", "ann").await;
    a.subscribe(&topic).await;
    b.subscribe(&topic).await;
    b.subscribe(&format!("{topic}.#")).await;

    let stats = node.stats().await;
    assert_eq!(stats["connections"]["current"], 2);
    assert_eq!(stats["connections"]["total"], 2);
    assert_eq!(stats["users_online"], 1);
    // ann's session receives `user.ann` without subscribing: that is not
    // one of her subscriptions.
    assert_eq!(stats["subscriptions"], 3);
    assert_eq!(stats["topics"], 2);

    let topics = get_json(&node.url("/api/topics")).await;
    assert_eq!(
        topics["topics"],
        json!([
            {"topic": topic, "subscribers": 2},
            {"topic": format!("{topic}.#"), "subscribers": 1},
        ])
    );

    node.publish(&topic, json!("x")).await;
    a.expect_message().await;
    b.expect_message().await;
    let stats = node.stats().await;
    assert_eq!(stats["messages"]["in"], 1);
    assert_eq!(
        stats["messages"]["out"], 2,
        "one copy per session, not per pattern"
    );
    assert!(stats["broker"]["handled"].as_u64().unwrap() >= 6);

    let text = metrics(&node).await;
    assert_eq!(metric(&text, "herald_connections_current"), 2.0);
    assert_eq!(metric(&text, "herald_connections_total"), 2.0);
    assert_eq!(metric(&text, "herald_subscriptions"), 3.0);
    assert_eq!(metric(&text, "herald_messages_in_total"), 1.0);
    assert_eq!(metric(&text, "herald_messages_out_total"), 2.0);
    assert_eq!(metric(&text, "herald_messages_dropped_total"), 0.0);
    assert!(text.contains("# TYPE herald_messages_out_total counter"));

    b.unsubscribe(&format!("{topic}.#")).await;
    drop(a);
    assert!(
        eventually(WAIT, || async {
            node.stats().await["connections"]["current"] == 1
        })
        .await
    );
    let stats = node.stats().await;
    assert_eq!(stats["subscriptions"], 1);
    assert_eq!(stats["topics"], 1);
    assert_eq!(
        metric(&metrics(&node).await, "herald_connections_current"),
        1.0
    );
}

#[tokio::test]
async fn probes_and_the_demo_page_answer() {
    let node = TestNode::start(&[]);
    assert_eq!(get_json(&node.url("/healthz")).await["status"], "ok");
    assert_eq!(get_json(&node.url("/readyz")).await["ready"], true);
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let response = http().get(node.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
    }
}
