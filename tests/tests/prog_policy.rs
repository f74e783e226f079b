//! Packet tests for isolation: icc on/off, networks, link allowances, filter
//! rules in XDP (uplink) and TC (container veth), and their counters.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::net::Ipv4Addr;

use cnet_common::{
    DropReason, addr_key,
    maps::{
        ALLOW, AllowKey, ENDPOINTS, Endpoint, FILTER_ALLOW, FILTER_DROP, FILTER_SET, FILTERS,
        FILTERS_MAX, Filter, HOST_ADDRS, NETWORK_ICC_OFF, NETWORKS, Network, PORTS, PROTO_ICMP,
        PROTO_TCP, PROTO_UDP, PortKey, PortValue,
    },
    port_key,
};
use cnet_tests::{
    frames,
    prog::{Loaded, TC_ACT_OK, TC_ACT_SHOT},
};

const VETH: &str = "cnet_veth_ingress";
const UPLINK: &str = "cnet_uplink_ingress";
const XDP: &str = "cnet_uplink_xdp";
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const HOST: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const CLIENT2: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 3);
const OTHER_NET_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 2);
const C1: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const C2: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
const C3: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 4);
const C4: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);

fn a(ip: Ipv4Addr) -> u32 {
    addr_key(ip.octets())
}

/// C1..C3 on network 1, C4 on network 2; 8080/tcp -> C1:80, 9090/tcp -> C2:90.
fn seeded(icc: bool) -> Loaded {
    let mut l = Loaded::new();
    let mut eps = l.hash::<u32, Endpoint>(ENDPOINTS);
    for (i, (ip, net)) in [(C1, 1), (C2, 1), (C3, 1), (C4, 2)].into_iter().enumerate() {
        eps.insert(
            a(ip),
            Endpoint::new(100 + i as u32, frames::mac_of(ip), net),
            0,
        )
        .unwrap();
    }
    let flags = if icc { 0 } else { NETWORK_ICC_OFF };
    l.hash::<u32, Network>(NETWORKS)
        .insert(1, Network { flags }, 0)
        .unwrap();
    l.hash::<u32, u32>(HOST_ADDRS)
        .insert(a(HOST), 1, 0)
        .unwrap();
    let mut ports = l.hash::<PortKey, PortValue>(PORTS);
    ports
        .insert(
            PortKey::new(0, port_key(8080), PROTO_TCP),
            PortValue::new(a(C1), port_key(80)),
            0,
        )
        .unwrap();
    ports
        .insert(
            PortKey::new(0, port_key(9090), PROTO_TCP),
            PortValue::new(a(C2), port_key(90)),
            0,
        )
        .unwrap();
    l
}

fn between(l: &mut Loaded, src: Ipv4Addr, dst: Ipv4Addr) -> [u32; 3] {
    [
        l.run_tc(VETH, &frames::tcp((src, 40000), (dst, 80), "S", b""))
            .verdict,
        l.run_tc(VETH, &frames::udp((src, 40000), (dst, 53), b"q"))
            .verdict,
        l.run_tc(VETH, &frames::icmp_echo(src, dst, 9, 1)).verdict,
    ]
}

#[test]
fn icc_off_blocks_containers_of_a_network_both_ways() {
    let mut l = seeded(false);
    assert_eq!(between(&mut l, C1, C2), [TC_ACT_SHOT; 3]);
    assert_eq!(between(&mut l, C2, C1), [TC_ACT_SHOT; 3]);
    assert_eq!(l.counter(DropReason::IccDenied as u32), 6);
    // The gateway/host and the outside stay reachable; ARP is untouched.
    let f = frames::tcp((C1, 40000), (Ipv4Addr::new(172, 17, 0, 1), 22), "S", b"");
    assert_eq!(l.run_tc(VETH, &f).verdict, TC_ACT_OK);
    let arp = frames::arp(C1, C2);
    let r = l.run_tc(VETH, &arp);
    assert_eq!((r.verdict, &r.frame), (TC_ACT_OK, &arp));
}

#[test]
fn icc_on_lets_a_network_talk_but_networks_stay_apart() {
    let mut l = seeded(true);
    assert_eq!(between(&mut l, C1, C2), [TC_ACT_OK; 3]);
    assert_eq!(between(&mut l, C1, C4), [TC_ACT_SHOT; 3], "other network");
    assert_eq!(between(&mut l, C4, C1), [TC_ACT_SHOT; 3], "other network");
    // Switching icc off applies to the next packet.
    l.hash::<u32, Network>(NETWORKS)
        .insert(
            1,
            Network {
                flags: NETWORK_ICC_OFF,
            },
            0,
        )
        .unwrap();
    assert_eq!(between(&mut l, C1, C2), [TC_ACT_SHOT; 3]);
}

