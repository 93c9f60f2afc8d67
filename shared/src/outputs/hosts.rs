//! Which output URLs may be fetched: the `OUTPUT_HOSTS` allow-list, https only unless an
//! entry names another scheme, and never a private, loopback or link-local address unless
//! that exact host is listed.
//!
//! The address check happens twice: on the URL (IP literals) and in the DNS resolver the
//! fetch client uses, so a listed name that resolves to a private address is refused too.

use reqwest::Url;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Replicate's file hosts, the default allow-list.
pub const DEFAULT_OUTPUT_HOSTS: &str = "replicate.delivery,*.replicate.delivery";

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this host: an explicit listing, which may point at a private address.
    Exact(String),
    /// Any subdomain of this suffix (`*.replicate.delivery`); never a private address.
    Subdomain(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    scheme: String,
    host: HostPattern,
    /// `None`: the scheme's default port only.
    port: Option<u16>,
}

/// The parsed allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    rules: Vec<Rule>,
}

/// Why an `OUTPUT_HOSTS` entry could not be used. Names the entry by its position (from 1),
/// never by its text: a mistyped entry can hold credentials (`https://user:key@host`).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("entry {0} is not a host, *.suffix or scheme://host[:port]")]
pub struct BadHostEntry(usize);

/// Why a URL may not be fetched.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// Not a URL with a host.
    #[error("not a fetchable URL")]
    NotUrl,
    /// The scheme, host or port is not on the list.
    #[error("host {0} is not in OUTPUT_HOSTS")]
    NotListed(String),
    /// The host is, or resolves to, a private address and was not listed exactly.
    #[error("host {0} is a private address")]
    Private(String),
}

impl HostPolicy {
    /// Parses a comma- or space-separated list.
    pub fn parse(list: &str) -> Result<HostPolicy, BadHostEntry> {
        let rules = list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, entry)| parse_rule(entry).ok_or(BadHostEntry(i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            return Err(BadHostEntry(0));
        }
        Ok(HostPolicy { rules })
    }

    /// The rule that allows `url`, if any.
    fn rule_for(&self, url: &Url) -> Option<&Rule> {
        let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
        let port = url.port_or_known_default();
        self.rules.iter().find(|rule| {
            rule.scheme == url.scheme()
                && match rule.port {
                    Some(p) => port == Some(p),
                    None => url.port().is_none(),
                }
                && match &rule.host {
                    HostPattern::Exact(h) => *h == host,
                    // `suffix` keeps its leading dot, so `evilreplicate.delivery` never
                    // matches `*.replicate.delivery`.
                    HostPattern::Subdomain(suffix) => host
                        .strip_suffix(suffix.as_str())
                        .is_some_and(|head| !head.is_empty()),
                }
        })
    }

    /// Checks a URL before fetching it or following a redirect to it.
    pub fn check(&self, url: &Url) -> Result<(), Refusal> {
        let host = url.host_str().ok_or(Refusal::NotUrl)?.to_owned();
        let rule = self
            .rule_for(url)
            .ok_or_else(|| Refusal::NotListed(host.clone()))?;
        let listed_exactly = matches!(rule.host, HostPattern::Exact(_));
        if ip_literal(url).is_some_and(is_private) && !listed_exactly {
            return Err(Refusal::Private(host));
        }
        Ok(())
    }

    /// Whether this host name was listed exactly (then its private addresses are allowed).
    pub fn listed_exactly(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.rules
            .iter()
            .any(|r| matches!(&r.host, HostPattern::Exact(h) if *h == host))
    }
}

fn parse_rule(entry: &str) -> Option<Rule> {
    let (scheme, rest) = match entry.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("https".to_owned(), entry),
    };
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let rest = rest.trim_end_matches('/');
    if let Some(suffix) = rest.strip_prefix("*.") {
        if suffix.is_empty() || suffix.contains([':', '/', '*', '@']) {
            return None;
        }
        return Some(Rule {
            scheme,
            host: HostPattern::Subdomain(format!(".{}", suffix.to_ascii_lowercase())),
            port: None,
        });
    }
    // Let the URL parser split host and port (and handle [v6] literals).
    let url = Url::parse(&format!("{scheme}://{rest}")).ok()?;
    let host = url.host_str().filter(|h| !h.is_empty())?;
    // A path, a query or credentials mean the entry is not what it should be.
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return None;
    }
    url.password().is_none().then_some(())?;
    Some(Rule {
        scheme,
        host: HostPattern::Exact(host.to_ascii_lowercase()),
        port: url.port(),
    })
}

