//! Rewriting packets to a conntrack tuple with incremental checksums, and the
//! conntrack entries themselves (paired forward/reverse, TCP state, expiry).
use aya_ebpf::{
    bindings::{
        BPF_ANY, BPF_F_CURRENT_NETNS, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_NOEXIST,
        bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
    },
    helpers::{
        bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_sk_lookup_udp, bpf_sk_release,
        bpf_skc_lookup_tcp,
    },
    programs::TcContext,
};
use cnet_common::{
    DropReason,
    maps::{
        CT_SEEN_ACK, CT_SEEN_FIN, CT_SEEN_FIN_PEER, CT_SEEN_REPLY, CT_SEEN_RST, CT_SEEN_SYN,
        CtEntry, CtKey, EVENT_FLOW_END, MASQ_PORT_HI, MASQ_PORT_LO, PROTO_ICMP, PROTO_TCP,
        PROTO_UDP, PortKey, ct_is_reverse, ct_timeout_secs,
    },
};

use crate::{
    hdr::{
        ICMP_CSUM, ICMP_ID, IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF, TCP_CSUM, TCP_DPORT, TCP_SPORT,
        UDP_CSUM,
    },
    maps::{CONNTRACK, PORTS},
    parse::{Flow, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// Offset of the L4 checksum and the flags its updates need.
#[inline(always)]
fn l4_csum(flow: &Flow) -> (usize, u64) {
    match flow.key.proto {
        PROTO_TCP => (flow.l4 + TCP_CSUM, 0),
        PROTO_UDP => (flow.l4 + UDP_CSUM, u64::from(BPF_F_MARK_MANGLED_0)),
        _ => (flow.l4 + ICMP_CSUM, 0),
    }
}

#[inline(always)]
fn set_addr(
    ctx: &TcContext,
    flow: &Flow,
    off: usize,
    old: u32,
    new: u32,
) -> Result<(), DropReason> {
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old), u64::from(new), 4)
        .map_err(|_| DropReason::RewriteFailed)?;
    // ICMP's checksum does not cover a pseudo header.
    if flow.key.proto != PROTO_ICMP {
        let (coff, flags) = l4_csum(flow);
        ctx.l4_csum_replace(
            coff,
            u64::from(old),
            u64::from(new),
            flags | u64::from(BPF_F_PSEUDO_HDR) | 4,
        )
        .map_err(|_| DropReason::RewriteFailed)?;
    }
    ctx.store(off, &new, 0)
        .map_err(|_| DropReason::RewriteFailed)
}

#[inline(always)]
fn set_port(
    ctx: &TcContext,
    flow: &Flow,
    off: usize,
    old: u16,
    new: u16,
) -> Result<(), DropReason> {
    let (coff, flags) = l4_csum(flow);
    ctx.l4_csum_replace(coff, u64::from(old), u64::from(new), flags | 2)
        .map_err(|_| DropReason::RewriteFailed)?;
    ctx.store(off, &new, 0)
        .map_err(|_| DropReason::RewriteFailed)
}

