//! The STOMP side of a session: CONNECT and its token, frames turned into
//! Broker messages, subscriptions by id, receipts, transactions,
//! heart-beats both ways, and `MESSAGE` frames for deliveries.
//!
//! The Broker holds one subscription per pattern and session; this side
//! keeps the STOMP subscriptions (many ids may share a pattern) and finds
//! which of them a delivered message matches. Every refusal is an `ERROR`
//! frame followed by the close, as STOMP requires.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws::WebsocketContext;
use bytes::Bytes;
use bytestring::ByteString;
use log::debug;

use super::ask::{Gate, Replay, Waiting};
use super::subscriptions::{Refused, Subscription, Subscriptions};
use super::{Framing, Session, SessionSettings};
use crate::broker::{Broker, Lane, Publish, Subscribe, Unsubscribe};
use crate::frame::{Body, Prepared};
use crate::ports::SendToBackend;
use crate::protocol::destination::{
    is_exact, send_target, subscription_pattern, topic_destination, SendTarget,
};
use crate::protocol::stomp::{push_header, Command, Decoder, Frame, Limits, StompError, Version};
use crate::protocol::{Disconnect, ErrorCode};
use crate::reply::{Outcome, Reply};

#[path = "stomp_service.rs"]
mod service;

type Ctx = WebsocketContext<Session>;

/// How long a STOMP client has to send CONNECT after the upgrade.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// How often a session still waiting for CONNECT checks for a drain.
const DRAIN_CHECK: Duration = Duration::from_millis(200);
/// What a session's open transactions may hold until COMMIT, in all.
const MAX_HELD_FRAMES: usize = 1024;
const MAX_HELD_BYTES: usize = 1 << 20;
const MAX_OPEN_TRANSACTIONS: usize = 16;
/// Where a STOMP client sends a fresh token.
const REFRESH: &str = "/herald/refresh";
/// What a STOMP client subscribes to for the notice that its token
/// expires soon.
const EXPIRING: &str = "/herald/expiring";
/// What a STOMP client subscribes to for the notice that the server ended
/// one of its subscriptions (a refresh took the right away).
const UNSUBSCRIBED: &str = "/herald/unsubscribed";
/// The longest content type AMQP can carry (a short string).
const MAX_CONTENT_TYPE: usize = 255;
/// How often a SockJS session says it is alive.
const SOCKJS_HEARTBEAT: Duration = Duration::from_secs(25);
/// How much silence past the agreed interval ends a session: the interval
/// twice, as stompjs allows the server.
const SILENCE_FACTOR: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Upgraded; waiting for CONNECT.
    Connecting,
    /// CONNECT accepted; waiting for the Broker to take the session.
    Joining,
    Connected,
    /// DISCONNECT received: finishing what is in flight, then closing.
    Disconnecting,
    /// An `ERROR` went out; the close follows and nothing more is read.
    Failed,
}

pub(super) struct StompState {
    phase: Phase,
    decoder: Decoder,
    version: Version,
    token_pending: bool,
    subscriptions: Subscriptions,
    /// The id subscribed to [`EXPIRING`], if any.
    expiring: Option<String>,
    /// The id subscribed to [`UNSUBSCRIBED`], if any.
    unsubscribed: Option<String>,
    /// How many [`UNSUBSCRIBED`] notices went out, for their message ids.
    notices: u64,
    transactions: HashMap<String, Vec<Frame>>,
    held: Held,
    /// Frames that arrived while the Broker was taking the session.
    early: Vec<Frame>,
    /// Operations whose outcome has not come back yet.
    in_flight: usize,
    /// The receipt DISCONNECT asked for, sent once nothing is in flight.
    disconnect_receipt: Option<String>,
    /// When the client last sent anything (heart-beat EOLs included).
    last_data: Instant,
}

impl StompState {
    /// Every pattern the session's subscriptions hold.
    pub(super) fn patterns(&self) -> Vec<crate::topic::Pattern> {
        self.subscriptions.patterns()
    }

    /// Whether `id` names one of the notice subscriptions.
    fn is_notice_id(&self, id: &str) -> bool {
        self.expiring.as_deref() == Some(id) || self.unsubscribed.as_deref() == Some(id)
    }

    pub(super) fn new(settings: &SessionSettings, token_pending: bool) -> Self {
        StompState {
            phase: Phase::Connecting,
            decoder: Decoder::new(Limits {
                max_frame: settings.max_frame,
                ..Limits::default()
            }),
            version: Version::V1_2,
            token_pending,
            subscriptions: Subscriptions::new(settings.max_subscriptions),
            expiring: None,
            unsubscribed: None,
            notices: 0,
            transactions: HashMap::new(),
            held: Held::default(),
            early: Vec::new(),
            in_flight: 0,
            disconnect_receipt: None,
            last_data: Instant::now(),
        }
    }
}

/// What the open transactions hold, against the session's bounds.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    frames: usize,
    bytes: usize,
}

/// What a held SEND counts against those bounds.
fn held_size(frame: &Frame) -> usize {
    let headers: usize = frame
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    frame.body.len() + headers
}

/// An operation that failed: its code, and the receipt its `ERROR` names.
type Failed = (ErrorCode, Option<String>);

