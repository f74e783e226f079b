//! `cargo xtask bench [--quick]`: cnet against the routed ceiling, Docker's
//! iptables rules and a userland proxy, in throwaway namespaces, from 0 to
//! 10,000 published ports. Prints a table, writes JSON and a PNG chart to
//! target/bench/. Everything it creates is removed at the end, also on
//! failure or Ctrl-C.
#![allow(
    clippy::unwrap_used,
    reason = "a benchmark driver: failing loudly is fine"
)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use cnet_tests::{
    bench::{self, Rr, median, pin_to_cpu},
    cnet::Instance,
    netns::{Netns, Topology, addr, in_netns},
    traffic::wait_ready,
};
use serde::Serialize;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Settings {
    runs: usize,
    iperf_secs: u32,
    loop_time: Duration,
    sizes: &'static [usize],
}

const IPERF_PORT: u16 = 5201;
const RR_PORT: u16 = 7000;

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

#[derive(Clone, Debug, Default, Serialize)]
struct PathResult {
    path: String,
    tcp1_gbps: f64,
    tcp4_gbps: f64,
    udp_kpps: f64,
    rr: Rr,
    crr_per_s: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
struct ScalePoint {
    ports: usize,
    cnet_tcp1_gbps: f64,
    cnet_crr_per_s: f64,
    iptables_tcp1_gbps: f64,
    iptables_crr_per_s: f64,
    /// `cnet port add` wall time (a whole CLI process: start, lock, state, map update).
    cnet_publish_cli_ms: f64,
    /// One PORTS map insert, as the control plane does it.
    cnet_publish_map_us: f64,
    /// The three iptables commands Docker runs for one more port.
    iptables_publish_ms: f64,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    date: String,
    machine: String,
    quick: bool,
    runs: usize,
    paths: Vec<PathResult>,
    scale: Vec<ScalePoint>,
    cnet_up_ms: f64,
    run_to_first_answer_ms: f64,
    /// `docker run -d` to the first answered connection: (path, ms).
    docker_run_ms: Vec<(String, f64)>,
    control: Vec<ControlOp>,
    /// Legitimate connections and drops per second over time while a
    /// filtered client floods a published port (icc off, a monitor listening).
    attack: Vec<AttackPoint>,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
struct AttackPoint {
    /// Seconds since the start of the timeline.
    t: f64,
    /// Legitimate TCP_CRR connections per second in this interval.
    crr_per_s: f64,
    /// Packets dropped per second (drop_filter) in this interval.
    drops_per_s: f64,
    /// Events written per second to the monitor (rate-limited).
    events_per_s: f64,
}

/// When the flood runs in the attack timeline (seconds from its start).
const ATTACK_FROM: f64 = 3.0;
const ATTACK_TO: f64 = 7.0;
const ATTACK_LEN: f64 = 10.0;
const ATTACK_STEP: f64 = 0.5;

/// The attack timeline: client 0 runs a CRR loop against a published port
/// for `ATTACK_LEN` s while client 1, whose source a filter drops, floods the
/// same port with 64-byte UDP datagrams from `ATTACK_FROM` to `ATTACK_TO`;
/// icc is off and `cnet monitor --type drop` listens. Counted per interval.
fn attack_timeline() -> Result<Vec<AttackPoint>> {
    progress("attack timeline: CRR under a flood of filtered packets");
    let inst = Instance::up(2, &["--icc=false"]);
    tune_client(&inst.topo.clients[0]);
    let srv = format!("cnet-bench-attack-{}", std::process::id());
    inst.ok(&[
        "run",
        "-d",
        "--name",
        &srv,
        "-p",
        "7100:7000",
        "-p",
        "7100:7000/udp",
        "--",
        "taskset",
        "-c",
        "1",
        &self_exe(),
        "rr-server",
        "7000",
    ]);
    let _cleanup = Cleanup(&inst, srv.clone());
    let to = format!("{}:7100", addr::host_uplink(0));
    wait_answer(&inst.topo.clients[0].name, &to)?;
    inst.ok(&[
        "filter",
        "add",
        "--src",
        &addr::client(1),
        "--action",
        "drop",
    ]);
    let mut monitor = inst
        .command(&["monitor", "--type", "drop", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let target: SocketAddr = to.parse()?;
    let start = Instant::now();
    let legit_ns = inst.topo.clients[0].name.clone();
    let legit = std::thread::spawn(move || -> Result<Vec<f64>> {
        in_netns(&legit_ns, move || {
            pin_to_cpu(0);
            let mut done = Vec::new();
            let mut b = [7u8; 1];
            while start.elapsed().as_secs_f64() < ATTACK_LEN {
                use std::io::{Read, Write};
                let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
                s.set_nodelay(true)?;
                s.write_all(&b)?;
                s.read_exact(&mut b)?;
                done.push(start.elapsed().as_secs_f64());
            }
            Ok(done)
        })
    });
    let flood_ns = inst.topo.clients[1].name.clone();
    let flood = std::thread::spawn(move || -> Result<()> {
        in_netns(&flood_ns, move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
            while start.elapsed().as_secs_f64() < ATTACK_FROM {
                std::thread::sleep(Duration::from_millis(5));
            }
            let payload = [0u8; 64 - 42];
            while start.elapsed().as_secs_f64() < ATTACK_TO {
                let _ = s.send_to(&payload, target);
            }
            Ok(())
        })
    });
    let mut samples = Vec::new();
    while start.elapsed().as_secs_f64() < ATTACK_LEN + ATTACK_STEP {
        let s = inst.stats();
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        samples.push((
            start.elapsed().as_secs_f64(),
            n("drop_filter"),
            n("events_sent"),
        ));
        std::thread::sleep(Duration::from_secs_f64(ATTACK_STEP));
    }
    // SAFETY: the monitor this function started, by its PID.
    unsafe { libc::kill(monitor.id() as i32, libc::SIGINT) };
    let _ = monitor.wait();
    let done = legit
        .join()
        .map_err(|_| anyhow::anyhow!("CRR thread panicked"))??;
    flood
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
    let mut out = Vec::new();
    for w in samples.windows(2) {
        let ((t0, d0, e0), (t1, d1, e1)) = (w[0], w[1]);
        let dt = (t1 - t0).max(1e-3);
        let conns = done.iter().filter(|&&t| t >= t0 && t < t1).count();
        out.push(AttackPoint {
            t: t1,
            crr_per_s: conns as f64 / dt,
            drops_per_s: d1.saturating_sub(d0) as f64 / dt,
            events_per_s: e1.saturating_sub(e0) as f64 / dt,
        });
    }
    Ok(out)
}

/// Mean of a field over the points inside (or outside) the flood window.
fn attack_mean(points: &[AttackPoint], during: bool, f: fn(&AttackPoint) -> f64) -> f64 {
    let v: Vec<f64> = points
        .iter()
        .filter(|p| {
            let inside = p.t > ATTACK_FROM + ATTACK_STEP && p.t <= ATTACK_TO;
            inside == during && p.t <= ATTACK_LEN
        })
        .map(f)
        .collect();
    v.iter().sum::<f64>() / (v.len().max(1) as f64)
}

/// attack.png: legitimate connections/s and dropped packets/s over time.
fn attack_chart(points: &[AttackPoint], path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    let root = BitMapBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    type Pick = fn(&AttackPoint) -> f64;
    let panels: [(&str, Pick, &str, RGBColor); 2] = [
        (
            "Legitimate connections (TCP_CRR)",
            |p| p.crr_per_s,
            "conn/s",
            BLUE,
        ),
        (
            "Flood packets dropped (drop_filter)",
            |p| p.drops_per_s,
            "packets/s",
            RED,
        ),
    ];
    for (area, (title, f, ylab, color)) in [left, right].into_iter().zip(panels) {
        let ymax = points.iter().map(f).fold(0.0, f64::max) * 1.2 + 1e-9;
        let mut ch = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..ATTACK_LEN, 0f64..ymax)?;
        ch.configure_mesh()
            .x_desc("seconds (flood from 3 to 7)")
            .y_desc(ylab)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 13))
            .draw()?;
        ch.draw_series(std::iter::once(Rectangle::new(
            [(ATTACK_FROM, 0.0), (ATTACK_TO, ymax)],
            RGBColor(255, 200, 200).mix(0.3).filled(),
        )))?;
        let pts: Vec<(f64, f64)> = points.iter().map(|p| (p.t, f(p))).collect();
        ch.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
        ch.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    root.present()?;
    Ok(())
}

/// One control-plane operation: median of `n` runs, against the numbers in
/// issue 10 (main before the netlink rewrite) and its target.
#[derive(Debug, Default, Serialize)]
struct ControlOp {
    op: String,
    before_ms: f64,
    median_ms: f64,
    target_ms: f64,
    n: usize,
}

/// Where the client measures from: a namespace (and a shell prefix run
/// before iperf3, for cgroup moves), and the address of the server.
#[derive(Clone)]
struct Target<'a> {
    name: &'a str,
    ns: String,
    pre: String,
    cgroup: Option<PathBuf>,
    host: String,
    iperf_port: u16,
    rr_port: u16,
    udp: bool,
}

