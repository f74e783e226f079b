//! The attacks of docs/security.md, repeated with real traffic in throwaway
//! namespaces. Each first shows its probe works on an allowed path (positive
//! control), then that the attack is stopped, silently, with the named drop
//! counter's exact delta. Forged packets use the test's own addresses or the
//! documentation ranges, and never leave the test's namespaces.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::process::Command;

use cnet_tests::{
    cnet::Instance,
    netns::{Netns, addr, unique_name},
    traffic::{Outcome, assert_reply, seen_source, tcp_probe},
};

fn ctr(base: &str) -> String {
    format!("{base}-{}", unique_name())
}

/// Sends one UDP datagram with a raw socket (IP_HDRINCL) from namespace `ns`,
/// source `src:sport` (possibly forged), to `dst:dport`; listens on `sport`
/// for the echo for 2 s. Prints "reply" or "timeout".
const RAW_UDP: &str = r#"
import socket, struct, sys
src, dst, sport, dport, proto = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
payload = b"probe"
if proto == 17:
    l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
else:
    l4 = payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
rx = None
try:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((src, sport))
    rx.settimeout(2)
except OSError:
    rx = None
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + l4, (dst, 0))
if rx is None:
    print("sent")
    sys.exit(0)
try:
    rx.recv(100)
    print("reply")
except socket.timeout:
    print("timeout")
"#;

fn raw(ns: &str, src: &str, dst: &str, sport: u16, dport: u16, proto: u8) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", RAW_UDP, src, dst])
        .arg(sport.to_string())
        .arg(dport.to_string())
        .arg(proto.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "raw send from {ns}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Receives one raw IP packet of protocol `proto` in `ns` within 3 s while
/// `send` runs; returns whether one arrived.
fn raw_received(ns: &str, proto: u8, send: impl FnOnce()) -> bool {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_RAW, {proto})\ns.settimeout(3)\nprint('ready', flush=True)\ntry:\n    s.recv(100)\n    print('got')\nexcept socket.timeout:\n    print('none')\n"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    use std::io::Read;
    out.read_exact(&mut buf).unwrap();
    send();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    child.wait().unwrap();
    rest.contains("got")
}

#[test]
fn spoofed_sources_do_not_bypass_icc() {
    let inst = Instance::up(1, &[]);
    let (c1, c2) = (ctr("c1"), ctr("c2"));
    inst.run_server(&c1, &[], &[80]);
    inst.run_server(&c2, &[], &[80]);
    // Positive control: the raw probe with c1's real source gets c2's echo.
    assert_eq!(raw(&c1, "172.17.0.2", "172.17.0.3", 40000, 80, 17), "reply");
    let cg = inst.cgroup.to_string_lossy().into_owned();
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cg, "--icc=false"]);
    for forged in [
        "172.17.0.1",
        &addr::client(0),
        &addr::host_uplink(0),
        "172.17.0.3",
        "192.0.2.66",
    ] {
        let (r, d) = inst.counted("drop_spoofed", || {
            raw(&c1, forged, "172.17.0.3", 40001, 80, 17)
        });
        assert!(r == "sent" || r == "timeout", "{forged}: {r}");
        assert_eq!(d, 1, "forged source {forged} dropped and counted");
    }
}

