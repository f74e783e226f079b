//! `cnet up` and `cnet down`: the instance's bridge, programs, pins and hooks.
use std::{collections::BTreeMap, fs, path::PathBuf};

use anyhow::{Context, Result, bail};
use cnet_common::{
    addr_key,
    maps::{self, CONFIG_DEBUG, CONFIG_MASQUERADE, Config, MASQ_PORT_HI, MASQ_PORT_LO, Uplink},
};

use crate::{
    container,
    ipam::{self, Cidr},
    loader, net,
    state::{self, Lock, Paths, STATE_VERSION, State},
    undo::transaction,
};

pub const DEFAULT_BIP: &str = "172.17.0.1/16";
pub const DEFAULT_BRIDGE: &str = "cnet0";

#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    pub bip: Option<Cidr>,
    pub uplinks: Vec<String>,
    pub cgroup: Option<PathBuf>,
    /// Docker's `--ip-masq`; `None`: daemon.json's, else on.
    pub ip_masq: Option<bool>,
    /// Docker's `--icc`; `None` keeps the current setting (default on).
    pub icc: Option<bool>,
    /// Datapath debug logs; `None` keeps the current setting (default off).
    pub debug: Option<bool>,
    /// daemon.json; the options above override it.
    pub config: crate::config::DaemonConfig,
}

/// The cgroup v2 mount point, from /proc/mounts.
pub fn cgroup2_root() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .context("no cgroup v2 mount found: host-local access needs cgroup v2")
}

pub fn up(paths: &Paths, opts: &UpOptions) -> Result<()> {
    let _lock = Lock::take(paths)?;
    let existing = state::load(paths)?;
    let fresh = existing.is_none();
    let cfg = &opts.config;
    let want_bip = opts.bip.or(cfg.bip);
    let mut dropped_uplinks = Vec::new();
    let mut state = match existing {
        Some(mut s) => {
            if let Some(b) = want_bip
                && b != s.bip
            {
                bail!(
                    "cnet is already up with bip {}; `cnet down` before changing it to {b}",
                    s.bip
                );
            }
            if let Some(c) = &opts.cgroup
                && s.cgroup.as_ref() != Some(c)
            {
                bail!(
                    "cnet is already up with its host-local hooks on cgroup {}; `cnet down` before moving them to {}",
                    s.cgroup
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "(none)".into()),
                    c.display()
                );
            }
            // New --uplink values apply: the ones no longer listed lose their
            // uplink hooks (and keep publishing as plain host interfaces).
            if !opts.uplinks.is_empty() && opts.uplinks != s.uplinks {
                dropped_uplinks = s
                    .uplinks
                    .iter()
                    .filter(|u| !opts.uplinks.contains(u))
                    .cloned()
                    .collect();
                s.uplinks = opts.uplinks.clone();
            }
            s
        }
        None => {
            let bip = want_bip.unwrap_or(DEFAULT_BIP.parse()?);
            ipam::validate_bip(bip)?;
            let uplinks = if opts.uplinks.is_empty() {
                net::default_route_devs()?
            } else {
                opts.uplinks.clone()
            };
            if uplinks.is_empty() {
                bail!("no interface carries a default route: name the uplink with --uplink IFACE");
            }
            State {
                version: STATE_VERSION,
                bip,
                bridge: DEFAULT_BRIDGE.into(),
                uplinks,
                cgroup: Some(match &opts.cgroup {
                    Some(c) => c.clone(),
                    None => cgroup2_root()?,
                }),
                masquerade: true,
                icc: true,
                debug: false,
                containers: BTreeMap::new(),
                filters: Vec::new(),
                next_filter_id: 1,
                fixed_cidr: None,
                mtu: None,
                default_gateway: None,
                dns: Vec::new(),
                ip_forward: true,
                pools: Vec::new(),
                networks: BTreeMap::new(),
                pending: Vec::new(),
                persisted: Default::default(),
            }
        }
    };
    // Flags override daemon.json; both apply live where they can (icc, masquerade)
    // and to new containers otherwise.
    if let Some(icc) = opts.icc.or(cfg.icc) {
        state.icc = icc;
    }
    if let Some(d) = opts.debug.or(cfg.debug) {
        state.debug = d;
    }
    if let Some(m) = opts.ip_masq.or(cfg.ip_masq) {
        state.masquerade = m;
    }
    if let Some(f) = cfg.fixed_cidr {
        crate::config::check_fixed_cidr(f, state.bip)?;
        state.fixed_cidr = Some(f);
    }
    if let Some(g) = cfg.default_gateway {
        anyhow::ensure!(
            state.bip.contains(g),
            "daemon.json: key \"default-gateway\" {g} is outside bip {}",
            state.bip
        );
        state.default_gateway = Some(g);
    }
    if let Some(m) = cfg.mtu {
        state.mtu = Some(m);
    }
    if let Some(d) = &cfg.dns {
        state.dns = d.clone();
    }
    if let Some(f) = cfg.ip_forward {
        state.ip_forward = f;
    }
    if let Some(p) = &cfg.default_address_pools {
        state.pools = p.clone();
    }
    for u in &state.uplinks {
        net::ifindex(u).with_context(|| format!("uplink {u:?}"))?;
        if net::addrs(Some(u))?.is_empty() {
            bail!("uplink {u:?} has no IPv4 address to masquerade to");
        }
    }
    if let Some(c) = &state.cgroup
        && !c.join("cgroup.procs").exists()
    {
        bail!("{} is not a cgroup v2 directory", c.display());
    }
    for u in &dropped_uplinks {
        loader::detach(paths, &format!("uplink-{u}"))?;
        loader::detach(paths, &format!("xdp-{u}"))?;
    }
    transaction(|undo| {
        let mounted = !paths.bpf().exists();
        loader::ensure_bpffs(paths)?;
        if fresh && mounted {
            let p = paths.clone();
            undo.push("unmount bpffs", move || loader::remove_bpffs(&p));
        }
        loader::load_and_pin(paths)?;
        let had_bridge = net::link_exists(&state.bridge);
        net::ensure_bridge(&state.bridge, &state.bip.to_string())?;
        if !had_bridge {
            let b = state.bridge.clone();
            undo.push("delete bridge", move || net::del_link(&b));
        }
        if let Some(mtu) = state.mtu {
            net::set_mtu(&state.bridge, mtu)?;
        }
        if state.ip_forward {
            net::sysctl("net.ipv4.ip_forward", "1")?;
        }
        reserve_masq_ports(true)?;
        sync_host(paths, &state)?;
        for u in &state.uplinks {
            if loader::attach_tc(paths, loader::UPLINK_PROG, u, &format!("uplink-{u}"))? {
                let (p, l) = (paths.clone(), format!("uplink-{u}"));
                undo.push("detach uplink", move || loader::detach(&p, &l));
            }
        }
        if let Some(c) = &state.cgroup {
            loader::attach_cgroup(paths, c)?;
        }
        Ok(())
    })?;
    container::recover(paths, &mut state);
    crate::network::recover(paths, &mut state);
    crate::recover_pending(paths, &mut state)?;
    sync_interfaces(paths, &state)?;
    crate::network::reconcile(paths, &state)?;
    container::reconcile(paths, &mut state)?;
    crate::filter::sync(paths, &state)?;
    state::save(paths, &state)
}