fn measure(t: &Target, s: Settings) -> Result<PathResult> {
    let mut r = PathResult {
        path: t.name.to_string(),
        ..Default::default()
    };
    let (mut tcp1, mut tcp4, mut udp, mut rrs, mut crr) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..s.runs {
        check_stop()?;
        progress(&format!("{} run {}/{}", t.name, i + 1, s.runs));
        tcp1.push(bench::tcp_gbps(
            &t.ns,
            &t.pre,
            &t.host,
            t.iperf_port,
            s.iperf_secs,
            1,
        )?);
        tcp4.push(bench::tcp_gbps(
            &t.ns,
            &t.pre,
            &t.host,
            t.iperf_port,
            s.iperf_secs,
            4,
        )?);
        if t.udp {
            udp.push(bench::udp_kpps(
                &t.ns,
                &t.pre,
                &t.host,
                t.iperf_port,
                s.iperf_secs,
            )?);
        }
        let to: SocketAddr = format!("{}:{}", t.host, t.rr_port).parse()?;
        let (rr, c) = client_loops(t, to, s.loop_time)?;
        rrs.push(rr);
        crr.push(c);
    }
    r.tcp1_gbps = median(tcp1);
    r.tcp4_gbps = median(tcp4);
    r.udp_kpps = median(udp);
    r.crr_per_s = median(crr);
    rrs.sort_by(|a, b| a.tps.total_cmp(&b.tps));
    r.rr = rrs[rrs.len() / 2];
    Ok(r)
}

/// RR then CRR from a thread in the client namespace pinned to CPU 0 (and,
/// for host-local access, with the process in the instance's cgroup).
fn client_loops(t: &Target, to: SocketAddr, dur: Duration) -> Result<(Rr, f64)> {
    let _cg = t.cgroup.as_deref().map(CgroupMove::into).transpose()?;
    in_netns(&t.ns, move || {
        pin_to_cpu(0);
        let rr = bench::rr(to, dur)?;
        let crr = bench::crr(to, dur)?;
        Ok((rr, crr))
    })
}

/// Moves this process into a cgroup, and back on drop.
struct CgroupMove {
    back: PathBuf,
}

impl CgroupMove {
    fn into(cg: &std::path::Path) -> Result<Self> {
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .context("no cgroup v2 entry")?
            .trim()
            .to_string();
        let back = cnet_tests::cnet::cgroup2_root().join(rel.trim_start_matches('/'));
        std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string())?;
        Ok(Self { back })
    }
}

impl Drop for CgroupMove {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.back.join("cgroup.procs"),
            std::process::id().to_string(),
        );
    }
}

