//! The WebSocket-to-REST pipeline against a real upstream HTTP server the
//! test starts on an ephemeral port, through the real `herald` binary and a
//! real WebSocket client (and real RabbitMQ for backend-initiated requests).

mod support;
#[path = "support/upstream.rs"]
mod upstream;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const SECRET: &str = "requests-test-secret";

/// A TOML file of the test's own, removed when dropped.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!("{}.toml", unique_topic("herald-requests")));
        std::fs::write(&path, text).expect("write config");
        ConfigFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn request(service: &str, method: &str, path: &str) -> Value {
    json!({"op": "request", "service": service, "method": method, "path": path})
}

/// A node whose only service is `echo`, the test upstream.
fn echo_node(upstream: &upstream::Upstream, extra: &[&str]) -> TestNode {
    let services = format!("echo={}", upstream.url());
    let mut args = vec!["--services", services.as_str()];
    args.extend_from_slice(extra);
    TestNode::start(&args)
}

#[tokio::test]
async fn every_method_with_and_without_a_body_reaches_the_service() {
    let upstream = upstream::start();
    let node = echo_node(&upstream, &[]);
    let mut client = node.connect().await;
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        for body in [Value::Null, json!({"n": 1, "method": method})] {
            let mut op = request("echo", method, "/things/1");
            op["body"] = body.clone();
            let reply = client.call(op).await;
            assert_eq!(reply["op"], "response", "{method} {body}: {reply}");
            assert_eq!(reply["status"], 200, "{reply}");
            if method == "HEAD" {
                assert_eq!(reply["body"], Value::Null, "HEAD has no body: {reply}");
                continue;
            }
            let echoed = &reply["body"];
            assert_eq!(echoed["method"], method, "{reply}");
            assert_eq!(echoed["path"], "/things/1");
            assert_eq!(echoed["body_json"], body, "{reply}");
            if body.is_null() {
                assert_eq!(echoed["body_len"], 0, "{reply}");
            } else {
                assert_eq!(
                    echoed["headers"]["content-type"], "application/json",
                    "{reply}"
                );
            }
        }
    }
    // TRACE only where a service opts in.
    let trace = request("echo", "TRACE", "/t");
    client.expect_error(trace, "bad_request").await;
    let config = ConfigFile::new(&format!(
        "[services.traced]\nurl = \"{}\"\nallow_trace = true\n",
        upstream.url()
    ));
    let traced = TestNode::start(&["--config", config.path()]);
    let mut client = traced.connect().await;
    let reply = client.call(request("traced", "TRACE", "/t")).await;
    assert_eq!(reply["op"], "response", "{reply}");
    assert_eq!(reply["body"]["method"], "TRACE");
    assert!(
        reply["body"]["headers"]["x-herald-session"].is_string(),
        "{reply}"
    );
}

#[tokio::test]
async fn not_found_and_server_errors_pass_through_as_responses() {
    let upstream = upstream::start();
    let node = echo_node(&upstream, &[]);
    let mut client = node.connect().await;
    for status in [404, 500, 503] {
        let reply = client
            .call(request("echo", "GET", &format!("/status/{status}")))
            .await;
        assert_eq!(reply["op"], "response", "{reply}");
        assert_eq!(reply["status"], status);
        assert_eq!(reply["body"], json!({"status": status}));
        assert_eq!(reply["headers"]["content-type"], "application/json");
    }
}

#[tokio::test]
async fn bodies_headers_and_queries_follow_the_contract() {
    let upstream = upstream::start();
    let node = echo_node(&upstream, &[]);
    let mut client = node.connect().await;
    let reply = client.call(request("echo", "GET", "/text")).await;
    assert_eq!(reply["body"], "hello, text", "{reply}");
    assert!(reply.get("body_encoding").is_none());
    let reply = client.call(request("echo", "GET", "/binary")).await;
    assert_eq!(reply["body"], "AP8BAg==", "{reply}");
    assert_eq!(reply["body_encoding"], "base64");
    let mut op = request("echo", "POST", "/bytes");
    op["body"] = json!("AP8BAg==");
    op["body_encoding"] = json!("base64");
    op["query"] = json!({"q": "a b", "tag": ["x", "y"]});
    let reply = client.call(op).await;
    assert_eq!(reply["body"]["body_len"], 4, "{reply}");
    assert_eq!(
        reply["body"]["headers"]["content-type"],
        "application/octet-stream"
    );
    assert_eq!(reply["body"]["query"], "q=a+b&tag=x&tag=y");
    let mut op = request("echo", "POST", "/text");
    op["body"] = json!("plain words");
    op["query"] = json!("?raw=1&x=%20");
    let reply = client.call(op).await;
    assert_eq!(reply["status"], 200, "{reply}");
    // Repeated headers are joined; Set-Cookie stays with Herald.
    let reply = client.call(request("echo", "GET", "/h")).await;
    assert_eq!(reply["headers"]["x-multi"], "1, 2", "{reply}");
    assert!(reply["headers"].get("set-cookie").is_none(), "{reply}");
}

