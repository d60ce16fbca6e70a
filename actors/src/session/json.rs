//! The JSON protocol's side of a session: each client op becomes a Broker
//! message (or an answer on the spot), and each outcome an `ack` or `error`.

use actix::prelude::*;
use actix_web_actors::ws::WebsocketContext;
use serde_json::value::RawValue;

use super::ask::{Gate, Replay};
use super::Session;
use crate::broker::{Lane, Publish, Subscribe, Unsubscribe};
use crate::frame::Body;
use crate::ports::SendToBackend;
use crate::protocol::json::{decode, peek_id, ClientOp, ServerOp};
use crate::protocol::ErrorCode;
use crate::reply::{Ack, Outcome, Reply};
use crate::topic::{Pattern, Topic};

#[path = "json_request.rs"]
mod request;

type Ctx = WebsocketContext<Session>;

/// An id kept beyond the frame it came in, for answers that come later.
type OwnedId = Option<Box<RawValue>>;

pub(super) fn welcome(session: &Session, ctx: &mut Ctx) {
    let node = session.broker.node().clone();
    ctx.text(
        ServerOp::Welcome {
            session: &session.name,
            user: session.user(),
            node: &node,
        }
        .encode(),
    );
}

fn ack(ctx: &mut Ctx, id: Option<&RawValue>, ack: Ack) {
    if let Some(id) = id {
        let local_only = ack.local_only;
        ctx.text(ServerOp::Ack { id, local_only }.encode());
    }
}

fn error(ctx: &mut Ctx, id: Option<&RawValue>, code: ErrorCode, message: &str) {
    ctx.text(ServerOp::Error { id, code, message }.encode());
}

fn answer(ctx: &mut Ctx, id: Option<&RawValue>, outcome: Result<Ack, ErrorCode>) {
    match outcome {
        Ok(done) => ack(ctx, id, done),
        Err(code) => error(ctx, id, code, code.explain()),
    }
}

pub(super) fn reconnect(after_ms: u64, ctx: &mut Ctx) {
    ctx.text(ServerOp::Reconnect { after_ms }.encode());
}

pub(super) fn expiring(in_ms: u64, ctx: &mut Ctx) {
    ctx.text(ServerOp::Expiring { in_ms }.encode());
}

pub(super) fn unsubscribed(ctx: &mut Ctx, pattern: &Pattern, reason: &str) {
    let topic = pattern.as_str();
    ctx.text(ServerOp::Unsubscribed { topic, reason }.encode());
}

pub(super) fn reject_binary(ctx: &mut Ctx) {
    error(
        ctx,
        None,
        ErrorCode::BadRequest,
        "binary frames are not part of the JSON protocol; send text",
    );
}

pub(super) fn reject_waiting(text: &str, ctx: &mut Ctx) {
    error(
        ctx,
        peek_id(text),
        ErrorCode::RateLimited,
        "too many messages while the application decides an earlier one; slow down",
    );
}

pub(super) fn reject_rate_limited(text: &str, ctx: &mut Ctx) {
    error(
        ctx,
        peek_id(text),
        ErrorCode::RateLimited,
        "too many messages; slow down",
    );
}

/// Queues an operation with the Broker now and answers the client when the
/// Broker has (at once when the Broker has no room).
fn ask_broker<M>(session: &Session, ctx: &mut Ctx, id: OwnedId, build: impl FnOnce(Reply) -> M)
where
    M: Message<Result = ()> + Send + 'static,
    crate::broker::Broker: Handler<M>,
{
    answer_later(session, ctx, id, session.broker.ask(Lane::Session, build));
}

fn answer_later(session: &Session, ctx: &mut Ctx, id: OwnedId, outcome: Outcome) {
    answer_after(session, ctx, id, outcome, |_, _| {});
}

/// Answers the client once `outcome` is known, after `then` has seen
/// whether it succeeded.
fn answer_after(
    session: &Session,
    ctx: &mut Ctx,
    id: OwnedId,
    outcome: Outcome,
    then: impl FnOnce(&mut Session, bool) + 'static,
) {
    ctx.spawn(
        outcome
            .into_actor(session)
            .map(move |outcome, session, ctx| {
                then(session, outcome.is_ok());
                answer(ctx, id.as_deref(), outcome);
            }),
    );
}

fn own(id: Option<&RawValue>) -> OwnedId {
    id.map(RawValue::to_owned)
}