/// Starts iperf3 and the RR server in `ns`, pinned to CPU 1.
fn servers(ns: &Netns) -> Result<Vec<Child>> {
    let iperf = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .args([
            "taskset",
            "-c",
            "1",
            "iperf3",
            "-s",
            "-p",
            &IPERF_PORT.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    let mut rr = ns.spawn(&[
        "taskset",
        "-c",
        "1",
        &self_exe(),
        "rr-server",
        &RR_PORT.to_string(),
    ]);
    wait_ready(&mut rr);
    std::thread::sleep(Duration::from_millis(200));
    Ok(vec![iperf, rr])
}

/// Docker's own bridge driver (iptables rules, docker-proxy) against Docker
/// with the cnet plugin, same topology and image: a container serving
/// iperf3 and RR/CRR on published ports, measured from the client namespace
/// and from the host (127.0.0.1), plus `docker run` to the first answer.
fn docker_paths(s: Settings, run_ms: &mut Vec<(String, f64)>) -> Result<Vec<PathResult>> {
    use cnet_tests::docker::{Docker, Plugin};
    ensure!(
        Command::new("dockerd")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "dockerd is not installed"
    );
    let iperf = "/usr/bin/iperf3";
    let bench_exe = self_exe();
    let script = format!("iperf3 -s -D -p {IPERF_PORT}; exec {bench_exe} rr-server {RR_PORT}");
    let mut out = Vec::new();
    for with_cnet in [false, true] {
        check_stop()?;
        let (name, local_name) = if with_cnet {
            (
                "docker + cnet plugin (eBPF)",
                "docker + cnet plugin, host-local (127.0.0.1)",
            )
        } else {
            (
                "docker bridge (iptables)",
                "docker bridge, host-local (docker-proxy)",
            )
        };
        progress(&format!("{name}: starting dockerd"));
        let inst;
        let topo;
        let (host_ns, client_ns, cg) = if with_cnet {
            inst = Some(Instance::up(1, &[]));
            let i = inst.as_ref().unwrap();
            (
                i.topo.host.name.clone(),
                i.topo.clients[0].name.clone(),
                Some(i.cgroup.clone()),
            )
        } else {
            inst = None;
            topo = Topology::new(1);
            (topo.host.name.clone(), topo.clients[0].name.clone(), None)
        };
        let plugin_name = cnet_tests::netns::unique_name();
        let _plugin = inst.as_ref().map(|i| Plugin::start(i, &plugin_name));
        let dk = if with_cnet {
            Docker::start(&host_ns)
        } else {
            Docker::start_with(&host_ns, &[])
        };
        // The bench driver itself serves RR/CRR inside the container, at its own path.
        let tar = cnet_tests::image::rootfs_tar_with(&dk.dir, &[iperf, &bench_exe]);
        dk.ok(&["import", &tar.to_string_lossy(), "cnet-bench-img"]);
        let mut run = vec!["run", "-d", "--name", "srv"];
        if with_cnet {
            dk.ok(&[
                "network",
                "create",
                "-d",
                &plugin_name,
                "--ipam-driver",
                &plugin_name,
                "--subnet",
                "10.78.0.0/24",
                "benchnet",
            ]);
            run.extend(["--network", "benchnet"]);
        }
        let (p1, p2, p3) = (
            format!("{IPERF_PORT}:{IPERF_PORT}"),
            format!("{IPERF_PORT}:{IPERF_PORT}/udp"),
            format!("{RR_PORT}:{RR_PORT}"),
        );
        run.extend([
            "-p",
            &p1,
            "-p",
            &p2,
            "-p",
            &p3,
            "cnet-bench-img",
            "sh",
            "-c",
            &script,
        ]);
        let host = addr::host_uplink(0);
        let t0 = Instant::now();
        dk.ok(&run);
        wait_answer(&client_ns, &format!("{host}:{RR_PORT}"))?;
        let first = t0.elapsed().as_secs_f64() * 1e3;
        progress(&format!("{name}: docker run to first answer {first:.0} ms"));
        for kv in [
            "net.ipv4.tcp_tw_reuse=1",
            "net.ipv4.ip_local_port_range=1024 65535",
        ] {
            Command::new("ip")
                .args(["netns", "exec", &client_ns, "sysctl", "-qw", kv])
                .output()?;
        }
        let t = Target {
            name,
            ns: client_ns.clone(),
            pre: String::new(),
            cgroup: None,
            host: host.clone(),
            iperf_port: IPERF_PORT,
            rr_port: RR_PORT,
            udp: true,
        };
        out.push(measure(&t, s)?);
        let pre = cg
            .as_ref()
            .map(|c| format!("echo $$ > {}/cgroup.procs; ", c.display()))
            .unwrap_or_default();
        let local = Target {
            name: local_name,
            ns: host_ns.clone(),
            pre,
            cgroup: cg.clone(),
            host: "127.0.0.1".into(),
            iperf_port: IPERF_PORT,
            rr_port: RR_PORT,
            udp: false,
        };
        out.push(measure(&local, s)?);
        run_ms.push((name.to_string(), first));
        let _ = dk.docker(&["rm", "-f", "srv"]);
        if with_cnet {
            let _ = dk.docker(&["network", "rm", "benchnet"]);
        }
    }
    Ok(out)
}

fn self_exe() -> String {
    std::env::current_exe()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn tune_client(ns: &Netns) {
    ns.sysctl("net.ipv4.tcp_tw_reuse", "1");
    ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
}

fn physical(s: Settings) -> Result<PathResult> {
    let client = Netns::new();
    let server = Netns::new();
    client.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &server.name,
    ]);
    client.ip(&["addr", "add", "10.210.0.1/24", "dev", "eth0"]);
    client.ip(&["link", "set", "eth0", "up"]);
    server.ip(&["addr", "add", "10.210.0.2/24", "dev", "eth0"]);
    server.ip(&["link", "set", "eth0", "up"]);
    tune_client(&client);
    let mut kids = servers(&server)?;
    let r = measure(
        &Target {
            name: "physical (one veth)",
            ns: client.name.clone(),
            pre: String::new(),
            cgroup: None,
            host: "10.210.0.2".into(),
            iperf_port: IPERF_PORT,
            rr_port: RR_PORT,
            udp: true,
        },
        s,
    );
    kill(&mut kids);
    r
}

fn kill(kids: &mut [Child]) {
    for k in kids {
        let _ = k.kill();
        let _ = k.wait();
    }
}

fn routed(s: Settings) -> Result<PathResult> {
    let mut topo = Topology::new(1).with_bridge(1);
    tune_client(&topo.clients[0]);
    for k in servers(&topo.containers[0])? {
        topo.adopt(k);
    }
    measure(
        &Target {
            name: "routed ceiling (no NAT)",
            ns: topo.clients[0].name.clone(),
            pre: String::new(),
            cgroup: None,
            host: addr::container(0),
            iperf_port: IPERF_PORT,
            rr_port: RR_PORT,
            udp: true,
        },
        s,
    )
}

/// Docker 20.10's rules for a container publishing `ports` (host, container, proto) on bridge br0.
fn docker_rules(ctr: &str, subnet: &str, ports: &[(u16, u16, &str)]) -> String {
    let mut nat = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER\n",
    );
    nat.push_str(&format!(
        "-A POSTROUTING -s {subnet} ! -o br0 -j MASQUERADE\n"
    ));
    let mut filter = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n\
         :DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n\
         -A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
         -A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A FORWARD -o br0 -j DOCKER\n\
         -A FORWARD -i br0 ! -o br0 -j ACCEPT\n-A FORWARD -i br0 -o br0 -j ACCEPT\n\
         -A DOCKER-ISOLATION-STAGE-1 -i br0 ! -o br0 -j DOCKER-ISOLATION-STAGE-2\n-A DOCKER-ISOLATION-STAGE-1 -j RETURN\n\
         -A DOCKER-ISOLATION-STAGE-2 -o br0 -j DROP\n-A DOCKER-ISOLATION-STAGE-2 -j RETURN\n-A DOCKER-USER -j RETURN\n",
    );
    for (h, c, p) in ports {
        nat.push_str(&format!(
            "-A POSTROUTING -s {ctr}/32 -d {ctr}/32 -p {p} -m {p} --dport {c} -j MASQUERADE\n"
        ));
        nat.push_str(&format!(
            "-A DOCKER -p {p} -m {p} --dport {h} -j DNAT --to-destination {ctr}:{c}\n"
        ));
        filter.push_str(&format!(
            "-A DOCKER -d {ctr}/32 ! -i br0 -o br0 -p {p} -m {p} --dport {c} -j ACCEPT\n"
        ));
    }
    format!("{nat}COMMIT\n{filter}COMMIT\n")
}

