//! Who is on this node and what each session holds: sessions, their users,
//! their subscriptions, indexed so that a topic's subscribers are found by
//! walking its segments. Pure bookkeeping with no actor inside, so the
//! Broker's rules are tested directly, against a model.
//!
//! Every change reports whether it made a pattern gain its first local
//! holder or lose its last one: that is all the node's RabbitMQ binding
//! needs to know. A signed-in user's sessions hold `user.{id}` implicitly,
//! from the moment they join, so that messages for that user reach them
//! without subscribing; a message on a private topic reaches only sessions
//! of its owner, whatever pattern matched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dashmap::DashMap;

use crate::protocol::ErrorCode;
use crate::topic::{private_owner, user_pattern, Pattern, SubscriptionIndex, Topic};

/// A session's number on this node; its public name is `s-<node>-<key>`.
pub type SessionKey = u64;

/// Local holders per pattern, read by the HTTP edge for `/api/topics`.
pub type TopicDirectory = DashMap<Pattern, usize>;

/// What a subscribe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// The session holds the pattern now; `gained` if it is the node's first.
    Added { gained: bool },
    /// The session held it already.
    Already,
}

struct Entry<S> {
    user: Option<Arc<str>>,
    /// Patterns the session subscribed to.
    patterns: HashSet<Pattern>,
    /// `user.{id}` of a signed-in session, held without subscribing.
    implicit: Option<Pattern>,
    handle: S,
}

impl<S> Entry<S> {
    fn holds(&self, pattern: &Pattern) -> bool {
        self.patterns.contains(pattern) || self.implicit.as_ref() == Some(pattern)
    }
}

/// The node's sessions and subscriptions; `S` is what the Broker keeps of
/// each session (its addresses, its outbound meter).
pub struct Membership<S> {
    sessions: HashMap<SessionKey, Entry<S>>,
    /// Sessions of each signed-in user, for kicks and `users_online`.
    users: HashMap<Arc<str>, HashSet<SessionKey>>,
    index: SubscriptionIndex<SessionKey>,
    directory: Arc<TopicDirectory>,
    max_subscriptions: usize,
    /// Held patterns across all sessions, implicit ones included.
    subscriptions: usize,
}

impl<S> Membership<S> {
    pub fn new(max_subscriptions: usize) -> Self {
        Membership {
            sessions: HashMap::new(),
            users: HashMap::new(),
            index: SubscriptionIndex::new(),
            directory: Arc::new(TopicDirectory::new()),
            max_subscriptions,
            subscriptions: 0,
        }
    }

    pub fn directory(&self) -> Arc<TopicDirectory> {
        self.directory.clone()
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn pattern_count(&self) -> usize {
        self.index.pattern_count()
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }

    pub fn get(&self, key: SessionKey) -> Option<&S> {
        self.sessions.get(&key).map(|entry| &entry.handle)
    }

    pub fn keys(&self) -> impl Iterator<Item = SessionKey> + '_ {
        self.sessions.keys().copied()
    }

    pub fn sessions_of(&self, user: &str) -> Vec<SessionKey> {
        self.users
            .get(user)
            .map(|keys| keys.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Adds a session; a signed-in one holds its `user.{id}` from now on.
    /// Returns whether that made `user.{id}` gain its first local holder.
    pub fn join(&mut self, key: SessionKey, user: Option<Arc<str>>, handle: S) -> bool {
        let implicit = user.as_deref().and_then(user_pattern);
        if let Some(user) = &user {
            self.users.entry(user.clone()).or_default().insert(key);
        }
        self.sessions.insert(
            key,
            Entry {
                user,
                patterns: HashSet::new(),
                implicit: implicit.clone(),
                handle,
            },
        );
        implicit.is_some_and(|pattern| self.hold(key, &pattern))
    }

    /// Removes a session and everything it held, adding to `lost` the
    /// patterns it was the last local holder of.
    pub fn leave(&mut self, key: SessionKey, lost: &mut Vec<Pattern>) -> Option<S> {
        self.clear(key, lost);
        let entry = self.sessions.remove(&key)?;
        if let Some(user) = &entry.user {
            if let Some(keys) = self.users.get_mut(user) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.users.remove(user);
                }
            }
        }
        Some(entry.handle)
    }

    /// Drops every pattern a session holds (its implicit one too), keeping
    /// the session: for sessions about to be closed. Adds to `lost` the
    /// patterns it was the last local holder of.
    pub fn clear(&mut self, key: SessionKey, lost: &mut Vec<Pattern>) {
        let Some(entry) = self.sessions.get_mut(&key) else {
            return;
        };
        let mut held: Vec<Pattern> = entry.patterns.drain().collect();
        if let Some(implicit) = entry.implicit.take() {
            if !held.contains(&implicit) {
                held.push(implicit);
            }
        }
        for pattern in held {
            if self.release(key, &pattern) {
                lost.push(pattern);
            }
        }
    }

