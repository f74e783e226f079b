//! Packet tests (BPF_PROG_TEST_RUN) for conntrack: only a SYN opens a TCP
//! flow, states and netfilter's timeouts, a live flow is never overwritten by
//! another one's reply tuple, and a pair is only torn down by its own halves.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::net::Ipv4Addr;

use cnet_common::{
    DropReason,
    maps::{
        CONNTRACK, CT_SEEN_ACK, CT_SEEN_FIN, CT_SEEN_FIN_PEER, CT_SEEN_REPLY, CT_SEEN_RST,
        CT_SEEN_SYN, Config, CtEntry, CtKey, ENDPOINTS, Endpoint, HOST_ADDRS, PORTS, PROTO_TCP,
        PROTO_UDP, PortKey, PortValue, ct_state, ct_timeout_secs,
    },
    port_key,
};
use cnet_tests::{
    frames::{self, mac_of},
    prog::{Loaded, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
};

const UPLINK: &str = "cnet_uplink_ingress";
const VETH: &str = "cnet_veth_ingress";
const HOST: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const C1: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);

fn a(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// C1 publishes 80/tcp as 8080 and 8081 on every host address, 53/udp as 5353.
fn seeded() -> Loaded {
    let mut l = Loaded::new();
    l.set_config(Config {
        gateway: a(Ipv4Addr::new(172, 17, 0, 1)),
        ..Config::default()
    });
    l.hash::<u32, u32>(HOST_ADDRS)
        .insert(a(HOST), 1, 0)
        .unwrap();
    l.hash::<u32, Endpoint>(ENDPOINTS)
        .insert(a(C1), Endpoint::new(101, mac_of(C1), 1), 0)
        .unwrap();
    let mut ports = l.hash::<PortKey, PortValue>(PORTS);
    for (host, ctr, proto) in [
        (8080, 80, PROTO_TCP),
        (8081, 80, PROTO_TCP),
        (5353, 53, PROTO_UDP),
    ] {
        ports
            .insert(
                PortKey::new(0, port_key(host), proto),
                PortValue::new(a(C1), port_key(ctr)),
                0,
            )
            .unwrap();
    }
    l
}

fn entry(l: &mut Loaded, from: Ipv4Addr) -> (CtKey, CtEntry) {
    l.conntrack()
        .into_iter()
        .find(|(k, _)| k.saddr == a(from))
        .unwrap()
}

#[test]
fn only_a_syn_opens_a_tcp_flow() {
    let mut l = seeded();
    for flags in ["A", "PA", "FA", "SA"] {
        let f = frames::tcp((CLIENT, 40000), (HOST, 8080), flags, b"");
        let r = l.run_tc(UPLINK, &f);
        assert_eq!(
            (r.verdict, &r.frame),
            (TC_ACT_OK, &f),
            "{flags}: to the stack, untranslated"
        );
        assert!(l.conntrack().is_empty(), "{flags} created no state");
    }
    let r = l.run_tc(
        UPLINK,
        &frames::tcp((CLIENT, 40000), (HOST, 8080), "S", b""),
    );
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    assert_eq!(l.conntrack().len(), 2);
}

#[test]
fn tcp_states_follow_the_handshake_and_the_close() {
    let mut l = seeded();
    l.run_tc(
        UPLINK,
        &frames::tcp((CLIENT, 40000), (HOST, 8080), "S", b""),
    );
    let (_, f) = entry(&mut l, CLIENT);
    assert_eq!(ct_state(PROTO_TCP, f.tcp_seen), "SYN_SENT");
    l.run_tc(VETH, &frames::tcp((C1, 80), (CLIENT, 40000), "SA", b""));
    l.run_tc(
        UPLINK,
        &frames::tcp((CLIENT, 40000), (HOST, 8080), "A", b""),
    );
    let (_, f) = entry(&mut l, CLIENT);
    let (_, r) = entry(&mut l, C1);
    assert_eq!(
        ct_state(PROTO_TCP, f.tcp_seen),
        "ESTABLISHED",
        "{:#x}",
        f.tcp_seen
    );
    assert_eq!(
        ct_state(PROTO_TCP, r.tcp_seen),
        "ESTABLISHED",
        "{:#x}",
        r.tcp_seen
    );
    assert_eq!(ct_timeout_secs(PROTO_TCP, f.tcp_seen), 432_000);
    // The client closes: FIN_WAIT (60 s); the container closes too: TIME_WAIT (120 s).
    l.run_tc(
        UPLINK,
        &frames::tcp((CLIENT, 40000), (HOST, 8080), "FA", b""),
    );
    let (_, r) = entry(&mut l, C1);
    assert_ne!(
        r.tcp_seen & CT_SEEN_FIN_PEER,
        0,
        "the peer's FIN is on the reverse entry"
    );
    assert_eq!(ct_timeout_secs(PROTO_TCP, r.tcp_seen), 60);
    l.run_tc(VETH, &frames::tcp((C1, 80), (CLIENT, 40000), "FA", b""));
    let (_, f) = entry(&mut l, CLIENT);
    assert_eq!(ct_state(PROTO_TCP, f.tcp_seen), "TIME_WAIT");
    assert_eq!(ct_timeout_secs(PROTO_TCP, f.tcp_seen), 120);
}

#[test]
fn netfilter_timeouts() {
    let t = |p, s| ct_timeout_secs(p, s);
    assert_eq!(t(PROTO_TCP, CT_SEEN_SYN), 120, "SYN sent");
    assert_eq!(
        t(PROTO_TCP, CT_SEEN_SYN | CT_SEEN_ACK | CT_SEEN_REPLY),
        432_000
    );
    assert_eq!(t(PROTO_TCP, CT_SEEN_ACK | CT_SEEN_REPLY | CT_SEEN_FIN), 60);
    assert_eq!(
        t(PROTO_TCP, CT_SEEN_FIN | CT_SEEN_FIN_PEER),
        120,
        "time-wait"
    );
    assert_eq!(t(PROTO_TCP, CT_SEEN_RST | CT_SEEN_REPLY), 10);
    assert_eq!(t(PROTO_UDP, 0), 30, "UDP unreplied");
    assert_eq!(t(PROTO_UDP, CT_SEEN_REPLY), 120, "UDP assured");
    assert_eq!(t(1, 0), 30, "ICMP");
}

#[test]
fn udp_is_assured_once_answered() {
    let mut l = seeded();
    l.run_tc(UPLINK, &frames::udp((CLIENT, 5000), (HOST, 5353), b"q"));
    let (_, f) = entry(&mut l, CLIENT);
    assert_eq!(ct_timeout_secs(PROTO_UDP, f.tcp_seen), 30);
    l.run_tc(VETH, &frames::udp((C1, 53), (CLIENT, 5000), b"a"));
    let (_, f) = entry(&mut l, CLIENT);
    assert_eq!(ct_state(PROTO_UDP, f.tcp_seen), "ASSURED");
    assert_eq!(ct_timeout_secs(PROTO_UDP, f.tcp_seen), 120);
}

#[test]
fn a_live_flow_is_never_overwritten() {
    let mut l = seeded();
    let r = l.run_tc(
        UPLINK,
        &frames::tcp((CLIENT, 40000), (HOST, 8080), "S", b""),
    );
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    // Same client port to 8081, also C1:80: the reply tuple C1:80 -> client:40000 is taken.
    let before = l.counter(DropReason::ConntrackConflict as u32);
    let f = frames::tcp((CLIENT, 40000), (HOST, 8081), "S", b"");
    let r = l.run_tc(UPLINK, &f);
    assert_eq!(r.verdict, TC_ACT_SHOT);
    assert_eq!(l.counter(DropReason::ConntrackConflict as u32) - before, 1);
    // The first flow's replies still go back as 8080.
    let r = l.run_tc(VETH, &frames::tcp((C1, 80), (CLIENT, 40000), "SA", b""));
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    let sport = u16::from_be_bytes([r.frame[34], r.frame[35]]);
    assert_eq!(sport, 8080, "the live flow kept its translation");
    // A retransmitted SYN of the first flow is not a conflict.
    let r = l.run_tc(
        UPLINK,
        &frames::tcp((CLIENT, 40000), (HOST, 8080), "S", b""),
    );
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
}

#[test]
fn a_stale_entry_never_removes_a_partner_that_is_not_its_own() {
    let mut l = seeded();
    l.run_tc(UPLINK, &frames::udp((CLIENT, 5000), (HOST, 5353), b"q"));
    let (fk, mut fe) = entry(&mut l, CLIENT);
    let (rk, mut re) = entry(&mut l, C1);
    // The reverse slot now belongs to another flow (it translates elsewhere).
    re.daddr = a(Ipv4Addr::new(10, 200, 0, 9));
    let mut ct = l.hash::<CtKey, CtEntry>(CONNTRACK);
    ct.insert(rk, re, 0).unwrap();
    fe.last_seen = 1;
    ct.insert(fk, fe, 0).unwrap();
    // The stale forward entry is removed on its next packet; the other stays.
    let f = frames::udp((CLIENT, 5000), (HOST, 5353), b"late");
    l.run_tc(UPLINK, &f);
    let left = l.conntrack();
    assert!(
        left.iter().any(|(k, e)| *k == rk && e.daddr == re.daddr),
        "{left:?}"
    );
}