/// Rewrites the packet's tuple to `to`'s, fixing the IPv4 and L4 checksums.
/// For ICMP echo the identifier plays both ports.
#[inline(always)]
pub fn rewrite(ctx: &TcContext, flow: &Flow, to: &CtEntry) -> Result<(), DropReason> {
    let k = &flow.key;
    if to.saddr != k.saddr {
        set_addr(ctx, flow, IP_SRC_OFF, k.saddr, to.saddr)?;
    }
    if to.daddr != k.daddr {
        set_addr(ctx, flow, IP_DST_OFF, k.daddr, to.daddr)?;
    }
    if k.proto == PROTO_ICMP {
        if to.sport != k.sport {
            set_port(ctx, flow, flow.l4 + ICMP_ID, k.sport, to.sport)?;
        }
        return Ok(());
    }
    if to.sport != k.sport {
        set_port(ctx, flow, flow.l4 + TCP_SPORT, k.sport, to.sport)?;
    }
    if to.dport != k.dport {
        set_port(ctx, flow, flow.l4 + TCP_DPORT, k.dport, to.dport)?;
    }
    Ok(())
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn stale(e: &CtEntry, proto: u8, t: u64) -> bool {
    t.saturating_sub(e.last_seen) > ct_timeout_secs(proto, e.tcp_seen) * 1_000_000_000
}

/// Whether `p`, found under `partner`, really is the other half of the entry
/// under `key` (it translates back to `key`'s tuple). A pair whose halves
/// went separate ways (LRU eviction, a re-used tuple) is never torn down by
/// the wrong half.
#[inline(always)]
fn points_back(p: &CtEntry, key: &CtKey) -> bool {
    p.saddr == key.daddr && p.daddr == key.saddr && p.sport == key.dport && p.dport == key.sport
}

/// Removes the entry under `key` and, if it still points back, its partner.
#[inline(always)]
fn remove_pair(key: &CtKey, partner: &CtKey) {
    let _ = CONNTRACK.remove(key);
    // SAFETY: value copied out at once.
    if let Some(p) = unsafe { CONNTRACK.get(partner) }.copied()
        && points_back(&p, key)
    {
        let _ = CONNTRACK.remove(partner);
    }
}

/// Looks up `key`, refreshing the entry (time, counters, TCP state) and its
/// partner's (the other direction's time and state), so a pair ages as one.
/// A stale entry, or a closed TCP flow that a new SYN reopens on the same
/// tuple, is removed with its partner and reported as a miss (the caller then
/// treats the packet as a new flow).
#[inline(always)]
pub fn lookup(key: &CtKey, flow: &Flow, len: u32) -> Option<CtEntry> {
    let p = CONNTRACK.get_ptr_mut(key)?;
    let t = now();
    // SAFETY: a map value pointer from a successful lookup; concurrent updates
    // of these counters may race, which only makes them approximate.
    let e = unsafe { &mut *p };
    let partner = CtKey::new(e.daddr, e.saddr, e.dport, e.sport, key.proto);
    if stale(e, key.proto, t) || reopened(e, flow) {
        remove_pair(key, &partner);
        return None;
    }
    let mut bits = seen_bits(flow);
    if ct_is_reverse(e.kind) {
        bits |= CT_SEEN_REPLY;
    }
    e.last_seen = t;
    e.packets += 1;
    e.bytes += u64::from(len);
    let closes = closed(e.tcp_seen | bits) && !closed(e.tcp_seen);
    e.tcp_seen |= bits;
    let out = *e;
    if closes && crate::observe::wanted(EVENT_FLOW_END) {
        crate::observe::flow_event(EVENT_FLOW_END, out.kind, 0, key, &out);
    }
    if let Some(pp) = CONNTRACK.get_ptr_mut(partner) {
        // SAFETY: as above.
        let pe = unsafe { &mut *pp };
        if points_back(pe, key) {
            pe.last_seen = t;
            let mut peer = bits & (CT_SEEN_RST | CT_SEEN_REPLY | CT_SEEN_ACK);
            if bits & CT_SEEN_FIN != 0 {
                peer |= CT_SEEN_FIN_PEER;
            }
            pe.tcp_seen |= peer;
        }
    }
    Some(out)
}

/// Whether TCP state bits mean the flow is over (RST, or FINs both ways).
#[inline(always)]
fn closed(seen: u8) -> bool {
    seen & CT_SEEN_RST != 0
        || seen & (CT_SEEN_FIN | CT_SEEN_FIN_PEER) == CT_SEEN_FIN | CT_SEEN_FIN_PEER
}

/// A SYN without ACK on a tuple whose flow already closed (FIN or RST seen):
/// the peer reuses the ports for a new connection.
#[inline(always)]
fn reopened(e: &CtEntry, flow: &Flow) -> bool {
    flow.key.proto == PROTO_TCP
        && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        && e.tcp_seen & (CT_SEEN_FIN | CT_SEEN_FIN_PEER | CT_SEEN_RST) != 0
}

#[inline(always)]
fn seen_bits(flow: &Flow) -> u8 {
    if flow.key.proto != PROTO_TCP {
        return 0;
    }
    let f = flow.tcp_flags;
    let mut s = 0;
    if f & TCP_SYN != 0 {
        s |= CT_SEEN_SYN;
    }
    if f & TCP_ACK != 0 {
        s |= CT_SEEN_ACK;
    }
    if f & TCP_FIN != 0 {
        s |= CT_SEEN_FIN;
    }
    if f & TCP_RST != 0 {
        s |= CT_SEEN_RST;
    }
    s
}

/// The entry that rewrites packets to `(saddr, daddr, sport, dport)`.
#[inline(always)]
pub fn entry(key: &CtKey, kind: u8, out_ifindex: u32) -> CtEntry {
    CtEntry {
        saddr: key.saddr,
        daddr: key.daddr,
        sport: key.sport,
        dport: key.dport,
        kind,
        out_ifindex,
        last_seen: now(),
        ..CtEntry::default()
    }
}

/// Creates the pair for a new flow: `flow.key` -> `fwd`, and the reverse of
/// `fwd` -> the reverse of `flow.key` (with `rev_kind`, `rev_ifindex`).
/// The reverse entry goes in first; with `exclusive` it must not exist yet
/// (it is the reservation of a masquerade port).
#[inline(always)]
pub fn create_pair(
    flow: &Flow,
    fwd: &CtEntry,
    rev_kind: u8,
    rev_ifindex: u32,
    exclusive: bool,
    len: u32,
) -> Result<bool, DropReason> {
    let rev_key = CtKey::new(fwd.daddr, fwd.saddr, fwd.dport, fwd.sport, flow.key.proto);
    let mut rev = entry(&flow.key.reversed(), rev_kind, rev_ifindex);
    rev.port_key = fwd.port_key;
    // Never over a live flow: the reverse tuple is what replies are matched on.
    if CONNTRACK
        .insert(rev_key, rev, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // SAFETY: value copied out immediately.
        let old = unsafe { CONNTRACK.get(rev_key) }.copied();
        let ours = old.is_some_and(|o| points_back(&o, &flow.key.reversed()));
        let live = old.is_some_and(|o| !stale(&o, flow.key.proto, now()));
        if live && !ours {
            // Taken by another live flow: a masquerade tries another port.
            return if exclusive {
                Ok(false)
            } else {
                Err(DropReason::ConntrackConflict)
            };
        }
        // Stale, or this very flow (its forward half was lost): replace it.
        CONNTRACK
            .insert(rev_key, rev, u64::from(BPF_ANY))
            .map_err(|_| DropReason::RewriteFailed)?;
    }
    let mut f = *fwd;
    f.packets = 1;
    f.bytes = u64::from(len);
    f.tcp_seen = seen_bits(flow);
    if CONNTRACK.insert(flow.key, f, 0).is_err() {
        let _ = CONNTRACK.remove(rev_key);
        return Err(DropReason::RewriteFailed);
    }
    Ok(true)
}

/// Bounded tries for a masquerade source port, each random in cnet's
/// masquerade range, which `cnet up` reserves from the host's own ephemeral
/// ports (`net.ipv4.ip_local_reserved_ports`): the host never picks one of
/// them by itself, and a port a host socket holds anyway is skipped.
const SNAT_TRIES: u32 = 8;

/// Whether a socket of the host (this namespace) would receive a packet
/// from `remote:rport` to `addr:port`: then that tuple is the host's.
#[inline(always)]
fn host_socket_holds(
    skb: *mut aya_ebpf::bindings::__sk_buff,
    proto: u8,
    addr: u32,
    port: u16,
    remote: u32,
    rport: u16,
) -> bool {
    if proto == PROTO_ICMP {
        return false;
    }
    // SAFETY: an all-zero tuple is valid; the IPv4 member is written below.
    let mut t: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    t.__bindgen_anon_1.ipv4 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
        saddr: remote,
        daddr: addr,
        sport: rport,
        dport: port,
    };
    let size = core::mem::size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    let skb = skb.cast();
    let netns = BPF_F_CURRENT_NETNS as u64;
    // SAFETY: helpers with a valid context and a stack tuple of `size` bytes;
    // a socket they return is released before returning.
    unsafe {
        let sk = if proto == PROTO_TCP {
            bpf_skc_lookup_tcp(skb, &mut t, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(skb, &mut t, size, netns, 0)
        };
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk.cast());
        true
    }
}