#[test]
fn a_link_opens_the_exposed_port_of_exactly_one_pair() {
    let mut l = seeded(false);
    let mut allow = l.hash::<AllowKey, u32>(ALLOW);
    allow
        .insert(
            AllowKey {
                saddr: a(C1),
                daddr: a(C2),
                port: 80,
                proto: PROTO_TCP,
                by_sport: 0,
            },
            1,
            0,
        )
        .unwrap();
    allow
        .insert(
            AllowKey {
                saddr: a(C2),
                daddr: a(C1),
                port: 80,
                proto: PROTO_TCP,
                by_sport: 1,
            },
            1,
            0,
        )
        .unwrap();
    let req = frames::tcp((C1, 40000), (C2, 80), "S", b"");
    assert_eq!(
        l.run_tc(VETH, &req).verdict,
        TC_ACT_OK,
        "linking -> linked exposed port"
    );
    let rep = frames::tcp((C2, 80), (C1, 40000), "SA", b"");
    assert_eq!(l.run_tc(VETH, &rep).verdict, TC_ACT_OK, "the replies");
    let other_port = frames::tcp((C1, 40000), (C2, 81), "S", b"");
    assert_eq!(
        l.run_tc(VETH, &other_port).verdict,
        TC_ACT_SHOT,
        "another port"
    );
    let reverse = frames::tcp((C2, 40000), (C1, 80), "S", b"");
    assert_eq!(
        l.run_tc(VETH, &reverse).verdict,
        TC_ACT_SHOT,
        "the linked one cannot call back"
    );
    let third = frames::tcp((C3, 40000), (C2, 80), "S", b"");
    assert_eq!(
        l.run_tc(VETH, &third).verdict,
        TC_ACT_SHOT,
        "a third container"
    );
    let udp = frames::udp((C1, 40000), (C2, 80), b"q");
    assert_eq!(l.run_tc(VETH, &udp).verdict, TC_ACT_SHOT, "tcp only");
}

fn rule(
    src: (Ipv4Addr, u8),
    dst: (Ipv4Addr, u8),
    proto: u8,
    dport: (u16, u16),
    action: u8,
) -> Filter {
    let mask = |p: u8| {
        if p == 0 {
            0
        } else {
            a(Ipv4Addr::from(u32::MAX << (32 - p)))
        }
    };
    Filter {
        src: a(src.0) & mask(src.1),
        src_mask: mask(src.1),
        dst: a(dst.0) & mask(dst.1),
        dst_mask: mask(dst.1),
        dport_lo: dport.0,
        dport_hi: dport.1,
        proto,
        action,
        used: 1,
        _pad: 0,
        id: 1,
    }
}

const ANY: (Ipv4Addr, u8) = (Ipv4Addr::UNSPECIFIED, 0);
const ALL_PORTS: (u16, u16) = (0, u16::MAX);

#[test]
fn xdp_filters_by_source_destination_protocol_and_port() {
    let mut l = seeded(true);
    l.set_filters(&[
        rule((CLIENT, 32), ANY, PROTO_ICMP, ALL_PORTS, FILTER_DROP),
        rule(ANY, (C1, 32), PROTO_TCP, (80, 80), FILTER_DROP),
        rule(
            (OTHER_NET_CLIENT, 24),
            ANY,
            PROTO_UDP,
            (5000, 5100),
            FILTER_DROP,
        ),
    ]);
    let v = |l: &mut Loaded, f: Vec<u8>| l.run_xdp(XDP, &f).verdict;
    assert_eq!(v(&mut l, frames::icmp_echo(CLIENT, HOST, 1, 1)), XDP_DROP);
    assert_eq!(
        v(&mut l, frames::icmp_echo(CLIENT2, HOST, 1, 1)),
        XDP_PASS,
        "another source"
    );
    // Published 8080 leads to C1:80: matched as delivered.
    assert_eq!(
        v(&mut l, frames::tcp((CLIENT2, 1), (HOST, 8080), "S", b"")),
        XDP_DROP
    );
    assert_eq!(
        v(&mut l, frames::tcp((CLIENT2, 1), (HOST, 9090), "S", b"")),
        XDP_PASS,
        "C2 is not filtered"
    );
    assert_eq!(
        v(
            &mut l,
            frames::udp((OTHER_NET_CLIENT, 1), (HOST, 5050), b"x")
        ),
        XDP_DROP
    );
    assert_eq!(
        v(
            &mut l,
            frames::udp((OTHER_NET_CLIENT, 1), (HOST, 5101), b"x")
        ),
        XDP_PASS,
        "outside the range"
    );
    assert_eq!(
        v(
            &mut l,
            frames::tcp((OTHER_NET_CLIENT, 1), (HOST, 5050), "S", b"")
        ),
        XDP_PASS,
        "udp only"
    );
    assert_eq!(
        (l.filter_count(0), l.filter_count(1), l.filter_count(2)),
        (1, 1, 1)
    );
    assert_eq!(l.counter(DropReason::Filtered as u32), 3);
    // ARP passes; a frame with a bad IHL is dropped as malformed, never as filtered.
    assert_eq!(v(&mut l, frames::arp(CLIENT, HOST)), XDP_PASS);
    let mut bad = frames::icmp_echo(CLIENT2, HOST, 1, 1);
    bad[14] = 0x43;
    assert_eq!(v(&mut l, bad), XDP_DROP);
    assert_eq!(l.counter(DropReason::MalformedIp as u32), 1);
    assert_eq!(l.counter(DropReason::Filtered as u32), 3);
}

