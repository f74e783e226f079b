//! A tiny echo server for namespace tests: `cnet-testsrv tcp|udp ADDR:PORT`.
//! Every reply is `<peer address>|<request>`, so a test can check which source
//! address the server saw. Prints `ready` once bound.
use std::{
    io::{Read, Write},
    net::{TcpListener, UdpSocket},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(proto), Some(addr)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: cnet-testsrv tcp|udp ADDR:PORT");
        std::process::exit(2);
    };
    match proto.as_str() {
        "tcp" => tcp(addr),
        "udp" => udp(addr),
        other => {
            eprintln!("cnet-testsrv: unknown protocol {other}");
            std::process::exit(2);
        }
    }
}

fn ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

fn tcp(addr: &str) {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind tcp {addr}: {e}"));
    ready();
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

fn udp(addr: &str) {
    let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
    ready();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok((n, peer)) = s.recv_from(&mut buf) {
            let mut reply = format!("{peer}|").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, peer);
        }
    }
}
