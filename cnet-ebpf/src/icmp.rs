//! ICMP errors (destination unreachable, time exceeded) about translated
//! flows: the embedded header is rewritten back, and the outer addresses with it.
use aya_ebpf::programs::TcContext;
use cnet_common::{
    DropReason, csum,
    maps::{CtEntry, CtKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP},
};
use network_types::ip::Ipv4Hdr;

use crate::{
    hdr::{
        ICMP_CSUM, ICMP_HLEN, ICMP_ID, IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF, IPV4_CHECK, IPV4_DST,
        IPV4_MIN_LEN, IPV4_SRC, TCP_DPORT, TCP_SPORT, UDP_CSUM,
    },
    maps::CONNTRACK,
    parse::Flow,
};

/// The embedded (original) packet of an ICMP error.
struct Inner {
    /// Offset of the embedded IPv4 header.
    ip: usize,
    /// Offset of the embedded L4 ports (or ICMP identifier).
    ports: usize,
    tuple: CtKey,
}

#[inline(always)]
fn parse_inner(ctx: &TcContext, flow: &Flow) -> Option<Inner> {
    let ip = flow.l4 + ICMP_HLEN;
    let hdr: Ipv4Hdr = ctx.load(ip).ok()?;
    let hlen = usize::from(hdr.ihl());
    if hdr.version() != 4 || hlen < IPV4_MIN_LEN {
        return None;
    }
    let proto = hdr.proto;
    let ports = match proto {
        PROTO_TCP | PROTO_UDP => ip + hlen + TCP_SPORT,
        PROTO_ICMP => ip + hlen + ICMP_ID,
        _ => return None,
    };
    let (sport, dport) = if proto == PROTO_ICMP {
        let id: u16 = ctx.load(ports).ok()?;
        (id, id)
    } else {
        let p: [u16; 2] = ctx.load(ports).ok()?;
        (p[0], p[1])
    };
    let saddr = u32::from_ne_bytes(hdr.src_addr);
    let daddr = u32::from_ne_bytes(hdr.dst_addr);
    Some(Inner {
        ip,
        ports,
        tuple: CtKey::new(saddr, daddr, sport, dport, proto),
    })
}

/// Changes a 32-bit word inside the ICMP payload, keeping both the embedded IP
/// header checksum and the ICMP checksum right.
#[inline(always)]
fn set_inner32(
    ctx: &TcContext,
    icmp_csum: usize,
    inner: &Inner,
    off: usize,
    old: u32,
    new: u32,
) -> Result<(), DropReason> {
    let old_ck: u16 = ctx
        .load(inner.ip + IPV4_CHECK)
        .map_err(|_| DropReason::RewriteFailed)?;
    let new_ck = csum::update32(u16::from_be(old_ck), u32::from_be(old), u32::from_be(new)).to_be();
    ctx.store(off, &new, 0)
        .map_err(|_| DropReason::RewriteFailed)?;
    ctx.store(inner.ip + IPV4_CHECK, &new_ck, 0)
        .map_err(|_| DropReason::RewriteFailed)?;
    ctx.l4_csum_replace(icmp_csum, u64::from(old), u64::from(new), 4)
        .map_err(|_| DropReason::RewriteFailed)?;
    ctx.l4_csum_replace(icmp_csum, u64::from(old_ck), u64::from(new_ck), 2)
        .map_err(|_| DropReason::RewriteFailed)
}

#[inline(always)]
fn set_inner16(
    ctx: &TcContext,
    icmp_csum: usize,
    off: usize,
    old: u16,
    new: u16,
) -> Result<(), DropReason> {
    ctx.store(off, &new, 0)
        .map_err(|_| DropReason::RewriteFailed)?;
    ctx.l4_csum_replace(icmp_csum, u64::from(old), u64::from(new), 2)
        .map_err(|_| DropReason::RewriteFailed)
}

#[inline(always)]
fn set_outer(ctx: &TcContext, off: usize, old: u32, new: u32) -> Result<(), DropReason> {
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old), u64::from(new), 4)
        .map_err(|_| DropReason::RewriteFailed)?;
    ctx.store(off, &new, 0)
        .map_err(|_| DropReason::RewriteFailed)
}

