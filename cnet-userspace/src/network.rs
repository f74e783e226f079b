//! `cnet network create|ls|inspect|rm|prune|connect|disconnect`: user-defined
//! bridge networks with Docker's options, isolated from each other in the
//! datapath (containers of different networks never talk directly).
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Context, Result, bail, ensure};
use cnet_common::maps::{self, NETWORK_ICC_OFF, NETWORK_INTERNAL, NETWORK_NO_MASQ, NETWORK_ROUTED};
use serde_json::{Value, json};

use crate::{
    container,
    filter::parse_cidr0,
    ipam::{self, Cidr},
    loader, net,
    state::{Attachment, Cidr0, Network, Paths, Phase, State},
    undo::transaction,
};

/// What `cnet network create` was given.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    pub name: String,
    pub driver: Option<String>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub internal: bool,
    pub options: Vec<String>,
    /// `--label KEY[=VALUE]`.
    pub labels: Vec<String>,
    /// `--attachable`: recorded and shown (every cnet network can be joined).
    pub attachable: bool,
    /// `--aux-address NAME=IP`: addresses IPAM never hands out.
    pub aux_addresses: Vec<String>,
}

pub const BUILTIN: &[&str] = &["bridge", "host", "none"];

const OPT_NAME: &str = "com.docker.network.bridge.name";
const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
const OPT_MASQ: &str = "com.docker.network.bridge.enable_ip_masquerade";
const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// Docker's gateway mode: `nat` (default: only published ports and replies
/// reach the containers from outside) or `routed` (direct access).
const OPT_GW_MODE: &str = "com.docker.network.bridge.gateway_mode_ipv4";

fn overlaps(a: Cidr, b: Cidr) -> bool {
    let m = ipam::prefix_mask(a.prefix.min(b.prefix));
    u32::from(a.addr) & m == u32::from(b.addr) & m
}

/// Subnets already taken: the default bridge, other networks, host interfaces.
fn taken(state: &State) -> Result<Vec<Cidr>> {
    let mut v = vec![state.bip];
    v.extend(state.networks.values().map(|n| n.subnet));
    v.extend(net::addr_cidrs()?);
    Ok(v)
}

/// Docker's default pools: 172.17-31.0.0/16 one by one, then 192.168.0.0/16 in /20s.
fn pools(state: &State) -> Vec<(Cidr0, u8)> {
    if !state.pools.is_empty() {
        return state.pools.iter().map(|p| (p.base, p.size)).collect();
    }
    let mut v: Vec<(Cidr0, u8)> = (17..=31)
        .map(|b| {
            (
                Cidr0 {
                    addr: Ipv4Addr::new(172, b, 0, 0),
                    prefix: 16,
                },
                16,
            )
        })
        .collect();
    v.push((
        Cidr0 {
            addr: Ipv4Addr::new(192, 168, 0, 0),
            prefix: 16,
        },
        20,
    ));
    v
}

/// A free subnet from the instance's pools, also avoiding `reserved`
/// (Docker's IPAM pools handed out before their network exists).
pub fn free_subnet(state: &State, reserved: &[Cidr]) -> Result<Cidr> {
    let mut t = taken(state)?;
    t.extend_from_slice(reserved);
    pick_subnet(&pools(state), &t)
}

/// The first pool subnet that overlaps nothing in `taken`.
pub fn pick_subnet(pools: &[(Cidr0, u8)], taken: &[Cidr]) -> Result<Cidr> {
    for (base, size) in pools {
        let count = 1u64 << (size - base.prefix);
        let step = 1u64 << (32 - size);
        let start = u64::from(u32::from(base.addr) & ipam::prefix_mask(base.prefix));
        for i in 0..count {
            let net = Ipv4Addr::from((start + i * step) as u32);
            let gw = Ipv4Addr::from(u32::from(net) + 1);
            let c = Cidr {
                addr: gw,
                prefix: *size,
            };
            if !taken.iter().any(|t| overlaps(*t, c)) {
                return Ok(c);
            }
        }
    }
    bail!("no free subnet left in the address pools: give --subnet")
}

fn bool_opt(key: &str, v: &str) -> Result<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        other => bail!("option {key}={other}: expected true or false"),
    }
}

