//! The source-address key every per-address limit uses.
//!
//! One host holds one IPv4 address but usually a whole IPv6 /64 (SLAAC and
//! privacy addresses hand out any of 2^64), so counting IPv6 addresses one by
//! one would let one host look like millions. Every per-address rule (the
//! throttle, the per-address session cap, the registration quota) and the logs
//! key a source by [`AddressKey`]: the IPv4 address, or the IPv6 /64. An
//! IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack listener sees)
//! is its IPv4 address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A source address as the limits count it: IPv4 whole, IPv6 by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressKey {
    V4(Ipv4Addr),
    /// The first 64 bits of the address (the rest are zero).
    V6Net64(Ipv6Addr),
}

/// The prefix length an IPv6 source is counted by.
pub const IPV6_PREFIX_BITS: u32 = 64;

impl AddressKey {
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(v4),
                None => {
                    let bits = u128::from(v6) & (u128::MAX << (128 - IPV6_PREFIX_BITS));
                    AddressKey::V6Net64(Ipv6Addr::from(bits))
                }
            },
        }
    }
}

impl From<IpAddr> for AddressKey {
    fn from(ip: IpAddr) -> Self {
        AddressKey::of(ip)
    }
}

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressKey::V4(v4) => write!(f, "{v4}"),
            AddressKey::V6Net64(net) => write!(f, "{net}/{IPV6_PREFIX_BITS}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> AddressKey {
        AddressKey::of(s.parse().unwrap())
    }

    #[test]
    fn ipv4_is_counted_whole() {
        assert_eq!(key("127.0.0.1"), key("127.0.0.1"));
        assert_ne!(key("127.0.0.1"), key("127.0.0.2"));
        assert_eq!(key("127.0.0.2").to_string(), "127.0.0.2");
    }

    #[test]
    fn ipv6_is_counted_by_its_64() {
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2:ab::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv4_mapped_is_ipv4() {
        assert_eq!(key("::ffff:127.0.0.2"), key("127.0.0.2"));
    }
}
