//! Map names, sizes, keys and values, shared by the eBPF programs and the loader.
//! Addresses and ports are stored in network byte order, as they sit in packets.
use crate::abi;

/// Per-CPU counters, indexed by [`crate::DropReason`] / [`crate::Counter`].
pub const STATS: &str = "STATS";
/// Published ports: [`PortKey`] -> [`PortValue`].
pub const PORTS: &str = "PORTS";
pub const PORTS_MAX: u32 = 65536 * 2;
/// Containers: address -> [`Endpoint`].
pub const ENDPOINTS: &str = "ENDPOINTS";
pub const ENDPOINTS_MAX: u32 = 65536;
/// Uplinks: ifindex -> [`Uplink`] (the address masquerade uses).
pub const UPLINKS: &str = "UPLINKS";
pub const UPLINKS_MAX: u32 = 64;
/// Addresses that count as "the host" for published ports bound to any address.
pub const HOST_ADDRS: &str = "HOST_ADDRS";
pub const HOST_ADDRS_MAX: u32 = 256;
/// One [`Config`] at index 0.
pub const CONFIG: &str = "CONFIG";
/// Connection tracking (LRU): [`CtKey`] -> [`CtEntry`].
pub const CONNTRACK: &str = "CONNTRACK";
pub const CONNTRACK_MAX: u32 = 262_144;
/// Host-local access: (socket cookie, container addr:port) -> the address the
/// application asked for, so recvmsg/getpeername can show it back.
pub const SOCK_REV: &str = "SOCK_REV";
pub const SOCK_REV_MAX: u32 = 65536;
/// Fragmented datagrams being translated: [`FragKey`] -> [`FragValue`] (LRU).
pub const FRAGS: &str = "FRAGS";
pub const FRAGS_MAX: u32 = 16384;

/// Networks: id -> [`Network`] (icc and other per-network switches).
pub const NETWORKS: &str = "NETWORKS";
pub const NETWORKS_MAX: u32 = 1024;
/// Link allowances under icc=false: [`AllowKey`] -> 1.
pub const ALLOW: &str = "ALLOW";
pub const ALLOW_MAX: u32 = 65536;
/// Ordered filter rules: slot -> [`Filter`]; the first matching rule decides.
/// Two sets of `FILTERS_MAX` slots: the datapath reads the one `FILTER_SET`
/// names, userspace writes the other and then flips it, so a packet never
/// sees a half-written list.
pub const FILTERS: &str = "FILTERS";
pub const FILTERS_MAX: u32 = 256;
pub const FILTER_SLOTS: u32 = 2 * FILTERS_MAX;
/// Tail-call targets (a program array), slots `JUMP_*`.
pub const JUMPS: &str = "JUMPS";
/// Slot of the program that answers "fragmentation needed".
pub const JUMP_FRAG_NEEDED: u32 = 0;
/// Slot of the second stage of a container's veth: new flows (icc,
/// hairpin). Its own program, so the verifier checks it once
/// instead of once per path of the first stage.
pub const JUMP_VETH_NEW: u32 = 1;
/// Slot of the veth's third stage: a new flow, masqueraded.
pub const JUMP_VETH_MASQ: u32 = 2;
/// Slot of the uplink's second stage: new flows to published ports.
pub const JUMP_UPLINK_NEW: u32 = 3;
pub const JUMPS_MAX: u32 = 4;
/// One `u32`: which half of `FILTERS` is live (0 or 1).
pub const FILTER_SET: &str = "FILTER_SET";
/// Per-CPU packet counts per filter rule id (survive reordering and swaps).
pub const FILTER_STATS: &str = "FILTER_STATS";

