//! Admission limits shared by every session of a node: connections per
//! node, per user and per client IP, and handshakes per second per client
//! IP.
//!
//! A connection holds a [`Slot`] for each count it is part of; dropping
//! the slot gives it back. Slots are taken by compare-and-increment, so
//! concurrent handshakes can never push a count past its limit (checking
//! first and counting later, when the session starts, let a burst of
//! handshakes all pass the check).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::stats::Counters;

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefusal {
    #[error("this node holds as many connections as it may")]
    Node,
    #[error("this user holds as many connections as one user may")]
    User,
    #[error("this client address holds as many connections as one address may")]
    Ip,
    #[error("too many handshakes from this client address; slow down")]
    HandshakeRate,
}

/// The numbers a node admits connections by.
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    pub max_connections: usize,
    pub max_per_user: usize,
    pub max_per_ip: usize,
    pub handshakes_per_ip: NonZeroU32,
}

/// Counts of open connections, taken and given back through [`Slot`]s.
pub struct ConnectionLimits {
    settings: LimitSettings,
    node: AtomicUsize,
    per_user: DashMap<Arc<str>, usize>,
    per_ip: DashMap<IpAddr, usize>,
    handshakes: DefaultKeyedRateLimiter<IpAddr>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for ConnectionLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimits")
            .field("settings", &self.settings)
            .field("node", &self.node.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// One connection's share of one count; given back when dropped.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    of: Held,
}

enum Held {
    Node,
    User(Arc<str>),
    Ip(IpAddr),
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let of = match &self.of {
            Held::Node => "node".to_owned(),
            Held::User(user) => format!("user {user}"),
            Held::Ip(ip) => format!("ip {ip}"),
        };
        f.debug_tuple("Slot").field(&of).finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        match &self.of {
            Held::Node => {
                self.limits.node.fetch_sub(1, Ordering::AcqRel);
            }
            Held::User(user) => release(&self.limits.per_user, user),
            Held::Ip(ip) => release(&self.limits.per_ip, ip),
        }
    }
}

/// Takes one from `key`'s count if it is under `max`. The map's entry lock
/// makes the check and the increment one step.
fn take<K: Hash + Eq + Clone>(map: &DashMap<K, usize>, key: &K, max: usize) -> bool {
    let mut count = map.entry(key.clone()).or_insert(0);
    if *count >= max {
        return false;
    }
    *count += 1;
    true
}

/// Gives one back to `key`'s count, forgetting the key at zero so the map
/// holds only keys with open connections.
fn release<K: Hash + Eq>(map: &DashMap<K, usize>, key: &K) {
    map.remove_if_mut(key, |_, count| {
        *count = count.saturating_sub(1);
        *count == 0
    });
}

impl ConnectionLimits {
    pub fn new(settings: LimitSettings, counters: Arc<Counters>) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            settings,
            node: AtomicUsize::new(0),
            per_user: DashMap::new(),
            per_ip: DashMap::new(),
            // A second's worth of handshakes may come at once: a page that
            // opens a few sockets, a NAT of many clients reconnecting.
            handshakes: RateLimiter::keyed(Quota::per_second(settings.handshakes_per_ip)),
            counters,
        })
    }

    /// Counts a handshake from `ip` against its rate.
    pub fn admit_handshake(&self, ip: IpAddr) -> Result<(), LimitRefusal> {
        if self.handshakes.check_key(&client_network(ip)).is_ok() {
            return Ok(());
        }
        self.counters.refused_handshake_rate.inc();
        Err(LimitRefusal::HandshakeRate)
    }

    /// Forgets the handshake rate of addresses that have been quiet long
    /// enough to be back at a full allowance, so the state stays as small
    /// as the set of recently active addresses.
    pub fn forget_quiet_addresses(&self) {
        self.handshakes.retain_recent();
        self.handshakes.shrink_to_fit();
    }

    /// How many addresses the handshake rate currently remembers.
    pub fn remembered_addresses(&self) -> usize {
        self.handshakes.len()
    }

    /// Reserves a connection on the node.
    pub fn admit_node(self: &Arc<Self>) -> Result<Slot, LimitRefusal> {
        let max = self.settings.max_connections;
        let reserved = self
            .node
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            });
        if reserved.is_err() {
            self.counters.connections_rejected.inc();
            return Err(LimitRefusal::Node);
        }
        Ok(self.slot(Held::Node))
    }

    /// Reserves a connection for client address `ip`.
    pub fn admit_ip(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, LimitRefusal> {
        let ip = client_network(ip);
        if !take(&self.per_ip, &ip, self.settings.max_per_ip) {
            self.counters.refused_per_ip.inc();
            return Err(LimitRefusal::Ip);
        }
        Ok(self.slot(Held::Ip(ip)))
    }

    /// Reserves a connection for `user`.
    pub fn admit_user(self: &Arc<Self>, user: &Arc<str>) -> Result<Slot, LimitRefusal> {
        if !take(&self.per_user, user, self.settings.max_per_user) {
            self.counters.refused_per_user.inc();
            return Err(LimitRefusal::User);
        }
        Ok(self.slot(Held::User(user.clone())))
    }

    fn slot(self: &Arc<Self>, of: Held) -> Slot {
        Slot {
            limits: self.clone(),
            of,
        }
    }

    /// Connections reserved on the node right now.
    pub fn open(&self) -> usize {
        self.node.load(Ordering::Acquire)
    }
}

