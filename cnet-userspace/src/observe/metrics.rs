//! Prometheus metrics, read from the maps and the state at each scrape and
//! encoded with the prometheus-client crate: OpenMetrics for scrapers that
//! ask for it, the classic text format (0.0.4, what `promtool check metrics`
//! reads) otherwise.
use anyhow::{Context, Result};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use crate::{
    loader, observe,
    state::{Paths, State},
};

/// The OpenMetrics content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text exposition format's content type.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Drop {
    reason: String,
    container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Port {
    container: String,
    port: String,
    proto: String,
    host_ip: String,
    container_port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Dir {
    container: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rule {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Address {
    address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: String,
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    reg.register(name, help, g);
}

/// Every metric of the instance, in OpenMetrics.
pub fn openmetrics(paths: &Paths, st: &State) -> Result<String> {
    let mut reg = Registry::default();

    let packets = Family::<Reason, Counter>::default();
    for (name, v) in loader::counters(paths)? {
        packets
            .get_or_create(&Reason {
                reason: name.to_string(),
            })
            .inc_by(v);
    }
    reg.register(
        "cnet_datapath_packets",
        "Packets the datapath translated, dropped or handled otherwise, by counter name",
        packets,
    );

    let containers = observe::counters::containers(paths, st)?;
    let drops = Family::<Drop, Counter>::default();
    let cpkts = Family::<Dir, Counter>::default();
    let cbytes = Family::<Dir, Counter>::default();
    for c in &containers {
        for (reason, n) in &c.drops {
            drops
                .get_or_create(&Drop {
                    reason: reason.strip_prefix("drop_").unwrap_or(reason).to_string(),
                    container: c.name.clone(),
                })
                .inc_by(*n);
        }
        for (dir, p, b) in [
            ("in", c.packets_in, c.bytes_in),
            ("out", c.packets_out, c.bytes_out),
        ] {
            let l = Dir {
                container: c.name.clone(),
                direction: dir.into(),
            };
            cpkts.get_or_create(&l).inc_by(p);
            cbytes.get_or_create(&l).inc_by(b);
        }
    }
    reg.register(
        "cnet_drops",
        "Packets dropped, by reason and by the container they came from or were for",
        drops,
    );
    reg.register(
        "cnet_container_packets",
        "Packets a container sent (out) and cnet handed to it (in)",
        cpkts,
    );
    reg.register_with_unit(
        "cnet_container",
        "Bytes a container sent (out) and cnet handed to it (in)",
        Unit::Bytes,
        cbytes,
    );

    let ppkts = Family::<Port, Counter>::default();
    let pbytes = Family::<Port, Counter>::default();
    let pconns = Family::<Port, Counter>::default();
    for p in observe::counters::ports(paths, st, None)? {
        let l = Port {
            container: p.container.clone(),
            port: p.host_port.to_string(),
            proto: p.proto.clone(),
            host_ip: p.host_ip.clone(),
            container_port: p.container_port.to_string(),
        };
        ppkts.get_or_create(&l).inc_by(p.packets_in + p.packets_out);
        pbytes.get_or_create(&l).inc_by(p.bytes_in + p.bytes_out);
        pconns.get_or_create(&l).inc_by(p.connections);
    }
    reg.register(
        "cnet_published_port_packets",
        "Packets through a published port, both directions (port: the host port)",
        ppkts,
    );
    reg.register_with_unit(
        "cnet_published_port",
        "Bytes through a published port, both directions (port: the host port)",
        Unit::Bytes,
        pbytes,
    );
    reg.register(
        "cnet_published_port_connections",
        "Flows opened through a published port from outside or by hairpin",
        pconns,
    );

    let rules = Family::<Rule, Counter>::default();
    for (id, v) in crate::filter::counters(paths, st)? {
        rules
            .get_or_create(&Rule {
                rule: id.to_string(),
            })
            .inc_by(v);
    }
    reg.register(
        "cnet_filter_packets",
        "Packets matched by each filter rule",
        rules,
    );

    let u = observe::counters::usage(paths)?;
    gauge(
        &mut reg,
        "cnet_conntrack_entries",
        "Conntrack entries in use (two per translated flow)",
        u.conntrack_entries,
    );
    gauge(
        &mut reg,
        "cnet_conntrack_capacity",
        "Conntrack entries the table holds before the least recently used go",
        u.conntrack_capacity,
    );
    let masq = Family::<Address, Gauge>::default();
    for (addr, n) in &u.masquerade_ports_in_use {
        masq.get_or_create(&Address {
            address: addr.clone(),
        })
        .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    reg.register(
        "cnet_masquerade_ports_in_use",
        "Masquerade source ports (ICMP ids) held by live flows, per masquerade address",
        masq,
    );
    gauge(
        &mut reg,
        "cnet_masquerade_ports_capacity",
        "Masquerade source ports per address and protocol (cnet's range)",
        u.masquerade_port_range,
    );
    gauge(
        &mut reg,
        "cnet_containers",
        "Containers of the instance",
        st.containers.len() as u64,
    );
    gauge(
        &mut reg,
        "cnet_networks",
        "User-defined networks of the instance, the default bridge included",
        st.networks.len() as u64 + 1,
    );
    let build = Family::<Build, Gauge>::default();
    build
        .get_or_create(&Build {
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .set(1);
    reg.register("cnet_build_info", "cnet's version (always 1)", build);

    let mut out = String::new();
    encode(&mut out, &reg).context("encoding metrics")?;
    Ok(out)
}

/// OpenMetrics turned into the classic text format: a counter's HELP and
/// TYPE name its `_total` samples, and the UNIT and EOF lines go.
pub fn to_text(om: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for l in om.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::new();
    for l in om.lines() {
        if l.starts_with("# UNIT ") || l == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|p| l.strip_prefix(p).map(|rest| (*p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{p}{name}_total {tail}\n"));
                } else {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// The metrics in the format a scraper's `Accept` header asks for, with
/// its content type.
pub fn render(paths: &Paths, st: &State, accept: Option<&str>) -> Result<(String, &'static str)> {
    let om = openmetrics(paths, st)?;
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        Ok((om, OPENMETRICS))
    } else {
        Ok((to_text(&om), TEXT))
    }
}

#[cfg(test)]
mod tests {
    use super::to_text;

    #[test]
    fn counters_are_named_by_their_samples_in_the_text_format() {
        let om = "# HELP a_packets P.\n# TYPE a_packets counter\na_packets_total{x=\"1\"} 3\n# HELP b_bytes B.\n# TYPE b_bytes counter\n# UNIT b_bytes bytes\nb_bytes_total 5\n# HELP g G.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            to_text(om),
            "# HELP a_packets_total P.\n# TYPE a_packets_total counter\na_packets_total{x=\"1\"} 3\n# HELP b_bytes_total B.\n# TYPE b_bytes_total counter\nb_bytes_total 5\n# HELP g G.\n# TYPE g gauge\ng 1\n"
        );
    }
}
