//! Packet tests for port publishing and masquerade: the real programs run on
//! crafted frames (BPF_PROG_TEST_RUN); every rewritten frame is checked byte
//! by byte where it matters and all its checksums are verified.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::net::Ipv4Addr;

use cnet_common::{
    Counter, DropReason, addr_key,
    maps::{
        CONFIG_MASQUERADE, CONNTRACK, CT_SEEN_FIN, CT_SEEN_SYN, Config, CtEntry, CtKey, ENDPOINTS,
        Endpoint, HOST_ADDRS, JUMP_UPLINK_NEW, JUMP_VETH_NEW, JUMPS, MASQ_PORT_HI, MASQ_PORT_LO,
        PORTS, PROTO_TCP, PROTO_UDP, PortKey, PortValue, UPLINKS, Uplink,
    },
    port_key,
};
use cnet_tests::{
    frames::{self, Tuple, verify},
    netns::{Topology, addr, in_netns},
    prog::{Loaded, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
};

const UPLINK: &str = "cnet_uplink_ingress";
const VETH: &str = "cnet_veth_ingress";
const HOST: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const C1: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const C2: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
const C1_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
const C2_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x03];
const BRIDGE_MAC: [u8; 6] = [0x02, 0x42, 0x00, 0x00, 0x00, 0x01];

fn a(ip: Ipv4Addr) -> u32 {
    addr_key(ip.octets())
}

/// A dataplane with containers C1, C2, host address HOST, masquerade on, and
/// 8080/tcp, 8080/udp -> C1:80, HOST:9090/tcp -> C2:90 published.
fn seeded() -> Loaded {
    let mut l = Loaded::new();
    l.set_config(Config {
        bridge_mac: BRIDGE_MAC,
        gateway: a(GW),
        flags: CONFIG_MASQUERADE,
        ..Config::default()
    });
    l.hash::<u32, u32>(HOST_ADDRS)
        .insert(a(HOST), 1, 0)
        .unwrap();
    l.hash::<u32, u32>(HOST_ADDRS).insert(a(GW), 1, 0).unwrap();
    let mut eps = l.hash::<u32, Endpoint>(ENDPOINTS);
    eps.insert(a(C1), Endpoint::new(101, C1_MAC, 1), 0).unwrap();
    eps.insert(a(C2), Endpoint::new(102, C2_MAC, 1), 0).unwrap();
    let mut ports = l.hash::<PortKey, PortValue>(PORTS);
    for proto in [PROTO_TCP, PROTO_UDP] {
        ports
            .insert(
                PortKey::new(0, port_key(8080), proto),
                PortValue::new(a(C1), port_key(80)),
                0,
            )
            .unwrap();
    }
    ports
        .insert(
            PortKey::new(a(HOST), port_key(9090), PROTO_TCP),
            PortValue::new(a(C2), port_key(90)),
            0,
        )
        .unwrap();
    l
}

fn tuple(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, proto: u8) -> Tuple {
    Tuple {
        src,
        dst,
        sport,
        dport,
        proto,
    }
}

/// Asserts that only the tuple (and checksums) changed, and the payload did not.
fn assert_payload_kept(before: &[u8], after: &[u8], payload: &[u8]) {
    assert_eq!(before.len(), after.len(), "length changed");
    assert!(after.ends_with(payload), "payload changed");
}

