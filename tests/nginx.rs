//! Two Herald nodes behind a real nginx running deploy/nginx/herald.conf
//! (its upstream servers, listen port, pid and logs rewritten for this
//! machine): WebSocket clients connect through nginx and land on both nodes,
//! one publish reaches all of them, and when node A gets SIGTERM its clients
//! reconnect through nginx, end up on node B and receive the next publish.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 20;
const SECRET: &str = "nginx-test-cluster-secret";
/// Behind a trusted proxy on this host, Herald's no-key "this host only"
/// API access would refuse every caller (all would look local), so the
/// nodes have a key.
const API_KEY: &str = "nginx-test-api-key";

/// nginx in the foreground on a config rendered from the deploy template,
/// killed (and its directory removed) when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Replaces `from` with `to` in `text`, failing if the template no longer
/// has it: a change to deploy/nginx/herald.conf must show up here.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "deploy/nginx/herald.conf no longer contains {from:?}"
    );
    text.replace(from, to)
}

/// deploy/nginx/herald.conf with node A and B as its upstream servers, a
/// free listen port, and pid and logs in `dir`.
fn render(template: &str, a: &str, b: &str, port: u16, dir: &Path) -> String {
    let dir = dir.display();
    let text = substitute(template, "server 127.0.0.1:8081 ", &format!("server {a} "));
    let text = substitute(&text, "server 127.0.0.1:8082 ", &format!("server {b} "));
    let text = substitute(&text, "listen 8080;", &format!("listen 127.0.0.1:{port};"));
    let text = substitute(
        &text,
        "pid /run/nginx-herald.pid;",
        &format!("pid {dir}/nginx.pid;"),
    );
    let text = substitute(
        &text,
        "/var/log/nginx/herald-access.log",
        &format!("{dir}/access.log"),
    );
    substitute(
        &text,
        "/var/log/nginx/herald-error.log warn",
        &format!("{dir}/error.log info"),
    )
}

