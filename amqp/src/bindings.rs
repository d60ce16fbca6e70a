//! The node queue's bindings, reconciled: the Broker reports which patterns
//! gained their first local holder and which lost their last one, and this
//! state machine decides which `queue.bind` / `queue.unbind` to run so that
//! RabbitMQ ends up bound for exactly the patterns the node holds.
//!
//! It is pure: the Bridge runs the operations it asks for and feeds their
//! results back, so every interleaving can be tested without RabbitMQ. At
//! most one operation per pattern is under way at a time (a bind and an
//! unbind of the same pattern must reach RabbitMQ in order), operations on
//! different patterns run side by side up to a limit, and a subscriber
//! waiting for its pattern is answered once RabbitMQ is bound for it with no
//! unbind of it under way (a bind already under way counts), or at once
//! while the link is down (RabbitMQ is rebound in full when the link comes
//! back).

use std::collections::{HashMap, HashSet, VecDeque};

use herald_actors::topic::Pattern;

/// One operation on the node queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Bind,
    Unbind,
}

/// What the caller must do after a change: answer these waiters, start
/// these operations.
#[derive(Debug)]
pub struct Effects<W> {
    pub answer: Vec<W>,
    pub start: Vec<(Pattern, Op)>,
}

impl<W> Default for Effects<W> {
    fn default() -> Self {
        Effects {
            answer: Vec::new(),
            start: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct Bindings<W> {
    /// Patterns with local holders: what RabbitMQ must be bound for.
    desired: HashSet<Pattern>,
    /// What RabbitMQ is bound for on the current link, as far as completed
    /// operations tell.
    bound: HashSet<Pattern>,
    in_flight: HashMap<Pattern, Op>,
    waiters: HashMap<Pattern, Vec<W>>,
    /// Patterns that may need an operation, oldest change first.
    queue: VecDeque<Pattern>,
    queued: HashSet<Pattern>,
    link_up: bool,
    max_in_flight: usize,
}

impl<W> Bindings<W> {
    pub fn new(max_in_flight: usize) -> Self {
        Bindings {
            desired: HashSet::new(),
            bound: HashSet::new(),
            in_flight: HashMap::new(),
            waiters: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            link_up: false,
            max_in_flight: max_in_flight.max(1),
        }
    }

    /// Patterns the node holds.
    pub fn desired(&self) -> &HashSet<Pattern> {
        &self.desired
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// `pattern` has its first local holder; `waiter` wants to know when it
    /// is bound.
    pub fn gained(&mut self, pattern: Pattern, waiter: W) -> Effects<W> {
        let mut effects = Effects::default();
        self.desired.insert(pattern.clone());
        if !self.link_up || self.settled(&pattern) {
            effects.answer.push(waiter);
            return effects;
        }
        self.waiters
            .entry(pattern.clone())
            .or_default()
            .push(waiter);
        self.enqueue(pattern);
        self.schedule(&mut effects);
        effects
    }

    /// `pattern` lost its last local holder.
    pub fn lost(&mut self, pattern: Pattern) -> Effects<W> {
        let mut effects = Effects::default();
        self.desired.remove(&pattern);
        // Whoever still waits for it has let go of it since.
        effects
            .answer
            .extend(self.waiters.remove(&pattern).unwrap_or_default());
        if self.link_up {
            self.enqueue(pattern);
            self.schedule(&mut effects);
        }
        effects
    }

    /// An operation started by this state machine, on the current link,
    /// succeeded. (A failure is the link's: call [`link_down`].)
    ///
    /// [`link_down`]: Self::link_down
    pub fn done(&mut self, pattern: Pattern, op: Op) -> Effects<W> {
        let mut effects = Effects::default();
        if self.in_flight.get(&pattern) != Some(&op) {
            return effects;
        }
        self.in_flight.remove(&pattern);
        match op {
            Op::Bind => self.bound.insert(pattern.clone()),
            Op::Unbind => self.bound.remove(&pattern),
        };
        if self.settled(&pattern) {
            effects
                .answer
                .extend(self.waiters.remove(&pattern).unwrap_or_default());
        }
        self.enqueue(pattern);
        self.schedule(&mut effects);
        effects
    }

    /// A fresh link with an empty node queue: bind everything held.
    pub fn link_up(&mut self) -> Effects<W> {
        let mut effects = Effects::default();
        self.link_up = true;
        self.bound.clear();
        self.in_flight.clear();
        let mut held: Vec<Pattern> = self.desired.iter().cloned().collect();
        held.sort();
        for pattern in held {
            self.enqueue(pattern);
        }
        self.schedule(&mut effects);
        effects
    }

    /// The link is gone, and its queue with every binding. Waiters are
    /// answered: a subscribe while RabbitMQ is down is acknowledged, and
    /// bound when the link is back.
    pub fn link_down(&mut self) -> Effects<W> {
        let mut effects = Effects::default();
        self.link_up = false;
        self.bound.clear();
        self.in_flight.clear();
        self.queue.clear();
        self.queued.clear();
        for (_, waiters) in self.waiters.drain() {
            effects.answer.extend(waiters);
        }
        effects
    }

    /// Held, bound, and nothing under way that could change that.
    fn settled(&self, pattern: &Pattern) -> bool {
        self.bound.contains(pattern) && !self.in_flight.contains_key(pattern)
    }

    fn enqueue(&mut self, pattern: Pattern) {
        if self.queued.insert(pattern.clone()) {
            self.queue.push_back(pattern);
        }
    }

    fn needed(&self, pattern: &Pattern) -> Option<Op> {
        match (self.desired.contains(pattern), self.bound.contains(pattern)) {
            (true, false) => Some(Op::Bind),
            (false, true) => Some(Op::Unbind),
            _ => None,
        }
    }

    fn schedule(&mut self, effects: &mut Effects<W>) {
        let mut at = 0;
        while at < self.queue.len() && self.in_flight.len() < self.max_in_flight {
            let pattern = &self.queue[at];
            if self.in_flight.contains_key(pattern) {
                // Looked at again when its operation completes.
                at += 1;
                continue;
            }
            let needed = self.needed(pattern);
            let Some(pattern) = self.queue.remove(at) else {
                break;
            };
            self.queued.remove(&pattern);
            if let Some(op) = needed {
                self.in_flight.insert(pattern.clone(), op);
                effects.start.push((pattern, op));
            }
        }
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

    #[test]
    fn a_subscriber_is_answered_once_its_bind_completed() {
        let mut bindings = Bindings::new(8);
        assert!(bindings.link_up().start.is_empty());
        let effects = bindings.gained(pattern("a"), 1);
        assert!(effects.answer.is_empty());
        assert_eq!(effects.start, vec![(pattern("a"), Op::Bind)]);
        assert_eq!(bindings.done(pattern("a"), Op::Bind).answer, vec![1]);
    }

    #[test]
    fn subscribe_unsubscribe_subscribe_during_a_bind_ends_bound() {
        let mut bindings = Bindings::new(8);
        bindings.link_up();
        bindings.gained(pattern("t"), 1);
        let lost = bindings.lost(pattern("t"));
        assert_eq!(lost.answer, vec![1], "the first subscriber let go");
        assert!(lost.start.is_empty(), "one operation per pattern at a time");
        assert!(bindings.gained(pattern("t"), 2).answer.is_empty());
        // The first bind completes; nothing needs undoing, so the waiter is
        // answered and RabbitMQ stays bound.
        let effects = bindings.done(pattern("t"), Op::Bind);
        assert_eq!(effects.answer, vec![2]);
        assert!(effects.start.is_empty());
    }

    #[test]
    fn while_the_link_is_down_subscribers_are_answered_and_bound_later() {
        let mut bindings = Bindings::new(8);
        assert_eq!(bindings.gained(pattern("a"), 1).answer, vec![1]);
        let effects = bindings.link_up();
        assert_eq!(effects.start, vec![(pattern("a"), Op::Bind)]);
        bindings.gained(pattern("b"), 2);
        assert_eq!(bindings.link_down().answer, vec![2]);
    }

    #[test]
    fn operations_beyond_the_limit_wait_their_turn() {
        let mut bindings = Bindings::new(2);
        bindings.link_up();
        for (waiter, name) in ["a", "b", "c"].into_iter().enumerate() {
            bindings.gained(pattern(name), waiter);
        }
        assert_eq!(bindings.in_flight(), 2);
        let effects = bindings.done(pattern("a"), Op::Bind);
        assert_eq!(effects.answer, vec![0]);
        assert_eq!(effects.start, vec![(pattern("c"), Op::Bind)]);
    }

    /// What the test does next.
    #[derive(Debug, Clone)]
    enum Event {
        /// A session subscribes (or, if it holds it, unsubscribes) a pattern.
        Toggle(usize, usize),
        /// RabbitMQ completes the n-th operation under way.
        Complete(usize),
        LinkDown,
        LinkUp,
    }

    const PATTERNS: [&str; 3] = ["a", "a.*", "#"];

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (0..3usize, 0..PATTERNS.len()).prop_map(|(s, p)| Event::Toggle(s, p)),
            4 => (0..8usize).prop_map(Event::Complete),
            1 => Just(Event::LinkDown),
            1 => Just(Event::LinkUp),
        ]
    }

    /// The world around the state machine: sessions holding patterns (the
    /// Broker's side), RabbitMQ's bindings, the operations under way.
    struct World {
        bindings: Bindings<u64>,
        holders: HashMap<usize, BTreeSet<usize>>,
        rabbit: BTreeSet<Pattern>,
        link_up: bool,
        running: Vec<(Pattern, Op)>,
        /// Waiter id -> its pattern, for waiters not yet answered.
        waiting: HashMap<u64, Pattern>,
        next_waiter: u64,
    }

    impl World {
        fn held(&self, p: usize) -> bool {
            self.holders.values().any(|held| held.contains(&p))
        }

        fn apply(&mut self, effects: Effects<u64>) -> Result<(), TestCaseError> {
            for (pattern, op) in effects.start {
                prop_assert!(
                    !self.running.iter().any(|(p, _)| *p == pattern),
                    "two operations on {} at once",
                    pattern
                );
                self.running.push((pattern, op));
            }
            prop_assert!(self.running.len() <= 4);
            for waiter in effects.answer {
                let pattern = self.waiting.remove(&waiter);
                prop_assert!(pattern.is_some(), "waiter {} answered twice", waiter);
                let pattern = pattern.unwrap_or_else(|| pattern_of(0));
                let index = PATTERNS.iter().position(|p| *p == pattern.as_str());
                let still_held = index.is_some_and(|i| self.held(i));
                // Answered while its pattern is held and the link is up:
                // RabbitMQ must really be bound for it.
                if self.link_up && still_held {
                    prop_assert!(self.rabbit.contains(&pattern), "{} acked unbound", pattern);
                }
            }
            Ok(())
        }
    }

    fn pattern_of(index: usize) -> Pattern {
        pattern(PATTERNS[index])
    }

    proptest! {
        /// Whatever the interleaving of subscribes, unsubscribes, completions
        /// and link failures: every waiter is answered once, never before
        /// RabbitMQ is bound for it, and once RabbitMQ has caught up it is
        /// bound for exactly the held patterns.
        #[test]
        fn rabbitmq_ends_bound_for_exactly_the_held_patterns(events in prop::collection::vec(event(), 1..80)) {
            let mut world = World {
                bindings: Bindings::new(4),
                holders: HashMap::new(),
                rabbit: BTreeSet::new(),
                link_up: false,
                running: Vec::new(),
                waiting: HashMap::new(),
                next_waiter: 0,
            };
            for event in events {
                let effects = match event {
                    Event::Toggle(session, p) => {
                        let was_held = world.held(p);
                        let held = world.holders.entry(session).or_default();
                        if held.remove(&p) {
                            if world.held(p) { continue; }
                            world.bindings.lost(pattern_of(p))
                        } else {
                            held.insert(p);
                            if was_held { continue; }
                            let waiter = world.next_waiter;
                            world.next_waiter += 1;
                            world.waiting.insert(waiter, pattern_of(p));
                            world.bindings.gained(pattern_of(p), waiter)
                        }
                    }
                    Event::Complete(n) => {
                        if world.running.is_empty() { continue; }
                        let (pattern, op) = world.running.remove(n % world.running.len());
                        match op {
                            Op::Bind => world.rabbit.insert(pattern.clone()),
                            Op::Unbind => world.rabbit.remove(&pattern),
                        };
                        world.bindings.done(pattern, op)
                    }
                    Event::LinkDown => {
                        world.link_up = false;
                        world.rabbit.clear();
                        world.running.clear();
                        world.bindings.link_down()
                    }
                    Event::LinkUp => {
                        if world.link_up { continue; }
                        world.link_up = true;
                        world.bindings.link_up()
                    }
                };
                world.apply(effects)?;
            }
            // Let RabbitMQ catch up.
            if !world.link_up {
                world.link_up = true;
                let effects = world.bindings.link_up();
                world.apply(effects)?;
            }
            while let Some((pattern, op)) = world.running.pop() {
                match op {
                    Op::Bind => world.rabbit.insert(pattern.clone()),
                    Op::Unbind => world.rabbit.remove(&pattern),
                };
                let effects = world.bindings.done(pattern, op);
                world.apply(effects)?;
            }
            let expected: BTreeSet<Pattern> = (0..PATTERNS.len())
                .filter(|p| world.held(*p))
                .map(pattern_of)
                .collect();
            prop_assert_eq!(&world.rabbit, &expected);
            prop_assert!(world.waiting.is_empty(), "never answered: {:?}", world.waiting);
        }
    }
}
