//! daemon.json: Docker's keys take effect, flags override them, and every bad
//! key or value is a clear error that changes nothing.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::process::Command;

use cnet_tests::{
    cnet::{Instance, cnet_bin},
    netns::{Topology, unique_name},
    traffic::{retry, tcp_request},
};

fn ctr(base: &str) -> String {
    format!("{base}-{}", unique_name())
}

#[test]
fn daemon_json_keys_take_effect_and_flags_override_them() {
    let dir = std::env::temp_dir().join(unique_name());
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("daemon.json");
    std::fs::write(
        &cfg,
        r#"{"bip": "10.123.0.1/24", "fixed-cidr": "10.123.0.128/25", "mtu": 1400,
            "dns": ["10.123.0.53"], "icc": false, "ip-masq": true, "ip-forward": true,
            "userland-proxy": true, "default-address-pools": [{"base": "10.124.0.0/16", "size": 24}]}"#,
    )
    .unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let inst = Instance::up(1, &["--config", &cfg_s, "--icc=true"]);
    let (a, b) = (ctr("a"), ctr("b"));
    inst.ok(&[
        "--config", &cfg_s, "run", "-d", "--name", &a, "--", "sleep", "1000",
    ]);
    inst.run_server(&b, &[], &[80]);
    let addr = cnet_tests::netns::ip(&["-n", &a, "-o", "-4", "addr", "show", "eth0"]);
    assert!(
        addr.contains("10.123.0.128/24"),
        "fixed-cidr and bip: {addr}"
    );
    let link = cnet_tests::netns::ip(&["-n", &a, "-o", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1400"), "mtu: {link}");
    let bridge = inst.topo.host.ip(&["-o", "link", "show", "cnet0"]);
    assert!(bridge.contains("mtu 1400"), "bridge mtu: {bridge}");
    let out = Command::new("ip")
        .args(["netns", "exec", &a, "cat", "/etc/resolv.conf"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "nameserver 10.123.0.53\n",
        "dns"
    );
    // --icc=true on the command line overrides "icc": false.
    retry(|| tcp_request(&a, "10.123.0.129:80", "icc")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_daemon_json_is_a_clear_error_and_changes_nothing() {
    let topo = Topology::new(1);
    let dir = std::env::temp_dir().join(unique_name());
    std::fs::create_dir_all(&dir).unwrap();
    let root = dir.join("root");
    for (text, needle) in [
        (r#"{"bipp": "10.0.0.1/24"}"#, "bipp"),
        (r#"{"mtu": 10}"#, "mtu"),
        (r#"{"icc": "no"}"#, "icc"),
        (r#"{"debug": 1}"#, "debug"),
        (r#"{"dns": ["x"]}"#, "dns"),
        (
            r#"{"fixed-cidr": "10.9.0.0/25", "bip": "10.0.0.1/24"}"#,
            "fixed-cidr",
        ),
        (
            r#"{"default-address-pools": [{"base": "10.0.0.0/16", "size": 40}]}"#,
            "default-address-pools",
        ),
        ("not json", "JSON"),
    ] {
        let cfg = dir.join("daemon.json");
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", topo.host.name))
            .arg(cnet_bin())
            .arg("--root")
            .arg(&root)
            .arg("--config")
            .arg(&cfg)
            .args(["up", "--uplink", "up0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} must fail");
        assert!(err.contains(needle), "{text}: {err}");
        assert!(
            !root.join("state.json").exists() && !root.join("bpf").exists(),
            "{text}: nothing created"
        );
        assert!(
            !topo.host.ip(&["-o", "link"]).contains("cnet0"),
            "{text}: no bridge"
        );
    }
    // A config file named explicitly must exist.
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", topo.host.name))
        .arg(cnet_bin())
        .arg("--root")
        .arg(&root)
        .arg("--config")
        .arg(dir.join("missing.json"))
        .args(["up", "--uplink", "up0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json"));
    let _ = std::fs::remove_dir_all(&dir);
}
