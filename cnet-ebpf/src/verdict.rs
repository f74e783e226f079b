//! The one place where typed outcomes become TC/XDP codes.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use cnet_common::{Counter, DropReason};

use crate::maps::STATS;

/// What to do with a packet that is not dropped: the TC code to return.
/// A plain integer rather than an enum with a payload: every bit of a
/// `Result<Action, DropReason>` is then defined on every path, which the
/// verifier insists on (an enum's unused payload is "undefined" to LLVM and
/// can surface as a read of an uninitialised register).
#[derive(Clone, Copy)]
pub struct Action(i32);

impl Action {
    /// Hand the (possibly rewritten) packet on to the stack.
    pub const PASS: Self = Self(TC_ACT_OK);

    /// A redirect helper already chose the device: return its code.
    #[inline(always)]
    pub const fn redirect(code: i32) -> Self {
        Self(code)
    }
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
pub fn tc(ctx: &TcContext, result: Result<Action, DropReason>) -> i32 {
    match result {
        Ok(Action(code)) => code,
        Err(reason) => {
            count(reason as u32);
            crate::observe::dropped(ctx, reason as u32);
            if crate::dlog::on() {
                crate::dlog::drop(ctx, reason as u32);
            }
            TC_ACT_SHOT
        }
    }
}
