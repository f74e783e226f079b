//! Seeing the datapath: known traffic (TCP connections, UDP datagrams, an
//! icc-blocked attempt, a filtered source) gives exactly the expected events
//! in `cnet monitor --json`, the expected deltas per container and per
//! published port in `cnet stats --by`, and the same numbers in Prometheus
//! metrics that `promtool check metrics` accepts. A flood of drops is
//! rate-limited in the event stream while every drop is still counted and
//! forwarding goes on.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use cnet_tests::{
    cnet::Instance,
    netns::{addr, in_netns, unique_name},
    traffic::{retry, tcp_probe, tcp_request, udp_request},
};
use serde_json::Value;

/// `cnet monitor ARGS` in the background, once it said events are on.
fn monitor(inst: &Instance, args: &[&str]) -> Child {
    let mut a = vec!["monitor"];
    a.extend_from_slice(args);
    let mut child = inst
        .command(&a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(
        line.contains("listening for events"),
        "monitor started: {line:?}"
    );
    child
}

/// Ends the monitor with SIGINT (as Ctrl-C) and returns its JSON lines.
fn stop(child: Child) -> Vec<Value> {
    stop_text(child)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("JSON line {l:?}: {e}")))
        .collect()
}

/// Ends the monitor with SIGINT (as Ctrl-C) once what it was sent is read;
/// returns its output and checks that it ended cleanly.
fn stop_text(mut child: Child) -> String {
    // Events written just before are read within the monitor's 200 ms poll.
    std::thread::sleep(Duration::from_millis(600));
    // SAFETY: the monitor this test started, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "monitor ends cleanly on SIGINT: {status}");
    out
}

fn count(evs: &[Value], pred: impl Fn(&Value) -> bool) -> usize {
    evs.iter().filter(|e| pred(e)).count()
}

