//! Crafted Ethernet/IPv4 frames and checksum verification.
use std::net::Ipv4Addr;

use etherparse::{IpNumber, Ipv4Header, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

pub const MAC_A: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
pub const MAC_B: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x01];

/// The MAC a sender with address `ip` has: Docker's (and cnet's) `02:42` +
/// the address, so a frame from a container carries that container's MAC.
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// A TCP frame from `src` to `dst` with `flags` ("S", "A", "SA", "F", "R" combos) and payload.
pub fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(mac_of(src.0), MAC_B)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 1000, 64240);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(1),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            other => panic!("unknown TCP flag {other}"),
        };
    }
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// A UDP frame with a computed checksum.
pub fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac_of(src.0), MAC_B)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// A UDP frame whose checksum is 0 ("no checksum", allowed for IPv4).
pub fn udp_no_csum(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let mut f = udp(src, dst, payload);
    let l4 = 14 + 20;
    f[l4 + 6] = 0;
    f[l4 + 7] = 0;
    f
}

/// An ICMP echo request.
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac_of(src), MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_request(id, seq);
    let mut out = Vec::new();
    b.write(&mut out, b"ping").unwrap();
    out
}

/// An ARP request frame (not IP: must pass untouched).
pub fn arp(src: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac_of(src));
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac_of(src));
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// Inserts `opts` (a multiple of 4 bytes) as IPv4 options, fixing IHL, total
/// length and the header checksum.
pub fn with_ip_options(frame: &[u8], opts: &[u8]) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let (ip, rest) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    let mut ip = ip.clone();
    ip.options = opts.try_into().unwrap();
    ip.total_len += opts.len() as u16;
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = frame[..14].to_vec();
    ip.write(&mut out).unwrap();
    out.extend_from_slice(rest);
    out
}

/// The 5-tuple of a frame, for assertions.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// Parses a frame and checks every checksum (IPv4 header, TCP/UDP with pseudo
/// header, ICMP); panics with a description on any mismatch.
pub fn verify(frame: &[u8]) -> Tuple {
    let p = SlicedPacket::from_ethernet(frame)
        .unwrap_or_else(|e| panic!("frame does not parse: {e}\n{frame:02x?}"));
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4: {frame:02x?}");
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "IPv4 header checksum wrong in {frame:02x?}"
    );
    let (src, dst) = (h.source.into(), h.destination.into());
    match p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
            assert_eq!(t.checksum(), want, "TCP checksum wrong in {frame:02x?}");
            Tuple {
                src,
                dst,
                sport: t.source_port(),
                dport: t.destination_port(),
                proto: 6,
            }
        }
        Some(TransportSlice::Udp(u)) => {
            if u.checksum() != 0 {
                let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
                assert_eq!(u.checksum(), want, "UDP checksum wrong in {frame:02x?}");
            }
            Tuple {
                src,
                dst,
                sport: u.source_port(),
                dport: u.destination_port(),
                proto: 17,
            }
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let data = &frame[14 + usize::from(h.ihl()) * 4..];
            assert_eq!(
                cnet_common::csum::checksum(data),
                0,
                "ICMP checksum wrong in {frame:02x?}"
            );
            let _ = i;
            let id = u16::from_be_bytes([data[4], data[5]]);
            Tuple {
                src,
                dst,
                sport: id,
                dport: id,
                proto: 1,
            }
        }
        other => {
            let proto = h.protocol;
            assert!(
                proto != IpNumber::TCP && proto != IpNumber::UDP,
                "bad L4: {other:?}"
            );
            Tuple {
                src,
                dst,
                sport: 0,
                dport: 0,
                proto: proto.0,
            }
        }
    }
}

/// Byte offsets of well-known fields in a frame without IP options.
pub mod off {
    pub const IP_SRC: usize = 14 + 12;
    pub const IP_DST: usize = 14 + 16;
    pub const L4: usize = 14 + 20;
}
