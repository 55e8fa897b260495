//! The client's address behind a reverse proxy. NGINX (`docker-compose.prod.yml`) connects to
//! uag itself, so every anonymous caller would share NGINX's address for rate limits and the
//! `user` cache scope. When the connecting peer is one of `server.trusted_proxies`, the client
//! is the right-most address of `X-Forwarded-For` that is not itself a trusted proxy (each proxy
//! appends the address it saw; only what trusted hops appended can be believed, anything left of
//! that is the client's own claim). An untrusted peer's `X-Forwarded-For` is ignored.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// An address block (`10.0.0.0/8`, `fd00::/8`, or one address); in config as its text, checked
/// when the config loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `v6/n` or a single address.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| format!("`{text}` is not an address or address/prefix"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("`{text}`: the prefix must be 0..={max}"))?,
        };
        Ok(Self { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        let full = if c.network.is_ipv4() { 32 } else { 128 };
        if c.prefix == full { c.network.to_string() } else { format!("{}/{}", c.network, c.prefix) }
    }
}

/// The client behind `peer`, given the request's `X-Forwarded-For` values in order.
pub fn client_address<'a>(peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).map(str::trim).filter(|h| !h.is_empty()).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // A malformed entry ends what can be believed: the last good address stands.
        let Ok(ip) = hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// The middleware: replaces the connection's peer address with the client's, for everything
/// after it (authentication's logs, rate limits, the cache scope).
pub(crate) async fn resolve(State(state): State<super::AppState>, mut request: Request, next: Next) -> Response {
    let trusted = &state.config.server.trusted_proxies;
    if !trusted.is_empty()
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied()
    {
        let values = request.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let client = client_address(peer.ip(), values, trusted);
        if client != peer.ip().to_canonical() {
            request.extensions_mut().insert(ConnectInfo(SocketAddr::new(client, 0)));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_parse_and_contain() {
        let docker = Cidr::parse("172.16.0.0/12").unwrap();
        assert!(docker.contains(ip("172.18.0.2")) && !docker.contains(ip("172.32.0.1")));
        assert!(docker.contains(ip("::ffff:172.18.0.2")), "an IPv4-mapped peer is the IPv4 address");
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["172.16.0.0/33", "nginx", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        // In config: checked when it loads, naming the key.
        let parse = |text: &str| crate::config::Config::from_toml_str(text, &crate::config::ConfigOrigin::File("uag.toml".into()), &[]);
        let err = parse("[server]\ntrusted_proxies = [\"nginx\"]\n").unwrap_err().to_string();
        assert!(err.contains("server.trusted_proxies") && err.contains("nginx"), "{err}");
        assert_eq!(parse("[server]\ntrusted_proxies = [\"172.29.80.10\"]\n").unwrap().server.trusted_proxies.len(), 1);
        // Config text round trip.
        assert_eq!(String::from(docker), "172.16.0.0/12");
        assert_eq!(String::from(Cidr::parse("127.0.0.1").unwrap()), "127.0.0.1");
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let proxy = ip("10.0.0.5");
        // Behind one trusted proxy.
        assert_eq!(client_address(proxy, ["203.0.113.7"].into_iter(), &trusted), ip("203.0.113.7"));
        // A client that sends its own X-Forwarded-For cannot pick its address: the proxy
        // appended the real one on the right.
        assert_eq!(client_address(proxy, ["1.2.3.4, 203.0.113.7"].into_iter(), &trusted), ip("203.0.113.7"));
        // Two trusted hops, and the header split over two fields.
        assert_eq!(client_address(proxy, ["203.0.113.7", "10.0.0.9"].into_iter(), &trusted), ip("203.0.113.7"));
        // An untrusted peer's header is ignored.
        assert_eq!(client_address(ip("192.0.2.1"), ["203.0.113.7"].into_iter(), &trusted), ip("192.0.2.1"));
        // No header, or garbage: the proxy's own address.
        assert_eq!(client_address(proxy, std::iter::empty(), &trusted), proxy);
        assert_eq!(client_address(proxy, ["not-an-ip"].into_iter(), &trusted), proxy);
        assert_eq!(client_address(proxy, ["203.0.113.7, garbage"].into_iter(), &trusted), proxy);
    }
}
