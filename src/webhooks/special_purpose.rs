//! The IANA special-purpose address registries, as tables: where a webhook may not go.
//!
//! - IPv4: <https://www.iana.org/assignments/iana-ipv4-special-registry/> (plus multicast,
//!   RFC 5771, which has its own registry).
//! - IPv6: <https://www.iana.org/assignments/iana-ipv6-special-registry/> (plus multicast,
//!   RFC 4291, the deprecated site-local `fec0::/10`, RFC 3879, and the IPv4-compatible `::/96`
//!   and IPv4-translated `::ffff:0:0:0/96` forms, RFC 4291 §2.5.5.1 and RFC 2765 §2.1).
//!
//! Each entry says whether the registry calls its addresses globally reachable. An address is
//! judged by the most specific entry that holds it: none, or a globally reachable one, is
//! public. An IPv6 entry that embeds an IPv4 address (mapped, compatible, translated, NAT64,
//! 6to4, Teredo) sends the embedded address(es) through the IPv4 table instead, so that
//! `[::ffff:127.0.0.1]`, `[::127.0.0.1]`, `[64:ff9b::a00:1]` or `[2002:7f00:1::]` are what
//! they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

/// What the registry says of an entry's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Globally reachable (`Globally Reachable: True`).
    Global,
    /// Not globally reachable (`False`, or `N/A` for reserved or deprecated space).
    Local,
    /// An IPv6 form that carries IPv4 addresses: as public as what it carries.
    Embeds(Embedded),
}

/// Where an IPv6 form carries its IPv4 address(es).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedded {
    /// The last 32 bits (mapped, compatible, translated, NAT64 `64:ff9b::/96`).
    Last32,
    /// Bits 16 to 47 (6to4, `2002::/16`, RFC 3056).
    SixToFour,
    /// Teredo (`2001::/32`, RFC 4380): the server in bits 32 to 63, the client in the last 32
    /// bits, inverted (both, and the last 32 bits as they stand, are checked).
    Teredo,
}

/// One registry entry.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub prefix: &'static str,
    pub name: &'static str,
    pub rfc: &'static str,
    pub reach: Reach,
}

const fn e(prefix: &'static str, name: &'static str, rfc: &'static str, reach: Reach) -> Entry {
    Entry {
        prefix,
        name,
        rfc,
        reach,
    }
}

use Reach::{Global, Local};

/// The IPv4 special-purpose registry.
pub const IPV4: &[Entry] = &[
    e("0.0.0.0/8", "This network", "RFC 791 §3.2", Local),
    e(
        "0.0.0.0/32",
        "This host on this network",
        "RFC 1122 §3.2.1.3",
        Local,
    ),
    e("10.0.0.0/8", "Private-Use", "RFC 1918", Local),
    e("100.64.0.0/10", "Shared Address Space", "RFC 6598", Local),
    e("127.0.0.0/8", "Loopback", "RFC 1122 §3.2.1.3", Local),
    e("169.254.0.0/16", "Link Local", "RFC 3927", Local),
    e("172.16.0.0/12", "Private-Use", "RFC 1918", Local),
    e(
        "192.0.0.0/24",
        "IETF Protocol Assignments",
        "RFC 6890 §2.1",
        Local,
    ),
    e(
        "192.0.0.0/29",
        "IPv4 Service Continuity Prefix",
        "RFC 7335",
        Local,
    ),
    e("192.0.0.8/32", "IPv4 dummy address", "RFC 7600", Local),
    e(
        "192.0.0.9/32",
        "Port Control Protocol Anycast",
        "RFC 7723",
        Global,
    ),
    e(
        "192.0.0.10/32",
        "Traversal Using Relays around NAT Anycast",
        "RFC 8155",
        Global,
    ),
    e(
        "192.0.0.170/32",
        "NAT64/DNS64 Discovery",
        "RFC 8880, RFC 7050 §2.2",
        Local,
    ),
    e(
        "192.0.0.171/32",
        "NAT64/DNS64 Discovery",
        "RFC 8880, RFC 7050 §2.2",
        Local,
    ),
    e(
        "192.0.2.0/24",
        "Documentation (TEST-NET-1)",
        "RFC 5737",
        Local,
    ),
    e("192.31.196.0/24", "AS112-v4", "RFC 7535", Global),
    e("192.52.193.0/24", "AMT", "RFC 7450", Global),
    e(
        "192.88.99.0/24",
        "Deprecated (6to4 Relay Anycast)",
        "RFC 7526",
        Local,
    ),
    e("192.168.0.0/16", "Private-Use", "RFC 1918", Local),
    e(
        "192.175.48.0/24",
        "Direct Delegation AS112 Service",
        "RFC 7534",
        Global,
    ),
    e("198.18.0.0/15", "Benchmarking", "RFC 2544", Local),
    e(
        "198.51.100.0/24",
        "Documentation (TEST-NET-2)",
        "RFC 5737",
        Local,
    ),
    e(
        "203.0.113.0/24",
        "Documentation (TEST-NET-3)",
        "RFC 5737",
        Local,
    ),
    e("224.0.0.0/4", "Multicast", "RFC 5771", Local),
    e("240.0.0.0/4", "Reserved", "RFC 1112 §4", Local),
    e(
        "255.255.255.255/32",
        "Limited Broadcast",
        "RFC 8190, RFC 919 §7",
        Local,
    ),
];