/// Validates a create request against the state; returns the network to build.
pub fn plan(state: &State, o: &CreateOptions, id: String) -> Result<Network> {
    container::validate_name(&o.name).with_context(|| format!("network name {:?}", o.name))?;
    ensure!(
        !BUILTIN.contains(&o.name.as_str()),
        "network {} is built in",
        o.name
    );
    if state.networks.contains_key(&o.name) {
        return Err(crate::error::conflict(format!(
            "network with name {} already exists",
            o.name
        )));
    }
    if let Some(d) = &o.driver {
        ensure!(
            d == "bridge",
            "driver {d:?} is not supported: cnet networks use the bridge driver"
        );
    }
    let mut options = BTreeMap::new();
    for kv in &o.options {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("option {kv:?}: expected KEY=VALUE"))?;
        ensure!(
            [OPT_NAME, OPT_ICC, OPT_MASQ, OPT_MTU, OPT_GW_MODE].contains(&k),
            "unknown network option {k:?}"
        );
        options.insert(k.to_string(), v.to_string());
    }
    if let Some(m) = options.get(OPT_GW_MODE) {
        ensure!(
            m == "nat" || m == "routed",
            "option {OPT_GW_MODE}={m}: expected nat or routed"
        );
    }
    let icc = options
        .get(OPT_ICC)
        .map(|v| bool_opt(OPT_ICC, v))
        .transpose()?
        .unwrap_or(true);
    let masquerade = options
        .get(OPT_MASQ)
        .map(|v| bool_opt(OPT_MASQ, v))
        .transpose()?
        .unwrap_or(true);
    let mtu = options
        .get(OPT_MTU)
        .map(|v| {
            v.parse::<u32>()
                .ok()
                .filter(|m| (68..=65535).contains(m))
                .with_context(|| format!("option {OPT_MTU}={v}: expected 68-65535"))
        })
        .transpose()?;
    let bridge = match options.get(OPT_NAME) {
        Some(b) => {
            ensure!(
                !b.is_empty()
                    && b.len() <= 15
                    && b.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')),
                "option {OPT_NAME}={b:?}: not a valid interface name (1-15 of [a-zA-Z0-9_.-])"
            );
            ensure!(
                !net::link_exists(b),
                "option {OPT_NAME}={b}: an interface with that name exists"
            );
            b.clone()
        }
        None => format!("br-{}", &id[..12]),
    };
    let taken = taken(state)?;
    let subnet = match &o.subnet {
        Some(s) => {
            let net = parse_cidr0(s).with_context(|| format!("--subnet {s:?}"))?;
            ensure!(
                s.contains('/') && (8..=30).contains(&net.prefix),
                "--subnet {s}: expected ADDRESS/PREFIX with a prefix of 8-30"
            );
            let (raw, _) = crate::ipam::split_cidr(s)?;
            ensure!(
                raw == net.addr,
                "invalid subnet {s}: host bits are set (the network is {}/{})",
                net.addr,
                net.prefix
            );
            crate::ipam::check_usable(net.addr, net.prefix, &format!("--subnet {s}"))?;
            let gw = match &o.gateway {
                Some(g) => g
                    .parse::<Ipv4Addr>()
                    .with_context(|| format!("--gateway {g:?}"))?,
                None => Ipv4Addr::from(u32::from(net.addr) + 1),
            };
            let snet = Cidr {
                addr: net.addr,
                prefix: net.prefix,
            };
            ensure!(
                snet.contains(gw) && gw != snet.network() && gw != snet.broadcast(),
                "--gateway {gw} is not a host address of subnet {s}"
            );
            let c = Cidr {
                addr: gw,
                prefix: net.prefix,
            };
            if let Some(t) = taken.iter().find(|t| overlaps(**t, c)) {
                bail!(
                    "--subnet {s} overlaps {}/{} already in use",
                    t.network(),
                    t.prefix
                );
            }
            c
        }
        None => {
            ensure!(o.gateway.is_none(), "--gateway needs --subnet");
            pick_subnet(&pools(state), &taken)?
        }
    };
    let ip_range = o
        .ip_range
        .as_deref()
        .map(|r| {
            let c = parse_cidr0(r).with_context(|| format!("--ip-range {r:?}"))?;
            ensure!(
                c.prefix >= subnet.prefix && subnet.contains(c.addr),
                "--ip-range {r} is not inside subnet {}/{}",
                subnet.network(),
                subnet.prefix
            );
            Ok(c)
        })
        .transpose()?;
    let mut aux_addresses = BTreeMap::new();
    for a in &o.aux_addresses {
        let (name, ip) = a
            .split_once('=')
            .with_context(|| format!("invalid --aux-address {a:?}: expected NAME=IP"))?;
        ensure!(
            !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control()),
            "invalid --aux-address {a:?}: expected NAME=IP"
        );
        let ip: Ipv4Addr = ip.parse().with_context(|| {
            format!("invalid --aux-address {a:?}: {ip:?} is not an IPv4 address")
        })?;
        ensure!(
            subnet.contains(ip) && ip != subnet.network() && ip != subnet.broadcast(),
            "invalid --aux-address {a}: not a host address of subnet {}/{}",
            subnet.network(),
            subnet.prefix
        );
        ensure!(
            ip != subnet.addr,
            "invalid --aux-address {a}: {ip} is the gateway"
        );
        ensure!(
            !aux_addresses.values().any(|x| *x == ip),
            "invalid --aux-address {a}: {ip} is reserved twice"
        );
        ensure!(
            aux_addresses.insert(name.to_string(), ip).is_none(),
            "invalid --aux-address {a}: name {name} given twice"
        );
    }
    let labels = container::parse_labels(&o.labels)?;
    let net_id = state
        .networks
        .values()
        .map(|n| n.net_id)
        .max()
        .unwrap_or(maps::NETWORK_BRIDGE)
        + 1;
    Ok(Network {
        name: o.name.clone(),
        id,
        net_id,
        bridge,
        subnet,
        ip_range,
        internal: o.internal,
        icc,
        masquerade,
        mtu,
        options,
        created: String::new(),
        phase: Phase::Creating,
        labels,
        attachable: o.attachable,
        aux_addresses,
    })
}

