//! The Session actor: one per WebSocket, the only code that touches
//! `WebsocketContext` frames.
//!
//! It registers with the Broker, turns client frames into Broker messages
//! (through the protocol side in [`json`] or [`stomp`], chosen at the
//! handshake), writes deliveries and replies back, keeps the connection
//! alive with pings, and closes with the code the contract names for each
//! way a session can end. The Broker never learns which protocol a session
//! speaks.

mod ask;
mod json;
mod outbound;
mod permissions;
mod stomp;
mod subscriptions;

pub use outbound::{MeteredStream, OutboundLimits, OutboundMeter};

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError, WebsocketContext};
use bytes::{Bytes, BytesMut};
use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use log::{debug, info};

use crate::authorize::Authorizer;
use crate::broker::{BrokerHandle, Lane, Register, Retoken, SessionKey, Unregister};
use crate::frame::Prepared;
use crate::limits::{ConnectionLimits, Slot};
use crate::protocol::Disconnect;
use crate::topic::{Access, Permissions};

/// Hands a published message to the session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub message: Arc<Prepared>,
}

/// Ends the session with the close code of `reason`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close {
    pub reason: Disconnect,
    /// A drain's hint: how long after this close the client should wait
    /// before it reconnects.
    pub reconnect_after: Option<Duration>,
}

/// Who is on the other end, as established at the handshake (or, for
/// STOMP, by the token in CONNECT).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub user: Option<Arc<str>>,
    /// When the token stops being valid; the session closes with 4001 then.
    pub expires_at: Option<SystemTime>,
    /// When the token was issued (`iat`), for revoking a user's older tokens.
    pub issued_at: Option<SystemTime>,
    /// The token's id (`jti`), for revoking that one token.
    pub token_id: Option<Arc<str>>,
    /// Every claim of the token, for permission rules and grants.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// The token itself, for services configured to receive it.
    pub token: Option<crate::request::Secret>,
}

/// Checks a token a client presents after the handshake (STOMP's CONNECT).
pub trait VerifyToken: Send + Sync {
    /// Whether tokens are checked at all; when not, every client is
    /// anonymous and tokens are ignored.
    fn enabled(&self) -> bool;
    /// The identity `token` proves, or why it proves none.
    fn verify(&self, token: &str) -> Result<Identity, String>;
}

/// The node's token checker, shared by every session.
#[derive(Clone)]
pub struct Tokens(pub Arc<dyn VerifyToken>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("enabled", &self.0.enabled())
            .finish()
    }
}

/// Which protocol a session speaks, as the handshake settled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Json,
    Stomp,
}

/// How protocol frames sit in WebSocket messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One or more frames per WebSocket message, as they are.
    Plain,
    /// SockJS's WebSocket transport: `o` to open, `a[...]` arrays of
    /// strings, `h` heart-beats, `c[code,reason]` to close.
    SockJs,
}

/// Refusals for the rate limit within [`ABUSE_WINDOW`] past which a JSON
/// session is closed with 1008. A client that reads its `rate_limited`
/// errors and slows down never gets near it; one that ignores them is
/// refused a hundred times, then dropped.
pub const ABUSE_REFUSALS: u32 = 100;
/// The least time between two re-checks of a session's subscriptions
/// after refreshes: each may cost every subscription's pattern walk and a
/// question to the application, so refreshes in quick succession are
/// checked together, once the gap has passed.
pub const RECHECK_GAP: Duration = Duration::from_secs(5);
/// How long before its token expires a session is told to refresh.
pub const EXPIRING_NOTICE: Duration = Duration::from_secs(30);
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// What the handshake established.
#[derive(Debug)]
pub struct Handshake {
    pub identity: Identity,
    pub dialect: Dialect,
    pub framing: Framing,
    /// The handshake carried no token though one is required: a STOMP
    /// client must present one in CONNECT.
    pub token_pending: bool,
    /// The connection counts the handshake reserved (node, client address,
    /// user), held for as long as the session lives.
    pub slots: Vec<Slot>,
    /// The client's address as Herald sees it, after trusted proxies.
    pub remote: std::net::IpAddr,
}

