//! Building a container: namespace, veth on its networks, endpoint and link-allowance map entries.
use std::os::fd::AsRawFd;

use anyhow::{Context, Result, ensure};
use cnet_common::{
    addr_key,
    maps::{self, AllowKey, Endpoint},
};

use crate::{
    host::{
        netlink::{LinkChange, Netlink},
        netns,
    },
    ipam, loader, net,
    state::{Container, Paths, State},
    undo::{Undo, transaction},
};

use super::*;

/// Builds a planned container: namespace, veth, addresses, attachment, map
/// entries, link allowances, hosts file. Rolls back on failure.
pub fn build(paths: &Paths, state: &State, c: &Container) -> Result<()> {
    if !c.owns_netns() {
        return Ok(());
    }
    transaction(|undo| {
        if c.on_bridge() {
            let view = state
                .net(&c.network)
                .with_context(|| format!("network {} not found", c.network))?;
            plumb(paths, &view, c, undo)?;
            allow_links(paths, state, c, undo)?;
        } else {
            make_netns(&c.name, c.cni.as_ref(), undo)?;
        }
        write_hosts(state, c, undo)
    })
}

pub(crate) fn allow_keys(c: &Container, t: &Container) -> Vec<AllowKey> {
    let (a, b) = (addr_key(c.ip.octets()), addr_key(t.ip.octets()));
    t.exposed
        .iter()
        .flat_map(|(port, proto)| {
            let p = proto.number();
            [
                AllowKey {
                    saddr: a,
                    daddr: b,
                    port: *port,
                    proto: p,
                    by_sport: 0,
                },
                AllowKey {
                    saddr: b,
                    daddr: a,
                    port: *port,
                    proto: p,
                    by_sport: 1,
                },
            ]
        })
        .collect()
}

/// Under icc=false a link opens the linked container's exposed ports to the
/// linking container, and their replies.
pub(crate) fn allow_links(
    paths: &Paths,
    state: &State,
    c: &Container,
    undo: &mut Undo,
) -> Result<()> {
    for (target, _) in &c.links {
        let Some(t) = state.containers.get(target) else {
            continue;
        };
        let keys = allow_keys(c, t);
        let mut allow = loader::hash::<AllowKey, u32>(paths, maps::ALLOW)?;
        for k in &keys {
            allow
                .insert(*k, 1, 0)
                .with_context(|| format!("allowing {} -> {target}", c.name))?;
        }
        let p = paths.clone();
        undo.push("remove link allowances", move || {
            let mut allow = loader::hash::<AllowKey, u32>(&p, maps::ALLOW)?;
            for k in &keys {
                let _ = allow.remove(k);
            }
            Ok(())
        });
    }
    Ok(())
}

/// The container's own network namespace, named after it: IPv6 off (cnet's
/// networks are IPv4), `lo` up. Deleted again on rollback.
pub(crate) fn make_netns(
    name: &str,
    cni: Option<&crate::state::CniAttachment>,
    undo: &mut Undo,
) -> Result<()> {
    match cni {
        // Docker's sandbox may not exist yet (its prestart hook makes it):
        // Docker moves the interface in itself.
        Some(a) if a.handoff.is_some() => return Ok(()),
        // The runtime's namespace, bound under the container's name.
        Some(a) => netns::adopt(name, std::path::Path::new(&a.netns))?,
        None => netns::add(name)?,
    }
    let n = name.to_string();
    undo.push("delete netns", move || netns::del(&n).map_err(Into::into));
    crate::crash::point("run:netns");
    net::ipv6_off_in(name)?;
    Netlink::in_netns(name)?.up("lo")?;
    Ok(())
}

