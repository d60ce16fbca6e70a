//! Revoking tokens before they expire (`POST /api/tokens/revoke`): by `jti`
//! or by user and issue time; refused at the handshake, in STOMP CONNECT
//! and on `refresh`; live sessions holding one closed with 4001; counted in
//! `/api/stats` and `/metrics`; and, on RabbitMQ with a cluster secret, the
//! same on every node, also one started after the revoke.

mod support;

use std::time::{Duration, Instant};

use herald_actors::frame::now_millis;
use herald_actors::revocation::Revocation;
use herald_amqp::control::{ControlAuth, Request};
use serde_json::{json, Value};
use support::jwt::now;
use support::stomp::{StompClient, StompFrame};
use support::*;

const SECRET: &str = "revocation-secret";
/// A close that comes this long after the revoke answered is not prompt.
const PROMPT: Duration = Duration::from_secs(2);

/// An HS256 token for `user` with the given `jti` and `iat` (either may be
/// left out), valid for an hour.
fn token_with(user: &str, jti: Option<&str>, iat: Option<i64>) -> String {
    let mut extra = json!({});
    if let Some(jti) = jti {
        extra["jti"] = json!(jti);
    }
    if let Some(iat) = iat {
        extra["iat"] = json!(iat);
    }
    support::rules::token_with(SECRET, user, extra)
}

/// A name no other test (or test run) uses.
fn unique(prefix: &str) -> String {
    unique_topic(prefix).replace('.', "-")
}

async fn open(node: &TestNode, token: &str) -> WsClient {
    node.connect_with_token(token).await.0
}

