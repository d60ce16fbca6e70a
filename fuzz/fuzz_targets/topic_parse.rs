//! Topic and pattern names, and the STOMP destinations that name them, on
//! any text a client can send.
//!
//! Properties: nothing panics; whatever `Topic::parse` or `Pattern::parse`
//! accepts is kept as written and parses again to the same value; a topic
//! is a pattern without wildcards; a `/user` destination resolves only to
//! the session's own private topic.
#![no_main]

use herald::auth::user_id;
use herald_actors::protocol::destination::{
    is_exact, send_target, subscription_pattern, topic_destination, SendTarget,
};
use herald_actors::topic::{
    may_publish, private_owner, user_pattern, Pattern, Topic, MAX_TOPIC_LEN, USER_PREFIX,
};
use libfuzzer_sys::fuzz_target;

fn check_topic(text: &str, topic: &Topic) {
    assert_eq!(topic.as_str(), text);
    assert!(text.len() <= MAX_TOPIC_LEN);
    assert_eq!(topic.segments().collect::<Vec<_>>().join("."), text);
    assert!(topic.segments().all(|s| s != "*" && s != "#"));
    assert_eq!(Topic::parse(topic.as_str()).as_ref(), Ok(topic));
    let pattern = Pattern::parse(text).expect("a topic is a pattern");
    assert!(is_exact(&pattern));
    // What a pattern subscription delivers names the topic, and a SEND to
    // that destination reaches the same topic.
    assert_eq!(
        send_target(&topic_destination(topic), None),
        Ok(SendTarget::Topic(topic.clone()))
    );
    match private_owner(topic) {
        Some(owner) => {
            assert!(!may_publish(topic, None));
            assert!(may_publish(topic, Some(owner)));
        }
        None => assert!(may_publish(topic, None)),
    }
}

fn check_pattern(text: &str, pattern: &Pattern) {
    assert_eq!(pattern.as_str(), text);
    assert!(text.len() <= MAX_TOPIC_LEN);
    assert_eq!(Pattern::parse(pattern.as_str()).as_ref(), Ok(pattern));
    assert_eq!(is_exact(pattern), Topic::parse(text).is_ok());
}

/// A `/user` destination must stay inside `user.{segment}`.
fn assert_own(text: &str, segments: &mut dyn Iterator<Item = &str>, user: Option<&str>) {
    if text.starts_with("/user") {
        assert_eq!(segments.next(), Some(USER_PREFIX), "{text}");
        assert_eq!(segments.next(), user, "{text}");
    }
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    // An optional first line is the signed-in user, as the token path would
    // name it: its topic segment.
    let (user, text) = match input.split_once('\n') {
        Some((id, text)) => (user_id::to_segment(id).ok(), text),
        None => (None, &*input),
    };
    let user = user.as_deref();
    if let Some(user) = user {
        let own = user_pattern(user).expect("a user segment has a private topic");
        assert_eq!(own.as_str(), format!("{USER_PREFIX}.{user}"));
    }

    match Topic::parse(text) {
        Ok(topic) => check_topic(text, &topic),
        Err(err) => assert!(!err.to_string().is_empty()),
    }
    if let Ok(pattern) = Pattern::parse(text) {
        check_pattern(text, &pattern);
    }
    if let Ok(pattern) = subscription_pattern(text, user) {
        check_pattern(pattern.as_str(), &pattern);
        assert_own(text, &mut pattern.segments(), user);
    }
    match send_target(text, user) {
        Ok(SendTarget::Topic(topic)) => {
            check_topic(topic.as_str(), &topic);
            assert_own(text, &mut topic.segments(), user);
            if text.starts_with("/user") {
                assert!(may_publish(&topic, user));
            }
        }
        Ok(SendTarget::App(topic)) => {
            assert!(text.starts_with("/app/"));
            check_topic(topic.as_str(), &topic);
        }
        Err(err) => assert!(!err.to_string().is_empty()),
    }
});
