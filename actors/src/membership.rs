//! Who is on this node and what each session holds: sessions, their users,
//! their subscriptions, indexed so that a topic's subscribers are found by
//! walking its segments. Pure bookkeeping with no actor inside, so the
//! Broker's rules are tested directly, against a model.
//!
//! Every change reports whether it made a pattern gain its first local
//! holder or lose its last one: that is all the node's RabbitMQ binding
//! needs to know.
//!
//! Every session of a signed-in user receives `user.{id}` without
//! subscribing: the sessions of each user are looked up directly, and the
//! node as a whole holds one pattern for all of them, `user.*`, for as long
//! as any signed-in session is here. One pattern rather than one per user
//! keeps connecting free of a RabbitMQ binding per user; the price is that
//! the node also receives other users' messages, which reach nobody here.
//! A message on a private topic reaches only sessions of its owner,
//! whatever pattern matched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dashmap::DashMap;

use crate::protocol::ErrorCode;
use crate::topic::{private_owner, user_pattern, users_pattern, Pattern, SubscriptionIndex, Topic};

/// A session's number on this node; its public name is `s-<node>-<key>`.
pub type SessionKey = u64;

/// Local holders per pattern, read by the HTTP edge for `/api/topics`.
pub type TopicDirectory = DashMap<Pattern, usize>;

/// The holder of `user.*` on behalf of every signed-in session; no session
/// ever gets this key.
const SIGNED_IN: SessionKey = SessionKey::MAX;

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
    /// Whether the session receives its user's private topic: signed in
    /// with an id that can own one, and not cleared for closing.
    private: bool,
    /// Patterns the session subscribed to.
    patterns: HashSet<Pattern>,
    handle: S,
}

/// The node's sessions and subscriptions; `S` is what the Broker keeps of
/// each session (its addresses, its outbound meter).
pub struct Membership<S> {
    sessions: HashMap<SessionKey, Entry<S>>,
    /// Sessions of each signed-in user, for private topics, kicks and
    /// `users_online`.
    users: HashMap<Arc<str>, HashSet<SessionKey>>,
    /// Sessions holding `user.*` on the node's behalf (see [`SIGNED_IN`]).
    signed_in: usize,
    /// `user.*`, kept to compare against without building it each time.
    users_pattern: Pattern,
    index: SubscriptionIndex<SessionKey>,
    directory: Arc<TopicDirectory>,
    max_subscriptions: usize,
    /// Subscriptions held across all sessions.
    subscriptions: usize,
}