#[test]
fn dnat_tcp_forward_then_reverse() {
    let mut l = seeded();
    let syn = frames::tcp((CLIENT, 40000), (HOST, 8080), "S", b"hello");
    let r = l.run_tc(UPLINK, &syn);
    assert_eq!(
        r.verdict, TC_ACT_REDIRECT,
        "into the container with redirect_peer"
    );
    assert_eq!(
        verify(&r.frame),
        tuple(CLIENT, 40000, C1, 80, PROTO_TCP),
        "client source kept"
    );
    assert_eq!(
        &r.frame[0..6],
        &C1_MAC,
        "destination MAC is the container's"
    );
    assert_eq!(&r.frame[6..12], &BRIDGE_MAC, "source MAC is the bridge's");
    assert_payload_kept(&syn, &r.frame, b"hello");
    assert_eq!(l.counter(Counter::Dnat as u32), 1);

    let ct = l.conntrack();
    assert_eq!(ct.len(), 2, "a forward and a reverse entry: {ct:?}");
    let fwd = ct.iter().find(|(k, _)| k.saddr == a(CLIENT)).unwrap();
    assert_eq!(fwd.1.tcp_seen & CT_SEEN_SYN, CT_SEEN_SYN);

    let synack = frames::tcp((C1, 80), (CLIENT, 40000), "SA", b"world");
    let r = l.run_tc(VETH, &synack);
    assert_eq!(
        r.verdict, TC_ACT_REDIRECT,
        "out of the uplink with redirect_neigh"
    );
    assert_eq!(
        verify(&r.frame),
        tuple(HOST, 8080, CLIENT, 40000, PROTO_TCP)
    );
    assert_payload_kept(&synack, &r.frame, b"world");
    assert_eq!(l.counter(Counter::ReverseDnat as u32), 1);

    // Later packets of the flow hit the same entries.
    let ack = frames::tcp((CLIENT, 40000), (HOST, 8080), "A", b"more");
    assert_eq!(
        verify(&l.run_tc(UPLINK, &ack).frame),
        tuple(CLIENT, 40000, C1, 80, PROTO_TCP)
    );
    let fin = frames::tcp((C1, 80), (CLIENT, 40000), "FA", b"");
    assert_eq!(
        verify(&l.run_tc(VETH, &fin).frame),
        tuple(HOST, 8080, CLIENT, 40000, PROTO_TCP)
    );
    let rev = l
        .conntrack()
        .into_iter()
        .find(|(k, _)| k.saddr == a(C1))
        .unwrap();
    assert_ne!(rev.1.tcp_seen & CT_SEEN_FIN, 0, "FIN recorded");
    assert_eq!(rev.1.packets, 2);
}

#[test]
fn dnat_udp_with_and_without_checksum() {
    let mut l = seeded();
    let f = frames::udp((CLIENT, 5353), (HOST, 8080), b"q1");
    let r = l.run_tc(UPLINK, &f);
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    assert_eq!(verify(&r.frame), tuple(CLIENT, 5353, C1, 80, PROTO_UDP));
    assert_ne!(&r.frame[frames::off::L4 + 6..frames::off::L4 + 8], &[0, 0]);

    let f = frames::udp_no_csum((CLIENT, 5354), (HOST, 8080), b"q2");
    let r = l.run_tc(UPLINK, &f);
    assert_eq!(verify(&r.frame), tuple(CLIENT, 5354, C1, 80, PROTO_UDP));
    assert_eq!(
        &r.frame[frames::off::L4 + 6..frames::off::L4 + 8],
        &[0, 0],
        "UDP checksum 0 stays 0"
    );
    let reply = frames::udp_no_csum((C1, 80), (CLIENT, 5354), b"a2");
    let r = l.run_tc(VETH, &reply);
    assert_eq!(verify(&r.frame), tuple(HOST, 8080, CLIENT, 5354, PROTO_UDP));
    assert_eq!(&r.frame[frames::off::L4 + 6..frames::off::L4 + 8], &[0, 0]);
}

#[test]
fn published_address_must_match() {
    let mut l = seeded();
    // HOST:9090 is published on HOST only.
    let r = l.run_tc(UPLINK, &frames::tcp((CLIENT, 1), (HOST, 9090), "S", b""));
    assert_eq!(verify(&r.frame), tuple(CLIENT, 1, C2, 90, PROTO_TCP));
    // 8080 on "any address" applies to host addresses, not to others passing through.
    let f = frames::tcp((CLIENT, 1), (Ipv4Addr::new(10, 9, 9, 9), 8080), "S", b"");
    let r = l.run_tc(UPLINK, &f);
    assert_eq!((r.verdict, &r.frame), (TC_ACT_OK, &f));
    // Unpublished port: untouched.
    let f = frames::tcp((CLIENT, 1), (HOST, 8081), "S", b"");
    let r = l.run_tc(UPLINK, &f);
    assert_eq!((r.verdict, &r.frame), (TC_ACT_OK, &f));
    assert!(l.conntrack().len() == 2, "only the 9090 flow is tracked");
}

#[test]
fn ip_options_are_skipped_correctly() {
    let mut l = seeded();
    let f = frames::with_ip_options(
        &frames::tcp((CLIENT, 40001), (HOST, 8080), "S", b"opt"),
        &[1, 1, 1, 0],
    );
    let r = l.run_tc(UPLINK, &f);
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    assert_eq!(verify(&r.frame), tuple(CLIENT, 40001, C1, 80, PROTO_TCP));
    assert_eq!(&r.frame[14 + 20..14 + 24], &[1, 1, 1, 0], "options kept");
    assert_eq!(l.counter(Counter::IpOptions as u32), 1);
}

