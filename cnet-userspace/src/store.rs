//! Published ports on disk: an append-only log of fixed-size binary records
//! (`<root>/ports.log`) next to `state.json`, which holds everything else.
//! A change appends what changed (one record per mapping added or removed,
//! one per container gone) and syncs the data; the log is rewritten whole
//! only when dead records outnumber live ones, so `cnet port add` costs the
//! same at 100,000 published ports as at 10.
//!
//! Each 24-byte record: op, proto, host port, container port (little
//! endian), a has-address flag and the host address, the container's key
//! (the first 16 hex digits of its id) and an FNV-1a checksum of the first
//! 20 bytes. A torn record at the end (a crash mid-append) is ignored; a bad
//! record anywhere else is an error naming its offset.
use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::portspec::{PortMapping, Proto};

const MAGIC: &[u8; 8] = b"CNETPRT1";
const REC: usize = 24;
const OP_ADD: u8 = 1;
const OP_DEL: u8 = 2;
const OP_DROP: u8 = 3;

pub fn path(root: &Path) -> PathBuf {
    root.join("ports.log")
}

/// A container's key in the log: the first 64 bits of its id.
pub fn key(id: &str) -> u64 {
    id.get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| fnv(id.as_bytes()) as u64)
}

fn fnv(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, x| {
        (h ^ u32::from(*x)).wrapping_mul(0x0100_0193)
    })
}

fn encode(op: u8, container: u64, m: Option<&PortMapping>) -> [u8; REC] {
    let mut r = [0u8; REC];
    r[0] = op;
    if let Some(m) = m {
        r[1] = m.proto.number();
        r[2..4].copy_from_slice(&m.host_port.to_le_bytes());
        r[4..6].copy_from_slice(&m.container_port.to_le_bytes());
        if let Some(ip) = m.host_ip {
            r[6] = 1;
            r[8..12].copy_from_slice(&ip.octets());
        }
    }
    r[12..20].copy_from_slice(&container.to_le_bytes());
    let sum = fnv(&r[..20]);
    r[20..24].copy_from_slice(&sum.to_le_bytes());
    r
}

fn decode(r: &[u8], at: usize, file: &Path) -> Result<(u8, u64, Option<PortMapping>)> {
    let bad = |why: &str| {
        anyhow::anyhow!(
            "{} is corrupt at byte {at}: {why} (a copy is kept as {}.corrupt)",
            file.display(),
            file.display()
        )
    };
    let sum = u32::from_le_bytes([r[20], r[21], r[22], r[23]]);
    if sum != fnv(&r[..20]) {
        return Err(bad("checksum mismatch"));
    }
    let container = u64::from_le_bytes([r[12], r[13], r[14], r[15], r[16], r[17], r[18], r[19]]);
    let op = r[0];
    if op == OP_DROP {
        return Ok((op, container, None));
    }
    if op != OP_ADD && op != OP_DEL {
        return Err(bad(&format!("unknown record type {op}")));
    }
    let proto = match r[1] {
        p if p == Proto::Tcp.number() => Proto::Tcp,
        p if p == Proto::Udp.number() => Proto::Udp,
        p => return Err(bad(&format!("unknown protocol {p}"))),
    };
    Ok((
        op,
        container,
        Some(PortMapping {
            host_ip: (r[6] == 1).then(|| Ipv4Addr::new(r[8], r[9], r[10], r[11])),
            host_port: u16::from_le_bytes([r[2], r[3]]),
            container_port: u16::from_le_bytes([r[4], r[5]]),
            proto,
        }),
    ))
}

/// The ports of every container as the log has them, and the log's length.
#[derive(Clone, Debug, Default)]
pub struct Ports {
    pub by_container: HashMap<u64, Vec<PortMapping>>,
    /// Records in the file (live and dead), for compaction.
    pub records: usize,
}

