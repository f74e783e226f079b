//! The CNI plugin (`cnet-cni`, spec 1.0.0 and 1.1.0): a runtime (podman,
//! containerd, the reference `cnitool`) hands cnet a network namespace and
//! cnet attaches it to one of its networks as a container of its own: same
//! lock, state, IPAM, maps and policy as `cnet run`, so `cnet ps` lists it.
//! `runtimeConfig.portMappings` become published ports.
use std::{collections::BTreeMap, io::Read, net::Ipv4Addr, path::PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    container::{self, RunOptions},
    state::{self, CniAttachment, Paths},
};

pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The spec's error codes.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// Plugin-specific (100+): ADD for an interface already added.
    pub const EXISTS: u32 = 100;
}

/// A failure in the spec's shape.
#[derive(Debug)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn to_json(&self, version: &str) -> Value {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
    }
}

fn io_err(what: &str, e: anyhow::Error) -> CniError {
    CniError::new(code::IO, what, format!("{e:#}"))
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PortMapping {
    host_port: u16,
    container_port: u16,
    protocol: Option<String>,
    #[serde(rename = "hostIP")]
    host_ip: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RuntimeConfig {
    port_mappings: Vec<PortMapping>,
}

/// The network configuration on stdin (one plugin entry of a conflist,
/// with the list's `cniVersion` and `name`).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct NetConf {
    cni_version: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    /// The cnet instance's root (default `/var/lib/cnet`).
    root: Option<PathBuf>,
    /// The cnet network to join: `bridge` (default) or a user-defined one,
    /// created with the options below when missing.
    network: Option<String>,
    subnet: Option<String>,
    gateway: Option<String>,
    icc: Option<bool>,
    ip_masq: Option<bool>,
    mtu: Option<u32>,
    internal: bool,
    runtime_config: RuntimeConfig,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Value>>,
    // Accepted and not used by cnet.
    capabilities: Option<Value>,
    args: Option<Value>,
    ipam: Option<Value>,
    dns: Option<Value>,
    #[serde(rename = "cni.dev/attachments")]
    attachments: Option<Value>,
}

/// What the runtime put in the environment.
#[derive(Debug, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
}

impl Env {
    pub fn from_process() -> Self {
        let v = |k: &str| std::env::var(k).unwrap_or_default();
        Self {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
        }
    }
}

/// Runs one plugin call: `Ok` is the JSON to print (if any), `Err` the
/// error JSON's content; the version to answer with is returned either way.
pub fn handle(env: &Env, stdin: &mut impl Read) -> (String, Result<Option<Value>, CniError>) {
    if env.command == "VERSION" {
        return (
            "1.1.0".into(),
            Ok(Some(
                json!({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED}),
            )),
        );
    }
    let mut text = String::new();
    if let Err(e) = stdin.read_to_string(&mut text) {
        return (
            "1.1.0".into(),
            Err(CniError::new(
                code::IO,
                "reading the network configuration",
                e.to_string(),
            )),
        );
    }
    let conf: NetConf = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            return (
                "1.1.0".into(),
                Err(CniError::new(
                    code::DECODE,
                    "the network configuration is not valid JSON for cnet",
                    e.to_string(),
                )),
            );
        }
    };
    let version = if conf.cni_version.is_empty() {
        "1.1.0".to_string()
    } else {
        conf.cni_version.clone()
    };
    if !SUPPORTED.contains(&version.as_str()) {
        return (
            "1.1.0".into(),
            Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {version:?} is not supported"),
                format!("supported: {}", SUPPORTED.join(", ")),
            )),
        );
    }
    let r = dispatch(env, &conf, &version);
    (version, r)
}