#[test]
fn malformed_and_foreign_frames_are_never_translated() {
    let mut l = seeded();
    // TCP header cut short.
    let mut f = frames::tcp((CLIENT, 40000), (HOST, 8080), "S", b"");
    f.truncate(14 + 20 + 10);
    f[16..18].copy_from_slice(&30u16.to_be_bytes());
    let r = l.run_tc(UPLINK, &f);
    assert_eq!(r.verdict, TC_ACT_SHOT);
    assert_eq!(&r.frame[..], &f[..], "not rewritten");
    assert_eq!(l.counter(DropReason::MalformedL4 as u32), 1);
    // A later fragment to a published port: passed untouched (no L4 header).
    let mut f = frames::udp((CLIENT, 5353), (HOST, 8080), b"frag");
    f[14 + 6..14 + 8].copy_from_slice(&0x0010u16.to_be_bytes());
    let r = l.run_tc(UPLINK, &f);
    assert_eq!((r.verdict, &r.frame), (TC_ACT_OK, &f));
    assert_eq!(l.counter(Counter::Fragment as u32), 1);
    // IPv6 and ARP: untouched.
    let mut v6 = vec![0u8; 14 + 40 + 8];
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    v6[14] = 0x60;
    let r = l.run_tc(UPLINK, &v6);
    assert_eq!((r.verdict, &r.frame), (TC_ACT_OK, &v6));
    let arp = frames::arp(CLIENT, HOST);
    let r = l.run_tc(UPLINK, &arp);
    assert_eq!((r.verdict, &r.frame), (TC_ACT_OK, &arp));
    assert!(l.conntrack().is_empty());
}

#[test]
fn hairpin_to_self_and_to_another_container() {
    let mut l = seeded();
    // C1 reaches its own published port through the host address: the
    // source becomes the gateway so the reply comes back through the host.
    let r = l.run_tc(VETH, &frames::tcp((C1, 6000), (HOST, 8080), "S", b"me"));
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    assert_eq!(verify(&r.frame), tuple(GW, 6000, C1, 80, PROTO_TCP));
    assert_eq!(&r.frame[0..6], &C1_MAC);
    let r = l.run_tc(VETH, &frames::tcp((C1, 80), (GW, 6000), "SA", b""));
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    assert_eq!(verify(&r.frame), tuple(HOST, 8080, C1, 6000, PROTO_TCP));

    // C2 reaches C1's published port: C1 sees C2's own address.
    let r = l.run_tc(VETH, &frames::tcp((C2, 7000), (HOST, 8080), "S", b""));
    assert_eq!(verify(&r.frame), tuple(C2, 7000, C1, 80, PROTO_TCP));
    let r = l.run_tc(VETH, &frames::tcp((C1, 80), (C2, 7000), "SA", b""));
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    assert_eq!(verify(&r.frame), tuple(HOST, 8080, C2, 7000, PROTO_TCP));
    assert_eq!(&r.frame[0..6], &C2_MAC, "delivered to C2");
}

/// Removes tail-call target `slot` from JUMPS, as a half-finished program
/// replacement would leave it.
fn drop_stage(l: &mut Loaded, slot: u32) {
    let map = l.ebpf.map_mut(JUMPS).unwrap();
    let mut jumps = aya::maps::ProgramArray::try_from(map).unwrap();
    jumps.clear_index(&slot).unwrap();
}

#[test]
fn a_missing_stage_drops_new_flows_instead_of_passing_them_untranslated() {
    let mut l = seeded();
    let no_program = DropReason::NoProgram as u32;
    // Positive controls: with every stage in place, a hairpin and a DNAT open.
    let r = l.run_tc(VETH, &frames::tcp((C2, 7000), (HOST, 8080), "S", b""));
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    assert_eq!(verify(&r.frame), tuple(C2, 7000, C1, 80, PROTO_TCP));
    let r = l.run_tc(
        UPLINK,
        &frames::tcp((CLIENT, 40000), (HOST, 8080), "S", b""),
    );
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    assert_eq!(verify(&r.frame), tuple(CLIENT, 40000, C1, 80, PROTO_TCP));
    let entries = l.conntrack().len();
    assert_eq!(l.counter(no_program), 0);

    drop_stage(&mut l, JUMP_VETH_NEW);
    drop_stage(&mut l, JUMP_UPLINK_NEW);
    // Established flows never leave the first stage: they still work.
    let r = l.run_tc(VETH, &frames::tcp((C1, 80), (C2, 7000), "SA", b""));
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    assert_eq!(verify(&r.frame), tuple(HOST, 8080, C2, 7000, PROTO_TCP));
    // New ones are dropped, counted, and leave no state.
    let syn = frames::tcp((C2, 7001), (HOST, 8080), "S", b"");
    let r = l.run_tc(VETH, &syn);
    assert_eq!((r.verdict, &r.frame), (TC_ACT_SHOT, &syn));
    assert_eq!(l.counter(no_program), 1);
    let syn = frames::tcp((CLIENT, 40001), (HOST, 8080), "S", b"");
    let r = l.run_tc(UPLINK, &syn);
    assert_eq!((r.verdict, &r.frame), (TC_ACT_SHOT, &syn));
    assert_eq!(l.counter(no_program), 2);
    assert_eq!(l.conntrack().len(), entries, "no flow was opened");
}

