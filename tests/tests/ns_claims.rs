//! README claims that had no test (docs/claims.md maps every claim to its
//! test): masquerade switches, hooks confined to the instance's namespace,
//! filters by destination container, port and protocol, filters rebuilt
//! after a wipe, links removed from either side, network options, hosts
//! files on removal, default hostname, inspect's endpoint fields,
//! daemon.json keys on their own, CNET_ROOT and CNET_CONFIG.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::process::Command;

use cnet_tests::{
    cnet::{Instance, cnet_bin},
    netns::{addr, unique_name},
    traffic::{assert_reply, echo_server, retry, seen_source, tcp_probe, tcp_request, udp_probe},
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

fn allow_len(inst: &Instance) -> usize {
    let data = aya::maps::MapData::from_pin(inst.map_pin(cnet_common::maps::ALLOW)).unwrap();
    let allow: aya::maps::HashMap<_, cnet_common::maps::AllowKey, u32> =
        aya::maps::HashMap::try_from(aya::maps::Map::from_map_data(data).unwrap()).unwrap();
    allow.keys().count()
}

#[test]
fn ip_masq_false_and_enable_ip_masquerade_false_keep_the_container_source() {
    let mut inst = Instance::up(1, &["--ip-masq=false"]);
    let srv = echo_server(&inst.topo.clients[0], &[9000]);
    inst.topo.adopt(srv);
    let to = format!("{}:9000", addr::client(0));
    let a = ctr("a");
    inst.run_server(&a, &[], &[80]);
    let r = assert_reply(tcp_probe(&a, &to, "x"), "routed out");
    assert_eq!(
        seen_source(&r),
        "172.17.0.2",
        "--ip-masq=false: not masqueraded"
    );
    // Live back on: masqueraded to the uplink address.
    let cg = inst.cgroup.to_string_lossy().into_owned();
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cg, "--ip-masq=true"]);
    let r = assert_reply(tcp_probe(&a, &to, "y"), "masqueraded");
    assert_eq!(seen_source(&r), addr::host_uplink(0));
    // Per network: enable_ip_masquerade=false. The client routes the
    // network's subnet back through the host (as a LAN router would).
    let net = ctr("nomasq");
    inst.ok(&[
        "network",
        "create",
        "--subnet",
        "10.77.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        &net,
    ]);
    let b = ctr("b");
    inst.run_server(&b, &["--network", &net], &[80]);
    let r = assert_reply(tcp_probe(&b, &to, "z"), "routed out of the network");
    assert_eq!(seen_source(&r), "10.77.0.2");
}

#[test]
fn host_local_hooks_act_only_in_the_instance_namespace() {
    let inst = Instance::up(1, &[]);
    let web = ctr("web");
    inst.run_server(&web, &["-p", "8080:80"], &[80]);
    // Positive control: a process in the cgroup, in the host namespace.
    let (reply, _) = inst.host_client("tcp", "127.0.0.1:8080", "in").unwrap();
    assert!(reply.ends_with("|in"), "{reply}");
    // The same cgroup, another network namespace: not rewritten (refused).
    let client = &inst.topo.clients[0].name;
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} client tcp 127.0.0.1:8080 out",
        inst.cgroup.display(),
        cnet_tests::traffic::testsrv()
    );
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{client}"))
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused"), "not redirected, refused: {err}");
}