/// The datapath flags of a network.
pub fn flags(n: &Network) -> u32 {
    let mut f = 0;
    if !n.icc {
        f |= NETWORK_ICC_OFF;
    }
    if n.internal {
        f |= NETWORK_INTERNAL;
    }
    if !n.masquerade || n.internal {
        f |= NETWORK_NO_MASQ;
    }
    if n.options.get(OPT_GW_MODE).is_some_and(|m| m == "routed") {
        f |= NETWORK_ROUTED;
    }
    f
}

fn build(paths: &Paths, n: &Network) -> Result<()> {
    transaction(|undo| {
        let created = !net::link_exists(&n.bridge);
        net::ensure_bridge(&n.bridge, &n.subnet.to_string())?;
        if created {
            let b = n.bridge.clone();
            undo.push("delete bridge", move || net::del_link(&b));
        }
        crate::crash::point("network-create:bridge");
        if let Some(m) = n.mtu {
            net::set_mtu(&n.bridge, m)?;
        }
        sync_map(paths, n)
    })
}

pub fn sync_map(paths: &Paths, n: &Network) -> Result<()> {
    loader::hash::<u32, maps::Network>(paths, maps::NETWORKS)?
        .insert(n.net_id, maps::Network { flags: flags(n) }, 0)
        .with_context(|| format!("recording network {}", n.name))?;
    // Its gateway counts as a host address for published ports.
    loader::hash::<u32, u32>(paths, maps::HOST_ADDRS)?
        .insert(cnet_common::addr_key(n.subnet.addr.octets()), 1, 0)
        .with_context(|| format!("recording gateway of {}", n.name))
}

fn teardown(paths: &Paths, state: &mut State, name: &str) -> Result<()> {
    let Some(n) = state.networks.get(name).cloned() else {
        return Ok(());
    };
    let mut errors = Vec::new();
    if net::link_exists(&n.bridge)
        && let Err(e) = net::del_link(&n.bridge)
    {
        errors.push(format!("{e:#}"));
    }
    crate::crash::point("network-rm:bridge-deleted");
    if paths.map_pin(maps::NETWORKS).exists() {
        let _ = loader::hash::<u32, maps::Network>(paths, maps::NETWORKS)
            .map(|mut m| m.remove(&n.net_id));
        let _ = loader::hash::<u32, u32>(paths, maps::HOST_ADDRS)
            .map(|mut m| m.remove(&cnet_common::addr_key(n.subnet.addr.octets())));
    }
    if !errors.is_empty() {
        // Kept, marked as being removed: the next command retries.
        if let Some(n) = state.networks.get_mut(name) {
            n.phase = Phase::Removing;
        }
        bail!("removing network {name}: {}", errors.join("; "));
    }
    state.networks.remove(name);
    Ok(())
}

