//! Control-plane bugs and validation gaps of the Docker-parity issue, each
//! with the behaviour Docker users expect: a 257th filter refused before
//! anything is saved, interface names never reused while in use, hosts-file
//! names and bridge names validated, subnets with host bits or in reserved
//! ranges refused, `up` applying a new uplink list and refusing a cgroup
//! move, the lock file kept by `down`.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use cnet_tests::consistency::state;
use cnet_tests::{
    cnet::Instance,
    netns::{addr, unique_name},
    traffic::{assert_reply, tcp_probe},
};

fn ctr(base: &str) -> String {
    format!("{base}-{}", unique_name())
}

#[test]
fn the_257th_filter_is_refused_and_nothing_is_saved() {
    let inst = Instance::up(1, &[]);
    for i in 0..256u32 {
        let src = format!("198.51.100.{}/32", i % 256);
        inst.ok(&[
            "filter",
            "add",
            "--src",
            &src,
            "--dport",
            &(1000 + i).to_string(),
            "--proto",
            "tcp",
            "--action",
            "drop",
        ]);
    }
    let before = std::fs::read_to_string(inst.root.join("state.json")).unwrap();
    let e = inst.fails(&["filter", "add", "--src", "203.0.113.1", "--action", "drop"]);
    assert!(e.contains("256"), "{e}");
    assert_eq!(
        std::fs::read_to_string(inst.root.join("state.json")).unwrap(),
        before,
        "state unchanged"
    );
    // The instance still comes up (it failed on every later `up` before).
    let cg = inst.cgroup.to_string_lossy().into_owned();
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cg]);
}

#[test]
fn connect_never_reuses_an_interface_name_in_use() {
    let inst = Instance::up(1, &[]);
    let c = ctr("c");
    inst.run_server(&c, &[], &[80]);
    for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
        inst.ok(&[
            "network",
            "create",
            "--subnet",
            &format!("10.81.{i}.0/24"),
            n,
        ]);
    }
    inst.ok(&["network", "connect", "n1", &c]);
    inst.ok(&["network", "connect", "n2", &c]);
    inst.ok(&["network", "disconnect", "n1", &c]);
    inst.ok(&["network", "connect", "n3", &c]);
    let st = state(&inst);
    let names: Vec<(String, String)> = st["containers"][&c]["extra"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["network"].as_str().unwrap().into(),
                a["ifname"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("n2".to_string(), "eth2".to_string()),
            ("n3".to_string(), "eth1".to_string())
        ]
    );
    let links = cnet_tests::netns::ip(&["-n", &c, "-o", "-4", "addr"]);
    assert!(
        links.contains("eth1") && links.contains("10.81.2."),
        "{links}"
    );
    assert!(
        links.contains("eth2") && links.contains("10.81.1."),
        "{links}"
    );
}

