//! Docker's remote network and IPAM driver (libnetwork's plugin protocol:
//! JSON over HTTP on `/run/docker/plugins/NAME.sock`), served by `cnet
//! daemon --docker-plugin NAME`. Docker's networks become cnet networks
//! (`dk-<network id>`), its endpoints cnet containers (`dk-<endpoint id>`)
//! whose sandbox is Docker's, and `-p` bindings cnet published ports.
use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex, OnceLock},
};

use anyhow::{Context, Result, bail};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

use crate::{
    container::RunOptions,
    ipam::Cidr,
    state::{self, CniAttachment, Paths},
};

/// Where Docker looks for plugin sockets.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

/// Endpoints Docker created and has not joined yet, and addresses handed
/// out but not yet used: kept in memory (Docker recreates both after a
/// restart of either side).
#[derive(Default)]
struct Pending {
    endpoints: HashMap<String, (String, Ipv4Addr, String)>,
    reserved: Vec<Ipv4Addr>,
    /// Pools picked for `docker network create` without `--subnet`.
    pools: Vec<Cidr>,
}

fn pending() -> &'static Mutex<Pending> {
    static P: OnceLock<Mutex<Pending>> = OnceLock::new();
    P.get_or_init(Mutex::default)
}

type S = State<Arc<Paths>>;

/// Docker's plugin content type; failures are `{"Err": reason}`.
fn answer(r: Result<Value>) -> Response {
    let (status, v) = match r {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"Err": format!("{e:#}")}),
        ),
    };
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/vnd.docker.plugins.v1+json",
        )],
        v.to_string(),
    )
        .into_response()
}

async fn blocking(p: Arc<Paths>, body: Bytes, f: fn(&Paths, &Value) -> Result<Value>) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) if body.is_empty() => Value::Null,
        Err(e) => return answer(Err(anyhow::anyhow!("request is not JSON: {e}"))),
    };
    let r = tokio::task::spawn_blocking(move || f(&p, &v))
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("plugin task failed: {e}")));
    answer(r)
}

macro_rules! route {
    ($f:ident) => {
        post(|State(p): S, b: Bytes| async move { blocking(p, b, $f).await })
    };
}

/// The plugin's routes (merged into the daemon's router).
pub fn routes() -> Router<Arc<Paths>> {
    Router::new()
        .route("/Plugin.Activate", route!(activate))
        .route("/NetworkDriver.GetCapabilities", route!(net_caps))
        .route("/NetworkDriver.CreateNetwork", route!(create_network))
        .route("/NetworkDriver.DeleteNetwork", route!(delete_network))
        .route("/NetworkDriver.CreateEndpoint", route!(create_endpoint))
        .route("/NetworkDriver.DeleteEndpoint", route!(delete_endpoint))
        .route("/NetworkDriver.EndpointOperInfo", route!(oper_info))
        .route("/NetworkDriver.Join", route!(join))
        .route("/NetworkDriver.Leave", route!(leave))
        .route(
            "/NetworkDriver.ProgramExternalConnectivity",
            route!(program),
        )
        .route("/NetworkDriver.RevokeExternalConnectivity", route!(revoke))
        .route("/NetworkDriver.DiscoverNew", route!(empty))
        .route("/NetworkDriver.DiscoverDelete", route!(empty))
        .route("/IpamDriver.GetCapabilities", route!(ipam_caps))
        .route("/IpamDriver.GetDefaultAddressSpaces", route!(spaces))
        .route("/IpamDriver.RequestPool", route!(request_pool))
        .route("/IpamDriver.ReleasePool", route!(release_pool))
        .route("/IpamDriver.RequestAddress", route!(request_address))
        .route("/IpamDriver.ReleaseAddress", route!(release_address))
}

fn activate(_: &Paths, _: &Value) -> Result<Value> {
    Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]}))
}

fn net_caps(_: &Paths, _: &Value) -> Result<Value> {
    Ok(json!({"Scope": "local", "ConnectivityScope": "local"}))
}

fn ipam_caps(_: &Paths, _: &Value) -> Result<Value> {
    Ok(json!({"RequiresMACAddress": false}))
}

fn spaces(_: &Paths, _: &Value) -> Result<Value> {
    Ok(json!({"LocalDefaultAddressSpace": "cnet", "GlobalDefaultAddressSpace": "cnet-global"}))
}

