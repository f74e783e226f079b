//! Published ports of a container: planning host ports, the PORTS map entries, their conntrack.
use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
};

use anyhow::{Context, Result, bail};
use cnet_common::{
    addr_key,
    maps::{self, CtEntry, CtKey, PortKey, PortValue},
    port_key,
};

use crate::{
    loader,
    portspec::{self, PortMapping, Proto, PublishSpec},
    state::{Paths, State},
};

use super::*;

pub(crate) fn dynamic_range() -> std::ops::RangeInclusive<u16> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .filter_map(|s| s.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(a), Some(b)) if a <= b => a..=b,
        _ => 32768..=60999,
    }
}

/// Whether nothing on the host holds `ip:port/proto` (a bind test in the host namespace).
pub fn host_port_free(ip: Option<Ipv4Addr>, port: u16, proto: Proto) -> Result<bool> {
    let addr = SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    let r = match proto {
        Proto::Tcp => TcpListener::bind(addr).map(|_| ()),
        Proto::Udp => UdpSocket::bind(addr).map(|_| ()),
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            bail!("host IP {} is not an address of this host", addr.ip())
        }
        Err(e) => Err(e).with_context(|| format!("checking host port {addr}/{proto}")),
    }
}

/// Container ports a container exposes.
pub type Exposed = Vec<(u16, Proto)>;

/// Decides the port mappings for a new container, checking every host port
/// against other containers' mappings and the host's listening sockets.
pub fn plan_ports(state: &State, opts: &RunOptions) -> Result<(Vec<PortMapping>, Exposed)> {
    let mut specs: Vec<PublishSpec> = opts
        .publish
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_>>()?;
    let mut exposed: Vec<(u16, Proto)> = Vec::new();
    for e in &opts.expose {
        exposed.extend(portspec::parse_expose(e)?);
    }
    for s in &specs {
        exposed.extend(s.container.ports().map(|p| (p, s.proto)));
    }
    exposed.sort();
    exposed.dedup();
    if opts.publish_all {
        // Container ports -p already covers, as a set: `--expose 1-65535 -P`
        // stays linear.
        let covered: std::collections::HashSet<(u16, Proto)> = specs
            .iter()
            .flat_map(|s| s.container.ports().map(move |c| (c, s.proto)))
            .collect();
        for (p, proto) in &exposed {
            if !covered.contains(&(*p, *proto)) {
                specs.push(PublishSpec {
                    host_ip: None,
                    host: None,
                    container: portspec::Range { start: *p, end: *p },
                    proto: *proto,
                });
            }
        }
    }
    // Host ports in use, one pass over every mapping (linear at 100,000
    // ports): bit 0 on every address, bit 1 on some address (those few are
    // then compared one by one).
    let slot = |port: u16, proto: Proto| usize::from(port) * 2 + usize::from(proto == Proto::Udp);
    let mut used = vec![0u8; 65536 * 2];
    let all = || state.containers.values().flat_map(|c| c.ports.iter());
    for m in all() {
        used[slot(m.host_port, m.proto)] |= if m.host_ip.is_none() { 1 } else { 2 };
    }
    let mut free = |ip: Option<Ipv4Addr>, port: u16, proto: Proto| -> Result<bool> {
        let clash = match used[slot(port, proto)] {
            0 => false,
            u if u & 1 != 0 || ip.is_none() => true,
            _ => all().any(|m| m.host_port == port && m.proto == proto && m.host_ip == ip),
        };
        Ok(!clash && host_port_free(ip, port, proto)?)
    };
    let mappings = portspec::resolve(&specs, dynamic_range(), &mut free)?;
    Ok((mappings, exposed))
}

/// The PORTS map entry of mapping `m` to the container at `ip`.
pub fn port_entry(m: &PortMapping, ip: Ipv4Addr) -> (PortKey, PortValue) {
    let host = m.host_ip.map(|a| addr_key(a.octets())).unwrap_or(0);
    (
        PortKey::new(host, port_key(m.host_port), m.proto.number()),
        PortValue::new(addr_key(ip.octets()), port_key(m.container_port)),
    )
}

/// Adds `m` for the container at `ip` to the PORTS map.
pub fn publish(paths: &Paths, m: &PortMapping, ip: Ipv4Addr) -> Result<()> {
    let (k, v) = port_entry(m, ip);
    crate::observe::counters::track_port(paths, m, ip)?;
    let r = loader::hash::<PortKey, PortValue>(paths, maps::PORTS).and_then(|mut ports| {
        ports
            .insert(k, v, 0)
            .with_context(|| format!("publishing {m}"))
    });
    if r.is_err() {
        let _ = crate::observe::counters::untrack_port(paths, m, ip);
    }
    r
}

/// Removes `m` from the PORTS map only while it still points at `ip`.
pub fn unpublish_if(paths: &Paths, m: &PortMapping, ip: Ipv4Addr) -> Result<()> {
    let (k, v) = port_entry(m, ip);
    let ports = loader::hash::<PortKey, PortValue>(paths, maps::PORTS)?;
    match ports.get(&k, 0) {
        Ok(cur) if cur == v => unpublish(paths, m, ip),
        _ => Ok(()),
    }
}

pub fn unpublish(paths: &Paths, m: &PortMapping, ip: Ipv4Addr) -> Result<()> {
    let (k, _) = port_entry(m, ip);
    loader::removed(loader::hash::<PortKey, PortValue>(paths, maps::PORTS)?.remove(&k))
        .with_context(|| format!("unpublishing {m}"))?;
    crate::observe::counters::untrack_port(paths, m, ip)
}

/// Deletes the conntrack entries of flows to or from `ip:port` (one mapping).
pub fn purge_port_conntrack(paths: &Paths, ip: Ipv4Addr, port: u16, proto: u8) -> Result<usize> {
    let (a, p) = (addr_key(ip.octets()), port_key(port));
    let mut ct = loader::hash::<CtKey, CtEntry>(paths, maps::CONNTRACK)?;
    let doomed: Vec<CtKey> = ct
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(k, e)| {
            k.proto == proto
                && ((k.saddr == a && k.sport == p)
                    || (k.daddr == a && k.dport == p)
                    || (e.saddr == a && e.sport == p)
                    || (e.daddr == a && e.dport == p))
        })
        .map(|(k, _)| k)
        .collect();
    for k in &doomed {
        let _ = ct.remove(k);
    }
    Ok(doomed.len())
}
