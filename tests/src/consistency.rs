//! Checks that every trace of an instance (namespaces, veths, bridges, map
//! entries, hosts files) agrees with its state file: used after crashes and
//! random kills.
use std::collections::BTreeSet;

use cnet_common::maps::{self, Endpoint, Filter, PortKey, PortValue};

use crate::cnet::Instance;

/// The instance's state as JSON: state.json with each container's ports
/// from the ports log.
pub fn state(inst: &Instance) -> serde_json::Value {
    let st = cnet::state::load(&cnet::state::Paths::new(&inst.root))
        .unwrap()
        .expect("the instance has a state");
    let mut v = serde_json::to_value(&st).unwrap();
    for (name, c) in &st.containers {
        v["containers"][name]["ports"] = serde_json::to_value(&c.ports).unwrap();
    }
    v
}

pub fn hash_len<K: aya::Pod, V: aya::Pod>(inst: &Instance, name: &str) -> usize {
    let data = aya::maps::MapData::from_pin(inst.map_pin(name)).unwrap();
    let map = aya::maps::Map::from_map_data(data).unwrap();
    aya::maps::HashMap::<_, K, V>::try_from(map)
        .unwrap()
        .keys()
        .count()
}

pub fn filters_used(inst: &Instance) -> Vec<u32> {
    let data = aya::maps::MapData::from_pin(inst.map_pin(maps::FILTER_SET)).unwrap();
    let set =
        aya::maps::Array::<_, u32>::try_from(aya::maps::Map::from_map_data(data).unwrap()).unwrap();
    let base = set.get(&0, 0).unwrap() * maps::FILTERS_MAX;
    let data = aya::maps::MapData::from_pin(inst.map_pin(maps::FILTERS)).unwrap();
    let map = aya::maps::Map::from_map_data(data).unwrap();
    let arr = aya::maps::Array::<_, Filter>::try_from(map).unwrap();
    let mut ids = Vec::new();
    for i in base..base + maps::FILTERS_MAX {
        let f = arr.get(&i, 0).unwrap();
        let b: &[u8] = bytemuck::bytes_of(&f);
        // `used` (offset 22) ends the list; `id` is at offset 24.
        if b[22] == 0 {
            break;
        }
        ids.push(u32::from_ne_bytes(b[24..28].try_into().unwrap()));
    }
    ids
}

/// Every trace of the instance matches its state file.
pub fn assert_consistent(inst: &Instance, point: &str, victims: &[String]) {
    let st = state(inst);
    assert!(
        st["pending"].as_array().is_none_or(Vec::is_empty),
        "{point}: pending changes left: {}",
        st["pending"]
    );
    let mut veths = BTreeSet::new();
    let (mut ifaces, mut ports) = (0, 0);
    let containers = st["containers"].as_object().unwrap();
    for (name, c) in containers {
        assert_eq!(c["phase"], "ready", "{point}: container {name}");
        assert!(
            std::path::Path::new("/run/netns").join(name).exists(),
            "{point}: container {name} lost its namespace"
        );
        veths.insert(c["veth"].as_str().unwrap().to_string());
        ifaces += 1;
        ports += c["ports"].as_array().unwrap().len();
        for a in c["extra"].as_array().unwrap() {
            assert_eq!(a["phase"], "ready", "{point}: {name} on {}", a["network"]);
            veths.insert(a["veth"].as_str().unwrap().to_string());
            ifaces += 1;
        }
    }
    for v in victims.iter().filter(|v| !containers.contains_key(*v)) {
        assert!(
            !std::path::Path::new("/run/netns").join(v).exists(),
            "{point}: namespace {v} leaked"
        );
        assert!(
            !std::path::Path::new("/etc/netns").join(v).exists(),
            "{point}: /etc/netns/{v} leaked"
        );
    }
    let networks = st["networks"].as_object().unwrap();
    for (n, v) in networks {
        assert_eq!(v["phase"], "ready", "{point}: network {n}");
    }
    let links = inst.topo.host.ip(&["-o", "link", "show"]);
    let mut host_veths = BTreeSet::new();
    let mut bridges = 0;
    for l in links.lines() {
        let dev = l.split(':').nth(1).unwrap().trim();
        let dev = dev.split('@').next().unwrap().to_string();
        if dev.starts_with("veth") {
            host_veths.insert(dev);
        } else if dev.starts_with("br-") {
            bridges += 1;
        }
    }
    assert_eq!(host_veths, veths, "{point}: veths on the host vs state");
    assert_eq!(bridges, networks.len(), "{point}: one bridge per network");
    assert_eq!(
        hash_len::<u32, Endpoint>(inst, maps::ENDPOINTS),
        ifaces,
        "{point}: one ENDPOINTS entry per interface"
    );
    assert_eq!(
        hash_len::<PortKey, PortValue>(inst, maps::PORTS),
        ports,
        "{point}: one PORTS entry per published port"
    );
    let ids: Vec<u32> = st["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(filters_used(inst), ids, "{point}: FILTERS map vs state");
}
