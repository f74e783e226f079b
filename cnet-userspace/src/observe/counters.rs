//! The per-container and per-port counter maps: their entries follow the
//! containers and mappings (made with them, removed with them), and reading
//! them sums the per-CPU values and names what they count.
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuHashMap, PerCpuValues};
use cnet_common::{
    addr_key, addr_octets,
    maps::{
        self, CONNTRACK_MAX, CT_SNAT, CtEntry, CtKey, DropKey, EpStats, MASQ_PORT_HI, MASQ_PORT_LO,
        PortKey, PortStats,
    },
};
use serde::Serialize;

use crate::{
    container::port_entry,
    loader,
    portspec::PortMapping,
    state::{Paths, State},
};

/// `BPF_NOEXIST`: insert only if the key is not there yet.
const BPF_NOEXIST: u64 = 1;

fn percpu<K: aya::Pod, V: aya::Pod>(
    paths: &Paths,
    name: &str,
) -> Result<PerCpuHashMap<MapData, K, V>> {
    PerCpuHashMap::try_from(loader::pinned(paths, name)?)
        .with_context(|| format!("map {name} is not a per-CPU hash map"))
}

fn zeros<V: aya::Pod + Default>() -> Result<PerCpuValues<V>> {
    let n = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    PerCpuValues::try_from(vec![V::default(); n]).context("per-CPU values")
}

/// An insert that keeps an entry already there (its counts survive a
/// `cnet up` that restores the maps).
fn insert_new<K: aya::Pod, V: aya::Pod + Default>(paths: &Paths, name: &str, key: K) -> Result<()> {
    match percpu::<K, V>(paths, name)?.insert(key, zeros::<V>()?, BPF_NOEXIST) {
        Ok(()) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
        {
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("adding a counter entry to {name}")),
    }
}

/// Whether the instance's maps have the counter maps (an instance made by
/// an older cnet gets them at its next `cnet up`).
fn present(paths: &Paths, name: &str) -> bool {
    paths.map_pin(name).exists()
}

/// Starts counting the traffic of the container address `ip`.
pub fn track_endpoint(paths: &Paths, ip: Ipv4Addr) -> Result<()> {
    if !present(paths, maps::EP_STATS) {
        return Ok(());
    }
    insert_new::<u32, EpStats>(paths, maps::EP_STATS, addr_key(ip.octets()))
        .with_context(|| format!("counters of {ip}"))
}

/// Forgets the counters of container address `ip` (traffic and drops).
pub fn untrack_endpoint(paths: &Paths, ip: Ipv4Addr) -> Result<()> {
    let a = addr_key(ip.octets());
    if present(paths, maps::EP_STATS) {
        loader::removed(percpu::<u32, EpStats>(paths, maps::EP_STATS)?.remove(&a))
            .with_context(|| format!("removing the counters of {ip}"))?;
    }
    if present(paths, maps::DROP_STATS) {
        let mut drops = percpu::<DropKey, u64>(paths, maps::DROP_STATS)?;
        let doomed: Vec<DropKey> = drops
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.addr == a)
            .collect();
        for k in doomed {
            loader::removed(drops.remove(&k))
                .with_context(|| format!("removing the drop counters of {ip}"))?;
        }
    }
    Ok(())
}

/// Starts counting the traffic of published port `m` (to the container at `ip`).
pub fn track_port(paths: &Paths, m: &PortMapping, ip: Ipv4Addr) -> Result<()> {
    if !present(paths, maps::PORT_STATS) {
        return Ok(());
    }
    let (k, _) = port_entry(m, ip);
    insert_new::<PortKey, PortStats>(paths, maps::PORT_STATS, k)
        .with_context(|| format!("counters of published port {m}"))
}

/// Forgets the counters of published port `m`.
pub fn untrack_port(paths: &Paths, m: &PortMapping, ip: Ipv4Addr) -> Result<()> {
    if !present(paths, maps::PORT_STATS) {
        return Ok(());
    }
    let (k, _) = port_entry(m, ip);
    loader::removed(percpu::<PortKey, PortStats>(paths, maps::PORT_STATS)?.remove(&k))
        .with_context(|| format!("removing the counters of published port {m}"))
}