fn by_port(inst: &Instance, port: u64, proto: &str) -> Value {
    let v: Value = serde_json::from_str(&inst.ok(&["stats", "--by", "port", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|p| p["host_port"] == port && p["proto"] == proto)
        .cloned()
        .unwrap_or_else(|| panic!("port {port}/{proto} in {v}"))
}

fn by_container(inst: &Instance, name: &str) -> Value {
    let v: Value =
        serde_json::from_str(&inst.ok(&["stats", "--by", "container", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("container {name} in {v}"))
}

fn metrics(sock: &std::path::Path) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sf", "--unix-socket"])
        .arg(sock)
        .arg("http://cnet/metrics")
        .output()
        .unwrap();
    assert!(out.status.success(), "GET /metrics: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the one sample of `name` whose labels include every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    let found: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .collect();
    assert_eq!(found.len(), 1, "one sample {name} {labels:?} in:\n{text}");
    found[0].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn events_counters_and_metrics_match_known_traffic() {
    let inst = Instance::up(1, &["--icc=false"]);
    let web = format!("web-{}", unique_name());
    let probe = format!("probe-{}", unique_name());
    inst.run_server(&web, &["-p", "8080:80", "-p", "8081:81/udp"], &[80, 81]);
    inst.run_server(&probe, &[], &[90]);
    let client = inst.topo.clients[0].name.clone();
    let client_ip = addr::client(0);
    let tcp_to = format!("{}:8080", addr::host_uplink(0));
    let udp_to = format!("{}:8081", addr::host_uplink(0));
    let web_ip = inst.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &web]);
    let web_ip = web_ip.trim().to_string();
    let sock = inst.root.join("metrics.sock");
    let mut daemon = inst
        .command(&["daemon", "--socket", &sock.to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }

    // Positive controls first (both ports answer), then the baselines.
    retry(|| tcp_request(&client, &tcp_to, "warm")).unwrap();
    retry(|| udp_request(&client, None, &udp_to, "warm")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let tcp0 = by_port(&inst, 8080, "tcp");
    let udp0 = by_port(&inst, 8081, "udp");
    let web0 = by_container(&inst, &web);
    let probe0 = by_container(&inst, &probe);
    let stats0 = inst.stats();

    let mon = monitor(&inst, &["--json"]);
    for i in 0..3 {
        let r = tcp_request(&client, &tcp_to, &format!("tcp{i}")).unwrap();
        assert!(r.ends_with(&format!("tcp{i}")), "{r}");
    }
    for i in 0..4 {
        let r = udp_request(&client, None, &udp_to, &format!("udp{i}")).unwrap();
        assert!(r.ends_with(&format!("udp{i}")), "{r}");
    }
    // icc=false: the probe container cannot reach web directly (dropped, counted).
    inst.assert_drop("drop_icc", 2, "icc-blocked container", || {
        tcp_probe(&probe, &format!("{web_ip}:80"), "icc")
    });
    // A filtered source from outside: two dropped SYNs.
    let id = inst.ok(&["filter", "add", "--src", &client_ip, "--action", "drop"]);
    let id = id.trim().to_string();
    inst.assert_drop("drop_filter", 2, "filtered client", || {
        tcp_probe(&client, &tcp_to, "filtered")
    });
    inst.ok(&["filter", "rm", &id]);
    std::thread::sleep(Duration::from_millis(300));
    let evs = stop(mon);
    let stats1 = inst.stats();
    let delta = |n: &str| stats1[n].as_u64().unwrap() - stats0[n].as_u64().unwrap();

    // Flows: one new and one ended DNAT flow per TCP connection, one new
    // per UDP datagram (each from its own port), with both tuples.
    let dnat_new = |p: u64, proto: &str| {
        count(&evs, |e| {
            e["type"] == "flow"
                && e["event"] == "new"
                && e["translation"] == "dnat"
                && e["proto"] == proto
                && e["dport"] == p
        })
    };
    assert_eq!(dnat_new(8080, "tcp"), 3, "{evs:#?}");
    assert_eq!(dnat_new(8081, "udp"), 4, "{evs:#?}");
    let tcp_new = evs
        .iter()
        .find(|e| e["type"] == "flow" && e["event"] == "new" && e["proto"] == "tcp")
        .unwrap();
    assert_eq!(tcp_new["src"], client_ip.as_str());
    assert_eq!(tcp_new["xlat_dst"], web_ip.as_str());
    assert_eq!(tcp_new["xlat_dport"], 80);
    assert_eq!(tcp_new["xlat_dst_container"], web.as_str());
    assert_eq!(
        count(&evs, |e| e["type"] == "flow"
            && e["event"] == "end"
            && e["proto"] == "tcp"
            && (e["dport"] == 8080 || e["sport"] == 80)),
        3,
        "one end per closed TCP connection: {evs:#?}"
    );
    // Drops: exactly the counters' deltas, by reason, with names.
    let icc: Vec<&Value> = evs
        .iter()
        .filter(|e| e["type"] == "drop" && e["reason"] == "icc")
        .collect();
    assert_eq!(icc.len(), 2, "{evs:#?}");
    assert_eq!(icc[0]["src_container"], probe.as_str());
    assert_eq!(icc[0]["dst_container"], web.as_str());
    assert_eq!(
        count(&evs, |e| e["type"] == "drop" && e["reason"] == "filter"),
        2
    );
    let all_drops: u64 = stats1
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("drop_"))
        .map(|(k, _)| delta(k))
        .sum();
    assert_eq!(
        count(&evs, |e| e["type"] == "drop") as u64,
        all_drops,
        "one event per drop while listening: {evs:#?}"
    );
    let hits: Vec<&Value> = evs.iter().filter(|e| e["type"] == "filter").collect();
    assert_eq!(hits.len(), 2, "{evs:#?}");
    assert_eq!(hits[0]["rule"].to_string(), id);
    assert_eq!(hits[0]["action"], "drop");
    assert_eq!(
        hits[0]["dst"],
        web_ip.as_str(),
        "filters see the delivered address"
    );
    assert_eq!(delta("events_suppressed") + delta("events_lost"), 0);
    assert_eq!(delta("events_sent"), evs.len() as u64);

    // Counters per published port and per container.
    let tcp1 = by_port(&inst, 8080, "tcp");
    let udp1 = by_port(&inst, 8081, "udp");
    let d = |a: &Value, b: &Value, k: &str| b[k].as_u64().unwrap() - a[k].as_u64().unwrap();
    assert_eq!(d(&tcp0, &tcp1, "connections"), 3);
    assert!(
        d(&tcp0, &tcp1, "packets_in") >= 3 * 3,
        "SYN, data, ACK/FIN per connection"
    );
    assert!(
        d(&tcp0, &tcp1, "packets_out") >= 3 * 2,
        "SYN-ACK and data per connection"
    );
    assert_eq!(d(&udp0, &udp1, "connections"), 4);
    assert_eq!(d(&udp0, &udp1, "packets_in"), 4);
    assert_eq!(d(&udp0, &udp1, "packets_out"), 4);
    assert!(d(&udp0, &udp1, "bytes_in") >= 4 * (14 + 20 + 8 + 4));
    let web1 = by_container(&inst, &web);
    let probe1 = by_container(&inst, &probe);
    let drops = |c: &Value, r: &str| c["drops"][r].as_u64().unwrap_or(0);
    assert_eq!(drops(&probe1, "drop_icc") - drops(&probe0, "drop_icc"), 2);
    assert_eq!(drops(&web1, "drop_filter") - drops(&web0, "drop_filter"), 2);
    assert_eq!(
        drops(&web1, "drop_icc") - drops(&web0, "drop_icc"),
        0,
        "the sender's"
    );
    assert!(d(&web0, &web1, "packets_in") >= 3 * 3 + 4);
    assert!(d(&web0, &web1, "packets_out") >= 3 * 2 + 4);
    assert!(
        d(&probe0, &probe1, "packets_out") >= 2,
        "its blocked SYNs left it"
    );

    // Prometheus: valid for promtool, the same numbers.
    let text = metrics(&sock);
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let port_labels = [
        ("container", web.as_str()),
        ("port", "8080"),
        ("proto", "tcp"),
    ];
    let tcp2 = by_port(&inst, 8080, "tcp");
    assert_eq!(
        sample(&text, "cnet_published_port_connections_total", &port_labels),
        tcp2["connections"].as_u64().unwrap()
    );
    assert_eq!(
        sample(&text, "cnet_published_port_packets_total", &port_labels),
        tcp2["packets_in"].as_u64().unwrap() + tcp2["packets_out"].as_u64().unwrap()
    );
    assert_eq!(
        sample(
            &text,
            "cnet_drops_total",
            &[("container", probe.as_str()), ("reason", "icc")]
        ),
        drops(&probe1, "drop_icc")
    );
    assert_eq!(
        sample(
            &text,
            "cnet_datapath_packets_total",
            &[("reason", "drop_icc")]
        ),
        inst.stat("drop_icc")
    );
    assert_eq!(sample(&text, "cnet_containers", &[]), 2);
    assert_eq!(sample(&text, "cnet_conntrack_capacity", &[]), 262_144);
    assert!(sample(&text, "cnet_build_info", &[]) == 1);
    // OpenMetrics for a scraper that asks for it.
    let om = std::process::Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/openmetrics-text",
            "--unix-socket",
        ])
        .arg(&sock)
        .arg("http://cnet/metrics")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&om.stdout).ends_with("# EOF\n"));

    // SAFETY: the daemon this test started, by its PID.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().unwrap();
}

