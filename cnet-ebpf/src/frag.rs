//! IP fragments through NAT, as Cilium does it: when the first fragment of a
//! datagram is translated, how it was translated is remembered under the
//! datagram's (source, destination, IP id, protocol); the later fragments,
//! which carry no L4 header, get the same addresses and the same way out.
use aya_ebpf::programs::TcContext;
use cnet_common::{
    DropReason,
    maps::{FragKey, FragValue},
};

use crate::{
    hdr::{IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF},
    maps::FRAGS,
    parse::Ipv4View,
    redirect::deliver,
    verdict::Action,
};

/// After the first fragment of `ip` was rewritten to `saddr -> daddr` and is
/// sent out of `out_ifindex`: the later ones will follow it.
#[inline(always)]
pub fn remember(ip: &Ipv4View, saddr: u32, daddr: u32, out_ifindex: u32) {
    if !ip.more_fragments || ip.later_fragment {
        return;
    }
    let k = FragKey::new(ip.saddr, ip.daddr, ip.id, ip.proto);
    let v = FragValue {
        saddr,
        daddr,
        out_ifindex,
    };
    // An LRU map: a full table evicts the oldest datagram, never a live flow.
    let _ = FRAGS.insert(k, v, 0);
}

/// A later fragment: translated and delivered like its first fragment, or
/// `None` when its datagram is unknown.
#[inline(always)]
pub fn follow(ctx: &TcContext, ip: &Ipv4View) -> Result<Option<Action>, DropReason> {
    let k = FragKey::new(ip.saddr, ip.daddr, ip.id, ip.proto);
    // SAFETY: value copied out at once.
    let Some(v) = (unsafe { FRAGS.get(k) }).copied() else {
        return Ok(None);
    };
    for (off, old, new) in [
        (IP_SRC_OFF, ip.saddr, v.saddr),
        (IP_DST_OFF, ip.daddr, v.daddr),
    ] {
        if old != new {
            ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old), u64::from(new), 4)
                .map_err(|_| DropReason::RewriteFailed)?;
            ctx.store(off, &new, 0)
                .map_err(|_| DropReason::RewriteFailed)?;
        }
    }
    deliver(ctx, v.daddr, v.out_ifindex).map(Some)
}
