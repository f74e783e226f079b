//! The container's processes: starting its command (and the detached waiter), signalling and killing them.
use std::{
    fs::{self, File},
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    net,
    state::{Container, Paths, State},
};

use super::*;

/// Starts the container's command inside its namespace. Detached processes
/// get their own session and log to `<root>/logs/<name>.log`.
///
/// A detached command is started by a waiter process forked from cnet (no
/// exec): it stays outside the container's namespaces, in its own session,
/// waits for the command and writes its exit code to `<root>/exit/<id>`
/// (`State.ExitCode`, `Exited (N)`). Returns the process to reap (the
/// waiter, or the command in the foreground) and the command's PID.
pub fn start(paths: &Paths, c: &Container, detach: bool) -> Result<(std::process::Child, u32)> {
    // The namespace to join: its own, the target's (container:NAME), or none (host).
    let ns_name = match c.network.strip_prefix("container:") {
        Some(t) => Some(t.to_string()),
        None if c.network == "host" => None,
        None => Some(c.name.clone()),
    };
    let ns = match &ns_name {
        Some(n) => Some(
            File::open(format!("/run/netns/{n}")).with_context(|| format!("opening netns {n}"))?,
        ),
        None => None,
    };
    let fd = ns.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
    let hostname = std::ffi::CString::new(c.hostname.clone()).context("hostname")?;
    let own_uts = c.owns_netns();
    let mut cmd = Command::new(&c.cmd[0]);
    cmd.args(&c.cmd[1..]);
    cmd.envs(c.env.iter().map(|(k, v)| (k, v)));
    cmd.envs(c.user_env.iter().map(|(k, v)| (k, v)));
    // `ip netns exec` semantics: /etc/netns/<name>/FILE is bind-mounted over /etc/FILE.
    let mut binds: Vec<(std::ffi::CString, std::ffi::CString)> = Vec::new();
    let etc = hosts_path(ns_name.as_deref().unwrap_or("-"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    for f in ["hosts", "resolv.conf"] {
        let src = etc.join(f);
        if src.exists() {
            binds.push((
                std::ffi::CString::new(src.as_os_str().as_encoded_bytes())
                    .context("bind source")?,
                std::ffi::CString::new(format!("/etc/{f}")).context("bind target")?,
            ));
        }
    }
    let bpf =
        std::ffi::CString::new(paths.bpf().as_os_str().as_encoded_bytes()).context("pin path")?;
    if detach {
        fs::create_dir_all(paths.logs())
            .with_context(|| format!("creating {}", paths.logs().display()))?;
        let log_path = paths.logs().join(format!("{}.log", c.name));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
    }
    let waiter = if detach {
        fs::create_dir_all(paths.exits())
            .with_context(|| format!("creating {}", paths.exits().display()))?;
        let exit_path = paths.exits().join(&c.id);
        let _ = fs::remove_file(&exit_path);
        // `--rm`: once the command ended, the waiter becomes `cnet rm -f ID`.
        let remove = c.auto_remove.then(|| {
            [
                "cnet".into(),
                "--root".into(),
                paths.root.as_os_str().to_owned(),
                "rm".into(),
                "-f".into(),
                c.id.clone().into(),
            ]
        });
        Some(Waiter::new(&exit_path, remove)?)
    } else {
        None
    };
    let waiter_fds = waiter.as_ref().map(Waiter::child_side);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(w) = &waiter_fds {
                // From here on this is the command; its parent waits for it.
                w.fork_command()?;
            }
            if fd >= 0 && libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if own_uts {
                // Its own hostname, as a Docker container has.
                if libc::unshare(libc::CLONE_NEWUTS) != 0
                    || libc::sethostname(hostname.as_ptr(), hostname.as_bytes().len()) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if detach {
                libc::setsid();
            }
            // A foreground cnet ignores ^C from before the container exists
            // (see `crate::run`); the command itself gets it as usual.
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            if !binds.is_empty() {
                // A private mount namespace where /etc/hosts (and resolv.conf) are the container's.
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let root = c"/";
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for (src, dst) in &binds {
                    let flags = libc::MS_BIND;
                    if libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        flags,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // The copy of the instance's bpffs mount would keep every pin
                // (and so the dataplane) alive past `cnet down` or a wipe.
                libc::umount2(bpf.as_ptr(), libc::MNT_DETACH);
            }
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        // Docker's exit codes: 127 when the command is not found, 126 when
        // it cannot be invoked.
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => 127,
            _ => 126,
        };
        anyhow::Error::new(CommandError {
            code,
            msg: format!("starting {:?} in container {}: {e}", c.cmd, c.name),
        })
    })?;
    drop(ns);
    let pid = match waiter {
        Some(w) => w
            .command_pid()
            .with_context(|| format!("starting {:?} in container {}", c.cmd, c.name))?,
        None => child.id(),
    };
    Ok((child, pid))
}

/// The parent side of a detached command's waiter: the exit file's path and
/// a pipe on which the waiter sends the command's PID.
pub(crate) struct Waiter {
    exit_path: std::ffi::CString,
    remove: Option<Vec<std::ffi::CString>>,
    pid_r: std::os::fd::OwnedFd,
    pid_w: std::os::fd::OwnedFd,
}

/// What the forked child needs (raw values: used between fork and exec).
pub(crate) struct WaiterFds {
    exit_path: std::ffi::CString,
    remove: Option<Vec<std::ffi::CString>>,
    pid_w: i32,
}

impl Waiter {
    fn new(exit_path: &std::path::Path, remove: Option<[std::ffi::OsString; 6]>) -> Result<Self> {
        let exit_path = std::ffi::CString::new(exit_path.as_os_str().as_encoded_bytes())
            .with_context(|| format!("exit file path {}", exit_path.display()))?;
        let remove = remove
            .map(|args| {
                args.iter()
                    .map(|a| std::ffi::CString::new(a.as_encoded_bytes()))
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .transpose()
            .context("an argument of the --rm command")?;
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds that we own from here on.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error()).context("creating a pipe");
        }
        use std::os::fd::FromRawFd;
        // SAFETY: fresh fds from pipe2, owned by nothing else.
        let (pid_r, pid_w) = unsafe {
            (
                std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        };
        Ok(Self {
            exit_path,
            remove,
            pid_r,
            pid_w,
        })
    }

    fn child_side(&self) -> WaiterFds {
        WaiterFds {
            exit_path: self.exit_path.clone(),
            remove: self.remove.clone(),
            pid_w: self.pid_w.as_raw_fd(),
        }
    }

    /// The command's PID, once the waiter sent it (after spawn returned).
    fn command_pid(self) -> Result<u32> {
        drop(self.pid_w);
        let mut f = File::from(self.pid_r);
        let mut buf = [0u8; 4];
        std::io::Read::read_exact(&mut f, &mut buf)
            .context("the waiter process ended before sending the command's PID")?;
        Ok(u32::from_ne_bytes(buf))
    }
}

impl WaiterFds {
    /// In the child between fork and exec: forks again. The grandchild
    /// returns (and goes on to exec the command, in a session of its own);
    /// this process becomes the waiter and never returns.
    ///
    /// # Safety
    /// Only async-signal-safe calls: this runs in a forked child.
    unsafe fn fork_command(&self) -> std::io::Result<()> {
        // SAFETY: async-signal-safe calls only, in a single-threaded child.
        unsafe {
            let pid = libc::fork();
            if pid < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if pid == 0 {
                libc::setsid();
                return Ok(());
            }
            libc::setsid();
            for sig in [
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGHUP,
                libc::SIGTERM,
                libc::SIGPIPE,
            ] {
                libc::signal(sig, libc::SIG_IGN);
            }
            let bytes = (pid as u32).to_ne_bytes();
            libc::write(self.pid_w, bytes.as_ptr().cast(), bytes.len());
            // Every inherited fd closed: the log, and std's exec-status pipe,
            // whose reader (cnet) waits until every copy is closed.
            if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
                for fd in 0..1024 {
                    libc::close(fd);
                }
            }
            let mut status = 0;
            loop {
                let r = libc::waitpid(pid, &mut status, 0);
                if r == pid {
                    break;
                }
                if r < 0 && *libc::__errno_location() != libc::EINTR {
                    libc::_exit(1);
                }
            }
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            // The decimal code, formatted without allocating.
            let mut buf = [b'\n'; 4];
            let mut n = 3;
            let mut v = code.clamp(0, 255) as u8;
            loop {
                n -= 1;
                buf[n] = b'0' + v % 10;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            let fd = libc::open(
                self.exit_path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o644,
            );
            if fd >= 0 {
                libc::write(fd, buf[n..].as_ptr().cast(), 4 - n);
                libc::close(fd);
            }
            if let Some(args) = &self.remove {
                // `--rm`: stdio on /dev/null (cnet rm reports nothing anyone
                // reads), then this process becomes `cnet rm -f ID`.
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::dup2(null, 1);
                    libc::dup2(null, 2);
                }
                let mut argv: [*const libc::c_char; 7] = [std::ptr::null(); 7];
                for (slot, a) in argv.iter_mut().zip(args) {
                    *slot = a.as_ptr();
                }
                libc::execv(c"/proc/self/exe".as_ptr(), argv.as_ptr());
            }
            libc::_exit(0);
        }
    }
}

/// The session id of a process (field 6 of /proc/PID/stat).
pub(crate) fn session_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// SIGKILLs the session led by `pid` (a container without a namespace of its own).
/// SIGKILLs container `c`'s processes: everything in its namespace (but the
/// containers that joined it, which keep running without a network), or the
/// session of its command in host and `container:` modes.
pub fn kill_processes(state: &State, c: &Container) -> Result<()> {
    if c.cni.is_some() {
        // The runtime's processes: the runtime stops them, never cnet.
        return Ok(());
    }
    if c.owns_netns() {
        let joined: Vec<u32> = state
            .containers
            .values()
            .filter(|o| o.network == format!("container:{}", c.name))
            .filter_map(|o| o.own_pid())
            .collect();
        kill_all(&c.name, &joined)
    } else if let Some(pid) = c.own_pid() {
        kill_session(pid)
    } else {
        Ok(())
    }
}

pub(crate) fn kill_session(pid: u32) -> Result<()> {
    // SAFETY: kill(2) on the process group of a process cnet started in its own session,
    // and on the process itself for foreground ones.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
        libc::kill(pid as i32, libc::SIGKILL);
    }
    Ok(())
}

/// SIGKILLs every process in namespace `name` (but those in the sessions of
/// `spare`, containers that joined it) and waits (bounded) until they are gone.
pub(crate) fn kill_all(name: &str, spare: &[u32]) -> Result<()> {
    if !net::netns_exists(name) {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<u32> = net::netns_pids(name)
            .into_iter()
            .filter(|p| !spare.contains(p) && !session_of(*p).is_some_and(|s| spare.contains(&s)))
            .collect();
        if pids.is_empty() {
            return Ok(());
        }
        for pid in &pids {
            // SAFETY: plain kill(2) on a process inside the container's namespace.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        if Instant::now() > deadline {
            bail!("processes {pids:?} in container {name} did not exit after SIGKILL");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
