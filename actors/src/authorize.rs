//! Authorization by the application: for topics whose permission rule says
//! `ask`, the application's own endpoint decides whether a session may
//! subscribe or publish ("is alice a member of room 42?").
//!
//! The core asks through [`AskApplication`] and never learns how the
//! question travels; each session keeps its answers in an [`AnswerCache`]
//! for a configured time, so a chat client publishing a message a second
//! costs the application one call per cache period, not one per message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::Serialize;

/// What a session wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Subscribe,
    Publish,
}

/// One question for the application, as it is sent.
#[derive(Debug, Clone, Serialize)]
pub struct Question {
    pub action: Action,
    /// The topic, or for a subscription the pattern the client named.
    pub topic: String,
    /// Whether `topic` is a pattern with wildcards.
    pub pattern: bool,
    pub user: Option<Arc<str>>,
    pub session: Arc<str>,
    pub node: Arc<str>,
    /// The token's claims, so the application need not decode it again.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

/// The application's answer; anything but a clear yes is a no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Allow,
    /// Denied, with the application's reason; the client sees it in its
    /// `forbidden`.
    Deny(String),
    /// No answer to go by (a timeout, an error, a reply that is not one):
    /// denied too, but not kept, so that one hiccup does not deny for the
    /// whole cache period.
    Unanswered(String),
}

impl Answer {
    pub fn allowed(&self) -> bool {
        matches!(self, Answer::Allow)
    }
}

/// Puts a [`Question`] to the application.
pub trait AskApplication: Send + Sync {
    /// Resolves to the answer; a timeout or an error must resolve to
    /// [`Answer::Unanswered`], never hang and never allow.
    fn ask(&self, question: Question) -> BoxFuture<'static, Answer>;
}

/// The node's link to the application, if one is configured.
#[derive(Clone, Default)]
pub struct Authorizer(pub Option<Arc<dyn AskApplication>>);

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Authorizer(configured)"
        } else {
            "Authorizer(none)"
        })
    }
}

/// Answers kept per session beyond which the oldest make room: a client
/// cycling through endless topic names cannot grow its session without
/// bound.
pub const MAX_CACHED_ANSWERS: usize = 1024;

/// One session's recent answers, each good for the configured time.
#[derive(Debug)]
pub struct AnswerCache {
    ttl: Duration,
    answers: HashMap<(Action, String), (Answer, Instant)>,
}

impl AnswerCache {
    pub fn new(ttl: Duration) -> AnswerCache {
        AnswerCache {
            ttl,
            answers: HashMap::new(),
        }
    }

    /// The answer for `action` on `topic` if one is still fresh at `now`.
    pub fn get(&self, action: Action, topic: &str, now: Instant) -> Option<&Answer> {
        self.answers
            .get(&(action, topic.to_owned()))
            .filter(|(_, until)| now < *until)
            .map(|(answer, _)| answer)
    }

    /// Keeps `answer` until the cache period has passed.
    pub fn put(&mut self, action: Action, topic: &str, answer: Answer, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        if self.answers.len() >= MAX_CACHED_ANSWERS {
            self.answers.retain(|_, (_, until)| now < *until);
        }
        if self.answers.len() >= MAX_CACHED_ANSWERS {
            let oldest = self
                .answers
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.answers.remove(&oldest);
            }
        }
        self.answers
            .insert((action, topic.to_owned()), (answer, now + self.ttl));
    }

    /// Forgets every answer: a refreshed token may change the application's
    /// mind.
    pub fn clear(&mut self) {
        self.answers.clear();
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_kept_for_the_cache_period_and_no_longer() {
        let start = Instant::now();
        let mut cache = AnswerCache::new(Duration::from_secs(30));
        cache.put(Action::Publish, "room.42", Answer::Allow, start);
        assert_eq!(
            cache.get(Action::Publish, "room.42", start + Duration::from_secs(29)),
            Some(&Answer::Allow)
        );
        assert_eq!(
            cache.get(Action::Publish, "room.42", start + Duration::from_secs(30)),
            None
        );
    }

    #[test]
    fn answers_for_one_action_do_not_answer_the_other() {
        let now = Instant::now();
        let mut cache = AnswerCache::new(Duration::from_secs(30));
        cache.put(Action::Subscribe, "room.42", Answer::Allow, now);
        assert_eq!(cache.get(Action::Publish, "room.42", now), None);
    }

    #[test]
    fn a_zero_cache_period_keeps_nothing() {
        let now = Instant::now();
        let mut cache = AnswerCache::new(Duration::ZERO);
        cache.put(Action::Subscribe, "room.42", Answer::Allow, now);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_stays_bounded_and_drops_the_oldest_first() {
        let start = Instant::now();
        let mut cache = AnswerCache::new(Duration::from_secs(60));
        for n in 0..MAX_CACHED_ANSWERS + 10 {
            let at = start + Duration::from_millis(n as u64);
            cache.put(Action::Publish, &format!("t.{n}"), Answer::Allow, at);
        }
        assert_eq!(cache.len(), MAX_CACHED_ANSWERS);
        let late = start + Duration::from_secs(1);
        assert_eq!(cache.get(Action::Publish, "t.0", late), None);
        let newest = format!("t.{}", MAX_CACHED_ANSWERS + 9);
        assert_eq!(
            cache.get(Action::Publish, &newest, late),
            Some(&Answer::Allow)
        );
    }
}
