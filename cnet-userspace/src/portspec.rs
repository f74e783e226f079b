//! Docker's `-p` / `--expose` forms, parsed and validated without side effects.
//!
//! `CPORT`, `HPORT:CPORT`, `IP::CPORT`, `IP:HPORT:CPORT`, each with an optional
//! `/tcp` or `/udp`, and ranges on either side (`8000-8010:80-90`,
//! `8000-8010:80` = the first free host port of the range).
use std::{fmt, net::Ipv4Addr, str::FromStr};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => cnet_common::maps::PROTO_TCP,
            Proto::Udp => cnet_common::maps::PROTO_UDP,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl FromStr for Proto {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => bail!("unsupported protocol {other:?} (cnet publishes tcp and udp)"),
        }
    }
}

/// An inclusive port range; a single port is `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u16,
    pub end: u16,
}

impl Range {
    pub fn len(self) -> usize {
        usize::from(self.end - self.start) + 1
    }
    pub fn is_empty(self) -> bool {
        false
    }
    pub fn ports(self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }
}

fn port(s: &str, spec: &str) -> Result<u16> {
    let p: u16 = s
        .parse()
        .with_context(|| format!("invalid port {s:?} in {spec:?}"))?;
    ensure!(p != 0, "invalid port 0 in {spec:?}");
    Ok(p)
}

fn range(s: &str, spec: &str) -> Result<Range> {
    let r = match s.split_once('-') {
        Some((a, b)) => Range {
            start: port(a, spec)?,
            end: port(b, spec)?,
        },
        None => {
            let p = port(s, spec)?;
            Range { start: p, end: p }
        }
    };
    ensure!(
        r.start <= r.end,
        "invalid port range {s:?} in {spec:?}: start after end"
    );
    Ok(r)
}

/// What the user asked for; host ports are chosen later (dynamic, or the first
/// free one of a host range).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishSpec {
    pub host_ip: Option<Ipv4Addr>,
    /// `None`: a dynamic host port per container port.
    pub host: Option<Range>,
    pub container: Range,
    pub proto: Proto,
}

impl FromStr for PublishSpec {
    type Err = anyhow::Error;
    fn from_str(spec: &str) -> Result<Self> {
        let (body, proto) = match spec.rsplit_once('/') {
            Some((b, p)) => (
                b,
                p.parse()
                    .with_context(|| format!("in port spec {spec:?}"))?,
            ),
            None => (spec, Proto::Tcp),
        };
        let parts: Vec<&str> = body.split(':').collect();
        let (ip, host, ctr) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [ip, h, c] => (Some(*ip), if h.is_empty() { None } else { Some(*h) }, *c),
            _ => bail!(
                "invalid port spec {spec:?}: expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]"
            ),
        };
        let host_ip = ip
            .map(|s| {
                s.parse::<Ipv4Addr>()
                    .with_context(|| format!("invalid host IP {s:?} in {spec:?}"))
            })
            .transpose()?;
        let container = range(ctr, spec)?;
        let host = host.map(|h| range(h, spec)).transpose()?;
        if let Some(h) = host {
            ensure!(
                h.len() == container.len() || container.len() == 1,
                "invalid port spec {spec:?}: host range {}-{} and container range {}-{} differ in size",
                h.start,
                h.end,
                container.start,
                container.end
            );
        }
        Ok(Self {
            host_ip,
            host,
            container,
            proto,
        })
    }
}

/// `--expose PORT[-PORT][/PROTO]`.
pub fn parse_expose(spec: &str) -> Result<Vec<(u16, Proto)>> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (
            b,
            p.parse().with_context(|| format!("in --expose {spec:?}"))?,
        ),
        None => (spec, Proto::Tcp),
    };
    Ok(range(body, spec)?.ports().map(|p| (p, proto)).collect())
}

/// One published port, fully decided.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// `None`: every host address (Docker's 0.0.0.0).
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl PortMapping {
    pub fn host_ip_str(&self) -> String {
        self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string()
    }
}

impl fmt::Display for PortMapping {
    /// `docker port`'s form: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port,
            self.proto,
            self.host_ip_str(),
            self.host_port
        )
    }
}

