//! README.md's usage sessions, run as written (with the demo names made
//! unique, and the instance's hooks confined to a cgroup of the test's own):
//! the examples users copy must work.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::process::Command;

use cnet_tests::{
    cnet::{cgroup2_root, cnet_bin},
    netns::{assert_gone, unique_name},
};

/// The ```sh blocks between "## Using cnet" and "## Benchmark".
fn sessions() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let a = readme.find("## Using cnet").unwrap();
    let b = readme.find("## Benchmark").unwrap();
    let mut out = String::new();
    for block in readme[a..b].split("```sh\n").skip(1) {
        out.push_str(block.split("```").next().unwrap());
    }
    out
}

#[test]
fn readme_sessions_work_as_written() {
    let host = unique_name();
    let client = unique_name();
    let root = std::env::temp_dir().join(unique_name());
    let cg = cgroup2_root().join(unique_name());
    std::fs::create_dir(&cg).unwrap();
    let cnet = cnet_bin();
    let script = sessions()
        .replace("demo-host", &host)
        .replace("demo-client", &client)
        .replace("/tmp/cnet-demo", root.to_str().unwrap())
        .replace("/tmp/daemon.json", &format!("{}.json", root.display()))
        .replace("\"$PWD/target/debug/cnet\"", &cnet)
        .replace(
            "up --uplink up0",
            &format!("up --uplink up0 --cgroup {}", cg.display()),
        );
    assert!(script.contains("cnet up"), "README lost its session");
    // Container names are namespace names, global to the machine: make them unique.
    let suffix = unique_name();
    let mut script = script.replace("legacy-app", "LEGACYAPP");
    let mut containers = Vec::new();
    for n in ["web", "db", "app", "probe"] {
        let re = format!("{n}-{suffix}");
        script = replace_word(&script, n, &re);
        containers.push(re);
    }
    let legacy = format!("legacy-app-{suffix}");
    let script = script.replace("LEGACYAPP", &legacy);
    containers.push(legacy);
    let full = format!("set -e\necho $$ > {}/cgroup.procs\n{script}", cg.display());
    let out = Command::new("bash").arg("-c").arg(&full).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Best-effort cleanup when the script failed midway.
    if !out.status.success() {
        let _ = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{host}"))
            .arg(&cnet)
            .arg("--root")
            .arg(&root)
            .arg("down")
            .status();
        let _ = Command::new("ip").args(["netns", "del", &host]).status();
        let _ = Command::new("ip").args(["netns", "del", &client]).status();
    }
    let _ = std::fs::remove_dir(&cg);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(format!("{}.json", root.display()));
    assert!(
        out.status.success(),
        "README session failed:\n{stdout}\n{stderr}"
    );
    // What the comments promise.
    assert!(
        stdout.matches("<!DOCTYPE HTML>").count() >= 5,
        "pages served: {stdout}"
    );
    assert!(stdout.contains("80/tcp -> 0.0.0.0:8080"), "{stdout}");
    // curl exit 28 is a timeout: the probe was dropped, not refused (7).
    assert!(
        stdout.contains("blocked (curl exit 28)") && stdout.contains("filtered (curl exit 28)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("database db") || stdout.contains("db database"),
        "{stdout}"
    );
    assert!(
        stdout.contains("10.123.0.128/24") && stdout.contains("nameserver 10.123.0.53"),
        "{stdout}"
    );
    let mut names = vec![host, client];
    names.extend(containers);
    assert_gone(&names, &[root.join("bpf")]);
}

/// Replaces `word` where it stands alone (not inside a longer name).
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(word) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + word.len()..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_some_and(is_name) || after.is_some_and(is_name) {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}
