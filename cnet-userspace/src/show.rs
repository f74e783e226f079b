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
    let gateway = state.bip.addr.to_string();
    let endpoint = json!({
        "IPAddress": c.ip.to_string(),
        "IPPrefixLen": state.bip.prefix,
        "Gateway": gateway,
        "MacAddress": c.mac,
        "NetworkID": "bridge",
        "EndpointID": c.id,
        "Aliases": Value::Null,
    });
    json!({
        "Id": c.id,
        "Name": format!("/{}", c.name),
        "Created": c.created,
        "State": {"Running": c.running(), "Pid": c.pid.unwrap_or(0)},
        "Config": {"Cmd": c.cmd, "ExposedPorts": exposed},
        "NetworkSettings": {
            "Ports": ports,
            "IPAddress": c.ip.to_string(),
            "IPPrefixLen": state.bip.prefix,
            "Gateway": gateway,
            "MacAddress": c.mac,
            "SandboxKey": format!("/run/netns/{}", c.name),
            "Networks": {"bridge": endpoint},
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
