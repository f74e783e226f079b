//! cnet's kernel side. Entry points only: each calls a `try_*` function that
//! returns `Result<Action, DropReason>`, and [`verdict::tc`] turns that into a
//! TC code in one place (counting drops by reason).
#![no_std]
#![no_main]

mod maps;
mod parse;
mod verdict;

use aya_ebpf::{macros::classifier, programs::TcContext};
use cnet_common::DropReason;

use crate::{parse::Ipv4View, verdict::Action};

/// TC ingress on a container's host-side veth: everything a container sends.
#[classifier]
pub fn cnet_veth_ingress(ctx: TcContext) -> i32 {
    verdict::tc(try_veth_ingress(&ctx))
}

fn try_veth_ingress(ctx: &TcContext) -> Result<Action, DropReason> {
    let Some(ip) = Ipv4View::parse(ctx)? else {
        return Ok(Action::Pass);
    };
    if maps::source_denied(ip.saddr) {
        return Err(DropReason::DeniedSource);
    }
    Ok(Action::Pass)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
