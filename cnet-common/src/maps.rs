//! Map names and sizes, shared by the eBPF programs and the loader.
use crate::abi;

/// IPv4 sources whose packets are dropped (key: address in network byte order).
pub const DENY_SRC: &str = "DENY_SRC";
pub const DENY_SRC_MAX: u32 = 4096;
/// Per-CPU counters, indexed by [`crate::DropReason`] / [`crate::Counter`].
pub const STATS: &str = "STATS";

abi! {
    /// Value of `DENY_SRC`: reserved for a filter id.
    DenyValue [4] { id: u32 }
}
