//! State and crash safety: concurrent commands, kill -9 at any point of
//! `run` and `rm`, and a wipe of the kernel side rebuilt by `cnet up`.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    time::Duration,
};

use cnet_tests::{
    cnet::{Instance, cnet_bin},
    netns::{addr, unique_name},
    traffic::{retry, seen_source, tcp_request},
};

fn ctr(base: &str) -> String {
    format!("{base}-{}", unique_name())
}

fn state(inst: &Instance) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(inst.root.join("state.json")).unwrap()).unwrap()
}

fn map_len(inst: &Instance, name: &str) -> usize {
    let data = aya::maps::MapData::from_pin(inst.map_pin(name)).unwrap();
    let map = aya::maps::Map::from_map_data(data).unwrap();
    // Every hash map's keys can be walked as raw bytes through the syscall;
    // the typed handle needs the key size, which the map knows.
    match name {
        "PORTS" => aya::maps::HashMap::<_, cnet_common::maps::PortKey, cnet_common::maps::PortValue>::try_from(map)
            .unwrap()
            .keys()
            .count(),
        "ENDPOINTS" => aya::maps::HashMap::<_, u32, cnet_common::maps::Endpoint>::try_from(map).unwrap().keys().count(),
        _ => panic!("map {name}"),
    }
}

/// Spawns `cnet --root R args...` in the host namespace without waiting.
fn spawn(inst: &Instance, args: &[&str]) -> std::process::Child {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", inst.topo.host.name))
        .arg(cnet_bin())
        .arg("--root")
        .arg(&inst.root)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn twenty_concurrent_runs_get_twenty_distinct_addresses() {
    let inst = Instance::up(1, &[]);
    let names: Vec<String> = (0..20).map(|i| ctr(&format!("p{i}"))).collect();
    let kids: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let port = format!("{}:80", 9000 + i);
            spawn(
                &inst,
                &["run", "-d", "--name", n, "-p", &port, "--", "sleep", "1000"],
            )
        })
        .collect();
    for mut k in kids {
        assert!(k.wait().unwrap().success(), "every concurrent run succeeds");
    }
    let st = state(&inst);
    let cs = st["containers"].as_object().unwrap();
    assert_eq!(cs.len(), 20);
    let ips: BTreeSet<&str> = cs.values().map(|c| c["ip"].as_str().unwrap()).collect();
    assert_eq!(ips.len(), 20, "distinct addresses: {ips:?}");
    assert_eq!(map_len(&inst, "PORTS"), 20);
    assert_eq!(map_len(&inst, "ENDPOINTS"), 20);
}

#[test]
fn kill_9_during_run_and_rm_leaves_nothing_the_next_command_does_not_repair() {
    let inst = Instance::up(1, &[]);
    let mut names = Vec::new();
    for i in 0..16u64 {
        let n = ctr(&format!("k{i}"));
        let port = format!("{}:80", 9100 + i);
        let mut k = spawn(
            &inst,
            &[
                "run", "-d", "--name", &n, "-p", &port, "--", "sleep", "1000",
            ],
        );
        // Kill at a different point of the command each time (0-45 ms).
        std::thread::sleep(Duration::from_millis((i * 7919) % 46));
        let _ = k.kill();
        let _ = k.wait();
        names.push(n);
    }
    // Some survived: remove them, killing some removals midway too.
    for (i, n) in names.iter().enumerate().step_by(3) {
        let mut k = spawn(&inst, &["rm", "-f", n]);
        std::thread::sleep(Duration::from_millis((i as u64 * 31) % 20));
        let _ = k.kill();
        let _ = k.wait();
    }
    // The next mutating command repairs whatever was left half-done.
    let probe = ctr("probe");
    inst.run_server(&probe, &["-p", "9200:80"], &[80]);
    let st = state(&inst);
    for (name, c) in st["containers"].as_object().unwrap() {
        assert_eq!(c["phase"], "ready", "{name} left half-done");
    }
    let listed: Vec<String> = inst.ok(&["ps", "-q"]).lines().map(str::to_string).collect();
    let mut all: Vec<&str> = listed.iter().map(String::as_str).collect();
    all.retain(|n| *n != probe);
    if !all.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(all.iter().copied());
        inst.ok(&args);
    }
    // Only the probe is left: no leaked namespace, veth, address or map entry.
    for n in &names {
        assert!(
            !std::path::Path::new(&format!("/run/netns/{n}")).exists(),
            "namespace {n} leaked"
        );
    }
    let links = inst.topo.host.ip(&["-o", "link", "show", "type", "veth"]);
    assert_eq!(
        links
            .lines()
            .filter(|l| l.contains("veth") && l.contains("master cnet0"))
            .count(),
        1,
        "{links}"
    );
    assert_eq!(map_len(&inst, "PORTS"), 1);
    assert_eq!(map_len(&inst, "ENDPOINTS"), 1);
    let client = inst.topo.clients[0].name.clone();
    let r =
        retry(|| tcp_request(&client, &format!("{}:9200", addr::host_uplink(0)), "alive")).unwrap();
    assert_eq!(seen_source(&r), addr::client(0));
    // Addresses were not leaked either: a new container gets the lowest free one.
    let again = ctr("again");
    inst.run_server(&again, &[], &[80]);
    let st = state(&inst);
    let probe_ip = st["containers"][&probe]["ip"].as_str().unwrap().to_string();
    let again_ip = st["containers"][&again]["ip"].as_str().unwrap();
    let expect = if probe_ip == "172.17.0.2" {
        "172.17.0.3"
    } else {
        "172.17.0.2"
    };
    assert_eq!(again_ip, expect);
}