/// Why a frame is refused: what the client reads, and the close that
/// follows.
struct Refusal {
    message: String,
    close: Disconnect,
    /// Headers the `ERROR` carries besides `message`.
    headers: &'static [(&'static str, &'static str)],
}

impl Refusal {
    fn protocol(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            close: Disconnect::ProtocolError,
            headers: &[],
        }
    }

    fn flooded(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            close: Disconnect::Flooded,
            headers: &[],
        }
    }

    fn refused(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            close: Disconnect::Refused,
            headers: &[],
        }
    }

    fn from_code(code: ErrorCode, detail: &str) -> Self {
        let close = match code {
            ErrorCode::Unavailable | ErrorCode::Timeout => Disconnect::Overloaded,
            ErrorCode::BadRequest => Disconnect::ProtocolError,
            _ => Disconnect::Refused,
        };
        Refusal {
            message: format!("{code}: {detail}"),
            close,
            headers: &[],
        }
    }
}

impl From<StompError> for Refusal {
    fn from(err: StompError) -> Self {
        Refusal {
            close: if err.is_too_large() {
                Disconnect::FrameTooLarge
            } else {
                Disconnect::ProtocolError
            },
            message: err.to_string(),
            headers: &[],
        }
    }
}

type Handled = Result<(), Refusal>;

fn require<'a>(frame: &'a Frame, name: &str) -> Result<&'a str, Refusal> {
    frame.header(name).ok_or_else(|| {
        Refusal::protocol(format!(
            "{} needs a `{name}` header",
            frame.command.as_str()
        ))
    })
}

fn receipt_of(frame: &Frame) -> Option<String> {
    frame.header("receipt").map(str::to_owned)
}

/// `cx,cy` from a CONNECT `heart-beat` header (absent: no heart-beats).
fn parse_heartbeat(value: Option<&str>) -> Result<(u64, u64), Refusal> {
    let Some(value) = value else {
        return Ok((0, 0));
    };
    let malformed =
        || Refusal::protocol(format!("heart-beat `{value}` is not two numbers `cx,cy`"));
    let (send, receive) = value.split_once(',').ok_or_else(malformed)?;
    let send = send.trim().parse().map_err(|_| malformed())?;
    let receive = receive.trim().parse().map_err(|_| malformed())?;
    Ok((send, receive))
}

/// The token a CONNECT carries: `passcode`, or `Authorization: Bearer`.
fn connect_token(frame: &Frame) -> Option<&str> {
    let passcode = frame.header("passcode").filter(|token| !token.is_empty());
    passcode.or_else(|| {
        let value = frame
            .header("Authorization")
            .or_else(|| frame.header("authorization"))?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|token| !token.is_empty())
    })
}

impl Session {
    fn stomp(&mut self) -> &mut StompState {
        // Only called on STOMP sessions, whose state lives as long as they.
        self.stomp
            .as_deref_mut()
            .expect("a STOMP session keeps its STOMP state")
    }

    /// Whether header values are escaped: only once CONNECT settled a
    /// version that escapes, so an `ERROR` before that reads the same to a
    /// client of any version.
    fn escapes(&self) -> bool {
        self.stomp
            .as_ref()
            .is_some_and(|s| s.phase != Phase::Connecting && s.version.escapes())
    }

    pub(super) fn start_stomp(&mut self, ctx: &mut Ctx) {
        if self.framing == Framing::SockJs {
            ctx.text("o");
            ctx.run_interval(SOCKJS_HEARTBEAT, |_, ctx| ctx.text("h"));
        }
        ctx.run_later(CONNECT_WITHIN, |session, ctx| {
            if session.stomp().phase == Phase::Connecting {
                let message = format!(
                    "no CONNECT frame within {} s of the upgrade",
                    CONNECT_WITHIN.as_secs()
                );
                session.fail(ctx, Refusal::refused(message), None);
            }
        });
        self.close_if_draining_before_connect(ctx);
    }

    /// A session that has not sent CONNECT is not yet the Broker's, so a
    /// drain cannot close it: it looks for itself every
    /// [`DRAIN_CHECK`] until CONNECT, and closes with the hint and 1001
    /// once the node drains.
    fn close_if_draining_before_connect(&mut self, ctx: &mut Ctx) {
        ctx.run_later(DRAIN_CHECK, |session, ctx| {
            if session.stomp().phase != Phase::Connecting {
                return;
            }
            if session.broker.is_draining() {
                session.reconnect_hint(ctx, Duration::ZERO);
                return session.close(ctx, Disconnect::Shutdown);
            }
            session.close_if_draining_before_connect(ctx);
        });
    }

    /// Writes one STOMP frame (or heart-beat) to the client.
    fn write_stomp(&mut self, ctx: &mut Ctx, bytes: Vec<u8>, text: bool) {
        match self.framing {
            Framing::Plain if text => match ByteString::try_from(Bytes::from(bytes)) {
                Ok(text) => ctx.text(text),
                Err(_) => debug!("session {}: a frame that is not UTF-8", self.name),
            },
            Framing::Plain => ctx.binary(bytes),
            Framing::SockJs => {
                // SockJS carries strings only: bytes that are not UTF-8
                // cannot cross it unchanged.
                let text = String::from_utf8_lossy(&bytes);
                let quoted = serde_json::to_string(&text).unwrap_or_default();
                ctx.text(format!("a[{quoted}]"));
            }
        }
    }

