//! Every map the programs use. The object declares them unpinned: `cnet up`
//! pins each one under the instance's bpffs directory (and reuses those pins),
//! while packet tests get private maps.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray},
};
use cnet_common::maps::{
    ALLOW_MAX, AllowKey, CONNTRACK_MAX, Config, CtEntry, CtKey, ENDPOINTS_MAX, Endpoint,
    FILTER_SLOTS, FRAGS_MAX, Filter, FragKey, FragValue, HOST_ADDRS_MAX, JUMPS_MAX, NETWORKS_MAX,
    Network, PORTS_MAX, PortKey, PortValue, SOCK_REV_MAX, SockRevKey, SockRevValue, UPLINKS_MAX,
    Uplink,
};

#[map(name = "STATS")]
pub static STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(cnet_common::drop::STATS_SLOTS, 0);

#[map(name = "PORTS")]
pub static PORTS: HashMap<PortKey, PortValue> = HashMap::with_max_entries(PORTS_MAX, 0);

#[map(name = "ENDPOINTS")]
pub static ENDPOINTS: HashMap<u32, Endpoint> = HashMap::with_max_entries(ENDPOINTS_MAX, 0);

#[map(name = "UPLINKS")]
pub static UPLINKS: HashMap<u32, Uplink> = HashMap::with_max_entries(UPLINKS_MAX, 0);

#[map(name = "HOST_ADDRS")]
pub static HOST_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(HOST_ADDRS_MAX, 0);

#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "CONNTRACK")]
pub static CONNTRACK: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(CONNTRACK_MAX, 0);

#[map(name = "SOCK_REV")]
pub static SOCK_REV: LruHashMap<SockRevKey, SockRevValue> =
    LruHashMap::with_max_entries(SOCK_REV_MAX, 0);

#[map(name = "NETWORKS")]
pub static NETWORKS: HashMap<u32, Network> = HashMap::with_max_entries(NETWORKS_MAX, 0);

#[map(name = "ALLOW")]
pub static ALLOW: HashMap<AllowKey, u32> = HashMap::with_max_entries(ALLOW_MAX, 0);

#[map(name = "FILTERS")]
pub static FILTERS: Array<Filter> = Array::with_max_entries(FILTER_SLOTS, 0);

#[map(name = "JUMPS")]
pub static JUMPS: ProgramArray = ProgramArray::with_max_entries(JUMPS_MAX, 0);

#[map(name = "FILTER_SET")]
pub static FILTER_SET: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "FRAGS")]
pub static FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::with_max_entries(FRAGS_MAX, 0);

#[map(name = "FILTER_STATS")]
pub static FILTER_STATS: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(FILTER_SLOTS, 0);

#[inline(always)]
pub fn is_host_addr(addr: u32) -> bool {
    HOST_ADDRS.get_ptr(addr).is_some()
}

#[inline(always)]
pub fn config() -> Config {
    CONFIG.get(0).copied().unwrap_or_default()
}

/// The published port for `addr:port/proto`: an exact host address first,
/// then the "any address" entry, which applies only to the host's addresses.
#[inline(always)]
pub fn published(addr: u32, port: u16, proto: u8) -> Option<PortValue> {
    published_by(addr, port, proto).map(|(v, _)| v)
}

/// As [`published`], with which entry matched (true: the exact address).
#[inline(always)]
pub fn published_by(addr: u32, port: u16, proto: u8) -> Option<(PortValue, bool)> {
    // SAFETY: values are plain data copied out immediately.
    if let Some(v) = unsafe { PORTS.get(PortKey::new(addr, port, proto)) } {
        return Some((*v, true));
    }
    if !is_host_addr(addr) {
        return None;
    }
    // SAFETY: as above.
    unsafe { PORTS.get(PortKey::new(0, port, proto)) }
        .copied()
        .map(|v| (v, false))
}
