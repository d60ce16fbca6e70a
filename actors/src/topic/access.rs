//! Private topics: `user.{id}` and everything under it belong to that user.
//!
//! Privacy is enforced where messages are delivered, not where patterns are
//! subscribed: any pattern may be subscribed (`#`, `*.bob`), but a message
//! on `user.{id}…` reaches only sessions of user `{id}`, whatever pattern
//! matched. Clients may publish only into their own private topics; backends
//! publish anywhere through the HTTP API or RabbitMQ.

use super::{Pattern, Topic};

pub const USER_PREFIX: &str = "user";

/// The user a private topic belongs to, or `None` for a public topic.
pub fn private_owner(topic: &Topic) -> Option<&str> {
    let mut segments = topic.segments();
    match (segments.next(), segments.next()) {
        (Some(USER_PREFIX), Some(id)) => Some(id),
        _ => None,
    }
}

/// `user.{id}`, which every session of a signed-in user receives without
/// subscribing; `None` when the id is not a single topic segment (such a
/// user could never own a private topic).
pub fn user_pattern(user: &str) -> Option<Pattern> {
    if user.contains('.') {
        return None;
    }
    let pattern = Pattern::parse(&format!("{USER_PREFIX}.{user}")).ok()?;
    // `*` and `#` are segments a pattern may hold but a user id may not.
    (user != "*" && user != "#").then_some(pattern)
}

/// `user.*`: every user's own private topic. A node holds it while any
/// signed-in session is connected, so that `user.{id}` reaches that user's
/// sessions from any node.
pub fn users_pattern() -> Pattern {
    Pattern(format!("{USER_PREFIX}.*").into())
}

/// Whether a client session of `user` may publish to `topic`.
pub fn may_publish(topic: &Topic, user: Option<&str>) -> bool {
    match private_owner(topic) {
        Some(owner) => user == Some(owner),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(text: &str) -> Topic {
        Topic::parse(text).expect("valid test input")
    }

    #[test]
    fn private_topics_name_their_owner() {
        assert_eq!(private_owner(&topic("user.alice")), Some("alice"));
        assert_eq!(private_owner(&topic("user.alice.orders")), Some("alice"));
        assert_eq!(private_owner(&topic("user")), None);
        assert_eq!(private_owner(&topic("users.bob")), None);
        assert_eq!(private_owner(&topic("news.user")), None);
    }

    #[test]
    fn only_single_segment_ids_get_a_private_pattern() {
        assert_eq!(
            user_pattern("alice").map(|p| p.to_string()).as_deref(),
            Some("user.alice")
        );
        for id in ["a.b", "*", "#", "", "a b"] {
            assert_eq!(user_pattern(id), None, "{id}");
        }
    }

    #[test]
    fn the_users_pattern_is_a_valid_pattern() {
        assert_eq!(Pattern::parse("user.*"), Ok(users_pattern()));
    }

    #[test]
    fn clients_publish_only_into_their_own_private_topics() {
        assert!(may_publish(&topic("news"), None));
        assert!(may_publish(&topic("user.alice.inbox"), Some("alice")));
        assert!(!may_publish(&topic("user.bob"), Some("alice")));
        assert!(!may_publish(&topic("user.bob"), None));
    }
}
