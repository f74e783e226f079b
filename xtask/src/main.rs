//! `cargo xtask run|test|bench|build`: bootstraps the toolchain and tools on a
//! fresh machine, builds the eBPF object and the `cnet` binary, runs the tests.
mod bootstrap;
mod build;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, run and test cnet")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing tools, build the eBPF object and `cnet`.
    Build,
    /// Build, then run `cnet ARGS` as root (`cnet up` without ARGS).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// fmt, clippy (userspace and eBPF), unit, packet and namespace tests.
    Test,
    /// cnet against the routed ceiling, Docker's iptables rules and a userland
    /// proxy, from 0 to 10,000 published ports; table, JSON and PNG in target/bench.
    /// The long fault suites: 200 random SIGKILLs (`--kills N` for more)
    /// around surviving containers, then every crash point again.
    Soak {
        #[arg(long, default_value_t = 200)]
        kills: u32,
        /// Replay a run (its seed is printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    Bench {
        /// A short run (under 2 minutes).
        #[arg(long)]
        quick: bool,
        /// Only the control-plane table (cnet up, run, rm, port add).
        #[arg(long)]
        control: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Build => bootstrap::ensure().and_then(|()| build::all().map(|_| ())),
        Cmd::Run { args } => bootstrap::ensure().and_then(|()| build::run_cnet(&args)),
        Cmd::Test => test::all(),
        Cmd::Soak { kills, seed } => bootstrap::ensure().and_then(|()| build::soak(kills, seed)),
        Cmd::Bench { quick, control } => {
            bootstrap::ensure().and_then(|()| build::bench(quick, control))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