#[test]
fn a_flood_of_drops_is_rate_limited_in_events_and_forwarding_goes_on() {
    let inst = Instance::up(2, &[]);
    let web = format!("web-{}", unique_name());
    inst.run_server(&web, &["-p", "8080:80"], &[80]);
    let flooder = inst.topo.clients[0].name.clone();
    let user = inst.topo.clients[1].name.clone();
    let to = format!("{}:8080", addr::host_uplink(0));
    retry(|| tcp_request(&flooder, &to, "before")).unwrap();
    let id = inst.ok(&[
        "filter",
        "add",
        "--src",
        &addr::client(0),
        "--action",
        "drop",
    ]);
    let s0 = inst.stats();
    let mon = monitor(&inst, &["--json", "--type", "drop", "--rate", "50"]);
    let target: std::net::SocketAddr = to.parse().unwrap();
    let n = 20_000;
    in_netns(&flooder, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..n {
            let _ = s.send_to(b"flood", target);
        }
    });
    // Forwarding goes on for everyone else.
    let r = tcp_request(&user, &to, "still here").unwrap();
    assert!(r.ends_with("still here"), "{r}");
    let evs = stop(mon);
    let s1 = inst.stats();
    let delta = |k: &str| s1[k].as_u64().unwrap() - s0[k].as_u64().unwrap();
    let dropped = delta("drop_filter");
    assert!(
        dropped >= n * 9 / 10,
        "the flood was dropped and counted: {dropped} of {n}"
    );
    assert_eq!(
        delta("events_sent") + delta("events_suppressed") + delta("events_lost"),
        dropped,
        "every drop was offered to the event stream exactly once"
    );
    assert!(delta("events_suppressed") > 0, "the rate limit bit");
    assert!(
        (evs.len() as u64) < dropped / 10,
        "{} events for {dropped} drops",
        evs.len()
    );
    assert_eq!(
        evs.len() as u64,
        delta("events_sent"),
        "every sent event was read"
    );
    assert!(
        evs.iter()
            .all(|e| e["type"] == "drop" && e["reason"] == "filter")
    );
    inst.ok(&["filter", "rm", id.trim()]);
    retry(|| tcp_request(&flooder, &to, "after")).unwrap();
}

