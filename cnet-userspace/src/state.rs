//! The desired state of one instance: one JSON file under the instance root,
//! written atomically (temp file, fsync, rename) while holding a file lock.
use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::Write,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    ipam::Cidr,
    portspec::{PortMapping, Proto},
};

pub const STATE_VERSION: u32 = 1;

/// Where an instance keeps everything.
#[derive(Clone, Debug)]
pub struct Paths {
    pub root: PathBuf,
    /// How long to wait for the instance lock (`None`: for ever).
    pub lock_timeout: Option<std::time::Duration>,
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            lock_timeout: None,
        }
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }
    /// The instance's own bpffs mount.
    pub fn bpf(&self) -> PathBuf {
        self.root.join("bpf")
    }
    pub fn map_pin(&self, name: &str) -> PathBuf {
        self.bpf().join("maps").join(name)
    }
    pub fn prog_pin(&self, name: &str) -> PathBuf {
        self.bpf().join("progs").join(name)
    }
    pub fn link_pin(&self, name: &str) -> PathBuf {
        self.bpf().join("links").join(name)
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// Exit codes of detached commands, one file per container id.
    pub fn exits(&self) -> PathBuf {
        self.root.join("exit")
    }
}

/// How a detached container's command ended: written to `<root>/exit/<id>`
/// by the process that waits for it (see `container::start`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or 128 + the signal that ended it (Docker's convention).
    pub code: i32,
    /// When it ended (the file's mtime), seconds since the epoch.
    pub at: u64,
}

/// The recorded exit of container `id`, if its command ended.
pub fn read_exit(paths: &Paths, id: &str) -> Option<Exit> {
    let p = paths.exits().join(id);
    let text = fs::read_to_string(&p).ok()?;
    let code = text.trim().parse().ok()?;
    let at = fs::metadata(&p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Some(Exit { code, at })
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Bridge address and subnet of the default network.
    pub bip: Cidr,
    pub bridge: String,
    pub uplinks: Vec<String>,
    /// cgroup v2 directory the host-local hooks are attached to.
    pub cgroup: Option<PathBuf>,
    pub masquerade: bool,
    /// Inter-container communication on the default network (Docker's `--icc`).
    #[serde(default = "yes")]
    pub icc: bool,
    /// Datapath debug logs on (`cnet up --debug`, daemon.json `debug`).
    #[serde(default)]
    pub debug: bool,
    pub containers: BTreeMap<String, Container>,
    /// Filter rules in evaluation order.
    #[serde(default)]
    pub filters: Vec<FilterRule>,
    #[serde(default)]
    pub next_filter_id: u32,
    /// daemon.json's `fixed-cidr`: container addresses come from this range.
    #[serde(default)]
    pub fixed_cidr: Option<Cidr0>,
    /// daemon.json's `mtu` for the bridge and the containers' interfaces.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// daemon.json's `default-gateway` for containers (default: the bridge address).
    #[serde(default)]
    pub default_gateway: Option<Ipv4Addr>,
    /// daemon.json's `dns`: the containers' nameservers.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// daemon.json's `ip-forward`.
    #[serde(default = "yes")]
    pub ip_forward: bool,
    /// daemon.json's `default-address-pools`.
    #[serde(default)]
    pub pools: Vec<crate::config::Pool>,
    /// User-defined networks.
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
    /// Kernel-side changes begun and not yet confirmed: the next command
    /// finishes or undoes them (see `crate::open`).
    #[serde(default)]
    pub pending: Vec<Pending>,
    /// What is on disk: the base [`save`] writes only the difference against.
    #[serde(skip)]
    pub persisted: std::cell::RefCell<Persisted>,
}

/// What a CNI runtime handed over for one container interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAttachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The conflist's network name (`docker:<NetworkID>` for Docker's).
    pub network: String,
    /// Docker's remote driver: the veth's peer is left in the host
    /// namespace under this name for Docker to move into the sandbox and
    /// configure (address, routes); cnet only sets its MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
}

/// The instance's files as last read or written.
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    /// Ports per container key, as the ports log has them.
    pub ports: std::collections::HashMap<u64, Vec<PortMapping>>,
    /// Records in the ports log.
    pub records: usize,
    /// The text of state.json.
    pub text: Option<String>,
}

