//! `daemon.json` with Docker's keys. Every key is checked by hand so that an
//! error always names the key and the bad value; unknown keys are errors too.
use std::{net::Ipv4Addr, path::Path};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{filter::parse_cidr0, ipam::Cidr, state::Cidr0};

pub const DEFAULT_PATH: &str = "/etc/cnet/daemon.json";

/// A pool user-defined networks take subnets from (`default-address-pools`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub base: Cidr0,
    pub size: u8,
}

/// What daemon.json may set; `None`/empty means "not set".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DaemonConfig {
    pub bip: Option<Cidr>,
    pub fixed_cidr: Option<Cidr0>,
    pub mtu: Option<u32>,
    pub default_gateway: Option<Ipv4Addr>,
    pub dns: Option<Vec<Ipv4Addr>>,
    pub icc: Option<bool>,
    pub ip_forward: Option<bool>,
    pub ip_masq: Option<bool>,
    /// Datapath debug logs (`cnet logs --datapath`).
    pub debug: Option<bool>,
    pub default_address_pools: Option<Vec<Pool>>,
    /// Accepted for compatibility: cnet never needs the userland proxy.
    pub userland_proxy: Option<bool>,
}

fn bool_of(key: &str, v: &Value) -> Result<bool> {
    v.as_bool()
        .with_context(|| format!("daemon.json: key {key:?} must be true or false, got {v}"))
}

fn ip_of(key: &str, v: &Value) -> Result<Ipv4Addr> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("daemon.json: key {key:?} must be an IPv4 address, got {v}"))
}

fn cidr0_of(key: &str, v: &Value) -> Result<Cidr0> {
    let s = v
        .as_str()
        .with_context(|| format!("daemon.json: key {key:?} must be a CIDR string, got {v}"))?;
    ensure!(
        s.contains('/'),
        "daemon.json: key {key:?} must be a CIDR (ADDRESS/PREFIX), got {v}"
    );
    parse_cidr0(s).with_context(|| format!("daemon.json: key {key:?}"))
}

/// Parses and validates the text of a daemon.json.
pub fn parse(text: &str) -> Result<DaemonConfig> {
    let v: Value = serde_json::from_str(text).context("daemon.json is not valid JSON")?;
    let obj = v.as_object().context("daemon.json must be a JSON object")?;
    let mut c = DaemonConfig::default();
    for (key, v) in obj {
        match key.as_str() {
            "bip" => {
                let s = v.as_str().with_context(|| {
                    format!("daemon.json: key \"bip\" must be a string, got {v}")
                })?;
                let bip: Cidr = s
                    .parse()
                    .with_context(|| format!("daemon.json: key \"bip\" ({s:?})"))?;
                crate::ipam::validate_bip(bip).context("daemon.json: key \"bip\"")?;
                c.bip = Some(bip);
            }
            "fixed-cidr" => c.fixed_cidr = Some(cidr0_of(key, v)?),
            "mtu" => {
                let m = v
                    .as_u64()
                    .filter(|m| (68..=65535).contains(m))
                    .with_context(|| {
                        format!(
                            "daemon.json: key \"mtu\" must be an integer from 68 to 65535, got {v}"
                        )
                    })?;
                c.mtu = Some(m as u32);
            }
            "default-gateway" => c.default_gateway = Some(ip_of(key, v)?),
            "dns" => {
                let list = v.as_array().with_context(|| {
                    format!("daemon.json: key \"dns\" must be a list of addresses, got {v}")
                })?;
                c.dns = Some(
                    list.iter()
                        .map(|x| ip_of("dns", x))
                        .collect::<Result<_>>()?,
                );
            }
            "icc" => c.icc = Some(bool_of(key, v)?),
            "ip-forward" => c.ip_forward = Some(bool_of(key, v)?),
            "ip-masq" => c.ip_masq = Some(bool_of(key, v)?),
            "debug" => c.debug = Some(bool_of(key, v)?),
            "userland-proxy" => c.userland_proxy = Some(bool_of(key, v)?),
            "default-address-pools" => {
                let list = v.as_array().with_context(|| {
                    format!("daemon.json: key \"default-address-pools\" must be a list of {{\"base\", \"size\"}}, got {v}")
                })?;
                let mut pools = Vec::new();
                for p in list {
                    let base = cidr0_of("default-address-pools.base", &p["base"])?;
                    let size = p["size"]
                        .as_u64()
                        .filter(|s| (u64::from(base.prefix)..=30).contains(s))
                        .with_context(|| {
                            format!(
                                "daemon.json: key \"default-address-pools.size\" must be between the base prefix {} and 30, got {}",
                                base.prefix, p["size"]
                            )
                        })?;
                    pools.push(Pool {
                        base,
                        size: size as u8,
                    });
                }
                c.default_address_pools = Some(pools);
            }
            other => bail!("daemon.json: unknown key {other:?}"),
        }
    }
    if let (Some(f), Some(b)) = (c.fixed_cidr, c.bip) {
        check_fixed_cidr(f, b)?;
    }
    if let (Some(g), Some(b)) = (c.default_gateway, c.bip) {
        ensure!(
            b.contains(g),
            "daemon.json: key \"default-gateway\" {g} is outside bip {b}"
        );
    }
    Ok(c)
}

