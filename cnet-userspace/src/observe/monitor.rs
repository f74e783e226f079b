//! `cnet monitor`: the datapath's events as they happen (as `cilium monitor`
//! or `hubble observe`). The monitor switches the kinds it wants on in the
//! `MONITOR` map with a deadline that it renews every second, so the
//! datapath stops writing events a few seconds after the last monitor went,
//! even a killed one; then it reads the `EVENTS` ring buffer. One monitor per
//! instance at a time (a ring buffer has one reader).
use std::{
    collections::BTreeMap,
    fs::File,
    io::Write,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, MapData, RingBuf};
use cnet_common::{
    addr_octets,
    maps::{
        self, CT_DNAT, CT_REV_DNAT, CT_REV_SNAT, CT_SNAT, EVENT_DROP, EVENT_FILTER, EVENT_FLOW_END,
        EVENT_FLOW_NEW, Event, FILTER_ALLOW, FLOW_HAIRPIN, FLOW_HOST_LOCAL, Monitor, PROTO_ICMP,
        PROTO_TCP, PROTO_UDP,
    },
    port_host,
};
use serde_json::{Value, json};

use crate::{
    error, loader,
    state::{self, Paths, State},
};

/// How long the datapath keeps writing events without a renewal.
const LEASE: Duration = Duration::from_secs(3);

/// What to show.
#[derive(Clone, Debug, Default)]
pub struct MonitorOptions {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Only events about these containers (names or id prefixes).
    pub containers: Vec<String>,
    /// `drop`, `flow`, `filter` (none: all of them).
    pub types: Vec<String>,
    /// Only drops of these reasons (`icc` or `drop_icc`).
    pub reasons: Vec<String>,
    /// Only events with one of these ports (either side, before or after translation).
    pub ports: Vec<u16>,
    /// Events per second per CPU the datapath may write (0: its default, 1000).
    pub rate: u32,
    /// Stop after this many printed events (0: until stopped).
    pub count: u64,
    /// Stop after this long (None: until stopped).
    pub duration: Option<Duration>,
}

/// The validated filters.
struct Filters {
    kinds: u8,
    addrs: Vec<u32>,
    reasons: Vec<u32>,
    ports: Vec<u16>,
}

fn kinds(types: &[String]) -> Result<u8> {
    if types.is_empty() {
        return Ok(EVENT_DROP | EVENT_FLOW_NEW | EVENT_FLOW_END | EVENT_FILTER);
    }
    let mut k = 0;
    for t in types {
        k |= match t.as_str() {
            "drop" => EVENT_DROP,
            "flow" => EVENT_FLOW_NEW | EVENT_FLOW_END,
            "filter" => EVENT_FILTER,
            other => {
                return Err(error::invalid(format!(
                    "invalid --type {other:?}: drop, flow or filter"
                )));
            }
        };
    }
    Ok(k)
}

fn reason_slot(name: &str) -> Result<u32> {
    let full = if name.starts_with("drop_") {
        name.to_string()
    } else {
        format!("drop_{name}")
    };
    cnet_common::drop::COUNTER_NAMES
        .iter()
        .find(|(_, n)| *n == full)
        .map(|(s, _)| *s)
        .ok_or_else(|| {
            let known: Vec<&str> = cnet_common::drop::COUNTER_NAMES
                .iter()
                .filter_map(|(_, n)| n.strip_prefix("drop_"))
                .collect();
            error::invalid(format!(
                "invalid --reason {name:?}: one of {}",
                known.join(", ")
            ))
        })
}

impl Filters {
    fn new(st: &State, o: &MonitorOptions) -> Result<Self> {
        let mut addrs = Vec::new();
        for c in &o.containers {
            let name = st.resolve(c)?;
            for a in st.containers[&name].interfaces() {
                addrs.push(cnet_common::addr_key(a.ip.octets()));
            }
        }
        let reasons = o
            .reasons
            .iter()
            .map(|r| reason_slot(r))
            .collect::<Result<Vec<_>>>()?;
        let mut kinds = kinds(&o.types)?;
        if !reasons.is_empty() {
            if !o.types.is_empty() && kinds & EVENT_DROP == 0 {
                return Err(error::invalid(
                    "--reason selects drops: it cannot go with --type flow or filter".to_string(),
                ));
            }
            kinds = EVENT_DROP;
        }
        Ok(Self {
            kinds,
            addrs,
            reasons,
            ports: o.ports.clone(),
        })
    }

