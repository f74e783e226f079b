//! The harness's own checks can fail: the firewall check sees a rule written
//! in the instance's namespace (iptables-nft, iptables-legacy, nftables), a
//! server that never starts fails the test that needs it, and a probe tells
//! a refusal from a drop.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::process::Command;

use cnet_tests::{
    cnet::Instance,
    netns::{Netns, addr, unique_name},
    traffic::{Outcome, tcp_probe, udp_probe},
};

fn in_ns(ns: &str, args: &[&str]) {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

#[test]
fn the_firewall_check_catches_a_rule_in_the_instance_namespace() {
    let mut inst = Instance::up(1, &[]);
    let ns = inst.topo.host.name.clone();
    inst.check_firewall().unwrap();
    for (add, del, needle) in [
        (
            vec!["iptables", "-A", "FORWARD", "-s", "192.0.2.7", "-j", "DROP"],
            vec!["iptables", "-D", "FORWARD", "-s", "192.0.2.7", "-j", "DROP"],
            "192.0.2.7",
        ),
        (
            vec![
                "iptables-legacy",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                "198.51.100.0/24",
                "-j",
                "MASQUERADE",
            ],
            vec![
                "iptables-legacy",
                "-t",
                "nat",
                "-D",
                "POSTROUTING",
                "-s",
                "198.51.100.0/24",
                "-j",
                "MASQUERADE",
            ],
            "198.51.100.0/24",
        ),
        (
            vec!["nft", "add", "table", "inet", "cnet_probe"],
            vec!["nft", "delete", "table", "inet", "cnet_probe"],
            "cnet_probe",
        ),
    ] {
        in_ns(&ns, &add);
        let e = inst.check_firewall().unwrap_err();
        assert!(e.contains(needle), "{add:?} not seen: {e}");
        in_ns(&ns, &del);
        // Deleting a rule leaves its (empty) table behind: that is the new normal.
        inst.rebaseline_firewall();
        inst.check_firewall().unwrap();
    }
}

#[test]
fn a_server_that_never_starts_fails_the_test() {
    let inst = Instance::up(1, &[]);
    let name = format!("dup-{}", unique_name());
    // The second bind of the same port fails: the server never prints ready.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        inst.run_server(&name, &[], &[80, 80]);
    }));
    let e = r.unwrap_err();
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("never started"), "{msg}");
}

#[test]
fn probes_tell_a_refusal_from_a_drop() {
    let inst = Instance::up(1, &[]);
    let client = inst.topo.clients[0].name.clone();
    let host = inst.topo.host.name.clone();
    // Nothing listens on the host: TCP gets a reset, UDP a port unreachable.
    let to = format!("{}:9", addr::host_uplink(0));
    assert_eq!(tcp_probe(&client, &to, "x"), Outcome::Refused);
    assert_eq!(udp_probe(&client, None, &to, "x"), Outcome::Refused);
    // Silence: the host routes 203.0.113.0/24 into a namespace of the
    // test's own that has no address at all, so every packet is discarded.
    let sink = Netns::new();
    let peer = [
        "ip", "link", "add", "hole0", "type", "veth", "peer", "name", "eth0", "netns",
    ];
    let mut args = peer.to_vec();
    args.push(&sink.name);
    in_ns(&host, &args);
    sink.ip(&["link", "set", "eth0", "up"]);
    in_ns(&host, &["ip", "link", "set", "hole0", "up"]);
    in_ns(
        &host,
        &["ip", "route", "add", "203.0.113.0/24", "dev", "hole0"],
    );
    let neigh = [
        "ip",
        "neigh",
        "add",
        "203.0.113.9",
        "lladdr",
        "02:00:00:00:00:09",
    ];
    let mut args = neigh.to_vec();
    args.extend(["dev", "hole0"]);
    in_ns(&host, &args);
    assert_eq!(tcp_probe(&client, "203.0.113.9:80", "x"), Outcome::Timeout);
    assert_eq!(
        udp_probe(&client, None, "203.0.113.9:80", "x"),
        Outcome::Timeout
    );
}
