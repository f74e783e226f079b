//! Throwaway network-namespace topologies. Every name is unique to the test
//! process (`cnet-t<pid>-<n>`); `Drop` removes everything, also when the test
//! panics. No real interface of the machine is touched: even the "host" is a
//! namespace, and interfaces are created directly inside namespaces.
use std::{
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh name `cnet-t<pid>-<n>`.
pub fn unique_name() -> String {
    format!(
        "cnet-t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip` with `args`.
pub fn ip(args: &[&str]) -> String {
    sh("ip", args)
}

/// Runs `f` on a new thread that has joined namespace `ns` (setns is per
/// thread, so the caller's namespace never changes).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file =
        File::open(format!("/run/netns/{ns}")).unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain syscall on a valid fd; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Self {
        let name = unique_name();
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {}: {e}", self.name))
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        let out = self.exec(&["sysctl", "-qw", &format!("{key}={value}")]);
        assert!(
            out.status.success(),
            "sysctl {key} in {}: {out:?}",
            self.name
        );
    }

    /// Whether one ping to `addr` is answered within a second.
    pub fn ping(&self, addr: &str) -> bool {
        self.exec(&["ping", "-c1", "-W1", "-q", addr])
            .status
            .success()
    }

    /// Starts a long-running command inside the namespace with `nsenter`
    /// (which, unlike `ip netns exec`, keeps the machine's /sys and bpffs view).
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {}: {e}", self.name))
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Addresses used inside every topology (namespaces are private to the test).
pub mod addr {
    /// The host's address on uplink `up<i>`, which client i sees.
    pub fn host_uplink(i: usize) -> String {
        format!("10.200.{i}.1")
    }
    /// Client i's address (its own /24 behind uplink `up<i>`).
    pub fn client(i: usize) -> String {
        format!("10.200.{i}.2")
    }
    /// Bridge gateway and container addresses of topologies built by the harness.
    pub const BRIDGE_GW: &str = "10.201.0.1";
    pub fn container(i: usize) -> String {
        format!("10.201.0.{}", i + 2)
    }
}

/// A throwaway "host" namespace with an uplink to one or two "client"
/// namespaces (the outside world) and, optionally, containers on a bridge
/// built by the harness itself.
pub struct Topology {
    pub host: Netns,
    pub clients: Vec<Netns>,
    pub containers: Vec<Netns>,
    children: Vec<Child>,
    mounts: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Topology {
    /// Host namespace with one uplink veth `up<i>` (10.200.i.1/24) per client
    /// namespace i (10.200.i.2/24, default route via the host).
    pub fn new(clients: usize) -> Self {
        let host = Netns::new();
        host.sysctl("net.ipv4.ip_forward", "1");
        let mut topo = Self {
            host,
            clients: Vec::new(),
            containers: Vec::new(),
            children: Vec::new(),
            mounts: Vec::new(),
            dirs: Vec::new(),
        };
        for i in 0..clients {
            let c = Netns::new();
            let up = format!("up{i}");
            topo.host.ip(&[
                "link", "add", &up, "type", "veth", "peer", "name", "eth0", "netns", &c.name,
            ]);
            topo.host.ip(&[
                "addr",
                "add",
                &format!("{}/24", addr::host_uplink(i)),
                "dev",
                &up,
            ]);
            topo.host.ip(&["link", "set", &up, "up"]);
            c.ip(&[
                "addr",
                "add",
                &format!("{}/24", addr::client(i)),
                "dev",
                "eth0",
            ]);
            c.ip(&["link", "set", "eth0", "up"]);
            c.ip(&["route", "add", "default", "via", &addr::host_uplink(i)]);
            topo.clients.push(c);
        }
        topo
    }

    /// Adds `n` containers on bridge `br0` (10.201.0.1/24) built by the harness;
    /// container i's host-side veth is `veth<i>`, its address `addr::container(i)`.
    pub fn with_bridge(mut self, n: usize) -> Self {
        self.host.ip(&["link", "add", "br0", "type", "bridge"]);
        self.host.ip(&[
            "addr",
            "add",
            &format!("{}/24", addr::BRIDGE_GW),
            "dev",
            "br0",
        ]);
        self.host.ip(&["link", "set", "br0", "up"]);
        for i in 0..n {
            let c = Netns::new();
            let veth = format!("veth{i}");
            self.host.ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &c.name,
            ]);
            self.host.ip(&["link", "set", &veth, "master", "br0", "up"]);
            c.ip(&[
                "addr",
                "add",
                &format!("{}/24", addr::container(i)),
                "dev",
                "eth0",
            ]);
            c.ip(&["link", "set", "eth0", "up"]);
            c.ip(&["route", "add", "default", "via", addr::BRIDGE_GW]);
            self.containers.push(c);
        }
        self
    }

    /// Keeps `child` until the topology is dropped, then kills it (by PID).
    pub fn adopt(&mut self, child: Child) {
        self.children.push(child);
    }

    /// A fresh bpffs mount owned by this topology (for a cnet instance's pins).
    pub fn bpffs(&mut self) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("{}-bpf", unique_name()));
        std::fs::create_dir_all(&dir).unwrap();
        sh("mount", &["-t", "bpf", "bpf", dir.to_str().unwrap()]);
        self.mounts.push(dir.clone());
        self.dirs.push(dir.clone());
        dir
    }

    /// A fresh directory removed with the topology.
    pub fn tempdir(&mut self) -> PathBuf {
        let dir = std::env::temp_dir().join(unique_name());
        std::fs::create_dir_all(&dir).unwrap();
        self.dirs.push(dir.clone());
        dir
    }

    /// All namespace names this topology owns.
    pub fn names(&self) -> Vec<String> {
        let mut v = vec![self.host.name.clone()];
        v.extend(self.clients.iter().map(|n| n.name.clone()));
        v.extend(self.containers.iter().map(|n| n.name.clone()));
        v
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir_all(d);
        }
        // Netns fields drop afterwards and delete the namespaces.
    }
}