pub(crate) fn plumb(
    paths: &Paths,
    view: &crate::state::NetView,
    c: &Container,
    undo: &mut Undo,
) -> Result<()> {
    make_netns(&c.name, c.cni.as_ref(), undo)?;
    let a = c
        .interfaces()
        .into_iter()
        .next()
        .context("a bridge container has eth0")?;
    let handoff = c.cni.as_ref().and_then(|x| x.handoff.as_deref());
    match handoff {
        Some(peer) => attach_handoff(paths, view, &a, peer)?,
        None => attach_interface(paths, &c.name, view, &a)?,
    }
    let (p, n, a2) = (paths.clone(), c.name.clone(), a.clone());
    undo.push("detach interface", move || detach_interface(&p, &n, &a2));
    crate::crash::point("run:veth");
    if handoff.is_none() {
        Netlink::in_netns(&c.name)?.add_default_route(view.gateway)?;
    }
    for m in &c.ports {
        publish(paths, m, c.ip)?;
        let (p, m, ip) = (paths.clone(), m.clone(), c.ip);
        undo.push("unpublish", move || unpublish(&p, &m, ip));
    }
    crate::crash::point("run:ports");
    Ok(())
}

/// One interface of a container on a bridge network: veth pair, address,
/// MTU, the veth program and the ENDPOINTS entry. Rolls back on failure.
pub fn attach_interface(
    paths: &Paths,
    ns: &str,
    view: &crate::state::NetView,
    a: &crate::state::Attachment,
) -> Result<()> {
    transaction(|undo| {
        let host = Netlink::here()?;
        let peer_ns = netns::open(ns)?;
        host.add_veth(&a.veth, &a.ifname, peer_ns.as_raw_fd())?;
        let v = a.veth.clone();
        undo.push("delete veth", move || {
            Netlink::here()?.del_link(&v).map_err(Into::into)
        });
        // The program's attachment waits for an RCU grace period (about
        // 10 ms): it runs on a thread of its own while the links are set up.
        let (attached, configured) = std::thread::scope(|s| {
            let attach = s.spawn(|| attach_veth_program(paths, a));
            let configured = configure_links(&host, ns, view, a);
            (attach.join(), configured)
        });
        let attached = attached
            .map_err(|_| anyhow::anyhow!("the thread attaching {}'s program panicked", a.veth))?;
        if let Some(link) = attached? {
            let p = paths.clone();
            undo.push("detach veth program", move || loader::detach(&p, &link));
        }
        configured?;
        record_endpoint(paths, a, view.net_id, undo)
    })
}

/// Both ends of a new veth: the host side on its bridge (no IPv6), the
/// container side with its MAC, MTU and address, up.
fn configure_links(
    host: &Netlink,
    ns: &str,
    view: &crate::state::NetView,
    a: &crate::state::Attachment,
) -> Result<()> {
    // No IPv6 on the host side either: no link-local address, no NDP.
    let key = format!("net.ipv6.conf.{}.disable_ipv6", a.veth);
    net::sysctl(&key, "1")?;
    host.set_link(&a.veth, &bridge_port(view))?;
    let inside = Netlink::in_netns(ns)?;
    inside.set_link(
        &a.ifname,
        &LinkChange {
            mac: Some(ipam::parse_mac(&a.mac)?),
            mtu: view.mtu,
            ..LinkChange::default()
        },
    )?;
    inside.add_addr(&a.ifname, a.ip, view.subnet.prefix)?;
    inside.up(&a.ifname)?;
    Ok(())
}

/// The host side of a veth: on the network's bridge, its MTU, up.
pub(crate) fn bridge_port(view: &crate::state::NetView) -> LinkChange {
    LinkChange {
        controller: Some(view.bridge.clone()),
        mtu: view.mtu,
        up: true,
        ..LinkChange::default()
    }
}

/// Like [`attach_interface`], with the peer left in the host namespace as
/// `peer` (MAC set, nothing else) for Docker to move into its sandbox.
pub(crate) fn attach_handoff(
    paths: &Paths,
    view: &crate::state::NetView,
    a: &crate::state::Attachment,
    peer: &str,
) -> Result<()> {
    transaction(|undo| {
        let host = Netlink::here()?;
        let own = std::fs::File::open("/proc/thread-self/ns/net")
            .context("opening this network namespace")?;
        host.add_veth(&a.veth, peer, own.as_raw_fd())?;
        let v = a.veth.clone();
        undo.push("delete veth", move || {
            Netlink::here()?.del_link(&v).map_err(Into::into)
        });
        net::sysctl(&format!("net.ipv6.conf.{}.disable_ipv6", a.veth), "1")?;
        host.set_link(&a.veth, &bridge_port(view))?;
        host.set_link(
            peer,
            &LinkChange {
                mac: Some(ipam::parse_mac(&a.mac)?),
                mtu: view.mtu,
                ..LinkChange::default()
            },
        )?;
        endpoint_entry(paths, a, view.net_id, undo)
    })
}

