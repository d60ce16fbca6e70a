//! The STOMP 1.2 frame codec (1.0 and 1.1 too): bounded decoding of a byte
//! stream into frames, and encoding of the frames Herald sends.
//!
//! The [`Decoder`] owns one connection's inbound bytes. It finds frame
//! boundaries as bytes arrive, remembering how far it has scanned, and
//! refuses a stream as soon as a frame breaks a [`Limits`] bound, so a
//! hostile client can never make it buffer more than one frame's worth.
//! Header unescaping waits until a frame is handed out, because the session
//! only switches escaping on after it has read CONNECT and negotiated.

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};

pub use bytes::Bytes;

/// The longest command name, `UNSUBSCRIBE`: a command line that grows past
/// it (plus a CR) can be refused before its newline arrives.
const LONGEST_COMMAND: usize = 11;

/// How much of a client's bad input an error message quotes back.
const EXCERPT_CHARS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Connect,
    Stomp,
    Connected,
    Send,
    Subscribe,
    Unsubscribe,
    Begin,
    Commit,
    Abort,
    Ack,
    Nack,
    Disconnect,
    Message,
    Receipt,
    Error,
}

impl Command {
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Connected,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Ack,
        Command::Nack,
        Command::Disconnect,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Case-sensitive, as the spec writes commands in upper case.
    pub fn parse(text: &[u8]) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|command| command.as_str().as_bytes() == text)
    }

    /// The connection frames are exchanged before a version is agreed, so
    /// the spec keeps their headers unescaped in every version.
    fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1_0,
    V1_1,
    V1_2,
}

impl Version {
    const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// The highest version both sides speak, from an `accept-version` header
    /// value ("1.0,1.1,1.2"). No header means 1.0, as the spec says; `None`
    /// means there is no common version.
    pub fn negotiate(accept_version: Option<&str>) -> Option<Version> {
        let Some(offered) = accept_version else {
            return Some(Version::V1_0);
        };
        offered
            .split(',')
            .filter_map(|token| {
                Version::ALL
                    .into_iter()
                    .find(|version| version.as_str() == token.trim())
            })
            .max()
    }

    /// The version a WebSocket subprotocol names: "v10.stomp", "v11.stomp"
    /// or "v12.stomp".
    pub fn from_subprotocol(name: &str) -> Option<Version> {
        Version::ALL
            .into_iter()
            .find(|version| version.subprotocol() == name)
    }

    pub fn subprotocol(self) -> &'static str {
        match self {
            Version::V1_0 => "v10.stomp",
            Version::V1_1 => "v11.stomp",
            Version::V1_2 => "v12.stomp",
        }
    }

    /// Whether header values are escaped in frames other than
    /// CONNECT/CONNECTED (1.1 and later).
    pub fn escapes(self) -> bool {
        self >= Version::V1_1
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Frame {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }

    /// The first occurrence wins: the spec says repeated headers after the
    /// first are ignored.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    /// The frame on the wire, ending with NUL. `escape` asks for 1.1+
    /// escaping; CONNECT, STOMP and CONNECTED are never escaped whatever it
    /// says, matching the decoder. A non-empty body gets a `content-length`
    /// unless the frame already has one, so bodies may hold NULs.
    pub fn encode(&self, escape: bool) -> Vec<u8> {
        let escape = escape && self.command.escapes_headers();
        let headers_len: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 2)
            .sum();
        let mut out =
            Vec::with_capacity(self.command.as_str().len() + headers_len + self.body.len() + 32);
        out.extend_from_slice(self.command.as_str().as_bytes());
        out.push(b'\n');
        for (name, value) in &self.headers {
            push_header(&mut out, name, value, escape);
        }
        if !self.body.is_empty() && self.header("content-length").is_none() {
            push_header(
                &mut out,
                "content-length",
                &self.body.len().to_string(),
                escape,
            );
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out.push(0);
        out
    }
}

/// Appends one `name:value\n` header line to `out`, escaped when `escape`.
///
/// Without escaping a CR or LF cannot be carried, and passing it through
/// would let a value forge extra header lines (a 1.2 publisher's header
/// relayed to a 1.0 subscriber), so each becomes a space. NUL becomes a space
/// in both modes, since a NUL ends the frame for every reader.
pub fn push_header(out: &mut Vec<u8>, name: &str, value: &str, escape: bool) {
    push_header_text(out, name, escape);
    out.push(b':');
    push_header_text(out, value, escape);
    out.push(b'\n');
}

fn push_header_text(out: &mut Vec<u8>, text: &str, escape: bool) {
    let needs_care = |byte: &u8| match byte {
        b'\n' | b'\r' | 0 => true,
        b'\\' | b':' => escape,
        _ => false,
    };
    if !text.as_bytes().iter().any(needs_care) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    // Byte-wise is safe for UTF-8: every byte matched here is ASCII, and
    // ASCII bytes never occur inside a multi-byte character.
    for &byte in text.as_bytes() {
        match (byte, escape) {
            (b'\\', true) => out.extend_from_slice(b"\\\\"),
            (b'\n', true) => out.extend_from_slice(b"\\n"),
            (b'\r', true) => out.extend_from_slice(b"\\r"),
            (b':', true) => out.extend_from_slice(b"\\c"),
            (b'\n' | b'\r' | 0, _) => out.push(b' '),
            (other, _) => out.push(other),
        }
    }
}

/// Bounds on what one connection may make the decoder hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The whole frame: command, headers, body and the closing NUL.
    pub max_frame: usize,
    pub max_headers: usize,
    /// One header line, without its EOL.
    pub max_header_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 65536,
            max_headers: 64,
            max_header_line: 8192,
        }
    }
}