fn iptables_restore(ns: &str, rules: &str, noflush: bool) -> Result<()> {
    use std::io::Write as _;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "iptables-restore"]);
    if noflush {
        cmd.arg("--noflush");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("iptables-restore")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(rules.as_bytes())?;
    let st = child.wait()?;
    if !st.success() {
        bail!("iptables-restore failed in {ns}");
    }
    Ok(())
}

fn extra_ports(n: usize) -> Vec<(u16, u16, &'static str)> {
    (0..n)
        .map(|i| (20000 + i as u16, 30000 + i as u16, "tcp"))
        .collect()
}

/// Docker's port publishing with iptables, in its own host namespace; then the scale steps.
fn iptables_path(s: Settings, scale: &mut [ScalePoint]) -> Result<PathResult> {
    let mut topo = Topology::new(1).with_bridge(1);
    tune_client(&topo.clients[0]);
    for k in servers(&topo.containers[0])? {
        topo.adopt(k);
    }
    let host = topo.host.name.clone();
    let ctr = addr::container(0);
    let base = [
        (IPERF_PORT, IPERF_PORT, "tcp"),
        (IPERF_PORT, IPERF_PORT, "udp"),
        (RR_PORT, RR_PORT, "tcp"),
    ];
    iptables_restore(&host, &docker_rules(&ctr, "10.201.0.0/24", &base), false)?;
    let t = Target {
        name: "iptables (Docker's rules)",
        ns: topo.clients[0].name.clone(),
        pre: String::new(),
        cgroup: None,
        host: addr::host_uplink(0),
        iperf_port: IPERF_PORT,
        rr_port: RR_PORT,
        udp: true,
    };
    let r = measure(&t, s)?;
    let mut have = 0;
    for p in scale.iter_mut() {
        check_stop()?;
        if p.ports > have {
            let mut ports = base.to_vec();
            ports.extend(extra_ports(p.ports));
            progress(&format!("iptables: {} published ports", p.ports));
            iptables_restore(&host, &docker_rules(&ctr, "10.201.0.0/24", &ports), false)?;
            have = p.ports;
        }
        let one = 31000 + p.ports as u16 % 1000;
        let t0 = Instant::now();
        for args in [
            vec![
                "-t",
                "nat",
                "-A",
                "DOCKER",
                "-p",
                "tcp",
                "-m",
                "tcp",
                "--dport",
                &one.to_string(),
                "-j",
                "DNAT",
                "--to-destination",
                &format!("{ctr}:9"),
            ],
            vec![
                "-t",
                "filter",
                "-A",
                "DOCKER",
                "-d",
                &format!("{ctr}/32"),
                "!",
                "-i",
                "br0",
                "-o",
                "br0",
                "-p",
                "tcp",
                "-m",
                "tcp",
                "--dport",
                "9",
                "-j",
                "ACCEPT",
            ],
            vec![
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                &format!("{ctr}/32"),
                "-d",
                &format!("{ctr}/32"),
                "-p",
                "tcp",
                "-m",
                "tcp",
                "--dport",
                "9",
                "-j",
                "MASQUERADE",
            ],
        ] {
            let st = Command::new("ip")
                .args(["netns", "exec", &host, "iptables"])
                .args(&args)
                .status()?;
            if !st.success() {
                bail!("iptables {}", args.join(" "));
            }
        }
        p.iptables_publish_ms = t0.elapsed().as_secs_f64() * 1e3;
        let (tcp, crr) = scale_measure(&t, s)?;
        p.iptables_tcp1_gbps = tcp;
        p.iptables_crr_per_s = crr;
    }
    Ok(r)
}

