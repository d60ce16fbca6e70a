//! Authorization by the application: topics whose permission rule says
//! `ask` are decided by the application's own endpoint (a real HTTP server
//! the test runs), for JSON and STOMP sessions alike; no answer, a slow one
//! or a broken one is `forbidden`; answers are kept per session for the
//! cache period; and deliveries on such topics reach only subscriptions the
//! application approved.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::authorizer::{Authorizer, Verdict};
use support::rules::{node_with_config, rules, token_with};
use support::stomp::*;
use support::*;

const SECRET: &str = "authorize-secret";
const KEY: &str = "authorize-key";

/// Rooms are the application's to decide; news is open to read; the rest
/// is open.
fn room_rules() -> String {
    rules(&[("room.*", "ask", "ask"), ("news.#", "anyone", "nobody")])
}

fn room_node(name: &str, endpoint: &str, extra: &[&str]) -> TestNode {
    let mut args = vec!["--authorize-url", endpoint, "--authorize-key", KEY];
    args.extend_from_slice(extra);
    node_with_config(name, &room_rules(), SECRET, &args)
}

async fn json_client(node: &TestNode, user: &str) -> WsClient {
    let token = token_with(SECRET, user, json!({"team": "blue"}));
    node.connect_with_token(&token).await.0
}

#[tokio::test]
async fn a_subscribe_the_application_allows_is_acked_and_delivered_and_it_was_told_who_asked() {
    let app = Authorizer::start(|_| Verdict::Allow).await;
    let node = room_node("allow", &app.url, &[]);
    let mut alice = json_client(&node, "alice").await;
    let ack = alice
        .call(json!({"op": "subscribe", "topic": "room.42", "id": "s"}))
        .await;
    assert_eq!(ack["op"], "ack", "{ack}");
    node.publish("room.42", json!("hello")).await;
    let message = alice.expect_message().await;
    assert_eq!(message["topic"], "room.42");

    let asked = app.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    let (question, authorization) = &asked[0];
    assert_eq!(question["action"], "subscribe");
    assert_eq!(question["topic"], "room.42");
    assert_eq!(question["pattern"], false);
    assert_eq!(question["user"], "alice");
    assert!(question["session"]
        .as_str()
        .is_some_and(|s| s.starts_with("s-")));
    assert_eq!(question["claims"]["team"], "blue");
    assert_eq!(
        authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test]
async fn a_subscribe_or_publish_the_application_refuses_is_forbidden_with_its_reason() {
    let app = Authorizer::start(|_| Verdict::Deny("alice is not in room 42")).await;
    let node = room_node("deny", &app.url, &[]);
    let mut alice = json_client(&node, "alice").await;
    for op in [
        json!({"op": "subscribe", "topic": "room.42", "id": "s"}),
        json!({"op": "publish", "topic": "room.42", "data": 1, "id": "p"}),
    ] {
        let error = alice.expect_error(op, "forbidden").await;
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("alice is not in room 42")),
            "{error}"
        );
    }
    // A refused subscription receives nothing.
    node.publish("room.42", json!("secret")).await;
    alice.expect_silence(Duration::from_millis(300)).await;
    // Topics the rules decide need no question.
    assert_eq!(
        alice
            .call(json!({"op": "subscribe", "topic": "news.x", "id": "n"}))
            .await["op"],
        "ack"
    );
    assert_eq!(app.questions().len(), 2);
}

#[tokio::test]
async fn an_endpoint_that_is_slow_broken_or_down_means_forbidden_and_the_session_goes_on() {
    let app = Authorizer::start(|question| match question["topic"].as_str() {
        Some("room.slow") => Verdict::Slow(Duration::from_secs(5)),
        Some("room.500") => Verdict::Status(500, "oops"),
        Some("room.garbage") => Verdict::Status(200, "yes please"),
        Some("room.redirect") => Verdict::Status(302, ""),
        _ => Verdict::Allow,
    })
    .await;
    let node = room_node("broken", &app.url, &["--authorize-timeout", "500ms"]);
    let mut alice = json_client(&node, "alice").await;
    let started = Instant::now();
    alice
        .expect_error(
            json!({"op": "subscribe", "topic": "room.slow", "id": "slow"}),
            "forbidden",
        )
        .await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    for topic in ["room.500", "room.garbage", "room.redirect"] {
        alice
            .expect_error(
                json!({"op": "subscribe", "topic": topic, "id": topic}),
                "forbidden",
            )
            .await;
    }
    assert_eq!(
        alice
            .call(json!({"op": "subscribe", "topic": "room.ok", "id": "ok"}))
            .await["op"],
        "ack"
    );

    let down = node_with_config(
        "down",
        &room_rules(),
        SECRET,
        &["--authorize-url", "http://127.0.0.1:9/authorize"],
    );
    let mut bob = json_client(&down, "bob").await;
    bob.expect_error(
        json!({"op": "subscribe", "topic": "room.1", "id": "s"}),
        "forbidden",
    )
    .await;
    bob.assert_alive().await;
}

