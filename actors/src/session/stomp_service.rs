//! STOMP's way into the WebSocket-to-REST pipeline: `SEND
//! destination:/service/{name}{path}` with a `method` header and a
//! `reply-to` naming a destination the session has subscribed to. The
//! service's answer comes back as one `MESSAGE` on that subscription, to
//! this session only:
//!
//! - `destination`: the `reply-to`; `subscription`: its id;
//!   `message-id`: the call's request id (the `X-Request-Id` the service saw);
//! - `status`: the HTTP status; `content-type` and the body: the service's,
//!   byte-exact; each response header NAME as `http-NAME`;
//! - `correlation-id`: the SEND's, when it had one.
//!
//! A call that failed (`timeout`, `upstream_error`, `too_large`,
//! `unavailable`) is a `MESSAGE` there too, with `error:CODE` and `message`
//! instead of `status`, and the session goes on. A SEND that cannot be a
//! call at all (no such service, a path that is not the service's, no
//! `reply-to` subscription) is refused like any STOMP frame: `ERROR`, then
//! the close. Headers `http-NAME` on the SEND go to the service as NAME.

use actix::prelude::*;
use bytes::Bytes;

use super::{receipt_of, Ctx, Handled, Refusal};
use crate::protocol::destination::subscription_pattern;
use crate::protocol::stomp::{Command, Frame};
use crate::protocol::Disconnect;
use crate::request::{
    may_request, normalize_method, Answer, CallError, Caller, Encode, Encoded, Query, RequestBody,
    ServiceCall,
};
use crate::session::Session;

const SERVICE: &str = "/service/";
/// Headers that carry HTTP headers across STOMP, both ways.
const HTTP_PREFIX: &str = "http-";

pub(super) fn is_service(destination: Option<&str>) -> bool {
    destination.is_some_and(|destination| destination.starts_with(SERVICE))
}

/// `/service/{name}{path}[?query]` split into its parts.
fn split(destination: &str) -> Result<(&str, &str, Query), Refusal> {
    let rest = destination.strip_prefix(SERVICE).unwrap_or_default();
    let (target, query) = match rest.split_once('?') {
        Some((target, query)) => (target, Query::Raw(query.to_owned())),
        None => (rest, Query::None),
    };
    let (name, path) = match target.find('/') {
        Some(at) => target.split_at(at),
        None => (target, "/"),
    };
    if name.is_empty() {
        return Err(Refusal::refused(format!(
            "bad_request: `{destination}` names no service: use /service/<name>/<path>"
        )));
    }
    Ok((name, path, query))
}

/// What the answer's `MESSAGE` needs besides the answer.
#[derive(Clone)]
struct Reply {
    destination: String,
    subscription: String,
    correlation: Option<String>,
    request_id: String,
    escape: bool,
}

impl Reply {
    fn frame(&self) -> Frame {
        let mut frame = Frame::new(Command::Message)
            .with_header("destination", &self.destination)
            .with_header("subscription", &self.subscription)
            .with_header("message-id", &self.request_id);
        if let Some(correlation) = &self.correlation {
            frame = frame.with_header("correlation-id", correlation);
        }
        frame
    }

    fn encode(&self, frame: &Frame) -> Encoded {
        let bytes = frame.encode(self.escape);
        let text = std::str::from_utf8(&bytes).is_ok();
        Encoded {
            bytes: Bytes::from(bytes),
            text,
        }
    }

    fn answer(&self, answer: &Answer) -> Encoded {
        let mut frame = self
            .frame()
            .with_header("status", &answer.status.to_string());
        if let Some(content_type) = &answer.content_type {
            frame = frame.with_header("content-type", content_type);
        }
        for (name, value) in &answer.headers {
            if name != "content-type" && name != "content-length" {
                frame = frame.with_header(&format!("{HTTP_PREFIX}{name}"), value);
            }
        }
        // Always present, so an empty body reads as one.
        let frame = frame
            .with_header("content-length", &answer.body.len().to_string())
            .with_body(answer.body.clone());
        self.encode(&frame)
    }

    fn failure(&self, failed: &CallError) -> Encoded {
        let message = failed.to_string();
        let frame = self
            .frame()
            .with_header("error", failed.code().as_str())
            .with_header("message", &message)
            .with_header("content-type", "text/plain")
            .with_body(message.into_bytes());
        self.encode(&frame)
    }
}

