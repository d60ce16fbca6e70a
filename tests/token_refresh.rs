//! Token lifetime: a session is told shortly before its token expires,
//! a fresh token for the same user moves the deadline, and a session whose
//! token runs out closes with 4001 on time. JSON and STOMP alike.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::stomp::*;
use support::*;

const SECRET: &str = "refresh-secret";

#[tokio::test]
async fn a_json_session_is_warned_then_lives_on_with_a_refreshed_token() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let (mut client, _) = node.connect_as(SECRET, "alice").await;
    // A short token: the notice (30 s ahead) is due at once.
    client
        .call(json!({"op": "refresh", "token": token(SECRET, "alice", 3), "id": "short"}))
        .await;
    let notice = client.expect_op("expiring").await;
    let in_ms = notice["in_ms"].as_u64().expect("in_ms");
    assert!(in_ms <= 3_000, "{notice}");

    let answer = client
        .call(json!({"op": "refresh", "token": token(SECRET, "alice", 3600), "id": "r"}))
        .await;
    assert_eq!(answer["op"], "ack", "{answer}");
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    client.assert_alive().await;
}

#[tokio::test]
async fn a_refresh_for_another_user_or_with_a_bad_token_is_forbidden_and_changes_nothing() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let (mut client, _) = node.connect_as(SECRET, "alice").await;
    for token in [
        token(SECRET, "mallory", 3600),
        token("another-secret", "alice", 3600),
        token(SECRET, "alice", -60),
        "not a token".to_owned(),
    ] {
        let answer = client
            .expect_error(
                json!({"op": "refresh", "token": token, "id": "r"}),
                "forbidden",
            )
            .await;
        assert!(answer["message"].as_str().is_some(), "{answer}");
    }
    client.assert_alive().await;
    let mut anonymous = node.connect().await;
    anonymous
        .expect_error(
            json!({"op": "refresh", "token": token(SECRET, "alice", 3600), "id": "r"}),
            "forbidden",
        )
        .await;
}

#[tokio::test]
async fn a_session_whose_token_runs_out_closes_4001_within_a_second() {
    let node = TestNode::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0"]);
    let started = Instant::now();
    let (mut client, _) = node.connect_as(SECRET, "brief").await;
    client
        .call(json!({"op": "refresh", "token": token(SECRET, "brief", 2), "id": "r"}))
        .await;
    assert_eq!(client.expect_close().await, 4001);
    let lived = started.elapsed();
    // exp has whole seconds: the token ran out between 1 and 2 s in.
    assert!(
        lived < Duration::from_millis(3_000),
        "closed after {lived:?}"
    );
}

#[tokio::test]
async fn a_stomp_session_subscribed_to_herald_expiring_is_warned_and_refreshes_by_send() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let short = token(SECRET, "carol", 4);
    let (mut client, _) = node.stomp_with(&[("passcode", &short)]).await;
    client.subscribe("/herald/expiring", "exp").await;
    let notice = client.expect_message().await;
    assert_eq!(notice.get("subscription"), Some("exp"), "{notice:?}");
    let in_ms: u64 = notice.must("in-ms").parse().expect("a number");
    assert!(in_ms <= 4_000, "{notice:?}");

    client
        .with_receipt(
            StompFrame::new("SEND")
                .header("destination", "/herald/refresh")
                .header("passcode", &token(SECRET, "carol", 3600)),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    client.subscribe("/topic/still.here", "alive").await;

    // Another user's token is refused the STOMP way: ERROR, then the close.
    client
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", "/herald/refresh")
                .header("receipt", "theft")
                .body(token(SECRET, "dave", 3600)),
        )
        .await;
    let error = client.expect_error_then_close(1008).await;
    assert_eq!(error.get("receipt-id"), Some("theft"));
    assert!(error.must("message").starts_with("forbidden"), "{error:?}");
}
