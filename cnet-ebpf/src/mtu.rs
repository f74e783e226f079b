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
use cnet_common::{DropReason, csum};

use crate::{
    maps::{ENDPOINTS, JUMPS, config},
    parse::ETH_HLEN,
    verdict::Action,
};

/// Slot of the answer program in `JUMPS`.
pub const JUMP_FRAG_NEEDED: u32 = 0;

/// Length of the answer: Ethernet, IPv4, ICMP header, the original IPv4
/// header and its first 8 payload bytes.
const ANSWER_LEN: u32 = 14 + 20 + 8 + 28;

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
        match unsafe { ENDPOINTS.get(daddr) } {
            Some(ep) => ep.ifindex,
            None => return Ok(()),
        }
    };
    let mut mtu: u32 = 0;
    // SAFETY: helper with a valid context and a stack variable.
    let rc = unsafe { bpf_check_mtu(ctx.skb.skb.cast(), dev, &mut mtu, 0, 0) };
    if rc <= 0 {
        return Ok(());
    }
    let frag: u16 = ctx
        .load(ETH_HLEN + 6)
        .map_err(|_| DropReason::MalformedIp)?;
    let vihl: u8 = ctx.load(ETH_HLEN).map_err(|_| DropReason::MalformedIp)?;
    if u16::from_be(frag) & 0x4000 == 0 || vihl != 0x45 {
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
        return crate::verdict::tc(Err(DropReason::TooBig));
    }
    crate::verdict::tc(r)
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
    // [0..20) IPv4, [20..28) ICMP, [28..56) the original header and 8 bytes.
    let mut b = [0u8; 56];
    let orig: [u8; 28] = ctx.load(ETH_HLEN).map_err(fail)?;
    b[28..56].copy_from_slice(&orig);
    let peer_mac: [u8; 6] = ctx.load(6).map_err(fail)?;
    let (from, src_mac) = if from_container {
        let c = config();
        (c.gateway, c.bridge_mac)
    } else {
        let m: [u8; 6] = ctx.load(0).map_err(fail)?;
        (
            u32::from_ne_bytes([orig[16], orig[17], orig[18], orig[19]]),
            m,
        )
    };
    // SAFETY: helper on a valid context; the packet only shrinks (it is
    // larger than the MTU, which is at least 68).
    if unsafe { bpf_skb_change_tail(ctx.skb.skb.cast(), ANSWER_LEN, 0) } != 0 {
        return Err(DropReason::RewriteFailed);
    }
    b[0] = 0x45;
    b[3] = (ANSWER_LEN - 14) as u8;
    b[6] = 0x40;
    b[8] = 64;
    b[9] = 1;
    b[12..16].copy_from_slice(&from.to_ne_bytes());
    b[16..20].copy_from_slice(&orig[12..16]);
    let ck = csum::checksum(&b[0..20]);
    b[10..12].copy_from_slice(&ck.to_be_bytes());
    b[20] = 3;
    b[21] = 4;
    b[26..28].copy_from_slice(&(mtu as u16).to_be_bytes());
    let ck = csum::checksum(&b[20..56]);
    b[22..24].copy_from_slice(&ck.to_be_bytes());
    ctx.store(0, &peer_mac, 0).map_err(fail)?;
    ctx.store(6, &src_mac, 0).map_err(fail)?;
    ctx.store(ETH_HLEN, &b, 0).map_err(fail)?;
    crate::verdict::count(cnet_common::Counter::FragNeeded as u32);
    // SAFETY: plain helper call.
    let rc = unsafe { bpf_redirect(back, 0) };
    Ok(Action::redirect(rc as i32))
}
