//! What arrives on the node queue, sorted: messages for local subscribers
//! (from microservices, other nodes, or mapped foreign exchanges), this
//! node's own messages coming back (already delivered here, so dropped),
//! requests from other nodes, and what cannot be used.

use std::sync::Arc;

use herald_actors::frame::{now_millis, Body, Prepared};
use herald_actors::topic::{private_owner, Topic};
use lapin::message::Delivery;
use lapin::types::{AMQPValue, ShortString};
use lapin::BasicProperties;

use crate::bridge::AmqpConfig;
use crate::control::{unknown_kind, ControlMessage};
use crate::topology::{CONTROL, TOPICS};

/// The header naming the node that published a message (for people: the
/// node knows its own messages by [`ORIGIN_HEADER`]).
pub const NODE_HEADER: &str = "x-herald-node";
/// Herald's millisecond timestamp header.
pub const TS_HEADER: &str = "x-herald-ts";
/// The header marking a topic message with the process that published it.
pub const ORIGIN_HEADER: &str = "x-herald-origin";
/// The header marking a message on a user's private topic as a
/// backend-initiated call's result ([`RESPONSE_KIND`]).
pub const KIND_HEADER: &str = "x-herald-kind";
pub const RESPONSE_KIND: &str = "response";

/// The node a control message says it comes from, as far as it can be
/// read from one that is not a request, for the log: an operator looking
/// for who publishes junk on the control exchange wants the name it gave.
/// At most 64 characters, so the log line stays a line.
pub fn claimed_origin(data: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Claimed {
        origin: String,
    }
    let claimed: Claimed = serde_json::from_slice(data).ok()?;
    Some(claimed.origin.chars().take(64).collect())
}

/// A delivery, sorted.
pub enum Inbound {
    /// Deliver to this node's subscribers.
    Message(Arc<Prepared>),
    /// Published by this node, whose subscribers already have it.
    Own,
    /// A request from another node, to be checked before it is believed.
    Control(ControlMessage),
    /// Something on the control exchange that is no request at all.
    BadControl(String),
    /// Nothing to do (a control message of this node's own, or an answer
    /// addressed to another node).
    Ignore,
    /// Unusable: rejected without requeue, with the reason for the log.
    Reject(String),
}

/// Sorts a delivery; `origin` is this process's mark on its own messages,
/// `fresh_id` names a message whose publisher gave none.
pub fn sort(
    delivery: &Delivery,
    config: &AmqpConfig,
    origin: &str,
    fresh_id: impl FnOnce() -> Arc<str>,
) -> Inbound {
    let exchange = delivery.exchange.as_str();
    if exchange == CONTROL {
        return match serde_json::from_slice::<ControlMessage>(&delivery.data) {
            Ok(control) if control.origin.as_str() == &*config.node_id => Inbound::Ignore,
            // Every node receives every peer's answer to every question;
            // dropping the ones for other nodes here, before their MAC is
            // checked or the revocation list locked, keeps a node's start
            // from costing each of its peers a merge per peer.
            Ok(control)
                if control
                    .request
                    .addressee()
                    .is_some_and(|node| node != &*config.node_id) =>
            {
                Inbound::Ignore
            }
            Ok(control) => Inbound::Control(control),
            Err(err) => {
                match unknown_kind(&delivery.data) {
                    Some(kind) => {
                        log::debug!("dropped a control message of a kind this version does not know: {kind:?}");
                        Inbound::Ignore
                    }
                    None => Inbound::BadControl(match claimed_origin(&delivery.data) {
                        Some(origin) => {
                            format!("naming node {origin:?}: a malformed control message: {err}")
                        }
                        None => format!("a malformed control message: {err}"),
                    }),
                }
            }
        };
    }
    let topic = if exchange == TOPICS {
        if header(&delivery.properties, ORIGIN_HEADER) == Some(origin.as_bytes()) {
            return Inbound::Own;
        }
        delivery.routing_key.as_str().to_owned()
    } else if let Some(mapping) = config.inbound.iter().find(|m| m.exchange == exchange) {
        mapping.topic_for(delivery.routing_key.as_str())
    } else {
        return Inbound::Reject(format!("a message from unexpected exchange `{exchange}`"));
    };
    let Ok(topic) = Topic::parse(&topic) else {
        return Inbound::Reject(format!(
            "a message for `{topic}`, which is not a valid topic"
        ));
    };
    let mid = message_id(&delivery.properties).unwrap_or_else(fresh_id);
    let ts = timestamp(&delivery.properties).unwrap_or_else(now_millis);
    let content_type = delivery.properties.content_type().as_ref();
    let bytes = bytes::Bytes::copy_from_slice(&delivery.data);
    if header(&delivery.properties, KIND_HEADER) == Some(RESPONSE_KIND.as_bytes()) {
        // Only a user's own topic carries results, and only JSON frames.
        if private_owner(&topic).is_none() {
            return Inbound::Reject(format!(
                "a response for `{topic}`, which is no user's topic"
            ));
        }
        return match Prepared::response(topic, bytes, mid, ts) {
            Some(message) => Inbound::Message(message),
            None => Inbound::Reject("a response that is not a JSON object".to_owned()),
        };
    }
    let body = Body::from_wire(bytes, content_type.map(ShortString::as_str));
    Inbound::Message(Prepared::new(topic, body, mid, ts))
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a [u8]> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => Some(value.as_bytes()),
        _ => None,
    }
}

/// The publisher's message id, when it is safe to use as Herald's `mid`.
fn message_id(properties: &BasicProperties) -> Option<Arc<str>> {
    let id: &ShortString = properties.message_id().as_ref()?;
    let id = id.as_str();
    let safe = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'));
    safe.then(|| Arc::from(id))
}

/// Milliseconds since the epoch: Herald's own header, else the AMQP
/// timestamp (whole seconds).
fn timestamp(properties: &BasicProperties) -> Option<u64> {
    let from_header =
        properties
            .headers()
            .as_ref()
            .and_then(|headers| match headers.inner().get(TS_HEADER) {
                Some(AMQPValue::LongLongInt(ms)) => u64::try_from(*ms).ok(),
                Some(AMQPValue::Timestamp(ms)) => Some(*ms),
                _ => None,
            });
    from_header.or_else(|| properties.timestamp().map(|secs| secs.saturating_mul(1000)))
}