/// Per-session settings, the same for every session of a node.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// How often the server pings an idle client.
    pub ping_interval: Duration,
    /// Silence after which the client counts as gone.
    pub client_timeout: Duration,
    /// Inbound operations per second; bursts of twice that are allowed.
    pub rate_limit: NonZeroU32,
    /// Largest message accepted, in bytes, also across continuation frames.
    pub max_frame: usize,
    pub outbound: OutboundLimits,
    /// Subscriptions a session may hold.
    pub max_subscriptions: usize,
    /// The heart-beat interval a STOMP session offers in both directions.
    pub stomp_heartbeat: Duration,
    pub tokens: Tokens,
    /// The node's connection counts, for a user a STOMP CONNECT names.
    pub limits: Arc<ConnectionLimits>,
    /// The application's authorization endpoint, for topics whose rule
    /// says `ask`.
    pub authorizer: Authorizer,
    /// How long a session keeps the application's answers.
    pub answer_cache: Duration,
    /// The services `request` may call.
    pub services: crate::request::Services,
    /// The node's `[[permissions]]` rules.
    pub permissions: Arc<Permissions>,
}

/// Whether an inbound message fits the session's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Within,
    /// Over the limit: refused, the session goes on.
    Over,
    /// Over the limit once too often: the session is closing.
    Closed,
}

/// A JSON session's recent refusals for its rate limit.
#[derive(Debug)]
struct Strikes {
    since: Instant,
    count: u32,
}

pub struct Session {
    key: SessionKey,
    /// Public name, `s-<node>-<key>`.
    name: Arc<str>,
    identity: Identity,
    /// For the open and close log lines an operator reads.
    remote: std::net::IpAddr,
    opened: Instant,
    /// The open line is written once: at the upgrade for JSON sessions,
    /// once CONNECT names the user for STOMP ones, or at the close for a
    /// STOMP session that never got that far.
    open_logged: bool,
    broker: BrokerHandle,
    settings: Arc<SessionSettings>,
    meter: Arc<OutboundMeter>,
    limiter: DefaultDirectRateLimiter,
    /// Refusals for the rate limit in the current window.
    strikes: Strikes,
    /// A STOMP message already paid its token: the first STOMP frame it
    /// completes costs nothing more, so a message of one frame counts once.
    prepaid: bool,
    /// The connection counts this session holds; given back when it stops.
    slots: Vec<Slot>,
    /// When the client was last heard from, ping answers included.
    last_heard: Instant,
    /// The close at the token's expiry and the notice before it.
    expiry_timers: Vec<SpawnHandle>,
    /// Whether the client has been told its current token is expiring: the
    /// timer and a late STOMP subscription to the notice must not both.
    expiry_warned: bool,
    /// A fragmented message being reassembled, and whether it is text.
    partial: Option<(BytesMut, bool)>,
    framing: Framing,
    /// The STOMP side of the session; `None` for JSON sessions.
    stomp: Option<Box<stomp::StompState>>,
    /// Why Herald ended the session, if it did.
    ended: Option<Disconnect>,
    /// Frames that arrived before the Broker took the session, handled in
    /// order after the `welcome` so that it stays the first frame; `None`
    /// once welcomed.
    early: Option<Vec<String>>,
    /// How many frames may wait for the `welcome`: the rate limit's burst,
    /// more than a client within its limit can send.
    early_limit: usize,
    /// What the permission rules and the token's grants allow this
    /// session, resolved whenever its identity changes.
    access: Arc<Access>,
    /// Whether deliveries are checked against [`Self::access`]: only while
    /// the session holds a subscription some of whose topics it may not
    /// receive, so a node without rules never checks a delivery.
    filtering: bool,
    /// A JSON session's subscriptions, for a refresh to check again (the
    /// Broker holds the real ones; STOMP sessions keep theirs by id). Kept
    /// only when the node has rules; each with the number of the subscribe
    /// that added it, so that a late refusal removes only its own entry.
    held: std::collections::HashMap<crate::topic::Pattern, u64>,
    subscribes: u64,
    /// The application's answers, for topics whose rule says `ask`.
    answers: ask::AppAnswers,
    /// When the subscriptions were last re-checked after a refresh, and
    /// whether a re-check waits for [`RECHECK_GAP`] to pass.
    last_recheck: Option<Instant>,
    recheck_pending: bool,
}

