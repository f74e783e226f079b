//! `cnet daemon`: the same operations as the CLI, as JSON over HTTP on a unix
//! socket (default /run/cnet/cnet.sock, mode 0660), usable with
//! `curl --unix-socket`. Every request runs the same library function under
//! the same instance lock as the CLI, so CLI and daemon can be mixed.
use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    path::Path,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    container::RunOptions,
    filter, network, show,
    state::{self, Paths},
};

pub const DEFAULT_SOCKET: &str = "/run/cnet/cnet.sock";

/// A request's outcome: an HTTP status and a JSON body.
struct Reply(u16, Value);

fn ok(v: Value) -> Reply {
    Reply(200, v)
}

/// Errors map to Docker's `{"message": ...}` with a status from their text.
fn err(e: &anyhow::Error) -> Reply {
    let msg = format!("{e:#}");
    let status = if msg.contains("no such") || msg.contains("not found") {
        404
    } else if msg.contains("already")
        || msg.contains("in use")
        || msg.contains("running")
        || msg.contains("active endpoints")
    {
        409
    } else {
        400
    };
    Reply(status, json!({"message": msg}))
}

pub fn serve(paths: &Paths, socket: &Path) -> Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", socket.display())),
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", socket.display()))?;
    eprintln!("cnet daemon: listening on {}", socket.display());
    // Interfaces that appear later publish the ports too: look every second.
    let watch = paths.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let r = crate::state::Lock::take(&watch).and_then(|_lock| {
                match crate::state::load(&watch)? {
                    Some(st) => crate::up::sync_interfaces(&watch, &st),
                    None => Ok(()),
                }
            });
            if let Err(e) = r {
                log::warn!("watching interfaces: {e:#}");
            }
        }
    });
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let paths = paths.clone();
        std::thread::spawn(move || {
            if let Err(e) = handle(&paths, conn) {
                log::warn!("daemon connection: {e:#}");
            }
        });
    }
    Ok(())
}

fn handle(paths: &Paths, mut conn: UnixStream) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let Reply(status, v) = route(paths, &method, &target, &body);
    let text = serde_json::to_string_pretty(&v)? + "\n";
    let reason = match status {
        200 => "OK",
        201 => "Created",
        404 => "Not Found",
        409 => "Conflict",
        405 => "Method Not Allowed",
        _ => "Bad Request",
    };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    Ok(())
}

fn json_body(body: &[u8]) -> Result<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).context("request body is not valid JSON")
}

fn strings(v: &Value, key: &str) -> Result<Vec<String>> {
    match &v[key] {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .with_context(|| format!("field {key:?}: expected strings"))
            })
            .collect(),
        other => bail!("field {key:?}: expected a list of strings, got {other}"),
    }
}

fn string(v: &Value, key: &str) -> Result<Option<String>> {
    match &v[key] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => bail!("field {key:?}: expected a string, got {other}"),
    }
}