/// A journaled change of the kernel side that is not part of a container's
/// or network's own phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pending {
    /// Mappings of container `container` (at `ip`) being published or
    /// unpublished: those not in the container's ports are removed from the map.
    Ports {
        container: String,
        ip: std::net::Ipv4Addr,
        mappings: Vec<crate::portspec::PortMapping>,
    },
    /// The filter rules changed: the FILTERS map is rewritten from the state.
    Filters,
}

fn yes() -> bool {
    true
}

/// One `cnet filter add` rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRule {
    pub id: u32,
    pub src: Cidr0,
    pub dst: Cidr0,
    /// What the user wrote for --dst (a container name or a CIDR), for `filter ls`.
    pub dst_text: String,
    pub proto: Option<String>,
    pub dport: Option<(u16, u16)>,
    pub action: String,
}

/// A network and prefix where /0 is allowed (filters match "any").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr0 {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub id: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// Host-side veth.
    pub veth: String,
    /// Kept in the ports log (`crate::store`), not in state.json; read from
    /// state.json files written before the log existed.
    #[serde(default, skip_serializing)]
    pub ports: Vec<PortMapping>,
    /// Sorted; stored as ranges (`"1-60000/tcp"`), so 100,000 exposed ports
    /// stay a line or two of state.json.
    #[serde(with = "exposed_ranges")]
    pub exposed: Vec<(u16, Proto)>,
    pub cmd: Vec<String>,
    pub pid: Option<u32>,
    /// The start time of `pid` (clock ticks after boot, /proc/PID/stat field
    /// 22): a PID the kernel gave to another process since is not ours.
    #[serde(default)]
    pub pid_start: Option<u64>,
    pub created: String,
    /// `-e KEY=VALUE` for the command.
    #[serde(default)]
    pub user_env: Vec<(String, String)>,
    /// `--label KEY=VALUE`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--link NAME[:ALIAS]`: (linked container, alias).
    #[serde(default)]
    pub links: Vec<(String, String)>,
    /// Environment for the command (Docker's link variables).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Journal: a container is recorded as `Creating` before anything is built
    /// and as `Removing` before anything is torn down, so the next command can
    /// finish what a killed one left half-done.
    #[serde(default)]
    pub phase: Phase,
    /// `bridge` (default), a user-defined network, `host`, `none` or `container:NAME`.
    #[serde(default = "default_network")]
    pub network: String,
    /// `--network-alias`: extra names on a user-defined network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Further networks joined with `cnet network connect` (eth1, eth2...).
    #[serde(default)]
    pub extra: Vec<Attachment>,
    /// The container's own hostname (its UTS namespace).
    #[serde(default)]
    pub hostname: String,
    /// `--dns`: nameservers (default: daemon.json's).
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Started detached: a waiter records its exit code in `<root>/exit`.
    #[serde(default)]
    pub detached: bool,
    /// `--rm`: removed once its command exits.
    #[serde(default)]
    pub auto_remove: bool,
    /// `--dns-search`.
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP`.
    #[serde(default)]
    pub add_hosts: Vec<(String, Ipv4Addr)>,
    /// A container a CNI runtime created (`cnet-cni`): its namespace and
    /// processes are the runtime's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniAttachment>,
    /// How the command ended, if it did (read from `<root>/exit` on load).
    #[serde(skip)]
    pub exit: Option<Exit>,
}

fn default_network() -> String {
    "bridge".into()
}

/// A further interface of a container on another network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub veth: String,
    /// Interface name inside the container (eth1...).
    pub ifname: String,
    pub aliases: Vec<String>,
    pub endpoint_id: String,
    /// Journal, as for containers: `network connect` records the interface
    /// as creating before building it, `disconnect` as removing.
    #[serde(default)]
    pub phase: Phase,
}

/// A user-defined bridge network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    /// Id in the datapath maps (the default `bridge` network is 1).
    pub net_id: u32,
    pub bridge: String,
    /// Gateway address and prefix.
    pub subnet: Cidr,
    pub ip_range: Option<Cidr0>,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
    pub mtu: Option<u32>,
    pub options: BTreeMap<String, String>,
    pub created: String,
    #[serde(default)]
    pub phase: Phase,
    /// `--label KEY=VALUE`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `--attachable` (recorded and shown).
    #[serde(default)]
    pub attachable: bool,
    /// `--aux-address NAME=IP`: never given to a container.
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
}

/// What container code needs to know about the network it joins.
#[derive(Clone, Debug)]
pub struct NetView {
    pub name: String,
    pub net_id: u32,
    pub bridge: String,
    pub subnet: Cidr,
    pub range: Option<(Ipv4Addr, u8)>,
    pub gateway: Ipv4Addr,
    pub mtu: Option<u32>,
    pub user_defined: bool,
}

impl State {
    /// The container a user means by `r`, as Docker resolves it: a name, a
    /// full id, or a prefix of exactly one container's id.
    pub fn resolve(&self, r: &str) -> Result<String> {
        if self.containers.contains_key(r) {
            return Ok(r.to_string());
        }
        let hex = !r.is_empty() && r.chars().all(|c| c.is_ascii_hexdigit());
        let mut found = self
            .containers
            .values()
            .filter(|c| hex && c.id.starts_with(r))
            .map(|c| c.name.clone());
        match (found.next(), found.next()) {
            (Some(n), None) => Ok(n),
            (Some(_), Some(_)) => {
                anyhow::bail!("multiple containers match id prefix {r}: give more of it")
            }
            _ => Err(crate::error::not_found(format!("No such container: {r}"))),
        }
    }

    /// The bridge network `name` (`bridge` or user-defined).
    pub fn net(&self, name: &str) -> Option<NetView> {
        if name == "bridge" {
            return Some(NetView {
                name: name.into(),
                net_id: cnet_common::maps::NETWORK_BRIDGE,
                bridge: self.bridge.clone(),
                subnet: self.bip,
                range: self.fixed_cidr.map(|f| (f.addr, f.prefix)),
                gateway: self.default_gateway.unwrap_or(self.bip.addr),
                mtu: self.mtu,
                user_defined: false,
            });
        }
        let n = self.networks.get(name)?;
        Some(NetView {
            name: name.into(),
            net_id: n.net_id,
            bridge: n.bridge.clone(),
            subnet: n.subnet,
            range: n.ip_range.map(|r| (r.addr, r.prefix)),
            gateway: n.subnet.addr,
            mtu: n.mtu,
            user_defined: true,
        })
    }

    /// Addresses of network `name` IPAM must not hand out: its members'
    /// and its `--aux-address`es.
    pub fn taken_ips(&self, name: &str) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self.members(name).into_iter().map(|m| m.0).collect();
        if let Some(n) = self.networks.get(name) {
            v.extend(n.aux_addresses.values());
        }
        v
    }

    /// Every address in use on network `name`, with its owner and aliases.
    pub fn members(&self, name: &str) -> Vec<(Ipv4Addr, String, Vec<String>)> {
        let mut v = Vec::new();
        for c in self.containers.values() {
            if c.network == name {
                v.push((c.ip, c.name.clone(), c.aliases.clone()));
            }
            for a in c.extra.iter().filter(|a| a.network == name) {
                v.push((a.ip, c.name.clone(), a.aliases.clone()));
            }
        }
        v
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Creating,
    #[default]
    Ready,
    Removing,
}

impl Container {
    /// Whether the container has a network namespace of its own (named after it).
    pub fn owns_netns(&self) -> bool {
        self.network != "host" && !self.network.starts_with("container:")
    }

    /// Whether it has an interface on a bridge (its primary `eth0`).
    pub fn on_bridge(&self) -> bool {
        self.owns_netns() && self.network != "none"
    }

    /// Every bridge interface: the primary `eth0` first, then those added by
    /// `network connect`.
    pub fn interfaces(&self) -> Vec<Attachment> {
        if !self.on_bridge() {
            return Vec::new();
        }
        let primary = Attachment {
            network: self.network.clone(),
            ip: self.ip,
            mac: self.mac.clone(),
            veth: self.veth.clone(),
            ifname: self
                .cni
                .as_ref()
                .map_or_else(|| "eth0".to_string(), |a| a.ifname.clone()),
            aliases: self.aliases.clone(),
            endpoint_id: self.id.clone(),
            phase: Phase::Ready,
        };
        std::iter::once(primary)
            .chain(self.extra.iter().cloned())
            .collect()
    }

    /// Whether its process is still alive (and, with its own namespace, still in it).
    /// The container's process, if `pid` still names that very process
    /// (never PID 0 or 1, never a reused PID).
    pub fn own_pid(&self) -> Option<u32> {
        let pid = self.pid.filter(|p| *p > 1)?;
        match self.pid_start {
            Some(s) if proc_start(pid) != Some(s) => None,
            _ => Some(pid),
        }
    }

    pub fn running(&self) -> bool {
        if let Some(a) = &self.cni {
            return Path::new(&a.netns).exists();
        }
        if self.exit.is_some() {
            return false;
        }
        let Some(pid) = self.own_pid() else {
            return false;
        };
        if !self.owns_netns() {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            return stat
                .rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'));
        }
        let Ok(ns) = fs::metadata(format!("/proc/{pid}/ns/net")) else {
            return false;
        };
        let Ok(want) = fs::metadata(format!("/run/netns/{}", self.name)) else {
            return false;
        };
        use std::os::unix::fs::MetadataExt;
        ns.ino() == want.ino() && ns.dev() == want.dev()
    }
}

/// Start time of process `pid` in clock ticks after boot (field 22 of
/// /proc/PID/stat), or `None` when there is no such process.
pub fn proc_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// An exclusive lock on the instance, released on drop.
pub struct Lock {
    _file: File,
}

impl Lock {
    pub fn take(paths: &Paths) -> Result<Self> {
        fs::create_dir_all(&paths.root)
            .with_context(|| format!("creating instance root {}", paths.root.display()))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(paths.lock())
            .with_context(|| format!("opening lock {}", paths.lock().display()))?;
        let start = std::time::Instant::now();
        let mut told = false;
        loop {
            // SAFETY: flock on an open descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                bail!("locking {}: {err}", paths.lock().display());
            }
            let waited = start.elapsed();
            if let Some(t) = paths.lock_timeout
                && waited >= t
            {
                bail!(
                    "gave up waiting {:.1} s for the lock {}, held by {}",
                    waited.as_secs_f64(),
                    paths.lock().display(),
                    holder(paths)
                );
            }
            if !told && waited >= std::time::Duration::from_secs(2) {
                log::warn!(
                    "waiting for the lock {}, held by {} (--lock-timeout SECS to give up)",
                    paths.lock().display(),
                    holder(paths)
                );
                told = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Who holds it, for whoever waits next: "PID COMMAND".
        let me = format!(
            "{} {}\n",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        let _ = file.set_len(0);
        let _ = (&file).write_all(me.as_bytes());
        Ok(Self { _file: file })
    }
}

/// "pid PID (COMMAND)" of the lock's holder, as it wrote into the lock file.
fn holder(paths: &Paths) -> String {
    let text = fs::read_to_string(paths.lock()).unwrap_or_default();
    match text.trim().split_once(' ') {
        Some((pid, cmd)) => format!("pid {pid} ({cmd})"),
        None => "another cnet process".into(),
    }
}

/// Reads the state, or `None` when the instance was never brought up.
pub fn load(paths: &Paths) -> Result<Option<State>> {
    let p = paths.state();
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let mut s: State =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    if s.version != STATE_VERSION {
        bail!(
            "{} has state version {}, this cnet reads version {STATE_VERSION}",
            p.display(),
            s.version
        );
    }
    let mut log = crate::store::read(&paths.root)?;
    let mut persisted = Persisted {
        records: log.records,
        text: Some(text),
        ..Persisted::default()
    };
    for c in s.containers.values_mut() {
        c.exit = read_exit(paths, &c.id);
        let key = crate::store::key(&c.id);
        // A state.json from before the ports log carries the ports itself:
        // they stay, and the next save moves them into the log.
        if let Some(ports) = log.by_container.remove(&key) {
            c.ports = ports.clone();
            persisted.ports.insert(key, ports);
        }
    }
    // Records of containers state.json does not know (a creation that never
    // committed) are left for compaction.
    for (key, ports) in log.by_container {
        persisted.ports.insert(key, ports);
    }
    s.persisted = std::cell::RefCell::new(persisted);
    Ok(Some(s))
}

/// Like [`load`], but an instance that is not up is an error.
pub fn load_up(paths: &Paths) -> Result<State> {
    load(paths)?.with_context(|| {
        format!(
            "cnet is not up for root {}: run `cnet --root {} up` first",
            paths.root.display(),
            paths.root.display()
        )
    })
}

/// Writes what changed since the last load or save: port records appended
/// to the ports log (the log rewritten when mostly dead), state.json
/// rewritten atomically only when anything else changed. The log goes
/// first: records of a container state.json does not list are ignored.
pub fn save(paths: &Paths, state: &State) -> Result<()> {
    let mut base = state.persisted.borrow_mut();
    let mut recs = Vec::new();
    let mut live_keys = std::collections::HashSet::new();
    let mut live = 0;
    for c in state.containers.values() {
        let key = crate::store::key(&c.id);
        live_keys.insert(key);
        live += c.ports.len();
        let old = base.ports.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        crate::store::diff(key, old, &c.ports, &mut recs);
    }
    let gone: Vec<u64> = base
        .ports
        .keys()
        .filter(|k| !live_keys.contains(k))
        .copied()
        .collect();
    recs.extend(gone.iter().map(|k| crate::store::dropped(*k)));
    if !recs.is_empty() {
        if crate::store::wants_compaction(base.records + recs.len(), live) {
            base.records = crate::store::rewrite(
                &paths.root,
                state
                    .containers
                    .values()
                    .map(|c| (crate::store::key(&c.id), c.ports.as_slice())),
            )?;
        } else {
            crate::store::append(&paths.root, &recs)?;
            base.records += recs.len();
        }
        base.ports = state
            .containers
            .values()
            .filter(|c| !c.ports.is_empty())
            .map(|c| (crate::store::key(&c.id), c.ports.clone()))
            .collect();
    }
    let text = serde_json::to_string_pretty(state)?;
    if base.text.as_deref() != Some(text.as_str()) {
        write_atomic(&paths.state(), text.as_bytes())?;
        base.text = Some(text);
    }
    Ok(())
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    // The rename is durable only once the directory entry is on disk too.
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// `exposed` as port ranges per protocol; the older list of `[port, "tcp"]`
/// pairs is read too.
mod exposed_ranges {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::portspec::Proto;

    pub fn serialize<S: Serializer>(v: &[(u16, Proto)], s: S) -> Result<S::Ok, S::Error> {
        // `v` is sorted by port: each protocol's ports come out in order.
        let mut out: Vec<String> = Vec::new();
        for (proto, name) in [(Proto::Tcp, "tcp"), (Proto::Udp, "udp")] {
            let mut run: Option<(u16, u16)> = None;
            let emit = |r: (u16, u16), out: &mut Vec<String>| {
                out.push(if r.0 == r.1 {
                    format!("{}/{name}", r.0)
                } else {
                    format!("{}-{}/{name}", r.0, r.1)
                })
            };
            for &(p, _) in v.iter().filter(|(_, pr)| *pr == proto) {
                run = match run {
                    Some((lo, hi)) if p == hi => Some((lo, hi)),
                    Some((lo, hi)) if Some(p) == hi.checked_add(1) => Some((lo, p)),
                    Some(r) => {
                        emit(r, &mut out);
                        Some((p, p))
                    }
                    None => Some((p, p)),
                };
            }
            if let Some(r) = run {
                emit(r, &mut out);
            }
        }
        s.collect_seq(out)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Range(String),
        Pair(u16, Proto),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u16, Proto)>, D::Error> {
        let mut out = Vec::new();
        for item in Vec::<Item>::deserialize(d)? {
            match item {
                Item::Pair(p, proto) => out.push((p, proto)),
                Item::Range(r) => out.extend(
                    crate::portspec::parse_expose(&r)
                        .map_err(|e| D::Error::custom(format!("exposed {r:?}: {e:#}")))?,
                ),
            }
        }
        // TCP ranges then UDP ranges, each ascending: nearly sorted already.
        out.sort();
        out.dedup();
        Ok(out)
    }
}
