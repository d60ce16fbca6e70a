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
                // `http://ADDR`, or `https://ADDR` when serving TLS; the
                // line is in the logs before the test learns the address.
                let addr = line.find("listening on http").and_then(|at| {
                    let url = &line[at + "listening on ".len()..];
                    url.split_once("://")
                        .map(|(_, addr)| addr.trim().to_owned())
                });
                sink.lock().expect("log lock").push(line);
                if let Some(addr) = addr {
                    let _ = addr_tx.send(addr);
                }
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

    /// Opens a WebSocket with `token` (as `?token=`) and returns it with its
    /// `welcome`.
    pub async fn connect_with_token(&self, token: &str) -> (WsClient, Value) {
        let mut client = WsClient::open(&format!("{}?token={token}", self.ws_url()))
            .await
            .expect("the WebSocket with a token opens");
        let welcome = client.expect_op("welcome").await;
        (client, welcome)
    }

    /// The WebSocket URL carrying a token for `user`, signed with `secret`
    /// and expiring in `ttl_secs`.
    pub fn ws_url_as(&self, secret: &str, user: &str, ttl_secs: i64) -> String {
        format!("{}?token={}", self.ws_url(), token(secret, user, ttl_secs))
    }

    /// Opens a WebSocket as `user` (token signed with `secret`) and returns
    /// it with its `welcome`.
    pub async fn connect_as(&self, secret: &str, user: &str) -> (WsClient, Value) {
        let mut client = WsClient::open(&self.ws_url_as(secret, user, 3600))
            .await
            .expect("authenticated WebSocket opens");
        let welcome = client.expect_op("welcome").await;
        assert_eq!(welcome["user"], user);
        (client, welcome)
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
    /// Messages that arrived while `call` waited for a reply, in order.
    held: std::collections::VecDeque<Value>,
}