fn dispatch(env: &Env, conf: &NetConf, version: &str) -> Result<Option<Value>, CniError> {
    if conf.kind != "cnet" {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("plugin type {:?} is not cnet", conf.kind),
            "",
        ));
    }
    let paths = Paths::new(conf.root.clone().unwrap_or_else(|| "/var/lib/cnet".into()));
    let need = |v: &str, name: &str| {
        if v.is_empty() {
            Err(CniError::new(
                code::INVALID_ENV,
                format!("{name} is not set"),
                "",
            ))
        } else {
            Ok(())
        }
    };
    match env.command.as_str() {
        "ADD" => {
            need(&env.container_id, "CNI_CONTAINERID")?;
            need(&env.netns, "CNI_NETNS")?;
            need(&env.ifname, "CNI_IFNAME")?;
            add(&paths, env, conf, version).map(Some)
        }
        "DEL" => {
            need(&env.container_id, "CNI_CONTAINERID")?;
            need(&env.ifname, "CNI_IFNAME")?;
            del(&paths, env).map(|()| None)
        }
        "CHECK" => {
            need(&env.container_id, "CNI_CONTAINERID")?;
            need(&env.netns, "CNI_NETNS")?;
            need(&env.ifname, "CNI_IFNAME")?;
            check(&paths, env).map(|()| None)
        }
        "STATUS" => status(&paths).map(|()| None),
        "GC" => gc(&paths, conf).map(|()| None),
        "" => Err(CniError::new(
            code::INVALID_ENV,
            "CNI_COMMAND is not set",
            "",
        )),
        other => Err(CniError::new(
            code::INVALID_ENV,
            format!("unknown CNI_COMMAND {other:?}"),
            "ADD, DEL, CHECK, STATUS, GC or VERSION",
        )),
    }
}

/// The cnet container name of a runtime's container interface.
fn name_of(container_id: &str, ifname: &str) -> String {
    let clean: String = container_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let h = container_id
        .bytes()
        .chain(ifname.bytes())
        .fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
    format!("cni-{clean}-{:06x}", h & 0xff_ffff)
}

fn find<'a>(st: &'a state::State, env: &Env) -> Option<&'a state::Container> {
    st.containers.values().find(|c| {
        c.cni
            .as_ref()
            .is_some_and(|a| a.container_id == env.container_id && a.ifname == env.ifname)
    })
}

fn ensure_network(paths: &Paths, conf: &NetConf, network: &str) -> Result<(), CniError> {
    if crate::network::BUILTIN.contains(&network) {
        return Ok(());
    }
    let st = state::load(paths)
        .map_err(|e| io_err("reading cnet's state", e))?
        .ok_or_else(|| not_up(paths))?;
    if st.networks.contains_key(network) {
        return Ok(());
    }
    let mut options = Vec::new();
    if let Some(icc) = conf.icc {
        options.push(format!("com.docker.network.bridge.enable_icc={icc}"));
    }
    if let Some(m) = conf.ip_masq {
        options.push(format!(
            "com.docker.network.bridge.enable_ip_masquerade={m}"
        ));
    }
    if let Some(m) = conf.mtu {
        options.push(format!("com.docker.network.driver.mtu={m}"));
    }
    let o = crate::network::CreateOptions {
        name: network.to_string(),
        subnet: conf.subnet.clone(),
        gateway: conf.gateway.clone(),
        internal: conf.internal,
        options,
        labels: vec!["io.cnet.cni=true".into()],
        ..Default::default()
    };
    match crate::network::create(paths, &o) {
        Ok(_) => Ok(()),
        // Created by a parallel ADD in the meantime.
        Err(_)
            if state::load(paths)
                .ok()
                .flatten()
                .is_some_and(|s| s.networks.contains_key(network)) =>
        {
            Ok(())
        }
        Err(e) => Err(CniError::new(
            code::INVALID_CONFIG,
            format!("creating cnet network {network}"),
            format!("{e:#}"),
        )),
    }
}

fn not_up(paths: &Paths) -> CniError {
    CniError::new(
        code::TRY_AGAIN,
        format!("cnet is not up for root {}", paths.root.display()),
        "run `cnet up` first",
    )
}

