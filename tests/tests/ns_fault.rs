//! Random faults: mutating commands killed with SIGKILL at random moments
//! (issue 11's loop). Around containers that must survive (one on a user
//! network, one on the default bridge also connected to it, and others),
//! `run`, `rm`, `port add/rm`, `network create/connect/disconnect/rm` and
//! `filter add/rm` are started and killed after a random delay. Then state,
//! namespaces, veths, map entries, hosts files and processes must agree, the
//! survivors must still answer, and `cnet rm -f $(cnet ps -aq)` must remove
//! every container.
//!
//! `cargo xtask test` runs a short loop; `cargo xtask soak` runs 200 kills
//! (`CNET_FAULT_KILLS`); `CNET_FAULT_SEED` replays a run.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
    time::{Duration, Instant},
};

use cnet_tests::{
    cnet::Instance,
    consistency::{assert_consistent, state},
    netns::{addr, unique_name},
    traffic::{assert_reply, tcp_probe, testsrv},
};

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// PIDs of processes whose environment carries `marker`.
fn marked_processes(marker: &str) -> Vec<u32> {
    let needle = marker.as_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle))
        })
        .collect()
}

fn netns_inode_of_pid(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Processes agree with the state: every running container's command is
/// alive in its namespace, and every process the loop started lives in the
/// namespace of a container the state knows.
fn assert_processes(inst: &Instance, marker: &str, what: &str) {
    let st = state(inst);
    let mut known = BTreeMap::new();
    for name in st["containers"].as_object().unwrap().keys() {
        let ns = std::path::Path::new("/run/netns").join(name);
        let ino = std::fs::metadata(&ns)
            .unwrap_or_else(|e| panic!("{what}: namespace of {name}: {e}"))
            .ino();
        known.insert(ino, name.clone());
        let hosts = std::path::Path::new("/etc/netns").join(name).join("hosts");
        let text = std::fs::read_to_string(&hosts)
            .unwrap_or_else(|e| panic!("{what}: {} of {name}: {e}", hosts.display()));
        let ip = st["containers"][name]["ip"].as_str().unwrap();
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(ip) && l.contains(name.as_str())),
            "{what}: hosts file of {name} lacks its own line ({ip}):\n{text}"
        );
    }
    for pid in marked_processes(marker) {
        if let Some(ino) = netns_inode_of_pid(pid) {
            assert!(
                known.contains_key(&ino),
                "{what}: process {pid} of a container the state forgot is still running"
            );
        }
    }
}