#[test]
fn names_subnets_and_bridge_names_are_validated() {
    let inst = Instance::up(1, &[]);
    let net = ctr("v");
    inst.ok(&["network", "create", "--subnet", "10.82.0.0/24", &net]);
    let name = ctr("bad");
    for (flags, needle) in [
        (
            vec!["--network", net.as_str(), "--network-alias", "a b"],
            "\"a b\"",
        ),
        (
            vec!["--network", net.as_str(), "--network-alias", "a\nb"],
            "a\\nb",
        ),
        (vec!["--add-host", "x y:10.0.0.1"], "\"x y\""),
    ] {
        let mut args = vec!["run", "-d", "--name", name.as_str()];
        args.extend(flags.iter().copied());
        args.extend(["--", "sleep", "1"]);
        let e = inst.fails(&args);
        assert!(e.contains(needle), "{flags:?}: {e}");
        assert!(!std::path::Path::new("/run/netns").join(&name).exists());
    }
    let c = ctr("c");
    inst.run_server(&c, &[], &[80]);
    let e = inst.fails(&["network", "connect", "--alias", "bad\talias", &net, &c]);
    assert!(e.contains("bad\\talias"), "{e}");
    for (args, needle) in [
        (
            vec!["network", "create", "--subnet", "10.77.0.5/24", "x1"],
            "10.77.0.5/24",
        ),
        (
            vec!["network", "create", "--subnet", "127.1.0.0/16", "x2"],
            "loopback",
        ),
        (
            vec!["network", "create", "--subnet", "224.1.0.0/16", "x3"],
            "multicast",
        ),
        (
            vec!["network", "create", "--subnet", "0.1.0.0/16", "x4"],
            "this network",
        ),
        (
            vec![
                "network",
                "create",
                "-o",
                "com.docker.network.bridge.name=br:x",
                "x5",
            ],
            "br:x",
        ),
        (
            vec![
                "network",
                "create",
                "-o",
                "com.docker.network.bridge.name=br\tx",
                "x6",
            ],
            "br\\tx",
        ),
    ] {
        let e = inst.fails(&args);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    let ls = inst.ok(&["network", "ls"]);
    assert!(
        !ls.contains("x1") && !ls.contains("x5"),
        "nothing created: {ls}"
    );
}

#[test]
fn up_applies_new_uplinks_refuses_a_cgroup_move_and_down_keeps_the_lock() {
    let mut inst = Instance::up(2, &[]);
    let web = ctr("web");
    inst.run_server(&web, &["-p", "8080:80"], &[80]);
    let cg = inst.cgroup.to_string_lossy().into_owned();
    // Only up0 is an uplink now: up1 loses its uplink hook but still
    // publishes, as every interface with a host address does.
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cg]);
    assert_eq!(state(&inst)["uplinks"], serde_json::json!(["up0"]));
    assert!(
        !inst.root.join("bpf/links/uplink-up1").exists(),
        "uplink hook of up1 removed"
    );
    let c1 = inst.topo.clients[1].name.clone();
    assert_reply(
        tcp_probe(&c1, &format!("{}:8080", addr::host_uplink(1)), "x"),
        "up1 still publishes",
    );
    let other = cnet_tests::cnet::cgroup2_root().join(unique_name());
    std::fs::create_dir(&other).unwrap();
    let e = inst.fails(&["up", "--cgroup", &other.to_string_lossy()]);
    let _ = std::fs::remove_dir(&other);
    assert!(e.contains("cnet down") && e.contains(&cg), "{e}");
    inst.after_check().unwrap();
    assert!(inst.root.join("lock").exists(), "down keeps the lock file");
}

