//! Crash safety, deterministically: every named step of every mutating
//! command (`cnet_userspace::crash::POINTS`) is crashed once with
//! `CNET_TEST_CRASH_AT`, the crash is shown to have landed at that step
//! (SIGABRT, and cnet's own message naming it), the next command repairs it,
//! and only then, before any cleanup, every trace of the instance is checked
//! against its state file.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::{collections::BTreeSet, os::unix::process::ExitStatusExt, process::Output};

use cnet::crash::{ENV, POINTS};
use cnet_common::maps::{self, Endpoint, Filter, PortKey, PortValue};
use cnet_tests::{
    cnet::Instance,
    netns::{addr, unique_name},
    traffic::{assert_reply, tcp_probe, testsrv},
};

fn crash(inst: &Instance, point: &str, args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    inst.cnet_env(&args, &[(ENV, point)])
}

fn state(inst: &Instance) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(inst.root.join("state.json")).unwrap()).unwrap()
}

fn hash_len<K: aya::Pod, V: aya::Pod>(inst: &Instance, name: &str) -> usize {
    let data = aya::maps::MapData::from_pin(inst.map_pin(name)).unwrap();
    let map = aya::maps::Map::from_map_data(data).unwrap();
    aya::maps::HashMap::<_, K, V>::try_from(map)
        .unwrap()
        .keys()
        .count()
}

fn filters_used(inst: &Instance) -> Vec<u32> {
    let data = aya::maps::MapData::from_pin(inst.map_pin(maps::FILTER_SET)).unwrap();
    let set =
        aya::maps::Array::<_, u32>::try_from(aya::maps::Map::from_map_data(data).unwrap()).unwrap();
    let base = set.get(&0, 0).unwrap() * maps::FILTERS_MAX;
    let data = aya::maps::MapData::from_pin(inst.map_pin(maps::FILTERS)).unwrap();
    let map = aya::maps::Map::from_map_data(data).unwrap();
    let arr = aya::maps::Array::<_, Filter>::try_from(map).unwrap();
    let mut ids = Vec::new();
    for i in base..base + maps::FILTERS_MAX {
        let f = arr.get(&i, 0).unwrap();
        let b: &[u8] = bytemuck::bytes_of(&f);
        // `used` (offset 22) ends the list; `id` is at offset 24.
        if b[22] == 0 {
            break;
        }
        ids.push(u32::from_ne_bytes(b[24..28].try_into().unwrap()));
    }
    ids
}

