//! XDP on uplinks: filter rules applied to traffic from outside before an skb
//! exists. A packet to a published port is matched as it will be delivered
//! (container address and port), as Docker's DOCKER-USER chain sees it.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use cnet_common::{
    DropReason,
    maps::{PROTO_TCP, PROTO_UDP},
};

use network_types::ip::Ipv4Hdr;

use crate::{
    hdr::{ETH_HLEN, ETH_P_IP, ETH_PROTO, TCP_DPORT},
    parse::Ipv4View,
    policy,
};

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const T)
}

/// `Ok(())` lets the packet pass (to TC, which translates it).
#[inline(always)]
pub fn try_uplink_xdp(ctx: &XdpContext) -> Result<(), DropReason> {
    let Some(proto) = ptr_at::<u16>(ctx, ETH_PROTO) else {
        return Ok(());
    };
    // SAFETY: bounds checked by ptr_at.
    if u16::from_be(unsafe { *proto }) != ETH_P_IP {
        return Ok(());
    }
    let Some(hdr) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return Err(DropReason::MalformedIp);
    };
    // SAFETY: bounds checked by ptr_at.
    let ip = Ipv4View::from_hdr(unsafe { &*hdr }, ctx.data_end() - ctx.data())?;
    let mut dport = 0u16;
    if (ip.proto == PROTO_TCP || ip.proto == PROTO_UDP) && !ip.later_fragment {
        // The destination port is at the same offset in TCP and UDP.
        const _: () = assert!(TCP_DPORT == 2);
        let Some(port) = ptr_at::<u16>(ctx, ETH_HLEN + ip.hlen + TCP_DPORT) else {
            return Err(DropReason::MalformedL4);
        };
        // SAFETY: bounds checked by ptr_at.
        dport = unsafe { *port };
    }
    // Drops here, before an skb exists; everything else is matched (and
    // counted) again by the uplink's TC program.
    policy::filters_delivered(ip.saddr, ip.daddr, ip.proto, dport, false).map(|_| ())
}

#[inline(always)]
pub fn verdict(ctx: &XdpContext, r: Result<(), DropReason>) -> u32 {
    match r {
        Ok(()) => xdp_action::XDP_PASS,
        Err(reason) => {
            crate::verdict::count(reason as u32);
            if crate::observe::wanted(cnet_common::maps::EVENT_DROP) {
                drop_event(ctx, reason as u32);
            }
            if crate::dlog::on() {
                crate::dlog::drop_xdp(ctx, reason as u32);
            }
            xdp_action::XDP_DROP
        }
    }
}

/// A packet XDP dropped, for `cnet monitor`: addresses and the destination
/// port as far as the frame holds them.
#[inline(never)]
fn drop_event(ctx: &XdpContext, reason: u32) {
    let (mut saddr, mut daddr, mut proto, mut dport) = (0, 0, 0, 0);
    if let Some(hdr) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) {
        // SAFETY: bounds checked by ptr_at.
        let h = unsafe { &*hdr };
        saddr = u32::from_ne_bytes(h.src_addr);
        daddr = u32::from_ne_bytes(h.dst_addr);
        proto = h.proto;
        let hlen = usize::from(h.ihl());
        if (proto == PROTO_TCP || proto == PROTO_UDP)
            && let Some(p) = ptr_at::<u16>(ctx, ETH_HLEN + hlen + TCP_DPORT)
        {
            // SAFETY: bounds checked by ptr_at.
            dport = unsafe { *p };
        }
    }
    // SAFETY: reading a field of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let t = cnet_common::maps::CtKey::new(saddr, daddr, 0, dport, proto);
    crate::observe::tuple_event(cnet_common::maps::EVENT_DROP, reason as u8, ifindex, &t, 0);
}