#[test]
fn ps_rm_inspect_and_exit_codes_as_docker() {
    let inst = Instance::up(1, &[]);
    let (a, b, c) = (ctr("a"), ctr("b"), ctr("c"));
    inst.run_server(&a, &["-p", "8000-8002:80-82"], &[80, 81, 82]);
    inst.run_server(&c, &[], &[80]);
    // A detached command that exits at once: listed only with -a.
    let gone = ctr("gone");
    inst.ok(&["run", "-d", "--name", &gone, "--", "sh", "-c", "exit 3"]);
    inst.track(&gone);
    let killed = ctr("killed");
    inst.run_server(&killed, &[], &[80]);
    let pid = serde_json::from_str::<serde_json::Value>(&inst.ok(&["inspect", &killed])).unwrap()
        [0]["State"]["Pid"]
        .as_i64()
        .unwrap();
    // SAFETY: the server this test started, by its PID.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let names = inst.ok(&["ps", "--format", "{{.Names}}"]);
    assert!(
        names.contains(&a) && names.contains(&c) && !names.contains(&gone),
        "{names}"
    );
    let all = inst.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        all.lines()
            .any(|l| l.starts_with(&format!("{gone} Exited (3) ")) && l.ends_with(" ago")),
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with(&format!("{killed} Exited (137) "))),
        "{all}"
    );
    assert!(
        all.lines().any(|l| l.starts_with(&format!("{a} Up "))),
        "{all}"
    );
    // The exit code in inspect, as `docker inspect -f '{{.State.ExitCode}}'`.
    let v: serde_json::Value = serde_json::from_str(&inst.ok(&["inspect", &gone])).unwrap();
    assert_eq!(v[0]["State"]["Status"], "exited", "{v}");
    assert_eq!(v[0]["State"]["ExitCode"], 3, "{v}");
    assert_eq!(v[0]["State"]["Running"], false, "{v}");
    // -q: short ids; {{json .}}; ranges collapsed; an unknown field named.
    let q = inst.ok(&["ps", "-q"]);
    assert!(q.lines().any(|l| l == &inst.id_of(&a)[..12]), "{q}");
    let j = inst.ok(&["ps", "--format", "{{json .}}"]);
    let row: serde_json::Value = j
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["Names"] == a.as_str())
        .unwrap();
    assert_eq!(row["Ports"], "0.0.0.0:8000-8002->80-82/tcp", "{row}");
    let e = inst.fails(&["ps", "--format", "{{.Nope}}"]);
    assert!(e.contains("Nope"), "{e}");

    // rm a b c with b missing: a and c go, b is reported, exit 1.
    let out = inst.cnet(&["rm", "-f", &a, &b, &c]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("No such container: {b}")),
        "{stderr}"
    );
    let listed = inst.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!listed.contains(&a) && !listed.contains(&c), "{listed}");
    // By id prefix, and inspect printing the found ones.
    let d = ctr("d");
    inst.run_server(&d, &[], &[80]);
    let id = inst.id_of(&d);
    let out = inst.cnet(&["inspect", &id[..8], "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["Name"], format!("/{d}"), "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such container: nosuch"));
    inst.ok(&["rm", "-f", &id[..10]]);
    // Exit codes: 127 not found, 126 not executable, 125 cnet's own errors.
    assert_eq!(
        inst.cnet(&["run", "--", "/nonexistent/cmd"]).status.code(),
        Some(127)
    );
    let plain = inst.root.join("not-executable");
    std::fs::write(&plain, "x").unwrap();
    let plain = plain.to_string_lossy().into_owned();
    let out = inst.cnet(&["run", "--", &plain]);
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert_eq!(
        inst.cnet(&["run", "-p", "abc", "--", "true"]).status.code(),
        Some(125)
    );
}

#[test]
fn huge_port_ranges_are_planned_without_a_quadratic_search() {
    let inst = Instance::up(1, &[]);
    // More exposed ports than the dynamic range has: a clear error.
    let e = inst.fails(&[
        "run", "-d", "--expose", "1-65535", "-P", "--", "sleep", "60",
    ]);
    assert!(
        e.contains("no free dynamic host port") && e.contains("32768-60999"),
        "{e}"
    );
    // 10,000 ports in one -p: planned, published, listed as one range.
    let big = ctr("big");
    let t = std::time::Instant::now();
    inst.run_server(&big, &["-p", "20000-29999:20000-29999"], &[20000]);
    eprintln!("publishing 10,000 ports took {:?}", t.elapsed());
    let ports = inst.ok(&["ps", "--format", "{{.Ports}}"]);
    assert!(
        ports.contains("0.0.0.0:20000-29999->20000-29999/tcp"),
        "{ports}"
    );
    let c = inst.topo.clients[0].name.clone();
    assert_reply(
        tcp_probe(&c, &format!("{}:20000", addr::host_uplink(0)), "x"),
        "the first port of the range answers",
    );
}

#[test]
fn a_lock_wait_names_the_holder_and_can_time_out() {
    use std::os::fd::AsRawFd;
    let inst = Instance::up(1, &[]);
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(inst.root.join("lock"))
        .unwrap();
    // SAFETY: flock on an open descriptor of the test's own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    std::fs::write(inst.root.join("lock"), "4242 cnet-test holding the lock\n").unwrap();
    let t = std::time::Instant::now();
    let e = inst.fails(&[
        "--lock-timeout",
        "0.5",
        "filter",
        "add",
        "--src",
        "192.0.2.1",
        "--action",
        "drop",
    ]);
    assert!(
        e.contains("gave up waiting") && e.contains("pid 4242 (cnet-test holding the lock)"),
        "{e}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    // Without a timeout it waits, says who it waits for after 2 s, then goes on.
    let root = inst.root.clone();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(2600));
        drop(lock);
        root
    });
    let out = inst.cnet(&["filter", "add", "--src", "192.0.2.1", "--action", "drop"]);
    releaser.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("waiting for the lock") && stderr.contains("pid 4242"),
        "{stderr}"
    );
    let e = inst.fails(&["--lock-timeout", "abc", "ps"]);
    assert!(e.contains("abc"), "{e}");
}

