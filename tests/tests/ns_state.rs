//! State: concurrent commands, and a wipe of the kernel side rebuilt by
//! `cnet up`. Crashes at every step of every command: ns_crash.rs.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    time::Duration,
};

use cnet_tests::consistency::state;
use cnet_tests::{
    cnet::{Instance, cnet_bin},
    netns::{addr, unique_name},
    traffic::{Outcome, assert_reply, retry, seen_source, tcp_probe, tcp_request},
};

fn ctr(base: &str) -> String {
    format!("{base}-{}", unique_name())
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
        tcp_probe(&client, &via, "wiped") == Outcome::Refused
    });
    assert!(gone, "no dataplane after the wipe");

    let cg = inst.cgroup.to_string_lossy().into_owned();
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cg]);
    let r = retry(|| tcp_request(&client, &via, "after")).unwrap();
    assert_eq!(seen_source(&r), addr::client(0), "published port restored");
    retry(|| tcp_request(&app, "172.17.0.2:80", "link")).unwrap();
    let host = inst.topo.host.name.clone();
    assert_reply(
        tcp_probe(&host, "172.17.0.3:81", "x"),
        "app:81 answers the host",
    );
    inst.assert_drop(
        "drop_icc",
        2,
        "icc=false restored (link is one-way)",
        || tcp_probe(&db, "172.17.0.3:81", "x"),
    );
}
