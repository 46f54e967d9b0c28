//! Mitigations as a real client sees them: blocks and rate limits sent to
//! the instance over the ring, connections made with std sockets.
//!
//! Linux routes all of 127.0.0.0/8 to loopback, so a client can bind
//! 127.0.0.2 as its source address and look like a second host.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Driver, Event, ReadOutcome};
use ins_protocol::msg::{CloseReason, Mitigation, Prefix};

const T: Duration = Duration::from_secs(10);

fn connect_from(src: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from((src, 0)).into())
        .expect("bind source");
    s.connect(&to.into()).expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("to");
    s
}

/// What a client sees on its next read: Ok(n), EOF, or the error kind.
fn client_read(s: &mut TcpStream) -> Result<usize, ErrorKind> {
    let mut b = [0u8; 64];
    s.read(&mut b).map_err(|e| e.kind())
}

fn accepted_from(d: &mut Driver, listener: u32, ip: IpAddr) -> bool {
    d.events(listener)
        .iter()
        .any(|e| matches!(e, Event::Accepted { peer, .. } if peer.ip() == ip))
}

#[test]
fn block_refuses_new_and_resets_open_connections_from_the_prefix() {
    let two = Ipv4Addr::new(127, 0, 0, 2);
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let mut d = Driver::start();
    let (l, laddr) = d.tcp_listener("127.0.0.1:0".parse().expect("a"), 64);

    // An open connection from .2, working before the block.
    let mut old = connect_from(two, laddr);
    let a_old = d
        .accept(l, T)
        .expect("Accepted from 127.0.0.2 before the block");
    assert_eq!(a_old.peer.ip(), IpAddr::V4(two));
    old.write_all(b"early").expect("write");
    assert_eq!(d.read_exact(a_old.sock, 5, T), b"early");

    let blocked = Prefix::host(IpAddr::V4(two));
    assert_eq!(d.mitigate(Mitigation::Block(blocked)), 0, "Block accepted");

    // The open connection is reset: the client reads ECONNRESET.
    assert_eq!(
        client_read(&mut old),
        Err(ErrorKind::ConnectionReset),
        "open connection from a blocked source must be reset"
    );
    // The driver learns it too, and the flow closes as mitigated.
    let ok = d.wait_for(T, |d| {
        d.reset_errno(a_old.sock).is_some() || d.is_closed(a_old.sock)
    });
    assert!(ok, "driver not told that the blocked connection ended");
    let f = d.wait_closed_flow(laddr, old.local_addr().expect("a"), T);
    assert_eq!(f.reason, CloseReason::Mitigated, "{f:?}");
    assert_eq!(f.bytes_in, 5);

    // A new connection from .2: the kernel completes the handshake, then
    // the instance refuses it; no Accepted reaches the driver.
    let mut new = connect_from(two, laddr);
    match client_read(&mut new) {
        Ok(0) | Err(ErrorKind::ConnectionReset) => {}
        other => panic!("blocked client should see EOF or reset, got {other:?}"),
    }
    // 127.0.0.1 is still served, and its Accepted comes after .2's refusal.
    let mut good = connect_from(one, laddr);
    let a_good = d.accept(l, T).expect("127.0.0.1 must still be accepted");
    assert_eq!(a_good.peer.ip(), IpAddr::V4(one));
    good.write_all(b"still here").expect("w");
    assert_eq!(d.read_exact(a_good.sock, 10, T), b"still here");
    d.send_data(a_good.sock, b"yes");
    let mut b = [0u8; 3];
    good.read_exact(&mut b).expect("read");
    assert_eq!(&b, b"yes");
    d.pump_for(Duration::from_millis(300));
    assert!(
        !accepted_from(&mut d, l, IpAddr::V4(two)),
        "a blocked source was announced as Accepted"
    );
    let dropped = d.wait_for(Duration::from_secs(3), |d| {
        d.heartbeats.last().is_some_and(|h| h.dropped_conns >= 1)
    });
    assert!(dropped, "heartbeat dropped_conns counts the refusal");

    // Unblock: .2 is served again.
    assert_eq!(d.mitigate(Mitigation::Unblock(blocked)), 0);
    let _again = connect_from(two, laddr);
    let a = d
        .accept(l, T)
        .expect("Accepted from 127.0.0.2 after Unblock");
    assert_eq!(a.peer.ip(), IpAddr::V4(two));
}

