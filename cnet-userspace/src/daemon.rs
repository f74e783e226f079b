//! `cnet daemon`: the CLI's operations as JSON over HTTP on a unix socket
//! (default /run/cnet/cnet.sock, mode 0660), usable with `curl
//! --unix-socket`. Served by axum on tokio; every request runs the same
//! library function as the CLI on a blocking thread, under the same
//! instance lock, so CLI and daemon can be mixed.
//!
//! Requests are typed (unknown or mistyped fields are a 400 naming them),
//! bodies are limited to 1 MiB, a client gets 5 s to send its headers and
//! 60 s for the whole exchange, errors map to 404/409/400/500 in one place
//! ([`crate::error::kind`]), and SIGTERM or SIGINT stop the daemon
//! gracefully and remove its socket.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path as UrlPath, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{
    container::RunOptions,
    filter, network, show,
    state::{self, Paths},
};

pub const DEFAULT_SOCKET: &str = "/run/cnet/cnet.sock";
const BODY_LIMIT: usize = 1 << 20;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed request: its status and Docker's `{"message": ...}`.
struct ApiError(StatusCode, String);

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        let status = StatusCode::from_u16(crate::error::kind(&e).status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError(status, json_words(&format!("{e:#}")))
    }
}

/// The library's messages name the CLI flag a value came from (`--ip
/// "x" is not an IPv4 address`); a JSON request names fields instead.
const FLAG_FIELDS: &[(&str, &str)] = &[
    ("--mac-address", "mac_address"),
    ("--network-alias", "aliases"),
    ("--add-host", "add_hosts"),
    ("--dns-search", "dns_search"),
    ("--dns-option", "dns_options"),
    ("--aux-address", "aux_addresses"),
    ("--ip-range", "ip_range"),
    ("--hostname", "hostname"),
    ("--publish", "publish"),
    ("--expose", "expose"),
    ("--subnet", "subnet"),
    ("--gateway", "gateway"),
    ("--network", "network"),
    ("--label", "labels"),
    ("--link", "links"),
    ("--name", "name"),
    ("--dns", "dns"),
    ("--ip", "ip"),
    ("-p", "publish"),
];

fn json_words(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    'outer: while !rest.is_empty() {
        let at_word = out.is_empty() || out.ends_with([' ', '(', '\'', '"', ':']);
        if at_word {
            for (flag, field) in FLAG_FIELDS {
                if let Some(after) = rest.strip_prefix(flag)
                    && !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
                {
                    out.push_str(&format!("field \"{field}\""));
                    rest = after;
                    continue 'outer;
                }
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        reply(self.0, json!({ "message": self.1 }))
    }
}

fn reply(status: StatusCode, v: Value) -> Response {
    let text = serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".into()) + "\n";
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

type Reply = Result<Response, ApiError>;

/// A JSON body of type `T`; serde names the unknown or mistyped field.
fn body<T: DeserializeOwned>(b: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if b.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        b
    };
    serde_json::from_slice(text).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "invalid request body",
            _ => "request body is not valid JSON",
        };
        ApiError(StatusCode::BAD_REQUEST, format!("{what}: {e}"))
    })
}

