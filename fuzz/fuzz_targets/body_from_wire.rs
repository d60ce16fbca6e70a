//! A message body from a STOMP SEND or an AMQP delivery, with whatever
//! content type its sender declared, encoded for every subscriber.
//!
//! Properties: nothing panics; the JSON `message` frame is always one JSON
//! value whose `data` gives the body back (the value itself, the text, or
//! base64 of the bytes); the STOMP tail decodes as a frame carrying the
//! body byte-exact and its length.
#![no_main]

use base64::Engine;
use bytes::Bytes;
use herald_actors::frame::{Body, Form, Prepared};
use herald_actors::protocol::stomp::{Decoder, Limits};
use herald_actors::topic::Topic;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The frame as a JSON client reads it; `data` stays raw, since a number
/// such as `1e400` is valid JSON that `Value` cannot hold.
#[derive(Deserialize)]
struct MessageFrame<'a> {
    op: &'a str,
    topic: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
    encoding: Option<&'a str>,
    mid: &'a str,
    ts: u64,
}

fn check_json(prepared: &Prepared, bytes: &[u8]) {
    let frame: MessageFrame<'_> =
        serde_json::from_str(&prepared.json).expect("the message frame is JSON");
    assert_eq!(frame.op, "message");
    assert_eq!(frame.topic, prepared.topic.as_str());
    assert_eq!(frame.mid, &*prepared.mid);
    assert_eq!(frame.ts, prepared.ts);
    // The raw value leaves out the JSON whitespace around the payload.
    assert_eq!(
        frame.data.get(),
        prepared.data().trim_matches([' ', '\t', '\n', '\r'])
    );
    match prepared.body.form() {
        Form::Json => {
            assert_eq!(frame.encoding, None);
            // Where `Value` can hold the body, the client reads the same.
            if let Ok(expected) = serde_json::from_slice::<Value>(bytes) {
                let got: Value = serde_json::from_str(frame.data.get()).expect("same value");
                assert_eq!(got, expected);
            }
        }
        Form::Text => {
            assert_eq!(frame.encoding, None);
            let text: String = serde_json::from_str(frame.data.get()).expect("a JSON string");
            assert_eq!(text.as_bytes(), bytes);
        }
        Form::Binary => {
            assert_eq!(frame.encoding, Some("base64"));
            let encoded: &str = serde_json::from_str(frame.data.get()).expect("a JSON string");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("base64");
            assert_eq!(decoded, bytes);
        }
    }
}

fn check_stomp(prepared: &Prepared, bytes: &[u8], escape: bool) {
    let tail = prepared.stomp_tail(escape);
    assert_eq!(tail.bytes.last(), Some(&0));
    assert_eq!(tail.text, std::str::from_utf8(&tail.bytes).is_ok());
    let mut wire = b"MESSAGE\ndestination:/topic/t\nsubscription:0\n".to_vec();
    wire.extend_from_slice(&tail.bytes);
    let mut decoder = Decoder::new(Limits {
        max_frame: wire.len() + 1,
        max_headers: 8,
        max_header_line: wire.len(),
    });
    decoder.set_escaping(escape);
    decoder.push(&wire).expect("within the limits");
    let frame = decoder
        .next_frame()
        .expect("the tail is valid STOMP")
        .expect("one whole frame");
    assert_eq!(&frame.body[..], bytes);
    assert_eq!(frame.header("message-id"), Some(&*prepared.mid));
    let length = bytes.len().to_string();
    assert_eq!(frame.header("content-length"), Some(length.as_str()));
    let content_type = frame.header("content-type").expect("a content type");
    if escape {
        // Only NUL cannot be carried, escaped or not.
        assert_eq!(
            content_type,
            prepared.body.content_type().replace('\0', " ")
        );
    }
    assert_eq!(decoder.buffered(), 0);

    let as_text = prepared.stomp_tail_as_text(escape);
    assert!(std::str::from_utf8(&as_text).is_ok());
}

fuzz_target!(|data: &[u8]| {
    // The first byte says how long the declared content type is (0: none
    // declared); the rest is the body.
    let Some((&declared, rest)) = data.split_first() else {
        return;
    };
    let (content_type, body) = match usize::from(declared) {
        0 => (None, rest),
        len => {
            let (ct, body) = rest.split_at((len - 1).min(rest.len()));
            (Some(String::from_utf8_lossy(ct).into_owned()), body)
        }
    };
    let bytes = Bytes::copy_from_slice(body);
    let wire = Body::from_wire(bytes, content_type.as_deref());
    let topic = Topic::parse("chat.room1").expect("a valid topic");
    let prepared = Prepared::new(topic, wire, "n-1:7".into(), u64::from(declared) << 40);
    check_json(&prepared, body);
    check_stomp(&prepared, body, true);
    check_stomp(&prepared, body, false);
    assert!(prepared.cost() >= body.len());
});