#[test]
fn first_matching_rule_wins_and_allow_bypasses_icc() {
    let mut l = seeded(false);
    l.set_filters(&[
        rule((CLIENT, 32), ANY, 0, ALL_PORTS, FILTER_ALLOW),
        rule((CLIENT, 24), ANY, 0, ALL_PORTS, FILTER_DROP),
        rule((C1, 32), (C2, 32), 0, ALL_PORTS, FILTER_ALLOW),
        rule((C3, 32), ANY, PROTO_UDP, ALL_PORTS, FILTER_DROP),
    ]);
    assert_eq!(
        l.run_xdp(XDP, &frames::icmp_echo(CLIENT, HOST, 1, 1))
            .verdict,
        XDP_PASS
    );
    assert_eq!(
        l.run_xdp(XDP, &frames::icmp_echo(CLIENT2, HOST, 1, 1))
            .verdict,
        XDP_DROP
    );
    // TC: an allow rule between two containers overrides icc=false.
    assert_eq!(between(&mut l, C1, C2), [TC_ACT_OK; 3]);
    assert_eq!(
        between(&mut l, C2, C1),
        [TC_ACT_SHOT; 3],
        "only the allowed direction"
    );
    // A drop rule on a container's own traffic (to the outside too).
    let f = frames::udp((C3, 5000), (CLIENT, 53), b"q");
    assert_eq!(l.run_tc(VETH, &f).verdict, TC_ACT_SHOT);
    assert_eq!(l.filter_count(3), 1);
    let f = frames::tcp((C3, 5000), (Ipv4Addr::new(172, 17, 0, 1), 53), "S", b"");
    assert_eq!(
        l.run_tc(VETH, &f).verdict,
        TC_ACT_OK,
        "tcp from C3 is not filtered"
    );
}

#[test]
fn one_match_semantics_on_every_hook_counted_once() {
    let mut l = seeded(true);
    l.set_filters(&[
        rule(ANY, (C1, 32), PROTO_TCP, (80, 80), FILTER_DROP),
        rule((CLIENT, 32), ANY, 0, ALL_PORTS, FILTER_ALLOW),
    ]);
    // A container hairpinning through hostIP:8080 meets C1:80's rule (it was
    // bypassed when the veth matched before DNAT).
    let before = l.counter(DropReason::Filtered as u32);
    let f = frames::tcp((C2, 40000), (HOST, 8080), "S", b"");
    assert_eq!(l.run_tc(VETH, &f).verdict, TC_ACT_SHOT, "hairpin to C1:80");
    assert_eq!(l.counter(DropReason::Filtered as u32) - before, 1);
    // The uplink's TC program filters too (an interface without XDP).
    let f = frames::tcp((CLIENT2, 40000), (HOST, 8080), "S", b"");
    assert_eq!(
        l.run_tc(UPLINK, &f).verdict,
        TC_ACT_SHOT,
        "TC on the uplink"
    );
    assert_eq!(l.filter_count(0), 2);
    // An allowed packet passes XDP uncounted and is counted once by TC.
    let f = frames::icmp_echo(CLIENT, HOST, 1, 1);
    assert_eq!(l.run_xdp(XDP, &f).verdict, XDP_PASS);
    assert_eq!(l.filter_count(1), 0, "XDP counts drops only");
    assert_eq!(l.run_tc(UPLINK, &f).verdict, TC_ACT_OK);
    assert_eq!(l.filter_count(1), 1, "TC counts the allow once");
}

#[test]
fn the_rule_set_changes_atomically() {
    let mut l = seeded(true);
    l.set_filters(&[rule((CLIENT, 32), ANY, PROTO_ICMP, ALL_PORTS, FILTER_DROP)]);
    let ping = frames::icmp_echo(CLIENT, HOST, 1, 1);
    assert_eq!(l.run_xdp(XDP, &ping).verdict, XDP_DROP);
    // A new list written into the other half changes nothing until the flip.
    let mut allow = rule((CLIENT, 32), ANY, PROTO_ICMP, ALL_PORTS, FILTER_ALLOW);
    allow.id = 9;
    l.array::<Filter>(FILTERS)
        .set(FILTERS_MAX, allow, 0)
        .unwrap();
    assert_eq!(
        l.run_xdp(XDP, &ping).verdict,
        XDP_DROP,
        "still the live half"
    );
    l.array::<u32>(FILTER_SET).set(0, 1, 0).unwrap();
    assert_eq!(
        l.run_xdp(XDP, &ping).verdict,
        XDP_PASS,
        "the other half, whole"
    );
}
