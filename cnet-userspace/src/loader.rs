//! Loads the eBPF object once per instance, pins maps, programs and links
//! under the instance's own bpffs mount, and attaches programs from those pins.
//! With everything pinned, the dataplane keeps forwarding while no cnet
//! process runs.
use std::{fs, os::fd::AsFd, path::Path};

use anyhow::{Context, Result};
use aya::{
    EbpfLoader,
    maps::{Array, HashMap, Map, MapData},
    programs::{
        CgroupAttachMode, CgroupSockAddr, Program, SchedClassifier, TcAttachType, Xdp, XdpMode,
        cgroup_sock_addr::CgroupSockAddrAttachType, links::FdLink,
    },
};
use cnet_common::maps::{self, Config};

use crate::state::Paths;

pub const UPLINK_PROG: &str = "cnet_uplink_ingress";
pub const UPLINK_XDP: &str = "cnet_uplink_xdp";
pub const VETH_PROG: &str = "cnet_veth_ingress";
/// Reached by tail call from the TC programs (never attached).
pub const FRAG_NEEDED_PROG: &str = "cnet_frag_needed";
/// The veth's second stage (new flows), reached by tail call from `VETH_PROG`.
pub const VETH_NEW_PROG: &str = "cnet_veth_new";
/// The uplink's second stage (new flows), reached by tail call from `UPLINK_PROG`.
pub const UPLINK_NEW_PROG: &str = "cnet_uplink_new";
/// The veth's third stage (masquerade), reached by tail call from `VETH_NEW_PROG`.
pub const VETH_MASQ_PROG: &str = "cnet_veth_masq";
/// The host-local hooks and their attach types.
pub const SOCK_PROGS: &[(&str, CgroupSockAddrAttachType)] = &[
    ("cnet_connect4", CgroupSockAddrAttachType::Connect4),
    ("cnet_sendmsg4", CgroupSockAddrAttachType::UDPSendMsg4),
    ("cnet_recvmsg4", CgroupSockAddrAttachType::UDPRecvMsg4),
    ("cnet_getpeername4", CgroupSockAddrAttachType::GetPeerName4),
];

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct with a valid path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Mounts a bpffs at the instance's pin directory unless one is there.
pub fn ensure_bpffs(paths: &Paths) -> Result<()> {
    let dir = paths.bpf();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if !is_bpffs(&dir) {
        crate::host::mount::mount("bpf", &dir, Some("bpf"), 0)?;
    }
    for sub in ["maps", "progs", "links"] {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}/{sub}", dir.display()))?;
    }
    Ok(())
}

/// Unmounts the instance's bpffs (dropping every pin in it).
pub fn remove_bpffs(paths: &Paths) -> Result<()> {
    let dir = paths.bpf();
    if is_bpffs(&dir) {
        crate::host::mount::umount(&dir)?;
    }
    let _ = fs::remove_dir(&dir);
    Ok(())
}

/// Loads the object with every map pinned (reusing existing pins) and pins
/// every program. Does nothing when the programs are already pinned.
pub fn load_and_pin(paths: &Paths) -> Result<()> {
    if paths.prog_pin(VETH_PROG).exists() && paths.prog_pin(UPLINK_PROG).exists() {
        return Ok(());
    }
    let object = crate::ebpf::object()?;
    let mut loader = EbpfLoader::new();
    let pins: Vec<(&str, std::path::PathBuf)> =
        maps::ALL.iter().map(|m| (*m, paths.map_pin(m))).collect();
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(object).context("loading the eBPF object")?;
    // The verifier takes most of `cnet up`: the programs are checked on two
    // threads (the kernel verifies loads in parallel), shared out by their
    // verification time.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut cost_a, mut cost_b) = (0, 0);
    let mut progs: Vec<(&str, &mut Program)> = ebpf.programs_mut().collect();
    progs.sort_by_key(|(name, _)| std::cmp::Reverse(verify_cost(name)));
    for p in progs {
        if cost_a <= cost_b {
            cost_a += verify_cost(p.0);
            a.push(p);
        } else {
            cost_b += verify_cost(p.0);
            b.push(p);
        }
    }
    std::thread::scope(|s| {
        let other = s.spawn(|| load_all(paths, b));
        let mine = load_all(paths, a);
        other
            .join()
            .map_err(|_| anyhow::anyhow!("a program loading thread panicked"))?
            .and(mine)
    })?;
    fill_jumps(&mut ebpf)
}