/// Traffic per container address: [`EpStats`] per CPU. Entries are made by
/// userspace with the endpoint; the datapath only adds to existing ones.
pub const EP_STATS: &str = "EP_STATS";
/// Drops per container address and reason: [`DropKey`] -> packets per CPU.
/// The datapath makes an entry on a container's first drop of a reason.
pub const DROP_STATS: &str = "DROP_STATS";
pub const DROP_STATS_MAX: u32 = 65536;
/// Traffic per published port: [`PortKey`] (as in `PORTS`) -> [`PortStats`]
/// per CPU; made and removed by userspace with the mapping.
pub const PORT_STATS: &str = "PORT_STATS";
/// Datapath events for `cnet monitor` (a ring buffer of [`Event`]s).
pub const EVENTS: &str = "EVENTS";
pub const EVENTS_BYTES: u32 = 1 << 20;
/// One [`Monitor`] at index 0: which events are wanted, until when.
pub const MONITOR: &str = "MONITOR";
/// Per-CPU token bucket of the events ([`RateLimit`]).
pub const EVENT_RATE: &str = "EVENT_RATE";

/// Every map, in the order `cnet up` pins them.
pub const ALL: &[&str] = &[
    STATS,
    PORTS,
    ENDPOINTS,
    UPLINKS,
    HOST_ADDRS,
    CONFIG,
    CONNTRACK,
    SOCK_REV,
    NETWORKS,
    ALLOW,
    FILTERS,
    FILTER_STATS,
    FRAGS,
    FILTER_SET,
    JUMPS,
    EP_STATS,
    DROP_STATS,
    PORT_STATS,
    EVENTS,
    MONITOR,
    EVENT_RATE,
];

abi! {
    /// Packets and bytes a container sent (`out`, as they left its veth) and
    /// was handed by cnet (`in`).
    EpStats [32] { pkts_out: u64, bytes_out: u64, pkts_in: u64, bytes_in: u64 }
}

abi! {
    /// Key of `DROP_STATS`: a container address and a [`crate::DropReason`] slot.
    DropKey [8] { addr: u32, reason: u32 }
}

abi! {
    /// Traffic of one published port: `in` towards the container, `out` its
    /// replies, `conns` the flows opened through it.
    PortStats [40] { pkts_in: u64, bytes_in: u64, pkts_out: u64, bytes_out: u64, conns: u64 }
}

/// Event kinds, also the `Monitor::flags` bits that switch them on.
pub const EVENT_DROP: u8 = 1;
pub const EVENT_FLOW_NEW: u8 = 2;
pub const EVENT_FLOW_END: u8 = 4;
pub const EVENT_FILTER: u8 = 8;

abi! {
    /// One datapath event. `orig` is the packet's tuple as it came, `xlat` as
    /// it leaves (equal for drops and filter hits). Addresses and ports in
    /// network byte order.
    Event [48] {
        ts_ns: u64,
        kind: u8,
        /// Drop reason slot, `CT_*` kind of a flow, or the filter action.
        reason: u8,
        proto: u8,
        _pad: u8,
        ifindex: u32,
        orig_saddr: u32,
        orig_daddr: u32,
        orig_sport: u16,
        orig_dport: u16,
        xlat_saddr: u32,
        xlat_daddr: u32,
        xlat_sport: u16,
        xlat_dport: u16,
        /// Filter rule id (filter hits), else 0.
        rule: u32,
        _pad2: u32,
    }
}

abi! {
    /// What `cnet monitor` wants: `EVENT_*` bits, valid until `until_ns`
    /// (bpf_ktime_get_ns); the monitor renews it every second, so events stop
    /// by themselves a few seconds after the last listener went.
    /// `rate` events per second per CPU pass the token bucket (0: 1000).
    Monitor [16] { flags: u32, rate: u32, until_ns: u64 }
}

abi! {
    /// A per-CPU token bucket: tokens left and when it was last filled.
    RateLimit [16] { tokens: u64, last_ns: u64 }
}

/// Masquerade source ports (and ICMP ids) come from this range, which
/// `cnet up` reserves from the host's ephemeral ports
/// (`net.ipv4.ip_local_reserved_ports`); Linux's default ephemeral range
/// ends at 60999.
pub const MASQ_PORT_LO: u16 = 61000;
pub const MASQ_PORT_HI: u16 = 65535;

