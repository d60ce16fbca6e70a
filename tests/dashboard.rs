//! `/dashboard`: with a key configured, a login form that trades the key
//! for an HttpOnly session cookie; the cookie opens the page and its SSE
//! stream of snapshots, and nothing else.

mod support;

use serde_json::Value;
use support::*;

const ADMIN: &str = "admin-key-for-the-dashboard";
const API: &str = "api-key-for-the-dashboard";

fn keyed_node() -> TestNode {
    TestNode::start_with_env(&[], &[("HERALD_ADMIN_KEY", ADMIN), ("HERALD_API_KEY", API)])
}

/// A client that shows redirects rather than following them, and keeps no
/// cookies of its own.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

async fn login(node: &TestNode, key: &str) -> reqwest::Response {
    client()
        .post(node.url("/dashboard/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={key}"))
        .send()
        .await
        .expect("login answers")
}

/// The `name=value` part of the login's cookie, and its attributes.
fn session_cookie(response: &reqwest::Response) -> (String, String) {
    let header = response
        .headers()
        .get("set-cookie")
        .expect("a cookie is set")
        .to_str()
        .expect("ascii cookie")
        .to_string();
    let (pair, attributes) = header.split_once(';').expect("cookie attributes");
    (pair.to_string(), attributes.to_string())
}

/// The first `data:` event of the stream at `/dashboard/stream`.
async fn first_event(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut response = response;
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.expect("stream chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(end) = text.find("\n\n") {
                let line = text[..end].strip_prefix("data: ").expect("a data line");
                return serde_json::from_str::<Value>(line).expect("JSON event");
            }
        }
        panic!("the stream ended before an event: {text:?}");
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("an event within WAIT")
}

