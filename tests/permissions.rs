//! Permission rules (`[[permissions]]`) and token grants (the `herald`
//! claim): who may subscribe, receive and publish where, JSON and STOMP
//! alike; pattern subscriptions filtered by topic; private topics private
//! under every rule and grant; the HTTP API never restricted; and what a
//! refresh with other rights does to subscriptions.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::rules::{node_with_config, rules};
use support::stomp::*;
use support::*;

const SECRET: &str = "permissions-secret";

fn node_with_rules(name: &str, rules: &str) -> TestNode {
    node_with_config(name, rules, SECRET, &[])
}

fn token_with(user: &str, extra: Value) -> String {
    support::rules::token_with(SECRET, user, extra)
}

async fn json_client(node: &TestNode, token: Option<&str>) -> WsClient {
    match token {
        Some(token) => node.connect_with_token(token).await.0,
        None => node.connect().await,
    }
}

async fn stomp_client(node: &TestNode, token: Option<&str>) -> StompClient {
    match token {
        Some(token) => node.stomp_with(&[("passcode", token)]).await.0,
        None => node.stomp().await,
    }
}

/// The outcome of a JSON op: `ack` or the error code.
async fn outcome(client: &mut WsClient, op: Value) -> String {
    let reply = client.call(op).await;
    match reply["op"].as_str() {
        Some("ack") => "ack".to_owned(),
        Some("error") => reply["code"].as_str().unwrap_or("?").to_owned(),
        _ => panic!("unexpected reply {reply}"),
    }
}

async fn subscribe_outcome(client: &mut WsClient, topic: &str) -> String {
    outcome(client, json!({"op": "subscribe", "topic": topic})).await
}

async fn publish_outcome(client: &mut WsClient, topic: &str) -> String {
    outcome(client, json!({"op": "publish", "topic": topic, "data": 1})).await
}

/// The `(destination, subscription)` of the MESSAGE frames that arrive
/// until one whose destination is `marker`.
async fn stomp_until(client: &mut StompClient, marker: &str) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    loop {
        let frame = client.expect_message().await;
        let destination = frame.must("destination").to_owned();
        if destination == marker {
            return seen;
        }
        seen.push((destination, frame.must("subscription").to_owned()));
    }
}

/// A STOMP SUBSCRIBE that must be refused: ERROR naming `forbidden`, with
/// the receipt, then the close.
async fn stomp_subscribe_forbidden(client: &mut StompClient, destination: &str) {
    client
        .send_frame(
            &StompFrame::new("SUBSCRIBE")
                .header("destination", destination)
                .header("id", "refused")
                .header("receipt", "r-refused"),
        )
        .await;
    let error = client.expect_error_then_close(1008).await;
    assert_eq!(error.get("receipt-id"), Some("r-refused"), "{error:?}");
    assert!(
        error.must("message").starts_with("forbidden"),
        "{destination}: {error:?}"
    );
}

fn subjects_config() -> String {
    rules(&[
        ("open.#", "anyone", "anyone"),
        ("members.#", "authenticated", "authenticated"),
        ("staff.#", "claim:staff", "claim:staff"),
        (
            "editors.#",
            "claim:org.role=editor",
            "claim:org.role=editor",
        ),
        ("readers.#", "claim:roles=reader", "claim:roles=reader"),
        ("level.#", "claim:level=3", "nobody"),
        ("closed.#", "nobody", "nobody"),
    ])
}

