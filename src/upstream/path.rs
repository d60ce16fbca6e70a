//! Where a call may go: only to a path on its configured service. The
//! client names a service and a path, never a URL; this is the check that
//! keeps Herald from being an open proxy, and it is strict on purpose: no
//! scheme or host, no `..` or `.` segment, no `@`, no backslash, no empty
//! segment, no `;` (servlet containers read `..;` as `..`), and none of
//! these percent-encoded (nor `%25`, so no double encoding either).

use herald_actors::request::Query;
use reqwest::Url;

/// The longest path a client may name.
pub const MAX_PATH: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with a single `/` and be at most {MAX_PATH} bytes")]
    Shape,
    #[error("the path may not contain `{0}`: it can only name a path on the service")]
    Forbidden(String),
    #[error("the path may not have a `.` or `..` segment or an empty one")]
    Segment,
    #[error("the path has a malformed or forbidden percent-escape `{0}`")]
    Escape(String),
    #[error("the query string may only hold URL characters and valid percent-escapes, no `#`")]
    Query,
}

/// Bytes that may appear as they are in a path: RFC 3986 `pchar` without
/// `@` and `;`, and `/`.
fn plain_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:/".contains(&b)
}

/// Bytes whose percent-encoded form is refused: they would change what the
/// path means to a server that decodes before routing.
fn forbidden_escape(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b"./\\@%;?#".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Checks percent-escapes in `text`: each `%` must be followed by two hex
/// digits whose byte `refuse` does not refuse.
fn check_escapes(text: &str, refuse: impl Fn(u8) -> bool) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let escape = text
                .get(at..(at + 3).min(text.len()))
                .unwrap_or("%")
                .to_owned();
            let (Some(high), Some(low)) = (
                bytes.get(at + 1).copied().and_then(hex),
                bytes.get(at + 2).copied().and_then(hex),
            ) else {
                return Err(escape);
            };
            if refuse(high * 16 + low) {
                return Err(escape);
            }
            at += 3;
        } else {
            at += 1;
        }
    }
    Ok(())
}

/// Whether `path` is a path on a service and nothing else.
pub fn validate_path(path: &str) -> Result<(), PathError> {
    if !path.starts_with('/') || path.starts_with("//") || path.len() > MAX_PATH {
        return Err(PathError::Shape);
    }
    if let Some(bad) = path
        .chars()
        .find(|c| !c.is_ascii() || !plain_path_byte(*c as u8) && *c != '%')
    {
        return Err(PathError::Forbidden(bad.escape_default().to_string()));
    }
    check_escapes(path, forbidden_escape).map_err(PathError::Escape)?;
    // After the leading `/`: no empty segment but a trailing one (`/a/`),
    // no dot segment.
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (index, segment) in segments.iter().enumerate() {
        if *segment == "." || *segment == ".." || (segment.is_empty() && index != last) {
            return Err(PathError::Segment);
        }
    }
    Ok(())
}

/// Whether `query` is a query string of URL characters only.
pub fn validate_query(query: &str) -> Result<(), PathError> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
    if query.len() > MAX_PATH || !query.bytes().all(plain) {
        return Err(PathError::Query);
    }
    check_escapes(query, |_| false).map_err(|_| PathError::Query)
}

