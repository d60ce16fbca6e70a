//! A published message, encoded once per protocol and shared by every
//! subscriber.
//!
//! A message keeps its body as the publisher's bytes and content type. The
//! JSON `message` frame is built when the message enters the node; the
//! protocol-independent part of a STOMP `MESSAGE` is built the first time a
//! STOMP session needs it. Each delivery clones an `Arc`, never re-encodes.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use bytestring::ByteString;
use serde_json::value::RawValue;

use crate::protocol::stomp::push_header;
use crate::topic::Topic;

/// What a body is, as JSON subscribers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// JSON text: JSON clients get the value itself.
    Json,
    /// UTF-8 text that is not JSON: JSON clients get a string.
    Text,
    /// Anything else: JSON clients get base64 with `"encoding":"base64"`.
    Binary,
}

/// A message body: the publisher's bytes, byte-exact, with its content type.
#[derive(Debug, Clone)]
pub struct Body {
    bytes: Bytes,
    content_type: Arc<str>,
    form: Form,
}

pub const JSON_CONTENT_TYPE: &str = "application/json";
const TEXT_CONTENT_TYPE: &str = "text/plain;charset=utf-8";
const BINARY_CONTENT_TYPE: &str = "application/octet-stream";

impl Body {
    /// A JSON value, as JSON clients and the HTTP API publish.
    pub fn json(data: &RawValue) -> Body {
        Body {
            bytes: Bytes::copy_from_slice(data.get().as_bytes()),
            content_type: Arc::from(JSON_CONTENT_TYPE),
            form: Form::Json,
        }
    }

