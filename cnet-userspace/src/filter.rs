//! `cnet filter add|ls|rm`: ordered allow/drop rules, applied by XDP on the
//! uplinks (traffic from outside) and TC on the containers' veths (traffic
//! from containers). Changes are written to the map at once: no reload.
use std::{fmt::Write as _, net::Ipv4Addr};

use anyhow::{Context, Result, bail, ensure};
use aya::maps::{Array, MapData, PerCpuHashMap, PerCpuValues};
use cnet_common::{
    addr_key,
    maps::{
        self, FILTER_ALLOW, FILTER_DROP, FILTERS_MAX, Filter, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
    },
};

use crate::{
    ipam::{prefix_mask, split_cidr},
    state::{Cidr0, FilterRule, Paths, Pending, State},
};

/// What `cnet filter add` was given.
#[derive(Clone, Debug, Default)]
pub struct FilterSpec {
    pub src: String,
    pub dst: Option<String>,
    pub proto: Option<String>,
    pub dport: Option<String>,
    pub action: String,
}

/// `A.B.C.D[/N]` with any prefix from 0 to 32.
pub fn parse_cidr0(s: &str) -> Result<Cidr0> {
    let (addr, prefix) = split_cidr(s)?;
    ensure!(
        prefix <= 32,
        "prefix length {prefix} in {s:?} out of range (0-32)"
    );
    Ok(Cidr0 {
        addr: Ipv4Addr::from(u32::from(addr) & prefix_mask(prefix)),
        prefix,
    })
}

fn mask(c: Cidr0) -> u32 {
    addr_key(Ipv4Addr::from(prefix_mask(c.prefix)).octets())
}

/// Validates a spec against the current state (container names resolve to addresses).
pub fn plan(state: &State, spec: &FilterSpec, id: u32) -> Result<FilterRule> {
    let src = parse_cidr0(&spec.src).context("--src")?;
    let (dst, dst_text) = match &spec.dst {
        None => (
            Cidr0 {
                addr: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
            },
            "any".to_string(),
        ),
        Some(d) => match state.containers.get(d) {
            Some(c) => (
                Cidr0 {
                    addr: c.ip,
                    prefix: 32,
                },
                d.clone(),
            ),
            None => (
                parse_cidr0(d)
                    .with_context(|| format!("--dst {d:?} is neither a container nor a CIDR"))?,
                d.clone(),
            ),
        },
    };
    let proto = match spec.proto.as_deref() {
        None => None,
        Some(p @ ("tcp" | "udp" | "icmp")) => Some(p.to_string()),
        Some(other) => bail!("invalid --proto {other:?}: use tcp, udp or icmp"),
    };
    let dport = match &spec.dport {
        None => None,
        Some(d) => {
            ensure!(
                matches!(proto.as_deref(), Some("tcp" | "udp")),
                "--dport {d} needs --proto tcp or udp"
            );
            let (lo, hi) = d.split_once('-').unwrap_or((d, d));
            let lo: u16 = lo
                .parse()
                .with_context(|| format!("invalid --dport {d:?}"))?;
            let hi: u16 = hi
                .parse()
                .with_context(|| format!("invalid --dport {d:?}"))?;
            ensure!(lo <= hi, "invalid --dport {d:?}: start after end");
            Some((lo, hi))
        }
    };
    let action = match spec.action.as_str() {
        a @ ("drop" | "allow") => a.to_string(),
        other => bail!("invalid --action {other:?}: use drop or allow"),
    };
    Ok(FilterRule {
        id,
        src,
        dst,
        dst_text,
        proto,
        dport,
        action,
    })
}

fn to_map(r: &FilterRule) -> Filter {
    let (lo, hi) = r.dport.unwrap_or((0, u16::MAX));
    Filter {
        src: addr_key(r.src.addr.octets()),
        src_mask: mask(r.src),
        dst: addr_key(r.dst.addr.octets()),
        dst_mask: mask(r.dst),
        dport_lo: lo,
        dport_hi: hi,
        proto: match r.proto.as_deref() {
            Some("tcp") => PROTO_TCP,
            Some("udp") => PROTO_UDP,
            Some("icmp") => PROTO_ICMP,
            _ => 0,
        },
        action: if r.action == "drop" {
            FILTER_DROP
        } else {
            FILTER_ALLOW
        },
        used: 1,
        _pad: 0,
        id: r.id,
    }
}

