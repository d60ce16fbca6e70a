//! The JSON frames a call's outcome becomes: `response` for the asking
//! session, and for backend-initiated calls the same with `origin`,
//! `service`, `method` and `path`, or an `error` with `origin` when the call
//! failed.

use bytes::Bytes;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;

use super::body::to_json;
use super::{Answer, CallError, Encoded};

/// Response headers as a JSON object, in the order they came.
struct Headers<'a>(&'a [(String, String)]);

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Where a backend-initiated call went, echoed in its result.
#[derive(Debug, Clone, Serialize)]
pub struct Origin<'a> {
    pub service: &'a str,
    pub method: &'a str,
    pub path: &'a str,
}

#[derive(Serialize)]
struct Response<'a> {
    op: &'static str,
    id: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'static str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    target: Option<&'a Origin<'a>>,
    status: u16,
    headers: Headers<'a>,
    body: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_encoding: Option<&'static str>,
}

#[derive(Serialize)]
struct Failure<'a> {
    op: &'static str,
    id: &'a RawValue,
    origin: &'static str,
    #[serde(flatten)]
    target: &'a Origin<'a>,
    code: crate::protocol::ErrorCode,
    message: &'a str,
}

fn text(bytes: Vec<u8>) -> Encoded {
    Encoded {
        bytes: Bytes::from(bytes),
        text: true,
    }
}

fn encode_response(id: &RawValue, target: Option<&Origin<'_>>, answer: &Answer) -> Encoded {
    let (body, base64) = to_json(&answer.body, answer.content_type.as_deref());
    // `to_json` makes JSON text only.
    let body = RawValue::from_string(body).unwrap_or_else(|_| RawValue::NULL.to_owned());
    let frame = Response {
        op: "response",
        id,
        origin: target.map(|_| "backend"),
        target,
        status: answer.status,
        headers: Headers(&answer.headers),
        body: &body,
        body_encoding: base64.then_some("base64"),
    };
    // Serializing strings and raw JSON cannot fail.
    text(serde_json::to_vec(&frame).unwrap_or_default())
}

/// `{"op":"response","id","status","headers","body"}` for the session that
/// asked (`id` is `null` when it gave none).
pub fn response(id: &RawValue, answer: &Answer) -> Encoded {
    encode_response(id, None, answer)
}

/// A backend-initiated call's result, as every session of its user gets it.
pub fn backend_response(id: &RawValue, target: &Origin<'_>, answer: &Answer) -> Encoded {
    encode_response(id, Some(target), answer)
}

/// A backend-initiated call that failed: `{"op":"error","origin":"backend",
/// "id","service","method","path","code","message"}`.
pub fn backend_failure(id: &RawValue, target: &Origin<'_>, error: &CallError) -> Encoded {
    let message = error.to_string();
    let frame = Failure {
        op: "error",
        id,
        origin: "backend",
        target,
        code: error.code(),
        message: &message,
    };
    text(serde_json::to_vec(&frame).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &[u8], content_type: &str) -> Answer {
        Answer {
            status: 201,
            headers: vec![
                ("content-type".into(), content_type.into()),
                ("x-a".into(), "1, 2".into()),
            ],
            body: Bytes::copy_from_slice(body),
            content_type: Some(content_type.into()),
        }
    }

    fn json(encoded: &Encoded) -> serde_json::Value {
        serde_json::from_slice(&encoded.bytes).expect("a frame is JSON")
    }

    #[test]
    fn a_response_carries_id_status_headers_and_body() {
        let id = RawValue::from_string("\"5\"".into()).expect("valid");
        let frame = json(&response(
            &id,
            &answer(br#"{"ok":true}"#, "application/json"),
        ));
        assert_eq!(
            frame,
            serde_json::json!({"op":"response","id":"5","status":201,
                "headers":{"content-type":"application/json","x-a":"1, 2"},"body":{"ok":true}})
        );
        let frame = json(&response(RawValue::NULL, &answer(&[0xff], "image/png")));
        assert_eq!(frame["id"], serde_json::Value::Null);
        assert_eq!(frame["body_encoding"], "base64");
    }

    #[test]
    fn backend_results_name_their_origin_and_target() {
        let target = Origin {
            service: "account",
            method: "POST",
            path: "/cash-out",
        };
        let frame = json(&backend_response(
            RawValue::NULL,
            &target,
            &answer(b"done", "text/plain"),
        ));
        assert_eq!(frame["origin"], "backend");
        assert_eq!(frame["service"], "account");
        assert_eq!(frame["path"], "/cash-out");
        assert_eq!(frame["body"], "done");
        let frame = json(&backend_failure(
            RawValue::NULL,
            &target,
            &CallError::Timeout(100),
        ));
        assert_eq!(frame["op"], "error");
        assert_eq!(frame["code"], "timeout");
        assert_eq!(frame["method"], "POST");
    }
}
