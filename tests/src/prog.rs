//! Loads the real eBPF object and runs its programs on crafted frames with
//! BPF_PROG_TEST_RUN (aya `TestRun`). Maps are private to each `Loaded`.
use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues},
    programs::{SchedClassifier, TestRun, TestRunOptions},
};

/// The TC verdicts the tests compare against.
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

/// Reads the eBPF object that `cargo xtask` built.
pub fn object() -> Vec<u8> {
    let path = std::env::var_os("CNET_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/ebpf/bpfel-unknown-none/release/cnet-ebpf")
        });
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "no eBPF object at {} ({e}): run these tests with `cargo xtask test`",
            path.display()
        )
    })
}

pub struct Loaded {
    pub ebpf: Ebpf,
}

/// Result of one run: verdict and the frame as the program left it.
#[derive(Debug)]
pub struct Run {
    pub verdict: u32,
    pub frame: Vec<u8>,
}

impl Loaded {
    /// Loads the object with private (unpinned) maps and loads every TC and XDP program.
    pub fn new() -> Self {
        let mut ebpf = EbpfLoader::new().load(&object()).expect("load eBPF object");
        let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
        for name in names {
            let prog = ebpf.program_mut(&name).unwrap();
            let r = match prog {
                aya::programs::Program::SchedClassifier(p) => p.load(),
                aya::programs::Program::Xdp(p) => p.load(),
                _ => continue,
            };
            if let Err(e) = r {
                // The verifier log can be megabytes: its end says why.
                let msg = format!("{e:?}");
                let tail = &msg[msg.len().saturating_sub(4000)..];
                panic!("verifier rejected {name}: ...{tail}");
            }
        }
        cnet::loader::fill_jumps(&mut ebpf).expect("JUMPS");
        Self { ebpf }
    }

    /// Runs XDP program `name` once on `frame`.
    pub fn run_xdp(&mut self, name: &str, frame: &[u8]) -> Run {
        let prog: &mut aya::programs::Xdp = self
            .ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .unwrap();
        run_once(name, frame, |opts| prog.test_run(opts))
    }

    /// Runs TC program `name` once on `frame`.
    pub fn run_tc(&mut self, name: &str, frame: &[u8]) -> Run {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .unwrap();
        run_once(name, frame, |opts| prog.test_run(opts))
    }

    /// A typed handle on a hash map.
    pub fn array<V: aya::Pod>(&mut self, name: &str) -> aya::maps::Array<&mut MapData, V> {
        aya::maps::Array::try_from(self.ebpf.map_mut(name).unwrap()).unwrap()
    }

    pub fn hash<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        HashMap::try_from(
            self.ebpf
                .map_mut(name)
                .unwrap_or_else(|| panic!("no map {name}")),
        )
        .unwrap()
    }

    /// The sum over CPUs of counter slot `slot`.
    pub fn counter(&mut self, slot: u32) -> u64 {
        let stats: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map_mut(cnet_common::maps::STATS).unwrap()).unwrap();
        stats.get(&slot, 0).unwrap().iter().sum()
    }
}

/// One BPF_PROG_TEST_RUN of `frame` with room for the program to grow it.
fn run_once(
    name: &str,
    frame: &[u8],
    test_run: impl for<'a> FnOnce(
        TestRunOptions<'a>,
    )
        -> Result<aya::programs::TestRunResult, aya::programs::ProgramError>,
) -> Run {
    let mut out = vec![0u8; frame.len() + 256];
    let r = test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("test_run {name}: {e:?}"));
    out.truncate(r.data_size_out as usize);
    Run {
        verdict: r.return_value,
        frame: out,
    }
}

impl Default for Loaded {
    fn default() -> Self {
        Self::new()
    }
}

impl Loaded {
    /// Writes the single `CONFIG` entry.
    pub fn set_config(&mut self, cfg: cnet_common::maps::Config) {
        let mut a: aya::maps::Array<&mut MapData, cnet_common::maps::Config> =
            aya::maps::Array::try_from(self.ebpf.map_mut(cnet_common::maps::CONFIG).unwrap())
                .unwrap();
        a.set(0, cfg, 0).unwrap();
    }

    /// Every conntrack entry.
    pub fn conntrack(&mut self) -> Vec<(cnet_common::maps::CtKey, cnet_common::maps::CtEntry)> {
        let m: HashMap<&mut MapData, cnet_common::maps::CtKey, cnet_common::maps::CtEntry> =
            HashMap::try_from(self.ebpf.map_mut(cnet_common::maps::CONNTRACK).unwrap()).unwrap();
        m.iter().map(|r| r.unwrap()).collect()
    }
}

impl Loaded {
    /// Writes filter rules to slots 0.. of the live half (FILTER_SET is 0 in
    /// a fresh object), rule i getting id i + 1 and a zeroed counter.
    pub fn set_filters(&mut self, rules: &[cnet_common::maps::Filter]) {
        let cpus = aya::util::nr_cpus().unwrap();
        {
            let mut stats: PerCpuHashMap<&mut MapData, u32, u64> = PerCpuHashMap::try_from(
                self.ebpf.map_mut(cnet_common::maps::FILTER_STATS).unwrap(),
            )
            .unwrap();
            for i in 0..rules.len() as u32 {
                stats
                    .insert(i + 1, PerCpuValues::try_from(vec![0u64; cpus]).unwrap(), 0)
                    .unwrap();
            }
        }
        let mut a: aya::maps::Array<&mut MapData, cnet_common::maps::Filter> =
            aya::maps::Array::try_from(self.ebpf.map_mut(cnet_common::maps::FILTERS).unwrap())
                .unwrap();
        for (i, r) in rules.iter().enumerate() {
            let mut r = *r;
            r.id = i as u32 + 1;
            a.set(i as u32, r, 0).unwrap();
        }
    }

    /// Packets counted for the rule in slot `slot` (id `slot + 1`), summed over CPUs.
    pub fn filter_count(&mut self, slot: u32) -> u64 {
        let stats: PerCpuHashMap<&mut MapData, u32, u64> =
            PerCpuHashMap::try_from(self.ebpf.map_mut(cnet_common::maps::FILTER_STATS).unwrap())
                .unwrap();
        stats.get(&(slot + 1), 0).unwrap().iter().sum()
    }
}
