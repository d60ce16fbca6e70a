//! A STOMP session's subscriptions by id, and the patterns they make the
//! session hold with the Broker.
//!
//! STOMP names subscriptions by id and lets several ids share a pattern;
//! the Broker holds one subscription per pattern and session. This keeps the
//! ids, says when a removal was a pattern's last (the Broker must then let
//! it go), and finds the ids a delivered message matches without scanning
//! them all.

use std::collections::HashMap;

use crate::topic::{Pattern, SubscriptionIndex, Topic};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub pattern: Pattern,
    /// The destination as the client wrote it.
    pub destination: String,
    /// The destination as subscribed, for an exact subscription; `MESSAGE`
    /// frames of pattern subscriptions name their topic instead.
    pub exact_destination: Option<String>,
    /// `ack: client` or `client-individual`: `MESSAGE` carries `ack`.
    pub wants_ack: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The id is in use in this session.
    DuplicateId,
    /// The session holds as many subscriptions as it may.
    TooMany,
}

#[derive(Debug)]
pub struct Subscriptions {
    max: usize,
    /// Subscriptions by their number, the key the index holds.
    by_number: HashMap<u64, Subscription>,
    numbers: HashMap<String, u64>,
    index: SubscriptionIndex<u64>,
    next_number: u64,
    /// Scratch space for the numbers one delivery matches.
    matched: Vec<u64>,
}

impl Subscriptions {
    pub fn new(max: usize) -> Self {
        Subscriptions {
            max,
            by_number: HashMap::new(),
            numbers: HashMap::new(),
            index: SubscriptionIndex::new(),
            next_number: 0,
            matched: Vec::new(),
        }
    }

    /// Adds a subscription. The Broker is asked for its pattern either way:
    /// it answers once the pattern is in force, whoever holds it already.
    pub fn add(&mut self, subscription: Subscription) -> Result<(), Refused> {
        if self.numbers.contains_key(&subscription.id) {
            return Err(Refused::DuplicateId);
        }
        if self.by_number.len() >= self.max {
            return Err(Refused::TooMany);
        }
        let number = self.next_number;
        self.next_number += 1;
        self.index.insert(&subscription.pattern, number);
        self.numbers.insert(subscription.id.clone(), number);
        self.by_number.insert(number, subscription);
        Ok(())
    }

    /// Removes the subscription `id`, returning its pattern if no other
    /// subscription of the session holds it (the Broker must let it go);
    /// `None` also when no such id is held.
    pub fn remove(&mut self, id: &str) -> Option<Pattern> {
        let number = self.numbers.remove(id)?;
        let subscription = self.by_number.remove(&number)?;
        let last = self.index.remove(&subscription.pattern, number);
        last.then_some(subscription.pattern)
    }

    /// The id of a subscription to `destination` (whose pattern is
    /// `pattern`), where the answer to a SEND naming it in `reply-to` goes:
    /// one to that very destination first, else any holding that pattern.
    pub fn reply_target(&self, destination: &str, pattern: &Pattern) -> Option<&str> {
        let mut by_pattern = None;
        for subscription in self.by_number.values() {
            if subscription.exact_destination.as_deref() == Some(destination) {
                return Some(&subscription.id);
            }
            if &subscription.pattern == pattern && by_pattern.is_none() {
                by_pattern = Some(subscription.id.as_str());
            }
        }
        by_pattern
    }

    /// Removes every subscription `keep` refuses; returns each with the
    /// pattern the Broker must let go, if it was that pattern's last.
    pub fn remove_where(
        &mut self,
        mut refuse: impl FnMut(&Subscription) -> bool,
    ) -> Vec<(Subscription, Option<Pattern>)> {
        let mut refused: Vec<(u64, String)> = self
            .by_number
            .iter()
            .filter(|(_, subscription)| refuse(subscription))
            .map(|(number, subscription)| (*number, subscription.id.clone()))
            .collect();
        // In the order they were made, so notices read in a stable order.
        refused.sort();
        let mut removed = Vec::new();
        for (_, id) in refused {
            let Some(number) = self.numbers.get(&id).copied() else {
                continue;
            };
            let Some(subscription) = self.by_number.get(&number).cloned() else {
                continue;
            };
            let released = self.remove(&id);
            removed.push((subscription, released));
        }
        removed
    }

    /// Every distinct pattern held.
    pub fn patterns(&self) -> Vec<Pattern> {
        let mut patterns: Vec<Pattern> = self
            .by_number
            .values()
            .map(|subscription| subscription.pattern.clone())
            .collect();
        patterns.sort();
        patterns.dedup();
        patterns
    }

    /// Calls `visit` with each subscription `topic` matches, once each.
    pub fn matching(&mut self, topic: &Topic, mut visit: impl FnMut(&Subscription)) {
        let mut matched = std::mem::take(&mut self.matched);
        matched.clear();
        // A number sits under its one pattern only, so none repeats.
        self.index
            .for_each_match(topic, |numbers| matched.extend(numbers));
        for number in &matched {
            if let Some(subscription) = self.by_number.get(number) {
                visit(subscription);
            }
        }
        self.matched = matched;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_number.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_number.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::topic::reference_match;

    fn subscription(id: &str, pattern: &str) -> Subscription {
        Subscription {
            id: id.to_owned(),
            pattern: Pattern::parse(pattern).expect("valid test input"),
            destination: format!("/topic/{pattern}"),
            exact_destination: None,
            wants_ack: false,
        }
    }

    fn ids(subscriptions: &mut Subscriptions, topic: &str) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        let topic = Topic::parse(topic).expect("valid test input");
        subscriptions.matching(&topic, |s| {
            assert!(ids.insert(s.id.clone()), "{} visited twice", s.id);
        });
        ids
    }

