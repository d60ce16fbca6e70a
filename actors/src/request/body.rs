//! Bodies, queries and headers between the JSON protocol and HTTP, by the
//! contract's one rule for both directions: a JSON value when the content
//! type is JSON, a string when it is text, otherwise base64 with
//! `"body_encoding":"base64"` beside it.

use base64::Engine;
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{Query, RequestBody};

pub const JSON: &str = "application/json";
pub const TEXT: &str = "text/plain;charset=utf-8";
pub const BINARY: &str = "application/octet-stream";

/// How a body's content type says to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Text,
    Binary,
}

/// What a content type makes of a body: JSON for `application/json` and
/// `*/*+json`, text for `text/*`, XML, JavaScript and form data, binary for
/// the rest (and for none).
pub fn kind_of(content_type: Option<&str>) -> Kind {
    let Some(content_type) = content_type else {
        return Kind::Binary;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == JSON || essence.ends_with("+json") {
        Kind::Json
    } else if essence.starts_with("text/")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/xml" | "application/javascript" | "application/x-www-form-urlencoded"
        )
    {
        Kind::Text
    } else {
        Kind::Binary
    }
}

/// A response body as the JSON protocol carries it: the JSON text of the
/// `body` field, and whether it is base64. An empty body is `null`; a body
/// that its content type calls JSON but is not, is read as text or binary.
pub fn to_json(body: &[u8], content_type: Option<&str>) -> (String, bool) {
    if body.is_empty() {
        return ("null".to_owned(), false);
    }
    let kind = kind_of(content_type);
    if kind == Kind::Json && serde_json::from_slice::<&RawValue>(body).is_ok() {
        // Valid JSON is valid UTF-8.
        return (String::from_utf8_lossy(body).into_owned(), false);
    }
    if kind != Kind::Binary {
        if let Ok(text) = std::str::from_utf8(body) {
            return (quote(text), false);
        }
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(body);
    (quote(&encoded), true)
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The request body a client's `body` (and `body_encoding`) describe, with
/// the content type the client's headers name, if any. `null` is no body.
pub fn from_json(
    body: &RawValue,
    encoding: Option<&str>,
    content_type: Option<&str>,
) -> Result<Option<RequestBody>, String> {
    let text = body.get();
    if text == "null" {
        return Ok(None);
    }
    match encoding {
        None => {}
        Some("base64") => {
            let Ok(Value::String(encoded)) = serde_json::from_str::<Value>(text) else {
                return Err(
                    "a body with `\"body_encoding\":\"base64\"` must be a string".to_owned(),
                );
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|err| format!("the body is not base64: {err}"))?;
            return Ok(Some(RequestBody {
                bytes: Bytes::from(bytes),
                content_type: content_type.unwrap_or(BINARY).to_owned(),
            }));
        }
        Some(other) => {
            return Err(format!(
                "body_encoding `{other}` is not known; the only one is `base64`"
            ))
        }
    }
    // A string goes as text unless the client says it is JSON; any other
    // value goes as the JSON text it is.
    let declared = content_type.map(|declared| kind_of(Some(declared)));
    if text.starts_with('"') && declared != Some(Kind::Json) {
        let string: String =
            serde_json::from_str(text).map_err(|err| format!("the body is not a string: {err}"))?;
        return Ok(Some(RequestBody {
            bytes: Bytes::from(string),
            content_type: content_type.unwrap_or(TEXT).to_owned(),
        }));
    }
    Ok(Some(RequestBody {
        bytes: Bytes::copy_from_slice(text.as_bytes()),
        content_type: content_type.unwrap_or(JSON).to_owned(),
    }))
}

/// `query` as the contract allows it: an object whose values are strings
/// or arrays of strings, or a query string.
pub fn query(raw: Option<&RawValue>) -> Result<Query, String> {
    let Some(raw) = raw else {
        return Ok(Query::None);
    };
    let bad =
        || "query must be an object of strings (or arrays of strings) or a query string".to_owned();
    match serde_json::from_str::<Value>(raw.get()).map_err(|_| bad())? {
        Value::Null => Ok(Query::None),
        Value::String(text) => {
            let text = text.strip_prefix('?').unwrap_or(&text);
            Ok(if text.is_empty() {
                Query::None
            } else {
                Query::Raw(text.to_owned())
            })
        }
        Value::Object(map) => {
            let mut pairs = Vec::new();
            for (name, value) in map {
                match value {
                    Value::String(value) => pairs.push((name, value)),
                    Value::Array(values) => {
                        for value in values {
                            let Value::String(value) = value else {
                                return Err(bad());
                            };
                            pairs.push((name.clone(), value));
                        }
                    }
                    _ => return Err(bad()),
                }
            }
            Ok(Query::Pairs(pairs))
        }
        _ => Err(bad()),
    }
}

/// `headers` as an object of strings (or arrays of strings, sent as
/// repeated headers); names lower case.
pub fn headers(raw: Option<&RawValue>) -> Result<Vec<(String, String)>, String> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let bad = || "headers must be an object of strings (or arrays of strings)".to_owned();
    match serde_json::from_str::<Value>(raw.get()).map_err(|_| bad())? {
        Value::Null => Ok(Vec::new()),
        Value::Object(map) => {
            let mut headers = Vec::new();
            for (name, value) in map {
                let name = name.to_ascii_lowercase();
                match value {
                    Value::String(value) => headers.push((name, value)),
                    Value::Array(values) => {
                        for value in values {
                            let Value::String(value) = value else {
                                return Err(bad());
                            };
                            headers.push((name.clone(), value));
                        }
                    }
                    _ => return Err(bad()),
                }
            }
            Ok(headers)
        }
        _ => Err(bad()),
    }
}

/// The content type among `headers`, if the client gave one.
pub fn content_type(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(name, _)| name == "content-type")
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).expect("valid test JSON")
    }

    #[test]
    fn response_bodies_follow_their_content_type() {
        assert_eq!(
            to_json(br#"{"a":1}"#, Some("application/json")),
            (r#"{"a":1}"#.to_owned(), false)
        );
        assert_eq!(
            to_json(b"[1]", Some("application/problem+json; charset=utf-8")).0,
            "[1]"
        );
        assert_eq!(
            to_json(b"hi", Some("text/plain")),
            ("\"hi\"".to_owned(), false)
        );
        assert_eq!(
            to_json(b"not json", Some("application/json")),
            ("\"not json\"".to_owned(), false)
        );
        assert_eq!(
            to_json(&[0xff, 0], Some("image/png")),
            ("\"/wA=\"".to_owned(), true)
        );
        assert_eq!(to_json(b"plain", None), ("\"cGxhaW4=\"".to_owned(), true));
        assert_eq!(
            to_json(b"", Some("application/json")),
            ("null".to_owned(), false)
        );
    }

    #[test]
    fn request_bodies_follow_the_same_rule() {
        let body = from_json(&raw(r#"{"x":1}"#), None, None)
            .expect("valid")
            .expect("some");
        assert_eq!(
            (&body.bytes[..], body.content_type.as_str()),
            (&br#"{"x":1}"#[..], JSON)
        );
        let body = from_json(&raw(r#""hello""#), None, None)
            .expect("valid")
            .expect("some");
        assert_eq!(
            (&body.bytes[..], body.content_type.as_str()),
            (&b"hello"[..], TEXT)
        );
        let body = from_json(&raw(r#""hello""#), None, Some("application/json"))
            .expect("valid")
            .expect("some");
        assert_eq!(&body.bytes[..], br#""hello""#);
        let body = from_json(&raw(r#""/wA=""#), Some("base64"), None)
            .expect("valid")
            .expect("some");
        assert_eq!(
            (&body.bytes[..], body.content_type.as_str()),
            (&[0xff, 0][..], BINARY)
        );
        assert!(from_json(&raw("null"), None, None)
            .expect("valid")
            .is_none());
        assert!(from_json(&raw("1"), Some("base64"), None).is_err());
        assert!(from_json(&raw(r#""x""#), Some("hex"), None).is_err());
    }

    #[test]
    fn queries_are_objects_of_strings_or_query_strings() {
        assert_eq!(
            query(Some(&raw(r#"{"a":"1","b":["2","3"]}"#))).expect("valid"),
            Query::Pairs(vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("b".into(), "3".into())
            ])
        );
        assert_eq!(
            query(Some(&raw(r#""?x=1""#))).expect("valid"),
            Query::Raw("x=1".into())
        );
        assert!(query(Some(&raw(r#"{"a":1}"#))).is_err());
        assert!(query(Some(&raw("[1]"))).is_err());
    }

    #[test]
    fn header_names_are_lower_cased_and_values_must_be_strings() {
        let got = headers(Some(&raw(r#"{"Accept":"text/plain","X-A":["1","2"]}"#))).expect("valid");
        assert_eq!(
            got,
            vec![
                ("accept".into(), "text/plain".into()),
                ("x-a".into(), "1".into()),
                ("x-a".into(), "2".into())
            ]
        );
        assert!(headers(Some(&raw(r#"{"a":true}"#))).is_err());
    }
}
