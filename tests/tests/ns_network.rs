//! Docker-compatible networks and modes with real namespaces and traffic:
//! user-defined networks (create/ls/inspect/rm/prune/connect/disconnect),
//! isolation between them, names and aliases, and host/none/container: modes.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::process::Command;

use cnet_tests::{
    cnet::Instance,
    netns::{addr, unique_name},
    traffic::{Outcome, assert_reply, retry, seen_source, tcp_probe, tcp_request, udp_probe},
};

fn ctr(base: &str) -> String {
    format!("{base}-{}", unique_name())
}

fn getent(ns: &str, name: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "getent", "hosts", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn network_lifecycle_and_dockers_json() {
    let mut inst = Instance::up(1, &[]);
    let net = ctr("appnet");
    let id = inst.ok(&[
        "network",
        "create",
        "--subnet",
        "10.77.0.0/24",
        "--gateway",
        "10.77.0.254",
        "--ip-range",
        "10.77.0.128/25",
        "-o",
        "com.docker.network.bridge.enable_icc=true",
        &net,
    ]);
    assert_eq!(id.trim().len(), 64, "prints the id: {id}");
    let ls = inst.ok(&["network", "ls"]);
    for n in ["bridge", "host", "none", net.as_str()] {
        assert!(
            ls.lines().any(|l| l.split_whitespace().nth(1) == Some(n)),
            "{n} listed: {ls}"
        );
    }
    let c = ctr("c");
    inst.run_server(&c, &["--network", &net], &[80]);
    let v: serde_json::Value =
        serde_json::from_str(&inst.ok(&["network", "inspect", &net])).unwrap();
    let n = &v[0];
    assert_eq!(n["Name"], net.as_str());
    assert_eq!(n["Id"], id.trim());
    assert_eq!(
        (n["Driver"].as_str(), n["Scope"].as_str()),
        (Some("bridge"), Some("local"))
    );
    assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "10.77.0.0/24");
    assert_eq!(n["IPAM"]["Config"][0]["Gateway"], "10.77.0.254");
    assert_eq!(n["IPAM"]["Config"][0]["IPRange"], "10.77.0.128/25");
    assert_eq!(n["Internal"], false);
    assert_eq!(n["Options"]["com.docker.network.bridge.enable_icc"], "true");
    let members = n["Containers"].as_object().unwrap();
    let m = members.values().next().unwrap();
    assert_eq!(
        (m["Name"].as_str(), m["IPv4Address"].as_str()),
        (Some(c.as_str()), Some("10.77.0.128/24"))
    );
    assert_eq!(m["MacAddress"], "02:42:0a:4d:00:80");
    let ci: serde_json::Value = serde_json::from_str(&inst.ok(&["inspect", &c])).unwrap();
    let e = &ci[0]["NetworkSettings"]["Networks"][&net];
    assert_eq!(
        (
            e["IPAddress"].as_str(),
            e["Gateway"].as_str(),
            e["IPPrefixLen"].as_u64()
        ),
        (Some("10.77.0.128"), Some("10.77.0.254"), Some(24))
    );
    assert_eq!(e["NetworkID"], id.trim());

    // The outside still reaches it through a published port? (no: none published) -> masquerade out works.
    let client_srv = cnet_tests::traffic::echo_server(&inst.topo.clients[0], &[9000]);
    inst.topo.adopt(client_srv);
    let r = tcp_request(&c, &format!("{}:9000", addr::client(0)), "out").unwrap();
    assert_eq!(
        seen_source(&r),
        addr::host_uplink(0),
        "user networks are masqueraded too"
    );

    // Bad input: clear errors, nothing created.
    for (args, needle) in [
        (
            vec!["network", "create", "--subnet", "172.17.9.0/24", "x1"],
            "overlaps",
        ),
        (
            vec!["network", "create", "--subnet", "10.77.0.0/25", "x1"],
            "overlaps",
        ),
        (
            vec![
                "network",
                "create",
                "--subnet",
                "10.78.0.0/24",
                "--gateway",
                "10.79.0.1",
                "x1",
            ],
            "10.79.0.1",
        ),
        (
            vec![
                "network",
                "create",
                "-o",
                "com.docker.network.bridge.enable_icc=maybe",
                "x1",
            ],
            "maybe",
        ),
        (vec!["network", "create", "-d", "overlay", "x1"], "overlay"),
        (vec!["network", "create", &net], "already exists"),
        (vec!["network", "rm", &net], "active endpoints"),
        (vec!["network", "rm", "bridge"], "pre-defined"),
        (
            vec!["run", "-d", "--network", "nosuchnet", "--", "sleep", "1"],
            "nosuchnet",
        ),
        (
            vec!["run", "-d", "--ip", "172.17.0.50", "--", "sleep", "1"],
            "user defined networks only",
        ),
    ] {
        let e = inst.fails(&args);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    assert!(!inst.ok(&["network", "ls"]).contains("x1"));

    // Without --subnet, the next free pool subnet (the bridge has 172.17/16).
    let auto = ctr("auto");
    inst.ok(&["network", "create", &auto]);
    let v: serde_json::Value =
        serde_json::from_str(&inst.ok(&["network", "inspect", &auto])).unwrap();
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");

    inst.ok(&["rm", "-f", &c]);
    let pruned = inst.ok(&["network", "prune"]);
    assert!(pruned.contains(&net) && pruned.contains(&auto), "{pruned}");
    let links = inst.topo.host.ip(&["-o", "link"]);
    assert!(!links.contains("br-"), "bridges removed: {links}");
}

#[test]
fn names_resolve_on_user_networks_and_networks_are_isolated() {
    let inst = Instance::up(1, &[]);
    let net = ctr("front");
    inst.ok(&["network", "create", "--subnet", "10.88.0.0/24", &net]);
    let (web, db, other) = (ctr("web"), ctr("db"), ctr("other"));
    inst.run_server(
        &db,
        &["--network", &net, "--network-alias", "database"],
        &[5432],
    );
    inst.run_server(&web, &["--network", &net, "--ip", "10.88.0.50"], &[80]);
    inst.run_server(&other, &[], &[80]);

    assert!(
        getent(&web, &db).starts_with("10.88.0.2"),
        "name resolves: {}",
        getent(&web, &db)
    );
    assert!(
        getent(&web, "database").starts_with("10.88.0.2"),
        "alias resolves"
    );
    assert!(
        getent(&db, &web).starts_with("10.88.0.50"),
        "--ip honoured, and the older container sees the newer one"
    );
    assert!(
        getent(&other, &db).is_empty(),
        "the default network resolves only links"
    );
    retry(|| tcp_request(&web, "10.88.0.2:5432", "q")).unwrap();
    // And the command itself sees the same names.
    let out = inst.cnet(&[
        "run",
        "--name",
        &ctr("probe"),
        "--network",
        &net,
        "--",
        "getent",
        "hosts",
        "database",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("10.88.0.2"),
        "{out:?}"
    );

    // Isolation: the default network cannot reach the user network, nor back.
    // Positive controls: both servers answer on those very addresses.
    assert_reply(tcp_probe(&web, "10.88.0.2:5432", "x"), "db answers");
    let host = inst.topo.host.name.clone();
    assert_reply(tcp_probe(&host, "172.17.0.2:80", "x"), "other answers");
    inst.assert_drop("drop_icc", 2, "bridge -> front", || {
        tcp_probe(&other, "10.88.0.2:5432", "x")
    });
    inst.assert_drop("drop_icc", 2, "front -> bridge", || {
        tcp_probe(&db, "172.17.0.2:80", "x")
    });

    // connect: a second interface; then the pair talks over the shared network.
    inst.ok(&["network", "connect", "--alias", "legacy", &net, &other]);
    let eth1 = cnet_tests::netns::ip(&["-n", &other, "-o", "-4", "addr", "show", "eth1"]);
    assert!(
        eth1.contains("10.88.0."),
        "eth1 on the user network: {eth1}"
    );
    let r = retry(|| tcp_request(&other, "10.88.0.2:5432", "now")).unwrap();
    assert!(seen_source(&r).starts_with("10.88.0."), "{r}");
    assert!(
        getent(&db, "legacy").starts_with("10.88.0."),
        "connect alias resolves"
    );
    let e = inst.fails(&["network", "connect", &net, &other]);
    assert!(e.contains("already connected"), "{e}");
    inst.ok(&["network", "disconnect", &net, &other]);
    assert!(
        cnet_tests::netns::ip(&["-n", &other, "-o", "link"])
            .lines()
            .all(|l| !l.contains("eth1"))
    );
    inst.assert_drop("drop_icc", 2, "blocked again after disconnect", || {
        tcp_probe(&other, "10.88.0.2:5432", "x")
    });
    assert!(getent(&db, "legacy").is_empty(), "alias gone");
}

#[test]
fn host_none_and_container_modes() {
    let inst = Instance::up(1, &[]);
    // host: the host's namespace; -p is ignored with a warning.
    let out = inst.cnet(&[
        "run",
        "--network",
        "host",
        "-p",
        "80:80",
        "--",
        "ip",
        "-o",
        "link",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("up0") && text.contains("cnet0"),
        "host interfaces: {text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("discarded"),
        "warning"
    );
    // none: only lo.
    let out = inst.cnet(&["run", "--network", "none", "--", "ip", "-o", "link"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "only lo: {text}");
    assert!(
        inst.fails(&["run", "--network", "none", "-p", "80", "--", "true"])
            .contains("publish")
    );
    // container:NAME shares NAME's network; -p is refused as Docker does.
    let web = ctr("web");
    inst.run_server(
        &web,
        &[
            "-p",
            "8080:80",
            "--hostname",
            "webhost",
            "--dns",
            "10.0.0.53",
            "--add-host",
            "extra.test:10.1.2.3",
        ],
        &[80],
    );
    let out = inst.cnet(&[
        "run",
        "--network",
        &format!("container:{web}"),
        "--",
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("172.17.0.2/16"),
        "{out:?}"
    );
    let e = inst.fails(&[
        "run",
        "--network",
        &format!("container:{web}"),
        "-p",
        "81:81",
        "--",
        "true",
    ]);
    assert!(e.contains("conflicting options"), "{e}");
    // --hostname, --dns, --add-host as the command sees them.
    let side = ctr("side");
    let out = inst.cnet(&[
        "run",
        "--name",
        &side,
        "--hostname",
        "probe1",
        "--dns",
        "10.0.0.53",
        "--add-host",
        "extra.test:10.1.2.3",
        "--",
        "sh",
        "-c",
        "hostname; cat /etc/resolv.conf; getent hosts extra.test",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("probe1\n"), "{text}");
    assert!(
        text.contains("nameserver 10.0.0.53") && text.contains("10.1.2.3"),
        "{text}"
    );
    // A container joined to web keeps running when web goes, without a network.
    let joined = ctr("joined");
    inst.ok(&[
        "run",
        "-d",
        "--name",
        &joined,
        "--network",
        &format!("container:{web}"),
        "--",
        "sleep",
        "1000",
    ]);
    inst.ok(&["rm", "-f", &web]);
    let ps = inst.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        ps.lines().any(|l| l.starts_with(&format!("{joined} Up "))),
        "{ps}"
    );
    // 8080 was web's: after web is gone nobody publishes it and the host
    // refuses it (the path works: the host answers with a reset).
    let client = inst.topo.clients[0].name.clone();
    assert_eq!(
        tcp_probe(&client, &format!("{}:8080", addr::host_uplink(0)), "x"),
        Outcome::Refused,
        "8080 unpublished with web"
    );
}

#[test]
fn internal_networks_keep_traffic_inside() {
    let mut inst = Instance::up(1, &[]);
    let net = ctr("secret");
    inst.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.99.5.0/24",
        &net,
    ]);
    let (a, b) = (ctr("a"), ctr("b"));
    inst.run_server(&a, &["--network", &net], &[80]);
    inst.run_server(&b, &["--network", &net], &[80]);
    let srv = cnet_tests::traffic::echo_server(&inst.topo.clients[0], &[9000]);
    inst.topo.adopt(srv);
    retry(|| tcp_request(&a, "10.99.5.3:80", "inside")).unwrap();
    // Positive control: the outside server answers a container of the
    // default network.
    let probe = ctr("probe");
    inst.run_server(&probe, &[], &[80]);
    assert_reply(
        tcp_probe(&probe, &format!("{}:9000", addr::client(0)), "out"),
        "the outside server answers",
    );
    inst.assert_drop("drop_internal", 2, "tcp out of an internal network", || {
        tcp_probe(&a, &format!("{}:9000", addr::client(0)), "out")
    });
    inst.assert_drop("drop_internal", 1, "udp out of an internal network", || {
        udp_probe(&a, None, &format!("{}:9000", addr::client(0)), "out")
    });
    let v: serde_json::Value =
        serde_json::from_str(&inst.ok(&["network", "inspect", &net])).unwrap();
    assert_eq!(v[0]["Internal"], true);
}

#[test]
fn enable_icc_false_isolates_the_containers_of_a_user_network() {
    let inst = Instance::up(1, &[]);
    let net = ctr("quiet");
    inst.ok(&[
        "network",
        "create",
        "--subnet",
        "10.91.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        &net,
    ]);
    let (a, b) = (ctr("a"), ctr("b"));
    inst.run_server(&a, &["--network", &net], &[80]);
    inst.run_server(&b, &["--network", &net], &[80]);
    assert!(
        getent(&a, &b).starts_with("10.91.0.3"),
        "names still resolve"
    );
    // Positive control: both servers answer the gateway (the host).
    let host = inst.topo.host.name.clone();
    assert_reply(tcp_probe(&host, "10.91.0.3:80", "x"), "b answers");
    assert_reply(tcp_probe(&host, "10.91.0.2:80", "x"), "a answers");
    inst.assert_drop("drop_icc", 2, "a -> b with icc off", || {
        tcp_probe(&a, "10.91.0.3:80", "x")
    });
    inst.assert_drop("drop_icc", 1, "b -> a (udp) with icc off", || {
        udp_probe(&b, None, "10.91.0.2:80", "x")
    });
    let v: serde_json::Value =
        serde_json::from_str(&inst.ok(&["network", "inspect", &net])).unwrap();
    assert_eq!(
        v[0]["Options"]["com.docker.network.bridge.enable_icc"],
        "false"
    );
}

#[test]
fn bad_run_flags_are_clear_errors_and_create_nothing() {
    let inst = Instance::up(1, &[]);
    let name = ctr("bad");
    for (flags, needle) in [
        (vec!["--dns", "x.y"], "x.y"),
        (vec!["--add-host", "nocolon"], "nocolon"),
        (vec!["--add-host", "h:999.1.1.1"], "999.1.1.1"),
        (vec!["--hostname=-dash"], "-dash"),
        (vec!["--link", "nosuch"], "nosuch"),
        (vec!["--expose", "abc"], "abc"),
        (vec!["--network", "container:nosuch"], "nosuch"),
        (vec!["--network", "nosuchnet"], "nosuchnet"),
        (vec!["--network-alias", "x"], "--network-alias"),
        (vec!["--ip", "10.0.0.5"], "--ip"),
        (vec!["-p", "80:80/sctp"], "sctp"),
    ] {
        let mut args = vec!["run", "-d", "--name", name.as_str()];
        args.extend(flags.iter().copied());
        args.extend(["--", "sleep", "1"]);
        let e = inst.fails(&args);
        assert!(e.contains(needle), "{flags:?}: {e}");
        assert!(
            !std::path::Path::new(&format!("/run/netns/{name}")).exists(),
            "{flags:?} left a namespace"
        );
    }
    assert_eq!(inst.ok(&["ps", "-q"]).trim(), "", "nothing created");
    let veths = inst.topo.host.ip(&["-o", "link", "show", "type", "veth"]);
    assert!(!veths.contains("master cnet0"), "no veth left: {veths}");
}
