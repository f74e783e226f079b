//! Bounds-checked header access. Reads go through `bpf_skb_load_bytes`, so a
//! truncated packet yields an error instead of an out-of-bounds access.
use aya_ebpf::programs::TcContext;
use cnet_common::DropReason;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;

/// The IPv4 header fields the datapath needs. Addresses stay in network byte order.
#[expect(dead_code, reason = "hlen and later_fragment are for the NAT path")]
pub struct Ipv4View {
    pub saddr: u32,
    pub daddr: u32,
    pub proto: u8,
    /// Header length in bytes (IHL * 4).
    pub hlen: usize,
    /// Fragment offset != 0: a later fragment carries no L4 header.
    pub later_fragment: bool,
}

impl Ipv4View {
    /// `Ok(None)` for frames that are not IPv4 (ARP, IPv6, ...): those pass untouched.
    #[inline(always)]
    pub fn parse(ctx: &TcContext) -> Result<Option<Self>, DropReason> {
        let Ok(proto) = ctx.load::<u16>(12) else {
            return Ok(None);
        };
        if u16::from_be(proto) != ETH_P_IP {
            return Ok(None);
        }
        let vihl: u8 = ctx.load(ETH_HLEN).map_err(|_| DropReason::MalformedIp)?;
        let hlen = usize::from(vihl & 0x0f) * 4;
        if vihl >> 4 != 4 || hlen < 20 || ETH_HLEN + hlen > ctx.len() as usize {
            return Err(DropReason::MalformedIp);
        }
        let frag: u16 = ctx
            .load(ETH_HLEN + 6)
            .map_err(|_| DropReason::MalformedIp)?;
        Ok(Some(Self {
            saddr: ctx
                .load(ETH_HLEN + 12)
                .map_err(|_| DropReason::MalformedIp)?,
            daddr: ctx
                .load(ETH_HLEN + 16)
                .map_err(|_| DropReason::MalformedIp)?,
            proto: ctx
                .load(ETH_HLEN + 9)
                .map_err(|_| DropReason::MalformedIp)?,
            hlen,
            later_fragment: u16::from_be(frag) & 0x1fff != 0,
        }))
    }
}
