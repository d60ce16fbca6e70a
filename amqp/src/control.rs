//! Node-to-node control messages on `herald.control`, signed with the
//! cluster secret.
//!
//! Anyone who may write to the RabbitMQ vhost can publish to the control
//! exchange, so a request from "another node" is believed only when it
//! carries an HMAC-SHA256, under `HERALD_CLUSTER_SECRET`, over what it asks,
//! the node that asks, a timestamp and a nonce; it must be recent (within
//! [`WINDOW`]) and its nonce unseen, so a captured kick cannot be replayed.
//!
//! Four requests travel this way: a kick (close a user's sessions), a
//! revocation (add entries to the revocation list and close the sessions
//! they void), a node's question for the entries its peers hold, asked when
//! its link to RabbitMQ comes up so that a node started after a revoke
//! refuses the token too, and a peer's answer to it. The answer names the
//! node that asked, under the MAC, so that on the fanout exchange only that
//! node merges it and every other drops it unread.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use herald_actors::revocation::Revocation;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a control message's timestamp may be from this node's clock.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Nonces remembered at most: past this many in one window the oldest are
/// forgotten (and their messages are outside the window soon after).
const MAX_REMEMBERED: usize = 100_000;

/// What a node asks of the others. On the wire its one key names the
/// kind: `{"kick": USER}`, `{"revoke": [ENTRY, ...]}`,
/// `{"revocations_wanted": {}}`, `{"revocations_for": {"node": NODE,
/// "entries": [ENTRY, ...]}}`, `{"node_status": {...}}`, beside the
/// signature's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Close the sessions of this user.
    Kick(String),
    /// Add these entries to the revocation list and close the sessions
    /// they void.
    Revoke(Vec<Revocation>),
    /// Send me the entries of your revocation list (as `RevocationsFor`).
    RevocationsWanted {},
    /// Entries of the sender's list, in answer to `node`'s
    /// `RevocationsWanted`: only `node` merges them.
    RevocationsFor {
        node: String,
        entries: Vec<Revocation>,
    },
    /// The sender's state, announced every [`ANNOUNCE_EVERY`]; a node that
    /// stops announcing drops off the others' tables after
    /// [`PEER_TIMEOUT`].
    NodeStatus(NodeStatus),
}

/// How often a node announces itself to the others.
pub const ANNOUNCE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a node stays in the others' tables after its last
/// announcement: three missed announcements, and a second for the trip.
pub const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7);

/// What a node tells the others about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// Milliseconds since the Unix epoch when the node started.
    pub started_at_ms: u64,
    pub version: String,
    pub connections: u64,
    pub users: u64,
    /// Messages in and out per second since the previous announcement.
    pub in_per_s: u64,
    pub out_per_s: u64,
    pub draining: bool,
    /// The node's RabbitMQ link state, as in `/api/stats`.
    pub amqp: String,
}

impl Request {
    /// The one node this request is for, when it is not for every node.
    pub fn addressee(&self) -> Option<&str> {
        match self {
            Request::RevocationsFor { node, .. } => Some(node),
            _ => None,
        }
    }
}

/// The kinds of [`Request`] this version reads, as they appear on the wire.
const KNOWN_KINDS: [&str; 5] = [
    "kick",
    "revoke",
    "revocations_wanted",
    "revocations_for",
    "node_status",
];

/// The kind of a well-formed control message that this version does not
/// know, sent by a newer node during a rolling upgrade: such a message is
/// dropped quietly rather than counted as a refusal, so an upgrade does not
/// raise the alert on refused control messages. `None` for anything else,
/// which stays a refusal.
pub fn unknown_kind(data: &[u8]) -> Option<String> {
    const SIGNATURE: [&str; 4] = ["origin", "ts", "nonce", "mac"];
    let serde_json::Value::Object(fields) = serde_json::from_slice(data).ok()? else {
        return None;
    };
    if !SIGNATURE.iter().all(|key| fields.contains_key(*key)) {
        return None;
    }
    let mut kinds = fields
        .keys()
        .filter(|key| !SIGNATURE.contains(&key.as_str()));
    match (kinds.next(), kinds.next()) {
        (Some(kind), None) if !KNOWN_KINDS.contains(&kind.as_str()) => {
            Some(kind.chars().take(64).collect())
        }
        _ => None,
    }
}

/// A request from one node to the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlMessage {
    #[serde(flatten)]
    pub request: Request,
    /// The node id of the sender.
    pub origin: String,
    /// Milliseconds since the Unix epoch when it was signed.
    pub ts: u64,
    pub nonce: String,
    /// Hex HMAC-SHA256 of [`signed_text`].
    pub mac: String,
}

/// Why a control message was not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("no cluster secret is configured, so no other node is believed")]
    NoSecret,
    #[error("its signature does not match the cluster secret")]
    BadSignature,
    #[error("its timestamp is {0} ms away from this node's clock")]
    Stale(u64),
    #[error("its nonce was seen before (a replay)")]
    Replayed,
}