/// What one container's interfaces sent and were handed, and its drops by
/// reason (`drop_icc`...), summed over its interfaces.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ContainerStats {
    pub name: String,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub drops: BTreeMap<String, u64>,
}

/// Every container's counters, by name.
pub fn containers(paths: &Paths, st: &State) -> Result<Vec<ContainerStats>> {
    let eps = percpu::<u32, EpStats>(paths, maps::EP_STATS)?;
    let drops = percpu::<DropKey, u64>(paths, maps::DROP_STATS)?;
    let mut by_addr: BTreeMap<u32, BTreeMap<String, u64>> = BTreeMap::new();
    for item in drops.iter() {
        let (k, v) = item.context("reading DROP_STATS")?;
        let name = cnet_common::drop::counter_name(k.reason).unwrap_or("drop_unknown");
        *by_addr
            .entry(k.addr)
            .or_default()
            .entry(name.to_string())
            .or_default() += v.iter().sum::<u64>();
    }
    let mut out = Vec::new();
    for c in st.containers.values() {
        let mut s = ContainerStats {
            name: c.name.clone(),
            ..Default::default()
        };
        for a in c.interfaces() {
            let key = addr_key(a.ip.octets());
            if let Ok(v) = eps.get(&key, 0) {
                for e in v.iter() {
                    s.packets_in += e.pkts_in;
                    s.bytes_in += e.bytes_in;
                    s.packets_out += e.pkts_out;
                    s.bytes_out += e.bytes_out;
                }
            }
            for (r, n) in by_addr.get(&key).into_iter().flatten() {
                *s.drops.entry(r.clone()).or_default() += n;
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// One published port's traffic.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PortCounters {
    pub container: String,
    /// As Docker prints it: `0.0.0.0:8080->80/tcp`.
    pub mapping: String,
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: String,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub connections: u64,
}

/// Every published port's counters (of container `only`, if given).
pub fn ports(paths: &Paths, st: &State, only: Option<&str>) -> Result<Vec<PortCounters>> {
    let map = percpu::<PortKey, PortStats>(paths, maps::PORT_STATS)?;
    let mut out = Vec::new();
    for c in st.containers.values() {
        if only.is_some_and(|n| n != c.name) {
            continue;
        }
        for m in &c.ports {
            let (k, _) = port_entry(m, c.ip);
            let mut p = PortCounters {
                container: c.name.clone(),
                mapping: format!(
                    "{}:{}->{}/{}",
                    m.host_ip_str(),
                    m.host_port,
                    m.container_port,
                    m.proto
                ),
                host_ip: m.host_ip_str(),
                host_port: m.host_port,
                container_port: m.container_port,
                proto: m.proto.to_string(),
                ..Default::default()
            };
            if let Ok(v) = map.get(&k, 0) {
                for s in v.iter() {
                    p.packets_in += s.pkts_in;
                    p.bytes_in += s.bytes_in;
                    p.packets_out += s.pkts_out;
                    p.bytes_out += s.bytes_out;
                    p.connections += s.conns;
                }
            }
            out.push(p);
        }
    }
    Ok(out)
}

/// How full the datapath's tables are.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub conntrack_entries: u64,
    pub conntrack_capacity: u64,
    /// Masquerade source ports (ICMP ids) in use, per masquerade address.
    pub masquerade_ports_in_use: BTreeMap<String, u64>,
    /// How many there are per address and protocol (cnet's masquerade range).
    pub masquerade_port_range: u64,
}

/// Counts conntrack entries and the masquerade ports they hold.
pub fn usage(paths: &Paths) -> Result<Usage> {
    let ct = loader::hash::<CtKey, CtEntry>(paths, maps::CONNTRACK)?;
    let mut u = Usage {
        conntrack_capacity: u64::from(CONNTRACK_MAX),
        masquerade_port_range: u64::from(MASQ_PORT_HI - MASQ_PORT_LO) + 1,
        ..Default::default()
    };
    for item in ct.iter() {
        let Ok((_, e)) = item else { continue };
        u.conntrack_entries += 1;
        if e.kind == CT_SNAT {
            *u.masquerade_ports_in_use
                .entry(Ipv4Addr::from(addr_octets(e.saddr)).to_string())
                .or_default() += 1;
        }
    }
    Ok(u)
}
