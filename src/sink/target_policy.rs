//! The outbound target policy: which addresses a delivery may connect to.
//!
//! A webhook URL or provider base URL is chosen by whoever registers the customer, and an error
//! answer comes back through `last_error`. Without a policy that is a server-side request forgery
//! with a readable answer: a URL pointing at 127.0.0.1, the cloud metadata service
//! (169.254.169.254) or a private network reaches services that trust the network. So every
//! address a sink connects to is checked here, after name resolution and for every connection
//! (DNS rebinding cannot get round a check made on the resolved address), and refused when it
//! belongs to a non-public class, unless the operator's allow-list (`--allow-target-cidr`) holds
//! it. Redirects are never followed, so a public target cannot bounce a request inward either.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// A network given as `address/prefix` (a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a CIDR such as 10.0.0.0/8 or fd00::/8")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || CidrError(text.to_owned());
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| error())?;
        let max = max_prefix(network);
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| error())?,
            None => max,
        };
        if prefix > max {
            return Err(error());
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// True when `ip` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// True when the first `prefix` of `bits` bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (a >> shift) == (b >> shift)
}

/// A kind of address no delivery may reach unless it is allow-listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1: this host.
    Loopback,
    /// 169.254.0.0/16 (cloud metadata services live here), fe80::/10.
    LinkLocal,
    /// RFC 1918: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16.
    Private,
    /// RFC 6598 shared address space (carrier-grade NAT): 100.64.0.0/10.
    SharedCgnat,
    /// IPv6 unique local addresses, fc00::/7.
    UniqueLocal,
    /// 224.0.0.0/4, ff00::/8, and the IPv4 broadcast address.
    Multicast,
    /// 0.0.0.0/8 and ::, which reach this host on most systems.
    Unspecified,
}

impl AddressClass {
    /// The class's name, as errors and `last_error` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Private => "private (RFC 1918)",
            AddressClass::SharedCgnat => "shared CGNAT (RFC 6598)",
            AddressClass::UniqueLocal => "unique local (fc00::/7)",
            AddressClass::Multicast => "multicast",
            AddressClass::Unspecified => "unspecified",
        }
    }

    /// The class `ip` belongs to, or `None` for a public address.
    pub fn of(ip: IpAddr) -> Option<Self> {
        match ip.to_canonical() {
            IpAddr::V4(ip) => Self::of_v4(ip),
            IpAddr::V6(ip) => Self::of_v6(ip),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Option<Self> {
        let [a, b, ..] = ip.octets();
        Some(if ip.is_loopback() {
            AddressClass::Loopback
        } else if ip.is_link_local() {
            AddressClass::LinkLocal
        } else if ip.is_private() {
            AddressClass::Private
        } else if a == 100 && (64..128).contains(&b) {
            AddressClass::SharedCgnat
        } else if ip.is_multicast() || ip.is_broadcast() {
            AddressClass::Multicast
        } else if a == 0 {
            AddressClass::Unspecified
        } else {
            return None;
        })
    }

    fn of_v6(ip: Ipv6Addr) -> Option<Self> {
        let first = ip.segments()[0];
        Some(if ip.is_loopback() {
            AddressClass::Loopback
        } else if ip.is_unspecified() {
            AddressClass::Unspecified
        } else if first & 0xffc0 == 0xfe80 {
            AddressClass::LinkLocal
        } else if first & 0xfe00 == 0xfc00 {
            AddressClass::UniqueLocal
        } else if ip.is_multicast() {
            AddressClass::Multicast
        } else {
            return None;
        })
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A target the policy refused: the host as given, the address it came to, and its class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "target {host} is refused: {ip} is a {class} address (open it with --allow-target-cidr if it is meant)"
)]
pub struct Refused {
    pub host: String,
    pub ip: IpAddr,
    pub class: AddressClass,
}

/// Which addresses deliveries may reach: every public address, plus what the allow-list opens.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allow: Vec<Cidr>,
}