fn parse_pattern(ctx: &mut Ctx, id: Option<&RawValue>, text: &str) -> Option<Pattern> {
    match Pattern::parse(text) {
        Ok(pattern) => Some(pattern),
        Err(err) => {
            error(ctx, id, ErrorCode::InvalidTopic, &err.to_string());
            None
        }
    }
}

fn parse_topic(ctx: &mut Ctx, id: Option<&RawValue>, text: &str) -> Option<Topic> {
    match Topic::parse(text) {
        Ok(topic) => Some(topic),
        Err(err) => {
            error(ctx, id, ErrorCode::InvalidTopic, &err.to_string());
            None
        }
    }
}

pub(super) fn handle(session: &mut Session, text: &str, ctx: &mut Ctx) {
    let frame = match decode(text) {
        Ok(frame) => frame,
        Err(err) => return error(ctx, err.id, ErrorCode::BadRequest, &err.message),
    };
    let id = frame.id;
    match frame.op {
        ClientOp::Subscribe { topic } => {
            let Some(pattern) = parse_pattern(ctx, id, &topic) else {
                return;
            };
            match session.admit_subscribe(&pattern) {
                Gate::Open => {}
                Gate::Closed(why) => return error(ctx, id, ErrorCode::Forbidden, &why),
                Gate::Ask(question) => {
                    return session.ask_then_replay(question, Replay::Json(text.to_owned()), ctx)
                }
            }
            let number = session.hold_subscription(&pattern);
            let key = session.key;
            let held = pattern.clone();
            let outcome = session.broker.ask(Lane::Session, |reply| Subscribe {
                key,
                pattern,
                reply,
            });
            answer_after(session, ctx, own(id), outcome, move |session, done| {
                if !done {
                    session.unhold_refused(&held, number);
                }
            });
        }
        ClientOp::Unsubscribe { topic } => {
            let Some(pattern) = parse_pattern(ctx, id, &topic) else {
                return;
            };
            // Let go only once the Broker has: until then it may deliver.
            let number = session.held_number(&pattern);
            let key = session.key;
            let held = pattern.clone();
            let outcome = session.broker.ask(Lane::Session, |reply| Unsubscribe {
                key,
                pattern,
                reply,
            });
            answer_after(session, ctx, own(id), outcome, move |session, done| {
                if done {
                    session.unhold_unsubscribed(&held, number);
                }
            });
        }
        ClientOp::Publish { topic, data } => {
            let Some(topic) = parse_topic(ctx, id, &topic) else {
                return;
            };
            match session.may_publish(&topic) {
                Gate::Open => {}
                Gate::Closed(why) => return error(ctx, id, ErrorCode::Forbidden, &why),
                Gate::Ask(question) => {
                    return session.ask_then_replay(question, Replay::Json(text.to_owned()), ctx)
                }
            }
            let message = session.broker.prepare(topic, Body::json(data));
            ask_broker(session, ctx, own(id), |reply| Publish { message, reply });
        }
        ClientOp::Send { destination, data } => {
            if parse_topic(ctx, id, &destination).is_none() {
                return;
            }
            let ports = session.broker.ports();
            let outcome = ports.ask(&ports.send, |reply| SendToBackend {
                destination: destination.into_owned(),
                body: Body::json(data),
                user: session.identity.user.clone(),
                session: session.name.clone(),
                reply,
            });
            match outcome {
                Some(outcome) => answer_later(session, ctx, own(id), outcome),
                None => error(
                    ctx,
                    id,
                    ErrorCode::Unavailable,
                    "no backend messaging is configured on this node; nothing was sent",
                ),
            }
        }
        ClientOp::Request {
            service,
            method,
            path,
            query,
            headers,
            body,
            body_encoding,
        } => request::start(
            session,
            ctx,
            id,
            request::Fields {
                service: &service,
                method: &method,
                path: &path,
                query,
                headers,
                body,
                body_encoding: body_encoding.as_deref(),
            },
        ),
        ClientOp::Ping => ctx.text(ServerOp::Pong { id }.encode()),
        ClientOp::Refresh { token } => {
            let refreshed = session.refresh(&token, ctx);
            match refreshed {
                Ok(()) => ack(ctx, id, Ack::default()),
                Err(why) => error(ctx, id, ErrorCode::Forbidden, &why),
            }
        }
    }
}
