//! Installs what a fresh machine lacks, and skips what is there (a few
//! `stat`s and one `rustc --print` when everything is present).
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

/// The toolchain every build uses (the eBPF crate with RUSTC_BOOTSTRAP=1).
pub const TOOLCHAIN: &str = "stable";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Commands the tests and benchmarks need, with the Debian package that has them.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("nsenter", "util-linux"),
    ("iperf3", "iperf3"),
    ("socat", "socat"),
    ("iptables-save", "iptables"),
    ("nft", "nftables"),
    ("bpftool", "bpftool"),
    ("taskset", "util-linux"),
    ("curl", "curl"),
    // The real runtimes the CNI plugin is tested with (ns_podman): podman
    // with runc (crun refuses this machine's hybrid cgroups) and a static
    // busybox for the image.
    ("podman", "podman"),
    ("dockerd", "docker.io"),
    ("runc", "runc"),
    ("/bin/busybox", "busybox-static"),
    ("/usr/lib/cni/loopback", "containernetworking-plugins"),
    // `promtool check metrics` validates cnet's Prometheus output (ns_metrics).
    ("promtool", "prometheus"),
    // The benchmark chart's font.
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "fonts-dejavu-core",
    ),
];

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn tools_bin() -> PathBuf {
    root().join("tools/bin")
}

pub fn ensure() -> Result<()> {
    let t = Instant::now();
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_packages()?;
    eprintln!("xtask: tools ready ({:.1}s)", t.elapsed().as_secs_f64());
    Ok(())
}

fn sysroot() -> Result<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .output()
        .context("running rustup (is Rust installed with rustup?)")?;
    if !out.status.success() {
        bail!(
            "rustup run {TOOLCHAIN} rustc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn ensure_rust_src() -> Result<()> {
    if sysroot()?
        .join("lib/rustlib/src/rust/library/core")
        .exists()
    {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for {TOOLCHAIN}");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", TOOLCHAIN]))
}

/// bpf-linker linked against the toolchain's own libLLVM (see TOOLCHAIN.md):
/// it must match the LLVM major version of the rustc that compiles cnet-ebpf.
fn ensure_bpf_linker() -> Result<()> {
    let sysroot = sysroot()?;
    let llvm = std::fs::read_dir(sysroot.join("lib"))
        .context("reading the toolchain's lib directory")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .context("the Rust toolchain ships no libLLVM.so.*: cannot build bpf-linker")?;
    let prefix = root().join("tools/llvm");
    let stamp = prefix.join("stamp");
    let want = format!("{BPF_LINKER_VERSION} {}", llvm.display());
    let linker = tools_bin().join("bpf-linker");
    if linker.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute)",
        llvm.display()
    );
    std::fs::create_dir_all(prefix.join("lib")).context("creating tools/llvm/lib")?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    run(Command::new("rustup")
        .args([
            "run",
            TOOLCHAIN,
            "cargo",
            "install",
            "bpf-linker",
            "--locked",
            "--force",
        ])
        .args([
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .arg("--root")
        .arg(root().join("tools"))
        .env("LLVM_PREFIX", &prefix))?;
    std::fs::write(&stamp, want).context("writing tools/llvm/stamp")
}

fn have(cmd: &str) -> bool {
    if cmd.starts_with('/') {
        return Path::new(cmd).exists();
    }
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .any(|d| d.join(cmd).exists())
        })
        .unwrap_or(false)
}

fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(c, _)| !have(c))
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Runs a command, failing with its name if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let desc = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {desc}"))?;
    if !status.success() {
        bail!("{desc} failed with {status}");
    }
    Ok(())
}