/// A masquerade port search (the `bpf_loop` context): inputs, and `port`
/// (network order) once one was found.
#[repr(C)]
struct PortPick {
    addr: u32,
    daddr: u32,
    dport: u16,
    proto: u8,
    found: u8,
    port: u16,
}

/// One random candidate port (a `bpf_loop` callback, verified once, not once
/// per try): never a port published on the host, nor one whose reply tuple
/// a live flow holds. 0 tries again, 1 stops.
#[inline(never)]
extern "C" fn pick_port(_i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `PortPick` that `masquerade` passed to bpf_loop.
    let p = unsafe { &mut *(ctx as *mut PortPick) };
    let span = u32::from(MASQ_PORT_HI - MASQ_PORT_LO) + 1;
    // SAFETY: helper without arguments.
    let r = unsafe { bpf_get_prandom_u32() };
    let port = ((u32::from(MASQ_PORT_LO) + r % span) as u16).to_be();
    let published = p.proto != PROTO_ICMP
        && (PORTS.get_ptr(PortKey::new(0, port, p.proto)).is_some()
            || PORTS.get_ptr(PortKey::new(p.addr, port, p.proto)).is_some());
    if published {
        return 0;
    }
    let dport = if p.proto == PROTO_ICMP { port } else { p.dport };
    let rev = CtKey::new(p.daddr, p.addr, dport, port, p.proto);
    // SAFETY: value copied out immediately.
    if unsafe { CONNTRACK.get(rev) }.is_some_and(|o| !stale(o, p.proto, now())) {
        return 0;
    }
    p.port = port;
    p.found = 1;
    1
}