#[test]
fn filters_by_container_port_and_protocol_and_rebuilt_after_a_wipe() {
    let inst = Instance::up(1, &[]);
    let web = ctr("web");
    inst.run_server(
        &web,
        &["-p", "8080:80", "-p", "8081:81", "-p", "8080:80/udp"],
        &[80, 81],
    );
    let client = inst.topo.clients[0].name.clone();
    let host = addr::host_uplink(0);
    let (p80, p81) = (format!("{host}:8080"), format!("{host}:8081"));
    assert_reply(tcp_probe(&client, &p81, "x"), "81 before the filter");
    let id = inst.ok(&[
        "filter",
        "add",
        "--src",
        &format!("{}/24", addr::client(0)),
        "--dst",
        &web,
        "--proto",
        "tcp",
        "--dport",
        "81",
        "--action",
        "drop",
    ]);
    inst.assert_drop("drop_filter", 2, "tcp to web:81", || {
        tcp_probe(&client, &p81, "x")
    });
    assert_reply(
        tcp_probe(&client, &p80, "x"),
        "tcp to web:80 is another port",
    );
    assert_reply(
        udp_probe(&client, None, &p80, "x"),
        "udp is another protocol",
    );
    let stats = inst.stats();
    assert_eq!(stats["filters"][id.trim()], 2, "{stats}");

    // A wipe of the kernel side (as a reboot): `cnet up` rebuilds the filter.
    let out = Command::new("umount")
        .arg(inst.root.join("bpf"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let cg = inst.cgroup.to_string_lossy().into_owned();
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cg]);
    retry(|| tcp_request(&client, &p80, "back")).unwrap();
    inst.assert_drop("drop_filter", 2, "the filter survives the wipe", || {
        tcp_probe(&client, &p81, "x")
    });
}