#[tokio::test]
async fn each_subject_admits_whom_it_names_for_json_subscribe_and_publish() {
    let node = node_with_rules("subjects", &subjects_config());
    let plain = token_with("pat", json!({"staff": false}));
    let staff = token_with("sam", json!({"staff": true}));
    let editor = token_with("eve", json!({"org": {"role": "editor"}, "level": 3}));
    let reader = token_with("rey", json!({"roles": ["writer", "reader"]}));
    let cases: [(Option<&str>, [&str; 7]); 5] = [
        // open, members, staff, editors, readers, level, closed
        (
            None,
            [
                "ack",
                "forbidden",
                "forbidden",
                "forbidden",
                "forbidden",
                "forbidden",
                "forbidden",
            ],
        ),
        (
            Some(&plain),
            [
                "ack",
                "ack",
                "forbidden",
                "forbidden",
                "forbidden",
                "forbidden",
                "forbidden",
            ],
        ),
        (
            Some(&staff),
            [
                "ack",
                "ack",
                "ack",
                "forbidden",
                "forbidden",
                "forbidden",
                "forbidden",
            ],
        ),
        (
            Some(&editor),
            [
                "ack",
                "ack",
                "forbidden",
                "ack",
                "forbidden",
                "ack",
                "forbidden",
            ],
        ),
        (
            Some(&reader),
            [
                "ack",
                "ack",
                "forbidden",
                "forbidden",
                "ack",
                "forbidden",
                "forbidden",
            ],
        ),
    ];
    let trees = [
        "open", "members", "staff", "editors", "readers", "level", "closed",
    ];
    for (token, expected) in cases {
        let mut client = json_client(&node, token).await;
        for (tree, expected) in trees.iter().zip(expected) {
            let topic = format!("{tree}.x");
            assert_eq!(
                subscribe_outcome(&mut client, &topic).await,
                expected,
                "subscribe {topic} with {token:?}"
            );
            // `level.#` lets nobody publish.
            let publish = if *tree == "level" {
                "forbidden"
            } else {
                expected
            };
            assert_eq!(
                publish_outcome(&mut client, &topic).await,
                publish,
                "publish {topic} with {token:?}"
            );
        }
        client.assert_alive().await;
    }
}

#[tokio::test]
async fn each_subject_admits_whom_it_names_for_stomp_and_a_refusal_is_error_then_close() {
    let node = node_with_rules("subjects-stomp", &subjects_config());
    let reader = token_with("rey", json!({"roles": ["writer", "reader"]}));
    let editor = token_with("eve", json!({"org": {"role": "editor"}}));

    let mut client = stomp_client(&node, Some(&reader)).await;
    client.subscribe("/topic/readers/x", "1").await;
    client.subscribe("/topic/members/x", "2").await;
    client.subscribe("/topic/open/x", "3").await;
    client
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", "/topic/readers/x")
                .body("hi"),
        )
        .await;
    let message = client.expect_message().await;
    assert_eq!(message.get("subscription"), Some("1"), "{message:?}");
    stomp_subscribe_forbidden(&mut client, "/topic/editors/x").await;

    for (token, destination) in [
        (None, "/topic/members/x"),
        (Some(reader.as_str()), "/topic/staff/x"),
        (Some(editor.as_str()), "/topic/readers/x"),
        (Some(editor.as_str()), "/topic/closed/x"),
    ] {
        let mut client = stomp_client(&node, token).await;
        stomp_subscribe_forbidden(&mut client, destination).await;
    }
    let mut client = stomp_client(&node, Some(&editor)).await;
    client.subscribe("/topic/editors/x", "e").await;
}

#[tokio::test]
async fn user_rules_give_each_user_their_own_tree_and_never_match_anonymous_sessions() {
    let node = node_with_rules(
        "user-rules",
        &rules(&[
            ("user.{user}.#", "authenticated", "authenticated"),
            ("#", "nobody", "nobody"),
        ]),
    );
    let alice = token_with("alice", json!({}));
    let mut client = json_client(&node, Some(&alice)).await;
    assert_eq!(
        subscribe_outcome(&mut client, "user.alice.inbox").await,
        "ack"
    );
    assert_eq!(subscribe_outcome(&mut client, "user.alice.#").await, "ack");
    assert_eq!(
        subscribe_outcome(&mut client, "user.bob.#").await,
        "forbidden"
    );
    assert_eq!(
        publish_outcome(&mut client, "user.alice.inbox").await,
        "ack"
    );
    assert_eq!(
        publish_outcome(&mut client, "user.bob.inbox").await,
        "forbidden"
    );
    assert_eq!(subscribe_outcome(&mut client, "news").await, "forbidden");
    let mut anonymous = json_client(&node, None).await;
    assert_eq!(
        subscribe_outcome(&mut anonymous, "user.alice.#").await,
        "forbidden"
    );
    assert_eq!(
        subscribe_outcome(&mut anonymous, "user.#").await,
        "forbidden"
    );

    // STOMP's user destinations are the same topics.
    let mut stomp = stomp_client(&node, Some(&alice)).await;
    stomp.subscribe("/user/queue/inbox", "mine").await;
    stomp.subscribe("/user", "me").await;
    node.publish("user.alice.inbox", json!("for alice")).await;
    let message = stomp.expect_message().await;
    assert_eq!(message.get("subscription"), Some("mine"), "{message:?}");
    stomp_subscribe_forbidden(&mut stomp, "/topic/user/bob/#").await;
}

