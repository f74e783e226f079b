//! The real podman (Debian's 4.3, CNI backend) drives cnet-cni: `podman run
//! -p` publishes through cnet's eBPF datapath, `podman rm -f` leaves nothing.
//! Podman runs in the test's host namespace with private storage, run,
//! config and CNI directories under a temporary directory; nothing under
//! /etc/containers, /etc/cni or /var/lib/containers is used.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use cnet_common::maps::{self, Endpoint, PortKey, PortValue};
use cnet_tests::{
    cnet::{Instance, cnet_bin},
    consistency::hash_len,
    netns::{addr, unique_name},
    traffic::{retry, seen_source, tcp_request},
};

/// A private podman: its directories and the host namespace it runs in.
struct Podman {
    dir: PathBuf,
    host_ns: String,
}

impl Podman {
    fn new(host_ns: &str, net: &str, root: &Path) -> Self {
        let dir = std::env::temp_dir().join(format!("cnet-podman-{}", unique_name()));
        for d in ["cni", "cnibin", "storage", "run", "tmp"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let plugin = Path::new(&cnet_bin()).with_file_name("cnet-cni");
        std::os::unix::fs::symlink(&plugin, dir.join("cnibin/cnet")).unwrap();
        std::fs::write(
            dir.join(format!("cni/{net}.conflist")),
            serde_json::json!({
                "cniVersion": "1.0.0",
                "name": net,
                "plugins": [{
                    "type": "cnet",
                    "root": root,
                    "capabilities": {"portMappings": true},
                }],
            })
            .to_string(),
        )
        .unwrap();
        // No registries: the image is imported, nothing is pulled.
        std::fs::write(
            dir.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{}\"\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
                dir.join("cnibin").display(),
                dir.join("cni").display()
            ),
        )
        .unwrap();
        Self {
            dir,
            host_ns: host_ns.to_string(),
        }
    }

    fn podman(&self, args: &[&str]) -> Output {
        let d = |s: &str| self.dir.join(s).to_string_lossy().into_owned();
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host_ns))
            .arg("podman")
            .args([
                "--root",
                &d("storage"),
                "--runroot",
                &d("run"),
                "--tmpdir",
                &d("tmp"),
            ])
            .args(["--storage-driver", "vfs", "--network-backend", "cni"])
            .args(["--cni-config-dir", &d("cni"), "--runtime", "runc"])
            .args(args)
            .env("CONTAINERS_CONF", d("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d("registries.conf"))
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A busybox image with cnet-testsrv and the libraries it links.
    fn import_image(&self) {
        let tar = cnet_tests::image::rootfs_tar(&self.dir);
        self.ok(&["import", &tar.to_string_lossy(), "cnet-test-img"]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "0"]);
        let _ = self.podman(&["rmi", "-af"]);
        cnet_tests::netns::unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Podman's ulimit defaults exceed this machine's hard limits (no
/// CAP_SYS_RESOURCE here): the container gets lower ones.
fn ulimits() -> Vec<String> {
    let lim = |r| {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit into a local struct.
        unsafe { libc::getrlimit(r, &mut l) };
        let v = l.rlim_cur.min(l.rlim_max).min(4096);
        format!("{v}:{v}")
    };
    vec![
        "--ulimit".into(),
        format!("nofile={}", lim(libc::RLIMIT_NOFILE)),
        "--ulimit".into(),
        format!("nproc={}", lim(libc::RLIMIT_NPROC)),
    ]
}

#[test]
fn podman_run_p_is_served_by_cnet_and_rm_leaves_nothing() {
    let inst = Instance::up(1, &[]);
    let net = format!("cnet-{}", unique_name());
    let pm = Podman::new(&inst.topo.host.name, &net, &inst.root);
    pm.import_image();
    let name = format!("web-{}", unique_name());
    let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.clone()];
    args.extend(ulimits());
    args.extend(
        [
            "--network",
            &net,
            "-p",
            "8081:80",
            "cnet-test-img",
            "/testsrv",
            "serve",
            "80",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pm.ok(&args);

    // Published by cnet: a client reaches it with its own source, through
    // cnet's DNAT, and `cnet port` shows the mapping podman asked for.
    let client = inst.topo.clients[0].name.clone();
    let to = format!("{}:8081", addr::host_uplink(0));
    let (r, dnat) = inst.counted("dnat", || {
        retry(|| tcp_request(&client, &to, "podman")).unwrap()
    });
    assert_eq!(seen_source(&r), addr::client(0), "{r}");
    assert!(dnat >= 1, "translated by cnet's datapath");
    let ps = inst.ok(&["ps", "--format", "{{.Names}}"]);
    let cname = ps
        .lines()
        .find(|l| l.starts_with("cni-"))
        .unwrap_or_else(|| panic!("cnet ps lists podman's container: {ps}"))
        .to_string();
    assert_eq!(inst.ok(&["port", &cname]).trim(), "80/tcp -> 0.0.0.0:8081");
    assert_eq!(hash_len::<PortKey, PortValue>(&inst, maps::PORTS), 1);

    // podman rm -f: its DEL removes the interface, the map entries and
    // cnet's name for the namespace.
    pm.ok(&["rm", "-f", "-t", "0", &name]);
    assert!(
        !inst.ok(&["ps", "-a"]).contains("cni-"),
        "the CNI container is gone"
    );
    assert_eq!(hash_len::<PortKey, PortValue>(&inst, maps::PORTS), 0);
    assert_eq!(hash_len::<u32, Endpoint>(&inst, maps::ENDPOINTS), 0);
    let links = inst.topo.host.ip(&["-o", "link"]);
    assert!(!links.contains("veth"), "no veth left: {links}");
    assert!(
        !Path::new(&format!("/run/netns/{cname}")).exists(),
        "no namespace name left"
    );
}