#[test]
fn routing_to_container_addresses_is_dropped_unless_the_network_is_routed() {
    let inst = Instance::up(1, &[]);
    let web = ctr("web");
    inst.run_server(&web, &["-p", "8080:80"], &[80, 81]);
    let client = inst.topo.clients[0].name.clone();
    let host = inst.topo.host.name.clone();
    // Positive controls: the published port answers the client; the
    // container's own server answers the host.
    assert_reply(
        tcp_probe(&client, &format!("{}:8080", addr::host_uplink(0)), "x"),
        "published port",
    );
    assert_reply(tcp_probe(&host, "172.17.0.2:81", "x"), "web:81 listens");
    // The LAN host routes the container subnet via the cnet host.
    inst.topo.clients[0].ip(&[
        "route",
        "add",
        "172.17.0.0/16",
        "via",
        &addr::host_uplink(0),
    ]);
    inst.assert_drop("drop_not_published", 2, "routed straight to web:81", || {
        tcp_probe(&client, "172.17.0.2:81", "x")
    });
    inst.assert_drop("drop_not_published", 2, "routed straight to web:80", || {
        tcp_probe(&client, "172.17.0.2:80", "x")
    });
    // A network created with gateway_mode_ipv4=routed opts in.
    let net = ctr("routed");
    inst.ok(&[
        "network",
        "create",
        "--subnet",
        "10.93.0.0/24",
        "-o",
        "com.docker.network.bridge.gateway_mode_ipv4=routed",
        &net,
    ]);
    let r = ctr("r");
    inst.run_server(&r, &["--network", &net], &[80]);
    inst.topo.clients[0].ip(&["route", "add", "10.93.0.0/24", "via", &addr::host_uplink(0)]);
    let reply = assert_reply(tcp_probe(&client, "10.93.0.2:80", "x"), "routed network");
    assert!(reply.starts_with(&addr::client(0)), "no NAT: {reply}");
    let e = inst.fails(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.gateway_mode_ipv4=bogus",
        &ctr("bad"),
    ]);
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn internal_networks_leak_no_protocol() {
    let inst = Instance::up(1, &[]);
    let net = ctr("secret");
    inst.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.94.0.0/24",
        &net,
    ]);
    let (inside, outside) = (ctr("in"), ctr("out"));
    inst.run_server(&inside, &["--network", &net], &[80]);
    inst.run_server(&outside, &[], &[80]);
    let client = inst.topo.clients[0].name.clone();
    for proto in [47u8, 253] {
        // Positive control: from the default network the raw packet reaches
        // the client (masqueraded or not, it arrives).
        let got = raw_received(&client, proto, || {
            raw(&outside, "172.17.0.2", &addr::client(0), 1, 2, proto);
        });
        assert!(
            got,
            "protocol {proto} from the default network reaches the client"
        );
        let (got, d) = inst.counted("drop_internal", || {
            raw_received(&client, proto, || {
                raw(&inside, "10.94.0.2", &addr::client(0), 1, 2, proto);
            })
        });
        assert!(!got, "protocol {proto} leaked out of --internal");
        assert_eq!(d, 1, "protocol {proto}: drop_internal +1");
    }
}

#[test]
fn containers_have_no_ipv6() {
    let inst = Instance::up(1, &[]);
    let c = ctr("c");
    inst.run_server(&c, &[], &[80]);
    let v6 = cnet_tests::netns::ip(&["-n", &c, "-6", "-o", "addr"]);
    assert!(
        v6.lines()
            .all(|l| l.contains(" lo ") && l.contains("::1/128")),
        "only ::1 (or nothing) in the container: {v6}"
    );
    // The host side of its veth has no IPv6 address either.
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(inst.root.join("state.json")).unwrap())
            .unwrap();
    let veth = st["containers"][&c]["veth"].as_str().unwrap().to_string();
    let host6 = inst
        .topo
        .host
        .ip(&["-6", "-o", "addr", "show", "dev", &veth]);
    assert!(host6.trim().is_empty(), "host-side veth: {host6}");
    // And the IPv4 path still works (positive control for the check above).
    assert_reply(
        tcp_probe(&inst.topo.host.name, "172.17.0.2:80", "x"),
        "IPv4 works",
    );
}

/// A client namespace behind a new host interface `dev` (10.21x.0.0/24),
/// added after `cnet up`.
fn second_lan(inst: &Instance, dev: &str, net: u8) -> (Netns, String) {
    let c = Netns::new();
    inst.topo.host.ip(&[
        "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", &c.name,
    ]);
    let host_ip = format!("10.{net}.0.1");
    inst.topo
        .host
        .ip(&["addr", "add", &format!("{host_ip}/24"), "dev", dev]);
    inst.topo.host.ip(&["link", "set", dev, "up"]);
    c.ip(&["addr", "add", &format!("10.{net}.0.2/24"), "dev", "eth0"]);
    c.ip(&["link", "set", "eth0", "up"]);
    c.ip(&["route", "add", "default", "via", &host_ip]);
    (c, host_ip)
}