/// Finishes network creations a killed cnet left half-done.
pub fn recover(paths: &Paths, state: &mut State) -> bool {
    let unfinished: Vec<String> = state
        .networks
        .values()
        .filter(|n| n.phase != Phase::Ready)
        .map(|n| n.name.clone())
        .collect();
    for n in &unfinished {
        let _ = teardown(paths, state, n);
    }
    !unfinished.is_empty()
}

/// `network create`: prints the new network's id.
pub fn create(paths: &Paths, o: &CreateOptions) -> Result<String> {
    let (_lock, mut st) = crate::open(paths)?;
    let mut n = plan(&st, o, container::random_id()?)?;
    n.created = container::now_rfc3339();
    st.networks.insert(n.name.clone(), n.clone());
    crate::state::save(paths, &st)?;
    crate::crash::point("network-create:journaled");
    if let Err(e) = build(paths, &n) {
        let _ = teardown(paths, &mut st, &n.name);
        crate::state::save(paths, &st)?;
        return Err(e);
    }
    n.phase = Phase::Ready;
    let id = n.id.clone();
    st.networks.insert(n.name.clone(), n);
    crate::state::save(paths, &st)?;
    Ok(id)
}

fn in_use(st: &State, name: &str) -> Vec<String> {
    st.containers
        .values()
        .filter(|c| c.network == name || c.extra.iter().any(|a| a.network == name))
        .map(|c| c.name.clone())
        .collect()
}

/// `network rm NAME...`: every name is checked first.
pub fn rm(paths: &Paths, names: &[String]) -> Result<()> {
    let (_lock, mut st) = crate::open(paths)?;
    for n in names {
        ensure!(
            !BUILTIN.contains(&n.as_str()),
            "{n} is a pre-defined network and cannot be removed"
        );
        if !st.networks.contains_key(n) {
            return Err(crate::error::not_found(format!("network {n} not found")));
        }
        let users = in_use(&st, n);
        if !users.is_empty() {
            return Err(crate::error::conflict(format!(
                "network {n} has active endpoints: {}",
                users.join(", ")
            )));
        }
    }
    for n in names {
        if let Some(x) = st.networks.get_mut(n) {
            x.phase = Phase::Removing;
        }
    }
    crate::state::save(paths, &st)?;
    crate::crash::point("network-rm:journaled");
    let mut result = Ok(());
    for n in names {
        if let Err(e) = teardown(paths, &mut st, n) {
            result = Err(e);
        }
    }
    crate::state::save(paths, &st)?;
    result
}

/// `network prune`: removes every user-defined network without containers.
pub fn prune(paths: &Paths) -> Result<Vec<String>> {
    let unused: Vec<String> = {
        let st = crate::state::load_up(paths)?;
        st.networks
            .keys()
            .filter(|n| in_use(&st, n).is_empty())
            .cloned()
            .collect()
    };
    if !unused.is_empty() {
        rm(paths, &unused)?;
    }
    Ok(unused)
}