/// Why a stream was refused. Each message is meant for the client, in the
/// ERROR frame sent before the close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StompError {
    #[error("frame is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("more than {max} headers")]
    TooManyHeaders { max: usize },
    #[error("header line longer than {max} bytes")]
    HeaderLineTooLong { max: usize },
    #[error("unknown command `{command}`")]
    UnknownCommand { command: String },
    #[error("empty command: a frame must start with a command line")]
    EmptyCommand,
    #[error("frame ends (NUL) before the blank line that closes its headers")]
    UnterminatedHeaders,
    #[error("header line without `:`")]
    HeaderWithoutColon,
    #[error("headers are not UTF-8")]
    HeadersNotUtf8,
    #[error("invalid escape `\\{escaped}` in a header (allowed: \\n \\c \\\\ \\r)")]
    InvalidEscape { escaped: char },
    #[error("header ends with a lone `\\` (write a backslash as \\\\)")]
    TrailingBackslash,
    #[error("content-length `{value}` is not a number")]
    BadContentLength { value: String },
    #[error("content-length says {length} bytes but the body is not followed by NUL")]
    ContentLengthMismatch { length: usize },
}

impl StompError {
    /// The frame-size limit: the session closes with 1009 for it rather
    /// than a plain protocol error.
    pub fn is_too_large(&self) -> bool {
        matches!(self, StompError::TooLarge { .. })
    }
}

/// Where the decoder is within the frame being assembled.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Between frames, where heart-beat EOLs may come.
    Idle,
    Command,
    /// Header lines, up to the blank line that ends them.
    Headers {
        command: Command,
    },
    Body {
        command: Command,
    },
}

enum Step {
    Continue,
    NeedMore,
}

