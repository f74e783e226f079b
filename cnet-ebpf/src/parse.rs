//! Bounds-checked header access. Reads go through `bpf_skb_load_bytes`, so a
//! truncated packet yields an error instead of an out-of-bounds access.
use aya_ebpf::programs::TcContext;
use cnet_common::{
    Counter, DropReason,
    maps::{CtKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP},
};

use network_types::ip::Ipv4Hdr;

use crate::{
    hdr::{
        ETH_HLEN, ETH_P_IP, ETH_PROTO, ICMP_HLEN, ICMP_ID, IP_MF, IP_OFFSET, IPV4_MIN_LEN,
        TCP_DPORT, TCP_FLAGS, TCP_HLEN, TCP_SPORT, UDP_HLEN,
    },
    verdict::count,
};

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;

/// The IPv4 header fields the datapath needs. Addresses stay in network byte order.
pub struct Ipv4View {
    pub saddr: u32,
    pub daddr: u32,
    pub proto: u8,
    /// Header length in bytes (IHL * 4).
    pub hlen: usize,
    /// Fragment offset != 0: a later fragment carries no L4 header.
    pub later_fragment: bool,
    /// More fragments follow (with `later_fragment` false: the first one).
    pub more_fragments: bool,
    /// The IP identification, in network byte order.
    pub id: u16,
    pub ttl: u8,
}

impl Ipv4View {
    /// `Ok(None)` for frames that are not IPv4 (ARP, IPv6, ...): those pass untouched.
    #[inline(always)]
    pub fn parse(ctx: &TcContext) -> Result<Option<Self>, DropReason> {
        let Ok(proto) = ctx.load::<u16>(ETH_PROTO) else {
            return Ok(None);
        };
        if u16::from_be(proto) != ETH_P_IP {
            return Ok(None);
        }
        let hdr: Ipv4Hdr = ctx.load(ETH_HLEN).map_err(|_| DropReason::MalformedIp)?;
        Self::from_hdr(&hdr, ctx.len() as usize).map(Some)
    }

    /// The one IPv4 header check, shared by TC (header copied out of the skb)
    /// and XDP (header read in place): version 4, a header length of at
    /// least 20 bytes that fits in the frame's `frame_len` bytes. Counts
    /// headers with options.
    #[inline(always)]
    pub fn from_hdr(hdr: &Ipv4Hdr, frame_len: usize) -> Result<Self, DropReason> {
        let v = Self::check(hdr, frame_len)?;
        if v.hlen > IPV4_MIN_LEN {
            count(Counter::IpOptions as u32);
        }
        Ok(v)
    }

    /// The header of a packet a first stage already parsed and counted
    /// (a tail-called program): the same checks, nothing counted twice.
    #[inline(always)]
    pub fn parse_again(ctx: &TcContext) -> Result<Self, DropReason> {
        let hdr: Ipv4Hdr = ctx.load(ETH_HLEN).map_err(|_| DropReason::MalformedIp)?;
        Self::check(&hdr, ctx.len() as usize)
    }

    #[inline(always)]
    fn check(hdr: &Ipv4Hdr, frame_len: usize) -> Result<Self, DropReason> {
        let hlen = usize::from(hdr.ihl());
        if hdr.version() != 4 || hlen < IPV4_MIN_LEN || ETH_HLEN + hlen > frame_len {
            return Err(DropReason::MalformedIp);
        }
        let frags = u16::from_be_bytes(hdr.frags);
        Ok(Self {
            saddr: u32::from_ne_bytes(hdr.src_addr),
            daddr: u32::from_ne_bytes(hdr.dst_addr),
            proto: hdr.proto,
            hlen,
            later_fragment: frags & IP_OFFSET != 0,
            more_fragments: frags & IP_MF != 0,
            id: u16::from_ne_bytes(hdr.id),
            ttl: hdr.ttl,
        })
    }
}

/// A translatable packet: TCP, UDP or ICMP echo, with its tuple.
#[derive(Clone, Copy)]
pub struct Flow {
    pub key: CtKey,
    /// Offset of the L4 header.
    pub l4: usize,
    /// TCP flags byte (0 for other protocols).
    pub tcp_flags: u8,
    /// ICMP type (0 for other protocols).
    pub icmp_type: u8,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

impl Flow {
    /// `Ok(None)` for packets cnet never translates (other protocols, later
    /// fragments, ICMP other than echo and errors).
    #[inline(always)]
    pub fn parse(ctx: &TcContext, ip: &Ipv4View) -> Result<Option<Self>, DropReason> {
        if ip.later_fragment {
            count(Counter::Fragment as u32);
            return Ok(None);
        }
        let l4 = ETH_HLEN + ip.hlen;
        let (sport, dport, tcp_flags, icmp_type) = match ip.proto {
            PROTO_TCP => {
                if l4 + TCP_HLEN > ctx.len() as usize {
                    return Err(DropReason::MalformedL4);
                }
                // Both ports in one load: the destination follows the source.
                const _: () = assert!(TCP_DPORT == TCP_SPORT + 2);
                let ports: [u16; 2] = ctx
                    .load(l4 + TCP_SPORT)
                    .map_err(|_| DropReason::MalformedL4)?;
                let flags: u8 = ctx
                    .load(l4 + TCP_FLAGS)
                    .map_err(|_| DropReason::MalformedL4)?;
                (ports[0], ports[1], flags, 0)
            }
            PROTO_UDP => {
                if l4 + UDP_HLEN > ctx.len() as usize {
                    return Err(DropReason::MalformedL4);
                }
                // Source and destination port lead the UDP header as they do TCP's.
                let ports: [u16; 2] = ctx.load(l4).map_err(|_| DropReason::MalformedL4)?;
                (ports[0], ports[1], 0, 0)
            }
            PROTO_ICMP => {
                if l4 + ICMP_HLEN > ctx.len() as usize {
                    return Err(DropReason::MalformedL4);
                }
                let ty: u8 = ctx.load(l4).map_err(|_| DropReason::MalformedL4)?;
                if ty != ICMP_ECHO
                    && ty != ICMP_ECHO_REPLY
                    && ty != ICMP_DEST_UNREACH
                    && ty != ICMP_TIME_EXCEEDED
                {
                    return Ok(None);
                }
                let id: u16 = ctx
                    .load(l4 + ICMP_ID)
                    .map_err(|_| DropReason::MalformedL4)?;
                (id, id, 0, ty)
            }
            _ => return Ok(None),
        };
        Ok(Some(Self {
            key: CtKey::new(ip.saddr, ip.daddr, sport, dport, ip.proto),
            l4,
            tcp_flags,
            icmp_type,
        }))
    }

    #[inline(always)]
    pub fn is_icmp_error(&self) -> bool {
        self.key.proto == PROTO_ICMP
            && (self.icmp_type == ICMP_DEST_UNREACH || self.icmp_type == ICMP_TIME_EXCEEDED)
    }

    /// Whether this packet may open a new translated flow: a TCP SYN without
    /// ACK, any UDP datagram, an ICMP echo request.
    #[inline(always)]
    pub fn may_open(&self) -> bool {
        match self.key.proto {
            PROTO_TCP => self.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN,
            PROTO_UDP => true,
            _ => self.icmp_type == ICMP_ECHO,
        }
    }
}