fn scale_measure(t: &Target, s: Settings) -> Result<(f64, f64)> {
    let (mut tcp, mut crr) = (vec![], vec![]);
    for _ in 0..s.runs {
        check_stop()?;
        tcp.push(bench::tcp_gbps(
            &t.ns,
            &t.pre,
            &t.host,
            t.iperf_port,
            s.iperf_secs,
            1,
        )?);
        let to: SocketAddr = format!("{}:{}", t.host, t.rr_port).parse()?;
        let to2 = to;
        let ns = t.ns.clone();
        crr.push(in_netns(&ns, move || {
            pin_to_cpu(0);
            bench::crr(to2, s.loop_time)
        })?);
    }
    Ok((median(tcp), median(crr)))
}

/// cnet: port publishing, host-local access, the userland proxy, scale.
fn cnet_paths(
    s: Settings,
    scale: &mut [ScalePoint],
    report: &mut Report,
) -> Result<Vec<PathResult>> {
    let t0 = Instant::now();
    let inst = Instance::up(1, &[]);
    report.cnet_up_ms = t0.elapsed().as_secs_f64() * 1e3;
    tune_client(&inst.topo.clients[0]);
    // Host-local clients run in the (throwaway) host namespace; its proxy and
    // published test ports stay below the ephemeral range.
    inst.topo.host.sysctl("net.ipv4.tcp_tw_reuse", "1");
    inst.topo
        .host
        .sysctl("net.ipv4.ip_local_port_range", "32768 65535");
    let srv = format!("cnet-bench-srv-{}", std::process::id());
    let script = format!(
        "iperf3 -s -D -p {IPERF_PORT}; exec {} rr-server {RR_PORT}",
        self_exe()
    );
    inst.ok(&[
        "run",
        "-d",
        "--name",
        &srv,
        "-p",
        "5201:5201",
        "-p",
        "5201:5201/udp",
        "-p",
        "7000:7000",
        "--",
        "taskset",
        "-c",
        "1",
        "sh",
        "-c",
        &script,
    ]);
    let _cleanup = Cleanup(&inst, srv.clone());
    wait_answer(
        &inst.topo.clients[0].name,
        &format!("{}:{RR_PORT}", addr::host_uplink(0)),
    )?;
    let client = inst.topo.clients[0].name.clone();
    let t = Target {
        name: "cnet (eBPF)",
        ns: client.clone(),
        pre: String::new(),
        cgroup: None,
        host: addr::host_uplink(0),
        iperf_port: IPERF_PORT,
        rr_port: RR_PORT,
        udp: true,
    };
    let mut out = vec![measure(&t, s)?];

    // The same path with the datapath's debug logs on (switched live): what
    // `cnet up --debug` costs; the row above is the cost when off.
    let cg = inst.cgroup.clone();
    let cgs = cg.to_string_lossy().into_owned();
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cgs, "--debug"]);
    let logged = measure(
        &Target {
            name: "cnet (eBPF), datapath debug logs on",
            ..t.clone()
        },
        s,
    );
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cgs, "--debug=false"]);
    out.push(logged?);

    // The same path while `cnet monitor --type drop` listens: what events
    // for drops cost the traffic that is not dropped.
    let mut monitor = inst
        .command(&["monitor", "--type", "drop", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let watched = measure(
        &Target {
            name: "cnet (eBPF), monitor listening (drop events on)",
            ..t.clone()
        },
        s,
    );
    // SAFETY: the monitor this function started, by its PID.
    unsafe { libc::kill(monitor.id() as i32, libc::SIGINT) };
    let _ = monitor.wait();
    out.push(watched?);

    let host = inst.topo.host.name.clone();
    let pre = format!("echo $$ > {}/cgroup.procs; ", cg.display());
    let local = Target {
        name: "host-local cnet (127.0.0.1)",
        ns: host.clone(),
        pre: pre.clone(),
        cgroup: Some(cg.clone()),
        host: "127.0.0.1".into(),
        iperf_port: IPERF_PORT,
        rr_port: RR_PORT,
        udp: false,
    };
    out.push(measure(&local, s)?);

    // The userland proxy Docker uses for 127.0.0.1 without hairpin NAT: socat here.
    let mut proxies = Vec::new();
    for (from, to) in [(15201u16, IPERF_PORT), (17000, RR_PORT)] {
        proxies.push(
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{host}"))
                .args([
                    "taskset",
                    "-c",
                    "1",
                    "socat",
                    &format!("TCP-LISTEN:{from},fork,reuseaddr,nodelay"),
                    &format!("TCP:172.17.0.2:{to},nodelay"),
                ])
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("starting socat")?,
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let proxy = Target {
        name: "host-local userland proxy (socat)",
        ns: host.clone(),
        pre: String::new(),
        cgroup: None,
        host: "127.0.0.1".into(),
        iperf_port: 15201,
        rr_port: 17000,
        udp: false,
    };
    let pr = measure(&proxy, s);
    kill(&mut proxies);
    out.push(pr?);

    // Scale: more published ports on another container, then one more.
    let bulk = format!("cnet-bench-bulk-{}", std::process::id());
    inst.ok(&["run", "-d", "--name", &bulk, "--", "sleep", "100000"]);
    let _cleanup2 = Cleanup(&inst, bulk.clone());
    let mut have = 0usize;
    for p in scale.iter_mut() {
        check_stop()?;
        if p.ports > have {
            progress(&format!("cnet: {} published ports", p.ports));
            let spec = format!(
                "{}-{}:{}-{}",
                20000 + have,
                20000 + p.ports - 1,
                30000 + have,
                30000 + p.ports - 1
            );
            inst.ok(&["port", "add", &bulk, &spec]);
            have = p.ports;
        }
        let one = format!("{}:9", 31000 + p.ports % 1000);
        let t0 = Instant::now();
        inst.ok(&["port", "add", &bulk, &one]);
        p.cnet_publish_cli_ms = t0.elapsed().as_secs_f64() * 1e3;
        inst.ok(&["port", "rm", &bulk, &one]);
        p.cnet_publish_map_us = map_insert_us(&inst)?;
        let (tcp, crr) = scale_measure(&t, s)?;
        p.cnet_tcp1_gbps = tcp;
        p.cnet_crr_per_s = crr;
    }

    // From `cnet run` to the first answered connection.
    let probe = format!("cnet-bench-probe-{}", std::process::id());
    let t0 = Instant::now();
    inst.ok(&[
        "run",
        "-d",
        "--name",
        &probe,
        "-p",
        "18080:7000",
        "--",
        &self_exe(),
        "rr-server",
        "7000",
    ]);
    let _cleanup3 = Cleanup(&inst, probe.clone());
    wait_answer(&client, &format!("{}:18080", addr::host_uplink(0)))?;
    report.run_to_first_answer_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(out)
}

/// Removes a container when dropped (the instance's own Drop runs `cnet down` too).
struct Cleanup<'a>(&'a Instance, String);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.cnet(&["rm", "-f", &self.1]);
    }
}