    fn write_frame(&mut self, ctx: &mut Ctx, frame: &Frame) {
        let bytes = frame.encode(self.escapes());
        let text = std::str::from_utf8(&bytes).is_ok();
        self.write_stomp(ctx, bytes, text);
    }

    fn write_receipt(&mut self, ctx: &mut Ctx, receipt: Option<String>) {
        if let Some(receipt) = receipt {
            let frame = Frame::new(Command::Receipt).with_header("receipt-id", &receipt);
            self.write_frame(ctx, &frame);
        }
    }

    /// Sends `ERROR` and closes: the one way a STOMP session refuses.
    fn fail(&mut self, ctx: &mut Ctx, refusal: Refusal, receipt: Option<String>) {
        if self.stomp().phase == Phase::Failed {
            return;
        }
        debug!("session {}: STOMP ERROR: {}", self.name, refusal.message);
        self.write_error(ctx, &refusal.message, receipt.as_deref(), refusal.headers);
        self.close(ctx, refusal.close);
    }

    /// Tells a STOMP client why the server ends its session (kicked, token
    /// expired, shutdown, too slow) with an `ERROR`, as STOMP ends sessions;
    /// refusals have sent theirs already.
    pub(super) fn stomp_farewell(&mut self, ctx: &mut Ctx, reason: Disconnect) {
        if matches!(self.stomp().phase, Phase::Failed | Phase::Disconnecting) {
            return;
        }
        let message = format!("{}: {}", reason.reason(), reason.explain());
        self.write_error(ctx, &message, None, &[]);
    }

    /// A drain's farewell: the `ERROR` carries when to come back, and the
    /// close that follows finds the session already told.
    pub(super) fn stomp_reconnect(&mut self, ctx: &mut Ctx, after_ms: u64) {
        if matches!(self.stomp().phase, Phase::Failed | Phase::Disconnecting) {
            return;
        }
        let after = after_ms.to_string();
        self.write_error(
            ctx,
            "the node is draining; reconnect after x-herald-reconnect-after-ms",
            None,
            &[("x-herald-reconnect-after-ms", &after)],
        );
    }

    /// The last frame of a session: `ERROR` with `message` (also as the
    /// body), the refused frame's receipt, and `headers`.
    fn write_error(
        &mut self,
        ctx: &mut Ctx,
        message: &str,
        receipt: Option<&str>,
        headers: &[(&str, &str)],
    ) {
        let mut frame = Frame::new(Command::Error).with_header("message", message);
        if let Some(receipt) = receipt {
            frame = frame.with_header("receipt-id", receipt);
        }
        for (name, value) in headers {
            frame = frame.with_header(name, value);
        }
        let frame = frame
            .with_header("content-type", "text/plain")
            .with_body(message.as_bytes().to_vec());
        self.write_frame(ctx, &frame);
        self.stomp().phase = Phase::Failed;
    }

    /// Bytes of one or more STOMP frames (or parts of them).
    pub(super) fn on_stomp_bytes(&mut self, bytes: &[u8], ctx: &mut Ctx) {
        let state = self.stomp();
        if matches!(state.phase, Phase::Failed | Phase::Disconnecting) {
            return;
        }
        state.last_data = Instant::now();
        // Frames completed before an oversized one are still handled.
        let pushed = state.decoder.push(bytes);
        loop {
            let state = self.stomp();
            if matches!(state.phase, Phase::Failed | Phase::Disconnecting) {
                return;
            }
            match state.decoder.next_frame() {
                Ok(Some(frame)) => self.on_stomp_frame(frame, ctx),
                Ok(None) => break,
                Err(err) => return self.refuse_stream(ctx, err),
            }
        }
        if let Err(err) = pushed {
            self.refuse_stream(ctx, err);
        }
    }

    /// Refuses bytes that are not STOMP, naming the frame's receipt when the
    /// decoder read one.
    fn refuse_stream(&mut self, ctx: &mut Ctx, err: StompError) {
        let receipt = self.stomp().decoder.refused_receipt().map(str::to_owned);
        self.fail(ctx, err.into(), receipt);
    }

    /// A WebSocket message over the frame limit, which never reaches the
    /// decoder: STOMP still gets its `ERROR` before the close.
    pub(super) fn refuse_oversized(&mut self, ctx: &mut Ctx) {
        let max = self.settings.max_frame;
        self.fail(ctx, StompError::TooLarge { max }.into(), None);
    }

    /// A SockJS message: a JSON array of strings (or one string), each
    /// holding STOMP bytes.
    pub(super) fn on_sockjs_message(&mut self, bytes: &[u8], ctx: &mut Ctx) {
        if bytes.is_empty() {
            return;
        }
        let parts = serde_json::from_slice::<Vec<String>>(bytes)
            .or_else(|_| serde_json::from_slice::<String>(bytes).map(|one| vec![one]));
        match parts {
            Ok(parts) => {
                for part in parts {
                    self.on_stomp_bytes(part.as_bytes(), ctx);
                }
            }
            Err(_) => self.fail(
                ctx,
                Refusal::protocol("a SockJS message must be a JSON array of strings"),
                None,
            ),
        }
    }

