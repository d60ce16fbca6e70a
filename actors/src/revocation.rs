//! The revocation list: the tokens that no longer prove anything although
//! their signature and `exp` still hold. An entry names one token by its
//! `jti`, or a user and a time before which every token of that user was
//! issued in vain (a token of that user without `iat` is void too: nothing
//! says it is newer).
//!
//! One list per node, shared by `Arc`: the token checker (handshake, STOMP
//! CONNECT, `refresh`) reads it for every token, the Broker reads it to close
//! the live sessions an entry voids, and the HTTP API and the RabbitMQ bridge
//! add to it (the bridge with the entries other nodes send). Entries carry
//! the time they may be forgotten (`until`, Unix seconds) so every node
//! forgets an entry at the same time whoever added it; past `until` (plus
//! the token checker's leeway) the token it names is expired anyway.
//!
//! Memory is bounded: at most `max_entries` entries are held. A new entry
//! beyond that, once the expired ones are pruned, is refused
//! ([`RevocationError::Full`]) rather than let an older one be forgotten,
//! since forgetting would quietly bring a revoked token back.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::stats::Counters;

/// The longest `jti` or user an entry may name: ids are short, and a
/// bounded entry keeps the list's memory bounded by its entry count.
pub const MAX_NAME_BYTES: usize = 512;

/// One revocation, as the list keeps it and as nodes send it to each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Revocation {
    /// The token whose `jti` is `jti`, held until `until`.
    Jti { jti: String, until: u64 },
    /// Every token of `user` (its topic segment) whose `iat` is before
    /// `before`, or that has no `iat`, held until `until`.
    User {
        user: String,
        before: u64,
        until: u64,
    },
}

impl Revocation {
    /// Unix seconds after which the entry may be forgotten.
    pub fn until(&self) -> u64 {
        match self {
            Revocation::Jti { until, .. } | Revocation::User { until, .. } => *until,
        }
    }

    fn check(&self) -> Result<(), RevocationError> {
        let name = match self {
            Revocation::Jti { jti, .. } => jti,
            Revocation::User { user, .. } => user,
        };
        if name.is_empty() {
            return Err(RevocationError::Empty);
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(RevocationError::TooLong(name.len()));
        }
        Ok(())
    }
}

/// Why an entry was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("the revocation list is full ({0} entries, none expired yet): raise HERALD_REVOCATION_MAX_ENTRIES or retry once older entries expire")]
    Full(usize),
    #[error("the `jti` or user to revoke is empty")]
    Empty,
    #[error("the `jti` or user to revoke is {0} bytes long; at most {MAX_NAME_BYTES} are allowed")]
    TooLong(usize),
}

/// What adding an entry changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The list voids more tokens, or for longer, than before.
    Changed,
    /// The list already voided everything the entry voids, for as long.
    Known,
}

/// How the list is bounded and how long entries live.
#[derive(Debug, Clone, Copy)]
pub struct RevocationSettings {
    /// How long an entry lives when nothing says how long its tokens live:
    /// a `jti` without `exp`, and a user's entry past its `before`. It must
    /// be at least the longest token lifetime the node accepts.
    pub retention: Duration,
    /// Entries held at most.
    pub max_entries: usize,
    /// How long after `until` an entry is still honoured: the token
    /// checker's `exp` leeway, during which an expired token still passes.
    pub grace: Duration,
}

impl Default for RevocationSettings {
    fn default() -> Self {
        RevocationSettings {
            retention: Duration::from_secs(24 * 3600),
            max_entries: 100_000,
            grace: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Default)]
struct Entries {
    /// `jti` → until.
    tokens: HashMap<String, u64>,
    /// user → its `(before, until)` pairs, none covering another (a pair
    /// with a later `before` and a later `until` voids everything an older
    /// one does), so a user revoked again and again takes one entry.
    users: HashMap<String, Vec<(u64, u64)>>,
    /// Pairs in `users`, so the count is not a walk over every user.
    user_pairs: usize,
}

impl Entries {
    fn len(&self) -> usize {
        self.tokens.len() + self.user_pairs
    }

