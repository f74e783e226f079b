//! A container image for the real runtimes (podman, dockerd): a root
//! filesystem with a static busybox, `cnet-testsrv` and the libraries it
//! links, as a tar to `podman import` / `docker import`.
use std::{path::Path, process::Command};

use crate::traffic::testsrv;

/// Builds the root filesystem under `dir/rootfs` and returns the tar's path.
pub fn rootfs_tar(dir: &Path) -> std::path::PathBuf {
    rootfs_tar_with(dir, &[])
}

/// [`rootfs_tar`] with more programs (and their libraries) at their paths.
pub fn rootfs_tar_with(dir: &Path, extra: &[&str]) -> std::path::PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs/bin");
    // iperf3 backs its buffers with a temporary file.
    std::fs::create_dir_all(rootfs.join("tmp")).expect("rootfs/tmp");
    std::fs::set_permissions(
        rootfs.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("chmod rootfs/tmp");
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copying busybox");
    for a in ["sh", "sleep", "cat", "nc"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).expect("busybox link");
    }
    let srv = testsrv();
    std::fs::copy(&srv, rootfs.join("testsrv")).expect("copying cnet-testsrv");
    let mut progs = vec![srv];
    for e in extra {
        let to = rootfs.join(e.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().expect("bin dir")).expect("bin dir");
        std::fs::copy(e, &to).unwrap_or_else(|err| panic!("copying {e}: {err}"));
        progs.push(e.to_string());
    }
    for p in &progs {
        let ldd = Command::new("ldd").arg(p).output().expect("ldd");
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let to = rootfs.join(lib.trim_start_matches('/'));
            if to.exists() {
                continue;
            }
            std::fs::create_dir_all(to.parent().expect("lib dir")).expect("lib dir");
            std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("copying {lib}: {e}"));
        }
    }
    let tar = dir.join("image.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .expect("tar");
    assert!(out.status.success(), "{out:?}");
    tar
}
