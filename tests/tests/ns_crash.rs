//! Crash safety, deterministically: every named step of every mutating
//! command (`cnet_userspace::crash::POINTS`) is crashed once with
//! `CNET_TEST_CRASH_AT`, the crash is shown to have landed at that step
//! (SIGABRT, and cnet's own message naming it), the next command repairs it,
//! and only then, before any cleanup, every trace of the instance is checked
//! against its state file.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::{collections::BTreeSet, os::unix::process::ExitStatusExt, process::Output};

use cnet_tests::consistency::{assert_consistent, state};

use cnet::crash::{ENV, POINTS};
use cnet_tests::{
    cnet::Instance,
    netns::{addr, unique_name},
    traffic::{assert_reply, tcp_probe, testsrv},
};

fn crash(inst: &Instance, point: &str, args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    inst.cnet_env(&args, &[(ENV, point)])
}

#[test]
fn a_crash_at_every_named_step_is_repaired_by_the_next_command() {
    let inst = Instance::up(1, &[]);
    let base = format!("base-{}", unique_name());
    inst.run_server(&base, &["-p", "7000:80"], &[80, 81]);
    let client = inst.topo.clients[0].name.clone();
    let via = format!("{}:7000", addr::host_uplink(0));
    let srv = testsrv();
    let mut victims = Vec::new();
    let mut crashed = BTreeSet::new();
    for (i, point) in POINTS.iter().enumerate() {
        let (cmd, _) = point.split_once(':').unwrap();
        let victim = format!("v{i}-{}", unique_name());
        victims.push(victim.clone());
        let net = format!("n{i}");
        let subnet = format!("10.70.{i}.0/24");
        let port = format!("{}:81", 7100 + i);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let args = match cmd {
            "run" => s(&[
                "run", "-d", "--name", &victim, "-p", &port, "--", &srv, "serve", "81",
            ]),
            "rm" => {
                inst.run_server(&victim, &["-p", &port], &[81]);
                s(&["rm", "-f", &victim])
            }
            "port-add" => s(&["port", "add", &base, &port]),
            "port-rm" => {
                inst.ok(&["port", "add", &base, &port]);
                s(&["port", "rm", &base, &port])
            }
            "network-create" => s(&["network", "create", "--subnet", &subnet, &net]),
            "network-connect" => {
                inst.ok(&["network", "create", "--subnet", &subnet, &net]);
                s(&["network", "connect", &net, &base])
            }
            "network-disconnect" => {
                inst.ok(&["network", "create", "--subnet", &subnet, &net]);
                inst.ok(&["network", "connect", &net, &base]);
                s(&["network", "disconnect", &net, &base])
            }
            "network-rm" => {
                inst.ok(&["network", "create", "--subnet", &subnet, &net]);
                s(&["network", "rm", &net])
            }
            "filter-add" => s(&["filter", "add", "--src", "192.0.2.0/24", "--action", "drop"]),
            "filter-rm" => {
                let id = inst.ok(&["filter", "add", "--src", "192.0.2.0/24", "--action", "drop"]);
                s(&["filter", "rm", id.trim()])
            }
            other => panic!("crash point {point}: no scenario for command {other}"),
        };
        let out = crash(&inst, point, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{point}: cnet {args:?} must crash at that step: {out:?}"
        );
        assert!(
            stderr.contains(&format!("crashing at {point}")),
            "{point}: {stderr}"
        );
        crashed.insert(*point);

        // The next command (any mutating one) repairs; then check, before cleanup.
        let probe = format!("p{i}-{}", unique_name());
        victims.push(probe.clone());
        inst.run_server(&probe, &[], &[80]);
        assert_consistent(&inst, point, &victims);
        assert_reply(tcp_probe(&client, &via, "alive"), point);

        // Back to the baseline for the next point.
        let st = state(&inst);
        for name in st["containers"].as_object().unwrap().keys() {
            if *name != base {
                inst.ok(&["rm", "-f", name]);
            }
        }
        for a in st["containers"][&base]["extra"].as_array().unwrap() {
            inst.ok(&[
                "network",
                "disconnect",
                a["network"].as_str().unwrap(),
                &base,
            ]);
        }
        for n in st["networks"].as_object().unwrap().keys() {
            inst.ok(&["network", "rm", n]);
        }
        for p in st["containers"][&base]["ports"].as_array().unwrap() {
            let hp = p["host_port"].as_u64().unwrap();
            if hp != 7000 {
                inst.ok(&["port", "rm", &base, &format!("{hp}:81")]);
            }
        }
        for f in st["filters"].as_array().unwrap() {
            inst.ok(&["filter", "rm", &f["id"].to_string()]);
        }
    }
    assert_eq!(crashed.len(), POINTS.len(), "every point crashed once");
}