#[test]
fn random_sigkills_leave_nothing_lost_or_leaked() {
    let kills = env_or("CNET_FAULT_KILLS", 24);
    let seed = env_or(
        "CNET_FAULT_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    eprintln!("fault loop: {kills} kills, CNET_FAULT_SEED={seed}");
    let mut rng = Rng(seed);
    let inst = Instance::up(1, &[]);
    let client = inst.topo.clients[0].name.clone();
    let tag = unique_name();
    let marker = format!("CNET_FAULT={tag}");
    let srv = testsrv();

    // The survivors.
    inst.ok(&["network", "create", "--subnet", "10.72.0.0/24", "fu"]);
    let on_user = format!("u-{tag}");
    let on_bridge = format!("b-{tag}");
    inst.run_server(&on_user, &["--network", "fu", "-p", "7001:80"], &[80]);
    inst.run_server(&on_bridge, &["-p", "7000:80", "-e", &marker], &[80]);
    inst.ok(&["network", "connect", "fu", &on_bridge]);
    let mut others = Vec::new();
    // As in the report: 20 more containers (fewer in the short loop).
    let crowd = if kills >= 100 { 20 } else { 6 };
    for i in 0..crowd {
        let n = format!("o{i}-{tag}");
        inst.run_server(&n, &["-e", &marker], &[80]);
        others.push(n);
    }
    let survivors: BTreeSet<String> = [on_user.clone(), on_bridge.clone()]
        .into_iter()
        .chain(others.iter().cloned())
        .collect();

    let mut victims: Vec<String> = survivors.iter().cloned().collect();
    let mut nets: Vec<String> = Vec::new();
    let mut histogram: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let started = Instant::now();
    for k in 0..kills {
        let names: Vec<String> = state(&inst)["containers"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let removable: Vec<&String> = names.iter().filter(|n| !survivors.contains(*n)).collect();
        let any = |rng: &mut Rng| names[rng.below(names.len())].clone();
        let port = format!("{}:80", 7100 + rng.below(200));
        let (op, args): (&str, Vec<String>) = match rng.below(11) {
            0 | 1 => {
                let v = format!("k{k}-{tag}");
                victims.push(v.clone());
                let s = srv.clone();
                (
                    "run",
                    [
                        "run", "-d", "--name", &v, "-p", &port, "-e", &marker, "--", &s, "serve",
                        "80",
                    ]
                    .map(String::from)
                    .to_vec(),
                )
            }
            2 if !removable.is_empty() => (
                "rm",
                vec![
                    "rm".into(),
                    "-f".into(),
                    removable[rng.below(removable.len())].clone(),
                ],
            ),
            3 => (
                "port-add",
                vec!["port".into(), "add".into(), any(&mut rng), port],
            ),
            4 => (
                "port-rm",
                vec!["port".into(), "rm".into(), any(&mut rng), port],
            ),
            5 => {
                let n = format!("f{k}");
                nets.push(n.clone());
                let subnet = format!("10.73.{}.0/24", k % 250);
                (
                    "network-create",
                    ["network", "create", "--subnet", &subnet, &n]
                        .map(String::from)
                        .to_vec(),
                )
            }
            6 | 7 if !nets.is_empty() => {
                let n = nets[rng.below(nets.len())].clone();
                let verb = if rng.below(2) == 0 {
                    "connect"
                } else {
                    "disconnect"
                };
                (
                    if verb == "connect" {
                        "network-connect"
                    } else {
                        "network-disconnect"
                    },
                    vec!["network".into(), verb.into(), n, any(&mut rng)],
                )
            }
            8 if !nets.is_empty() => {
                let n = nets[rng.below(nets.len())].clone();
                ("network-rm", vec!["network".into(), "rm".into(), n])
            }
            9 => (
                "filter-add",
                [
                    "filter",
                    "add",
                    "--src",
                    "192.0.2.0/24",
                    "--dport",
                    "9",
                    "--action",
                    "drop",
                ]
                .map(String::from)
                .to_vec(),
            ),
            _ => {
                let ids: Vec<String> = state(&inst)["filters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["id"].to_string())
                    .collect();
                if ids.is_empty() {
                    ("ps", vec!["ps".into(), "-a".into()])
                } else {
                    (
                        "filter-rm",
                        vec![
                            "filter".into(),
                            "rm".into(),
                            ids[rng.below(ids.len())].clone(),
                        ],
                    )
                }
            }
        };
        // Most commands take a few milliseconds: the delay's scale is random
        // too, so that early, middle and late moments are all hit.
        let scale = [2_000, 10_000, 40_000, 150_000][rng.below(4)];
        let delay = Duration::from_micros(rng.below(scale) as u64);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = inst
            .command(&a)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // SAFETY: signalling the child this test started, by its PID.
        let killed = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) } == 0;
        let status = child.wait().unwrap();
        let e = histogram.entry(op).or_default();
        e.0 += 1;
        use std::os::unix::process::ExitStatusExt;
        if killed && status.signal() == Some(libc::SIGKILL) {
            e.1 += 1;
        }
    }
    eprintln!(
        "fault loop: {kills} commands in {:.1}s, (started, killed mid-way) per command: {histogram:?}",
        started.elapsed().as_secs_f64()
    );

    // Any mutating command repairs what the kills left half-done.
    let probe = format!("p-{tag}");
    victims.push(probe.clone());
    inst.run_server(&probe, &["-e", &marker], &[80]);
    assert_consistent(&inst, "after the kills", &victims);
    assert_processes(&inst, &marker, "after the kills");

    // The survivors are all there, running and answering.
    let st = state(&inst);
    for s in &survivors {
        assert!(
            st["containers"].get(s).is_some(),
            "survivor {s} lost from state (seed {seed})"
        );
        let v: serde_json::Value = serde_json::from_str(&inst.ok(&["inspect", s])).unwrap();
        assert_eq!(
            v[0]["State"]["Running"], true,
            "survivor {s} not running (seed {seed})"
        );
    }
    for port in [7000, 7001] {
        assert_reply(
            tcp_probe(
                &client,
                &format!("{}:{port}", addr::host_uplink(0)),
                "alive",
            ),
            &format!("survivor published on {port} after the kills (seed {seed})"),
        );
    }

    // `cnet rm -f $(cnet ps -aq)` removes every container.
    let ids: Vec<String> = inst
        .ok(&["ps", "-aq"])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let names = st["containers"].as_object().unwrap().len();
    assert_eq!(ids.len(), names, "ps -aq lists every container");
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    inst.ok(&args);
    assert_eq!(inst.ok(&["ps", "-aq"]), "", "no container left listed");
    assert_consistent(&inst, "after rm -f $(ps -aq)", &victims);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !marked_processes(&marker).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        marked_processes(&marker),
        Vec::<u32>::new(),
        "container processes left running after every container was removed"
    );
    for n in state(&inst)["networks"].as_object().unwrap().keys() {
        inst.ok(&["network", "rm", n]);
    }
    for f in state(&inst)["filters"].as_array().unwrap() {
        inst.ok(&["filter", "rm", &f["id"].to_string()]);
    }
}
