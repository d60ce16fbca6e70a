//! Fixtures for the integration tests: a real `herald` process on a free
//! port, a real WebSocket client, a real HTTP client, and helpers that wait
//! for things instead of sleeping.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

/// A running `herald` binary, killed when dropped.
pub struct TestNode {
    child: Child,
    pub addr: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl TestNode {
    /// Starts the binary on 127.0.0.1:0 with extra flags and waits for its
    /// `listening on` line.
    pub fn start(args: &[&str]) -> TestNode {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> TestNode {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command.args(["--listen", "127.0.0.1:0"]).args(args);
        // Only what the test says: no HERALD_* leaking in from the shell.
        for (key, _) in std::env::vars() {
            if key.starts_with("HERALD_") {
                command.env_remove(key);
            }
        }
        command
            .env("RUST_LOG", "info,herald=debug,herald_actors=debug")
            .envs(env.iter().copied());
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("herald starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let _ =
                        addr_tx.send(line[at + "listening on http://".len()..].trim().to_owned());
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(WAIT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("herald did not start: {:?}", logs.lock().expect("log lock"));
            }
        };
        TestNode { child, addr, logs }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Opens a WebSocket and reads its `welcome`.
    pub async fn connect(&self) -> WsClient {
        let mut client = WsClient::open(&self.ws_url())
            .await
            .expect("WebSocket opens");
        client.expect_op("welcome").await;
        client
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "herald did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn stats(&self) -> Value {
        get_json(&self.url("/api/stats")).await
    }

    /// `POST /api/publish`, asserting 202.
    pub async fn publish(&self, topic: &str, data: Value) {
        let response = http()
            .post(self.url("/api/publish"))
            .json(&json!({"topic": topic, "data": data}))
            .send()
            .await
            .expect("publish request");
        assert_eq!(
            response.status(),
            202,
            "{}",
            response.text().await.unwrap_or_default()
        );
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client speaking Herald's JSON protocol.
pub struct WsClient {
    pub socket: Socket,
    next_id: u64,
}

impl WsClient {
    pub async fn open(url: &str) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        Self::open_request(url.into_client_request()?).await
    }

    pub async fn open_request(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake in time")?;
        Ok(WsClient { socket, next_id: 0 })
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// The next JSON frame, or None if nothing came within `within`.
    pub async fn try_next_json(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(&text).expect("server sends JSON"))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn next_json(&mut self) -> Value {
        self.try_next_json(WAIT)
            .await
            .expect("a frame arrives in time")
    }

    pub async fn expect_op(&mut self, op: &str) -> Value {
        let frame = self.next_json().await;
        assert_eq!(frame["op"], op, "unexpected frame {frame}");
        frame
    }

    /// Sends an op with a fresh id and returns the reply carrying that id.
    pub async fn call(&mut self, mut op: Value) -> Value {
        let id = self.fresh_id();
        op["id"] = json!(id);
        self.send_json(op).await;
        loop {
            let frame = self.next_json().await;
            if frame["id"] == json!(id) {
                return frame;
            }
            assert_eq!(
                frame["op"], "message",
                "unexpected frame while waiting for a reply: {frame}"
            );
        }
    }

    pub async fn subscribe(&mut self, topic: &str) {
        let reply = self.call(json!({"op": "subscribe", "topic": topic})).await;
        assert_eq!(reply["op"], "ack", "subscribe {topic}: {reply}");
    }

    pub async fn unsubscribe(&mut self, topic: &str) {
        let reply = self
            .call(json!({"op": "unsubscribe", "topic": topic}))
            .await;
        assert_eq!(reply["op"], "ack", "unsubscribe {topic}: {reply}");
    }

    pub async fn publish(&mut self, topic: &str, data: Value) {
        let reply = self
            .call(json!({"op": "publish", "topic": topic, "data": data}))
            .await;
        assert_eq!(reply["op"], "ack", "publish {topic}: {reply}");
    }

    /// The reply to `op` must be an error with `code`.
    pub async fn expect_error(&mut self, op: Value, code: &str) -> Value {
        let reply = self.call(op).await;
        assert_eq!(reply["op"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
        assert!(
            reply["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{reply}"
        );
        reply
    }

    /// Proves the session still works: a ping gets its pong.
    pub async fn assert_alive(&mut self) {
        let reply = self.call(json!({"op": "ping"})).await;
        assert_eq!(reply["op"], "pong", "{reply}");
    }

    /// The next `message` frame.
    pub async fn expect_message(&mut self) -> Value {
        self.expect_op("message").await
    }

    /// Asserts no text frame arrives for `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        if let Some(frame) = self.try_next_json(within).await {
            panic!("expected nothing, got {frame}");
        }
    }

    /// Reads past any data frames until the close frame; returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("close in time")
            {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                Some(Err(err)) => panic!("connection failed before a close frame: {err}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("http client")
}

pub async fn get_json(url: &str) -> Value {
    let response = http().get(url).send().await.expect("GET");
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response.json().await.expect("JSON body")
}

/// A topic no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}.t{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An HS256 token for `user`, expiring `ttl_secs` from now.
pub fn token(secret: &str, user: &str, ttl_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let claims = json!({"sub": user, "exp": now + ttl_secs});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token encodes")
}
