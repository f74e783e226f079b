//! Isolation: filter rules (first match decides) and icc between the
//! containers of a network, with link allowances.
use cnet_common::{
    DropReason,
    maps::{
        AllowKey, CONFIG_MASQUERADE, CtKey, EVENT_FILTER, FILTER_ALLOW, FILTER_DROP, FILTERS_MAX,
        NETWORK_ICC_OFF, NETWORK_INTERNAL, NETWORK_NO_MASQ, NETWORK_ROUTED, PROTO_ICMP,
    },
};

use crate::maps::{ALLOW, ENDPOINTS, FILTER_SET, FILTER_STATS, FILTERS, NETWORKS};

/// Filters a packet as it will be delivered: a published port is matched
/// with the container's address and port (as Docker's DOCKER-USER chain sees
/// it, after DNAT), on every hook. `dport` in network byte order.
#[inline(always)]
pub fn filters_delivered(
    saddr: u32,
    daddr: u32,
    proto: u8,
    dport: u16,
    count_all: bool,
) -> Result<Verdict, DropReason> {
    // No rules (the common case): two array reads, no translation lookup.
    let base = (FILTER_SET.get(0).copied().unwrap_or(0) & 1) * FILTERS_MAX;
    if FILTERS.get(base).is_none_or(|r| r.used == 0) {
        return Ok(Verdict::None);
    }
    let (mut d, mut p) = (daddr, dport);
    if proto != PROTO_ICMP
        && let Some(to) = crate::maps::published(daddr, dport, proto)
    {
        d = to.addr;
        p = to.port;
    }
    let port = if proto == PROTO_ICMP {
        0
    } else {
        u16::from_be(p)
    };
    filters(base, saddr, d, proto, port, count_all)
}

/// What the filter list says about a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No rule matched.
    None,
    /// An allow rule matched: skip the rest of the policy (icc included).
    Allow,
}

/// What one filter scan looks at and finds (the `bpf_loop` context).
#[repr(C)]
struct Scan {
    base: u32,
    saddr: u32,
    daddr: u32,
    dport: u16,
    proto: u8,
    count_all: u8,
    /// 0: no rule matched, 1: allow, 2: drop.
    found: u32,
    /// The id of the rule that matched.
    rule: u32,
}

/// One rule of the scan (a `bpf_loop` callback, verified once whatever the
/// number of rules): 0 goes on, 1 stops.
#[inline(never)]
extern "C" fn scan_rule(slot: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `Scan` that `filters` passed to bpf_loop.
    let s = unsafe { &mut *(ctx as *mut Scan) };
    let Some(rule) = FILTERS.get(s.base + slot as u32) else {
        return 1;
    };
    if rule.used == 0 {
        return 1;
    }
    if !rule.matches(s.saddr, s.daddr, s.proto, s.dport) {
        return 0;
    }
    if (s.count_all != 0 || rule.action == FILTER_DROP)
        && let Some(c) = FILTER_STATS.get_ptr_mut(rule.id)
    {
        // SAFETY: this CPU's value.
        unsafe { *c += 1 };
    }
    s.rule = rule.id;
    s.found = match rule.action {
        FILTER_DROP => 2,
        FILTER_ALLOW => 1,
        _ => 0,
    };
    1
}

/// Runs the live set of filter rules (starting at slot `base`, the half
/// `FILTER_SET` names, read once by the caller) in order on a packet (addresses in
/// network byte order, `dport` in host order, 0 for protocols without
/// ports). `count_all` false (XDP, which TC follows): only a matching drop
/// rule is counted here, an allow rule is counted by TC, so every packet is
/// counted once. The scan runs in `bpf_loop`, so the verifier checks one
/// rule instead of unrolling all of them.
#[inline(always)]
fn filters(
    base: u32,
    saddr: u32,
    daddr: u32,
    proto: u8,
    dport: u16,
    count_all: bool,
) -> Result<Verdict, DropReason> {
    let mut scan = Scan {
        base,
        saddr,
        daddr,
        dport,
        proto,
        count_all: count_all as u8,
        found: 0,
        rule: 0,
    };
    // SAFETY: a callback of bpf_loop's type and a context on this stack.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            FILTERS_MAX,
            scan_rule as *mut core::ffi::c_void,
            &mut scan as *mut Scan as *mut core::ffi::c_void,
            0,
        );
    }
    if scan.found != 0 {
        filter_hit(&scan, count_all);
    }
    match scan.found {
        2 => Err(DropReason::Filtered),
        1 => Ok(Verdict::Allow),
        _ => Ok(Verdict::None),
    }
}