/// Turns specs into mappings. `free(ip, port, proto)` says whether a host
/// port can be taken (it must also account for mappings already decided in
/// this call, which this function passes as `taken`); `dynamic` lists the
/// candidate ports for dynamic publishing, in order.
pub fn resolve(
    specs: &[PublishSpec],
    dynamic: std::ops::RangeInclusive<u16>,
    free: &mut dyn FnMut(Option<Ipv4Addr>, u16, Proto) -> Result<bool>,
) -> Result<Vec<PortMapping>> {
    let mut out: Vec<PortMapping> = Vec::new();
    // Host addresses already chosen per (port, proto): checks stay O(1), so
    // `-p 1-65535` or `--expose 1-65535 -P` are planned in linear time.
    let mut chosen_by: std::collections::HashMap<(u16, Proto), Vec<Option<Ipv4Addr>>> =
        std::collections::HashMap::new();
    let taken = |by: &std::collections::HashMap<(u16, Proto), Vec<Option<Ipv4Addr>>>,
                 ip: Option<Ipv4Addr>,
                 p: u16,
                 proto: Proto| {
        by.get(&(p, proto))
            .is_some_and(|ips| ips.iter().any(|m| m.is_none() || ip.is_none() || *m == ip))
    };
    // The next dynamic port to try, per protocol: a search never restarts
    // from the bottom of the range.
    let mut cursor: std::collections::HashMap<Proto, u16> = std::collections::HashMap::new();
    for s in specs {
        match s.host {
            Some(h) if h.len() == s.container.len() => {
                for (hp, cp) in h.ports().zip(s.container.ports()) {
                    if taken(&chosen_by, s.host_ip, hp, s.proto) || !free(s.host_ip, hp, s.proto)? {
                        let ip = s.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                        return Err(crate::error::conflict(format!(
                            "Bind for {ip}:{hp} failed: port is already allocated ({hp}/{})",
                            s.proto
                        )));
                    }
                    chosen_by.entry((hp, s.proto)).or_default().push(s.host_ip);
                    out.push(PortMapping {
                        host_ip: s.host_ip,
                        host_port: hp,
                        container_port: cp,
                        proto: s.proto,
                    });
                }
            }
            Some(h) => {
                let mut chosen = None;
                for hp in h.ports() {
                    if !taken(&chosen_by, s.host_ip, hp, s.proto) && free(s.host_ip, hp, s.proto)? {
                        chosen = Some(hp);
                        break;
                    }
                }
                let hp = chosen.with_context(|| {
                    format!(
                        "no free host port in {}-{}/{} for container port {}",
                        h.start, h.end, s.proto, s.container.start
                    )
                })?;
                chosen_by.entry((hp, s.proto)).or_default().push(s.host_ip);
                out.push(PortMapping {
                    host_ip: s.host_ip,
                    host_port: hp,
                    container_port: s.container.start,
                    proto: s.proto,
                });
            }
            None => {
                for cp in s.container.ports() {
                    let mut chosen = None;
                    let from = *cursor.get(&s.proto).unwrap_or(dynamic.start());
                    for hp in from..=*dynamic.end() {
                        if !taken(&chosen_by, s.host_ip, hp, s.proto)
                            && free(s.host_ip, hp, s.proto)?
                        {
                            chosen = Some(hp);
                            break;
                        }
                    }
                    let hp = chosen.with_context(|| {
                        format!(
                            "no free dynamic host port for {cp}/{} (range {}-{})",
                            s.proto,
                            dynamic.start(),
                            dynamic.end()
                        )
                    })?;
                    cursor.insert(s.proto, hp.saturating_add(1));
                    chosen_by.entry((hp, s.proto)).or_default().push(s.host_ip);
                    out.push(PortMapping {
                        host_ip: s.host_ip,
                        host_port: hp,
                        container_port: cp,
                        proto: s.proto,
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PublishSpec {
        s.parse().unwrap()
    }

    #[test]
    fn every_docker_form_parses() {
        assert_eq!(
            p("80"),
            PublishSpec {
                host_ip: None,
                host: None,
                container: Range { start: 80, end: 80 },
                proto: Proto::Tcp
            }
        );
        assert_eq!(
            p("8080:80").host,
            Some(Range {
                start: 8080,
                end: 8080
            })
        );
        assert_eq!(p("8080:80/udp").proto, Proto::Udp);
        let s = p("127.0.0.1::80");
        assert_eq!((s.host_ip, s.host), (Some(Ipv4Addr::LOCALHOST), None));
        let s = p("10.0.0.1:8080:80/tcp");
        assert_eq!(
            (s.host_ip, s.host.map(|h| h.start), s.container.start),
            (Some(Ipv4Addr::new(10, 0, 0, 1)), Some(8080), 80)
        );
        let s = p("8000-8010:80-90");
        assert_eq!((s.host.unwrap().len(), s.container.len()), (11, 11));
        assert_eq!(p("8000-8010:80").container.len(), 1);
    }

    #[test]
    fn bad_specs_name_the_bad_value() {
        for (spec, needle) in [
            ("http", "\"http\""),
            ("0", "port 0"),
            ("70000:80", "\"70000\""),
            ("80/sctp", "sctp"),
            ("8000-8005:80-90", "differ in size"),
            ("90-80", "start after end"),
            ("1.2.3:80:80", "\"1.2.3\""),
            ("a:b:c:d", "expected"),
        ] {
            let e = format!("{:#}", spec.parse::<PublishSpec>().unwrap_err());
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn resolve_ranges_dynamic_and_conflicts() {
        let specs = [p("8000-8002:80-82"), p("9000-9005:90/udp"), p("53/udp")];
        let mut free = |_: Option<Ipv4Addr>, port: u16, _: Proto| Ok(port != 9000 && port != 49153);
        let m = resolve(&specs, 49153..=49160, &mut free).unwrap();
        let hp: Vec<u16> = m.iter().map(|m| m.host_port).collect();
        assert_eq!(hp, vec![8000, 8001, 8002, 9001, 49154]);
        assert_eq!(m[4].to_string(), "53/udp -> 0.0.0.0:49154");
        // A fixed port in use is an error naming it; nothing is returned.
        let e = resolve(&[p("8080:80")], 49153..=49160, &mut |_, port, _| {
            Ok(port != 8080)
        })
        .unwrap_err();
        assert!(e.to_string().contains("8080/tcp"), "{e}");
        // The same host port twice in one call conflicts too.
        let e = resolve(&[p("8080:80"), p("8080:81")], 1..=2, &mut |_, _, _| {
            Ok(true)
        })
        .unwrap_err();
        assert!(e.to_string().contains("8080"), "{e}");
        // tcp and udp on the same number do not conflict.
        assert_eq!(
            resolve(&[p("53:53/tcp"), p("53:53/udp")], 1..=2, &mut |_, _, _| Ok(
                true
            ))
            .unwrap()
            .len(),
            2
        );
    }

    #[test]
    fn expose_forms() {
        assert_eq!(parse_expose("80").unwrap(), vec![(80, Proto::Tcp)]);
        assert_eq!(parse_expose("53/udp").unwrap(), vec![(53, Proto::Udp)]);
        assert_eq!(parse_expose("7000-7002").unwrap().len(), 3);
        assert!(parse_expose("x").is_err());
    }
}