/// About how long the verifier takes on a program, in milliseconds
/// (measured with tests/examples/verify_cost.rs; the small ones count 1).
fn verify_cost(name: &str) -> u32 {
    match name {
        VETH_MASQ_PROG => 90,
        VETH_NEW_PROG => 48,
        VETH_PROG => 43,
        UPLINK_NEW_PROG | UPLINK_PROG => 38,
        _ => 1,
    }
}

/// Loads and pins each program of `progs`.
fn load_all(paths: &Paths, progs: Vec<(&str, &mut Program)>) -> Result<()> {
    for (name, prog) in progs {
        let loaded = match prog {
            Program::SchedClassifier(p) => p.load(),
            Program::Xdp(p) => p.load(),
            Program::CgroupSockAddr(p) => p.load(),
            _ => continue,
        };
        loaded.with_context(|| format!("verifier rejected {name}"))?;
        let pin = paths.prog_pin(name);
        let _ = fs::remove_file(&pin);
        prog.pin(&pin)
            .with_context(|| format!("pinning {name} at {}", pin.display()))?;
    }
    Ok(())
}

/// Puts the tail-call targets into the JUMPS program array (pinned with the
/// maps, so it keeps them while no cnet process runs).
pub fn fill_jumps(ebpf: &mut aya::Ebpf) -> Result<()> {
    let mut fds = Vec::new();
    for (slot, name) in [
        (maps::JUMP_FRAG_NEEDED, FRAG_NEEDED_PROG),
        (maps::JUMP_VETH_NEW, VETH_NEW_PROG),
        (maps::JUMP_VETH_MASQ, VETH_MASQ_PROG),
        (maps::JUMP_UPLINK_NEW, UPLINK_NEW_PROG),
    ] {
        let fd = ebpf
            .program(name)
            .with_context(|| format!("no program {name} in the object"))?
            .fd()
            .with_context(|| format!("{name} is not loaded"))?
            .try_clone()
            .context("duplicating a program fd")?;
        fds.push((slot, name, fd));
    }
    let map = ebpf
        .map_mut(maps::JUMPS)
        .with_context(|| format!("no map {} in the object", maps::JUMPS))?;
    let mut jumps = aya::maps::ProgramArray::try_from(map).context("map JUMPS")?;
    for (slot, name, fd) in &fds {
        jumps
            .set(*slot, fd, 0)
            .with_context(|| format!("installing {name} in JUMPS slot {slot}"))?;
    }
    Ok(())
}

/// Attaches the pinned TC program `prog` to `iface`'s ingress and pins the
/// link as `link`. Idempotent: an existing link pin is kept (returns `false`).
pub fn attach_tc(paths: &Paths, prog: &str, iface: &str, link: &str) -> Result<bool> {
    let pin = paths.link_pin(link);
    if pin.exists() {
        return Ok(false);
    }
    let mut p = SchedClassifier::from_pin(paths.prog_pin(prog))
        .with_context(|| format!("opening pinned program {prog}"))?;
    let id = p
        .attach(iface, TcAttachType::Ingress)
        .with_context(|| format!("attaching {prog} to {iface} ingress"))?;
    let l = p
        .take_link(id)
        .with_context(|| format!("taking the {prog} link on {iface}"))?;
    let fd: FdLink = l
        .try_into()
        .with_context(|| format!("{prog} on {iface} is not a tcx link"))?;
    fd.pin(&pin)
        .with_context(|| format!("pinning link {}", pin.display()))?;
    Ok(true)
}

/// Attaches the pinned XDP program to `iface` and pins the link as `link`
/// (idempotent, returns whether it attached).
pub fn attach_xdp(paths: &Paths, iface: &str, link: &str) -> Result<bool> {
    let pin = paths.link_pin(link);
    if pin.exists() {
        return Ok(false);
    }
    let mut p = Xdp::from_pin(
        paths.prog_pin(UPLINK_XDP),
        aya_obj::programs::XdpAttachType::Interface,
    )
    .with_context(|| format!("opening pinned program {UPLINK_XDP}"))?;
    let id = busy_retry(|| p.attach(iface, XdpMode::Default))
        .with_context(|| format!("attaching XDP to {iface}"))?;
    let l = p
        .take_link(id)
        .with_context(|| format!("taking the XDP link on {iface}"))?;
    let fd: FdLink = l
        .try_into()
        .with_context(|| format!("XDP on {iface} is not an fd link"))?;
    fd.pin(&pin)
        .with_context(|| format!("pinning link {}", pin.display()))?;
    Ok(true)
}

