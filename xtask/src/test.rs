//! `cargo xtask test`: every check CI runs, in order, ending with one summary line.
use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    bootstrap::root,
    build::{cargo, ebpf, ebpf_cargo},
};

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

pub fn all() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the packet and namespace tests need root: run `sudo -E cargo xtask test`");
    }
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut failures = Vec::new();

    step("cargo fmt --check", || {
        crate::bootstrap::run(&mut cargo(&["fmt", "--all", "--check"]))
    })?;
    step("build eBPF object", ebpf)?;
    step("clippy (eBPF crate)", || {
        crate::bootstrap::run(&mut ebpf_cargo(
            "clippy",
            &["--release", "--", "-D", "warnings"],
        ))
    })?;
    step("clippy (userspace crates)", || {
        crate::bootstrap::run(&mut cargo(&[
            "clippy",
            "--workspace",
            "--exclude",
            "cnet-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;

    step("build cnet", || {
        crate::bootstrap::run(&mut cargo(&["build", "-p", "cnet-userspace"]))
    })?;
    let prog: Vec<String> = test_files("prog_")?;
    let ns: Vec<String> = test_files("ns_")?;
    let mut suites: Vec<(&str, Vec<String>)> = vec![(
        "host unit tests",
        [
            "test",
            "-p",
            "cnet-common",
            "-p",
            "cnet-userspace",
            "-p",
            "xtask",
        ]
        .map(String::from)
        .to_vec(),
    )];
    let mut p = vec![
        "test".to_string(),
        "-p".into(),
        "cnet-tests".into(),
        "--lib".into(),
    ];
    p.extend(prog.iter().flat_map(|t| ["--test".to_string(), t.clone()]));
    suites.push(("packet tests (BPF_PROG_TEST_RUN)", p));
    let mut n = vec!["test".to_string(), "-p".into(), "cnet-tests".into()];
    n.extend(ns.iter().flat_map(|t| ["--test".to_string(), t.clone()]));
    suites.push(("namespace tests (real traffic)", n));

    for (name, args) in suites {
        eprintln!("\n==> {name}");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = run_counting(&args, &mut tally) {
            eprintln!("xtask: {name}: {e:#}");
            failures.push(name);
        }
    }
    eprintln!("\nxtask: finished in {:.0}s", start.elapsed().as_secs_f64());
    println!(
        "summary: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    if !failures.is_empty() || tally.failed > 0 {
        bail!("failing: {}", failures.join(", "));
    }
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("\n==> {name}");
    f().with_context(|| format!("step `{name}` failed"))
}

/// Integration-test targets in tests/tests whose file name starts with `prefix`.
fn test_files(prefix: &str) -> Result<Vec<String>> {
    let dir = root().join("tests/tests");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with(prefix) && n.ends_with(".rs"))
        .map(|n| n.trim_end_matches(".rs").to_string())
        .collect();
    v.sort();
    Ok(v)
}

/// Runs `cargo args`, streaming its output and adding up its result lines.
fn run_counting(args: &[&str], tally: &mut Tally) -> Result<()> {
    let mut child = cargo(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting cargo {}", args.join(" ")))?;
    let out = child.stdout.take().context("cargo stdout")?;
    for line in BufReader::new(out).lines() {
        let line = line.context("reading cargo output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut w = part.split_whitespace();
                if let (Some(n), Some(kind)) = (w.next(), w.next()) {
                    let n: u64 = n.parse().unwrap_or(0);
                    match kind {
                        "passed" => tally.passed += n,
                        "failed" => tally.failed += n,
                        "ignored" => tally.ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("cargo {} exited with {status}", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::test_files;

    #[test]
    fn finds_packet_and_namespace_suites() {
        assert!(
            test_files("prog_")
                .unwrap()
                .contains(&"prog_deny".to_string())
        );
        assert!(test_files("ns_").unwrap().contains(&"ns_deny".to_string()));
    }
}