impl Session {
    pub fn new(handshake: Handshake, broker: BrokerHandle, settings: Arc<SessionSettings>) -> Self {
        let key = broker.counters().connections_total.inc();
        let name = format!("s-{}-{key}", broker.node().trim_start_matches("n-")).into();
        let burst = settings
            .rate_limit
            .saturating_mul(NonZeroU32::MIN.saturating_add(1));
        let stomp = (handshake.dialect == Dialect::Stomp)
            .then(|| Box::new(stomp::StompState::new(&settings, handshake.token_pending)));
        let access = permissions::resolve(&settings.permissions, &handshake.identity);
        let settings_answer_cache = settings.answer_cache;
        Session {
            key,
            name,
            identity: handshake.identity,
            remote: handshake.remote,
            opened: Instant::now(),
            open_logged: false,
            framing: handshake.framing,
            stomp,
            meter: OutboundMeter::new(settings.outbound),
            limiter: RateLimiter::direct_with_clock(
                Quota::per_second(settings.rate_limit).allow_burst(burst),
                shared_clock(),
            ),
            strikes: Strikes {
                since: Instant::now(),
                count: 0,
            },
            prepaid: false,
            slots: handshake.slots,
            broker,
            settings,
            last_heard: Instant::now(),
            partial: None,
            expiry_timers: Vec::new(),
            expiry_warned: false,
            ended: None,
            // STOMP sessions hold their early frames decoded, in their state.
            early: (handshake.dialect == Dialect::Json).then(Vec::new),
            early_limit: burst.get() as usize,
            access,
            filtering: false,
            held: std::collections::HashMap::new(),
            subscribes: 0,
            answers: ask::AppAnswers::new(settings_answer_cache),
            last_recheck: None,
            recheck_pending: false,
        }
    }

    /// The meter to wrap around this session's outgoing byte stream.
    pub fn meter(&self) -> Arc<OutboundMeter> {
        self.meter.clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn user(&self) -> Option<&str> {
        self.identity.user.as_deref()
    }

    /// The connection's open line, the first time only.
    fn log_open(&mut self) {
        if std::mem::replace(&mut self.open_logged, true) {
            return;
        }
        // Fields as key-values: text lines show them as `key=value`, JSON
        // lines as keys of their own.
        info!(
            session = &*self.name,
            user = self.user().unwrap_or("-"),
            remote:% = self.remote,
            protocol = self.protocol();
            "connection open"
        );
    }

    /// How the client speaks, as the log lines name it.
    fn protocol(&self) -> &'static str {
        match (self.framing, self.stomp.is_some()) {
            (Framing::SockJs, _) => "sockjs",
            (Framing::Plain, true) => "stomp",
            (Framing::Plain, false) => "json",
        }
    }

    fn close(&mut self, ctx: &mut WebsocketContext<Self>, reason: Disconnect) {
        if self.stomp.is_some() {
            self.stomp_farewell(ctx, reason);
        }
        self.ended.get_or_insert(reason);
        debug!("session {} closing: {}", self.name, reason.reason());
        self.close_with(ctx, reason.code(), reason.reason());
    }

    /// Written into the same outbound path as every frame, so it reaches
    /// the client just before the close that follows it.
    fn reconnect_hint(&mut self, ctx: &mut WebsocketContext<Self>, after: Duration) {
        let after_ms = crate::millis(after);
        if self.stomp.is_some() {
            self.stomp_reconnect(ctx, after_ms);
        } else {
            json::reconnect(after_ms, ctx);
        }
    }

    fn close_with(&mut self, ctx: &mut WebsocketContext<Self>, code: u16, reason: &str) {
        if self.framing == Framing::SockJs {
            let reason = serde_json::to_string(reason).unwrap_or_default();
            ctx.text(format!("c[{code},{reason}]"));
        }
        ctx.close(Some(CloseReason {
            code: CloseCode::from(code),
            description: Some(reason.to_owned()),
        }));
        ctx.stop();
    }

