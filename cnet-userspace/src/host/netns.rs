//! Named network namespaces as iproute2 keeps them: a bind mount of the
//! namespace on `/run/netns/NAME` (a shared mount, so the name shows in
//! other mount namespaces too). Created by a short-lived thread that
//! unshares its network namespace; entered by threads that setns into it
//! (setns changes only the calling thread).
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use super::{HostError, mount};

pub const DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Makes `/run/netns` a shared mount point (as `ip netns add` does).
fn prepare_dir() -> Result<(), HostError> {
    let dir = Path::new(DIR);
    std::fs::create_dir_all(dir).map_err(|e| HostError::io(format!("creating {DIR}"), e))?;
    let shared = libc::MS_SHARED | libc::MS_REC;
    if mount::mount("none", dir, None, shared).is_ok() {
        return Ok(());
    }
    // Not a mount point yet: bind it on itself, then share it.
    mount::mount(DIR, dir, None, libc::MS_BIND | libc::MS_REC)?;
    mount::mount("none", dir, None, shared)
}

/// The empty file a namespace is bind-mounted on; an existing one is a
/// name already taken.
fn mount_point(name: &str, p: &std::path::Path) -> Result<(), HostError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => HostError::Exists {
                what: "network namespace",
                name: name.to_string(),
            },
            _ => HostError::io(format!("creating {}", p.display()), e),
        })?;
    Ok(())
}

/// `ip netns add NAME`.
pub fn add(name: &str) -> Result<(), HostError> {
    prepare_dir()?;
    let p = path(name);
    mount_point(name, &p)?;
    let target = p.clone();
    let made = std::thread::spawn(move || -> Result<(), HostError> {
        // SAFETY: unshare affects only this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(HostError::io(
                "unsharing a network namespace",
                std::io::Error::last_os_error(),
            ));
        }
        mount::mount("/proc/thread-self/ns/net", &target, None, libc::MS_BIND)
    })
    .join()
    .map_err(|_| HostError::io("netns thread", std::io::Error::other("panicked")))?;
    if let Err(e) = made {
        let _ = std::fs::remove_file(&p);
        return Err(e);
    }
    Ok(())
}

/// Names an existing namespace (a runtime's `CNI_NETNS`): bind-mounts it
/// at `/run/netns/NAME`, as `ip netns attach` does.
pub fn adopt(name: &str, source: &std::path::Path) -> Result<(), HostError> {
    prepare_dir()?;
    let p = path(name);
    mount_point(name, &p)?;
    if let Err(e) = mount::mount(&source.to_string_lossy(), &p, None, libc::MS_BIND) {
        let _ = std::fs::remove_file(&p);
        return Err(e);
    }
    Ok(())
}

/// `ip netns del NAME`; a name already gone is not an error.
pub fn del(name: &str) -> Result<(), HostError> {
    let p = path(name);
    if !p.exists() {
        return Ok(());
    }
    let _ = mount::umount_detach(&p);
    std::fs::remove_file(&p).map_err(|e| HostError::io(format!("removing {}", p.display()), e))
}

/// Opens namespace `name` (for setns or a peer's IFLA_NET_NS_FD).
pub fn open(name: &str) -> Result<File, HostError> {
    File::open(path(name)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => HostError::NotFound {
            what: "network namespace",
            name: name.to_string(),
        },
        _ => HostError::io(format!("opening network namespace {name}"), e),
    })
}

/// Runs `f` on a short-lived thread inside namespace `name`.
pub fn within<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, HostError> {
    let ns = open(name)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid namespace fd; only this thread moves.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(HostError::io(
                    format!("joining network namespace {name}"),
                    std::io::Error::last_os_error(),
                ));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| {
            HostError::io(
                format!("thread in {name}"),
                std::io::Error::other("panicked"),
            )
        })?
    })
}

/// PIDs of the processes in namespace `name` (`ip netns pids`).
pub fn pids(name: &str) -> Vec<u32> {
    let Ok(want) = std::fs::metadata(path(name)) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == want.ino() && m.dev() == want.dev())
        })
        .collect()
}