#[test]
fn a_link_goes_when_either_side_goes() {
    let inst = Instance::up(1, &["--icc=false"]);
    for remove_linking_side in [true, false] {
        let (db, app) = (ctr("db"), ctr("app"));
        inst.run_server(&db, &["--expose", "5432"], &[5432]);
        inst.run_server(&app, &["--link", &format!("{db}:database")], &[80]);
        let db_ip = inst.ok(&["inspect", &db]);
        let v: serde_json::Value = serde_json::from_str(&db_ip).unwrap();
        let ip = v[0]["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string();
        retry(|| tcp_request(&app, &format!("{ip}:5432"), "q")).unwrap();
        assert!(allow_len(&inst) > 0, "the link is in the ALLOW map");
        let gone = if remove_linking_side { &app } else { &db };
        inst.ok(&["rm", "-f", gone]);
        assert_eq!(allow_len(&inst), 0, "removing {gone} removes the link");
        let other = if remove_linking_side { &db } else { &app };
        inst.ok(&["rm", "-f", other]);
    }
}

#[test]
fn network_options_hosts_files_hostname_and_inspect_fields() {
    let inst = Instance::up(1, &[]);
    let net = ctr("opts");
    inst.ok(&[
        "network",
        "create",
        "--subnet",
        "10.78.0.0/24",
        "-o",
        "com.docker.network.bridge.name=brclaims",
        "-o",
        "com.docker.network.driver.mtu=1400",
        &net,
    ]);
    let link = inst.topo.host.ip(&["-o", "link", "show", "brclaims"]);
    assert!(link.contains("mtu 1400"), "bridge.name and mtu: {link}");
    let (a, b) = (ctr("a"), ctr("b"));
    inst.run_server(&a, &["--network", &net], &[80]);
    inst.run_server(&b, &["--network", &net, "--network-alias", "bee"], &[80]);
    let eth0 = cnet_tests::netns::ip(&["-n", &a, "-o", "link", "show", "eth0"]);
    assert!(eth0.contains("mtu 1400"), "container mtu: {eth0}");

    // inspect: EndpointID and Aliases on a user-defined network; default hostname.
    let v: serde_json::Value = serde_json::from_str(&inst.ok(&["inspect", &b])).unwrap();
    let ep = &v[0]["NetworkSettings"]["Networks"][&net];
    let id = v[0]["Id"].as_str().unwrap();
    assert_eq!(ep["EndpointID"].as_str().unwrap().len(), 64, "{ep}");
    let aliases: Vec<&str> = ep["Aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(aliases.contains(&"bee"), "{aliases:?}");
    assert_eq!(v[0]["Config"]["Hostname"], id[..12], "default hostname");
    let out = inst.cnet(&["run", "--network", &net, "--", "hostname"]);
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        printed.len(),
        12,
        "the command sees a 12-character id: {printed}"
    );

    // Hosts files follow removals.
    assert!(getent(&a, "bee").starts_with("10.78.0.3"), "alias resolves");
    inst.ok(&["rm", "-f", &b]);
    assert_eq!(getent(&a, &b), "", "b's name is gone from a's hosts file");
    assert_eq!(getent(&a, "bee"), "", "and its alias");
}

#[test]
fn daemon_json_keys_alone_and_the_environment_variables() {
    let dir = std::env::temp_dir().join(unique_name());
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("daemon.json");
    std::fs::write(
        &cfg,
        r#"{"icc": false, "ip-masq": false, "default-gateway": "172.17.0.254",
            "default-address-pools": [{"base": "10.125.0.0/16", "size": 24}]}"#,
    )
    .unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    // CNET_CONFIG instead of --config.
    let inst = Instance::up_env(1, &[], &[("CNET_CONFIG", &cfg_s)]);
    let (a, b) = (ctr("a"), ctr("b"));
    inst.run_server(&a, &[], &[80]);
    inst.run_server(&b, &[], &[80]);
    let host = inst.topo.host.name.clone();
    assert_reply(tcp_probe(&host, "172.17.0.3:80", "x"), "b answers the host");
    inst.assert_drop("drop_icc", 2, "\"icc\": false alone", || {
        tcp_probe(&a, "172.17.0.3:80", "x")
    });
    let route = cnet_tests::netns::ip(&["-n", &a, "route", "show", "default"]);
    assert!(
        route.contains("via 172.17.0.254"),
        "default-gateway: {route}"
    );
    let net = ctr("pooled");
    inst.ok(&["--config", &cfg_s, "network", "create", &net]);
    let v: serde_json::Value =
        serde_json::from_str(&inst.ok(&["network", "inspect", &net])).unwrap();
    assert_eq!(
        v[0]["IPAM"]["Config"][0]["Subnet"], "10.125.0.0/24",
        "default-address-pools"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(inst.root.join("state.json")).unwrap())
            .unwrap();
    assert_eq!(state["masquerade"], false, "ip-masq");

    // CNET_ROOT instead of --root.
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{host}"))
        .arg(cnet_bin())
        .args(["ps", "--format", "{{.Names}}"])
        .env("CNET_ROOT", &inst.root)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&a) && listed.contains(&b),
        "CNET_ROOT: {out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn conntrack_ls_shows_flows_and_flush_clears_them() {
    let inst = Instance::up(1, &[]);
    let dns = ctr("dns");
    inst.run_server(&dns, &["-p", "5353:53/udp"], &[53]);
    let client = inst.topo.clients[0].name.clone();
    let from = format!("{}:41000", addr::client(0));
    let to = format!("{}:5353", addr::host_uplink(0));
    let r = cnet_tests::traffic::udp_request(&client, Some(&from), &to, "q").unwrap();
    assert!(r.ends_with("|q"));
    let flows: serde_json::Value =
        serde_json::from_str(&inst.ok(&["conntrack", "ls", "--json"])).unwrap();
    let f = flows
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["src"] == from.as_str())
        .unwrap_or_else(|| panic!("no flow from {from}: {flows}"));
    assert_eq!(f["proto"], "udp");
    assert_eq!(f["to_dst"], "172.17.0.2:53", "{f}");
    assert_eq!(f["kind"], "dnat");
    assert_eq!(f["state"], "ASSURED", "answered: {f}");
    assert!(
        f["expires_in"].as_u64().unwrap() > 100,
        "UDP assured: 120 s: {f}"
    );
    let text = inst.ok(&["conntrack", "ls"]);
    assert!(text.contains(&format!("src={from}")), "{text}");
    inst.ok(&["conntrack", "flush"]);
    assert_eq!(inst.ok(&["conntrack", "ls"]), "", "flushed");
    // The next datagram opens a new flow.
    let r = cnet_tests::traffic::udp_request(&client, Some(&from), &to, "again").unwrap();
    assert!(r.ends_with("|again"));
}
