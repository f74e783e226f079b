//! The `cnet` command line: argument parsing and dispatch only.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};
use cnet::{
    container::RunOptions,
    ipam::Cidr,
    listfilter::{self, ListFilters},
    show,
    state::{self, Paths},
    up::{self, UpOptions},
};

#[derive(Parser)]
#[command(
    name = "cnet",
    version,
    about = "Docker-style container networking in eBPF, without iptables"
)]
struct Cli {
    /// Directory holding this instance's state, pins and logs.
    #[arg(
        long,
        global = true,
        env = "CNET_ROOT",
        default_value = "/var/lib/cnet"
    )]
    root: PathBuf,
    /// daemon.json with Docker's keys (command-line flags override it).
    #[arg(long, global = true, env = "CNET_CONFIG")]
    config: Option<PathBuf>,
    /// Give up after waiting this many seconds for another cnet command's
    /// lock on the instance (default: wait; a wait over 2 s names the holder).
    #[arg(long, global = true, value_name = "SECS")]
    lock_timeout: Option<f64>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load the dataplane, create the default bridge network, attach the programs.
    Up {
        /// Bridge address and subnet of the default network.
        #[arg(long)]
        bip: Option<Cidr>,
        /// Interface(s) facing the outside world (default: those with a default route).
        #[arg(long = "uplink")]
        uplinks: Vec<String>,
        /// cgroup v2 directory for the host-local hooks (default: the cgroup2 root).
        #[arg(long)]
        cgroup: Option<PathBuf>,
        /// Masquerade container traffic leaving through an uplink (default true).
        #[arg(long = "ip-masq", action = clap::ArgAction::Set)]
        ip_masq: Option<bool>,
        /// Inter-container communication on the default network (changes apply live).
        #[arg(long, action = clap::ArgAction::Set)]
        icc: Option<bool>,
        /// Datapath debug logs, read with `cnet logs --datapath` (`--debug=false`
        /// switches them off; changes apply live).
        #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
        debug: Option<bool>,
    },
    /// Remove everything this instance created.
    Down,
    /// Create a container and run CMD in it.
    #[command(disable_help_flag = true)]
    Run {
        /// Print help (`-h` is --hostname, as in Docker).
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        /// Run in the background and print the container's full id.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Remove the container when its command exits (a foreground run
        /// always does; with -d, the process that waits for the command does).
        #[arg(long)]
        rm: bool,
        /// Set an environment variable for the command: KEY=VALUE, or KEY to
        /// pass cnet's own value (repeatable).
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// Metadata KEY=VALUE shown by inspect (repeatable).
        #[arg(short = 'l', long = "label")]
        labels: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        /// Publish a port: [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO], ranges allowed.
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
        /// Expose a port (published by -P).
        #[arg(long)]
        expose: Vec<String>,
        /// Publish every exposed port to a dynamic host port.
        #[arg(short = 'P', long = "publish-all")]
        publish_all: bool,
        /// Link to another container: NAME[:ALIAS] (resolvable, and allowed under icc=false).
        #[arg(long = "link")]
        links: Vec<String>,
        /// bridge (default), host, none, container:NAME, or a user-defined network.
        #[arg(long = "network", alias = "net")]
        network: Option<String>,
        /// A fixed address on a user-defined network.
        #[arg(long)]
        ip: Option<String>,
        /// The container's hostname (default: the first 12 characters of its id).
        #[arg(short = 'h', long)]
        hostname: Option<String>,
        /// Nameserver for the container (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// A DNS search domain (repeatable).
        #[arg(long = "dns-search")]
        dns_search: Vec<String>,
        /// A resolv.conf option such as ndots:2 (repeatable).
        #[arg(long = "dns-option", alias = "dns-opt")]
        dns_options: Vec<String>,
        /// The container's MAC address on its network (default 02:42 + its IPv4 address).
        #[arg(long = "mac-address")]
        mac_address: Option<String>,
        /// An extra /etc/hosts entry NAME:IP (repeatable).
        #[arg(long = "add-host")]
        add_hosts: Vec<String>,
        /// Another name on a user-defined network (repeatable).
        #[arg(long = "network-alias")]
        aliases: Vec<String>,
        #[arg(required = true, last = true)]
        cmd: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Remove running containers too (their processes are killed).
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List containers.
    Ps {
        /// All containers (default: running ones).
        #[arg(short, long)]
        all: bool,
        /// Short ids only.
        #[arg(short, long)]
        quiet: bool,
        /// A Go-template per container, as Docker's: {{.ID}} {{.Names}}
        /// {{.Ports}} {{.Status}} {{.Command}} {{.CreatedAt}} {{.Networks}} {{json .}}.
        #[arg(long)]
        format: Option<String>,
        /// KEY=VALUE, as Docker's: id, name, label, status, exited, network,
        /// publish, expose, before, since (repeatable; same key ORs, keys AND).
        #[arg(short, long = "filter")]
        filter: Vec<String>,
    },
    /// Stop containers: SIGTERM to the command, SIGKILL to everything in the
    /// container after the grace time. They keep their network until `rm`.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time", alias = "timeout", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run stopped containers' commands again (detached, same network).
    Start {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop, then start.
    Restart {
        #[arg(short = 't', long = "time", alias = "timeout", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Send a signal (default KILL) to containers' commands.
    Kill {
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print a detached container's output.
    Logs {
        /// Keep printing new output until the command exits.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines ("all" for every line).
        #[arg(short = 'n', long)]
        tail: Option<String>,
        /// The datapath's debug log (`cnet up --debug`) instead of a container's output.
        #[arg(long, conflicts_with = "tail")]
        datapath: bool,
        #[arg(required_unless_present = "datapath", conflicts_with = "datapath")]
        name: Option<String>,
    },
    /// Show containers as JSON, in Docker's shape.
    Inspect {
        /// A Go template applied to each object (`{{.NetworkSettings.IPAddress}}`,
        /// `{{json .Config}}`, `{{range ...}}`...), one line each.
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// `port NAME [PRIVATE_PORT[/PROTO]]` lists published ports as `docker port`
    /// does; `port add NAME SPEC` and `port rm NAME SPEC` change them live.
    Port {
        /// With the listing: packets, bytes and connections per published port.
        #[arg(long)]
        stats: bool,
        #[arg(required = true, num_args = 1..=3)]
        args: Vec<String>,
    },
    /// Print the datapath counters (by name), or per container or per published port.
    Stats {
        #[arg(long)]
        json: bool,
        /// `container`: traffic and drops by reason per container; `port`:
        /// traffic and connections per published port.
        #[arg(long, value_parser = ["container", "port"])]
        by: Option<String>,
        /// Refresh in place every --interval seconds with rates per second (Ctrl-C ends it).
        #[arg(long, conflicts_with = "json")]
        watch: bool,
        #[arg(long, default_value_t = 1.0, requires = "watch")]
        interval: f64,
    },
    /// Live datapath events: drops, translated flows opening and closing, filter hits.
    Monitor {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Only events about this container (repeatable).
        #[arg(long)]
        container: Vec<String>,
        /// drop, flow or filter (repeatable; default all).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Only drops of this reason (icc, filter, spoofed, not_published...; repeatable).
        #[arg(long)]
        reason: Vec<String>,
        /// Only events with this port on either side, before or after translation (repeatable).
        #[arg(long)]
        port: Vec<u16>,
        /// Events per second per CPU the datapath may write (default 1000; more are counted as events_suppressed).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Exit after N events.
        #[arg(short = 'n', long, default_value_t = 0)]
        count: u64,
        /// Exit after SECS seconds.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
    },
    /// The datapath's flow table (as `conntrack -L` / `-F`).
    #[command(subcommand)]
    Conntrack(ConntrackCmd),
    /// Allow/drop rules, applied live by XDP (from outside) and TC (from containers).
    #[command(subcommand)]
    Filter(FilterCmd),
    /// User-defined bridge networks, as `docker network`.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Serve the same operations as JSON over HTTP on a unix socket.
    Daemon {
        #[arg(long, default_value = cnet::daemon::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Also serve Docker's remote network and IPAM driver NAME (default
        /// cnet) on /run/docker/plugins/NAME.sock.
        #[arg(long, num_args = 0..=1, default_missing_value = "cnet")]
        docker_plugin: Option<String>,
        /// Also serve Prometheus metrics read-only on http://ADDR/metrics
        /// (e.g. 127.0.0.1:9477); the unix socket has /metrics too.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
}

#[derive(Subcommand)]
enum ConntrackCmd {
    /// List the live flows: tuple, translation, state, expiry, counters.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Delete every flow (established connections re-open only with a new SYN).
    Flush,
}

#[derive(Subcommand)]
enum NetworkCmd {
    /// Create a bridge network.
    Create {
        #[arg(short = 'd', long)]
        driver: Option<String>,
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long = "ip-range")]
        ip_range: Option<String>,
        /// No traffic in or out of the network.
        #[arg(long)]
        internal: bool,
        /// Driver option KEY=VALUE (com.docker.network.bridge.name, ...enable_icc,
        /// ...enable_ip_masquerade, com.docker.network.driver.mtu).
        #[arg(short = 'o', long = "opt")]
        options: Vec<String>,
        /// Metadata KEY[=VALUE] (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Accepted as Docker's (every cnet network can be joined by `cnet run`).
        #[arg(long)]
        attachable: bool,
        /// NAME=IP: an address of the subnet IPAM never gives to a container (repeatable).
        #[arg(long = "aux-address")]
        aux_addresses: Vec<String>,
        name: String,
    },
    /// List networks (the built-in bridge, host and none too).
    Ls {
        /// Ids only.
        #[arg(short, long)]
        quiet: bool,
        /// A Go-template per network: {{.ID}} {{.Name}} {{.Driver}} {{.Scope}} {{json .}}.
        #[arg(long)]
        format: Option<String>,
        /// KEY=VALUE, as Docker's: driver, id, label, name, scope, type
        /// (custom|builtin), dangling (true|false); repeatable.
        #[arg(short, long = "filter")]
        filter: Vec<String>,
    },
    /// Show networks as JSON, in Docker's shape.
    Inspect {
        /// A Go template applied to each object (`{{.NetworkSettings.IPAddress}}`,
        /// `{{json .Config}}`, `{{range ...}}`...), one line each.
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks without containers.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every user-defined network without containers.
    Prune,
    /// Connect a container to a further network (eth1, eth2...).
    Connect {
        #[arg(long)]
        ip: Option<String>,
        #[arg(long = "alias")]
        aliases: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network it was connected to.
    Disconnect {
        /// Drop the interface from cnet's records even if removing it fails
        /// (the failures are printed as warnings).
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
}

fn network_cmd(paths: &Paths, cmd: NetworkCmd) -> Result<()> {
    use cnet::network;
    match cmd {
        NetworkCmd::Create {
            driver,
            subnet,
            gateway,
            ip_range,
            internal,
            options,
            labels,
            attachable,
            aux_addresses,
            name,
        } => {
            let id = network::create(
                paths,
                &network::CreateOptions {
                    name,
                    driver,
                    subnet,
                    gateway,
                    ip_range,
                    internal,
                    options,
                    labels,
                    attachable,
                    aux_addresses,
                },
            )?;
            println!("{id}");
        }
        NetworkCmd::Ls {
            quiet,
            format,
            filter,
        } => {
            let filters = ListFilters::parse(&filter, listfilter::NETWORK_KEYS)?;
            print!(
                "{}",
                network::ls(&state::load_up(paths)?, quiet, format.as_deref(), &filters)?
            )
        }
        NetworkCmd::Inspect { format, names } => {
            let st = state::load_up(paths)?;
            let v: Vec<serde_json::Value> = names
                .iter()
                .map(|n| network::inspect(&st, n))
                .collect::<Result<_>>()?;
            print!("{}", show::objects(&v, format.as_deref())?);
        }
        NetworkCmd::Rm { names } => {
            network::rm(paths, &names)?;
            for n in names {
                println!("{n}");
            }
        }
        NetworkCmd::Prune => {
            for n in network::prune(paths)? {
                println!("{n}");
            }
        }
        NetworkCmd::Connect {
            ip,
            aliases,
            network: net,
            container,
        } => {
            network::connect(paths, &net, &container, ip.as_deref(), &aliases)?;
        }
        NetworkCmd::Disconnect {
            force,
            network: net,
            container,
        } => {
            for w in network::disconnect(paths, &net, &container, force)? {
                eprintln!("WARNING: {w}");
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum FilterCmd {
    /// Add a rule at the end of the list (the first matching rule decides).
    Add {
        /// Source address or CIDR.
        #[arg(long)]
        src: String,
        /// Destination container name or CIDR (default: any).
        #[arg(long)]
        dst: Option<String>,
        /// tcp, udp or icmp (default: any).
        #[arg(long)]
        proto: Option<String>,
        /// Destination port or range PORT-PORT (with --proto tcp|udp).
        #[arg(long)]
        dport: Option<String>,
        /// drop or allow.
        #[arg(long)]
        action: String,
    },
    /// List rules with their packet counters.
    Ls,
    /// Remove a rule by id.
    Rm { id: u32 },
}

/// Set by SIGINT/SIGTERM for the commands that run until stopped (monitor, stats --watch).
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Ctrl-C and SIGTERM end `monitor` and `stats --watch` cleanly (they switch
/// events off and restore the terminal) instead of killing the process.
fn install_stop_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("cnet: {e:#}");
            // Docker's exit codes: 126/127 when the container's command
            // cannot be invoked / is not found, 125 for cnet's own errors.
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<cnet::container::CommandError>())
                .map_or(125, |c| c.code);
            ExitCode::from(code)
        }
    }
}

/// Runs `f` for every name, printing each name that succeeded and each
/// error as Docker does; exit status 1 when some failed.
fn each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> i32 {
    let mut code = 0;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e:#}");
                code = 1;
            }
        }
    }
    code
}

fn dispatch(cli: Cli) -> Result<i32> {
    let mut paths = Paths::new(&cli.root);
    if let Some(t) = cli.lock_timeout {
        anyhow::ensure!(
            t.is_finite() && t >= 0.0,
            "--lock-timeout {t}: expected a number of seconds"
        );
        paths.lock_timeout = Some(std::time::Duration::from_secs_f64(t));
    }
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(cnet::config::DEFAULT_PATH));
    match cli.cmd {
        Cmd::Up {
            bip,
            uplinks,
            cgroup,
            ip_masq,
            icc,
            debug,
        } => {
            up::up(
                &paths,
                &UpOptions {
                    bip,
                    uplinks,
                    cgroup,
                    ip_masq,
                    icc,
                    debug,
                    config: cnet::config::load(&config_path, cli.config.is_some())?,
                },
            )?;
        }
        Cmd::Down => up::down(&paths)?,
        Cmd::Run {
            help: _,
            detach,
            rm,
            env,
            labels,
            name,
            publish,
            expose,
            publish_all,
            links,
            network,
            ip,
            hostname,
            dns,
            dns_search,
            dns_options,
            mac_address,
            add_hosts,
            aliases,
            cmd,
        } => {
            let opts = RunOptions {
                name,
                publish,
                expose,
                publish_all,
                links,
                network,
                ip,
                hostname,
                dns,
                dns_search,
                dns_options,
                mac_address,
                auto_remove: rm,
                add_hosts,
                aliases,
                env,
                labels,
                cmd,
                cni: None,
            };
            return cnet::run(&paths, &opts, detach);
        }
        Cmd::Network(n) => network_cmd(&paths, n)?,
        Cmd::Daemon {
            socket,
            docker_plugin,
            metrics,
        } => {
            if let Some(n) = &docker_plugin {
                cnet::container::validate_name(n)?;
            }
            let plugin = docker_plugin.map(|n| {
                std::path::Path::new(cnet::docker_plugin::PLUGIN_DIR).join(format!("{n}.sock"))
            });
            cnet::daemon::serve_with_plugin(&paths, &socket, plugin.as_deref(), metrics, || {
                eprintln!("cnet daemon: listening on {}", socket.display())
            })?
        }
        Cmd::Stop { time, names } => {
            return Ok(each(&names, |n| {
                cnet::lifecycle::stop(&paths, n, std::time::Duration::from_secs(time))
            }));
        }
        Cmd::Start { names } => return Ok(each(&names, |n| cnet::lifecycle::start(&paths, n))),
        Cmd::Restart { time, names } => {
            return Ok(each(&names, |n| {
                cnet::lifecycle::stop(&paths, n, std::time::Duration::from_secs(time))?;
                cnet::lifecycle::start(&paths, n)
            }));
        }
        Cmd::Kill { signal, names } => {
            let sig = cnet::lifecycle::parse_signal(&signal)?;
            return Ok(each(&names, |n| cnet::lifecycle::kill(&paths, n, sig)));
        }
        Cmd::Logs {
            datapath: true,
            follow,
            ..
        } => cnet::dlog::print(&paths, follow, &mut std::io::stdout().lock())?,
        Cmd::Logs {
            follow, tail, name, ..
        } => {
            // clap requires NAME without --datapath.
            let name = name.unwrap_or_default();
            let tail = match tail.as_deref() {
                None | Some("all") => None,
                Some(t) => Some(
                    t.parse::<usize>()
                        .map_err(|_| anyhow::anyhow!("invalid --tail {t:?}: a number or all"))?,
                ),
            };
            cnet::lifecycle::logs(&paths, &name, tail, follow, &mut std::io::stdout().lock())?;
        }
        Cmd::Rm { force, names } => {
            let mut failed = false;
            for (n, r) in names.iter().zip(cnet::rm_each(&paths, &names, force)?) {
                match r {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("Error response from daemon: {e:#}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(1);
            }
        }
        Cmd::Ps {
            all,
            quiet,
            format,
            filter,
        } => {
            let filters = ListFilters::parse(&filter, listfilter::PS_KEYS)?;
            print!(
                "{}",
                show::ps(
                    &state::load_up(&paths)?,
                    all,
                    quiet,
                    format.as_deref(),
                    &filters
                )?
            )
        }
        Cmd::Inspect { format, names } => {
            // As Docker: the found ones are printed, each missing one is an
            // error on stderr, and the exit status says some were missing.
            let st = state::load_up(&paths)?;
            let mut out = Vec::new();
            let mut missing = 0;
            for n in &names {
                match st.resolve(n) {
                    Ok(name) => out.push(show::inspect(&st, &st.containers[&name])),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        missing += 1;
                    }
                }
            }
            print!("{}", show::objects(&out, format.as_deref())?);
            if missing > 0 {
                return Ok(1);
            }
        }
        Cmd::Port { stats: true, args } => {
            let [name] = args.as_slice() else {
                anyhow::bail!("usage: cnet port --stats NAME");
            };
            let st = state::load_up(&paths)?;
            let name = st.resolve(name)?;
            print!(
                "{}",
                show::port_stats(&cnet::observe::counters::ports(&paths, &st, Some(&name))?)
            );
        }
        Cmd::Port { args, .. } => match args.as_slice() {
            [verb, name, spec] if verb == "add" => {
                for m in cnet::port_add(&paths, name, spec)? {
                    println!("{m}");
                }
            }
            [verb, name, spec] if verb == "rm" => {
                cnet::port_rm(&paths, name, spec)?;
            }
            [name] | [name, _] => {
                let st = state::load_up(&paths)?;
                let c = &st.containers[&st.resolve(name)?];
                print!("{}", show::port(c, args.get(1).map(String::as_str))?);
            }
            _ => anyhow::bail!(
                "usage: cnet port NAME [PRIVATE_PORT[/PROTO]] | port add NAME SPEC | port rm NAME SPEC"
            ),
        },
        Cmd::Stats {
            json: false,
            watch: true,
            by,
            interval,
        } => {
            install_stop_handler();
            show::watch(
                &paths,
                by.as_deref(),
                std::time::Duration::from_secs_f64(interval.max(0.1)),
                &mut std::io::stdout().lock(),
                &STOP,
            )?;
        }
        Cmd::Stats {
            json, by: Some(by), ..
        } => {
            let st = state::load_up(&paths)?;
            let text = if by == "container" {
                let v = cnet::observe::counters::containers(&paths, &st)?;
                if json {
                    serde_json::to_string_pretty(&v)? + "\n"
                } else {
                    show::container_stats(&v)
                }
            } else {
                let v = cnet::observe::counters::ports(&paths, &st, None)?;
                if json {
                    serde_json::to_string_pretty(&v)? + "\n"
                } else {
                    show::port_stats(&v)
                }
            };
            print!("{text}");
        }
        Cmd::Monitor {
            json,
            container,
            types,
            reason,
            port,
            rate,
            count,
            duration,
        } => {
            install_stop_handler();
            if let Some(d) = duration
                && !(d.is_finite() && d > 0.0)
            {
                anyhow::bail!("invalid --duration {d}: a number of seconds above 0");
            }
            let opts = cnet::observe::monitor::MonitorOptions {
                json,
                containers: container,
                types,
                reasons: reason,
                ports: port,
                rate,
                count,
                duration: duration.map(std::time::Duration::from_secs_f64),
            };
            cnet::observe::monitor::run(
                &paths,
                &opts,
                &mut std::io::stdout().lock(),
                &STOP,
                || eprintln!("cnet monitor: listening for events (Ctrl-C ends)"),
            )?;
        }
        Cmd::Stats { json, .. } => {
            let st = state::load_up(&paths)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&show::stats_json(&paths, &st)?)?
                );
            } else {
                for (n, v) in cnet::loader::counters(&paths)? {
                    println!("{n:<24} {v}");
                }
                for (id, v) in cnet::filter::counters(&paths, &st)? {
                    println!("{:<24} {v}", format!("filter_{id}"));
                }
                let u = cnet::observe::counters::usage(&paths)?;
                println!(
                    "{:<24} {} of {}",
                    "conntrack_entries", u.conntrack_entries, u.conntrack_capacity
                );
                for (addr, n) in &u.masquerade_ports_in_use {
                    println!(
                        "{:<24} {n} of {} ({addr})",
                        "masquerade_ports", u.masquerade_port_range
                    );
                }
            }
        }
        Cmd::Filter(FilterCmd::Add {
            src,
            dst,
            proto,
            dport,
            action,
        }) => {
            let id = cnet::filter::add(
                &paths,
                &cnet::filter::FilterSpec {
                    src,
                    dst,
                    proto,
                    dport,
                    action,
                },
            )?;
            println!("{id}");
        }
        Cmd::Filter(FilterCmd::Ls) => print!("{}", cnet::filter::ls(&paths)?),
        Cmd::Conntrack(ConntrackCmd::Ls { json }) => {
            let flows = cnet::conntrack::list(&paths)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&flows)?);
            } else {
                print!("{}", cnet::conntrack::render(&flows));
            }
        }
        Cmd::Conntrack(ConntrackCmd::Flush) => {
            let _lock = cnet::state::Lock::take(&paths)?;
            let n = cnet::conntrack::flush(&paths)?;
            eprintln!("cnet: {n} flow entries deleted");
        }
        Cmd::Filter(FilterCmd::Rm { id }) => cnet::filter::rm(&paths, id)?,
    }
    Ok(0)
}
