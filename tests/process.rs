//! The real binary as an operator runs it: port 0 and the `listening on`
//! line, configuration precedence, refusing bad settings, and shutdown.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[tokio::test]
async fn port_zero_binds_a_free_port_and_logs_it() {
    let node = TestNode::start(&[]);
    let port: u16 = node.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    assert_eq!(get_json(&node.url("/healthz")).await["status"], "ok");
}

#[tokio::test]
async fn sigterm_closes_every_session_with_1001_and_exits_0() {
    // Two sessions over a 1 s drain window: closed at 0 and 0.5 s.
    let mut node = TestNode::start(&["--drain-window", "1s"]);
    let mut first = node.connect().await;
    let mut second = node.connect().await;
    let started = Instant::now();
    node.signal("TERM");
    assert_eq!(first.expect_close().await, 1001);
    assert_eq!(second.expect_close().await, 1001);
    let status = node.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sigint_stops_an_idle_node_at_once() {
    let mut node = TestNode::start(&[]);
    node.signal("INT");
    assert_eq!(node.wait_exit(Duration::from_secs(3)).code(), Some(0));
}

fn run_expecting_failure(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("herald runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_settings_exit_2_with_every_problem_named() {
    let stderr = run_expecting_failure(
        &[
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "required",
            "--max-frame",
            "10",
        ],
        &[],
    );
    assert!(stderr.contains("auth is `required`"), "{stderr}");
    assert!(stderr.contains("max frame"), "{stderr}");
    let stderr = run_expecting_failure(&["--rate-limit", "fast"], &[]);
    assert!(stderr.contains("rate-limit"), "{stderr}");
    let stderr = run_expecting_failure(&["--config", "/nonexistent/herald.toml"], &[]);
    assert!(stderr.contains("cannot read config file"), "{stderr}");
}

#[tokio::test]
async fn flags_beat_environment_which_beats_the_config_file() {
    let dir = std::env::temp_dir().join(format!("herald-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("herald.toml");
    std::fs::write(&file, "node_id = \"n-from-file\"\nmax_subscriptions = 1\n").unwrap();
    let path = file.to_str().unwrap();

    let node = TestNode::start(&["--config", path]);
    assert_eq!(node.stats().await["node"], "n-from-file");
    let mut client = node.connect().await;
    client.subscribe("a").await;
    client
        .expect_error(
            serde_json::json!({"op": "subscribe", "topic": "b"}),
            "too_many_subscriptions",
        )
        .await;

    let node = TestNode::start_with_env(&["--config", path], &[("HERALD_NODE_ID", "n-from-env")]);
    assert_eq!(node.stats().await["node"], "n-from-env");

    let node = TestNode::start_with_env(
        &["--config", path, "--node-id", "n-from-flag"],
        &[("HERALD_NODE_ID", "n-from-env")],
    );
    assert_eq!(node.stats().await["node"], "n-from-flag");
    let _ = std::fs::remove_dir_all(dir);
}