#[tokio::test]
async fn without_a_login_the_page_is_a_form_and_not_the_data() {
    let node = keyed_node();
    let response = client().get(node.url("/dashboard")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body = response.text().await.unwrap();
    assert!(body.contains(r#"action="/dashboard/login""#), "{body}");
    assert!(body.contains(r#"name="key""#), "{body}");
    assert!(
        !body.contains("dashboard.js"),
        "the form loads no dashboard: {body}"
    );
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_sets_no_cookie() {
    let node = keyed_node();
    let response = login(&node, "not-the-key").await;
    assert_eq!(response.status(), 403);
    assert!(response.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn failed_logins_are_limited_per_client() {
    let node = keyed_node();
    for _ in 0..5 {
        assert_eq!(login(&node, "guess").await.status(), 403);
    }
    let response = login(&node, ADMIN).await;
    assert_eq!(
        response.status(),
        429,
        "even the right key waits out the limit"
    );
    assert!(response.headers().get("set-cookie").is_none());
}

async fn login_from(node: &TestNode, key: &str, client_ip: &str) -> reqwest::Response {
    client()
        .post(node.url("/dashboard/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-for", client_ip)
        .body(format!("key={key}"))
        .send()
        .await
        .expect("login answers")
}

#[tokio::test]
async fn behind_a_trusted_proxy_failed_logins_are_limited_per_forwarded_client() {
    let node = TestNode::start_with_env(
        &["--trusted-proxies", "127.0.0.1/32"],
        &[("HERALD_ADMIN_KEY", ADMIN), ("HERALD_API_KEY", API)],
    );
    for _ in 0..5 {
        assert_eq!(
            login_from(&node, "guess", "198.51.100.1").await.status(),
            403
        );
    }
    assert_eq!(
        login_from(&node, "guess", "198.51.100.1").await.status(),
        429,
        "the guesser is limited"
    );
    assert_eq!(
        login_from(&node, "typo", "198.51.100.2").await.status(),
        403,
        "another client behind the same proxy is not"
    );
}

#[tokio::test]
async fn the_stream_refuses_a_caller_without_cookie_or_key() {
    let node = keyed_node();
    let response = client()
        .get(node.url("/dashboard/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = client()
        .get(node.url("/dashboard/stream"))
        .header("cookie", "herald_dashboard=made-up-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn the_right_key_gives_an_http_only_cookie_that_opens_the_page_and_stream() {
    let node = keyed_node();
    let response = login(&node, ADMIN).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/dashboard");
    let (pair, attributes) = session_cookie(&response);
    assert!(attributes.contains("HttpOnly"), "{attributes}");
    assert!(attributes.contains("SameSite=Strict"), "{attributes}");
    assert!(attributes.contains("Path=/dashboard"), "{attributes}");
    assert!(!pair.contains(ADMIN), "the cookie is a token, not the key");

    let page = client()
        .get(node.url("/dashboard"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("/dashboard/dashboard.js"));

    // The cookie is no API credential.
    let stats = client()
        .get(node.url("/api/stats"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 401);

    let stream = client()
        .get(node.url("/dashboard/stream"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    let event = first_event(stream).await;
    for path in [
        "/node",
        "/connections/current",
        "/users_online",
        "/messages/in",
        "/messages/out",
        "/messages/dropped",
        "/refused",
        "/broker/backlog",
        "/broker/bound",
        "/amqp/state",
        "/amqp/blocked",
        "/amqp/reconnects",
        "/amqp/backlog",
        "/amqp/bound",
        "/busiest_topics",
    ] {
        assert!(event.pointer(path).is_some(), "{path} missing in {event}");
    }

    let logout = client()
        .post(node.url("/dashboard/logout"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    let stream = client()
        .get(node.url("/dashboard/stream"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 401, "a logged-out token opens nothing");
}

#[tokio::test]
async fn the_admin_key_as_bearer_opens_the_stream_and_the_api_key_does_not() {
    let node = keyed_node();
    let stream = client()
        .get(node.url("/dashboard/stream"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let event = first_event(stream).await;
    assert!(event["connections"]["current"].is_u64());
    let response = client()
        .get(node.url("/dashboard/stream"))
        .bearer_auth(API)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn an_open_stream_ends_soon_after_its_login_is_logged_out() {
    let node = keyed_node();
    let (pair, _) = session_cookie(&login(&node, ADMIN).await);
    let mut stream = client()
        .get(node.url("/dashboard/stream"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // The first event comes at once.
    let first = tokio::time::timeout(WAIT, stream.chunk())
        .await
        .expect("a first event");
    assert!(first.expect("stream chunk").is_some());
    let logout = client()
        .post(node.url("/dashboard/logout"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    let ended = async {
        // At most the one event already on its way, then the end.
        while let Ok(Some(_)) = stream.chunk().await {}
    };
    tokio::time::timeout(std::time::Duration::from_millis(2500), ended)
        .await
        .expect("the stream ends within about two seconds of logout");
}

#[tokio::test]
async fn the_cookie_is_secure_when_a_trusted_proxy_says_the_browser_used_https() {
    let behind_proxy = TestNode::start_with_env(
        &["--trusted-proxies", "127.0.0.1/32"],
        &[("HERALD_ADMIN_KEY", ADMIN)],
    );
    let secure_login = |node: &TestNode, headers: &[(&'static str, &'static str)]| {
        let mut request = client()
            .post(node.url("/dashboard/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("key={ADMIN}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    for (headers, secure) in [
        (&[("x-forwarded-proto", "https")][..], true),
        (&[("forwarded", "for=192.0.2.1;proto=https")][..], true),
        (&[("x-forwarded-proto", "http")][..], false),
        (&[][..], false),
    ] {
        let response = secure_login(&behind_proxy, headers).await.unwrap();
        let (_, attributes) = session_cookie(&response);
        assert_eq!(
            attributes.contains("Secure"),
            secure,
            "{headers:?}: {attributes}"
        );
    }
    // From a peer that is no trusted proxy the header is the client's word.
    let direct = keyed_node();
    let response = secure_login(&direct, &[("x-forwarded-proto", "https")])
        .await
        .unwrap();
    let (_, attributes) = session_cookie(&response);
    assert!(!attributes.contains("Secure"), "{attributes}");
}