/// Runs a library operation on a blocking thread (it takes the file lock
/// and talks to the kernel).
async fn blocking<T: Send + 'static>(
    paths: &Arc<Paths>,
    f: impl FnOnce(&Paths) -> Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let p = paths.clone();
    tokio::task::spawn_blocking(move || f(&p))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("request task failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RunRequest {
    name: Option<String>,
    publish: Vec<String>,
    expose: Vec<String>,
    publish_all: bool,
    links: Vec<String>,
    network: Option<String>,
    ip: Option<String>,
    mac_address: Option<String>,
    hostname: Option<String>,
    dns: Vec<String>,
    dns_search: Vec<String>,
    dns_options: Vec<String>,
    add_hosts: Vec<String>,
    aliases: Vec<String>,
    env: Vec<String>,
    labels: Vec<String>,
    auto_remove: bool,
    cmd: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecRequest {
    spec: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct UpRequest {
    bip: Option<String>,
    uplinks: Vec<String>,
    cgroup: Option<PathBuf>,
    ip_masq: Option<bool>,
    icc: Option<bool>,
    debug: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct NetworkRequest {
    name: String,
    driver: Option<String>,
    subnet: Option<String>,
    gateway: Option<String>,
    ip_range: Option<String>,
    internal: bool,
    options: Vec<String>,
    labels: Vec<String>,
    attachable: bool,
    aux_addresses: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ConnectRequest {
    container: String,
    ip: Option<String>,
    aliases: Vec<String>,
    force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterRequest {
    src: String,
    dst: Option<String>,
    proto: Option<String>,
    dport: Option<String>,
    action: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct StopRequest {
    /// Seconds before SIGKILL (default 10).
    time: Option<u64>,
    signal: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ForceQuery {
    force: Option<String>,
}

type S = State<Arc<Paths>>;

async fn list_containers(State(p): S) -> Reply {
    let v = blocking(&p, |p| {
        let st = state::load_up(p)?;
        Ok(st
            .containers
            .values()
            .map(|c| show::inspect(&st, c))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(reply(StatusCode::OK, Value::Array(v)))
}

async fn inspect_container(State(p): S, UrlPath(name): UrlPath<String>) -> Reply {
    let v = blocking(&p, move |p| {
        let st = state::load_up(p)?;
        let n = st.resolve(&name)?;
        Ok(show::inspect(&st, &st.containers[&n]))
    })
    .await?;
    Ok(reply(StatusCode::OK, v))
}

async fn run_container(State(p): S, b: Bytes) -> Reply {
    let r: RunRequest = body(&b)?;
    let opts = RunOptions {
        name: r.name,
        publish: r.publish,
        expose: r.expose,
        publish_all: r.publish_all,
        links: r.links,
        network: r.network,
        ip: r.ip,
        hostname: r.hostname,
        dns: r.dns,
        dns_search: r.dns_search,
        dns_options: r.dns_options,
        mac_address: r.mac_address,
        auto_remove: r.auto_remove,
        add_hosts: r.add_hosts,
        aliases: r.aliases,
        env: r.env,
        labels: r.labels,
        cmd: r.cmd,
        cni: None,
    };
    if opts.cmd.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "field \"cmd\" is required (the command to run)".into(),
        ));
    }
    let (name, id) = blocking(&p, move |p| {
        let (name, mut child) = crate::run_detached(p, &opts)?;
        // The waiter process is the daemon's child: reap it when it ends.
        std::thread::spawn(move || child.wait());
        let id = state::load_up(p)?
            .containers
            .get(&name)
            .map(|c| c.id.clone())
            .unwrap_or_default();
        Ok((name, id))
    })
    .await?;
    Ok(reply(StatusCode::CREATED, json!({"Name": name, "Id": id})))
}

async fn remove_container(
    State(p): S,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<ForceQuery>,
) -> Reply {
    let force = matches!(q.force.as_deref(), Some("1" | "true"));
    let n = name.clone();
    blocking(&p, move |p| crate::rm(p, &[n], force)).await?;
    Ok(reply(StatusCode::OK, json!({"Removed": name})))
}

async fn stop_container(State(p): S, UrlPath(name): UrlPath<String>, b: Bytes) -> Reply {
    let r: StopRequest = body(&b)?;
    let n = name.clone();
    blocking(&p, move |p| {
        crate::lifecycle::stop(p, &n, Duration::from_secs(r.time.unwrap_or(10)))
    })
    .await?;
    Ok(reply(StatusCode::OK, json!({"Stopped": name})))
}

async fn start_container(State(p): S, UrlPath(name): UrlPath<String>) -> Reply {
    let n = name.clone();
    blocking(&p, move |p| crate::lifecycle::start(p, &n)).await?;
    Ok(reply(StatusCode::OK, json!({"Started": name})))
}

async fn kill_container(State(p): S, UrlPath(name): UrlPath<String>, b: Bytes) -> Reply {
    let r: StopRequest = body(&b)?;
    let sig = crate::lifecycle::parse_signal(r.signal.as_deref().unwrap_or("KILL"))?;
    let n = name.clone();
    blocking(&p, move |p| crate::lifecycle::kill(p, &n, sig)).await?;
    Ok(reply(StatusCode::OK, json!({"Killed": name})))
}

async fn list_ports(State(p): S, UrlPath(name): UrlPath<String>) -> Reply {
    let v = blocking(&p, move |p| {
        let st = state::load_up(p)?;
        let n = st.resolve(&name)?;
        Ok(st.containers[&n]
            .ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(reply(StatusCode::OK, json!(v)))
}

async fn add_port(State(p): S, UrlPath(name): UrlPath<String>, b: Bytes) -> Reply {
    let r: SpecRequest = body(&b)?;
    let m = blocking(&p, move |p| crate::port_add(p, &name, &r.spec)).await?;
    let v: Vec<String> = m.iter().map(ToString::to_string).collect();
    Ok(reply(StatusCode::OK, json!(v)))
}

async fn remove_port(State(p): S, UrlPath(name): UrlPath<String>, b: Bytes) -> Reply {
    let r: SpecRequest = body(&b)?;
    let m = blocking(&p, move |p| crate::port_rm(p, &name, &r.spec)).await?;
    let v: Vec<String> = m.iter().map(ToString::to_string).collect();
    Ok(reply(StatusCode::OK, json!(v)))
}

async fn list_networks(State(p): S) -> Reply {
    let v = blocking(&p, |p| {
        let st = state::load_up(p)?;
        network::BUILTIN
            .iter()
            .map(|s| s.to_string())
            .chain(st.networks.keys().cloned())
            .map(|n| network::inspect(&st, &n))
            .collect::<Result<Vec<_>>>()
    })
    .await?;
    Ok(reply(StatusCode::OK, Value::Array(v)))
}

async fn inspect_network(State(p): S, UrlPath(name): UrlPath<String>) -> Reply {
    let v = blocking(&p, move |p| network::inspect(&state::load_up(p)?, &name)).await?;
    Ok(reply(StatusCode::OK, v))
}

async fn create_network(State(p): S, b: Bytes) -> Reply {
    let r: NetworkRequest = body(&b)?;
    if r.name.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "field \"name\" is required".into(),
        ));
    }
    let o = network::CreateOptions {
        name: r.name,
        driver: r.driver,
        subnet: r.subnet,
        gateway: r.gateway,
        ip_range: r.ip_range,
        internal: r.internal,
        options: r.options,
        labels: r.labels,
        attachable: r.attachable,
        aux_addresses: r.aux_addresses,
    };
    let id = blocking(&p, move |p| network::create(p, &o)).await?;
    Ok(reply(StatusCode::CREATED, json!({"Id": id})))
}

async fn remove_network(State(p): S, UrlPath(name): UrlPath<String>) -> Reply {
    let n = name.clone();
    blocking(&p, move |p| network::rm(p, &[n])).await?;
    Ok(reply(StatusCode::OK, json!({"Removed": name})))
}

async fn prune_networks(State(p): S) -> Reply {
    let gone = blocking(&p, network::prune).await?;
    Ok(reply(StatusCode::OK, json!({"NetworksDeleted": gone})))
}

async fn connect_network(State(p): S, UrlPath(name): UrlPath<String>, b: Bytes) -> Reply {
    let r: ConnectRequest = body(&b)?;
    let a = blocking(&p, move |p| {
        network::connect(p, &name, &r.container, r.ip.as_deref(), &r.aliases)
    })
    .await?;
    Ok(reply(
        StatusCode::OK,
        json!({"Interface": a.ifname, "IPAddress": a.ip.to_string(), "MacAddress": a.mac}),
    ))
}

async fn disconnect_network(State(p): S, UrlPath(name): UrlPath<String>, b: Bytes) -> Reply {
    let r: ConnectRequest = body(&b)?;
    let warnings = blocking(&p, move |p| {
        network::disconnect(p, &name, &r.container, r.force)
    })
    .await?;
    Ok(reply(StatusCode::OK, json!({"Warnings": warnings})))
}

async fn list_filters(State(p): S) -> Reply {
    let v = blocking(&p, |p| {
        Ok(serde_json::to_value(&state::load_up(p)?.filters)?)
    })
    .await?;
    Ok(reply(StatusCode::OK, v))
}

async fn add_filter(State(p): S, b: Bytes) -> Reply {
    let r: FilterRequest = body(&b)?;
    let spec = filter::FilterSpec {
        src: r.src,
        dst: r.dst,
        proto: r.proto,
        dport: r.dport,
        action: r.action,
    };
    let id = blocking(&p, move |p| filter::add(p, &spec)).await?;
    Ok(reply(StatusCode::CREATED, json!({"Id": id})))
}

async fn remove_filter(State(p): S, UrlPath(id): UrlPath<String>) -> Reply {
    let id: u32 = id
        .parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("invalid filter id {id:?}")))?;
    blocking(&p, move |p| filter::rm(p, id)).await?;
    Ok(reply(StatusCode::OK, json!({"Removed": id})))
}

/// Prometheus metrics: the classic text format, or OpenMetrics when the
/// scraper's Accept header asks for it.
async fn metrics(State(p): S, headers: axum::http::HeaderMap) -> Reply {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (body, ctype) = blocking(&p, move |p| {
        crate::observe::metrics::render(p, &state::load_up(p)?, accept.as_deref())
    })
    .await?;
    Ok(([(axum::http::header::CONTENT_TYPE, ctype)], body).into_response())
}

/// The read-only router of `--metrics ADDR`: `/metrics` and nothing else.
fn metrics_router(paths: Arc<Paths>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(paths)
}

async fn stats(State(p): S) -> Reply {
    let v = blocking(&p, |p| show::stats_json(p, &state::load_up(p)?)).await?;
    Ok(reply(StatusCode::OK, v))
}

/// `cnet up` on the running instance (options as its flags; daemon.json is
/// read when the instance first came up): icc, masquerade, uplinks and the
/// datapath debug logs change live.
async fn up(State(p): S, b: Bytes) -> Reply {
    let r: UpRequest = if b.is_empty() {
        UpRequest::default()
    } else {
        body(&b)?
    };
    let bip = r
        .bip
        .map(|b| {
            b.parse::<crate::ipam::Cidr>().map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("field \"bip\": invalid value {b:?}: {e:#}"),
                )
            })
        })
        .transpose()?;
    let o = crate::up::UpOptions {
        bip,
        uplinks: r.uplinks,
        cgroup: r.cgroup,
        ip_masq: r.ip_masq,
        icc: r.icc,
        debug: r.debug,
        config: Default::default(),
    };
    blocking(&p, move |p| crate::up::up(p, &o)).await?;
    Ok(reply(StatusCode::OK, json!({"Up": true})))
}

async fn down(State(p): S) -> Reply {
    blocking(&p, crate::up::down).await?;
    Ok(reply(StatusCode::OK, json!({"Down": true})))
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
    .into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not supported on {}", uri.path()),
    )
    .into_response()
}

/// The routes, one per CLI operation.
fn router(paths: Arc<Paths>) -> Router {
    Router::new()
        .route("/containers", get(list_containers).post(run_container))
        .route(
            "/containers/{name}",
            get(inspect_container).delete(remove_container),
        )
        .route("/containers/{name}/stop", post(stop_container))
        .route("/containers/{name}/start", post(start_container))
        .route("/containers/{name}/kill", post(kill_container))
        .route("/containers/{name}/ports", get(list_ports).post(add_port))
        .route("/containers/{name}/ports/rm", post(remove_port))
        .route("/networks", get(list_networks).post(create_network))
        .route("/networks/prune", post(prune_networks))
        .route(
            "/networks/{name}",
            get(inspect_network).delete(remove_network),
        )
        .route("/networks/{name}/connect", post(connect_network))
        .route("/networks/{name}/disconnect", post(disconnect_network))
        .route("/filters", get(list_filters).post(add_filter))
        .route("/filters/{id}", delete(remove_filter))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/up", post(up))
        .route("/down", post(down))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .merge(crate::docker_plugin::routes())
        .with_state(paths)
}

/// Binds `socket` (replacing a stale one), mode 0660.
fn bind(socket: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", socket.display())),
    }
    let l = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", socket.display()))?;
    Ok(l)
}

