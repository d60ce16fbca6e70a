//! The abuse limits against hostile clients: every kind of inbound frame
//! counts against a session's rate, a client that keeps exceeding it is
//! closed with 1008, text that is not UTF-8 closes with 1007, and
//! connections are bounded per node (exactly, under concurrent
//! handshakes), per user and per client IP, handshakes per second per
//! client IP, with the client IP taken from forwarding headers only when
//! the peer is a trusted proxy. Each refusal is counted.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::stomp::{StompClient, StompFrame};
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The key nodes behind a trusted proxy need for `/api/stats`: with
/// 127.0.0.1 listed as a proxy, a keyless API would serve nobody.
const KEY: &str = "abuse-key";

/// The refusals of the abuse limits, from `/api/stats` (with the key, which
/// a node without one ignores).
async fn refused(node: &TestNode) -> Value {
    let response = http()
        .get(node.url("/api/stats"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("GET /api/stats");
    assert!(response.status().is_success(), "{}", response.status());
    let stats: Value = response.json().await.expect("JSON stats");
    stats["refused"].clone()
}

/// How a handshake ended: the session's client, or the HTTP refusal's
/// status and JSON body.
enum Handshake {
    Opened(Box<WsClient>),
    Refused(u16, Value),
}

/// Opens `/ws` with `X-Forwarded-For: forwarded_for` (when given) and, when
/// it opened, reads the `welcome`.
async fn handshake(url: &str, forwarded_for: Option<&str>) -> Handshake {
    let mut request = url.into_client_request().expect("a WebSocket URL");
    if let Some(address) = forwarded_for {
        request.headers_mut().insert(
            "X-Forwarded-For",
            HeaderValue::from_str(address).expect("header value"),
        );
    }
    match WsClient::open_request(request).await {
        Ok(mut client) => {
            client.expect_op("welcome").await;
            Handshake::Opened(Box::new(client))
        }
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice(body).ok())
                .unwrap_or(Value::Null);
            Handshake::Refused(response.status().as_u16(), body)
        }
        Err(other) => panic!("the handshake failed otherwise: {other}"),
    }
}

async fn must_open(url: &str, forwarded_for: Option<&str>) -> WsClient {
    match handshake(url, forwarded_for).await {
        Handshake::Opened(client) => *client,
        Handshake::Refused(status, body) => panic!("refused with {status}: {body}"),
    }
}

/// The handshake must be refused with `status` and error `code`.
async fn must_refuse(url: &str, forwarded_for: Option<&str>, status: u16, code: &str) {
    match handshake(url, forwarded_for).await {
        Handshake::Opened(_) => panic!("expected a {status} refusal, the WebSocket opened"),
        Handshake::Refused(got, body) => {
            assert_eq!(got, status, "{body}");
            assert_eq!(body["error"], code, "{body}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
        }
    }
}

/// Sends `count` copies of `message` while reading, until the server's
/// close frame; returns its code and how many pongs came before it.
async fn flood_until_closed(client: WsClient, message: Message, count: usize) -> (u16, usize) {
    let (mut sink, mut stream) = client.into_socket().split();
    let sender = tokio::spawn(async move {
        for _ in 0..count {
            // The server may close midway; what is left is not sent.
            if sink.send(message.clone()).await.is_err() {
                break;
            }
        }
        sink
    });
    let mut pongs = 0;
    let code = loop {
        let next = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the close in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(Message::Pong(_))) => pongs += 1,
            Some(Ok(_)) => continue,
            other => panic!("expected the close frame, got {other:?}"),
        }
    };
    sender.abort();
    (code, pongs)
}

