//! `cnet conntrack ls|flush`: the datapath's flow table, as `conntrack -L/-F`
//! shows and clears netfilter's.
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use cnet_common::maps::{
    self, CT_DNAT, CT_REV_DNAT, CT_REV_SNAT, CT_SNAT, CtEntry, CtKey, FragKey, FragValue,
    PROTO_ICMP, PROTO_TCP, PROTO_UDP, ct_state, ct_timeout_secs,
};
use serde::Serialize;

use crate::{loader, state::Paths};

/// One conntrack entry, in the units a user reads.
#[derive(Debug, Clone, Serialize)]
pub struct Flow {
    pub proto: &'static str,
    /// The tuple as it arrives.
    pub src: String,
    pub dst: String,
    /// What it is rewritten to.
    pub to_src: String,
    pub to_dst: String,
    pub kind: &'static str,
    pub state: &'static str,
    /// Seconds until the entry expires if no packet comes.
    pub expires_in: u64,
    pub packets: u64,
    pub bytes: u64,
}

fn ip(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a.to_ne_bytes())
}

pub fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP => "icmp",
        _ => "other",
    }
}

fn kind_name(k: u8) -> &'static str {
    match k {
        CT_DNAT => "dnat",
        CT_REV_DNAT => "dnat-reply",
        CT_SNAT => "masquerade",
        CT_REV_SNAT => "masquerade-reply",
        _ => "unknown",
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of bpf_ktime_get_ns.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn describe(k: &CtKey, e: &CtEntry, now: u64) -> Flow {
    let port = |a: u32, p: u16| {
        if k.proto == PROTO_ICMP {
            format!("{} id {}", ip(a), u16::from_be(p))
        } else {
            format!("{}:{}", ip(a), u16::from_be(p))
        }
    };
    let idle = now.saturating_sub(e.last_seen) / 1_000_000_000;
    Flow {
        proto: proto_name(k.proto),
        src: port(k.saddr, k.sport),
        dst: port(k.daddr, k.dport),
        to_src: port(e.saddr, e.sport),
        to_dst: port(e.daddr, e.dport),
        kind: kind_name(e.kind),
        state: ct_state(k.proto, e.tcp_seen),
        expires_in: ct_timeout_secs(k.proto, e.tcp_seen).saturating_sub(idle),
        packets: e.packets,
        bytes: e.bytes,
    }
}

/// Every live entry (expired ones the datapath has not met again are left out).
pub fn list(paths: &Paths) -> Result<Vec<Flow>> {
    let ct = loader::hash::<CtKey, CtEntry>(paths, maps::CONNTRACK)?;
    let now = monotonic_ns();
    let mut out = Vec::new();
    for item in ct.iter() {
        let (k, e) = item.context("reading CONNTRACK")?;
        let idle = now.saturating_sub(e.last_seen) / 1_000_000_000;
        if idle <= ct_timeout_secs(k.proto, e.tcp_seen) {
            out.push(describe(&k, &e, now));
        }
    }
    out.sort_by(|a, b| (a.proto, &a.src, &a.dst).cmp(&(b.proto, &b.src, &b.dst)));
    Ok(out)
}

/// The table as text, one flow a line.
pub fn render(flows: &[Flow]) -> String {
    let mut s = String::new();
    for f in flows {
        s.push_str(&format!(
            "{:<5} {:<12} src={} dst={} -> src={} dst={} [{}] expires={}s packets={} bytes={}\n",
            f.proto,
            f.state,
            f.src,
            f.dst,
            f.to_src,
            f.to_dst,
            f.kind,
            f.expires_in,
            f.packets,
            f.bytes
        ));
    }
    s
}

/// Deletes every conntrack and fragment entry; returns how many flows went.
pub fn flush(paths: &Paths) -> Result<usize> {
    let mut ct = loader::hash::<CtKey, CtEntry>(paths, maps::CONNTRACK)?;
    let keys: Vec<CtKey> = ct.keys().filter_map(Result::ok).collect();
    for k in &keys {
        let _ = ct.remove(k);
    }
    let mut frags = loader::hash::<FragKey, FragValue>(paths, maps::FRAGS)?;
    let fkeys: Vec<FragKey> = frags.keys().filter_map(Result::ok).collect();
    for k in &fkeys {
        let _ = frags.remove(k);
    }
    Ok(keys.len())
}
