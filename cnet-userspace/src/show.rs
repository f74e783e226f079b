//! Read-only views: `ps`, `inspect` (Docker's JSON shape), `port` (Docker's lines), `stats`.
use std::fmt::Write as _;

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

use crate::{
    portspec::Proto,
    state::{Container, State},
};

/// Docker's PORTS column: `0.0.0.0:8080->80/tcp, ...`.
/// Docker's PORTS column: `0.0.0.0:8080->80/tcp`, consecutive mappings
/// collapsed into ranges (`0.0.0.0:8000-8010->80-90/tcp`).
pub fn ports_column(c: &Container) -> String {
    let mut ms: Vec<&crate::portspec::PortMapping> = c.ports.iter().collect();
    ms.sort_by_key(|m| (m.host_ip_str(), m.proto.to_string(), m.host_port));
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ms.len() {
        let first = ms[i];
        let mut last = first;
        while i + 1 < ms.len() {
            let n = ms[i + 1];
            let next = n.host_ip_str() == first.host_ip_str()
                && n.proto == first.proto
                && u32::from(n.host_port) == u32::from(last.host_port) + 1
                && u32::from(n.container_port) == u32::from(last.container_port) + 1;
            if !next {
                break;
            }
            last = n;
            i += 1;
        }
        out.push(if last.host_port == first.host_port {
            format!(
                "{}:{}->{}/{}",
                first.host_ip_str(),
                first.host_port,
                first.container_port,
                first.proto
            )
        } else {
            format!(
                "{}:{}-{}->{}-{}/{}",
                first.host_ip_str(),
                first.host_port,
                last.host_port,
                first.container_port,
                last.container_port,
                first.proto
            )
        });
        i += 1;
    }
    out.join(", ")
}

/// Docker's COMMAND column: quoted, cut at 20 characters with an ellipsis.
fn command_column(c: &Container) -> String {
    let full = c.cmd.join(" ");
    let cut: String = if full.chars().count() > 20 {
        full.chars().take(19).collect::<String>() + "…"
    } else {
        full
    };
    format!("\"{cut}\"")
}

/// Docker's STATUS column: `Up 5 seconds`, `Exited (3) 2 minutes ago`.
pub fn status_column(c: &Container) -> String {
    let now = jiff::Timestamp::now().as_second();
    if c.running() {
        let since = crate::container::parse_rfc3339(&c.created).unwrap_or(now);
        return format!("Up {}", human_duration(now - since));
    }
    match c.exit {
        Some(e) => format!(
            "Exited ({}) {} ago",
            e.code,
            human_duration(now - e.at as i64)
        ),
        None => "Exited".into(),
    }
}

/// Docker's `units.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{d} days"),
        _ if h < 24 * 30 * 2 => format!("{} weeks", d / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", d / 30),
        _ => format!("{} years", d / 365),
    }
}

/// One `cnet ps` row's fields, by Docker's template names.
fn ps_fields(c: &Container) -> Value {
    let now = jiff::Timestamp::now().as_second();
    let created = crate::container::parse_rfc3339(&c.created).unwrap_or(now);
    let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "ID": c.id.chars().take(12).collect::<String>(),
        "Command": command_column(c),
        "CreatedAt": c.created,
        "RunningFor": format!("{} ago", human_duration(now - created)),
        "State": crate::listfilter::status_of(c),
        "Status": status_column(c),
        "Ports": ports_column(c),
        "Names": c.name,
        "Networks": std::iter::once(c.network.clone())
            .chain(c.extra.iter().map(|a| a.network.clone()))
            .collect::<Vec<_>>()
            .join(","),
        "Labels": labels.join(","),
    })
}

/// `inspect` output: the objects as an indented JSON array, or a template
/// applied to each, one line each (`-f`), as Docker prints them.
pub fn objects(v: &[Value], format: Option<&str>) -> anyhow::Result<String> {
    match format {
        None => Ok(serde_json::to_string_pretty(v)? + "\n"),
        Some(f) => {
            let t = crate::template::Template::parse(f)?;
            let mut out = String::new();
            for o in v {
                out.push_str(&t.render(o)?);
                out.push('\n');
            }
            Ok(out)
        }
    }
}