/// The IPv6 special-purpose registry.
pub const IPV6: &[Entry] = &[
    e("::/128", "Unspecified Address", "RFC 4291", Local),
    e("::1/128", "Loopback Address", "RFC 4291", Local),
    e(
        "::/96",
        "IPv4-compatible Address (deprecated)",
        "RFC 4291 §2.5.5.1",
        Reach::Embeds(Embedded::Last32),
    ),
    e(
        "::ffff:0:0/96",
        "IPv4-mapped Address",
        "RFC 4291",
        Reach::Embeds(Embedded::Last32),
    ),
    e(
        "::ffff:0:0:0/96",
        "IPv4-translated Address",
        "RFC 2765 §2.1",
        Reach::Embeds(Embedded::Last32),
    ),
    e(
        "64:ff9b::/96",
        "IPv4-IPv6 Translat.",
        "RFC 6052",
        Reach::Embeds(Embedded::Last32),
    ),
    e(
        "64:ff9b:1::/48",
        "IPv4-IPv6 Translat. (local use)",
        "RFC 8215",
        Local,
    ),
    e("100::/64", "Discard-Only Address Block", "RFC 6666", Local),
    e("100:0:0:1::/64", "Dummy IPv6 Prefix", "RFC 9780", Local),
    e("2001::/23", "IETF Protocol Assignments", "RFC 2928", Local),
    e(
        "2001::/32",
        "TEREDO",
        "RFC 4380, RFC 8190",
        Reach::Embeds(Embedded::Teredo),
    ),
    e(
        "2001:1::1/128",
        "Port Control Protocol Anycast",
        "RFC 7723",
        Global,
    ),
    e(
        "2001:1::2/128",
        "Traversal Using Relays around NAT Anycast",
        "RFC 8155",
        Global,
    ),
    e(
        "2001:1::3/128",
        "DNS-SD Service Registration Protocol Anycast",
        "RFC 9665",
        Global,
    ),
    e(
        "2001:2::/48",
        "Benchmarking",
        "RFC 5180, RFC Errata 1752",
        Local,
    ),
    e("2001:3::/32", "AMT", "RFC 7450", Global),
    e("2001:4:112::/48", "AS112-v6", "RFC 7535", Global),
    e(
        "2001:10::/28",
        "Deprecated (previously ORCHID)",
        "RFC 4843",
        Local,
    ),
    e("2001:20::/28", "ORCHIDv2", "RFC 7343", Global),
    e(
        "2001:30::/28",
        "Drone Remote ID Protocol Entity Tags (DETs) Prefix",
        "RFC 9374",
        Global,
    ),
    e("2001:db8::/32", "Documentation", "RFC 3849", Local),
    e(
        "2002::/16",
        "6to4",
        "RFC 3056",
        Reach::Embeds(Embedded::SixToFour),
    ),
    e(
        "2620:4f:8000::/48",
        "Direct Delegation AS112 Service",
        "RFC 7534",
        Global,
    ),
    e("3fff::/20", "Documentation", "RFC 9637", Local),
    e(
        "5f00::/16",
        "Segment Routing (SRv6) SIDs",
        "RFC 9602",
        Local,
    ),
    e("fc00::/7", "Unique-Local", "RFC 4193, RFC 8190", Local),
    e("fe80::/10", "Link-Local Unicast", "RFC 4291", Local),
    e("fec0::/10", "Site-Local (deprecated)", "RFC 3879", Local),
    e("ff00::/8", "Multicast", "RFC 4291", Local),
];

struct Parsed<T> {
    net: T,
    len: u32,
    entry: Entry,
}

fn parse_all<T: Copy>(table: &[Entry], conv: impl Fn(IpAddr) -> Option<T>) -> Vec<Parsed<T>> {
    table
        .iter()
        .map(|entry| {
            let (net, len) = entry.prefix.split_once('/').expect("a prefix");
            Parsed {
                net: conv(net.parse().expect("an address")).expect("the table's family"),
                len: len.parse().expect("a length"),
                entry: *entry,
            }
        })
        .collect()
}

static V4: LazyLock<Vec<Parsed<u32>>> = LazyLock::new(|| {
    parse_all(IPV4, |ip| match ip {
        IpAddr::V4(a) => Some(u32::from(a)),
        IpAddr::V6(_) => None,
    })
});
static V6: LazyLock<Vec<Parsed<u128>>> = LazyLock::new(|| {
    parse_all(IPV6, |ip| match ip {
        IpAddr::V6(a) => Some(u128::from(a)),
        IpAddr::V4(_) => None,
    })
});