/// Serves until SIGTERM or SIGINT, then removes the socket. `ready` is
/// called once the socket accepts connections.
pub fn serve(paths: &Paths, socket: &Path, ready: impl FnOnce()) -> Result<()> {
    serve_with_plugin(paths, socket, None, None, ready)
}

/// [`serve`], and with `plugin` also Docker's remote network and IPAM
/// driver on that socket (`/run/docker/plugins/NAME.sock`).
pub fn serve_with_plugin(
    paths: &Paths,
    socket: &Path,
    plugin: Option<&Path>,
    metrics: Option<std::net::SocketAddr>,
    ready: impl FnOnce(),
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the daemon's runtime")?;
    rt.block_on(serve_async(
        Arc::new(paths.clone()),
        socket.to_path_buf(),
        plugin.map(Path::to_path_buf),
        metrics,
        ready,
    ))
}

async fn serve_async(
    paths: Arc<Paths>,
    socket: PathBuf,
    plugin: Option<PathBuf>,
    metrics: Option<std::net::SocketAddr>,
    ready: impl FnOnce(),
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let listener = bind(&socket)?;
    let plugin_listener = match &plugin {
        Some(p) => {
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            }
            Some(bind(p)?)
        }
        None => None,
    };
    let metrics_task = match metrics {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics address {addr}"))?;
            let app = metrics_router(paths.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    log::warn!("metrics endpoint: {e}");
                }
            }))
        }
        None => None,
    };
    let app = router(paths.clone());
    // Interfaces that appear later publish the ports too: look every second.
    let watch = paths.clone();
    let watcher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let p = watch.clone();
            let r = tokio::task::spawn_blocking(move || {
                crate::state::Lock::take(&p).and_then(|_lock| match crate::state::load(&p)? {
                    Some(st) => crate::up::sync_interfaces(&p, &st),
                    None => Ok(()),
                })
            })
            .await;
            if let Ok(Err(e)) = r {
                log::warn!("watching interfaces: {e:#}");
            }
        }
    });
    ready();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            accepted = async {
                match &plugin_listener {
                    Some(l) => tokio::select! {
                        a = listener.accept() => a,
                        a = l.accept() => a,
                    },
                    None => listener.accept().await,
                }
            } => {
                let Ok((stream, _)) = accepted else { continue };
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                    // A slow client is cut off; the daemon keeps serving.
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Graceful: no new connections; requests under way get a moment to end.
    drop(listener);
    drop(plugin_listener);
    let _ = std::fs::remove_file(&socket);
    if let Some(p) = &plugin {
        let _ = std::fs::remove_file(p);
    }
    watcher.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::json_words;

    #[test]
    fn flags_become_json_fields() {
        assert_eq!(
            json_words("--ip \"x\" is not an IPv4 address"),
            "field \"ip\" \"x\" is not an IPv4 address"
        );
        assert_eq!(
            json_words("--ip-range 10.0.0.0/8 is outside --subnet 10.1.0.0/16"),
            "field \"ip_range\" 10.0.0.0/8 is outside field \"subnet\" 10.1.0.0/16"
        );
        assert_eq!(json_words("no --iptables here"), "no --iptables here");
        assert_eq!(
            json_words("Bind for 0.0.0.0:8080 failed"),
            "Bind for 0.0.0.0:8080 failed"
        );
    }
}
