//! Read-only views: `ps`, `inspect` (Docker's JSON shape), `port` (Docker's lines), `stats`.
use std::fmt::Write as _;

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

use crate::{
    portspec::Proto,
    state::{Container, State},
};

/// Docker's PORTS column: `0.0.0.0:8080->80/tcp, ...`.
pub fn ports_column(c: &Container) -> String {
    c.ports
        .iter()
        .map(|m| {
            format!(
                "{}:{}->{}/{}",
                m.host_ip_str(),
                m.host_port,
                m.container_port,
                m.proto
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn ps(state: &State, quiet: bool) -> String {
    let mut out = String::new();
    if quiet {
        for name in state.containers.keys() {
            let _ = writeln!(out, "{name}");
        }
        return out;
    }
    let _ = writeln!(
        out,
        "{:<20} {:<15} {:<40} {:<30} STATE",
        "NAME", "IP", "PORTS", "COMMAND"
    );
    for c in state.containers.values() {
        let state = if c.running() { "running" } else { "exited" };
        let _ = writeln!(
            out,
            "{:<20} {:<15} {:<40} {:<30} {state}",
            c.name,
            c.ip,
            ports_column(c),
            c.cmd.join(" ")
        );
    }
    out
}

/// `docker inspect` for one container.
pub fn inspect(state: &State, c: &Container) -> Value {
    let mut ports = Map::new();
    for (p, proto) in &c.exposed {
        let bindings: Vec<Value> = c
            .ports
            .iter()
            .filter(|m| m.container_port == *p && m.proto == *proto)
            .map(|m| json!({"HostIp": m.host_ip_str(), "HostPort": m.host_port.to_string()}))
            .collect();
        ports.insert(
            format!("{p}/{proto}"),
            if bindings.is_empty() {
                Value::Null
            } else {
                Value::Array(bindings)
            },
        );
    }
    let exposed: Map<String, Value> = c
        .exposed
        .iter()
        .map(|(p, proto)| (format!("{p}/{proto}"), json!({})))
        .collect();
    let mut networks = serde_json::Map::new();
    let mut primary = json!({});
    if c.on_bridge() {
        let view = state.net(&c.network);
        let nid = network_id(state, &c.network);
        primary = json!({
            "IPAddress": c.ip.to_string(),
            "IPPrefixLen": view.as_ref().map(|v| v.subnet.prefix).unwrap_or(0),
            "Gateway": view.as_ref().map(|v| v.gateway.to_string()).unwrap_or_default(),
            "MacAddress": c.mac,
            "NetworkID": nid,
            "EndpointID": c.id,
            "Aliases": if view.as_ref().is_some_and(|v| v.user_defined) { json!(aliases(c, &c.aliases)) } else { Value::Null },
        });
        networks.insert(c.network.clone(), primary.clone());
        for a in &c.extra {
            let v = state.net(&a.network);
            networks.insert(
                a.network.clone(),
                json!({
                    "IPAddress": a.ip.to_string(),
                    "IPPrefixLen": v.as_ref().map(|v| v.subnet.prefix).unwrap_or(0),
                    "Gateway": v.as_ref().map(|v| v.gateway.to_string()).unwrap_or_default(),
                    "MacAddress": a.mac,
                    "NetworkID": network_id(state, &a.network),
                    "EndpointID": a.endpoint_id,
                    "Aliases": json!(aliases(c, &a.aliases)),
                }),
            );
        }
    } else if c.network == "host" || c.network == "none" {
        networks.insert(
            c.network.clone(),
            json!({"IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "", "NetworkID": network_id(state, &c.network), "EndpointID": c.id, "Aliases": Value::Null}),
        );
    }
    let field = |k: &str| primary.get(k).cloned().unwrap_or(json!(""));
    json!({
        "Id": c.id,
        "Name": format!("/{}", c.name),
        "Created": c.created,
        "State": {"Running": c.running(), "Pid": c.pid.unwrap_or(0)},
        "Config": {"Cmd": c.cmd, "ExposedPorts": exposed, "Hostname": c.hostname},
        "HostConfig": {"NetworkMode": c.network, "Dns": c.dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
                       "ExtraHosts": c.add_hosts.iter().map(|(h, ip)| format!("{h}:{ip}")).collect::<Vec<_>>()},
        "NetworkSettings": {
            "Ports": ports,
            "IPAddress": field("IPAddress"),
            "IPPrefixLen": primary.get("IPPrefixLen").cloned().unwrap_or(json!(0)),
            "Gateway": field("Gateway"),
            "MacAddress": field("MacAddress"),
            "SandboxKey": if c.owns_netns() { format!("/run/netns/{}", c.name) } else { String::new() },
            "Networks": networks,
        }
    })
}

/// `docker port NAME [PRIVATE_PORT[/PROTO]]`.
pub fn port(c: &Container, filter: Option<&str>) -> Result<String> {
    let mut out = String::new();
    match filter {
        None => {
            for m in &c.ports {
                let _ = writeln!(out, "{m}");
            }
        }
        Some(f) => {
            let (p, proto) = match f.split_once('/') {
                Some((p, proto)) => (p, proto.parse::<Proto>()?),
                None => (f, Proto::Tcp),
            };
            let p: u16 = p
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid port {p:?}"))?;
            let hits: Vec<_> = c
                .ports
                .iter()
                .filter(|m| m.container_port == p && m.proto == proto)
                .collect();
            if hits.is_empty() {
                bail!("no public port '{p}/{proto}' published for {}", c.name);
            }
            for m in hits {
                let _ = writeln!(out, "{}:{}", m.host_ip_str(), m.host_port);
            }
        }
    }
    Ok(out)
}

fn network_id(state: &State, name: &str) -> String {
    crate::network::inspect(state, name)
        .ok()
        .and_then(|v| v["Id"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Docker lists a container's aliases on a user-defined network with its short id.
fn aliases(c: &Container, extra: &[String]) -> Vec<String> {
    let mut v = extra.to_vec();
    v.push(c.id[..12].to_string());
    v
}

/// Every counter by name, and the packets of each filter rule by id
/// (`cnet stats --json` and the daemon's `GET /stats`).
pub fn stats_json(paths: &crate::state::Paths, st: &State) -> anyhow::Result<Value> {
    let mut m: serde_json::Map<String, Value> = crate::loader::counters(paths)?
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.into()))
        .collect();
    let f: serde_json::Map<String, Value> = crate::filter::counters(paths, st)?
        .into_iter()
        .map(|(id, v)| (id.to_string(), v.into()))
        .collect();
    m.insert("filters".into(), f.into());
    Ok(Value::Object(m))
}