/// Writes the rules to the FILTERS map in order, clearing the slots after
/// them, and keeps XDP attached to the uplinks exactly while rules exist: XDP
/// on a veth uplink costs GRO/GSO (frames are linearised for it), so an
/// instance without filters does not pay for it.
pub fn sync(paths: &Paths, state: &State) -> Result<()> {
    write_rules(paths, state)?;
    for u in &state.uplinks {
        let link = format!("xdp-{u}");
        if state.filters.is_empty() {
            crate::loader::detach(paths, &link)?;
        } else {
            crate::loader::attach_xdp(paths, u, &link)?;
        }
    }
    Ok(())
}

/// Writes the rules into the half of FILTERS the datapath is not reading,
/// then flips FILTER_SET to it: a packet sees the old list or the new one,
/// never a mix. Every rule gets its counter (kept across changes).
fn write_rules(paths: &Paths, state: &State) -> Result<()> {
    ensure!(
        state.filters.len() <= FILTERS_MAX as usize,
        "more than {FILTERS_MAX} filter rules"
    );
    let mut stats: PerCpuHashMap<MapData, u32, u64> =
        PerCpuHashMap::try_from(crate::loader::pinned(paths, maps::FILTER_STATS)?)
            .context("map FILTER_STATS")?;
    let cpus = aya::util::nr_cpus().map_err(|(p, e)| anyhow::anyhow!("{p}: {e}"))?;
    for r in &state.filters {
        if stats.get(&r.id, 0).is_err() {
            stats
                .insert(r.id, PerCpuValues::try_from(vec![0u64; cpus])?, 0)
                .with_context(|| format!("counter of filter {}", r.id))?;
        }
    }
    let mut set: Array<MapData, u32> =
        Array::try_from(crate::loader::pinned(paths, maps::FILTER_SET)?)
            .context("map FILTER_SET")?;
    let live = set.get(&0, 0).context("reading FILTER_SET")? & 1;
    let next = 1 - live;
    let base = next * FILTERS_MAX;
    let mut arr: Array<MapData, Filter> =
        Array::try_from(crate::loader::pinned(paths, maps::FILTERS)?).context("map FILTERS")?;
    for slot in 0..FILTERS_MAX as usize {
        let f = state.filters.get(slot).map(to_map).unwrap_or_default();
        arr.set(base + slot as u32, f, 0)
            .with_context(|| format!("writing filter slot {slot}"))?;
    }
    set.set(0, next, 0).context("switching FILTER_SET")?;
    // Counters of rules that are gone.
    let ids: Vec<u32> = stats.keys().filter_map(Result::ok).collect();
    for id in ids {
        if !state.filters.iter().any(|r| r.id == id) {
            let _ = stats.remove(&id);
        }
    }
    Ok(())
}

/// Packets matched per rule, by rule id.
pub fn counters(paths: &Paths, state: &State) -> Result<Vec<(u32, u64)>> {
    let stats: PerCpuHashMap<MapData, u32, u64> =
        PerCpuHashMap::try_from(crate::loader::pinned(paths, maps::FILTER_STATS)?)
            .context("map FILTER_STATS")?;
    Ok(state
        .filters
        .iter()
        .map(|r| {
            let n = stats.get(&r.id, 0).map(|v| v.iter().sum()).unwrap_or(0);
            (r.id, n)
        })
        .collect())
}

