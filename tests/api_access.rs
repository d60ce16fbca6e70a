//! Who may call the HTTP API: with no key, callers on this host only, that
//! name it in `Host` (not a DNS-rebinding domain), and never a request a
//! proxy forwarded; with keys, the API key for backends'
//! operations and the admin key for operators'.

mod support;

use serde_json::{json, Value};
use support::*;

/// Calls `method path` with `key` (if any) and `headers`; the status and the
/// JSON body (or null).
async fn call(
    node: &TestNode,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = http().request(method.clone(), node.url(path));
    if method == reqwest::Method::POST {
        request = request.json(&json!({"topic": unique_topic("access"), "data": 1}));
    }
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn without_a_key_a_request_that_came_through_a_proxy_is_refused() {
    let node = TestNode::start(&[]);
    let (status, _) = call(&node, reqwest::Method::POST, "/api/publish", None, &[]).await;
    assert_eq!(status, 202, "a caller on this host is served");
    for header in [
        ("X-Forwarded-For", "203.0.113.7"),
        ("Forwarded", "for=203.0.113.7"),
        ("X-Real-IP", "203.0.113.7"),
    ] {
        for (method, path) in [
            (reqwest::Method::POST, "/api/publish"),
            (reqwest::Method::GET, "/api/stats"),
            (reqwest::Method::DELETE, "/api/users/alice/sessions"),
        ] {
            let (status, body) = call(&node, method, path, None, &[header]).await;
            assert_eq!(status, 403, "{path} with {header:?}: {body}");
            assert_eq!(body["error"], "forbidden");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(message.contains("HERALD_API_KEY"), "{message}");
        }
    }
}

#[tokio::test]
async fn the_admin_key_opens_operators_endpoints_and_the_api_key_does_not() {
    let node = TestNode::start(&["--api-key", "backend-key", "--admin-key", "admin-key"]);
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    let delete = reqwest::Method::DELETE;

    // Backends publish with the API key; the admin key may too.
    assert_eq!(
        call(
            &node,
            post.clone(),
            "/api/publish",
            Some("backend-key"),
            &[]
        )
        .await
        .0,
        202
    );
    assert_eq!(
        call(&node, post.clone(), "/api/publish", Some("admin-key"), &[])
            .await
            .0,
        202
    );

    // Operators' endpoints take the admin key only.
    for (method, path) in [
        (get.clone(), "/api/stats"),
        (get.clone(), "/api/topics"),
        (delete.clone(), "/api/users/alice/sessions"),
    ] {
        let (status, body) = call(&node, method.clone(), path, Some("backend-key"), &[]).await;
        assert_eq!(status, 403, "{path}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("admin key"), "{message}");
        let (status, body) = call(&node, method.clone(), path, Some("admin-key"), &[]).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(call(&node, method.clone(), path, None, &[]).await.0, 401);
        assert_eq!(call(&node, method, path, Some("guess"), &[]).await.0, 403);
    }
}

#[tokio::test]
async fn without_an_admin_key_the_api_key_serves_operators_too() {
    let node = TestNode::start(&["--api-key", "only-key"]);
    let (status, body) = call(
        &node,
        reqwest::Method::GET,
        "/api/stats",
        Some("only-key"),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(
        &node,
        reqwest::Method::DELETE,
        "/api/users/alice/sessions",
        Some("only-key"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn without_a_key_a_listed_proxy_is_never_taken_for_a_local_caller() {
    let node = TestNode::start(&["--trusted-proxies", "127.0.0.1/32"]);
    let (status, body) = call(&node, reqwest::Method::POST, "/api/publish", None, &[]).await;
    assert_eq!(status, 403, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("HERALD_API_KEY"), "{message}");
}

#[tokio::test]
async fn with_only_an_admin_key_backends_endpoints_stay_open_to_this_host() {
    let node = TestNode::start(&["--admin-key", "admin-only"]);
    let post = reqwest::Method::POST;
    assert_eq!(
        call(&node, post.clone(), "/api/publish", None, &[]).await.0,
        202
    );
    assert_eq!(
        call(&node, post, "/api/publish", Some("admin-only"), &[])
            .await
            .0,
        202
    );
    let get = reqwest::Method::GET;
    assert_eq!(
        call(&node, get.clone(), "/api/stats", None, &[]).await.0,
        401
    );
    assert_eq!(
        call(&node, get, "/api/stats", Some("admin-only"), &[])
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn without_a_key_a_local_caller_must_name_this_host() {
    let node = TestNode::start(&[]);
    let (post, get, delete) = (
        reqwest::Method::POST,
        reqwest::Method::GET,
        reqwest::Method::DELETE,
    );
    let port = node.addr.rsplit(':').next().expect("a port");
    let rebinding = format!("rebind.example:{port}");
    for (method, path) in [
        (post.clone(), "/api/publish"),
        (get.clone(), "/api/stats"),
        (delete.clone(), "/api/users/alice/sessions"),
        (post.clone(), "/api/tokens/revoke"),
    ] {
        let (status, body) = call(&node, method, path, None, &[("host", &rebinding)]).await;
        assert_eq!(status, 403, "{path}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("Host"), "{message}");
    }
    for host in [format!("localhost:{port}"), node.addr.clone()] {
        let (status, body) = call(
            &node,
            post.clone(),
            "/api/publish",
            None,
            &[("host", &host)],
        )
        .await;
        assert_eq!(status, 202, "Host {host}: {body}");
        let (status, body) = call(&node, get.clone(), "/api/stats", None, &[("host", &host)]).await;
        assert_eq!(status, 200, "Host {host}: {body}");
    }
}

#[tokio::test]
async fn without_a_key_a_page_on_another_site_is_refused_and_curl_is_not() {
    let node = TestNode::start(&[]);
    let post = reqwest::Method::POST;
    for header in [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let (status, body) = call(&node, post.clone(), "/api/drain", None, &[header]).await;
        assert_eq!(status, 403, "drain with {header:?}: {body}");
        assert_eq!(body["error"], "forbidden");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("HERALD_API_KEY"), "{message}");
        let ready = http().get(node.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "the node did not drain");
    }
    // A page on this host, and a caller without a browser, are served.
    let port = node.addr.rsplit(':').next().expect("a port");
    let local = format!("http://127.0.0.1:{port}");
    let (status, body) = call(
        &node,
        post.clone(),
        "/api/publish",
        None,
        &[("Origin", &local)],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = call(&node, post, "/api/publish", None, &[]).await;
    assert_eq!(status, 202, "{body}");
}