abi! {
    /// A fragmented datagram as it arrived: addresses, IP id and protocol.
    FragKey [12] { saddr: u32, daddr: u32, id: u16, proto: u8, _pad: u8 }
}

impl FragKey {
    pub const fn new(saddr: u32, daddr: u32, id: u16, proto: u8) -> Self {
        Self {
            saddr,
            daddr,
            id,
            proto,
            _pad: 0,
        }
    }
}

abi! {
    /// How the first fragment was translated: the later ones get the same
    /// addresses and go out of the same device (0: decide by address).
    FragValue [12] { saddr: u32, daddr: u32, out_ifindex: u32 }
}

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

abi! {
    /// A published host address:port. `addr` 0 means every host address.
    PortKey [8] { addr: u32, port: u16, proto: u8, _pad: u8 }
}

impl PortKey {
    pub const fn new(addr: u32, port: u16, proto: u8) -> Self {
        Self {
            addr,
            port,
            proto,
            _pad: 0,
        }
    }
}

abi! {
    /// Where a published port leads.
    PortValue [8] { addr: u32, port: u16, _pad: u16 }
}

impl PortValue {
    pub const fn new(addr: u32, port: u16) -> Self {
        Self {
            addr,
            port,
            _pad: 0,
        }
    }
}

abi! {
    /// A container endpoint: its host-side veth, its MAC and its network.
    Endpoint [16] { ifindex: u32, mac: [u8; 6], _pad: [u8; 2], network: u32 }
}

impl Endpoint {
    pub const fn new(ifindex: u32, mac: [u8; 6], network: u32) -> Self {
        Self {
            ifindex,
            mac,
            _pad: [0; 2],
            network,
        }
    }
}

/// Id of the default `bridge` network.
pub const NETWORK_BRIDGE: u32 = 1;

abi! {
    /// Per-network switches.
    Network [4] { flags: u32 }
}

/// Containers of this network may not talk to each other (Docker's icc=false).
pub const NETWORK_ICC_OFF: u32 = 1;
/// `--internal`: no traffic in or out of the network, only among its containers.
pub const NETWORK_INTERNAL: u32 = 2;
/// Traffic from this network leaving the host is not masqueraded.
pub const NETWORK_NO_MASQ: u32 = 4;
/// Docker's `gateway_mode_ipv4=routed`: the outside may reach the network's
/// container addresses directly (filters still apply).
pub const NETWORK_ROUTED: u32 = 8;

abi! {
    /// A link allowance: packets from `saddr` to `daddr` with this protocol and
    /// port. `by_sport` 0 matches the destination port (requests), 1 the source
    /// port (replies).
    AllowKey [12] { saddr: u32, daddr: u32, port: u16, proto: u8, by_sport: u8 }
}

abi! {
    /// A filter rule. Addresses and masks in network byte order (0/0: any);
    /// `proto` 0: any; ports in host order, inclusive (0-65535: any).
    Filter [28] {
        src: u32,
        src_mask: u32,
        dst: u32,
        dst_mask: u32,
        dport_lo: u16,
        dport_hi: u16,
        proto: u8,
        /// `FILTER_DROP` or `FILTER_ALLOW`.
        action: u8,
        /// 1 when the slot holds a rule; the first empty slot ends the list.
        used: u8,
        _pad: u8,
        id: u32,
    }
}

pub const FILTER_ALLOW: u8 = 1;
pub const FILTER_DROP: u8 = 2;

impl Filter {
    /// Whether the rule matches a packet (addresses in network byte order, port in host order).
    pub const fn matches(&self, saddr: u32, daddr: u32, proto: u8, dport: u16) -> bool {
        saddr & self.src_mask == self.src
            && daddr & self.dst_mask == self.dst
            && (self.proto == 0 || self.proto == proto)
            && dport >= self.dport_lo
            && dport <= self.dport_hi
    }
}

abi! {
    /// An uplink's masquerade address.
    Uplink [4] { addr: u32 }
}