/// The handshake's status and error message for `token`.
async fn handshake(node: &TestNode, token: &str) -> (u16, String) {
    let response = http()
        .get(node.url(&format!("/ws?token={token}")))
        .send()
        .await
        .expect("handshake request");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn assert_refused_at_handshake(node: &TestNode, token: &str) {
    let (status, message) = handshake(node, token).await;
    assert_eq!(status, 401, "{message}");
    assert!(message.contains("revoked"), "{message}");
}

/// `POST /api/tokens/revoke` with `body` and `key`: status and JSON body.
async fn revoke_with(node: &TestNode, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut request = http().post(node.url("/api/tokens/revoke")).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn revoke(node: &TestNode, body: Value) -> Value {
    let (status, answer) = revoke_with(node, body, None).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// `/api/stats` read with `key`.
async fn stats_with(node: &TestNode, key: &str) -> Value {
    http()
        .get(node.url("/api/stats"))
        .bearer_auth(key)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("JSON stats")
}

/// Waits for the close and says how long it took.
async fn close_time(client: &mut WsClient) -> (u16, Duration) {
    timed(client.expect_close()).await
}

#[tokio::test]
async fn a_token_revoked_by_jti_is_refused_at_the_handshake_in_connect_and_on_refresh() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let user = unique("alice");
    let (revoked, other) = (unique("jti"), unique("jti"));
    let revoked_token = token_with(&user, Some(&revoked), Some(now()));
    let other_token = token_with(&user, Some(&other), Some(now()));

    let answer = revoke(&node, json!({"jti": revoked})).await;
    assert_eq!(answer["revoked"], "jti", "{answer}");

    assert_refused_at_handshake(&node, &revoked_token).await;

    let mut stomp = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("STOMP WebSocket opens");
    stomp
        .send_frame(
            &StompFrame::new("CONNECT")
                .header("accept-version", "1.2")
                .header("host", "herald")
                .header("passcode", &revoked_token),
        )
        .await;
    let error = stomp.expect_error().await;
    assert!(error.must("message").contains("revoked"), "{error:?}");

    // Another token of the same user still works, and cannot refresh to
    // the revoked one.
    let mut session = open(&node, &other_token).await;
    let refused = session
        .expect_error(
            json!({"op": "refresh", "token": revoked_token, "id": "r"}),
            "forbidden",
        )
        .await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{refused}"
    );
    session.assert_alive().await;
    let (_stomp, connected) = node.stomp_with(&[("passcode", &other_token)]).await;
    assert_eq!(connected.command, "CONNECTED");

    let stats = node.stats().await;
    assert_eq!(stats["revoked_tokens"], 1, "{stats}");
    assert_eq!(stats["revocation"]["tokens_refused"], 3, "{stats}");
}

#[tokio::test]
async fn a_live_session_holding_a_revoked_jti_closes_4001_promptly_and_others_stay() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let user = unique("bob");
    let jti = unique("jti");
    let mut json_session = open(&node, &token_with(&user, Some(&jti), Some(now()))).await;
    let (mut stomp_session, _) = node
        .stomp_with(&[("passcode", &token_with(&user, Some(&jti), Some(now())))])
        .await;
    let mut bystander = open(&node, &token_with(&user, Some(&unique("jti")), Some(now()))).await;

    let answer = revoke(&node, json!({"jti": jti, "exp": now() + 3600})).await;
    assert_eq!(answer["closed"], 2, "{answer}");
    let (code, took) = close_time(&mut json_session).await;
    assert_eq!(code, 4001);
    assert!(took < PROMPT, "closed after {took:?}");
    let error = stomp_session.expect_error().await;
    assert!(error.must("message").contains("revoked"), "{error:?}");
    bystander.assert_alive().await;

    let stats = node.stats().await;
    assert_eq!(stats["revocation"]["sessions_closed"], 2, "{stats}");
    let metrics = http()
        .get(node.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "herald_revoked_tokens{node=",
        "herald_revocation_sessions_closed_total{node=",
        "herald_revocation_tokens_refused_total{node=",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    let closed = metrics
        .lines()
        .find(|line| line.starts_with("herald_revocation_sessions_closed_total{"))
        .expect("the counter");
    assert!(closed.ends_with(" 2"), "{closed}");
}

#[tokio::test]
async fn revoking_a_user_before_a_time_closes_their_older_sessions_and_newer_tokens_work() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let user = unique("carol");
    let cut = now() - 60;
    let mut older = Vec::new();
    for token in [
        token_with(&user, Some(&unique("jti")), Some(cut - 100)),
        token_with(&user, None, Some(cut - 1)),
        // No `iat`: nothing says it is newer, so it is void too.
        token_with(&user, Some(&unique("jti")), None),
    ] {
        older.push((open(&node, &token).await, token));
    }
    let newer_token = token_with(&user, Some(&unique("jti")), Some(cut));
    let mut newer = open(&node, &newer_token).await;
    let someone_else = unique("dave");
    let mut other_user = open(&node, &token_with(&someone_else, None, Some(cut - 100))).await;

    let answer = revoke(&node, json!({"user": user, "before": cut})).await;
    assert_eq!(answer["revoked"], "user", "{answer}");
    assert_eq!(answer["closed"], 3, "{answer}");
    for (client, token) in &mut older {
        let (code, took) = close_time(client).await;
        assert_eq!(code, 4001);
        assert!(took < PROMPT, "closed after {took:?}");
        assert_refused_at_handshake(&node, token).await;
    }
    newer.assert_alive().await;
    other_user.assert_alive().await;
    let (status, message) = handshake(&node, &newer_token).await;
    assert_ne!(
        status, 401,
        "a token issued at `before` is not void: {message}"
    );
    open(&node, &token_with(&user, None, Some(now()))).await;
    assert_eq!(node.stats().await["revoked_tokens"], 1);
}

#[tokio::test]
async fn a_refreshed_session_is_judged_by_its_new_token() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let user = unique("erin");
    let (first, second) = (unique("jti"), unique("jti"));
    let mut session = open(&node, &token_with(&user, Some(&first), Some(now()))).await;
    let answer = session
        .call(json!({
            "op": "refresh",
            "token": token_with(&user, Some(&second), Some(now())),
            "id": "r"
        }))
        .await;
    assert_eq!(answer["op"], "ack", "{answer}");

    let answer = revoke(&node, json!({"jti": first})).await;
    assert_eq!(answer["closed"], 0, "it holds the new token now: {answer}");
    session.assert_alive().await;

    let answer = revoke(&node, json!({"jti": second})).await;
    assert_eq!(answer["closed"], 1, "{answer}");
    assert_eq!(session.expect_close().await, 4001);
}

#[tokio::test]
async fn revoking_takes_the_admin_key_as_other_operator_routes_do() {
    let node = TestNode::start(&[
        "--jwt-secret",
        SECRET,
        "--api-key",
        "backend-key",
        "--admin-key",
        "admin-key",
    ]);
    let body = json!({"jti": unique("jti")});
    let (status, answer) = revoke_with(&node, body.clone(), None).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = revoke_with(&node, body.clone(), Some("backend-key")).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("HERALD_ADMIN_KEY"),
        "{answer}"
    );
    let (status, _) = revoke_with(&node, body.clone(), Some("wrong")).await;
    assert_eq!(status, 403);
    assert_eq!(stats_with(&node, "admin-key").await["revoked_tokens"], 0);
    let (status, answer) = revoke_with(&node, body, Some("admin-key")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(stats_with(&node, "admin-key").await["revoked_tokens"], 1);
}