    /// Joins the Broker, then runs `joined`; closes the session if the
    /// Broker has no room for it.
    fn join(
        &mut self,
        ctx: &mut WebsocketContext<Self>,
        joined: impl FnOnce(&mut Self, &mut WebsocketContext<Self>) + 'static,
    ) {
        let registered = self.broker.ask(Lane::Session, |reply| Register {
            key: self.key,
            name: self.name.clone(),
            user: self.identity.user.clone(),
            token_id: self.identity.token_id.clone(),
            issued_at: self.identity.issued_at,
            deliver: ctx.address().recipient(),
            close: ctx.address().recipient(),
            meter: self.meter.clone(),
            reply,
        });
        ctx.spawn(registered.into_actor(self).map(|registered, session, ctx| {
            if registered.is_err() {
                let why = if session.broker.is_draining() {
                    Disconnect::Shutdown
                } else {
                    Disconnect::Overloaded
                };
                return session.close(ctx, why);
            }
            session.arm_expiry(ctx);
            joined(session, ctx);
        }));
    }

    /// Closes the session with 4001 when its token runs out, and tells the
    /// client [`EXPIRING_NOTICE`] before, so it can refresh in time. A
    /// refresh arms both anew.
    fn arm_expiry(&mut self, ctx: &mut WebsocketContext<Self>) {
        for timer in self.expiry_timers.drain(..) {
            ctx.cancel_future(timer);
        }
        let Some(expires_at) = self.identity.expires_at else {
            return;
        };
        let left = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let expire = ctx.run_later(left, |session, ctx| {
            session.close(ctx, Disconnect::TokenExpired)
        });
        let notice = ctx.run_later(left.saturating_sub(EXPIRING_NOTICE), |session, ctx| {
            session.warn_expiring(ctx)
        });
        self.expiry_timers = vec![expire, notice];
    }

    fn warn_expiring(&mut self, ctx: &mut WebsocketContext<Self>) {
        if self.expiry_warned {
            return;
        }
        let Some(expires_at) = self.identity.expires_at else {
            return;
        };
        let left = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let in_ms = crate::millis(left);
        self.expiry_warned = if self.stomp.is_some() {
            self.stomp_expiring(in_ms, ctx)
        } else {
            json::expiring(in_ms, ctx);
            true
        };
    }

    /// Takes a fresh token for the same user: the session lives on to the
    /// new token's expiry, with the rights the new token gives (a
    /// subscription it no longer allows at all ends). Refused (and the session left as it was) for an
    /// invalid token, another user's, or on a node that checks no tokens.
    fn refresh(&mut self, token: &str, ctx: &mut WebsocketContext<Self>) -> Result<(), String> {
        let tokens = self.settings.tokens.0.clone();
        if !tokens.enabled() {
            return Err("this node checks no tokens, so there is nothing to refresh".to_owned());
        }
        let proven = tokens.verify(token)?;
        if proven.user != self.identity.user {
            return Err("a refresh must be a token for the session's own user".to_owned());
        }
        self.identity = proven;
        // The Broker judges the session by its token when a revocation
        // comes: it must know the new one.
        self.broker
            .ask(Lane::Internal, |reply| Retoken {
                key: self.key,
                token_id: self.identity.token_id.clone(),
                issued_at: self.identity.issued_at,
                reply,
            })
            .ignore();
        self.expiry_warned = false;
        self.arm_expiry(ctx);
        self.schedule_recheck(ctx);
        Ok(())
    }

    /// Re-checks the subscriptions against the session's new token now, or
    /// once [`RECHECK_GAP`] has passed since the last re-check.
    fn schedule_recheck(&mut self, ctx: &mut WebsocketContext<Self>) {
        let since = self.last_recheck.map(|last| last.elapsed());
        match since {
            Some(since) if since < RECHECK_GAP => {
                if !self.recheck_pending {
                    self.recheck_pending = true;
                    ctx.run_later(RECHECK_GAP - since, |session, ctx| {
                        session.recheck_pending = false;
                        session.last_recheck = Some(Instant::now());
                        session.recheck_subscriptions(ctx);
                    });
                }
            }
            _ => {
                self.last_recheck = Some(Instant::now());
                self.recheck_subscriptions(ctx);
            }
        }
    }

