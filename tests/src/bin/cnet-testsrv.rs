//! Echo server and client for namespace tests.
//!
//! `cnet-testsrv serve PORT...`: TCP and UDP echo on every PORT; each reply is
//! `<peer address>|<request>`, so a test can check which source the server
//! saw. Prints `ready` once bound.
//! `cnet-testsrv client tcp|udp ADDR:PORT PAYLOAD`: one request; prints the
//! reply and, on a second line, the peer address the socket reports.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") if args.len() > 2 => serve(&args[2..]),
        Some("client") if args.len() == 5 => client(&args[2], &args[3], &args[4]),
        _ => {
            eprintln!("usage: cnet-testsrv serve PORT... | client tcp|udp ADDR:PORT PAYLOAD");
            std::process::exit(2);
        }
    }
}

fn serve(ports: &[String]) {
    for p in ports {
        let tcp = TcpListener::bind(format!("0.0.0.0:{p}"))
            .unwrap_or_else(|e| panic!("bind tcp {p}: {e}"));
        let udp =
            UdpSocket::bind(format!("0.0.0.0:{p}")).unwrap_or_else(|e| panic!("bind udp {p}: {e}"));
        std::thread::spawn(move || tcp_loop(tcp));
        std::thread::spawn(move || udp_loop(udp));
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

fn tcp_loop(l: TcpListener) {
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let peer = s.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let mut reply = format!("{peer}|").into_bytes();
                        reply.extend_from_slice(&buf[..n]);
                        if s.write_all(&reply).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

fn udp_loop(s: UdpSocket) {
    let mut buf = [0u8; 4096];
    loop {
        if let Ok((n, peer)) = s.recv_from(&mut buf) {
            let mut reply = format!("{peer}|").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, peer);
        }
    }
}

fn client(proto: &str, addr: &str, payload: &str) {
    let t = Some(Duration::from_secs(2));
    let mut buf = [0u8; 4096];
    let (reply, peer) = match proto {
        "tcp" => {
            let a = addr
                .parse()
                .unwrap_or_else(|e| fail(&format!("bad address {addr}: {e}")));
            let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(2))
                .unwrap_or_else(|e| fail(&format!("connect {addr}: {e}")));
            s.set_read_timeout(t).ok();
            s.write_all(payload.as_bytes())
                .unwrap_or_else(|e| fail(&format!("write: {e}")));
            let n = s
                .read(&mut buf)
                .unwrap_or_else(|e| fail(&format!("read: {e}")));
            (
                String::from_utf8_lossy(&buf[..n]).into_owned(),
                s.peer_addr().map(|p| p.to_string()).unwrap_or_default(),
            )
        }
        "udp" => {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| fail(&format!("bind: {e}")));
            s.set_read_timeout(t).ok();
            s.send_to(payload.as_bytes(), addr)
                .unwrap_or_else(|e| fail(&format!("send {addr}: {e}")));
            let (n, from) = s
                .recv_from(&mut buf)
                .unwrap_or_else(|e| fail(&format!("recv: {e}")));
            (
                String::from_utf8_lossy(&buf[..n]).into_owned(),
                from.to_string(),
            )
        }
        other => fail(&format!("unknown protocol {other}")),
    };
    println!("{reply}\n{peer}");
}

fn fail(msg: &str) -> ! {
    eprintln!("cnet-testsrv client: {msg}");
    std::process::exit(1);
}