#[tokio::test]
async fn bad_revocation_bodies_are_refused_with_400_and_say_why() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let bodies = [
        (json!({}), "jti"),
        (json!({"jti": ""}), "empty"),
        (json!({"jti": "x".repeat(513)}), "bytes"),
        (json!({"jti": 42}), "string"),
        (
            json!({"jti": "a", "user": "b", "before": 1}),
            "one revocation",
        ),
        (json!({"user": "b"}), "before"),
        (json!({"jti": "a", "before": 5}), "jti"),
        (json!({"user": "b", "before": 5, "exp": 6}), "jti"),
        (json!({"user": "", "before": 5}), "empty"),
        (json!({"user": "b", "before": -5}), "invalid"),
        (json!({"jti": "a", "exp": now() * 1000}), "milliseconds"),
        (json!({"jti": "a", "reason": "left"}), "unknown field"),
        (json!(["jti", "a"]), "invalid"),
    ];
    for (body, says) in bodies {
        let (status, answer) = revoke_with(&node, body.clone(), None).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{body}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{body}: `{message}` should say `{says}`"
        );
    }
    let response = http()
        .post(node.url("/api/tokens/revoke"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status(), 400);
    assert_eq!(node.stats().await["revoked_tokens"], 0);
}

#[tokio::test]
async fn a_full_revocation_list_refuses_a_new_revoke_with_503_and_forgets_nothing() {
    let node = TestNode::start(&["--jwt-secret", SECRET, "--revocation-max-entries", "2"]);
    let user = unique("frank");
    let jtis: Vec<String> = (0..3).map(|_| unique("jti")).collect();
    revoke(&node, json!({"jti": jtis[0]})).await;
    revoke(&node, json!({"user": user, "before": now()})).await;
    let (status, answer) = revoke_with(&node, json!({"jti": jtis[2]}), None).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("HERALD_REVOCATION_MAX_ENTRIES"),
        "{answer}"
    );
    // Revoking what is held again needs no room.
    revoke(&node, json!({"jti": jtis[0]})).await;
    assert_refused_at_handshake(&node, &token_with(&unique("u"), Some(&jtis[0]), None)).await;
    assert_refused_at_handshake(&node, &token_with(&user, None, Some(now() - 10))).await;
    open(&node, &token_with(&unique("u"), Some(&jtis[2]), None)).await;
    assert_eq!(node.stats().await["revoked_tokens"], 2);
}

// ---- Several nodes on one RabbitMQ ----

/// A cluster secret of this test alone: other tests' nodes on the same
/// RabbitMQ neither believe nor answer these nodes.
fn cluster_secret(test: &str) -> String {
    format!("{test}-{}-{}", std::process::id(), now())
}

async fn start_node(secret: &str) -> TestNode {
    TestNode::start_amqp(&["--jwt-secret", SECRET, "--cluster-secret", secret]).await
}

#[tokio::test]
async fn revoking_on_one_node_closes_the_session_on_another_and_that_node_refuses_the_token() {
    let cluster = cluster_secret("revoke-across");
    let node_a = start_node(&cluster).await;
    let node_b = start_node(&cluster).await;
    let user = unique("grace");
    let jti = unique("jti");
    let token = token_with(&user, Some(&jti), Some(now()));
    let mut far = open(&node_b, &token).await;
    let mut bystander = open(&node_b, &token_with(&user, Some(&unique("jti")), None)).await;

    let started = Instant::now();
    let answer = revoke(&node_a, json!({"jti": jti})).await;
    assert_eq!(answer["closed"], 0, "none on node A: {answer}");
    assert_eq!(answer["other_nodes"], "asked", "{answer}");
    assert_eq!(far.expect_close().await, 4001);
    let took = started.elapsed();
    assert!(took < PROMPT, "closed on node B after {took:?}");
    assert_refused_at_handshake(&node_b, &token).await;
    assert_refused_at_handshake(&node_a, &token).await;
    bystander.assert_alive().await;
    let stats = node_b.stats().await;
    assert_eq!(stats["revoked_tokens"], 1, "{stats}");
    assert_eq!(stats["revocation"]["sessions_closed"], 1, "{stats}");
}