fn empty(_: &Paths, _: &Value) -> Result<Value> {
    Ok(json!({}))
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn net_name(network_id: &str) -> String {
    format!("dk-{}", short(network_id))
}

fn request_pool(paths: &Paths, v: &Value) -> Result<Value> {
    if v["V6"].as_bool() == Some(true) {
        bail!("cnet's IPAM is IPv4 only");
    }
    let pool = s(v, "Pool");
    let c: Cidr = if pool.is_empty() {
        // No --subnet: the next free one from cnet's address pools.
        let st = state::load_up(paths)?;
        let mut p = pending()
            .lock()
            .map_err(|_| anyhow::anyhow!("plugin state poisoned"))?;
        let c = crate::network::free_subnet(&st, &p.pools)?;
        p.pools.push(c);
        c
    } else {
        pool.parse().with_context(|| format!("pool {pool:?}"))?
    };
    let pool = format!("{}/{}", c.network(), c.prefix);
    Ok(json!({"PoolID": pool, "Pool": pool, "Data": {}}))
}

fn request_address(paths: &Paths, v: &Value) -> Result<Value> {
    let pool: Cidr = s(v, "PoolID")
        .parse()
        .with_context(|| format!("PoolID {:?}", s(v, "PoolID")))?;
    let gateway = v["Options"]["RequestAddressType"] == "com.docker.network.gateway";
    let requested = s(v, "Address");
    let ip: Ipv4Addr = if !requested.is_empty() {
        requested
            .parse()
            .with_context(|| format!("Address {requested:?}"))?
    } else if gateway {
        Ipv4Addr::from(u32::from(pool.network()) + 1)
    } else {
        let st = state::load_up(paths)?;
        let mut used: Vec<Ipv4Addr> = st
            .networks
            .values()
            .filter(|n| n.subnet.network() == pool.network() && n.subnet.prefix == pool.prefix)
            .flat_map(|n| st.taken_ips(&n.name).into_iter().chain([n.subnet.addr]))
            .collect();
        let mut p = pending()
            .lock()
            .map_err(|_| anyhow::anyhow!("plugin state poisoned"))?;
        used.extend(p.reserved.iter().copied());
        used.push(Ipv4Addr::from(u32::from(pool.network()) + 1));
        let gw_pool = Cidr {
            addr: Ipv4Addr::from(u32::from(pool.network()) + 1),
            prefix: pool.prefix,
        };
        let ip = crate::ipam::allocate_in(gw_pool, None, &used)?;
        p.reserved.push(ip);
        ip
    };
    Ok(json!({"Address": format!("{ip}/{}", pool.prefix), "Data": {}}))
}

fn release_pool(_: &Paths, v: &Value) -> Result<Value> {
    if let Ok(c) = s(v, "PoolID").parse::<Cidr>()
        && let Ok(mut p) = pending().lock()
    {
        p.pools
            .retain(|r| r.network() != c.network() || r.prefix != c.prefix);
    }
    Ok(json!({}))
}

fn release_address(_: &Paths, v: &Value) -> Result<Value> {
    if let Ok(ip) = s(v, "Address").parse::<Ipv4Addr>()
        && let Ok(mut p) = pending().lock()
    {
        p.reserved.retain(|r| *r != ip);
    }
    Ok(json!({}))
}

fn create_network(paths: &Paths, v: &Value) -> Result<Value> {
    let id = s(v, "NetworkID");
    let data = &v["IPv4Data"][0];
    let pool = s(data, "Pool");
    let gateway = s(data, "Gateway").split('/').next().unwrap_or_default();
    let generic = &v["Options"]["com.docker.network.generic"];
    let mut options = Vec::new();
    if let Some(m) = generic.as_object() {
        for (k, val) in m {
            let val = val
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| val.to_string());
            options.push(format!("{k}={val}"));
        }
    }
    let internal = v["Options"]["com.docker.network.internal"].as_bool() == Some(true)
        || generic["com.docker.network.internal"] == "true";
    options.retain(|o| !o.starts_with("com.docker.network.internal="));
    let o = crate::network::CreateOptions {
        name: net_name(id),
        subnet: (!pool.is_empty()).then(|| pool.to_string()),
        gateway: (!gateway.is_empty()).then(|| gateway.to_string()),
        internal,
        options,
        labels: vec![format!("io.cnet.docker.network={id}")],
        ..Default::default()
    };
    crate::network::create(paths, &o)?;
    Ok(json!({}))
}

fn delete_network(paths: &Paths, v: &Value) -> Result<Value> {
    let name = net_name(s(v, "NetworkID"));
    if state::load_up(paths)?.networks.contains_key(&name) {
        crate::network::rm(paths, std::slice::from_ref(&name))?;
    }
    Ok(json!({}))
}

fn create_endpoint(_: &Paths, v: &Value) -> Result<Value> {
    let id = s(v, "EndpointID").to_string();
    let addr = s(&v["Interface"], "Address");
    let ip: Ipv4Addr = addr
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("Interface.Address {addr:?}"))?;
    let given_mac = s(&v["Interface"], "MacAddress").to_string();
    let mac = if given_mac.is_empty() {
        crate::ipam::mac_string(crate::ipam::mac_for(ip))
    } else {
        given_mac.clone()
    };
    let mut p = pending()
        .lock()
        .map_err(|_| anyhow::anyhow!("plugin state poisoned"))?;
    p.reserved.retain(|r| *r != ip);
    p.endpoints
        .insert(id, (s(v, "NetworkID").to_string(), ip, mac.clone()));
    Ok(if given_mac.is_empty() {
        json!({"Interface": {"MacAddress": mac}})
    } else {
        json!({"Interface": {}})
    })
}

