//! Tokens from every source Herald takes keys from (an HMAC secret, a list
//! of PEM public keys, an identity provider's JWKS URL), checked at the
//! WebSocket handshake (`?token=`) and in STOMP CONNECT (`passcode`): what
//! is accepted, what is refused and that each refusal says why.

mod support;

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use support::jwt::{
    claims, fixture, hs256_with_public_key_as_secret, jwk, now, sign, unsigned,
    with_foreign_signature, JwksServer, Signer,
};
use support::stomp::{StompClient, StompFrame};
use support::{eventually, http, TestNode, WsClient};

const SECRET: &str = "auth-tokens-secret";
const ISSUER: &str = "https://idp.test/realms/herald";
const AUDIENCE: &str = "herald-gateway";

fn path(name: &str) -> String {
    fixture(name).display().to_string()
}

/// Claims a node configured with [`ISSUER`] and [`AUDIENCE`] accepts.
fn good_claims(user: &str) -> Value {
    let mut claims = claims(user, 3600);
    claims["iss"] = json!(ISSUER);
    claims["aud"] = json!([AUDIENCE, "account"]);
    claims
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// A node checking tokens from `sources` flags, issuer and audience set.
fn node_with(sources: &[&str]) -> TestNode {
    let mut args = vec!["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE];
    args.extend_from_slice(sources);
    TestNode::start(&args)
}

/// The token opens a JSON session as `user` and a STOMP session.
async fn assert_accepted(node: &TestNode, token: &str, user: &str) {
    let mut client = WsClient::open(&format!("{}?token={token}", node.ws_url()))
        .await
        .expect("a valid token opens the WebSocket");
    let welcome = client.expect_op("welcome").await;
    assert_eq!(welcome["user"], user, "{welcome}");
    let (_stomp, connected) = node.stomp_with(&[("passcode", token)]).await;
    assert_eq!(connected.command, "CONNECTED");
}

/// The handshake answers 401 and CONNECT an ERROR, both saying `says`.
async fn assert_refused(node: &TestNode, token: &str, says: &str) {
    let response = http()
        .get(node.url(&format!("/ws?token={token}")))
        .send()
        .await
        .expect("handshake request");
    assert_eq!(response.status(), 401, "{says}");
    let body: Value = response.json().await.expect("JSON error");
    let message = body["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains(says),
        "handshake: `{message}` should say `{says}`"
    );

    let mut client = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("STOMP WebSocket opens");
    client
        .send_frame(
            &StompFrame::new("CONNECT")
                .header("accept-version", "1.2")
                .header("host", "herald")
                .header("passcode", token),
        )
        .await;
    let error = client.expect_error().await;
    let message = error.get("message").unwrap_or_default().to_owned();
    assert!(
        message.contains(says),
        "CONNECT: `{message}` should say `{says}`"
    );
    client.expect_close().await;
}

/// The refusals every source must give, for tokens signed by `signer`
/// with `algorithm` and `kid`, and `impostor` signing the wrong signature.
async fn assert_every_bad_token_refused(
    node: &TestNode,
    signer: &Signer,
    algorithm: Algorithm,
    kid: Option<&str>,
    impostor: &Signer,
    public_pem: &str,
) {
    let signed = |claims: &Value| sign(signer, algorithm, kid, claims);
    let user = good_claims("mallory");
    let cases = [
        (
            signed(&with(user.clone(), "exp", json!(now() - 60))),
            "expired",
        ),
        (
            signed(&with(user.clone(), "nbf", json!(now() + 60))),
            "not yet valid",
        ),
        (sign(impostor, algorithm, kid, &user), "wrong signature"),
        (
            with_foreign_signature(&signed(&user), &signed(&good_claims("alice"))),
            "wrong signature",
        ),
        (
            signed(&with(user.clone(), "iss", json!("https://evil.test/"))),
            "wrong issuer",
        ),
        (
            signed(&with(user.clone(), "aud", json!("someone-else"))),
            "wrong audience",
        ),
        (unsigned(&user), "algorithm not allowed"),
        ("not-a-token".to_owned(), "malformed"),
        ("eyJhbGciOiJIUzI1NiJ9.e30".to_owned(), "malformed"),
        ("%7B%7D.e30.c2ln".to_owned(), "malformed"),
    ];
    for (token, says) in &cases {
        assert_refused(node, token, says).await;
    }
    // A forger who read the public key and signed HS256 with its bytes.
    let confused = hs256_with_public_key_as_secret(public_pem, &user);
    let says = if matches!(signer, Signer::Secret(_)) {
        "wrong signature"
    } else {
        "algorithm not allowed"
    };
    assert_refused(node, &confused, says).await;
}

#[tokio::test]
async fn tokens_signed_with_the_secret() {
    let node = node_with(&["--jwt-secret", SECRET]);
    let signer = Signer::Secret(SECRET.to_owned());
    for algorithm in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert_accepted(
            &node,
            &sign(&signer, algorithm, None, &good_claims("alice")),
            "alice",
        )
        .await;
    }
    assert_every_bad_token_refused(
        &node,
        &signer,
        Algorithm::HS256,
        None,
        &Signer::Secret("another-secret".to_owned()),
        "rsa-a.pub.pem",
    )
    .await;
    // RS256 with no public key configured has nothing to be checked against.
    let rs = sign(
        &Signer::Pem("rsa-a"),
        Algorithm::RS256,
        None,
        &good_claims("alice"),
    );
    assert_refused(&node, &rs, "algorithm not allowed").await;
}

#[tokio::test]
async fn tokens_signed_with_any_key_of_the_pem_list() {
    let keys = [
        path("rsa-a.pub.pem"),
        path("ec256.pub.pem"),
        path("ec384.pub.pem"),
        path("ed25519.pub.pem"),
    ]
    .join(",");
    let node = node_with(&["--jwt-public-key", &keys]);
    for (name, algorithm) in [
        ("rsa-a", Algorithm::RS256),
        ("rsa-a", Algorithm::RS384),
        ("rsa-a", Algorithm::RS512),
        ("rsa-a", Algorithm::PS256),
        ("rsa-a", Algorithm::PS384),
        ("rsa-a", Algorithm::PS512),
        ("ec256", Algorithm::ES256),
        ("ec384", Algorithm::ES384),
        ("ed25519", Algorithm::EdDSA),
    ] {
        let token = sign(&Signer::Pem(name), algorithm, None, &good_claims("alice"));
        assert_accepted(&node, &token, "alice").await;
    }
    assert_every_bad_token_refused(
        &node,
        &Signer::Pem("rsa-a"),
        Algorithm::RS256,
        None,
        &Signer::Pem("rsa-b"),
        "rsa-a.pub.pem",
    )
    .await;
    // An ES256 signature relabelled ES384 fits no ES384 key.
    let es256 = sign(
        &Signer::Pem("ec256"),
        Algorithm::ES256,
        None,
        &good_claims("a"),
    );
    let es384 = sign(
        &Signer::Pem("ec384"),
        Algorithm::ES384,
        None,
        &good_claims("a"),
    );
    assert_refused(
        &node,
        &with_foreign_signature(&es384, &es256),
        "wrong signature",
    )
    .await;
}

fn provider_keys() -> Vec<Value> {
    vec![
        jwk("rsa-a", Algorithm::RS256, "key-a"),
        jwk("ec256", Algorithm::ES256, "key-ec"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_verified_with_the_jwks_keys_their_kid_names() {
    let jwks = JwksServer::start(provider_keys()).await;
    let node = node_with(&["--jwt-jwks-url", &jwks.url]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            node.readyz().await.0 == 200
        })
        .await
    );
    let rs = sign(
        &Signer::Pem("rsa-a"),
        Algorithm::RS256,
        Some("key-a"),
        &good_claims("alice"),
    );
    assert_accepted(&node, &rs, "alice").await;
    let es = sign(
        &Signer::Pem("ec256"),
        Algorithm::ES256,
        Some("key-ec"),
        &good_claims("bob"),
    );
    assert_accepted(&node, &es, "bob").await;
    // The JWK says RS256, so a PS256 token naming it is not its to check.
    let ps = sign(
        &Signer::Pem("rsa-a"),
        Algorithm::PS256,
        Some("key-a"),
        &good_claims("a"),
    );
    assert_refused(&node, &ps, "algorithm not allowed").await;
    assert_every_bad_token_refused(
        &node,
        &Signer::Pem("rsa-a"),
        Algorithm::RS256,
        Some("key-a"),
        &Signer::Pem("rsa-b"),
        "rsa-a.pub.pem",
    )
    .await;
    let stranger = sign(
        &Signer::Pem("rsa-b"),
        Algorithm::RS256,
        Some("key-x"),
        &good_claims("a"),
    );
    assert_refused(&node, &stranger, "unknown key id \"key-x\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_jwks_key_is_fetched_while_sessions_stay_up() {
    let jwks = JwksServer::start(vec![jwk("rsa-a", Algorithm::RS256, "key-a")]).await;
    let node = node_with(&["--jwt-jwks-url", &jwks.url]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            node.readyz().await.0 == 200
        })
        .await
    );
    let old = sign(
        &Signer::Pem("rsa-a"),
        Algorithm::RS256,
        Some("key-a"),
        &good_claims("alice"),
    );
    let mut session = WsClient::open(&format!("{}?token={old}", node.ws_url()))
        .await
        .expect("opens");
    session.expect_op("welcome").await;
    let (mut stomp, _) = node.stomp_with(&[("passcode", &old)]).await;

    jwks.rotate(vec![jwk("rsa-b", Algorithm::RS256, "key-b")]);
    let new = sign(
        &Signer::Pem("rsa-b"),
        Algorithm::RS256,
        Some("key-b"),
        &good_claims("bob"),
    );
    // The first token naming `key-b` sends Herald back to the provider.
    let fetched = eventually(Duration::from_secs(10), || async {
        let response = http()
            .get(node.url(&format!("/ws?token={new}")))
            .send()
            .await
            .expect("handshake request");
        // Past the token check, a plain GET is refused as no WebSocket.
        response.status() != 401
    })
    .await;
    assert!(fetched, "the new key was never fetched: {:?}", node.logs());
    assert_accepted(&node, &new, "bob").await;

    session.assert_alive().await;
    stomp
        .with_receipt(
            StompFrame::new("SUBSCRIBE")
                .header("destination", "/topic/still")
                .header("id", "1"),
        )
        .await;
    // The retired key is gone with the set it was in.
    let retired = sign(
        &Signer::Pem("rsa-a"),
        Algorithm::RS256,
        Some("key-a"),
        &good_claims("eve"),
    );
    assert_refused(&node, &retired, "unknown key id").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_key_set_serves_while_the_jwks_url_is_down() {
    let mut jwks = JwksServer::start(provider_keys()).await;
    let node = node_with(&["--jwt-jwks-url", &jwks.url, "--jwt-jwks-refresh", "1s"]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            node.readyz().await.0 == 200
        })
        .await
    );
    jwks.take_down().await;
    let failed = eventually(Duration::from_secs(10), || async {
        node.logs()
            .iter()
            .any(|line| line.contains("the last good set stays in force"))
    })
    .await;
    assert!(failed, "no failed refresh was logged: {:?}", node.logs());
    let token = sign(
        &Signer::Pem("rsa-a"),
        Algorithm::RS256,
        Some("key-a"),
        &good_claims("alice"),
    );
    assert_accepted(&node, &token, "alice").await;
    assert_eq!(node.readyz().await.0, 200);
    // The token itself is never written to the log, refused or not.
    let other = sign(
        &Signer::Pem("rsa-b"),
        Algorithm::RS256,
        Some("key-a"),
        &good_claims("eve"),
    );
    let forged = with_foreign_signature(&token, &other);
    assert_refused(&node, &forged, "wrong signature").await;
    let logs = node.logs();
    assert!(!logs
        .iter()
        .any(|line| line.contains(&token) || line.contains(&forged)));
    assert!(logs
        .iter()
        .any(|line| line.contains("refused a token: wrong signature")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_jwks_was_never_fetched_serves_but_refuses_tokens() {
    let mut jwks = JwksServer::down(provider_keys()).await;
    let node = node_with(&["--jwt-jwks-url", &jwks.url]);
    let (status, body) = node.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not been fetched"),
        "{body}"
    );
    let token = sign(
        &Signer::Pem("rsa-a"),
        Algorithm::RS256,
        Some("key-a"),
        &good_claims("alice"),
    );
    assert_refused(&node, &token, "have not been fetched yet").await;
    // Anonymous sessions are still served.
    node.connect().await.assert_alive().await;

    jwks.resume().await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            node.readyz().await.0 == 200
        })
        .await
    );
    assert_accepted(&node, &token, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_combine_and_the_token_alg_and_kid_pick_the_key() {
    let jwks = JwksServer::start(vec![jwk("ec256", Algorithm::ES256, "key-ec")]).await;
    let node = node_with(&[
        "--jwt-secret",
        SECRET,
        "--jwt-public-key",
        &path("rsa-a.pub.pem"),
        "--jwt-jwks-url",
        &jwks.url,
    ]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            node.readyz().await.0 == 200
        })
        .await
    );
    let hs = sign(
        &Signer::Secret(SECRET.to_owned()),
        Algorithm::HS256,
        None,
        &good_claims("a"),
    );
    assert_accepted(&node, &hs, "a").await;
    let rs = sign(
        &Signer::Pem("rsa-a"),
        Algorithm::RS256,
        None,
        &good_claims("b"),
    );
    assert_accepted(&node, &rs, "b").await;
    let es = sign(
        &Signer::Pem("ec256"),
        Algorithm::ES256,
        Some("key-ec"),
        &good_claims("c"),
    );
    assert_accepted(&node, &es, "c").await;
    // A public key's bytes used as the HMAC secret meet the real secret.
    let confused = hs256_with_public_key_as_secret("rsa-a.pub.pem", &good_claims("mallory"));
    assert_refused(&node, &confused, "wrong signature").await;
    // The PEM key has no key id, so a kid the provider lacks still reaches it.
    let rs_kid = sign(
        &Signer::Pem("rsa-a"),
        Algorithm::RS256,
        Some("other"),
        &good_claims("d"),
    );
    assert_accepted(&node, &rs_kid, "d").await;
}

