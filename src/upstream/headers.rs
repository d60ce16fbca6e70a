//! Which headers cross between a client and a service. From the client:
//! never hop-by-hop headers, `Host`, cookies, credentials, forwarding
//! headers (they would let a client claim another address) or anything
//! `X-Herald-*` (only Herald says who the caller is); where a service lists
//! `headers`, only those. From the service: everything but hop-by-hop
//! headers and `Set-Cookie` (a page's script must not read cookies meant
//! to be HttpOnly).

use std::collections::HashSet;

/// Client headers that are never forwarded, whatever a service allows.
const NEVER_FROM_CLIENT: [&str; 24] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "cookie",
    "cookie2",
    "content-length",
    "content-type",
    "authorization",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    "x-request-id",
];

/// Response headers never passed back.
const NEVER_FROM_SERVICE: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
];

/// The client's headers that may go to the service: `headers` names lower
/// case; `allowed` is the service's list, if it has one. A header the
/// client's own `Connection` names is hop-by-hop too.
pub fn from_client<'a>(
    headers: &'a [(String, String)],
    allowed: Option<&HashSet<String>>,
) -> impl Iterator<Item = &'a (String, String)> {
    let named_hop: HashSet<String> = headers
        .iter()
        .filter(|(name, _)| name == "connection")
        .flat_map(|(_, value)| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let allowed = allowed.cloned();
    headers.iter().filter(move |(name, _)| {
        !NEVER_FROM_CLIENT.contains(&name.as_str())
            && !name.starts_with("x-herald-")
            && !named_hop.contains(name)
            && allowed
                .as_ref()
                .map_or(true, |allowed| allowed.contains(name))
    })
}

/// Whether a service's response header goes back to the client.
pub fn to_client(name: &str) -> bool {
    !NEVER_FROM_SERVICE.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn identity_hop_by_hop_and_cookie_headers_never_pass() {
        let headers = pairs(&[
            ("x-herald-user", "mallory"),
            ("x-herald-session", "s-1"),
            ("cookie", "a=b"),
            ("host", "evil"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("authorization", "Bearer forged"),
            ("x-forwarded-for", "1.2.3.4"),
            ("accept-language", "fr"),
        ]);
        let kept: Vec<&str> = from_client(&headers, None)
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(kept, ["accept-language"]);
    }

    #[test]
    fn a_service_list_lets_only_those_through() {
        let headers = pairs(&[
            ("accept-language", "fr"),
            ("x-tenant", "7"),
            ("cookie", "a"),
        ]);
        let allowed: HashSet<String> = ["x-tenant".to_owned(), "cookie".to_owned()].into();
        let kept: Vec<&str> = from_client(&headers, Some(&allowed))
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(kept, ["x-tenant"]);
    }

    #[test]
    fn set_cookie_and_hop_by_hop_stay_with_herald() {
        assert!(!to_client("set-cookie"));
        assert!(!to_client("transfer-encoding"));
        assert!(to_client("etag"));
    }
}