    fn pass(&self, e: &Event) -> bool {
        if e.kind & self.kinds == 0 {
            return false;
        }
        if !self.reasons.is_empty()
            && (e.kind != EVENT_DROP || !self.reasons.contains(&u32::from(e.reason)))
        {
            return false;
        }
        let addrs = [e.orig_saddr, e.orig_daddr, e.xlat_saddr, e.xlat_daddr];
        if !self.addrs.is_empty() && !addrs.iter().any(|a| self.addrs.contains(a)) {
            return false;
        }
        let ports = [e.orig_sport, e.orig_dport, e.xlat_sport, e.xlat_dport].map(port_host);
        if !self.ports.is_empty() && !ports.iter().any(|p| self.ports.contains(p)) {
            return false;
        }
        true
    }
}

/// Container names by address, refreshed from the state file when an
/// unknown address shows up (at most once a second).
struct Names {
    by_addr: BTreeMap<u32, String>,
    loaded: Instant,
}

impl Names {
    fn new(st: &State) -> Self {
        let mut by_addr = BTreeMap::new();
        for c in st.containers.values() {
            for a in c.interfaces() {
                by_addr.insert(cnet_common::addr_key(a.ip.octets()), c.name.clone());
            }
        }
        Self {
            by_addr,
            loaded: Instant::now(),
        }
    }

