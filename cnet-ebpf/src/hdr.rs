//! Where every header field the datapath touches lives, taken from the
//! network-types layouts (`EthHdr`, `Ipv4Hdr`, `TcpHdr`, `UdpHdr`,
//! `Icmpv4Hdr`, `ArpHdr`) instead of hand-counted offsets.
use core::mem::offset_of;

use network_types::{
    arp::ArpHdr, eth::EthHdr, icmp::Icmpv4Hdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr,
};

pub const ETH_HLEN: usize = EthHdr::LEN;
pub const ETH_DST: usize = offset_of!(EthHdr, dst_addr);
pub const ETH_SRC: usize = offset_of!(EthHdr, src_addr);
pub const ETH_PROTO: usize = offset_of!(EthHdr, ether_type);
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// An IPv4 header without options.
pub const IPV4_MIN_LEN: usize = Ipv4Hdr::LEN;
/// Field offsets inside an IPv4 header (the outer one or an embedded one).
pub const IPV4_FRAGS: usize = offset_of!(Ipv4Hdr, frags);
pub const IPV4_TTL: usize = offset_of!(Ipv4Hdr, ttl);
pub const IPV4_CHECK: usize = offset_of!(Ipv4Hdr, check);
pub const IPV4_SRC: usize = offset_of!(Ipv4Hdr, src_addr);
pub const IPV4_DST: usize = offset_of!(Ipv4Hdr, dst_addr);
/// The outer IPv4 header's fields in the frame.
pub const IP_FRAG_OFF: usize = ETH_HLEN + IPV4_FRAGS;
pub const IP_TTL_OFF: usize = ETH_HLEN + IPV4_TTL;
pub const IP_CSUM_OFF: usize = ETH_HLEN + IPV4_CHECK;
pub const IP_SRC_OFF: usize = ETH_HLEN + IPV4_SRC;
pub const IP_DST_OFF: usize = ETH_HLEN + IPV4_DST;
pub const IP_PROTO_OFF: usize = ETH_HLEN + offset_of!(Ipv4Hdr, proto);
/// Don't-fragment, more-fragments and the offset mask of the frags field.
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET: u16 = 0x1fff;

pub const TCP_HLEN: usize = TcpHdr::LEN;
pub const TCP_SPORT: usize = offset_of!(TcpHdr, source);
pub const TCP_DPORT: usize = offset_of!(TcpHdr, dest);
/// The flags byte: the second byte of the data-offset/flags bitfield.
pub const TCP_FLAGS: usize = offset_of!(TcpHdr, window) - 1;
pub const TCP_CSUM: usize = offset_of!(TcpHdr, check);

pub const UDP_HLEN: usize = UdpHdr::LEN;
pub const UDP_CSUM: usize = offset_of!(UdpHdr, check);

pub const ICMP_HLEN: usize = Icmpv4Hdr::LEN;
pub const ICMP_CSUM: usize = offset_of!(Icmpv4Hdr, check);
/// The echo identifier: the first half of the rest-of-header word.
pub const ICMP_ID: usize = offset_of!(Icmpv4Hdr, data);
/// Next-hop MTU of "fragmentation needed": the second half of that word.
pub const ICMP_MTU: usize = offset_of!(Icmpv4Hdr, data) + 2;

/// ARP (Ethernet/IPv4) sender MAC and sender address in the frame.
pub const ARP_SHA: usize = ETH_HLEN + offset_of!(ArpHdr, sha);
pub const ARP_SPA: usize = ETH_HLEN + offset_of!(ArpHdr, spa);
