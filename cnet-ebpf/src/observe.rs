//! What an operator sees: counters per container and per published port, and
//! events (drops, translated flows opening and closing, filter hits) in a ring
//! buffer for `cnet monitor`.
//!
//! Events cost nothing while nobody listens: the monitor switches kinds on in
//! `MONITOR` with a deadline it keeps renewing, and the programs look at it
//! only on paths that drop a packet, open or close a flow, or hit a filter.
//! A per-CPU token bucket bounds how many events a flood can write.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TcContext,
};
use cnet_common::{
    Counter,
    maps::{
        CT_DNAT, CT_PORT_ANY, CT_PORT_EXACT, CT_REV_DNAT, CtEntry, CtKey, DROP_STATS_MAX, DropKey,
        ENDPOINTS_MAX, EVENT_DROP, EVENT_FLOW_NEW, EVENTS_BYTES, EpStats, Event, FLOW_HOST_LOCAL,
        Monitor, PORTS_MAX, PROTO_ICMP, PROTO_TCP, PROTO_UDP, PortKey, PortStats, PortValue,
        RateLimit,
    },
};

use crate::{
    hdr::{ETH_HLEN, ICMP_ID, IP_DST_OFF, IP_PROTO_OFF, IP_SRC_OFF},
    verdict::count,
};

// The per-CPU counter maps are not preallocated: preallocating every
// possible entry on every CPU took a quarter of a second of `cnet up`, and
// entries are added by the control plane (containers, ports) or once per
// container and reason (drops), not per packet.
#[map(name = "EP_STATS")]
pub static EP_STATS: PerCpuHashMap<u32, EpStats> =
    PerCpuHashMap::with_max_entries(ENDPOINTS_MAX, BPF_F_NO_PREALLOC);

#[map(name = "DROP_STATS")]
pub static DROP_STATS: PerCpuHashMap<DropKey, u64> =
    PerCpuHashMap::with_max_entries(DROP_STATS_MAX, BPF_F_NO_PREALLOC);

#[map(name = "PORT_STATS")]
pub static PORT_STATS: PerCpuHashMap<PortKey, PortStats> =
    PerCpuHashMap::with_max_entries(PORTS_MAX, BPF_F_NO_PREALLOC);

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map(name = "MONITOR")]
pub static MONITOR: Array<Monitor> = Array::with_max_entries(1, 0);

#[map(name = "EVENT_RATE")]
pub static EVENT_RATE: PerCpuArray<RateLimit> = PerCpuArray::with_max_entries(1, 0);

/// Events per second per CPU when the monitor names no rate.
const DEFAULT_RATE: u64 = 1000;

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Whether a listener wants events of `kind` now.
#[inline(always)]
pub fn wanted(kind: u8) -> bool {
    match MONITOR.get(0) {
        Some(m) if m.flags & u32::from(kind) != 0 => now() < m.until_ns,
        _ => false,
    }
}

/// Takes one token of this CPU's bucket (refilled at the monitor's rate).
#[inline(always)]
fn take_token() -> bool {
    let rate = match MONITOR.get(0) {
        Some(m) if m.rate != 0 => u64::from(m.rate),
        _ => DEFAULT_RATE,
    };
    let Some(b) = EVENT_RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot.
    let b = unsafe { &mut *b };
    let t = now();
    let elapsed = t.saturating_sub(b.last_ns).min(10_000_000_000);
    let refill = elapsed * rate / 1_000_000_000;
    if refill > 0 {
        b.tokens = (b.tokens + refill).min(rate);
        b.last_ns = t;
    }
    if b.tokens == 0 {
        return false;
    }
    b.tokens -= 1;
    true
}

/// Room to build an event in, per CPU, off the BPF stack (the verifier
/// allows 512 bytes for a whole call chain, and the main functions use most
/// of it). Slot 0 is for TC and XDP, which do not interrupt one another on
/// a CPU; slot 1 for the socket hooks, which run in process context that a
/// softirq (TC, XDP) can interrupt.
#[map(name = "EVENT_SCRATCH")]
static EVENT_SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(2, 0);
const SCRATCH_PACKET: u32 = 0;
const SCRATCH_SOCKET: u32 = 1;

