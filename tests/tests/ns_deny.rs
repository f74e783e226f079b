//! Namespace test for the source deny list: real ping and TCP between two
//! containers, blocked while the source is listed and flowing after removal.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::net::Ipv4Addr;

use aya::programs::{SchedClassifier, TcAttachType};
use cnet_common::{
    DropReason,
    maps::{DENY_SRC, DenyValue},
};
use cnet_tests::{
    netns::{Topology, addr, assert_gone, firewall_snapshot, in_netns},
    prog::Loaded,
    traffic::{echo_server, tcp_request},
};

fn deny(l: &mut Loaded, a: Ipv4Addr) {
    l.hash::<u32, DenyValue>(DENY_SRC)
        .insert(u32::from_ne_bytes(a.octets()), DenyValue { id: 1 }, 0)
        .unwrap();
}

#[test]
fn deny_then_allow_with_real_traffic() {
    let fw = firewall_snapshot();
    let (names, paths);
    {
        let mut topo = Topology::new(0).with_bridge(2);
        names = topo.names();
        paths = vec![topo.tempdir()];
        let srv = echo_server(&topo.containers[1], &[7000]);
        topo.adopt(srv);
        let c0 = topo.containers[0].name.clone();
        let target = format!("{}:7000", addr::container(1));

        let mut l = Loaded::new();
        let host = topo.host.name.clone();
        {
            let prog: &mut SchedClassifier = l
                .ebpf
                .program_mut("cnet_veth_ingress")
                .unwrap()
                .try_into()
                .unwrap();
            in_netns(&host, || {
                prog.attach("veth0", TcAttachType::Ingress).unwrap()
            });
        }
        assert!(
            topo.containers[0].ping(&addr::container(1)),
            "ping before deny"
        );
        tcp_request(&c0, &target, "hello").unwrap();

        deny(&mut l, Ipv4Addr::new(10, 201, 0, 2));
        assert!(
            !topo.containers[0].ping(&addr::container(1)),
            "ping must be blocked while listed"
        );
        let err = tcp_request(&c0, &target, "hello").unwrap_err();
        assert!(
            err.contains("connect"),
            "TCP must be blocked while listed: {err}"
        );
        assert!(l.counter(DropReason::DeniedSource as u32) >= 2);

        l.hash::<u32, DenyValue>(DENY_SRC)
            .remove(&u32::from_ne_bytes([10, 201, 0, 2]))
            .unwrap();
        assert!(
            topo.containers[0].ping(&addr::container(1)),
            "ping after removal"
        );
        let reply = tcp_request(&c0, &target, "again").unwrap();
        assert_eq!(reply, format!("{}|again", reply.split('|').next().unwrap()));
        assert!(
            reply.starts_with("10.201.0.2:"),
            "server sees the real source: {reply}"
        );
    }
    assert_gone(&names, &paths);
    assert_eq!(
        firewall_snapshot(),
        fw,
        "firewall rulesets must be untouched"
    );
}
