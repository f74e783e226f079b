//! Containers: a named network namespace joined to the bridge by a veth pair,
//! its map entries, and the process running in it.
use std::{
    fs::{self, File},
    io::Read,
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use cnet_common::{
    addr_key,
    maps::{self, AllowKey, CtEntry, CtKey, Endpoint, PortKey, PortValue},
    port_key,
};

use crate::{
    host::{
        netlink::{LinkChange, Netlink},
        netns,
    },
    ipam, loader, net,
    portspec::{self, PortMapping, Proto, PublishSpec},
    state::{Container, Paths, Phase, State},
    undo::{Undo, transaction},
};

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub name: Option<String>,
    pub publish: Vec<String>,
    pub expose: Vec<String>,
    pub publish_all: bool,
    /// `NAME[:ALIAS]`
    pub links: Vec<String>,
    /// `bridge` (default), `host`, `none`, `container:NAME` or a user-defined network.
    pub network: Option<String>,
    pub ip: Option<String>,
    pub hostname: Option<String>,
    pub dns: Vec<String>,
    /// `--dns-search DOMAIN` (repeatable).
    pub dns_search: Vec<String>,
    /// `--dns-option OPT` (repeatable), resolv.conf's `options`.
    pub dns_options: Vec<String>,
    /// `--mac-address`: eth0's MAC instead of 02:42 and the address.
    pub mac_address: Option<String>,
    /// `--rm`: removed when its command exits (detached ones too).
    pub auto_remove: bool,
    /// `NAME:IP`
    pub add_hosts: Vec<String>,
    pub aliases: Vec<String>,
    /// `-e KEY=VALUE` or `-e KEY` (cnet's own value).
    pub env: Vec<String>,
    /// `--label KEY=VALUE`.
    pub labels: Vec<String>,
    pub cmd: Vec<String>,
    /// Set by the CNI plugin: the runtime's namespace, no command of cnet's.
    pub cni: Option<crate::state::CniAttachment>,
}

/// A name that goes into a hosts file (`--network-alias`, `--alias`, the name
/// of `--add-host`): letters, digits, `_`, `.` and `-`, starting with a letter
/// or digit, at most 253 characters. Spaces, tabs and newlines would add
/// hosts-file entries of their own.
pub fn validate_host_name(what: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = !name.is_empty()
        && name.len() <= 253
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    ensure!(
        ok,
        "invalid {what} {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
    );
    Ok(())
}