#[tokio::test]
async fn the_first_matching_rule_wins() {
    let narrow_first = node_with_rules(
        "first-narrow",
        &rules(&[
            ("news.secret", "nobody", "nobody"),
            ("news.#", "anyone", "anyone"),
        ]),
    );
    let mut client = json_client(&narrow_first, None).await;
    assert_eq!(
        subscribe_outcome(&mut client, "news.secret").await,
        "forbidden"
    );
    assert_eq!(
        publish_outcome(&mut client, "news.secret").await,
        "forbidden"
    );
    assert_eq!(subscribe_outcome(&mut client, "news.sports").await, "ack");

    let broad_first = node_with_rules(
        "first-broad",
        &rules(&[
            ("news.#", "anyone", "anyone"),
            ("news.secret", "nobody", "nobody"),
        ]),
    );
    let mut client = json_client(&broad_first, None).await;
    assert_eq!(subscribe_outcome(&mut client, "news.secret").await, "ack");
    assert_eq!(publish_outcome(&mut client, "news.secret").await, "ack");
}

#[tokio::test]
async fn a_topic_no_rule_matches_is_open_and_a_last_hash_rule_makes_the_default_deny() {
    let open = node_with_rules("default-open", &rules(&[("news.#", "anyone", "nobody")]));
    let mut client = json_client(&open, None).await;
    assert_eq!(subscribe_outcome(&mut client, "chat.room1").await, "ack");
    assert_eq!(publish_outcome(&mut client, "chat.room1").await, "ack");
    assert_eq!(publish_outcome(&mut client, "news.x").await, "forbidden");

    let deny = node_with_rules(
        "default-deny",
        &rules(&[("news.#", "anyone", "nobody"), ("#", "nobody", "nobody")]),
    );
    let mut client = json_client(&deny, None).await;
    assert_eq!(
        subscribe_outcome(&mut client, "chat.room1").await,
        "forbidden"
    );
    assert_eq!(
        publish_outcome(&mut client, "chat.room1").await,
        "forbidden"
    );
    assert_eq!(subscribe_outcome(&mut client, "news.x").await, "ack");
}

#[tokio::test]
async fn grants_in_the_herald_claim_add_subscribe_and_publish_rights() {
    let node = node_with_rules("grants", &rules(&[("#", "nobody", "nobody")]));
    let granted = token_with(
        "gil",
        json!({"herald": {"subscribe": ["team.42.#"], "publish": ["team.42.chat"]}}),
    );
    let mut client = json_client(&node, Some(&granted)).await;
    assert_eq!(subscribe_outcome(&mut client, "team.42.#").await, "ack");
    assert_eq!(
        subscribe_outcome(&mut client, "team.43.chat").await,
        "forbidden"
    );
    assert_eq!(publish_outcome(&mut client, "team.42.chat").await, "ack");
    assert_eq!(client.expect_message().await["topic"], "team.42.chat");
    assert_eq!(
        publish_outcome(&mut client, "team.42.other").await,
        "forbidden"
    );
    let mut ungranted = json_client(&node, Some(&token_with("ned", json!({})))).await;
    assert_eq!(
        subscribe_outcome(&mut ungranted, "team.42.#").await,
        "forbidden"
    );

    let mut stomp = stomp_client(&node, Some(&granted)).await;
    stomp.subscribe("/topic/team/42/#", "t").await;
    stomp
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", "/topic/team/42/chat")
                .body("hi"),
        )
        .await;
    let message = stomp.expect_message().await;
    assert_eq!(message.get("destination"), Some("/topic/team.42.chat"));
    stomp
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", "/topic/team/42/other")
                .header("receipt", "denied")
                .body("no"),
        )
        .await;
    let error = stomp.expect_error_then_close(1008).await;
    assert_eq!(error.get("receipt-id"), Some("denied"));
    assert!(error.must("message").starts_with("forbidden"), "{error:?}");
}