pub fn add(paths: &Paths, spec: &FilterSpec) -> Result<u32> {
    let (_lock, mut st) = crate::open(paths)?;
    let id = st.next_filter_id.max(1);
    let rule = plan(&st, spec, id)?;
    ensure!(
        st.filters.len() < FILTERS_MAX as usize,
        "cannot add filter: {FILTERS_MAX} rules is the limit; remove one with `cnet filter rm ID`"
    );
    st.filters.push(rule);
    st.next_filter_id = id + 1;
    st.pending.push(Pending::Filters);
    crate::state::save(paths, &st)?;
    crate::crash::point("filter-add:journaled");
    sync(paths, &st)?;
    crate::crash::point("filter-add:synced");
    st.pending.clear();
    crate::state::save(paths, &st)?;
    Ok(id)
}

pub fn rm(paths: &Paths, id: u32) -> Result<()> {
    let (_lock, mut st) = crate::open(paths)?;
    let pos = st
        .filters
        .iter()
        .position(|r| r.id == id)
        .ok_or_else(|| crate::error::not_found(format!("no filter with id {id}")))?;
    st.filters.remove(pos);
    st.pending.push(Pending::Filters);
    crate::state::save(paths, &st)?;
    crate::crash::point("filter-rm:journaled");
    sync(paths, &st)?;
    crate::crash::point("filter-rm:synced");
    st.pending.clear();
    crate::state::save(paths, &st)
}

pub fn ls(paths: &Paths) -> Result<String> {
    let st = crate::state::load_up(paths)?;
    let counts = counters(paths, &st)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:<18} {:<18} {:<6} {:<12} {:<6} PACKETS",
        "ID", "SRC", "DST", "PROTO", "DPORT", "ACTION"
    );
    for (r, (_, n)) in st.filters.iter().zip(counts) {
        let dport = r.dport.map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        });
        let _ = writeln!(
            out,
            "{:<4} {:<18} {:<18} {:<6} {:<12} {:<6} {n}",
            r.id,
            format!("{}/{}", r.src.addr, r.src.prefix),
            r.dst_text,
            r.proto.as_deref().unwrap_or("any"),
            dport.as_deref().unwrap_or("any"),
            r.action
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr0_forms() {
        assert_eq!(parse_cidr0("10.200.1.7").unwrap().prefix, 32);
        let c = parse_cidr0("10.200.1.7/24").unwrap();
        assert_eq!((c.addr, c.prefix), (Ipv4Addr::new(10, 200, 1, 0), 24));
        assert_eq!(parse_cidr0("0.0.0.0/0").unwrap().prefix, 0);
        assert!(parse_cidr0("10.0.0.1/33").is_err());
        assert!(
            parse_cidr0("nope")
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
    }

    #[test]
    fn rule_to_map_entry() {
        let st: State = serde_json::from_str(
            r#"{"version":1,"bip":"172.17.0.1/16","bridge":"cnet0","uplinks":[],"cgroup":null,"masquerade":true,"containers":{}}"#,
        )
        .unwrap();
        let spec = FilterSpec {
            src: "10.200.1.0/24".into(),
            dst: Some("172.17.0.0/16".into()),
            proto: Some("tcp".into()),
            dport: Some("80-90".into()),
            action: "drop".into(),
        };
        let f = to_map(&plan(&st, &spec, 3).unwrap());
        assert!(f.matches(
            addr_key([10, 200, 1, 9]),
            addr_key([172, 17, 0, 2]),
            PROTO_TCP,
            85
        ));
        assert!(!f.matches(
            addr_key([10, 200, 1, 9]),
            addr_key([172, 17, 0, 2]),
            PROTO_TCP,
            91
        ));
        assert_eq!((f.action, f.id), (FILTER_DROP, 3));
        for (bad, needle) in [("udpx", "\"udpx\""), ("", "\"\"")] {
            let mut s = spec.clone();
            s.proto = Some(bad.into());
            let e = plan(&st, &s, 1).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
        let mut s = spec.clone();
        s.action = "reject".into();
        assert!(plan(&st, &s, 1).unwrap_err().to_string().contains("reject"));
        let mut s = spec;
        s.dst = Some("nosuch".into());
        assert!(format!("{:#}", plan(&st, &s, 1).unwrap_err()).contains("nosuch"));
    }
}
