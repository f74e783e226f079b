//! A cnet instance inside a throwaway topology: its own root directory (with
//! its own bpffs), its own cgroup for the host-local hooks, and the "host"
//! namespace of a [`Topology`] as its host. `Drop` runs `cnet down` and
//! removes the cgroup, then the topology goes.
use std::{
    cell::RefCell,
    path::PathBuf,
    process::{Command, Output},
};

use crate::{
    netns::{Topology, firewall_diff, firewall_snapshot_in, unique_name},
    traffic::testsrv,
};

/// Path of the `cnet` binary (`cargo xtask test` builds it next to the tests).
pub fn cnet_bin() -> String {
    if let Ok(p) = std::env::var("CNET_BIN") {
        eprintln!("\n*** CNET_BIN={p}: testing THAT binary, not the one cargo built ***\n");
        return p;
    }
    let srv = PathBuf::from(testsrv());
    let p = srv.with_file_name("cnet");
    assert!(
        p.exists(),
        "{} missing: run the tests with `cargo xtask test`",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

/// The cgroup v2 mount point.
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount")
}

pub struct Instance {
    pub root: PathBuf,
    pub cgroup: PathBuf,
    // Dropped after `Drop::drop` ran `cnet down`.
    pub topo: Topology,
    /// Firewall of the host namespace and of the machine before `cnet up`.
    fw_host: String,
    fw_root: String,
    /// Every container name the test started through the harness.
    names: RefCell<Vec<String>>,
    checked: bool,
}

impl Instance {
    /// A topology with `clients` client namespaces and cnet up on it, with one
    /// uplink per client.
    pub fn up(clients: usize, extra: &[&str]) -> Self {
        Self::up_env(clients, extra, &[])
    }

    /// Like [`Self::up`], with environment variables for that `cnet up` only
    /// (never set them on the test process: parallel tests would inherit them).
    pub fn up_env(clients: usize, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut topo = Topology::new(clients);
        let root = topo.tempdir();
        let cgroup = cgroup2_root().join(unique_name());
        std::fs::create_dir(&cgroup).unwrap();
        let fw_host = firewall_snapshot_in(Some(&topo.host.name))
            .unwrap_or_else(|e| panic!("firewall snapshot: {e}"));
        let fw_root =
            firewall_snapshot_in(None).unwrap_or_else(|e| panic!("firewall snapshot: {e}"));
        let inst = Self {
            root,
            cgroup,
            topo,
            fw_host,
            fw_root,
            names: RefCell::new(Vec::new()),
            checked: false,
        };
        let cg = inst.cgroup.to_string_lossy().into_owned();
        let mut args = vec!["up", "--cgroup", &cg];
        let ups: Vec<String> = (0..clients).map(|i| format!("up{i}")).collect();
        for u in &ups {
            args.extend(["--uplink", u.as_str()]);
        }
        args.extend_from_slice(extra);
        let out = inst.cnet_env(&args, env);
        assert!(
            out.status.success(),
            "cnet {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        inst
    }

    /// Runs `cnet --root <root> args...` in the host namespace.
    pub fn cnet(&self, args: &[&str]) -> Output {
        self.cnet_env(args, &[])
    }

    /// Like [`Self::cnet`], with extra environment variables.
    pub fn cnet_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// The command `cnet --root <root> args...` in the host namespace, not
    /// started (nsenter execs cnet, so the child's PID is cnet's).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.topo.host.name))
            .arg(cnet_bin())
            .arg("--root")
            .arg(&self.root)
            .args(args);
        cmd
    }

    /// Like [`Self::cnet`], panicking with stderr unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cnet(args);
        assert!(
            out.status.success(),
            "cnet {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `cnet args...`, expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cnet(args);
        assert!(
            !out.status.success(),
            "cnet {} should have failed",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `cnet run -d --name NAME [opts] -- cnet-testsrv serve PORTS...`;
    /// returns once the server has bound every port (it printed `ready` to
    /// its log), and panics if it never does.
    pub fn run_server(&self, name: &str, opts: &[&str], ports: &[u16]) {
        self.names.borrow_mut().push(name.to_string());
        let srv = testsrv();
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(opts);
        args.extend(["--", srv.as_str(), "serve"]);
        args.extend(ports.iter().map(String::as_str));
        let id = self.ok(&args).trim().to_string();
        assert_eq!(
            self.id_of(name),
            id,
            "run -d prints the container's full id"
        );
        self.wait_ready(name);
    }

    /// Container `name`'s full id, from `cnet inspect`.
    pub fn id_of(&self, name: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect JSON");
        v[0]["Id"].as_str().expect("Id").to_string()
    }

    /// Waits (up to 5 s) for container `name`'s command to print `ready`.
    pub fn wait_ready(&self, name: &str) {
        let log = self.root.join("logs").join(format!("{name}.log"));
        for _ in 0..250 {
            if std::fs::read_to_string(&log).is_ok_and(|t| t.lines().any(|l| l == "ready")) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!(
            "server in container {name} never started: {}",
            std::fs::read_to_string(&log)
                .unwrap_or_else(|e| format!("no log {}: {e}", log.display()))
        );
    }

    /// Records a container the test created without `run_server`, so the
    /// after-check proves its namespace is gone too.
    pub fn track(&self, name: &str) {
        self.names.borrow_mut().push(name.to_string());
    }

    /// `cnet stats --json`.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["stats", "--json"])).expect("stats JSON")
    }

    /// One named datapath counter (e.g. `drop_icc`).
    pub fn stat(&self, name: &str) -> u64 {
        let s = self.stats();
        s[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {s}"))
    }

    /// Runs `probe` and returns its result with the change of counter `name`.
    pub fn counted<T>(&self, name: &str, probe: impl FnOnce() -> T) -> (T, u64) {
        let before = self.stat(name);
        let r = probe();
        (r, self.stat(name) - before)
    }

    /// Asserts that `probe` is silently dropped (not refused) and counted
    /// exactly `delta` times under `counter`.
    pub fn assert_drop(
        &self,
        counter: &str,
        delta: u64,
        what: &str,
        probe: impl FnOnce() -> crate::traffic::Outcome,
    ) {
        let (o, d) = self.counted(counter, probe);
        crate::traffic::assert_dropped(&o, what);
        assert_eq!(d, delta, "{what}: {counter} must grow by exactly {delta}");
    }

    /// The firewall of the instance's host namespace against the snapshot
    /// taken before `cnet up`.
    pub fn check_firewall(&self) -> Result<(), String> {
        let now = firewall_snapshot_in(Some(&self.topo.host.name))?;
        firewall_diff(&self.fw_host, &now)
            .map_err(|e| format!("in the instance's namespace {}: {e}", self.topo.host.name))?;
        let root = firewall_snapshot_in(None)?;
        firewall_diff(&self.fw_root, &root).map_err(|e| format!("in the root namespace: {e}"))
    }

    /// Takes the current firewall as the reference (for the harness's own
    /// test, after it removed the rules it wrote on purpose).
    pub fn rebaseline_firewall(&mut self) {
        self.fw_host = firewall_snapshot_in(Some(&self.topo.host.name))
            .unwrap_or_else(|e| panic!("firewall snapshot: {e}"));
        self.fw_root =
            firewall_snapshot_in(None).unwrap_or_else(|e| panic!("firewall snapshot: {e}"));
    }

    /// `cnet down`, then proves nothing of the instance is left: container
    /// namespaces, links, mounts and pins under the root, cgroup attachments,
    /// firewall rules. Runs once; `Drop` runs it when the test did not.
    pub fn after_check(&mut self) -> Result<(), String> {
        self.checked = true;
        let mut names = self.names.borrow().clone();
        if let Ok(text) = std::fs::read_to_string(self.root.join("state.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(cs) = v["containers"].as_object()
        {
            names.extend(cs.keys().cloned());
        }
        let out = self.cnet(&["down"]);
        if !out.status.success() {
            return Err(format!(
                "cnet down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut problems = Vec::new();
        for n in &names {
            if std::path::Path::new("/run/netns").join(n).exists() {
                problems.push(format!("namespace {n} left behind"));
            }
        }
        let links = Command::new("ip")
            .args(["-n", &self.topo.host.name, "-o", "link", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for l in links.lines() {
            let dev = l.split(':').nth(1).unwrap_or("").trim();
            if dev.starts_with("cnet") || dev.starts_with("br-") || dev.starts_with("veth") {
                problems.push(format!("link {dev} left behind"));
            }
        }
        let root = self.root.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if m.starts_with(&root) {
                problems.push(format!("mount {m} left behind"));
            }
        }
        if self.root.join("bpf").exists() {
            problems.push(format!("{}/bpf (pins) left behind", root));
        }
        match Command::new("bpftool")
            .args(["cgroup", "show"])
            .arg(&self.cgroup)
            .output()
        {
            Ok(o) if o.status.success() => {
                let t = String::from_utf8_lossy(&o.stdout);
                if !t.trim().is_empty() {
                    problems.push(format!("cgroup programs left attached: {t}"));
                }
            }
            Ok(o) => problems.push(format!(
                "bpftool cgroup show {}: {}",
                self.cgroup.display(),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => problems.push(format!("bpftool: {e}")),
        }
        if let Err(e) = self.check_firewall() {
            problems.push(e);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Runs the test client as a host process inside the instance's cgroup
    /// (where the host-local hooks apply). Returns (reply, peer) or the error.
    pub fn host_client(
        &self,
        proto: &str,
        addr: &str,
        payload: &str,
    ) -> Result<(String, String), String> {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec {} client {proto} {addr} {payload}",
            self.cgroup.display(),
            testsrv()
        );
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.topo.host.name))
            .args(["sh", "-c", &script])
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        Ok((
            lines.next().unwrap_or("").to_string(),
            lines.next().unwrap_or("").to_string(),
        ))
    }

    /// The pinned map `name` of this instance.
    pub fn map_pin(&self, name: &str) -> PathBuf {
        self.root.join("bpf/maps").join(name)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let check = if self.checked {
            let _ = self.cnet(&["down"]);
            Ok(())
        } else {
            self.after_check()
        };
        // Killed processes may still be leaving the cgroup: retry briefly.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Err(e) = check {
            if std::thread::panicking() {
                eprintln!("after-check also failed: {e}");
            } else {
                panic!("after-check: {e}");
            }
        }
    }
}
