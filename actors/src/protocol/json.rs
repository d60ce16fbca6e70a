//! The JSON protocol: one object per text frame, `op` naming the operation.
//!
//! Decoding is two-step: a flat, borrowing [`WireOp`] that accepts any field
//! set, then a typed [`ClientOp`] with the fields each op needs. Payloads
//! (`data`, `body`) stay as raw JSON text end to end, so Herald never parses
//! or re-serializes what clients and backends exchange.

use std::borrow::Cow;

use bytestring::ByteString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::ErrorCode;

/// One operation sent by a client, with the `id` it wants echoed.
#[derive(Debug)]
pub struct ClientFrame<'a> {
    pub id: Option<&'a RawValue>,
    pub op: ClientOp<'a>,
}

#[derive(Debug)]
pub enum ClientOp<'a> {
    Subscribe {
        topic: Cow<'a, str>,
    },
    Unsubscribe {
        topic: Cow<'a, str>,
    },
    Publish {
        topic: Cow<'a, str>,
        data: &'a RawValue,
    },
    Send {
        destination: Cow<'a, str>,
        data: &'a RawValue,
    },
    Request {
        service: Cow<'a, str>,
        method: Cow<'a, str>,
        path: Cow<'a, str>,
        /// An object of strings (or arrays of them), or a query string.
        query: Option<&'a RawValue>,
        /// An object of strings (or arrays of them).
        headers: Option<&'a RawValue>,
        body: &'a RawValue,
        /// `base64` when `body` is a base64 string of bytes.
        body_encoding: Option<Cow<'a, str>>,
    },
    Ping,
    /// A fresh token for the session's user, before the current one expires.
    Refresh {
        token: Cow<'a, str>,
    },
}

/// A frame that could not be turned into an operation. Carries the `id` when
/// one could still be read, so the client can match the error to its request.
#[derive(Debug)]
pub struct DecodeError<'a> {
    pub id: Option<&'a RawValue>,
    pub message: Cow<'static, str>,
}

#[derive(Deserialize)]
struct WireOp<'a> {
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow)]
    destination: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    path: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    body: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    query: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    headers: Option<&'a RawValue>,
    #[serde(borrow)]
    body_encoding: Option<Cow<'a, str>>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
}

/// Only the id, for answering a frame that failed to decode as a whole.
#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

/// Keeps an explicit `null` as a value: `Option<&RawValue>` alone would read
/// `"data": null` as a missing field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

pub fn decode(text: &str) -> Result<ClientFrame<'_>, DecodeError<'_>> {
    decode_wire(text)
}

fn decode_wire<'a>(text: &'a str) -> Result<ClientFrame<'a>, DecodeError<'a>> {
    let wire: WireOp<'_> = match serde_json::from_str(text) {
        Ok(wire) => wire,
        Err(err) => {
            let id = peek_id(text);
            let message = if err.is_syntax() || err.is_eof() {
                "frame is not valid JSON".into()
            } else {
                format!("malformed frame: {err}").into()
            };
            return Err(DecodeError { id, message });
        }
    };
    let id = match wire.id {
        Some(id) if !is_valid_id(id) => {
            return Err(DecodeError {
                id: None,
                message: "id must be a string or a number".into(),
            })
        }
        id => id,
    };
    let fail = |message: Cow<'static, str>| DecodeError { id, message };
    let need = |value: Option<Cow<'a, str>>, field: &'static str| {
        value.ok_or_else(|| fail(format!("missing field `{field}`").into()))
    };
    let op = match wire.op.as_deref() {
        None => return Err(fail("missing field `op`".into())),
        Some("subscribe") => ClientOp::Subscribe {
            topic: need(wire.topic, "topic")?,
        },
        Some("unsubscribe") => ClientOp::Unsubscribe {
            topic: need(wire.topic, "topic")?,
        },
        Some("publish") => ClientOp::Publish {
            topic: need(wire.topic, "topic")?,
            data: wire.data.unwrap_or(RawValue::NULL),
        },
        Some("send") => ClientOp::Send {
            destination: need(wire.destination, "destination")?,
            data: wire.data.unwrap_or(RawValue::NULL),
        },
        Some("request") => ClientOp::Request {
            service: need(wire.service, "service")?,
            method: wire.method.unwrap_or(Cow::Borrowed("GET")),
            path: need(wire.path, "path")?,
            query: wire.query,
            headers: wire.headers,
            body: wire.body.unwrap_or(RawValue::NULL),
            body_encoding: wire.body_encoding,
        },
        Some("ping") => ClientOp::Ping,
        Some("refresh") => ClientOp::Refresh {
            token: need(wire.token, "token")?,
        },
        Some(other) => return Err(fail(format!("unknown op `{other}`").into())),
    };
    Ok(ClientFrame { id, op })
}

