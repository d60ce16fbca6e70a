//! Set questions about AMQP topic patterns, for the permission rules: does a
//! pattern match a topic, could two patterns match a common topic
//! (overlap), and does every topic one pattern matches also match another
//! (containment, "covers").
//!
//! Patterns are compiled once into [`Matcher`]s (a rule's pattern at start,
//! a session's grants at its handshake), so the delivery path matches
//! without parsing or allocating. Overlap and containment run when a
//! session subscribes, never per delivery.
//!
//! Topics have at least one segment, so `#` and `*.#` match the same topics
//! and each covers the other; containment is decided over non-empty topics.

use std::collections::HashSet;

use super::{Pattern, Topic};

/// The most segments a topic can have: 255 bytes, one per segment and a
/// dot between each two.
const MAX_SEGMENTS: usize = super::MAX_TOPIC_LEN.div_ceil(2);

/// How many states the containment search may visit before it gives up
/// and answers "not known to cover". Every caller treats that answer as
/// the safe one (a subscribe is acked and its deliveries are filtered), so
/// a hostile pattern costs a bounded amount of work and opens nothing.
const COVER_SEARCH_LIMIT: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Seg {
    Literal(Box<str>),
    /// `*`: exactly one segment.
    One,
    /// `#`: zero or more segments.
    Any,
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Matcher {
    segs: Box<[Seg]>,
}

impl Matcher {
    pub fn new(pattern: &Pattern) -> Self {
        let segs = pattern
            .segments()
            .map(|segment| match segment {
                "*" => Seg::One,
                "#" => Seg::Any,
                literal => Seg::Literal(literal.into()),
            })
            .collect();
        Matcher { segs }
    }

    /// Whether this pattern has no wildcard: it matches exactly one topic.
    pub fn is_exact(&self) -> bool {
        self.segs.iter().all(|s| matches!(s, Seg::Literal(_)))
    }

    /// Whether `topic` matches. Allocates nothing: the topic's segments go
    /// into a stack buffer, and `#` is matched greedily with backtracking to
    /// the last `#` seen, which is exact for patterns where `*` is one
    /// segment and `#` any run of them.
    pub fn matches(&self, topic: &Topic) -> bool {
        let mut buffer = [""; MAX_SEGMENTS];
        let mut len = 0;
        for segment in topic.segments() {
            // A valid topic never has more; a longer one cannot match
            // anything this careful about bounds anyway.
            let Some(slot) = buffer.get_mut(len) else {
                return false;
            };
            *slot = segment;
            len += 1;
        }
        self.matches_segments(&buffer[..len])
    }

    fn matches_segments(&self, topic: &[&str]) -> bool {
        let pattern = &self.segs;
        let (mut i, mut j) = (0, 0);
        // The last `#` seen and how many topic segments it has taken.
        let mut star: Option<(usize, usize)> = None;
        while j < topic.len() {
            match pattern.get(i) {
                Some(Seg::Any) => {
                    star = Some((i, j));
                    i += 1;
                    continue;
                }
                Some(Seg::One) => {
                    i += 1;
                    j += 1;
                    continue;
                }
                Some(Seg::Literal(literal)) if **literal == *topic[j] => {
                    i += 1;
                    j += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                // Let the last `#` take one more segment and retry.
                Some((at, taken)) => {
                    i = at + 1;
                    j = taken + 1;
                    star = Some((at, taken + 1));
                }
                None => return false,
            }
        }
        pattern[i..].iter().all(|s| *s == Seg::Any)
    }

    /// Whether some topic matches both patterns: reachability in the
    /// product of the two patterns' automata, a table of (position in
    /// `self`, position in `other`).
    pub fn overlaps(&self, other: &Matcher) -> bool {
        let (a, b) = (&self.segs, &other.segs);
        let width = b.len() + 1;
        let mut seen = vec![false; (a.len() + 1) * width];
        let mut stack = vec![(0usize, 0usize)];
        seen[0] = true;
        while let Some((i, j)) = stack.pop() {
            if i == a.len() && j == b.len() {
                // Only two all-`#` patterns get here having read nothing,
                // and those share every topic anyway.
                return true;
            }
            let mut next = Vec::with_capacity(3);
            if a.get(i) == Some(&Seg::Any) {
                next.push((i + 1, j));
            }
            if b.get(j) == Some(&Seg::Any) {
                next.push((i, j + 1));
            }
            if let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
                let compatible = match (x, y) {
                    (Seg::Literal(x), Seg::Literal(y)) => x == y,
                    _ => true,
                };
                if compatible {
                    let step = |s: &Seg, k: usize| if *s == Seg::Any { k } else { k + 1 };
                    next.push((step(x, i), step(y, j)));
                }
            }
            for (i, j) in next {
                let cell = &mut seen[i * width + j];
                if !*cell {
                    *cell = true;
                    stack.push((i, j));
                }
            }
        }
        false
    }

    /// Whether every topic `inner` matches, `self` matches too. Searches
    /// for a topic `inner` matches and `self` does not, walking `inner`'s
    /// automaton one state at a time beside the set of states `self` can
    /// be in (a subset construction on the side of `self` only), with the
    /// states seen so far remembered so that none is explored twice. The
    /// alphabet is the literals of both patterns plus one segment that is
    /// neither: every other segment behaves like that one.
    ///
    /// Answers `false` when the search exceeds its bound (see
    /// [`COVER_SEARCH_LIMIT`]); callers take `false` as the safe answer.
    pub fn covers(&self, inner: &Matcher) -> bool {
        let outer = self;
        let mut alphabet: Vec<Option<&str>> = vec![None];
        for seg in outer.segs.iter().chain(inner.segs.iter()) {
            if let Seg::Literal(literal) = seg {
                if !alphabet.contains(&Some(&**literal)) {
                    alphabet.push(Some(literal));
                }
            }
        }
        let start = outer.closed(StateSet::single(0));
        let mut seen: HashSet<(usize, StateSet, bool)> = HashSet::new();
        let mut stack = vec![(0usize, start, false)];
        seen.insert((0, start, false));
        let accept = outer.segs.len();
        while let Some((i, set, consumed)) = stack.pop() {
            if seen.len() > COVER_SEARCH_LIMIT {
                return false;
            }
            if i == inner.segs.len() && consumed && !set.contains(accept) {
                return false;
            }
            if consumed && set.is_empty() {
                // `inner` can always go on to accept from any position,
                // and `outer` can no longer.
                return false;
            }
            let mut next = Vec::new();
            if inner.segs.get(i) == Some(&Seg::Any) {
                next.push((i + 1, set, consumed));
            }
            if let Some(seg) = inner.segs.get(i) {
                for &symbol in &alphabet {
                    let to = match seg {
                        Seg::Any => i,
                        Seg::One => i + 1,
                        Seg::Literal(literal) if Some(&**literal) == symbol => i + 1,
                        Seg::Literal(_) => continue,
                    };
                    next.push((to, outer.step(set, symbol), true));
                }
            }
            for state in next {
                if seen.insert(state) {
                    stack.push(state);
                }
            }
        }
        true
    }

    /// `set` with every state an `#` lets it skip to.
    fn closed(&self, mut set: StateSet) -> StateSet {
        for (k, seg) in self.segs.iter().enumerate() {
            if *seg == Seg::Any && set.contains(k) {
                set.insert(k + 1);
            }
        }
        set
    }

    /// The states `set` reaches reading one segment (`None`: a segment no
    /// pattern names).
    fn step(&self, set: StateSet, symbol: Option<&str>) -> StateSet {
        let mut to = StateSet::default();
        for (k, seg) in self.segs.iter().enumerate() {
            if !set.contains(k) {
                continue;
            }
            match seg {
                Seg::Any => to.insert(k),
                Seg::One => to.insert(k + 1),
                Seg::Literal(literal) if Some(&**literal) == symbol => to.insert(k + 1),
                Seg::Literal(_) => {}
            }
        }
        self.closed(to)
    }
}

/// A set of automaton states: positions 0 ..= the number of segments, at
/// most [`MAX_SEGMENTS`] + 1 of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct StateSet([u64; 3]);

const _: () = assert!(MAX_SEGMENTS < 3 * 64);

impl StateSet {
    fn single(k: usize) -> Self {
        let mut set = StateSet::default();
        set.insert(k);
        set
    }

    fn insert(&mut self, k: usize) {
        if let Some(word) = self.0.get_mut(k / 64) {
            *word |= 1 << (k % 64);
        }
    }

    fn contains(&self, k: usize) -> bool {
        self.0
            .get(k / 64)
            .is_some_and(|word| word & (1 << (k % 64)) != 0)
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|word| *word == 0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::topic::reference;

    pub(crate) fn matcher(text: &str) -> Matcher {
        Matcher::new(&Pattern::parse(text).expect("valid test input"))
    }

    /// Every topic over `a`, `b` and `c` (a segment no test pattern names)
    /// of one to `max` segments.
    pub(crate) fn small_topics(max: usize) -> Vec<Vec<&'static str>> {
        let mut all: Vec<Vec<&'static str>> = Vec::new();
        let mut layer: Vec<Vec<&'static str>> = vec![Vec::new()];
        for _ in 0..max {
            layer = layer
                .iter()
                .flat_map(|topic| {
                    ["a", "b", "c"].into_iter().map(move |s| {
                        let mut longer = topic.clone();
                        longer.push(s);
                        longer
                    })
                })
                .collect();
            all.extend(layer.iter().cloned());
        }
        all
    }

    /// Patterns of one to three segments over `a`, `b`, `*` and `#`: short
    /// enough that any topic telling two of them apart has at most seven
    /// segments.
    pub(crate) fn small_pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "#"]), 1..=3)
            .prop_map(|segments| segments.join("."))
    }

    fn segs(text: &str) -> Vec<&str> {
        text.split('.').collect()
    }

    #[test]
    fn known_cases() {
        assert!(matcher("a.*").overlaps(&matcher("*.b")));
        assert!(!matcher("a.*").overlaps(&matcher("b.#")));
        assert!(matcher("#").overlaps(&matcher("x.y.z")));
        assert!(!matcher("a.*").overlaps(&matcher("a")));
        assert!(matcher("a.#").overlaps(&matcher("a")));
        assert!(matcher("#").covers(&matcher("*.#")));
        assert!(
            matcher("*.#").covers(&matcher("#")),
            "topics are never empty"
        );
        assert!(matcher("news.#").covers(&matcher("news.*")));
        assert!(!matcher("news.*").covers(&matcher("news.#")));
        assert!(matcher("#.b").covers(&matcher("a.*.b")));
        assert!(!matcher("a.*.b").covers(&matcher("#.b")));
        assert!(matcher("#.#").covers(&matcher("#")));
        assert!(matcher("user.alice.#").covers(&matcher("user.alice")));
    }

    #[test]
    fn the_longest_topic_is_matched() {
        let long = vec!["a"; 128].join(".");
        let topic = Topic::parse(&long).expect("255 bytes");
        assert!(matcher("#").matches(&topic));
        assert!(matcher("a.#.a").matches(&topic));
        assert!(!matcher("a.#.b").matches(&topic));
        assert!(matcher(&long).covers(&matcher(&long)));
    }

    #[test]
    fn a_pattern_built_to_blow_up_the_cover_search_answers_in_bounded_time() {
        let outer = vec!["#.a.*"; 40].join(".");
        let inner = vec!["#.*.a"; 40].join(".");
        let (outer, inner) = (matcher(&outer), matcher(&inner));
        let started = std::time::Instant::now();
        let _ = outer.covers(&inner);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    proptest! {
        #[test]
        fn matching_agrees_with_the_reference(p in small_pattern()) {
            let m = matcher(&p);
            for topic in small_topics(5) {
                let text = topic.join(".");
                let parsed = Topic::parse(&text).expect("valid");
                prop_assert_eq!(m.matches(&parsed), reference(&segs(&p), &topic), "{} ~ {}", p, text);
            }
        }

        #[test]
        fn overlap_and_containment_agree_with_brute_force(p in small_pattern(), q in small_pattern()) {
            let (mp, mq) = (matcher(&p), matcher(&q));
            let (sp, sq) = (segs(&p), segs(&q));
            let mut common = false;
            let mut p_not_q = false;
            for topic in small_topics(7) {
                let in_p = reference(&sp, &topic);
                let in_q = reference(&sq, &topic);
                common |= in_p && in_q;
                p_not_q |= in_p && !in_q;
            }
            prop_assert_eq!(mp.overlaps(&mq), common, "{} overlaps {}", p, q);
            prop_assert_eq!(mq.overlaps(&mp), common, "{} overlaps {}", q, p);
            prop_assert_eq!(mq.covers(&mp), !p_not_q, "{} covers {}", q, p);
        }
    }
}