#[tokio::test]
async fn frames_sent_while_the_application_decides_are_answered_in_order_after_it() {
    let app = Authorizer::start(|question| match question["topic"].as_str() {
        Some("room.slow") => Verdict::Slow(Duration::from_millis(400)),
        _ => Verdict::Allow,
    })
    .await;
    let node = room_node("order", &app.url, &[]);
    let mut alice = json_client(&node, "alice").await;
    alice
        .send_json(json!({"op": "subscribe", "topic": "room.slow", "id": "1"}))
        .await;
    alice
        .send_json(json!({"op": "publish", "topic": "room.slow", "data": "mine", "id": "2"}))
        .await;
    alice.send_json(json!({"op": "ping", "id": "3"})).await;
    // Nothing sent after the subscribe is handled before its answer: the
    // ping waits for it, and the publish reaches the new subscription.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let frame = alice.next_json().await;
        seen.push(match frame["op"].as_str() {
            Some("message") => "message".to_owned(),
            _ => format!("{}:{}", frame["op"], frame["id"]),
        });
    }
    let at = |what: &str| seen.iter().position(|s| s == what);
    let subscribed = at("\"ack\":\"1\"").expect("the subscribe is acked");
    assert!(at("\"pong\":\"3\"") > Some(subscribed), "{seen:?}");
    assert!(at("\"ack\":\"2\"") > Some(subscribed), "{seen:?}");
    assert!(at("message") > Some(subscribed), "{seen:?}");
}

#[tokio::test]
async fn answers_are_kept_per_session_for_the_cache_period() {
    let app = Authorizer::start(|_| Verdict::Allow).await;
    let node = room_node("cache", &app.url, &["--authorize-cache", "1s"]);
    let mut alice = json_client(&node, "alice").await;
    for _ in 0..3 {
        alice.publish("room.1", json!(1)).await;
    }
    assert_eq!(app.questions().len(), 1, "one question for three publishes");
    let mut bob = json_client(&node, "bob").await;
    bob.publish("room.1", json!(1)).await;
    assert_eq!(app.questions().len(), 2, "another session asks for itself");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    alice.publish("room.1", json!(1)).await;
    assert_eq!(
        app.questions().len(),
        3,
        "asked again after the cache period"
    );

    let never = Authorizer::start(|_| Verdict::Allow).await;
    let uncached = room_node("no-cache", &never.url, &["--authorize-cache", "0"]);
    let mut carol = json_client(&uncached, "carol").await;
    for _ in 0..3 {
        carol.publish("room.1", json!(1)).await;
    }
    assert_eq!(
        never.questions().len(),
        3,
        "a cache period of 0 asks every time"
    );
}

#[tokio::test]
async fn a_wide_pattern_receives_ask_topics_only_through_subscriptions_the_application_approved() {
    let app = Authorizer::start(|question| match question["topic"].as_str() {
        Some("room.*") => Verdict::Allow,
        _ => Verdict::Deny("no"),
    })
    .await;
    let node = room_node("wide", &app.url, &[]);
    let mut alice = json_client(&node, "alice").await;
    // `#` reaches past the rooms: acked without a question, rooms filtered.
    assert_eq!(
        alice
            .call(json!({"op": "subscribe", "topic": "#", "id": "all"}))
            .await["op"],
        "ack"
    );
    assert!(app.questions().is_empty(), "{:?}", app.questions());
    node.publish("room.1", json!(1)).await;
    node.publish("news.a", json!(1)).await;
    node.publish("zz.marker", json!(1)).await;
    assert_eq!(alice.topics_until("zz.marker").await, ["news.a"]);

    // `room.*` lies within the rule: the application is asked about the
    // pattern itself, and its yes lets every room through.
    assert_eq!(
        alice
            .call(json!({"op": "subscribe", "topic": "room.*", "id": "rooms"}))
            .await["op"],
        "ack"
    );
    let question = app.questions().pop().expect("asked");
    assert_eq!(question["topic"], "room.*");
    assert_eq!(question["pattern"], true);
    node.publish("room.1", json!(1)).await;
    node.publish("zz.marker", json!(2)).await;
    assert_eq!(alice.topics_until("zz.marker").await, ["room.1"]);

    // Unsubscribed, the approval goes with it.
    assert_eq!(
        alice
            .call(json!({"op": "unsubscribe", "topic": "room.*", "id": "u"}))
            .await["op"],
        "ack"
    );
    node.publish("room.2", json!(1)).await;
    node.publish("zz.marker", json!(3)).await;
    assert!(alice.topics_until("zz.marker").await.is_empty());
}