#[tokio::test]
async fn a_node_started_after_a_revoke_refuses_the_token_once_it_has_synced() {
    let cluster = cluster_secret("revoke-late");
    let node_a = start_node(&cluster).await;
    let user = unique("heidi");
    let jti = unique("jti");
    let token = token_with(&user, Some(&jti), Some(now()));
    revoke(&node_a, json!({"jti": jti})).await;
    revoke(&node_a, json!({"user": user, "before": now() - 30})).await;

    let late = start_node(&cluster).await;
    assert!(
        eventually(WAIT, || async { late.stats().await["revoked_tokens"] == 2 }).await,
        "the late node got the list: {}",
        late.stats().await
    );
    assert_refused_at_handshake(&late, &token).await;
    assert_refused_at_handshake(&late, &token_with(&user, None, Some(now() - 60))).await;
    open(&late, &token_with(&user, Some(&unique("jti")), Some(now()))).await;
}

#[tokio::test]
async fn a_forged_revocation_on_the_control_exchange_changes_nothing_and_is_counted() {
    let cluster = cluster_secret("revoke-forged");
    let node = start_node(&cluster).await;
    let rabbit = Rabbit::connect().await;
    let user = unique("ivan");
    let jti = unique("jti");
    let token = token_with(&user, Some(&jti), Some(now()));
    let mut session = open(&node, &token).await;
    let rejected = |stats: &Value| stats["amqp"]["control_rejected"].as_u64().unwrap_or(0);
    let before = rejected(&node.stats().await);

    // Other tests' nodes share `herald.control` under other secrets, so the
    // counter moves for their messages too: the forgeries are told apart
    // in the log by the node they claim to come from.
    let forger = unique("n-forger");
    let entries = json!([
        {"by": "jti", "jti": jti, "until": now() + 3600},
        {"by": "user", "user": user, "before": now() + 60, "until": now() + 3600},
    ]);
    let unsigned = json!({"revoke": entries, "origin": forger});
    let guessed = json!({
        "revoke": entries, "origin": forger,
        "ts": now() * 1000, "nonce": "00", "mac": "00"
    });
    for forged in [unsigned, guessed] {
        rabbit
            .publish_with(
                "herald.control",
                "",
                forged.to_string().as_bytes(),
                lapin::BasicProperties::default(),
            )
            .await;
    }
    let refusal = format!("refused a control message naming node {forger:?}");
    let refusals = || {
        node.logs()
            .iter()
            .filter(|line| line.contains(&refusal))
            .count()
    };
    assert!(
        eventually(WAIT, || async { refusals() == 2 }).await,
        "both forgeries refused: {:?}",
        node.logs()
    );
    // Counted as they are refused: the counter already shows both.
    let stats = node.stats().await;
    assert!(rejected(&stats) >= before + 2, "both counted: {stats}");
    session.assert_alive().await;
    assert_eq!(node.stats().await["revoked_tokens"], 0);
    open(&node, &token).await;
}

/// Publishes `request` on `herald.control` as node `origin` would, signed
/// with the cluster secret.
async fn publish_signed(rabbit: &Rabbit, secret: &str, origin: &str, request: Request) {
    let signed = ControlAuth::new(Some(secret))
        .sign(request, origin, now_millis())
        .expect("a secret");
    rabbit
        .publish_with(
            "herald.control",
            "",
            &serde_json::to_vec(&signed).expect("serializes"),
            lapin::BasicProperties::default(),
        )
        .await;
}

fn jti_entry(jti: &str) -> Revocation {
    Revocation::Jti {
        jti: jti.to_owned(),
        until: now() as u64 + 3600,
    }
}