/// `docker network ls [-q] [--format TEMPLATE]`: columns sized to their
/// content; `-q` full ids' first 12 characters; templates with `{{.ID}}`,
/// `{{.Name}}`, `{{.Driver}}`, `{{.Scope}}`, `{{json .}}`.
pub fn ls(
    st: &State,
    quiet: bool,
    format: Option<&str>,
    filters: &crate::listfilter::ListFilters,
) -> Result<String> {
    use crate::listfilter::NetworkRow;
    let ids: Vec<String> = BUILTIN.iter().map(|n| builtin_id(n)).collect();
    let mut all: Vec<NetworkRow<'_>> = BUILTIN
        .iter()
        .zip(&ids)
        .map(|(n, id)| NetworkRow {
            id,
            name: n,
            driver: match *n {
                "none" => "null",
                other => other,
            },
            labels: None,
            builtin: true,
            containers: in_use(st, n).len(),
        })
        .collect();
    all.extend(st.networks.values().map(|n| NetworkRow {
        id: &n.id,
        name: &n.name,
        driver: "bridge",
        labels: Some(&n.labels),
        builtin: false,
        containers: in_use(st, &n.name).len(),
    }));
    let mut rows = Vec::new();
    for n in &all {
        if filters.network(n)? {
            let net = st.networks.get(n.name);
            rows.push(json!({
                "ID": &n.id[..12],
                "Name": n.name,
                "Driver": n.driver,
                "Scope": "local",
                "IPv6": "false",
                "Internal": net.is_some_and(|x| x.internal).to_string(),
                "CreatedAt": net.map(|x| x.created.clone()).unwrap_or_default(),
                "Labels": n.labels.map(|l| l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")).unwrap_or_default(),
            }));
        }
    }
    if quiet {
        return Ok(rows
            .iter()
            .map(|r| format!("{}\n", r["ID"].as_str().unwrap_or_default()))
            .collect());
    }
    let t = crate::template::Template::parse(
        format.unwrap_or("table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"),
    )?;
    t.render_all(&rows, |f| match f {
        "ID" => "NETWORK ID".into(),
        "CreatedAt" => "CREATED AT".into(),
        other => other.to_uppercase(),
    })
}

fn builtin_id(name: &str) -> String {
    // Stable ids for the built-in networks: the name's bytes in hex, padded.
    let mut s: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    while s.len() < 64 {
        s.push('0');
    }
    s
}

/// `network inspect`, in Docker's field names.
pub fn inspect(st: &State, name: &str) -> Result<Value> {
    let (id, driver, config, internal, options) = match name {
        "bridge" => {
            let mut cfg = json!({"Subnet": format!("{}/{}", st.bip.network(), st.bip.prefix), "Gateway": st.bip.addr.to_string()});
            if let Some(f) = st.fixed_cidr {
                cfg["IPRange"] = json!(format!("{}/{}", f.addr, f.prefix));
            }
            let opts = json!({OPT_NAME: st.bridge, OPT_ICC: st.icc.to_string(), OPT_MASQ: st.masquerade.to_string()});
            (builtin_id(name), "bridge", vec![cfg], false, opts)
        }
        "host" | "none" => (
            builtin_id(name),
            if name == "host" { "host" } else { "null" },
            vec![],
            false,
            json!({}),
        ),
        _ => {
            let n = st
                .networks
                .get(name)
                .ok_or_else(|| crate::error::not_found(format!("network {name} not found")))?;
            let mut cfg = json!({"Subnet": format!("{}/{}", n.subnet.network(), n.subnet.prefix), "Gateway": n.subnet.addr.to_string()});
            if let Some(r) = n.ip_range {
                cfg["IPRange"] = json!(format!("{}/{}", r.addr, r.prefix));
            }
            if !n.aux_addresses.is_empty() {
                cfg["AuxiliaryAddresses"] = json!(n.aux_addresses);
            }
            let mut opts = serde_json::Map::new();
            for (k, v) in &n.options {
                opts.insert(k.clone(), json!(v));
            }
            (
                n.id.clone(),
                "bridge",
                vec![cfg],
                n.internal,
                Value::Object(opts),
            )
        }
    };
    let prefix = st.net(name).map(|v| v.subnet.prefix).unwrap_or(0);
    let mut containers = serde_json::Map::new();
    for c in st.containers.values() {
        if c.network == name {
            containers.insert(
                c.id.clone(),
                json!({"Name": c.name, "EndpointID": c.id, "MacAddress": if c.on_bridge() { c.mac.clone() } else { String::new() },
                       "IPv4Address": if c.on_bridge() { format!("{}/{prefix}", c.ip) } else { String::new() }}),
            );
        }
        for a in c.extra.iter().filter(|a| a.network == name) {
            containers.insert(
                c.id.clone(),
                json!({"Name": c.name, "EndpointID": a.endpoint_id, "MacAddress": a.mac, "IPv4Address": format!("{}/{prefix}", a.ip)}),
            );
        }
    }
    let created = st
        .networks
        .get(name)
        .map(|n| n.created.clone())
        .unwrap_or_default();
    Ok(json!({
        "Name": name,
        "Id": id,
        "Created": created,
        "Driver": driver,
        "Scope": "local",
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": internal,
        "Attachable": st.networks.get(name).is_some_and(|n| n.attachable),
        "Ingress": false,
        "Options": options,
        "Labels": st.networks.get(name).map(|n| json!(n.labels)).unwrap_or(json!({})),
        "Containers": containers,
    }))
}

/// `network connect [--ip IP] [--alias A]... NET CONTAINER`: a further interface.
pub fn connect(
    paths: &Paths,
    net_name: &str,
    ctr: &str,
    ip: Option<&str>,
    aliases: &[String],
) -> Result<Attachment> {
    let (_lock, mut st) = crate::open(paths)?;
    let view = st
        .net(net_name)
        .ok_or_else(|| crate::error::not_found(format!("network {net_name} not found")))?;
    let ctr = st
        .resolve(ctr)
        .map_err(|_| crate::error::not_found(format!("No such container: {ctr}")))?;
    let ctr = ctr.as_str();
    let c = st.containers[ctr].clone();
    ensure!(
        c.on_bridge(),
        "container {ctr} uses network mode {}: it cannot join bridge networks",
        c.network
    );
    ensure!(
        c.network != net_name && !c.extra.iter().any(|a| a.network == net_name),
        "container {ctr} is already connected to network {net_name}"
    );
    for a in aliases {
        container::validate_host_name("--alias", a)?;
    }
    let used = st.taken_ips(net_name);
    let addr = container::choose_ip(&view, ip, &used)?;
    let id = container::random_id()?;
    let a = Attachment {
        network: net_name.to_string(),
        ip: addr,
        mac: ipam::mac_string(ipam::mac_for(addr)),
        veth: format!("veth{}", &id[..7]),
        // The lowest free ethN: after a disconnect of eth1 while eth2 exists,
        // a new connect takes eth1 again, never a name still in use.
        ifname: (1..)
            .map(|n| format!("eth{n}"))
            .find(|n| !c.extra.iter().any(|a| &a.ifname == n))
            .context("no free interface name")?,
        aliases: aliases.to_vec(),
        endpoint_id: id,
        phase: Phase::Creating,
    };
    // Journal first, then build; the next command finishes a killed connect.
    st.containers
        .get_mut(ctr)
        .context("container vanished")?
        .extra
        .push(a.clone());
    crate::state::save(paths, &st)?;
    crate::crash::point("network-connect:journaled");
    if let Err(e) = container::attach_interface(paths, &c.name, &view, &a) {
        if let Some(entry) = st.containers.get_mut(ctr) {
            entry.extra.retain(|x| x.network != net_name);
        }
        crate::state::save(paths, &st)?;
        return Err(e);
    }
    crate::crash::point("network-connect:attached");
    let mut a = a;
    a.phase = Phase::Ready;
    if let Some(x) = attachment_mut(&mut st, ctr, net_name) {
        x.phase = Phase::Ready;
    }
    crate::state::save(paths, &st)?;
    container::sync_hosts(&st);
    Ok(a)
}

/// Container `ctr`'s interface on network `net`, if it has one.
fn attachment_mut<'a>(st: &'a mut State, ctr: &str, net: &str) -> Option<&'a mut Attachment> {
    st.containers
        .get_mut(ctr)?
        .extra
        .iter_mut()
        .find(|x| x.network == net)
}

