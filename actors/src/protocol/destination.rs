//! STOMP destinations and the topics they name, the way Spring front ends
//! write them: `/topic/T` is topic T, `/app/D` goes to the backends,
//! `/user/queue/X` and `/user` are the session's own private topics.

use crate::topic::{Pattern, Topic, TopicError, USER_PREFIX};

/// Where a STOMP destination points, with `/` turned into `.` after the
/// prefix (`/topic/chat/42` is `chat.42`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A topic or, for SUBSCRIBE, a pattern.
    Topic(String),
    /// The backends, with this routing key.
    App(String),
    /// The session's own `user.{id}`, with this suffix if any.
    User(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("unknown destination `{0}`: use /topic/<topic>, /app/<destination>, /user/queue/<name> or /user")]
    Unknown(String),
    #[error("`{0}` names a user destination, which needs a signed-in session (send a token)")]
    Anonymous(String),
    #[error("`{destination}` is not a valid topic: {reason}")]
    BadTopic {
        destination: String,
        reason: TopicError,
    },
}

const TOPIC: &str = "/topic/";
const APP: &str = "/app/";
const USER: &str = "/user";
const USER_QUEUE: &str = "/user/queue/";

impl Destination {
    pub fn parse(destination: &str) -> Result<Destination, DestinationError> {
        let dotted = |rest: &str| rest.replace('/', ".");
        if let Some(rest) = destination.strip_prefix(TOPIC) {
            Ok(Destination::Topic(dotted(rest)))
        } else if let Some(rest) = destination.strip_prefix(APP) {
            Ok(Destination::App(dotted(rest)))
        } else if let Some(rest) = destination.strip_prefix(USER_QUEUE) {
            Ok(Destination::User(Some(dotted(rest))))
        } else if destination == USER || destination == "/user/" {
            Ok(Destination::User(None))
        } else {
            Err(DestinationError::Unknown(destination.to_owned()))
        }
    }

    /// The topic (or pattern) text this names for `user`; `App` names the
    /// backends' routing key.
    fn resolve(&self, original: &str, user: Option<&str>) -> Result<String, DestinationError> {
        match self {
            Destination::Topic(text) | Destination::App(text) => Ok(text.clone()),
            Destination::User(suffix) => {
                let user = user.ok_or_else(|| DestinationError::Anonymous(original.to_owned()))?;
                Ok(match suffix {
                    Some(suffix) => format!("{USER_PREFIX}.{user}.{suffix}"),
                    None => format!("{USER_PREFIX}.{user}"),
                })
            }
        }
    }
}

fn bad_topic(destination: &str) -> impl FnOnce(TopicError) -> DestinationError + '_ {
    move |reason| DestinationError::BadTopic {
        destination: destination.to_owned(),
        reason,
    }
}

/// The pattern a SUBSCRIBE to `destination` holds for `user`.
pub fn subscription_pattern(
    destination: &str,
    user: Option<&str>,
) -> Result<Pattern, DestinationError> {
    let parsed = Destination::parse(destination)?;
    if let Destination::App(_) = parsed {
        return Err(DestinationError::Unknown(destination.to_owned()));
    }
    let text = parsed.resolve(destination, user)?;
    Pattern::parse(&text).map_err(bad_topic(destination))
}

/// Where a SEND to `destination` goes for `user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendTarget {
    Topic(Topic),
    App(Topic),
}

pub fn send_target(destination: &str, user: Option<&str>) -> Result<SendTarget, DestinationError> {
    let parsed = Destination::parse(destination)?;
    let text = parsed.resolve(destination, user)?;
    let topic = Topic::parse(&text).map_err(bad_topic(destination))?;
    Ok(match parsed {
        Destination::App(_) => SendTarget::App(topic),
        Destination::Topic(_) | Destination::User(_) => SendTarget::Topic(topic),
    })
}

/// Whether a pattern names one topic only (no `*` or `#`).
pub fn is_exact(pattern: &Pattern) -> bool {
    pattern
        .segments()
        .all(|segment| segment != "*" && segment != "#")
}

/// The destination a `MESSAGE` on `topic` carries when its subscription was
/// a pattern.
pub fn topic_destination(topic: &Topic) -> String {
    format!("{TOPIC}{topic}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).expect("valid test input")
    }

    fn topic(text: &str) -> Topic {
        Topic::parse(text).expect("valid test input")
    }

    #[test]
    fn slashes_after_the_prefix_separate_segments_like_dots() {
        assert_eq!(
            subscription_pattern("/topic/chat/42", None),
            Ok(pattern("chat.42"))
        );
        assert_eq!(
            subscription_pattern("/topic/chat.*", None),
            Ok(pattern("chat.*"))
        );
        assert_eq!(
            send_target("/app/orders/create", None),
            Ok(SendTarget::App(topic("orders.create")))
        );
    }

    #[test]
    fn user_destinations_are_the_sessions_own_private_topics() {
        assert_eq!(
            subscription_pattern("/user/queue/notes", Some("alice")),
            Ok(pattern("user.alice.notes"))
        );
        assert_eq!(
            subscription_pattern("/user", Some("alice")),
            Ok(pattern("user.alice"))
        );
        assert_eq!(
            send_target("/user/queue/notes", Some("alice")),
            Ok(SendTarget::Topic(topic("user.alice.notes")))
        );
        assert!(matches!(
            subscription_pattern("/user/queue/notes", None),
            Err(DestinationError::Anonymous(_))
        ));
    }

    #[test]
    fn other_destinations_and_bad_topics_are_refused_with_a_reason() {
        for destination in ["/queue/x", "chat", "/topicx/a", "", "/app/x"] {
            assert!(
                subscription_pattern(destination, None).is_err(),
                "{destination}"
            );
        }
        assert!(matches!(
            send_target("/topic/a/#", None),
            Err(DestinationError::BadTopic { .. })
        ));
        assert!(matches!(
            send_target("/topic/", None),
            Err(DestinationError::BadTopic { .. })
        ));
        assert!(matches!(
            subscription_pattern("/topic/a//b", None),
            Err(DestinationError::BadTopic { .. })
        ));
    }

    #[test]
    fn exact_subscriptions_keep_their_destination_and_patterns_name_the_topic() {
        assert!(is_exact(&pattern("chat.42")));
        assert!(!is_exact(&pattern("chat.*")));
        assert!(!is_exact(&pattern("#")));
        assert_eq!(topic_destination(&topic("chat.42")), "/topic/chat.42");
    }
}
