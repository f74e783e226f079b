//! A cnet instance inside a throwaway topology: its own root directory (with
//! its own bpffs), its own cgroup for the host-local hooks, and the "host"
//! namespace of a [`Topology`] as its host. `Drop` runs `cnet down` and
//! removes the cgroup, then the topology goes.
use std::{
    path::PathBuf,
    process::{Command, Output},
};

use crate::{
    netns::{Topology, unique_name},
    traffic::testsrv,
};

/// Path of the `cnet` binary (`cargo xtask test` builds it next to the tests).
pub fn cnet_bin() -> String {
    if let Ok(p) = std::env::var("CNET_BIN") {
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
}

impl Instance {
    /// A topology with `clients` client namespaces and cnet up on it, with one
    /// uplink per client.
    pub fn up(clients: usize, extra: &[&str]) -> Self {
        let mut topo = Topology::new(clients);
        let root = topo.tempdir();
        let cgroup = cgroup2_root().join(unique_name());
        std::fs::create_dir(&cgroup).unwrap();
        let inst = Self { root, cgroup, topo };
        let cg = inst.cgroup.to_string_lossy().into_owned();
        let mut args = vec!["up", "--cgroup", &cg];
        let ups: Vec<String> = (0..clients).map(|i| format!("up{i}")).collect();
        for u in &ups {
            args.extend(["--uplink", u.as_str()]);
        }
        args.extend_from_slice(extra);
        inst.ok(&args);
        inst
    }

    /// Runs `cnet --root <root> args...` in the host namespace.
    pub fn cnet(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.topo.host.name))
            .arg(cnet_bin())
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .unwrap()
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

    /// `cnet run -d --name NAME [opts] -- cnet-testsrv serve PORTS...`
    pub fn run_server(&self, name: &str, opts: &[&str], ports: &[u16]) {
        let srv = testsrv();
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(opts);
        args.extend(["--", srv.as_str(), "serve"]);
        args.extend(ports.iter().map(String::as_str));
        assert_eq!(self.ok(&args).trim(), name);
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
        let _ = self.cnet(&["down"]);
        // Killed processes may still be leaving the cgroup: retry briefly.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