/// A limit of 20 connections/s (burst 10) on 127.0.0.0/8 while a client
/// connects as fast as it can (capped at 1000 attempts/s, 50 times the
/// limit): over 5 s the instance must accept burst + 20·5 = 110
/// connections, ±10%. Refused attempts are closed by the client with an
/// RST so that no TIME_WAIT state piles up.
#[test]
fn connection_rate_limit_caps_accepts_per_second() {
    const RATE: u32 = 20;
    const BURST: u32 = 10;
    const SECS: u64 = 5;
    let mut d = Driver::start();
    let (l, laddr) = d.tcp_listener("127.0.0.1:0".parse().expect("a"), 1024);
    let prefix = Prefix::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).expect("prefix");
    assert_eq!(
        d.mitigate(Mitigation::RateLimit {
            prefix,
            conn_per_sec: RATE,
            conn_burst: BURST,
            bytes_per_sec: 0,
            bytes_burst: 0,
        }),
        0,
        "RateLimit accepted"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let (st, at) = (stop.clone(), attempts.clone());
    let start = Instant::now();
    let client = thread::spawn(move || {
        let mut next = Instant::now();
        while !st.load(Ordering::Relaxed) {
            if let Ok(s) = TcpStream::connect(laddr) {
                at.fetch_add(1, Ordering::Relaxed);
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            }
            next += Duration::from_millis(1);
            if let Some(w) = next.checked_duration_since(Instant::now()) {
                thread::sleep(w);
            }
        }
    });
    let end = start + Duration::from_secs(SECS);
    let mut accepted = 0u32;
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        if let Some(a) = d.accept(l, left.min(Duration::from_millis(50))) {
            accepted += 1;
            let _ = d.submit(&ins_protocol::msg::Msg::Close {
                sock: a.sock,
                req: 0,
            });
        }
    }
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client");
    let tries = attempts.load(Ordering::Relaxed);
    let expected = f64::from(BURST) + f64::from(RATE) * SECS as f64;
    eprintln!(
        "rate limit {RATE}/s burst {BURST}: {accepted} accepted of {tries} attempts in {SECS} s (expected {expected})"
    );
    assert!(
        tries > 10 * u64::from(accepted),
        "the client must try far more often than the limit ({tries} tries)"
    );
    let (lo, hi) = (expected * 0.9, expected * 1.1);
    assert!(
        (lo..=hi).contains(&f64::from(accepted)),
        "{accepted} accepted, expected {expected} ± 10%"
    );
}

/// A byte rate limit slows a client's upload to about the limit.
#[test]
fn byte_rate_limit_slows_a_client_upload() {
    const RATE: u64 = 1 << 20;
    const BURST: u64 = 64 << 10;
    const TOTAL: usize = 2 << 20;
    let mut d = Driver::start();
    let (l, laddr) = d.tcp_listener("127.0.0.1:0".parse().expect("a"), 8);
    let prefix = Prefix::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).expect("prefix");
    let upload = |d: &mut Driver| -> Duration {
        let c = thread::spawn(move || {
            let mut s = common::native_connect(laddr);
            s.write_all(&vec![7u8; TOTAL]).expect("upload");
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
        });
        let a = d.accept(l, T).expect("Accepted");
        let t0 = Instant::now();
        let got = d.read_to_eof(a.sock, Duration::from_secs(30));
        let took = t0.elapsed();
        assert_eq!(got.len(), TOTAL);
        assert!(got.iter().all(|&b| b == 7));
        assert_eq!(d.close(a.sock), 0);
        c.join().expect("client");
        took
    };
    let free = upload(&mut d);
    assert_eq!(
        d.mitigate(Mitigation::RateLimit {
            prefix,
            conn_per_sec: 0,
            conn_burst: 0,
            bytes_per_sec: RATE,
            bytes_burst: BURST,
        }),
        0
    );
    let limited = upload(&mut d);
    let floor = (TOTAL as u64 - BURST) as f64 / RATE as f64;
    eprintln!("2 MiB upload: {free:.2?} unlimited, {limited:.2?} at 1 MiB/s (floor {floor:.2} s)");
    assert!(
        limited.as_secs_f64() >= floor * 0.9,
        "upload took {limited:?}, the limit allows no less than {floor:.2} s"
    );
    assert!(
        limited.as_secs_f64() <= floor * 2.0 + 1.0,
        "upload took {limited:?}: far slower than the limit"
    );
    assert!(free < limited / 2, "without a limit it is much faster");
    let _ = ReadOutcome::Eof;
}
