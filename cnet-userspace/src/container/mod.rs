//! Containers: a named network namespace joined to the bridge by a veth pair,
//! its map entries, and the process running in it.
mod build;
mod hosts;
mod plan;
mod ports;
mod process;
mod teardown;

pub use build::*;
pub use hosts::*;
pub use plan::*;
pub use ports::*;
pub use process::*;
pub use teardown::*;

use std::{fs::File, io::Read};

use anyhow::{Context, Result, ensure};

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub name: Option<String>,
    pub publish: Vec<String>,
    pub expose: Vec<String>,
    pub publish_all: bool,
    /// `NAME[:ALIAS]`
    pub links: Vec<String>,
    /// `bridge` (default), `host`, `none`, `container:NAME` or a user-defined network.
    pub network: Option<String>,
    pub ip: Option<String>,
    pub hostname: Option<String>,
    pub dns: Vec<String>,
    /// `--dns-search DOMAIN` (repeatable).
    pub dns_search: Vec<String>,
    /// `--dns-option OPT` (repeatable), resolv.conf's `options`.
    pub dns_options: Vec<String>,
    /// `--mac-address`: eth0's MAC instead of 02:42 and the address.
    pub mac_address: Option<String>,
    /// `--rm`: removed when its command exits (detached ones too).
    pub auto_remove: bool,
    /// `NAME:IP`
    pub add_hosts: Vec<String>,
    pub aliases: Vec<String>,
    /// `-e KEY=VALUE` or `-e KEY` (cnet's own value).
    pub env: Vec<String>,
    /// `--label KEY=VALUE`.
    pub labels: Vec<String>,
    pub cmd: Vec<String>,
    /// Set by the CNI plugin: the runtime's namespace, no command of cnet's.
    pub cni: Option<crate::state::CniAttachment>,
}

/// A name that goes into a hosts file (`--network-alias`, `--alias`, the name
/// of `--add-host`): letters, digits, `_`, `.` and `-`, starting with a letter
/// or digit, at most 253 characters. Spaces, tabs and newlines would add
/// hosts-file entries of their own.
pub fn validate_host_name(what: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = !name.is_empty()
        && name.len() <= 253
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    ensure!(
        ok,
        "invalid {what} {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
    );
    Ok(())
}

/// The container's command could not be started; `code` is the exit status
/// Docker gives for it (127 not found, 126 not invocable).
#[derive(Debug)]
pub struct CommandError {
    pub code: u8,
    pub msg: String,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for CommandError {}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`; cnet also caps the length.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = name.len() >= 2
        && name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    ensure!(
        ok,
        "invalid container name {name:?}: use 2-64 characters [a-zA-Z0-9][a-zA-Z0-9_.-]"
    );
    Ok(())
}

pub fn random_id() -> Result<String> {
    let mut b = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The time now as Docker writes it: RFC 3339 in UTC, with as many
/// fractional digits as needed up to nanoseconds (Go's RFC3339Nano).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// A time written by [`now_rfc3339`], for ordering (unparsable ones first).
pub fn timestamp(t: &str) -> jiff::Timestamp {
    t.parse().unwrap_or(jiff::Timestamp::MIN)
}

/// Seconds since the epoch of a time written by [`now_rfc3339`].
pub fn parse_rfc3339(t: &str) -> Option<i64> {
    t.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}
