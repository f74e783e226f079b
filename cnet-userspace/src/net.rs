//! Links, addresses, routes and namespaces, through iproute2 (`ip -j` for
//! queries). Everything acts on the calling process's network namespace, so
//! an instance can treat any namespace as its host when run under
//! `nsenter --net=...`.
use std::{ffi::CString, net::Ipv4Addr, process::Command};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Runs `ip args...`; on failure the error names the command and its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip_json(args: &[&str]) -> Result<Vec<Value>> {
    let mut a = vec!["-j"];
    a.extend_from_slice(args);
    let text = ip(&a)?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing `ip -j {}`", args.join(" ")))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

pub fn link_exists(name: &str) -> bool {
    ifindex(name).is_ok()
}

/// The interface index in this namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).with_context(|| format!("interface name {name:?}"))?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {name:?} in this network namespace");
    }
    Ok(i)
}

pub fn mac(name: &str) -> Result<[u8; 6]> {
    let links = ip_json(&["link", "show", "dev", name])?;
    let s = links
        .first()
        .and_then(|l| l["address"].as_str())
        .with_context(|| format!("no MAC address for {name}"))?;
    let mut out = [0u8; 6];
    for (i, part) in s.split(':').enumerate().take(6) {
        out[i] = u8::from_str_radix(part, 16).with_context(|| format!("bad MAC {s} on {name}"))?;
    }
    Ok(out)
}

/// IPv4 addresses of `dev` (or of every interface when `None`).
/// Every interface of this namespace with IPv4 addresses: (name, ifindex, addresses).
pub fn interfaces_with_addrs() -> Result<Vec<(String, u32, Vec<Ipv4Addr>)>> {
    let mut out = Vec::new();
    for link in ip_json(&["-4", "addr", "show"])? {
        let (Some(name), Some(idx)) = (link["ifname"].as_str(), link["ifindex"].as_u64()) else {
            continue;
        };
        let addrs: Vec<Ipv4Addr> = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["local"].as_str().and_then(|s| s.parse().ok()))
            .collect();
        if !addrs.is_empty() {
            out.push((name.to_string(), idx as u32, addrs));
        }
    }
    Ok(out)
}

pub fn addrs(dev: Option<&str>) -> Result<Vec<Ipv4Addr>> {
    let mut args = vec!["-4", "addr", "show"];
    if let Some(d) = dev {
        args.extend(["dev", d]);
    }
    let mut out = Vec::new();
    for link in ip_json(&args)? {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let Some(ip) = a["local"].as_str().and_then(|s| s.parse().ok()) {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// Interfaces that carry a default route.
pub fn default_route_devs() -> Result<Vec<String>> {
    let mut v: Vec<String> = ip_json(&["-4", "route", "show", "default"])?
        .iter()
        .filter_map(|r| r["dev"].as_str().map(str::to_string))
        .collect();
    v.dedup();
    Ok(v)
}

/// Creates bridge `name` with address `cidr` and brings it up (idempotent).
pub fn ensure_bridge(name: &str, cidr: &str) -> Result<()> {
    if !link_exists(name) {
        ip(&["link", "add", name, "type", "bridge"])?;
    }
    let want: Ipv4Addr = cidr
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .context("bridge address")?;
    if !addrs(Some(name))?.contains(&want) {
        ip(&["addr", "add", cidr, "dev", name])?;
    }
    ip(&["link", "set", name, "up"])?;
    Ok(())
}

pub fn sysctl(key: &str, value: &str) -> Result<()> {
    // /proc/sys/net is per network namespace of the opening process.
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).with_context(|| format!("setting {key}={value}"))
}

/// Sets sysctls inside named network namespace `ns`, from a short-lived
/// thread that joined it (setns changes only the calling thread).
pub fn sysctl_in(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{ns}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            // SAFETY: setns on a valid namespace fd; it affects only this thread.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("joining network namespace {ns}"));
            }
            for (k, v) in settings {
                sysctl(k, v).with_context(|| format!("in network namespace {ns}"))?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("sysctl thread for {ns} panicked"))?
    })
}

/// IPv6 off in a container's namespace (cnet's networks are IPv4 only, as
/// Docker does for networks without IPv6): interfaces created afterwards get
/// no link-local address, and `lo` keeps none either.
pub fn ipv6_off_in(ns: &str) -> Result<()> {
    sysctl_in(
        ns,
        &[
            ("net.ipv6.conf.default.disable_ipv6", "1"),
            ("net.ipv6.conf.all.disable_ipv6", "1"),
        ],
    )
}

pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/run/netns/{name}")).exists()
}

/// The cookie of the calling thread's network namespace (SO_NETNS_COOKIE).
pub fn netns_cookie() -> Result<u64> {
    // SAFETY: plain socket syscalls; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        const SO_NETNS_COOKIE: libc::c_int = 71;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            bail!("getsockopt(SO_NETNS_COOKIE): {err}");
        }
        Ok(cookie)
    }
}

/// PIDs of every process inside namespace `name`.
pub fn netns_pids(name: &str) -> Vec<u32> {
    ip(&["netns", "pids", name])
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every IPv4 address with its prefix in this namespace (loopback excluded).
pub fn addr_cidrs() -> Result<Vec<crate::ipam::Cidr>> {
    let mut out = Vec::new();
    for link in ip_json(&["-4", "addr", "show"])? {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let ip: Option<Ipv4Addr> = a["local"].as_str().and_then(|s| s.parse().ok());
            let prefix = a["prefixlen"].as_u64().map(|p| p as u8);
            if let (Some(ip), Some(prefix)) = (ip, prefix)
                && !ip.is_loopback()
            {
                out.push(crate::ipam::Cidr { addr: ip, prefix });
            }
        }
    }
    Ok(out)
}