/// `network disconnect NET CONTAINER`.
///
/// `force` (Docker's `-f`): a failing teardown step does not keep the
/// interface; its errors come back as warnings and the attachment is dropped.
pub fn disconnect(paths: &Paths, net_name: &str, ctr: &str, force: bool) -> Result<Vec<String>> {
    let (_lock, mut st) = crate::open(paths)?;
    if !(BUILTIN.contains(&net_name) || st.networks.contains_key(net_name)) {
        return Err(crate::error::not_found(format!(
            "network {net_name} not found"
        )));
    }
    let ctr = st
        .resolve(ctr)
        .map_err(|_| crate::error::not_found(format!("No such container: {ctr}")))?;
    let ctr = ctr.as_str();
    let c = st.containers[ctr].clone();
    ensure!(
        c.network != net_name,
        "network {net_name} is container {ctr}'s primary network: remove the container instead"
    );
    let a = c
        .extra
        .iter()
        .find(|a| a.network == net_name)
        .cloned()
        .with_context(|| format!("container {ctr} is not connected to network {net_name}"))?;
    if let Some(x) = attachment_mut(&mut st, ctr, net_name) {
        x.phase = Phase::Removing;
    }
    crate::state::save(paths, &st)?;
    crate::crash::point("network-disconnect:journaled");
    let mut warnings = Vec::new();
    if let Err(e) = container::detach_interface(paths, &c.name, &a) {
        if !force {
            return Err(e);
        }
        warnings.push(format!(
            "disconnecting {ctr} from {net_name} (forced): {e:#}"
        ));
    }
    crate::crash::point("network-disconnect:detached");
    if let Some(e) = st.containers.get_mut(ctr) {
        e.extra.retain(|x| x.network != net_name);
    }
    crate::state::save(paths, &st)?;
    container::sync_hosts(&st);
    Ok(warnings)
}

