//! Loads every program of the eBPF object and prints how long the verifier
//! took on it and how many instructions it processed: what `cnet up` spends
//! most of its time on (see `verify_cost` in cnet-userspace's loader).
//!
//! `CNET_EBPF_OBJ=target/ebpf/bpfel-unknown-none/release/cnet-ebpf \
//!  cargo run --release -p cnet-tests --example verify_cost` (as root).
use std::time::Instant;

use aya::{EbpfLoader, programs::Program};

fn main() {
    let obj = cnet_tests::prog::object();
    let mut ebpf = EbpfLoader::new().load(&obj).expect("load eBPF object");
    let mut rows = Vec::new();
    for (name, prog) in ebpf.programs_mut() {
        let t = Instant::now();
        let r = match prog {
            Program::SchedClassifier(p) => p.load(),
            Program::Xdp(p) => p.load(),
            Program::CgroupSockAddr(p) => p.load(),
            _ => continue,
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        match r {
            Ok(()) => {
                let insns = prog
                    .info()
                    .ok()
                    .and_then(|i| i.verified_instruction_count())
                    .unwrap_or(0);
                rows.push(format!("{name:24} {ms:8.1} ms {insns:9} insns"));
            }
            Err(e) => {
                // The verifier log can be megabytes: its end says why.
                let m = format!("{e:?}");
                rows.push(format!(
                    "{name:24} rejected: ...{}",
                    &m[m.len().saturating_sub(2000)..]
                ));
            }
        }
    }
    rows.sort();
    for r in rows {
        println!("{r}");
    }
}
