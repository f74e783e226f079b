//! The CNI plugin driven exactly as libcni drives it: `CNI_*` environment
//! variables, the network configuration on stdin, the result or the spec's
//! error JSON on stdout. The "runtime" is the test: it makes the container's
//! namespace, runs a server in it and asks cnet-cni to attach it.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::{
    io::Write,
    process::{Command, Stdio},
};

use cnet_common::maps::{self, Endpoint, PortKey, PortValue};
use cnet_tests::{
    cnet::{Instance, cnet_bin},
    consistency::hash_len,
    netns::{Netns, addr},
    traffic::{echo_server, retry, seen_source, tcp_request},
};
use serde_json::{Value, json};

fn plugin() -> String {
    std::path::Path::new(&cnet_bin())
        .with_file_name("cnet-cni")
        .to_string_lossy()
        .into_owned()
}

/// Where the plugin runs: the instance's host namespace and root.
#[derive(Clone)]
struct Host {
    ns: String,
    root: String,
}

fn host(inst: &Instance) -> Host {
    Host {
        ns: inst.topo.host.name.clone(),
        root: inst.root.to_string_lossy().into_owned(),
    }
}

/// One plugin call from the instance's host namespace; (success, stdout JSON).
fn cni(h: &Host, command: &str, id: &str, netns: &str, stdin: &str) -> (bool, Value) {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", h.ns))
        .arg(plugin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", "IgnoreUnknown=1")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{command}: not JSON ({e}): {text}"))
    };
    (out.status.success(), v)
}

fn conf(h: &Host, ports: Value) -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": "cnet-test",
        "type": "cnet",
        "root": h.root,
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": ports},
    })
    .to_string()
}

/// The "runtime's" container process, ended by the test (by PID) on drop.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.name)
}