#[tokio::test]
async fn identity_headers_arrive_and_client_supplied_ones_do_not() {
    let upstream = upstream::start();
    let config = ConfigFile::new(&format!(
        "[services.echo]\nurl = \"{0}\"\nforward_token = true\n[services.plain]\nurl = \"{0}\"\n[services.listed]\nurl = \"{0}\"\nheaders = [\"x-tenant\"]\n",
        upstream.url()
    ));
    let node = TestNode::start(&["--config", config.path(), "--jwt-secret", SECRET]);
    let token = token(SECRET, "alice", 3600);
    let (mut client, welcome) = node.connect_with_token(&token).await;
    let forged = json!({
        "X-Herald-User": "mallory", "x-herald-session": "s-forged", "X-Herald-Node": "n-x",
        "Cookie": "session=stolen", "Host": "evil.example", "Connection": "x-hop",
        "x-hop": "1", "Authorization": "Bearer forged", "X-Forwarded-For": "6.6.6.6",
        "Transfer-Encoding": "chunked", "X-Request-Id": "forged-id",
        "Accept-Language": "fr", "X-Tenant": "7",
    });
    let mut op = request("echo", "GET", "/who");
    op["headers"] = forged.clone();
    let reply = client.call(op).await;
    let seen = &reply["body"]["headers"];
    assert_eq!(seen["x-herald-user"], "alice", "{reply}");
    assert_eq!(seen["x-herald-session"], welcome["session"], "{reply}");
    assert!(
        seen["x-request-id"]
            .as_str()
            .is_some_and(|id| !id.is_empty() && id != "forged-id"),
        "{reply}"
    );
    assert_eq!(
        seen["authorization"],
        format!("Bearer {token}"),
        "forward_token: {reply}"
    );
    assert_eq!(seen["accept-language"], "fr");
    for absent in ["x-herald-node", "cookie", "x-hop", "x-forwarded-for"] {
        assert!(
            seen.get(absent).is_none(),
            "{absent} was forwarded: {reply}"
        );
    }
    assert_ne!(seen["host"], "evil.example", "{reply}");
    // Without forward_token no token goes; a service's list lets only it through.
    let mut op = request("plain", "GET", "/who");
    op["headers"] = forged.clone();
    let reply = client.call(op).await;
    assert!(
        reply["body"]["headers"].get("authorization").is_none(),
        "{reply}"
    );
    let mut op = request("listed", "GET", "/who");
    op["headers"] = forged;
    let reply = client.call(op).await;
    let seen = &reply["body"]["headers"];
    assert_eq!(seen["x-tenant"], "7", "{reply}");
    assert!(seen.get("accept-language").is_none(), "{reply}");
    assert_eq!(seen["x-herald-user"], "alice");
}

#[tokio::test]
async fn an_unknown_service_is_unknown_service_and_the_session_goes_on() {
    let upstream = upstream::start();
    let node = echo_node(&upstream, &[]);
    let mut client = node.connect().await;
    client
        .expect_error(request("nope", "GET", "/"), "unknown_service")
        .await;
    client.assert_alive().await;
    let bare = TestNode::start(&[]);
    let mut client = bare.connect().await;
    client
        .expect_error(request("echo", "GET", "/"), "unknown_service")
        .await;
    client.assert_alive().await;
}

#[tokio::test]
async fn every_path_escape_variant_is_refused_and_never_reaches_the_service() {
    let upstream = upstream::start();
    let node = echo_node(&upstream, &[]);
    let mut client = node.connect().await;
    let escapes = [
        "http://127.0.0.1:1/x",
        "//evil.example/x",
        "evil",
        "",
        "/../x",
        "/a/../../x",
        "/./x",
        "/%2e%2e/x",
        "/%2E%2e/x",
        "/.%2e/x",
        "/a%2f..%2fx",
        "/a\\..\\x",
        "/%5c",
        "/@evil.example",
        "/a@b",
        "/%40",
        "/%252e%252e/x",
        "/..;/x",
        "/a;b",
        "/a?x=1",
        "/a#f",
        "/a b",
        "/a%00",
        "/a%zz",
        "/é",
        "/a//b",
    ];
    for path in escapes {
        client
            .expect_error(request("echo", "GET", path), "bad_request")
            .await;
    }
    client.assert_alive().await;
    assert_eq!(
        upstream.seen.total.load(Ordering::SeqCst),
        0,
        "an escape reached the service"
    );
    let reply = client.call(request("echo", "GET", "/fine/path")).await;
    assert_eq!(reply["op"], "response");
}

