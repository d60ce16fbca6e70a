//! The HTTP API backends use: publish, notification, user messages, kicking
//! a user, its error shapes and its access rules; and token checks at the
//! WebSocket handshake.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret";

async fn connect_as(node: &TestNode, user: &str) -> WsClient {
    node.connect_as(SECRET, user).await.0
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let response = http().post(url).json(&body).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn publish_over_http_reaches_websocket_subscribers() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("orders");
    let mut client = node.connect().await;
    client.subscribe(&topic).await;
    let (status, body) = post(
        &node.url("/api/publish"),
        json!({"topic": topic, "data": {"id": 7}}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(body["accepted"], true);
    let message = client.expect_message().await;
    assert_eq!(message["data"], json!({"id": 7}));
    assert_eq!(message["mid"], body["mid"]);
}

#[tokio::test]
async fn notification_accepts_the_spring_tutorial_shape_with_or_without_topic_prefix() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("greetings");
    let mut client = node.connect().await;
    client.subscribe(&topic).await;
    for given in [format!("/topic/{topic}"), topic.clone()] {
        let (status, _) = post(
            &node.url("/api/notification"),
            json!({"topic": given, "message": "Hello, Herald!"}),
        )
        .await;
        assert_eq!(status, 202);
        let message = client.expect_message().await;
        assert_eq!(message["topic"], topic.as_str());
        assert_eq!(message["data"], "Hello, Herald!");
    }
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_fitting_statuses() {
    let node = TestNode::start(&["--max-frame", "1024"]);
    let url = node.url("/api/publish");

    let response = http().post(&url).body("{not json").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));

    let (status, body) = post(&url, json!({"topic": "a"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "data is required"
    );

    let (status, body) = post(&url, json!({"topic": "bad topic", "data": 1})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_topic"))
    );

    let (status, body) = post(&url, json!({"topic": "news.*", "data": 1})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_topic"))
    );

    let (status, body) = post(&url, json!({"topic": "a", "data": "x".repeat(2000)})).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")));

    // Any user id is encoded into one segment (`a.b` is user `b64:YS5i`),
    // but not one too long for a topic.
    let too_long = "x".repeat(300);
    let (status, body) = post(
        &node.url(&format!("/api/users/{too_long}/messages")),
        json!({"data": 1}),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));

    let response = http()
        .get(node.url("/api/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "not_found"
    );
}

#[tokio::test]
async fn with_an_api_key_the_api_demands_it() {
    let node = TestNode::start(&["--api-key", "k3y"]);
    let url = node.url("/api/publish");
    let body = json!({"topic": "a", "data": 1});

    let response = http().post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "unauthorized"
    );

    let response = http()
        .post(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    let response = http()
        .post(&url)
        .bearer_auth("k3y")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let response = http()
        .post(&url)
        .header("x-api-key", "k3y")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    let response = http().get(node.url("/api/stats")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = http().get(node.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200, "probes stay open");
}

#[tokio::test]
async fn user_messages_reach_every_session_of_that_user_only() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let mut alice_phone = connect_as(&node, "alice").await;
    let mut alice_laptop = connect_as(&node, "alice").await;
    let mut bob = connect_as(&node, "bob").await;
    // Nobody subscribes: every session of a user receives `user.{id}`, and
    // subscribing to someone else's never delivers it.
    bob.subscribe("user.alice").await;

    let (status, _) = post(
        &node.url("/api/users/alice/messages"),
        json!({"data": {"note": "hi alice"}}),
    )
    .await;
    assert_eq!(status, 202);
    for client in [&mut alice_phone, &mut alice_laptop] {
        let message = client.expect_message().await;
        assert_eq!(message["topic"], "user.alice");
        assert_eq!(message["data"]["note"], "hi alice");
    }
    bob.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn kicking_a_user_closes_their_sessions_with_4003_and_spares_others() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let mut first = connect_as(&node, "mallory").await;
    let mut second = connect_as(&node, "mallory").await;
    let mut other = connect_as(&node, "carol").await;

    let response = http()
        .delete(node.url("/api/users/mallory/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["closed"], 2);
    assert_eq!(first.expect_close().await, 4003);
    assert_eq!(second.expect_close().await, 4003);
    other.assert_alive().await;

    let response = http()
        .delete(node.url("/api/users/nobody/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["closed"], 0);
}

#[tokio::test]
async fn tokens_are_checked_at_the_handshake() {
    let node = TestNode::start(&["--jwt-secret", SECRET, "--auth", "required"]);

    let status_of = |err: tokio_tungstenite::tungstenite::Error| match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    };
    let missing = WsClient::open(&node.ws_url()).await.err().expect("refused");
    assert_eq!(status_of(missing), 401);

    let forged = node.ws_url_as("other-secret", "eve", 3600);
    assert_eq!(
        status_of(WsClient::open(&forged).await.err().expect("refused")),
        401
    );

    let expired = node.ws_url_as(SECRET, "dave", -10);
    assert_eq!(
        status_of(WsClient::open(&expired).await.err().expect("refused")),
        401
    );

    let mut request = node.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(SECRET, "erin", 3600))
            .parse()
            .unwrap(),
    );
    let mut client = WsClient::open_request(request)
        .await
        .expect("a bearer header works too");
    assert_eq!(client.expect_op("welcome").await["user"], "erin");
}

#[tokio::test]
async fn a_session_closes_with_4001_when_its_token_expires() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let url = node.ws_url_as(SECRET, "frank", 2);
    let mut client = WsClient::open(&url).await.unwrap();
    client.expect_op("welcome").await;
    assert_eq!(client.expect_close().await, 4001);
}

#[tokio::test]
async fn origins_outside_the_allowed_list_are_refused() {
    let node = TestNode::start(&["--allowed-origins", "https://app.example"]);
    let mut request = node.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match WsClient::open_request(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let mut request = node.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    let mut client = WsClient::open_request(request)
        .await
        .expect("allowed origin");
    client.expect_op("welcome").await;
}
