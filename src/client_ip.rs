//! Who a request comes from: the socket peer, unless the peer is a proxy
//! listed in `HERALD_TRUSTED_PROXIES`, in which case the forwarding headers
//! it added name the client.
//!
//! Each proxy appends the address it received the request from, so the
//! chain is read from the right: the right-most address that is not itself
//! a trusted proxy is the client. Anything to its left was written by the
//! client and may be forged. `X-Forwarded-For` is read when present, as
//! nginx, HAProxy and cloud load balancers add it (and pass a client's own
//! `Forwarded` through untouched, so that one cannot be believed beside
//! it); `Forwarded` (RFC 7239) only from proxies that add nothing else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use actix_web::http::header::HeaderMap;
use actix_web::HttpRequest;
use ipnet::IpNet;

/// The client IP of `req`, believing forwarding headers only from a peer
/// in `trusted`.
pub(crate) fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> IpAddr {
    // Without a peer address (not a TCP connection) there is no one to
    // trust; every such request shares one unspecified address.
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip());
    from_chain(peer, req.headers(), trusted)
}

/// Whether `req` reached the client over HTTPS: on this socket, or, from a
/// peer in `trusted` that terminated TLS, as its `X-Forwarded-Proto: https`
/// or `Forwarded: proto=https` says. From anyone else those headers are the
/// client's own word and are ignored.
pub(crate) fn is_https(req: &HttpRequest, trusted: &[IpNet]) -> bool {
    if req.app_config().secure() {
        return true;
    }
    let from_proxy = req
        .peer_addr()
        .is_some_and(|addr| is_trusted(addr.ip(), trusted));
    from_proxy && forwarded_https(req.headers())
}

/// Whether the nearest proxy's forwarding headers say `https`: the last
/// `X-Forwarded-Proto` entry, else the last `proto=` of `Forwarded`.
fn forwarded_https(headers: &HeaderMap) -> bool {
    let x_forwarded_proto = headers
        .get_all("x-forwarded-proto")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .last();
    let proto = x_forwarded_proto.or_else(|| {
        headers
            .get_all("forwarded")
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    key.trim().eq_ignore_ascii_case("proto").then_some(value)
                })
            })
            .last()
    });
    proto.is_some_and(|proto| proto.trim().trim_matches('"').eq_ignore_ascii_case("https"))
}

pub(crate) fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) as the
/// IPv4 address it is, so IPv4 CIDRs match it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn from_chain(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return canonical(peer);
    }
    let chain = Some(x_forwarded_for(headers))
        .filter(|chain| !chain.is_empty())
        .or_else(|| forwarded_for(headers))
        .unwrap_or_default();
    // The nearest address known to be real: the peer, then each trusted
    // hop walked past.
    let mut nearest = canonical(peer);
    for entry in chain.iter().rev() {
        match entry {
            Some(ip) if is_trusted(*ip, trusted) => nearest = canonical(*ip),
            Some(ip) => return canonical(*ip),
            // `unknown`, an obfuscated name or garbage: nothing beyond it
            // can be believed, and it names no address itself.
            None => return nearest,
        }
    }
    nearest
}

/// The `for=` values of every `Forwarded` header, in order; `None` when
/// there is no such header.
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut values = headers.get_all("forwarded").peekable();
    values.peek()?;
    let mut chain = Vec::new();
    for value in values {
        let Ok(value) = value.to_str() else {
            chain.push(None);
            continue;
        };
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim().eq_ignore_ascii_case("for").then_some(value)
            });
            // An element without `for=` says nothing about who sent it.
            if let Some(node) = node {
                chain.push(parse_node(node));
            }
        }
    }
    Some(chain)
}

/// The entries of every `X-Forwarded-For` header, in order.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .flat_map(|value| match value.to_str() {
            Ok(value) => value.split(',').map(parse_node).collect(),
            Err(_) => vec![None],
        })
        .collect()
}

/// One address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]:80`, possibly in quotes.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"').trim();
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside.parse().ok();
    }
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|net| net.parse().expect("test CIDR"))
            .collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let claims = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        let got = from_chain(ip("203.0.113.9"), &claims, &nets(&["10.0.0.0/8"]));
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn the_rightmost_untrusted_address_of_x_forwarded_for_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client forged 6.6.6.6; 198.51.100.7 reached the outer proxy.
        let chain = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "10.1.2.3"),
        ]);
        assert_eq!(
            from_chain(ip("127.0.0.1"), &chain, &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn forwarded_is_read_only_without_x_forwarded_for_with_ports_and_ipv6() {
        let trusted = nets(&["10.0.0.0/8"]);
        let forwarded = (
            "forwarded",
            r#"for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.2:80"#,
        );
        assert_eq!(
            from_chain(ip("10.0.0.1"), &headers(&[forwarded]), &trusted),
            ip("2001:db8:cafe::17")
        );
        // A client's own `Forwarded`, passed through by a proxy that added
        // `X-Forwarded-For`, names nobody.
        let both = headers(&[forwarded, ("x-forwarded-for", "192.0.2.1")]);
        assert_eq!(from_chain(ip("10.0.0.1"), &both, &trusted), ip("192.0.2.1"));
    }

    #[test]
    fn a_chain_of_trusted_hops_or_an_unreadable_entry_stops_at_the_nearest_known_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.8")]);
        assert_eq!(
            from_chain(ip("10.0.0.1"), &all_trusted, &trusted),
            ip("10.0.0.9")
        );
        let unknown = headers(&[("forwarded", "for=192.0.2.60, for=unknown, for=10.0.0.5")]);
        assert_eq!(
            from_chain(ip("10.0.0.1"), &unknown, &trusted),
            ip("10.0.0.5")
        );
        let none = headers(&[]);
        assert_eq!(from_chain(ip("10.0.0.1"), &none, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn the_nearest_proxy_says_whether_the_client_used_https() {
        for (pairs, https) in [
            (&[("x-forwarded-proto", "https")][..], true),
            (&[("x-forwarded-proto", "http")][..], false),
            (&[("x-forwarded-proto", "http, https")][..], true),
            (&[("forwarded", "for=192.0.2.1;proto=https")][..], true),
            (&[("forwarded", r#"for=192.0.2.1;proto="http""#)][..], false),
            (
                &[("x-forwarded-proto", "http"), ("forwarded", "proto=https")][..],
                false,
            ),
            (&[][..], false),
        ] {
            assert_eq!(forwarded_https(&headers(pairs)), https, "{pairs:?}");
        }
    }

    #[test]
    fn ipv4_seen_through_an_ipv6_socket_matches_ipv4_cidrs() {
        let trusted = nets(&["127.0.0.1/32"]);
        let chain = headers(&[("x-forwarded-for", "192.0.2.44")]);
        assert_eq!(
            from_chain(ip("::ffff:127.0.0.1"), &chain, &trusted),
            ip("192.0.2.44")
        );
    }
}