/// What per-IP limits count: an IPv4 address, or an IPv6 address's /64,
/// since one subscriber line holds a whole /64 and would otherwise get an
/// endless supply of addresses.
pub fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(
        max_connections: usize,
        max_per_user: usize,
        max_per_ip: usize,
    ) -> Arc<ConnectionLimits> {
        ConnectionLimits::new(
            LimitSettings {
                max_connections,
                max_per_user,
                max_per_ip,
                handshakes_per_ip: NonZeroU32::MIN.saturating_add(1),
            },
            Arc::new(Counters::default()),
        )
    }

    #[test]
    fn node_slots_are_given_back_when_dropped() {
        let limits = limits(2, 9, 9);
        let first = limits.admit_node().expect("room for one");
        let _second = limits.admit_node().expect("room for two");
        assert_eq!(limits.admit_node().err(), Some(LimitRefusal::Node));
        drop(first);
        assert!(limits.admit_node().is_ok());
        assert_eq!(limits.counters.connections_rejected.get(), 1);
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let limits = limits(10, 9, 9);
        let held: Vec<_> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        (0..50)
                            .filter_map(|_| limits.admit_node().ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().unwrap_or_default())
                .collect()
        });
        assert_eq!(held.len(), 10);
        assert_eq!(limits.open(), 10);
        drop(held);
        assert_eq!(limits.open(), 0);
    }

    #[test]
    fn user_and_ip_counts_forget_keys_at_zero() {
        let limits = limits(9, 1, 1);
        let alice: Arc<str> = "alice".into();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let user_slot = limits.admit_user(&alice).expect("first of alice");
        let ip_slot = limits.admit_ip(ip).expect("first of the address");
        assert_eq!(limits.admit_user(&alice).err(), Some(LimitRefusal::User));
        assert_eq!(limits.admit_ip(ip).err(), Some(LimitRefusal::Ip));
        assert!(limits.admit_user(&"bob".into()).is_ok());
        drop((user_slot, ip_slot));
        assert!(limits.per_user.is_empty() && limits.per_ip.is_empty());
        assert!(limits.admit_user(&alice).is_ok());
    }

    #[test]
    fn handshakes_are_limited_per_address() {
        let limits = limits(9, 9, 9);
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        assert!(limits.admit_handshake(a).is_ok());
        assert!(limits.admit_handshake(a).is_ok());
        assert_eq!(limits.admit_handshake(a), Err(LimitRefusal::HandshakeRate));
        assert!(limits.admit_handshake(b).is_ok());
        assert_eq!(limits.remembered_addresses(), 2);
    }

    #[test]
    fn an_ipv6_client_counts_as_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("test address");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("test address");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("test address");
        assert_eq!(client_network(a), client_network(b));
        assert_ne!(client_network(a), client_network(other));
        let v4: IpAddr = [192, 0, 2, 1].into();
        assert_eq!(client_network(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("test address");
        assert_eq!(client_network(mapped), v4);
    }
}
