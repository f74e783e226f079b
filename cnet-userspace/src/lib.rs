//! cnet's control plane as a library: the CLI, the tests and the benchmark all
//! call these functions. Every command is a short transaction under the
//! instance's lock: validate, apply, roll back on failure.

pub mod cni;
pub mod config;
pub mod conntrack;
pub mod container;
pub mod crash;
pub mod daemon;
pub mod dlog;
pub mod docker_plugin;
pub mod ebpf;
pub mod error;
pub mod filter;
pub mod host;
pub mod ipam;
pub mod lifecycle;
pub mod listfilter;
pub mod loader;
pub mod net;
pub mod network;
pub mod observe;
pub mod portspec;
pub mod show;
pub mod state;
pub mod store;
pub mod template;
pub mod undo;
pub mod up;

use anyhow::{Context, Result};

use crate::state::{Lock, Paths};

/// `cnet run`: creates the container and starts its command. Detached, it
/// returns at once; in the foreground it waits for the command, removes the
/// container and returns the command's exit code.
pub fn run(paths: &Paths, opts: &container::RunOptions, detach: bool) -> Result<i32> {
    if !detach {
        // Like system(3): from before the container is created, the
        // terminal's ^C goes to the command and cnet cleans up after it, so
        // an interrupt between creation and the wait leaves nothing behind.
        // SAFETY: setting signal dispositions of this process.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        }
    }
    let (name, mut child) = create_and_start(paths, opts, detach)?;
    if detach {
        // As `docker run -d`: the full container id.
        let st = state::load_up(paths)?;
        let id = st
            .containers
            .get(&name)
            .map_or(name.as_str(), |c| c.id.as_str());
        println!("{id}");
        return Ok(0);
    }
    wait_foreground(paths, &name, &mut child)
}

/// Creates a container and starts its command detached; returns its name and
/// the command's process (which the caller may reap).
pub fn run_detached(
    paths: &Paths,
    opts: &container::RunOptions,
) -> Result<(String, std::process::Child)> {
    create_and_start(paths, opts, true)
}

fn create_and_start(
    paths: &Paths,
    opts: &container::RunOptions,
    detach: bool,
) -> Result<(String, std::process::Child)> {
    let (name, child) = {
        let (_lock, mut st) = open(paths)?;
        let mut c = container::plan(&st, opts)?;
        let name = c.name.clone();
        // Journal first: a kill -9 from here on leaves an entry the next command finishes.
        st.containers.insert(name.clone(), c.clone());
        state::save(paths, &st)?;
        crash::point("run:journaled");
        let (child, pid) = match container::build(paths, &st, &c)
            .and_then(|()| container::start(paths, &c, detach))
        {
            Ok(started) => started,
            Err(e) => {
                let _ = container::teardown(paths, &mut st, &name);
                state::save(paths, &st)?;
                return Err(e);
            }
        };
        crash::point("run:started");
        c.pid = Some(pid);
        c.pid_start = state::proc_start(pid);
        c.detached = detach;
        c.phase = state::Phase::Ready;
        st.containers.insert(name.clone(), c);
        if let Err(e) = state::save(paths, &st) {
            let _ = container::teardown(paths, &mut st, &name);
            return Err(e);
        }
        container::sync_hosts(&st);
        (name, child)
    };
    Ok((name, child))
}