fn add(paths: &Paths, env: &Env, conf: &NetConf, version: &str) -> Result<Value, CniError> {
    if !std::path::Path::new(&env.netns).exists() {
        return Err(CniError::new(
            code::IO,
            format!("network namespace {} does not exist", env.netns),
            "",
        ));
    }
    let network = conf.network.clone().unwrap_or_else(|| "bridge".into());
    if network == "host" || network == "none" || network.starts_with("container:") {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("network {network:?}: the CNI plugin attaches to bridge networks only"),
            "",
        ));
    }
    ensure_network(paths, conf, &network)?;
    let mut publish = Vec::new();
    for p in &conf.runtime_config.port_mappings {
        let proto = p.protocol.as_deref().unwrap_or("tcp").to_ascii_lowercase();
        if proto != "tcp" && proto != "udp" {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!("portMappings protocol {proto:?}: cnet publishes tcp and udp"),
                "",
            ));
        }
        let ip = match p.host_ip.as_deref() {
            None | Some("") | Some("0.0.0.0") => String::new(),
            Some(ip) => format!("{ip}:"),
        };
        publish.push(format!("{ip}{}:{}/{proto}", p.host_port, p.container_port));
    }
    let name = name_of(&env.container_id, &env.ifname);
    let (_lock, mut st) = crate::open(paths).map_err(|e| {
        if state::load(paths).ok().flatten().is_none() {
            not_up(paths)
        } else {
            io_err("opening cnet's state", e)
        }
    })?;
    if find(&st, env).is_some() {
        return Err(CniError::new(
            code::EXISTS,
            format!(
                "container {} already has interface {} on cnet",
                env.container_id, env.ifname
            ),
            "DEL it first",
        ));
    }
    let opts = RunOptions {
        name: Some(name.clone()),
        network: Some(network.clone()),
        publish,
        labels: vec![
            "io.cnet.runtime=cni".into(),
            format!("io.cnet.cni.containerid={}", env.container_id),
        ],
        cni: Some(CniAttachment {
            container_id: env.container_id.clone(),
            netns: env.netns.clone(),
            ifname: env.ifname.clone(),
            network: conf.name.clone(),
            handoff: None,
        }),
        ..Default::default()
    };
    let planned = container::plan(&st, &opts).map_err(|e| {
        CniError::new(
            code::INVALID_CONFIG,
            "planning the container's network",
            format!("{e:#}"),
        )
    })?;
    let c = crate::create_attached(paths, &mut st, planned)
        .map_err(|e| io_err("attaching the container", e))?;
    let view = st.net(&network).ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("network {network} vanished"),
            "",
        )
    })?;
    let host_mac = crate::net::mac(&c.veth)
        .map(crate::ipam::mac_string)
        .unwrap_or_default();
    let mut result = json!({
        "cniVersion": version,
        "interfaces": [
            {"name": c.veth, "mac": host_mac},
            {"name": env.ifname, "mac": c.mac, "sandbox": env.netns},
        ],
        "ips": [{
            "address": format!("{}/{}", c.ip, view.subnet.prefix),
            "gateway": view.gateway.to_string(),
            "interface": 1,
        }],
        "routes": [{"dst": "0.0.0.0/0", "gw": view.gateway.to_string()}],
        "dns": {},
    });
    if version.starts_with("0.3") {
        result["ips"][0]["version"] = json!("4");
    }
    // Chained after other plugins: their interfaces and DNS come along.
    if let Some(prev) = &conf.prev_result {
        merge_prev(&mut result, prev);
    }
    Ok(result)
}