impl TargetPolicy {
    /// A policy refusing every non-public address except those in `allow`.
    pub fn new(allow: Vec<Cidr>) -> Self {
        Self { allow }
    }

    /// Refuses `ip` (reached through `host`) when it is non-public and not allow-listed.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        if self.allow.iter().any(|cidr| cidr.contains(ip)) {
            return Ok(());
        }
        match AddressClass::of(ip) {
            Some(class) => Err(Refused {
                host: host.to_owned(),
                ip,
                class,
            }),
            None => Ok(()),
        }
    }

    /// Checks a URL whose host is an IP address. Names pass here: their addresses are checked
    /// when they are resolved, at every connection.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        self.check_host(url.host_str().unwrap_or_default())
    }

    /// Checks a URL's host if it is an IP address; names pass (see [`TargetPolicy::check_url`]).
    pub fn check_host(&self, host: &str) -> Result<(), Refused> {
        // IPv6 hosts come in brackets.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        match literal.parse::<IpAddr>() {
            Ok(ip) => self.check(host, ip),
            Err(_) => Ok(()),
        }
    }

    /// Resolves `host` and keeps the addresses the policy allows. Refused when nothing is left
    /// (naming the first refused address), or a resolver error.
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        let mut refused = None;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|addr| match self.check(host, addr.ip()) {
                Ok(()) => true,
                Err(err) => {
                    refused.get_or_insert(err);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some(refused)) => Err(Box::new(refused)),
            _ => Ok(allowed),
        }
    }
}

/// The HTTP clients' resolver: the system's resolver, filtered by the policy. reqwest calls it
/// for every new connection to a named host, so the check holds whatever the name resolves to
/// at that moment.
#[derive(Debug, Clone)]
pub(crate) struct PolicyResolver(pub(crate) Arc<TargetPolicy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let addrs = policy.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The policy's refusal somewhere in an error's chain of sources, if that is why it failed.
pub(crate) fn refusal_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Some(refused);
        }
        cause = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<AddressClass> {
        AddressClass::of(ip.parse().unwrap())
    }

    #[test]
    fn every_class_is_recognised() {
        use AddressClass::*;
        for (ip, expected) in [
            ("127.0.0.1", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("169.254.169.254", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            ("fd00::1", Some(UniqueLocal)),
            ("fc00::1", Some(UniqueLocal)),
            ("224.0.0.1", Some(Multicast)),
            ("255.255.255.255", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("0.0.0.0", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("8.8.8.8", None),
            ("100.128.0.1", None),
            ("172.32.0.1", None),
            ("2001:4860:4860::8888", None),
        ] {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(net.contains("127.9.9.9".parse().unwrap()));
        assert!(net.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!net.contains("128.0.0.1".parse().unwrap()));
        let host: Cidr = "fd00::1".parse().unwrap();
        assert_eq!(host.to_string(), "fd00::1/128");
        assert!(host.contains("fd00::1".parse().unwrap()));
        assert!(!host.contains("fd00::2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("10.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_list_opens_only_its_networks() {
        let policy = TargetPolicy::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(policy.check("h", "10.2.3.4".parse().unwrap()).is_ok());
        assert!(policy.check("h", "93.184.216.34".parse().unwrap()).is_ok());
        let refused = policy
            .check("h", "192.168.0.1".parse().unwrap())
            .unwrap_err();
        assert_eq!(refused.class, AddressClass::Private);
        let url = reqwest::Url::parse("http://[::1]:80/x").unwrap();
        assert_eq!(
            policy.check_url(&url).unwrap_err().class,
            AddressClass::Loopback
        );
        let url = reqwest::Url::parse("http://localhost/").unwrap();
        assert!(policy.check_url(&url).is_ok());
    }

    #[tokio::test]
    async fn resolution_drops_refused_addresses() {
        let open = TargetPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let addrs = open.resolve("localhost", 80).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()));
        let closed = TargetPolicy::default();
        let err = closed.resolve("localhost", 80).await.unwrap_err();
        assert_eq!(refusal_in(&*err).unwrap().class, AddressClass::Loopback);
    }
}
