//! Builds the eBPF object, then `cnet` with the object embedded.
use std::{path::PathBuf, process::Command};

use anyhow::{Result, bail};

use crate::bootstrap::{TOOLCHAIN, root, run, tools_bin};

/// `PATH` with the project-local tools first (bpf-linker).
pub fn path_with_tools() -> String {
    let old = std::env::var("PATH").unwrap_or_default();
    format!("{}:{old}", tools_bin().display())
}

pub fn ebpf_object() -> PathBuf {
    root().join("target/ebpf/bpfel-unknown-none/release/cnet-ebpf")
}

/// `cargo <sub> <args>` for the eBPF crate: stable toolchain, build-std, BTF.
pub fn ebpf_cargo(sub: &str, args: &[&str]) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", TOOLCHAIN, "cargo", sub])
        .args(["-p", "cnet-ebpf", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core"])
        .args(args)
        .current_dir(root())
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", root().join("target/ebpf"))
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
        .env("PATH", path_with_tools());
    c
}

/// `cargo <args>` for the userspace crates, with the object path set.
pub fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", TOOLCHAIN, "cargo"])
        .args(args)
        .current_dir(root())
        .env("CNET_EBPF_OBJ", ebpf_object())
        .env("PATH", path_with_tools());
    c
}

pub fn ebpf() -> Result<()> {
    run(&mut ebpf_cargo("build", &["--release"]))
}

/// Builds everything; returns the path of the `cnet` binary.
pub fn all() -> Result<PathBuf> {
    ebpf()?;
    run(&mut cargo(&["build", "-p", "cnet-userspace"]))?;
    Ok(root().join("target/debug/cnet"))
}

pub fn run_cnet(args: &[String]) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cnet needs root (CAP_NET_ADMIN, CAP_BPF): run `sudo -E cargo xtask run`");
    }
    let cnet = all()?;
    let args: Vec<String> = if args.is_empty() {
        vec!["up".into()]
    } else {
        args.to_vec()
    };
    let status = Command::new(&cnet).args(&args).status()?;
    if !status.success() {
        bail!("cnet {} exited with {status}", args.join(" "));
    }
    Ok(())
}

/// `cargo xtask soak`: the fault loop with `kills` SIGKILLs, then the crash
/// points, with the output shown as it comes.
pub fn soak(kills: u32, seed: Option<u64>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the soak builds namespaces: run `sudo -E cargo xtask soak`");
    }
    all()?;
    let mut cmd = cargo(&[
        "test",
        "-p",
        "cnet-tests",
        "--test",
        "ns_fault",
        "--test",
        "ns_crash",
        "--",
        "--nocapture",
        "--test-threads",
        "1",
    ]);
    cmd.env("CNET_FAULT_KILLS", kills.to_string());
    if let Some(s) = seed {
        cmd.env("CNET_FAULT_SEED", s.to_string());
    }
    run(&mut cmd)
}

/// Builds everything in release mode and runs the benchmark driver as root.
pub fn bench(quick: bool, control: bool) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark builds namespaces: run `sudo -E cargo xtask bench`");
    }
    ebpf()?;
    run(&mut cargo(&[
        "build",
        "--release",
        "-p",
        "cnet-userspace",
        "-p",
        "cnet-tests",
        "--bins",
    ]))?;
    let mut cmd = Command::new(root().join("target/release/cnet-bench"));
    cmd.current_dir(root())
        .arg("--out")
        .arg(root().join("target/bench"));
    if quick {
        cmd.arg("--quick");
    }
    if control {
        cmd.arg("--control");
    }
    run(&mut cmd)
}