    /// Takes one token from the session's rate limit; counts the refusal
    /// when there is none.
    fn take_token(&mut self) -> bool {
        if self.limiter.check().is_ok() {
            return true;
        }
        self.broker.counters().frames_rate_limited.inc();
        false
    }

    /// Counts one inbound message against the rate limit. A STOMP session
    /// over it is refused and closed at once, as STOMP refuses; a JSON
    /// session is closed once it has been refused more than
    /// [`ABUSE_REFUSALS`] times within [`ABUSE_WINDOW`].
    fn admit_inbound(&mut self, ctx: &mut WebsocketContext<Self>) -> Admission {
        self.admit(ctx, true)
    }

    /// Counts a WebSocket control frame or a bare STOMP heart-beat: over
    /// the limit it is ignored, and it never closes a STOMP session, whose
    /// limit counts STOMP frames; JSON sessions collect strikes as for any
    /// message.
    fn admit_control(&mut self, ctx: &mut WebsocketContext<Self>) -> Admission {
        self.admit(ctx, false)
    }

    fn admit(&mut self, ctx: &mut WebsocketContext<Self>, refuses_stomp: bool) -> Admission {
        if self.take_token() {
            return Admission::Within;
        }
        if self.stomp.is_some() {
            if !refuses_stomp {
                return Admission::Over;
            }
            self.refuse_rate(ctx);
            return Admission::Closed;
        }
        let now = Instant::now();
        if now.duration_since(self.strikes.since) > ABUSE_WINDOW {
            self.strikes = Strikes {
                since: now,
                count: 0,
            };
        }
        self.strikes.count += 1;
        if self.strikes.count > ABUSE_REFUSALS {
            self.broker.counters().sessions_closed_for_abuse.inc();
            self.close(ctx, Disconnect::Abusive);
            return Admission::Closed;
        }
        Admission::Over
    }

    /// A text message that is not UTF-8: RFC 6455 (8.1) says to fail the
    /// connection with 1007.
    fn close_invalid_utf8(&mut self, ctx: &mut WebsocketContext<Self>) {
        self.broker.counters().invalid_utf8.inc();
        self.close(ctx, Disconnect::InvalidUtf8);
    }