#[test]
fn published_ports_answer_on_interfaces_added_after_up() {
    let mut inst = Instance::up(1, &[]);
    let web = ctr("web");
    inst.run_server(&web, &["-p", "8080:80"], &[80]);
    let client = inst.topo.clients[0].name.clone();
    assert_reply(
        tcp_probe(&client, &format!("{}:8080", addr::host_uplink(0)), "x"),
        "published on the uplink",
    );
    // A second LAN appears: until cnet looks, the host itself refuses 8080.
    let (lan, host_ip) = second_lan(&inst, "lan1", 210);
    let to = format!("{host_ip}:8080");
    assert_eq!(tcp_probe(&lan.name, &to, "x"), Outcome::Refused);
    // The next command (any mutating one) covers it.
    let other = ctr("other");
    inst.run_server(&other, &[], &[80]);
    let r = assert_reply(tcp_probe(&lan.name, &to, "x"), "published on lan1");
    assert!(
        r.starts_with("10.210.0.2:"),
        "the container sees the real client: {r}"
    );
    // With `cnet daemon` running, a third one is covered without any command.
    let sock = inst.root.join("d.sock");
    let d = inst
        .command(&["daemon", "--socket", &sock.to_string_lossy()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    inst.topo.adopt(d);
    let (lan2, host_ip2) = second_lan(&inst, "lan2", 211);
    let to2 = format!("{host_ip2}:8080");
    // The daemon looks every second: allow it five.
    let mut last = Outcome::Timeout;
    for _ in 0..50 {
        last = tcp_probe(&lan2.name, &to2, "y");
        if last.is_reply() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let r = assert_reply(last, "published on lan2 by the daemon's watcher");
    assert!(r.starts_with("10.211.0.2:"), "{r}");
    drop(lan);
    drop(lan2);
}

#[test]
fn masquerade_never_steals_a_host_sockets_replies() {
    let mut inst = Instance::up(1, &[]);
    let srv = cnet_tests::traffic::echo_server(&inst.topo.clients[0], &[9000]);
    inst.topo.adopt(srv);
    let server = format!("{}:9000", addr::client(0));
    let host_src = format!("{}:40000", addr::host_uplink(0));
    let host = inst.topo.host.name.clone();
    let reserved = || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &host,
                "cat",
                "/proc/sys/net/ipv4/ip_local_reserved_ports",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        reserved().contains("61000-65535"),
        "range reserved: {}",
        reserved()
    );
    // The host talks to the LAN server from port 40000 (positive control).
    let r = cnet_tests::traffic::udp_request(&host, Some(&host_src), &server, "host1").unwrap();
    assert!(r.ends_with("|host1"), "{r}");
    // A container uses the same source port towards the same server.
    let c = ctr("c");
    inst.run_server(&c, &[], &[80]);
    let r = cnet_tests::traffic::udp_request(&c, Some("0.0.0.0:40000"), &server, "ctr").unwrap();
    let peer = r.split('|').next().unwrap();
    let (ip, port) = peer.rsplit_once(':').unwrap();
    assert_eq!(ip, addr::host_uplink(0), "masqueraded");
    let port: u16 = port.parse().unwrap();
    assert!(
        (61000..=65535).contains(&port),
        "from the reserved range: {port}"
    );
    // The host's socket still gets its own replies.
    let r = cnet_tests::traffic::udp_request(&host, Some(&host_src), &server, "host2").unwrap();
    assert!(
        r.ends_with("|host2"),
        "the host's reply reached the host: {r}"
    );
    // `cnet down` gives the range back.
    inst.after_check().unwrap();
    assert!(
        !reserved().contains("61000-65535"),
        "range released: {}",
        reserved()
    );
}

#[test]
fn fragmented_datagrams_cross_dnat_and_masquerade() {
    let mut inst = Instance::up(1, &[]);
    let srv = cnet_tests::traffic::echo_server(&inst.topo.clients[0], &[9000]);
    inst.topo.adopt(srv);
    let dns = ctr("dns");
    inst.run_server(&dns, &["-p", "5353:53/udp"], &[53]);
    let client = inst.topo.clients[0].name.clone();
    let big = "x".repeat(3000);
    // Positive control: a small datagram both ways.
    let to = format!("{}:5353", addr::host_uplink(0));
    let r = cnet_tests::traffic::udp_request(&client, None, &to, "small").unwrap();
    assert!(r.ends_with("small"), "{r}");
    // 3000 bytes over a 1500-byte MTU: fragments in, fragments back.
    let before = inst.stat("fragment_passed");
    let r = cnet_tests::traffic::udp_request(&client, None, &to, &big).unwrap();
    assert!(r.ends_with(&big), "the whole datagram came back");
    assert_eq!(
        seen_source(&r),
        addr::client(0),
        "the container saw the client"
    );
    assert!(inst.stat("fragment_passed") > before, "it was fragmented");
    // And out of a container through masquerade, with the reply fragmented.
    let r =
        cnet_tests::traffic::udp_request(&dns, None, &format!("{}:9000", addr::client(0)), &big)
            .unwrap();
    assert!(r.ends_with(&big));
    assert_eq!(seen_source(&r), addr::host_uplink(0), "masqueraded");
}

#[test]
fn a_containers_traceroute_sees_the_gateway_as_first_hop() {
    let inst = Instance::up(1, &[]);
    let c = ctr("c");
    inst.run_server(&c, &[], &[80]);
    let ping = |ttl: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &c, "ping", "-c1", "-W1", "-t", ttl])
            .arg(addr::client(0))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Positive control: with a normal TTL the client answers.
    assert!(ping("64").contains("1 received"), "{}", ping("64"));
    // TTL 1: the gateway (the host) says "time to live exceeded".
    let out = ping("1");
    assert!(
        out.contains("172.17.0.1") && out.contains("Time to live exceeded"),
        "{out}"
    );
}