#[test]
fn add_check_del_publish_ports_and_leave_nothing() {
    let inst = Instance::up(1, &[]);
    let h = host(&inst);
    let runtime_ns = Netns::new();
    let _srv = Server(echo_server(&runtime_ns, &[80]));
    let conf = conf(
        &h,
        json!([{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]),
    );
    let id = "c0ffee0123456789abcdef";
    let (ok, res) = cni(&h, "ADD", id, &ns_path(&runtime_ns), &conf);
    assert!(ok, "ADD: {res}");
    assert_eq!(res["cniVersion"], "1.0.0");
    let ip = res["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(ip.starts_with("172.17.0.") && ip.ends_with("/16"), "{res}");
    assert_eq!(res["ips"][0]["gateway"], "172.17.0.1");
    assert_eq!(res["interfaces"][1]["name"], "eth0");
    assert_eq!(res["interfaces"][1]["sandbox"], ns_path(&runtime_ns));
    // The address is really on eth0 inside the runtime's namespace.
    let inside = runtime_ns.ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(inside.contains(&ip), "{inside}");

    // The published port is served by the datapath, with the client's source.
    let client = inst.topo.clients[0].name.clone();
    let to = format!("{}:8081", addr::host_uplink(0));
    let (r, dnat) = inst.counted("dnat", || {
        retry(|| tcp_request(&client, &to, "cni")).unwrap()
    });
    assert_eq!(seen_source(&r), addr::client(0), "{r}");
    assert!(dnat >= 1, "translated by cnet's datapath");
    let ps = inst.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    let line = ps
        .lines()
        .find(|l| l.starts_with("cni-c0ffee012345-"))
        .unwrap_or_else(|| panic!("cnet ps lists the CNI container: {ps}"));
    assert!(line.contains(" Up "), "{line}");
    let name = line.split(' ').next().unwrap();
    assert_eq!(inst.ok(&["port", name]).trim(), "80/tcp -> 0.0.0.0:8081");

    let (ok, res) = cni(&h, "CHECK", id, &ns_path(&runtime_ns), &conf);
    assert!(ok, "CHECK: {res}");
    let (ok, res) = cni(&h, "ADD", id, &ns_path(&runtime_ns), &conf);
    assert!(!ok && res["code"] == 100, "ADD twice: {res}");
    assert!(res["msg"].as_str().unwrap().contains(id), "{res}");

    let (ok, res) = cni(&h, "DEL", id, &ns_path(&runtime_ns), &conf);
    assert!(ok, "DEL: {res}");
    assert_eq!(hash_len::<PortKey, PortValue>(&inst, maps::PORTS), 0);
    assert_eq!(hash_len::<u32, Endpoint>(&inst, maps::ENDPOINTS), 0);
    assert!(
        !inst.ok(&["ps", "-a"]).contains("cni-"),
        "the CNI container is gone"
    );
    assert!(
        !runtime_ns.ip(&["-o", "link"]).contains("eth0"),
        "the interface left the runtime's namespace"
    );
    assert!(
        std::path::Path::new(&ns_path(&runtime_ns)).exists(),
        "the runtime's namespace itself is the runtime's to remove"
    );
    assert!(
        !std::path::Path::new(&format!("/run/netns/{name}")).exists(),
        "cnet's name for it is gone"
    );
    // DEL is idempotent; CHECK of a deleted one names the container.
    let (ok, res) = cni(&h, "DEL", id, &ns_path(&runtime_ns), &conf);
    assert!(ok, "DEL again: {res}");
    let (ok, res) = cni(&h, "DEL", "never-added", "/run/netns/missing", &conf);
    assert!(ok, "DEL without ADD, namespace gone: {res}");
    let (ok, res) = cni(&h, "CHECK", id, &ns_path(&runtime_ns), &conf);
    assert!(!ok && res["code"] == 3, "CHECK after DEL: {res}");
}

#[test]
fn error_paths_answer_with_the_spec_codes_and_create_nothing() {
    let inst = Instance::up(1, &[]);
    let h = host(&inst);
    let ns = Netns::new();
    let good = conf(&h, json!([]));
    let cases: Vec<(&str, String, String, u64, &str)> = vec![
        ("ADD", "{not json".into(), ns_path(&ns), 6, "JSON"),
        (
            "ADD",
            good.replace("1.0.0", "0.9.0"),
            ns_path(&ns),
            1,
            "0.9.0",
        ),
        (
            "ADD",
            good.clone(),
            "/run/netns/cnet-no-such-ns".into(),
            5,
            "cnet-no-such-ns",
        ),
        ("FROB", good.clone(), ns_path(&ns), 4, "FROB"),
        (
            "ADD",
            conf(
                &h,
                json!([{"hostPort": 1, "containerPort": 2, "protocol": "sctp"}]),
            ),
            ns_path(&ns),
            2,
            "sctp",
        ),
    ];
    for (cmd, stdin, netns, code, needle) in cases {
        let (ok, res) = cni(&h, cmd, "e1", &netns, &stdin);
        assert!(!ok, "{cmd} {stdin} must fail: {res}");
        assert_eq!(res["code"], code, "{stdin}: {res}");
        assert!(
            res["msg"].as_str().unwrap().contains(needle)
                || res["details"].as_str().unwrap().contains(needle),
            "{res}"
        );
    }
    let (ok, res) = cni(&h, "VERSION", "", "", "");
    assert!(
        ok && res["supportedVersions"].as_array().unwrap().len() == 5,
        "{res}"
    );
    let (ok, res) = cni(&h, "STATUS", "", "", &good);
    assert!(ok, "STATUS of an instance that is up: {res}");
    let down = good.replace(
        &inst.root.to_string_lossy().into_owned(),
        "/nonexistent/cnet",
    );
    let (ok, res) = cni(&h, "STATUS", "", "", &down);
    assert!(!ok && res["code"] == 50, "{res}");
    assert!(!inst.ok(&["ps", "-a"]).contains("cni-"), "nothing created");
    assert_eq!(hash_len::<u32, Endpoint>(&inst, maps::ENDPOINTS), 0);
}

#[test]
fn parallel_add_del_cycles_and_gc_leak_nothing() {
    let inst = Instance::up(1, &[]);
    let h = host(&inst);
    let cycles = 50;
    std::thread::scope(|s| {
        for t in 0..4 {
            let h = h.clone();
            s.spawn(move || {
                let ns = Netns::new();
                let conf = conf(&h, json!([{"hostPort": 9000 + t, "containerPort": 80}]));
                for i in 0..cycles {
                    let id = format!("par{t}x{i}");
                    let (ok, res) = cni(&h, "ADD", &id, &ns_path(&ns), &conf);
                    assert!(ok, "ADD {id}: {res}");
                    let (ok, res) = cni(&h, "DEL", &id, &ns_path(&ns), &conf);
                    assert!(ok, "DEL {id}: {res}");
                }
                assert!(
                    !ns.ip(&["-o", "link"]).contains("eth0"),
                    "no interface left"
                );
            });
        }
    });
    assert!(!inst.ok(&["ps", "-a"]).contains("cni-"));
    assert_eq!(hash_len::<PortKey, PortValue>(&inst, maps::PORTS), 0);
    assert_eq!(hash_len::<u32, Endpoint>(&inst, maps::ENDPOINTS), 0);
    let veths = inst.topo.host.ip(&["-o", "link"]);
    assert!(!veths.contains("veth"), "no veth left: {veths}");

    // GC: attachments the runtime no longer lists go, listed ones stay.
    let (a, b) = (Netns::new(), Netns::new());
    let base = conf(&h, json!([]));
    assert!(cni(&h, "ADD", "keep", &ns_path(&a), &base).0);
    assert!(cni(&h, "ADD", "stale", &ns_path(&b), &base).0);
    let mut gc: Value = serde_json::from_str(&base).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let (ok, res) = cni(&h, "GC", "", "", &gc.to_string());
    assert!(ok, "GC: {res}");
    let ps = inst.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(
        ps.lines().filter(|l| l.starts_with("cni-")).count(),
        1,
        "{ps}"
    );
    assert!(ps.contains("cni-keep-"), "{ps}");
    assert!(cni(&h, "DEL", "keep", &ns_path(&a), &base).0);
}