fn mask<const BITS: u32>(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        (u128::MAX << (BITS - len)) & (u128::MAX >> (128 - BITS))
    }
}

/// The most specific IPv4 entry holding `ip`.
pub fn entry_v4(ip: Ipv4Addr) -> Option<&'static Entry> {
    let a = u128::from(u32::from(ip));
    V4.iter()
        .filter(|p| a & mask::<32>(p.len) == u128::from(p.net))
        .max_by_key(|p| p.len)
        .map(|p| &p.entry)
}

/// The most specific IPv6 entry holding `ip`.
pub fn entry_v6(ip: Ipv6Addr) -> Option<&'static Entry> {
    let a = u128::from(ip);
    V6.iter()
        .filter(|p| a & mask::<128>(p.len) == p.net)
        .max_by_key(|p| p.len)
        .map(|p| &p.entry)
}

/// The IPv4 addresses an IPv6 form carries.
fn embedded(ip: Ipv6Addr, how: Embedded) -> Vec<Ipv4Addr> {
    let a = u128::from(ip);
    let last = a as u32;
    match how {
        Embedded::Last32 => vec![Ipv4Addr::from(last)],
        Embedded::SixToFour => vec![Ipv4Addr::from((a >> 80) as u32)],
        Embedded::Teredo => vec![
            Ipv4Addr::from((a >> 64) as u32),
            Ipv4Addr::from(!last),
            Ipv4Addr::from(last),
        ],
    }
}

/// Whether a webhook may reach `ip` when private networks are not allowed: no entry of the
/// registries holds it, or its most specific one is globally reachable; IPv4 carried in IPv6
/// is judged by the IPv4 table.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => entry_v4(v4).is_none_or(|e| e.reach == Global),
        IpAddr::V6(v6) => match entry_v6(v6).map(|e| e.reach) {
            None | Some(Global) => true,
            Some(Local) => false,
            Some(Reach::Embeds(how)) => embedded(v6, how)
                .into_iter()
                .all(|v4| is_global(IpAddr::V4(v4))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_entry_parses_and_holds_its_own_prefix() {
        for (table, v6) in [(IPV4, false), (IPV6, true)] {
            for e in table {
                let (net, len) = e.prefix.split_once('/').unwrap();
                let net: IpAddr = net.parse().unwrap();
                assert_eq!(net.is_ipv6(), v6, "{}", e.prefix);
                let len: u32 = len.parse().unwrap();
                assert!(len <= if v6 { 128 } else { 32 }, "{}", e.prefix);
                let found = match net {
                    IpAddr::V4(a) => entry_v4(a),
                    IpAddr::V6(a) => entry_v6(a),
                }
                .unwrap();
                // Its own network address is held by it or by a more specific entry.
                let found_len: u32 = found.prefix.split_once('/').unwrap().1.parse().unwrap();
                assert!(found_len >= len, "{} found {}", e.prefix, found.prefix);
                assert!(!e.rfc.is_empty() && !e.name.is_empty());
            }
        }
    }

    #[test]
    fn the_most_specific_entry_decides() {
        assert_eq!(
            entry_v4("192.0.0.9".parse().unwrap()).unwrap().reach,
            Global
        );
        assert_eq!(
            entry_v4("192.0.0.1".parse().unwrap()).unwrap().name,
            "IPv4 Service Continuity Prefix"
        );
        assert_eq!(
            entry_v4("192.0.0.77".parse().unwrap()).unwrap().name,
            "IETF Protocol Assignments"
        );
        assert_eq!(
            entry_v6("2001:db8::1".parse().unwrap()).unwrap().name,
            "Documentation"
        );
        assert_eq!(entry_v6("2001::1".parse().unwrap()).unwrap().name, "TEREDO");
        assert_eq!(
            entry_v6("2001:1::1".parse().unwrap()).unwrap().reach,
            Global
        );
        assert!(entry_v4("8.8.8.8".parse().unwrap()).is_none());
    }

    #[test]
    fn non_global_addresses_of_both_families_and_every_embedding() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "64:ff9b:1::1",
            // IPv4 carried in IPv6.
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0:7f00:1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2001::7f00:1",
            "2001:0:a00:1::1",
        ] {
            assert!(!is_global(ip(s)), "{s}");
        }
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "192.0.0.9",
            "192.31.196.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:1::1",
            "2001:4:112::1",
        ] {
            assert!(is_global(ip(s)), "{s}");
        }
        // Teredo: a public server and a public (inverted) client pass.
        let server = u128::from(u32::from(Ipv4Addr::new(8, 8, 8, 8))) << 64;
        let client = u128::from(!u32::from(Ipv4Addr::new(1, 1, 1, 1)));
        let teredo = Ipv6Addr::from((0x2001u128 << 112) | server | client);
        // Its raw last 32 bits (254.254.254.254) are reserved: refused all the same.
        assert!(!is_global(IpAddr::V6(teredo)));
    }
}