/// Writes `ev` (stamped now) unless the rate limit or a full buffer says no;
/// each outcome is counted.
#[inline(always)]
fn emit(ev: &mut Event) {
    if !take_token() {
        count(Counter::EventsSuppressed as u32);
        return;
    }
    ev.ts_ns = now();
    if EVENTS.output::<Event>(&*ev, 0).is_ok() {
        count(Counter::EventsSent as u32);
    } else {
        count(Counter::EventsLost as u32);
    }
}

/// Fills this CPU's scratch event with `orig` as the tuple it came with and
/// returns it for the caller to finish; `None` only if the map is missing.
#[inline(always)]
fn scratch(
    slot: u32,
    kind: u8,
    reason: u8,
    ifindex: u32,
    orig: &CtKey,
) -> Option<&'static mut Event> {
    // SAFETY: this CPU's slot, used by one program at a time (see above).
    let ev = unsafe { &mut *EVENT_SCRATCH.get_ptr_mut(slot)? };
    ev.kind = kind;
    ev.reason = reason;
    ev.proto = orig.proto;
    ev._pad = 0;
    ev.ifindex = ifindex;
    ev.orig_saddr = orig.saddr;
    ev.orig_daddr = orig.daddr;
    ev.orig_sport = orig.sport;
    ev.orig_dport = orig.dport;
    ev.xlat_saddr = orig.saddr;
    ev.xlat_daddr = orig.daddr;
    ev.xlat_sport = orig.sport;
    ev.xlat_dport = orig.dport;
    ev.rule = 0;
    ev._pad2 = 0;
    Some(ev)
}

/// Emits an event about one tuple (no translation): a drop, or a hit of
/// filter rule `rule` (0 for drops).
#[inline(never)]
pub fn tuple_event(kind: u8, reason: u8, ifindex: u32, t: &CtKey, rule: u32) {
    if let Some(ev) = scratch(SCRATCH_PACKET, kind, reason, ifindex, t) {
        ev.rule = rule;
        emit(ev);
    }
}

/// Emits a flow event: the tuple as it came and as it leaves.
#[inline(never)]
pub fn flow_event(kind: u8, ct_kind: u8, ifindex: u32, from: &CtKey, to: &CtEntry) {
    if let Some(ev) = scratch(SCRATCH_PACKET, kind, ct_kind, ifindex, from) {
        ev.xlat_saddr = to.saddr;
        ev.xlat_daddr = to.daddr;
        ev.xlat_sport = to.sport;
        ev.xlat_dport = to.dport;
        emit(ev);
    }
}

/// A host process connects to published port `addr:port` (network byte
/// order), which the socket hook turned into `to`: one connection of the
/// port (`exact`: the entry for that host address, else the any-address
/// one), and a flow event whose source is the host (address and port are
/// not chosen yet at connect time: 0).
#[inline(never)]
pub fn host_local(addr: u32, port: u16, proto: u8, to: &PortValue, exact: bool) {
    let pk = PortKey::new(if exact { addr } else { 0 }, port, proto);
    if let Some(s) = PORT_STATS.get_ptr_mut(pk) {
        // SAFETY: this CPU's value.
        unsafe { (*s).conns += 1 };
    }
    if !wanted(EVENT_FLOW_NEW) {
        return;
    }
    let orig = CtKey::new(0, addr, 0, port, proto);
    if let Some(ev) = scratch(SCRATCH_SOCKET, EVENT_FLOW_NEW, FLOW_HOST_LOCAL, 0, &orig) {
        ev.xlat_daddr = to.addr;
        ev.xlat_dport = to.port;
        emit(ev);
    }
}