#[test]
fn monitor_and_stats_reject_bad_filters_by_name() {
    let inst = Instance::up(1, &[]);
    let e = inst.fails(&["monitor", "--type", "drops"]);
    assert!(e.contains("\"drops\""), "{e}");
    let e = inst.fails(&["monitor", "--reason", "nosuch"]);
    assert!(e.contains("\"nosuch\"") && e.contains("icc"), "{e}");
    let e = inst.fails(&["monitor", "--container", "ghost"]);
    assert!(e.contains("ghost"), "{e}");
    let e = inst.fails(&["stats", "--by", "nothing"]);
    assert!(e.contains("nothing"), "{e}");
    // One reader at a time.
    let m = monitor(&inst, &[]);
    let e = inst.fails(&["monitor"]);
    assert!(e.contains("another cnet monitor"), "{e}");
    let _ = stop_text(m);
    // Events are off again once the monitor is gone: drops are not offered.
    let s0 = inst.stat("events_sent") + inst.stat("events_suppressed");
    let id = inst.ok(&[
        "filter",
        "add",
        "--src",
        &addr::client(0),
        "--action",
        "drop",
    ]);
    inst.assert_drop("drop_filter", 2, "filtered, nobody listening", || {
        tcp_probe(
            &inst.topo.clients[0].name,
            &format!("{}:9", addr::host_uplink(0)),
            "x",
        )
    });
    inst.ok(&["filter", "rm", id.trim()]);
    assert_eq!(
        inst.stat("events_sent") + inst.stat("events_suppressed"),
        s0
    );
}

#[test]
fn hairpin_and_host_local_connections_are_flows_of_their_port() {
    let inst = Instance::up(1, &[]);
    let web = format!("web-{}", unique_name());
    let other = format!("other-{}", unique_name());
    inst.run_server(&web, &["-p", "8080:80"], &[80]);
    inst.run_server(&other, &[], &[81]);
    let web_ip = inst.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &web]);
    let web_ip = web_ip.trim().to_string();
    let published = format!("{}:8080", addr::host_uplink(0));
    // Positive controls: both ways in work before anything is measured.
    retry(|| tcp_request(&other, &published, "warm")).unwrap();
    let (reply, _) = inst.host_client("tcp", "127.0.0.1:8080", "warm").unwrap();
    assert!(reply.ends_with("|warm"), "{reply}");
    let port0 = by_port(&inst, 8080, "tcp");

    let mon = monitor(&inst, &["--json", "--type", "flow"]);
    let r = tcp_request(&other, &published, "hp").unwrap();
    assert!(r.ends_with("hp"), "{r}");
    for i in 0..2 {
        let (reply, _) = inst
            .host_client("tcp", "127.0.0.1:8080", &format!("local{i}"))
            .unwrap();
        assert!(reply.ends_with(&format!("|local{i}")), "{reply}");
    }
    let evs = stop(mon);

    let new = |t: &str| -> Vec<&Value> {
        evs.iter()
            .filter(|e| e["event"] == "new" && e["translation"] == t)
            .collect()
    };
    let hairpin = new("hairpin");
    assert_eq!(hairpin.len(), 1, "{evs:#?}");
    assert_eq!(hairpin[0]["src_container"], other.as_str());
    assert_eq!(hairpin[0]["dport"], 8080);
    assert_eq!(hairpin[0]["xlat_dst"], web_ip.as_str());
    assert_eq!(hairpin[0]["xlat_dst_container"], web.as_str());
    let local = new("host_local");
    assert_eq!(local.len(), 2, "one per connect(): {evs:#?}");
    for e in &local {
        assert_eq!(e["dst"], "127.0.0.1");
        assert_eq!(e["dport"], 8080);
        assert_eq!(e["xlat_dst"], web_ip.as_str());
        assert_eq!(e["xlat_dport"], 80);
        assert_eq!(e["xlat_dst_container"], web.as_str());
    }
    assert_eq!(new("dnat").len(), 0, "nothing came from outside: {evs:#?}");
    let port1 = by_port(&inst, 8080, "tcp");
    assert_eq!(
        port1["connections"].as_u64().unwrap() - port0["connections"].as_u64().unwrap(),
        3,
        "the hairpin and both host-local connections"
    );

    // Container to container over the bridge (untranslated): counted as
    // handed to the receiver too.
    let web0 = by_container(&inst, &web);
    let r = tcp_request(&other, &format!("{web_ip}:80"), "direct").unwrap();
    assert!(r.ends_with("direct"), "{r}");
    std::thread::sleep(Duration::from_millis(200));
    let web1 = by_container(&inst, &web);
    let d = |k: &str| web1[k].as_u64().unwrap() - web0[k].as_u64().unwrap();
    assert!(d("packets_in") >= 3, "SYN, ACK, data at least: {web1}");
    assert!(d("bytes_in") >= 3 * (14 + 20 + 20), "{web1}");
}