/// The frame's `id`, if it is readable and valid, whatever else is wrong.
pub fn peek_id(text: &str) -> Option<&RawValue> {
    serde_json::from_str::<IdOnly<'_>>(text)
        .ok()
        .and_then(|only| only.id)
        .filter(|id| is_valid_id(id))
}

fn is_valid_id(id: &RawValue) -> bool {
    matches!(id.get().as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9'))
}

/// Everything Herald sends on a JSON session.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerOp<'a> {
    Welcome {
        session: &'a str,
        user: Option<&'a str>,
        node: &'a str,
    },
    Ack {
        id: &'a RawValue,
        /// Only a publish that reached this node alone says so.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        local_only: bool,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        code: ErrorCode,
        message: &'a str,
    },
    Message {
        topic: &'a str,
        data: &'a RawValue,
        mid: &'a str,
        ts: u64,
    },
    Response {
        id: &'a RawValue,
        status: u16,
        body: &'a RawValue,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    /// The session's token expires in `in_ms`: the client should refresh.
    Expiring { in_ms: u64 },
    /// The node is draining: the close follows; come back (to any node)
    /// `after_ms` after it, so that clients closed together do not return
    /// together.
    Reconnect { after_ms: u64 },
    /// The server ended a subscription (after a refresh with fewer rights).
    Unsubscribed { topic: &'a str, reason: &'a str },
}

impl ServerOp<'_> {
    pub fn encode(&self) -> ByteString {
        // Serializing borrowed strings and raw JSON into a Vec cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        // serde_json writes UTF-8 only.
        ByteString::try_from(bytes).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(text: &str) -> ClientOp<'_> {
        decode(text).expect("decodes").op
    }

    #[test]
    fn decodes_every_op() {
        assert!(
            matches!(op(r#"{"op":"subscribe","topic":"a.b"}"#), ClientOp::Subscribe { topic } if topic == "a.b")
        );
        assert!(matches!(
            op(r#"{"op":"unsubscribe","topic":"a"}"#),
            ClientOp::Unsubscribe { .. }
        ));
        match op(r#"{"op":"publish","topic":"t","data":{"x":[1,2]}}"#) {
            ClientOp::Publish { data, .. } => assert_eq!(data.get(), r#"{"x":[1,2]}"#),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            op(r#"{"op":"send","destination":"orders.create","data":1}"#),
            ClientOp::Send { .. }
        ));
        assert!(
            matches!(op(r#"{"op":"request","service":"a","path":"/x"}"#), ClientOp::Request { method, .. } if method == "GET")
        );
        assert!(matches!(op(r#"{"op":"ping"}"#), ClientOp::Ping));
    }

    #[test]
    fn keeps_an_explicit_null_and_defaults_missing_data_to_null() {
        match op(r#"{"op":"publish","topic":"t","data":null}"#) {
            ClientOp::Publish { data, .. } => assert_eq!(data.get(), "null"),
            other => panic!("{other:?}"),
        }
        match op(r#"{"op":"publish","topic":"t"}"#) {
            ClientOp::Publish { data, .. } => assert_eq!(data.get(), "null"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escaped_strings_decode() {
        assert!(
            matches!(op(r#"{"op":"subscribe","topic":"a\u002eb"}"#), ClientOp::Subscribe { topic } if topic == "a.b")
        );
    }

    #[test]
    fn errors_keep_the_id_when_it_can_be_read() {
        let err = decode(r#"{"op":"nope","id":"7"}"#).expect_err("invalid test input");
        assert_eq!(err.id.map(RawValue::get), Some(r#""7""#));
        assert!(err.message.contains("unknown op"));
        let err = decode(r#"{"op":"subscribe","id":8}"#).expect_err("invalid test input");
        assert_eq!(err.id.map(RawValue::get), Some("8"));
        assert!(err.message.contains("topic"));
        let err =
            decode(r#"{"op":"subscribe","topic":5,"id":"9"}"#).expect_err("invalid test input");
        assert_eq!(err.id.map(RawValue::get), Some(r#""9""#));
        let err = decode("not json").expect_err("invalid test input");
        assert!(err.id.is_none());
        let err = decode(r#"{"op":"ping","id":{"x":1}}"#).expect_err("invalid test input");
        assert!(err.id.is_none());
    }

    #[test]
    fn server_ops_encode_as_the_contract_shows() {
        let id = RawValue::from_string(r#""1""#.into()).expect("valid test input");
        assert_eq!(
            &*ServerOp::Ack {
                id: &id,
                local_only: false
            }
            .encode(),
            r#"{"op":"ack","id":"1"}"#
        );
        assert_eq!(
            &*ServerOp::Ack {
                id: &id,
                local_only: true
            }
            .encode(),
            r#"{"op":"ack","id":"1","local_only":true}"#
        );
        let data = RawValue::from_string(r#"{"a":1}"#.into()).expect("valid test input");
        let msg = ServerOp::Message {
            topic: "t",
            data: &data,
            mid: "m1",
            ts: 5,
        }
        .encode();
        assert_eq!(
            &*msg,
            r#"{"op":"message","topic":"t","data":{"a":1},"mid":"m1","ts":5}"#
        );
        let err = ServerOp::Error {
            id: None,
            code: ErrorCode::RateLimited,
            message: "slow down",
        }
        .encode();
        assert_eq!(
            &*err,
            r#"{"op":"error","code":"rate_limited","message":"slow down"}"#
        );
    }

    use proptest::prelude::*;

    /// Pieces of JSON frames, so random input reaches the id paths rather
    /// than failing at the first byte.
    fn frame_piece() -> impl Strategy<Value = String> {
        let words = [
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            r#""op""#,
            r#""id""#,
            r#""topic""#,
            r#""data""#,
            r#""ping""#,
            r#""subscribe""#,
            r#""a.b""#,
            "null",
            "true",
            "1",
            "-2.5e3",
            "1e400",
            r#""x""#,
            r#""\u0041""#,
            r#""\ud800""#,
            r#"{"op":"ping","id":"#,
        ];
        prop_oneof![
            prop::sample::select(words.to_vec()).prop_map(str::to_owned),
            ".{0,4}",
        ]
    }

    /// Any JSON value an id field may hold.
    fn id_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| f.to_string()),
            ".{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
            prop::sample::select(vec![
                "null",
                "true",
                "false",
                "[]",
                "{}",
                "[1]",
                r#"{"a":1}"#
            ])
            .prop_map(str::to_owned),
        ]
    }

    fn assert_string_or_number(id: &RawValue) {
        let value: serde_json::Value = serde_json::from_str(id.get()).expect("an id is JSON");
        assert!(value.is_string() || value.is_number(), "{}", id.get());
    }

    proptest! {
        #[test]
        fn never_panics_on_any_input(text in ".{0,200}") {
            let _ = decode(&text);
            let _ = peek_id(&text);
        }

        #[test]
        fn every_id_it_returns_is_a_string_or_a_number(
            pieces in prop::collection::vec(frame_piece(), 0..24),
        ) {
            let text = pieces.concat();
            let decoded = match decode(&text) {
                Ok(frame) => frame.id,
                Err(err) => err.id,
            };
            // `1e400` is a JSON number `Value` cannot hold; the rule is on
            // the grammar, which RawValue has already checked.
            for id in decoded.into_iter().chain(peek_id(&text)) {
                prop_assert!(matches!(id.get().as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9')));
            }
        }

        #[test]
        fn an_id_is_kept_exactly_when_it_is_a_string_or_a_number(id in id_value()) {
            let text = format!(r#"{{"op":"ping","id":{id}}}"#);
            let valid = matches!(id.as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9'));
            match decode(&text) {
                Ok(frame) => {
                    prop_assert!(valid);
                    let kept = frame.id.expect("a valid id is kept");
                    assert_string_or_number(kept);
                    prop_assert_eq!(kept.get(), id.as_str());
                }
                Err(err) => {
                    prop_assert!(!valid, "{}: {}", text, err.message);
                    prop_assert!(err.id.is_none());
                }
            }
            prop_assert_eq!(peek_id(&text).map(RawValue::get), valid.then_some(id.as_str()));
        }
    }
}