/// A dropped packet seen by TC: its tuple read from the packet, as it is now.
#[inline(never)]
pub fn drop_event(ctx: &TcContext, reason: u32) {
    let saddr: u32 = ctx.load(IP_SRC_OFF).unwrap_or(0);
    let daddr: u32 = ctx.load(IP_DST_OFF).unwrap_or(0);
    let vhl: u8 = ctx.load(ETH_HLEN).unwrap_or(0);
    let proto: u8 = ctx.load(IP_PROTO_OFF).unwrap_or(0);
    let l4 = ETH_HLEN + usize::from(vhl & 0x0f) * 4;
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP => (
            ctx.load::<u16>(l4).unwrap_or(0),
            ctx.load::<u16>(l4 + 2).unwrap_or(0),
        ),
        // The echo identifier, as conntrack keys ICMP.
        PROTO_ICMP => {
            let id = ctx.load::<u16>(l4 + ICMP_ID).unwrap_or(0);
            (id, id)
        }
        _ => (0, 0),
    };
    // SAFETY: reading a field of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let t = CtKey::new(saddr, daddr, sport, dport, proto);
    tuple_event(EVENT_DROP, reason as u8, ifindex, &t, 0);
}

/// A packet the container at `addr` sent.
#[inline(always)]
pub fn count_out(addr: u32, len: u32) {
    if let Some(s) = EP_STATS.get_ptr_mut(addr) {
        // SAFETY: this CPU's value.
        let s = unsafe { &mut *s };
        s.pkts_out += 1;
        s.bytes_out += u64::from(len);
    }
}

/// A packet cnet hands to the container at `addr`.
#[inline(always)]
pub fn count_in(addr: u32, len: u32) {
    if let Some(s) = EP_STATS.get_ptr_mut(addr) {
        // SAFETY: this CPU's value.
        let s = unsafe { &mut *s };
        s.pkts_in += 1;
        s.bytes_in += u64::from(len);
    }
}

/// Attributes a drop of `reason` to a container: the sender if it is one,
/// else the receiver. Drops between addresses of no container are only in
/// the global counters.
#[inline(never)]
pub fn count_drop(saddr: u32, daddr: u32, reason: u32) {
    let addr = if EP_STATS.get_ptr(saddr).is_some() {
        saddr
    } else if EP_STATS.get_ptr(daddr).is_some() {
        daddr
    } else {
        return;
    };
    let key = DropKey { addr, reason };
    if let Some(c) = DROP_STATS.get_ptr_mut(key) {
        // SAFETY: this CPU's value.
        unsafe { *c += 1 };
    } else {
        // A first drop of this reason: the entry is made for every CPU,
        // this one starting at 1. A race with another CPU loses one count.
        let _ = DROP_STATS.insert(key, 1, 0);
    }
}

/// A TC drop: per-container counter (filter drops are attributed by the
/// filter scan, which knows the delivered address) and the event.
#[inline(always)]
pub fn dropped(ctx: &TcContext, reason: u32) {
    if reason != cnet_common::DropReason::Filtered as u32 {
        let saddr: u32 = ctx.load(IP_SRC_OFF).unwrap_or(0);
        let daddr: u32 = ctx.load(IP_DST_OFF).unwrap_or(0);
        count_drop(saddr, daddr, reason);
    }
    if wanted(EVENT_DROP) {
        drop_event(ctx, reason);
    }
}

/// Counts a packet of a flow through a published port: `e` is the entry the
/// packet matched under `key` (`CT_DNAT` towards the container, `CT_REV_DNAT`
/// its replies); `new` for the first packet of a flow.
#[inline(always)]
pub fn count_port(key: &CtKey, e: &CtEntry, len: u32, new: bool) {
    if e.port_key == 0 {
        return;
    }
    let exact = e.port_key == CT_PORT_EXACT;
    let (addr, port, inbound) = match e.kind {
        CT_DNAT => (key.daddr, key.dport, true),
        CT_REV_DNAT => (e.saddr, e.sport, false),
        _ => return,
    };
    let pk = PortKey::new(if exact { addr } else { 0 }, port, key.proto);
    if let Some(s) = PORT_STATS.get_ptr_mut(pk) {
        // SAFETY: this CPU's value.
        let s = unsafe { &mut *s };
        if inbound {
            s.pkts_in += 1;
            s.bytes_in += u64::from(len);
        } else {
            s.pkts_out += 1;
            s.bytes_out += u64::from(len);
        }
        if new {
            s.conns += 1;
        }
    }
}

/// `CtEntry::port_key` for a flow opened through `PORTS`: which key matched.
#[inline(always)]
pub const fn port_key_kind(exact: bool) -> u8 {
    if exact { CT_PORT_EXACT } else { CT_PORT_ANY }
}