/// Incremental decoder of one connection's STOMP byte stream. Bytes may come
/// in any chunking: several frames in one WebSocket message, one frame over
/// many, text or binary messages alike.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    escaping: bool,
    /// Bytes of the frame being assembled that are not yet taken apart.
    buf: BytesMut,
    stage: Stage,
    /// How far into `buf` the current delimiter search has looked, so a
    /// frame arriving byte by byte is scanned once.
    scanned: usize,
    /// Bytes of the current frame already taken out of `buf`.
    frame_consumed: usize,
    headers: Vec<(String, String)>,
    /// The first `content-length` of the current frame.
    content_length: Option<usize>,
    /// Whole frames with their headers still as on the wire: unescaping
    /// waits for `next_frame`, so `set_escaping` after CONNECT also covers
    /// frames the client pipelined behind it.
    ready: VecDeque<Frame>,
    refused: Option<StompError>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            escaping: false,
            buf: BytesMut::new(),
            stage: Stage::Idle,
            scanned: 0,
            frame_consumed: 0,
            headers: Vec::new(),
            content_length: None,
            ready: VecDeque::new(),
            refused: None,
        }
    }

    /// Off until CONNECTED (CONNECT frames are never escaped); the session
    /// turns it on for 1.1 and 1.2 after negotiating. It applies to every
    /// frame `next_frame` has not yet returned.
    pub fn set_escaping(&mut self, on: bool) {
        self.escaping = on;
    }

    /// Appends bytes and finds the frames they complete.
    ///
    /// Fails only with [`StompError::TooLarge`], at once, when the frame
    /// being assembled would pass `max_frame`; frames completed before it
    /// are still in `next_frame`. Every other refusal comes from
    /// `next_frame`, after the frames that preceded it. Once the stream is
    /// refused, further bytes are dropped.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), StompError> {
        if let Some(refusal) = &self.refused {
            return if refusal.is_too_large() {
                Err(refusal.clone())
            } else {
                Ok(())
            };
        }
        self.buf.extend_from_slice(bytes);
        match self.decode_available() {
            Ok(()) => Ok(()),
            Err(refusal) => {
                let result = if refusal.is_too_large() {
                    Err(refusal.clone())
                } else {
                    Ok(())
                };
                self.refuse(refusal);
                result
            }
        }
    }

    /// The next whole frame, if one is complete. Heart-beat EOLs between
    /// frames are skipped. After an error the stream is refused for good:
    /// later calls return the same error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, StompError> {
        if let Some(frame) = self.ready.pop_front() {
            return match self.unescape(frame) {
                Ok(frame) => Ok(Some(frame)),
                Err(refusal) => {
                    self.ready.clear();
                    self.refuse(refusal.clone());
                    Err(refusal)
                }
            };
        }
        match &self.refused {
            Some(refusal) => Err(refusal.clone()),
            None => Ok(None),
        }
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn refuse(&mut self, refusal: StompError) {
        self.refused = Some(refusal);
        self.buf = BytesMut::new();
        self.headers = Vec::new();
    }

    fn unescape(&self, mut frame: Frame) -> Result<Frame, StompError> {
        if !self.escaping || !frame.command.escapes_headers() {
            return Ok(frame);
        }
        for (name, value) in &mut frame.headers {
            unescape_in_place(name)?;
            unescape_in_place(value)?;
        }
        Ok(frame)
    }

    fn decode_available(&mut self) -> Result<(), StompError> {
        loop {
            let step = match self.stage {
                Stage::Idle => self.skip_heartbeats()?,
                Stage::Command => self.read_command()?,
                Stage::Headers { command } => self.read_header_line(command)?,
                Stage::Body { command } => self.read_body(command)?,
            };
            if let Step::NeedMore = step {
                return Ok(());
            }
        }
    }

    fn skip_heartbeats(&mut self) -> Result<Step, StompError> {
        loop {
            match self.buf.first() {
                None => return Ok(Step::NeedMore),
                Some(b'\n') => self.buf.advance(1),
                Some(b'\r') => match self.buf.get(1) {
                    None => return Ok(Step::NeedMore),
                    Some(b'\n') => self.buf.advance(2),
                    Some(_) => break,
                },
                Some(0) => return Err(StompError::EmptyCommand),
                Some(_) => break,
            }
        }
        self.stage = Stage::Command;
        Ok(Step::Continue)
    }

    fn read_command(&mut self) -> Result<Step, StompError> {
        let Some(end) = self.find_line_end() else {
            self.ensure_fits(self.scanned)?;
            if self.scanned > LONGEST_COMMAND + 1 {
                return Err(StompError::UnknownCommand {
                    command: excerpt(&self.buf),
                });
            }
            return Ok(Step::NeedMore);
        };
        self.ensure_fits(end + 1)?;
        let line = strip_cr(self.buf.get(..end).unwrap_or_default());
        if line.is_empty() {
            return Err(StompError::EmptyCommand);
        }
        let command = Command::parse(line).ok_or_else(|| StompError::UnknownCommand {
            command: excerpt(line),
        })?;
        if self.buf.get(end) == Some(&0) {
            return Err(StompError::UnterminatedHeaders);
        }
        self.consume(end + 1);
        self.stage = Stage::Headers { command };
        Ok(Step::Continue)
    }

    fn read_header_line(&mut self, command: Command) -> Result<Step, StompError> {
        let max_line = self.limits.max_header_line;
        let Some(end) = self.find_line_end() else {
            self.ensure_fits(self.scanned)?;
            // One byte of slack: a CR here may turn out to be the EOL's.
            if self.scanned > max_line.saturating_add(1) {
                return Err(StompError::HeaderLineTooLong { max: max_line });
            }
            return Ok(Step::NeedMore);
        };
        self.ensure_fits(end + 1)?;
        if self.buf.get(end) == Some(&0) {
            return Err(StompError::UnterminatedHeaders);
        }
        let line = strip_cr(self.buf.get(..end).unwrap_or_default());
        if line.len() > max_line {
            return Err(StompError::HeaderLineTooLong { max: max_line });
        }
        if line.is_empty() {
            self.consume(end + 1);
            if let Some(length) = self.content_length {
                self.ensure_fits(length)?;
            }
            self.stage = Stage::Body { command };
            return Ok(Step::Continue);
        }
        if self.headers.len() >= self.limits.max_headers {
            return Err(StompError::TooManyHeaders {
                max: self.limits.max_headers,
            });
        }
        let (name, value) = split_header(line)?;
        self.consume(end + 1);
        // Framing reads the raw name: no escape sequence can produce a
        // character of `content-length`, so escaping cannot change which
        // header this is.
        if name == "content-length" && self.content_length.is_none() {
            let length = parse_content_length(&value)?;
            // Refused here, before the blank line, so a huge declared body
            // is never waited for.
            self.ensure_fits(length)?;
            self.content_length = Some(length);
        }
        self.headers.push((name, value));
        Ok(Step::Continue)
    }

    fn read_body(&mut self, command: Command) -> Result<Step, StompError> {
        let body_len = match self.content_length {
            Some(length) => match self.buf.get(length) {
                None => return Ok(Step::NeedMore),
                Some(0) => length,
                Some(_) => return Err(StompError::ContentLengthMismatch { length }),
            },
            None => {
                let from = self.scanned;
                let nul = self
                    .buf
                    .get(from..)
                    .and_then(|rest| rest.iter().position(|&byte| byte == 0));
                match nul {
                    None => {
                        self.scanned = self.buf.len();
                        self.ensure_fits(self.scanned)?;
                        return Ok(Step::NeedMore);
                    }
                    Some(offset) => from + offset,
                }
            }
        };
        self.ensure_fits(body_len)?;
        let body = self.buf.split_to(body_len).freeze();
        self.buf.advance(1);
        self.ready.push_back(Frame {
            command,
            headers: std::mem::take(&mut self.headers),
            body,
        });
        self.stage = Stage::Idle;
        self.scanned = 0;
        self.frame_consumed = 0;
        self.content_length = None;
        Ok(Step::Continue)
    }

    /// The end of the current line (its `\n`), or of the frame when a NUL
    /// comes first; picks up the search where the last call left off.
    fn find_line_end(&mut self) -> Option<usize> {
        let from = self.scanned;
        let end = self
            .buf
            .get(from..)
            .and_then(|rest| rest.iter().position(|&byte| byte == b'\n' || byte == 0))
            .map(|offset| from + offset);
        self.scanned = end.unwrap_or(self.buf.len());
        end
    }

    fn consume(&mut self, count: usize) {
        self.buf.advance(count);
        self.frame_consumed += count;
        self.scanned = 0;
    }

    /// Refuses the frame once `more` further bytes of it, plus the NUL that
    /// must still follow, would pass `max_frame`.
    fn ensure_fits(&self, more: usize) -> Result<(), StompError> {
        let least_size = self.frame_consumed.saturating_add(more).saturating_add(1);
        if least_size > self.limits.max_frame {
            return Err(StompError::TooLarge {
                max: self.limits.max_frame,
            });
        }
        Ok(())
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits at the first `:`; later ones belong to the value, which 1.2 says
/// is kept exactly, spaces included.
fn split_header(line: &[u8]) -> Result<(String, String), StompError> {
    let text = std::str::from_utf8(line).map_err(|_| StompError::HeadersNotUtf8)?;
    let (name, value) = text.split_once(':').ok_or(StompError::HeaderWithoutColon)?;
    Ok((name.to_owned(), value.to_owned()))
}

/// A number too big for `usize` is still a number: it saturates, and the
/// size limit refuses it as too large rather than as malformed.
fn parse_content_length(value: &str) -> Result<usize, StompError> {
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(StompError::BadContentLength {
            value: excerpt(value.as_bytes()),
        });
    }
    Ok(value.bytes().fold(0usize, |length, digit| {
        length
            .saturating_mul(10)
            .saturating_add(usize::from(digit - b'0'))
    }))
}