    fn prune(&mut self, cutoff: u64) {
        self.tokens.retain(|_, until| *until >= cutoff);
        let mut pairs = 0;
        self.users.retain(|_, held| {
            held.retain(|(_, until)| *until >= cutoff);
            pairs += held.len();
            !held.is_empty()
        });
        self.user_pairs = pairs;
    }
}

/// The node's revocation list. Reads take a shared lock and do one or two
/// hash lookups; an empty list is not even locked.
#[derive(Debug)]
pub struct RevocationList {
    entries: RwLock<Entries>,
    settings: RevocationSettings,
    counters: Arc<Counters>,
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A time as (fractional) Unix seconds; before the epoch is 0.
fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

impl RevocationList {
    pub fn new(settings: RevocationSettings, counters: Arc<Counters>) -> Arc<Self> {
        Arc::new(RevocationList {
            entries: RwLock::new(Entries::default()),
            settings,
            counters,
        })
    }

    pub fn settings(&self) -> &RevocationSettings {
        &self.settings
    }

    /// The entry for the token `jti`: held until `exp` when the caller
    /// knows it, else for the retention from `now`.
    pub fn jti_entry(&self, jti: String, exp: Option<u64>, now: u64) -> Revocation {
        let until = exp.unwrap_or_else(|| now.saturating_add(self.settings.retention.as_secs()));
        Revocation::Jti { jti, until }
    }

    /// The entry voiding `user`'s tokens issued before `before`: held for
    /// the retention past `before`, by when every such token has expired.
    pub fn user_entry(&self, user: String, before: u64) -> Revocation {
        let until = before.saturating_add(self.settings.retention.as_secs());
        Revocation::User {
            user,
            before,
            until,
        }
    }