#[test]
fn reply_to_host_local_connection_is_not_hairpinned() {
    let mut l = seeded();
    // The host talked to C1 directly (gateway source, ephemeral port 8080 by
    // chance): C1's reply is not a new flow and must not be translated.
    let f = frames::tcp((C1, 80), (GW, 8080), "SA", b"");
    let r = l.run_tc(VETH, &f);
    assert_eq!((r.verdict, &r.frame), (TC_ACT_OK, &f));
}

#[test]
fn stale_entries_expire() {
    let mut l = seeded();
    let r = l.run_tc(UPLINK, &frames::udp((CLIENT, 5353), (HOST, 8080), b"q"));
    assert_eq!(r.verdict, TC_ACT_REDIRECT, "the request is DNATed");
    // Age every entry far past its timeout.
    let entries = l.conntrack();
    assert_eq!(
        entries.len(),
        2,
        "the flow made a forward and a reverse entry"
    );
    let mut ct = l.hash::<CtKey, CtEntry>(CONNTRACK);
    for (k, mut e) in entries {
        e.last_seen = 1;
        ct.insert(k, e, 0).unwrap();
    }
    // The reply now meets a stale reverse entry: removed, not translated.
    let f = frames::udp((C1, 80), (CLIENT, 5353), b"late");
    let r = l.run_tc(VETH, &f);
    assert_eq!((r.verdict, &r.frame), (TC_ACT_OK, &f));
    assert!(l.conntrack().is_empty(), "the stale pair was removed");
}

#[test]
fn a_pair_ages_as_one_and_a_closed_flow_reopens() {
    let mut l = seeded();
    l.run_tc(
        UPLINK,
        &frames::tcp((CLIENT, 40000), (HOST, 8080), "S", b""),
    );
    // Age the reverse entry only; traffic on the forward entry refreshes it.
    let entries = l.conntrack();
    let mut ct = l.hash::<CtKey, CtEntry>(CONNTRACK);
    let (rk, mut re) = entries
        .iter()
        .copied()
        .find(|(k, _)| k.saddr == a(C1))
        .unwrap();
    re.last_seen = 1;
    ct.insert(rk, re, 0).unwrap();
    l.run_tc(
        UPLINK,
        &frames::tcp((CLIENT, 40000), (HOST, 8080), "A", b"x"),
    );
    let r = l.run_tc(VETH, &frames::tcp((C1, 80), (CLIENT, 40000), "A", b"y"));
    assert_eq!(
        verify(&r.frame),
        tuple(HOST, 8080, CLIENT, 40000, PROTO_TCP),
        "reverse kept alive by its partner"
    );

    // The flow closes; the client reuses its port for a new connection (a
    // SYN on a closed tuple): a fresh pair, with fresh TCP state.
    l.run_tc(
        UPLINK,
        &frames::tcp((CLIENT, 40000), (HOST, 8080), "FA", b""),
    );
    l.run_tc(VETH, &frames::tcp((C1, 80), (CLIENT, 40000), "FA", b""));
    let r = l.run_tc(
        UPLINK,
        &frames::tcp((CLIENT, 40000), (HOST, 8080), "S", b""),
    );
    assert_eq!(verify(&r.frame), tuple(CLIENT, 40000, C1, 80, PROTO_TCP));
    let fwd = l
        .conntrack()
        .into_iter()
        .find(|(k, _)| k.saddr == a(CLIENT))
        .unwrap();
    assert_eq!(fwd.1.tcp_seen, CT_SEEN_SYN, "state starts over");
    assert_eq!(fwd.1.packets, 1);
    let r = l.run_tc(VETH, &frames::tcp((C1, 80), (CLIENT, 40000), "SA", b""));
    assert_eq!(
        verify(&r.frame),
        tuple(HOST, 8080, CLIENT, 40000, PROTO_TCP)
    );
}

/// Masquerade needs a FIB lookup, so it runs inside a throwaway host namespace
/// with uplink `up0` (10.200.0.1/24) towards a client namespace.
fn with_uplink<T: Send>(f: impl FnOnce(&mut Loaded) -> T + Send) -> T {
    with_uplink_mtu(1500, f)
}