#[test]
fn a_filter_on_a_container_port_holds_through_hairpin_and_every_interface() {
    let inst = Instance::up(1, &[]);
    let (web, other) = (ctr("web"), ctr("other"));
    inst.run_server(&web, &["-p", "8080:80"], &[80]);
    inst.run_server(&other, &[], &[80]);
    let via = format!("{}:8080", addr::host_uplink(0));
    // Positive controls: hairpin and a second LAN both reach web:80.
    assert_reply(tcp_probe(&other, &via, "x"), "hairpin before the filter");
    let (lan, host_ip) = second_lan(&inst, "lan1", 212);
    let other2 = ctr("o2");
    inst.run_server(&other2, &[], &[80]); // a mutating command: lan1 is covered
    let via_lan = format!("{host_ip}:8080");
    assert_reply(
        tcp_probe(&lan.name, &via_lan, "x"),
        "lan1 before the filter",
    );
    inst.ok(&[
        "filter",
        "add",
        "--src",
        "0.0.0.0/0",
        "--dst",
        &web,
        "--proto",
        "tcp",
        "--dport",
        "80",
        "--action",
        "drop",
    ]);
    inst.assert_drop(
        "drop_filter",
        2,
        "hairpin through hostIP:8080 to web:80",
        || tcp_probe(&other, &via, "x"),
    );
    inst.assert_drop("drop_filter", 2, "from a LAN without XDP", || {
        tcp_probe(&lan.name, &via_lan, "x")
    });
    drop(lan);
}

#[test]
fn path_mtu_discovery_works_through_masquerade() {
    let inst = Instance::up(1, &[]);
    let c = ctr("c");
    inst.run_server(&c, &[], &[80]);
    let ping = |size: &str| {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &c, "ping", "-c1", "-W1", "-M", "do", "-s", size,
            ])
            .arg(addr::client(0))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    // Positive control: 1500-byte packets go out while the uplink takes them.
    let out = ping("1472");
    assert!(out.contains("1 received"), "{out}");
    // The uplink (host side) shrinks to 1400: the gateway says so, with the MTU.
    inst.topo.host.ip(&["link", "set", "up0", "mtu", "1400"]);
    let (out, d) = inst.counted("frag_needed_sent", || ping("1472"));
    assert!(out.contains("mtu = 1400"), "{out}");
    assert_eq!(
        d,
        1,
        "one answer per too-big packet: {out} {}",
        inst.stats()
    );
    // And the container's next packets fit.
    let out = ping("1372");
    assert!(out.contains("1 received"), "{out}");
}
