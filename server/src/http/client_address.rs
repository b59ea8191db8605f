//! The client's address, for everything keyed by client (the login and registration limits).
//!
//! Behind a reverse proxy (the chart's Ingress) every connection comes from the proxy, so the
//! TCP peer says nothing about the client. The proxy names the client in a forwarding header,
//! but any client can send that header too: it is believed only when the TCP peer is one of
//! `NISO_TRUSTED_PROXIES`, and then only as far as the chain of trusted proxies goes. Walking
//! the header from the right (each proxy appends the address it received the request from),
//! the first address that is not itself a trusted proxy is the client; everything to its left
//! was written by the client and is ignored.
//!
//! Which header is read is configured (`NISO_TRUSTED_PROXY_HEADER`), never guessed: a proxy
//! that writes `X-Forwarded-For` passes a client's own `Forwarded` header through untouched,
//! and the other way round, so reading the header the proxy does not write would let the
//! client choose its address.
//!
//! A hostile header never fails the request: what cannot be parsed is where belief stops, and
//! the address used is then the nearest trusted hop (or the peer).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use niso_registry::proxies::{ForwardedHeader, TrustedProxies};

use super::AppState;
use crate::http::error::ApiError;
use niso_registry::error::Error;

/// How many proxies a chain may have before the walk stops believing it (a header is at most
/// the connection's buffer, 64 KiB, but nothing needs to read thousands of entries).
const MAX_HOPS: usize = 32;

/// The address of the client a request comes from (canonical: an IPv4-mapped IPv6 peer is
/// its IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    /// The client behind `peer` given the request's headers.
    pub fn resolve(
        peer: IpAddr,
        headers: &HeaderMap,
        trusted: &TrustedProxies,
        header: ForwardedHeader,
    ) -> ClientAddress {
        let peer = peer.to_canonical();
        if !trusted.contains(peer) {
            return ClientAddress(peer);
        }
        let entries = forwarded_entries(headers, header);
        let mut nearest_trusted = peer;
        for entry in entries.iter().rev().take(MAX_HOPS) {
            let Some(address) = parse_node(entry) else {
                // Garbage, `unknown` or an obfuscated name: nothing left of it can be
                // believed, and the nearest proxy is all we know.
                break;
            };
            if !trusted.contains(address) {
                return ClientAddress(address);
            }
            nearest_trusted = address;
        }
        ClientAddress(nearest_trusted)
    }
}

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| Error::internal("the connection's peer address is missing"))?;
        let settings = state.registry.settings();
        Ok(ClientAddress::resolve(
            peer.ip(),
            &parts.headers,
            &settings.trusted_proxies,
            settings.trusted_proxy_header,
        ))
    }
}

/// The header's hops in order, left to right, over every line of it (a repeated header is
/// one list, RFC 9110 §5.3). For `Forwarded`, each element's `for=` value.
fn forwarded_entries(headers: &HeaderMap, header: ForwardedHeader) -> Vec<&str> {
    let name = match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    let mut entries = Vec::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            // Not visible ASCII: unbelievable from here leftwards, so drop what came before.
            entries.clear();
            entries.push("");
            continue;
        };
        for element in value.split(',') {
            match header {
                ForwardedHeader::XForwardedFor => entries.push(element.trim()),
                ForwardedHeader::Forwarded => {
                    // An element without `for=` names no node: it is as good as garbage.
                    let node = element
                        .split(';')
                        .filter_map(|pair| pair.split_once('='))
                        .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
                        .map_or("", |(_, value)| value.trim());
                    entries.push(node);
                }
            }
        }
    }
    entries
}