fn wait_foreground(paths: &Paths, name: &str, child: &mut std::process::Child) -> Result<i32> {
    let name = name.to_string();
    let status = child
        .wait()
        .with_context(|| format!("waiting for container {name}"))?;
    let _lock = Lock::take(paths)?;
    let mut st = state::load_up(paths)?;
    if st.containers.contains_key(&name) {
        container::teardown(paths, &mut st, &name)?;
        state::save(paths, &st)?;
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Builds a planned container that runs no command of cnet's (a CNI or
/// Docker endpoint, whose processes are the runtime's): journaled as being
/// created, built, marked ready, hosts files synced; torn down again when a
/// step fails. The caller holds the instance lock (see [`open`]).
pub fn create_attached(
    paths: &Paths,
    st: &mut state::State,
    mut c: state::Container,
) -> Result<state::Container> {
    let name = c.name.clone();
    st.containers.insert(name.clone(), c.clone());
    state::save(paths, st)?;
    if let Err(e) = container::build(paths, st, &c) {
        let _ = container::teardown(paths, st, &name);
        let _ = state::save(paths, st);
        return Err(e);
    }
    c.phase = state::Phase::Ready;
    st.containers.insert(name.clone(), c.clone());
    if let Err(e) = state::save(paths, st) {
        let _ = container::teardown(paths, st, &name);
        return Err(e);
    }
    container::sync_hosts(st);
    Ok(c)
}

/// Takes the instance lock, loads the state and finishes any creation or
/// removal a killed cnet left half-done. Every mutating command starts here.
pub fn open(paths: &Paths) -> Result<(Lock, state::State)> {
    let lock = Lock::take(paths)?;
    let mut st = state::load_up(paths)?;
    let c = container::recover(paths, &mut st);
    let n = network::recover(paths, &mut st);
    let p = recover_pending(paths, &mut st)?;
    if c || n || p {
        state::save(paths, &st)?;
    }
    up::sync_interfaces(paths, &st)?;
    Ok((lock, st))
}

/// Finishes or undoes the journaled kernel-side changes of a killed command.
pub(crate) fn recover_pending(paths: &Paths, st: &mut state::State) -> Result<bool> {
    if st.pending.is_empty() {
        return Ok(false);
    }
    for p in std::mem::take(&mut st.pending) {
        match p {
            state::Pending::Ports {
                container,
                ip,
                mappings,
            } => {
                log::warn!("finishing an interrupted port change of container {container}");
                let kept = st
                    .containers
                    .get(&container)
                    .map(|c| c.ports.clone())
                    .unwrap_or_default();
                for m in mappings.iter().filter(|m| !kept.contains(m)) {
                    container::unpublish_if(paths, m, ip)?;
                    container::purge_port_conntrack(paths, ip, m.container_port, m.proto.number())?;
                }
            }
            state::Pending::Filters => {
                log::warn!("finishing an interrupted filter change");
                filter::sync(paths, st)?;
            }
        }
    }
    Ok(true)
}

/// `cnet rm [-f] NAME|ID...`, all or nothing: every container is checked
/// before anything is removed (the daemon's single-container route).
pub fn rm(paths: &Paths, refs: &[String], force: bool) -> Result<()> {
    let (_lock, mut st) = open(paths)?;
    let mut names = Vec::new();
    for r in refs {
        let n = st.resolve(r)?;
        let c = &st.containers[&n];
        if c.running() && !force {
            return Err(error::conflict(format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                c.id
            )));
        }
        names.push(n);
    }
    remove_names(paths, &mut st, &names)
        .into_iter()
        .find_map(|(_, e)| e)
        .map_or(Ok(()), Err)
}

/// Journals `names` as removing, tears each down, saves; returns each name
/// with the error its teardown met, if any.
fn remove_names(
    paths: &Paths,
    st: &mut state::State,
    names: &[String],
) -> Vec<(String, Option<anyhow::Error>)> {
    for n in names {
        if let Some(c) = st.containers.get_mut(n) {
            c.phase = state::Phase::Removing;
        }
    }
    if let Err(e) = state::save(paths, st) {
        return names
            .iter()
            .map(|n| (n.clone(), Some(anyhow::anyhow!("{e:#}"))))
            .collect();
    }
    crash::point("rm:journaled");
    let mut out = Vec::new();
    for n in names {
        let r = container::teardown(paths, st, n).err();
        out.push((n.clone(), r));
    }
    if let Err(e) = state::save(paths, st) {
        out.push((String::new(), Some(e)));
    }
    out
}

/// `docker rm` as Docker does it: each container on its own; the ones that
/// can go are removed, each failure is reported. Returns, per reference,
/// `Ok(())` or why it stayed.
pub fn rm_each(paths: &Paths, refs: &[String], force: bool) -> Result<Vec<Result<()>>> {
    let (_lock, mut st) = open(paths)?;
    let mut out = Vec::new();
    let mut names = Vec::new();
    for r in refs {
        match st.resolve(r) {
            Ok(n) if st.containers[&n].running() && !force => out.push(Err(error::conflict(format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                st.containers[&n].id
            )))),
            Ok(n) => {
                names.push(n);
                out.push(Ok(()));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    let removed = remove_names(paths, &mut st, &names);
    for (n, e) in removed {
        let Some(e) = e else { continue };
        match refs
            .iter()
            .zip(out.iter())
            .position(|(r, o)| o.is_ok() && (r == &n || st.resolve(r).ok().as_deref() == Some(&n)))
        {
            Some(i) => out[i] = Err(e),
            None => return Err(e),
        }
    }
    Ok(out)
}

/// `cnet port add NAME SPEC`: publishes more ports of a running container,
/// live (Docker cannot: moby#22133). Same forms and checks as `run -p`.
pub fn port_add(paths: &Paths, name: &str, spec: &str) -> Result<Vec<portspec::PortMapping>> {
    let (_lock, mut st) = open(paths)?;
    let resolved = st.resolve(name)?;
    let name = resolved.as_str();
    let ip = st
        .containers
        .get(name)
        .map(|c| c.ip)
        .with_context(|| format!("no such container: {name}"))?;
    let opts = container::RunOptions {
        publish: vec![spec.to_string()],
        ..Default::default()
    };
    let (mappings, exposed) = container::plan_ports(&st, &opts)?;
    // Journal first: a crash from here on is undone by the next command.
    st.pending.push(state::Pending::Ports {
        container: name.to_string(),
        ip,
        mappings: mappings.clone(),
    });
    state::save(paths, &st)?;
    crash::point("port-add:journaled");
    undo::transaction(|undo| {
        for m in &mappings {
            container::publish(paths, m, ip)?;
            let (p, m, ip) = (paths.clone(), m.clone(), ip);
            undo.push("unpublish", move || container::unpublish(&p, &m, ip));
        }
        crash::point("port-add:published");
        let entry = st.containers.get_mut(name).context("container vanished")?;
        entry.ports.extend(mappings.iter().cloned());
        if exposed.len() <= 16 {
            for e in exposed {
                if let Err(at) = entry.exposed.binary_search(&e) {
                    entry.exposed.insert(at, e);
                }
            }
        } else {
            entry.exposed.extend(exposed);
            entry.exposed.sort();
            entry.exposed.dedup();
        }
        st.pending.clear();
        state::save(paths, &st)
    })
    .inspect_err(|_| {
        st.pending.clear();
        let _ = state::save(paths, &st);
    })?;
    Ok(mappings)
}

/// `cnet port rm NAME SPEC`: unpublishes the mappings SPEC names (its container
/// ports, and its host address and ports when given) and purges their
/// conntrack entries, live.
pub fn port_rm(paths: &Paths, name: &str, spec: &str) -> Result<Vec<portspec::PortMapping>> {
    let (_lock, mut st) = open(paths)?;
    let resolved = st.resolve(name)?;
    let name = resolved.as_str();
    let s: portspec::PublishSpec = spec.parse()?;
    let c = st
        .containers
        .get_mut(name)
        .with_context(|| format!("no such container: {name}"))?;
    let (gone, kept): (Vec<_>, Vec<_>) = c.ports.iter().cloned().partition(|m| {
        m.proto == s.proto
            && s.container.ports().any(|p| p == m.container_port)
            && s.host.is_none_or(|h| h.ports().any(|p| p == m.host_port))
            && (s.host_ip.is_none() || s.host_ip == m.host_ip)
    });
    if gone.is_empty() {
        anyhow::bail!("container {name} has no published port matching {spec:?}");
    }
    let ip = c.ip;
    c.ports = kept;
    st.pending.push(state::Pending::Ports {
        container: name.to_string(),
        ip,
        mappings: gone.clone(),
    });
    state::save(paths, &st)?;
    crash::point("port-rm:journaled");
    for m in &gone {
        container::unpublish(paths, m, ip)?;
        container::purge_port_conntrack(paths, ip, m.container_port, m.proto.number())?;
    }
    crash::point("port-rm:unpublished");
    st.pending.clear();
    state::save(paths, &st)?;
    Ok(gone)
}

#[cfg(test)]
mod tests {
    /// cnet runs no program but the container's own command: links,
    /// namespaces, mounts and times go through the kernel's interfaces.
    #[test]
    fn no_process_is_spawned_but_the_containers_command() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut spawns = Vec::new();
        let mut dirs = vec![src];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).expect("src dir") {
                let p = e.expect("dir entry").path();
                if p.is_dir() {
                    dirs.push(p);
                    continue;
                }
                let text = std::fs::read_to_string(&p).expect("source file");
                // Unit tests (this one included) are not cnet's code paths.
                let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
                for (i, line) in code.lines().enumerate() {
                    let l = line.trim_start();
                    if l.starts_with("//") {
                        continue;
                    }
                    for needle in ["Command::new(", "process::Command", "libc::exec"] {
                        let hit = l.match_indices(needle).any(|(at, _)| {
                            !l[at + needle.len()..]
                                .starts_with(|c: char| c.is_alphanumeric() || c == '_')
                        });
                        if hit {
                            spawns.push(format!("{}:{}: {l}", p.display(), i + 1));
                        }
                    }
                }
            }
        }
        // The container's command (container::start) and, for `run -d --rm`,
        // the waiter becoming `cnet rm` once the command has exited.
        let allowed = [
            "let mut cmd = Command::new(&c.cmd[0]);",
            "libc::execv(c\"/proc/self/exe\".as_ptr(), argv.as_ptr());",
        ];
        let unexpected: Vec<&String> = spawns
            .iter()
            .filter(|s| !allowed.iter().any(|a| s.ends_with(a)))
            .collect();
        assert!(unexpected.is_empty(), "process spawns: {unexpected:#?}");
    }
}