#[tokio::test]
async fn a_slow_upstream_times_out_while_other_requests_on_the_same_socket_complete() {
    let upstream = upstream::start();
    let config = ConfigFile::new(&format!(
        "[services.echo]\nurl = \"{}\"\ntimeout = \"400ms\"\n",
        upstream.url()
    ));
    let node = TestNode::start(&["--config", config.path()]);
    let mut client = node.connect().await;
    let started = Instant::now();
    let ids = client
        .send_all(vec![
            request("echo", "GET", "/slow/3000"),
            request("echo", "GET", "/fast/1"),
            request("echo", "GET", "/slow/50"),
        ])
        .await;
    // Answers come as the service gives them, matched by id.
    let first = client.next_json().await;
    assert_eq!(first["id"], json!(ids[1]), "the fast one first: {first}");
    let second = client.next_json().await;
    assert_eq!(second["id"], json!(ids[2]), "{second}");
    assert_eq!(second["body"]["slept"], 50);
    let third = client.next_json().await;
    assert_eq!(third["id"], json!(ids[0]), "{third}");
    assert_eq!(third["op"], "error");
    assert_eq!(third["code"], "timeout");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "timed out only after {took:?}"
    );
    client.assert_alive().await;
}

#[tokio::test]
async fn the_per_session_in_flight_cap_refuses_with_unavailable() {
    let upstream = upstream::start();
    let node = echo_node(&upstream, &["--request-max-in-flight", "2"]);
    let mut client = node.connect().await;
    let ids = client
        .send_all(vec![
            request("echo", "GET", "/slow/700"),
            request("echo", "GET", "/slow/700"),
            request("echo", "GET", "/slow/10"),
        ])
        .await;
    let replies = client.replies(&ids).await;
    assert_eq!(replies[2]["code"], "unavailable", "{:?}", replies);
    assert_eq!(replies[0]["op"], "response");
    assert_eq!(replies[1]["op"], "response");
    // Room again once those answered.
    let reply = client.call(request("echo", "GET", "/slow/10")).await;
    assert_eq!(reply["op"], "response", "{reply}");
}

#[tokio::test]
async fn the_per_service_in_flight_cap_refuses_with_unavailable() {
    let upstream = upstream::start();
    let config = ConfigFile::new(&format!(
        "[services.echo]\nurl = \"{0}\"\nmax_in_flight = 1\n[services.other]\nurl = \"{0}\"\n",
        upstream.url()
    ));
    let node = TestNode::start(&["--config", config.path()]);
    let mut first = node.connect().await;
    let mut second = node.connect().await;
    let held = first
        .send_all(vec![request("echo", "GET", "/slow/800")])
        .await;
    assert!(
        eventually(WAIT, || async { upstream.seen.hits("/slow/800") == 1 }).await,
        "the first call reached the service"
    );
    second
        .expect_error(request("echo", "GET", "/slow/1"), "unavailable")
        .await;
    // Another service is not held up by this one's saturation.
    let reply = second.call(request("other", "GET", "/x")).await;
    assert_eq!(reply["op"], "response", "{reply}");
    let replies = first.replies(&held).await;
    assert_eq!(replies[0]["op"], "response");
    let reply = second.call(request("echo", "GET", "/slow/1")).await;
    assert_eq!(reply["op"], "response", "{reply}");
    let stats = node.stats().await;
    assert_eq!(
        stats["requests"]["services"]["echo"]["errors"]["unavailable"], 1,
        "{stats}"
    );
}