fn ip_literal(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Loopback, private, link-local, shared (CGNAT), IETF protocol assignments, benchmarking,
/// reserved, unspecified, broadcast, multicast, and the IPv6 equivalents: addresses a
/// fetch must never reach unless explicitly listed. The IPv6 ranges that embed an IPv4
/// address in a way a gateway or an old stack may route (IPv4-compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are refused whole; an IPv4-mapped address is
/// judged by the IPv4 address it maps.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private_v4(v4),
            None => is_private_v6(v6),
        },
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || (a == 100 && (64..128).contains(&b))
        || a == 0
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b & 0xfe) == 18)
        || a >= 240
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || s[..6] == [0; 6]
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || s[0] == 0x2002
}

/// A DNS resolver for the fetch client that drops private addresses of hosts not listed
/// exactly, so a permitted name cannot lead the fetch into a private network.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<HostPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<HostPolicy>) -> GuardedResolver {
        GuardedResolver { policy }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: hyper014::client::connect::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let allow_private = self.policy.listed_exactly(&host);
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| allow_private || !is_private(addr.ip()))
                .collect();
            if found.is_empty() {
                let refusal: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(Refusal::Private(host));
                return Err(refusal);
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &str, url: &str) -> Result<(), Refusal> {
        HostPolicy::parse(list)
            .unwrap()
            .check(&Url::parse(url).unwrap())
    }

    #[test]
    fn default_list_allows_replicate_over_https_only() {
        let d = DEFAULT_OUTPUT_HOSTS;
        assert_eq!(allowed(d, "https://replicate.delivery/xezq/a.png"), Ok(()));
        assert_eq!(allowed(d, "https://pbxt.replicate.delivery/a.png"), Ok(()));
        assert!(allowed(d, "http://replicate.delivery/a.png").is_err());
        assert!(allowed(d, "https://replicate.delivery:8443/a.png").is_err());
        assert!(allowed(d, "https://evilreplicate.delivery/a.png").is_err());
        assert!(allowed(d, "https://replicate.delivery.evil.com/a.png").is_err());
        assert!(allowed(d, "https://example.com/a.png").is_err());
    }

    #[test]
    fn explicit_entries_with_scheme_and_port() {
        let list = "http://127.0.0.1:9000";
        assert_eq!(allowed(list, "http://127.0.0.1:9000/f/a.png"), Ok(()));
        assert!(allowed(list, "http://127.0.0.1:9001/f/a.png").is_err());
        assert!(allowed(list, "https://127.0.0.1:9000/f/a.png").is_err());
    }

    #[test]
    fn private_literals_need_an_exact_listing() {
        assert_eq!(
            allowed("*.internal", "https://10.0.0.1/a"),
            Err(Refusal::NotListed("10.0.0.1".into()))
        );
        assert_eq!(allowed("10.0.0.1", "https://10.0.0.1/a"), Ok(()));
        assert_private(
            &[
                "127.0.0.1",
                "169.254.169.254",
                "192.168.1.1",
                "100.64.0.1",
                "0.0.0.0",
                "::1",
                "fe80::1",
                "fd00::1",
                "::ffff:127.0.0.1",
            ],
            true,
        );
        assert_private(&["34.120.1.1"], false);
    }

    /// Checks that every address of `ips` is private, or that none is.
    fn assert_private(ips: &[&str], private: bool) {
        for ip in ips {
            assert_eq!(is_private(ip.parse().unwrap()), private, "{ip}");
        }
    }

    #[test]
    fn reserved_ranges_and_embedded_ipv4_forms_are_private() {
        assert_private(
            &[
                "192.0.0.8",
                "198.18.0.1",
                "198.19.255.254",
                "240.0.0.1",
                "255.255.255.254",
                // IPv6 ranges that embed IPv4 addresses, and site-local
                "::127.0.0.1",
                "::8.8.8.8",
                "64:ff9b::a9fe:a9fe",
                "64:ff9b::10.0.0.1",
                "2002:a9fe:a9fe::1",
                "2002:2278:101::1",
                "fec0::1",
                "::ffff:192.0.0.1",
            ],
            true,
        );
        assert_private(
            &["198.20.0.1", "192.0.1.1", "::ffff:34.120.1.1", "2600::1"],
            false,
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        for list in [
            "",
            "ftp://x.com",
            "*.",
            "https://x.com/path",
            "*.a:80",
            "https://user:secret@x.com",
        ] {
            assert!(HostPolicy::parse(list).is_err(), "{list}");
        }
    }
}