/// Retries an attach that found the hook taken (EBUSY/EEXIST) for up to a
/// second: after the pins are wiped (bpffs unmounted by hand), the kernel
/// releases the old links from a work queue, a moment later.
fn busy_retry<T>(
    mut f: impl FnMut() -> Result<T, aya::programs::ProgramError>,
) -> Result<T, aya::programs::ProgramError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match f() {
            Err(e)
                if std::time::Instant::now() < deadline
                    && [libc::EBUSY, libc::EEXIST].iter().any(|c| {
                        let mut src: Option<&dyn std::error::Error> = Some(&e);
                        while let Some(x) = src {
                            if let Some(io) = x.downcast_ref::<std::io::Error>()
                                && io.raw_os_error() == Some(*c)
                            {
                                return true;
                            }
                            src = x.source();
                        }
                        false
                    }) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// Attaches the host-local hooks to the cgroup v2 directory `cgroup`.
pub fn attach_cgroup(paths: &Paths, cgroup: &Path) -> Result<()> {
    let dir =
        fs::File::open(cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
    for (name, attach) in SOCK_PROGS {
        let pin = paths.link_pin(name);
        if pin.exists() {
            continue;
        }
        let mut p = CgroupSockAddr::from_pin(paths.prog_pin(name), *attach)
            .with_context(|| format!("opening pinned program {name}"))?;
        let id = busy_retry(|| p.attach(dir.as_fd(), CgroupAttachMode::Single))
            .with_context(|| format!("attaching {name} to cgroup {}", cgroup.display()))?;
        let l = p
            .take_link(id)
            .with_context(|| format!("taking the {name} link"))?;
        let fd: FdLink = l
            .try_into()
            .with_context(|| format!("{name} is not an fd link"))?;
        fd.pin(&pin)
            .with_context(|| format!("pinning link {}", pin.display()))?;
    }
    Ok(())
}

/// Removes a link pin, which detaches the program (no other reference exists).
pub fn detach(paths: &Paths, link: &str) -> Result<()> {
    let pin = paths.link_pin(link);
    match fs::remove_file(&pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing link pin {}", pin.display())),
    }
}

/// The pinned map `name` of the instance.
pub fn pinned(paths: &Paths, name: &str) -> Result<Map> {
    let data = MapData::from_pin(paths.map_pin(name))
        .with_context(|| format!("opening pinned map {name} (is cnet up?)"))?;
    Map::from_map_data(data).with_context(|| format!("reading map {name}"))
}

/// A typed handle on a pinned hash (or LRU hash) map.
pub fn hash<K: aya::Pod, V: aya::Pod>(paths: &Paths, name: &str) -> Result<HashMap<MapData, K, V>> {
    HashMap::try_from(pinned(paths, name)?).with_context(|| format!("map {name} is not a hash map"))
}

pub fn set_config(paths: &Paths, cfg: Config) -> Result<()> {
    let mut a: Array<MapData, Config> =
        Array::try_from(pinned(paths, maps::CONFIG)?).context("map CONFIG is not an array")?;
    a.set(0, cfg, 0).context("writing CONFIG")
}

/// Sums every named counter over CPUs.
pub fn counters(paths: &Paths) -> Result<Vec<(&'static str, u64)>> {
    let stats: aya::maps::PerCpuArray<MapData, u64> =
        aya::maps::PerCpuArray::try_from(pinned(paths, maps::STATS)?).context("map STATS")?;
    cnet_common::drop::COUNTER_NAMES
        .iter()
        .map(|(slot, name)| {
            Ok((
                *name,
                stats
                    .get(slot, 0)
                    .with_context(|| format!("reading {name}"))?
                    .iter()
                    .sum(),
            ))
        })
        .collect()
}

/// A map deletion, where "no such key" (as `KeyNotFound` or as the raw
/// ENOENT some map types report) means the entry is already gone: fine for
/// every teardown step, which must tolerate what an earlier try removed.
pub fn removed(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}
