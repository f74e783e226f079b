//! Embeds the eBPF object that `cargo xtask` builds (see xtask/src/build.rs).
//! A plain `cargo build` without it still succeeds: the binary then reports, at
//! run time, that it has no datapath and how to build one.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-env-changed=CNET_EBPF_OBJ");
    let obj = env::var_os("CNET_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/ebpf/bpfel-unknown-none/release/cnet-ebpf"));
    println!("cargo:rerun-if-changed={}", obj.display());
    let bytes = fs::read(&obj).unwrap_or_default();
    fs::write(out.join("cnet-ebpf.o"), bytes).expect("write OUT_DIR/cnet-ebpf.o");
}