/// The time of one insert into the pinned PORTS map (median of 101).
fn map_insert_us(inst: &Instance) -> Result<f64> {
    use cnet_common::maps::{PORTS, PortKey, PortValue};
    let data = aya::maps::MapData::from_pin(inst.map_pin(PORTS))?;
    let mut m: aya::maps::HashMap<_, PortKey, PortValue> =
        aya::maps::HashMap::try_from(aya::maps::Map::from_map_data(data)?)?;
    let k = PortKey::new(
        0,
        cnet_common::port_key(45000),
        cnet_common::maps::PROTO_TCP,
    );
    let mut v = Vec::new();
    for _ in 0..101 {
        let t = Instant::now();
        m.insert(k, PortValue::new(1, 1), 0)?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
        m.remove(&k)?;
    }
    Ok(median(v))
}

/// Polls RR requests from `ns` until one is answered (5 s at most).
fn wait_answer(ns: &str, to: &str) -> Result<()> {
    let to: SocketAddr = to.parse()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ok = in_netns(ns, move || bench::rr(to, Duration::from_millis(1)).is_ok());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{to} never answered");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn table(r: &Report) -> String {
    let mut s = String::new();
    s.push_str("| path | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | UDP 64 B kpps | RR trans/s | RR p50 µs | RR p99 µs | CRR conn/s |\n");
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for p in &r.paths {
        let udp = if p.udp_kpps > 0.0 {
            format!("{:.0}", p.udp_kpps)
        } else {
            "-".into()
        };
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {} | {:.0} | {:.1} | {:.1} | {:.0} |\n",
            p.path, p.tcp1_gbps, p.tcp4_gbps, udp, p.rr.tps, p.rr.p50_us, p.rr.p99_us, p.crr_per_s
        ));
    }
    let get = |name: &str| r.paths.iter().find(|p| p.path.starts_with(name));
    if let (Some(c), Some(rt), Some(ipt)) = (get("cnet"), get("routed"), get("iptables")) {
        s.push_str(&format!(
            "\nRatios: cnet/routed TCP {:.2}, RR {:.2}, CRR {:.2}; cnet/iptables TCP {:.2}, RR {:.2}, CRR {:.2}, UDP {:.2}\n",
            c.tcp1_gbps / rt.tcp1_gbps, c.rr.tps / rt.rr.tps, c.crr_per_s / rt.crr_per_s,
            c.tcp1_gbps / ipt.tcp1_gbps, c.rr.tps / ipt.rr.tps, c.crr_per_s / ipt.crr_per_s, c.udp_kpps / ipt.udp_kpps
        ));
    }
    if let (Some(off), Some(on)) = (get("cnet (eBPF)"), get("cnet (eBPF), datapath debug")) {
        s.push_str(&format!(
            "Datapath debug logs on/off: TCP {:.2}, RR {:.2}, CRR {:.2} (off is the cnet row: one bit test per new flow or drop)\n",
            on.tcp1_gbps / off.tcp1_gbps,
            on.rr.tps / off.rr.tps,
            on.crr_per_s / off.crr_per_s
        ));
    }
    if let (Some(off), Some(on)) = (get("cnet (eBPF)"), get("cnet (eBPF), monitor")) {
        s.push_str(&format!(
            "Drop events on/off (cnet monitor --type drop listening): TCP {:.2}, RR {:.2}, CRR {:.2}, UDP {:.2}\n",
            on.tcp1_gbps / off.tcp1_gbps,
            on.rr.tps / off.rr.tps,
            on.crr_per_s / off.crr_per_s,
            on.udp_kpps / off.udp_kpps
        ));
    }
    if let (Some(l), Some(p)) = (get("host-local cnet"), get("host-local userland")) {
        s.push_str(&format!(
            "Host-local: cnet/proxy TCP {:.2}, RR {:.2}, CRR {:.2}\n",
            l.tcp1_gbps / p.tcp1_gbps,
            l.rr.tps / p.rr.tps,
            l.crr_per_s / p.crr_per_s
        ));
    }
    s.push_str("\n| published ports | cnet TCP Gbit/s | cnet CRR conn/s | iptables TCP Gbit/s | iptables CRR conn/s | cnet publish one (CLI) ms | cnet map insert µs | iptables publish one ms |\n");
    s.push_str("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for p in &r.scale {
        s.push_str(&format!(
            "| {} | {:.2} | {:.0} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} |\n",
            p.ports,
            p.cnet_tcp1_gbps,
            p.cnet_crr_per_s,
            p.iptables_tcp1_gbps,
            p.iptables_crr_per_s,
            p.cnet_publish_cli_ms,
            p.cnet_publish_map_us,
            p.iptables_publish_ms
        ));
    }
    s.push_str(&format!(
        "\n`cnet up`: {:.0} ms; `cnet run` to first answered connection: {:.0} ms\n",
        r.cnet_up_ms, r.run_to_first_answer_ms
    ));
    for (path, ms) in &r.docker_run_ms {
        s.push_str(&format!(
            "`docker run -d` to first answered connection, {path}: {ms:.0} ms\n"
        ));
    }
    if let (Some(b), Some(c)) = (
        get("docker bridge (iptables)"),
        get("docker + cnet plugin (eBPF)"),
    ) {
        s.push_str(&format!(
            "Docker with the cnet plugin / Docker's bridge: TCP {:.2}, RR {:.2}, CRR {:.2}, UDP {:.2}\n",
            c.tcp1_gbps / b.tcp1_gbps,
            c.rr.tps / b.rr.tps,
            c.crr_per_s / b.crr_per_s,
            c.udp_kpps / b.udp_kpps
        ));
    }
    if !r.attack.is_empty() {
        let before = attack_mean(&r.attack, false, |p| p.crr_per_s);
        let during = attack_mean(&r.attack, true, |p| p.crr_per_s);
        s.push_str(&format!(
            "Under attack (attack.png: a filtered client floods a published port, icc off, a drop monitor listening): legitimate CRR {before:.0} conn/s outside the flood, {during:.0} during it ({:.2}x), {:.0} packets/s dropped, {:.0} events/s written (rate limit)\n",
            during / before.max(1e-9),
            attack_mean(&r.attack, true, |p| p.drops_per_s),
            attack_mean(&r.attack, true, |p| p.events_per_s),
        ));
    }
    s
}

