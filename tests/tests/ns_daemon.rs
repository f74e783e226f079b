//! `cnet daemon`: the CLI's operations as JSON over a unix socket, driven
//! with curl --unix-socket, with real traffic to what it creates.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::{os::unix::fs::PermissionsExt, process::Command, time::Duration};

use cnet_tests::{
    cnet::{Instance, cnet_bin},
    netns::{addr, unique_name},
    traffic::{retry, seen_source, tcp_request, testsrv},
};

/// (status, body) of a curl request on the socket.
fn curl(sock: &str, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--unix-socket",
        sock,
        "-X",
        method,
    ]);
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    c.arg(format!("http://cnet{path}"));
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (json, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn daemon_serves_the_same_operations_over_a_unix_socket() {
    let mut inst = Instance::up(1, &[]);
    let sock = inst.root.join("cnet.sock").to_string_lossy().into_owned();
    let daemon = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", inst.topo.host.name))
        .arg(cnet_bin())
        .arg("--root")
        .arg(&inst.root)
        .args(["daemon", "--socket", &sock])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    inst.topo.adopt(daemon);
    for _ in 0..100 {
        if std::path::Path::new(&sock).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode");

    let (s, v) = curl(&sock, "GET", "/containers", None);
    assert_eq!((s, v), (200, serde_json::json!([])));
    let name = format!("web-{}", unique_name());
    let body = serde_json::json!({"name": name, "publish": ["8080:80"], "cmd": [testsrv(), "serve", "80"]}).to_string();
    let (s, v) = curl(&sock, "POST", "/containers", Some(&body));
    assert_eq!((s, v["Name"].as_str()), (201, Some(name.as_str())), "{v}");
    let client = inst.topo.clients[0].name.clone();
    let r = retry(|| {
        tcp_request(
            &client,
            &format!("{}:8080", addr::host_uplink(0)),
            "via-daemon",
        )
    })
    .unwrap();
    assert_eq!(seen_source(&r), addr::client(0));

    let (s, v) = curl(&sock, "GET", &format!("/containers/{name}"), None);
    assert_eq!(s, 200);
    assert_eq!(
        v["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        "8080"
    );
    assert_eq!(
        v["NetworkSettings"]["Networks"]["bridge"]["IPAddress"],
        "172.17.0.2"
    );
    // The CLI sees what the daemon did, and the other way round.
    assert_eq!(inst.ok(&["ps", "-q"]).trim(), &inst.id_of(&name)[..12]);
    let (s, v) = curl(
        &sock,
        "POST",
        &format!("/containers/{name}/ports"),
        Some(r#"{"spec": "9090:80"}"#),
    );
    assert_eq!(
        (s, v[0].as_str()),
        (200, Some("80/tcp -> 0.0.0.0:9090")),
        "{v}"
    );
    assert!(inst.ok(&["port", &name]).contains("9090"));

    // Errors are Docker-style JSON with a status.
    let (s, v) = curl(&sock, "POST", "/containers", Some("{not json"));
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("JSON"), "{v}");
    let (s, v) = curl(
        &sock,
        "POST",
        "/containers",
        Some(&serde_json::json!({"name": name, "cmd": ["true"]}).to_string()),
    );
    assert_eq!(s, 409, "{v}");
    let (s, _) = curl(&sock, "GET", "/containers/nosuch", None);
    assert_eq!(s, 404);
    let (s, _) = curl(&sock, "GET", "/nowhere", None);
    assert_eq!(s, 404);
    let (s, v) = curl(&sock, "DELETE", &format!("/containers/{name}"), None);
    assert_eq!(s, 409, "running needs force: {v}");

    let (s, v) = curl(
        &sock,
        "POST",
        "/networks",
        Some(r#"{"name": "dnet", "subnet": "10.66.0.0/24"}"#),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = curl(&sock, "GET", "/networks/dnet", None);
    assert_eq!(
        (s, v["IPAM"]["Config"][0]["Subnet"].as_str()),
        (200, Some("10.66.0.0/24"))
    );
    let (s, _) = curl(&sock, "DELETE", "/networks/dnet", None);
    assert_eq!(s, 200);
    let (s, v) = curl(&sock, "GET", "/stats", None);
    assert!(s == 200 && v["dnat"].as_u64().unwrap() >= 1, "{v}");
    let (s, _) = curl(
        &sock,
        "DELETE",
        &format!("/containers/{name}?force=1"),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(inst.ok(&["ps", "-q"]).trim(), "");
}

/// One raw exchange on the socket: what the daemon answered (its status
/// line), or why nothing came.
fn raw(sock: &str, request: &[u8], pause: Option<Duration>) -> String {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if let Some(p) = pause {
        // A slow client: a partial request line, then nothing.
        c.write_all(&request[..5]).unwrap();
        std::thread::sleep(p);
        let _ = c.write_all(&request[5..]);
    } else {
        let _ = c.write_all(request);
    }
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

#[test]
fn the_daemon_refuses_bad_requests_clearly_and_keeps_serving() {
    let inst = Instance::up(1, &[]);
    let sock = inst.root.join("d.sock").to_string_lossy().into_owned();
    let mut daemon = inst
        .command(&["daemon", "--socket", &sock])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..250 {
        if std::path::Path::new(&sock).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let alive = || {
        let (s, v) = curl(&sock, "GET", "/networks", None);
        assert_eq!(s, 200, "the daemon keeps serving: {v}");
    };
    alive();

    // Unknown fields and wrong types: 400 naming the field.
    let (s, v) = curl(
        &sock,
        "POST",
        "/networks",
        Some(r#"{"name": "x1", "internall": true}"#),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("internall"), "{v}");
    let (s, v) = curl(
        &sock,
        "POST",
        "/networks",
        Some(r#"{"name": "x1", "internal": "true"}"#),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("boolean"), "{v}");
    let (s, v) = curl(&sock, "POST", "/containers", Some(r#"{"cmd": "true"}"#));
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("sequence"), "{v}");
    assert!(
        inst.ok(&["network", "ls", "-q"]).lines().count() == 3,
        "nothing was created by the refused requests"
    );
    // Typed errors: 404 for a missing object, 409 for a conflict, 400 for
    // bad input, each with its message.
    let (s, v) = curl(&sock, "DELETE", "/filters/77", None);
    assert_eq!(s, 404, "{v}");
    let (s, v) = curl(
        &sock,
        "POST",
        "/networks",
        Some(r#"{"name": "dup", "subnet": "10.91.0.0/24"}"#),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = curl(
        &sock,
        "POST",
        "/networks",
        Some(r#"{"name": "dup", "subnet": "10.92.0.0/24"}"#),
    );
    assert_eq!(s, 409, "{v}");
    let (s, v) = curl(
        &sock,
        "POST",
        "/networks",
        Some(r#"{"name": "bad", "subnet": "10.93.0.5/24"}"#),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("10.93.0.5/24"),
        "{v}"
    );
    // A JSON request's error names the field, not the CLI flag.
    let (s, v) = curl(
        &sock,
        "POST",
        "/networks",
        Some(r#"{"name": "bad2", "subnet": "nonsense"}"#),
    );
    assert_eq!(s, 400, "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("field \"subnet\"") && !m.contains("--subnet"),
        "{v}"
    );
    let (s, _) = curl(&sock, "DELETE", "/networks/dup", None);
    assert_eq!(s, 200);
    // `cnet up` through the daemon: live switches, and its fields typed too.
    let (s, v) = curl(&sock, "POST", "/up", Some(r#"{"debug": true}"#));
    assert_eq!(s, 200, "{v}");
    assert!(
        !inst
            .ok(&["logs", "--datapath"])
            .contains("debug logs are off"),
        "POST /up switched the datapath logs on"
    );
    let (s, v) = curl(
        &sock,
        "POST",
        "/up",
        Some(r#"{"debug": false, "icc": "no"}"#),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("boolean"), "{v}");
    let (s, v) = curl(&sock, "POST", "/up", Some(r#"{"bip": "10.1.2.3/99"}"#));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("10.1.2.3/99"),
        "{v}"
    );
    let (s, v) = curl(&sock, "POST", "/up", Some(r#"{"debug": false}"#));
    assert_eq!(s, 200, "{v}");
    assert!(
        inst.ok(&["logs", "--datapath"])
            .contains("debug logs are off")
    );
    let (s, v) = curl(&sock, "PUT", "/networks", None);
    assert_eq!(s, 405, "{v}");

    // Malformed HTTP, an oversized body, a slow client: refused, and the
    // daemon goes on serving.
    let line = raw(&sock, b"GARBAGE\r\n\r\n", None);
    assert!(line.contains(" 400 "), "{line:?}");
    alive();
    let big = format!(
        "POST /networks HTTP/1.1\r\nHost: cnet\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        3 << 20
    );
    let mut req = big.into_bytes();
    req.extend(std::iter::repeat_n(b' ', 3 << 20));
    let line = raw(&sock, &req, None);
    assert!(line.contains(" 413 "), "a body over 1 MiB: {line:?}");
    alive();
    let t = std::time::Instant::now();
    let line = raw(
        &sock,
        b"GET /networks HTTP/1.1\r\nHost: cnet\r\n\r\n",
        Some(Duration::from_secs(7)),
    );
    assert!(
        !line.contains(" 200 ") && t.elapsed() < Duration::from_secs(15),
        "a client that stalls in its headers is cut off: {line:?}"
    );
    alive();

    // SIGTERM: the daemon ends and its socket goes.
    // SAFETY: the daemon this test started, by its PID.
    assert_eq!(unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) }, 0);
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        !std::path::Path::new(&sock).exists(),
        "socket removed on SIGTERM"
    );
}