    /// Adds `pattern` to a session, within the subscription limit.
    pub fn subscribe(
        &mut self,
        key: SessionKey,
        pattern: &Pattern,
    ) -> Result<Subscribed, ErrorCode> {
        let max = self.max_subscriptions;
        let Some(entry) = self.sessions.get_mut(&key) else {
            return Err(ErrorCode::Unavailable);
        };
        if entry.patterns.contains(pattern) {
            return Ok(Subscribed::Already);
        }
        if entry.patterns.len() >= max {
            return Err(ErrorCode::TooManySubscriptions);
        }
        let indexed = entry.holds(pattern);
        entry.patterns.insert(pattern.clone());
        if indexed {
            // Its implicit `user.{id}`, subscribed explicitly as well.
            return Ok(Subscribed::Added { gained: false });
        }
        Ok(Subscribed::Added {
            gained: self.hold(key, pattern),
        })
    }

    /// Removes `pattern` from a session; returns whether it was the node's
    /// last holder. Unsubscribing what is not held does nothing.
    pub fn unsubscribe(&mut self, key: SessionKey, pattern: &Pattern) -> bool {
        let Some(entry) = self.sessions.get_mut(&key) else {
            return false;
        };
        if !entry.patterns.remove(pattern) || entry.holds(pattern) {
            return false;
        }
        self.release(key, pattern)
    }

    /// Whether any session on the node holds `pattern`.
    pub fn is_held(&self, pattern: &Pattern) -> bool {
        self.directory.contains_key(pattern)
    }

    /// Fills `out` with the sessions that receive a message on `topic`: each
    /// once, however many of its patterns match, and for a private topic
    /// only the owner's sessions.
    pub fn recipients(&self, topic: &Topic, out: &mut Vec<SessionKey>) {
        out.clear();
        let mut sets = 0;
        self.index.for_each_match(topic, |subscribers| {
            sets += 1;
            out.extend(subscribers);
        });
        if sets > 1 {
            out.sort_unstable();
            out.dedup();
        }
        if let Some(owner) = private_owner(topic) {
            out.retain(|key| {
                self.sessions
                    .get(key)
                    .is_some_and(|entry| entry.user.as_deref() == Some(owner))
            });
        }
    }

    /// Indexes one holder; returns whether the pattern had none before.
    fn hold(&mut self, key: SessionKey, pattern: &Pattern) -> bool {
        self.subscriptions += 1;
        *self.directory.entry(pattern.clone()).or_insert(0) += 1;
        self.index.insert(pattern, key)
    }

    /// Unindexes one holder; returns whether it was the pattern's last.
    fn release(&mut self, key: SessionKey, pattern: &Pattern) -> bool {
        self.subscriptions = self.subscriptions.saturating_sub(1);
        if let dashmap::Entry::Occupied(mut count) = self.directory.entry(pattern.clone()) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
        self.index.remove(pattern, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).expect("valid test input")
    }

    fn topic(text: &str) -> Topic {
        Topic::parse(text).expect("valid test input")
    }

