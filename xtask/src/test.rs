//! `cargo xtask test`: every check CI runs, in order, ending with one summary
//! line on every exit path.
//!
//! The runner cannot miscount: every test target must print a `test result:`
//! line (a crashed binary does not, and is a failure naming it), a target that
//! runs zero tests is a failure, a failing step (fmt, clippy, a build) counts
//! as a failure and still ends with the summary, and `--no-fail-fast` runs
//! every target even after one failed.
use std::{
    io::{BufRead, BufReader},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    bootstrap::root,
    build::{cargo, ebpf, ebpf_cargo},
};

/// Adds up cargo test output, target by target.
#[derive(Default, Debug)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// Targets that broke the rules: crashed (no result line), ran no test.
    pub problems: Vec<String>,
    current: Option<String>,
    reported: bool,
}

impl Tally {
    /// Feeds one line of cargo's merged stdout and stderr.
    pub fn feed(&mut self, line: &str) {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("Running ") {
            self.finish_target();
            // "Running tests/ns_x.rs (target/debug/deps/ns_x-hash)"
            let name = rest.split(" (").next().unwrap_or(rest).trim().to_string();
            self.current = Some(name);
            self.reported = false;
        } else if let Some(rest) = t.strip_prefix("Doc-tests ") {
            self.finish_target();
            self.current = Some(format!("doc-tests {}", rest.trim()));
            self.reported = false;
        } else if let Some(rest) = line.strip_prefix("test result: ") {
            let (mut p, mut f, mut i) = (0, 0, 0);
            for part in rest.split(['.', ';']) {
                let mut w = part.split_whitespace();
                if let (Some(n), Some(kind)) = (w.next(), w.next()) {
                    let Ok(n) = n.parse::<u64>() else { continue };
                    match kind {
                        "passed" => p += n,
                        "failed" => f += n,
                        "ignored" => i += n,
                        _ => {}
                    }
                }
            }
            self.passed += p;
            self.failed += f;
            self.ignored += i;
            let name = self
                .current
                .clone()
                .unwrap_or_else(|| "an unnamed target".into());
            if p + f + i == 0 && !name.starts_with("doc-tests") {
                self.problems.push(format!(
                    "{name}: ran zero tests (an empty target proves nothing)"
                ));
            }
            self.reported = true;
        }
    }

    /// Ends the target being read: one that printed no result line crashed.
    pub fn finish_target(&mut self) {
        if let Some(name) = self.current.take()
            && !self.reported
        {
            self.problems.push(format!(
                "{name}: printed no `test result:` line (the test binary crashed or was killed)"
            ));
            self.failed += 1;
        }
        self.reported = false;
    }

    /// Number of failures, counting broken targets and failed steps.
    pub fn total_failed(&self, steps_failed: usize) -> u64 {
        self.failed + steps_failed as u64 + self.problems_not_counted()
    }

    fn problems_not_counted(&self) -> u64 {
        // Crashes were already counted in `failed`; empty targets were not.
        self.problems
            .iter()
            .filter(|p| p.contains("ran zero tests"))
            .count() as u64
    }
}

pub fn all() -> Result<()> {
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut failures: Vec<String> = Vec::new();
    let result = run_all(&mut tally, &mut failures);
    if let Err(e) = &result {
        eprintln!("xtask: {e:#}");
    }
    for p in &tally.problems {
        eprintln!("xtask: {p}");
        failures.push(p.clone());
    }
    eprintln!("\nxtask: finished in {:.0}s", start.elapsed().as_secs_f64());
    let steps_failed = failures.len() - tally.problems.len();
    println!(
        "summary: {} passed, {} failed, {} skipped",
        tally.passed,
        tally.total_failed(steps_failed),
        tally.ignored
    );
    if !failures.is_empty() || tally.failed > 0 || result.is_err() {
        bail!("failing: {}", failures.join("; "));
    }
    Ok(())
}

