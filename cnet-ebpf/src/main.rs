//! cnet's kernel side. Entry points only: each calls a `try_*` function that
//! returns `Result<Action, DropReason>`, and [`verdict::tc`] turns that into a
//! TC code in one place (counting drops by reason).
#![no_std]
#![no_main]

mod dlog;
mod frag;
mod guard;
mod hdr;
mod icmp;
mod maps;
mod mtu;
mod nat;
mod observe;
mod parse;
mod policy;
mod redirect;
mod sock;
mod verdict;
mod xdp;

use aya_ebpf::{
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};
use cnet_common::{
    DropReason,
    maps::{
        CONFIG_MASQUERADE, CT_DNAT, CT_REV_DNAT, CT_REV_SNAT, CT_SNAT, CtEntry, CtKey,
        EVENT_FLOW_NEW, FLOW_HAIRPIN, JUMP_UPLINK_NEW, JUMP_VETH_MASQ, JUMP_VETH_NEW,
        NETWORK_NO_MASQ, PROTO_ICMP,
    },
};

use crate::{
    parse::{Flow, Ipv4View},
    redirect::deliver,
    verdict::{Action, count_kind},
};

/// TC ingress on an uplink: traffic from the outside world. DNATs published
/// ports and reverse-translates replies to masqueraded flows.
#[classifier]
pub fn cnet_uplink_ingress(ctx: TcContext) -> i32 {
    next_stage(&ctx, try_uplink_ingress(&ctx), JUMP_UPLINK_NEW)
}

/// The uplink's second stage, reached by tail call from
/// `cnet_uplink_ingress` for a packet no flow knows: a new flow to a
/// published port, or the policy for traffic from outside.
#[classifier]
pub fn cnet_uplink_new(ctx: TcContext) -> i32 {
    mtu::verdict(&ctx, try_uplink_new(&ctx))
}

/// Reached by a tail call only: answers a DF packet that is too big for its
/// way out with ICMP "fragmentation needed" (see `mtu`).
#[classifier]
pub fn cnet_frag_needed(ctx: TcContext) -> i32 {
    verdict::tc(&ctx, mtu::answer(&ctx))
}

/// XDP on an uplink: filter rules, before an skb exists.
#[xdp]
pub fn cnet_uplink_xdp(ctx: XdpContext) -> u32 {
    xdp::verdict(&ctx, xdp::try_uplink_xdp(&ctx))
}

/// TC ingress on a container's host-side veth: everything a container sends.
/// Reverse-DNATs replies, masquerades outgoing flows, handles hairpin.
#[classifier]
pub fn cnet_veth_ingress(ctx: TcContext) -> i32 {
    next_stage(&ctx, try_veth_ingress(&ctx), JUMP_VETH_NEW)
}

/// The veth's second stage, reached by tail call from `cnet_veth_ingress`
/// for a packet no flow knows: icc, `--internal`, hairpin.
#[classifier]
pub fn cnet_veth_new(ctx: TcContext) -> i32 {
    next_stage(&ctx, try_veth_new(&ctx), JUMP_VETH_NEW)
}

/// The veth's third stage, reached by tail call from `cnet_veth_new`: a new
/// flow leaving the host, masqueraded.
#[classifier]
pub fn cnet_veth_masq(ctx: TcContext) -> i32 {
    mtu::verdict(&ctx, try_veth_masq(&ctx))
}

/// The TC programs come in stages, programs of their own chained by tail
/// calls, so the verifier checks each once instead of once per path of the
/// ones before (one program took a second to load). A stage asks for the
/// next with one of the pseudo drop reasons (`NewFlow` goes to `new_flow`,
/// the hook's second stage); a missing target drops the packet rather than
/// let it pass untranslated.
#[inline(always)]
fn next_stage(ctx: &TcContext, r: Result<Action, DropReason>, new_flow: u32) -> i32 {
    let slot = match r {
        Err(DropReason::NewFlow) => new_flow,
        Err(DropReason::Masquerade) => JUMP_VETH_MASQ,
        _ => return mtu::verdict(ctx, r),
    };
    // SAFETY: a tail call with our own context; on success it does not return.
    unsafe { maps::JUMPS.tail_call(ctx, slot) };
    verdict::tc(ctx, Err(DropReason::NoProgram))
}