#[tokio::test]
async fn a_huge_response_is_too_large() {
    let upstream = upstream::start();
    let config = ConfigFile::new(&format!(
        "[services.echo]\nurl = \"{}\"\nmax_bytes = 4096\n",
        upstream.url()
    ));
    let node = TestNode::start(&["--config", config.path()]);
    let mut client = node.connect().await;
    client
        .expect_error(request("echo", "GET", "/big/200000"), "too_large")
        .await;
    // The cap is on the encoded frame: a body that fits raw but not framed.
    client
        .expect_error(request("echo", "GET", "/big/4090"), "too_large")
        .await;
    let reply = client.call(request("echo", "GET", "/big/3000")).await;
    assert_eq!(reply["op"], "response", "{reply}");
    assert_eq!(reply["body"].as_str().map(str::len), Some(3000));
}

#[tokio::test]
async fn an_upstream_that_is_down_gives_upstream_error() {
    let services = format!("down={}", upstream::closed_port_url());
    let node = TestNode::start(&["--services", &services]);
    let mut client = node.connect().await;
    client
        .expect_error(request("down", "GET", "/x"), "upstream_error")
        .await;
    client.assert_alive().await;
    let stats = node.stats().await;
    assert_eq!(
        stats["requests"]["services"]["down"]["errors"]["upstream_error"], 1,
        "{stats}"
    );
}

#[tokio::test]
async fn a_session_closed_mid_request_leaves_nothing_behind() {
    let hole = upstream::black_hole().await;
    let services = format!("hole=http://{}", hole.addr);
    let node = TestNode::start(&["--services", &services]);
    let mut client = node.connect().await;
    client
        .send_all(vec![request("hole", "GET", "/forever")])
        .await;
    assert!(
        eventually(WAIT, || async { hole.accepted.load(Ordering::SeqCst) == 1 }).await,
        "the call reached the service"
    );
    let stats = node.stats().await;
    assert_eq!(
        stats["requests"]["services"]["hole"]["in_flight"], 1,
        "{stats}"
    );
    drop(client);
    // The call is cancelled: its connection to the service closes, long
    // before the 10 s timeout, and nothing stays counted in flight.
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || async {
            hole.hung_up.load(Ordering::SeqCst) == 1
        })
        .await,
        "the service's connection stayed open"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let settled = eventually(WAIT, || async {
        let stats = node.stats().await;
        let hole = &stats["requests"]["services"]["hole"];
        hole["in_flight"] == 0 && hole["cancelled"] == 1 && stats["connections"]["current"] == 0
    })
    .await;
    assert!(settled, "{}", node.stats().await);
}