    /// A whole WebSocket message from the client, text or binary.
    fn on_message(&mut self, bytes: Bytes, text: bool, ctx: &mut WebsocketContext<Self>) {
        if !text {
            return self.on_binary(bytes, ctx);
        }
        // Single-frame text messages are checked by the codec; reassembled
        // fragments only here.
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return self.close_invalid_utf8(ctx);
        };
        if self.stomp.is_some() {
            return self.on_stomp_message(text.as_bytes(), ctx);
        }
        self.on_text(text, ctx)
    }

    fn on_binary(&mut self, bytes: Bytes, ctx: &mut WebsocketContext<Self>) {
        if self.stomp.is_some() {
            return self.on_stomp_message(&bytes, ctx);
        }
        match self.admit_inbound(ctx) {
            Admission::Within => json::reject_binary(ctx),
            Admission::Over => json::reject_rate_limited("", ctx),
            Admission::Closed => {}
        }
    }

    /// A STOMP session's message: one token for the message, covering its
    /// first STOMP frame; each further frame in it takes its own.
    fn on_stomp_message(&mut self, bytes: &[u8], ctx: &mut WebsocketContext<Self>) {
        // A message of heart-beat EOLs only is STOMP's keep-alive, not a
        // frame: it is not refused, only not read past the limit.
        let heartbeat = !bytes.is_empty() && bytes.iter().all(|b| matches!(b, b'\n' | b'\r'));
        let admitted = if heartbeat {
            self.admit_control(ctx)
        } else {
            self.admit_inbound(ctx)
        };
        if admitted != Admission::Within {
            return;
        }
        self.prepaid = true;
        match self.framing {
            Framing::Plain => self.on_stomp_bytes(bytes, ctx),
            Framing::SockJs => self.on_sockjs_message(bytes, ctx),
        }
        self.prepaid = false;
    }

    fn heartbeat(&mut self, ctx: &mut WebsocketContext<Self>) {
        if self.last_heard.elapsed() > self.settings.client_timeout {
            self.close(ctx, Disconnect::NoHeartbeat);
        } else {
            ctx.ping(b"");
        }
    }

    fn on_text(&mut self, text: &str, ctx: &mut WebsocketContext<Self>) {
        let Some(early) = self.early.as_mut() else {
            return self.on_op(text, ctx);
        };
        // Handling a frame now would answer it before the `welcome` and
        // before the frames ahead of it: a client this far over its
        // limit is closed instead.
        if early.len() >= self.early_limit {
            return self.close(ctx, Disconnect::Flooded);
        }
        early.push(text.to_owned());
    }

    fn on_op(&mut self, text: &str, ctx: &mut WebsocketContext<Self>) {
        match self.admit_inbound(ctx) {
            Admission::Within => match self.hold_back(|| ask::Replay::Json(text.to_owned())) {
                ask::Waiting::No => json::handle(self, text, ctx),
                ask::Waiting::Queued => {}
                ask::Waiting::Full => json::reject_waiting(text, ctx),
            },
            Admission::Over => json::reject_rate_limited(text, ctx),
            Admission::Closed => {}
        }
    }

    /// Appends a continuation fragment; false once the message is too large.
    fn append_fragment(&mut self, bytes: &[u8]) -> bool {
        let Some((partial, _)) = self.partial.as_mut() else {
            return true;
        };
        if partial.len() + bytes.len() > self.settings.max_frame {
            return false;
        }
        partial.extend_from_slice(bytes);
        true
    }

    fn on_continuation(&mut self, item: Item, ctx: &mut WebsocketContext<Self>) {
        // Every fragment but the last costs a token (the last one pays for
        // the whole message): a stream of fragments is no way around the
        // rate limit. One over the limit drops the message it belongs to.
        if !matches!(item, Item::Last(_)) {
            match self.admit_inbound(ctx) {
                Admission::Within => {}
                Admission::Over => {
                    self.partial = None;
                    return;
                }
                Admission::Closed => return,
            }
        }
        let fits = match &item {
            Item::FirstBinary(_) if self.stomp.is_none() => {
                // Refused at its first fragment; the rest is dropped.
                self.partial = None;
                self.on_binary(Bytes::new(), ctx);
                true
            }
            Item::FirstText(bytes) | Item::FirstBinary(bytes) => {
                let text = matches!(item, Item::FirstText(_));
                self.partial = Some((BytesMut::with_capacity(bytes.len()), text));
                self.append_fragment(bytes)
            }
            Item::Continue(bytes) | Item::Last(bytes) => self.append_fragment(bytes),
        };
        if !fits {
            self.partial = None;
            if self.stomp.is_some() {
                return self.refuse_oversized(ctx);
            }
            return self.close(ctx, Disconnect::FrameTooLarge);
        }
        if let Item::Last(_) = item {
            if let Some((whole, text)) = self.partial.take() {
                self.on_message(whole.freeze(), text, ctx);
            }
        }
    }
}

impl Actor for Session {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The meter decides when a session is too far behind; the mailbox
        // only needs room for everything the meter lets through.
        ctx.set_mailbox_capacity(self.settings.outbound.max_frames + 16);
        self.broker.counters().connections_current.inc();
        ctx.run_interval(self.settings.ping_interval, Self::heartbeat);
        if self.stomp.is_some() {
            // A STOMP session joins the Broker once CONNECT says who it is.
            self.start_stomp(ctx);
        } else {
            self.join(ctx, |session, ctx| {
                json::welcome(session, ctx);
                for text in session.early.take().unwrap_or_default() {
                    session.on_op(&text, ctx);
                }
            });
        }
        if self.stomp.is_none() {
            self.log_open();
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let reason = self.ended.map_or("client_closed", Disconnect::reason);
        // Nobody waits for the answer: the session is gone either way (and
        // a STOMP session that never joined is unknown to the Broker, which
        // ignores it).
        self.broker
            .ask(Lane::Internal, |reply| Unregister {
                key: self.key,
                reason,
                reply,
            })
            .ignore();
        self.broker.counters().connections_current.dec();
        // Given back now rather than when the actor is dropped, so a client
        // reconnecting right after the close finds its slot free.
        self.slots.clear();
        self.log_open();
        info!(
            session = &*self.name,
            user = self.user().unwrap_or("-"),
            remote:% = self.remote,
            protocol = self.protocol(),
            reason = reason,
            duration_ms = crate::millis(self.opened.elapsed());
            "connection close"
        );
    }
}