impl Session {
    pub(super) fn on_service_send(&mut self, frame: &Frame, ctx: &mut Ctx) -> Handled {
        let destination = frame.header("destination").unwrap_or_default();
        let (service, path, query) = split(destination)?;
        let Some(services) = self.settings.services.0.clone() else {
            return Err(Refusal::refused(format!(
                "unknown_service: no service named `{service}` is configured"
            )));
        };
        if !may_request(&self.settings.permissions, service, &self.identity) {
            return Err(Refusal::refused(format!(
                "forbidden: this session may not call service `{service}`"
            )));
        }
        let method_name = frame.header("method").unwrap_or("GET");
        let method = normalize_method(method_name).ok_or_else(|| {
            Refusal::refused(format!(
                "bad_request: method `{method_name}` is not allowed"
            ))
        })?;
        let reply_to = frame.header("reply-to").ok_or_else(|| {
            Refusal::protocol(
                "a SEND to /service/ needs a `reply-to` header naming a subscribed destination",
            )
        })?;
        let pattern = subscription_pattern(reply_to, self.user())
            .map_err(|err| Refusal::refused(format!("invalid_topic: reply-to: {err}")))?;
        let subscription = self
            .stomp()
            .subscriptions
            .reply_target(reply_to, &pattern)
            .map(str::to_owned)
            .ok_or_else(|| {
                Refusal::refused(format!(
                    "bad_request: reply-to `{reply_to}` is not a destination this session subscribed to (a MESSAGE needs a subscription)"
                ))
            })?;
        let headers = frame
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let name = name.to_ascii_lowercase();
                let name = name.strip_prefix(HTTP_PREFIX)?.to_owned();
                Some((name, value.clone()))
            })
            .collect();
        let body = (!frame.body.is_empty()).then(|| RequestBody {
            bytes: frame.body.clone(),
            content_type: frame
                .header("content-type")
                .unwrap_or("application/octet-stream")
                .to_owned(),
        });
        let request_id = self.broker.message_id();
        let reply = Reply {
            destination: reply_to.to_owned(),
            subscription,
            correlation: frame.header("correlation-id").map(str::to_owned),
            request_id: request_id.to_string(),
            escape: self.escapes(),
        };
        let call = ServiceCall {
            service: service.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            query,
            headers,
            body,
            caller: Caller::of(&self.identity, &self.name),
            request_id,
        };
        let receipt = receipt_of(frame);
        let encode: Encode = {
            let reply = reply.clone();
            Box::new(move |answer| reply.answer(answer))
        };
        let answered = services.call(call, encode);
        self.stomp().in_flight += 1;
        ctx.spawn(
            answered
                .into_actor(self)
                .map(move |answered, session, ctx| {
                    session.stomp().in_flight -= 1;
                    let encoded = match answered {
                        Ok(encoded) => encoded,
                        Err(
                            refused @ (CallError::UnknownService(_)
                            | CallError::BadRequest(_)
                            | CallError::Forbidden(_)),
                        ) => {
                            let message = format!("{}: {refused}", refused.code());
                            return session.fail(ctx, Refusal::refused(message), receipt);
                        }
                        Err(failed) => reply.failure(&failed),
                    };
                    if !session.meter.try_reserve(encoded.bytes.len()) {
                        session.broker.counters().messages_dropped.inc();
                        return session.close(ctx, Disconnect::SlowConsumer);
                    }
                    session.meter.note_written(encoded.bytes.len());
                    session.write_stomp(ctx, encoded.bytes.to_vec(), encoded.text);
                    session.write_receipt(ctx, receipt);
                    session.finish_disconnect(ctx);
                }),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_destination_splits_into_name_path_and_query() {
        let (name, path, query) = split("/service/account/accounts/42?x=1")
            .ok()
            .expect("valid");
        assert_eq!((name, path), ("account", "/accounts/42"));
        assert_eq!(query, Query::Raw("x=1".into()));
        let (name, path, _) = split("/service/account").ok().expect("valid");
        assert_eq!((name, path), ("account", "/"));
        assert!(split("/service//x").is_err());
    }
}