#[tokio::test]
async fn per_service_figures_show_in_stats_and_metrics() {
    let upstream = upstream::start();
    let node = echo_node(&upstream, &[]);
    let mut client = node.connect().await;
    client.call(request("echo", "GET", "/a")).await;
    client.call(request("echo", "GET", "/status/500")).await;
    client
        .expect_error(request("echo", "GET", "/../x"), "bad_request")
        .await;
    client
        .expect_error(request("zzz", "GET", "/"), "unknown_service")
        .await;
    let stats = node.stats().await;
    let echo = &stats["requests"]["services"]["echo"];
    assert_eq!(echo["requests"], 2, "{stats}");
    assert_eq!(echo["status"]["2xx"], 1);
    assert_eq!(echo["status"]["5xx"], 1);
    assert_eq!(echo["errors"]["bad_request"], 1);
    assert_eq!(echo["latency_ms"]["buckets"]["+Inf"], 2);
    assert_eq!(stats["requests"]["unknown_service"], 1);
    let metrics = http()
        .get(node.url("/metrics"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("herald_service_requests_total{node="),
        "{metrics}"
    );
    assert!(metrics.contains("service=\"echo\""), "{metrics}");
    assert!(
        metrics.contains("herald_service_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("herald_service_errors_total"), "{metrics}");
}

#[tokio::test]
async fn an_outbound_queue_that_cannot_hold_a_maximal_response_is_refused_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--services",
            "a=http://127.0.0.1:9",
            "--request-max-bytes",
            "2000000",
        ])
        .env_remove("HERALD_SERVICES")
        .output()
        .expect("herald runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("outbound queue"), "{stderr}");
}

/// Two nodes on one RabbitMQ, with the echo service and signed tokens.
async fn cluster(upstream: &upstream::Upstream) -> (TestNode, TestNode) {
    let services = format!("echo={}", upstream.url());
    let args = [
        "--services",
        services.as_str(),
        "--jwt-secret",
        SECRET,
        "--cluster-secret",
        "requests-cluster",
    ];
    let a = TestNode::start_amqp(&args).await;
    let b = TestNode::start_amqp(&args).await;
    (a, b)
}

#[tokio::test]
async fn a_backend_initiated_request_reaches_every_session_of_its_user_and_no_one_else() {
    let upstream = upstream::start();
    let (a, b) = cluster(&upstream).await;
    let alice = unique_topic("alice").replace('.', "-");
    let bob = unique_topic("bob").replace('.', "-");
    let (mut alice_a, _) = a.connect_as(SECRET, &alice).await;
    let (mut alice_b, _) = b.connect_as(SECRET, &alice).await;
    let (mut bob_a, _) = a.connect_as(SECRET, &bob).await;
    let path = format!("/count/{}", unique_topic("cash").replace('.', "-"));
    let rabbit = Rabbit::connect().await;
    let body = json!({
        "user": alice, "service": "echo", "method": "POST", "path": path,
        "body": {"amount": 5}, "id": "cash-1",
    });
    rabbit
        .publish("herald.requests", "request", body.to_string().as_bytes())
        .await;
    for session in [&mut alice_a, &mut alice_b] {
        let result = session.expect_op("response").await;
        assert_eq!(result["origin"], "backend", "{result}");
        assert_eq!(result["id"], "cash-1");
        assert_eq!(
            (result["service"].as_str(), result["method"].as_str()),
            (Some("echo"), Some("POST"))
        );
        assert_eq!(result["path"], path);
        assert_eq!(result["status"], 200);
        assert_eq!(
            result["body"]["user"],
            alice.as_str(),
            "made as the user: {result}"
        );
        assert_eq!(result["body"]["body"], r#"{"amount":5}"#);
    }
    bob_a.expect_silence(Duration::from_millis(500)).await;
    // Exactly one node made the call.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        upstream.seen.hits(&path),
        1,
        "the call was made once per node"
    );

    // The HTTP API does the same, from whichever node it is asked.
    let (status, answer) = b
        .post(
            &format!("/api/users/{alice}/requests"),
            json!({"service": "echo", "path": "/text", "id": 7}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], 200);
    for session in [&mut alice_a, &mut alice_b] {
        let result = session.expect_op("response").await;
        assert_eq!(
            (result["id"].clone(), result["body"].clone()),
            (json!(7), json!("hello, text")),
            "{result}"
        );
    }
    bob_a.expect_silence(Duration::from_millis(300)).await;

    // A failed call is delivered as an error; an unknown service is refused.
    let (status, answer) = a
        .post(
            &format!("/api/users/{alice}/requests"),
            json!({"service": "nope", "path": "/"}),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_service")),
        "{answer}"
    );
    // A user with no session: performed, delivered to nobody, counted.
    let before = b.stats().await["requests"]["backend"]["delivered"]
        .as_u64()
        .unwrap_or(0);
    let nobody = unique_topic("nobody").replace('.', "-");
    let (status, _) = b
        .post(
            &format!("/api/users/{nobody}/requests"),
            json!({"service": "echo", "path": "/nobody"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(upstream.seen.hits("/nobody"), 1);
    let after = b.stats().await["requests"]["backend"]["delivered"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(after, before + 1);
    alice_a.expect_silence(Duration::from_millis(300)).await;
    bob_a.expect_silence(Duration::from_millis(100)).await;
}

/// An HS256 token for `user` with extra claims.
fn token_with(user: &str, extra: Value) -> String {
    support::rules::token_with(SECRET, user, extra)
}

#[tokio::test]
async fn a_permission_rule_restricts_who_may_call_a_service() {
    let upstream = upstream::start();
    let config = ConfigFile::new(&format!(
        "[services.echo]\nurl = \"{0}\"\n[services.open]\nurl = \"{0}\"\n\n[[permissions]]\nservice = \"echo\"\nrequest = \"claim:admin\"\n",
        upstream.url()
    ));
    let node = TestNode::start(&["--config", config.path(), "--jwt-secret", SECRET]);
    let (mut carol, _) = node
        .connect_with_token(&token_with("carol", json!({})))
        .await;
    carol
        .expect_error(request("echo", "GET", "/x"), "forbidden")
        .await;
    let reply = carol.call(request("open", "GET", "/x")).await;
    assert_eq!(
        reply["op"], "response",
        "a service no rule names is open: {reply}"
    );
    let (mut dana, _) = node
        .connect_with_token(&token_with("dana", json!({"admin": true})))
        .await;
    let reply = dana.call(request("echo", "GET", "/x")).await;
    assert_eq!(reply["op"], "response", "{reply}");
    assert_eq!(
        upstream.seen.hits("/x"),
        2,
        "the refused call never reached the service"
    );
}