fn unescape_in_place(text: &mut String) -> Result<(), StompError> {
    if !text.contains('\\') {
        return Ok(());
    }
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            plain.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => plain.push('\n'),
            Some('r') => plain.push('\r'),
            Some('c') => plain.push(':'),
            Some('\\') => plain.push('\\'),
            Some(escaped) => return Err(StompError::InvalidEscape { escaped }),
            None => return Err(StompError::TrailingBackslash),
        }
    }
    *text = plain;
    Ok(())
}

/// A printable, bounded quote of client bytes for an error message.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut quoted: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(EXCERPT_CHARS).is_some() {
        quoted.push('…');
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decoder() -> Decoder {
        Decoder::new(Limits::default())
    }

    fn escaping_decoder() -> Decoder {
        let mut decoder = decoder();
        decoder.set_escaping(true);
        decoder
    }

    /// Every frame the input holds, or the first refusal.
    fn drain(decoder: &mut Decoder) -> Result<Vec<Frame>, StompError> {
        let mut frames = Vec::new();
        while let Some(frame) = decoder.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Frame>, StompError> {
        decoder.push(bytes)?;
        drain(decoder)
    }

    fn decode_one(decoder: &mut Decoder, bytes: &[u8]) -> Frame {
        let mut frames = decode_all(decoder, bytes).expect("valid frame");
        assert_eq!(frames.len(), 1, "{frames:?}");
        frames.pop().expect("one frame")
    }

    fn refusal(decoder: &mut Decoder, bytes: &[u8]) -> StompError {
        match decode_all(decoder, bytes) {
            Ok(frames) => panic!("expected a refusal, got {frames:?}"),
            Err(refusal) => refusal,
        }
    }

    #[test]
    fn every_command_parses_from_its_own_name_and_only_in_upper_case() {
        for command in Command::ALL {
            assert_eq!(Command::parse(command.as_str().as_bytes()), Some(command));
            let lower = command.as_str().to_lowercase();
            assert_eq!(Command::parse(lower.as_bytes()), None);
        }
        assert_eq!(Command::parse(b""), None);
        assert_eq!(Command::parse(b"SEND "), None);
    }

    #[test]
    fn every_command_decodes_as_a_frame() {
        for command in Command::ALL {
            let wire = format!("{}\nk:v\n\n\0", command.as_str());
            let frame = decode_one(&mut decoder(), wire.as_bytes());
            assert_eq!(frame, Frame::new(command).with_header("k", "v"));
        }
    }

    #[test]
    fn each_escape_sequence_decodes_to_its_character() {
        let cases = [
            ("a\\nb", "a\nb"),
            ("a\\cb", "a:b"),
            ("a\\\\b", "a\\b"),
            ("a\\rb", "a\rb"),
        ];
        for (wire_value, value) in cases {
            let wire = format!("SEND\n{wire_value}:{wire_value}\n\n\0");
            let frame = decode_one(&mut escaping_decoder(), wire.as_bytes());
            assert_eq!(frame.headers, vec![(value.to_owned(), value.to_owned())]);
        }
    }

    #[test]
    fn escaped_headers_round_trip() {
        let frame = Frame::new(Command::Message)
            .with_header("we:ird\\name", "line1\nline2\r:end\\")
            .with_header("plain", "value");
        let wire = frame.encode(true);
        assert_eq!(
            wire,
            b"MESSAGE\nwe\\cird\\\\name:line1\\nline2\\r\\cend\\\\\nplain:value\n\n\0"
        );
        assert_eq!(decode_one(&mut escaping_decoder(), &wire), frame);
    }

    #[test]
    fn headers_stay_raw_until_escaping_is_on() {
        let wire = b"SEND\na\\cb:x\\ny\n\n\0";
        let frame = decode_one(&mut decoder(), wire);
        assert_eq!(frame.header("a\\cb"), Some("x\\ny"));
    }

    #[test]
    fn connect_and_connected_headers_are_never_unescaped() {
        for command in ["CONNECT", "STOMP", "CONNECTED"] {
            let wire = format!("{command}\npasscode:a\\cb\\q\n\n\0");
            let frame = decode_one(&mut escaping_decoder(), wire.as_bytes());
            assert_eq!(frame.header("passcode"), Some("a\\cb\\q"));
        }
    }

    #[test]
    fn escaping_turned_on_after_connect_covers_frames_pipelined_behind_it() {
        let mut decoder = decoder();
        decoder
            .push(b"CONNECT\naccept-version:1.2\n\n\0SEND\nd:a\\cb\n\n\0")
            .expect("fits");
        let connect = decoder.next_frame().expect("valid").expect("a frame");
        assert_eq!(connect.command, Command::Connect);
        decoder.set_escaping(true);
        let send = decoder.next_frame().expect("valid").expect("a frame");
        assert_eq!(send.header("d"), Some("a:b"));
    }

    #[test]
    fn repeated_header_first_occurrence_wins() {
        let frame = decode_one(&mut decoder(), b"SEND\nfoo:first\nfoo:second\n\n\0");
        assert_eq!(frame.header("foo"), Some("first"));
        assert_eq!(frame.headers.len(), 2);
    }

    #[test]
    fn repeated_content_length_first_one_frames_the_body() {
        let frame = decode_one(
            &mut decoder(),
            b"SEND\ncontent-length:2\ncontent-length:5\n\nab\0",
        );
        assert_eq!(&frame.body[..], b"ab");
    }

    #[test]
    fn header_value_keeps_spaces_and_later_colons() {
        let frame = decode_one(&mut escaping_decoder(), b"SEND\n key : a:b \n\n\0");
        assert_eq!(
            frame.headers,
            vec![(" key ".to_owned(), " a:b ".to_owned())]
        );
    }

    #[test]
    fn content_length_body_may_contain_nuls() {
        let frame = decode_one(&mut decoder(), b"SEND\ncontent-length:5\n\na\0b\0c\0");
        assert_eq!(&frame.body[..], b"a\0b\0c");
    }

    #[test]
    fn content_length_body_not_followed_by_nul_is_refused() {
        let refused = refusal(&mut decoder(), b"SEND\ncontent-length:2\n\nabc\0");
        assert_eq!(refused, StompError::ContentLengthMismatch { length: 2 });
        assert_eq!(
            refused.to_string(),
            "content-length says 2 bytes but the body is not followed by NUL"
        );
    }

    #[test]
    fn content_length_that_is_not_a_number_is_refused() {
        for value in ["x", "", "-1", "+1", " 1", "1 "] {
            let wire = format!("SEND\ncontent-length:{value}\n\n\0");
            let refused = refusal(&mut decoder(), wire.as_bytes());
            assert_eq!(
                refused,
                StompError::BadContentLength {
                    value: value.to_owned()
                }
            );
        }
        let refused = refusal(&mut decoder(), b"SEND\ncontent-length:x\n\n\0");
        assert_eq!(refused.to_string(), "content-length `x` is not a number");
    }

    #[test]
    fn body_without_content_length_runs_to_the_first_nul() {
        let mut decoder = decoder();
        decoder.push(b"SEND\n\nhello\0world\0").expect("fits");
        let frame = decoder.next_frame().expect("valid").expect("a frame");
        assert_eq!(&frame.body[..], b"hello");
        // What follows the first NUL is a new frame, here a bad one.
        let refused = decoder.next_frame().expect_err("not a command");
        assert!(matches!(refused, StompError::UnknownCommand { .. }));
    }

    #[test]
    fn empty_body_without_content_length() {
        let frame = decode_one(&mut decoder(), b"DISCONNECT\nreceipt:7\n\n\0");
        assert!(frame.body.is_empty());
        assert_eq!(frame.header("receipt"), Some("7"));
    }

    #[test]
    fn several_frames_in_one_push() {
        let wire = b"SEND\nd:1\n\none\0SEND\nd:2\ncontent-length:3\n\ntwo\0ACK\nid:3\n\n\0";
        let frames = decode_all(&mut decoder(), wire).expect("valid");
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].header("d"), Some("1"));
        assert_eq!(&frames[1].body[..], b"two");
        assert_eq!(frames[2].command, Command::Ack);
    }

    #[test]
    fn heartbeat_eols_before_and_between_frames_are_skipped() {
        let wire = b"\n\r\n\nSEND\n\na\0\n\r\n\r\nSEND\n\nb\0\n";
        let mut decoder = decoder();
        let frames = decode_all(&mut decoder, wire).expect("valid");
        let bodies: Vec<&[u8]> = frames.iter().map(|frame| &frame.body[..]).collect();
        assert_eq!(bodies, vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn heartbeat_crlf_split_across_pushes_is_skipped() {
        let mut decoder = decoder();
        assert!(decode_all(&mut decoder, b"\r").expect("valid").is_empty());
        assert!(decode_all(&mut decoder, b"\n").expect("valid").is_empty());
        let frames = decode_all(&mut decoder, b"SEND\n\n\0").expect("valid");
        assert_eq!(frames.len(), 1);
    }

    #[test]
    fn crlf_header_lines() {
        let frame = decode_one(
            &mut decoder(),
            b"SEND\r\ndestination:/topic/a\r\ncontent-length:2\r\n\r\nhi\0",
        );
        assert_eq!(
            frame,
            Frame::new(Command::Send)
                .with_header("destination", "/topic/a")
                .with_header("content-length", "2")
                .with_body(&b"hi"[..])
        );
    }

    #[test]
    fn frame_split_one_byte_at_a_time() {
        let wire = b"SEND\ndestination:/topic/a\ncontent-length:3\n\nabc\0SEND\n\nxyz\0";
        let mut decoder = decoder();
        let mut frames = Vec::new();
        for byte in wire {
            decoder.push(std::slice::from_ref(byte)).expect("fits");
            frames.extend(drain(&mut decoder).expect("valid"));
        }
        assert_eq!(
            frames,
            decode_all(&mut self::decoder(), wire).expect("valid")
        );
    }

    #[test]
    fn a_largest_frame_fed_byte_by_byte_is_scanned_once() {
        let limits = Limits::default();
        let head = b"SEND\ndestination:/topic/a\n\n";
        let body = vec![b'x'; limits.max_frame - head.len() - 1];
        let wire = [&head[..], &body, b"\0"].concat();
        let mut decoder = Decoder::new(limits);
        let started = std::time::Instant::now();
        for byte in &wire {
            decoder.push(std::slice::from_ref(byte)).expect("fits");
        }
        let frame = decoder.next_frame().expect("valid").expect("a frame");
        assert_eq!(frame.body.len(), body.len());
        // Rescanning from the start on every byte would take ~2·10⁹ steps.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_frame_of_exactly_max_frame_bytes_is_accepted() {
        let limits = Limits {
            max_frame: 12,
            ..Limits::default()
        };
        // "SEND\n\n" + 5 body bytes + NUL = 12.
        let frame = decode_one(&mut Decoder::new(limits), b"SEND\n\nabcde\0");
        assert_eq!(&frame.body[..], b"abcde");
        let mut decoder = Decoder::new(limits);
        let refused = refusal(&mut decoder, b"SEND\n\nabcdef\0");
        assert_eq!(refused, StompError::TooLarge { max: 12 });
    }

    #[test]
    fn oversized_frame_is_refused_while_still_partial() {
        let limits = Limits {
            max_frame: 100,
            ..Limits::default()
        };
        let mut decoder = Decoder::new(limits);
        decoder.push(b"SEND\n\n").expect("fits");
        let mut refused = None;
        for _ in 0..200 {
            if let Err(error) = decoder.push(b"x") {
                refused = Some(error);
                break;
            }
            assert!(decoder.buffered() <= limits.max_frame);
        }
        let refused = refused.expect("refused before the NUL");
        assert!(refused.is_too_large());
        assert_eq!(refused.to_string(), "frame is larger than 100 bytes");
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(decoder.push(b"\0"), Err(refused.clone()));
        assert_eq!(decoder.next_frame(), Err(refused));
    }

    #[test]
    fn endless_headers_are_refused_by_the_frame_limit() {
        let limits = Limits {
            max_frame: 256,
            max_headers: 1000,
            max_header_line: 8192,
        };
        let mut decoder = Decoder::new(limits);
        decoder.push(b"SEND\n").expect("fits");
        let refused = (0..1000)
            .find_map(|_| decoder.push(b"header:value\n").err())
            .expect("refused");
        assert!(refused.is_too_large());
    }

    #[test]
    fn huge_content_length_is_refused_at_once() {
        let mut decoder = decoder();
        let refused = decoder
            .push(b"SEND\ncontent-length:1000000000000\n")
            .expect_err("too large");
        assert_eq!(refused, StompError::TooLarge { max: 65536 });
        let overflowing = Decoder::new(Limits::default())
            .push(b"SEND\ncontent-length:99999999999999999999999999999\n")
            .expect_err("too large");
        assert!(overflowing.is_too_large());
    }

    #[test]
    fn content_length_counts_with_the_head_against_the_frame_limit() {
        let limits = Limits {
            max_frame: 30,
            ..Limits::default()
        };
        // The head "SEND\ncontent-length:10\n\n" is 24 bytes; 24 + 10 + 1 > 30.
        let mut decoder = Decoder::new(limits);
        let refused = decoder
            .push(b"SEND\ncontent-length:10\n\n")
            .expect_err("too large");
        assert!(refused.is_too_large());
    }

    #[test]
    fn more_headers_than_the_limit_are_refused() {
        let limits = Limits {
            max_headers: 3,
            ..Limits::default()
        };
        let accepted = decode_one(&mut Decoder::new(limits), b"SEND\na:1\nb:2\nc:3\n\n\0");
        assert_eq!(accepted.headers.len(), 3);
        let refused = refusal(&mut Decoder::new(limits), b"SEND\na:1\nb:2\nc:3\nd:4\n");
        assert_eq!(refused, StompError::TooManyHeaders { max: 3 });
        assert_eq!(refused.to_string(), "more than 3 headers");
    }

    #[test]
    fn header_line_longer_than_the_limit_is_refused_while_partial() {
        let limits = Limits {
            max_header_line: 10,
            ..Limits::default()
        };
        let accepted = decode_one(&mut Decoder::new(limits), b"SEND\nabcde:1234\r\n\n\0");
        assert_eq!(accepted.header("abcde"), Some("1234"));

        let mut decoder = Decoder::new(limits);
        decoder.push(b"SEND\nabcde:12345").expect("fits");
        decoder.push(b"6").expect("fits");
        let refused = drain(&mut decoder).expect_err("too long");
        assert_eq!(refused, StompError::HeaderLineTooLong { max: 10 });
        assert_eq!(refused.to_string(), "header line longer than 10 bytes");
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn unknown_command_is_refused() {
        let refused = refusal(&mut decoder(), b"FOO\n\n\0");
        assert_eq!(
            refused,
            StompError::UnknownCommand {
                command: "FOO".to_owned()
            }
        );
        assert_eq!(refused.to_string(), "unknown command `FOO`");
        let lower = refusal(&mut decoder(), b"send\n\n\0");
        assert!(matches!(lower, StompError::UnknownCommand { .. }));
    }

    #[test]
    fn garbage_without_a_newline_is_refused_as_soon_as_no_command_can_match() {
        let mut decoder = decoder();
        decoder.push(b"GET / HTTP/1.1").expect("small");
        let refused = drain(&mut decoder).expect_err("garbage");
        assert!(matches!(refused, StompError::UnknownCommand { .. }));
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn unknown_command_message_quotes_a_bounded_printable_excerpt() {
        let mut wire = vec![b'\x01'; 500];
        wire.push(b'\n');
        let refused = refusal(&mut decoder(), &wire);
        let message = refused.to_string();
        assert!(message.starts_with("unknown command `\\u{1}"));
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn empty_command_is_refused() {
        assert_eq!(refusal(&mut decoder(), b"\0"), StompError::EmptyCommand);
        assert_eq!(refusal(&mut decoder(), b"\n\n\0"), StompError::EmptyCommand);
        assert_eq!(refusal(&mut decoder(), b"\r\0"), StompError::EmptyCommand);
    }

    #[test]
    fn frame_ending_inside_its_headers_is_refused() {
        assert_eq!(
            refusal(&mut decoder(), b"SEND\0"),
            StompError::UnterminatedHeaders
        );
        assert_eq!(
            refusal(&mut decoder(), b"SEND\ndestination:/a\0"),
            StompError::UnterminatedHeaders
        );
    }

    #[test]
    fn header_line_without_colon_is_refused() {
        let refused = refusal(&mut decoder(), b"SEND\nnocolon\n\n\0");
        assert_eq!(refused, StompError::HeaderWithoutColon);
        assert_eq!(refused.to_string(), "header line without `:`");
    }

    #[test]
    fn invalid_utf8_header_is_refused_but_binary_body_is_not() {
        let refused = refusal(&mut decoder(), b"SEND\nname:\xff\xfe\n\n\0");
        assert_eq!(refused, StompError::HeadersNotUtf8);
        let frame = decode_one(&mut decoder(), b"SEND\nname:\xc3\xa9\n\n\xff\xfe\0");
        assert_eq!(frame.header("name"), Some("é"));
        assert_eq!(&frame.body[..], b"\xff\xfe");
    }

    #[test]
    fn invalid_escapes_are_refused() {
        let refused = refusal(&mut escaping_decoder(), b"SEND\nname:a\\tb\n\n\0");
        assert_eq!(refused, StompError::InvalidEscape { escaped: 't' });
        assert_eq!(
            refused.to_string(),
            "invalid escape `\\t` in a header (allowed: \\n \\c \\\\ \\r)"
        );
        let in_name = refusal(&mut escaping_decoder(), b"SEND\na\\xb:v\n\n\0");
        assert_eq!(in_name, StompError::InvalidEscape { escaped: 'x' });
        let trailing = refusal(&mut escaping_decoder(), b"SEND\nname:ab\\\n\n\0");
        assert_eq!(trailing, StompError::TrailingBackslash);
    }

    #[test]
    fn refusal_comes_after_the_frames_before_it_and_then_sticks() {
        let mut decoder = decoder();
        decoder
            .push(b"SEND\n\nok\0BAD\n\n\0SEND\n\nlost\0")
            .expect("only too-large fails a push");
        let first = decoder.next_frame().expect("valid").expect("a frame");
        assert_eq!(&first.body[..], b"ok");
        let refused = decoder.next_frame().expect_err("refused");
        assert!(matches!(refused, StompError::UnknownCommand { .. }));
        assert_eq!(decoder.next_frame(), Err(refused.clone()));
        assert_eq!(decoder.push(b"SEND\n\n\0"), Ok(()));
        assert_eq!(decoder.next_frame(), Err(refused));
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn bad_escape_drops_the_frames_behind_it() {
        let mut decoder = escaping_decoder();
        decoder
            .push(b"SEND\na:\\x\n\n\0SEND\n\nlater\0")
            .expect("fits");
        let refused = decoder.next_frame().expect_err("bad escape");
        assert_eq!(refused, StompError::InvalidEscape { escaped: 'x' });
        assert_eq!(decoder.next_frame(), Err(refused));
    }

    #[test]
    fn version_negotiation_picks_the_highest_common_version() {
        assert_eq!(Version::negotiate(Some("1.2")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.0,1.1")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(Some("1.1,1.2")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.2,1.0")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.0, 1.1")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(Some("1.1,3.0")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(None), Some(Version::V1_0));
        assert_eq!(Version::negotiate(Some("2.0")), None);
        assert_eq!(Version::negotiate(Some("")), None);
    }

    #[test]
    fn versions_name_their_subprotocols_and_escaping() {
        for version in Version::ALL {
            assert_eq!(
                Version::from_subprotocol(version.subprotocol()),
                Some(version)
            );
        }
        assert_eq!(Version::from_subprotocol("v12.stomp"), Some(Version::V1_2));
        assert_eq!(Version::from_subprotocol("stomp"), None);
        assert_eq!(Version::V1_1.as_str(), "1.1");
        assert!(!Version::V1_0.escapes());
        assert!(Version::V1_1.escapes());
        assert!(Version::V1_2.escapes());
    }

    #[test]
    fn encode_adds_content_length_for_a_body_and_escapes() {
        let frame = Frame::new(Command::Message)
            .with_header("destination", "/topic/a:b")
            .with_body(&b"x\0y"[..]);
        assert_eq!(
            frame.encode(true),
            b"MESSAGE\ndestination:/topic/a\\cb\ncontent-length:3\n\nx\0y\0"
        );
        assert_eq!(
            frame.encode(false),
            b"MESSAGE\ndestination:/topic/a:b\ncontent-length:3\n\nx\0y\0"
        );
    }

    #[test]
    fn encode_keeps_a_given_content_length_and_adds_none_for_an_empty_body() {
        let given = Frame::new(Command::Send)
            .with_header("content-length", "1")
            .with_body(&b"a"[..]);
        assert_eq!(given.encode(true), b"SEND\ncontent-length:1\n\na\0");
        let empty = Frame::new(Command::Receipt).with_header("receipt-id", "9");
        assert_eq!(empty.encode(true), b"RECEIPT\nreceipt-id:9\n\n\0");
    }

    #[test]
    fn encode_never_escapes_connected() {
        let frame = Frame::new(Command::Connected).with_header("server", "herald:1");
        assert_eq!(frame.encode(true), b"CONNECTED\nserver:herald:1\n\n\0");
    }

    #[test]
    fn unescaped_headers_cannot_forge_header_lines() {
        let mut out = Vec::new();
        push_header(&mut out, "content-type", "text\r\nevil:1\0", false);
        assert_eq!(out, b"content-type:text  evil:1 \n");
        let mut escaped = Vec::new();
        push_header(&mut escaped, "a", "b\0c", true);
        assert_eq!(escaped, b"a:b c\n");
    }

    fn header_text() -> impl Strategy<Value = String> {
        let tricky = prop::collection::vec(
            prop::sample::select(vec!['a', 'Z', '0', ':', '\n', '\r', '\\', ' ', 'é', '€']),
            0..10,
        )
        .prop_map(|chars| chars.into_iter().collect::<String>());
        let anything = any::<String>().prop_map(|text| text.replace('\0', ""));
        prop_oneof![tricky, anything]
    }

    fn escaped_command() -> impl Strategy<Value = Command> {
        prop::sample::select(
            Command::ALL
                .into_iter()
                .filter(|command| command.escapes_headers())
                .collect::<Vec<_>>(),
        )
    }

    fn arbitrary_frame() -> impl Strategy<Value = Frame> {
        (
            escaped_command(),
            prop::collection::vec(
                (
                    header_text().prop_filter("framing header", |name| name != "content-length"),
                    header_text(),
                ),
                0..6,
            ),
            prop::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(command, headers, body)| Frame {
                command,
                headers,
                body: Bytes::from(body),
            })
    }

    /// What decoding `frame.encode(..)` must give back: the frame plus the
    /// content-length `encode` adds.
    fn as_decoded(frame: &Frame) -> Frame {
        let mut decoded = frame.clone();
        if !frame.body.is_empty() && frame.header("content-length").is_none() {
            decoded
                .headers
                .push(("content-length".to_owned(), frame.body.len().to_string()));
        }
        decoded
    }

    fn roomy_limits() -> Limits {
        Limits {
            max_frame: 1 << 20,
            max_headers: 100,
            max_header_line: 1 << 16,
        }
    }

    fn decode_in_chunks(wire: &[u8], chunk_sizes: &[usize]) -> Vec<Frame> {
        let mut decoder = Decoder::new(roomy_limits());
        decoder.set_escaping(true);
        let mut frames = Vec::new();
        let mut rest = wire;
        let mut sizes = chunk_sizes.iter().cycle();
        while !rest.is_empty() {
            let size = sizes
                .next()
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            let (chunk, tail) = rest.split_at(size);
            decoder.push(chunk).expect("fits");
            frames.extend(drain(&mut decoder).expect("valid"));
            rest = tail;
        }
        frames
    }

    /// Pieces that make up STOMP-like input far more often than random bytes do.
    fn stream_piece() -> impl Strategy<Value = Vec<u8>> {
        let words = [
            &b"SEND"[..],
            b"CONNECT",
            b"MESSAGE",
            b"\n",
            b"\r\n",
            b"\r",
            b":",
            b"\0",
            b"\\",
            b"\\c",
            b"content-length:",
            b"content-length:3",
            b"content-length:99999999",
            b"destination:/topic/a",
            b"\xff",
        ];
        prop_oneof![
            prop::sample::select(words.to_vec()).prop_map(<[u8]>::to_vec),
            prop::collection::vec(any::<u8>(), 0..40),
        ]
    }

    proptest! {
        #[test]
        fn encoded_frames_decode_to_themselves(frame in arbitrary_frame()) {
            let wire = frame.encode(true);
            let mut decoder = Decoder::new(roomy_limits());
            decoder.set_escaping(true);
            let frames = decode_all(&mut decoder, &wire);
            prop_assert_eq!(frames, Ok(vec![as_decoded(&frame)]));
            prop_assert_eq!(decoder.buffered(), 0);
        }

        #[test]
        fn any_input_in_any_chunking_stays_bounded_and_never_panics(
            pieces in prop::collection::vec(stream_piece(), 0..60),
            chunk_sizes in prop::collection::vec(1usize..64, 1..8),
            escaping in any::<bool>(),
        ) {
            let input = pieces.concat();
            let limits = Limits { max_frame: 256, max_headers: 4, max_header_line: 32 };
            let mut decoder = Decoder::new(limits);
            decoder.set_escaping(escaping);
            let mut rest = &input[..];
            let mut sizes = chunk_sizes.iter().cycle();
            while !rest.is_empty() {
                let size = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
                let (chunk, tail) = rest.split_at(size);
                let _ = decoder.push(chunk);
                prop_assert!(decoder.buffered() <= limits.max_frame + chunk.len());
                for _ in 0..=input.len() {
                    match decoder.next_frame() {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
                prop_assert!(decoder.buffered() <= limits.max_frame);
                rest = tail;
            }
        }

        #[test]
        fn a_stream_decodes_the_same_however_it_is_split(
            frames in prop::collection::vec(
                (arbitrary_frame(), prop::collection::vec(prop::bool::ANY, 0..3)),
                1..5,
            ),
            chunk_sizes in prop::collection::vec(1usize..50, 1..6),
        ) {
            let mut wire = Vec::new();
            for (frame, heartbeats) in &frames {
                for crlf in heartbeats {
                    wire.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                }
                wire.extend_from_slice(&frame.encode(true));
            }
            let expected: Vec<Frame> = frames.iter().map(|(frame, _)| as_decoded(frame)).collect();
            prop_assert_eq!(&decode_in_chunks(&wire, &[wire.len()]), &expected);
            prop_assert_eq!(&decode_in_chunks(&wire, &chunk_sizes), &expected);
            prop_assert_eq!(&decode_in_chunks(&wire, &[1]), &expected);
            for split in 1..wire.len() {
                let (head, tail) = wire.split_at(split);
                let mut decoder = Decoder::new(roomy_limits());
                decoder.set_escaping(true);
                decoder.push(head).expect("fits");
                let mut decoded = drain(&mut decoder).expect("valid");
                decoder.push(tail).expect("fits");
                decoded.extend(drain(&mut decoder).expect("valid"));
                prop_assert_eq!(&decoded, &expected);
            }
        }
    }
}