/// Like [`with_uplink`], with the uplink's MTU set to `mtu`.
fn with_uplink_mtu<T: Send>(mtu: u32, f: impl FnOnce(&mut Loaded) -> T + Send) -> T {
    let topo = Topology::new(1);
    topo.host
        .ip(&["link", "set", "up0", "mtu", &mtu.to_string()]);
    let ifindex: u32 = topo
        .host
        .ip(&["-o", "link", "show", "up0"])
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut l = seeded();
    l.hash::<u32, Uplink>(UPLINKS)
        .insert(ifindex, Uplink { addr: a(HOST) }, 0)
        .unwrap();
    assert_eq!(addr::host_uplink(0), HOST.to_string());
    in_netns(&topo.host.name, || f(&mut l))
}

#[test]
fn masquerade_maps_into_the_reserved_range_and_reverses() {
    with_uplink(|l| {
        let f = frames::udp((C1, 5000), (CLIENT, 53), b"query");
        let r = l.run_tc(VETH, &f);
        assert_eq!(r.verdict, TC_ACT_REDIRECT, "out of the uplink");
        let t = verify(&r.frame);
        assert_eq!(
            (t.src, t.dst, t.dport, t.proto),
            (HOST, CLIENT, 53, PROTO_UDP)
        );
        assert!(
            (MASQ_PORT_LO..=MASQ_PORT_HI).contains(&t.sport),
            "a port of the reserved masquerade range: {}",
            t.sport
        );
        assert_payload_kept(&f, &r.frame, b"query");
        assert_eq!(l.counter(Counter::Snat as u32), 1);
        let p1 = t.sport;

        let r = l.run_tc(UPLINK, &frames::udp((CLIENT, 53), (HOST, p1), b"answer"));
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        assert_eq!(verify(&r.frame), tuple(CLIENT, 53, C1, 5000, PROTO_UDP));
        assert_eq!(&r.frame[0..6], &C1_MAC);
        assert_eq!(l.counter(Counter::ReverseSnat as u32), 1);

        // C2 uses the same source port to the same server: another port.
        let r = l.run_tc(VETH, &frames::udp((C2, 5000), (CLIENT, 53), b"q2"));
        let t = verify(&r.frame);
        assert_eq!((t.src, t.dst, t.dport), (HOST, CLIENT, 53));
        assert_ne!(t.sport, p1, "port taken by C1's flow");
        assert!((MASQ_PORT_LO..=MASQ_PORT_HI).contains(&t.sport));
        let r = l.run_tc(UPLINK, &frames::udp((CLIENT, 53), (HOST, t.sport), b"a2"));
        assert_eq!(verify(&r.frame), tuple(CLIENT, 53, C2, 5000, PROTO_UDP));
    });
}