abi! {
    /// Instance-wide settings.
    Config [24] {
        /// Network namespace cookie of the instance's host namespace (host-local hooks act only there).
        netns_cookie: u64,
        /// MAC of the bridge, used as the source of frames redirected into containers.
        bridge_mac: [u8; 6],
        _pad: [u8; 2],
        /// Bridge gateway address (the source of self-hairpin traffic).
        gateway: u32,
        /// Bit 0: masquerade enabled. Bit 1: datapath debug logs on.
        flags: u32,
    }
}

pub const CONFIG_MASQUERADE: u32 = 1;
/// Datapath debug logs (aya-log) are written: `cnet up --debug`.
pub const CONFIG_DEBUG: u32 = 2;

abi! {
    /// A flow as seen in one direction. For ICMP echo both ports hold the identifier.
    CtKey [16] { saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8, _pad: [u8; 3] }
}

impl CtKey {
    pub const fn new(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> Self {
        Self {
            saddr,
            daddr,
            sport,
            dport,
            proto,
            _pad: [0; 3],
        }
    }
    /// The same flow seen from the other side.
    pub const fn reversed(&self) -> Self {
        Self::new(self.daddr, self.saddr, self.dport, self.sport, self.proto)
    }
}

/// What a conntrack entry does (and which counter it bumps).
pub const CT_DNAT: u8 = 1;
pub const CT_REV_DNAT: u8 = 2;
pub const CT_SNAT: u8 = 3;
pub const CT_REV_SNAT: u8 = 4;
/// Flow event kinds that are not conntrack kinds (`Event::reason` of a new
/// flow): a container reaching a published port through a host address (a
/// `CT_DNAT` pair in conntrack), and a host process's connect() to a
/// published port, rewritten by the socket hook (nothing in conntrack).
pub const FLOW_HAIRPIN: u8 = 5;
pub const FLOW_HOST_LOCAL: u8 = 6;

/// `CtEntry::port_key`: the published port matched its exact host address.
pub const CT_PORT_EXACT: u8 = 1;
/// `CtEntry::port_key`: the published port matched the "any address" entry.
pub const CT_PORT_ANY: u8 = 2;

/// TCP flags seen in this direction.
pub const CT_SEEN_SYN: u8 = 1;
pub const CT_SEEN_FIN: u8 = 2;
pub const CT_SEEN_RST: u8 = 4;
pub const CT_SEEN_ACK: u8 = 8;
/// The flow has been answered (a packet matched the reverse entry); on both entries.
pub const CT_SEEN_REPLY: u8 = 16;
/// The other direction sent a FIN.
pub const CT_SEEN_FIN_PEER: u8 = 32;

/// Whether a `CT_*` kind is the reverse (reply) entry of a pair.
pub const fn ct_is_reverse(kind: u8) -> bool {
    kind == CT_REV_DNAT || kind == CT_REV_SNAT
}

abi! {
    /// Translation for packets matching the key: rewrite them to this tuple.
    CtEntry [48] {
        saddr: u32,
        daddr: u32,
        sport: u16,
        dport: u16,
        /// `CT_*` kind.
        kind: u8,
        /// `CT_SEEN_*` bits.
        tcp_seen: u8,
        /// DNAT pairs: which `PORTS` key the flow came through
        /// (`CT_PORT_EXACT`: the packet's host address, `CT_PORT_ANY`: 0).
        port_key: u8,
        _pad: u8,
        /// Device to send translated packets out of (0: decide by address).
        out_ifindex: u32,
        _pad2: u32,
        /// bpf_ktime_get_ns of the last packet.
        last_seen: u64,
        packets: u64,
        bytes: u64,
    }
}

/// A flow's state, as `conntrack -L` names it.
pub const fn ct_state(proto: u8, seen: u8) -> &'static str {
    let fin = seen & (CT_SEEN_FIN | CT_SEEN_FIN_PEER);
    match proto {
        PROTO_TCP if seen & CT_SEEN_RST != 0 => "CLOSE",
        PROTO_TCP if fin == CT_SEEN_FIN | CT_SEEN_FIN_PEER => "TIME_WAIT",
        PROTO_TCP if fin != 0 => "FIN_WAIT",
        PROTO_TCP if seen & CT_SEEN_REPLY != 0 && seen & CT_SEEN_ACK != 0 => "ESTABLISHED",
        PROTO_TCP if seen & CT_SEEN_REPLY != 0 => "SYN_RECV",
        PROTO_TCP => "SYN_SENT",
        _ if seen & CT_SEEN_REPLY != 0 => "ASSURED",
        _ => "UNREPLIED",
    }
}