#[tokio::test]
async fn an_answer_for_another_node_is_not_merged_and_one_for_this_node_is() {
    let cluster = cluster_secret("revoke-addressed");
    let id = unique("n-asker");
    let node = TestNode::start_amqp(&[
        "--jwt-secret",
        SECRET,
        "--cluster-secret",
        &cluster,
        "--node-id",
        &id,
    ])
    .await;
    let rabbit = Rabbit::connect().await;
    let user = unique("judy");
    let (elsewhere, here) = (unique("jti"), unique("jti"));
    let mut session = open(&node, &token_with(&user, Some(&here), Some(now()))).await;
    let peer = unique("n-peer");

    publish_signed(
        &rabbit,
        &cluster,
        &peer,
        Request::RevocationsFor {
            node: unique("n-someone-else"),
            entries: vec![jti_entry(&elsewhere)],
        },
    )
    .await;
    publish_signed(
        &rabbit,
        &cluster,
        &peer,
        Request::RevocationsFor {
            node: id.clone(),
            entries: vec![jti_entry(&here)],
        },
    )
    .await;

    // The node queue takes them in order: once the second is merged the
    // first was seen, and left the list alone.
    assert_eq!(session.expect_close().await, 4001);
    assert_eq!(node.stats().await["revoked_tokens"], 1);
    assert_refused_at_handshake(&node, &token_with(&user, Some(&here), None)).await;
    open(&node, &token_with(&user, Some(&elsewhere), None)).await;
}

/// Takes every control message waiting in `spy` (every test's nodes'
/// among them), as JSON.
async fn drain(rabbit: &Rabbit, spy: &str) -> Vec<Value> {
    let mut found = Vec::new();
    while let Some(message) = rabbit.get(spy).await {
        if let Ok(control) = serde_json::from_slice::<Value>(&message.delivery.data) {
            found.push(control);
        }
    }
    found
}

/// Those of `seen` that node `origin` sent.
fn sent_by<'a>(seen: &'a [Value], origin: &'a str) -> impl Iterator<Item = &'a Value> {
    seen.iter()
        .filter(move |message| message["origin"] == origin)
}

#[tokio::test]
async fn peers_answer_a_starting_node_by_name_and_a_peer_with_an_empty_list_stays_silent() {
    let cluster = cluster_secret("revoke-answers");
    let spy = unique("herald-test-control-spy");
    let rabbit = Rabbit::connect().await;
    rabbit.queue(&spy, "herald.control", "", false).await;
    let ids: Vec<String> = ["n-a", "n-b", "n-c"].map(unique).to_vec();
    let start = |id: &str| {
        let args = [
            "--jwt-secret",
            SECRET,
            "--cluster-secret",
            cluster.as_str(),
            "--node-id",
            id,
        ]
        .map(str::to_owned);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            TestNode::start_amqp(&args).await
        }
    };
    let node_a = start(&ids[0]).await;
    let node_b = start(&ids[1]).await;
    let asked = |seen: &[Value], id: &str| {
        sent_by(seen, id).any(|message| message.get("revocations_wanted").is_some())
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !asked(&seen, &ids[1]) {
        assert!(Instant::now() < deadline, "node B asked: {seen:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
        seen.extend(drain(&rabbit, &spy).await);
    }
    // Give node A the time to answer, were it to answer with nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    seen.extend(drain(&rabbit, &spy).await);
    let from_a: Vec<&Value> = sent_by(&seen, &ids[0]).collect();
    assert!(
        from_a
            .iter()
            .all(|message| message.get("revocations_wanted").is_some()),
        "node A, with an empty list, answered: {from_a:?}"
    );

    let jti = unique("jti");
    revoke(&node_a, json!({"jti": jti})).await;
    assert!(
        eventually(WAIT, || async {
            node_b.stats().await["revoked_tokens"] == 1
        })
        .await
    );
    let node_c = start(&ids[2]).await;
    assert!(
        eventually(WAIT, || async {
            node_c.stats().await["revoked_tokens"] == 1
        })
        .await,
        "node C got the list: {}",
        node_c.stats().await
    );
    let answers_in = |seen: &[Value]| -> Vec<Value> {
        ids[..2]
            .iter()
            .flat_map(|id| sent_by(seen, id))
            // Only the answers to C: a peer whose RabbitMQ link came up
            // again in the meantime asks again, and is answered too.
            .filter(|message| message["revocations_for"]["node"] == ids[2])
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    while answers_in(&seen).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "both peers answered node C: {:?}",
            answers_in(&seen)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
        seen.extend(drain(&rabbit, &spy).await);
    }
    let answers = answers_in(&seen);
    for answer in &answers {
        assert_eq!(answer["revocations_for"]["node"], ids[2], "{answer}");
        assert_eq!(
            answer["revocations_for"]["entries"][0]["jti"], jti,
            "{answer}"
        );
    }
    // Answers for C changed nothing on A and B, who hold the entry already.
    for node in [&node_a, &node_b] {
        assert_eq!(node.stats().await["revoked_tokens"], 1);
    }
    rabbit.delete_queue(&spy).await;
}
