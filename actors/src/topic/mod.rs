//! Topic names and subscription patterns: validation, and the segment view the
//! index and the access rules work on.
//!
//! A topic is 1 to 255 bytes of segments `[A-Za-z0-9_:-]+` joined by `.`.
//! A pattern may also hold the AMQP wildcards as whole segments: `*` for one
//! segment, `#` for zero or more.
//!
//! [`algebra`] answers set questions about patterns (match, overlap,
//! containment); [`permissions`] holds the configured rules and token
//! grants built on them; `access` keeps private topics private.

mod access;
pub mod algebra;
pub mod permissions;
mod trie;

pub use access::{may_publish, private_owner, user_pattern, users_pattern, USER_PREFIX};
pub use permissions::{
    Access, Decision, Grants, Partial, Permissions, Reach, RuleError, RuleSpec, Subject,
};
pub use trie::SubscriptionIndex;

use std::fmt;
use std::sync::Arc;

pub const MAX_TOPIC_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    #[error("segment `{0}` must be one or more of A-Z a-z 0-9 _ : -")]
    BadSegment(String),
    #[error("wildcards `*` and `#` are for subscriptions, not for publishing")]
    Wildcard,
}

/// A concrete topic, the destination of a publish. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

/// A subscription pattern: a topic that may contain `*` and `#` segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pattern(Arc<str>);

fn is_segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-')
}

fn validate(text: &str, wildcards: bool) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    for segment in text.split('.') {
        if segment == "*" || segment == "#" {
            if !wildcards {
                return Err(TopicError::Wildcard);
            }
        } else if segment.is_empty() || !segment.bytes().all(is_segment_char) {
            return Err(TopicError::BadSegment(segment.to_owned()));
        }
    }
    Ok(())
}

impl Topic {
    pub fn parse(text: &str) -> Result<Self, TopicError> {
        validate(text, false)?;
        Ok(Topic(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, TopicError> {
        validate(text, true)?;
        Ok(Pattern(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The reference semantics of AMQP topic matching, written the slow way,
/// for tests to check the fast paths against.
#[cfg(test)]
pub(crate) fn reference(pattern: &[&str], topic: &[&str]) -> bool {
    match pattern.split_first() {
        None => topic.is_empty(),
        Some((&"#", rest)) => (0..=topic.len()).any(|skip| reference(rest, &topic[skip..])),
        Some((&"*", rest)) => !topic.is_empty() && reference(rest, &topic[1..]),
        Some((literal, rest)) => topic.first() == Some(literal) && reference(rest, &topic[1..]),
    }
}

#[cfg(test)]
pub(crate) fn reference_match(pattern: &Pattern, topic: &Topic) -> bool {
    let pattern: Vec<&str> = pattern.segments().collect();
    let topic: Vec<&str> = topic.segments().collect();
    reference(&pattern, &topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(Topic::parse("news.sports").is_ok());
        assert!(Topic::parse("a_b:c-D.9").is_ok());
        assert!(Topic::parse(&"a".repeat(255)).is_ok());
        assert!(Pattern::parse("news.*").is_ok());
        assert!(Pattern::parse("#").is_ok());
        assert!(Pattern::parse("a.#.b").is_ok());
    }

    #[test]
    fn rejects_what_the_contract_rejects() {
        assert_eq!(Topic::parse(""), Err(TopicError::Empty));
        assert_eq!(Topic::parse(&"a".repeat(256)), Err(TopicError::TooLong));
        assert!(matches!(
            Topic::parse("a..b"),
            Err(TopicError::BadSegment(_))
        ));
        assert!(matches!(Topic::parse(".a"), Err(TopicError::BadSegment(_))));
        assert!(matches!(
            Topic::parse("a b"),
            Err(TopicError::BadSegment(_))
        ));
        assert!(matches!(
            Topic::parse("a/b"),
            Err(TopicError::BadSegment(_))
        ));
        assert!(matches!(Topic::parse("é"), Err(TopicError::BadSegment(_))));
        assert_eq!(Topic::parse("a.*"), Err(TopicError::Wildcard));
        assert_eq!(Topic::parse("#"), Err(TopicError::Wildcard));
        assert!(matches!(
            Pattern::parse("a*"),
            Err(TopicError::BadSegment(_))
        ));
        assert!(matches!(
            Pattern::parse("a.#b"),
            Err(TopicError::BadSegment(_))
        ));
    }

    use proptest::prelude::*;

    /// Text near the alphabet, so that much of it parses, and anything.
    fn topic_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-c0-9_:*#.-]{0,12}",
            "([a-z]{1,3}|[*#])(\\.([a-z]{1,3}|[*#])){0,6}",
            "[a-z.]{250,260}",
            ".{0,40}",
        ]
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_what_it_accepts_round_trips(text in topic_text()) {
            if let Ok(topic) = Topic::parse(&text) {
                prop_assert_eq!(topic.as_str(), text.as_str());
                prop_assert!(text.len() <= MAX_TOPIC_LEN);
                prop_assert_eq!(topic.segments().collect::<Vec<_>>().join("."), text.as_str());
                prop_assert_eq!(Topic::parse(topic.as_str()), Ok(topic.clone()));
                prop_assert!(Pattern::parse(&text).is_ok(), "a topic is a pattern");
            }
            match Pattern::parse(&text) {
                Ok(pattern) => {
                    prop_assert_eq!(pattern.as_str(), text.as_str());
                    prop_assert_eq!(Pattern::parse(pattern.as_str()), Ok(pattern.clone()));
                    let wild = pattern.segments().any(|s| s == "*" || s == "#");
                    prop_assert_eq!(Topic::parse(&text).is_ok(), !wild);
                }
                Err(err) => prop_assert!(Topic::parse(&text).is_err(), "{}", err),
            }
        }
    }
}