fn chart(r: &Report, path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .context("DejaVuSans.ttf (fonts-dejavu-core)")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("bad font"))?;
    let root = BitMapBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    let xs: Vec<f64> = r.scale.iter().map(|p| p.ports as f64).collect();
    let xmax = xs.iter().cloned().fold(1.0, f64::max);
    type Pick = fn(&ScalePoint) -> f64;
    let panels: [(&str, Pick, Pick, &str); 2] = [
        (
            "TCP throughput (Gbit/s)",
            |p| p.cnet_tcp1_gbps,
            |p| p.iptables_tcp1_gbps,
            "Gbit/s",
        ),
        (
            "Connections per second (TCP_CRR)",
            |p| p.cnet_crr_per_s,
            |p| p.iptables_crr_per_s,
            "conn/s",
        ),
    ];
    for (area, (title, c, i, ylab)) in [left, right].into_iter().zip(panels) {
        let ymax = r.scale.iter().map(|p| c(p).max(i(p))).fold(0.0, f64::max) * 1.2 + 1e-9;
        let mut ch = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
        ch.configure_mesh()
            .x_desc("published ports")
            .y_desc(ylab)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| {
                if *y >= 100.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.1}")
                }
            })
            .label_style(("sans-serif", 13))
            .draw()?;
        for (name, f, color) in [("cnet (eBPF)", c, BLUE), ("iptables (Docker)", i, RED)] {
            let pts: Vec<(f64, f64)> = r.scale.iter().map(|p| (p.ports as f64, f(p))).collect();
            ch.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            ch.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
        }
        ch.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} CPUs ({cpu}), kernel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel.trim()
    )
}

