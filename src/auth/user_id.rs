//! The one mapping between a user id as an identity provider writes it
//! (`auth0|123`, `alice@example.com`, an Azure `oid`) and the topic segment
//! Herald uses for it in `user.{id}`, in the `x-herald-user` header and in
//! `/api/users/{user}`.
//!
//! The rule, documented in the README:
//! - an id that is already a topic segment (`[A-Za-z0-9_:-]+`) and does not
//!   start with `b64:` is its own segment, unchanged;
//! - any other id becomes `b64:` followed by the unpadded base64url of its
//!   UTF-8 bytes (`auth0|123` → `b64:YXV0aDB8MTIz`).
//!
//! Every segment of the second kind starts with `b64:` and none of the first
//! kind does, and base64 is injective, so two different ids never share a
//! segment, and decoding gives the id back.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// What marks an encoded id. It is itself made of segment characters, so an
/// encoded id is a valid segment; plain ids that happen to start with it are
/// encoded too, which keeps the mapping collision-free.
pub const ENCODED_PREFIX: &str = "b64:";

/// The longest segment a user id may take, so that `user.{id}` and a few
/// sub-topics under it stay within the 255-byte topic limit.
pub const MAX_SEGMENT_LEN: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("the user id is empty")]
    Empty,
    #[error("the user id is too long: its topic segment would be {0} bytes, at most {MAX_SEGMENT_LEN} are allowed")]
    TooLong(usize),
}

fn is_plain_segment(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
}

/// The topic segment that stands for user `id`.
pub fn to_segment(id: &str) -> Result<String, UserIdError> {
    if id.is_empty() {
        return Err(UserIdError::Empty);
    }
    let segment = if is_plain_segment(id) && !id.starts_with(ENCODED_PREFIX) {
        id.to_owned()
    } else {
        format!("{ENCODED_PREFIX}{}", URL_SAFE_NO_PAD.encode(id.as_bytes()))
    };
    if segment.len() > MAX_SEGMENT_LEN {
        return Err(UserIdError::TooLong(segment.len()));
    }
    Ok(segment)
}

/// The user id `segment` stands for, when it is a segment [`to_segment`]
/// could have produced; `None` otherwise.
pub fn from_segment(segment: &str) -> Option<String> {
    if !is_plain_segment(segment) || segment.len() > MAX_SEGMENT_LEN {
        return None;
    }
    let Some(encoded) = segment.strip_prefix(ENCODED_PREFIX) else {
        return Some(segment.to_owned());
    };
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    let id = String::from_utf8(bytes).ok()?;
    // Only the canonical form counts: `b64:YQ` decodes to `a`, but `a` is
    // written `a`, so `b64:YQ` is no segment of this mapping.
    (to_segment(&id).ok()? == segment).then_some(id)
}

