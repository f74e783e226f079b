use std::process::ExitCode;

fn main() -> ExitCode {
    match cnet::ebpf::object() {
        Ok(_) => {
            eprintln!("cnet: `cnet up` is not implemented yet");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("cnet: {e:#}");
            ExitCode::from(2)
        }
    }
}
