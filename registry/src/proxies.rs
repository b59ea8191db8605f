//! Which peers may name the client in a forwarding header, and which header they write
//! (`NISO_TRUSTED_PROXIES`, `NISO_TRUSTED_PROXY_HEADER`). The server's `http/client_address.rs`
//! walks the header with these; the values are configuration, so they live here.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// The networks whose connections may name the client in a forwarding header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn none() -> TrustedProxies {
        TrustedProxies(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|network| network.contains(&address))
    }
}

/// Comma-separated CIDRs (`10.0.0.0/8, fd00::/8`); a bare address is a network of one.
impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut networks = Vec::new();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let network = match part.parse::<IpNet>() {
                Ok(network) => network,
                Err(_) => part
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("{part:?} is not a CIDR (e.g. 10.0.0.0/8) or address"))?,
            };
            networks.push(network.trunc());
        }
        Ok(TrustedProxies(networks))
    }
}

/// The header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (ingress-nginx, Traefik, Envoy, most clouds)
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711";proto=https`
    Forwarded,
}

impl FromStr for ForwardedHeader {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            _ => Err("expected x-forwarded-for or forwarded".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn trusted_proxy_lists_parse_or_say_why_not() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.168.1.7 ,fd00::/8,".parse().unwrap();
        assert!(trusted.contains(ip("10.255.0.1")));
        assert!(trusted.contains(ip("192.168.1.7")));
        assert!(!trusted.contains(ip("192.168.1.8")));
        assert!(trusted.contains(ip("fd12::1")));
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        // A host address with a prefix is the network it names.
        assert!(
            "10.1.2.3/8"
                .parse::<TrustedProxies>()
                .unwrap()
                .contains(ip("10.9.9.9"))
        );
        let error = "10.0.0.0/8, ingress".parse::<TrustedProxies>().unwrap_err();
        assert!(error.contains("ingress"), "{error}");
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
    }
}