fn run_all(tally: &mut Tally, failures: &mut Vec<String>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        failures.push("not root".into());
        bail!("the packet and namespace tests need root: run `sudo -E cargo xtask test`");
    }
    if let Some(v) = std::env::var_os("CNET_BIN") {
        failures.push("CNET_BIN set".into());
        bail!(
            "CNET_BIN={} is set: the tests always run the cnet this command builds; unset it",
            v.to_string_lossy()
        );
    }
    if let Err(e) = step("install tools", crate::bootstrap::ensure) {
        failures.push(format!("{e:#}"));
        return Ok(());
    }
    // fmt and clippy failures are reported, and the tests still run.
    let soft = |name: &str, r: Result<()>, failures: &mut Vec<String>| {
        if let Err(e) = r {
            eprintln!("xtask: {e:#}");
            failures.push(name.to_string());
        }
    };
    soft(
        "cargo fmt --check",
        step("cargo fmt --check", || {
            crate::bootstrap::run(&mut cargo(&["fmt", "--all", "--check"]))
        }),
        failures,
    );
    if let Err(e) = step("build eBPF object", ebpf) {
        failures.push(format!("{e:#}"));
        return Ok(());
    }
    soft(
        "clippy (eBPF crate)",
        step("clippy (eBPF crate)", || {
            crate::bootstrap::run(&mut ebpf_cargo(
                "clippy",
                &["--release", "--", "-D", "warnings"],
            ))
        }),
        failures,
    );
    soft(
        "clippy (userspace crates)",
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
        }),
        failures,
    );
    if let Err(e) = step("build cnet", || {
        crate::bootstrap::run(&mut cargo(&["build", "-p", "cnet-userspace"]))
    }) {
        failures.push(format!("{e:#}"));
        return Ok(());
    }
    let (prog, ns) = test_targets()?;
    let mut suites: Vec<(&str, Vec<String>)> = vec![(
        "host unit tests",
        [
            "test",
            "--no-fail-fast",
            "-p",
            "cnet-common",
            "-p",
            "cnet-userspace",
            "-p",
            "xtask",
            // cnet's binary is a thin CLI without unit tests (its library
            // has them); xtask is a binary crate.
            "--lib",
            "--bin",
            "xtask",
        ]
        .map(String::from)
        .to_vec(),
    )];
    let mut p: Vec<String> = ["test", "--no-fail-fast", "-p", "cnet-tests", "--lib"]
        .map(String::from)
        .to_vec();
    p.extend(prog.iter().flat_map(|t| ["--test".to_string(), t.clone()]));
    suites.push(("packet tests (BPF_PROG_TEST_RUN)", p));
    let mut n: Vec<String> = ["test", "--no-fail-fast", "-p", "cnet-tests"]
        .map(String::from)
        .to_vec();
    n.extend(ns.iter().flat_map(|t| ["--test".to_string(), t.clone()]));
    suites.push(("namespace tests (real traffic)", n));

    for (name, args) in suites {
        eprintln!("\n==> {name}");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let seen = (tally.failed, tally.problems.len());
        if let Err(e) = run_counting(&args, tally) {
            eprintln!("xtask: {name}: {e:#}");
            // A failing test makes cargo exit non-zero: that is already
            // counted. Only an exit no test explains (a build error) is one more.
            if (tally.failed, tally.problems.len()) == seen {
                failures.push(name.to_string());
            }
        }
    }
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("\n==> {name}");
    f().with_context(|| format!("step `{name}` failed"))
}

/// Integration-test targets in tests/tests, split into packet (`prog_`) and
/// namespace (`ns_`) tests. A file that is neither would never run: an error.
fn test_targets() -> Result<(Vec<String>, Vec<String>)> {
    let dir = root().join("tests/tests");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.ends_with(".rs"))
        .map(|n| n.trim_end_matches(".rs").to_string())
        .collect();
    names.sort();
    split_targets(&names)
}