/// Docker's column titles for `table` formats.
pub fn header(field: &str) -> String {
    match field {
        "ID" => "CONTAINER ID".into(),
        "RunningFor" => "CREATED".into(),
        "CreatedAt" => "CREATED AT".into(),
        other => other.to_uppercase(),
    }
}

/// Docker's default `ps` table.
const PS_TABLE: &str =
    "table {{.ID}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

/// `docker ps`: running containers (all with `all`), by creation; `quiet`
/// prints short ids; `format` a template per container.
pub fn ps(
    state: &State,
    all: bool,
    quiet: bool,
    format: Option<&str>,
    filters: &crate::listfilter::ListFilters,
) -> anyhow::Result<String> {
    // As Docker: filtering on status or exit code looks at every container.
    let all = all || filters.contains("status") || filters.contains("exited");
    let mut cs: Vec<&Container> = Vec::new();
    for c in state.containers.values().filter(|c| all || c.running()) {
        if filters.container(state, c)? {
            cs.push(c);
        }
    }
    cs.sort_by_key(|c| {
        (
            std::cmp::Reverse(crate::container::timestamp(&c.created)),
            c.name.clone(),
        )
    });
    let mut out = String::new();
    if quiet {
        for c in cs {
            let _ = writeln!(out, "{}", c.id.chars().take(12).collect::<String>());
        }
        return Ok(out);
    }
    let t = crate::template::Template::parse(format.unwrap_or(PS_TABLE))?;
    let rows: Vec<Value> = cs.iter().map(|c| ps_fields(c)).collect();
    t.render_all(&rows, header)
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
    let running = c.running();
    let mut bindings = Map::new();
    for m in &c.ports {
        let key = format!("{}/{}", m.container_port, m.proto);
        let entry = bindings.entry(key).or_insert_with(|| json!([]));
        if let Some(a) = entry.as_array_mut() {
            a.push(json!({
                "HostIp": m.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                "HostPort": m.host_port.to_string()
            }));
        }
    }
    let env: Vec<String> = c
        .user_env
        .iter()
        .chain(c.env.iter())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    json!({
        "Id": c.id,
        "Name": format!("/{}", c.name),
        "Created": c.created,
        "Path": c.cmd.first().cloned().unwrap_or_default(),
        "Args": c.cmd.iter().skip(1).cloned().collect::<Vec<_>>(),
        "State": {
            "Status": if running { "running" } else { "exited" },
            "Running": running,
            "Pid": if running { c.own_pid().unwrap_or(0) } else { 0 },
            "ExitCode": c.exit.map_or(0, |e| e.code),
            "StartedAt": c.created,
            "FinishedAt": c.exit
                .and_then(|e| jiff::Timestamp::from_second(e.at as i64).ok())
                .map_or_else(|| "0001-01-01T00:00:00Z".to_string(), |t| t.to_string()),
        },
        "Config": {"Cmd": c.cmd, "Env": env, "Labels": c.labels, "ExposedPorts": exposed, "Hostname": c.hostname},
        "HostConfig": {"NetworkMode": c.network, "PortBindings": bindings,
                       "Links": c.links.iter().map(|(t, a)| format!("/{t}:/{}/{a}", c.name)).collect::<Vec<_>>(),
                       "Dns": c.dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
                       "DnsSearch": c.dns_search, "DnsOptions": c.dns_options,
                       "AutoRemove": c.auto_remove,
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
    let u = crate::observe::counters::usage(paths)?;
    m.insert("conntrack_entries".into(), u.conntrack_entries.into());
    m.insert("conntrack_capacity".into(), u.conntrack_capacity.into());
    m.insert(
        "masquerade_ports_in_use".into(),
        serde_json::to_value(&u.masquerade_ports_in_use)?,
    );
    m.insert(
        "masquerade_port_range".into(),
        u.masquerade_port_range.into(),
    );
    Ok(Value::Object(m))
}

/// `cnet port --stats` and `cnet stats --by port`: one row per published port.
pub fn port_stats(ports: &[crate::observe::PortCounters]) -> String {
    let mut out = format!(
        "{:<20} {:<28} {:>10} {:>12} {:>10} {:>12} {:>8}\n",
        "CONTAINER", "PORT", "PKTS IN", "BYTES IN", "PKTS OUT", "BYTES OUT", "CONNS"
    );
    for p in ports {
        out.push_str(&format!(
            "{:<20} {:<28} {:>10} {:>12} {:>10} {:>12} {:>8}\n",
            p.container,
            p.mapping,
            p.packets_in,
            p.bytes_in,
            p.packets_out,
            p.bytes_out,
            p.connections
        ));
    }
    out
}

/// `cnet stats --by container`: traffic and drops by reason per container.
pub fn container_stats(cs: &[crate::observe::ContainerStats]) -> String {
    let mut out = format!(
        "{:<20} {:>10} {:>12} {:>10} {:>12}  DROPS\n",
        "CONTAINER", "PKTS IN", "BYTES IN", "PKTS OUT", "BYTES OUT"
    );
    for c in cs {
        let drops: Vec<String> = c
            .drops
            .iter()
            .map(|(r, n)| format!("{}={n}", r.strip_prefix("drop_").unwrap_or(r)))
            .collect();
        out.push_str(&format!(
            "{:<20} {:>10} {:>12} {:>10} {:>12}  {}\n",
            c.name,
            c.packets_in,
            c.bytes_in,
            c.packets_out,
            c.bytes_out,
            if drops.is_empty() {
                "-".to_string()
            } else {
                drops.join(" ")
            }
        ));
    }
    out
}

/// Named counters (by `cnet stats` name, per container `name.packets_in`...,
/// per port `name port.packets_in`...) as one flat list, for rates.
fn flat(
    paths: &crate::state::Paths,
    st: &State,
    by: Option<&str>,
) -> anyhow::Result<Vec<(String, u64)>> {
    Ok(match by {
        Some("container") => crate::observe::counters::containers(paths, st)?
            .into_iter()
            .flat_map(|c| {
                let mut v = vec![
                    (format!("{} packets_in", c.name), c.packets_in),
                    (format!("{} bytes_in", c.name), c.bytes_in),
                    (format!("{} packets_out", c.name), c.packets_out),
                    (format!("{} bytes_out", c.name), c.bytes_out),
                ];
                v.extend(
                    c.drops
                        .into_iter()
                        .map(|(r, n)| (format!("{} {r}", c.name), n)),
                );
                v
            })
            .collect(),
        Some(_) => crate::observe::counters::ports(paths, st, None)?
            .into_iter()
            .flat_map(|p| {
                let who = format!("{} {}", p.container, p.mapping);
                vec![
                    (format!("{who} packets_in"), p.packets_in),
                    (format!("{who} bytes_in"), p.bytes_in),
                    (format!("{who} packets_out"), p.packets_out),
                    (format!("{who} bytes_out"), p.bytes_out),
                    (format!("{who} connections"), p.connections),
                ]
            })
            .collect(),
        None => crate::loader::counters(paths)?
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
    })
}

/// `cnet stats --watch`: the counters and their rates per second, redrawn in
/// place every `every` (like top) until `stop` is set.
pub fn watch(
    paths: &crate::state::Paths,
    by: Option<&str>,
    every: std::time::Duration,
    out: &mut dyn std::io::Write,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    use std::{collections::HashMap, sync::atomic::Ordering, time::Instant};
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let st = crate::state::load_up(paths)?;
        let now = flat(paths, &st, by)?;
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        let mut text = format!(
            "\x1b[H\x1b[2Jcnet stats ({}), every {:.1} s; Ctrl-C ends\n\n{:<48} {:>16} {:>12}\n",
            by.unwrap_or("datapath"),
            every.as_secs_f64(),
            "COUNTER",
            "TOTAL",
            "PER SECOND"
        );
        for (name, v) in &now {
            let rate = last
                .get(name)
                .map(|old| v.saturating_sub(*old) as f64 / secs)
                .map_or("-".to_string(), |r| format!("{r:.1}"));
            text.push_str(&format!("{name:<48} {v:>16} {rate:>12}\n"));
        }
        last = now.into_iter().collect();
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(());
        }
        let until = Instant::now() + every;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_read_as_dockers() {
        for (s, want) in [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (150, "2 minutes"),
            (3600, "About an hour"),
            (3 * 3600, "3 hours"),
            (3 * 86_400, "3 days"),
            (20 * 86_400, "2 weeks"),
            (90 * 86_400, "3 months"),
            (800 * 86_400, "2 years"),
        ] {
            assert_eq!(human_duration(s), want, "{s} s");
        }
    }
}