#[tokio::test]
async fn exp_leeway_and_audience_rules() {
    let strict = TestNode::start(&["--jwt-secret", SECRET]);
    let signer = Signer::Secret(SECRET.to_owned());
    let no_exp = sign(&signer, Algorithm::HS256, None, &json!({"sub": "alice"}));
    assert_refused(&strict, &no_exp, "HERALD_JWT_ALLOW_NO_EXP").await;
    // No audience configured: a token's `aud` is not Herald's to judge.
    let with_aud = sign(&signer, Algorithm::HS256, None, &good_claims("alice"));
    assert_accepted(&strict, &with_aud, "alice").await;
    // Within the default 5 s leeway either side.
    let just_expired = sign(&signer, Algorithm::HS256, None, &claims("alice", -2));
    assert_accepted(&strict, &just_expired, "alice").await;
    let almost_valid = with(claims("alice", 3600), "nbf", json!(now() + 2));
    assert_accepted(
        &strict,
        &sign(&signer, Algorithm::HS256, None, &almost_valid),
        "alice",
    )
    .await;

    let lenient = TestNode::start(&[
        "--jwt-secret",
        SECRET,
        "--jwt-allow-no-exp",
        "true",
        "--jwt-leeway",
        "0s",
    ]);
    assert_accepted(&lenient, &no_exp, "alice").await;
    assert_refused(&lenient, &just_expired, "expired").await;
}