fn split_targets(names: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let (mut prog, mut ns) = (Vec::new(), Vec::new());
    for n in names {
        if n.starts_with("prog_") {
            prog.push(n.clone());
        } else if n.starts_with("ns_") {
            ns.push(n.clone());
        } else {
            bail!(
                "tests/tests/{n}.rs is neither a packet test (prog_*) nor a namespace test (ns_*): it would never run"
            );
        }
    }
    if prog.is_empty() || ns.is_empty() {
        bail!("no packet or no namespace test targets found in tests/tests");
    }
    Ok((prog, ns))
}

/// Runs `cargo args`, streaming its output (stdout and stderr merged, so the
/// `Running` lines and the result lines are seen in order) and adding it up.
fn run_counting(args: &[&str], tally: &mut Tally) -> Result<()> {
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    let mut cmd = cargo(args);
    cmd.stdout(writer.try_clone().context("dup pipe")?)
        .stderr(writer);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting cargo {}", args.join(" ")))?;
    // Close our copies of the write end, or the reader never sees EOF.
    drop(cmd);
    for line in BufReader::new(reader).lines() {
        let line = line.context("reading cargo output")?;
        println!("{line}");
        tally.feed(&line);
    }
    tally.finish_target();
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("cargo {} exited with {status}", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Tally, split_targets, test_targets};

    fn feed(lines: &str) -> Tally {
        let mut t = Tally::default();
        for l in lines.lines() {
            t.feed(l);
        }
        t.finish_target();
        t
    }

    #[test]
    fn finds_packet_and_namespace_suites() {
        let (prog, ns) = test_targets().unwrap();
        assert!(prog.contains(&"prog_guard".to_string()));
        assert!(ns.contains(&"ns_crash".to_string()));
    }

    #[test]
    fn a_target_that_is_neither_kind_is_an_error() {
        let names = ["prog_a", "ns_b", "misc"].map(String::from);
        let e = split_targets(&names).unwrap_err().to_string();
        assert!(e.contains("misc"), "{e}");
    }

    #[test]
    fn counts_every_target() {
        let t = feed(
            "     Running tests/a.rs (target/debug/deps/a-1)\n\
             running 3 tests\n\
             test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s\n\
             \x20    Running tests/b.rs (target/debug/deps/b-1)\n\
             test result: FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s\n",
        );
        assert_eq!((t.passed, t.failed, t.ignored), (6, 2, 1));
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        assert_eq!(t.total_failed(0), 2);
        assert_eq!(t.total_failed(1), 3, "a failed step counts");
    }

    #[test]
    fn a_crashed_binary_is_a_failure_naming_it() {
        let t = feed(
            "     Running tests/a.rs (target/debug/deps/a-1)\n\
             running 2 tests\n\
             test one ... ok\n\
             error: test failed, to rerun pass `--test a`\n\
             \x20    Running tests/b.rs (target/debug/deps/b-1)\n\
             test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s\n\
             \x20    Running tests/c.rs (target/debug/deps/c-1)\n\
             running 1 test\n",
        );
        assert_eq!(t.passed, 1);
        assert_eq!(t.failed, 2, "a and c crashed");
        assert_eq!(t.problems.len(), 2);
        assert!(t.problems[0].starts_with("tests/a.rs"), "{:?}", t.problems);
        assert!(t.problems[1].starts_with("tests/c.rs"), "{:?}", t.problems);
    }

    #[test]
    fn a_target_with_zero_tests_is_a_failure() {
        let t = feed(
            "     Running unittests src/lib.rs (target/debug/deps/x-1)\n\
             running 0 tests\n\
             test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.0s\n",
        );
        assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
        assert!(t.problems[0].contains("zero tests"));
        assert_eq!(t.total_failed(0), 1);
    }

    #[test]
    fn a_test_printing_result_like_text_does_not_count() {
        // Only lines that start with "test result: " count, not indented echoes.
        let t = feed(
            "     Running tests/a.rs (target/debug/deps/a-1)\n\
             \x20 note: test result: ok. 99 passed; 0 failed\n\
             test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.0s\n",
        );
        assert_eq!(t.passed, 1);
    }
}