#[test]
fn ctrl_c_at_any_moment_of_a_foreground_run_leaves_nothing() {
    use std::os::unix::process::CommandExt;
    let inst = Instance::up(1, &[]);
    for delay_ms in [0u64, 15, 30, 60, 120, 250] {
        let name = ctr("fg");
        inst.track(&name);
        let mut child = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", inst.topo.host.name))
            .arg(cnet_tests::cnet::cnet_bin())
            .arg("--root")
            .arg(&inst.root)
            .args(["run", "--name", &name, "--", "sleep", "1"])
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        // ^C as a terminal sends it: to the whole foreground process group.
        // SAFETY: signalling the process group of a child this test started.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
        let status = child.wait().unwrap();
        let left = inst.ok(&["ps", "-a", "-q"]);
        assert_eq!(
            left.trim(),
            "",
            "after ^C at {delay_ms} ms ({status:?}): {left}"
        );
        assert!(
            !std::path::Path::new("/run/netns").join(&name).exists(),
            "namespace left after ^C at {delay_ms} ms"
        );
    }
}

#[test]
fn a_pid_reused_by_another_process_is_never_signalled() {
    let inst = Instance::up(1, &[]);
    let h = ctr("h");
    inst.ok(&[
        "run",
        "-d",
        "--name",
        &h,
        "--network",
        "host",
        "--",
        "sleep",
        "1000",
    ]);
    inst.track(&h);
    let path = inst.root.join("state.json");
    let mut st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let pid = st["containers"][&h]["pid"].as_u64().unwrap() as i32;
    assert!(
        st["containers"][&h]["pid_start"].as_u64().is_some(),
        "start time recorded"
    );
    // The container's process ends, and its PID now names an unrelated process.
    // SAFETY: killing the container's own process, started by this test.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // A reused PID belongs to a process started later (start times count in
    // 10 ms ticks).
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut bystander = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    st["containers"][&h]["pid"] = serde_json::json!(bystander.id());
    std::fs::write(&path, serde_json::to_string(&st).unwrap()).unwrap();
    inst.ok(&["rm", "-f", &h]);
    let status = bystander.try_wait().unwrap();
    assert!(
        status.is_none(),
        "the unrelated process that got the PID is alive: {status:?}, state was {st}"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}

#[test]
fn a_failed_removal_keeps_the_container_tracked_until_it_succeeds() {
    let inst = Instance::up(1, &[]);
    let c = ctr("c");
    inst.run_server(&c, &[], &[80]);
    // Make one teardown step fail: a mount on the container's hosts-file
    // directory cannot be removed.
    let dir = std::path::Path::new("/etc/netns").join(&c);
    let m = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(m.success());
    let e = inst.fails(&["rm", "-f", &c]);
    assert!(e.contains(&c), "{e}");
    let listed = inst.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(listed.lines().any(|l| l == c), "still tracked: {listed}");
    let st = state(&inst);
    assert_eq!(st["containers"][&c]["phase"], "removing");
    // Once the obstacle is gone, the next command finishes the removal.
    let u = std::process::Command::new("umount")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(u.success());
    let cg = inst.cgroup.to_string_lossy().into_owned();
    let out = inst.cnet(&["up", "--uplink", "up0", "--cgroup", &cg]);
    let listed = inst.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!listed.contains(&c), "{listed} {out:?}");
}