    /// Bytes from a STOMP frame or an AMQP message with the content type
    /// it declared, if any. What JSON clients get is decided by the bytes
    /// alone (JSON, else UTF-8 text, else binary), as it always was for
    /// messages from RabbitMQ, whose publishers label JSON `text/plain` as
    /// often as not; the content type travels on to STOMP subscribers and
    /// backends, and is derived from the form when none was declared.
    pub fn from_wire(bytes: Bytes, content_type: Option<&str>) -> Body {
        let declared = content_type.map(str::trim).filter(|ct| !ct.is_empty());
        let form = if serde_json::from_slice::<&RawValue>(&bytes).is_ok() {
            Form::Json
        } else if std::str::from_utf8(&bytes).is_ok() {
            Form::Text
        } else {
            Form::Binary
        };
        let content_type = declared.unwrap_or(match form {
            Form::Json => JSON_CONTENT_TYPE,
            Form::Text => TEXT_CONTENT_TYPE,
            Form::Binary => BINARY_CONTENT_TYPE,
        });
        Body {
            bytes,
            content_type: Arc::from(content_type),
            form,
        }
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    pub fn form(&self) -> Form {
        self.form
    }

    /// The body as JSON text, the `data` JSON clients receive.
    fn json_value(&self) -> Cow<'_, str> {
        // JSON and text bodies were checked to be UTF-8 when classified.
        let text = || String::from_utf8_lossy(&self.bytes);
        match self.form {
            Form::Json => text(),
            Form::Text => Cow::Owned(quote(&text())),
            Form::Binary => Cow::Owned(quote(
                &base64::engine::general_purpose::STANDARD.encode(&self.bytes),
            )),
        }
    }
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The part of a STOMP `MESSAGE` every subscriber shares: the headers after
/// `destination` and `subscription`, the blank line, the body and the NUL.
#[derive(Debug)]
pub struct StompTail {
    pub bytes: Vec<u8>,
    /// Whether the whole frame is UTF-8, so it can go as a text message.
    pub text: bool,
}

#[derive(Debug)]
pub struct Prepared {
    pub topic: Topic,
    pub mid: Arc<str>,
    pub ts: u64,
    pub body: Body,
    /// The whole JSON `message` frame, as sent to JSON sessions.
    pub json: ByteString,
    /// Where the payload sits inside `json`.
    data: Range<usize>,
    /// Built on first use: header values escaped (STOMP 1.1 and 1.2) and
    /// as they are (1.0).
    stomp: [OnceLock<StompTail>; 2],
    /// A backend-initiated call's result rather than a topic message: JSON
    /// sessions get `json` (the result frame itself), STOMP sessions a
    /// `MESSAGE` whose body is that frame.
    response: bool,
}

impl Prepared {
    pub fn new(topic: Topic, body: Body, mid: Arc<str>, ts: u64) -> Arc<Self> {
        let data = body.json_value();
        // Topics and message ids use only [A-Za-z0-9_:.-], so they need no
        // JSON escaping; the payload is valid JSON text by construction.
        let head = format!(r#"{{"op":"message","topic":"{topic}","data":"#);
        let encoding = if body.form == Form::Binary {
            r#","encoding":"base64""#
        } else {
            ""
        };
        let tail = format!(r#"{encoding},"mid":"{mid}","ts":{ts}}}"#);
        let mut json = String::with_capacity(head.len() + data.len() + tail.len());
        json.push_str(&head);
        json.push_str(&data);
        json.push_str(&tail);
        let data = head.len()..head.len() + data.len();
        Arc::new(Prepared {
            topic,
            mid,
            ts,
            body,
            data,
            json: json.into(),
            stomp: [OnceLock::new(), OnceLock::new()],
            response: false,
        })
    }

    /// A backend-initiated call's result for the sessions of the user whose
    /// private topic `topic` is: `frame` is the whole JSON frame JSON
    /// sessions get, and the body STOMP sessions get. `None` unless `frame`
    /// is a JSON object.
    pub fn response(topic: Topic, frame: Bytes, mid: Arc<str>, ts: u64) -> Option<Arc<Self>> {
        let text = std::str::from_utf8(&frame).ok()?;
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).ok()?;
        let json = ByteString::from(text);
        let data = 0..json.len();
        let body = Body::from_wire(frame, Some(JSON_CONTENT_TYPE));
        Some(Arc::new(Prepared {
            topic,
            mid,
            ts,
            body,
            json,
            data,
            stomp: [OnceLock::new(), OnceLock::new()],
            response: true,
        }))
    }

    /// Whether this is a backend-initiated call's result ([`Self::response`]).
    pub fn is_response(&self) -> bool {
        self.response
    }

    /// The payload as JSON subscribers receive it.
    pub fn data(&self) -> &str {
        &self.json[self.data.clone()]
    }

    /// The shared part of this message's STOMP `MESSAGE` frames, built once
    /// for each way of writing header values.
    pub fn stomp_tail(&self, escape: bool) -> &StompTail {
        self.stomp[usize::from(escape)].get_or_init(|| {
            let body = &self.body.bytes;
            StompTail {
                bytes: self.build_tail(body, escape),
                text: self.body.form != Form::Binary || std::str::from_utf8(body).is_ok(),
            }
        })
    }

    /// The tail with a body that is not UTF-8 made text, each bad byte a
    /// replacement character, and `content-length` to match: what a
    /// transport that carries only strings (SockJS) can deliver. Built per
    /// use, since such bodies over such transports are rare.
    pub fn stomp_tail_as_text(&self, escape: bool) -> Vec<u8> {
        let text = String::from_utf8_lossy(&self.body.bytes);
        self.build_tail(text.as_bytes(), escape)
    }

    fn build_tail(&self, body: &[u8], escape: bool) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(96 + body.len());
        let length = body.len().to_string();
        push_header(&mut bytes, "message-id", &self.mid, escape);
        push_header(&mut bytes, "content-type", &self.body.content_type, escape);
        push_header(&mut bytes, "content-length", &length, escape);
        bytes.push(b'\n');
        bytes.extend_from_slice(body);
        bytes.push(0);
        bytes
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

    fn topic() -> Topic {
        Topic::parse("chat.room1").expect("valid test input")
    }

    fn json_of(prepared: &Prepared) -> serde_json::Value {
        serde_json::from_str(&prepared.json).expect("the frame is JSON")
    }

    #[test]
    fn encodes_the_message_frame_and_keeps_the_payload_addressable() {
        let data =
            RawValue::from_string(r#"{"text":"hi \"there\""}"#.into()).expect("valid test input");
        let prepared = Prepared::new(topic(), Body::json(&data), "n-1:7".into(), 42);
        let parsed = json_of(&prepared);
        assert_eq!(parsed["op"], "message");
        assert_eq!(parsed["topic"], "chat.room1");
        assert_eq!(parsed["data"]["text"], "hi \"there\"");
        assert_eq!(parsed["mid"], "n-1:7");
        assert_eq!(parsed["ts"], 42);
        assert!(parsed.get("encoding").is_none());
        assert_eq!(prepared.data(), data.get());
    }

    #[test]
    fn bodies_without_a_content_type_say_what_they_are() {
        let json = Body::from_wire(Bytes::from_static(br#"{"a":1}"#), None);
        assert_eq!(
            (json.form(), json.content_type()),
            (Form::Json, JSON_CONTENT_TYPE)
        );
        let text = Body::from_wire(Bytes::from_static(b"hello"), None);
        assert_eq!(
            (text.form(), text.content_type()),
            (Form::Text, TEXT_CONTENT_TYPE)
        );
        let binary = Body::from_wire(Bytes::from_static(&[0xff, 0, 1]), None);
        assert_eq!(
            (binary.form(), binary.content_type()),
            (Form::Binary, BINARY_CONTENT_TYPE)
        );
    }

    #[test]
    fn the_bytes_decide_the_form_and_a_declared_content_type_is_kept() {
        let json_as_text = Body::from_wire(Bytes::from_static(b"42"), Some("text/plain"));
        assert_eq!(
            (json_as_text.form(), json_as_text.content_type()),
            (Form::Json, "text/plain")
        );
        let bad_json = Body::from_wire(Bytes::from_static(b"{nope"), Some("application/json"));
        assert_eq!(bad_json.form(), Form::Text);
        let text_as_octets =
            Body::from_wire(Bytes::from_static(b"abc"), Some("application/octet-stream"));
        assert_eq!(text_as_octets.form(), Form::Text);
        assert_eq!(text_as_octets.content_type(), "application/octet-stream");
        let binary = Body::from_wire(Bytes::from_static(&[0xc3, 0x28]), Some("image/png"));
        assert_eq!(
            (binary.form(), binary.content_type()),
            (Form::Binary, "image/png")
        );
    }

    #[test]
    fn json_clients_get_text_as_a_string_and_binary_as_base64() {
        let text = Prepared::new(
            topic(),
            Body::from_wire(Bytes::from_static(b"say \"hi\""), Some("text/plain")),
            "m".into(),
            1,
        );
        assert_eq!(json_of(&text)["data"], "say \"hi\"");
        let binary = Prepared::new(
            topic(),
            Body::from_wire(Bytes::from_static(&[0xff, 0xfe]), None),
            "m".into(),
            1,
        );
        let parsed = json_of(&binary);
        assert_eq!(parsed["data"], "//4=");
        assert_eq!(parsed["encoding"], "base64");
    }

    #[test]
    fn the_stomp_tail_is_built_once_and_carries_the_body_byte_exact() {
        let body = Bytes::from_static(b"a\0b");
        let prepared = Prepared::new(
            topic(),
            Body::from_wire(body, Some("application/x-thing")),
            "n-1:9".into(),
            1,
        );
        let tail = prepared.stomp_tail(true);
        assert_eq!(
            tail.bytes,
            b"message-id:n-1\\c9\ncontent-type:application/x-thing\ncontent-length:3\n\na\0b\0"
                .as_slice()
        );
        assert!(tail.text, "NUL is valid UTF-8");
        assert!(std::ptr::eq(tail, prepared.stomp_tail(true)));
        assert!(prepared
            .stomp_tail(false)
            .bytes
            .starts_with(b"message-id:n-1:9\n"));
    }

    use proptest::prelude::*;

    /// Bodies of every form: JSON-looking text, plain text, any bytes.
    fn wire_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[ {}\\[\\]\",:0-9a-z.eE+-]{0,24}".prop_map(String::into_bytes),
            r#"\{"[a-z]{0,3}":(-?[0-9]{1,3}(\.[0-9])?|"[^"\\]{0,4}"|\[\]|null)\}"#
                .prop_map(String::into_bytes),
            ".{0,24}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..48),
        ]
    }

    proptest! {
        #[test]
        fn any_body_gives_a_valid_json_frame_that_carries_it(
            bytes in wire_body(),
            content_type in prop::option::of(".{0,16}"),
            ts in any::<u64>(),
        ) {
            let body = Body::from_wire(Bytes::from(bytes.clone()), content_type.as_deref());
            let prepared = Prepared::new(topic(), body, "n-1:7".into(), ts);
            // The frame is checked as JSON text first: a number such as
            // `1e400` is valid JSON but beyond what `Value` holds.
            serde_json::from_str::<serde::de::IgnoredAny>(&prepared.json)
                .expect("the frame is JSON");
            let data = prepared.data();
            match prepared.body.form() {
                Form::Json => {
                    prop_assert_eq!(data.as_bytes(), &bytes[..]);
                    if let Ok(expected) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                        prop_assert_eq!(&json_of(&prepared)["data"], &expected);
                    }
                }
                Form::Text => {
                    let parsed = json_of(&prepared);
                    prop_assert_eq!(parsed["data"].as_str().map(str::as_bytes), Some(&bytes[..]));
                    prop_assert!(parsed.get("encoding").is_none());
                }
                Form::Binary => {
                    let parsed = json_of(&prepared);
                    prop_assert_eq!(&parsed["encoding"], "base64");
                    let decoded = parsed["data"]
                        .as_str()
                        .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok());
                    prop_assert_eq!(decoded.as_deref(), Some(&bytes[..]));
                }
            }
            if prepared.body.form() != Form::Json {
                let parsed = json_of(&prepared);
                prop_assert_eq!(&parsed["ts"], ts);
                prop_assert_eq!(&parsed["mid"], "n-1:7");
            }
            let tail = prepared.stomp_tail(true);
            prop_assert_eq!(tail.bytes.last(), Some(&0));
        }
    }
}