    fn get(&mut self, paths: &Paths, addr: u32) -> Option<String> {
        if !self.by_addr.contains_key(&addr)
            && self.loaded.elapsed() > Duration::from_secs(1)
            && let Ok(Some(st)) = state::load(paths)
        {
            *self = Self::new(&st);
        }
        self.by_addr.get(&addr).cloned()
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid clock id and a timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

fn proto_name(p: u8) -> String {
    match p {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_ICMP => "icmp".into(),
        n => n.to_string(),
    }
}

fn translation(ct_kind: u8) -> &'static str {
    match ct_kind {
        CT_DNAT => "dnat",
        CT_REV_DNAT => "reverse_dnat",
        CT_SNAT => "snat",
        CT_REV_SNAT => "reverse_snat",
        FLOW_HAIRPIN => "hairpin",
        FLOW_HOST_LOCAL => "host_local",
        _ => "none",
    }
}

/// An event as the monitor shows it.
fn to_json(paths: &Paths, names: &mut Names, e: &Event, wall_offset_ns: i128) -> Value {
    let time = jiff::Timestamp::from_nanosecond(i128::from(e.ts_ns) + wall_offset_ns)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let ip = |a: u32| Ipv4Addr::from(addr_octets(a)).to_string();
    let base = json!({
        "time": time,
        "proto": proto_name(e.proto),
        "ifindex": e.ifindex,
        "src": ip(e.orig_saddr),
        "sport": port_host(e.orig_sport),
        "dst": ip(e.orig_daddr),
        "dport": port_host(e.orig_dport),
        "xlat_src": ip(e.xlat_saddr),
        "xlat_sport": port_host(e.xlat_sport),
        "xlat_dst": ip(e.xlat_daddr),
        "xlat_dport": port_host(e.xlat_dport),
    });
    let mut o = match base {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    match e.kind {
        EVENT_DROP => {
            o.insert("type".into(), "drop".into());
            let name =
                cnet_common::drop::counter_name(u32::from(e.reason)).unwrap_or("drop_unknown");
            o.insert(
                "reason".into(),
                name.strip_prefix("drop_").unwrap_or(name).into(),
            );
            o.insert("counter".into(), name.into());
            o.insert("verdict".into(), "dropped".into());
        }
        EVENT_FLOW_NEW | EVENT_FLOW_END => {
            o.insert("type".into(), "flow".into());
            let ev = if e.kind == EVENT_FLOW_NEW {
                "new"
            } else {
                "end"
            };
            o.insert("event".into(), ev.into());
            o.insert("translation".into(), translation(e.reason).into());
            o.insert("verdict".into(), "forwarded".into());
        }
        _ => {
            o.insert("type".into(), "filter".into());
            let action = if e.reason == FILTER_ALLOW {
                "allow"
            } else {
                "drop"
            };
            o.insert("rule".into(), e.rule.into());
            o.insert("action".into(), action.into());
            let verdict = if e.reason == FILTER_ALLOW {
                "allowed"
            } else {
                "dropped"
            };
            o.insert("verdict".into(), verdict.into());
        }
    }
    let mut containers = Vec::new();
    for (field, addr) in [
        ("src_container", e.orig_saddr),
        ("dst_container", e.orig_daddr),
        ("xlat_src_container", e.xlat_saddr),
        ("xlat_dst_container", e.xlat_daddr),
    ] {
        if let Some(n) = names.get(paths, addr) {
            o.insert(field.into(), n.clone().into());
            if !containers.contains(&n) {
                containers.push(n);
            }
        }
    }
    o.insert("containers".into(), containers.into());
    Value::Object(o)
}

/// One text line: time, type, tuple (with container names), translation and verdict.
fn to_text(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let end = |ip: &str, port: u64, c: &str| {
        let who = if c.is_empty() {
            ip.to_string()
        } else {
            format!("{c}({ip})")
        };
        if s("proto") == "tcp" || s("proto") == "udp" {
            format!("{who}:{port}")
        } else {
            who
        }
    };
    // A host process's connect(): its address and port are not chosen yet.
    let src = if s("translation") == "host_local" {
        "host".to_string()
    } else {
        end(&s("src"), n("sport"), &s("src_container"))
    };
    let orig = format!(
        "{src} -> {}",
        end(&s("dst"), n("dport"), &s("dst_container"))
    );
    let xlat = format!(
        "{} -> {}",
        end(&s("xlat_src"), n("xlat_sport"), &s("xlat_src_container")),
        end(&s("xlat_dst"), n("xlat_dport"), &s("xlat_dst_container"))
    );
    let what = match s("type").as_str() {
        "drop" => format!("DROP   reason={} {} {orig}", s("reason"), s("proto")),
        "flow" => format!(
            "FLOW   {} {} {} {orig} => {xlat}",
            s("event"),
            s("translation"),
            s("proto")
        ),
        _ => format!(
            "FILTER rule={} action={} {} {orig}",
            n("rule"),
            s("action"),
            s("proto")
        ),
    };
    format!("{} {what} verdict={}", s("time"), s("verdict"))
}

fn set_monitor(paths: &Paths, m: Monitor) -> Result<()> {
    let mut a: Array<MapData, Monitor> = Array::try_from(loader::pinned(paths, maps::MONITOR)?)
        .context("map MONITOR is not an array")?;
    a.set(0, m, 0).context("writing MONITOR")
}

/// Prints events until `stop` is set (or `count` events were printed).
/// Switches the wanted events on while it runs and off when it returns;
/// `ready` is called once events are on.
pub fn run(
    paths: &Paths,
    o: &MonitorOptions,
    out: &mut dyn Write,
    stop: &AtomicBool,
    ready: impl FnOnce(),
) -> Result<()> {
    let st = state::load_up(paths)?;
    let filters = Filters::new(&st, o)?;
    if !paths.map_pin(maps::EVENTS).exists() {
        bail!("this instance has no event buffer yet: run `cnet up` with this cnet");
    }
    let lock_path = paths.root.join("monitor.lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("opening {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        return Err(error::conflict(
            "another cnet monitor is reading this instance's events (one at a time)".to_string(),
        ));
    }
    let mut ring = RingBuf::try_from(loader::pinned(paths, maps::EVENTS)?)
        .context("map EVENTS is not a ring buffer")?;
    // What an earlier monitor left unread is not news.
    while ring.next().is_some() {}
    let mut names = Names::new(&st);
    let wall_offset_ns = jiff::Timestamp::now().as_nanosecond() - i128::from(monotonic_ns());
    let lease = |flags: u8| Monitor {
        flags: u32::from(flags),
        rate: o.rate,
        until_ns: monotonic_ns() + LEASE.as_nanos() as u64,
    };
    set_monitor(paths, lease(filters.kinds))?;
    ready();
    let result = (|| -> Result<()> {
        let mut renewed = Instant::now();
        let started = Instant::now();
        let mut printed = 0u64;
        while !stop.load(Ordering::Relaxed) && o.duration.is_none_or(|d| started.elapsed() < d) {
            if renewed.elapsed() >= Duration::from_secs(1) {
                set_monitor(paths, lease(filters.kinds))?;
                renewed = Instant::now();
            }
            let mut pfd = libc::pollfd {
                fd: ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one valid descriptor; EINTR (a signal) just loops.
            unsafe { libc::poll(&mut pfd, 1, 200) };
            while let Some(item) = ring.next() {
                if item.len() < std::mem::size_of::<Event>() {
                    continue;
                }
                let e: Event = bytemuck::pod_read_unaligned(&item[..std::mem::size_of::<Event>()]);
                drop(item);
                if !filters.pass(&e) {
                    continue;
                }
                let v = to_json(paths, &mut names, &e, wall_offset_ns);
                let line = if o.json { v.to_string() } else { to_text(&v) };
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    // The reader went away (a closed pipe): done.
                    return Ok(());
                }
                printed += 1;
                if o.count != 0 && printed >= o.count {
                    return Ok(());
                }
            }
        }
        Ok(())
    })();
    let off = set_monitor(paths, Monitor::default());
    result.and(off)
}