/// Seconds of idleness after which an entry is stale, by protocol and state:
/// netfilter's defaults (SYN-sent 120 s, established 5 days, FIN/close-wait
/// 60 s, time-wait 120 s, close 10 s; UDP unreplied 30 s, assured 120 s;
/// ICMP 30 s).
pub const fn ct_timeout_secs(proto: u8, seen: u8) -> u64 {
    let fin = seen & (CT_SEEN_FIN | CT_SEEN_FIN_PEER);
    match proto {
        PROTO_TCP if seen & CT_SEEN_RST != 0 => 10,
        PROTO_TCP if fin == CT_SEEN_FIN | CT_SEEN_FIN_PEER => 120,
        PROTO_TCP if fin != 0 => 60,
        PROTO_TCP if seen & CT_SEEN_REPLY != 0 && seen & CT_SEEN_ACK != 0 => 432_000,
        PROTO_TCP if seen & CT_SEEN_REPLY != 0 => 60,
        PROTO_TCP => 120,
        PROTO_UDP if seen & CT_SEEN_REPLY != 0 => 120,
        PROTO_UDP => 30,
        _ => 30,
    }
}

abi! {
    /// Key of `SOCK_REV`.
    SockRevKey [16] { cookie: u64, addr: u32, port: u16, _pad: u16 }
}

abi! {
    /// Value of `SOCK_REV`: the address the application used.
    SockRevValue [8] { addr: u32, port: u16, _pad: u16 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matching() {
        let net = crate::addr_key([10, 200, 1, 0]);
        let mask = crate::addr_key([255, 255, 255, 0]);
        let f = Filter {
            src: net,
            src_mask: mask,
            dst: 0,
            dst_mask: 0,
            dport_lo: 80,
            dport_hi: 90,
            proto: PROTO_TCP,
            action: FILTER_DROP,
            used: 1,
            _pad: 0,
            id: 1,
        };
        let inside = crate::addr_key([10, 200, 1, 7]);
        let outside = crate::addr_key([10, 200, 2, 7]);
        let any = crate::addr_key([172, 17, 0, 2]);
        assert!(f.matches(inside, any, PROTO_TCP, 80));
        assert!(f.matches(inside, any, PROTO_TCP, 90));
        assert!(!f.matches(inside, any, PROTO_TCP, 91));
        assert!(!f.matches(inside, any, PROTO_UDP, 80));
        assert!(!f.matches(outside, any, PROTO_TCP, 80));
    }

    #[test]
    fn reversing_twice_is_identity() {
        let k = CtKey::new(1, 2, 3, 4, PROTO_TCP);
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed(), CtKey::new(2, 1, 4, 3, PROTO_TCP));
    }

    #[test]
    fn closing_tcp_flows_expire_sooner() {
        let est = ct_timeout_secs(PROTO_TCP, CT_SEEN_SYN | CT_SEEN_ACK | CT_SEEN_REPLY);
        assert!(ct_timeout_secs(PROTO_TCP, CT_SEEN_ACK | CT_SEEN_FIN) < est);
        assert!(ct_timeout_secs(PROTO_TCP, CT_SEEN_ACK | CT_SEEN_RST) < est);
        assert!(ct_timeout_secs(PROTO_TCP, CT_SEEN_SYN) < est);
    }
}