/// Panics if any of `names` still exists as a namespace, or if any mount
/// point under `paths` is still mounted.
pub fn assert_gone(names: &[String], paths: &[PathBuf]) {
    let list = ip(&["netns", "list"]);
    for n in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str())),
            "namespace {n} left behind"
        );
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    for p in paths {
        let p = p.to_string_lossy();
        assert!(
            !mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*p)),
            "mount {p} left behind"
        );
        assert!(
            !std::path::Path::new(&*p).exists(),
            "directory {p} left behind"
        );
    }
}

/// A snapshot of the firewall rulesets (iptables-nft, iptables-legacy and
/// nftables) of network namespace `ns` (`None`: the test process's own, the
/// machine's root namespace). A missing tool or a failing dump is an error,
/// never an empty snapshot that would compare equal.
pub fn firewall_snapshot_in(ns: Option<&str>) -> Result<String, String> {
    let run = |cmd: &str, args: &[&str]| -> Result<String, String> {
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(cmd);
                c
            }
            None => Command::new(cmd),
        };
        let out = c
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {cmd}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{cmd} {} in {}: {}: {}",
                args.join(" "),
                ns.unwrap_or("the root namespace"),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // iptables-save prints timestamp comments: drop comment lines.
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"))
    };
    Ok(format!(
        "iptables-nft:\n{}\niptables-legacy:\n{}\nnft:\n{}",
        run("iptables-save", &[])?,
        run("iptables-legacy-save", &[])?,
        run("nft", &["list", "ruleset"])?
    ))
}

/// The machine's (root namespace's) firewall rulesets; panics on tool errors.
pub fn firewall_snapshot() -> String {
    firewall_snapshot_in(None).unwrap_or_else(|e| panic!("firewall snapshot: {e}"))
}

/// Compares two snapshots, naming what changed.
pub fn firewall_diff(before: &str, after: &str) -> Result<(), String> {
    if before == after {
        return Ok(());
    }
    let added: Vec<&str> = after
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .collect();
    let removed: Vec<&str> = before
        .lines()
        .filter(|l| !after.lines().any(|a| a == *l))
        .collect();
    Err(format!(
        "firewall rules changed: added {added:?}, removed {removed:?}"
    ))
}

/// Lazily unmounts everything mounted under `dir` (deepest first): what a
/// runtime the test started (podman, dockerd) left behind.
pub fn unmount_under(dir: &std::path::Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let base = dir.to_string_lossy().into_owned();
    let mut ours: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(&base))
        .collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ours {
        let _ = Command::new("umount").arg("-l").arg(m).output();
    }
}