/// Removes one interface: its map entry, conntrack, program link and veth.
pub fn detach_interface(paths: &Paths, _ns: &str, a: &crate::state::Attachment) -> Result<()> {
    let mut errors = Vec::new();
    if paths.map_pin(maps::ENDPOINTS).exists() {
        if let Err(e) = loader::hash::<u32, Endpoint>(paths, maps::ENDPOINTS).and_then(|mut m| {
            loader::removed(m.remove(&addr_key(a.ip.octets()))).context("removing endpoint")
        }) {
            errors.push(format!("{e:#}"));
        }
        let _ = purge_conntrack(paths, a.ip);
        let _ = purge_allow(paths, a.ip);
        if let Err(e) = crate::observe::counters::untrack_endpoint(paths, a.ip) {
            errors.push(format!("{e:#}"));
        }
    }
    // The veth first: its program goes with it, so dropping the link pin
    // afterwards costs the kernel no second RCU grace period under RTNL.
    if net::link_exists(&a.veth)
        && let Err(e) = Netlink::here().and_then(|nl| nl.del_link(&a.veth))
    {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = loader::detach(paths, &format!("veth-{}", a.veth)) {
        errors.push(format!("{e:#}"));
    }
    ensure!(
        errors.is_empty(),
        "removing interface {} ({}): {}",
        a.ifname,
        a.ip,
        errors.join("; ")
    );
    Ok(())
}

/// The veth program link and the ENDPOINTS entry of one interface (also
/// used to reconcile after a wipe).
pub(crate) fn endpoint_entry(
    paths: &Paths,
    a: &crate::state::Attachment,
    net_id: u32,
    undo: &mut Undo,
) -> Result<()> {
    if let Some(link) = attach_veth_program(paths, a)? {
        let p = paths.clone();
        undo.push("detach veth program", move || loader::detach(&p, &link));
    }
    record_endpoint(paths, a, net_id, undo)
}

/// Attaches the veth program to the interface's host side; returns the
/// link's pin name when it attached it (`None`: it was attached already).
fn attach_veth_program(paths: &Paths, a: &crate::state::Attachment) -> Result<Option<String>> {
    let link = format!("veth-{}", a.veth);
    Ok(loader::attach_tc(paths, loader::VETH_PROG, &a.veth, &link)?.then_some(link))
}

/// The ENDPOINTS entry of one interface and its counters.
fn record_endpoint(
    paths: &Paths,
    a: &crate::state::Attachment,
    net_id: u32,
    undo: &mut Undo,
) -> Result<()> {
    let ifindex = net::ifindex(&a.veth)?;
    let mac = ipam::parse_mac(&a.mac).with_context(|| format!("MAC of {}", a.veth))?;
    loader::hash::<u32, Endpoint>(paths, maps::ENDPOINTS)?
        .insert(
            addr_key(a.ip.octets()),
            Endpoint::new(ifindex, mac, net_id),
            0,
        )
        .with_context(|| format!("recording endpoint {}", a.ip))?;
    let (p, ip) = (paths.clone(), a.ip);
    undo.push("remove endpoint", move || {
        loader::hash::<u32, Endpoint>(&p, maps::ENDPOINTS)?
            .remove(&addr_key(ip.octets()))
            .map_err(Into::into)
    });
    crate::observe::counters::track_endpoint(paths, a.ip)?;
    let (p, ip) = (paths.clone(), a.ip);
    undo.push("remove endpoint counters", move || {
        crate::observe::counters::untrack_endpoint(&p, ip)
    });
    Ok(())
}