    fn on_stomp_frame(&mut self, frame: Frame, ctx: &mut Ctx) {
        let phase = self.stomp().phase;
        let outcome = match phase {
            Phase::Connecting => match frame.command {
                Command::Connect | Command::Stomp => self.on_connect(&frame, ctx),
                other => Err(Refusal::protocol(format!(
                    "the first frame must be CONNECT or STOMP, not {}",
                    other.as_str()
                ))),
            },
            Phase::Joining => {
                let early_limit = self.early_limit;
                let state = self.stomp();
                if state.early.len() >= early_limit {
                    Err(Refusal::flooded("too many frames before CONNECTED"))
                } else {
                    state.early.push(frame);
                    return;
                }
            }
            Phase::Connected => return self.on_connected_frame(frame, ctx),
            Phase::Disconnecting | Phase::Failed => return,
        };
        if let Err(refusal) = outcome {
            self.fail(ctx, refusal, receipt_of(&frame));
        }
    }

    /// The refusal for a frame over the rate limit; STOMP has no way to
    /// refuse a frame and go on, so the session ends with it.
    fn rate_refusal(&self) -> Refusal {
        self.broker.counters().sessions_closed_for_abuse.inc();
        Refusal::flooded(format!(
            "rate_limited: more than {} frames per second",
            self.settings.rate_limit
        ))
    }

    /// A WebSocket message (or ping, or pong) over the rate limit.
    pub(super) fn refuse_rate(&mut self, ctx: &mut Ctx) {
        let refusal = self.rate_refusal();
        self.fail(ctx, refusal, None);
    }

    fn on_connected_frame(&mut self, frame: Frame, ctx: &mut Ctx) {
        let paid = std::mem::take(&mut self.prepaid);
        let outcome = if paid || self.take_token() {
            match self.hold_back(|| Replay::Stomp(frame.clone())) {
                Waiting::No => self.dispatch(&frame, ctx),
                Waiting::Queued => Ok(()),
                Waiting::Full => Err(Refusal::flooded(
                    "rate_limited: too many frames while the application decides an earlier one",
                )),
            }
        } else {
            Err(self.rate_refusal())
        };
        if let Err(refusal) = outcome {
            self.fail(ctx, refusal, receipt_of(&frame));
        }
    }