/// A request to `cnet daemon` over its unix socket; the status code.
fn daemon_request(sock: &std::path::Path, method: &str, path: &str, body: &str) -> Result<u16> {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(sock)?;
    write!(
        c,
        "{method} {path} HTTP/1.0\r\nHost: cnet\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    c.read_to_string(&mut resp)?;
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad answer from the daemon: {resp:?}"))?;
    Ok(code)
}

/// `cnet up` on a fresh instance, `run -d` to the first answered
/// connection, `rm -f`, and `port add` (CLI and daemon) with few and with
/// many published ports: medians of `n`.
fn control_plane(quick: bool) -> Result<Vec<ControlOp>> {
    let n = 20;
    let many = if quick { 10_000 } else { 100_000 };
    let inst = Instance::up(1, &[]);
    let client = inst.topo.clients[0].name.clone();
    let cg = inst.cgroup.to_string_lossy().into_owned();
    let mut ops = Vec::new();
    let mut push = |op: String, before: f64, target: f64, v: Vec<f64>| {
        ops.push(ControlOp {
            op,
            before_ms: before,
            n: v.len(),
            median_ms: median(v),
            target_ms: target,
        });
    };
    progress("control plane: cnet up");
    let mut v = Vec::new();
    for _ in 0..n {
        check_stop()?;
        inst.ok(&["down"]);
        let t = Instant::now();
        inst.ok(&["up", "--cgroup", &cg, "--uplink", "up0"]);
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    push("`cnet up` (fresh instance)".into(), 430.0, 250.0, v);

    progress("control plane: run -d, rm -f");
    let (mut run, mut rm) = (Vec::new(), Vec::new());
    for i in 0..n {
        check_stop()?;
        let name = format!("cnet-bench-cp{i}-{}", std::process::id());
        let port = 18100 + i as u16;
        let t = Instant::now();
        inst.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "-p",
            &format!("{port}:7000"),
            "--",
            &self_exe(),
            "rr-server",
            "7000",
        ]);
        wait_answer(&client, &format!("{}:{port}", addr::host_uplink(0)))?;
        run.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        inst.ok(&["rm", "-f", &name]);
        rm.push(t.elapsed().as_secs_f64() * 1e3);
    }
    push(
        "`cnet run -d` to first answered TCP connection".into(),
        27.0,
        15.0,
        run,
    );
    push("`cnet rm -f` of one container".into(), 66.0, 15.0, rm);

    let bulk = format!("cnet-bench-cpbulk-{}", std::process::id());
    inst.ok(&["run", "-d", "--name", &bulk, "--", "sleep", "100000"]);
    let _cleanup = Cleanup(&inst, bulk.clone());
    let sock = inst.root.join("bench.sock");
    let mut daemon = inst
        .command(&["daemon", "--socket", &sock.to_string_lossy()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut have = 0;
    for (ports, before) in [(10usize, 12.0), (many, 12.0)] {
        check_stop()?;
        progress(&format!(
            "control plane: port add with {ports} published ports"
        ));
        while have < ports {
            // Ranges of up to 1,000 ports: TCP 1-60000, then UDP 1-...
            let chunk = (ports - have).min(1000);
            let (lo, proto) = if have < 60_000 {
                (1 + have, "tcp")
            } else {
                (1 + have - 60_000, "udp")
            };
            let spec = format!("{lo}-{}:{lo}-{}/{proto}", lo + chunk - 1, lo + chunk - 1);
            inst.ok(&["port", "add", &bulk, &spec]);
            have += chunk;
        }
        let (mut cli, mut api) = (Vec::new(), Vec::new());
        for i in 0..n {
            let spec = format!("{}:9", 64000 + i);
            let t = Instant::now();
            inst.ok(&["port", "add", &bulk, &spec]);
            cli.push(t.elapsed().as_secs_f64() * 1e3);
            inst.ok(&["port", "rm", &bulk, &spec]);
            let body = format!("{{\"spec\": \"{spec}\"}}");
            let t = Instant::now();
            let code = daemon_request(&sock, "POST", &format!("/containers/{bulk}/ports"), &body)?;
            api.push(t.elapsed().as_secs_f64() * 1e3);
            ensure!(code < 300, "daemon port add answered {code}");
            daemon_request(
                &sock,
                "POST",
                &format!("/containers/{bulk}/ports/rm"),
                &body,
            )?;
        }
        push(
            format!("`cnet port add` (CLI), {ports} ports published"),
            before,
            8.0,
            cli,
        );
        push(
            format!("port add through the daemon, {ports} ports published"),
            0.0,
            2.0,
            api,
        );
    }
    // SAFETY: the daemon this function started, by its PID.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    Ok(ops)
}

fn control_table(ops: &[ControlOp]) -> String {
    let mut s = String::from(
        "| control plane (release build, CLI as a user runs it) | before (issue 10) ms | now ms (median) | target ms |\n| --- | ---: | ---: | ---: |\n",
    );
    for o in ops {
        let before = if o.before_ms > 0.0 {
            format!("{:.0}", o.before_ms)
        } else {
            "-".into()
        };
        s.push_str(&format!(
            "| {} | {before} | {:.1} | {:.0} |\n",
            o.op, o.median_ms, o.target_ms
        ));
    }
    s
}

fn run(quick: bool, control_only: bool, out: PathBuf) -> Result<()> {
    let s = if quick {
        Settings {
            runs: 3,
            iperf_secs: 1,
            loop_time: Duration::from_millis(300),
            sizes: &[0, 1000, 10000],
        }
    } else {
        Settings {
            runs: 3,
            iperf_secs: 3,
            loop_time: Duration::from_secs(2),
            sizes: &[0, 1000, 10000],
        }
    };
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()?
        .stdout;
    let mut report = Report {
        date: String::from_utf8_lossy(&date).trim().into(),
        machine: machine(),
        quick,
        runs: s.runs,
        ..Default::default()
    };
    let mut scale: Vec<ScalePoint> = s
        .sizes
        .iter()
        .map(|&ports| ScalePoint {
            ports,
            ..Default::default()
        })
        .collect();
    if control_only {
        report.control = control_plane(quick)?;
        let t = control_table(&report.control);
        std::fs::create_dir_all(&out)?;
        std::fs::write(out.join("control.md"), &t)?;
        println!("\n{t}");
        return Ok(());
    }
    report.paths.push(physical(s)?);
    report.paths.push(routed(s)?);
    let cnet = cnet_paths(s, &mut scale, &mut report)?;
    report.paths.push(iptables_path(s, &mut scale)?);
    report.paths.extend(cnet);
    match docker_paths(s, &mut report.docker_run_ms) {
        Ok(v) => report.paths.extend(v),
        Err(e) => eprintln!("bench: skipping the Docker rows: {e:#}"),
    }
    // Order: physical, routed, cnet, iptables, host-local cnet, proxy.
    let order = [
        "physical",
        "routed",
        "cnet",
        "iptables",
        "host-local cnet",
        "host-local userland",
        "docker",
    ];
    report.paths.sort_by_key(|p| {
        order
            .iter()
            .position(|o| p.path.starts_with(o))
            .unwrap_or(99)
    });
    report.scale = scale;
    report.attack = attack_timeline()?;
    report.control = control_plane(quick)?;
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    chart(&report, &out.join("scale.png"))?;
    attack_chart(&report.attack, &out.join("attack.png"))?;
    let t = format!("{}\n{}", table(&report), control_table(&report.control));
    std::fs::write(out.join("table.md"), &t)?;
    println!(
        "\ncnet benchmark, {} on {}{}\n\n{t}",
        report.date,
        report.machine,
        if quick { " (--quick)" } else { "" }
    );
    println!(
        "Wrote {}/results.json, table.md, scale.png, attack.png",
        out.display()
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("rr-server") {
        let port = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(RR_PORT);
        if let Err(e) = bench::rr_server(port) {
            eprintln!("rr-server: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench"));
    let control_only = args.iter().any(|a| a == "--control");
    if let Err(e) = run(quick, control_only, out) {
        eprintln!("bench: {e:#}");
        std::process::exit(1);
    }
}
