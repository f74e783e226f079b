//! Subnets and address allocation (pure).
use std::{fmt, net::Ipv4Addr, str::FromStr};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// An address with a prefix length, e.g. the bridge's `172.17.0.1/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// `ADDRESS[/PREFIX]` (a missing prefix is /32), both parts checked for form
/// only; callers bound the prefix.
pub fn split_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = a
        .parse()
        .with_context(|| format!("invalid address {a:?} in {s:?}"))?;
    let prefix: u8 = p
        .parse()
        .with_context(|| format!("invalid prefix length {p:?} in {s:?}"))?;
    Ok((addr, prefix))
}

/// The netmask of a prefix length (0..=32) as a host-order integer.
pub fn prefix_mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

impl Cidr {
    pub fn mask(self) -> u32 {
        prefix_mask(self.prefix)
    }
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        ensure!(
            s.contains('/'),
            "invalid CIDR {s:?}: expected ADDRESS/PREFIX"
        );
        let (addr, prefix) = split_cidr(s)?;
        ensure!(
            (8..=30).contains(&prefix),
            "prefix length {prefix} in {s:?} out of range (8-30)"
        );
        Ok(Self { addr, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// Validates a bridge IP (`--bip`): a host address of its own subnet.
/// Refuses prefixes no container network may use: "this network" 0.0.0.0/8,
/// loopback 127.0.0.0/8, link-local 169.254.0.0/16, multicast 224.0.0.0/4
/// and the reserved 240.0.0.0/4.
pub fn check_usable(addr: Ipv4Addr, prefix: u8, what: &str) -> Result<()> {
    const RESERVED: [([u8; 4], u8, &str); 5] = [
        ([0, 0, 0, 0], 8, "\"this network\" 0.0.0.0/8"),
        ([127, 0, 0, 0], 8, "loopback 127.0.0.0/8"),
        ([169, 254, 0, 0], 16, "link-local 169.254.0.0/16"),
        ([224, 0, 0, 0], 4, "multicast 224.0.0.0/4"),
        ([240, 0, 0, 0], 4, "reserved 240.0.0.0/4"),
    ];
    let lo = u32::from(addr) & prefix_mask(prefix);
    let hi = lo | !prefix_mask(prefix);
    for (net, p, name) in RESERVED {
        let rlo = u32::from(Ipv4Addr::from(net));
        let rhi = rlo | !prefix_mask(p);
        if lo <= rhi && rlo <= hi {
            bail!("{what}: overlaps the {name} range, which no container network may use");
        }
    }
    Ok(())
}

pub fn validate_bip(bip: Cidr) -> Result<()> {
    check_usable(bip.addr, bip.prefix, &format!("bip {bip}"))?;
    if bip.addr == bip.network() || bip.addr == bip.broadcast() {
        bail!("bridge IP {bip} is the network or broadcast address of its subnet");
    }
    Ok(())
}

/// The lowest address of `subnet` that is not the network, the broadcast,
/// the gateway, or in `used`.
pub fn allocate(subnet: Cidr, used: &[Ipv4Addr]) -> Result<Ipv4Addr> {
    allocate_in(subnet, None, used)
}

/// Like [`allocate`], restricted to `range` (a `fixed-cidr` / `--ip-range`
/// inside the subnet) when given.
pub fn allocate_in(
    subnet: Cidr,
    range: Option<(Ipv4Addr, u8)>,
    used: &[Ipv4Addr],
) -> Result<Ipv4Addr> {
    let mut first = u32::from(subnet.network()) + 1;
    let mut last = u32::from(subnet.broadcast()) - 1;
    if let Some((addr, prefix)) = range {
        let r = Cidr { addr, prefix };
        first = first.max(u32::from(r.network()));
        last = last.min(u32::from(r.broadcast()));
    }
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| *ip != subnet.addr && !used.contains(ip))
        .with_context(|| {
            format!(
                "no free address left in {}/{}",
                subnet.network(),
                subnet.prefix
            )
        })
}

/// Docker's MAC for an address: 02:42 followed by the four octets.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// A MAC address `xx:xx:xx:xx:xx:xx` a container may use: unicast, not zero.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || anyhow::anyhow!("invalid MAC address: {s}");
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    ensure!(
        mac[0] & 1 == 0,
        "invalid MAC address: {s} is a multicast address"
    );
    ensure!(mac != [0; 6], "invalid MAC address: {s} is all zeros");
    Ok(mac)
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_math() {
        let c: Cidr = "172.17.0.1/16".parse().unwrap();
        assert_eq!(c.network(), Ipv4Addr::new(172, 17, 0, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(172, 17, 255, 255));
        assert!(c.contains(Ipv4Addr::new(172, 17, 3, 4)));
        assert!(!c.contains(Ipv4Addr::new(172, 18, 0, 1)));
        for bad in [
            "172.17.0.1",
            "172.17.0.1/33",
            "172.17.0/16",
            "x/16",
            "10.0.0.1/4",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(validate_bip("172.17.0.0/16".parse().unwrap()).is_err());
    }

    #[test]
    fn allocation_skips_gateway_and_used() {
        let c: Cidr = "10.1.0.1/29".parse().unwrap();
        assert_eq!(allocate(c, &[]).unwrap(), Ipv4Addr::new(10, 1, 0, 2));
        let used: Vec<Ipv4Addr> = (2..=5).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
        assert_eq!(allocate(c, &used).unwrap(), Ipv4Addr::new(10, 1, 0, 6));
        let full: Vec<Ipv4Addr> = (2..=6).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
        assert!(
            allocate(c, &full)
                .unwrap_err()
                .to_string()
                .contains("10.1.0.0/29")
        );
    }

    #[test]
    fn allocation_within_a_range() {
        let c: Cidr = "10.1.0.1/24".parse().unwrap();
        let r = Some((Ipv4Addr::new(10, 1, 0, 128), 25));
        assert_eq!(
            allocate_in(c, r, &[]).unwrap(),
            Ipv4Addr::new(10, 1, 0, 128)
        );
        assert_eq!(
            allocate_in(c, r, &[Ipv4Addr::new(10, 1, 0, 128)]).unwrap(),
            Ipv4Addr::new(10, 1, 0, 129)
        );
        let full: Vec<Ipv4Addr> = (128..=254).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
        assert!(allocate_in(c, r, &full).is_err());
    }

    #[test]
    fn docker_mac() {
        assert_eq!(
            mac_string(mac_for(Ipv4Addr::new(172, 17, 0, 2))),
            "02:42:ac:11:00:02"
        );
    }
}
