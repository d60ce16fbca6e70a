//! The subscription index: a trie keyed by pattern segment, so finding the
//! subscribers of a topic walks the topic's segments (and the wildcard
//! branches met on the way) instead of testing every subscription.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use super::{Pattern, Topic};

#[derive(Debug)]
pub struct SubscriptionIndex<K> {
    root: Node<K>,
    patterns: usize,
}

#[derive(Debug)]
struct Node<K> {
    literal: HashMap<Box<str>, Node<K>>,
    star: Option<Box<Node<K>>>,
    hash: Option<Box<Node<K>>>,
    /// Subscribers whose pattern ends at this node.
    subscribers: HashSet<K>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Node {
            literal: HashMap::new(),
            star: None,
            hash: None,
            subscribers: HashSet::new(),
        }
    }
}

impl<K> Node<K> {
    fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
            && self.literal.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }
}

impl<K: Copy + Eq + Hash> Default for SubscriptionIndex<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash> SubscriptionIndex<K> {
    pub fn new() -> Self {
        SubscriptionIndex {
            root: Node::default(),
            patterns: 0,
        }
    }

    /// Number of distinct patterns with at least one subscriber.
    pub fn pattern_count(&self) -> usize {
        self.patterns
    }

    /// Adds `key` to `pattern`. Returns whether `pattern` had no subscriber
    /// before, i.e. whether this node now needs to receive the pattern.
    pub fn insert(&mut self, pattern: &Pattern, key: K) -> bool {
        let mut node = &mut self.root;
        for segment in pattern.segments() {
            node = match segment {
                "*" => node.star.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                literal => node.literal.entry(literal.into()).or_default(),
            };
        }
        let first = node.subscribers.is_empty();
        node.subscribers.insert(key);
        if first {
            self.patterns += 1;
        }
        first
    }

    /// Removes `key` from `pattern`. Returns whether that was the pattern's
    /// last subscriber. Empty branches are pruned so the trie does not grow
    /// with every pattern ever used.
    pub fn remove(&mut self, pattern: &Pattern, key: K) -> bool {
        let segments: Vec<&str> = pattern.segments().collect();
        let (removed, last) = remove_from(&mut self.root, &segments, key);
        if removed && last {
            self.patterns -= 1;
        }
        removed && last
    }

    /// Calls `visit` with the subscriber set of every pattern matching
    /// `topic`. A key subscribed through several matching patterns is
    /// visited once per pattern; the caller decides how to merge.
    pub fn for_each_match<'a>(&'a self, topic: &Topic, mut visit: impl FnMut(&'a HashSet<K>)) {
        let segments: Vec<&str> = topic.segments().collect();
        collect(&self.root, &segments, &mut visit);
    }
}

fn remove_from<K: Eq + Hash>(node: &mut Node<K>, segments: &[&str], key: K) -> (bool, bool) {
    let Some((first, rest)) = segments.split_first() else {
        let removed = node.subscribers.remove(&key);
        return (removed, node.subscribers.is_empty());
    };
    match *first {
        "*" | "#" => {
            let slot = if *first == "*" {
                &mut node.star
            } else {
                &mut node.hash
            };
            let Some(child) = slot.as_deref_mut() else {
                return (false, false);
            };
            let outcome = remove_from(child, rest, key);
            if child.is_empty() {
                *slot = None;
            }
            outcome
        }
        literal => {
            let Some(child) = node.literal.get_mut(literal) else {
                return (false, false);
            };
            let outcome = remove_from(child, rest, key);
            if child.is_empty() {
                node.literal.remove(literal);
            }
            outcome
        }
    }
}

fn collect<'a, K>(node: &'a Node<K>, segments: &[&str], visit: &mut impl FnMut(&'a HashSet<K>)) {
    if let Some(hash) = node.hash.as_deref() {
        // `#` swallows zero or more segments: try every split point.
        for skip in 0..=segments.len() {
            collect(hash, &segments[skip..], visit);
        }
    }
    let Some((first, rest)) = segments.split_first() else {
        if !node.subscribers.is_empty() {
            visit(&node.subscribers);
        }
        return;
    };
    if let Some(child) = node.literal.get(*first) {
        collect(child, rest, visit);
    }
    if let Some(star) = node.star.as_deref() {
        collect(star, rest, visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(index: &SubscriptionIndex<u32>, topic: &str) -> Vec<u32> {
        let mut keys = Vec::new();
        index.for_each_match(&Topic::parse(topic).expect("valid test input"), |set| {
            keys.extend(set)
        });
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    fn index_of(patterns: &[&str]) -> SubscriptionIndex<u32> {
        let mut index = SubscriptionIndex::new();
        for (key, pattern) in patterns.iter().enumerate() {
            index.insert(
                &Pattern::parse(pattern).expect("valid test input"),
                key as u32,
            );
        }
        index
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        let index = index_of(&["news.*"]);
        assert_eq!(matches(&index, "news.sports"), vec![0]);
        assert!(matches(&index, "news").is_empty());
        assert!(matches(&index, "news.sports.uk").is_empty());
    }

    #[test]
    fn hash_matches_zero_or_more_segments() {
        let index = index_of(&["news.#", "#", "a.#.z"]);
        assert_eq!(matches(&index, "news"), vec![0, 1]);
        assert_eq!(matches(&index, "news.sports.uk"), vec![0, 1]);
        assert_eq!(matches(&index, "other"), vec![1]);
        assert_eq!(matches(&index, "a.z"), vec![1, 2]);
        assert_eq!(matches(&index, "a.b.c.z"), vec![1, 2]);
        assert_eq!(matches(&index, "a.b.c"), vec![1]);
    }

    #[test]
    fn first_and_last_subscriber_are_reported_and_empty_branches_pruned() {
        let mut index = SubscriptionIndex::new();
        let pattern = Pattern::parse("a.b.*").expect("valid test input");
        assert!(index.insert(&pattern, 1));
        assert!(!index.insert(&pattern, 2));
        assert_eq!(index.pattern_count(), 1);
        assert!(!index.remove(&pattern, 1));
        assert!(!index.remove(&pattern, 7), "a key that never subscribed");
        assert!(index.remove(&pattern, 2));
        assert_eq!(index.pattern_count(), 0);
        assert!(index.root.is_empty());
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference_matcher(
            patterns in prop::collection::vec(prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "#"]), 1..5), 1..8),
            topic in prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..6),
        ) {
            let joined: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
            let refs: Vec<&str> = joined.iter().map(String::as_str).collect();
            let index = index_of(&refs);
            let expected: Vec<u32> = patterns.iter().enumerate()
                .filter(|(_, p)| crate::topic::reference(p, &topic))
                .map(|(key, _)| key as u32)
                .collect();
            prop_assert_eq!(matches(&index, &topic.join(".")), expected);
        }
    }
}