fn filtered_config() -> String {
    rules(&[
        ("news.secret", "nobody", "nobody"),
        ("news.#", "anyone", "nobody"),
        ("#", "nobody", "nobody"),
    ])
}

/// Publishes, through the HTTP API, topics some of which the rules deny;
/// `news.end` last.
async fn publish_mixed(node: &TestNode) {
    for topic in [
        "news.sports",
        "news.secret",
        "chat.room1",
        "news.a.b",
        "other",
        "news.end",
    ] {
        node.publish(topic, json!(topic)).await;
    }
}

#[tokio::test]
async fn a_json_pattern_subscription_is_acked_and_delivers_only_allowed_topics() {
    let node = node_with_rules("filtered-json", &filtered_config());
    let mut everything = json_client(&node, None).await;
    everything.subscribe("#").await;
    let mut news = json_client(&node, None).await;
    news.subscribe("news.*").await;
    assert_eq!(subscribe_outcome(&mut news, "chat.*").await, "forbidden");
    publish_mixed(&node).await;
    assert_eq!(
        everything.topics_until("news.end").await,
        ["news.sports", "news.a.b"]
    );
    assert_eq!(news.topics_until("news.end").await, ["news.sports"]);
}

#[tokio::test]
async fn a_stomp_pattern_subscription_is_acked_and_delivers_only_allowed_topics() {
    let node = node_with_rules("filtered-stomp", &filtered_config());
    let mut client = stomp_client(&node, None).await;
    client.subscribe("/topic/#", "all").await;
    client.subscribe("/topic/news/*", "news").await;
    publish_mixed(&node).await;
    let mut seen = stomp_until(&mut client, "/topic/news.end").await;
    seen.sort();
    let expected: Vec<(String, String)> = [
        ("/topic/news.a.b", "all"),
        ("/topic/news.sports", "all"),
        ("/topic/news.sports", "news"),
    ]
    .iter()
    .map(|(d, s)| (d.to_string(), s.to_string()))
    .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_pattern_over_private_topics_delivers_only_ones_own_under_any_rule_or_grant() {
    let node = node_with_rules(
        "private",
        &rules(&[("user.#", "anyone", "anyone"), ("#", "nobody", "nobody")]),
    );
    let alice = token_with(
        "alice",
        json!({"herald": {"subscribe": ["user.#"], "publish": ["user.#"]}}),
    );
    let mut json = json_client(&node, Some(&alice)).await;
    json.subscribe("user.#").await;
    json.subscribe("#").await;
    let mut stomp = stomp_client(&node, Some(&alice)).await;
    stomp.subscribe("/topic/user/#", "u").await;

    for topic in [
        "user.bob.x",
        "user.alice.x",
        "user.bob",
        "user.alice",
        "user.carol.y.z",
    ] {
        node.publish(topic, json!(topic)).await;
    }
    node.publish("user.alice.end", json!("end")).await;
    assert_eq!(
        json.topics_until("user.alice.end").await,
        ["user.alice.x", "user.alice"]
    );
    let seen: Vec<String> = stomp_until(&mut stomp, "/topic/user.alice.end")
        .await
        .into_iter()
        .map(|(destination, _)| destination)
        .collect();
    assert_eq!(seen, ["/topic/user.alice.x", "/topic/user.alice"]);

    // Publishing into another user's private topic stays forbidden.
    assert_eq!(publish_outcome(&mut json, "user.bob.x").await, "forbidden");
    stomp
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", "/topic/user/bob/x")
                .header("receipt", "theft")
                .body("no"),
        )
        .await;
    let error = stomp.expect_error_then_close(1008).await;
    assert!(error.must("message").starts_with("forbidden"), "{error:?}");
}

