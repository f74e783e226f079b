//! `cnet stop|start|restart|kill|logs`: a container's command, as Docker's.
//! A stopped container keeps its namespace, address and published ports
//! (nothing listens, so connections are refused) until `cnet rm`; `start`
//! runs its command again in them.
use std::{
    io::{Read, Seek, SeekFrom, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    container,
    state::{self, Container, Paths, Phase},
};

/// A signal by Docker's names: `KILL`, `SIGKILL`, `9`, ...
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        ensure!((1..=64).contains(&n), "invalid signal: {s}");
        return Ok(n);
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Ok(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "ALRM" => libc::SIGALRM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        _ => bail!("invalid signal: {s}"),
    })
}

/// The container `r` names, as it is now.
fn current(paths: &Paths, r: &str) -> Result<Container> {
    let st = state::load_up(paths)?;
    let name = st.resolve(r)?;
    Ok(st.containers[&name].clone())
}

/// `cnet kill [-s SIGNAL]`: the signal to the container's command.
pub fn kill(paths: &Paths, r: &str, signal: i32) -> Result<()> {
    let c = current(paths, r)?;
    let pid = c.own_pid().filter(|_| c.running()).with_context(|| {
        format!(
            "Cannot kill container: {r}: Container {} is not running",
            c.id
        )
    })?;
    // SAFETY: kill(2) on the container's own command (its PID checked
    // against the recorded start time by `own_pid`).
    if unsafe { libc::kill(pid as i32, signal) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("Cannot kill container: {r}: signal {signal} to PID {pid}"));
    }
    Ok(())
}

/// Waits up to `timeout` for container `r`'s command to end.
fn wait_stopped(paths: &Paths, r: &str, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let c = current(paths, r)?;
        if !c.running() {
            // A detached command's end is complete once its waiter recorded
            // the exit code, a moment after the process is gone.
            let until = Instant::now() + Duration::from_secs(1);
            while c.detached && Instant::now() < until && current(paths, r)?.exit.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `cnet stop [-t SECONDS]`: SIGTERM, then SIGKILL to everything in the
/// container after the grace time. A stopped container is left as it is.
pub fn stop(paths: &Paths, r: &str, grace: Duration) -> Result<()> {
    let c = current(paths, r)?;
    if !c.running() {
        return Ok(());
    }
    if let Some(pid) = c.own_pid() {
        // SAFETY: kill(2) on the container's own command, checked by `own_pid`.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if wait_stopped(paths, r, grace)? {
        return Ok(());
    }
    container::kill_processes(&state::load_up(paths)?, &c)?;
    ensure!(
        wait_stopped(paths, r, Duration::from_secs(5))?,
        "container {r} did not stop after SIGKILL"
    );
    Ok(())
}

/// `cnet start`: the command of a stopped container again, detached, in the
/// container's namespace with its address and ports. A running one is left.
pub fn start(paths: &Paths, r: &str) -> Result<()> {
    let (_lock, mut st) = crate::open(paths)?;
    let name = st.resolve(r)?;
    let mut c = st.containers[&name].clone();
    if c.running() {
        return Ok(());
    }
    ensure!(
        c.phase == Phase::Ready,
        "container {name} is being created or removed"
    );
    if let Some(t) = c.network.strip_prefix("container:") {
        ensure!(
            st.containers.get(t).is_some_and(Container::running),
            "cannot join network of a non running container: {t}"
        );
    }
    let (_child, pid) = container::start(paths, &c, true)?;
    c.pid = Some(pid);
    c.pid_start = state::proc_start(pid);
    c.exit = None;
    c.detached = true;
    st.containers.insert(name, c);
    state::save(paths, &st)
}

/// The log file of container `r` (a detached command's stdout and stderr).
pub fn log_path(paths: &Paths, r: &str) -> Result<PathBuf> {
    let c = current(paths, r)?;
    let p = paths.logs().join(format!("{}.log", c.name));
    ensure!(
        p.exists(),
        "container {} has no log (only detached commands are logged)",
        c.name
    );
    Ok(p)
}

/// `cnet logs [--tail N] [-f]`: writes the log to `out`; with `follow`,
/// keeps writing what the command adds until it exits.
pub fn logs(
    paths: &Paths,
    r: &str,
    tail: Option<usize>,
    follow: bool,
    out: &mut impl Write,
) -> Result<()> {
    let p = log_path(paths, r)?;
    let mut f = std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
    let mut text = Vec::new();
    f.read_to_end(&mut text)
        .with_context(|| format!("reading {}", p.display()))?;
    let start = match tail {
        Some(0) => text.len(),
        Some(n) => {
            let body = text.strip_suffix(b"\n").unwrap_or(&text);
            body.iter()
                .enumerate()
                .rev()
                .filter(|(_, b)| **b == b'\n')
                .nth(n - 1)
                .map_or(0, |(i, _)| i + 1)
        }
        None => 0,
    };
    out.write_all(&text[start..])?;
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut pos = text.len() as u64;
    loop {
        let running = current(paths, r).map(|c| c.running()).unwrap_or(false);
        f.seek(SeekFrom::Start(pos))?;
        let mut more = Vec::new();
        f.read_to_end(&mut more)?;
        if !more.is_empty() {
            pos += more.len() as u64;
            out.write_all(&more)?;
            out.flush()?;
        } else if !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn signals_by_dockers_names() {
        assert_eq!(parse_signal("KILL").ok(), Some(libc::SIGKILL));
        assert_eq!(parse_signal("sigterm").ok(), Some(libc::SIGTERM));
        assert_eq!(parse_signal("10").ok(), Some(10));
        let e = parse_signal("FROB").unwrap_err();
        assert_eq!(e.to_string(), "invalid signal: FROB");
        assert!(parse_signal("0").is_err());
    }
}