#[test]
fn run_flags_and_inspect_fields_as_docker() {
    let inst = Instance::up(1, &[]);
    let w = ctr("w");
    inst.run_server(
        &w,
        &[
            "-e",
            "GREETING=hello",
            "--label",
            "tier=web",
            "-h",
            "webhost",
            "-p",
            "8080:80",
            "--add-host",
            "dockerhost:host-gateway",
        ],
        &[80],
    );
    let v: serde_json::Value = serde_json::from_str(&inst.ok(&["inspect", &w])).unwrap();
    let c = &v[0];
    assert_eq!(c["State"]["Status"], "running");
    assert!(c["State"]["Pid"].as_u64().unwrap() > 1);
    assert_eq!(c["Path"], cnet_tests::traffic::testsrv());
    assert_eq!(c["Args"], serde_json::json!(["serve", "80"]));
    assert_eq!(c["Config"]["Labels"]["tier"], "web");
    assert!(
        c["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=hello"),
        "{c}"
    );
    assert_eq!(c["Config"]["Hostname"], "webhost");
    assert_eq!(
        c["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"],
        "8080"
    );
    assert_eq!(
        c["HostConfig"]["ExtraHosts"][0], "dockerhost:172.17.0.1",
        "host-gateway"
    );
    // RFC 3339 in UTC with up to nine fractional digits (Go's RFC3339Nano).
    let created = c["Created"].as_str().unwrap();
    let (secs, frac) = created.split_once('.').unwrap_or((created, "Z"));
    assert!(
        secs.len() == "2026-11-23T09:38:32".len()
            && secs.as_bytes()[10] == b'T'
            && frac.ends_with('Z')
            && frac.len() <= 10
            && frac[..frac.len() - 1].bytes().all(|b| b.is_ascii_digit()),
        "RFC 3339 with nanoseconds: {created}"
    );
    // The command really gets the environment and the hostname.
    let out = inst.ok(&[
        "run",
        "-e",
        "A=1",
        "-e",
        "HOME",
        "-h",
        "box",
        "--",
        "sh",
        "-c",
        "echo $A $(hostname)",
    ]);
    assert_eq!(out.trim(), "1 box");
    let e = inst.fails(&["run", "-e", "=x", "--", "true"]);
    assert!(e.contains("\"=x\""), "{e}");
    // network ls -q / --format, and network inspect's fields.
    inst.ok(&["network", "create", "--subnet", "10.83.0.0/24", "nl"]);
    let q = inst.ok(&["network", "ls", "-q"]);
    assert_eq!(q.lines().count(), 4, "{q}");
    assert!(q.lines().all(|l| l.len() == 12), "{q}");
    let names = inst.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(
        names.lines().any(|l| l == "nl bridge") && names.lines().any(|l| l == "none null"),
        "{names}"
    );
    let n: serde_json::Value =
        serde_json::from_str(&inst.ok(&["network", "inspect", "nl"])).unwrap();
    assert_eq!(n[0]["EnableIPv6"], false);
    assert_eq!(n[0]["Attachable"], false);
    assert!(n[0]["Created"].as_str().unwrap().ends_with('Z'), "{n}");
}