    /// Entries whose `until` is before this are expired at `now`.
    fn cutoff(&self, now: u64) -> u64 {
        now.saturating_sub(self.settings.grace.as_secs())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the maps half
        // updated in a way that matters more than losing the list would.
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish_count(&self, entries: &Entries) {
        self.counters.revoked_tokens.set(entries.len() as u64);
    }

    /// Adds `entry` at time `now` (Unix seconds).
    pub fn add(&self, entry: &Revocation, now: u64) -> Result<Added, RevocationError> {
        entry.check()?;
        let cutoff = self.cutoff(now);
        if entry.until() < cutoff {
            // What it names has expired: nothing to void.
            return Ok(Added::Known);
        }
        let mut entries = self.write();
        let added = self.add_locked(&mut entries, entry, cutoff);
        self.publish_count(&entries);
        added
    }

    fn add_locked(
        &self,
        entries: &mut Entries,
        entry: &Revocation,
        cutoff: u64,
    ) -> Result<Added, RevocationError> {
        let grows = match entry {
            Revocation::Jti { jti, until } => match entries.tokens.get_mut(jti) {
                Some(held) if *held >= *until => return Ok(Added::Known),
                Some(held) => {
                    *held = *until;
                    return Ok(Added::Changed);
                }
                None => true,
            },
            Revocation::User {
                user,
                before,
                until,
            } => {
                let held = entries.users.get(user).map(Vec::as_slice).unwrap_or(&[]);
                if held.iter().any(|(b, u)| b >= before && u >= until) {
                    return Ok(Added::Known);
                }
                // It replaces the pairs it covers; it grows the list only
                // when it covers none.
                !held.iter().any(|(b, u)| b <= before && u <= until)
            }
        };
        if grows && entries.len() >= self.settings.max_entries {
            entries.prune(cutoff);
            if entries.len() >= self.settings.max_entries {
                return Err(RevocationError::Full(entries.len()));
            }
        }
        match entry {
            Revocation::Jti { jti, until } => {
                entries.tokens.insert(jti.clone(), *until);
            }
            Revocation::User {
                user,
                before,
                until,
            } => {
                let held = entries.users.entry(user.clone()).or_default();
                let had = held.len();
                held.retain(|(b, u)| !(b <= before && u <= until));
                held.push((*before, *until));
                entries.user_pairs = entries.user_pairs + held.len() - had;
            }
        }
        Ok(Added::Changed)
    }

    /// Adds entries another node sent: those that do not fit are counted
    /// and logged, since the sender cannot be refused any more. Answers
    /// whether the list changed.
    pub fn merge(&self, batch: &[Revocation], now: u64) -> bool {
        let cutoff = self.cutoff(now);
        let mut changed = false;
        let mut entries = self.write();
        for entry in batch {
            if entry.check().is_err() || entry.until() < cutoff {
                continue;
            }
            match self.add_locked(&mut entries, entry, cutoff) {
                Ok(Added::Changed) => changed = true,
                Ok(Added::Known) => {}
                Err(err) => {
                    self.counters.revocations_dropped.inc();
                    log::warn!("a revocation from another node is not kept: {err}");
                }
            }
        }
        self.publish_count(&entries);
        changed
    }

    /// Whether the token so described is void at `now`.
    pub fn voids_at(
        &self,
        user: Option<&str>,
        jti: Option<&str>,
        issued_at: Option<SystemTime>,
        now: u64,
    ) -> bool {
        if self.counters.revoked_tokens.get() == 0 {
            return false;
        }
        let cutoff = self.cutoff(now);
        let entries = self.read();
        let by_jti = jti
            .and_then(|jti| entries.tokens.get(jti))
            .is_some_and(|until| *until >= cutoff);
        if by_jti {
            return true;
        }
        let Some(held) = user.and_then(|user| entries.users.get(user)) else {
            return false;
        };
        let issued = issued_at.map(unix_seconds);
        held.iter().any(|(before, until)| {
            *until >= cutoff && issued.map_or(true, |issued| issued < *before as f64)
        })
    }

    /// Whether the token so described is void now.
    pub fn voids(
        &self,
        user: Option<&str>,
        jti: Option<&str>,
        issued_at: Option<SystemTime>,
    ) -> bool {
        self.voids_at(user, jti, issued_at, unix_now())
    }

    /// Whether a token presented now (handshake, CONNECT, `refresh`) is
    /// void; counted as refused when it is.
    pub fn refuses(
        &self,
        user: Option<&str>,
        jti: Option<&str>,
        issued_at: Option<SystemTime>,
    ) -> bool {
        let void = self.voids(user, jti, issued_at);
        if void {
            self.counters.revocation_refused.inc();
        }
        void
    }

    /// Forgets the entries expired at `now`.
    pub fn prune(&self, now: u64) {
        let cutoff = self.cutoff(now);
        let mut entries = self.write();
        entries.prune(cutoff);
        self.publish_count(&entries);
    }

    /// Every entry still in force at `now`, for a node that asks.
    pub fn entries(&self, now: u64) -> Vec<Revocation> {
        let cutoff = self.cutoff(now);
        let entries = self.read();
        let tokens = entries
            .tokens
            .iter()
            .filter(|(_, until)| **until >= cutoff)
            .map(|(jti, until)| Revocation::Jti {
                jti: jti.clone(),
                until: *until,
            });
        let users = entries.users.iter().flat_map(|(user, held)| {
            held.iter()
                .filter(|(_, until)| *until >= cutoff)
                .map(|(before, until)| Revocation::User {
                    user: user.clone(),
                    before: *before,
                    until: *until,
                })
        });
        tokens.chain(users).collect()
    }

    /// Entries held (expired ones not yet pruned included).
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const NOW: u64 = 1_800_000_000;

    fn list(max_entries: usize) -> Arc<RevocationList> {
        RevocationList::new(
            RevocationSettings {
                retention: Duration::from_secs(3600),
                max_entries,
                grace: Duration::from_secs(5),
            },
            Arc::new(Counters::default()),
        )
    }

    fn at(seconds: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(seconds))
    }

    #[test]
    fn a_revoked_jti_is_void_until_its_exp_and_the_grace_then_forgotten() {
        let list = list(10);
        let entry = list.jti_entry("t-1".into(), Some(NOW + 60), NOW);
        assert_eq!(list.add(&entry, NOW), Ok(Added::Changed));
        assert!(list.voids_at(Some("alice"), Some("t-1"), at(NOW - 10), NOW));
        assert!(!list.voids_at(Some("alice"), Some("t-2"), at(NOW - 10), NOW));
        assert!(!list.voids_at(Some("alice"), None, None, NOW), "no jti");
        assert!(list.voids_at(None, Some("t-1"), None, NOW + 65), "in grace");
        assert!(!list.voids_at(None, Some("t-1"), None, NOW + 66));
        list.prune(NOW + 66);
        assert!(list.is_empty());
        assert_eq!(list.counters.revoked_tokens.get(), 0);
    }