fn route(paths: &Paths, method: &str, target: &str, body: &[u8]) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let r = (|| -> Result<Reply> {
        Ok(match (method, segs.as_slice()) {
            ("GET", ["containers"]) => {
                let st = state::load_up(paths)?;
                ok(Value::Array(
                    st.containers
                        .values()
                        .map(|c| show::inspect(&st, c))
                        .collect(),
                ))
            }
            ("GET", ["containers", name]) => {
                let st = state::load_up(paths)?;
                let c = st
                    .containers
                    .get(*name)
                    .with_context(|| format!("no such container: {name}"))?;
                ok(show::inspect(&st, c))
            }
            ("POST", ["containers"]) => {
                let b = json_body(body)?;
                let cmd = strings(&b, "cmd")?;
                let opts = RunOptions {
                    name: string(&b, "name")?,
                    publish: strings(&b, "publish")?,
                    expose: strings(&b, "expose")?,
                    publish_all: b["publish_all"].as_bool().unwrap_or(false),
                    links: strings(&b, "links")?,
                    network: string(&b, "network")?,
                    ip: string(&b, "ip")?,
                    hostname: string(&b, "hostname")?,
                    dns: strings(&b, "dns")?,
                    dns_search: strings(&b, "dns_search")?,
                    dns_options: strings(&b, "dns_options")?,
                    mac_address: string(&b, "mac_address")?,
                    auto_remove: b["auto_remove"].as_bool().unwrap_or(false),
                    add_hosts: strings(&b, "add_hosts")?,
                    aliases: strings(&b, "aliases")?,
                    env: strings(&b, "env")?,
                    labels: strings(&b, "labels")?,
                    cmd,
                };
                let (name, mut child) = crate::run_detached(paths, &opts)?;
                // The daemon is the command's parent: reap it when it exits.
                std::thread::spawn(move || child.wait());
                Reply(201, json!({"Name": name}))
            }
            ("DELETE", ["containers", name]) => {
                let force = query
                    .split('&')
                    .any(|kv| kv == "force=1" || kv == "force=true");
                crate::rm(paths, &[name.to_string()], force)?;
                ok(json!({"Removed": name}))
            }
            ("GET", ["containers", name, "ports"]) => {
                let st = state::load_up(paths)?;
                let c = st
                    .containers
                    .get(*name)
                    .with_context(|| format!("no such container: {name}"))?;
                ok(json!(
                    c.ports.iter().map(ToString::to_string).collect::<Vec<_>>()
                ))
            }
            ("POST", ["containers", name, "ports"]) => {
                let spec =
                    string(&json_body(body)?, "spec")?.context("field \"spec\" is required")?;
                let m = crate::port_add(paths, name, &spec)?;
                ok(json!(m.iter().map(ToString::to_string).collect::<Vec<_>>()))
            }
            ("POST", ["containers", name, "ports", "rm"]) => {
                let spec =
                    string(&json_body(body)?, "spec")?.context("field \"spec\" is required")?;
                let m = crate::port_rm(paths, name, &spec)?;
                ok(json!(m.iter().map(ToString::to_string).collect::<Vec<_>>()))
            }
            ("GET", ["networks"]) => {
                let st = state::load_up(paths)?;
                let mut names: Vec<String> =
                    network::BUILTIN.iter().map(|s| s.to_string()).collect();
                names.extend(st.networks.keys().cloned());
                ok(Value::Array(
                    names
                        .iter()
                        .map(|n| network::inspect(&st, n))
                        .collect::<Result<_>>()?,
                ))
            }
            ("GET", ["networks", name]) => ok(network::inspect(&state::load_up(paths)?, name)?),
            ("POST", ["networks"]) => {
                let b = json_body(body)?;
                let o = network::CreateOptions {
                    name: string(&b, "name")?.context("field \"name\" is required")?,
                    driver: string(&b, "driver")?,
                    subnet: string(&b, "subnet")?,
                    gateway: string(&b, "gateway")?,
                    ip_range: string(&b, "ip_range")?,
                    internal: b["internal"].as_bool().unwrap_or(false),
                    options: strings(&b, "options")?,
                    labels: strings(&b, "labels")?,
                    attachable: b["attachable"].as_bool().unwrap_or(false),
                    aux_addresses: strings(&b, "aux_addresses")?,
                };
                Reply(201, json!({"Id": network::create(paths, &o)?}))
            }
            ("DELETE", ["networks", name]) => {
                network::rm(paths, &[name.to_string()])?;
                ok(json!({"Removed": name}))
            }
            ("GET", ["filters"]) => {
                let st = state::load_up(paths)?;
                ok(serde_json::to_value(&st.filters)?)
            }
            ("POST", ["filters"]) => {
                let b = json_body(body)?;
                let spec = filter::FilterSpec {
                    src: string(&b, "src")?.context("field \"src\" is required")?,
                    dst: string(&b, "dst")?,
                    proto: string(&b, "proto")?,
                    dport: string(&b, "dport")?,
                    action: string(&b, "action")?.context("field \"action\" is required")?,
                };
                Reply(201, json!({"Id": filter::add(paths, &spec)?}))
            }
            ("DELETE", ["filters", id]) => {
                let id: u32 = id
                    .parse()
                    .map_err(|_| anyhow::anyhow!("invalid filter id {id:?}"))?;
                filter::rm(paths, id)?;
                ok(json!({"Removed": id}))
            }
            ("GET", ["stats"]) => ok(show::stats_json(paths, &state::load_up(paths)?)?),
            (_, ["containers" | "networks" | "filters" | "stats", ..]) => Reply(
                405,
                json!({"message": format!("{method} is not supported on {path}")}),
            ),
            _ => Reply(
                404,
                json!({"message": format!("no such endpoint: {method} {path}")}),
            ),
        })
    })();
    r.unwrap_or_else(|e| err(&e))
}