#[test]
fn masquerade_never_takes_a_tuple_a_host_socket_holds() {
    with_uplink(|l| {
        // The host holds every port of the masquerade range towards the
        // client's port 53 (bound sockets: a connected one would also count).
        let mut lim = libc::rlimit {
            rlim_cur: 16384,
            rlim_max: 16384,
        };
        // SAFETY: plain syscalls on a valid struct.
        unsafe {
            let mut cur = lim;
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
            lim.rlim_max = lim.rlim_max.max(cur.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        let held: Vec<std::net::UdpSocket> = (MASQ_PORT_LO..=MASQ_PORT_HI)
            .map(|p| std::net::UdpSocket::bind((HOST, p)).unwrap())
            .collect();
        let before = l.counter(DropReason::NatExhausted as u32);
        let r = l.run_tc(VETH, &frames::udp((C1, 5000), (CLIENT, 53), b"q"));
        assert_eq!(r.verdict, TC_ACT_SHOT, "every candidate is a host socket's");
        assert_eq!(l.counter(DropReason::NatExhausted as u32) - before, 1);
        // Positive control: with the sockets gone, the same packet goes out.
        drop(held);
        let r = l.run_tc(VETH, &frames::udp((C1, 5000), (CLIENT, 53), b"q"));
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
    });
}

#[test]
fn masquerade_exhaustion_is_dropped_and_counted() {
    with_uplink(|l| {
        // Positive control: with ports free, the packet goes out.
        let r = l.run_tc(VETH, &frames::udp((C1, 5000), (CLIENT, 53), b"q"));
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        // Every UDP port of the host published: no source port is left to take.
        let mut ports = l.hash::<PortKey, PortValue>(PORTS);
        for p in 1..=u16::MAX {
            let _ = ports.insert(
                PortKey::new(0, port_key(p), PROTO_UDP),
                PortValue::new(a(C2), port_key(80)),
                0,
            );
        }
        let before = l.counter(DropReason::NatExhausted as u32);
        let f = frames::udp((C1, 5001), (CLIENT, 53), b"q");
        let r = l.run_tc(VETH, &f);
        assert_eq!(r.verdict, TC_ACT_SHOT, "no port left: dropped");
        assert_eq!(
            l.counter(DropReason::NatExhausted as u32) - before,
            1,
            "counted as drop_nat_exhausted"
        );
        assert_eq!(
            l.conntrack()
                .iter()
                .filter(|(k, _)| k.sport == port_key(5001))
                .count(),
            0,
            "no half-made conntrack entry"
        );
    });
}

#[test]
fn masquerade_icmp_echo_and_error_translation() {
    with_uplink(|l| {
        let r = l.run_tc(VETH, &frames::icmp_echo(C1, CLIENT, 77, 1));
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        let t = verify(&r.frame);
        assert_eq!((t.src, t.dst), (HOST, CLIENT));
        let id = t.sport;
        // The echo reply comes back to the uplink address with the (new) id.
        let mut reply = frames::icmp_echo(CLIENT, HOST, id, 1);
        let l4 = frames::off::L4;
        reply[l4] = 0; // type: echo reply
        let ck = cnet_common::csum::update16(
            u16::from_be_bytes([reply[l4 + 2], reply[l4 + 3]]),
            0x0800,
            0x0000,
        );
        reply[l4 + 2..l4 + 4].copy_from_slice(&ck.to_be_bytes());
        verify(&reply);
        let r = l.run_tc(UPLINK, &reply);
        assert_eq!(verify(&r.frame), tuple(CLIENT, 77, C1, 77, 1));

        // A UDP flow, then "port unreachable" from the client about it.
        let orig = frames::udp((C1, 5001), (CLIENT, 9999), b"x");
        let out = l.run_tc(VETH, &orig);
        let sent = verify(&out.frame);
        let embedded = &out.frame[14..14 + 28];
        let err = icmp_error(CLIENT, HOST, 3, 3, embedded);
        verify(&err);
        let r = l.run_tc(UPLINK, &err);
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        let t = verify(&r.frame);
        assert_eq!(
            (t.src, t.dst),
            (CLIENT, C1),
            "outer destination is the container"
        );
        let inner = &r.frame[14 + 28..];
        assert_eq!(
            &inner[12..16],
            &C1.octets(),
            "embedded source is the container"
        );
        assert_eq!(&inner[16..20], &CLIENT.octets());
        assert_eq!(
            u16::from_be_bytes([inner[20], inner[21]]),
            5001,
            "embedded port restored"
        );
        assert_eq!(
            cnet_common::csum::checksum(&inner[..20]),
            0,
            "embedded IP checksum valid"
        );
        assert_eq!(
            &inner[26..28],
            &orig[34 + 6..34 + 8],
            "embedded UDP checksum back to what the container sent"
        );
        let l4 = 14 + 20;
        assert_eq!(
            cnet_common::csum::checksum(&r.frame[l4..]),
            0,
            "outer ICMP checksum"
        );
        assert!((61000..=65535).contains(&sent.sport), "{}", sent.sport);

        // "Fragmentation needed" from a router on the path (not the end host)
        // about a TCP flow: only the destination and the embedded source change.
        let out = l.run_tc(VETH, &frames::tcp((C2, 6001), (CLIENT, 443), "S", b""));
        let sent = verify(&out.frame);
        let router = Ipv4Addr::new(10, 200, 0, 254);
        let mut err = icmp_error(router, HOST, 3, 4, &out.frame[14..14 + 28]);
        // Next-hop MTU 1400 in the ICMP header, checksum fixed up.
        err[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&1400u16.to_be_bytes());
        let l4 = 14 + 20;
        err[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
        let ck = cnet_common::csum::checksum(&err[l4..]);
        err[l4 + 2..l4 + 4].copy_from_slice(&ck.to_be_bytes());
        verify(&err);
        let r = l.run_tc(UPLINK, &err);
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        let t = verify(&r.frame);
        assert_eq!((t.src, t.dst), (router, C2), "the router stays the source");
        let inner = &r.frame[14 + 28..];
        assert_eq!(&inner[12..16], &C2.octets());
        assert_eq!(u16::from_be_bytes([inner[20], inner[21]]), 6001);
        assert_eq!(
            u16::from_be_bytes([r.frame[l4 + 6], r.frame[l4 + 7]]),
            1400,
            "MTU kept"
        );
        assert_eq!(cnet_common::csum::checksum(&inner[..20]), 0);
        assert_eq!(sent.dport, 443);
    });
}

#[test]
fn icmp_errors_from_a_container_only_about_its_own_flows() {
    let mut l = seeded();
    // A client's UDP flow to C1 (8080 -> C1:80).
    let q = frames::udp((CLIENT, 5353), (HOST, 8080), b"q");
    let r = l.run_tc(UPLINK, &q);
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    let delivered = r.frame.clone();
    // Allowed twin: C1 itself answers "port unreachable" about it.
    let err = icmp_error(C1, CLIENT, 3, 3, &delivered[14..14 + 28]);
    let r = l.run_tc(VETH, &err);
    assert_eq!(r.verdict, TC_ACT_REDIRECT, "C1's own error is translated");
    let inner = &r.frame[14 + 28..];
    assert_eq!(
        &inner[16..20],
        &HOST.octets(),
        "embedded destination restored"
    );
    assert_eq!(
        &inner[26..28],
        &q[34 + 6..34 + 8],
        "embedded UDP checksum restored"
    );
    // C2 forging the same error about C1's flow: dropped.
    let before = l.counter(DropReason::IcmpForeign as u32);
    let forged = icmp_error(C2, CLIENT, 3, 3, &delivered[14..14 + 28]);
    let r = l.run_tc(VETH, &forged);
    assert_eq!(r.verdict, TC_ACT_SHOT);
    assert_eq!(
        l.counter(DropReason::IcmpForeign as u32) - before,
        1,
        "drop_icmp_foreign"
    );
}

fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
    f[14 + 8] = ttl;
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let ck = cnet_common::csum::checksum(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&ck.to_be_bytes());
    f
}

#[test]
fn forwarding_decrements_the_ttl_and_hands_expiring_packets_to_the_stack() {
    with_uplink(|l| {
        // DNAT into a container: forwarded, TTL 64 -> 63, checksums valid.
        let r = l.run_tc(
            UPLINK,
            &frames::tcp((CLIENT, 40000), (HOST, 8080), "S", b""),
        );
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        assert_eq!(r.frame[14 + 8], 63);
        verify(&r.frame);
        // Masquerade out of the uplink: the same.
        let r = l.run_tc(VETH, &frames::udp((C1, 5000), (CLIENT, 53), b"q"));
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        assert_eq!(r.frame[14 + 8], 63);
        verify(&r.frame);
        // TTL 1 from a container to the outside: untouched, to the stack
        // (which answers time exceeded, as traceroute expects).
        let f = with_ttl(frames::udp((C1, 5001), (CLIENT, 33434), b"t"), 1);
        let r = l.run_tc(VETH, &f);
        assert_eq!((r.verdict, &r.frame), (TC_ACT_OK, &f));
        // TTL 1 to a published port: translated, but handed to the stack to expire.
        let f = with_ttl(frames::tcp((CLIENT, 40001), (HOST, 8080), "S", b""), 1);
        let r = l.run_tc(UPLINK, &f);
        assert_eq!(r.verdict, TC_ACT_OK, "not redirected");
        assert_eq!(r.frame[14 + 8], 1);
    });
}

/// A UDP frame of `payload` bytes from C1 with DF set or not.
fn big_udp(sport: u16, payload: usize, df: bool) -> Vec<u8> {
    let mut f = frames::udp((C1, sport), (CLIENT, 53), &vec![0u8; payload]);
    f[14 + 6] = if df { 0x40 } else { 0 };
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let ck = cnet_common::csum::checksum(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&ck.to_be_bytes());
    f
}

#[test]
fn a_df_packet_too_big_for_the_uplink_is_answered_with_frag_needed() {
    with_uplink_mtu(1400, |l| {
        // Positive control: a packet that fits goes out.
        let r = l.run_tc(VETH, &big_udp(5000, 1000, true));
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        // 1500 bytes of IP with DF from C1 to the outside.
        let f = big_udp(5001, 1472, true);
        let sent = l.counter(Counter::FragNeeded as u32);
        let r = l.run_tc(VETH, &f);
        assert_eq!(r.verdict, TC_ACT_REDIRECT, "the answer goes back to C1");
        assert_eq!(l.counter(Counter::FragNeeded as u32) - sent, 1);
        let a = &r.frame;
        assert_eq!(a.len(), 70);
        assert_eq!(&a[0..6], &C1_MAC, "to the container");
        assert_eq!(&a[6..12], &BRIDGE_MAC, "from the bridge");
        assert_eq!(addrs_of(a), (GW, C1), "from the gateway");
        assert_eq!(cnet_common::csum::checksum(&a[14..34]), 0, "IP checksum");
        assert_eq!((a[34], a[35]), (3, 4), "fragmentation needed");
        assert_eq!(u16::from_be_bytes([a[40], a[41]]), 1400, "the uplink's MTU");
        assert_eq!(cnet_common::csum::checksum(&a[34..]), 0, "ICMP checksum");
        assert_eq!(&a[42..70], &f[14..42], "the original header, untranslated");
        assert!(
            l.conntrack().iter().all(|(k, _)| k.sport != port_key(5001)),
            "no flow for a packet that never left"
        );
        // Without DF: dropped and counted.
        let before = l.counter(DropReason::TooBig as u32);
        assert_eq!(
            l.run_tc(VETH, &big_udp(5002, 1472, false)).verdict,
            TC_ACT_SHOT
        );
        assert_eq!(l.counter(DropReason::TooBig as u32) - before, 1);
    });
}

/// `f` made a fragment: IP id `id`, more-fragments flag, offset in 8-byte
/// units; the IPv4 header checksum fixed.
fn fragment(mut f: Vec<u8>, id: u16, more: bool, offset8: u16) -> Vec<u8> {
    f[14 + 4..14 + 6].copy_from_slice(&id.to_be_bytes());
    let fo = (u16::from(more) << 13) | offset8;
    f[14 + 6..14 + 8].copy_from_slice(&fo.to_be_bytes());
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let ck = cnet_common::csum::checksum(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&ck.to_be_bytes());
    f
}

fn addrs_of(f: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let ip = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
    (ip(frames::off::IP_SRC), ip(frames::off::IP_DST))
}

#[test]
fn later_fragments_follow_their_first_through_dnat_and_masquerade() {
    with_uplink(|l| {
        // DNAT: the first fragment of a datagram to a published UDP port...
        let first = fragment(
            frames::udp((CLIENT, 5353), (HOST, 8080), &[7u8; 64]),
            0x1234,
            true,
            0,
        );
        let r = l.run_tc(UPLINK, &first);
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        assert_eq!(addrs_of(&r.frame), (CLIENT, C1));
        // ...and a later one (no UDP header) get the same destination.
        let later = fragment(
            frames::udp((CLIENT, 5353), (HOST, 8080), &[9u8; 64]),
            0x1234,
            false,
            9,
        );
        let r = l.run_tc(UPLINK, &later);
        assert_eq!(r.verdict, TC_ACT_REDIRECT, "delivered into C1");
        assert_eq!(addrs_of(&r.frame), (CLIENT, C1));
        assert_eq!(
            cnet_common::csum::checksum(&r.frame[14..34]),
            0,
            "IP checksum"
        );
        assert_eq!(
            &r.frame[34..],
            &later[34..],
            "the fragment's data is untouched"
        );
        assert_eq!(&r.frame[0..6], &C1_MAC);

        // Masquerade: a container's fragmented datagram leaves with the host's address.
        let first = fragment(
            frames::udp((C1, 7000), (CLIENT, 53), &[1u8; 64]),
            77,
            true,
            0,
        );
        let r = l.run_tc(VETH, &first);
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        assert_eq!(addrs_of(&r.frame), (HOST, CLIENT));
        let later = fragment(
            frames::udp((C1, 7000), (CLIENT, 53), &[2u8; 64]),
            77,
            false,
            9,
        );
        let r = l.run_tc(VETH, &later);
        assert_eq!(r.verdict, TC_ACT_REDIRECT, "out of the uplink");
        assert_eq!(
            addrs_of(&r.frame),
            (HOST, CLIENT),
            "no private source leaks"
        );
        assert_eq!(cnet_common::csum::checksum(&r.frame[14..34]), 0);

        // A later fragment whose first was never seen: dropped, never leaked.
        let before = l.counter(DropReason::Fragment as u32);
        let stray = fragment(
            frames::udp((C2, 7000), (CLIENT, 53), &[3u8; 64]),
            78,
            false,
            9,
        );
        let r = l.run_tc(VETH, &stray);
        assert_eq!(r.verdict, TC_ACT_SHOT);
        assert_eq!(
            l.counter(DropReason::Fragment as u32) - before,
            1,
            "drop_frag"
        );
        // To the host itself an unknown later fragment is the stack's business.
        let own = fragment(
            frames::udp((CLIENT, 1), (HOST, 22), &[4u8; 64]),
            79,
            false,
            9,
        );
        let r = l.run_tc(UPLINK, &own);
        assert_eq!((r.verdict, &r.frame), (TC_ACT_OK, &own));
    });
}

/// An ICMP error frame from `src` to `dst` embedding `orig` (IP header + 8 bytes).
fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, orig: &[u8]) -> Vec<u8> {
    let mut icmp = vec![ty, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(orig);
    let ck = cnet_common::csum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&ck.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let ck = cnet_common::csum::checksum(&ip);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    let mut f = frames::MAC_B.to_vec();
    f.extend_from_slice(&frames::mac_of(src));
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}
