//! Anti-spoofing on a container's host-side veth: everything a container
//! sends must carry its own identity. An IPv4 packet's source address must be
//! an endpoint whose interface is the one the packet came in on, and whose
//! MAC is the frame's source; an ARP packet must announce that same address
//! and MAC (or 0.0.0.0, a probe that teaches no cache); IPv6 and every other
//! EtherType are dropped (cnet's networks are IPv4 only).
use aya_ebpf::programs::TcContext;
use cnet_common::{DropReason, maps::Endpoint};

use crate::{
    hdr::{ARP_SHA, ARP_SPA, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ETH_PROTO, ETH_SRC},
    maps::ENDPOINTS,
    parse::Ipv4View,
};

/// Checks what a container sent on interface `ifindex`; returns the IPv4
/// header to go on with, or `None` for an ARP packet that passed.
#[inline(always)]
pub fn from_container(ctx: &TcContext, ifindex: u32) -> Result<Option<Ipv4View>, DropReason> {
    let proto: u16 = ctx.load(ETH_PROTO).map_err(|_| DropReason::MalformedIp)?;
    match u16::from_be(proto) {
        ETH_P_IP => {
            let ip = Ipv4View::parse(ctx)?.ok_or(DropReason::MalformedIp)?;
            owned(ctx, ip.saddr, ifindex, ETH_SRC)?;
            Ok(Some(ip))
        }
        ETH_P_ARP => {
            let spa: u32 = ctx.load(ARP_SPA).map_err(|_| DropReason::MalformedIp)?;
            if spa != 0 {
                owned(ctx, spa, ifindex, ARP_SHA)?;
                owned(ctx, spa, ifindex, ETH_SRC)?;
            }
            Ok(None)
        }
        ETH_P_IPV6 => Err(DropReason::Ipv6),
        _ => Err(DropReason::NonIp),
    }
}

/// `addr` must be an endpoint on `ifindex` whose MAC is at offset `mac_off`.
/// BPF_PROG_TEST_RUN runs programs on `lo` (ifindex 1), which cnet never
/// attaches to: there the interface check is left out, the others stay.
#[inline(always)]
fn owned(ctx: &TcContext, addr: u32, ifindex: u32, mac_off: usize) -> Result<(), DropReason> {
    // SAFETY: value copied out at once.
    let ep: Endpoint = unsafe { ENDPOINTS.get(addr) }
        .copied()
        .ok_or(DropReason::Spoofed)?;
    if ifindex > 1 && ep.ifindex != ifindex {
        return Err(DropReason::Spoofed);
    }
    let mac: [u8; 6] = ctx.load(mac_off).map_err(|_| DropReason::MalformedIp)?;
    if mac != ep.mac {
        return Err(DropReason::Spoofed);
    }
    Ok(())
}
