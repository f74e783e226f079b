//! Measurement primitives for `cargo xtask bench`: request/response and
//! connect/request/response/close loops (netperf's TCP_RR and TCP_CRR
//! definitions), iperf3 runs, medians, and CPU pinning.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The RR/CRR server: one byte in, one byte out, per connection, until EOF.
pub fn rr_server(port: u16) -> Result<()> {
    let l = TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("bind {port}"))?;
    println!("ready");
    let _ = std::io::stdout().flush();
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let _ = s.set_nodelay(true);
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            while let Ok(1) = s.read(&mut b) {
                if s.write_all(&b).is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Rr {
    pub tps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// TCP_RR: one connection, 1-byte request and response, for `dur`.
pub fn rr(to: SocketAddr, dur: Duration) -> Result<Rr> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
        .with_context(|| format!("connect {to}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut lat = Vec::with_capacity(200_000);
    let start = Instant::now();
    let mut b = [7u8; 1];
    while start.elapsed() < dur {
        let t = Instant::now();
        s.write_all(&b)?;
        s.read_exact(&mut b)
            .with_context(|| format!("RR response from {to}"))?;
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e6)
            .unwrap_or(0.0)
    };
    Ok(Rr {
        tps: lat.len() as f64 / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

/// TCP_CRR: connect, 1-byte request and response, close; connections per second.
pub fn crr(to: SocketAddr, dur: Duration) -> Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    let mut b = [7u8; 1];
    while start.elapsed() < dur {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
            .with_context(|| format!("connect {to} (after {n})"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(&b)?;
        s.read_exact(&mut b)
            .with_context(|| format!("CRR response from {to}"))?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Runs iperf3 as a client inside `ns` (with `prefix` before it, e.g. a
/// cgroup move) and returns its JSON.
pub fn iperf3(ns: &str, pre: &str, args: &[String]) -> Result<serde_json::Value> {
    let cmd = format!("{pre}exec taskset -c 0 iperf3 -J {}", args.join(" "));
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["sh", "-c", &cmd])
        .output()
        .context("running iperf3")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 output: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(e) = v.get("error") {
        bail!("iperf3 {}: {e}", args.join(" "));
    }
    Ok(v)
}

/// The iperf3 client arguments every measurement shares.
fn client_args(host: &str, port: u16, secs: u32) -> Vec<String> {
    vec![
        "-c".into(),
        host.into(),
        "-p".into(),
        port.to_string(),
        "-t".into(),
        secs.to_string(),
    ]
}

/// TCP throughput in Gbit/s (`streams` parallel streams).
pub fn tcp_gbps(
    ns: &str,
    pre: &str,
    host: &str,
    port: u16,
    secs: u32,
    streams: u32,
) -> Result<f64> {
    let mut args = client_args(host, port, secs);
    args.extend(["-P".into(), streams.to_string()]);
    let v = iperf3(ns, pre, &args)?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("iperf3 JSON lacks end.sum_received")
}

/// UDP small-packet (64-byte payload) rate received, in thousands of packets per second.
pub fn udp_kpps(ns: &str, pre: &str, host: &str, port: u16, secs: u32) -> Result<f64> {
    let mut args = client_args(host, port, secs);
    args.extend(["-u", "-b", "0", "-l", "64"].map(String::from));
    let v = iperf3(ns, pre, &args)?;
    let s = &v["end"]["sum"];
    let packets = s["packets"]
        .as_f64()
        .context("iperf3 JSON lacks end.sum.packets")?;
    let lost = s["lost_packets"].as_f64().unwrap_or(0.0);
    let secs = s["seconds"].as_f64().unwrap_or(secs as f64).max(1e-9);
    Ok((packets - lost) / secs / 1e3)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 4.0);
        assert_eq!(median(vec![]), 0.0);
    }
}
