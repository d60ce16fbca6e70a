//! An application's authorization endpoint on 127.0.0.1, as a test wants
//! it: it answers each question Herald posts by a rule the test gives (or
//! not at all, or slowly), and keeps every question it was asked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the endpoint answers one question.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// `200 {"allow": true}`.
    Allow,
    /// `200 {"allow": false, "reason": ...}`.
    Deny(&'static str),
    /// Another status with a body.
    Status(u16, &'static str),
    /// Answers `{"allow": true}`, but only after this long.
    Slow(Duration),
}

type Decide = dyn Fn(&Value) -> Verdict + Send + Sync;
/// Each question with the `Authorization` header it came with.
type Asked = Arc<Mutex<Vec<(Value, Option<String>)>>>;

/// The endpoint, stopped when dropped.
pub struct Authorizer {
    pub url: String,
    questions: Asked,
    task: JoinHandle<()>,
}

impl Authorizer {
    pub async fn start(decide: impl Fn(&Value) -> Verdict + Send + Sync + 'static) -> Authorizer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let questions = Arc::new(Mutex::new(Vec::new()));
        let decide: Arc<Decide> = Arc::new(decide);
        let kept = questions.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, decide.clone(), kept.clone()));
            }
        });
        Authorizer {
            url: format!("http://{addr}/authorize"),
            questions,
            task,
        }
    }

    /// Every question asked so far, in order.
    pub fn questions(&self) -> Vec<Value> {
        self.asked()
            .into_iter()
            .map(|(question, _)| question)
            .collect()
    }

    /// Every question with the `Authorization` header it came with.
    pub fn asked(&self) -> Vec<(Value, Option<String>)> {
        self.questions.lock().expect("questions lock").clone()
    }
}

impl Drop for Authorizer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one connection: requests one after another (Herald's client keeps
/// connections alive) until the peer closes.
async fn answer(mut stream: TcpStream, decide: Arc<Decide>, questions: Asked) {
    let mut buffered = Vec::new();
    loop {
        let Some(head_end) = read_until_head_end(&mut stream, &mut buffered).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buffered[..head_end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let length: usize = header("content-length")
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        let authorization = header("authorization");
        let body_start = head_end + 4;
        while buffered.len() < body_start + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffered.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buffered[body_start..body_start + length].to_vec();
        buffered.drain(..body_start + length);
        let question: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let verdict = decide(&question);
        questions
            .lock()
            .expect("questions lock")
            .push((question, authorization));
        let (status, body) = match verdict {
            Verdict::Allow => (200, r#"{"allow":true}"#.to_owned()),
            Verdict::Deny(reason) => (
                200,
                serde_json::json!({"allow": false, "reason": reason}).to_string(),
            ),
            Verdict::Status(status, body) => (status, body.to_owned()),
            Verdict::Slow(delay) => {
                tokio::time::sleep(delay).await;
                (200, r#"{"allow":true}"#.to_owned())
            }
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn read_until_head_end(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffered.extend_from_slice(&chunk[..n]),
        }
    }
}