fn container_of(st: &state::State, endpoint_id: &str) -> Option<String> {
    st.containers
        .values()
        .find(|c| {
            c.cni
                .as_ref()
                .is_some_and(|a| a.container_id == endpoint_id)
        })
        .map(|c| c.name.clone())
}

fn join(paths: &Paths, v: &Value) -> Result<Value> {
    let id = s(v, "EndpointID");
    let sandbox = s(v, "SandboxKey");
    let (network_id, ip, mac) = pending()
        .lock()
        .map_err(|_| anyhow::anyhow!("plugin state poisoned"))?
        .endpoints
        .get(id)
        .cloned()
        .with_context(|| format!("endpoint {id} was never created"))?;
    let peer = format!("dkp{}", &id[..id.len().min(8)]);
    let name = format!("dk-{}", short(id));
    let network = net_name(&network_id);
    let (_lock, mut st) = crate::open(paths)?;
    let view = st
        .net(&network)
        .with_context(|| format!("network {network} (Docker's {network_id}) not found"))?;
    let opts = RunOptions {
        name: Some(name.clone()),
        network: Some(network.clone()),
        ip: Some(ip.to_string()),
        mac_address: Some(mac),
        labels: vec![
            "io.cnet.runtime=docker".into(),
            format!("io.cnet.docker.endpoint={id}"),
        ],
        cni: Some(CniAttachment {
            container_id: id.to_string(),
            netns: sandbox.to_string(),
            ifname: "eth0".into(),
            network: format!("docker:{network_id}"),
            handoff: Some(peer.clone()),
        }),
        ..Default::default()
    };
    let planned = crate::container::plan(&st, &opts)?;
    crate::create_attached(paths, &mut st, planned)?;
    Ok(json!({
        "InterfaceName": {"SrcName": peer, "DstPrefix": "eth"},
        "Gateway": view.gateway.to_string(),
    }))
}

fn leave(paths: &Paths, v: &Value) -> Result<Value> {
    let (_lock, mut st) = crate::open(paths)?;
    if let Some(name) = container_of(&st, s(v, "EndpointID")) {
        crate::container::teardown(paths, &mut st, &name)?;
        state::save(paths, &st)?;
    }
    Ok(json!({}))
}

fn delete_endpoint(paths: &Paths, v: &Value) -> Result<Value> {
    if let Ok(mut p) = pending().lock() {
        p.endpoints.remove(s(v, "EndpointID"));
    }
    leave(paths, v)
}

fn program(paths: &Paths, v: &Value) -> Result<Value> {
    let st = state::load_up(paths)?;
    let name = container_of(&st, s(v, "EndpointID"))
        .with_context(|| format!("endpoint {} has not joined", s(v, "EndpointID")))?;
    drop(st);
    for b in v["Options"]["com.docker.network.portmap"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let proto = match b["Proto"].as_u64() {
            Some(17) => "udp",
            _ => "tcp",
        };
        let port = b["Port"].as_u64().unwrap_or(0);
        let host_ip = s(b, "HostIP");
        let ip = if host_ip.is_empty() || host_ip == "0.0.0.0" {
            String::new()
        } else {
            format!("{host_ip}:")
        };
        let (hp, end) = (
            b["HostPort"].as_u64().unwrap_or(0),
            b["HostPortEnd"].as_u64().unwrap_or(0),
        );
        let spec = match (hp, end) {
            (0, _) => format!("{ip}:{port}/{proto}"),
            (h, e) if e > h => format!("{ip}{h}-{e}:{port}/{proto}"),
            (h, _) => format!("{ip}{h}:{port}/{proto}"),
        };
        let spec = spec.trim_start_matches(':').to_string();
        crate::port_add(paths, &name, &spec)?;
    }
    Ok(json!({}))
}

fn revoke(paths: &Paths, v: &Value) -> Result<Value> {
    let st = state::load_up(paths)?;
    let Some(name) = container_of(&st, s(v, "EndpointID")) else {
        return Ok(json!({}));
    };
    let ports = st.containers[&name].ports.clone();
    drop(st);
    for m in ports {
        let spec = format!("{}:{}/{}", m.host_port, m.container_port, m.proto);
        crate::port_rm(paths, &name, &spec)?;
    }
    Ok(json!({}))
}

fn oper_info(paths: &Paths, v: &Value) -> Result<Value> {
    let st = state::load_up(paths)?;
    let Some(name) = container_of(&st, s(v, "EndpointID")) else {
        return Ok(json!({"Value": {}}));
    };
    let c = &st.containers[&name];
    let map: Vec<Value> = c
        .ports
        .iter()
        .map(|m| {
            json!({
                "Proto": m.proto.number(),
                "IP": c.ip.to_string(),
                "Port": m.container_port,
                "HostIP": m.host_ip_str(),
                "HostPort": m.host_port,
                "HostPortEnd": m.host_port,
            })
        })
        .collect();
    Ok(
        json!({"Value": {"com.docker.network.portmap": map, "com.docker.network.endpoint.macaddress": c.mac}}),
    )
}
