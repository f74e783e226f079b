//! Packet tests (BPF_PROG_TEST_RUN) for the datapath's hardening: a
//! container speaks only with its own address and MAC (IPv4 and ARP), IPv6
//! and other EtherTypes from containers are dropped, the outside reaches a
//! container address only through a published port (or on a `routed`
//! network), and `--internal` holds for protocols cnet does not parse.
//! Every drop checks its verdict, that the frame was not rewritten, and the
//! named counter's exact delta; every case has its allowed twin first.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::net::Ipv4Addr;

use cnet_common::{
    DropReason,
    maps::{
        CONFIG_MASQUERADE, Config, ENDPOINTS, Endpoint, HOST_ADDRS, NETWORK_INTERNAL,
        NETWORK_NO_MASQ, NETWORK_ROUTED, NETWORKS, Network,
    },
};
use cnet_tests::{
    frames::{self, mac_of},
    prog::{Loaded, TC_ACT_OK, TC_ACT_SHOT},
};

const VETH: &str = "cnet_veth_ingress";
const UPLINK: &str = "cnet_uplink_ingress";
const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const C1: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const C2: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
const R1: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 2);
const I1: Ipv4Addr = Ipv4Addr::new(10, 91, 0, 2);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const FORGED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);

fn a(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// C1, C2 on the default network 1; R1 on a routed network 2; I1 on an
/// internal network 3.
fn seeded() -> Loaded {
    let mut l = Loaded::new();
    l.set_config(Config {
        gateway: a(GW),
        flags: CONFIG_MASQUERADE,
        ..Config::default()
    });
    let mut eps = l.hash::<u32, Endpoint>(ENDPOINTS);
    for (i, (ip, net)) in [(C1, 1), (C2, 1), (R1, 2), (I1, 3)].into_iter().enumerate() {
        eps.insert(a(ip), Endpoint::new(100 + i as u32, mac_of(ip), net), 0)
            .unwrap();
    }
    let mut nets = l.hash::<u32, Network>(NETWORKS);
    nets.insert(1, Network { flags: 0 }, 0).unwrap();
    nets.insert(
        2,
        Network {
            flags: NETWORK_ROUTED,
        },
        0,
    )
    .unwrap();
    nets.insert(
        3,
        Network {
            flags: NETWORK_INTERNAL | NETWORK_NO_MASQ,
        },
        0,
    )
    .unwrap();
    l.hash::<u32, u32>(HOST_ADDRS)
        .insert(a(HOST), 1, 0)
        .unwrap();
    l
}

fn assert_shot(l: &mut Loaded, prog: &str, f: &[u8], reason: DropReason, what: &str) {
    let before = l.counter(reason as u32);
    let r = l.run_tc(prog, f);
    assert_eq!(r.verdict, TC_ACT_SHOT, "{what}");
    assert_eq!(l.counter(reason as u32) - before, 1, "{what}: counted once");
}

fn assert_passes(l: &mut Loaded, prog: &str, f: &[u8], what: &str) {
    let r = l.run_tc(prog, f);
    assert_eq!((r.verdict, &r.frame), (TC_ACT_OK, &f.to_vec()), "{what}");
}

#[test]
fn a_container_sends_only_from_its_own_address_and_mac() {
    let mut l = seeded();
    // Allowed twin: C1 to C2 with its own address and MAC.
    assert_passes(
        &mut l,
        VETH,
        &frames::udp((C1, 5000), (C2, 80), b"x"),
        "own source",
    );
    // Forged sources: the gateway, an outside client, the host, the victim itself, unknown.
    for forged in [GW, CLIENT, HOST, C2, FORGED] {
        let mut f = frames::udp((forged, 5000), (C2, 80), b"x");
        // The attacker keeps its own MAC (as a raw socket would).
        f[6..12].copy_from_slice(&mac_of(C1));
        assert_shot(
            &mut l,
            VETH,
            &f,
            DropReason::Spoofed,
            &format!("source {forged}"),
        );
    }
    // Its own address with another container's MAC.
    let mut f = frames::udp((C1, 5000), (C2, 80), b"x");
    f[6..12].copy_from_slice(&mac_of(C2));
    assert_shot(
        &mut l,
        VETH,
        &f,
        DropReason::Spoofed,
        "MAC of another container",
    );
}

#[test]
fn arp_must_announce_the_senders_own_address() {
    let mut l = seeded();
    assert_passes(&mut l, VETH, &frames::arp(C1, GW), "own ARP request");
    // A probe (sender 0.0.0.0) teaches no cache: allowed.
    let mut probe = frames::arp(C1, GW);
    probe[28..32].copy_from_slice(&[0, 0, 0, 0]);
    assert_passes(&mut l, VETH, &probe, "ARP probe");
    // C1 announcing the gateway's or C2's address (cache poisoning).
    for victim in [GW, C2] {
        let mut f = frames::arp(C1, GW);
        f[28..32].copy_from_slice(&victim.octets());
        assert_shot(
            &mut l,
            VETH,
            &f,
            DropReason::Spoofed,
            &format!("ARP claiming {victim}"),
        );
    }
    // Its own address with a sender MAC that is not its own.
    let mut f = frames::arp(C1, GW);
    f[22..28].copy_from_slice(&mac_of(C2));
    assert_shot(
        &mut l,
        VETH,
        &f,
        DropReason::Spoofed,
        "ARP with a foreign sender MAC",
    );
}

#[test]
fn ipv6_and_other_ethertypes_from_containers_are_dropped() {
    let mut l = seeded();
    // fe80::1 -> fe80::2, UDP: a link-local packet between two containers.
    let mut ll1 = [0u8; 16];
    ll1[0] = 0xfe;
    ll1[1] = 0x80;
    let mut ll2 = ll1;
    ll1[15] = 1;
    ll2[15] = 2;
    let b = etherparse::PacketBuilder::ethernet2(mac_of(C1), mac_of(C2))
        .ipv6(ll1, ll2, 64)
        .udp(5000, 80);
    let mut v6 = Vec::new();
    b.write(&mut v6, b"x").unwrap();
    assert_shot(
        &mut l,
        VETH,
        &v6,
        DropReason::Ipv6,
        "IPv6 (link-local icc bypass)",
    );
    let mut lldp = frames::udp((C1, 5000), (C2, 80), b"x");
    lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
    assert_shot(&mut l, VETH, &lldp, DropReason::NonIp, "raw L2 frame");
}

#[test]
fn outside_reaches_container_addresses_only_when_published_or_routed() {
    let mut l = seeded();
    // Allowed twins: the host's own address passes to the stack; a routed network.
    assert_passes(
        &mut l,
        UPLINK,
        &frames::tcp((CLIENT, 40000), (HOST, 22), "S", b""),
        "to the host",
    );
    assert_passes(
        &mut l,
        UPLINK,
        &frames::tcp((CLIENT, 40000), (R1, 80), "S", b""),
        "routed network",
    );
    for f in [
        frames::tcp((CLIENT, 40000), (C1, 80), "S", b""),
        frames::udp((CLIENT, 40000), (C1, 53), b"q"),
        frames::icmp_echo(CLIENT, C1, 1, 1),
    ] {
        assert_shot(
            &mut l,
            UPLINK,
            &f,
            DropReason::NotPublished,
            "routed to a nat-mode container",
        );
    }
    // An unparsed protocol too (GRE).
    let mut gre = frames::udp((CLIENT, 1), (C1, 2), b"x");
    gre[14 + 9] = 47;
    assert_shot(
        &mut l,
        UPLINK,
        &gre,
        DropReason::NotPublished,
        "GRE to a container",
    );
    // An internal network is never reachable from outside.
    let f = frames::tcp((CLIENT, 40000), (I1, 80), "S", b"");
    assert_shot(
        &mut l,
        UPLINK,
        &f,
        DropReason::Internal,
        "to an internal network",
    );
}

#[test]
fn internal_holds_for_protocols_cnet_does_not_parse_and_later_fragments() {
    let mut l = seeded();
    // Allowed twin: the same raw protocol from a normal network leaves.
    let mut raw = frames::udp((C1, 1), (CLIENT, 2), b"x");
    raw[14 + 9] = 253;
    assert_passes(&mut l, VETH, &raw, "protocol 253 from the default network");
    for proto in [47u8, 253] {
        let mut f = frames::udp((I1, 1), (CLIENT, 2), b"x");
        f[14 + 9] = proto;
        assert_shot(
            &mut l,
            VETH,
            &f,
            DropReason::Internal,
            &format!("protocol {proto} out of --internal"),
        );
    }
    // A later fragment (offset 185 * 8) out of an internal network.
    let mut frag = frames::udp((I1, 1), (CLIENT, 2), b"x");
    frag[14 + 6] = 0x00;
    frag[14 + 7] = 185;
    assert_shot(
        &mut l,
        VETH,
        &frag,
        DropReason::Internal,
        "later fragment out of --internal",
    );
}

#[test]
fn malformed_frames_from_containers_are_dropped_as_malformed() {
    let mut l = seeded();
    // An IHL that runs past the end of the frame.
    let mut f = frames::tcp((C1, 1), (C2, 2), "S", b"");
    f.truncate(14 + 20 + 8);
    f[14] = 0x4f;
    assert_shot(
        &mut l,
        VETH,
        &f,
        DropReason::MalformedIp,
        "IHL past the end",
    );
    // A version that is not 4 under the IPv4 EtherType.
    let mut f = frames::tcp((C1, 1), (C2, 2), "S", b"");
    f[14] = 0x65;
    assert_shot(
        &mut l,
        VETH,
        &f,
        DropReason::MalformedIp,
        "version 6 in an IPv4 frame",
    );
}