/// Writes a delivery to the socket.
impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let cost = msg.message.cost();
        if self.filtering && !self.may_receive(&msg.message.topic) {
            // The Broker reserved room for it; nothing is written.
            return self.meter.cancel(cost);
        }
        if self.stomp.is_some() {
            return self.deliver_stomp(&msg.message, cost, ctx);
        }
        ctx.text(msg.message.json.clone());
        self.meter.note_written(cost);
    }
}

/// Closes the session on the Broker's behalf.
impl Handler<Close> for Session {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Self::Context) {
        if let Some(after) = msg.reconnect_after {
            self.reconnect_hint(ctx, after);
        }
        self.close(ctx, msg.reason);
    }
}

/// Frames from the client.
impl StreamHandler<Result<ws::Message, ProtocolError>> for Session {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        if self.ended.is_some() {
            // Closing: what the client still sends is not read.
            return;
        }
        self.last_heard = Instant::now();
        match item {
            // The JSON side counts a text message against the rate limit
            // when it handles the op (after the `welcome`, for early ones).
            Ok(ws::Message::Text(text)) if self.stomp.is_none() => self.on_text(&text, ctx),
            Ok(ws::Message::Text(text)) => self.on_stomp_message(text.as_bytes(), ctx),
            Ok(ws::Message::Binary(bytes)) => self.on_binary(bytes, ctx),
            Ok(ws::Message::Continuation(item)) => self.on_continuation(item, ctx),
            // A ping over the limit goes unanswered: answering every one
            // would let a client make the node write as fast as it reads.
            Ok(ws::Message::Ping(payload)) => {
                if self.admit_control(ctx) == Admission::Within {
                    ctx.pong(&payload);
                }
            }
            Ok(ws::Message::Pong(_)) => {
                self.admit_control(ctx);
            }
            Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(ProtocolError::Overflow) if self.stomp.is_some() => self.refuse_oversized(ctx),
            Err(ProtocolError::Overflow) => self.close(ctx, Disconnect::FrameTooLarge),
            Err(err) if is_invalid_utf8(&err) => self.close_invalid_utf8(ctx),
            Err(err) => {
                debug!("session {}: protocol error: {err}", self.name);
                self.close(ctx, Disconnect::ProtocolError);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The client's side of the socket ended.
        ctx.stop();
    }
}

/// Whether the codec refused a text frame for not being UTF-8.
/// actix-web-actors reports that as an I/O error carrying the UTF-8
/// error's text, the same variant as a failed read, so the text tells them
/// apart (the test below pins the text this relies on).
fn is_invalid_utf8(err: &ProtocolError) -> bool {
    match err {
        ProtocolError::Io(io) => io.to_string().contains("utf-8"),
        _ => false,
    }
}

/// The clock every session's rate limiter reads. `RateLimiter::direct`
/// builds a fresh quanta clock per limiter, and each one probes CPUID for
/// TSC support: under a hypervisor every CPUID traps, which made it the
/// largest user-space cost of opening a session (bench/README.md). A clone
/// shares the one probe and calibration.
fn shared_clock() -> DefaultClock {
    static CLOCK: std::sync::OnceLock<DefaultClock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(DefaultClock::default).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codec_error_for_a_text_frame_that_is_not_utf8_is_recognised() {
        let bad = Bytes::from_static(&[0x7b, 0xff, 0xfe]);
        let err = match bytestring::ByteString::try_from(bad) {
            Err(err) => err,
            Ok(_) => panic!("0xff is never UTF-8"),
        };
        let as_codec_reports_it = ProtocolError::Io(std::io::Error::other(format!("{err}")));
        assert!(is_invalid_utf8(&as_codec_reports_it));
        let read_failure = ProtocolError::Io(std::io::Error::other("connection reset"));
        assert!(!is_invalid_utf8(&read_failure));
    }
}
