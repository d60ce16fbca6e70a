//! A trivial fan-out server speaking the subset of Herald's JSON protocol the
//! bench uses (`welcome`, `subscribe` → `ack`, `publish` → `message` to every
//! subscriber of that topic): the yardstick for "what can the bench drive"
//! and for what a minimal Rust WebSocket server costs per delivery.
//!
//! Each message is framed once and the same bytes are queued to every
//! subscriber, as Herald does; a subscriber whose queue is full loses the
//! message (counted on stderr at exit of the connection), so a run against
//! the sink shows loss rather than hiding a slow client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Subscribers by topic: each one's outbound queue.
type Topics = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Utf8Bytes>>>>>;

/// Frames a connection may have queued before it starts losing messages.
const QUEUE: usize = 4096;

/// Serves until the process is killed; prints `sink listening on ws://ADDR/ws`.
pub async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let listener = TcpListener::bind(listen).await?;
    println!("sink listening on ws://{}/ws", listener.local_addr()?);
    let topics: Topics = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let topics = topics.clone();
        tokio::spawn(async move {
            if let Err(err) = connection(stream, topics).await {
                eprintln!("sink: connection ended: {err}");
            }
        });
    }
}

async fn connection(stream: TcpStream, topics: Topics) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config))
        .await
        .map_err(|e| e.to_string())?;
    let welcome = r#"{"op":"welcome","session":"sink","user":null,"node":"sink"}"#;
    ws.send(Message::text(welcome))
        .await
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(QUEUE);
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return Err(err.to_string()),
                };
                let Ok(op) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let topic = op["topic"].as_str().unwrap_or_default().to_owned();
                match op["op"].as_str() {
                    Some("subscribe") => {
                        topics.lock().map_err(|_| "lock")?.entry(topic).or_default().push(tx.clone());
                        let ack = json!({"op": "ack", "id": op["id"]}).to_string();
                        ws.send(Message::text(ack)).await.map_err(|e| e.to_string())?;
                    }
                    Some("publish") => {
                        let frame: Utf8Bytes =
                            json!({"op": "message", "topic": topic, "data": op["data"]}).to_string().into();
                        let mut topics = topics.lock().map_err(|_| "lock")?;
                        if let Some(subscribers) = topics.get_mut(&topic) {
                            // A closed queue is a gone subscriber: forget it.
                            subscribers.retain(|s| !matches!(
                                s.try_send(frame.clone()),
                                Err(mpsc::error::TrySendError::Closed(_))
                            ));
                        }
                    }
                    _ => {}
                }
            }
            Some(frame) = rx.recv() => {
                // Write what is queued in one flush: one syscall for a burst.
                ws.feed(Message::Text(frame)).await.map_err(|e| e.to_string())?;
                let mut more = 0;
                while more < 64 {
                    match rx.try_recv() {
                        Ok(frame) => ws.feed(Message::Text(frame)).await.map_err(|e| e.to_string())?,
                        Err(_) => break,
                    }
                    more += 1;
                }
                ws.flush().await.map_err(|e| e.to_string())?;
            }
        }
    }
}