/// The embedded L4 checksum (UDP, when not 0, and ICMP echo; TCP's lies
/// past the 8 bytes an error carries) after the embedded tuple changed from
/// `e` to `to`; the outer ICMP checksum follows it.
#[inline(always)]
fn fix_inner_l4(
    ctx: &TcContext,
    icmp_csum: usize,
    inner: &Inner,
    e: &CtKey,
    to: &CtKey,
) -> Result<(), DropReason> {
    let off = match e.proto {
        PROTO_UDP => inner.ports - TCP_SPORT + UDP_CSUM,
        PROTO_ICMP => inner.ports - ICMP_ID + ICMP_CSUM,
        _ => return Ok(()),
    };
    let old: u16 = ctx.load(off).map_err(|_| DropReason::RewriteFailed)?;
    if e.proto == PROTO_UDP && old == 0 {
        return Ok(());
    }
    let mut ck = u16::from_be(old);
    if e.proto == PROTO_UDP {
        ck = csum::update32(ck, u32::from_be(e.saddr), u32::from_be(to.saddr));
        ck = csum::update32(ck, u32::from_be(e.daddr), u32::from_be(to.daddr));
        ck = csum::update16(ck, u16::from_be(e.dport), u16::from_be(to.dport));
    }
    ck = csum::update16(ck, u16::from_be(e.sport), u16::from_be(to.sport));
    let new = ck.to_be();
    if new != old {
        set_inner16(ctx, icmp_csum, off, old, new)?;
    }
    Ok(())
}

/// Translates an ICMP error whose embedded packet belongs to a tracked flow.
/// Returns the translation applied to the embedded flow's reply direction
/// (whose `daddr` is where the error now goes), or `None` if untracked.
/// From a container (`from_container`), only the embedded packet's own
/// receiver may report about it: a container cannot steer errors into
/// another container's flow (`drop_icmp_foreign`).
#[inline(always)]
pub fn translate_error(
    ctx: &TcContext,
    flow: &Flow,
    from_container: bool,
) -> Result<Option<CtEntry>, DropReason> {
    let Some(inner) = parse_inner(ctx, flow) else {
        return Ok(None);
    };
    let e = inner.tuple;
    // The embedded packet went out as `e`; its replies look like reverse(e).
    // SAFETY: value copied out immediately.
    let Some(n) = (unsafe { CONNTRACK.get(e.reversed()) }).copied() else {
        return Ok(None);
    };
    if from_container && flow.key.saddr != e.daddr {
        return Err(DropReason::IcmpForeign);
    }
    let icmp_csum = flow.l4 + ICMP_CSUM;
    let to = CtKey::new(n.daddr, n.saddr, n.dport, n.sport, e.proto);
    fix_inner_l4(ctx, icmp_csum, &inner, &e, &to)?;
    // The embedded packet becomes the reverse of the translated reply.
    if n.daddr != e.saddr {
        set_inner32(
            ctx,
            icmp_csum,
            &inner,
            inner.ip + IPV4_SRC,
            e.saddr,
            n.daddr,
        )?;
    }
    if n.saddr != e.daddr {
        set_inner32(
            ctx,
            icmp_csum,
            &inner,
            inner.ip + IPV4_DST,
            e.daddr,
            n.saddr,
        )?;
    }
    if e.proto == PROTO_ICMP {
        if n.dport != e.sport {
            set_inner16(ctx, icmp_csum, inner.ports, e.sport, n.dport)?;
        }
    } else {
        if n.dport != e.sport {
            set_inner16(ctx, icmp_csum, inner.ports, e.sport, n.dport)?;
        }
        if n.sport != e.dport {
            set_inner16(
                ctx,
                icmp_csum,
                inner.ports - TCP_SPORT + TCP_DPORT,
                e.dport,
                n.sport,
            )?;
        }
    }
    // Outer: the error goes to the embedded packet's (new) source; if the end
    // host itself reported it, it also comes from the (new) destination.
    let k = &flow.key;
    if n.daddr != k.daddr {
        set_outer(ctx, IP_DST_OFF, k.daddr, n.daddr)?;
    }
    if k.saddr == e.daddr && n.saddr != k.saddr {
        set_outer(ctx, IP_SRC_OFF, k.saddr, n.saddr)?;
    }
    Ok(Some(n))
}
