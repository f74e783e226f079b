//! Removing containers and repairing after a crash: teardown, conntrack and allowance purges, reconcile.
use std::{fs, net::Ipv4Addr};

use anyhow::{Context, Result, bail};
use cnet_common::{
    addr_key,
    maps::{self, AllowKey, CtEntry, CtKey},
};

use crate::{
    host::netns,
    loader, net,
    state::{Paths, Phase, State},
    undo::transaction,
};

use super::*;

/// Finishes what a killed cnet left half-done: containers still being created
/// or removed are torn down (every step of teardown tolerates what is already
/// gone). Returns whether the state changed.
pub fn recover(paths: &Paths, state: &mut State) -> bool {
    // Interfaces of `network connect`/`disconnect` left half-done.
    let mut changed = false;
    for c in state.containers.values_mut() {
        let (done, unfinished): (Vec<_>, Vec<_>) =
            c.extra.drain(..).partition(|a| a.phase == Phase::Ready);
        for a in &unfinished {
            log::warn!(
                "finishing the interrupted connect/disconnect of {} to {}",
                c.name,
                a.network
            );
            if let Err(e) = detach_interface(paths, &c.name, a) {
                log::warn!("{e:#}");
            }
            changed = true;
        }
        c.extra = done;
    }
    changed | recover_containers(paths, state)
}

pub(crate) fn recover_containers(paths: &Paths, state: &mut State) -> bool {
    let unfinished: Vec<String> = state
        .containers
        .values()
        .filter(|c| c.phase != Phase::Ready)
        .map(|c| c.name.clone())
        .collect();
    for name in &unfinished {
        log::warn!("finishing the interrupted creation or removal of container {name}");
        if let Err(e) = teardown(paths, state, name) {
            log::warn!("{e:#}");
        }
    }
    !unfinished.is_empty()
}

/// Removes every trace of container `name`: processes, map entries,
/// conntrack entries, link, veth, namespace, state. Continues past failures
/// and reports them together.
pub fn teardown(paths: &Paths, state: &mut State, name: &str) -> Result<()> {
    let c = state
        .containers
        .get(name)
        .cloned()
        .with_context(|| format!("no such container: {name}"))?;
    let mut errors: Vec<String> = Vec::new();
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            errors.push(format!("{e:#}"));
        }
    };
    note(kill_processes(state, &c));
    crate::crash::point("rm:killed");
    // After a wipe of the kernel side there are no maps left to clean.
    let maps_present = paths.map_pin(maps::PORTS).exists();
    for m in c.ports.iter().filter(|_| maps_present) {
        note(unpublish(paths, m, c.ip));
    }
    crate::crash::point("rm:unpublished");
    for a in c.interfaces() {
        note(detach_interface(paths, &c.name, &a));
    }
    crate::crash::point("rm:detached");
    if c.owns_netns() {
        let hosts_dir = hosts_path(&c.name)
            .parent()
            .map(std::path::Path::to_path_buf);
        if let Some(d) = hosts_dir.filter(|d| d.exists()) {
            note(fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display())));
        }
        note(netns::del(&c.name).map_err(Into::into));
    }
    if !errors.is_empty() {
        // Kept, marked as being removed: the next command retries what is
        // left instead of forgetting it.
        if let Some(c) = state.containers.get_mut(name) {
            c.phase = Phase::Removing;
        }
        bail!("removing container {name}: {}", errors.join("; "));
    }
    let _ = fs::remove_file(paths.exits().join(&c.id));
    state.containers.remove(name);
    sync_hosts(state);
    Ok(())
}

/// Deletes every conntrack entry that involves `ip`; returns how many.
pub fn purge_conntrack(paths: &Paths, ip: Ipv4Addr) -> Result<usize> {
    let a = addr_key(ip.octets());
    let mut ct = loader::hash::<CtKey, CtEntry>(paths, maps::CONNTRACK)?;
    let doomed: Vec<CtKey> = ct
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(k, e)| k.saddr == a || k.daddr == a || e.saddr == a || e.daddr == a)
        .map(|(k, _)| k)
        .collect();
    for k in &doomed {
        let _ = ct.remove(k);
    }
    Ok(doomed.len())
}

/// Deletes every link allowance that involves `ip` (either end of a link).
pub(crate) fn purge_allow(paths: &Paths, ip: Ipv4Addr) -> Result<()> {
    let a = addr_key(ip.octets());
    let mut allow = loader::hash::<AllowKey, u32>(paths, maps::ALLOW)?;
    let doomed: Vec<AllowKey> = allow
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| k.saddr == a || k.daddr == a)
        .collect();
    for k in &doomed {
        let _ = allow.remove(k);
    }
    Ok(())
}

/// After a restart or crash: containers whose namespace is gone are dropped;
/// the others get their link and map entries back.
pub fn reconcile(paths: &Paths, state: &mut State) -> Result<()> {
    let names: Vec<String> = state.containers.keys().cloned().collect();
    for name in names {
        let Some(c) = state.containers.get(&name).cloned() else {
            continue;
        };
        if !c.on_bridge() {
            continue;
        }
        if !net::netns_exists(&name) || !net::link_exists(&c.veth) {
            log::warn!("container {name} lost its namespace or veth: removing it");
            let _ = teardown(paths, state, &name);
            continue;
        }
        let view = state.clone();
        transaction(|undo| {
            for a in &c.interfaces() {
                let net_id = view
                    .net(&a.network)
                    .map(|v| v.net_id)
                    .with_context(|| format!("network {} not found", a.network))?;
                endpoint_entry(paths, a, net_id, undo)?;
            }
            for m in &c.ports {
                publish(paths, m, c.ip)?;
            }
            allow_links(paths, &view, &c, undo)
        })
        .with_context(|| format!("restoring container {name}"))?;
    }
    Ok(())
}