/// Masquerades `flow` to `addr`, out of `ifindex`. Returns the new tuple.
/// Up to `SNAT_TRIES` random ports are looked at for one neither published
/// nor held by a live flow; a tuple a host socket holds gets one more
/// search; a conntrack collision after that (only a race with another CPU's
/// new flow) drops the packet, and the client's retransmission tries again.
#[inline(always)]
pub fn masquerade(
    ctx: &TcContext,
    flow: &Flow,
    addr: u32,
    ifindex: u32,
    rev_kind: u8,
    fwd_kind: u8,
    len: u32,
) -> Result<CtEntry, DropReason> {
    let k = &flow.key;
    let mut chosen = None;
    for _ in 0..2 {
        let mut p = PortPick {
            addr,
            daddr: k.daddr,
            dport: k.dport,
            proto: k.proto,
            found: 0,
            port: 0,
        };
        // SAFETY: a callback of bpf_loop's type and a context on this stack.
        unsafe {
            aya_ebpf::helpers::generated::bpf_loop(
                SNAT_TRIES,
                pick_port as *mut core::ffi::c_void,
                &mut p as *mut PortPick as *mut core::ffi::c_void,
                0,
            );
        }
        if p.found == 0 {
            break;
        }
        if !host_socket_holds(ctx.skb.skb, k.proto, addr, p.port, k.daddr, k.dport) {
            chosen = Some(p.port);
            break;
        }
    }
    let port = chosen.ok_or(DropReason::NatExhausted)?;
    let dport = if k.proto == PROTO_ICMP { port } else { k.dport };
    let fwd = entry(
        &CtKey::new(addr, k.daddr, port, dport, k.proto),
        fwd_kind,
        ifindex,
    );
    if create_pair(flow, &fwd, rev_kind, 0, true, len)? {
        return Ok(fwd);
    }
    Err(DropReason::NatExhausted)
}