fn merge_prev(result: &mut Value, prev: &Value) {
    if let (Some(mine), Some(theirs)) = (
        result["interfaces"].as_array().cloned(),
        prev["interfaces"].as_array(),
    ) {
        let offset = theirs.len();
        let mut all = theirs.clone();
        all.extend(mine);
        result["interfaces"] = Value::Array(all);
        if let Some(ips) = result["ips"].as_array_mut() {
            for ip in ips.iter_mut() {
                if let Some(i) = ip["interface"].as_u64() {
                    ip["interface"] = json!(i as usize + offset);
                }
            }
        }
        if let Some(prev_ips) = prev["ips"].as_array() {
            let mut ips = prev_ips.clone();
            ips.extend(result["ips"].as_array().cloned().unwrap_or_default());
            result["ips"] = Value::Array(ips);
        }
    }
    if prev["dns"].is_object() {
        result["dns"] = prev["dns"].clone();
    }
}

fn del(paths: &Paths, env: &Env) -> Result<(), CniError> {
    // DEL is idempotent: no instance, no container, no namespace: done.
    if state::load(paths).ok().flatten().is_none() {
        return Ok(());
    }
    let (_lock, mut st) = crate::open(paths).map_err(|e| io_err("opening cnet's state", e))?;
    let Some(name) = find(&st, env).map(|c| c.name.clone()) else {
        return Ok(());
    };
    container::teardown(paths, &mut st, &name)
        .map_err(|e| io_err("removing the container's interface", e))?;
    state::save(paths, &st).map_err(|e| io_err("saving cnet's state", e))
}

fn check(paths: &Paths, env: &Env) -> Result<(), CniError> {
    let st = state::load(paths)
        .map_err(|e| io_err("reading cnet's state", e))?
        .ok_or_else(|| not_up(paths))?;
    let c = find(&st, env).ok_or_else(|| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "container {} has no interface {} on cnet",
                env.container_id, env.ifname
            ),
            "",
        )
    })?;
    let fail = |what: String| CniError::new(code::IO, what, "");
    let ifname = env.ifname.clone();
    let addrs = crate::host::netns::within(&c.name, move || -> anyhow::Result<Vec<Ipv4Addr>> {
        let nl = crate::host::netlink::Netlink::here()?;
        let index = nl.index(&ifname)?;
        Ok(nl
            .addrs4()?
            .into_iter()
            .filter(|a| a.index == index)
            .map(|a| a.addr)
            .collect())
    })
    .map_err(|e| fail(format!("entering the namespace of {}: {e}", c.name)))?
    .map_err(|e| fail(format!("interface {} in {}: {e:#}", env.ifname, env.netns)))?;
    if !addrs.contains(&c.ip) {
        return Err(fail(format!(
            "interface {} has {addrs:?}, not {}",
            env.ifname, c.ip
        )));
    }
    let eps = crate::loader::hash::<u32, cnet_common::maps::Endpoint>(
        paths,
        cnet_common::maps::ENDPOINTS,
    )
    .map_err(|e| io_err("opening the ENDPOINTS map", e))?;
    if eps.get(&cnet_common::addr_key(c.ip.octets()), 0).is_err() {
        return Err(fail(format!("no datapath endpoint for {}", c.ip)));
    }
    let ports = crate::loader::hash::<cnet_common::maps::PortKey, cnet_common::maps::PortValue>(
        paths,
        cnet_common::maps::PORTS,
    )
    .map_err(|e| io_err("opening the PORTS map", e))?;
    for m in &c.ports {
        let (k, _) = container::port_entry(m, c.ip);
        if ports.get(&k, 0).is_err() {
            return Err(fail(format!(
                "published port {m} is missing from the datapath"
            )));
        }
    }
    Ok(())
}

fn status(paths: &Paths) -> Result<(), CniError> {
    let up = state::load(paths).ok().flatten().is_some()
        && paths.map_pin(cnet_common::maps::ENDPOINTS).exists();
    if up {
        Ok(())
    } else {
        Err(CniError::new(
            code::NOT_AVAILABLE,
            format!("cnet is not up for root {}", paths.root.display()),
            "run `cnet up`",
        ))
    }
}

