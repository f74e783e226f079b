//! The hosts and resolv.conf files of containers (`/etc/netns/<name>/`).
use std::fs;

use anyhow::{Context, Result};

use crate::{
    state::{Container, Phase, State},
    undo::Undo,
};

/// The `ip netns` convention: `/etc/netns/<name>/hosts` is what `ip netns
/// exec` shows as /etc/hosts; cnet bind-mounts it for the command too.
pub fn hosts_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns").join(name).join("hosts")
}

/// The container's /etc/hosts: itself, its links, `--add-host` entries and,
/// on user-defined networks, every container of those networks by name and
/// alias (Docker's embedded DNS, as a hosts file kept in sync).
pub(crate) fn hosts_text(state: &State, c: &Container) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if c.on_bridge() {
        text.push_str(&format!("{}\t{} {}\n", c.ip, c.hostname, c.name));
    } else {
        text.push_str(&format!("127.0.1.1\t{} {}\n", c.hostname, c.name));
    }
    for (target, alias) in &c.links {
        if let Some(t) = state.containers.get(target) {
            if alias == target {
                text.push_str(&format!("{}\t{target}\n", t.ip));
            } else {
                text.push_str(&format!("{}\t{alias} {target}\n", t.ip));
            }
        }
    }
    let mut nets: Vec<&str> = vec![c.network.as_str()];
    nets.extend(c.extra.iter().map(|a| a.network.as_str()));
    for n in nets {
        if !state.networks.contains_key(n) {
            continue;
        }
        for (ip, name, aliases) in state.members(n) {
            if name != c.name {
                text.push_str(
                    &format!("{ip}\t{name} {}\n", aliases.join(" ")).replace(" \n", "\n"),
                );
            }
        }
    }
    for (h, ip) in &c.add_hosts {
        text.push_str(&format!("{ip}\t{h}\n"));
    }
    text
}

pub(crate) fn write_hosts(state: &State, c: &Container, undo: &mut Undo) -> Result<()> {
    let path = hosts_path(&c.name);
    let dir = path
        .parent()
        .context("hosts path has a parent")?
        .to_path_buf();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let d = dir.clone();
    undo.push("remove hosts file", move || {
        fs::remove_dir_all(&d).context("removing hosts dir")
    });
    // Written in place (never renamed over): the running command sees this
    // very inode through its bind mount.
    fs::write(&path, hosts_text(state, c))
        .with_context(|| format!("writing {}", path.display()))?;
    if let Some(text) = resolv_conf(state, c) {
        let resolv = dir.join("resolv.conf");
        fs::write(&resolv, text).with_context(|| format!("writing {}", resolv.display()))?;
    }
    Ok(())
}

/// The container's resolv.conf, when it differs from the host's: its
/// nameservers (`--dns`, else daemon.json's, else the host's that are not
/// loopback addresses, as Docker filters them), `search` and `options`.
pub(crate) fn resolv_conf(state: &State, c: &Container) -> Option<String> {
    let dns = if c.dns.is_empty() { &state.dns } else { &c.dns };
    if dns.is_empty() && c.dns_search.is_empty() && c.dns_options.is_empty() {
        return None;
    }
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut text = String::new();
    if dns.is_empty() {
        for l in host.lines() {
            let mut w = l.split_whitespace();
            if w.next() == Some("nameserver")
                && let Some(a) = w.next()
                && a.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| !ip.is_loopback())
            {
                text.push_str(&format!("nameserver {a}\n"));
            }
        }
    } else {
        text.extend(dns.iter().map(|d| format!("nameserver {d}\n")));
    }
    if !c.dns_search.is_empty() {
        text.push_str(&format!("search {}\n", c.dns_search.join(" ")));
    }
    if !c.dns_options.is_empty() {
        text.push_str(&format!("options {}\n", c.dns_options.join(" ")));
    }
    Some(text)
}

/// Rewrites the hosts file of every container on a user-defined network, so
/// names and aliases resolve as containers come and go.
pub fn sync_hosts(state: &State) {
    for c in state
        .containers
        .values()
        .filter(|c| c.owns_netns() && c.phase == Phase::Ready)
    {
        let on_user_net = state.networks.contains_key(&c.network)
            || c.extra
                .iter()
                .any(|a| state.networks.contains_key(&a.network));
        let path = hosts_path(&c.name);
        if on_user_net
            && path.exists()
            && let Err(e) = fs::write(&path, hosts_text(state, c))
        {
            log::warn!("updating {}: {e}", path.display());
        }
    }
}