/// Replays the log (an absent log is empty).
pub fn read(root: &Path) -> Result<Ports> {
    let file = path(root);
    let data = match fs::read(&file) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ports::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let corrupt = |e: anyhow::Error| {
        let _ = fs::copy(&file, file.with_extension("log.corrupt"));
        e
    };
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return Err(corrupt(anyhow::anyhow!(
            "{} is not a cnet ports log (bad header; a copy is kept as {}.corrupt)",
            file.display(),
            file.display()
        )));
    }
    let body = &data[MAGIC.len()..];
    // A torn last record (a crash during an append) was never acknowledged.
    let whole = body.len() / REC * REC;
    let mut out = Ports::default();
    // Deletions are rare (port rm, compaction drops them): netted per
    // container after the replay so a long log stays linear.
    let mut deleted: HashMap<u64, HashMap<PortMapping, usize>> = HashMap::new();
    for (i, r) in body[..whole].chunks_exact(REC).enumerate() {
        let at = MAGIC.len() + i * REC;
        let (op, c, m) = match decode(r, at, &file) {
            Ok(x) => x,
            // The last whole record may be torn too (its bytes half written).
            Err(_) if at + REC == MAGIC.len() + whole => break,
            Err(e) => return Err(corrupt(e)),
        };
        out.records += 1;
        match (op, m) {
            (OP_ADD, Some(m)) => {
                if let Some(d) = deleted.get_mut(&c)
                    && let Some(n) = d.get_mut(&m)
                    && *n > 0
                {
                    // Removed earlier, added again: the earlier copy stays gone.
                    flush_deleted(&mut out, c, d);
                }
                out.by_container.entry(c).or_default().push(m);
            }
            (OP_DEL, Some(m)) => {
                *deleted.entry(c).or_default().entry(m).or_default() += 1;
            }
            _ => {
                out.by_container.remove(&c);
                deleted.remove(&c);
            }
        }
    }
    for (c, mut d) in deleted {
        flush_deleted(&mut out, c, &mut d);
    }
    out.by_container.retain(|_, v| !v.is_empty());
    Ok(out)
}

fn flush_deleted(out: &mut Ports, c: u64, d: &mut HashMap<PortMapping, usize>) {
    if let Some(v) = out.by_container.get_mut(&c) {
        // Only mappings on a host port some deletion names are looked up.
        let mut named = vec![false; 65536 * 2];
        let slot =
            |m: &PortMapping| usize::from(m.host_port) * 2 + usize::from(m.proto == Proto::Udp);
        for m in d.keys() {
            named[slot(m)] = true;
        }
        v.retain(|m| {
            if !named[slot(m)] {
                return true;
            }
            match d.get_mut(m) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            }
        });
    }
    d.clear();
}

/// The records that turn `old` (what the log has) into `new`.
pub fn diff(container: u64, old: &[PortMapping], new: &[PortMapping], out: &mut Vec<[u8; REC]>) {
    if old == new {
        return;
    }
    if new.starts_with(old) {
        out.extend(
            new[old.len()..]
                .iter()
                .map(|m| encode(OP_ADD, container, Some(m))),
        );
        return;
    }
    let mut have: HashMap<&PortMapping, usize> = HashMap::new();
    for m in old {
        *have.entry(m).or_default() += 1;
    }
    let mut adds = Vec::new();
    for m in new {
        match have.get_mut(m) {
            Some(n) if *n > 0 => *n -= 1,
            _ => adds.push(m),
        }
    }
    for (m, n) in have {
        for _ in 0..n {
            out.push(encode(OP_DEL, container, Some(m)));
        }
    }
    out.extend(adds.into_iter().map(|m| encode(OP_ADD, container, Some(m))));
}

/// The record for a container that is gone with all its ports.
pub fn dropped(container: u64) -> [u8; REC] {
    encode(OP_DROP, container, None)
}

/// Appends `recs` and syncs them to disk.
pub fn append(root: &Path, recs: &[[u8; REC]]) -> Result<()> {
    let file = path(root);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .with_context(|| format!("opening {}", file.display()))?;
    let fresh = f.metadata().map(|m| m.len() == 0).unwrap_or(false);
    let mut buf = Vec::with_capacity(MAGIC.len() + recs.len() * REC);
    if fresh {
        buf.extend_from_slice(MAGIC);
    }
    for r in recs {
        buf.extend_from_slice(r);
    }
    f.write_all(&buf)
        .with_context(|| format!("appending to {}", file.display()))?;
    f.sync_data()
        .with_context(|| format!("syncing {}", file.display()))?;
    if fresh {
        sync_dir(root)?;
    }
    Ok(())
}

