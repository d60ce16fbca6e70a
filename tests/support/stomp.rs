//! A STOMP client over a raw WebSocket. Frames are written by hand, or built
//! from parts and encoded here, and what comes back is parsed here too,
//! apart from Herald's own codec, so a test sees exactly what is on the
//! wire: which WebSocket messages carried which bytes, heart-beat EOLs
//! included.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use super::{TestNode, WsSocket, WAIT};

/// One STOMP frame, to send or as received.
#[derive(Clone, Debug, PartialEq)]
pub struct StompFrame {
    pub command: String,
    /// In wire order; a repeated header keeps every occurrence.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether it arrived in a binary WebSocket message (received frames only).
    pub binary: bool,
}

impl StompFrame {
    pub fn new(command: &str) -> StompFrame {
        StompFrame {
            command: command.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            binary: false,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> StompFrame {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> StompFrame {
        self.body = body.into();
        self
    }

    /// The body with a `content-length` header saying its size.
    pub fn sized_body(self, body: impl Into<Vec<u8>>) -> StompFrame {
        let body = body.into();
        let length = body.len().to_string();
        self.header("content-length", &length).body(body)
    }

    /// A header's value; the first occurrence wins, as STOMP 1.2 says.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A header that must be there.
    pub fn must(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or_else(|_| panic!("body is not UTF-8: {self:?}"))
    }

    /// The frame's bytes: header names and values escaped (except in
    /// CONNECT and CONNECTED, which STOMP leaves unescaped), the body as
    /// given, the NUL. No `content-length` is added: tests say when.
    pub fn encode(&self) -> Vec<u8> {
        let escaped = !matches!(self.command.as_str(), "CONNECT" | "CONNECTED");
        let mut bytes = Vec::with_capacity(64 + self.body.len());
        bytes.extend_from_slice(self.command.as_bytes());
        bytes.push(b'\n');
        for (name, value) in &self.headers {
            for (at, part) in [name, value].into_iter().enumerate() {
                if at == 1 {
                    bytes.push(b':');
                }
                if escaped {
                    bytes.extend_from_slice(escape(part).as_bytes());
                } else {
                    bytes.extend_from_slice(part.as_bytes());
                }
            }
            bytes.push(b'\n');
        }
        bytes.push(b'\n');
        bytes.extend_from_slice(&self.body);
        bytes.push(0);
        bytes
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            ':' => out.push_str("\\c"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('c') => out.push(':'),
            other => panic!("Herald sent an undefined escape \\{other:?} in {text:?}"),
        }
    }
    out
}

/// What the bytes at the start of a buffer hold.
enum Parsed {
    /// One heart-beat EOL of this many bytes.
    HeartBeat(usize),
    /// A whole frame and the bytes it took.
    Frame(StompFrame, usize),
    Incomplete,
}

/// Parses what Herald sent; anything malformed fails the test, since a
/// server must never send it.
fn parse(buffer: &[u8]) -> Parsed {
    if buffer.starts_with(b"\n") {
        return Parsed::HeartBeat(1);
    }
    if buffer.starts_with(b"\r\n") {
        return Parsed::HeartBeat(2);
    }
    if buffer == b"\r" {
        return Parsed::Incomplete;
    }
    let Some(blank) = find_blank_line(buffer) else {
        return Parsed::Incomplete;
    };
    let head = std::str::from_utf8(&buffer[..blank.start])
        .unwrap_or_else(|_| panic!("frame head is not UTF-8: {:?}", &buffer[..blank.start]));
    let mut lines = head
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let command = lines.next().unwrap_or_default().to_owned();
    let escaped = command != "CONNECTED";
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("header line without a colon: {line:?} in {head:?}"));
            if escaped {
                (unescape(name), unescape(value))
            } else {
                (name.to_owned(), value.to_owned())
            }
        })
        .collect();
    let body_start = blank.end;
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map(|(_, value)| {
            value
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("content-length {value:?} is not a number"))
        });
    let body_end = match length {
        Some(length) => {
            if buffer.len() <= body_start + length {
                return Parsed::Incomplete;
            }
            assert_eq!(
                buffer[body_start + length],
                0,
                "no NUL right after the {length} bytes content-length announced: {:?}",
                String::from_utf8_lossy(buffer)
            );
            body_start + length
        }
        None => match buffer[body_start..].iter().position(|&b| b == 0) {
            Some(at) => body_start + at,
            None => return Parsed::Incomplete,
        },
    };
    let frame = StompFrame {
        command,
        headers,
        body: buffer[body_start..body_end].to_vec(),
        binary: false,
    };
    Parsed::Frame(frame, body_end + 1)
}

/// Where the blank line ending a frame's head is: the head before it, the
/// body after it.
fn find_blank_line(buffer: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut at = 0;
    while let Some(newline) = buffer[at..].iter().position(|&b| b == b'\n') {
        let end = at + newline + 1;
        if buffer[end..].starts_with(b"\n") {
            return Some(at + newline..end + 1);
        }
        if buffer[end..].starts_with(b"\r\n") {
            return Some(at + newline..end + 2);
        }
        at = end;
    }
    None
}

