//! A published message, encoded once and shared by every subscriber.
//!
//! The JSON `message` frame is built when the message enters the node; each
//! delivery clones an `Arc`, never the bytes, and never re-serializes.

use std::ops::Range;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytestring::ByteString;
use serde_json::value::RawValue;

use crate::topic::Topic;

#[derive(Debug)]
pub struct Prepared {
    pub topic: Topic,
    pub mid: Arc<str>,
    pub ts: u64,
    /// The whole JSON `message` frame, as sent to JSON sessions.
    pub json: ByteString,
    /// Where the payload sits inside `json`.
    data: Range<usize>,
}

impl Prepared {
    pub fn new(topic: Topic, data: &RawValue, mid: Arc<str>, ts: u64) -> Arc<Self> {
        let data = data.get();
        // Topics and message ids use only [A-Za-z0-9_:.-], so they need no
        // JSON escaping; the payload is already valid JSON text.
        let head = format!(r#"{{"op":"message","topic":"{topic}","data":"#);
        let tail = format!(r#","mid":"{mid}","ts":{ts}}}"#);
        let mut json = String::with_capacity(head.len() + data.len() + tail.len());
        json.push_str(&head);
        json.push_str(data);
        json.push_str(&tail);
        Arc::new(Prepared {
            topic,
            mid,
            ts,
            data: head.len()..head.len() + data.len(),
            json: json.into(),
        })
    }

    /// The payload as JSON text.
    pub fn data(&self) -> &str {
        &self.json[self.data.clone()]
    }

    /// Bytes this message costs in a session's outbound queue.
    pub fn cost(&self) -> usize {
        self.json.len()
    }
}

/// Milliseconds since the Unix epoch, the `ts` of every message.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_message_frame_and_keeps_the_payload_addressable() {
        let data =
            RawValue::from_string(r#"{"text":"hi \"there\""}"#.into()).expect("valid test input");
        let prepared = Prepared::new(
            Topic::parse("chat.room1").expect("valid test input"),
            &data,
            "n-1:7".into(),
            42,
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&prepared.json).expect("valid test input");
        assert_eq!(parsed["op"], "message");
        assert_eq!(parsed["topic"], "chat.room1");
        assert_eq!(parsed["data"]["text"], "hi \"there\"");
        assert_eq!(parsed["mid"], "n-1:7");
        assert_eq!(parsed["ts"], 42);
        assert_eq!(prepared.data(), data.get());
    }
}