/// Writes the log anew with the live mappings only (temp file, sync, rename).
pub fn rewrite<'a>(
    root: &Path,
    live: impl Iterator<Item = (u64, &'a [PortMapping])>,
) -> Result<usize> {
    let file = path(root);
    let mut buf = MAGIC.to_vec();
    let mut n = 0;
    for (c, ms) in live {
        for m in ms {
            buf.extend_from_slice(&encode(OP_ADD, c, Some(m)));
            n += 1;
        }
    }
    crate::state::write_atomic(&file, &buf)?;
    Ok(n)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Whether a log of `records` records holding `live` mappings is worth
/// rewriting.
pub fn wants_compaction(records: usize, live: usize) -> bool {
    records > 2 * live + 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(port: u16) -> PortMapping {
        PortMapping {
            host_ip: port.is_multiple_of(2).then(|| Ipv4Addr::new(10, 0, 0, 1)),
            host_port: port,
            container_port: port + 1,
            proto: if port.is_multiple_of(3) {
                Proto::Udp
            } else {
                Proto::Tcp
            },
        }
    }

    #[test]
    fn replays_adds_deletes_drops_and_ignores_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("cnet-store-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let _ = fs::remove_file(path(&dir));
        let (a, b) = (key("00000000000000aa"), key("00000000000000bb"));
        let mut recs = Vec::new();
        diff(a, &[], &[m(1), m(2), m(3)], &mut recs);
        diff(b, &[], &[m(4)], &mut recs);
        append(&dir, &recs).unwrap();
        recs.clear();
        diff(a, &[m(1), m(2), m(3)], &[m(1), m(3), m(5)], &mut recs);
        recs.push(dropped(b));
        append(&dir, &recs).unwrap();
        let p = read(&dir).unwrap();
        assert_eq!(p.by_container[&a], vec![m(1), m(3), m(5)]);
        assert!(!p.by_container.contains_key(&b));
        assert_eq!(p.records, 7);
        // Half a record at the end: ignored.
        let mut f = OpenOptions::new().append(true).open(path(&dir)).unwrap();
        f.write_all(&encode(OP_ADD, a, Some(&m(7)))[..10]).unwrap();
        assert_eq!(read(&dir).unwrap().by_container[&a].len(), 3);
        // A flipped byte in the middle: an error naming the offset, and a copy kept.
        let mut data = fs::read(path(&dir)).unwrap();
        data[8 + 24 + 3] ^= 0xff;
        fs::write(path(&dir), &data).unwrap();
        let e = read(&dir).unwrap_err().to_string();
        assert!(e.contains("byte 32") && e.contains("checksum"), "{e}");
        assert!(dir.join("ports.log.corrupt").exists());
        // Compaction keeps only live mappings.
        let live = [m(1), m(5)];
        rewrite(&dir, [(a, &live[..])].into_iter()).unwrap();
        let p = read(&dir).unwrap();
        assert_eq!((p.by_container[&a].clone(), p.records), (live.to_vec(), 2));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn delete_then_add_again_keeps_one() {
        let dir = std::env::temp_dir().join(format!("cnet-store2-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let _ = fs::remove_file(path(&dir));
        let a = key("00000000000000aa");
        let mut recs = Vec::new();
        diff(a, &[], &[m(1), m(2)], &mut recs);
        diff(a, &[m(1), m(2)], &[m(2)], &mut recs);
        diff(a, &[m(2)], &[m(2), m(1)], &mut recs);
        append(&dir, &recs).unwrap();
        let mut got = read(&dir).unwrap().by_container[&a].clone();
        got.sort_by_key(|x| x.host_port);
        assert_eq!(got, vec![m(1), m(2)]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
