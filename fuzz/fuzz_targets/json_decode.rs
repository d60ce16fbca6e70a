//! The JSON protocol's decoder on any text frame a client can send.
//!
//! Properties: `decode` and `peek_id` never panic; any id either returns,
//! on success or with an error, is a JSON string or number (the contract's
//! rule), and can be echoed back in an `error` frame that is itself JSON.
#![no_main]

use herald_actors::protocol::json::{self, ServerOp};
use herald_actors::protocol::ErrorCode;
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

fn assert_valid_id(id: &RawValue) {
    // A number may be beyond what `Value` holds (`1e400`), so the check is
    // on the grammar: a string starts with a quote, a number with a sign or
    // a digit, and the whole is one JSON value.
    let text = id.get();
    assert!(
        matches!(text.as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9')),
        "id `{text}` is neither a string nor a number"
    );
    // IgnoredAny, not String: JSON allows a lone surrogate escape such as
    // `"\ud800"`, which browsers read and a Rust String cannot hold.
    serde_json::from_str::<IgnoredAny>(text).expect("an id is one JSON value");
    // The id travels back verbatim inside the answer, which must stay JSON.
    let echoed = ServerOp::Error {
        id: Some(id),
        code: ErrorCode::BadRequest,
        message: "x",
    }
    .encode();
    serde_json::from_str::<IgnoredAny>(&echoed).expect("the answer is JSON");
}

fuzz_target!(|data: &[u8]| {
    // Text frames reach the decoder as UTF-8 (the session checks that
    // first); bytes that are not are made so rather than wasted.
    let text = String::from_utf8_lossy(data);
    let peeked = json::peek_id(&text);
    if let Some(id) = peeked {
        assert_valid_id(id);
    }
    match json::decode(&text) {
        Ok(frame) => {
            if let Some(id) = frame.id {
                assert_valid_id(id);
            }
            // For an object, answering a frame that failed and one that
            // decoded must name the same id.
            if text.trim_start().starts_with('{') {
                assert_eq!(frame.id.map(RawValue::get), peeked.map(RawValue::get));
            }
        }
        Err(err) => {
            if let Some(id) = err.id {
                assert_valid_id(id);
            }
            assert!(!err.message.is_empty());
        }
    }
});