/// The segment for a user named in an HTTP API path: a segment of this
/// mapping as it stands (what `user.{id}` and `x-herald-user` show), or else
/// the raw id, encoded, so backends may pass `auth0|123` as they know it.
pub fn segment_from_path(user: &str) -> Result<String, UserIdError> {
    match from_segment(user) {
        Some(_) => Ok(user.to_owned()),
        None => to_segment(user),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWKWARD: &[&str] = &[
        "auth0|123",
        "alice@example.com",
        "google-oauth2|1098",
        "a.b",
        "ünïcødé",
        "with space",
        "b64:",
        "b64:YQ",
        "b64:YXV0aDB8MTIz",
        "#",
        "*",
        "/",
    ];

    #[test]
    fn valid_ids_are_unchanged() {
        for id in [
            "alice",
            "0b1f6a52-6c3e-4e5c-9f0e-2d3c4b5a6978",
            "user:42",
            "A_b-C",
            "b64",
            "xb64:a",
            "-",
        ] {
            assert_eq!(to_segment(id).as_deref(), Ok(id));
            assert_eq!(from_segment(id).as_deref(), Some(id));
        }
    }

    #[test]
    fn every_id_round_trips_through_a_valid_segment() {
        for id in AWKWARD {
            let segment = to_segment(id).expect("short ids encode");
            assert!(is_plain_segment(&segment), "{segment}");
            assert!(segment.starts_with(ENCODED_PREFIX), "{segment}");
            assert_eq!(from_segment(&segment).as_deref(), Some(*id));
        }
        assert_eq!(to_segment("auth0|123").as_deref(), Ok("b64:YXV0aDB8MTIz"));
    }

    #[test]
    fn no_two_ids_share_a_segment() {
        let mut ids: Vec<String> = AWKWARD.iter().map(|id| id.to_string()).collect();
        ids.extend(["alice", "YXV0aDB8MTIz", "auth0", "b64:YXV0aDB8MTIz"].map(String::from));
        // Every plain-looking id paired with what an encoded one looks like.
        for id in AWKWARD {
            ids.push(to_segment(id).expect("short ids encode"));
        }
        let mut seen = std::collections::HashMap::new();
        for id in &ids {
            let segment = to_segment(id).expect("short ids encode");
            if let Some(other) = seen.insert(segment.clone(), id.clone()) {
                assert_eq!(&other, id, "`{other}` and `{id}` both map to `{segment}`");
            }
        }
    }

    #[test]
    fn only_canonical_segments_decode() {
        assert_eq!(from_segment("b64:YQ"), None, "`a` is written `a`");
        assert_eq!(from_segment("b64:!!"), None);
        assert_eq!(from_segment("a.b"), None);
        assert_eq!(from_segment(""), None);
    }

    #[test]
    fn paths_take_the_segment_or_the_raw_id() {
        assert_eq!(
            segment_from_path("b64:YXV0aDB8MTIz").as_deref(),
            Ok("b64:YXV0aDB8MTIz")
        );
        assert_eq!(
            segment_from_path("auth0|123").as_deref(),
            Ok("b64:YXV0aDB8MTIz")
        );
        assert_eq!(segment_from_path("alice").as_deref(), Ok("alice"));
        assert_eq!(segment_from_path(""), Err(UserIdError::Empty));
    }

    #[test]
    fn over_long_ids_are_refused() {
        assert!(to_segment(&"a".repeat(MAX_SEGMENT_LEN)).is_ok());
        assert!(matches!(
            to_segment(&"a".repeat(MAX_SEGMENT_LEN + 1)),
            Err(UserIdError::TooLong(_))
        ));
        assert!(matches!(
            to_segment(&"@".repeat(MAX_SEGMENT_LEN)),
            Err(UserIdError::TooLong(_))
        ));
    }

    use proptest::prelude::*;

    /// Plain ids, ids that look encoded, and anything.
    fn any_id() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9_:-]{0,12}",
            "b64:[A-Za-z0-9_-]{0,12}",
            "[a-z|@.#* ]{0,12}",
            ".{0,40}",
            "[a-z]{195,205}",
        ]
    }

    proptest! {
        #[test]
        fn any_id_round_trips_through_one_segment(id in any_id()) {
            match to_segment(&id) {
                Ok(segment) => {
                    prop_assert!(is_plain_segment(&segment), "{}", segment);
                    prop_assert!(segment.len() <= MAX_SEGMENT_LEN);
                    prop_assert_eq!(from_segment(&segment), Some(id.clone()));
                    prop_assert_eq!(segment_from_path(&segment), Ok(segment.clone()));
                }
                Err(UserIdError::Empty) => prop_assert!(id.is_empty()),
                Err(UserIdError::TooLong(len)) => prop_assert!(len > MAX_SEGMENT_LEN),
            }
            // Whatever decodes is the canonical segment of what it decodes to.
            if let Some(decoded) = from_segment(&id) {
                prop_assert_eq!(to_segment(&decoded), Ok(id.clone()));
            }
        }

        #[test]
        fn two_ids_share_a_segment_only_when_they_are_one(a in any_id(), b in any_id()) {
            if let (Ok(sa), Ok(sb)) = (to_segment(&a), to_segment(&b)) {
                prop_assert_eq!(sa == sb, a == b);
            }
        }
    }
}