/// A rule matched: a drop is attributed to the container it was from or for
/// (the delivered address), and `cnet monitor` hears of it. XDP
/// (`count_all` false) reports only drops: TC sees the rest again.
#[inline(never)]
fn filter_hit(scan: &Scan, count_all: bool) {
    let drop = scan.found == 2;
    if drop {
        crate::observe::count_drop(scan.saddr, scan.daddr, DropReason::Filtered as u32);
    }
    if (count_all || drop) && crate::observe::wanted(EVENT_FILTER) {
        let action = if drop { FILTER_DROP } else { FILTER_ALLOW };
        let t = CtKey::new(scan.saddr, scan.daddr, 0, scan.dport.to_be(), scan.proto);
        crate::observe::tuple_event(EVENT_FILTER, action, 0, &t, scan.rule);
    }
}

/// Container-to-container policy: containers of different networks never
/// talk directly; within a network with icc off only linked pairs do.
/// Ports are in network byte order, as in the packet.
#[inline(always)]
pub fn icc(saddr: u32, daddr: u32, proto: u8, sport: u16, dport: u16) -> Result<(), DropReason> {
    let Some(dst) = ENDPOINTS.get_ptr(daddr) else {
        return Ok(());
    };
    let Some(src) = ENDPOINTS.get_ptr(saddr) else {
        return Ok(());
    };
    // SAFETY: map value pointers from successful lookups, read once.
    let (snet, dnet) = unsafe { ((*src).network, (*dst).network) };
    if snet != dnet {
        return Err(DropReason::IccDenied);
    }
    // SAFETY: value copied out immediately.
    let flags = unsafe { NETWORKS.get(snet) }.map(|n| n.flags).unwrap_or(0);
    if flags & NETWORK_ICC_OFF == 0 {
        return Ok(());
    }
    if proto != PROTO_ICMP {
        let req = AllowKey {
            saddr,
            daddr,
            port: u16::from_be(dport),
            proto,
            by_sport: 0,
        };
        let rep = AllowKey {
            saddr,
            daddr,
            port: u16::from_be(sport),
            proto,
            by_sport: 1,
        };
        if ALLOW.get_ptr(req).is_some() || ALLOW.get_ptr(rep).is_some() {
            return Ok(());
        }
    }
    Err(DropReason::IccDenied)
}

/// The network id of container address `addr`.
#[inline(always)]
fn network_of(addr: u32) -> Option<u32> {
    // SAFETY: value copied out immediately.
    unsafe { ENDPOINTS.get(addr) }.map(|e| e.network)
}

#[inline(always)]
fn flags_of(net: u32) -> u32 {
    // SAFETY: value copied out immediately.
    unsafe { NETWORKS.get(net) }.map(|n| n.flags).unwrap_or(0)
}

/// The datapath flags of the network of container address `addr` (0 for
/// anything that is not a container).
#[inline(always)]
pub fn network_flags(addr: u32) -> u32 {
    network_of(addr).map(flags_of).unwrap_or(0)
}

/// An `--internal` network keeps its traffic among its own containers (and
/// its gateway): nothing leaves it, nothing from elsewhere enters it.
#[inline(always)]
pub fn internal(saddr: u32, daddr: u32, gateway_is_dst: bool) -> Result<(), DropReason> {
    let (s, d) = (network_of(saddr), network_of(daddr));
    let src_internal = s.map(flags_of).unwrap_or(0) & NETWORK_INTERNAL != 0;
    let dst_internal = d.map(flags_of).unwrap_or(0) & NETWORK_INTERNAL != 0;
    if !src_internal && !dst_internal {
        return Ok(());
    }
    // Container-to-container traffic is decided by icc (other networks are dropped there).
    if let (Some(_), Some(_)) = (s, d) {
        return Ok(());
    }
    if src_internal && gateway_is_dst {
        return Ok(());
    }
    Err(DropReason::Internal)
}

/// From outside (an uplink), untranslated and untracked, to `daddr`: a
/// container address is reachable only on a network that is routed (Docker's
/// `gateway_mode_ipv4=routed`) or not masqueraded (its replies are not
/// tracked, see docs/security.md). Everything else passes to the stack.
#[inline(always)]
pub fn from_outside(daddr: u32) -> Result<(), DropReason> {
    let Some(net) = network_of(daddr) else {
        return Ok(());
    };
    let flags = flags_of(net);
    if flags & NETWORK_INTERNAL != 0 {
        return Err(DropReason::Internal);
    }
    let open = NETWORK_ROUTED | NETWORK_NO_MASQ;
    if flags & open != 0 || crate::maps::config().flags & CONFIG_MASQUERADE == 0 {
        return Ok(());
    }
    Err(DropReason::NotPublished)
}