impl WsClient {
    pub async fn open(url: &str) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        Self::open_request(url.into_client_request()?).await
    }

    pub async fn open_request(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let (socket, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async_with_config(request, None, true),
        )
        .await
        .expect("handshake in time")?;
        Ok(WsClient {
            socket,
            next_id: 0,
            held: std::collections::VecDeque::new(),
        })
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
        if let Some(held) = self.held.pop_front() {
            return Some(held);
        }
        self.read_json(within).await
    }

    async fn read_json(&mut self, within: Duration) -> Option<Value> {
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
    /// Messages arriving meanwhile are kept for the next reads.
    pub async fn call(&mut self, mut op: Value) -> Value {
        let id = self.fresh_id();
        op["id"] = json!(id);
        self.send_json(op).await;
        loop {
            let frame = self.read_json(WAIT).await.expect("a reply arrives in time");
            if frame["id"] == json!(id) {
                return frame;
            }
            assert_eq!(
                frame["op"], "message",
                "unexpected frame while waiting for a reply: {frame}"
            );
            self.held.push_back(frame);
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
    /// The topics of the messages that arrive until one on `marker`;
    /// anything but a message is a failure.
    pub async fn topics_until(&mut self, marker: &str) -> Vec<String> {
        let mut topics = Vec::new();
        loop {
            let frame = self.next_json().await;
            assert_eq!(frame["op"], "message", "unexpected frame {frame}");
            let topic = frame["topic"].as_str().expect("topic").to_owned();
            if topic == marker {
                return topics;
            }
            topics.push(topic);
        }
    }

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

/// The RabbitMQ the AMQP tests use.
pub fn amqp_url() -> String {
    std::env::var("HERALD_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

impl TestNode {
    /// A node with the RabbitMQ bridge on, once it is connected.
    pub async fn start_amqp(args: &[&str]) -> TestNode {
        let url = amqp_url();
        let mut all = vec!["--amqp-url", url.as_str()];
        all.extend_from_slice(args);
        let node = TestNode::start(&all);
        node.wait_amqp_connected().await;
        node
    }

    pub async fn wait_amqp_connected(&self) {
        let connected = eventually(WAIT, || async {
            self.stats().await["amqp"]["state"] == "connected"
        })
        .await;
        assert!(
            connected,
            "the node did not connect to RabbitMQ: {:?}",
            self.logs()
        );
    }
}

/// A microservice's view of RabbitMQ, through lapin.
pub struct Rabbit {
    pub connection: lapin::Connection,
    pub channel: lapin::Channel,
}

impl Rabbit {
    pub async fn connect() -> Rabbit {
        let connection =
            lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
                .await
                .expect("RabbitMQ reachable at HERALD_TEST_AMQP_URL or 127.0.0.1:5672");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        Rabbit {
            connection,
            channel,
        }
    }

    /// Publishes and waits for RabbitMQ's confirm.
    pub async fn publish(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        self.publish_with(
            exchange,
            routing_key,
            body,
            lapin::BasicProperties::default(),
        )
        .await;
    }

    pub async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: lapin::BasicProperties,
    ) {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "RabbitMQ refused the publish");
    }

    /// Declares a queue of the test's own bound to `exchange` with `key`.
    pub async fn queue(&self, name: &str, exchange: &str, key: &str, durable: bool) {
        let options = lapin::options::QueueDeclareOptions {
            durable,
            auto_delete: !durable,
            ..Default::default()
        };
        self.channel
            .queue_declare(name.into(), options, lapin::types::FieldTable::default())
            .await
            .expect("queue declare");
        self.bind(name, exchange, key).await;
    }

    /// Binds a queue of the test's own to `exchange` with `key`.
    pub async fn bind(&self, queue: &str, exchange: &str, key: &str) {
        self.channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                Default::default(),
                Default::default(),
            )
            .await
            .expect("queue bind");
    }

    /// Takes the next message waiting in `queue`, if any.
    pub async fn get(&self, queue: &str) -> Option<lapin::message::BasicGetMessage> {
        self.channel
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
    }

    /// Waits up to `WAIT` for a message in `queue`.
    pub async fn expect_get(&self, queue: &str) -> lapin::message::BasicGetMessage {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(message) = self.get(queue).await {
                return message;
            }
            assert!(Instant::now() < deadline, "nothing arrived in {queue}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn delete_queue(&self, name: &str) {
        let _ = self
            .channel
            .queue_delete(name.into(), Default::default())
            .await;
    }
}

/// A header of an AMQP message as text.
pub fn header(properties: &lapin::BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        lapin::types::AMQPValue::LongString(value) => {
            Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
        }
        other => Some(format!("{other:?}")),
    }
}

pub mod authorizer;
pub mod example;
pub mod jwt;
pub mod proxy;
pub mod rules;
pub mod stomp;

/// A raw WebSocket, for tests that split reading from writing.
pub type WsSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl WsClient {
    /// Sends every op at once, each with a fresh id, without waiting for any
    /// answer; returns the ids in the order the ops went out.
    pub async fn send_all(&mut self, ops: Vec<Value>) -> Vec<String> {
        let mut ids = Vec::with_capacity(ops.len());
        for mut op in ops {
            let id = self.fresh_id();
            op["id"] = json!(id);
            self.socket
                .feed(Message::text(op.to_string()))
                .await
                .expect("send");
            ids.push(id);
        }
        self.socket.flush().await.expect("flush");
        ids
    }

    /// The replies carrying `ids`, in the order of `ids`, each exactly once.
    /// Messages arriving meanwhile are kept for the next reads.
    pub async fn replies(&mut self, ids: &[String]) -> Vec<Value> {
        let mut answers: Vec<Option<Value>> = vec![None; ids.len()];
        while answers.iter().any(Option::is_none) {
            let frame = self
                .read_json(WAIT)
                .await
                .unwrap_or_else(|| panic!("no reply in time; got {answers:?} for {ids:?}"));
            match ids.iter().position(|id| frame["id"] == json!(id)) {
                Some(at) => {
                    assert!(answers[at].is_none(), "a second reply for one op: {frame}");
                    answers[at] = Some(frame);
                }
                None => {
                    assert_eq!(
                        frame["op"], "message",
                        "unexpected frame while waiting for replies: {frame}"
                    );
                    self.held.push_back(frame);
                }
            }
        }
        answers.into_iter().map(Option::unwrap).collect()
    }

    /// [`send_all`](Self::send_all), then [`replies`](Self::replies).
    pub async fn call_all(&mut self, ops: Vec<Value>) -> Vec<Value> {
        let ids = self.send_all(ops).await;
        self.replies(&ids).await
    }

    /// Gives up the fixture for the raw socket (nothing may be held).
    pub fn into_socket(self) -> WsSocket {
        assert!(self.held.is_empty(), "frames held: {:?}", self.held);
        self.socket
    }
}

/// Runs `future` and says how long it took.
pub async fn timed<T>(future: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let value = future.await;
    (value, started.elapsed())
}

/// `POST` of a JSON body: the status and the JSON answer (Null if none).
pub async fn post_json(url: &str, body: Value) -> (u16, Value) {
    let response = http().post(url).json(&body).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A process's resident memory in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// Runs `rabbitmqctl` and asserts it succeeded.
pub fn run_rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl TestNode {
    /// `POST` to this node: the status and the JSON answer.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        post_json(&self.url(path), body).await
    }

    /// `GET /readyz`: the status and the JSON answer.
    pub async fn readyz(&self) -> (u16, Value) {
        let response = http()
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("GET /readyz");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A node whose RabbitMQ URL is `url` (a proxy, say), once connected.
    pub async fn start_amqp_at(url: &str, args: &[&str]) -> TestNode {
        let mut all = vec!["--amqp-url", url];
        all.extend_from_slice(args);
        let node = TestNode::start(&all);
        node.wait_amqp_connected().await;
        node
    }
}