#[tokio::test]
async fn a_grant_in_the_token_needs_no_question() {
    let app = Authorizer::start(|_| Verdict::Deny("no")).await;
    let node = room_node("grant", &app.url, &[]);
    let token = token_with(
        SECRET,
        "dave",
        json!({"herald": {"subscribe": ["room.9"], "publish": ["room.9"]}}),
    );
    let (mut dave, _) = node.connect_with_token(&token).await;
    dave.subscribe("room.9").await;
    dave.publish("room.9", json!(1)).await;
    dave.expect_message().await;
    assert!(app.questions().is_empty(), "{:?}", app.questions());
}

#[tokio::test]
async fn stomp_subscribes_and_sends_are_decided_by_the_application_too() {
    let app = Authorizer::start(|question: &Value| {
        match (question["action"].as_str(), question["topic"].as_str()) {
            (Some("subscribe"), Some("room.1")) | (Some("publish"), Some("room.1")) => {
                Verdict::Allow
            }
            _ => Verdict::Deny("not your room"),
        }
    })
    .await;
    let node = room_node("stomp", &app.url, &[]);
    let token = token_with(SECRET, "erin", json!({}));
    let (mut erin, _) = node.stomp_with(&[("passcode", &token)]).await;
    erin.subscribe("/topic/room.1", "sub-1").await;
    erin.send_frame(
        &StompFrame::new("SEND")
            .header("destination", "/topic/room.1")
            .header("receipt", "r1")
            .body("hi"),
    )
    .await;
    let mut commands = Vec::new();
    for _ in 0..2 {
        let frame = erin.next_frame().await;
        if frame.command == "MESSAGE" {
            assert_eq!(frame.get("subscription"), Some("sub-1"));
            assert_eq!(frame.text(), "hi");
        }
        commands.push(frame.command.clone());
    }
    commands.sort();
    assert_eq!(commands, ["MESSAGE", "RECEIPT"]);

    erin.send_frame(
        &StompFrame::new("SEND")
            .header("destination", "/topic/room.2")
            .header("receipt", "r2")
            .body("hi"),
    )
    .await;
    let error = erin.expect_error_then_close(1008).await;
    assert_eq!(error.get("receipt-id"), Some("r2"));
    assert!(
        error
            .must("message")
            .starts_with("forbidden: not your room"),
        "{error:?}"
    );

    let (mut frank, _) = node
        .stomp_with(&[("passcode", &token_with(SECRET, "frank", json!({})))])
        .await;
    frank
        .send_frame(
            &StompFrame::new("SUBSCRIBE")
                .header("destination", "/topic/room.2")
                .header("id", "s")
                .header("receipt", "r"),
        )
        .await;
    let error = frank.expect_error_then_close(1008).await;
    assert!(error.must("message").contains("not your room"), "{error:?}");
}

