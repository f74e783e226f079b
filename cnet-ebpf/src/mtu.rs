//! Path MTU for redirected packets. `bpf_redirect_neigh` and
//! `bpf_redirect_peer` skip the stack's MTU check, so the datapath does it
//! before translating: a packet with DF set that does not fit the device it
//! is about to leave by is answered with ICMP "fragmentation needed"
//! carrying that device's MTU. The answer is built in place by a program of
//! its own, reached by a tail call (it needs buffers the hot path has no
//! stack for); its parameters travel in the skb's control block. A packet
//! without DF that does not fit is dropped (`drop_too_big`): the stack
//! cannot fragment a translated packet for cnet.
use aya_ebpf::{
    helpers::{bpf_check_mtu, bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use cnet_common::{DropReason, csum, maps::JUMP_FRAG_NEEDED};

use crate::{
    hdr::{
        ETH_DST, ETH_HLEN, ETH_SRC, ICMP_CSUM, ICMP_HLEN, ICMP_MTU, IP_DF, IP_FRAG_OFF, IPV4_CHECK,
        IPV4_DST, IPV4_FRAGS, IPV4_MIN_LEN, IPV4_SRC, IPV4_TTL,
    },
    maps::{ENDPOINTS, JUMPS, config},
    verdict::Action,
};

/// Length of the answer: Ethernet, IPv4, ICMP header, the original IPv4
/// header and its first 8 payload bytes.
const ANSWER_LEN: u32 = (ETH_HLEN + IPV4_MIN_LEN + ICMP_HLEN + IPV4_MIN_LEN + 8) as u32;

/// Checks the packet against the device it will leave by (`out_ifindex`, or
/// the container's veth when `daddr` is a container). Too big with DF:
/// `Err(AnswerFragNeeded)`, which [`verdict`] turns into the tail call.
#[inline(always)]
pub fn check(
    ctx: &TcContext,
    daddr: u32,
    out_ifindex: u32,
    from_container: bool,
) -> Result<(), DropReason> {
    let dev = if out_ifindex != 0 {
        out_ifindex
    } else {
        // SAFETY: value copied out at once.
        unsafe { ENDPOINTS.get(daddr) }.map_or(0, |ep| ep.ifindex)
    };
    if dev == 0 {
        return Ok(());
    }
    check_dev(ctx, dev, from_container)
}

/// [`check`] against device `dev`.
#[inline(always)]
pub fn check_dev(ctx: &TcContext, dev: u32, from_container: bool) -> Result<(), DropReason> {
    let mut mtu: u32 = 0;
    // SAFETY: helper with a valid context and a stack variable.
    let rc = unsafe { bpf_check_mtu(ctx.skb.skb.cast(), dev, &mut mtu, 0, 0) };
    if rc <= 0 {
        return Ok(());
    }
    let frag: u16 = ctx.load(IP_FRAG_OFF).map_err(|_| DropReason::MalformedIp)?;
    let vihl: u8 = ctx.load(ETH_HLEN).map_err(|_| DropReason::MalformedIp)?;
    if u16::from_be(frag) & IP_DF == 0 || vihl != 0x45 {
        return Err(DropReason::TooBig);
    }
    // SAFETY: writing the control block of the skb we were handed; it is
    // scratch space for programs.
    unsafe {
        let skb = ctx.skb.skb;
        (*skb).cb[0] = mtu;
        (*skb).cb[1] = u32::from(from_container);
    }
    Err(DropReason::AnswerFragNeeded)
}

/// Turns a result into the TC verdict, doing the tail call to the answer
/// program when asked for (a tail call is only allowed in the program's own
/// function, which returns an int).
#[inline(always)]
pub fn verdict(ctx: &TcContext, r: Result<Action, DropReason>) -> i32 {
    if let Err(DropReason::AnswerFragNeeded) = r {
        // SAFETY: a tail call with our own context; on success it does not return.
        unsafe { JUMPS.tail_call(ctx, JUMP_FRAG_NEEDED) };
        return crate::verdict::tc(ctx, Err(DropReason::TooBig));
    }
    crate::verdict::tc(ctx, r)
}

/// The answer program: turns the packet into ICMP "fragmentation needed"
/// (from the container's gateway, or from the host address an outside
/// client used) and sends it back out of the device it came in on.
#[inline(always)]
pub fn answer(ctx: &TcContext) -> Result<Action, DropReason> {
    let fail = |_| DropReason::RewriteFailed;
    // SAFETY: reading the control block and ifindex of our own skb.
    let (mtu, from_container, back) = unsafe {
        let skb = ctx.skb.skb;
        ((*skb).cb[0], (*skb).cb[1] != 0, (*skb).ifindex)
    };
    // The IPv4 header, the ICMP header, then the original header and 8 bytes.
    const IP: usize = 0;
    const ICMP: usize = IPV4_MIN_LEN;
    const ORIG: usize = ICMP + ICMP_HLEN;
    const LEN: usize = ORIG + IPV4_MIN_LEN + 8;
    let mut b = [0u8; LEN];
    let orig: [u8; LEN - ORIG] = ctx.load(ETH_HLEN).map_err(fail)?;
    b[ORIG..LEN].copy_from_slice(&orig);
    let peer_mac: [u8; 6] = ctx.load(ETH_SRC).map_err(fail)?;
    let (from, src_mac) = if from_container {
        let c = config();
        (c.gateway, c.bridge_mac)
    } else {
        let m: [u8; 6] = ctx.load(ETH_DST).map_err(fail)?;
        let d = IPV4_DST;
        (
            u32::from_ne_bytes([orig[d], orig[d + 1], orig[d + 2], orig[d + 3]]),
            m,
        )
    };
    // SAFETY: helper on a valid context; the packet only shrinks (it is
    // larger than the MTU, which is at least 68).
    if unsafe { bpf_skb_change_tail(ctx.skb.skb.cast(), ANSWER_LEN, 0) } != 0 {
        return Err(DropReason::RewriteFailed);
    }
    b[IP] = 0x45;
    b[IP + 2..IP + 4].copy_from_slice(&(LEN as u16).to_be_bytes());
    b[IP + IPV4_FRAGS..IP + IPV4_FRAGS + 2].copy_from_slice(&IP_DF.to_be_bytes());
    b[IP + IPV4_TTL] = 64;
    b[IP + IPV4_TTL + 1] = cnet_common::maps::PROTO_ICMP;
    b[IP + IPV4_SRC..IP + IPV4_SRC + 4].copy_from_slice(&from.to_ne_bytes());
    b[IP + IPV4_DST..IP + IPV4_DST + 4].copy_from_slice(&orig[IPV4_SRC..IPV4_SRC + 4]);
    let ck = csum::checksum(&b[IP..ICMP]);
    b[IP + IPV4_CHECK..IP + IPV4_CHECK + 2].copy_from_slice(&ck.to_be_bytes());
    // Destination unreachable, fragmentation needed, with the next-hop MTU.
    b[ICMP] = 3;
    b[ICMP + 1] = 4;
    b[ICMP + ICMP_MTU..ICMP + ICMP_MTU + 2].copy_from_slice(&(mtu as u16).to_be_bytes());
    let ck = csum::checksum(&b[ICMP..LEN]);
    b[ICMP + ICMP_CSUM..ICMP + ICMP_CSUM + 2].copy_from_slice(&ck.to_be_bytes());
    ctx.store(ETH_DST, &peer_mac, 0).map_err(fail)?;
    ctx.store(ETH_SRC, &src_mac, 0).map_err(fail)?;
    ctx.store(ETH_HLEN, &b, 0).map_err(fail)?;
    crate::verdict::count(cnet_common::Counter::FragNeeded as u32);
    // SAFETY: plain helper call.
    let rc = unsafe { bpf_redirect(back, 0) };
    Ok(Action::redirect(rc as i32))
}