#[test]
fn cnet_up_rebuilds_the_kernel_side_from_the_state_file() {
    let inst = Instance::up(1, &["--icc=false"]);
    let (db, app) = (ctr("db"), ctr("app"));
    inst.run_server(&db, &["-p", "8080:80", "--expose", "80"], &[80]);
    inst.run_server(&app, &["--link", &format!("{db}:database")], &[81]);
    let client = inst.topo.clients[0].name.clone();
    let via = format!("{}:8080", addr::host_uplink(0));
    retry(|| tcp_request(&client, &via, "before")).unwrap();
    retry(|| tcp_request(&app, "172.17.0.2:80", "link")).unwrap();

    // Wipe the kernel side as a reboot would: every pin (maps, programs, links) goes.
    let out = Command::new("umount")
        .arg(inst.root.join("bpf"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Links are released asynchronously once their last pin is gone.
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        tcp_request(&client, &via, "wiped").is_err()
    });
    assert!(gone, "no dataplane after the wipe");

    let cg = inst.cgroup.to_string_lossy().into_owned();
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cg]);
    let r = retry(|| tcp_request(&client, &via, "after")).unwrap();
    assert_eq!(seen_source(&r), addr::client(0), "published port restored");
    retry(|| tcp_request(&app, "172.17.0.2:80", "link")).unwrap();
    assert!(
        tcp_request(&db, "172.17.0.3:81", "x").is_err(),
        "icc=false restored (link is one-way)"
    );
}

#[test]
fn kill_9_during_network_create_connect_and_rm_is_repaired() {
    let inst = Instance::up(1, &[]);
    let app = ctr("app");
    inst.run_server(&app, &[], &[80]);
    for i in 0..8u64 {
        let net = format!("kn{i}");
        let subnet = format!("10.60.{i}.0/24");
        for (step, args) in [
            (
                0u64,
                vec![
                    "network",
                    "create",
                    "--subnet",
                    subnet.as_str(),
                    net.as_str(),
                ],
            ),
            (1, vec!["network", "connect", net.as_str(), app.as_str()]),
            (2, vec!["network", "disconnect", net.as_str(), app.as_str()]),
            (3, vec!["network", "rm", net.as_str()]),
        ] {
            let mut k = spawn(&inst, &args);
            std::thread::sleep(Duration::from_millis((i * 13 + step * 7) % 25));
            let _ = k.kill();
            let _ = k.wait();
        }
    }
    // Any mutating command repairs; then every trace matches the state.
    let probe = ctr("probe");
    inst.run_server(&probe, &[], &[80]);
    let st = state(&inst);
    let nets = st["networks"].as_object().cloned().unwrap_or_default();
    for (n, v) in &nets {
        assert_eq!(v["phase"], "ready", "network {n} left half-done");
    }
    let mut veths: Vec<String> = Vec::new();
    let mut ifaces = 0;
    for (name, c) in st["containers"].as_object().unwrap() {
        assert_eq!(c["phase"], "ready", "{name}");
        veths.push(c["veth"].as_str().unwrap().to_string());
        ifaces += 1;
        for a in c["extra"].as_array().unwrap() {
            assert_eq!(a["phase"], "ready", "{name} interface on {}", a["network"]);
            veths.push(a["veth"].as_str().unwrap().to_string());
            ifaces += 1;
        }
    }
    let links = inst.topo.host.ip(&["-o", "link", "show", "type", "veth"]);
    for l in links.lines() {
        let dev = l
            .split(':')
            .nth(1)
            .unwrap()
            .trim()
            .split('@')
            .next()
            .unwrap()
            .to_string();
        if dev.starts_with("veth") {
            assert!(veths.contains(&dev), "leaked veth {dev}: {links}");
        }
    }
    let bridges = inst.topo.host.ip(&["-o", "link", "show", "type", "bridge"]);
    let bridge_count = bridges.lines().filter(|l| l.contains(": br-")).count();
    assert_eq!(
        bridge_count,
        nets.len(),
        "one bridge per network: {bridges}"
    );
    assert_eq!(
        map_len(&inst, "ENDPOINTS"),
        ifaces,
        "one endpoint per interface"
    );
}
