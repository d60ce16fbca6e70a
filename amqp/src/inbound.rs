//! Exchanges of existing microservices mapped onto Herald topics.

use serde::Deserialize;

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

#[cfg(test)]
mod tests {
    use super::*;

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