    fn dispatch(&mut self, frame: &Frame, ctx: &mut Ctx) -> Handled {
        match frame.command {
            Command::Send => self.on_send(frame, ctx),
            Command::Subscribe => self.on_subscribe(frame, ctx),
            Command::Unsubscribe => self.on_unsubscribe(frame, ctx),
            Command::Begin => self.on_begin(frame, ctx),
            Command::Commit => self.on_commit(frame, ctx),
            Command::Abort => self.on_abort(frame, ctx),
            // Topics are not redelivered, so an ACK or NACK changes
            // nothing; its receipt says it was read.
            Command::Ack | Command::Nack => {
                self.write_receipt(ctx, receipt_of(frame));
                Ok(())
            }
            Command::Disconnect => {
                let state = self.stomp();
                state.phase = Phase::Disconnecting;
                state.disconnect_receipt = receipt_of(frame);
                self.finish_disconnect(ctx);
                Ok(())
            }
            Command::Connect | Command::Stomp => {
                Err(Refusal::protocol("the session is already connected"))
            }
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                Err(Refusal::protocol(format!(
                    "{} is a frame only the server sends",
                    frame.command.as_str()
                )))
            }
        }
    }

    fn on_connect(&mut self, frame: &Frame, ctx: &mut Ctx) -> Handled {
        let version =
            Version::negotiate(frame.header("accept-version")).ok_or_else(|| Refusal {
                headers: &[("version", "1.2,1.1,1.0")],
                ..Refusal::protocol("no common STOMP version: this server speaks 1.0, 1.1 and 1.2")
            })?;
        let heartbeat = parse_heartbeat(frame.header("heart-beat"))?;
        let tokens = self.settings.tokens.0.clone();
        // A user named at the handshake was counted there.
        let counted = self.identity.user.is_some();
        match connect_token(frame).filter(|_| tokens.enabled()) {
            Some(token) => {
                let proven = tokens
                    .verify(token)
                    .map_err(|why| Refusal::refused(format!("unauthorized: {why}")))?;
                if let Some(user) = &self.identity.user {
                    if proven.user.as_deref() != Some(&**user) {
                        return Err(Refusal::refused(
                            "unauthorized: the handshake and CONNECT carry tokens of different users",
                        ));
                    }
                }
                if let Some(user) = proven.user.as_ref().filter(|_| !counted) {
                    let slot = self.settings.limits.admit_user(user).map_err(|refused| {
                        Refusal::refused(format!("{}: {refused}", ErrorCode::TooManyConnections))
                    })?;
                    self.slots.push(slot);
                }
                self.identity = proven;
                self.resolve_access();
            }
            None if self.stomp().token_pending => {
                return Err(Refusal::refused(
                    "unauthorized: a token is required: send it as the CONNECT `passcode` or an `Authorization: Bearer` header",
                ));
            }
            None => {}
        }
        let state = self.stomp();
        state.version = version;
        state.phase = Phase::Joining;
        // Frames pipelined behind CONNECT are read while the Broker takes
        // the session: they are already in the agreed version's escaping.
        state.decoder.set_escaping(version.escapes());
        self.join(ctx, move |session, ctx| {
            session.on_joined(version, heartbeat, ctx)
        });
        Ok(())
    }

    fn on_joined(
        &mut self,
        version: Version,
        (client_send, client_receive): (u64, u64),
        ctx: &mut Ctx,
    ) {
        let offer = crate::millis(self.settings.stomp_heartbeat);
        let mut connected = Frame::new(Command::Connected)
            .with_header("version", version.as_str())
            .with_header("heart-beat", &format!("{offer},{offer}"))
            .with_header("session", &self.name)
            .with_header("server", concat!("herald/", env!("CARGO_PKG_VERSION")));
        if let Some(user) = &self.identity.user {
            connected = connected.with_header("user-name", user);
        }
        self.write_frame(ctx, &connected);
        self.stomp().phase = Phase::Connected;
        // Only now is the user known for a token sent in CONNECT.
        self.log_open();
        if offer > 0 && client_receive > 0 {
            let every = Duration::from_millis(offer.max(client_receive));
            ctx.run_interval(every, |session, ctx| {
                session.write_stomp(ctx, b"\n".to_vec(), true)
            });
        }
        if offer > 0 && client_send > 0 {
            let expected = Duration::from_millis(offer.max(client_send));
            self.stomp().last_data = Instant::now();
            ctx.run_interval(expected, move |session, ctx| {
                let silent = session.stomp().last_data.elapsed();
                if silent > expected * SILENCE_FACTOR {
                    let message = format!(
                        "no heart-beat or frame from the client for {} ms (agreed: every {} ms)",
                        silent.as_millis(),
                        expected.as_millis()
                    );
                    let refusal = Refusal {
                        message,
                        close: Disconnect::NoHeartbeat,
                        headers: &[],
                    };
                    session.fail(ctx, refusal, None);
                }
            });
        }
        for frame in std::mem::take(&mut self.stomp().early) {
            if self.stomp().phase != Phase::Connected {
                break;
            }
            self.on_connected_frame(frame, ctx);
        }
    }

    /// Answers `receipt` (or refuses) once `outcome` is known.
    fn track(&mut self, ctx: &mut Ctx, outcome: Outcome, receipt: Option<String>) {
        let named = receipt.clone();
        let answered = async move { outcome.await.map(drop).map_err(|code| (code, named)) };
        self.track_all(ctx, answered, receipt.into_iter().collect());
    }

    /// Writes `receipts`, in order, once `outcome` succeeded; refuses with
    /// the failure's code and the receipt it names otherwise.
    fn track_all(
        &mut self,
        ctx: &mut Ctx,
        outcome: impl Future<Output = Result<(), Failed>> + 'static,
        receipts: Vec<String>,
    ) {
        self.stomp().in_flight += 1;
        ctx.spawn(outcome.into_actor(self).map(move |outcome, session, ctx| {
            session.stomp().in_flight -= 1;
            match outcome {
                Ok(()) if session.stomp().phase == Phase::Failed => {}
                Ok(()) => {
                    for receipt in receipts {
                        session.write_receipt(ctx, Some(receipt));
                    }
                }
                Err((code, receipt)) => {
                    return session.fail(ctx, Refusal::from_code(code, code.explain()), receipt)
                }
            }
            session.finish_disconnect(ctx);
        }));
    }

    fn ask_broker<M>(
        &mut self,
        ctx: &mut Ctx,
        receipt: Option<String>,
        build: impl FnOnce(Reply) -> M,
    ) where
        M: Message<Result = ()> + Send + 'static,
        Broker: Handler<M>,
    {
        let outcome = self.broker.ask(Lane::Session, build);
        self.track(ctx, outcome, receipt);
    }

    fn finish_disconnect(&mut self, ctx: &mut Ctx) {
        let state = self.stomp();
        if state.phase != Phase::Disconnecting || state.in_flight > 0 {
            return;
        }
        let receipt = state.disconnect_receipt.take();
        self.write_receipt(ctx, receipt);
        self.close_with(ctx, 1000, "disconnect");
    }

    fn on_send(&mut self, frame: &Frame, ctx: &mut Ctx) -> Handled {
        if frame.header("destination") == Some(REFRESH) {
            return self.on_refresh(frame, ctx);
        }
        if service::is_service(frame.header("destination")) {
            return self.on_service_send(frame, ctx);
        }
        // Asked before a transaction holds the SEND, so that its COMMIT
        // finds the answer kept; only where a rule asks, so that a SEND is
        // otherwise judged once, in `send_now`.
        if self.access.may_ask_publish() {
            if let Some(Gate::Ask(question)) = self.topic_gate(frame) {
                self.ask_then_replay(question, Replay::Stomp(frame.clone()), ctx);
                return Ok(());
            }
        }
        match frame.header("transaction") {
            Some(transaction) => self.hold(transaction, frame),
            None => {
                let outcome = self.send_now(frame)?;
                self.track(ctx, outcome, receipt_of(frame));
                Ok(())
            }
        }
    }

    /// A fresh token, as the `passcode` header or the body of a SEND to
    /// [`REFRESH`]: receipted when taken; refused like any other frame.
    fn on_refresh(&mut self, frame: &Frame, ctx: &mut Ctx) -> Handled {
        let body = std::str::from_utf8(&frame.body).unwrap_or_default().trim();
        let token = connect_token(frame).unwrap_or(body);
        self.refresh(token, ctx)
            .map_err(|why| Refusal::refused(format!("forbidden: {why}")))?;
        self.write_receipt(ctx, receipt_of(frame));
        Ok(())
    }

    /// Tells a session subscribed to [`EXPIRING`] that its token expires in
    /// `in_ms`; one that is not, learns it from the close. Says whether the
    /// notice went out.
    pub(super) fn stomp_expiring(&mut self, in_ms: u64, ctx: &mut Ctx) -> bool {
        let Some(id) = self.stomp().expiring.clone() else {
            return false;
        };
        let body = format!(r#"{{"in_ms":{in_ms}}}"#);
        let frame = Frame::new(Command::Message)
            .with_header("destination", EXPIRING)
            .with_header("subscription", &id)
            .with_header("message-id", &format!("expiring-{in_ms}"))
            .with_header("in-ms", &in_ms.to_string())
            .with_header("content-type", "application/json")
            .with_body(body.into_bytes());
        self.write_frame(ctx, &frame);
        true
    }

    /// Ends each subscription to one of `patterns` (see
    /// [`Session::recheck_subscriptions`]): it gets no more `MESSAGE`
    /// frames, and a session subscribed to [`UNSUBSCRIBED`] is told which
    /// one ended. Returns the patterns the Broker must let go.
    pub(super) fn stomp_end(
        &mut self,
        patterns: &[&crate::topic::Pattern],
        ctx: &mut Ctx,
    ) -> Vec<crate::topic::Pattern> {
        let removed = self
            .stomp()
            .subscriptions
            .remove_where(|subscription| patterns.contains(&&subscription.pattern));
        let mut released = Vec::new();
        for (ended, pattern) in removed {
            released.extend(pattern);
            let Some(notice_id) = self.stomp().unsubscribed.clone() else {
                continue;
            };
            self.stomp().notices += 1;
            let number = self.stomp().notices;
            let body = serde_json::json!({
                "destination": ended.destination,
                "subscription": ended.id,
                "reason": "forbidden",
            })
            .to_string();
            let frame = Frame::new(Command::Message)
                .with_header("destination", UNSUBSCRIBED)
                .with_header("subscription", &notice_id)
                .with_header("message-id", &format!("unsubscribed-{number}"))
                .with_header("x-herald-subscription", &ended.id)
                .with_header("content-type", "application/json")
                .with_body(body.into_bytes());
            self.write_frame(ctx, &frame);
        }
        released
    }

    /// Keeps a SEND for its transaction's COMMIT, within the session's
    /// bounds on what transactions may hold.
    fn hold(&mut self, transaction: &str, frame: &Frame) -> Handled {
        require(frame, "destination")?;
        let size = held_size(frame);
        let state = self.stomp();
        if state.held.frames >= MAX_HELD_FRAMES || state.held.bytes + size > MAX_HELD_BYTES {
            return Err(Refusal::refused(format!(
                "too_large: a session's transactions may hold at most {MAX_HELD_FRAMES} frames and {MAX_HELD_BYTES} bytes until COMMIT"
            )));
        }
        let Some(held) = state.transactions.get_mut(transaction) else {
            return Err(Refusal::protocol(format!(
                "transaction `{transaction}` was not begun"
            )));
        };
        held.push(frame.clone());
        state.held.frames += 1;
        state.held.bytes += size;
        Ok(())
    }

    /// What the rules (and the application) say of a SEND to a topic;
    /// `None` for anything else, which [`Self::send_now`] judges.
    fn topic_gate(&self, frame: &Frame) -> Option<Gate> {
        let destination = frame.header("destination")?;
        match send_target(destination, self.user()) {
            Ok(SendTarget::Topic(topic)) => Some(self.may_publish(&topic)),
            _ => None,
        }
    }

    /// Handles a frame again once the application has answered.
    pub(super) fn replay_stomp(&mut self, frame: &Frame, ctx: &mut Ctx) {
        if self.stomp().phase != Phase::Connected {
            return;
        }
        if let Err(refusal) = self.dispatch(frame, ctx) {
            self.fail(ctx, refusal, receipt_of(frame));
        }
    }

    /// Publishes or sends a SEND's body now; its outcome comes later.
    fn send_now(&mut self, frame: &Frame) -> Result<Outcome, Refusal> {
        let destination = require(frame, "destination")?;
        let content_type = frame.header("content-type");
        if content_type.is_some_and(|ct| ct.len() > MAX_CONTENT_TYPE) {
            return Err(Refusal::refused(format!(
                "too_large: content-type is longer than {MAX_CONTENT_TYPE} bytes"
            )));
        }
        let target = send_target(destination, self.user())
            .map_err(|err| Refusal::refused(format!("invalid_topic: {err}")))?;
        let body = Body::from_wire(frame.body.clone(), content_type);
        match target {
            SendTarget::Topic(topic) => {
                let why = match self.may_publish(&topic) {
                    Gate::Open => None,
                    Gate::Closed(why) => Some(why),
                    // Only a transaction's COMMIT gets here unanswered.
                    Gate::Ask(_) => Some(
                        "the application's answer was no longer kept at COMMIT; commit sooner, or keep answers longer (HERALD_AUTHORIZE_CACHE)"
                            .to_owned(),
                    ),
                };
                if let Some(why) = why {
                    return Err(Refusal::refused(format!(
                        "forbidden: {why} (`{destination}`)"
                    )));
                }
                let message = self.broker.prepare(topic, body);
                Ok(self
                    .broker
                    .ask(Lane::Session, |reply| Publish { message, reply }))
            }
            SendTarget::App(destination) => {
                let ports = self.broker.ports();
                let outcome = ports.ask(&ports.send, |reply| SendToBackend {
                    destination: destination.as_str().to_owned(),
                    body,
                    user: self.identity.user.clone(),
                    session: self.name.clone(),
                    reply,
                });
                outcome.ok_or_else(|| {
                    Refusal::from_code(
                        ErrorCode::Unavailable,
                        "no backend messaging is configured on this node; nothing was sent",
                    )
                })
            }
        }
    }

    fn on_subscribe(&mut self, frame: &Frame, ctx: &mut Ctx) -> Handled {
        let destination = require(frame, "destination")?;
        let id = match frame.header("id") {
            Some(id) => id,
            // STOMP 1.0 made the id optional; the destination stands in.
            None if self.stomp().version == Version::V1_0 => destination,
            None => require(frame, "id")?,
        };
        if self.stomp().is_notice_id(id) {
            return Err(Refusal::protocol(format!(
                "subscription id `{id}` is already in use in this session"
            )));
        }
        if destination == UNSUBSCRIBED {
            self.stomp().unsubscribed = Some(id.to_owned());
            self.write_receipt(ctx, receipt_of(frame));
            return Ok(());
        }
        if destination == EXPIRING {
            self.stomp().expiring = Some(id.to_owned());
            self.write_receipt(ctx, receipt_of(frame));
            // A notice already due went out before the client could ask.
            let due = self.identity.expires_at.is_some_and(|at| {
                at.duration_since(std::time::SystemTime::now())
                    .map_or(true, |left| left <= super::EXPIRING_NOTICE)
            });
            if due {
                self.warn_expiring(ctx);
            }
            return Ok(());
        }
        let wants_ack = match frame.header("ack").unwrap_or("auto") {
            "auto" => false,
            "client" | "client-individual" => true,
            other => {
                return Err(Refusal::protocol(format!(
                    "ack `{other}` is not one of auto, client, client-individual"
                )))
            }
        };
        let pattern = subscription_pattern(destination, self.user())
            .map_err(|err| Refusal::refused(format!("invalid_topic: {err}")))?;
        match self.admit_subscribe(&pattern) {
            Gate::Open => {}
            Gate::Closed(why) => {
                return Err(Refusal::from_code(
                    ErrorCode::Forbidden,
                    &format!("{why} (`{destination}`)"),
                ))
            }
            Gate::Ask(question) => {
                self.ask_then_replay(question, Replay::Stomp(frame.clone()), ctx);
                return Ok(());
            }
        }
        let subscription = Subscription {
            id: id.to_owned(),
            destination: destination.to_owned(),
            exact_destination: is_exact(&pattern).then(|| destination.to_owned()),
            pattern: pattern.clone(),
            wants_ack,
        };
        match self.stomp().subscriptions.add(subscription) {
            Ok(()) => {}
            Err(Refused::DuplicateId) => {
                return Err(Refusal::protocol(format!(
                    "subscription id `{id}` is already in use in this session"
                )))
            }
            Err(Refused::TooMany) => {
                let code = ErrorCode::TooManySubscriptions;
                return Err(Refusal::from_code(code, code.explain()));
            }
        }
        // Asked even when another id holds the pattern already: the
        // Broker answers once the pattern is in force on every node.
        let key = self.key;
        self.ask_broker(ctx, receipt_of(frame), |reply| Subscribe {
            key,
            pattern,
            reply,
        });
        Ok(())
    }

    fn on_unsubscribe(&mut self, frame: &Frame, ctx: &mut Ctx) -> Handled {
        let id = match frame.header("id") {
            Some(id) => id,
            None if self.stomp().version == Version::V1_0 => require(frame, "destination")?,
            None => require(frame, "id")?,
        };
        let receipt = receipt_of(frame);
        if self.stomp().expiring.as_deref() == Some(id) {
            self.stomp().expiring = None;
            self.write_receipt(ctx, receipt);
            return Ok(());
        }
        if self.stomp().unsubscribed.as_deref() == Some(id) {
            self.stomp().unsubscribed = None;
            self.write_receipt(ctx, receipt);
            return Ok(());
        }
        // An id not held, or a pattern another id still holds, leaves the
        // Broker as it is.
        match self.stomp().subscriptions.remove(id) {
            None => self.write_receipt(ctx, receipt),
            Some(pattern) => {
                self.forget_approval(&pattern);
                let key = self.key;
                self.ask_broker(ctx, receipt, |reply| Unsubscribe {
                    key,
                    pattern,
                    reply,
                });
            }
        }
        Ok(())
    }

    fn on_begin(&mut self, frame: &Frame, ctx: &mut Ctx) -> Handled {
        let transaction = require(frame, "transaction")?;
        let state = self.stomp();
        if state.transactions.contains_key(transaction) {
            return Err(Refusal::protocol(format!(
                "transaction `{transaction}` is already open"
            )));
        }
        if state.transactions.len() >= MAX_OPEN_TRANSACTIONS {
            return Err(Refusal::refused(format!(
                "too_large: a session may have at most {MAX_OPEN_TRANSACTIONS} transactions open"
            )));
        }
        state
            .transactions
            .insert(transaction.to_owned(), Vec::new());
        self.write_receipt(ctx, receipt_of(frame));
        Ok(())
    }

    fn end_transaction(&mut self, frame: &Frame) -> Result<Vec<Frame>, Refusal> {
        let transaction = require(frame, "transaction")?;
        let state = self.stomp();
        let held = state.transactions.remove(transaction).ok_or_else(|| {
            Refusal::protocol(format!("transaction `{transaction}` was not begun"))
        })?;
        state.held.frames -= held.len();
        state.held.bytes -= held.iter().map(held_size).sum::<usize>();
        Ok(held)
    }

    /// Sends what the transaction held; the COMMIT's receipt (and each held
    /// SEND's) comes once every one of them succeeded, as for a lone SEND.
    fn on_commit(&mut self, frame: &Frame, ctx: &mut Ctx) -> Handled {
        let commit_receipt = receipt_of(frame);
        let mut pending = Vec::new();
        let mut receipts = Vec::new();
        for held in self.end_transaction(frame)? {
            let outcome = self.send_now(&held)?;
            let receipt = receipt_of(&held);
            receipts.extend(receipt.clone());
            pending.push((outcome, receipt));
        }
        receipts.extend(commit_receipt.clone());
        let all = async move {
            for (outcome, receipt) in pending {
                if let Err(code) = outcome.await {
                    return Err((code, receipt.or(commit_receipt)));
                }
            }
            Ok(())
        };
        self.track_all(ctx, all, receipts);
        Ok(())
    }

    /// Drops what the transaction held; each dropped SEND's receipt says it
    /// was read, then the ABORT's.
    fn on_abort(&mut self, frame: &Frame, ctx: &mut Ctx) -> Handled {
        for held in self.end_transaction(frame)? {
            self.write_receipt(ctx, receipt_of(&held));
        }
        self.write_receipt(ctx, receipt_of(frame));
        Ok(())
    }

    /// Writes a `MESSAGE` for each subscription `message` matches. The
    /// Broker reserved room in the outbound meter for one frame of `cost`;
    /// each further frame (several ids matching) reserves its own, and a
    /// session that has no room for them is too slow, as for the Broker.
    pub(super) fn deliver_stomp(&mut self, message: &Arc<Prepared>, cost: usize, ctx: &mut Ctx) {
        let escape = self.escapes();
        let sockjs = self.framing == Framing::SockJs;
        let state = self.stomp();
        if state.phase != Phase::Connected && state.phase != Phase::Disconnecting {
            return self.meter.cancel(cost);
        }
        let tail = message.stomp_tail(escape);
        let lossy;
        let (tail_bytes, text) = if sockjs && !tail.text {
            lossy = message.stomp_tail_as_text(escape);
            (lossy.as_slice(), true)
        } else {
            (tail.bytes.as_slice(), tail.text)
        };
        let mut frames = Vec::new();
        // Every pattern subscription names the topic: written once.
        let mut by_topic: Option<String> = None;
        state
            .subscriptions
            .matching(&message.topic, |subscription| {
                let mut frame = Vec::with_capacity(64 + tail_bytes.len());
                frame.extend_from_slice(b"MESSAGE\n");
                let destination = match &subscription.exact_destination {
                    Some(exact) => exact.as_str(),
                    None => by_topic.get_or_insert_with(|| topic_destination(&message.topic)),
                };
                push_header(&mut frame, "destination", destination, escape);
                push_header(&mut frame, "subscription", &subscription.id, escape);
                if subscription.wants_ack {
                    push_header(&mut frame, "ack", &message.mid, escape);
                }
                frame.extend_from_slice(tail_bytes);
                frames.push(frame);
            });
        if frames.is_empty() {
            // Nothing written must not hold the reservation until some
            // later write.
            return self.meter.cancel(cost);
        }
        for (index, frame) in frames.into_iter().enumerate() {
            if index == 0 {
                self.meter.note_written(cost);
            } else if self.meter.try_reserve(frame.len()) {
                self.meter.note_written(frame.len());
            } else {
                return self.close(ctx, Disconnect::SlowConsumer);
            }
            self.write_stomp(ctx, frame, text);
        }
    }
}
