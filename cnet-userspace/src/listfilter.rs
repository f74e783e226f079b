//! `--filter KEY=VALUE` for `cnet ps` and `cnet network ls`, as Docker reads
//! them: values of the same key are alternatives (OR), different keys must
//! all match (AND), an unknown key is an error naming it.
use std::collections::BTreeMap;

use anyhow::{Result, bail, ensure};

use crate::{
    container::timestamp,
    portspec::Proto,
    state::{Container, Phase, State},
};

/// Parsed `--filter` arguments.
#[derive(Debug, Default)]
pub struct ListFilters(BTreeMap<String, Vec<String>>);

/// The keys `cnet ps --filter` knows (Docker's, less those about images,
/// volumes and health, which cnet's containers do not have).
pub const PS_KEYS: &[&str] = &[
    "id", "name", "label", "status", "exited", "network", "publish", "expose", "before", "since",
];

/// The keys `cnet network ls --filter` knows (all of Docker's).
pub const NETWORK_KEYS: &[&str] = &["driver", "id", "label", "name", "scope", "type", "dangling"];

const STATUSES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

impl ListFilters {
    pub fn parse(args: &[String], keys: &[&str]) -> Result<Self> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in args {
            let Some((k, v)) = a.split_once('=') else {
                bail!("bad format of filter {a:?} (expected name=value)");
            };
            let k = k.trim().to_ascii_lowercase();
            ensure!(keys.contains(&k.as_str()), "Invalid filter '{k}'");
            check_value(&k, v)?;
            m.entry(k).or_default().push(v.to_string());
        }
        Ok(Self(m))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Whether some value of `key` satisfies `pred` (true when `key` is not filtered on).
    fn any(&self, key: &str, mut pred: impl FnMut(&str) -> Result<bool>) -> Result<bool> {
        let Some(vs) = self.0.get(key) else {
            return Ok(true);
        };
        for v in vs {
            if pred(v)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `cnet ps`: whether container `c` passes every filter.
    pub fn container(&self, st: &State, c: &Container) -> Result<bool> {
        let nets: Vec<&str> = std::iter::once(c.network.as_str())
            .chain(c.extra.iter().map(|a| a.network.as_str()))
            .collect();
        let created_of = |r: &str, key: &str| -> Result<jiff::Timestamp> {
            let n = st
                .resolve(r)
                .map_err(|_| anyhow::anyhow!("No such container: {r} (in filter '{key}={r}')"))?;
            Ok(timestamp(&st.containers[&n].created))
        };
        let created = timestamp(&c.created);
        let checks = [
            self.any("id", |v| Ok(c.id.starts_with(v)))?,
            self.any("name", |v| Ok(name_matches(&c.name, v)))?,
            self.any("label", |v| Ok(label_matches(&c.labels, v)))?,
            self.any("status", |v| {
                ensure!(
                    STATUSES.contains(&v),
                    "Unrecognised filter value for status: {v}"
                );
                Ok(status_of(c) == v)
            })?,
            self.any("exited", |v| {
                let code: i32 = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("Invalid filter 'exited={v}'"))?;
                Ok(!c.running() && c.exit.is_some_and(|e| e.code == code))
            })?,
            self.any("network", |v| {
                Ok(nets
                    .iter()
                    .any(|n| *n == v || st.networks.get(*n).is_some_and(|x| x.id.starts_with(v))))
            })?,
            self.any("publish", |v| {
                let (lo, hi, proto) = port_filter(v, "publish")?;
                Ok(c.ports
                    .iter()
                    .any(|m| m.proto == proto && (lo..=hi).contains(&m.host_port)))
            })?,
            self.any("expose", |v| {
                let (lo, hi, proto) = port_filter(v, "expose")?;
                Ok(c.ports
                    .iter()
                    .map(|m| (m.container_port, m.proto))
                    .chain(c.exposed.iter().copied())
                    .any(|(p, pr)| pr == proto && (lo..=hi).contains(&p)))
            })?,
            self.any("before", |v| Ok(created < created_of(v, "before")?))?,
            self.any("since", |v| Ok(created > created_of(v, "since")?))?,
        ];
        Ok(checks.iter().all(|ok| *ok))
    }

    /// `cnet network ls`: whether a network passes every filter.
    pub fn network(&self, n: &NetworkRow<'_>) -> Result<bool> {
        let checks = [
            self.any("driver", |v| Ok(n.driver == v))?,
            self.any("id", |v| Ok(n.id.starts_with(v)))?,
            self.any("name", |v| Ok(name_matches(n.name, v)))?,
            self.any("label", |v| {
                Ok(n.labels.is_some_and(|l| label_matches(l, v)))
            })?,
            self.any("scope", |v| Ok(v == "local"))?,
            self.any("type", |v| match v {
                "custom" => Ok(!n.builtin),
                "builtin" => Ok(n.builtin),
                _ => bail!("invalid filter: 'type'='{v}'"),
            })?,
            self.any("dangling", |v| {
                let dangling = !n.builtin && n.containers == 0;
                match v.to_ascii_lowercase().as_str() {
                    "true" | "1" => Ok(dangling),
                    "false" | "0" => Ok(!dangling),
                    _ => bail!("invalid filter: 'dangling'='{v}'"),
                }
            })?,
        ];
        Ok(checks.iter().all(|ok| *ok))
    }
}

/// Values refused before anything is listed (as Docker does, even when
/// nothing would be listed).
fn check_value(k: &str, v: &str) -> Result<()> {
    match k {
        "status" => ensure!(
            STATUSES.contains(&v),
            "Unrecognised filter value for status: {v}"
        ),
        "exited" => {
            v.parse::<i32>()
                .map_err(|_| anyhow::anyhow!("Invalid filter 'exited={v}'"))?;
        }
        "publish" | "expose" => {
            port_filter(v, k)?;
        }
        "type" => ensure!(
            v == "custom" || v == "builtin",
            "invalid filter: 'type'='{v}'"
        ),
        "dangling" => ensure!(
            ["true", "1", "false", "0"].contains(&v.to_ascii_lowercase().as_str()),
            "invalid filter: 'dangling'='{v}'"
        ),
        _ => {}
    }
    Ok(())
}

/// What `network ls` filters look at.
pub struct NetworkRow<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub driver: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub builtin: bool,
    pub containers: usize,
}

