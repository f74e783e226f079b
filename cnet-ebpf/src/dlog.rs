//! Datapath debug logs through aya-log, read by `cnet logs --datapath`.
//! Written only while the instance's debug switch is on (`cnet up --debug`,
//! daemon.json `"debug": true`: the `CONFIG_DEBUG` bit in CONFIG). Off, the
//! cost is one bit test on paths that drop a packet or open a flow, and none
//! at all on packets of established flows. The log calls sit in functions of
//! their own (BPF-to-BPF calls), so the verifier walks them once per caller
//! instead of inlining them into every path.
use aya_ebpf::programs::{TcContext, XdpContext};
use aya_log_ebpf::debug;
use cnet_common::maps::{CONFIG_DEBUG, CtEntry, CtKey};

use crate::{
    hdr::{IP_DST_OFF, IP_SRC_OFF},
    maps::config,
};

#[inline(always)]
pub fn on() -> bool {
    config().flags & CONFIG_DEBUG != 0
}

/// A dropped packet: the reason's counter slot (`cnet logs` prints its
/// name), the interface and the addresses as they are now.
#[inline(never)]
pub fn drop(ctx: &TcContext, reason: u32) {
    let saddr: u32 = ctx.load(IP_SRC_OFF).unwrap_or(0);
    let daddr: u32 = ctx.load(IP_DST_OFF).unwrap_or(0);
    // SAFETY: reading a field of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    debug!(
        ctx,
        "drop reason={} if={} {:i} -> {:i}",
        reason,
        ifindex,
        u32::from_be(saddr),
        u32::from_be(daddr)
    );
}

/// A new translated flow: the tuple as it came and as it leaves.
#[inline(never)]
pub fn flow(ctx: &TcContext, kind: u8, from: &CtKey, to: &CtEntry) {
    debug!(
        ctx,
        "flow kind={} proto={} {:i}:{} -> {:i}:{} as {:i}:{} -> {:i}:{}",
        kind,
        from.proto,
        u32::from_be(from.saddr),
        u16::from_be(from.sport),
        u32::from_be(from.daddr),
        u16::from_be(from.dport),
        u32::from_be(to.saddr),
        u16::from_be(to.sport),
        u32::from_be(to.daddr),
        u16::from_be(to.dport)
    );
}

/// A packet XDP dropped on an uplink, before an skb existed.
#[inline(never)]
pub fn drop_xdp(ctx: &XdpContext, reason: u32) {
    // SAFETY: reading a field of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    debug!(ctx, "drop reason={} if={} (xdp)", reason, ifindex);
}