const RESERVED_PORTS: &str = "net.ipv4.ip_local_reserved_ports";

/// Adds (or removes) cnet's masquerade port range to the host's reserved
/// ports, so the host never picks one of them for its own connections.
pub fn reserve_masq_ports(reserve: bool) -> Result<()> {
    let path = "/proc/sys/net/ipv4/ip_local_reserved_ports";
    let cur = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let range = format!("{MASQ_PORT_LO}-{MASQ_PORT_HI}");
    let mut parts: Vec<&str> = cur.trim().split(',').filter(|p| !p.is_empty()).collect();
    let has = parts.contains(&range.as_str());
    if reserve == has {
        return Ok(());
    }
    if reserve {
        parts.push(&range);
    } else {
        parts.retain(|p| *p != range);
    }
    // An empty list is written as a bare newline (a zero-length write is ignored).
    let v = parts.join(",") + "\n";
    net::sysctl(RESERVED_PORTS, &v)
}

/// Publishes on every interface with a host address, as Docker does
/// (`--dst-type LOCAL`): each one that is not an uplink, a cnet bridge or
/// loopback gets the uplink TC program (pinned as `host-<ifindex>`, so a
/// re-created interface of the same name is attached again), an UPLINKS entry
/// (masquerade out of it) and its addresses in HOST_ADDRS. Runs at `up`, at
/// the start of every mutating command and every second in `cnet daemon`, so
/// interfaces added later are covered.
pub fn sync_interfaces(paths: &Paths, state: &State) -> Result<()> {
    if !paths.map_pin(maps::UPLINKS).exists() {
        return Ok(());
    }
    let mut uplinks = loader::hash::<u32, Uplink>(paths, maps::UPLINKS)?;
    let mut host = loader::hash::<u32, u32>(paths, maps::HOST_ADDRS)?;
    for (name, idx, addrs) in net::interfaces_with_addrs()? {
        let ours = name == "lo"
            || name == state.bridge
            || state.networks.values().any(|n| n.bridge == name);
        if ours {
            continue;
        }
        for a in &addrs {
            host.insert(addr_key(a.octets()), 1, 0)
                .with_context(|| format!("recording host address {a} of {name}"))?;
        }
        if state.uplinks.contains(&name) {
            continue;
        }
        loader::attach_tc(paths, loader::UPLINK_PROG, &name, &format!("host-{idx}"))?;
        if uplinks.get(&idx, 0).is_err() {
            uplinks
                .insert(
                    idx,
                    Uplink {
                        addr: addr_key(addrs[0].octets()),
                    },
                    0,
                )
                .with_context(|| format!("recording interface {name}"))?;
        }
    }
    Ok(())
}

