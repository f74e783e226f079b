//! Links, addresses and routes through rtnetlink, from synchronous code: a
//! [`Netlink`] owns a small current-thread tokio runtime and one rtnetlink
//! connection, bound to the network namespace it was opened in (the calling
//! thread's, or a named one: the socket is created by a short-lived thread
//! that joined it, and stays in that namespace).
use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr},
    os::fd::RawFd,
};

use futures_util::TryStreamExt;
use rtnetlink::{
    Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::AddressAttribute,
        link::{InfoData, InfoVeth, LinkAttribute, LinkMessage},
        route::{RouteAddress, RouteAttribute},
    },
};

use super::HostError;

/// One rtnetlink connection in one network namespace.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
    /// Where the socket lives, for messages ("this namespace" or a name).
    pub netns: String,
}

/// A link as `ip link` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
}

/// An IPv4 address on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr4 {
    pub index: u32,
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

fn runtime() -> Result<tokio::runtime::Runtime, HostError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| HostError::Io {
            what: "starting the netlink runtime".into(),
            source: e,
        })
}

impl Netlink {
    /// A connection in the calling thread's network namespace.
    pub fn here() -> Result<Self, HostError> {
        let rt = runtime()?;
        let (conn, handle, _) = {
            let _g = rt.enter();
            rtnetlink::new_connection().map_err(|e| HostError::Io {
                what: "opening a netlink socket".into(),
                source: e,
            })?
        };
        rt.spawn(conn);
        Ok(Self {
            rt,
            handle,
            netns: "this namespace".into(),
        })
    }

    /// A connection inside named network namespace `ns` (`/run/netns/NS`).
    pub fn in_netns(ns: &str) -> Result<Self, HostError> {
        let rt = runtime()?;
        let h = rt.handle().clone();
        let (conn, handle, _) = super::netns::within(ns, move || {
            let _g = h.enter();
            rtnetlink::new_connection().map_err(|e| HostError::Io {
                what: "opening a netlink socket".into(),
                source: e,
            })
        })??;
        rt.spawn(conn);
        Ok(Self {
            rt,
            handle,
            netns: format!("network namespace {ns}"),
        })
    }

    fn run<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn err(&self, op: &'static str, object: &str, e: rtnetlink::Error) -> HostError {
        HostError::from_netlink(op, format!("{object} in {}", self.netns), e)
    }

    /// Every link.
    pub fn links(&self) -> Result<Vec<Link>, HostError> {
        let msgs: Vec<LinkMessage> = self
            .run(self.handle.link().get().execute().try_collect())
            .map_err(|e| self.err("listing", "links", e))?;
        Ok(msgs.iter().map(link_of).collect())
    }

    /// The link named `name`.
    pub fn link(&self, name: &str) -> Result<Link, HostError> {
        let r: Result<Vec<LinkMessage>, _> = self.run(
            self.handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_collect(),
        );
        match r {
            Ok(v) if !v.is_empty() => Ok(link_of(&v[0])),
            Ok(_) => Err(HostError::NotFound {
                what: "interface",
                name: format!("{name} in {}", self.netns),
            }),
            Err(e) => Err(self.err("looking up", &format!("interface {name}"), e)),
        }
    }

    pub fn index(&self, name: &str) -> Result<u32, HostError> {
        Ok(self.link(name)?.index)
    }