#[tokio::test]
async fn a_forbidden_publish_is_answered_forbidden_with_its_id_and_the_session_goes_on() {
    let node = node_with_rules("publish-denied", &rules(&[("news.#", "anyone", "nobody")]));
    let mut client = json_client(&node, None).await;
    client.subscribe("news.sports").await;
    client
        .send_json(json!({"op": "publish", "topic": "news.sports", "data": "x", "id": "p-1"}))
        .await;
    let reply = client.next_json().await;
    assert_eq!(reply["op"], "error", "{reply}");
    assert_eq!(reply["code"], "forbidden", "{reply}");
    assert_eq!(reply["id"], "p-1", "{reply}");
    client.expect_silence(Duration::from_millis(300)).await;
    client.assert_alive().await;
}

#[tokio::test]
async fn the_http_api_publishes_where_the_rules_let_no_client_publish() {
    let node = node_with_rules(
        "http-api",
        &rules(&[("alerts.#", "anyone", "nobody"), ("#", "nobody", "nobody")]),
    );
    let mut client = json_client(&node, None).await;
    client.subscribe("alerts.#").await;
    assert_eq!(
        publish_outcome(&mut client, "alerts.fire").await,
        "forbidden"
    );
    node.publish("alerts.fire", json!("from a backend")).await;
    let (status, _) = post_json(
        &node.url("/api/publish"),
        json!({"topic": "closed.topic", "data": 1}),
    )
    .await;
    assert_eq!(status, 202, "rules never restrict the HTTP API");
    let message = client.expect_message().await;
    assert_eq!(message["topic"], "alerts.fire");
    assert_eq!(message["data"], "from a backend");
}

#[tokio::test]
async fn send_to_the_backends_is_not_governed_by_topic_rules() {
    let node = node_with_rules("send", &rules(&[("#", "nobody", "nobody")]));
    let mut client = json_client(&node, None).await;
    // No RabbitMQ on this node: `unavailable`, never `forbidden`.
    let reply = client
        .call(json!({"op": "send", "destination": "orders.create", "data": 1}))
        .await;
    assert_eq!(reply["code"], "unavailable", "{reply}");
}

/// Sends a JSON refresh and returns the `unsubscribed` frames that come
/// before its ack.
async fn refresh(client: &mut WsClient, token: &str) -> Vec<Value> {
    client
        .send_json(json!({"op": "refresh", "token": token, "id": "refresh"}))
        .await;
    let mut notices = Vec::new();
    loop {
        let frame = client.next_json().await;
        if frame["id"] == "refresh" {
            assert_eq!(frame["op"], "ack", "{frame}");
            return notices;
        }
        assert_eq!(frame["op"], "unsubscribed", "{frame}");
        notices.push(frame);
    }
}

fn grants(subscribe: &[&str]) -> Value {
    json!({"herald": {"subscribe": subscribe}})
}

#[tokio::test]
async fn a_json_refresh_with_fewer_grants_ends_subscriptions_and_filters_what_stays() {
    let node = node_with_rules("refresh-fewer", &rules(&[("#", "nobody", "nobody")]));
    let first = token_with("rita", grants(&["team.42.#", "team.43.#"]));
    let mut client = json_client(&node, Some(&first)).await;
    client.subscribe("team.43.#").await;
    client.subscribe("team.42.#").await;
    let notices = refresh(&mut client, &token_with("rita", grants(&["team.42.chat"]))).await;
    assert_eq!(
        notices,
        [json!({"op": "unsubscribed", "topic": "team.43.#", "reason": "forbidden"})]
    );
    for topic in ["team.43.chat", "team.42.other", "team.42.chat"] {
        node.publish(topic, json!(topic)).await;
    }
    assert_eq!(client.expect_message().await["topic"], "team.42.chat");
    client.expect_silence(Duration::from_millis(300)).await;
    let url = node.url("/api/topics");
    let released = eventually(WAIT, || async {
        let topics = get_json(&url).await;
        let held = topics["topics"].as_array().cloned().unwrap_or_default();
        !held.iter().any(|t| t["topic"] == "team.43.#")
            && held.iter().any(|t| t["topic"] == "team.42.#")
    })
    .await;
    assert!(released, "the Broker let team.43.# go and kept team.42.#");
}

