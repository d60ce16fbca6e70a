//! Private topics: `user.{id}` and everything under it belong to that user.
//!
//! Only the user may subscribe to them, and nobody may subscribe to a pattern
//! that could match another user's private topic (`#`, `user.*`, `*.bob`).
//! Clients may publish only into their own private topics; backends publish
//! anywhere through the HTTP API or RabbitMQ.

use super::{Pattern, Topic};

pub const USER_PREFIX: &str = "user";

/// Whether a session of `user` (None = anonymous) may subscribe to `pattern`.
pub fn may_subscribe(pattern: &Pattern, user: Option<&str>) -> bool {
    let mut segments = pattern.segments();
    let first = segments.next().unwrap_or_default();
    let second = segments.next();
    match (first, second) {
        // `#` can swallow `user.<anyone>`.
        ("#", _) => false,
        // `user` alone is not private; `*` alone matches single segments only.
        (_, None) => true,
        (USER_PREFIX | "*", Some(id)) => {
            if id == "*" || id == "#" {
                return false;
            }
            // `user.bob` is bob's; `*.bob` also matches `user.bob`.
            user == Some(id)
        }
        _ => true,
    }
}

/// Whether a client session of `user` may publish to `topic`.
pub fn may_publish(topic: &Topic, user: Option<&str>) -> bool {
    let mut segments = topic.segments();
    match (segments.next(), segments.next()) {
        (Some(USER_PREFIX), Some(id)) => user == Some(id),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(pattern: &str, user: Option<&str>) -> bool {
        may_subscribe(&Pattern::parse(pattern).expect("valid test input"), user)
    }

    #[test]
    fn a_user_may_subscribe_to_their_own_private_topics_only() {
        assert!(sub("user.alice", Some("alice")));
        assert!(sub("user.alice.#", Some("alice")));
        assert!(sub("user.alice.*", Some("alice")));
        assert!(!sub("user.bob", Some("alice")));
        assert!(!sub("user.bob", None));
    }

    #[test]
    fn patterns_that_could_reach_another_users_topic_are_refused() {
        for pattern in [
            "#", "#.x", "user.*", "user.#", "*.*", "*.#", "*.bob", "*.bob.x",
        ] {
            assert!(!sub(pattern, Some("alice")), "{pattern}");
            assert!(!sub(pattern, None), "{pattern}");
        }
        assert!(sub("*.alice", Some("alice")));
    }

    #[test]
    fn public_topics_and_patterns_are_open() {
        for pattern in [
            "news",
            "news.*",
            "news.#",
            "*",
            "user",
            "users.bob",
            "a.*.c",
        ] {
            assert!(sub(pattern, None), "{pattern}");
        }
    }

    #[test]
    fn clients_publish_only_into_their_own_private_topics() {
        let topic = |t: &str| Topic::parse(t).expect("valid test input");
        assert!(may_publish(&topic("news"), None));
        assert!(may_publish(&topic("user.alice.inbox"), Some("alice")));
        assert!(!may_publish(&topic("user.bob"), Some("alice")));
        assert!(!may_publish(&topic("user.bob"), None));
    }
}
