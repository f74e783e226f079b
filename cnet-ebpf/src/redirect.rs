//! Where translated packets go: straight into a container (redirect_peer), out
//! of a chosen device with neighbour resolution (redirect_neigh), or on to the stack.
use core::{mem, ptr};

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use cnet_common::DropReason;

use crate::{
    hdr::{ETH_DST, ETH_SRC, IP_CSUM_OFF, IP_TTL_OFF},
    maps::{ENDPOINTS, UPLINKS, config},
    parse::Flow,
    verdict::Action,
};

const AF_INET: u8 = 2;

/// A redirect forwards the packet past the stack, so it does what the stack's
/// forwarding would: the TTL goes down by one. A packet that would expire
/// (TTL <= 1) is handed to the stack instead, which answers with ICMP time
/// exceeded. Returns whether the packet may be redirected.
#[inline(always)]
fn forward_ttl(ctx: &TcContext) -> Result<bool, DropReason> {
    let word: u16 = ctx
        .load(IP_TTL_OFF)
        .map_err(|_| DropReason::RewriteFailed)?;
    let [ttl, proto] = word.to_ne_bytes();
    if ttl <= 1 {
        return Ok(false);
    }
    let new = u16::from_ne_bytes([ttl - 1, proto]);
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(word), u64::from(new), 2)
        .map_err(|_| DropReason::RewriteFailed)?;
    ctx.store(IP_TTL_OFF, &(ttl - 1), 0)
        .map_err(|_| DropReason::RewriteFailed)?;
    Ok(true)
}

/// Sends the packet to `daddr`: into its container if it is one (setting the
/// MACs a frame from the bridge would carry), else out of `out_ifindex` when
/// set, else on to the host stack.
#[inline(always)]
pub fn deliver(ctx: &TcContext, daddr: u32, out_ifindex: u32) -> Result<Action, DropReason> {
    let redirects = out_ifindex != 0 || ENDPOINTS.get_ptr(daddr).is_some();
    if redirects && !forward_ttl(ctx)? {
        return Ok(Action::PASS);
    }
    // SAFETY: value copied out immediately.
    if let Some(ep) = unsafe { ENDPOINTS.get(daddr) }.copied() {
        crate::observe::count_in(daddr, ctx.len());
        let mac = config().bridge_mac;
        ctx.store(ETH_DST, &ep.mac, 0)
            .map_err(|_| DropReason::RewriteFailed)?;
        ctx.store(ETH_SRC, &mac, 0)
            .map_err(|_| DropReason::RewriteFailed)?;
        // SAFETY: plain helper call.
        let rc = unsafe { bpf_redirect_peer(ep.ifindex, 0) };
        return Ok(Action::redirect(rc as i32));
    }
    if out_ifindex != 0 {
        // SAFETY: plain helper call; no explicit next hop (the helper looks it up).
        let rc = unsafe { bpf_redirect_neigh(out_ifindex, ptr::null_mut(), 0, 0) };
        return Ok(Action::redirect(rc as i32));
    }
    Ok(Action::PASS)
}

/// The uplink the host would route `flow` out of, with its masquerade address.
#[inline(never)]
pub fn uplink_for(ctx: &TcContext, flow: &Flow, ifindex: u32) -> Option<(u32, u32)> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid input.
    let mut p: bpf_fib_lookup = unsafe { mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = flow.key.proto;
    p.sport = flow.key.sport;
    p.dport = flow.key.dport;
    // No length: the lookup then fills in the egress device even for a packet
    // too big for it (see below); `mtu::check` decides what to do with those.
    p.__bindgen_anon_1.tot_len = 0;
    p.ifindex = ifindex;
    p.__bindgen_anon_3.ipv4_src = flow.key.saddr;
    p.__bindgen_anon_4.ipv4_dst = flow.key.daddr;
    // SAFETY: helper with a valid context and a stack buffer of the right size.
    let rc = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            &mut p,
            mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    // Without a length the helper checks the skb against the egress device
    // itself and reports FRAG_NEEDED with the device filled in: the route is
    // still the answer, `mtu::check` deals with the size.
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS)
        && rc != i64::from(BPF_FIB_LKUP_RET_NO_NEIGH)
        && rc != i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED)
    {
        return None;
    }
    // SAFETY: value copied out immediately.
    let up = unsafe { UPLINKS.get(p.ifindex) }.copied()?;
    Some((p.ifindex, up.addr))
}