/// Brings every user-defined network back after a wipe (used by `up`).
pub fn reconcile(paths: &Paths, st: &State) -> Result<()> {
    for n in st.networks.values() {
        build(paths, n).with_context(|| format!("restoring network {}", n.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_come_from_the_pools_skipping_taken_ones() {
        let pools = [(
            Cidr0 {
                addr: Ipv4Addr::new(172, 16, 0, 0),
                prefix: 12,
            },
            16,
        )];
        let taken: Vec<Cidr> = vec![
            "172.16.0.1/16".parse().unwrap(),
            "172.17.0.1/16".parse().unwrap(),
            "172.18.5.1/24".parse().unwrap(),
        ];
        assert_eq!(
            pick_subnet(&pools, &taken).unwrap().to_string(),
            "172.19.0.1/16"
        );
        let all: Vec<Cidr> = vec!["172.16.0.1/12".parse().unwrap()];
        assert!(pick_subnet(&pools, &all).is_err());
    }

    #[test]
    fn overlap() {
        let a: Cidr = "10.0.0.1/16".parse().unwrap();
        assert!(overlaps(a, "10.0.5.1/24".parse().unwrap()));
        assert!(!overlaps(a, "10.1.0.1/24".parse().unwrap()));
    }

    #[test]
    fn create_validation_names_the_bad_value() {
        let st: State = serde_json::from_str(
            r#"{"version":1,"bip":"172.17.0.1/16","bridge":"cnet0","uplinks":[],"cgroup":null,"masquerade":true,"containers":{}}"#,
        )
        .unwrap();
        let base = CreateOptions {
            name: "appnet".into(),
            ..Default::default()
        };
        let id = "ab".repeat(32);
        let ok = plan(
            &st,
            &CreateOptions {
                subnet: Some("10.77.0.0/24".into()),
                ..base.clone()
            },
            id.clone(),
        )
        .unwrap();
        assert_eq!(ok.subnet.to_string(), "10.77.0.1/24");
        assert_eq!(ok.bridge, "br-abababababab");
        for (o, needle) in [
            (
                CreateOptions {
                    subnet: Some("172.17.5.0/24".into()),
                    ..base.clone()
                },
                "overlaps",
            ),
            (
                CreateOptions {
                    subnet: Some("10.77.0.0/24".into()),
                    gateway: Some("10.78.0.1".into()),
                    ..base.clone()
                },
                "10.78.0.1",
            ),
            (
                CreateOptions {
                    subnet: Some("10.77.0.0/24".into()),
                    ip_range: Some("10.78.0.0/25".into()),
                    ..base.clone()
                },
                "10.78.0.0/25",
            ),
            (
                CreateOptions {
                    options: vec!["com.docker.network.bridge.enable_icc=maybe".into()],
                    ..base.clone()
                },
                "maybe",
            ),
            (
                CreateOptions {
                    options: vec!["foo=bar".into()],
                    ..base.clone()
                },
                "foo",
            ),
            (
                CreateOptions {
                    driver: Some("overlay".into()),
                    ..base.clone()
                },
                "overlay",
            ),
            (
                CreateOptions {
                    name: "host".into(),
                    ..base.clone()
                },
                "built in",
            ),
            (
                CreateOptions {
                    subnet: Some("10.77.0.0".into()),
                    ..base.clone()
                },
                "10.77.0.0",
            ),
        ] {
            let e = format!("{:#}", plan(&st, &o, id.clone()).unwrap_err());
            assert!(e.contains(needle), "{e}");
        }
    }
}
