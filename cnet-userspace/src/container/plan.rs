//! Planning a container: validating a `run` and deciding name, id, network, address, ports and links without touching the system.
use std::{fs, net::Ipv4Addr};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    ipam, net,
    state::{Container, Phase, State},
};

use super::*;

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

/// Checks `--link NAME[:ALIAS]` values: the target must exist.
pub(crate) fn plan_links(state: &State, specs: &[String]) -> Result<Vec<(String, String)>> {
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
pub(crate) fn link_env(
    state: &State,
    name: &str,
    links: &[(String, String)],
) -> Vec<(String, String)> {
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
