//! The development token endpoint: absent unless asked for, refused
//! without a secret to sign with, and when on, minting tokens the node
//! takes on every way in (the handshake, STOMP's CONNECT), within bounds,
//! behind the API's access rule.

mod support;

use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};
use support::*;

const SECRET: &str = "dev-token-secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The claims of a JWT, read without checking it.
fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// `POST /api/dev/token` with a raw body; the status and the JSON answer.
async fn post_raw(node: &TestNode, body: &str) -> (u16, Value) {
    let response = http()
        .post(node.url("/api/dev/token"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Mints a token, asserting 200.
async fn mint(node: &TestNode, body: Value) -> Value {
    let (status, answer) = post_raw(node, &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

fn dev_node(extra: &[&str]) -> TestNode {
    let mut args = vec!["--jwt-secret", SECRET, "--dev-tokens"];
    args.extend_from_slice(extra);
    TestNode::start(&args)
}

#[tokio::test]
async fn the_endpoint_does_not_exist_unless_dev_tokens_are_enabled() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let (status, answer) = post_raw(&node, r#"{"user":"alice"}"#).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"], "not_found");
    // Even a bad body: the route is not there to judge it.
    assert_eq!(post_raw(&node, "not json").await.0, 404);
    let response = http()
        .get(node.url("/api/dev/token"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    assert!(!node
        .logs()
        .iter()
        .any(|line| line.contains("DEVELOPMENT TOKENS")));
}

#[tokio::test]
async fn when_enabled_the_node_says_so_loudly_and_the_page_can_discover_it() {
    let node = dev_node(&[]);
    let warning = node
        .logs()
        .into_iter()
        .find(|line| line.contains("DEVELOPMENT TOKENS ARE ON"))
        .expect("a warning at start");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("never enable this in production"),
        "{warning}"
    );
    let info = get_json(&node.url("/api/dev/token")).await;
    assert_eq!(info["enabled"], true, "{info}");
    assert_eq!(info["default_ttl_secs"], 300);
    assert_eq!(info["max_ttl_secs"], 86_400);
    assert_eq!(info["user_claim"], "sub");
}

#[tokio::test]
async fn a_minted_token_opens_a_websocket_as_that_user() {
    let node = dev_node(&["--auth", "required"]);
    let before = now();
    let minted = mint(&node, json!({"user": "alice", "ttl_secs": 60})).await;
    let token = minted["token"].as_str().expect("a token");
    let expires_at = minted["expires_at"].as_u64().expect("expires_at");
    assert!((before + 60..=now() + 60).contains(&expires_at), "{minted}");
    let carried = claims(token);
    assert_eq!(carried["sub"], "alice");
    assert_eq!(carried["exp"], expires_at);
    assert!(carried["iat"].as_u64().is_some_and(|iat| iat >= before));
    assert_eq!(carried["jti"], minted["jti"]);
    assert!(carried["jti"].as_str().is_some_and(|jti| jti.len() > 16));
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().expect("header"))
        .expect("base64url header");
    let header: Value = serde_json::from_slice(&header).expect("JSON header");
    assert_eq!(header["alg"], "HS256");

    let (mut client, welcome) = node.connect_with_token(token).await;
    assert_eq!(welcome["user"], "alice", "{welcome}");
    // And it refreshes a session like any token for that user.
    let fresh = mint(&node, json!({"user": "alice"})).await;
    let answer = client
        .call(json!({"op": "refresh", "token": fresh["token"], "id": "r"}))
        .await;
    assert_eq!(answer["op"], "ack", "{answer}");
}

#[tokio::test]
async fn a_minted_token_works_as_the_stomp_connect_passcode() {
    let node = dev_node(&["--auth", "required"]);
    let minted = mint(&node, json!({"user": "bob", "ttl_secs": 120})).await;
    let token = minted["token"].as_str().expect("a token");
    let (_client, connected) = node.stomp_with(&[("passcode", token)]).await;
    assert_eq!(connected.get("user-name"), Some("bob"), "{connected:?}");
}

#[tokio::test]
async fn the_lifetime_is_bounded_and_defaults_to_five_minutes() {
    let node = dev_node(&[]);
    let before = now();
    let default = mint(&node, json!({"user": "carol"})).await;
    let expires_at = default["expires_at"].as_u64().expect("expires_at");
    assert!(
        (before + 300..=now() + 300).contains(&expires_at),
        "{default}"
    );
    mint(&node, json!({"user": "carol", "ttl_secs": 1})).await;
    mint(&node, json!({"user": "carol", "ttl_secs": 86_400})).await;
    for ttl in [json!(0), json!(86_401), json!(-5), json!(1.5), json!("60")] {
        let (status, answer) = post_raw(
            &node,
            &json!({"user": "carol", "ttl_secs": ttl}).to_string(),
        )
        .await;
        assert_eq!(status, 400, "ttl {ttl}: {answer}");
        assert_eq!(answer["error"], "bad_request");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("ttl_secs")),
            "ttl {ttl}: {answer}"
        );
    }
}

#[tokio::test]
async fn bad_bodies_are_400_with_a_message_that_says_what_to_change() {
    let node = dev_node(&[]);
    let long_user = "u".repeat(129);
    let cases = [
        ("not json".to_owned(), "JSON object"),
        ("[1,2]".to_owned(), "JSON object"),
        ("{}".to_owned(), "`user`"),
        (r#"{"user":""}"#.to_owned(), "`user`"),
        (r#"{"user":42}"#.to_owned(), "`user`"),
        (json!({"user": long_user}).to_string(), "at most 128"),
        (r#"{"user":"a","claims":[1]}"#.to_owned(), "`claims`"),
        (r#"{"user":"a","role":"admin"}"#.to_owned(), "unknown field"),
        (r#"{"user":"a","claims":{"exp":1}}"#.to_owned(), "`exp`"),
        (r#"{"user":"a","claims":{"sub":"b"}}"#.to_owned(), "`sub`"),
        (r#"{"user":"a","claims":{"aud":"x"}}"#.to_owned(), "`aud`"),
    ];
    for (body, says) in cases {
        let (status, answer) = post_raw(&node, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{body}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {answer}");
    }
    let (status, _) = post_raw(&node, &format!(r#"{{"user":"{}"}}"#, "x".repeat(20_000))).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn extra_claims_are_carried_and_the_node_still_takes_the_token() {
    let node = dev_node(&[]);
    let minted = mint(
        &node,
        json!({"user": "dana", "ttl_secs": 60, "claims": {
            "roles": ["editor"],
            "herald": {"subscribe": ["team.42.#"]},
            "tenant": "acme"
        }}),
    )
    .await;
    let carried = claims(minted["token"].as_str().expect("a token"));
    assert_eq!(carried["roles"], json!(["editor"]));
    assert_eq!(carried["herald"], json!({"subscribe": ["team.42.#"]}));
    assert_eq!(carried["tenant"], "acme");
    assert_eq!(carried["sub"], "dana");
    let token = minted["token"].as_str().unwrap_or_default();
    assert_eq!(node.connect_with_token(token).await.1["user"], "dana");
}

#[tokio::test]
async fn tokens_follow_the_configured_user_claim_issuer_and_audience() {
    let node = dev_node(&[
        "--jwt-user-claim",
        "email",
        "--jwt-issuer",
        "https://idp.test/",
        "--jwt-audience",
        "herald-demo",
    ]);
    let minted = mint(&node, json!({"user": "erin@example.com"})).await;
    assert_eq!(minted["user"], "b64:ZXJpbkBleGFtcGxlLmNvbQ");
    let carried = claims(minted["token"].as_str().expect("a token"));
    assert_eq!(carried["email"], "erin@example.com");
    assert_eq!(carried["iss"], "https://idp.test/");
    assert_eq!(carried["aud"], "herald-demo");
    assert!(carried.get("sub").is_none(), "{carried}");
    let token = minted["token"].as_str().unwrap_or_default();
    assert_eq!(
        node.connect_with_token(token).await.1["user"],
        "b64:ZXJpbkBleGFtcGxlLmNvbQ"
    );
    let (status, answer) = post_raw(&node, r#"{"user":"x","claims":{"email":"y"}}"#).await;
    assert_eq!(status, 400, "the user claim is the minter's: {answer}");
}

#[tokio::test]
async fn with_an_api_key_only_its_holders_may_mint() {
    let node = dev_node(&["--api-key", "backend-key"]);
    let (status, answer) = post_raw(&node, r#"{"user":"frank"}"#).await;
    assert_eq!(status, 401, "{answer}");
    let response = http()
        .post(node.url("/api/dev/token"))
        .header("authorization", "Bearer wrong")
        .json(&json!({"user": "frank"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 403);
    let response = http()
        .post(node.url("/api/dev/token"))
        .header("authorization", "Bearer backend-key")
        .json(&json!({"user": "frank"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let response = http()
        .get(node.url("/api/dev/token"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401, "discovery takes the same rule");
    assert!(node
        .logs()
        .iter()
        .any(|line| line.contains("anyone holding the API key")));
}

#[tokio::test]
async fn a_proxied_caller_may_not_mint_while_no_key_is_set() {
    let node = dev_node(&[]);
    let response = http()
        .post(node.url("/api/dev/token"))
        .header("x-forwarded-for", "203.0.113.7")
        .json(&json!({"user": "gail"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 403);
}

/// `method /api/dev/token` with `host` as the `Host` header (and `key`).
async fn with_host(
    node: &TestNode,
    method: reqwest::Method,
    host: &str,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = http()
        .request(method.clone(), node.url("/api/dev/token"))
        .header("host", host);
    if method == reqwest::Method::POST {
        request = request.json(&json!({"user": "heidi"}));
    }
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn without_a_key_a_page_on_a_rebinding_domain_may_not_mint() {
    let node = dev_node(&[]);
    let port = node.addr.rsplit(':').next().expect("a port");
    // What a browser sends for a page whose domain now resolves to
    // 127.0.0.1: the peer is local, the name is the attacker's.
    for host in [
        format!("rebind.example:{port}"),
        "rebind.example".to_owned(),
        format!("localhost.rebind.example:{port}"),
        format!("127.0.0.1.rebind.example:{port}"),
    ] {
        for method in [reqwest::Method::POST, reqwest::Method::GET] {
            let (status, answer) = with_host(&node, method.clone(), &host, None).await;
            assert_eq!(status, 403, "{method} with Host {host}: {answer}");
            let message = answer["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("localhost") && message.contains("HERALD_API_KEY"),
                "{message}"
            );
            assert!(answer.get("token").is_none(), "{answer}");
        }
    }
    for host in [
        format!("localhost:{port}"),
        "localhost".to_owned(),
        "LocalHost".to_owned(),
        format!("127.0.0.1:{port}"),
        "127.0.0.1:1".to_owned(),
        format!("[::1]:{port}"),
        "[::1]".to_owned(),
    ] {
        let (status, answer) = with_host(&node, reqwest::Method::POST, &host, None).await;
        assert_eq!(status, 200, "Host {host}: {answer}");
        assert!(answer["token"].is_string(), "{answer}");
    }
}

#[tokio::test]
async fn with_an_api_key_its_holders_may_mint_whatever_the_host() {
    let node = dev_node(&["--api-key", "backend-key"]);
    let (status, answer) = with_host(
        &node,
        reqwest::Method::POST,
        "herald.internal.example",
        Some("backend-key"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn enabling_dev_tokens_without_a_secret_is_a_config_error_at_start() {
    for args in [
        &["--dev-tokens"][..],
        &["--dev-tokens", "--jwt-jwks-url", "https://idp.test/jwks"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("HERALD_JWT_SECRET")
            .stdin(Stdio::null())
            .output()
            .expect("herald runs");
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("dev tokens (HERALD_DEV_TOKENS) need a JWT secret"),
            "{stderr}"
        );
    }
    // The environment variable alone turns it on too.
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--listen", "127.0.0.1:0"])
        .env("HERALD_DEV_TOKENS", "true")
        .env_remove("HERALD_JWT_SECRET")
        .stdin(Stdio::null())
        .output()
        .expect("herald runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}
