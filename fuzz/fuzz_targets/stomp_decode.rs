//! The STOMP decoder on any byte stream in any chunking, with limits small
//! enough that the fuzzer reaches every one of them.
//!
//! Properties: nothing panics; the decoder never holds more than one frame
//! limit of bytes once its frames are taken (plus the chunk just pushed,
//! before that); a refused stream stays refused.
#![no_main]

use herald_actors::protocol::stomp::{Command, Decoder, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the limits and the chunking, the rest is the
    // stream, so the fuzzer varies both together.
    let [a, b, c, d, e, f, stream @ ..] = data else {
        return;
    };
    let limits = Limits {
        max_frame: 16 + usize::from(*a) * 4,
        max_headers: 1 + usize::from(*b % 8),
        max_header_line: 4 + usize::from(*c % 64),
    };
    let chunk_sizes = [*d, *e, *f].map(|size| 1 + usize::from(size % 64));
    let mut decoder = Decoder::new(limits);
    let mut refused = false;
    let mut too_large = false;
    let mut rest = stream;
    let mut sizes = chunk_sizes.iter().cycle();
    while !rest.is_empty() {
        let size = sizes.next().copied().unwrap_or(1).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        match decoder.push(chunk) {
            Ok(()) => assert!(!too_large, "a stream refused as too large took bytes again"),
            // Frames completed before the oversized one still come out of
            // `next_frame`, so only a refusal from there ends the stream.
            Err(err) => {
                assert!(err.is_too_large(), "push fails only for size: {err}");
                too_large = true;
            }
        }
        assert!(decoder.buffered() <= limits.max_frame + chunk.len());
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(!refused, "a frame came after the stream was refused");
                    // As the session does: escaping starts once CONNECT is
                    // answered, for frames already pipelined behind it too.
                    if matches!(frame.command, Command::Connect | Command::Stomp) {
                        decoder.set_escaping(frame.header("accept-version") != Some("1.0"));
                    }
                }
                Ok(None) => {
                    assert!(!refused, "a refused stream went quiet");
                    break;
                }
                Err(_) => {
                    refused = true;
                    break;
                }
            }
        }
        assert!(decoder.buffered() <= limits.max_frame);
    }
});
