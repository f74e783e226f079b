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
