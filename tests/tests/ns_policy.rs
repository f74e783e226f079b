//! Namespace tests for isolation with real traffic: icc=false (and changing it
//! live), links (exactly the pair, alias resolution, environment), filters
//! (only the named source, live removal) and their counters.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::process::Command;

use cnet_tests::{
    cnet::Instance,
    netns::{addr, unique_name},
    traffic::{
        assert_reply, ping_probe, retry, seen_source, tcp_probe, tcp_request, udp_probe,
        udp_request,
    },
};

fn ctr(base: &str) -> String {
    format!("{base}-{}", unique_name())
}

fn ping(ns: &str, to: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-W1", "-q", to])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn icc_false_isolates_containers_and_can_be_switched_live() {
    let inst = Instance::up(1, &[]);
    let (c1, c2) = (ctr("c1"), ctr("c2"));
    inst.run_server(&c1, &["-p", "8080:80"], &[80]);
    inst.run_server(&c2, &[], &[80]);
    let (ip1, ip2) = ("172.17.0.2:80", "172.17.0.3:80");
    let host = addr::host_uplink(0);
    let cg = inst.cgroup.to_string_lossy().into_owned();

    // Positive control: with icc on, every probe below gets its answer.
    for (from, ip) in [(&c1, ip2), (&c2, ip1)] {
        assert_reply(tcp_probe(from, ip, "on"), "tcp with icc on");
        assert_reply(udp_probe(from, None, ip, "on"), "udp with icc on");
        assert_reply(
            ping_probe(from, ip.split(':').next().unwrap()),
            "ping with icc on",
        );
    }

    // icc off, live.
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cg, "--icc=false"]);
    // The outside still reaches c1's published port, and c1 the outside.
    let client = inst.topo.clients[0].name.clone();
    let r = retry(|| tcp_request(&client, &format!("{host}:8080"), "pub")).unwrap();
    assert_eq!(seen_source(&r), addr::client(0));
    assert!(ping(&c1, &addr::client(0)), "c1 reaches the outside");
    assert!(ping(&c1, "172.17.0.1"), "c1 reaches the gateway");

    for (from, to, ip) in [(&c1, &c2, ip2), (&c2, &c1, ip1)] {
        // A SYN and its one retransmission within the 2 s connect timeout.
        inst.assert_drop("drop_icc", 2, &format!("tcp {from} -> {to}"), || {
            tcp_probe(from, ip, "x")
        });
        inst.assert_drop("drop_icc", 1, &format!("udp {from} -> {to}"), || {
            udp_probe(from, None, ip, "x")
        });
        inst.assert_drop("drop_icc", 1, &format!("ping {from} -> {to}"), || {
            ping_probe(from, ip.split(':').next().unwrap())
        });
    }

    // icc back on, without restarting anything.
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cg, "--icc=true"]);
    let r = tcp_request(&c1, ip2, "now").unwrap();
    assert_eq!(seen_source(&r), "172.17.0.2");
    assert!(udp_request(&c2, None, ip1, "now").is_ok());
    assert!(ping(&c2, "172.17.0.2"));
}