/// What the MAC covers. A kick keeps the text it always had, so nodes of
/// the previous release still believe each other's kicks; the other kinds
/// sign their request's JSON (its fields in declaration order, so the
/// receiver rebuilds the same text from what it parsed) under another tag,
/// so no text of one kind is ever that of another.
fn signed_text(request: &Request, origin: &str, ts: u64, nonce: &str) -> String {
    match request {
        Request::Kick(kick) => format!("herald-control-v1\n{origin}\n{ts}\n{nonce}\n{kick}"),
        other => {
            let body = serde_json::to_string(other).unwrap_or_default();
            format!("herald-control-v2\n{origin}\n{ts}\n{nonce}\n{body}")
        }
    }
}

/// Signs this node's requests and checks the others'.
pub struct ControlAuth {
    secret: Option<Vec<u8>>,
    /// Nonces of accepted messages, oldest first, with their timestamps.
    seen: VecDeque<(u64, String)>,
    seen_index: HashMap<String, u64>,
}

impl ControlAuth {
    pub fn new(secret: Option<&str>) -> Self {
        ControlAuth {
            secret: secret.map(|secret| secret.as_bytes().to_vec()),
            seen: VecDeque::new(),
            seen_index: HashMap::new(),
        }
    }

    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    fn mac(secret: &[u8], text: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
        mac.update(text.as_bytes());
        mac
    }

    /// A signed request to close `user`'s sessions, or `None` without a
    /// secret (no other node would believe it).
    pub fn sign_kick(&self, user: &str, origin: &str, now_ms: u64) -> Option<ControlMessage> {
        self.sign(Request::Kick(user.to_owned()), origin, now_ms)
    }

    /// `request`, signed, or `None` without a secret.
    pub fn sign(&self, request: Request, origin: &str, now_ms: u64) -> Option<ControlMessage> {
        let secret = self.secret.as_deref()?;
        let nonce = format!("{:032x}", rand::random::<u128>());
        let text = signed_text(&request, origin, now_ms, &nonce);
        let mac = hex::encode(Self::mac(secret, &text).finalize().into_bytes());
        Some(ControlMessage {
            request,
            origin: origin.to_owned(),
            ts: now_ms,
            nonce,
            mac,
        })
    }

    /// Believes `message` or says why not; a believed nonce is remembered.
    pub fn verify(&mut self, message: &ControlMessage, now_ms: u64) -> Result<(), Rejected> {
        let secret = self.secret.as_deref().ok_or(Rejected::NoSecret)?;
        let text = signed_text(
            &message.request,
            &message.origin,
            message.ts,
            &message.nonce,
        );
        let given = hex::decode(&message.mac).map_err(|_| Rejected::BadSignature)?;
        // `verify_slice` compares in constant time.
        Self::mac(secret, &text)
            .verify_slice(&given)
            .map_err(|_| Rejected::BadSignature)?;
        let skew = now_ms.abs_diff(message.ts);
        if skew > WINDOW.as_millis() as u64 {
            return Err(Rejected::Stale(skew));
        }
        self.forget_before(now_ms.saturating_sub(2 * WINDOW.as_millis() as u64));
        if self.seen_index.contains_key(&message.nonce) {
            return Err(Rejected::Replayed);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            if let Some((_, nonce)) = self.seen.pop_front() {
                self.seen_index.remove(&nonce);
            }
        }
        self.seen.push_back((message.ts, message.nonce.clone()));
        self.seen_index.insert(message.nonce.clone(), message.ts);
        Ok(())
    }

