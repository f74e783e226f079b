//! The one place where typed outcomes become TC/XDP codes.
use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT};
use cnet_common::{Counter, DropReason};

use crate::maps::STATS;

/// What to do with a packet that is not dropped.
pub enum Action {
    /// Hand the (possibly rewritten) packet on to the stack.
    Pass,
    /// A redirect helper already chose the device; return its code.
    Redirect(i32),
}

/// Adds one to a named counter slot on this CPU.
#[inline(always)]
pub fn count(slot: u32) {
    if let Some(p) = STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this program on this CPU writes it now.
        unsafe { *p += 1 };
    }
}

/// Counts a translation by its conntrack kind (`CT_DNAT`.. map to `Counter::Dnat`..).
#[inline(always)]
pub fn count_kind(kind: u8) {
    count(Counter::Dnat as u32 - 1 + u32::from(kind));
}

#[inline(always)]
pub fn tc(result: Result<Action, DropReason>) -> i32 {
    match result {
        Ok(Action::Pass) => TC_ACT_OK,
        Ok(Action::Redirect(code)) => code,
        Err(reason) => {
            count(reason as u32);
            TC_ACT_SHOT
        }
    }
}
