//! The real dockerd for tests and the benchmark: started in a throwaway
//! host namespace with private data, exec and pid paths, stopped (SIGTERM,
//! by PID) and cleaned up on drop; and cnet's Docker plugin daemon.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{cnet::Instance, netns::unique_name};

pub struct Docker {
    pub dir: PathBuf,
    dockerd: Child,
    /// /etc/docker/key.json is dockerd 20.10's trust key, written there
    /// whatever the flags: removed again when the test made it.
    made_key: bool,
}

impl Docker {
    /// dockerd with cnet's plugin in mind: no iptables, no bridge.
    pub fn start(host_ns: &str) -> Self {
        Self::start_with(
            host_ns,
            &[
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--userland-proxy=false",
            ],
        )
    }

    /// dockerd with `flags` (e.g. Docker's own defaults: none).
    pub fn start_with(host_ns: &str, flags: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("cnet-docker-{}", unique_name()));
        std::fs::create_dir_all(&dir).unwrap();
        let made_key = !Path::new("/etc/docker/key.json").exists();
        let d = |s: &str| dir.join(s).to_string_lossy().into_owned();
        let dockerd = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{host_ns}"))
            .arg("dockerd")
            .args(["--data-root", &d("data"), "--exec-root", &d("exec")])
            .args([
                "--pidfile",
                &d("pid"),
                "-H",
                &format!("unix://{}", d("docker.sock")),
            ])
            .args(["--storage-driver", "vfs"])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dockerd.log")).unwrap())
            .spawn()
            .unwrap();
        let me = Self {
            dir,
            dockerd,
            made_key,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                me.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.join("docker.sock").display()),
            )
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", "-v", id]);
        }
        // SAFETY: SIGTERM to the dockerd this test started (its own child).
        unsafe { libc::kill(self.dockerd.id() as i32, libc::SIGTERM) };
        let _ = self.dockerd.wait();
        crate::netns::unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.made_key {
            let _ = std::fs::remove_file("/etc/docker/key.json");
            let _ = std::fs::remove_dir("/etc/docker");
        }
    }
}

/// `cnet daemon --docker-plugin NAME`, stopped (SIGTERM, by PID) on drop.
pub struct Plugin {
    child: Child,
    socket: PathBuf,
}

impl Plugin {
    pub fn start(inst: &Instance, name: &str) -> Self {
        let socket = PathBuf::from(format!("/run/docker/plugins/{name}.sock"));
        let api = inst.root.join("api.sock");
        let child = inst
            .command(&[
                "daemon",
                "--socket",
                &api.to_string_lossy(),
                "--docker-plugin",
                name,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the plugin socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, socket }
    }

    pub fn stop(&mut self) {
        // SAFETY: SIGTERM to the daemon this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        assert!(!self.socket.exists(), "the plugin removes its socket");
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}
