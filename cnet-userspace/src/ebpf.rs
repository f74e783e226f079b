//! The eBPF object built by `cargo xtask` and embedded at compile time.
use anyhow::{Result, bail};

/// The object's bytes, 8-byte aligned as aya's ELF parser wants them.
static OBJECT: &[u8] = &aligned::ALIGNED.bytes;

mod aligned {
    #[repr(C, align(8))]
    pub struct Aligned<B: ?Sized> {
        pub bytes: B,
    }
    pub static ALIGNED: Aligned<
        [u8; include_bytes!(concat!(env!("OUT_DIR"), "/cnet-ebpf.o")).len()],
    > = Aligned {
        bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/cnet-ebpf.o")),
    };
}

/// The embedded eBPF object, or an error explaining how to build it.
pub fn object() -> Result<&'static [u8]> {
    if OBJECT.is_empty() {
        bail!(
            "this cnet binary was built without its eBPF object: build it with \
             `cargo xtask build` (or `cargo xtask run`), which compiles cnet-ebpf first"
        );
    }
    Ok(OBJECT)
}