    #[test]
    fn ids_sharing_a_pattern_release_it_with_the_last_one() {
        let mut subscriptions = Subscriptions::new(8);
        subscriptions
            .add(subscription("a", "chat.*"))
            .expect("room");
        subscriptions
            .add(subscription("b", "chat.*"))
            .expect("room");
        assert_eq!(
            subscriptions.add(subscription("a", "other")),
            Err(Refused::DuplicateId)
        );
        assert_eq!(ids(&mut subscriptions, "chat.1").len(), 2);
        assert_eq!(subscriptions.remove("a"), None, "b still holds chat.*");
        assert_eq!(
            subscriptions.remove("b"),
            Some(Pattern::parse("chat.*").expect("valid test input"))
        );
        assert_eq!(subscriptions.remove("b"), None, "already gone");
        assert!(subscriptions.is_empty());
    }

    #[test]
    fn removing_what_a_refresh_refuses_releases_patterns_no_id_still_holds() {
        let mut subscriptions = Subscriptions::new(8);
        for (id, pattern) in [("a", "x.*"), ("b", "x.*"), ("c", "y"), ("d", "z")] {
            subscriptions.add(subscription(id, pattern)).expect("room");
        }
        let removed = subscriptions.remove_where(|s| s.id != "b" && s.id != "d");
        let summary: Vec<(&str, Option<&str>)> = removed
            .iter()
            .map(|(s, released)| (s.id.as_str(), released.as_ref().map(Pattern::as_str)))
            .collect();
        assert_eq!(summary, [("a", None), ("c", Some("y"))]);
        assert_eq!(ids(&mut subscriptions, "x.1").len(), 1);
        assert!(ids(&mut subscriptions, "y").is_empty());
        let patterns: Vec<String> = subscriptions
            .patterns()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(patterns, ["x.*", "z"]);
    }

    #[test]
    fn no_more_than_the_limit() {
        let mut subscriptions = Subscriptions::new(1);
        subscriptions.add(subscription("a", "x")).expect("room");
        assert_eq!(
            subscriptions.add(subscription("b", "y")),
            Err(Refused::TooMany)
        );
        subscriptions.remove("a");
        subscriptions
            .add(subscription("b", "y"))
            .expect("room again");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, &'static str),
        Remove(u8),
        Deliver(&'static str),
    }

    fn op() -> impl Strategy<Value = Op> {
        let patterns = prop::sample::select(vec!["a", "a.b", "a.*", "#", "*.b", "b"]);
        let topics = prop::sample::select(vec!["a", "a.b", "b", "a.c", "c.b"]);
        prop_oneof![
            (0..6u8, patterns).prop_map(|(id, p)| Op::Add(id, p)),
            (0..6u8).prop_map(Op::Remove),
            topics.prop_map(Op::Deliver),
        ]
    }

    proptest! {
        /// Any interleaving of adds, removes and deliveries agrees with a
        /// plain map of id to pattern: the same ids match each message, and
        /// the patterns the Broker was asked for and not released are
        /// exactly those some id holds.
        #[test]
        fn agrees_with_a_map_of_ids_to_patterns(ops in prop::collection::vec(op(), 1..60)) {
            let mut subscriptions = Subscriptions::new(4);
            let mut model: BTreeMap<String, &str> = BTreeMap::new();
            let mut held_at_broker: BTreeSet<String> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Add(id, pattern) => {
                        let id = id.to_string();
                        let expected = if model.contains_key(&id) {
                            Err(Refused::DuplicateId)
                        } else if model.len() >= 4 {
                            Err(Refused::TooMany)
                        } else {
                            Ok(())
                        };
                        prop_assert_eq!(subscriptions.add(subscription(&id, pattern)), expected);
                        if expected.is_ok() {
                            model.insert(id, pattern);
                            held_at_broker.insert(pattern.to_owned());
                        }
                    }
                    Op::Remove(id) => {
                        let id = id.to_string();
                        let released = subscriptions.remove(&id);
                        let pattern = model.remove(&id);
                        let still_held = pattern.is_some_and(|p| model.values().any(|&q| q == p));
                        let expected = pattern.filter(|_| !still_held);
                        prop_assert_eq!(released.as_ref().map(Pattern::as_str), expected);
                        if let Some(pattern) = released {
                            held_at_broker.remove(pattern.as_str());
                        }
                    }
                    Op::Deliver(topic) => {
                        let parsed = Topic::parse(topic).expect("valid test input");
                        let expected: BTreeSet<String> = model
                            .iter()
                            .filter(|(_, &p)| reference_match(&Pattern::parse(p).expect("valid"), &parsed))
                            .map(|(id, _)| id.clone())
                            .collect();
                        prop_assert_eq!(ids(&mut subscriptions, topic), expected);
                    }
                }
                let wanted: BTreeSet<String> = model.values().map(|p| p.to_string()).collect();
                prop_assert_eq!(&held_at_broker, &wanted);
                prop_assert_eq!(subscriptions.len(), model.len());
            }
        }
    }
}