    /// Nonces older than `cutoff` can only come with stale timestamps.
    fn forget_before(&mut self, cutoff: u64) {
        while self.seen.front().is_some_and(|(ts, _)| *ts < cutoff) {
            if let Some((_, nonce)) = self.seen.pop_front() {
                self.seen_index.remove(&nonce);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_signed_kick_is_believed_once() {
        let sender = ControlAuth::new(Some("s3cret"));
        let mut receiver = ControlAuth::new(Some("s3cret"));
        let message = sender.sign_kick("alice", "n-1", NOW).expect("a secret");
        assert_eq!(receiver.verify(&message, NOW + 5), Ok(()));
        assert_eq!(receiver.verify(&message, NOW + 6), Err(Rejected::Replayed));
    }

    #[test]
    fn forged_altered_stale_and_unsigned_messages_are_refused() {
        let sender = ControlAuth::new(Some("s3cret"));
        let mut receiver = ControlAuth::new(Some("s3cret"));
        let forger = ControlAuth::new(Some("guess"));
        let forged = forger.sign_kick("alice", "n-1", NOW).expect("a secret");
        assert_eq!(receiver.verify(&forged, NOW), Err(Rejected::BadSignature));

        let mut altered = sender.sign_kick("alice", "n-1", NOW).expect("a secret");
        altered.request = Request::Kick("bob".into());
        assert_eq!(receiver.verify(&altered, NOW), Err(Rejected::BadSignature));

        let mut garbage = sender.sign_kick("alice", "n-1", NOW).expect("a secret");
        garbage.mac = "not hex".into();
        assert_eq!(receiver.verify(&garbage, NOW), Err(Rejected::BadSignature));

        let old = sender.sign_kick("alice", "n-1", NOW).expect("a secret");
        let late = NOW + WINDOW.as_millis() as u64 + 1;
        assert!(matches!(
            receiver.verify(&old, late),
            Err(Rejected::Stale(_))
        ));

        let mut open = ControlAuth::new(None);
        assert_eq!(open.sign_kick("alice", "n-1", NOW), None);
        let signed = sender.sign_kick("alice", "n-1", NOW).expect("a secret");
        assert_eq!(open.verify(&signed, NOW), Err(Rejected::NoSecret));
    }

    #[test]
    fn a_kick_keeps_its_wire_form_and_the_revocation_kinds_round_trip() {
        let sender = ControlAuth::new(Some("s3cret"));
        let kick = sender.sign_kick("alice", "n-1", NOW).expect("a secret");
        let text = serde_json::to_value(&kick).expect("serializes");
        assert_eq!(text["kick"], "alice", "{text}");
        let entries = vec![
            Revocation::Jti {
                jti: "t-1".into(),
                until: 5,
            },
            Revocation::User {
                user: "bob".into(),
                before: 3,
                until: 9,
            },
        ];
        for request in [
            Request::Revoke(entries.clone()),
            Request::RevocationsWanted {},
            Request::RevocationsFor {
                node: "n-2".into(),
                entries: entries.clone(),
            },
        ] {
            let signed = sender.sign(request, "n-1", NOW).expect("a secret");
            let wire = serde_json::to_vec(&signed).expect("serializes");
            let parsed: ControlMessage = serde_json::from_slice(&wire).expect("parses");
            assert_eq!(parsed, signed);
            let mut receiver = ControlAuth::new(Some("s3cret"));
            assert_eq!(receiver.verify(&parsed, NOW), Ok(()));
        }
    }

    #[test]
    fn an_altered_or_forged_revocation_is_refused() {
        let sender = ControlAuth::new(Some("s3cret"));
        let mut receiver = ControlAuth::new(Some("s3cret"));
        let entry = Revocation::Jti {
            jti: "t-1".into(),
            until: 5,
        };
        let mut altered = sender
            .sign(Request::Revoke(vec![entry.clone()]), "n-1", NOW)
            .expect("a secret");
        altered.request = Request::Revoke(vec![Revocation::Jti {
            jti: "t-2".into(),
            until: 5,
        }]);
        assert_eq!(receiver.verify(&altered, NOW), Err(Rejected::BadSignature));
        // A kick's MAC does not vouch for a revocation with the same text.
        let mut switched = sender.sign_kick("t-1", "n-1", NOW).expect("a secret");
        switched.request = Request::Revoke(vec![entry.clone()]);
        assert_eq!(receiver.verify(&switched, NOW), Err(Rejected::BadSignature));
        // An answer for one node cannot be readdressed to another.
        let mut readdressed = sender
            .sign(
                Request::RevocationsFor {
                    node: "n-2".into(),
                    entries: vec![entry.clone()],
                },
                "n-1",
                NOW,
            )
            .expect("a secret");
        readdressed.request = Request::RevocationsFor {
            node: "n-3".into(),
            entries: vec![entry.clone()],
        };
        assert_eq!(
            receiver.verify(&readdressed, NOW),
            Err(Rejected::BadSignature)
        );
        let unsigned =
            serde_json::json!({"revoke": [{"by": "jti", "jti": "t", "until": 5}], "origin": "n-x"});
        assert!(serde_json::from_value::<ControlMessage>(unsigned).is_err());
    }

    #[test]
    fn remembered_nonces_stay_bounded_by_the_window() {
        let sender = ControlAuth::new(Some("k"));
        let mut receiver = ControlAuth::new(Some("k"));
        for step in 0..100u64 {
            let at = NOW + step * 10_000;
            let message = sender.sign_kick("u", "n-1", at).expect("a secret");
            receiver.verify(&message, at).expect("fresh");
        }
        // Ten seconds apart, only those within two windows are kept.
        assert!(receiver.seen.len() <= 7, "{}", receiver.seen.len());
        assert_eq!(receiver.seen.len(), receiver.seen_index.len());
    }
    #[test]
    fn a_kind_from_a_newer_node_is_told_apart_from_a_malformed_message() {
        let newer = br#"{"shiny_new":{},"origin":"n-9","ts":1,"nonce":"x","mac":"00"}"#;
        assert_eq!(unknown_kind(newer).as_deref(), Some("shiny_new"));
        // Every kind this version knows is not "unknown", however malformed.
        for kind in KNOWN_KINDS {
            let known = format!(r#"{{"{kind}":7,"origin":"n","ts":1,"nonce":"x","mac":"00"}}"#);
            assert_eq!(unknown_kind(known.as_bytes()), None);
        }
        // Without the signature's fields, or with two kinds, it stays a refusal.
        assert_eq!(unknown_kind(br#"{"shiny_new":{}}"#), None);
        let two = br#"{"a":1,"b":2,"origin":"n","ts":1,"nonce":"x","mac":"00"}"#;
        assert_eq!(unknown_kind(two), None);
        assert_eq!(unknown_kind(b"not json"), None);
    }
}