impl<S> Membership<S> {
    pub fn new(max_subscriptions: usize) -> Self {
        Membership {
            sessions: HashMap::new(),
            users: HashMap::new(),
            signed_in: 0,
            users_pattern: users_pattern(),
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

    /// Distinct patterns sessions subscribed to.
    pub fn pattern_count(&self) -> usize {
        self.directory.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }

    pub fn get(&self, key: SessionKey) -> Option<&S> {
        self.sessions.get(&key).map(|entry| &entry.handle)
    }

    pub fn get_mut(&mut self, key: SessionKey) -> Option<&mut S> {
        self.sessions.get_mut(&key).map(|entry| &mut entry.handle)
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

    /// Adds a session. A signed-in one receives its `user.{id}` from now
    /// on; returns whether that made the node gain [`users_pattern`].
    pub fn join(&mut self, key: SessionKey, user: Option<Arc<str>>, handle: S) -> bool {
        let private = user.as_deref().and_then(user_pattern).is_some();
        if let Some(user) = &user {
            self.users.entry(user.clone()).or_default().insert(key);
        }
        self.sessions.insert(
            key,
            Entry {
                user,
                private,
                patterns: HashSet::new(),
                handle,
            },
        );
        if !private {
            return false;
        }
        self.signed_in += 1;
        self.signed_in == 1 && self.index.insert(&self.users_pattern, SIGNED_IN)
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
            if entry.user.as_deref().and_then(user_pattern).is_some() {
                self.signed_in -= 1;
                if self.signed_in == 0 && self.index.remove(&self.users_pattern, SIGNED_IN) {
                    lost.push(self.users_pattern.clone());
                }
            }
        }
        Some(entry.handle)
    }

    /// Drops every subscription of a session and stops its private topic,
    /// keeping the session: for sessions about to be closed. Adds to `lost`
    /// the patterns it was the last local holder of.
    pub fn clear(&mut self, key: SessionKey, lost: &mut Vec<Pattern>) {
        let Some(entry) = self.sessions.get_mut(&key) else {
            return;
        };
        entry.private = false;
        let held: Vec<Pattern> = entry.patterns.drain().collect();
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
        entry.patterns.insert(pattern.clone());
        Ok(Subscribed::Added {
            gained: self.hold(key, pattern),
        })
    }

    /// Removes `pattern` from a session; returns whether it was the node's
    /// last holder. Unsubscribing what is not held does nothing.
    pub fn unsubscribe(&mut self, key: SessionKey, pattern: &Pattern) -> bool {
        let held = self
            .sessions
            .get_mut(&key)
            .is_some_and(|entry| entry.patterns.remove(pattern));
        held && self.release(key, pattern)
    }

    /// Whether any holder on the node (a session, or the signed-in ones
    /// together) holds `pattern`.
    pub fn is_held(&self, pattern: &Pattern) -> bool {
        self.directory.contains_key(pattern)
            || (self.signed_in > 0 && *pattern == self.users_pattern)
    }

    /// Fills `out` with the sessions that receive a message on `topic`: each
    /// once, however many of its patterns match, and for a private topic
    /// only the owner's sessions (all of them for `user.{id}` itself).
    pub fn recipients(&self, topic: &Topic, out: &mut Vec<SessionKey>) {
        out.clear();
        let mut sets = 0;
        self.index.for_each_match(topic, |subscribers| {
            sets += 1;
            out.extend(subscribers);
        });
        if let Some(owner) = private_owner(topic) {
            if topic.segments().count() == 2 {
                if let Some(sessions) = self.users.get(owner) {
                    sets += 1;
                    out.extend(sessions);
                }
            }
            out.retain(|key| {
                self.sessions
                    .get(key)
                    .is_some_and(|entry| entry.user.as_deref() == Some(owner) && entry.private)
            });
        }
        if sets > 1 {
            out.sort_unstable();
            out.dedup();
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
        assert!(members.join(1, Some("alice".into()), ()), "user.* gained");
        assert!(!members.join(2, Some("alice".into()), ()));
        assert!(
            !members.join(3, Some("bob".into()), ()),
            "one pattern for all"
        );
        assert!(!members.join(4, None, ()));
        assert_eq!(recipients(&members, "user.alice"), vec![1, 2]);
        assert!(recipients(&members, "user.alice.orders").is_empty());
        assert_eq!(members.subscription_count(), 0, "not a subscription");
    }

    #[test]
    fn the_node_holds_user_star_until_its_last_signed_in_session_leaves() {
        let mut members = Membership::new(8);
        members.join(1, Some("alice".into()), ());
        members.join(2, Some("bob".into()), ());
        let mut lost = Vec::new();
        members.leave(1, &mut lost);
        assert!(lost.is_empty());
        members.leave(2, &mut lost);
        assert_eq!(lost, vec![users_pattern()]);
    }

    #[test]
    fn an_explicit_user_star_and_the_signed_in_share_the_pattern() {
        let mut members = Membership::new(8);
        members.join(1, None, ());
        assert_eq!(
            members.subscribe(1, &users_pattern()),
            Ok(Subscribed::Added { gained: true })
        );
        assert!(!members.join(2, Some("alice".into()), ()), "already held");
        assert!(!members.unsubscribe(1, &users_pattern()), "still held");
        let mut lost = Vec::new();
        members.leave(2, &mut lost);
        assert_eq!(lost, vec![users_pattern()]);
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
    fn an_explicit_subscription_to_the_private_topic_adds_no_second_copy() {
        let mut members = Membership::new(8);
        members.join(1, Some("alice".into()), ());
        assert!(members.subscribe(1, &pattern("user.alice")).is_ok());
        assert_eq!(recipients(&members, "user.alice"), vec![1]);
        assert!(members.unsubscribe(1, &pattern("user.alice")));
        assert_eq!(
            recipients(&members, "user.alice"),
            vec![1],
            "still received"
        );
    }

    #[test]
    fn a_cleared_session_receives_nothing_more() {
        let mut members = Membership::new(8);
        members.join(1, Some("alice".into()), ());
        members.subscribe(1, &pattern("news")).expect("room");
        let mut lost = Vec::new();
        members.clear(1, &mut lost);
        assert_eq!(lost, vec![pattern("news")]);
        assert!(recipients(&members, "user.alice").is_empty());
        assert!(recipients(&members, "news").is_empty());
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
        let held = prop::sample::select(vec!["a", "a.*", "#", "user.*", "user.alice", "*.bob"]);
        prop_oneof![
            (key.clone(), user).prop_map(|(k, u)| Step::Join(k, u)),
            key.clone().prop_map(Step::Leave),
            (key.clone(), held.clone()).prop_map(|(k, p)| Step::Subscribe(k, p)),
            (key.clone(), held).prop_map(|(k, p)| Step::Unsubscribe(k, p)),
            key.prop_map(Step::Clear),
        ]
    }

    /// The model of one live session.
    struct Modelled {
        user: Option<&'static str>,
        cleared: bool,
        explicit: BTreeSet<String>,
    }

    /// A pattern that gained (`true`) or lost (`false`) its first or last
    /// holder, replayed onto the interest it reports.
    fn replay(
        interest: &mut BTreeSet<String>,
        gained: bool,
        p: String,
    ) -> Result<(), TestCaseError> {
        if gained {
            prop_assert!(interest.insert(p.clone()), "gained twice: {}", p);
        } else {
            prop_assert!(interest.remove(&p), "lost without gain: {}", p);
        }
        Ok(())
    }

    proptest! {
        /// Replaying the reported changes always yields exactly the patterns
        /// held (the sessions' own, and `user.*` while anyone is signed in):
        /// the node's binding can follow them blindly. Private topics reach
        /// exactly their owner's sessions that are not closing.
        #[test]
        fn reported_changes_track_the_held_patterns(steps in prop::collection::vec(step(), 1..60)) {
            let mut members = Membership::new(16);
            let mut model: HashMap<SessionKey, Modelled> = HashMap::new();
            let mut interest: BTreeSet<String> = BTreeSet::new();
            for step in steps {
                let mut changes: Vec<(bool, String)> = Vec::new();
                let mut lost = Vec::new();
                match step {
                    Step::Join(key, user) => {
                        if model.contains_key(&key) { continue; }
                        model.insert(key, Modelled { user, cleared: false, explicit: BTreeSet::new() });
                        if members.join(key, user.map(Arc::from), ()) {
                            changes.push((true, users_pattern().to_string()));
                        }
                    }
                    Step::Leave(key) => {
                        model.remove(&key);
                        members.leave(key, &mut lost);
                    }
                    Step::Subscribe(key, p) => {
                        if let Ok(Subscribed::Added { gained: true }) = members.subscribe(key, &pattern(p)) {
                            changes.push((true, p.to_owned()));
                        }
                        if let Some(session) = model.get_mut(&key) { session.explicit.insert(p.to_owned()); }
                    }
                    Step::Unsubscribe(key, p) => {
                        if members.unsubscribe(key, &pattern(p)) {
                            changes.push((false, p.to_owned()));
                        }
                        if let Some(session) = model.get_mut(&key) { session.explicit.remove(p); }
                    }
                    Step::Clear(key) => {
                        members.clear(key, &mut lost);
                        if let Some(session) = model.get_mut(&key) {
                            session.explicit.clear();
                            session.cleared = true;
                        }
                    }
                }
                changes.extend(lost.into_iter().map(|p| (false, p.to_string())));
                for (gained, p) in changes { replay(&mut interest, gained, p)?; }
                let mut expected: BTreeSet<String> = model
                    .values()
                    .flat_map(|s| s.explicit.iter().cloned())
                    .collect();
                if model.values().any(|s| s.user.is_some()) {
                    expected.insert(users_pattern().to_string());
                }
                prop_assert_eq!(&interest, &expected);
                prop_assert_eq!(
                    members.subscription_count(),
                    model.values().map(|s| s.explicit.len()).sum::<usize>()
                );
                for owner in ["alice", "bob"] {
                    let got = recipients(&members, &format!("user.{owner}"));
                    let mut want: Vec<SessionKey> = model
                        .iter()
                        .filter(|(_, s)| s.user == Some(owner) && !s.cleared)
                        .map(|(k, _)| *k)
                        .collect();
                    want.sort_unstable();
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}