#[test]
fn an_ask_rule_without_an_endpoint_stops_herald_at_start() {
    let dir = std::env::temp_dir().join(format!("herald-authorize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("no-endpoint.toml");
    std::fs::write(&file, room_rules()).expect("config written");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .output()
        .expect("herald runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HERALD_AUTHORIZE_URL"), "{stderr}");
}

#[tokio::test]
async fn an_approval_the_broker_refused_to_use_lets_nothing_through_a_wider_pattern() {
    let app = Authorizer::start(|_| Verdict::Allow).await;
    let node = room_node("refused-approval", &app.url, &["--max-subscriptions", "1"]);
    let mut alice = json_client(&node, "alice").await;
    alice.subscribe("news.a").await;
    // Approved by the application, refused by the subscription limit.
    alice
        .expect_error(
            json!({"op": "subscribe", "topic": "room.*"}),
            "too_many_subscriptions",
        )
        .await;
    alice.unsubscribe("news.a").await;
    alice.subscribe("#").await;
    node.publish("room.1", json!(1)).await;
    node.publish("zz.marker", json!(1)).await;
    assert!(
        alice.topics_until("zz.marker").await.is_empty(),
        "a room reached `#` through an approval whose subscription never was"
    );
}

#[tokio::test]
async fn an_approval_lets_through_only_the_topics_of_the_rule_it_was_given_under() {
    let app = Authorizer::start(|question| match question["topic"].as_str() {
        Some("room.*") => Verdict::Allow,
        _ => Verdict::Deny("no"),
    })
    .await;
    let config = rules(&[("#.admin", "ask", "nobody"), ("room.*", "ask", "ask")]);
    let node = node_with_config(
        "rule-bound",
        &config,
        SECRET,
        &["--authorize-url", &app.url],
    );
    let mut alice = json_client(&node, "alice").await;
    alice.subscribe("room.*").await;
    alice.subscribe("zz.marker").await;
    node.publish("room.admin", json!(1)).await;
    node.publish("room.1", json!(1)).await;
    node.publish("zz.marker", json!(1)).await;
    assert_eq!(alice.topics_until("zz.marker").await, ["room.1"]);
}

#[tokio::test]
async fn a_refresh_asks_the_application_again_and_ends_what_it_now_refuses() {
    let allow = Arc::new(AtomicBool::new(true));
    let switch = allow.clone();
    let app = Authorizer::start(move |_| {
        if switch.load(Ordering::SeqCst) {
            Verdict::Allow
        } else {
            Verdict::Deny("you left the room")
        }
    })
    .await;
    let node = room_node("refresh-asks", &app.url, &[]);
    let mut alice = json_client(&node, "alice").await;
    alice.subscribe("room.1").await;
    alice.subscribe("zz.marker").await;
    node.publish("room.1", json!("before")).await;
    assert_eq!(alice.expect_message().await["data"], "before");

    allow.store(false, Ordering::SeqCst);
    let token = token_with(SECRET, "alice", json!({"team": "red"}));
    alice
        .send_json(json!({"op": "refresh", "token": token, "id": "r"}))
        .await;
    let mut ended = false;
    while !ended {
        let frame = alice.next_json().await;
        if frame["op"] == "unsubscribed" {
            assert_eq!(frame["topic"], "room.1", "{frame}");
            ended = true;
        }
    }
    let asked = app.questions();
    let last = asked.last().expect("asked again");
    assert_eq!(
        last["claims"]["team"], "red",
        "asked with the new token's claims"
    );
    node.publish("room.1", json!("after")).await;
    node.publish("zz.marker", json!(1)).await;
    assert!(alice.topics_until("zz.marker").await.is_empty());
}

#[tokio::test]
async fn a_missing_answer_is_not_kept_and_the_next_publish_asks_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = Authorizer::start(move |_| {
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            Verdict::Status(503, "busy")
        } else {
            Verdict::Allow
        }
    })
    .await;
    let node = room_node("unanswered", &app.url, &[]);
    let mut alice = json_client(&node, "alice").await;
    alice
        .expect_error(
            json!({"op": "publish", "topic": "room.1", "data": 1}),
            "forbidden",
        )
        .await;
    alice.publish("room.1", json!(2)).await;
    assert_eq!(app.questions().len(), 2);
}

#[tokio::test]
async fn refreshes_in_quick_succession_put_subscriptions_to_the_application_once() {
    let app = Authorizer::start(|_| Verdict::Allow).await;
    let node = room_node("refresh-burst", &app.url, &[]);
    let mut alice = json_client(&node, "alice").await;
    alice.subscribe("room.1").await;
    for n in 0..20 {
        let token = token_with(SECRET, "alice", json!({"n": n}));
        let answer = alice.call(json!({"op": "refresh", "token": token})).await;
        assert_eq!(answer["op"], "ack", "{answer}");
    }
    alice.assert_alive().await;
    // One question for the subscribe, one for the first refresh; the rest
    // wait for the re-check gap and are checked together.
    assert_eq!(app.questions().len(), 2, "{:?}", app.questions());
}
