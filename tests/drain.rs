//! Draining a node: `POST /api/drain` or SIGTERM flips `/readyz` to 503 and
//! refuses upgrades at once, closes every session with 1001 spread over
//! `HERALD_DRAIN_WINDOW`, each told just before its close when to come back
//! (`reconnect` in JSON, an `ERROR` with `x-herald-reconnect-after-ms` in
//! STOMP), keeps delivering to sessions not yet closed, and exits 0 once no
//! session is left.

mod support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::stomp::{StompClient, StompFrame};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// How far past its window plus grace the process may take to be gone.
const EXIT_MARGIN: Duration = Duration::from_millis(1500);

/// What one JSON client saw of the drain, in order, until its close.
#[derive(Debug)]
struct Seen {
    frames: Vec<(Instant, Value)>,
    close: Option<(Instant, u16)>,
}

impl Seen {
    fn reconnect(&self) -> Option<&(Instant, Value)> {
        self.frames
            .iter()
            .find(|(_, frame)| frame["op"] == "reconnect")
    }
}

/// Reads a client to its close frame (or `give_up_at`), stamping each frame.
async fn watch(client: WsClient, give_up_at: Instant) -> Seen {
    let mut socket = client.into_socket();
    let mut seen = Seen {
        frames: Vec::new(),
        close: None,
    };
    loop {
        let left = give_up_at.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let frame = serde_json::from_str(&text).expect("server sends JSON");
                seen.frames.push((Instant::now(), frame));
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                let code = frame.map_or(1005, |frame| u16::from(frame.code));
                seen.close = Some((Instant::now(), code));
                return seen;
            }
            Ok(Some(Ok(_))) => {}
            _ => return seen,
        }
    }
}