    /// Deletes link `name`; a link already gone is not an error.
    pub fn del_link(&self, name: &str) -> Result<(), HostError> {
        let index = match self.link(name) {
            Ok(l) => l.index,
            Err(HostError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.run(self.handle.link().del(index).execute()) {
            Ok(()) => Ok(()),
            Err(e) => match self.err("deleting", &format!("interface {name}"), e) {
                HostError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// A bridge named `name` (down, no address).
    pub fn add_bridge(&self, name: &str) -> Result<(), HostError> {
        self.run(
            self.handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute(),
        )
        .map_err(|e| self.err("creating", &format!("bridge {name}"), e))
    }

    /// A veth pair: `name` here, `peer` created directly in the namespace
    /// of `peer_netns` (an open `/run/netns/NAME`), so its name never
    /// meets this namespace's interfaces.
    pub fn add_veth(&self, name: &str, peer: &str, peer_netns: RawFd) -> Result<(), HostError> {
        let peer_msg = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .setns_by_fd(peer_netns)
            .build();
        let msg = LinkVeth::new(name, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.run(self.handle.link().add(msg).execute())
            .map_err(|e| self.err("creating", &format!("veth {name} (peer {peer})"), e))
    }

    /// Changes link `name`: controller (bridge), MTU, MAC, and up.
    pub fn set_link(&self, name: &str, change: &LinkChange) -> Result<(), HostError> {
        let index = self.index(name)?;
        let mut b = LinkUnspec::new_with_index(index);
        if let Some(c) = &change.controller {
            b = b.controller(self.index(c)?);
        }
        if let Some(m) = change.mtu {
            b = b.mtu(m);
        }
        if let Some(mac) = change.mac {
            b = b.address(mac.to_vec());
        }
        if change.up {
            b = b.up();
        }
        self.run(self.handle.link().set(b.build()).execute())
            .map_err(|e| self.err("changing", &format!("interface {name}"), e))
    }

    /// Brings link `name` up.
    pub fn up(&self, name: &str) -> Result<(), HostError> {
        self.set_link(
            name,
            &LinkChange {
                up: true,
                ..LinkChange::default()
            },
        )
    }

    /// Every IPv4 address.
    pub fn addrs4(&self) -> Result<Vec<Addr4>, HostError> {
        let msgs: Vec<_> = self
            .run(self.handle.address().get().execute().try_collect())
            .map_err(|e| self.err("listing", "addresses", e))?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.family != AddressFamily::Inet {
                continue;
            }
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(addr) = addr {
                out.push(Addr4 {
                    index: m.header.index,
                    addr,
                    prefix: m.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    /// Adds `addr/prefix` to link `name` (already there: not an error).
    pub fn add_addr(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), HostError> {
        let index = self.index(name)?;
        // Added without a dump of every address first: EEXIST says it is there.
        match self.run(
            self.handle
                .address()
                .add(index, IpAddr::V4(addr), prefix)
                .execute(),
        ) {
            Ok(()) => Ok(()),
            Err(e) => match self.err("adding", &format!("address {addr}/{prefix} to {name}"), e) {
                HostError::Exists { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// A default route via `gw`.
    pub fn add_default_route(&self, gw: Ipv4Addr) -> Result<(), HostError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build();
        self.run(self.handle.route().add(msg).execute())
            .map_err(|e| self.err("adding", &format!("default route via {gw}"), e))
    }

    /// Interface indexes of the IPv4 default routes (main table).
    pub fn default_route_ifindexes(&self) -> Result<Vec<u32>, HostError> {
        let req = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let msgs: Vec<_> = self
            .run(self.handle.route().get(req).execute().try_collect())
            .map_err(|e| self.err("listing", "routes", e))?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.destination_prefix_length != 0 || m.header.table != 254 {
                continue;
            }
            let dst_any = !m
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(RouteAddress::Inet(d)) if !d.is_unspecified()));
            if let Some(oif) = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            }) && dst_any
                && !out.contains(&oif)
            {
                out.push(oif);
            }
        }
        Ok(out)
    }
}

/// What [`Netlink::set_link`] changes.
#[derive(Clone, Debug, Default)]
pub struct LinkChange {
    pub controller: Option<String>,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
}

fn link_of(m: &LinkMessage) -> Link {
    let name = m
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let mac = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) if b.len() == 6 => {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(b);
            Some(mac)
        }
        _ => None,
    });
    Link {
        index: m.header.index,
        name,
        mac,
    }
}