#[tokio::test]
async fn a_json_refresh_with_more_grants_opens_what_was_forbidden_or_filtered() {
    let node = node_with_rules("refresh-more", &rules(&[("#", "nobody", "nobody")]));
    let mut client = json_client(&node, Some(&token_with("max", grants(&["team.1.#"])))).await;
    client.subscribe("team.*.chat").await;
    assert_eq!(
        subscribe_outcome(&mut client, "team.2.x").await,
        "forbidden"
    );
    node.publish("team.2.chat", json!("hidden")).await;
    node.publish("team.1.chat", json!("seen")).await;
    assert_eq!(client.expect_message().await["data"], "seen");

    let notices = refresh(&mut client, &token_with("max", grants(&["team.#"]))).await;
    assert!(notices.is_empty(), "{notices:?}");
    assert_eq!(subscribe_outcome(&mut client, "team.2.x").await, "ack");
    node.publish("team.2.chat", json!("now seen")).await;
    assert_eq!(client.expect_message().await["data"], "now seen");
}

#[tokio::test]
async fn a_stomp_refresh_with_fewer_grants_sends_the_unsubscribed_notice_and_no_more_messages() {
    let node = node_with_rules("refresh-stomp", &rules(&[("#", "nobody", "nobody")]));
    let first = token_with("sol", grants(&["team.42.#", "team.43.#"]));
    let mut client = stomp_client(&node, Some(&first)).await;
    client.subscribe("/herald/unsubscribed", "notices").await;
    client.subscribe("/topic/team/43/#", "s-43").await;
    client.subscribe("/topic/team/42/#", "s-42").await;
    client
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", "/herald/refresh")
                .header("receipt", "refreshed")
                .header("passcode", &token_with("sol", grants(&["team.42.chat"]))),
        )
        .await;
    // The notice goes out before the refresh's receipt.
    let notice = client.expect_message().await;
    client.expect_receipt("refreshed").await;
    assert_eq!(
        notice.get("destination"),
        Some("/herald/unsubscribed"),
        "{notice:?}"
    );
    assert_eq!(notice.get("subscription"), Some("notices"));
    assert_eq!(notice.get("x-herald-subscription"), Some("s-43"));
    let body: Value = serde_json::from_str(notice.text()).expect("JSON body");
    assert_eq!(
        body,
        json!({"destination": "/topic/team/43/#", "subscription": "s-43", "reason": "forbidden"})
    );
    for topic in ["team.43.chat", "team.42.other", "team.42.chat"] {
        node.publish(topic, json!(topic)).await;
    }
    let message = client.expect_message().await;
    assert_eq!(message.get("subscription"), Some("s-42"));
    assert_eq!(message.get("destination"), Some("/topic/team.42.chat"));
    client.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_stomp_refresh_with_more_grants_opens_what_was_filtered() {
    let node = node_with_rules("refresh-stomp-more", &rules(&[("#", "nobody", "nobody")]));
    let mut client = stomp_client(&node, Some(&token_with("ray", grants(&["team.1.#"])))).await;
    client.subscribe("/topic/team/*/chat", "chat").await;
    node.publish("team.2.chat", json!("hidden")).await;
    node.publish("team.1.chat", json!("seen")).await;
    assert_eq!(client.expect_message().await.text(), "\"seen\"");
    client
        .with_receipt(
            StompFrame::new("SEND")
                .header("destination", "/herald/refresh")
                .header("passcode", &token_with("ray", grants(&["team.#"]))),
        )
        .await;
    node.publish("team.2.chat", json!("now seen")).await;
    assert_eq!(client.expect_message().await.text(), "\"now seen\"");
}

#[test]
fn a_bad_rule_stops_herald_at_start_with_exit_2_naming_the_rule() {
    let dir = std::env::temp_dir().join(format!("herald-perms-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad-rule.toml");
    std::fs::write(
        &file,
        rules(&[
            ("news.#", "anyone", "nobody"),
            ("chat.#", "admins", "nobody"),
        ]),
    )
    .expect("config written");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .output()
        .expect("herald runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "permissions rule 2 (pattern \"chat.#\"): subscribe: unknown subject `admins`"
        ),
        "{stderr}"
    );
}
