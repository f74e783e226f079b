//! Packet tests (BPF_PROG_TEST_RUN) for `cnet_veth_ingress`'s source deny
//! list: verdicts, untouched frames, malformed frames, counters.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::net::Ipv4Addr;

use cnet_common::{
    DropReason,
    maps::{DENY_SRC, DenyValue},
};
use cnet_tests::{
    frames,
    prog::{Loaded, TC_ACT_OK, TC_ACT_SHOT},
};

const LISTED: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 3);

fn deny(l: &mut Loaded, a: Ipv4Addr) {
    l.hash::<u32, DenyValue>(DENY_SRC)
        .insert(u32::from_ne_bytes(a.octets()), DenyValue { id: 1 }, 0)
        .unwrap();
}

#[test]
fn listed_source_is_shot_and_counted() {
    let mut l = Loaded::new();
    deny(&mut l, LISTED);
    let f = frames::tcp((LISTED, 40000), (OTHER, 80), "S", b"");
    let r = l.run_tc("cnet_veth_ingress", &f);
    assert_eq!(r.verdict, TC_ACT_SHOT);
    assert_eq!(l.counter(DropReason::DeniedSource as u32), 1);
}

#[test]
fn unlisted_source_passes_untouched() {
    let mut l = Loaded::new();
    deny(&mut l, LISTED);
    for f in [
        frames::tcp((OTHER, 40000), (LISTED, 80), "S", b""),
        frames::udp((OTHER, 5353), (LISTED, 53), b"q"),
        frames::icmp_echo(OTHER, LISTED, 7, 1),
    ] {
        let r = l.run_tc("cnet_veth_ingress", &f);
        assert_eq!(r.verdict, TC_ACT_OK);
        assert_eq!(r.frame, f, "an unlisted frame must not be rewritten");
    }
    assert_eq!(l.counter(DropReason::DeniedSource as u32), 0);
}

#[test]
fn non_ip_and_malformed_frames() {
    let mut l = Loaded::new();
    deny(&mut l, LISTED);
    // ARP from a listed address: not IP, passes untouched.
    let a = frames::arp(LISTED, OTHER);
    let r = l.run_tc("cnet_veth_ingress", &a);
    assert_eq!((r.verdict, &r.frame), (TC_ACT_OK, &a));
    // An IHL that runs past the end of the frame (the kernel's test_run itself
    // refuses frames shorter than a bare IPv4 header): dropped as malformed,
    // never matched as "listed".
    let mut f = frames::tcp((LISTED, 1), (OTHER, 2), "S", b"");
    f.truncate(14 + 20 + 8);
    f[14] = 0x4f;
    let r = l.run_tc("cnet_veth_ingress", &f);
    assert_eq!(r.verdict, TC_ACT_SHOT);
    // A version that is not 4 under the IPv4 ethertype.
    let mut f = frames::tcp((LISTED, 1), (OTHER, 2), "S", b"");
    f[14] = 0x65;
    let r = l.run_tc("cnet_veth_ingress", &f);
    assert_eq!(r.verdict, TC_ACT_SHOT);
    assert_eq!(l.counter(DropReason::MalformedIp as u32), 2);
    assert_eq!(l.counter(DropReason::DeniedSource as u32), 0);
}