pub fn check_fixed_cidr(f: Cidr0, bip: Cidr) -> Result<()> {
    ensure!(
        f.prefix >= bip.prefix && bip.contains(f.addr),
        "daemon.json: key \"fixed-cidr\" {}/{} is not inside bip {bip}",
        f.addr,
        f.prefix
    );
    Ok(())
}

/// Reads `path`; a missing file at the default path is an empty config, a
/// missing file named explicitly is an error.
pub fn load(path: &Path, explicit: bool) -> Result<DaemonConfig> {
    match std::fs::read_to_string(path) {
        Ok(t) => parse(&t).with_context(|| format!("in {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok(DaemonConfig::default())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_keys_parse() {
        let c = parse(
            r#"{"bip": "10.123.0.1/24", "fixed-cidr": "10.123.0.128/25", "mtu": 1400,
                "default-gateway": "10.123.0.1", "dns": ["10.123.0.53"], "icc": false,
                "ip-forward": true, "ip-masq": false, "userland-proxy": true,
                "default-address-pools": [{"base": "10.124.0.0/16", "size": 24}]}"#,
        )
        .unwrap();
        assert_eq!(c.bip.unwrap().to_string(), "10.123.0.1/24");
        assert_eq!(c.fixed_cidr.unwrap().prefix, 25);
        assert_eq!(
            (c.mtu, c.icc, c.ip_masq),
            (Some(1400), Some(false), Some(false))
        );
        assert_eq!(c.dns.unwrap(), vec![Ipv4Addr::new(10, 123, 0, 53)]);
        assert_eq!(c.default_address_pools.unwrap()[0].size, 24);
        assert_eq!(parse("{}").unwrap(), DaemonConfig::default());
    }

    #[test]
    fn every_bad_key_or_value_names_the_key() {
        for (text, needle) in [
            (r#"{"bipp": "10.0.0.1/24"}"#, "\"bipp\""),
            (r#"{"bip": "10.0.0.0/24"}"#, "\"bip\""),
            (r#"{"bip": 5}"#, "\"bip\""),
            (r#"{"mtu": 20}"#, "\"mtu\""),
            (r#"{"mtu": "1500"}"#, "\"mtu\""),
            (r#"{"icc": "no"}"#, "\"icc\""),
            (r#"{"ip-forward": 1}"#, "\"ip-forward\""),
            (r#"{"ip-masq": null}"#, "\"ip-masq\""),
            (r#"{"userland-proxy": "yes"}"#, "\"userland-proxy\""),
            (r#"{"dns": "8.8.8.8"}"#, "\"dns\""),
            (r#"{"dns": ["nameserver"]}"#, "\"dns\""),
            (r#"{"default-gateway": "x"}"#, "\"default-gateway\""),
            (r#"{"fixed-cidr": "10.0.0.0"}"#, "\"fixed-cidr\""),
            (
                r#"{"bip": "10.0.0.1/24", "fixed-cidr": "10.9.0.0/25"}"#,
                "\"fixed-cidr\"",
            ),
            (
                r#"{"bip": "10.0.0.1/24", "default-gateway": "10.9.0.1"}"#,
                "\"default-gateway\"",
            ),
            (
                r#"{"default-address-pools": [{"base": "10.0.0.0/16", "size": 8}]}"#,
                "default-address-pools.size",
            ),
            (
                r#"{"default-address-pools": [{"size": 24}]}"#,
                "default-address-pools.base",
            ),
            ("[1]", "object"),
            ("{", "JSON"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
