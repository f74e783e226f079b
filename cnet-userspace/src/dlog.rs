//! `cnet logs --datapath`: the eBPF programs' aya-log records (written while
//! `cnet up --debug` is on), read from the ring buffer of the instance's
//! pinned programs. Each line is the record's time and message, with drop
//! reasons and flow kinds by name.
use std::{
    io::Write,
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use aya::programs::SchedClassifier;
use aya_log::EbpfLogger;
use cnet_common::maps::{CT_DNAT, CT_REV_DNAT, CT_REV_SNAT, CT_SNAT, FLOW_HAIRPIN};

use crate::{loader, state::Paths};

/// Collects formatted records; [`print`] writes them out after each read.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl log::Log for Lines {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!(
            "{} {}",
            jiff::Timestamp::now(),
            readable(&record.args().to_string())
        );
        if let Ok(mut l) = self.0.lock() {
            l.push(line);
        }
    }

    fn flush(&self) {}
}

/// Names for the numbers the datapath logs: `reason=N` becomes the drop
/// counter's name, `kind=N` the translation.
fn readable(msg: &str) -> String {
    msg.split(' ')
        .map(|w| {
            if let Some(n) = w
                .strip_prefix("reason=")
                .and_then(|n| n.parse::<u32>().ok())
            {
                let name = cnet_common::drop::COUNTER_NAMES
                    .iter()
                    .find(|(slot, _)| *slot == n)
                    .map(|(_, name)| name.trim_start_matches("drop_"))
                    .unwrap_or("unknown");
                return format!("reason={name}");
            }
            if let Some(k) = w.strip_prefix("kind=").and_then(|n| n.parse::<u8>().ok()) {
                let name = match k {
                    CT_DNAT => "dnat",
                    CT_REV_DNAT => "reverse-dnat",
                    CT_SNAT => "masquerade",
                    CT_REV_SNAT => "reverse-masquerade",
                    FLOW_HAIRPIN => "hairpin",
                    _ => "unknown",
                };
                return format!("kind={name}");
            }
            if let Some(p) = w.strip_prefix("proto=").and_then(|n| n.parse::<u8>().ok()) {
                return format!("proto={}", crate::conntrack::proto_name(p));
            }
            w.to_string()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the datapath's buffered records; with `follow`, keeps printing new
/// ones until interrupted.
pub fn print(paths: &Paths, follow: bool, out: &mut impl Write) -> Result<()> {
    let pin = paths.prog_pin(loader::VETH_PROG);
    let prog = SchedClassifier::from_pin(&pin)
        .with_context(|| format!("opening {} (is cnet up?)", pin.display()))?;
    let id = prog
        .info()
        .with_context(|| format!("reading the program info of {}", pin.display()))?
        .id();
    let lines = Lines::default();
    let mut logger = EbpfLogger::init_from_id_with_logger(id, lines.clone())
        .with_context(|| format!("opening the datapath log of program {id}"))?;
    let state = crate::state::load(paths)?;
    if !state.is_some_and(|s| s.debug) {
        writeln!(
            out,
            "# datapath debug logs are off: `cnet up --debug` switches them on"
        )?;
    }
    loop {
        logger.flush();
        let batch: Vec<String> = match lines.0.lock() {
            Ok(mut l) => l.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for l in batch {
            writeln!(out, "{l}").context("writing the datapath log")?;
        }
        out.flush().context("writing the datapath log")?;
        if !follow {
            return Ok(());
        }
        let mut pfd = libc::pollfd {
            fd: logger.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 500) };
    }
}

#[cfg(test)]
mod tests {
    use super::readable;

    #[test]
    fn numbers_become_names() {
        let r = cnet_common::DropReason::Spoofed as u32;
        assert_eq!(
            readable(&format!("drop reason={r} if=3 10.0.0.2 -> 10.0.0.3")),
            "drop reason=spoofed if=3 10.0.0.2 -> 10.0.0.3"
        );
        assert_eq!(
            readable("flow kind=1 proto=6 a:1 -> b:2"),
            "flow kind=dnat proto=tcp a:1 -> b:2"
        );
    }
}
