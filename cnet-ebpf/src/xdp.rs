//! XDP on uplinks: filter rules applied to traffic from outside before an skb
//! exists. A packet to a published port is matched as it will be delivered
//! (container address and port), as Docker's DOCKER-USER chain sees it.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use cnet_common::{
    DropReason,
    maps::{PROTO_TCP, PROTO_UDP},
};

use crate::policy;

const ETH_HLEN: usize = 14;

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
    let Some(proto) = ptr_at::<u16>(ctx, 12) else {
        return Ok(());
    };
    // SAFETY: bounds checked by ptr_at.
    if u16::from_be(unsafe { *proto }) != 0x0800 {
        return Ok(());
    }
    let Some(vihl) = ptr_at::<u8>(ctx, ETH_HLEN) else {
        return Err(DropReason::MalformedIp);
    };
    // SAFETY: bounds checked by ptr_at.
    let vihl = unsafe { *vihl };
    let hlen = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || hlen < 20 {
        return Err(DropReason::MalformedIp);
    }
    let Some(hdr) = ptr_at::<[u32; 5]>(ctx, ETH_HLEN) else {
        return Err(DropReason::MalformedIp);
    };
    // SAFETY: bounds checked by ptr_at.
    let hdr = unsafe { *hdr };
    let (saddr, daddr) = (hdr[3], hdr[4]);
    let b = hdr[2].to_ne_bytes();
    let l4proto = b[1];
    let frag = u16::from_be_bytes([hdr[1].to_ne_bytes()[2], hdr[1].to_ne_bytes()[3]]) & 0x1fff;
    let mut dport = 0u16;
    if (l4proto == PROTO_TCP || l4proto == PROTO_UDP) && frag == 0 {
        let Some(ports) = ptr_at::<[u16; 2]>(ctx, ETH_HLEN + hlen) else {
            return Err(DropReason::MalformedL4);
        };
        // SAFETY: bounds checked by ptr_at.
        let ports = unsafe { *ports };
        dport = ports[1];
    }
    // Drops here, before an skb exists; everything else is matched (and
    // counted) again by the uplink's TC program.
    policy::filters_delivered(saddr, daddr, l4proto, dport, false).map(|_| ())
}

#[inline(always)]
pub fn verdict(r: Result<(), DropReason>) -> u32 {
    match r {
        Ok(()) => xdp_action::XDP_PASS,
        Err(reason) => {
            crate::verdict::count(reason as u32);
            xdp_action::XDP_DROP
        }
    }
}