/// Docker's container status words.
pub fn status_of(c: &Container) -> &'static str {
    match c.phase {
        Phase::Creating => "created",
        Phase::Removing => "removing",
        Phase::Ready if c.running() => "running",
        Phase::Ready => "exited",
    }
}

/// Docker matches names as a regular expression; cnet takes the common
/// forms: a substring, `^PREFIX` and `SUFFIX$` (a leading `/` as Docker's
/// names have is ignored).
fn name_matches(name: &str, pat: &str) -> bool {
    let (anchored_start, p) = match pat.strip_prefix('^') {
        Some(p) => (true, p),
        None => (false, pat),
    };
    let p = p.strip_prefix('/').unwrap_or(p);
    let (anchored_end, p) = match p.strip_suffix('$') {
        Some(p) => (true, p),
        None => (false, p),
    };
    match (anchored_start, anchored_end) {
        (true, true) => name == p,
        (true, false) => name.starts_with(p),
        (false, true) => name.ends_with(p),
        (false, false) => name.contains(p),
    }
}

/// `KEY` (present) or `KEY=VALUE` (equal).
fn label_matches(labels: &BTreeMap<String, String>, f: &str) -> bool {
    match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(f),
    }
}

/// `PORT[-PORT][/PROTO]` (tcp when no protocol is given).
fn port_filter(v: &str, key: &str) -> Result<(u16, u16, Proto)> {
    let bad = || anyhow::anyhow!("Invalid filter '{key}={v}': expected PORT[-PORT][/PROTO]");
    let (ports, proto) = match v.split_once('/') {
        Some((p, pr)) => (p, pr.parse::<Proto>().map_err(|_| bad())?),
        None => (v, Proto::Tcp),
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (a, b),
        None => (ports, ports),
    };
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    ensure!(lo <= hi, bad());
    Ok((lo, hi, proto))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_forms_are_named() {
        let e = ListFilters::parse(&["nope=1".into()], PS_KEYS).unwrap_err();
        assert_eq!(e.to_string(), "Invalid filter 'nope'");
        let e = ListFilters::parse(&["name".into()], PS_KEYS).unwrap_err();
        assert!(e.to_string().contains("\"name\""), "{e}");
        assert!(port_filter("80-70", "publish").is_err());
        assert_eq!(
            port_filter("80/udp", "publish").ok(),
            Some((80, 80, Proto::Udp))
        );
    }

    #[test]
    fn names_match_as_dockers_common_patterns() {
        assert!(name_matches("web-1", "web"));
        assert!(name_matches("web-1", "^web"));
        assert!(name_matches("web-1", "^/web-1$"));
        assert!(!name_matches("myweb-1", "^web"));
        assert!(name_matches("a-web", "web$"));
        assert!(!name_matches("web-1", "web$"));
    }
}