#[tokio::test]
async fn any_user_id_reaches_its_session_through_the_encoding() {
    let node = TestNode::start(&["--jwt-secret", SECRET, "--jwt-user-claim", "email"]);
    let signer = Signer::Secret(SECRET.to_owned());
    let token = sign(
        &signer,
        Algorithm::HS256,
        None,
        &with(claims("ignored", 3600), "email", json!("alice@example.com")),
    );
    let encoded = "b64:YWxpY2VAZXhhbXBsZS5jb20";
    let mut client = WsClient::open(&format!("{}?token={token}", node.ws_url()))
        .await
        .expect("opens");
    let welcome = client.expect_op("welcome").await;
    assert_eq!(welcome["user"], encoded);

    // The API takes the id as the identity provider wrote it, or encoded.
    for user in ["alice%40example.com", encoded] {
        let response = http()
            .post(node.url(&format!("/api/users/{user}/messages")))
            .json(&json!({"data": {"to": user}}))
            .send()
            .await
            .expect("user message");
        assert_eq!(response.status(), 202, "{user}");
        let message = client.expect_message().await;
        assert_eq!(message["topic"], format!("user.{encoded}"));
        assert_eq!(message["data"]["to"], user);
    }

    let missing = sign(&signer, Algorithm::HS256, None, &claims("bob", 3600));
    assert_refused(&node, &missing, "no `email` claim").await;
}
