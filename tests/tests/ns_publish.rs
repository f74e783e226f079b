//! Namespace tests for port publishing and masquerade with real traffic: the
//! client namespace is the outside world, the "host" is a throwaway namespace
//! running a cnet instance, containers are created by `cnet run`.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use cnet_tests::{
    cnet::Instance,
    netns::{addr, assert_gone, firewall_snapshot, unique_name},
    traffic::{
        Outcome, assert_reply, echo_server, retry, seen_source, tcp_probe, tcp_request, udp_probe,
        udp_request,
    },
};

/// Host ports of `cnet port NAME` lines (`80/tcp -> 0.0.0.0:8080`), keyed by "80/tcp".
fn ports(inst: &Instance, name: &str) -> Vec<(String, String)> {
    inst.ok(&["port", name])
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(" -> ").unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Container names are namespace names, global to the machine: unique per test.
fn ctr(base: &str) -> String {
    format!("{base}-{}", unique_name())
}

fn host_port(hostport: &str) -> &str {
    hostport.rsplit_once(':').unwrap().1
}

#[test]
fn every_publish_form_carries_tcp_and_udp_from_the_client() {
    let fw = firewall_snapshot();
    let inst = Instance::up(1, &[]);
    let host = addr::host_uplink(0);
    let client = inst.topo.clients[0].name.clone();
    let fixed = format!("{host}:8081:81");
    let dyn_ip = format!("{host}::82");
    let web = ctr("web");
    inst.run_server(
        &web,
        &[
            "-p",
            "8080:80",
            "-p",
            "8080:80/udp",
            "-p",
            &fixed,
            "-p",
            &dyn_ip,
            "-p",
            "83",
            "-p",
            "8090-8091:90-91",
            "-p",
            "8100-8110:53/udp",
            "--expose",
            "7000",
            "-P",
        ],
        &[80, 81, 82, 83, 90, 91, 53, 7000],
    );
    let published = ports(&inst, &web);
    let by = |k: &str| {
        published
            .iter()
            .filter(|(p, _)| p == k)
            .map(|(_, h)| h.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(by("80/tcp"), vec!["0.0.0.0:8080"]);
    assert_eq!(by("80/udp"), vec!["0.0.0.0:8080"]);
    assert_eq!(by("81/tcp"), vec![format!("{host}:8081")]);
    assert_eq!(by("90/tcp"), vec!["0.0.0.0:8090"]);
    assert_eq!(by("91/tcp"), vec!["0.0.0.0:8091"]);
    assert_eq!(
        by("53/udp"),
        vec!["0.0.0.0:8100"],
        "first free port of the host range"
    );
    assert!(by("82/tcp")[0].starts_with(&format!("{host}:")));
    assert_eq!(by("83/tcp").len(), 1, "dynamic host port");
    assert_eq!(by("7000/tcp").len(), 1, "-P publishes the exposed port");
    assert_eq!(inst.ok(&["port", &web, "53/udp"]).trim(), "0.0.0.0:8100");

    for (cport, hp) in &published {
        let to = format!("{host}:{}", host_port(hp));
        let payload = format!("to-{cport}");
        let reply = if cport.ends_with("/udp") {
            retry(|| udp_request(&client, None, &to, &payload))
        } else {
            retry(|| tcp_request(&client, &to, &payload))
        }
        .unwrap_or_else(|e| panic!("{cport} via {to}: {e}"));
        assert!(reply.ends_with(&payload), "{cport}: {reply}");
        assert_eq!(
            seen_source(&reply),
            addr::client(0),
            "{cport}: the container sees the real client"
        );
    }
    // 8081 is published on the uplink address only: the bridge gateway address does not carry it.
    // Positive control: 8080 (all addresses) answers there.
    assert_reply(
        tcp_probe(&client, "172.17.0.1:8080", "x"),
        "8080 is published on every host address",
    );
    assert_eq!(
        tcp_probe(&client, "172.17.0.1:8081", "x"),
        Outcome::Refused,
        "8081 is bound to {host} only: the host itself refuses it"
    );
    drop(inst);
    assert_eq!(
        firewall_snapshot(),
        fw,
        "cnet must not touch iptables/nftables"
    );
}

#[test]
fn masquerade_hairpin_and_host_local_access() {
    let mut inst = Instance::up(1, &[]);
    let host = addr::host_uplink(0);
    let client_ns = &inst.topo.clients[0];
    let srv = echo_server(client_ns, &[9000]);
    inst.topo.adopt(srv);
    let (web, other) = (ctr("web"), ctr("other"));
    inst.run_server(&web, &["-p", "8080:80", "-p", "8080:80/udp"], &[80]);
    inst.run_server(&other, &[], &[81]);
    let to_client = format!("{}:9000", addr::client(0));

    // Container -> outside: the client sees the uplink address.
    for c in [&web, &other] {
        let r = tcp_request(c, &to_client, "out").unwrap();
        assert_eq!(seen_source(&r), host, "{c} masqueraded (tcp)");
        let r = udp_request(c, None, &to_client, "out").unwrap();
        assert_eq!(seen_source(&r), host, "{c} masqueraded (udp)");
    }
    let ping = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &web,
            "ping",
            "-c1",
            "-W1",
            &addr::client(0),
        ])
        .output()
        .unwrap();
    assert!(ping.status.success(), "ping through masquerade");

    // Hairpin through the host address: another container, and itself.
    let published = format!("{host}:8080");
    let r = retry(|| tcp_request(&other, &published, "hp")).unwrap();
    assert_eq!(
        seen_source(&r),
        "172.17.0.3",
        "another container keeps its address"
    );
    let r = udp_request(&other, None, &published, "hpu").unwrap();
    assert!(r.ends_with("hpu"));
    let r = tcp_request(&web, &published, "self").unwrap();
    assert_eq!(
        seen_source(&r),
        "172.17.0.1",
        "reaching itself, the container sees the gateway"
    );

    // Host processes: 127.0.0.1 and the host's own address, TCP and UDP, no proxy.
    for target in ["127.0.0.1:8080", published.as_str()] {
        let (reply, peer) = inst.host_client("tcp", target, "local").unwrap();
        assert!(reply.ends_with("|local"), "{target}: {reply}");
        assert_eq!(peer, target, "getpeername shows the published address");
        let (reply, from) = inst.host_client("udp", target, "ulocal").unwrap();
        assert!(reply.ends_with("|ulocal"), "{target}: {reply}");
        assert_eq!(from, target, "recvmsg shows the published address");
    }
    // Outside the instance's cgroup nothing is rewritten.
    assert_eq!(
        tcp_probe(&inst.topo.host.name, "127.0.0.1:8080", "x"),
        Outcome::Refused,
        "a process outside the cgroup is not redirected"
    );
}

#[test]
fn conflicts_and_bad_input_are_rejected_without_side_effects() {
    let inst = Instance::up(1, &[]);
    let web = ctr("web");
    inst.run_server(&web, &["-p", "8080:80"], &[80]);
    let second = ctr("second");
    let links_before = inst.topo.host.ip(&["-o", "link"]).lines().count();

    let e = inst.fails(&[
        "run", "-d", "--name", &second, "-p", "8080:80", "--", "sleep", "60",
    ]);
    assert!(e.contains("8080/tcp"), "names the port: {e}");
    assert!(
        e.contains("Bind for 0.0.0.0:8080 failed: port is already allocated"),
        "Docker's wording: {e}"
    );
    // A host socket already listening on the port.
    let listener = inst
        .topo
        .host
        .spawn(&[&cnet_tests::traffic::testsrv(), "serve", "9999"]);
    let mut listener = listener;
    cnet_tests::traffic::wait_ready(&mut listener);
    let e = inst.fails(&[
        "run", "-d", "--name", &second, "-p", "9999:80", "--", "sleep", "60",
    ]);
    assert!(e.contains("9999/tcp"), "names the port: {e}");
    let _ = listener.kill();
    let _ = listener.wait();
    for (spec, needle) in [
        ("http", "http"),
        ("70000:80", "70000"),
        ("80/sctp", "sctp"),
        ("1.2.3.4:8082:80", "1.2.3.4"),
    ] {
        let e = inst.fails(&[
            "run", "-d", "--name", &second, "-p", spec, "--", "sleep", "60",
        ]);
        assert!(e.contains(needle), "{spec}: {e}");
    }
    let e = inst.fails(&["run", "-d", "--name", &web, "--", "sleep", "60"]);
    assert!(
        e.contains(&format!(
            "Conflict. The container name \"/{web}\" is already in use"
        )),
        "Docker's wording: {e}"
    );
    let e = inst.fails(&["run", "-d", "--name", "bad name", "--", "sleep", "60"]);
    assert!(e.contains("bad name"), "{e}");

    assert_eq!(
        inst.ok(&["ps", "-q"]).trim(),
        &inst.id_of(&web)[..12],
        "nothing half-created"
    );
    assert!(
        !std::path::Path::new(&format!("/run/netns/{second}")).exists(),
        "no namespace left behind"
    );
    assert_eq!(
        inst.topo.host.ip(&["-o", "link"]).lines().count(),
        links_before,
        "no veth left behind"
    );
    let e = inst.fails(&["rm", &web]);
    assert!(e.contains("running"), "{e}");
    let e = inst.fails(&["port", &web, "81"]);
    assert!(e.contains("81/tcp"), "{e}");
}

#[test]
fn rm_purges_state_so_a_recreated_container_works_and_down_leaves_nothing() {
    let fw = firewall_snapshot();
    let inst = Instance::up(1, &[]);
    let client = inst.topo.clients[0].name.clone();
    let to = format!("{}:5353", addr::host_uplink(0));
    let dns = ctr("dns");
    inst.run_server(&dns, &["-p", "5353:53/udp"], &[53]);
    let from = format!("{}:40000", addr::client(0));
    let r = retry(|| udp_request(&client, Some(&from), &to, "one")).unwrap();
    assert!(r.ends_with("one"));
    let ct = conntrack_len(&inst);
    assert!(ct >= 2, "conntrack has the flow: {ct}");

    inst.ok(&["rm", "-f", &dns]);
    assert_eq!(
        conntrack_len(&inst),
        0,
        "rm purges the container's conntrack entries"
    );
    assert_eq!(
        udp_probe(&client, Some(&from), &to, "gone"),
        Outcome::Refused,
        "after rm the port is unpublished: the host itself answers port unreachable"
    );
    // Re-created (it gets the same address): the same client flow works at once.
    inst.run_server(&dns, &["-p", "5353:53/udp"], &[53]);
    let r = retry(|| udp_request(&client, Some(&from), &to, "two")).unwrap();
    assert!(r.ends_with("two"), "no stale UDP state: {r}");

    // A second `cnet up` changes nothing.
    let before = std::fs::read_to_string(inst.root.join("state.json")).unwrap();
    let cg = inst.cgroup.to_string_lossy().into_owned();
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cg]);
    assert_eq!(
        std::fs::read_to_string(inst.root.join("state.json")).unwrap(),
        before
    );

    let root = inst.root.clone();
    let cgroup = inst.cgroup.clone();
    let host = inst.topo.host.name.clone();
    inst.ok(&["down"]);
    assert!(!root.join("bpf").exists(), "bpffs unmounted and removed");
    assert!(!root.join("state.json").exists());
    let links = cnet_tests::netns::ip(&["-n", &host, "-o", "link"]);
    assert!(
        !links.contains("cnet0") && !links.contains("veth"),
        "links left: {links}"
    );
    assert_gone(std::slice::from_ref(&dns), &[]);
    let cg_links = std::process::Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(&cgroup)
        .output()
        .unwrap();
    assert!(
        cg_links.status.success(),
        "bpftool cgroup show: {cg_links:?}"
    );
    assert!(
        String::from_utf8_lossy(&cg_links.stdout).trim().is_empty(),
        "cgroup hooks detached"
    );
    drop(inst);
    assert_eq!(firewall_snapshot(), fw);
}

