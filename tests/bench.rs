//! herald-bench against a real herald, small enough for every test run: 200
//! subscribers and 100 messages, JSON and STOMP. It checks what the bench
//! counts (no loss, no duplicates, per-publisher order) and that its JSON
//! report is well formed, never a speed: the suite shares its machine.

mod support;

use support::TestNode;

/// Starts a node with the session rate limit out of the way (the publisher
/// sends 100 messages back to back) and runs the bench with `extra` flags.
async fn bench(extra: &[&str]) -> (herald_bench::Report, serde_json::Value) {
    let node = TestNode::start(&["--rate-limit", "100000"]);
    let url = format!("ws://{}/ws", node.addr);
    let http = format!("http://{}", node.addr);
    let pid = node.pid().to_string();
    let mut args = vec![
        "--url",
        &url,
        "--http-url",
        &http,
        "--server-pid",
        &pid,
        "--rabbit-pid",
        "0",
        "--subscribers",
        "200",
        "--messages",
        "100",
        "--settle",
        "0.1",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let options = herald_bench::Options::from_args(&args).expect("bench options");
    let report = herald_bench::run(&options).await.expect("the bench runs");
    let line = serde_json::to_string(&report).expect("the report serializes");
    let json: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    drop(node);
    (report, json)
}

fn assert_complete(report: &herald_bench::Report, json: &serde_json::Value) {
    assert_eq!(report.connected, 200, "{}", herald_bench::table(report));
    assert_eq!(report.expected, 200 * 100);
    assert_eq!(
        report.received,
        report.expected,
        "{}",
        herald_bench::table(report)
    );
    assert_eq!(report.lost, 0);
    assert_eq!(report.duplicated, 0);
    assert_eq!(report.out_of_order, 0);
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert!(report.ok);
    for key in [
        "expected",
        "received",
        "lost",
        "duplicated",
        "out_of_order",
        "deliveries_per_s",
        "connects_per_s",
        "server_cpu_us_per_delivery",
        "server_cpu_us_per_connection",
        "server_kib_per_connection",
    ] {
        assert!(json.get(key).is_some(), "the report has {key}: {json}");
    }
    for q in ["p50", "p90", "p99", "p999", "max"] {
        assert!(json["latency_ms"][q].is_number(), "latency {q}: {json}");
    }
    assert!(json["server_cpu_us_per_delivery"].is_number(), "{json}");
    assert_eq!(json["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_subscribers_get_every_message_once_and_in_order() {
    let (report, json) = bench(&["--protocol", "json", "--publish", "ws"]).await;
    assert_complete(&report, &json);
    assert_eq!(json["protocol"], "json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_subscribers_get_every_message_once_and_in_order() {
    let (report, json) = bench(&["--protocol", "stomp", "--publish", "http"]).await;
    assert_complete(&report, &json);
    assert_eq!(json["protocol"], "stomp");
}
