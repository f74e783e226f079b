//! Queries and small changes of the calling thread's network namespace
//! (links, addresses, routes, sysctls), through [`crate::host`]: no program
//! is run. Everything acts on the namespace cnet runs in, so an instance can
//! treat any namespace as its host when run under `nsenter --net=...`.
use std::{ffi::CString, net::Ipv4Addr};

use anyhow::{Context, Result, bail};

use crate::host::netlink::Netlink;

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
    Netlink::here()?
        .link(name)?
        .mac
        .with_context(|| format!("no MAC address for {name}"))
}

/// IPv4 addresses of `dev` (or of every interface when `None`).
/// Every interface of this namespace with IPv4 addresses: (name, ifindex, addresses).
pub fn interfaces_with_addrs() -> Result<Vec<(String, u32, Vec<Ipv4Addr>)>> {
    let nl = Netlink::here()?;
    let addrs = nl.addrs4()?;
    let mut out = Vec::new();
    for l in nl.links()? {
        let mine: Vec<Ipv4Addr> = addrs
            .iter()
            .filter(|a| a.index == l.index)
            .map(|a| a.addr)
            .collect();
        if !mine.is_empty() {
            out.push((l.name, l.index, mine));
        }
    }
    Ok(out)
}

pub fn addrs(dev: Option<&str>) -> Result<Vec<Ipv4Addr>> {
    let nl = Netlink::here()?;
    let index = dev.map(|d| nl.index(d)).transpose()?;
    Ok(nl
        .addrs4()?
        .into_iter()
        .filter(|a| index.is_none_or(|i| a.index == i))
        .map(|a| a.addr)
        .collect())
}

/// Interfaces that carry a default route.
pub fn default_route_devs() -> Result<Vec<String>> {
    let nl = Netlink::here()?;
    let idx = nl.default_route_ifindexes()?;
    Ok(nl
        .links()?
        .into_iter()
        .filter(|l| idx.contains(&l.index))
        .map(|l| l.name)
        .collect())
}

/// Creates bridge `name` with address `cidr` and brings it up (idempotent).
pub fn ensure_bridge(name: &str, cidr: &str) -> Result<()> {
    let nl = Netlink::here()?;
    if !link_exists(name) {
        nl.add_bridge(name)?;
    }
    let (ip, prefix) =
        crate::ipam::split_cidr(cidr).with_context(|| format!("bridge address {cidr}"))?;
    nl.add_addr(name, ip, prefix)?;
    nl.up(name)?;
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
    crate::host::netns::within(ns, || -> Result<()> {
        for (k, v) in settings {
            sysctl(k, v).with_context(|| format!("in network namespace {ns}"))?;
        }
        Ok(())
    })?
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
    crate::host::netns::exists(name)
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
    crate::host::netns::pids(name)
}

/// Every IPv4 address with its prefix in this namespace (loopback excluded).
pub fn addr_cidrs() -> Result<Vec<crate::ipam::Cidr>> {
    Ok(Netlink::here()?
        .addrs4()?
        .into_iter()
        .filter(|a| !a.addr.is_loopback())
        .map(|a| crate::ipam::Cidr {
            addr: a.addr,
            prefix: a.prefix,
        })
        .collect())
}

/// Deletes link `name` (already gone: fine).
pub fn del_link(name: &str) -> Result<()> {
    Ok(Netlink::here()?.del_link(name)?)
}

/// Sets link `name`'s MTU.
pub fn set_mtu(name: &str, mtu: u32) -> Result<()> {
    Ok(Netlink::here()?.set_link(
        name,
        &crate::host::netlink::LinkChange {
            mtu: Some(mtu),
            ..Default::default()
        },
    )?)
}