fn conntrack_len(inst: &Instance) -> usize {
    let data = aya::maps::MapData::from_pin(inst.map_pin(cnet_common::maps::CONNTRACK)).unwrap();
    let map = aya::maps::Map::from_map_data(data).unwrap();
    let ct: aya::maps::HashMap<_, cnet_common::maps::CtKey, cnet_common::maps::CtEntry> =
        aya::maps::HashMap::try_from(map).unwrap();
    ct.keys().count()
}

#[test]
fn foreground_run_returns_the_exit_code_and_removes_the_container() {
    let inst = Instance::up(1, &[]);
    let fg = ctr("fg");
    let out = inst.cnet(&[
        "run",
        "--name",
        &fg,
        "--",
        "sh",
        "-c",
        "ip -o -4 addr show eth0; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("172.17.0.2/16"),
        "eth0 has the first address: {stdout}"
    );
    assert_eq!(inst.ok(&["ps", "-q"]).trim(), "", "removed like --rm");
    assert!(!std::path::Path::new(&format!("/run/netns/{fg}")).exists());
}

#[test]
fn inspect_has_dockers_shape() {
    let inst = Instance::up(1, &[]);
    let web = ctr("web");
    inst.run_server(&web, &["-p", "8080:80"], &[80]);
    let v: serde_json::Value = serde_json::from_str(&inst.ok(&["inspect", &web])).unwrap();
    let c = &v[0];
    assert_eq!(c["Name"], format!("/{web}"));
    let net = &c["NetworkSettings"]["Networks"]["bridge"];
    assert_eq!(net["IPAddress"], "172.17.0.2");
    assert_eq!(net["IPPrefixLen"], 16);
    assert_eq!(net["Gateway"], "172.17.0.1");
    assert_eq!(net["MacAddress"], "02:42:ac:11:00:02");
    assert_eq!(
        c["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        "8080"
    );
    assert_eq!(
        c["NetworkSettings"]["Ports"]["80/tcp"][0]["HostIp"],
        "0.0.0.0"
    );
    let mac = cnet_tests::netns::ip(&["-n", &web, "-o", "link", "show", "eth0"]);
    assert!(
        mac.contains("02:42:ac:11:00:02"),
        "eth0 carries the derived MAC: {mac}"
    );
    let ps = inst.ok(&["ps"]);
    let head = ps.lines().next().unwrap();
    assert!(
        head.starts_with("CONTAINER ID") && head.ends_with("NAMES"),
        "Docker's columns: {ps}"
    );
    assert!(
        ps.contains("0.0.0.0:8080->80/tcp") && ps.contains("Up"),
        "{ps}"
    );
}

#[test]
fn ports_change_live_with_port_add_and_rm() {
    let inst = Instance::up(1, &[]);
    let web = ctr("web");
    inst.run_server(&web, &["-p", "8080:80"], &[80, 81]);
    let client = inst.topo.clients[0].name.clone();
    let host = addr::host_uplink(0);
    retry(|| tcp_request(&client, &format!("{host}:8080"), "a")).unwrap();

    assert_eq!(
        inst.ok(&["port", "add", &web, "9090:81/udp"]).trim(),
        "81/udp -> 0.0.0.0:9090"
    );
    inst.ok(&["port", "add", &web, "9091:81"]);
    let from = format!("{}:40001", addr::client(0));
    let r = udp_request(&client, Some(&from), &format!("{host}:9090"), "live").unwrap();
    assert!(r.ends_with("live"), "added without restarting: {r}");
    assert!(tcp_request(&client, &format!("{host}:9091"), "b").is_ok());
    let e = inst.fails(&["port", "add", &web, "9091:80"]);
    assert!(e.contains("9091/tcp"), "{e}");

    inst.ok(&["port", "rm", &web, "9090:81/udp"]);
    assert_eq!(
        udp_probe(&client, Some(&from), &format!("{host}:9090"), "gone"),
        Outcome::Refused,
        "removed at once: the host itself answers port unreachable"
    );
    assert!(
        tcp_request(&client, &format!("{host}:8080"), "c").is_ok(),
        "other mappings untouched"
    );
    let e = inst.fails(&["port", "rm", &web, "7777:81"]);
    assert!(e.contains("7777:81"), "{e}");
    let listed = inst.ok(&["port", &web]);
    assert!(!listed.contains("9090"), "{listed}");
}