/// Host-local access: `connect()` to a published port goes to the container.
#[cgroup_sock_addr(connect4)]
pub fn cnet_connect4(ctx: SockAddrContext) -> i32 {
    sock::to_container(&ctx, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn cnet_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::to_container(&ctx, false)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn cnet_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock::from_container(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn cnet_getpeername4(ctx: SockAddrContext) -> i32 {
    sock::from_container(&ctx)
}

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel handed us.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Translation shared by both hooks: ICMP errors and known flows.
#[inline(always)]
fn tracked(
    ctx: &TcContext,
    ip: &Ipv4View,
    flow: &Flow,
    from_container: bool,
) -> Result<Option<Action>, DropReason> {
    if flow.is_icmp_error() {
        return match icmp::translate_error(ctx, flow, from_container)? {
            Some(n) => deliver(ctx, n.daddr, n.out_ifindex).map(Some),
            // An error about nothing cnet translated must not leave a
            // container with its private source.
            None if from_container && would_masquerade(ip.saddr, ip.daddr) => {
                Err(DropReason::IcmpForeign)
            }
            None => Ok(None),
        };
    }
    if let Some(e) = nat::lookup(&flow.key, flow, ctx.len()) {
        mtu::check(ctx, e.daddr, e.out_ifindex, from_container)?;
        nat::rewrite(ctx, flow, &e)?;
        count_kind(e.kind);
        observe::count_port(&flow.key, &e, ctx.len(), false);
        frag::remember(ip, e.saddr, e.daddr, e.out_ifindex);
        return deliver(ctx, e.daddr, e.out_ifindex).map(Some);
    }
    Ok(None)
}

fn try_uplink_ingress(ctx: &TcContext) -> Result<Action, DropReason> {
    let Some(ip) = Ipv4View::parse(ctx)? else {
        return Ok(Action::PASS);
    };
    let flow = Flow::parse(ctx, &ip)?;
    // Filters see everything from outside, as it will be delivered.
    let dport = flow.as_ref().map(|f| f.key.dport).unwrap_or(0);
    policy::filters_delivered(ip.saddr, ip.daddr, ip.proto, dport, true)?;
    let Some(flow) = flow else {
        if ip.later_fragment
            && let Some(action) = frag::follow(ctx, &ip)?
        {
            return Ok(action);
        }
        return policy::from_outside(ip.daddr).map(|()| Action::PASS);
    };
    if let Some(action) = tracked(ctx, &ip, &flow, false)? {
        return Ok(action);
    }
    // Untracked: the second stage decides (see cnet_uplink_new).
    Err(DropReason::NewFlow)
}

/// A packet from outside that no flow knows: a SYN (or UDP datagram) to a
/// published port opens a DNAT flow; everything else meets the policy for
/// traffic from outside.
fn try_uplink_new(ctx: &TcContext) -> Result<Action, DropReason> {
    let ip = Ipv4View::parse_again(ctx)?;
    let Some(flow) = Flow::parse(ctx, &ip)? else {
        return policy::from_outside(ip.daddr).map(|()| Action::PASS);
    };
    let k = &flow.key;
    // Only a SYN (or any UDP datagram) opens a flow to a published port: a
    // stray ACK creates no state (netfilter without loose pickup).
    if k.proto == PROTO_ICMP || !flow.may_open() {
        return policy::from_outside(k.daddr).map(|()| Action::PASS);
    }
    let Some((to, exact)) = maps::published_by(k.daddr, k.dport, k.proto) else {
        return policy::from_outside(k.daddr).map(|()| Action::PASS);
    };
    let mut fwd = nat::entry(
        &CtKey::new(k.saddr, to.addr, k.sport, to.port, k.proto),
        CT_DNAT,
        0,
    );
    fwd.port_key = observe::port_key_kind(exact);
    nat::create_pair(&flow, &fwd, CT_REV_DNAT, ifindex(ctx), false, ctx.len())?;
    nat::rewrite(ctx, &flow, &fwd)?;
    count_kind(CT_DNAT);
    opened(ctx, CT_DNAT, k, &fwd);
    frag::remember(&ip, fwd.saddr, fwd.daddr, 0);
    deliver(ctx, fwd.daddr, 0)
}

fn try_veth_ingress(ctx: &TcContext) -> Result<Action, DropReason> {
    let Some(ip) = guard::from_container(ctx, ifindex(ctx))? else {
        return Ok(Action::PASS);
    };
    observe::count_out(ip.saddr, ctx.len());
    let flow = Flow::parse(ctx, &ip)?;
    let (sport, dport) = flow
        .as_ref()
        .map(|f| (f.key.sport, f.key.dport))
        .unwrap_or((0, 0));
    let verdict = policy::filters_delivered(ip.saddr, ip.daddr, ip.proto, dport, true)?;
    let Some(flow) = flow else {
        if ip.later_fragment {
            if let Some(action) = frag::follow(ctx, &ip)? {
                return Ok(action);
            }
            // Its first fragment was not translated: it must not leave with
            // the container's private source.
            if would_masquerade(ip.saddr, ip.daddr) {
                return Err(DropReason::Fragment);
            }
        }
        // Protocols cnet does not translate, and later fragments: icc and
        // --internal apply to them as to everything else.
        if verdict == policy::Verdict::None {
            policy::icc(ip.saddr, ip.daddr, ip.proto, sport, dport)?;
            policy::internal(ip.saddr, ip.daddr, maps::is_host_addr(ip.daddr))?;
        }
        return Ok(Action::PASS);
    };
    // About to expire on its way out: untranslated to the stack, which sends
    // the container ICMP time exceeded from the gateway (traceroute's first hop).
    if ip.ttl <= 1 && maps::ENDPOINTS.get_ptr(ip.daddr).is_none() {
        return Ok(Action::PASS);
    }
    if let Some(action) = tracked(ctx, &ip, &flow, true)? {
        return Ok(action);
    }
    // Untracked: the second stage decides (see cnet_veth_new), with the
    // filter verdict in the control block.
    keep_verdict(ctx, verdict);
    Err(DropReason::NewFlow)
}

/// A packet from a container that no flow knows: icc and `--internal` (unless
/// an allow rule matched), then a new flow by hairpin, or on to masquerade. The
/// first stage checked the sender, ran the filters and left their verdict
/// in the control block; parsing again costs less than the verifier time
/// one program doing both cost.
fn try_veth_new(ctx: &TcContext) -> Result<Action, DropReason> {
    let ip = Ipv4View::parse_again(ctx)?;
    let Some(flow) = Flow::parse(ctx, &ip)? else {
        return Ok(Action::PASS);
    };
    let (sport, dport) = (flow.key.sport, flow.key.dport);
    if !allowed(ctx) {
        policy::icc(ip.saddr, ip.daddr, ip.proto, sport, dport)?;
        policy::internal(ip.saddr, ip.daddr, maps::is_host_addr(ip.daddr))?;
    }
    if !flow.may_open() {
        return Ok(to_bridge(ctx, ip.daddr));
    }
    let k = &flow.key;
    // Hairpin: a container reaching a published port through a host address.
    if k.proto != PROTO_ICMP
        && let Some((to, exact)) = maps::published_by(k.daddr, k.dport, k.proto)
    {
        // Reaching itself: the source becomes the gateway, or the reply would
        // never leave the container.
        let saddr = if to.addr == k.saddr {
            maps::config().gateway
        } else {
            k.saddr
        };
        let mut fwd = nat::entry(
            &CtKey::new(saddr, to.addr, k.sport, to.port, k.proto),
            CT_DNAT,
            0,
        );
        fwd.port_key = observe::port_key_kind(exact);
        nat::create_pair(&flow, &fwd, CT_REV_DNAT, 0, false, ctx.len())?;
        nat::rewrite(ctx, &flow, &fwd)?;
        count_kind(CT_DNAT);
        opened(ctx, FLOW_HAIRPIN, k, &fwd);
        frag::remember(&ip, fwd.saddr, fwd.daddr, 0);
        return deliver(ctx, fwd.daddr, 0);
    }
    // Masquerade: leaving the host through an uplink.
    if !would_masquerade(k.saddr, k.daddr) {
        return Ok(to_bridge(ctx, k.daddr));
    }
    Err(DropReason::Masquerade)
}

/// Untranslated to the stack, which bridges it when `daddr` is a container
/// of the same network: counted as handed to that container.
#[inline(always)]
fn to_bridge(ctx: &TcContext, daddr: u32) -> Action {
    observe::count_in(daddr, ctx.len());
    Action::PASS
}

/// A new flow from a container leaving the host (the second stage checked
/// policy and that it is to be masqueraded): a source port, the pair of
/// conntrack entries, the rewrite, out of the uplink.
fn try_veth_masq(ctx: &TcContext) -> Result<Action, DropReason> {
    let ip = Ipv4View::parse_again(ctx)?;
    let Some(flow) = Flow::parse(ctx, &ip)? else {
        return Ok(Action::PASS);
    };
    let k = &flow.key;
    let Some((egress, addr)) = redirect::uplink_for(ctx, &flow, ifindex(ctx)) else {
        return Ok(Action::PASS);
    };
    mtu::check_dev(ctx, egress, true)?;
    let fwd = nat::masquerade(ctx, &flow, addr, egress, CT_REV_SNAT, CT_SNAT, ctx.len())?;
    nat::rewrite(ctx, &flow, &fwd)?;
    count_kind(CT_SNAT);
    opened(ctx, CT_SNAT, k, &fwd);
    frag::remember(&ip, fwd.saddr, fwd.daddr, egress);
    deliver(ctx, fwd.daddr, egress)
}

/// Keeps the filter verdict in the packet's control block for the second
/// stage (cb[0] and cb[1] belong to mtu.rs).
#[inline(always)]
fn keep_verdict(ctx: &TcContext, v: policy::Verdict) {
    // SAFETY: cb is scratch space for programs in the skb we were handed.
    unsafe { (*ctx.skb.skb).cb[4] = u32::from(v == policy::Verdict::Allow) };
}

/// Whether an allow rule matched this packet (see `keep_verdict`).
#[inline(always)]
fn allowed(ctx: &TcContext) -> bool {
    // SAFETY: as in keep_verdict.
    unsafe { (*ctx.skb.skb).cb[4] != 0 }
}

/// A new translated flow: counted on its published port (DNAT), logged and
/// reported to `cnet monitor` when they are on.
#[inline(always)]
fn opened(ctx: &TcContext, kind: u8, k: &CtKey, fwd: &CtEntry) {
    observe::count_port(k, fwd, ctx.len(), true);
    if dlog::on() {
        dlog::flow(ctx, kind, k, fwd);
    }
    if observe::wanted(EVENT_FLOW_NEW) {
        observe::flow_event(EVENT_FLOW_NEW, kind, ifindex(ctx), k, fwd);
    }
}

/// Whether a packet from container `saddr` to `daddr` leaves the host
/// masqueraded (not to the host, not to a container, masquerade on).
#[inline(always)]
fn would_masquerade(saddr: u32, daddr: u32) -> bool {
    maps::config().flags & CONFIG_MASQUERADE != 0
        && policy::network_flags(saddr) & NETWORK_NO_MASQ == 0
        && !maps::is_host_addr(daddr)
        && maps::ENDPOINTS.get_ptr(daddr).is_none()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
