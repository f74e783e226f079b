//! Every map the programs use. The object declares them unpinned: `cnet up`
//! pins each one under the instance's bpffs directory (and reuses those pins),
//! while packet tests get private maps.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use cnet_common::maps::{DENY_SRC_MAX, DenyValue};

#[map(name = "DENY_SRC")]
pub static DENY_SRC: HashMap<u32, DenyValue> = HashMap::with_max_entries(DENY_SRC_MAX, 0);

#[map(name = "STATS")]
pub static STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(cnet_common::drop::STATS_SLOTS, 0);

/// Whether `saddr` (network byte order) is on the deny list.
#[inline(always)]
pub fn source_denied(saddr: u32) -> bool {
    DENY_SRC.get_ptr(saddr).is_some()
}
