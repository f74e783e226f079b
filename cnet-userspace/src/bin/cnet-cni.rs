//! `cnet-cni`: cnet as a CNI plugin (see `cnet::cni`). The runtime passes
//! the command in `CNI_*` variables and the network configuration on stdin;
//! the result or the spec's error JSON goes to stdout.
use std::process::ExitCode;

fn main() -> ExitCode {
    let env = cnet::cni::Env::from_process();
    let (version, r) = cnet::cni::handle(&env, &mut std::io::stdin().lock());
    match r {
        Ok(Some(v)) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}