/// GC: removes this network's CNI attachments the runtime no longer lists.
fn gc(paths: &Paths, conf: &NetConf) -> Result<(), CniError> {
    if state::load(paths).ok().flatten().is_none() {
        return Ok(());
    }
    let valid: Vec<(String, String)> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| {
            (
                a["containerID"].as_str().unwrap_or_default().to_string(),
                a["ifname"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let (_lock, mut st) = crate::open(paths).map_err(|e| io_err("opening cnet's state", e))?;
    let stale: Vec<String> = st
        .containers
        .values()
        .filter(|c| {
            c.cni.as_ref().is_some_and(|a| {
                a.network == conf.name
                    && !valid
                        .iter()
                        .any(|(id, ifn)| *id == a.container_id && *ifn == a.ifname)
            })
        })
        .map(|c| c.name.clone())
        .collect();
    let mut errors = BTreeMap::new();
    for n in &stale {
        if let Err(e) = container::teardown(paths, &mut st, n) {
            errors.insert(n.clone(), format!("{e:#}"));
        }
    }
    state::save(paths, &st).map_err(|e| io_err("saving cnet's state", e))?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::IO,
            "removing stale attachments",
            format!("{errors:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(command: &str, stdin: &str) -> (String, Result<Option<Value>, CniError>) {
        let env = Env {
            command: command.into(),
            ..Env::default()
        };
        handle(&env, &mut stdin.as_bytes())
    }

    #[test]
    fn version_bad_json_unknown_version_and_missing_env_answer_with_spec_codes() {
        let (_, r) = call("VERSION", "");
        assert_eq!(r.unwrap().unwrap()["supportedVersions"][4], "1.1.0");
        let (_, r) = call("ADD", "{not json");
        assert_eq!(r.unwrap_err().code, code::DECODE);
        let (_, r) = call(
            "ADD",
            r#"{"cniVersion": "9.9.9", "name": "n", "type": "cnet"}"#,
        );
        let e = r.unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("9.9.9"), "{}", e.msg);
        let (_, r) = call(
            "ADD",
            r#"{"cniVersion": "1.0.0", "name": "n", "type": "cnet"}"#,
        );
        let e = r.unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("CNI_CONTAINERID"), "{}", e.msg);
        let (_, r) = call(
            "ADD",
            r#"{"cniVersion": "1.0.0", "name": "n", "type": "bridge"}"#,
        );
        assert_eq!(r.unwrap_err().code, code::INVALID_CONFIG);
        let (_, r) = call(
            "FROB",
            r#"{"cniVersion": "1.0.0", "name": "n", "type": "cnet"}"#,
        );
        assert_eq!(r.unwrap_err().code, code::INVALID_ENV);
        let (v, r) = call(
            "DEL",
            r#"{"cniVersion": "1.0.0", "name": "n", "type": "cnet", "root": "/nonexistent/cnet"}"#,
        );
        assert_eq!(v, "1.0.0");
        let env = Env {
            command: "DEL".into(),
            container_id: "abc".into(),
            ifname: "eth0".into(),
            ..Env::default()
        };
        assert!(r.is_err(), "DEL without CNI_CONTAINERID is refused");
        let (_, r) = handle(
            &env,
            &mut r#"{"cniVersion": "1.0.0", "name": "n", "type": "cnet", "root": "/nonexistent/cnet"}"#.as_bytes(),
        );
        assert!(r.is_ok(), "DEL of something never added succeeds");
    }

    #[test]
    fn names_are_stable_and_distinct_per_interface() {
        assert_eq!(
            name_of("abcdef0123456789", "eth0"),
            name_of("abcdef0123456789", "eth0")
        );
        assert_ne!(
            name_of("abcdef0123456789", "eth0"),
            name_of("abcdef0123456789", "eth1")
        );
        assert!(name_of("x/y", "eth0").starts_with("cni-xy-"));
    }
}