/// The container's command could not be started; `code` is the exit status
/// Docker gives for it (127 not found, 126 not invocable).
#[derive(Debug)]
pub struct CommandError {
    pub code: u8,
    pub msg: String,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for CommandError {}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`; cnet also caps the length.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = name.len() >= 2
        && name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    ensure!(
        ok,
        "invalid container name {name:?}: use 2-64 characters [a-zA-Z0-9][a-zA-Z0-9_.-]"
    );
    Ok(())
}

pub fn random_id() -> Result<String> {
    let mut b = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn dynamic_range() -> std::ops::RangeInclusive<u16> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .filter_map(|s| s.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(a), Some(b)) if a <= b => a..=b,
        _ => 32768..=60999,
    }
}

/// Whether nothing on the host holds `ip:port/proto` (a bind test in the host namespace).
pub fn host_port_free(ip: Option<Ipv4Addr>, port: u16, proto: Proto) -> Result<bool> {
    let addr = SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    let r = match proto {
        Proto::Tcp => TcpListener::bind(addr).map(|_| ()),
        Proto::Udp => UdpSocket::bind(addr).map(|_| ()),
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            bail!("host IP {} is not an address of this host", addr.ip())
        }
        Err(e) => Err(e).with_context(|| format!("checking host port {addr}/{proto}")),
    }
}

/// Container ports a container exposes.
pub type Exposed = Vec<(u16, Proto)>;

/// Decides the port mappings for a new container, checking every host port
/// against other containers' mappings and the host's listening sockets.
pub fn plan_ports(state: &State, opts: &RunOptions) -> Result<(Vec<PortMapping>, Exposed)> {
    let mut specs: Vec<PublishSpec> = opts
        .publish
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_>>()?;
    let mut exposed: Vec<(u16, Proto)> = Vec::new();
    for e in &opts.expose {
        exposed.extend(portspec::parse_expose(e)?);
    }
    for s in &specs {
        exposed.extend(s.container.ports().map(|p| (p, s.proto)));
    }
    exposed.sort();
    exposed.dedup();
    if opts.publish_all {
        // Container ports -p already covers, as a set: `--expose 1-65535 -P`
        // stays linear.
        let covered: std::collections::HashSet<(u16, Proto)> = specs
            .iter()
            .flat_map(|s| s.container.ports().map(move |c| (c, s.proto)))
            .collect();
        for (p, proto) in &exposed {
            if !covered.contains(&(*p, *proto)) {
                specs.push(PublishSpec {
                    host_ip: None,
                    host: None,
                    container: portspec::Range { start: *p, end: *p },
                    proto: *proto,
                });
            }
        }
    }
    // Host ports in use, one pass over every mapping (linear at 100,000
    // ports): bit 0 on every address, bit 1 on some address (those few are
    // then compared one by one).
    let slot = |port: u16, proto: Proto| usize::from(port) * 2 + usize::from(proto == Proto::Udp);
    let mut used = vec![0u8; 65536 * 2];
    let all = || state.containers.values().flat_map(|c| c.ports.iter());
    for m in all() {
        used[slot(m.host_port, m.proto)] |= if m.host_ip.is_none() { 1 } else { 2 };
    }
    let mut free = |ip: Option<Ipv4Addr>, port: u16, proto: Proto| -> Result<bool> {
        let clash = match used[slot(port, proto)] {
            0 => false,
            u if u & 1 != 0 || ip.is_none() => true,
            _ => all().any(|m| m.host_port == port && m.proto == proto && m.host_ip == ip),
        };
        Ok(!clash && host_port_free(ip, port, proto)?)
    };
    let mappings = portspec::resolve(&specs, dynamic_range(), &mut free)?;
    Ok((mappings, exposed))
}

/// The PORTS map entry of mapping `m` to the container at `ip`.
pub fn port_entry(m: &PortMapping, ip: Ipv4Addr) -> (PortKey, PortValue) {
    let host = m.host_ip.map(|a| addr_key(a.octets())).unwrap_or(0);
    (
        PortKey::new(host, port_key(m.host_port), m.proto.number()),
        PortValue::new(addr_key(ip.octets()), port_key(m.container_port)),
    )
}

/// Adds `m` for the container at `ip` to the PORTS map.
pub fn publish(paths: &Paths, m: &PortMapping, ip: Ipv4Addr) -> Result<()> {
    let (k, v) = port_entry(m, ip);
    loader::hash::<PortKey, PortValue>(paths, maps::PORTS)?
        .insert(k, v, 0)
        .with_context(|| format!("publishing {m}"))
}

/// Removes `m` from the PORTS map only while it still points at `ip`.
pub fn unpublish_if(paths: &Paths, m: &PortMapping, ip: Ipv4Addr) -> Result<()> {
    let (k, v) = port_entry(m, ip);
    let ports = loader::hash::<PortKey, PortValue>(paths, maps::PORTS)?;
    match ports.get(&k, 0) {
        Ok(cur) if cur == v => unpublish(paths, m, ip),
        _ => Ok(()),
    }
}

pub fn unpublish(paths: &Paths, m: &PortMapping, ip: Ipv4Addr) -> Result<()> {
    let (k, _) = port_entry(m, ip);
    loader::removed(loader::hash::<PortKey, PortValue>(paths, maps::PORTS)?.remove(&k))
        .with_context(|| format!("unpublishing {m}"))
}

/// Validates a `run` and decides everything about the new container (name,
/// id, network, address, ports, links) without touching the system.
pub fn plan(state: &State, opts: &RunOptions) -> Result<Container> {
    ensure!(
        !opts.cmd.is_empty() || opts.cni.is_some(),
        "no command given: cnet run [OPTIONS] -- CMD [ARGS]"
    );
    let id = random_id()?;
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => format!("cnet-{}", &id[..8]),
    };
    validate_name(&name)?;
    if let Some(c) = state.containers.get(&name) {
        return Err(crate::error::conflict(format!(
            "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
            c.id
        )));
    }
    ensure!(
        !net::netns_exists(&name),
        "a network namespace named {name:?} already exists (see `ip netns list`)"
    );
    let network = opts.network.clone().unwrap_or_else(|| "bridge".into());
    let dns: Vec<Ipv4Addr> = opts
        .dns
        .iter()
        .map(|d| {
            d.parse()
                .with_context(|| format!("--dns {d:?} is not an IPv4 address"))
        })
        .collect::<Result<_>>()?;
    for d in &opts.dns_search {
        ensure!(
            !d.is_empty()
                && d.len() <= 253
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')),
            "invalid --dns-search {d:?}: expected a domain name"
        );
    }
    for o in &opts.dns_options {
        ensure!(
            !o.is_empty() && o.chars().all(|c| c.is_ascii_graphic()),
            "invalid --dns-option {o:?}: expected one resolv.conf option (e.g. ndots:2)"
        );
    }
    if opts.mac_address.is_some() {
        let net = opts.network.as_deref().unwrap_or("bridge");
        ensure!(
            net != "host" && net != "none" && !net.starts_with("container:"),
            "conflicting options: --mac-address and the network mode {net}"
        );
    }
    let user_env: Vec<(String, String)> = opts
        .env
        .iter()
        .map(|e| {
            let (k, v) = match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), std::env::var(e).unwrap_or_default()),
            };
            ensure!(
                !k.is_empty() && !k.contains(char::is_whitespace),
                "invalid --env {e:?}: expected KEY=VALUE or KEY"
            );
            Ok((k, v))
        })
        .collect::<Result<_>>()?;
    let labels = parse_labels(&opts.labels)?;
    let add_hosts: Vec<(String, Ipv4Addr)> = opts
        .add_hosts
        .iter()
        .map(|h| {
            let (n, ip) = h
                .split_once(':')
                .with_context(|| format!("--add-host {h:?}: expected NAME:IP"))?;
            ensure!(!n.is_empty(), "--add-host {h:?}: empty name");
            validate_host_name("--add-host name", n)?;
            // Docker's special value: the address of the host as the
            // container sees it, its network's gateway.
            let addr = if ip == "host-gateway" {
                state
                    .net(opts.network.as_deref().unwrap_or("bridge"))
                    .map(|v| v.gateway)
                    .unwrap_or(state.bip.addr)
            } else {
                ip.parse()
                    .with_context(|| format!("--add-host {h:?}: {ip:?} is not an IPv4 address"))?
            };
            Ok((n.to_string(), addr))
        })
        .collect::<Result<_>>()?;
    for a in &opts.aliases {
        validate_host_name("--network-alias", a)?;
    }
    if let Some(h) = &opts.hostname {
        let ok = !h.is_empty()
            && h.len() <= 63
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !h.starts_with('-');
        ensure!(
            ok,
            "invalid --hostname {h:?}: use letters, digits, '-' and '.' (at most 63)"
        );
    }
    let mut c = Container {
        name: name.clone(),
        id: id.clone(),
        ip: Ipv4Addr::UNSPECIFIED,
        mac: String::new(),
        veth: String::new(),
        ports: Vec::new(),
        exposed: Vec::new(),
        cmd: opts.cmd.clone(),
        pid: None,
        pid_start: None,
        created: now_rfc3339(),
        env: Vec::new(),
        user_env,
        labels,
        links: Vec::new(),
        phase: Phase::Creating,
        network: network.clone(),
        aliases: opts.aliases.clone(),
        extra: Vec::new(),
        hostname: opts
            .hostname
            .clone()
            .unwrap_or_else(|| id[..12].to_string()),
        dns,
        dns_search: opts.dns_search.clone(),
        dns_options: opts.dns_options.clone(),
        auto_remove: opts.auto_remove,
        detached: false,
        add_hosts,
        exit: None,
        cni: opts.cni.clone(),
    };
    let no_ports = opts.publish.is_empty() && !opts.publish_all;
    match network.as_str() {
        "host" => {
            // Docker: published ports are discarded in host mode (with a warning).
            if !no_ports {
                eprintln!("WARNING: published ports are discarded when using host network mode");
            }
            ensure!(
                opts.ip.is_none() && opts.aliases.is_empty(),
                "--ip and --network-alias need a bridge network, not host"
            );
            ensure!(
                opts.links.is_empty(),
                "--link needs a bridge network, not host"
            );
            c.hostname = fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .to_string();
            return Ok(c);
        }
        "none" => {
            ensure!(
                no_ports,
                "--network none: a container without a network cannot publish ports"
            );
            ensure!(
                opts.ip.is_none() && opts.aliases.is_empty() && opts.links.is_empty(),
                "--ip, --network-alias and --link need a bridge network, not none"
            );
            return Ok(c);
        }
        n if n.starts_with("container:") => {
            let target = &n["container:".len()..];
            let t = state
                .containers
                .get(target)
                .with_context(|| format!("--network {n}: no such container: {target}"))?;
            ensure!(
                t.owns_netns(),
                "--network {n}: {target} has no network namespace of its own (mode {})",
                t.network
            );
            ensure!(
                no_ports,
                "conflicting options: port publishing and the container type network mode"
            );
            ensure!(
                opts.hostname.is_none(),
                "conflicting options: hostname and the container type network mode"
            );
            ensure!(
                opts.ip.is_none() && opts.aliases.is_empty() && opts.links.is_empty(),
                "--ip, --network-alias and --link conflict with the container type network mode"
            );
            c.hostname = t.hostname.clone();
            return Ok(c);
        }
        _ => {}
    }
    let view = state
        .net(&network)
        .ok_or_else(|| crate::error::not_found(format!("network {network} not found")))?;
    ensure!(
        view.user_defined || opts.aliases.is_empty(),
        "--network-alias is only supported on user-defined networks"
    );
    let links = plan_links(state, &opts.links)?;
    let (ports, exposed) = plan_ports(state, opts)?;
    let used = state.taken_ips(&network);
    if opts.ip.is_some() {
        ensure!(
            view.user_defined,
            "--ip: user specified IP address is supported on user defined networks only"
        );
    }
    let ip = choose_ip(&view, opts.ip.as_deref(), &used)?;
    c.ip = ip;
    c.mac = match &opts.mac_address {
        Some(m) => {
            let mac = ipam::mac_string(ipam::parse_mac(m)?);
            let clash = state.containers.values().find(|o| {
                o.interfaces()
                    .iter()
                    .any(|a| a.network == network && a.mac == mac)
            });
            if let Some(o) = clash {
                bail!(
                    "--mac-address {m}: container {} already uses it on network {network}",
                    o.name
                );
            }
            mac
        }
        None => ipam::mac_string(ipam::mac_for(ip)),
    };
    c.veth = format!("veth{}", &id[..7]);
    c.ports = ports;
    c.exposed = exposed;
    c.env = link_env(state, &name, &links);
    c.links = links;
    Ok(c)
}

/// `--label KEY[=VALUE]`s (Docker: a bare key has an empty value).
pub fn parse_labels(labels: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            ensure!(
                !k.is_empty() && !k.chars().any(char::is_whitespace),
                "invalid --label {l:?}: expected KEY=VALUE"
            );
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// A requested address (checked) or the next free one of the network.
pub fn choose_ip(
    view: &crate::state::NetView,
    requested: Option<&str>,
    used: &[Ipv4Addr],
) -> Result<Ipv4Addr> {
    match requested {
        None => ipam::allocate_in(view.subnet, view.range, used),
        Some(r) => {
            let ip: Ipv4Addr = r
                .parse()
                .with_context(|| format!("--ip {r:?} is not an IPv4 address"))?;
            let s = view.subnet;
            ensure!(
                s.contains(ip),
                "--ip {ip} is outside network {}'s subnet {}/{}",
                view.name,
                s.network(),
                s.prefix
            );
            ensure!(
                ip != s.addr && ip != s.network() && ip != s.broadcast(),
                "--ip {ip} is the gateway, network or broadcast address"
            );
            ensure!(
                !used.contains(&ip),
                "--ip {ip} is already in use on network {}",
                view.name
            );
            Ok(ip)
        }
    }
}

/// Builds a planned container: namespace, veth, addresses, attachment, map
/// entries, link allowances, hosts file. Rolls back on failure.
pub fn build(paths: &Paths, state: &State, c: &Container) -> Result<()> {
    if !c.owns_netns() {
        return Ok(());
    }
    transaction(|undo| {
        if c.on_bridge() {
            let view = state
                .net(&c.network)
                .with_context(|| format!("network {} not found", c.network))?;
            plumb(paths, &view, c, undo)?;
            allow_links(paths, state, c, undo)?;
        } else {
            make_netns(&c.name, c.cni.as_ref(), undo)?;
        }
        write_hosts(state, c, undo)
    })
}

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

fn recover_containers(paths: &Paths, state: &mut State) -> bool {
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

/// Checks `--link NAME[:ALIAS]` values: the target must exist.
fn plan_links(state: &State, specs: &[String]) -> Result<Vec<(String, String)>> {
    specs
        .iter()
        .map(|s| {
            let (name, alias) = s.split_once(':').unwrap_or((s, s));
            ensure!(
                state.containers.contains_key(name),
                "--link {s}: no such container: {name}"
            );
            validate_name(alias).with_context(|| format!("--link {s}: bad alias"))?;
            Ok((name.to_string(), alias.to_string()))
        })
        .collect()
}

/// Docker's link variables: `ALIAS_PORT_80_TCP_ADDR`, `..._PORT`, `..._PROTO`,
/// `ALIAS_PORT_80_TCP`, `ALIAS_PORT`, `ALIAS_NAME`.
fn link_env(state: &State, name: &str, links: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (target, alias) in links {
        let Some(t) = state.containers.get(target) else {
            continue;
        };
        let a: String = alias
            .to_uppercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        for (i, (port, proto)) in t.exposed.iter().enumerate() {
            let p = format!("{a}_PORT_{port}_{}", proto.to_string().to_uppercase());
            let url = format!("{proto}://{}:{port}", t.ip);
            if i == 0 {
                env.push((format!("{a}_PORT"), url.clone()));
            }
            env.push((p.clone(), url));
            env.push((format!("{p}_ADDR"), t.ip.to_string()));
            env.push((format!("{p}_PORT"), port.to_string()));
            env.push((format!("{p}_PROTO"), proto.to_string()));
        }
        env.push((format!("{a}_NAME"), format!("/{name}/{alias}")));
    }
    env
}

fn allow_keys(c: &Container, t: &Container) -> Vec<AllowKey> {
    let (a, b) = (addr_key(c.ip.octets()), addr_key(t.ip.octets()));
    t.exposed
        .iter()
        .flat_map(|(port, proto)| {
            let p = proto.number();
            [
                AllowKey {
                    saddr: a,
                    daddr: b,
                    port: *port,
                    proto: p,
                    by_sport: 0,
                },
                AllowKey {
                    saddr: b,
                    daddr: a,
                    port: *port,
                    proto: p,
                    by_sport: 1,
                },
            ]
        })
        .collect()
}

/// Under icc=false a link opens the linked container's exposed ports to the
/// linking container, and their replies.
fn allow_links(paths: &Paths, state: &State, c: &Container, undo: &mut Undo) -> Result<()> {
    for (target, _) in &c.links {
        let Some(t) = state.containers.get(target) else {
            continue;
        };
        let keys = allow_keys(c, t);
        let mut allow = loader::hash::<AllowKey, u32>(paths, maps::ALLOW)?;
        for k in &keys {
            allow
                .insert(*k, 1, 0)
                .with_context(|| format!("allowing {} -> {target}", c.name))?;
        }
        let p = paths.clone();
        undo.push("remove link allowances", move || {
            let mut allow = loader::hash::<AllowKey, u32>(&p, maps::ALLOW)?;
            for k in &keys {
                let _ = allow.remove(k);
            }
            Ok(())
        });
    }
    Ok(())
}

/// The `ip netns` convention: `/etc/netns/<name>/hosts` is what `ip netns
/// exec` shows as /etc/hosts; cnet bind-mounts it for the command too.
pub fn hosts_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns").join(name).join("hosts")
}