/// Writes CONFIG, UPLINKS and HOST_ADDRS from the namespace as it is now.
pub fn sync_host(paths: &Paths, state: &State) -> Result<()> {
    loader::set_config(
        paths,
        Config {
            netns_cookie: net::netns_cookie()?,
            bridge_mac: net::mac(&state.bridge)?,
            gateway: addr_key(state.bip.addr.octets()),
            flags: if state.masquerade {
                CONFIG_MASQUERADE
            } else {
                0
            } | if state.debug { CONFIG_DEBUG } else { 0 },
            ..Config::default()
        },
    )?;
    let mut uplinks = loader::hash::<u32, Uplink>(paths, maps::UPLINKS)?;
    for u in &state.uplinks {
        let addr = *net::addrs(Some(u))?
            .first()
            .with_context(|| format!("uplink {u} has no IPv4 address"))?;
        uplinks
            .insert(
                net::ifindex(u)?,
                Uplink {
                    addr: addr_key(addr.octets()),
                },
                0,
            )
            .with_context(|| format!("recording uplink {u}"))?;
    }
    let icc = if state.icc { 0 } else { maps::NETWORK_ICC_OFF };
    loader::hash::<u32, maps::Network>(paths, maps::NETWORKS)?
        .insert(maps::NETWORK_BRIDGE, maps::Network { flags: icc }, 0)
        .context("recording the bridge network")?;
    let mut host = loader::hash::<u32, u32>(paths, maps::HOST_ADDRS)?;
    for a in net::addrs(None)? {
        if !a.is_loopback() {
            host.insert(addr_key(a.octets()), 1, 0)
                .with_context(|| format!("recording host address {a}"))?;
        }
    }
    Ok(())
}

/// Removes everything the instance created: containers, links, bridge, pins, state.
pub fn down(paths: &Paths) -> Result<()> {
    let _lock = Lock::take(paths)?;
    let Some(mut state) = state::load(paths)? else {
        return Ok(());
    };
    let mut errors = Vec::new();
    let names: Vec<String> = state.containers.keys().cloned().collect();
    for name in names {
        if let Err(e) = container::teardown(paths, &mut state, &name) {
            errors.push(format!("{name}: {e:#}"));
        }
    }
    if !errors.is_empty() {
        // Containers that could not be removed stay in the state (marked as
        // being removed), and so does everything they need: nothing becomes
        // untracked. The next `cnet down` (or any command) retries.
        state::save(paths, &state)?;
        bail!(
            "cnet down stopped, containers left:\n  {}",
            errors.join("\n  ")
        );
    }
    for n in state.networks.values() {
        if net::link_exists(&n.bridge)
            && let Err(e) = net::del_link(&n.bridge)
        {
            errors.push(format!("{e:#}"));
        }
    }
    if net::link_exists(&state.bridge)
        && let Err(e) = net::del_link(&state.bridge)
    {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = loader::remove_bpffs(paths) {
        errors.push(format!("{e:#}"));
    }
    let _ = fs::remove_dir_all(paths.logs());
    if let Err(e) = reserve_masq_ports(false) {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = fs::remove_file(crate::store::path(&paths.root))
        && e.kind() != std::io::ErrorKind::NotFound
    {
        errors.push(format!(
            "removing {}: {e}",
            crate::store::path(&paths.root).display()
        ));
    }
    if let Err(e) = fs::remove_file(paths.state()) {
        errors.push(format!("removing {}: {e}", paths.state().display()));
    }
    // The lock file stays: removing it while held would let a second process
    // lock a new file while a third still holds the old one.
    if !errors.is_empty() {
        bail!("cnet down left errors:\n  {}", errors.join("\n  "));
    }
    Ok(())
}
