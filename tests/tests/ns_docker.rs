//! The real dockerd (Debian's docker.io 20.10) drives cnet's remote network
//! and IPAM driver. dockerd runs in the test's host namespace with private
//! data, exec and pid paths, `--iptables=false --bridge=none`; the plugin
//! is `cnet daemon --docker-plugin <per-test name>`.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::process::Command;

use cnet_common::maps::{self, Endpoint, PortKey, PortValue};
use cnet_tests::{
    cnet::Instance,
    consistency::hash_len,
    docker::{Docker, Plugin},
    netns::{addr, unique_name},
    traffic::{retry, seen_source, tcp_probe, tcp_request},
};

#[test]
fn docker_network_and_run_p_through_the_cnet_plugin() {
    let inst = Instance::up(1, &[]);
    let name = unique_name();
    let mut plugin = Plugin::start(&inst, &name);
    let dk = Docker::start(&inst.topo.host.name);
    let tar = cnet_tests::image::rootfs_tar(&dk.dir);
    dk.ok(&["import", &tar.to_string_lossy(), "cnet-test-img"]);
    dk.ok(&[
        "network",
        "create",
        "-d",
        &name,
        "--ipam-driver",
        &name,
        "--subnet",
        "10.77.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "n1",
    ]);
    let nets = inst.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(nets.lines().any(|l| l.starts_with("dk-")), "{nets}");
    // Without --subnet the plugin's IPAM picks a free pool subnet; with
    // Docker's default IPAM the network gets Docker's pool.
    dk.ok(&[
        "network",
        "create",
        "-d",
        &name,
        "--ipam-driver",
        &name,
        "n2",
    ]);
    dk.ok(&["network", "create", "-d", &name, "n3"]);
    let subnets = dk.ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
        "n2",
        "n3",
    ]);
    let subnets: Vec<&str> = subnets.lines().collect();
    assert_eq!(subnets.len(), 2, "{subnets:?}");
    assert!(
        subnets[0] != subnets[1] && subnets[0] != "10.77.0.0/24",
        "{subnets:?}"
    );
    let cnet_subnets = inst.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        "bridge",
    ]);
    assert!(
        !subnets.contains(&cnet_subnets.trim()),
        "not cnet's own bridge subnet"
    );
    dk.ok(&["network", "rm", "n2", "n3"]);

    dk.ok(&[
        "run",
        "-d",
        "--name",
        "w1",
        "--network",
        "n1",
        "-p",
        "8080:80",
        "cnet-test-img",
        "/testsrv",
        "serve",
        "80",
    ]);
    let client = inst.topo.clients[0].name.clone();
    let to = format!("{}:8080", addr::host_uplink(0));
    let (r, dnat) = inst.counted("dnat", || {
        retry(|| tcp_request(&client, &to, "docker")).unwrap()
    });
    assert_eq!(seen_source(&r), addr::client(0), "source preserved: {r}");
    assert!(dnat >= 1, "translated by cnet's datapath");
    let ps = inst.ok(&["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("dk-") && l.contains("0.0.0.0:8080->80/tcp")),
        "{ps}"
    );
    let w1_ip = dk.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.n1.IPAddress}}",
        "w1",
    ]);
    let w1_ip = w1_ip.trim().to_string();
    assert!(w1_ip.starts_with("10.77.0."), "{w1_ip}");

    // icc off on n1: a second container cannot reach the first (dropped
    // and counted), while the client still can (positive control above).
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "w2",
        "--network",
        "n1",
        "cnet-test-img",
        "/testsrv",
        "serve",
        "81",
    ]);
    let w2_pid = dk.ok(&["inspect", "-f", "{{.State.Pid}}", "w2"]);
    let w2_ns = format!("cnet-dk-{}", unique_name());
    let ns_path = format!("/run/netns/{w2_ns}");
    std::fs::write(&ns_path, "").unwrap();
    let out = Command::new("mount")
        .args([
            "--bind",
            &format!("/proc/{}/ns/net", w2_pid.trim()),
            &ns_path,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    inst.assert_drop("drop_icc", 2, "w2 -> w1 with icc=false", || {
        tcp_probe(&w2_ns, &format!("{w1_ip}:80"), "x")
    });
    let _ = Command::new("umount").arg(&ns_path).output();
    let _ = std::fs::remove_file(&ns_path);

    // The plugin killed and started again: w1 keeps answering meanwhile and after.
    plugin.stop();
    retry(|| tcp_request(&client, &to, "plugin down")).unwrap();
    let _plugin2 = Plugin::start(&inst, &name);
    retry(|| tcp_request(&client, &to, "plugin back")).unwrap();

    // docker rm -f: the endpoint, its ports and its veth go.
    dk.ok(&["rm", "-f", "w1", "w2"]);
    assert!(!inst.ok(&["ps", "-a"]).contains("dk-"), "no endpoint left");
    assert_eq!(hash_len::<PortKey, PortValue>(&inst, maps::PORTS), 0);
    assert_eq!(hash_len::<u32, Endpoint>(&inst, maps::ENDPOINTS), 0);
    dk.ok(&["network", "rm", "n1"]);
    let nets = inst.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!nets.contains("dk-"), "{nets}");
}
