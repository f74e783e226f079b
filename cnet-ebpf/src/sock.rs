//! Host-local access to published ports: cgroup sock_addr hooks rewrite the
//! destination once per connect()/sendmsg() to the container's address, and
//! show the published address back on recvmsg()/getpeername(). No per-packet
//! NAT and no userland proxy. The hooks are global to their cgroup, so they
//! act only for sockets in the instance's own network namespace.
use aya_ebpf::{
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use cnet_common::maps::{SockRevKey, SockRevValue};

use crate::maps::{SOCK_REV, config, published_by};

/// Allow the operation (sock_addr programs must return 1).
pub const ALLOW: i32 = 1;

#[inline(always)]
fn ours(ctx: &SockAddrContext) -> bool {
    // SAFETY: helper on the context the kernel handed us.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    let want = config().netns_cookie;
    want != 0 && cookie == want
}

#[inline(always)]
fn is_loopback(addr: u32) -> bool {
    // First octet of a network-order address read natively (little endian).
    addr & 0xff == 127
}

/// connect4 / sendmsg4: a published host address:port becomes the container's.
/// A connect() (`connect` true) is a new host-local flow: counted as a
/// connection of the published port and reported to `cnet monitor`; each
/// datagram of an unconnected UDP socket is not.
#[inline(always)]
pub fn to_container(ctx: &SockAddrContext, connect: bool) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    // SAFETY: the kernel's bpf_sock_addr for this call; these fields are readable
    // and user_ip4/user_port writable for connect4/sendmsg4.
    unsafe {
        let sa = ctx.sock_addr;
        let addr = (*sa).user_ip4;
        let port = (*sa).user_port as u16;
        let proto = (*sa).protocol as u8;
        let to = match published_by(addr, port, proto) {
            Some(found) => Some(found),
            // 127.0.0.0/8 reaches ports published on every address or on 127.0.0.1 itself.
            None if is_loopback(addr) => published_any(port, proto).map(|v| (v, false)),
            None => None,
        };
        let Some((to, exact)) = to else { return ALLOW };
        if connect {
            crate::observe::host_local(addr, port, proto, &to, exact);
        }
        let key = SockRevKey {
            cookie: bpf_get_socket_cookie(sa.cast()),
            addr: to.addr,
            port: to.port,
            _pad: 0,
        };
        let _ = SOCK_REV.insert(
            key,
            SockRevValue {
                addr,
                port,
                _pad: 0,
            },
            0,
        );
        (*sa).user_ip4 = to.addr;
        (*sa).user_port = u32::from(to.port);
    }
    ALLOW
}

#[inline(always)]
fn published_any(port: u16, proto: u8) -> Option<cnet_common::maps::PortValue> {
    // SAFETY: value copied out immediately.
    unsafe { crate::maps::PORTS.get(cnet_common::maps::PortKey::new(0, port, proto)) }.copied()
}

/// recvmsg4 / getpeername4: the container's address shows as the one the
/// application used.
#[inline(always)]
pub fn from_container(ctx: &SockAddrContext) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    // SAFETY: as in `to_container`.
    unsafe {
        let sa = ctx.sock_addr;
        let key = SockRevKey {
            cookie: bpf_get_socket_cookie(sa.cast()),
            addr: (*sa).user_ip4,
            port: (*sa).user_port as u16,
            _pad: 0,
        };
        if let Some(orig) = SOCK_REV.get(key).copied() {
            (*sa).user_ip4 = orig.addr;
            (*sa).user_port = u32::from(orig.port);
        }
    }
    ALLOW
}