#[test]
fn a_link_opens_exactly_the_pair_and_its_alias_resolves() {
    let inst = Instance::up(1, &["--icc=false"]);
    let (db, app, other) = (ctr("db"), ctr("app"), ctr("other"));
    inst.run_server(&db, &["--expose", "5432"], &[5432, 81]);
    inst.run_server(&app, &["--link", &format!("{db}:database")], &[8000]);
    inst.run_server(&other, &[], &[8000]);
    let db_ip = "172.17.0.2";

    let r = retry(|| tcp_request(&app, &format!("{db_ip}:5432"), "q")).unwrap();
    assert_eq!(
        seen_source(&r),
        "172.17.0.3",
        "app reaches db's exposed port"
    );
    // Positive controls: every server answers the host (the gateway).
    let host = inst.topo.host.name.clone();
    assert_reply(
        tcp_probe(&host, &format!("{db_ip}:81"), "q"),
        "db:81 answers",
    );
    assert_reply(tcp_probe(&host, "172.17.0.3:8000", "q"), "app:8000 answers");
    inst.assert_drop("drop_icc", 2, "app -> db:81, not an exposed port", || {
        tcp_probe(&app, &format!("{db_ip}:81"), "q")
    });
    inst.assert_drop("drop_icc", 2, "a third container stays blocked", || {
        tcp_probe(&other, &format!("{db_ip}:5432"), "q")
    });
    inst.assert_drop("drop_icc", 2, "db cannot call app", || {
        tcp_probe(&db, "172.17.0.3:8000", "q")
    });

    // The alias and the name resolve inside the container (ip netns exec view).
    let out = Command::new("ip")
        .args(["netns", "exec", &app, "getent", "hosts", "database"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(db_ip),
        "{out:?}"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &app, "getent", "hosts", &db])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(db_ip),
        "{out:?}"
    );

    // And for the command cnet runs, with Docker's link variables.
    let probe = ctr("probe");
    let out = inst.cnet(&[
        "run", "--name", &probe, "--link", &format!("{db}:database"), "--",
        "sh", "-c", "getent hosts database; echo $DATABASE_PORT_5432_TCP_ADDR $DATABASE_PORT_5432_TCP_PORT $DATABASE_PORT_5432_TCP_PROTO $DATABASE_NAME",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.lines().next().unwrap().starts_with(db_ip), "{text}");
    assert!(
        text.contains(&format!("{db_ip} 5432 tcp /{probe}/database")),
        "{text}"
    );

    // Removing the linked container removes the allowance.
    inst.ok(&["rm", "-f", &db]);
    let data = aya::maps::MapData::from_pin(inst.map_pin(cnet_common::maps::ALLOW)).unwrap();
    let allow: aya::maps::HashMap<_, cnet_common::maps::AllowKey, u32> =
        aya::maps::HashMap::try_from(aya::maps::Map::from_map_data(data).unwrap()).unwrap();
    assert_eq!(
        allow.keys().count(),
        0,
        "no allowance outlives its containers"
    );
}

#[test]
fn filters_drop_only_the_named_source_live_and_count() {
    let inst = Instance::up(2, &[]);
    let web = ctr("web");
    inst.run_server(&web, &["-p", "8080:80"], &[80]);
    let (c0, c1) = (
        inst.topo.clients[0].name.clone(),
        inst.topo.clients[1].name.clone(),
    );
    let via0 = format!("{}:8080", addr::host_uplink(0));
    let via1 = format!("{}:8080", addr::host_uplink(1));
    retry(|| tcp_request(&c0, &via0, "before")).unwrap();

    let id = inst.ok(&[
        "filter",
        "add",
        "--src",
        &addr::client(0),
        "--action",
        "drop",
    ]);
    let id = id.trim().to_string();
    // A SYN and its retransmission, each counted by the rule's own counter too.
    inst.assert_drop("drop_filter", 2, "client 0 is filtered", || {
        tcp_probe(&c0, &via0, "blocked")
    });
    let r = tcp_request(&c1, &via1, "ok").unwrap();
    assert_eq!(
        seen_source(&r),
        addr::client(1),
        "client 1 still gets through"
    );
    let ls = inst.ok(&["filter", "ls"]);
    assert!(
        ls.contains(&format!("{}/32", addr::client(0))) && ls.contains("drop"),
        "{ls}"
    );

    inst.ok(&["filter", "rm", &id]);
    let r = tcp_request(&c0, &via0, "again").unwrap();
    assert!(
        r.ends_with("again"),
        "filter rm restores the next connection"
    );

    // Counters: exactly the packets sent.
    let id = inst.ok(&[
        "filter",
        "add",
        "--src",
        &addr::client(0),
        "--proto",
        "icmp",
        "--action",
        "drop",
    ]);
    let id = id.trim();
    let ok = Command::new("ip")
        .args([
            "netns",
            "exec",
            &c0,
            "ping",
            "-c5",
            "-i0.05",
            "-W1",
            "-q",
            &addr::host_uplink(0),
        ])
        .status()
        .unwrap()
        .success();
    assert!(!ok, "pings are dropped");
    let stats: serde_json::Value = serde_json::from_str(&inst.ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["filters"][id], 5, "one count per ping: {stats}");

    let e = inst.fails(&["filter", "add", "--src", "10.0.0.0/40", "--action", "drop"]);
    assert!(e.contains("10.0.0.0/40"), "{e}");
    let e = inst.fails(&["filter", "add", "--src", "10.0.0.1", "--action", "reject"]);
    assert!(e.contains("reject"), "{e}");
    let e = inst.fails(&["filter", "rm", "999"]);
    assert!(e.contains("999"), "{e}");
}