#[tokio::test]
async fn pings_beyond_the_rate_limit_go_unanswered() {
    let node = TestNode::start(&["--rate-limit", "5"]);
    let mut client = node.connect().await;
    for _ in 0..40 {
        client
            .socket
            .send(Message::Ping(b"p".to_vec().into()))
            .await
            .expect("send");
    }
    client.send_json(json!({"op": "ping", "id": "after"})).await;
    // Everything the server writes comes in order: the pongs it gave, then
    // the answer to the op behind them.
    let mut pongs = 0;
    let answer = loop {
        match tokio::time::timeout(WAIT, client.socket.next())
            .await
            .expect("an answer in time")
        {
            Some(Ok(Message::Pong(_))) => pongs += 1,
            Some(Ok(Message::Text(text))) => break serde_json::from_str::<Value>(&text).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(answer["id"], "after", "{answer}");
    // 5/s with bursts of 10; a slow run refills some more, never most.
    assert!((10..=20).contains(&pongs), "{pongs} of 40 pings answered");
    let refused = refused(&node).await;
    assert!(
        refused["frames_rate_limited"].as_u64().unwrap() >= 27,
        "{refused}"
    );
    assert_eq!(refused["sessions_closed_for_abuse"], 0, "{refused}");
}

#[tokio::test]
async fn binary_frames_beyond_the_rate_limit_are_refused_as_rate_limited() {
    let node = TestNode::start(&["--rate-limit", "5"]);
    let mut client = node.connect().await;
    for _ in 0..30 {
        client
            .socket
            .send(Message::Binary(vec![1, 2, 3].into()))
            .await
            .expect("send");
    }
    let mut codes = Vec::new();
    for _ in 0..30 {
        let reply = client.expect_op("error").await;
        codes.push(reply["code"].as_str().unwrap_or_default().to_owned());
    }
    let limited = codes.iter().filter(|code| *code == "rate_limited").count();
    let bad = codes.iter().filter(|code| *code == "bad_request").count();
    assert_eq!(limited + bad, 30, "{codes:?}");
    assert!(
        (10..=20).contains(&bad),
        "{bad} binary frames within the limit"
    );
    // Refused, not closed: well under the abuse threshold.
    client.expect_silence(Duration::from_millis(250)).await;
}

#[tokio::test]
async fn a_sustained_ping_flood_closes_1008_while_another_session_keeps_receiving() {
    let node = TestNode::start(&["--rate-limit", "5"]);
    let topic = unique_topic("bystander");
    let mut bystander = node.connect().await;
    bystander.subscribe(&topic).await;
    let flooder = node.connect().await;

    let (code, pongs) =
        flood_until_closed(flooder, Message::Ping(b"x".to_vec().into()), 5000).await;
    assert_eq!(code, 1008);
    assert!(pongs <= 20, "{pongs} pings answered");

    node.publish(&topic, json!({"after": "flood"})).await;
    assert_eq!(bystander.expect_message().await["data"]["after"], "flood");
    bystander.assert_alive().await;
    let refused = refused(&node).await;
    assert_eq!(refused["sessions_closed_for_abuse"], 1, "{refused}");
    assert!(
        refused["frames_rate_limited"].as_u64().unwrap() > 100,
        "{refused}"
    );
}

#[tokio::test]
async fn a_sustained_binary_flood_closes_1008() {
    let node = TestNode::start(&["--rate-limit", "5"]);
    let flooder = node.connect().await;
    let (code, _) = flood_until_closed(flooder, Message::Binary(vec![0; 8].into()), 5000).await;
    assert_eq!(code, 1008);
    let mut other = node.connect().await;
    other.assert_alive().await;
}

#[tokio::test]
async fn a_stomp_session_flooding_pings_is_not_answered_but_kept_while_frame_floods_close_1008() {
    let node = TestNode::start(&["--rate-limit", "5"]);
    let mut client = node.stomp().await;
    // WebSocket pings are no STOMP frames: past the limit they go
    // unanswered, and the session stays.
    for _ in 0..40 {
        client
            .socket
            .send(Message::Ping(b"p".to_vec().into()))
            .await
            .expect("send");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    client.subscribe("/topic/pings.done", "alive").await;
    // A flood of STOMP frames is refused the STOMP way.
    let mut flood = String::new();
    for _ in 0..40 {
        flood.push_str("SEND\ndestination:/topic/flood\n\nx\0");
    }
    client.send_text(&flood).await;
    let error = client.expect_error_then_close(1008).await;
    assert!(error.must("message").contains("rate_limited"), "{error:?}");
}

#[tokio::test]
async fn a_stream_of_fragments_counts_against_the_rate_limit_and_closes_1008() {
    let node = TestNode::start(&["--rate-limit", "5"]);
    let mut client = node.connect().await;
    // One message that never ends: a first fragment, then empty ones.
    let first = Frame::message(vec![1u8], OpCode::Data(Data::Binary), false);
    let _ = client.socket.send(Message::Frame(first)).await;
    for _ in 0..2_000 {
        let more = Frame::message(Vec::<u8>::new(), OpCode::Data(Data::Continue), false);
        if client.socket.send(Message::Frame(more)).await.is_err() {
            break;
        }
    }
    assert_eq!(client.expect_close().await, 1008);
}

#[tokio::test]
async fn a_text_message_that_is_not_utf8_closes_with_1007() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;
    let invalid = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    client
        .socket
        .send(Message::Frame(invalid))
        .await
        .expect("send");
    assert_eq!(client.expect_close().await, 1007);
    assert_eq!(refused(&node).await["invalid_utf8"], 1);
}

#[tokio::test]
async fn a_fragmented_text_message_that_is_not_utf8_closes_with_1007() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;
    // Each fragment ends inside a character only the two together could
    // complete; the second byte is not a continuation byte.
    let first = Frame::message(vec![b'"', 0xc3], OpCode::Data(Data::Text), false);
    let last = Frame::message(vec![b'x', b'"'], OpCode::Data(Data::Continue), true);
    client
        .socket
        .send(Message::Frame(first))
        .await
        .expect("send");
    client
        .socket
        .send(Message::Frame(last))
        .await
        .expect("send");
    assert_eq!(client.expect_close().await, 1007);
}

#[tokio::test]
async fn a_stomp_text_message_that_is_not_utf8_closes_with_1007() {
    let node = TestNode::start(&[]);
    let mut client = node.stomp().await;
    let invalid = Frame::message(
        b"SEND\ndestination:/topic/a\n\n\xff\0".to_vec(),
        OpCode::Data(Data::Text),
        true,
    );
    client
        .socket
        .send(Message::Frame(invalid))
        .await
        .expect("send");
    client.expect_error_then_close(1007).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_handshakes_never_exceed_the_connection_limit() {
    // The handshake rate is not what should refuse here.
    let node = TestNode::start(&[
        "--max-connections",
        "10",
        "--handshake-rate-per-ip",
        "100000",
    ]);
    let url = node.ws_url();
    let outcomes = join_all((0..100).map(|_| handshake(&url, None))).await;
    let mut open = Vec::new();
    let mut refusals = 0;
    for outcome in outcomes {
        match outcome {
            Handshake::Opened(client) => open.push(client),
            Handshake::Refused(status, body) => {
                assert_eq!(status, 503, "{body}");
                assert_eq!(body["error"], "unavailable", "{body}");
                refusals += 1;
            }
        }
    }
    // Nobody closed, so exactly the limit got in.
    assert_eq!(open.len(), 10);
    assert_eq!(refusals, 90);
    let stats = node.stats().await;
    assert_eq!(stats["connections"]["current"], 10, "{stats}");
    assert_eq!(stats["connections"]["rejected"], 90, "{stats}");
    assert_eq!(stats["refused"]["connections_per_node"], 90, "{stats}");

    // A slot is given back when its session ends.
    drop(open.pop());
    assert!(
        eventually(WAIT, || async {
            node.stats().await["connections"]["current"] == 9
        })
        .await
    );
    must_open(&url, None).await;
}

#[tokio::test]
async fn connections_per_client_ip_are_limited_behind_a_trusted_proxy() {
    let node = TestNode::start(&[
        "--max-connections-per-ip",
        "2",
        "--trusted-proxies",
        "127.0.0.1/32",
        "--api-key",
        KEY,
    ]);
    let url = node.ws_url();
    let first = must_open(&url, Some("192.0.2.1")).await;
    // A forged entry to the left of what the proxy appended changes nothing.
    let _second = must_open(&url, Some("203.0.113.50, 192.0.2.1")).await;
    must_refuse(&url, Some("192.0.2.1"), 429, "too_many_connections").await;
    let mut other_ip = must_open(&url, Some("192.0.2.2")).await;
    other_ip.assert_alive().await;

    drop(first);
    assert!(
        eventually(WAIT, || async {
            matches!(
                handshake(&url, Some("192.0.2.1")).await,
                Handshake::Opened(_)
            )
        })
        .await,
        "192.0.2.1 got its slot back"
    );
    let refused = refused(&node).await;
    assert!(
        refused["connections_per_ip"].as_u64().unwrap() >= 1,
        "{refused}"
    );
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let node = TestNode::start(&["--max-connections-per-ip", "2"]);
    let url = node.ws_url();
    let _first = must_open(&url, Some("192.0.2.1")).await;
    let _second = must_open(&url, Some("192.0.2.2")).await;
    // All three come from 127.0.0.1, whatever the header says.
    must_refuse(&url, Some("192.0.2.3"), 429, "too_many_connections").await;
    assert_eq!(refused(&node).await["connections_per_ip"], 1);
}

#[tokio::test]
async fn connections_per_user_are_limited_for_json_and_stomp() {
    let node = TestNode::start(&["--jwt-secret", "s", "--max-connections-per-user", "2"]);
    let (_one, _) = node.connect_as("s", "alice").await;
    let (_two, _) = node.connect_as("s", "alice").await;
    must_refuse(
        &node.ws_url_as("s", "alice", 3600),
        None,
        429,
        "too_many_connections",
    )
    .await;
    let (mut bob, _) = node.connect_as("s", "bob").await;
    bob.assert_alive().await;

    // A STOMP session's user is known from its CONNECT: counted then.
    let alice = token("s", "alice", 3600);
    let mut stomp = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("the upgrade carries no user, so it is admitted");
    stomp
        .send_frame(
            &StompFrame::new("CONNECT")
                .header("accept-version", "1.2")
                .header("host", "herald")
                .header("passcode", &alice),
        )
        .await;
    let error = stomp.expect_error_then_close(1008).await;
    assert!(
        error.must("message").contains("too_many_connections"),
        "{error:?}"
    );
    let (_bob_stomp, connected) = node
        .stomp_with(&[("passcode", &token("s", "bob", 3600))])
        .await;
    assert_eq!(connected.get("user-name"), Some("bob"));
    let refused = refused(&node).await;
    assert_eq!(refused["connections_per_user"], 2, "{refused}");
}

#[tokio::test]
async fn a_stomp_session_counted_against_its_user_gives_the_slot_back_when_it_ends() {
    let node = TestNode::start(&["--jwt-secret", "s", "--max-connections-per-user", "1"]);
    let alice = token("s", "alice", 3600);
    let (stomp, _) = node.stomp_with(&[("passcode", &alice)]).await;
    must_refuse(
        &node.ws_url_as("s", "alice", 3600),
        None,
        429,
        "too_many_connections",
    )
    .await;
    drop(stomp);
    assert!(
        eventually(WAIT, || async {
            matches!(
                handshake(&node.ws_url_as("s", "alice", 3600), None).await,
                Handshake::Opened(_)
            )
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handshakes_per_second_per_client_ip_are_limited() {
    let node = TestNode::start(&[
        "--handshake-rate-per-ip",
        "2",
        "--trusted-proxies",
        "127.0.0.1/32",
        "--api-key",
        KEY,
    ]);
    let url = node.ws_url();
    let outcomes = join_all((0..10).map(|_| handshake(&url, Some("198.51.100.1")))).await;
    let mut opened = Vec::new();
    for outcome in outcomes {
        match outcome {
            Handshake::Opened(client) => opened.push(client),
            Handshake::Refused(status, body) => {
                assert_eq!(status, 429, "{body}");
                assert_eq!(body["error"], "rate_limited", "{body}");
            }
        }
    }
    // Two at once, one more each half second.
    assert!(
        (2..=6).contains(&opened.len()),
        "{} of 10 handshakes at once",
        opened.len()
    );
    // Another address has its own allowance.
    must_open(&url, Some("198.51.100.2")).await;
    let refused_count = refused(&node).await["handshake_rate"].as_u64().unwrap();
    assert_eq!(refused_count, 10 - opened.len() as u64);
    let metrics = http()
        .get(node.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let line = metrics
        .lines()
        .find(|line| line.starts_with("herald_handshakes_rate_limited_total"))
        .unwrap_or_else(|| panic!("no handshake rate counter in {metrics}"));
    assert!(line.ends_with(&format!(" {refused_count}")), "{line}");
}
