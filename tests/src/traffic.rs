//! Real TCP/UDP traffic between namespaces, with bounded timeouts.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    process::Child,
    time::Duration,
};

use crate::netns::{Netns, in_netns};

const TIMEOUT: Duration = Duration::from_secs(2);

/// Path of the echo server binary cargo builds next to the test binaries:
/// `target/<profile>/cnet-testsrv` (test binaries live in `deps/` below it).
pub fn testsrv() -> String {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("target/<profile>").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("cnet-testsrv");
    assert!(
        path.exists(),
        "{} missing: run through cargo xtask",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// Starts `cnet-testsrv serve PORT...` (TCP and UDP echo) in `ns` and waits until it is bound.
pub fn echo_server(ns: &Netns, ports: &[u16]) -> Child {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut args = vec![testsrv(), "serve".to_string()];
    args.extend(ports);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = ns.spawn(&args);
    wait_ready(&mut child);
    child
}

/// Retries `f` for up to two seconds (a detached server may still be binding).
pub fn retry<T>(mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Waits for a child started with piped stdout to print `ready`.
pub fn wait_ready(child: &mut Child) {
    let out = child.stdout.take().expect("stdout piped");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("read server stdout");
    assert_eq!(line.trim(), "ready", "server did not start");
}

/// One TCP request/response from namespace `ns`; `Err` describes the failure.
pub fn tcp_request(ns: &str, to: &str, payload: &str) -> Result<String, String> {
    let to: SocketAddr = to.parse().map_err(|e| format!("bad address {to}: {e}"))?;
    let payload = payload.to_string();
    in_netns(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&to, TIMEOUT).map_err(|e| format!("connect {to}: {e}"))?;
        s.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        s.write_all(payload.as_bytes())
            .map_err(|e| format!("write {to}: {e}"))?;
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        // Read until the whole echo ("peer|payload") arrived.
        while !got.ends_with(payload.as_bytes()) {
            let n = s.read(&mut buf).map_err(|e| format!("read {to}: {e}"))?;
            if n == 0 {
                return Err(format!("{to} closed the connection"));
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok(String::from_utf8_lossy(&got).into_owned())
    })
}

/// One UDP request/response from namespace `ns` (bound to `from` if given).
pub fn udp_request(
    ns: &str,
    from: Option<&str>,
    to: &str,
    payload: &str,
) -> Result<String, String> {
    let to: SocketAddr = to.parse().map_err(|e| format!("bad address {to}: {e}"))?;
    let from = from.unwrap_or("0.0.0.0:0").to_string();
    let payload = payload.to_string();
    in_netns(ns, move || {
        let s = UdpSocket::bind(&from).map_err(|e| format!("bind {from}: {e}"))?;
        s.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        s.send_to(payload.as_bytes(), to)
            .map_err(|e| format!("send {to}: {e}"))?;
        let mut buf = [0u8; 4096];
        let (n, _) = s
            .recv_from(&mut buf)
            .map_err(|e| format!("recv from {to}: {e}"))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// The peer address part of an echo reply (`"10.200.0.2:40000|hello"` -> `10.200.0.2`).
pub fn seen_source(reply: &str) -> &str {
    reply
        .split('|')
        .next()
        .and_then(|p| p.rsplit_once(':'))
        .map(|(a, _)| a)
        .unwrap_or("")
}