/// What reading the socket gave.
enum Event {
    Frame(StompFrame),
    Closed(u16),
    TimedOut,
}

/// A STOMP session over a raw WebSocket.
pub struct StompClient {
    pub socket: WsSocket,
    /// The subprotocol Herald chose, from its `Sec-WebSocket-Protocol`.
    pub protocol: Option<String>,
    /// Bytes received and not yet parsed into a frame.
    inbound: Vec<u8>,
    /// Whether the last WebSocket message received was binary.
    inbound_binary: bool,
    /// When each heart-beat EOL from Herald arrived.
    pub heartbeats: Vec<Instant>,
    next_receipt: u64,
}

impl StompClient {
    /// Opens `url`, offering `subprotocols` (none: no header at all).
    pub async fn open(
        url: &str,
        subprotocols: &[&str],
    ) -> Result<StompClient, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if !subprotocols.is_empty() {
            let offer = HeaderValue::from_str(&subprotocols.join(", ")).expect("header value");
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", offer);
        }
        Self::open_request(request).await
    }

    pub async fn open_request(
        request: Request,
    ) -> Result<StompClient, tokio_tungstenite::tungstenite::Error> {
        let (socket, response) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async_with_config(request, None, true),
        )
        .await
        .expect("handshake in time")?;
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|value| value.to_str().expect("ASCII subprotocol").to_owned());
        Ok(StompClient {
            socket,
            protocol,
            inbound: Vec::new(),
            inbound_binary: false,
            heartbeats: Vec::new(),
            next_receipt: 0,
        })
    }

    /// A receipt id no earlier frame of this client used.
    pub fn fresh_receipt(&mut self) -> String {
        self.next_receipt += 1;
        format!("r-{}", self.next_receipt)
    }

    /// Sends the frame in one WebSocket message: text when it is UTF-8,
    /// binary otherwise (a text message must be UTF-8).
    pub async fn send_frame(&mut self, frame: &StompFrame) {
        let bytes = frame.encode();
        match String::from_utf8(bytes) {
            Ok(text) => self.send_text(&text).await,
            Err(err) => self.send_binary(err.as_bytes()).await,
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.socket
            .send(Message::binary(bytes.to_vec()))
            .await
            .expect("send");
    }

    /// Sends `text` cut every `piece` bytes, each piece its own WebSocket
    /// text message (so `text` is ASCII, or cut at character boundaries).
    pub async fn send_in_pieces(&mut self, text: &str, piece: usize) {
        for chunk in text.as_bytes().chunks(piece) {
            let chunk = std::str::from_utf8(chunk).expect("pieces cut at character boundaries");
            self.socket
                .feed(Message::text(chunk))
                .await
                .expect("send piece");
        }
        self.socket.flush().await.expect("flush");
    }

    /// Sends CONNECT with exactly `headers` and returns Herald's answer.
    pub async fn connect_with(&mut self, command: &str, headers: &[(&str, &str)]) -> StompFrame {
        let mut frame = StompFrame::new(command);
        for (name, value) in headers {
            frame = frame.header(name, value);
        }
        self.send_frame(&frame).await;
        self.next_frame().await
    }

    /// A STOMP 1.2 CONNECT with `extra` headers, which must be CONNECTED.
    pub async fn connect(&mut self, extra: &[(&str, &str)]) -> StompFrame {
        let mut headers = vec![("accept-version", "1.2"), ("host", "herald")];
        headers.extend_from_slice(extra);
        let connected = self.connect_with("CONNECT", &headers).await;
        assert_eq!(connected.command, "CONNECTED", "{connected:?}");
        connected
    }

    async fn read(&mut self, deadline: tokio::time::Instant) -> Event {
        loop {
            match parse(&self.inbound) {
                Parsed::HeartBeat(length) => {
                    self.heartbeats.push(Instant::now());
                    self.inbound.drain(..length);
                    continue;
                }
                Parsed::Frame(mut frame, length) => {
                    frame.binary = self.inbound_binary;
                    self.inbound.drain(..length);
                    return Event::Frame(frame);
                }
                Parsed::Incomplete => {}
            }
            let Ok(message) = tokio::time::timeout_at(deadline, self.socket.next()).await else {
                return Event::TimedOut;
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    self.inbound_binary = false;
                    self.inbound.extend_from_slice(text.as_bytes());
                }
                Some(Ok(Message::Binary(bytes))) => {
                    self.inbound_binary = true;
                    self.inbound.extend_from_slice(&bytes);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(Some(close)))) => return Event::Closed(close.code.into()),
                Some(Ok(Message::Close(None))) => return Event::Closed(1005),
                Some(Err(err)) => panic!("connection failed before a close frame: {err}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// The next frame, or None if none came within `within`; a close
    /// meanwhile fails the test.
    pub async fn try_next_frame(&mut self, within: Duration) -> Option<StompFrame> {
        match self.read(tokio::time::Instant::now() + within).await {
            Event::Frame(frame) => Some(frame),
            Event::TimedOut => None,
            Event::Closed(code) => panic!("closed with {code} while a frame was awaited"),
        }
    }

    /// The next frame, or the close code if the session closes first.
    pub async fn next_frame_or_close(&mut self) -> Result<StompFrame, u16> {
        match self.read(tokio::time::Instant::now() + WAIT).await {
            Event::Frame(frame) => Ok(frame),
            Event::Closed(code) => Err(code),
            Event::TimedOut => panic!("neither a frame nor the close came in time"),
        }
    }

    pub async fn next_frame(&mut self) -> StompFrame {
        self.try_next_frame(WAIT)
            .await
            .expect("a frame arrives in time")
    }

    pub async fn expect(&mut self, command: &str) -> StompFrame {
        let frame = self.next_frame().await;
        assert_eq!(frame.command, command, "unexpected frame {frame:?}");
        frame
    }

    pub async fn expect_receipt(&mut self, receipt: &str) {
        let frame = self.expect("RECEIPT").await;
        assert_eq!(frame.get("receipt-id"), Some(receipt), "{frame:?}");
    }

    pub async fn expect_message(&mut self) -> StompFrame {
        self.expect("MESSAGE").await
    }

    /// The next frame must be an ERROR whose `message` a person can read.
    pub async fn expect_error(&mut self) -> StompFrame {
        let error = self.expect("ERROR").await;
        assert!(
            error.get("message").is_some_and(|m| !m.trim().is_empty()),
            "an ERROR needs a message header: {error:?}"
        );
        error
    }

    /// An ERROR (see [`expect_error`](Self::expect_error)), then the close
    /// with `code`.
    pub async fn expect_error_then_close(&mut self, code: u16) -> StompFrame {
        let error = self.expect_error().await;
        assert_eq!(self.expect_close().await, code, "after {error:?}");
        error
    }

    /// Reads to the close frame, with nothing but heart-beats on the way,
    /// and returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        match self
            .read(tokio::time::Instant::now() + Duration::from_secs(30))
            .await
        {
            Event::Closed(code) => code,
            Event::Frame(frame) => panic!("expected the close, got {frame:?}"),
            Event::TimedOut => panic!("no close in time"),
        }
    }

    /// Asserts no frame arrives for `within` (heart-beats aside).
    pub async fn expect_silence(&mut self, within: Duration) {
        if let Some(frame) = self.try_next_frame(within).await {
            panic!("expected nothing, got {frame:?}");
        }
        assert!(
            self.inbound.is_empty(),
            "bytes that are no STOMP frame: {:?}",
            String::from_utf8_lossy(&self.inbound)
        );
    }

    /// Sends `frame` with a fresh receipt and waits for that RECEIPT.
    pub async fn with_receipt(&mut self, frame: StompFrame) {
        let receipt = self.fresh_receipt();
        self.send_frame(&frame.header("receipt", &receipt)).await;
        self.expect_receipt(&receipt).await;
    }

    /// SUBSCRIBE, answered by its RECEIPT: the subscription is in force.
    pub async fn subscribe(&mut self, destination: &str, id: &str) {
        self.with_receipt(
            StompFrame::new("SUBSCRIBE")
                .header("destination", destination)
                .header("id", id),
        )
        .await;
    }

    pub async fn unsubscribe(&mut self, id: &str) {
        self.with_receipt(StompFrame::new("UNSUBSCRIBE").header("id", id))
            .await;
    }

    /// SEND of a body with a content-type, answered by its RECEIPT.
    pub async fn send_to(&mut self, destination: &str, content_type: &str, body: &[u8]) {
        self.with_receipt(
            StompFrame::new("SEND")
                .header("destination", destination)
                .header("content-type", content_type)
                .sized_body(body),
        )
        .await;
    }
}

impl TestNode {
    /// `ws://…/stomp`, with `query` (such as `?token=…`) appended.
    pub fn stomp_url(&self, query: &str) -> String {
        format!("ws://{}/stomp{query}", self.addr)
    }

    /// A STOMP 1.2 session on `/stomp`, CONNECTED.
    pub async fn stomp(&self) -> StompClient {
        self.stomp_with(&[]).await.0
    }

    /// A STOMP 1.2 session on `/stomp` whose CONNECT carries `extra`
    /// headers; returns it with its CONNECTED frame.
    pub async fn stomp_with(&self, extra: &[(&str, &str)]) -> (StompClient, StompFrame) {
        let mut client = StompClient::open(&self.stomp_url(""), &[])
            .await
            .expect("STOMP WebSocket opens");
        let connected = client.connect(extra).await;
        (client, connected)
    }
}

/// Standard base64 (RFC 4648, with padding), to check what JSON clients
/// get for a binary body.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