/// The URL of `path` (with `query`) on the service at `base`. `base` has
/// no query, fragment or credentials (the configuration checked), and its
/// path, if any, is a prefix every call stays under.
pub fn target(base: &Url, path: &str, query: &Query) -> Result<Url, PathError> {
    validate_path(path)?;
    let prefix = base.path().trim_end_matches('/');
    let mut url = base.clone();
    url.set_path(&format!("{prefix}{path}"));
    match query {
        Query::None => url.set_query(None),
        Query::Pairs(pairs) => {
            url.set_query(None);
            let mut encoder = url.query_pairs_mut();
            for (name, value) in pairs {
                encoder.append_pair(name, value);
            }
        }
        Query::Raw(raw) => {
            validate_query(raw)?;
            url.set_query(Some(raw));
        }
    }
    // Whatever the checks above missed, a call never leaves the service.
    let same_origin = url.scheme() == base.scheme()
        && url.host() == base.host()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == format!("{prefix}{path}");
    if !same_origin {
        return Err(PathError::Shape);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> Url {
        Url::parse("http://127.0.0.1:9001/api").expect("valid test URL")
    }

    #[test]
    fn ordinary_paths_are_paths_on_the_service() {
        for path in [
            "/",
            "/accounts/42",
            "/a/b/",
            "/caf%C3%A9",
            "/x:y",
            "/a-b_c~d.json",
            "/%20",
        ] {
            let url = target(&base(), path, &Query::None).expect(path);
            assert_eq!(url.as_str(), format!("http://127.0.0.1:9001/api{path}"));
        }
    }

    #[test]
    fn every_escape_variant_is_refused() {
        let escapes = [
            "",
            "accounts",
            "http://evil.example/",
            "//evil.example/x",
            "/..",
            "/../admin",
            "/a/../../b",
            "/a/./b",
            "/.",
            "/a/..",
            "/%2e%2e/admin",
            "/%2E%2E/admin",
            "/.%2e/x",
            "/%2e./x",
            "/a%2fb",
            "/a%2F..%2Fb",
            "/a\\..\\b",
            "/a%5c..%5cb",
            "/%5C",
            "/@evil.example",
            "/a@b",
            "/%40evil",
            "/%252e%252e/x",
            "/%25",
            "/a;b",
            "/..;/admin",
            "/a%3b",
            "/a?x=1",
            "/a#frag",
            "/a%23",
            "/a%3f",
            "/a b",
            "/a\tb",
            "/a\nb",
            "/a%0a",
            "/a%00",
            "/a%",
            "/a%zz",
            "/a%2",
            "/é",
            "/a//b",
            "\\\\evil\\x",
            "/\u{ff0e}\u{ff0e}/x",
        ];
        for path in escapes {
            assert!(
                target(&base(), path, &Query::None).is_err(),
                "{path:?} was let through"
            );
        }
    }

    #[test]
    fn queries_are_encoded_or_checked() {
        let pairs = Query::Pairs(vec![("q".into(), "a b&c".into()), ("t".into(), "1".into())]);
        let url = target(&base(), "/s", &pairs).expect("valid");
        assert_eq!(url.query(), Some("q=a+b%26c&t=1"));
        let url = target(&base(), "/s", &Query::Raw("x=1&y=%20".into())).expect("valid");
        assert_eq!(url.query(), Some("x=1&y=%20"));
        assert!(target(&base(), "/s", &Query::Raw("x=1#f".into())).is_err());
        assert!(target(&base(), "/s", &Query::Raw("x= 1".into())).is_err());
        assert!(target(&base(), "/s", &Query::Raw("x=%zz".into())).is_err());
    }

    /// Pieces that make paths dangerous, so random paths hit the checks.
    fn piece() -> impl Strategy<Value = String> {
        let words = [
            "/",
            "..",
            ".",
            "%2e",
            "%2E",
            "%2f",
            "%5c",
            "%25",
            "%40",
            "@",
            "\\",
            ";",
            "?",
            "#",
            ":",
            "//",
            "a",
            "b1",
            "%20",
            "%C3%A9",
            "http:",
            "evil.example",
            "%",
            "~",
            "é",
            "\u{0}",
        ];
        prop_oneof![
            prop::sample::select(words.to_vec()).prop_map(str::to_owned),
            "[ -~]{0,3}",
        ]
    }

    proptest! {
        #[test]
        fn a_path_it_accepts_never_leaves_the_service(pieces in prop::collection::vec(piece(), 0..12)) {
            let path = pieces.concat();
            if let Ok(url) = target(&base(), &path, &Query::None) {
                prop_assert_eq!(url.host_str(), Some("127.0.0.1"));
                prop_assert_eq!(url.port(), Some(9001));
                prop_assert_eq!(url.scheme(), "http");
                prop_assert!(url.path().starts_with("/api/"));
                prop_assert_eq!(url.path(), format!("/api{path}"));
                for segment in url.path().split('/') {
                    prop_assert!(segment != ".." && segment != ".");
                    let decoded = segment.to_ascii_lowercase();
                    prop_assert!(!decoded.contains("%2e") && !decoded.contains("%2f") && !decoded.contains("%5c"));
                }
                prop_assert!(!path.contains('@') && !path.contains('\\'));
            }
        }

        #[test]
        fn validation_never_panics(path in ".{0,64}") {
            let _ = validate_path(&path);
            let _ = validate_query(&path);
        }
    }
}