    #[test]
    fn a_jti_without_exp_is_kept_for_the_retention() {
        let list = list(10);
        let entry = list.jti_entry("t".into(), None, NOW);
        assert_eq!(entry.until(), NOW + 3600);
        list.add(&entry, NOW).expect("room");
        list.prune(NOW + 3600);
        assert_eq!(list.len(), 1);
        list.prune(NOW + 3606);
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn a_user_entry_voids_older_and_iat_less_tokens_of_that_user_only() {
        let list = list(10);
        let entry = list.user_entry("bob".into(), NOW);
        assert_eq!(entry.until(), NOW + 3600);
        list.add(&entry, NOW).expect("room");
        assert!(list.voids_at(Some("bob"), None, at(NOW - 1), NOW));
        assert!(list.voids_at(Some("bob"), Some("x"), None, NOW), "no iat");
        assert!(
            !list.voids_at(Some("bob"), None, at(NOW), NOW),
            "not before"
        );
        assert!(!list.voids_at(Some("bob"), None, at(NOW + 1), NOW));
        assert!(!list.voids_at(Some("alice"), None, at(NOW - 1), NOW));
        let fraction = Some(UNIX_EPOCH + Duration::from_millis(NOW * 1000 - 1));
        assert!(
            list.voids_at(Some("bob"), None, fraction, NOW),
            "sub-second"
        );
        assert!(
            !list.voids_at(Some("bob"), None, None, NOW + 3606),
            "expired"
        );
    }

    #[test]
    fn revoking_a_user_again_replaces_the_entry_it_covers() {
        let list = list(10);
        list.add(&list.user_entry("bob".into(), NOW), NOW)
            .expect("room");
        assert_eq!(
            list.add(&list.user_entry("bob".into(), NOW - 10), NOW),
            Ok(Added::Known)
        );
        assert_eq!(
            list.add(&list.user_entry("bob".into(), NOW + 10), NOW),
            Ok(Added::Changed)
        );
        assert_eq!(list.len(), 1);
        let jti = list.jti_entry("t".into(), Some(NOW + 10), NOW);
        list.add(&jti, NOW).expect("room");
        let shorter = list.jti_entry("t".into(), Some(NOW + 5), NOW);
        assert_eq!(list.add(&shorter, NOW), Ok(Added::Known));
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn a_full_list_refuses_new_entries_keeps_the_old_and_makes_room_as_they_expire() {
        let list = list(3);
        for n in 0..3 {
            let entry = list.jti_entry(format!("t{n}"), Some(NOW + 10 * (n + 1)), NOW);
            list.add(&entry, NOW).expect("room");
        }
        let fourth = list.jti_entry("t3".into(), Some(NOW + 100), NOW);
        assert_eq!(list.add(&fourth, NOW), Err(RevocationError::Full(3)));
        assert!(
            list.voids_at(None, Some("t0"), None, NOW),
            "nothing forgotten"
        );
        // Extending a held entry needs no room.
        let longer = list.jti_entry("t0".into(), Some(NOW + 11), NOW);
        assert_eq!(list.add(&longer, NOW), Ok(Added::Changed));
        // Once t1 has expired (t0 too: it now ends at +11), there is room.
        assert_eq!(list.add(&fourth, NOW + 26), Ok(Added::Changed));
        assert_eq!(list.len(), 2);
        assert!(list.voids_at(None, Some("t3"), None, NOW + 26));
        assert!(list.voids_at(None, Some("t2"), None, NOW + 26));
    }

    #[test]
    fn entries_from_other_nodes_beyond_the_cap_are_counted_and_oversized_ones_ignored() {
        let list = list(1);
        let batch = [
            Revocation::Jti {
                jti: "a".into(),
                until: NOW + 10,
            },
            Revocation::Jti {
                jti: "b".into(),
                until: NOW + 10,
            },
            Revocation::Jti {
                jti: "x".repeat(MAX_NAME_BYTES + 1),
                until: NOW + 10,
            },
        ];
        assert!(list.merge(&batch, NOW));
        assert_eq!(list.len(), 1);
        assert_eq!(list.counters.revocations_dropped.get(), 1);
        assert!(!list.merge(&batch[..1], NOW), "already known");
        let long = Revocation::Jti {
            jti: "x".repeat(MAX_NAME_BYTES + 1),
            until: NOW + 10,
        };
        assert_eq!(
            list.add(&long, NOW),
            Err(RevocationError::TooLong(MAX_NAME_BYTES + 1))
        );
    }

    #[test]
    fn the_entries_a_node_hands_out_rebuild_the_same_list() {
        let list = list(100);
        list.add(&list.jti_entry("t".into(), Some(NOW + 50), NOW), NOW)
            .expect("room");
        list.add(&list.user_entry("bob".into(), NOW), NOW)
            .expect("room");
        list.add(&list.jti_entry("old".into(), Some(NOW - 60), NOW), NOW)
            .expect("room");
        let copy = super::tests::list(100);
        assert!(copy.merge(&list.entries(NOW), NOW));
        assert_eq!(copy.len(), 2);
        assert_eq!(copy.entries(NOW).len(), 2);
        assert!(copy.voids_at(None, Some("t"), None, NOW));
        assert!(copy.voids_at(Some("bob"), None, at(NOW - 1), NOW));
        // Entries travel as JSON between nodes.
        let text = serde_json::to_string(&list.entries(NOW)).expect("serializes");
        let back: Vec<Revocation> = serde_json::from_str(&text).expect("parses");
        assert_eq!(back.len(), 2);
    }

    /// The list against the plainest model of it: every entry ever added,
    /// each voiding what it names until it expires. Random adds, merges,
    /// prunes and the passing of time, over few names so that they collide;
    /// every query must agree, and the count never passes the cap.
    #[test]
    fn random_operations_agree_with_a_list_of_every_entry_added() {
        let jtis = ["a", "b", "c"];
        let users = ["u", "v"];
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let list = list(1000);
            let mut model: Vec<Revocation> = Vec::new();
            let mut now = NOW;
            for step in 0..80 {
                let entry = if rng.random_bool(0.5) {
                    Revocation::Jti {
                        jti: jtis[rng.random_range(0..jtis.len())].into(),
                        until: now + rng.random_range(0..40),
                    }
                } else {
                    let before = now - 20 + rng.random_range(0..40);
                    Revocation::User {
                        user: users[rng.random_range(0..users.len())].into(),
                        before,
                        until: before + rng.random_range(0..40),
                    }
                };
                match rng.random_range(0..10) {
                    0..=4 => {
                        list.add(&entry, now).expect("room");
                        model.push(entry);
                    }
                    5 => {
                        list.merge(std::slice::from_ref(&entry), now);
                        model.push(entry);
                    }
                    6 => list.prune(now),
                    _ => now += rng.random_range(0..8),
                }
                for _ in 0..10 {
                    let user = users.get(rng.random_range(0..3)).copied();
                    let jti = jtis.get(rng.random_range(0..4)).copied();
                    let iat = rng
                        .random_bool(0.8)
                        .then(|| now - 30 + rng.random_range(0..60));
                    let cutoff = now - 5;
                    let expected = model.iter().any(|entry| match entry {
                        Revocation::Jti { jti: j, until } => {
                            *until >= cutoff && Some(j.as_str()) == jti
                        }
                        Revocation::User {
                            user: u,
                            before,
                            until,
                        } => {
                            *until >= cutoff
                                && Some(u.as_str()) == user
                                && iat.map_or(true, |iat| iat < *before)
                        }
                    });
                    let got = list.voids_at(user, jti, iat.and_then(at), now);
                    assert_eq!(
                        got, expected,
                        "seed {seed} step {step}: {user:?} {jti:?} iat {iat:?} at {now}"
                    );
                }
                let live = list.entries(now).len();
                assert!(live <= list.len() && list.len() <= 1000, "seed {seed}");
                assert_eq!(list.counters.revoked_tokens.get() as usize, list.len());
            }
        }
    }
}
