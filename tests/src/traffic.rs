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

/// What a probe met: an answer, a refusal (RST or ICMP port unreachable: the
/// path works and nobody listens), silence (a drop), or another error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reply(String),
    Refused,
    Timeout,
    Error(String),
}

impl Outcome {
    pub fn is_reply(&self) -> bool {
        matches!(self, Self::Reply(_))
    }
}

fn classify(e: &std::io::Error, what: &str) -> Outcome {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => Outcome::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::Timeout,
        _ => Outcome::Error(format!("{what}: {e}")),
    }
}

/// One TCP request from namespace `ns`, classified.
pub fn tcp_probe(ns: &str, to: &str, payload: &str) -> Outcome {
    let to: SocketAddr = match to.parse() {
        Ok(a) => a,
        Err(e) => return Outcome::Error(format!("bad address {to}: {e}")),
    };
    let payload = payload.to_string();
    in_netns(ns, move || {
        let mut s = match TcpStream::connect_timeout(&to, TIMEOUT) {
            Ok(s) => s,
            Err(e) => return classify(&e, &format!("connect {to}")),
        };
        let _ = s.set_read_timeout(Some(TIMEOUT));
        if let Err(e) = s.write_all(payload.as_bytes()) {
            return classify(&e, &format!("write {to}"));
        }
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.ends_with(payload.as_bytes()) {
            match s.read(&mut buf) {
                Ok(0) => return Outcome::Error(format!("{to} closed the connection")),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return classify(&e, &format!("read {to}")),
            }
        }
        Outcome::Reply(String::from_utf8_lossy(&got).into_owned())
    })
}

/// One UDP request from namespace `ns` on a connected socket (so an ICMP port
/// unreachable shows as `Refused`), classified.
pub fn udp_probe(ns: &str, from: Option<&str>, to: &str, payload: &str) -> Outcome {
    let to: SocketAddr = match to.parse() {
        Ok(a) => a,
        Err(e) => return Outcome::Error(format!("bad address {to}: {e}")),
    };
    let payload = payload.to_string();
    let from = from.unwrap_or("0.0.0.0:0").to_string();
    in_netns(ns, move || {
        let s = match UdpSocket::bind(&from) {
            Ok(s) => s,
            Err(e) => return Outcome::Error(format!("bind: {e}")),
        };
        let _ = s.set_read_timeout(Some(TIMEOUT));
        if let Err(e) = s.connect(to) {
            return classify(&e, &format!("connect {to}"));
        }
        if let Err(e) = s.send(payload.as_bytes()) {
            return classify(&e, &format!("send {to}"));
        }
        let mut buf = [0u8; 4096];
        match s.recv(&mut buf) {
            Ok(n) => Outcome::Reply(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => classify(&e, &format!("recv {to}")),
        }
    })
}

/// Panics unless `o` is a drop (silence): a refusal or any other error means
/// the probe did not test what it claims to.
pub fn assert_dropped(o: &Outcome, what: &str) {
    assert_eq!(*o, Outcome::Timeout, "{what}: expected a silent drop");
}

/// Panics unless `o` is a reply; returns it.
pub fn assert_reply(o: Outcome, what: &str) -> String {
    match o {
        Outcome::Reply(r) => r,
        other => panic!("{what}: expected a reply (positive control), got {other:?}"),
    }
}

/// One ping from namespace `ns`: `Reply`, `Timeout` (no answer), or `Error`
/// (an ICMP error came back, or ping failed).
pub fn ping_probe(ns: &str, to: &str) -> Outcome {
    let out = match std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-W1", "-q", to])
        .output()
    {
        Ok(o) => o,
        Err(e) => return Outcome::Error(format!("ping: {e}")),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => Outcome::Reply(text.into_owned()),
        Some(1) if !text.contains("errors") => Outcome::Timeout,
        _ => Outcome::Error(format!(
            "ping {to}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}