/// An address out of one hop: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`, optionally quoted (`Forwarded`). Anything else (`unknown`,
/// `_hidden`, garbage) is `None`.
fn parse_node(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let entry = entry
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(entry);
    let address = if let Ok(address) = entry.parse::<IpAddr>() {
        address
    } else if let Ok(socket) = entry.parse::<SocketAddr>() {
        socket.ip()
    } else {
        entry
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))?
            .parse::<IpAddr>()
            .ok()?
    };
    Some(address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn resolve_xff(peer: &str, trusted: &str, values: &[&str]) -> IpAddr {
        ClientAddress::resolve(
            ip(peer),
            &headers("x-forwarded-for", values),
            &trusted.parse().unwrap(),
            ForwardedHeader::XForwardedFor,
        )
        .0
    }

    fn resolve_forwarded(peer: &str, trusted: &str, values: &[&str]) -> IpAddr {
        ClientAddress::resolve(
            ip(peer),
            &headers("forwarded", values),
            &trusted.parse().unwrap(),
            ForwardedHeader::Forwarded,
        )
        .0
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        for trusted in ["", "10.0.0.0/8"] {
            assert_eq!(
                resolve_xff("203.0.113.9", trusted, &["198.51.100.1"]),
                ip("203.0.113.9")
            );
        }
        assert_eq!(
            resolve_forwarded("203.0.113.9", "10.0.0.0/8", &["for=198.51.100.1"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_right_most_untrusted_hop() {
        // The client wrote the first entry itself; the ingress appended the real address.
        assert_eq!(
            resolve_xff("10.0.0.5", "10.0.0.0/8", &["1.1.1.1, 198.51.100.7"]),
            ip("198.51.100.7")
        );
        // Two proxies, both trusted; a second header line continues the list.
        assert_eq!(
            resolve_xff(
                "10.0.0.5",
                "10.0.0.0/8, 192.168.0.0/16",
                &["6.6.6.6, 198.51.100.7", "192.168.1.1"]
            ),
            ip("198.51.100.7")
        );
        // Every hop trusted: the left-most is the client.
        assert_eq!(
            resolve_xff("10.0.0.5", "10.0.0.0/8", &["10.9.9.9, 10.1.1.1"]),
            ip("10.9.9.9")
        );
        // No header: the peer itself.
        assert_eq!(resolve_xff("10.0.0.5", "10.0.0.0/8", &[]), ip("10.0.0.5"));
    }

    #[test]
    fn ports_brackets_quotes_and_mapped_addresses() {
        assert_eq!(
            resolve_xff("10.0.0.5", "10.0.0.0/8", &["198.51.100.7:4711"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            resolve_xff("10.0.0.5", "10.0.0.0/8", &["[2001:db8::17]:4711"]),
            ip("2001:db8::17")
        );
        assert_eq!(
            resolve_xff("10.0.0.5", "10.0.0.0/8", &["2001:db8::17"]),
            ip("2001:db8::17")
        );
        assert_eq!(
            resolve_forwarded(
                "10.0.0.5",
                "10.0.0.0/8",
                &[r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#]
            ),
            ip("2001:db8:cafe::17")
        );
        // An IPv4-mapped peer is trusted by its IPv4 network, and a mapped entry is its IPv4.
        assert_eq!(
            resolve_xff("::ffff:10.0.0.5", "10.0.0.0/8", &["::ffff:198.51.100.7"]),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn hostile_headers_stop_belief_at_the_nearest_trusted_hop() {
        for garbage in [
            "unknown",
            "_hidden",
            "not an address",
            "",
            "999.1.1.1",
            "[::1",
            "\"198.51.100.7",
            "1.2.3.4:99999",
        ] {
            // Garbage right of a real address: the address left of it is not believed.
            let value = format!("198.51.100.7, {garbage}");
            assert_eq!(
                resolve_xff("10.0.0.5", "10.0.0.0/8", &[&value]),
                ip("10.0.0.5"),
                "{garbage:?}"
            );
            let value = format!("for=198.51.100.7, for={garbage}");
            assert_eq!(
                resolve_forwarded("10.0.0.5", "10.0.0.0/8", &[&value]),
                ip("10.0.0.5"),
                "{garbage:?}"
            );
        }
        // A Forwarded element without `for=`.
        assert_eq!(
            resolve_forwarded("10.0.0.5", "10.0.0.0/8", &["for=198.51.100.7, proto=https"]),
            ip("10.0.0.5")
        );
        // Behind a trusted hop, garbage gives that hop.
        assert_eq!(
            resolve_xff("10.0.0.5", "10.0.0.0/8", &["garbage, 10.2.2.2"]),
            ip("10.2.2.2")
        );
    }

    #[test]
    fn thousands_of_entries_are_cheap_and_bounded() {
        // All trusted: the walk stops after MAX_HOPS and answers a trusted hop.
        let many = vec!["10.1.1.1"; 5000].join(",");
        let address = resolve_xff("10.0.0.5", "10.0.0.0/8", &[&many]);
        assert!(
            "10.0.0.0/8"
                .parse::<TrustedProxies>()
                .unwrap()
                .contains(address)
        );
        // Thousands of client-written entries left of the real one change nothing.
        let many = format!("{}, 198.51.100.7", vec!["6.6.6.6"; 5000].join(","));
        assert_eq!(
            resolve_xff("10.0.0.5", "10.0.0.0/8", &[&many]),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn non_ascii_header_bytes_are_not_believed() {
        let mut map = HeaderMap::new();
        map.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"198.51.100.7, \xff\xfe").unwrap(),
        );
        let address = ClientAddress::resolve(
            ip("10.0.0.5"),
            &map,
            &"10.0.0.0/8".parse().unwrap(),
            ForwardedHeader::XForwardedFor,
        );
        assert_eq!(address.0, ip("10.0.0.5"));
    }
}