#[test]
fn detached_rm_mac_dns_filters_and_network_options_as_docker() {
    let inst = Instance::up(1, &[]);
    let client = inst.topo.clients[0].name.clone();

    // -d --rm: listed while its command runs, gone with its namespace after.
    let short = ctr("short");
    inst.ok(&["run", "-d", "--rm", "--name", &short, "--", "sleep", "0.5"]);
    inst.track(&short);
    assert!(
        inst.ok(&["ps", "-q"]).lines().count() == 1,
        "listed while running"
    );
    let ns = std::path::Path::new("/run/netns").join(&short);
    assert!(ns.exists());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ns.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !ns.exists(),
        "--rm removed the namespace after the command exited"
    );
    assert_eq!(inst.ok(&["ps", "-aq"]), "", "--rm removed the container");

    // --mac-address: eth0 has it, inspect shows it, and traffic reaches it
    // (the datapath addresses frames to it: a wrong MAC would be dropped).
    let m = ctr("mac");
    inst.run_server(
        &m,
        &[
            "--mac-address",
            "02:aa:bb:cc:dd:ee",
            "-p",
            "8090:80",
            "--label",
            "role=mac",
        ],
        &[80],
    );
    let link = cnet_tests::netns::ip(&["-n", &m, "-o", "link", "show", "eth0"]);
    assert!(link.contains("02:aa:bb:cc:dd:ee"), "{link}");
    let v: serde_json::Value = serde_json::from_str(&inst.ok(&["inspect", &m])).unwrap();
    assert_eq!(v[0]["NetworkSettings"]["MacAddress"], "02:aa:bb:cc:dd:ee");
    assert_reply(
        tcp_probe(&client, &format!("{}:8090", addr::host_uplink(0)), "mac"),
        "published port of a container with its own MAC",
    );
    for (bad, want) in [
        ("01:00:5e:00:00:01", "multicast"),
        ("zz", "invalid MAC address: zz"),
        ("02:aa:bb:cc:dd:ee", "already uses it"),
    ] {
        let e = inst.fails(&["run", "--mac-address", bad, "--", "true"]);
        assert!(e.contains(want), "{bad}: {e}");
    }
    let e = inst.fails(&[
        "run",
        "--network",
        "host",
        "--mac-address",
        "02:00:00:00:00:01",
        "--",
        "true",
    ]);
    assert!(e.contains("--mac-address"), "{e}");

    // --dns, --dns-search, --dns-option: the container's resolv.conf.
    let out = inst.ok(&[
        "run",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "example.test",
        "--dns-search",
        "corp.test",
        "--dns-option",
        "ndots:2",
        "--",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert_eq!(
        out, "nameserver 192.0.2.53\nsearch example.test corp.test\noptions ndots:2\n",
        "{out}"
    );
    let e = inst.fails(&["run", "--dns-search", "a b", "--", "true"]);
    assert!(e.contains("\"a b\""), "{e}");

    // ps --filter, as Docker's.
    let gone = ctr("gone");
    inst.ok(&[
        "run", "-d", "--name", &gone, "--label", "role=job", "--", "sh", "-c", "exit 3",
    ]);
    inst.track(&gone);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let names = |f: &[&str]| {
        let mut a = vec!["ps", "--format", "{{.Names}}"];
        for x in f {
            a.extend(["--filter", x]);
        }
        let mut v: Vec<String> = inst.ok(&a).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(names(&["label=role=mac"]), vec![m.clone()]);
    assert_eq!(
        names(&["label=role"]),
        vec![m.clone()],
        "running only without -a"
    );
    assert_eq!(
        names(&["status=exited"]),
        vec![gone.clone()],
        "status implies -a"
    );
    assert_eq!(names(&["exited=3"]), vec![gone.clone()]);
    assert_eq!(names(&["exited=4"]), Vec::<String>::new());
    assert_eq!(names(&["publish=8090"]), vec![m.clone()]);
    assert_eq!(names(&["publish=8000-8100/tcp"]), vec![m.clone()]);
    assert_eq!(names(&["publish=8090/udp"]), Vec::<String>::new());
    assert_eq!(names(&["expose=80"]), vec![m.clone()]);
    assert_eq!(names(&[&format!("name={m}")]), vec![m.clone()]);
    assert_eq!(
        names(&[&format!("id={}", &inst.id_of(&m)[..6])]),
        vec![m.clone()]
    );
    assert_eq!(
        names(&["network=bridge", "label=role=job"]),
        Vec::<String>::new(),
        "keys AND"
    );
    let mut both = vec![m.clone(), gone.clone()];
    both.sort();
    let all = {
        let mut v: Vec<String> = inst
            .ok(&[
                "ps",
                "-a",
                "--format",
                "{{.Names}}",
                "--filter",
                "label=role=mac",
                "--filter",
                "label=role=job",
            ])
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(all, both, "values of one key OR");
    let e = inst.fails(&["ps", "--filter", "nope=1"]);
    assert!(e.contains("Invalid filter 'nope'"), "{e}");
    let e = inst.fails(&["ps", "--filter", "status=sleepy"]);
    assert!(e.contains("status: sleepy"), "{e}");

    // network create --label/--attachable/--aux-address; network ls --filter.
    inst.ok(&[
        "network",
        "create",
        "--subnet",
        "10.84.0.0/24",
        "--label",
        "team=a",
        "--attachable",
        "--aux-address",
        "router=10.84.0.2",
        "na",
    ]);
    inst.ok(&["network", "create", "--subnet", "10.85.0.0/24", "nb"]);
    let n: serde_json::Value =
        serde_json::from_str(&inst.ok(&["network", "inspect", "na"])).unwrap();
    assert_eq!(n[0]["Labels"]["team"], "a");
    assert_eq!(n[0]["Attachable"], true);
    assert_eq!(
        n[0]["IPAM"]["Config"][0]["AuxiliaryAddresses"]["router"],
        "10.84.0.2"
    );
    let on = ctr("on");
    inst.ok(&[
        "run",
        "-d",
        "--name",
        &on,
        "--network",
        "na",
        "--",
        "sleep",
        "100",
    ]);
    inst.track(&on);
    let v: serde_json::Value = serde_json::from_str(&inst.ok(&["inspect", &on])).unwrap();
    assert_eq!(
        v[0]["NetworkSettings"]["Networks"]["na"]["IPAddress"], "10.84.0.3",
        "the aux address is skipped"
    );
    let e = inst.fails(&["run", "--network", "na", "--ip", "10.84.0.2", "--", "true"]);
    assert!(e.contains("10.84.0.2"), "{e}");
    for (bad, want) in [
        ("router=10.99.0.2", "10.99.0.2"),
        ("gw=10.86.0.1", "gateway"),
        ("router", "NAME=IP"),
    ] {
        let e = inst.fails(&[
            "network",
            "create",
            "--subnet",
            "10.86.0.0/24",
            "--aux-address",
            bad,
            "nc",
        ]);
        assert!(e.contains(want), "{bad}: {e}");
    }
    let nets = |f: &str| {
        let mut v: Vec<String> = inst
            .ok(&["network", "ls", "--format", "{{.Name}}", "--filter", f])
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(nets("label=team=a"), vec!["na"]);
    assert_eq!(nets("type=custom"), vec!["na", "nb"]);
    assert_eq!(nets("type=builtin"), vec!["bridge", "host", "none"]);
    assert_eq!(nets("dangling=true"), vec!["nb"]);
    assert_eq!(nets("driver=null"), vec!["none"]);
    assert_eq!(nets("name=n"), vec!["na", "nb", "none"]);
    // inspect -f and table formats, as Docker users write them.
    assert_eq!(
        inst.ok(&["inspect", "-f", "{{.State.ExitCode}}", &gone]),
        "3\n"
    );
    assert_eq!(
        inst.ok(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &on
        ]),
        "10.84.0.3\n"
    );
    assert_eq!(
        inst.ok(&[
            "inspect",
            "-f",
            "{{(index .NetworkSettings.Networks \"na\").IPAddress}} {{.Config.Labels.nope}}",
            &on
        ]),
        "10.84.0.3 <no value>\n"
    );
    assert_eq!(
        inst.ok(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Subnet}}{{end}} {{json .Labels}}",
            "na"
        ]),
        "10.84.0.0/24 {\"team\":\"a\"}\n"
    );
    let e = inst.fails(&["inspect", "-f", "{{.State.Nope}}", &on]);
    assert!(e.contains("can't evaluate field Nope"), "{e}");
    let table = inst.ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={gone}"),
        "--format",
        "table {{.Names}}\t{{.State}}",
    ]);
    let w = gone.len().max(5) + 3;
    assert_eq!(
        table,
        format!("{:<w$}STATE\n{:<w$}exited\n", "NAMES", gone),
        "{table}"
    );
    let e = inst.fails(&["network", "ls", "--filter", "type=odd"]);
    assert!(e.contains("'type'='odd'"), "{e}");

    // disconnect -f, and containers named by id prefix.
    inst.ok(&["network", "connect", "nb", &m]);
    let id = inst.id_of(&m);
    inst.ok(&["network", "disconnect", "-f", "nb", &id[..10]]);
    let links = cnet_tests::netns::ip(&["-n", &m, "-o", "link"]);
    assert!(!links.contains("eth1"), "{links}");
    let e = inst.fails(&["network", "disconnect", "nb", &m]);
    assert!(e.contains("not connected"), "{e}");
    inst.ok(&["rm", "-f", &m, &gone, &on]);
    inst.ok(&["network", "rm", "na", "nb"]);
}