/// Every trace of the instance matches its state file.
fn assert_consistent(inst: &Instance, point: &str, victims: &[String]) {
    let st = state(inst);
    assert!(
        st["pending"].as_array().is_none_or(Vec::is_empty),
        "{point}: pending changes left: {}",
        st["pending"]
    );
    let mut veths = BTreeSet::new();
    let (mut ifaces, mut ports) = (0, 0);
    let containers = st["containers"].as_object().unwrap();
    for (name, c) in containers {
        assert_eq!(c["phase"], "ready", "{point}: container {name}");
        assert!(
            std::path::Path::new("/run/netns").join(name).exists(),
            "{point}: container {name} lost its namespace"
        );
        veths.insert(c["veth"].as_str().unwrap().to_string());
        ifaces += 1;
        ports += c["ports"].as_array().unwrap().len();
        for a in c["extra"].as_array().unwrap() {
            assert_eq!(a["phase"], "ready", "{point}: {name} on {}", a["network"]);
            veths.insert(a["veth"].as_str().unwrap().to_string());
            ifaces += 1;
        }
    }
    for v in victims.iter().filter(|v| !containers.contains_key(*v)) {
        assert!(
            !std::path::Path::new("/run/netns").join(v).exists(),
            "{point}: namespace {v} leaked"
        );
        assert!(
            !std::path::Path::new("/etc/netns").join(v).exists(),
            "{point}: /etc/netns/{v} leaked"
        );
    }
    let networks = st["networks"].as_object().unwrap();
    for (n, v) in networks {
        assert_eq!(v["phase"], "ready", "{point}: network {n}");
    }
    let links = inst.topo.host.ip(&["-o", "link", "show"]);
    let mut host_veths = BTreeSet::new();
    let mut bridges = 0;
    for l in links.lines() {
        let dev = l.split(':').nth(1).unwrap().trim();
        let dev = dev.split('@').next().unwrap().to_string();
        if dev.starts_with("veth") {
            host_veths.insert(dev);
        } else if dev.starts_with("br-") {
            bridges += 1;
        }
    }
    assert_eq!(host_veths, veths, "{point}: veths on the host vs state");
    assert_eq!(bridges, networks.len(), "{point}: one bridge per network");
    assert_eq!(
        hash_len::<u32, Endpoint>(inst, maps::ENDPOINTS),
        ifaces,
        "{point}: one ENDPOINTS entry per interface"
    );
    assert_eq!(
        hash_len::<PortKey, PortValue>(inst, maps::PORTS),
        ports,
        "{point}: one PORTS entry per published port"
    );
    let ids: Vec<u32> = st["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(filters_used(inst), ids, "{point}: FILTERS map vs state");
}

#[test]
fn a_crash_at_every_named_step_is_repaired_by_the_next_command() {
    let inst = Instance::up(1, &[]);
    let base = format!("base-{}", unique_name());
    inst.run_server(&base, &["-p", "7000:80"], &[80, 81]);
    let client = inst.topo.clients[0].name.clone();
    let via = format!("{}:7000", addr::host_uplink(0));
    let srv = testsrv();
    let mut victims = Vec::new();
    let mut crashed = BTreeSet::new();
    for (i, point) in POINTS.iter().enumerate() {
        let (cmd, _) = point.split_once(':').unwrap();
        let victim = format!("v{i}-{}", unique_name());
        victims.push(victim.clone());
        let net = format!("n{i}");
        let subnet = format!("10.70.{i}.0/24");
        let port = format!("{}:81", 7100 + i);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let args = match cmd {
            "run" => s(&[
                "run", "-d", "--name", &victim, "-p", &port, "--", &srv, "serve", "81",
            ]),
            "rm" => {
                inst.run_server(&victim, &["-p", &port], &[81]);
                s(&["rm", "-f", &victim])
            }
            "port-add" => s(&["port", "add", &base, &port]),
            "port-rm" => {
                inst.ok(&["port", "add", &base, &port]);
                s(&["port", "rm", &base, &port])
            }
            "network-create" => s(&["network", "create", "--subnet", &subnet, &net]),
            "network-connect" => {
                inst.ok(&["network", "create", "--subnet", &subnet, &net]);
                s(&["network", "connect", &net, &base])
            }
            "network-disconnect" => {
                inst.ok(&["network", "create", "--subnet", &subnet, &net]);
                inst.ok(&["network", "connect", &net, &base]);
                s(&["network", "disconnect", &net, &base])
            }
            "network-rm" => {
                inst.ok(&["network", "create", "--subnet", &subnet, &net]);
                s(&["network", "rm", &net])
            }
            "filter-add" => s(&["filter", "add", "--src", "192.0.2.0/24", "--action", "drop"]),
            "filter-rm" => {
                let id = inst.ok(&["filter", "add", "--src", "192.0.2.0/24", "--action", "drop"]);
                s(&["filter", "rm", id.trim()])
            }
            other => panic!("crash point {point}: no scenario for command {other}"),
        };
        let out = crash(&inst, point, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{point}: cnet {args:?} must crash at that step: {out:?}"
        );
        assert!(
            stderr.contains(&format!("crashing at {point}")),
            "{point}: {stderr}"
        );
        crashed.insert(*point);

        // The next command (any mutating one) repairs; then check, before cleanup.
        let probe = format!("p{i}-{}", unique_name());
        victims.push(probe.clone());
        inst.run_server(&probe, &[], &[80]);
        assert_consistent(&inst, point, &victims);
        assert_reply(tcp_probe(&client, &via, "alive"), point);

        // Back to the baseline for the next point.
        let st = state(&inst);
        for name in st["containers"].as_object().unwrap().keys() {
            if *name != base {
                inst.ok(&["rm", "-f", name]);
            }
        }
        for a in st["containers"][&base]["extra"].as_array().unwrap() {
            inst.ok(&[
                "network",
                "disconnect",
                a["network"].as_str().unwrap(),
                &base,
            ]);
        }
        for n in st["networks"].as_object().unwrap().keys() {
            inst.ok(&["network", "rm", n]);
        }
        for p in st["containers"][&base]["ports"].as_array().unwrap() {
            let hp = p["host_port"].as_u64().unwrap();
            if hp != 7000 {
                inst.ok(&["port", "rm", &base, &format!("{hp}:81")]);
            }
        }
        for f in st["filters"].as_array().unwrap() {
            inst.ok(&["filter", "rm", &f["id"].to_string()]);
        }
    }
    assert_eq!(crashed.len(), POINTS.len(), "every point crashed once");
}