    fn recipients(members: &Membership<()>, text: &str) -> Vec<SessionKey> {
        let mut out = Vec::new();
        members.recipients(&topic(text), &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn a_signed_in_session_receives_its_private_topic_without_subscribing() {
        let mut members = Membership::new(8);
        assert!(
            members.join(1, Some("alice".into()), ()),
            "user.alice gained"
        );
        assert!(!members.join(2, Some("alice".into()), ()));
        assert!(members.join(3, Some("bob".into()), ()), "user.bob gained");
        assert!(!members.join(4, None, ()));
        assert_eq!(recipients(&members, "user.alice"), vec![1, 2]);
        assert!(recipients(&members, "user.alice.orders").is_empty());
    }

    #[test]
    fn wildcards_never_leak_another_users_private_messages() {
        let mut members = Membership::new(8);
        members.join(1, Some("alice".into()), ());
        members.join(2, Some("bob".into()), ());
        members.join(3, None, ());
        for key in [2, 3] {
            for held in ["#", "*.alice", "user.*", "user.alice"] {
                members.subscribe(key, &pattern(held)).expect("room");
            }
        }
        members.subscribe(1, &pattern("#")).expect("room");
        assert_eq!(recipients(&members, "user.alice"), vec![1]);
        assert_eq!(recipients(&members, "news"), vec![1, 2, 3]);
    }

    #[test]
    fn an_explicit_subscription_to_the_private_topic_does_not_undo_the_implicit_one() {
        let mut members = Membership::new(8);
        members.join(1, Some("alice".into()), ());
        assert_eq!(
            members.subscribe(1, &pattern("user.alice")),
            Ok(Subscribed::Added { gained: false })
        );
        assert!(!members.unsubscribe(1, &pattern("user.alice")));
        assert_eq!(recipients(&members, "user.alice"), vec![1]);
        let mut lost = Vec::new();
        members.leave(1, &mut lost);
        assert_eq!(lost, vec![pattern("user.alice")]);
        assert_eq!(members.subscription_count(), 0);
    }

    #[test]
    fn the_subscription_limit_counts_explicit_patterns() {
        let mut members = Membership::new(1);
        members.join(1, Some("alice".into()), ());
        assert!(members.subscribe(1, &pattern("a")).is_ok());
        assert_eq!(members.subscribe(1, &pattern("a")), Ok(Subscribed::Already));
        assert_eq!(
            members.subscribe(1, &pattern("b")),
            Err(ErrorCode::TooManySubscriptions)
        );
        assert_eq!(
            members.subscribe(9, &pattern("b")),
            Err(ErrorCode::Unavailable)
        );
    }

    /// One step of a session's life, as a test drives it.
    #[derive(Debug, Clone)]
    enum Step {
        Join(SessionKey, Option<&'static str>),
        Leave(SessionKey),
        Subscribe(SessionKey, &'static str),
        Unsubscribe(SessionKey, &'static str),
        Clear(SessionKey),
    }

    fn step() -> impl Strategy<Value = Step> {
        let key = 0..4u64;
        let user = prop::sample::select(vec![None, Some("alice"), Some("bob")]);
        let held = prop::sample::select(vec!["a", "a.*", "#", "user.alice", "user.bob", "*.bob"]);
        prop_oneof![
            (key.clone(), user).prop_map(|(k, u)| Step::Join(k, u)),
            key.clone().prop_map(Step::Leave),
            (key.clone(), held.clone()).prop_map(|(k, p)| Step::Subscribe(k, p)),
            (key.clone(), held).prop_map(|(k, p)| Step::Unsubscribe(k, p)),
            key.prop_map(Step::Clear),
        ]
    }

    /// The model of one live session: its user, its implicit private
    /// pattern (until cleared), its explicit subscriptions.
    struct Modelled {
        user: Option<&'static str>,
        implicit: Option<String>,
        explicit: BTreeSet<String>,
    }

    /// A reported change, as the test replays it.
    enum Change {
        Gained(Pattern),
        Lost(Pattern),
    }

    fn replay(interest: &mut BTreeSet<String>, change: Change) -> Result<(), TestCaseError> {
        match change {
            Change::Gained(p) => {
                prop_assert!(interest.insert(p.to_string()), "gained twice: {}", p)
            }
            Change::Lost(p) => {
                prop_assert!(interest.remove(p.as_str()), "lost without gain: {}", p)
            }
        }
        Ok(())
    }

    proptest! {
        /// Replaying the reported changes always yields exactly the patterns
        /// some session holds: the node's binding can follow them blindly.
        #[test]
        fn reported_changes_track_the_held_patterns(steps in prop::collection::vec(step(), 1..60)) {
            let mut members = Membership::new(16);
            let mut model: HashMap<SessionKey, Modelled> = HashMap::new();
            let mut interest: BTreeSet<String> = BTreeSet::new();
            for step in steps {
                let mut changes = Vec::new();
                match step {
                    Step::Join(key, user) => {
                        if model.contains_key(&key) { continue; }
                        let implicit = user.map(|u| format!("user.{u}"));
                        model.insert(key, Modelled { user, implicit, explicit: BTreeSet::new() });
                        if members.join(key, user.map(Arc::from), ()) {
                            changes.push(Change::Gained(pattern(&format!("user.{}", user.unwrap_or_default()))));
                        }
                    }
                    Step::Leave(key) => {
                        model.remove(&key);
                        let mut lost = Vec::new();
                        members.leave(key, &mut lost);
                        changes.extend(lost.into_iter().map(Change::Lost));
                    }
                    Step::Subscribe(key, p) => {
                        if let Ok(Subscribed::Added { gained: true }) = members.subscribe(key, &pattern(p)) {
                            changes.push(Change::Gained(pattern(p)));
                        }
                        if let Some(session) = model.get_mut(&key) { session.explicit.insert(p.to_owned()); }
                    }
                    Step::Unsubscribe(key, p) => {
                        if members.unsubscribe(key, &pattern(p)) {
                            changes.push(Change::Lost(pattern(p)));
                        }
                        if let Some(session) = model.get_mut(&key) { session.explicit.remove(p); }
                    }
                    Step::Clear(key) => {
                        let mut lost = Vec::new();
                        members.clear(key, &mut lost);
                        changes.extend(lost.into_iter().map(Change::Lost));
                        if let Some(session) = model.get_mut(&key) {
                            session.explicit.clear();
                            session.implicit = None;
                        }
                    }
                }
                for change in changes { replay(&mut interest, change)?; }
                let expected: BTreeSet<String> = model
                    .values()
                    .flat_map(|s| s.explicit.iter().cloned().chain(s.implicit.clone()))
                    .collect();
                prop_assert_eq!(&interest, &expected);
                prop_assert_eq!(
                    members.subscription_count(),
                    model.values().map(|s| s.explicit.union(&s.implicit.iter().cloned().collect()).count()).sum::<usize>()
                );
                // Private topics reach only their owner's holders.
                for owner in ["alice", "bob"] {
                    for key in recipients(&members, &format!("user.{owner}")) {
                        prop_assert_eq!(model[&key].user, Some(owner));
                    }
                }
            }
        }
    }
}