#[test]
fn stop_start_restart_kill_and_logs_as_docker() {
    let inst = Instance::up(1, &[]);
    let client = inst.topo.clients[0].name.clone();
    let via = format!("{}:8095", addr::host_uplink(0));
    let s = ctr("s");
    inst.run_server(&s, &["-p", "8095:80"], &[80]);
    assert_reply(tcp_probe(&client, &via, "up"), "published port before stop");
    let status = |n: &str| {
        inst.ok(&[
            "ps",
            "-a",
            "--filter",
            &format!("name=^{n}$"),
            "--format",
            "{{.Status}}",
        ])
        .trim()
        .to_string()
    };

    // stop: SIGTERM, the container stays (exited 143) with its network.
    assert_eq!(inst.ok(&["stop", "-t", "5", &s]), format!("{s}\n"));
    assert!(status(&s).starts_with("Exited (143) "), "{}", status(&s));
    assert_eq!(
        tcp_probe(&client, &via, "down"),
        cnet_tests::traffic::Outcome::Refused,
        "nothing listens in a stopped container (its namespace answers with a reset)"
    );
    assert_eq!(
        inst.ok(&["stop", &s]),
        format!("{s}\n"),
        "stopping a stopped one is fine"
    );
    let e = inst.fails(&["kill", &s]);
    assert!(e.contains("is not running"), "{e}");

    // start: the command again, same address and port.
    assert_eq!(inst.ok(&["start", &s]), format!("{s}\n"));
    inst.wait_ready(&s);
    assert!(status(&s).starts_with("Up "), "{}", status(&s));
    assert_reply(
        tcp_probe(&client, &via, "again"),
        "published port after start",
    );
    assert!(inst.ok(&["logs", &s]).lines().any(|l| l == "ready"));
    assert_eq!(inst.ok(&["logs", "--tail", "1", &s]), "ready\n");

    // kill -s, restart.
    inst.ok(&["kill", "-s", "TERM", &s]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !status(&s).starts_with("Exited (") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(status(&s).starts_with("Exited (143) "), "{}", status(&s));
    let e = inst.fails(&["kill", "-s", "FROB", &s]);
    assert!(e.contains("invalid signal: FROB"), "{e}");
    inst.ok(&["restart", "-t", "1", &s]);
    inst.wait_ready(&s);
    assert_reply(tcp_probe(&client, &via, "restarted"), "after restart");

    // A command that ignores SIGTERM is killed after the grace time.
    let stubborn = ctr("stubborn");
    inst.ok(&[
        "run",
        "-d",
        "--name",
        &stubborn,
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    inst.track(&stubborn);
    inst.wait_ready(&stubborn);
    let t = std::time::Instant::now();
    inst.ok(&["stop", "-t", "1", &stubborn]);
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(900),
        "waited the grace time"
    );
    assert!(
        status(&stubborn).starts_with("Exited (137) "),
        "{}",
        status(&stubborn)
    );
    let out = inst.cnet(&["stop", &stubborn, "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such container: nosuch"));
    inst.ok(&["rm", "-f", &s, &stubborn]);
}