/// The container's /etc/hosts: itself, its links, `--add-host` entries and,
/// on user-defined networks, every container of those networks by name and
/// alias (Docker's embedded DNS, as a hosts file kept in sync).
fn hosts_text(state: &State, c: &Container) -> String {
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

fn write_hosts(state: &State, c: &Container, undo: &mut Undo) -> Result<()> {
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
fn resolv_conf(state: &State, c: &Container) -> Option<String> {
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

/// The container's own network namespace, named after it: IPv6 off (cnet's
/// networks are IPv4), `lo` up. Deleted again on rollback.
fn make_netns(
    name: &str,
    cni: Option<&crate::state::CniAttachment>,
    undo: &mut Undo,
) -> Result<()> {
    match cni {
        // Docker's sandbox may not exist yet (its prestart hook makes it):
        // Docker moves the interface in itself.
        Some(a) if a.handoff.is_some() => return Ok(()),
        // The runtime's namespace, bound under the container's name.
        Some(a) => netns::adopt(name, std::path::Path::new(&a.netns))?,
        None => netns::add(name)?,
    }
    let n = name.to_string();
    undo.push("delete netns", move || netns::del(&n).map_err(Into::into));
    crate::crash::point("run:netns");
    net::ipv6_off_in(name)?;
    Netlink::in_netns(name)?.up("lo")?;
    Ok(())
}

fn plumb(
    paths: &Paths,
    view: &crate::state::NetView,
    c: &Container,
    undo: &mut Undo,
) -> Result<()> {
    make_netns(&c.name, c.cni.as_ref(), undo)?;
    let a = c
        .interfaces()
        .into_iter()
        .next()
        .context("a bridge container has eth0")?;
    let handoff = c.cni.as_ref().and_then(|x| x.handoff.as_deref());
    match handoff {
        Some(peer) => attach_handoff(paths, view, &a, peer)?,
        None => attach_interface(paths, &c.name, view, &a)?,
    }
    let (p, n, a2) = (paths.clone(), c.name.clone(), a.clone());
    undo.push("detach interface", move || detach_interface(&p, &n, &a2));
    crate::crash::point("run:veth");
    if handoff.is_none() {
        Netlink::in_netns(&c.name)?.add_default_route(view.gateway)?;
    }
    for m in &c.ports {
        publish(paths, m, c.ip)?;
        let (p, m, ip) = (paths.clone(), m.clone(), c.ip);
        undo.push("unpublish", move || unpublish(&p, &m, ip));
    }
    crate::crash::point("run:ports");
    Ok(())
}

/// One interface of a container on a bridge network: veth pair, address,
/// MTU, the veth program and the ENDPOINTS entry. Rolls back on failure.
pub fn attach_interface(
    paths: &Paths,
    ns: &str,
    view: &crate::state::NetView,
    a: &crate::state::Attachment,
) -> Result<()> {
    transaction(|undo| {
        let host = Netlink::here()?;
        let peer_ns = netns::open(ns)?;
        host.add_veth(&a.veth, &a.ifname, peer_ns.as_raw_fd())?;
        let v = a.veth.clone();
        undo.push("delete veth", move || {
            Netlink::here()?.del_link(&v).map_err(Into::into)
        });
        // No IPv6 on the host side either: no link-local address, no NDP.
        let key = format!("net.ipv6.conf.{}.disable_ipv6", a.veth);
        net::sysctl(&key, "1")?;
        host.set_link(&a.veth, &bridge_port(view))?;
        let inside = Netlink::in_netns(ns)?;
        inside.set_link(
            &a.ifname,
            &LinkChange {
                mac: Some(ipam::parse_mac(&a.mac)?),
                mtu: view.mtu,
                ..LinkChange::default()
            },
        )?;
        inside.add_addr(&a.ifname, a.ip, view.subnet.prefix)?;
        inside.up(&a.ifname)?;
        endpoint_entry(paths, a, view.net_id, undo)
    })
}

/// The host side of a veth: on the network's bridge, its MTU, up.
fn bridge_port(view: &crate::state::NetView) -> LinkChange {
    LinkChange {
        controller: Some(view.bridge.clone()),
        mtu: view.mtu,
        up: true,
        ..LinkChange::default()
    }
}

/// Like [`attach_interface`], with the peer left in the host namespace as
/// `peer` (MAC set, nothing else) for Docker to move into its sandbox.
fn attach_handoff(
    paths: &Paths,
    view: &crate::state::NetView,
    a: &crate::state::Attachment,
    peer: &str,
) -> Result<()> {
    transaction(|undo| {
        let host = Netlink::here()?;
        let own = std::fs::File::open("/proc/thread-self/ns/net")
            .context("opening this network namespace")?;
        host.add_veth(&a.veth, peer, own.as_raw_fd())?;
        let v = a.veth.clone();
        undo.push("delete veth", move || {
            Netlink::here()?.del_link(&v).map_err(Into::into)
        });
        net::sysctl(&format!("net.ipv6.conf.{}.disable_ipv6", a.veth), "1")?;
        host.set_link(&a.veth, &bridge_port(view))?;
        host.set_link(
            peer,
            &LinkChange {
                mac: Some(ipam::parse_mac(&a.mac)?),
                mtu: view.mtu,
                ..LinkChange::default()
            },
        )?;
        endpoint_entry(paths, a, view.net_id, undo)
    })
}

/// Removes one interface: its map entry, conntrack, program link and veth.
pub fn detach_interface(paths: &Paths, _ns: &str, a: &crate::state::Attachment) -> Result<()> {
    let mut errors = Vec::new();
    if paths.map_pin(maps::ENDPOINTS).exists() {
        if let Err(e) = loader::hash::<u32, Endpoint>(paths, maps::ENDPOINTS).and_then(|mut m| {
            loader::removed(m.remove(&addr_key(a.ip.octets()))).context("removing endpoint")
        }) {
            errors.push(format!("{e:#}"));
        }
        let _ = purge_conntrack(paths, a.ip);
        let _ = purge_allow(paths, a.ip);
    }
    // The veth first: its program goes with it, so dropping the link pin
    // afterwards costs the kernel no second RCU grace period under RTNL.
    if net::link_exists(&a.veth)
        && let Err(e) = Netlink::here().and_then(|nl| nl.del_link(&a.veth))
    {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = loader::detach(paths, &format!("veth-{}", a.veth)) {
        errors.push(format!("{e:#}"));
    }
    ensure!(
        errors.is_empty(),
        "removing interface {} ({}): {}",
        a.ifname,
        a.ip,
        errors.join("; ")
    );
    Ok(())
}

/// The veth program link and the ENDPOINTS entry of one interface (also
/// used to reconcile after a wipe).
fn endpoint_entry(
    paths: &Paths,
    a: &crate::state::Attachment,
    net_id: u32,
    undo: &mut Undo,
) -> Result<()> {
    let link = format!("veth-{}", a.veth);
    if loader::attach_tc(paths, loader::VETH_PROG, &a.veth, &link)? {
        let p = paths.clone();
        undo.push("detach veth program", move || loader::detach(&p, &link));
    }
    let ifindex = net::ifindex(&a.veth)?;
    let mac = ipam::parse_mac(&a.mac).with_context(|| format!("MAC of {}", a.veth))?;
    loader::hash::<u32, Endpoint>(paths, maps::ENDPOINTS)?
        .insert(
            addr_key(a.ip.octets()),
            Endpoint::new(ifindex, mac, net_id),
            0,
        )
        .with_context(|| format!("recording endpoint {}", a.ip))?;
    let (p, ip) = (paths.clone(), a.ip);
    undo.push("remove endpoint", move || {
        loader::hash::<u32, Endpoint>(&p, maps::ENDPOINTS)?
            .remove(&addr_key(ip.octets()))
            .map_err(Into::into)
    });
    Ok(())
}

/// The time now as Docker writes it: RFC 3339 in UTC, with as many
/// fractional digits as needed up to nanoseconds (Go's RFC3339Nano).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// A time written by [`now_rfc3339`], for ordering (unparsable ones first).
pub fn timestamp(t: &str) -> jiff::Timestamp {
    t.parse().unwrap_or(jiff::Timestamp::MIN)
}

/// Seconds since the epoch of a time written by [`now_rfc3339`].
pub fn parse_rfc3339(t: &str) -> Option<i64> {
    t.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

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
struct Waiter {
    exit_path: std::ffi::CString,
    remove: Option<Vec<std::ffi::CString>>,
    pid_r: std::os::fd::OwnedFd,
    pid_w: std::os::fd::OwnedFd,
}

/// What the forked child needs (raw values: used between fork and exec).
struct WaiterFds {
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

/// The session id of a process (field 6 of /proc/PID/stat).
fn session_of(pid: u32) -> Option<u32> {
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

fn kill_session(pid: u32) -> Result<()> {
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
fn kill_all(name: &str, spare: &[u32]) -> Result<()> {
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

/// Deletes the conntrack entries of flows to or from `ip:port` (one mapping).
pub fn purge_port_conntrack(paths: &Paths, ip: Ipv4Addr, port: u16, proto: u8) -> Result<usize> {
    let (a, p) = (addr_key(ip.octets()), port_key(port));
    let mut ct = loader::hash::<CtKey, CtEntry>(paths, maps::CONNTRACK)?;
    let doomed: Vec<CtKey> = ct
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(k, e)| {
            k.proto == proto
                && ((k.saddr == a && k.sport == p)
                    || (k.daddr == a && k.dport == p)
                    || (e.saddr == a && e.sport == p)
                    || (e.daddr == a && e.dport == p))
        })
        .map(|(k, _)| k)
        .collect();
    for k in &doomed {
        let _ = ct.remove(k);
    }
    Ok(doomed.len())
}

/// Deletes every link allowance that involves `ip` (either end of a link).
fn purge_allow(paths: &Paths, ip: Ipv4Addr) -> Result<()> {
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