async fn post_drain(node: &TestNode) -> (u16, Value) {
    let response = http()
        .post(node.url("/api/drain"))
        .send()
        .await
        .expect("drain request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn status_of(url: &str) -> u16 {
    http()
        .get(url)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_api_drain_flips_readyz_refuses_upgrades_at_once_and_keeps_http_serving() {
    let mut node = TestNode::start(&["--drain-window", "3s"]);
    assert_eq!(status_of(&node.url("/readyz")).await, 200);
    // Three sessions over 3 s: closed at about 0, 1 and 2 s, so the node
    // is still draining while the checks below run.
    let mut watching = Vec::new();
    for _ in 0..3 {
        let client = node.connect().await;
        watching.push(tokio::spawn(watch(
            client,
            Instant::now() + Duration::from_secs(15),
        )));
    }

    let asked = Instant::now();
    let (status, body) = post_drain(&node).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["sessions"], 3, "{body}");
    assert_eq!(body["window_ms"], 3000, "{body}");
    assert_eq!(status_of(&node.url("/readyz")).await, 503);
    match tokio_tungstenite::connect_async(node.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body = response.body().as_deref().unwrap_or_default();
            let error: Value = serde_json::from_slice(body).expect("a JSON error");
            assert!(
                error["error"].is_object() || error["error"].is_string(),
                "{error}"
            );
        }
        other => panic!("an upgrade during the drain must get 503, got {other:?}"),
    }
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "readyz and upgrades flip at once"
    );

    // Operators' endpoints still answer; a second drain is harmless.
    assert_eq!(status_of(&node.url("/metrics")).await, 200);
    assert_eq!(status_of(&node.url("/api/stats")).await, 200);
    let (again, body) = post_drain(&node).await;
    assert_eq!(again, 202, "{body}");
    assert_eq!(body["already"], true, "{body}");

    for seen in join_all(watching).await {
        let seen = seen.expect("watcher");
        let (_, hint) = seen.reconnect().expect("a reconnect hint");
        let after = hint["after_ms"].as_u64().expect("after_ms is a number");
        assert!(after <= 3000, "{hint}");
        assert_eq!(seen.close.map(|(_, code)| code), Some(1001), "{seen:?}");
    }

    // Empty once the window is over: gone soon after, not at the deadline
    // (window + grace).
    let status = node.wait_exit(Duration::from_secs(3) + EXIT_MARGIN);
    assert_eq!(status.code(), Some(0), "exits 0 once empty");
    assert!(
        asked.elapsed() < Duration::from_secs(3) + EXIT_MARGIN,
        "exits soon after the window, once empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sigterm_every_json_client_is_told_when_to_return_then_closed_spread_over_the_window() {
    const CLIENTS: usize = 40;
    let window = Duration::from_secs(2);
    let mut node = TestNode::start(&["--drain-window", "2s"]);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(node.connect().await);
    }
    let give_up_at = Instant::now() + Duration::from_secs(15);
    let watching: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(watch(client, give_up_at)))
        .collect();

    let signalled = Instant::now();
    node.signal("TERM");
    let seen: Vec<Seen> = join_all(watching)
        .await
        .into_iter()
        .map(|seen| seen.expect("watcher"))
        .collect();

    let mut closes = Vec::new();
    for client in &seen {
        let (told_at, hint) = client
            .reconnect()
            .expect("every client gets a reconnect hint");
        let after = hint["after_ms"].as_u64().expect("after_ms is a number");
        assert!(after <= 2000, "after_ms within [0, window]: {hint}");
        let (closed_at, code) = client.close.expect("every client gets a close frame");
        assert_eq!(code, 1001, "{client:?}");
        assert!(*told_at <= closed_at);
        // Nothing between the hint and the close.
        assert_eq!(client.frames.last().map(|(_, f)| f), Some(hint));
        closes.push(closed_at.duration_since(signalled));
    }
    closes.sort();
    let span = closes[CLIENTS - 1] - closes[0];
    assert!(
        span >= window * 7 / 10,
        "the closes are spread over the window, not one instant: {closes:?}"
    );
    assert!(
        closes[CLIENTS - 1] <= window + Duration::from_millis(800),
        "the last close comes by the window's end: {closes:?}"
    );
    // Evenly: about half are closed by half the window.
    let by_half = closes.iter().filter(|at| **at <= window / 2).count();
    assert!(
        (CLIENTS / 4..=CLIENTS * 3 / 4).contains(&by_half),
        "{by_half} of {CLIENTS} closed in the first half: {closes:?}"
    );

    let status = node.wait_exit(window + Duration::from_secs(5) + EXIT_MARGIN);
    assert_eq!(status.code(), Some(0), "exits 0 once empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stomp_client_gets_an_error_naming_when_to_return_then_1001() {
    let mut node = TestNode::start(&["--drain-window", "1s"]);
    let mut client = node.stomp().await;
    let (status, body) = post_drain(&node).await;
    assert_eq!(status, 202, "{body}");
    let error: StompFrame = client.expect_error_then_close(1001).await;
    let after: u64 = error
        .must("x-herald-reconnect-after-ms")
        .parse()
        .expect("a number of milliseconds");
    assert!(after <= 1000, "{error:?}");
    assert!(error.must("message").contains("draining"), "{error:?}");
    let status = node.wait_exit(Duration::from_secs(1 + 5) + EXIT_MARGIN);
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publish_during_the_drain_reaches_every_session_not_yet_closed() {
    const CLIENTS: usize = 40;
    let mut node = TestNode::start(&["--drain-window", "2s"]);
    let topic = unique_topic("drain");
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = node.connect().await;
        client.subscribe(&topic).await;
        clients.push(client);
    }
    let give_up_at = Instant::now() + Duration::from_secs(15);
    let watching: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(watch(client, give_up_at)))
        .collect();

    let (status, body) = post_drain(&node).await;
    assert_eq!(status, 202, "{body}");
    // Mid-drain: some closed, some not.
    let midway = eventually(WAIT, || async {
        let current = node.stats().await["connections"]["current"].as_u64();
        current.is_some_and(|n| n > 0 && n <= (CLIENTS as u64) * 3 / 4)
    })
    .await;
    assert!(midway, "the drain is under way");
    node.publish(&topic, json!("during the drain")).await;
    let published = Instant::now();

    let mut still_open = 0;
    for seen in join_all(watching).await {
        let seen = seen.expect("watcher");
        let (told_at, _) = seen.reconnect().expect("a reconnect hint");
        if *told_at > published {
            still_open += 1;
            let got = seen
                .frames
                .iter()
                .take_while(|(_, frame)| frame["op"] != "reconnect")
                .any(|(_, frame)| frame["op"] == "message" && frame["data"] == "during the drain");
            assert!(got, "a session still open got the message first: {seen:?}");
        }
    }
    assert!(
        still_open > 0,
        "some sessions were still open at the publish"
    );
    let status = node.wait_exit(Duration::from_secs(2 + 5) + EXIT_MARGIN);
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_grace_every_session_is_still_told_and_closed_before_the_node_exits() {
    const CLIENTS: usize = 8;
    let window = Duration::from_secs(2);
    let mut node = TestNode::start(&["--drain-window", "2s", "--shutdown-grace", "0"]);
    let mut watching = Vec::new();
    for _ in 0..CLIENTS {
        let client = node.connect().await;
        watching.push(tokio::spawn(watch(
            client,
            Instant::now() + Duration::from_secs(10),
        )));
    }
    let began = Instant::now();
    node.signal("TERM");
    for seen in join_all(watching).await {
        let seen = seen.expect("watcher");
        assert!(seen.reconnect().is_some(), "a reconnect hint: {seen:?}");
        assert_eq!(seen.close.map(|(_, code)| code), Some(1001), "{seen:?}");
    }
    let status = node.wait_exit(window + EXIT_MARGIN);
    assert_eq!(status.code(), Some(0));
    assert!(began.elapsed() < window + EXIT_MARGIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stomp_client_that_never_sent_connect_is_closed_and_does_not_hold_the_node_up() {
    let mut node = TestNode::start(&["--drain-window", "1s"]);
    let mut client = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("STOMP WebSocket opens");
    // Counted as a connection, though not yet a Broker member.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let (status, body) = post_drain(&node).await;
    assert_eq!(status, 202, "{body}");
    let error = client.expect_error_then_close(1001).await;
    assert!(error.must("message").contains("draining"), "{error:?}");
    // Default grace 5 s: the node must not wait it out for this client.
    let status = node.wait_exit(Duration::from_secs(1) + EXIT_MARGIN);
    assert_eq!(status.code(), Some(0));
    assert!(asked.elapsed() < Duration::from_secs(1) + EXIT_MARGIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_drain_requests_exactly_one_started_it() {
    let mut node = TestNode::start(&["--drain-window", "2s"]);
    // Two sessions keep the node up while the requests are answered.
    let mut watching = Vec::new();
    for _ in 0..2 {
        let client = node.connect().await;
        watching.push(tokio::spawn(watch(
            client,
            Instant::now() + Duration::from_secs(10),
        )));
    }
    let answers = join_all((0..8).map(|_| post_drain(&node))).await;
    let first: Vec<_> = answers
        .iter()
        .filter(|(status, body)| *status == 202 && body["already"] == false)
        .collect();
    assert_eq!(first.len(), 1, "{answers:?}");
    assert!(
        answers.iter().all(|(status, _)| *status == 202),
        "{answers:?}"
    );
    join_all(watching).await;
    let status = node.wait_exit(Duration::from_secs(2) + EXIT_MARGIN);
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signal_during_a_drain_closes_the_sessions_left_now_and_exits() {
    let mut node = TestNode::start(&["--drain-window", "10s"]);
    let mut watching = Vec::new();
    for _ in 0..4 {
        let client = node.connect().await;
        watching.push(tokio::spawn(watch(
            client,
            Instant::now() + Duration::from_secs(10),
        )));
    }
    let (status, body) = post_drain(&node).await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    node.signal("TERM");
    for seen in join_all(watching).await {
        let seen = seen.expect("watcher");
        assert_eq!(seen.close.map(|(_, code)| code), Some(1001), "{seen:?}");
    }
    let status = node.wait_exit(EXIT_MARGIN);
    assert_eq!(status.code(), Some(0));
    assert!(signalled.elapsed() < EXIT_MARGIN, "stops at once");
}