impl Nginx {
    async fn start(a: &str, b: &str) -> Nginx {
        let binary = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|candidate| {
                Command::new(candidate)
                    .arg("-v")
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })
            .expect("nginx is not installed (tests/run.sh installs it: apt-get install nginx)");
        let template = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/herald.conf"),
        )
        .expect("deploy/nginx/herald.conf reads");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("herald-nginx-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("nginx directory");
        let port = free_port();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, render(&template, a, b, port, &dir)).expect("nginx.conf writes");
        let child = Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("startup-error.log"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Nginx { child, dir, port };
        let up = eventually(WAIT, || async {
            matches!(
                http().get(nginx.url("/healthz")).send().await,
                Ok(response) if response.status() == 200
            )
        })
        .await;
        if !up {
            let exited = nginx.child.try_wait().ok().flatten();
            panic!(
                "nginx does not answer on port {port} (exited: {exited:?}): {}",
                nginx.errors()
            );
        }
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn errors(&self) -> String {
        ["startup-error.log", "error.log"]
            .iter()
            .map(|name| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master stops its workers before it
        // exits, where a killed master would leave them running.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client as a browser would hold it: connected through nginx, with the
/// node its `welcome` named.
struct Client {
    ws: WsClient,
    node: String,
}

/// The next JSON frame, or None once the socket closes or `within` passes
/// (the shared reader treats a close as a failure; here it is expected).
async fn next_or_closed(ws: &mut WsClient, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).ok(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

/// Connects through nginx, retrying while nginx has no node to give (a
/// 502 while A is gone and B is momentarily marked failed, say).
async fn connect(nginx_ws: &str, within: Duration) -> Client {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(mut ws) = WsClient::open(nginx_ws).await {
            if let Some(welcome) = next_or_closed(&mut ws, WAIT).await {
                if welcome["op"] == "welcome" {
                    let node = welcome["node"].as_str().unwrap_or_default().to_owned();
                    return Client { ws, node };
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no WebSocket through nginx within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads until the node closes the session, then reconnects through nginx
/// (after the `reconnect` hint's delay when one came), again if nginx hands
/// it to the node that is going away, and resubscribes to `topic`.
async fn follow_drain(
    mut client: Client,
    leaving: String,
    nginx_ws: String,
    topic: String,
) -> (Client, Option<u64>) {
    let mut hint = None;
    loop {
        loop {
            match next_or_closed(&mut client.ws, Duration::from_secs(15)).await {
                Some(frame) if frame["op"] == "reconnect" => {
                    hint = frame["after_ms"].as_u64();
                }
                Some(_) => {}
                None => break,
            }
        }
        if let Some(after_ms) = hint {
            // The hint spreads reconnects over the drain window; capped so
            // a long window cannot outlast the test.
            tokio::time::sleep(Duration::from_millis(after_ms.min(5_000))).await;
        }
        client = connect(&nginx_ws, Duration::from_secs(15)).await;
        if client.node != leaving {
            client.ws.subscribe(&topic).await;
            return (client, hint);
        }
    }
}

async fn stats(node: &TestNode) -> Value {
    let response = http()
        .get(node.url("/api/stats"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("GET /api/stats");
    assert_eq!(response.status(), 200, "GET /api/stats");
    response.json().await.expect("stats are JSON")
}

async fn publish(node: &TestNode, topic: &str, data: &str) {
    let response = http()
        .post(node.url("/api/publish"))
        .bearer_auth(API_KEY)
        .json(&json!({"topic": topic, "data": data}))
        .send()
        .await
        .expect("POST /api/publish");
    assert_eq!(response.status(), 202, "POST /api/publish");
}

async fn start_node(id: &str, url: &str) -> TestNode {
    let node = TestNode::start_with_env(
        &[],
        &[
            ("HERALD_NODE_ID", id),
            ("HERALD_AMQP_URL", url),
            ("HERALD_CLUSTER_SECRET", SECRET),
            ("HERALD_TRUSTED_PROXIES", "127.0.0.1/32"),
            ("HERALD_API_KEY", API_KEY),
            ("HERALD_SHUTDOWN_GRACE", "5"),
            // Where draining spreads closes over a window, a short one
            // keeps the test quick.
            ("HERALD_DRAIN_WINDOW", "2"),
        ],
    );
    let connected = eventually(WAIT, || async {
        stats(&node).await["amqp"]["state"] == "connected"
    })
    .await;
    assert!(
        connected,
        "{id} did not connect to RabbitMQ: {:?}",
        node.logs()
    );
    node
}

async fn expect_data(client: &mut Client, data: &str) {
    let frame: Value = client.ws.expect_message().await;
    assert_eq!(frame["data"], data, "client on {}", client.node);
}

#[tokio::test]
async fn clients_through_nginx_spread_over_two_nodes_and_move_to_the_other_when_one_drains() {
    let began = Instant::now();
    let url = amqp_url();
    let mut a = start_node("n-nginx-a", &url).await;
    let b = start_node("n-nginx-b", &url).await;
    let nginx = Nginx::start(&a.addr, &b.addr).await;

    let topic = unique_topic("nginx");
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = connect(&nginx.ws_url(), WAIT).await;
        client.ws.subscribe(&topic).await;
        clients.push(client);
    }
    let on_a = clients.iter().filter(|c| c.node == "n-nginx-a").count();
    let on_b = clients.iter().filter(|c| c.node == "n-nginx-b").count();
    assert_eq!(on_a + on_b, CLIENTS, "a welcome named another node");
    assert!(
        on_a > 0 && on_b > 0,
        "nginx put {on_a} clients on A and {on_b} on B"
    );
    assert_eq!(
        stats(&a).await["connections"]["current"].as_u64(),
        Some(on_a as u64)
    );

    // One publish on A reaches the subscribers on both nodes.
    publish(&a, &topic, "before drain").await;
    for client in &mut clients {
        expect_data(client, "before drain").await;
    }

    a.signal("TERM");
    let drained = Instant::now();
    let mut stayed = Vec::new();
    let mut moving = Vec::new();
    for client in clients {
        if client.node == "n-nginx-a" {
            moving.push(tokio::spawn(follow_drain(
                client,
                "n-nginx-a".to_owned(),
                nginx.ws_url(),
                topic.clone(),
            )));
        } else {
            stayed.push(client);
        }
    }
    let mut clients = stayed;
    let mut hints = 0;
    for task in moving {
        let (client, hint) = task.await.expect("a moving client's task");
        hints += usize::from(hint.is_some());
        clients.push(client);
    }
    let moved = drained.elapsed();
    assert_eq!(
        hints, on_a,
        "every client of the draining node is told when to come back"
    );
    assert!(
        a.wait_exit(Duration::from_secs(15)).success(),
        "node A did not exit 0: {:?}",
        a.logs()
    );
    assert!(clients.iter().all(|c| c.node == "n-nginx-b"));
    assert_eq!(
        stats(&b).await["connections"]["current"].as_u64(),
        Some(CLIENTS as u64)
    );

    publish(&b, &topic, "after drain").await;
    for client in &mut clients {
        expect_data(client, "after drain").await;
    }
    eprintln!(
        "{on_a} clients on A, {on_b} on B; A's clients on B {moved:?} after SIGTERM \
         ({hints} with a reconnect hint); whole test {:?}",
        began.elapsed()
    );
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "the nginx test took {:?}",
        began.elapsed()
    );
}
