//! What arrives from RabbitMQ and where it goes: exchanges of existing
//! microservices mapped onto Herald topics, and message bodies turned into
//! the JSON payload subscribers receive.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// `[[amqp.inbound]]`: consume an exchange a microservice already publishes
/// to, without changing it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InboundMapping {
    /// The exchange to consume.
    pub exchange: String,
    /// Binding key on that exchange (`#` for everything; ignored by fanout).
    #[serde(default = "every_key")]
    pub binding: String,
    /// Topic to deliver on; `{routing_key}` is replaced by the message's key.
    pub topic: String,
    /// If set, the exchange is declared (durable) with this type when
    /// missing; if not, it must exist already.
    #[serde(default, rename = "type")]
    pub exchange_type: Option<String>,
}

fn every_key() -> String {
    "#".to_owned()
}

impl InboundMapping {
    /// The topic a message with `routing_key` maps onto.
    pub fn topic_for(&self, routing_key: &str) -> String {
        self.topic.replace("{routing_key}", routing_key)
    }
}

/// The payload subscribers receive for an AMQP body: the body itself when it
/// is JSON (borrowed, not copied), else the body as a JSON string.
pub fn payload(body: &[u8]) -> Cow<'_, RawValue> {
    if let Ok(json) = serde_json::from_slice::<&RawValue>(body) {
        return Cow::Borrowed(json);
    }
    let text = String::from_utf8_lossy(body);
    let quoted = serde_json::to_string(&text)
        .ok()
        .and_then(|quoted| RawValue::from_string(quoted).ok());
    quoted.map_or(Cow::Borrowed(RawValue::NULL), Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_stay_json_and_others_become_strings() {
        assert_eq!(payload(br#"{"a": [1, 2]}"#).get(), r#"{"a": [1, 2]}"#);
        assert_eq!(payload(b"42").get(), "42");
        assert_eq!(payload(b"hello \"world\"").get(), r#""hello \"world\"""#);
        assert_eq!(payload(b"").get(), r#""""#);
        assert_eq!(payload(&[0xff, b'a']).get(), "\"\u{fffd}a\"");
    }

    #[test]
    fn routing_keys_fill_the_topic_template() {
        let mapping = InboundMapping {
            exchange: "greetings".into(),
            binding: "#".into(),
            topic: "greetings.{routing_key}".into(),
            exchange_type: None,
        };
        assert_eq!(mapping.topic_for("en.uk"), "greetings.en.uk");
    }
}
