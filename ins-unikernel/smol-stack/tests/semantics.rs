//! The `Stack` trait's documented semantics, checked on two real smoltcp
//! stacks talking over an in-memory Ethernet wire.

mod common;

use common::{A4, A6, B4, B6, Pair, config, sa};
use ins_core::Errno;
use ins_core::stack::{Family, Readiness, Shutdown, SockType, Stack, int_opt, opt};

fn listener(p: &mut Pair, addr: &str, backlog: u32) -> ins_smol_stack::Handle {
    let fam = if sa(addr).is_ipv4() {
        Family::Inet
    } else {
        Family::Inet6
    };
    let l = p.b.open(fam, SockType::Stream).unwrap();
    p.b.bind(l, sa(addr)).unwrap();
    p.b.listen(l, backlog).unwrap();
    l
}

/// a connects to b's listener on `to`; returns (a's conn, b's accepted).
fn connect(
    p: &mut Pair,
    l: ins_smol_stack::Handle,
    to: &str,
) -> (ins_smol_stack::Handle, ins_smol_stack::Handle) {
    let fam = if sa(to).is_ipv4() {
        Family::Inet
    } else {
        Family::Inet6
    };
    let c = p.a.open(fam, SockType::Stream).unwrap();
    assert_eq!(p.a.connect(c, sa(to)), Err(Errno::EINPROGRESS));
    assert_eq!(p.a.connect(c, sa(to)), Err(Errno::EALREADY));
    p.settle();
    assert!(
        p.took_a(c).contains(Readiness::WRITABLE),
        "connect completion is WRITABLE"
    );
    assert_eq!(p.a.take_error(c), Ok(None));
    assert!(
        p.took_b(l).contains(Readiness::READABLE),
        "a pending connection is READABLE"
    );
    let acc = p.b.accept(l).unwrap();
    assert_eq!(acc.peer, p.a.local_addr(c).unwrap());
    assert_eq!(acc.local, sa(to));
    assert_eq!(p.a.peer_addr(c).unwrap(), sa(to));
    (c, acc.handle)
}

fn recv_all(s: &mut common::S, h: ins_smol_stack::Handle) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.recv(h, &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("recv: {e}"),
        }
    }
}

#[test]
fn tcp_transfer_half_close_and_eof() {
    let mut p = Pair::new();
    let l = listener(&mut p, "10.0.0.2:80", 4);
    let (c, s) = connect(&mut p, l, "10.0.0.2:80");
    assert_eq!(p.b.accept(l).map(|_| ()), Err(Errno::EAGAIN));

    // 100 kB a -> b through 16 KiB buffers: send until EAGAIN, then
    // WRITABLE comes back once the peer has read.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (mut off, mut got) = (0, Vec::new());
    let mut eagains = 0;
    while got.len() < data.len() {
        while off < data.len() {
            match p.a.send(c, &data[off..]) {
                Ok(n) => off += n,
                Err(Errno::EAGAIN) => {
                    eagains += 1;
                    break;
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        p.settle();
        got.extend(recv_all(&mut p.b, s));
        p.settle();
        if off < data.len() {
            assert!(
                p.took_a(c).contains(Readiness::WRITABLE),
                "WRITABLE after EAGAIN"
            );
        }
    }
    assert!(got == data, "bytes differ");
    assert!(eagains > 0, "the buffers were exercised");

    // half-close: a shuts down its sending side; b reads EOF, can still send
    p.a.shutdown(c, Shutdown::Write).unwrap();
    assert_eq!(p.a.send(c, b"x"), Err(Errno::EPIPE));
    p.settle();
    let r = p.took_b(s);
    assert!(
        r.contains(Readiness::READABLE | Readiness::READ_CLOSED),
        "{r:?}"
    );
    let mut buf = [0u8; 16];
    assert_eq!(p.b.recv(s, &mut buf), Ok(0), "EOF");
    assert_eq!(p.b.send(s, b"after eof"), Ok(9));
    p.settle();
    assert_eq!(recv_all(&mut p.a, c), b"after eof");
    p.b.close(s).unwrap();
    p.settle();
    let r = p.took_a(c);
    assert!(
        r.contains(Readiness::READ_CLOSED | Readiness::HANGUP),
        "{r:?}"
    );
    assert_eq!(p.a.recv(c, &mut buf), Ok(0));
    assert_eq!(p.a.take_error(c), Ok(None), "an orderly close is no error");
    p.a.close(c).unwrap();
    p.settle();
    assert_eq!(p.a.recv(c, &mut buf), Err(Errno::EBADF), "closed handle");
    p.run_for(1_000_000_000);
    assert_eq!(p.a.smoltcp_sockets(), 0, "closed connections are gone");
}

#[test]
fn readiness_is_edge_like_without_lost_or_busy_wakeups() {
    let mut p = Pair::new();
    let l = listener(&mut p, "10.0.0.2:81", 4);
    let (c, s) = connect(&mut p, l, "10.0.0.2:81");
    p.settle();
    p.ev_a.clear();
    p.ev_b.clear();
    let mut buf = [0u8; 8];
    assert_eq!(p.b.recv(s, &mut buf), Err(Errno::EAGAIN));
    p.settle();
    assert!(p.took_b(s).is_empty(), "nothing happened, nothing reported");
    p.a.send(c, b"hello").unwrap();
    p.settle();
    assert!(
        p.took_b(s).contains(Readiness::READABLE),
        "no lost wake-up after EAGAIN"
    );
    // read only part: the stack need not report again, and does not spin
    assert_eq!(p.b.recv(s, &mut buf[..2]), Ok(2));
    p.settle();
    assert!(p.took_b(s).is_empty(), "no busy reporting");
    assert_eq!(p.b.recv(s, &mut buf), Ok(3));
    assert_eq!(&buf[..3], b"llo");
    assert_eq!(p.b.recv(s, &mut buf), Err(Errno::EAGAIN));
    p.a.send(c, b"again").unwrap();
    p.settle();
    assert!(p.took_b(s).contains(Readiness::READABLE));
}

#[test]
fn refused_connect_reports_econnrefused() {
    let mut p = Pair::new();
    let c = p.a.open(Family::Inet, SockType::Stream).unwrap();
    assert_eq!(p.a.connect(c, sa("10.0.0.2:9")), Err(Errno::EINPROGRESS));
    p.settle();
    let r = p.took_a(c);
    assert!(r.contains(Readiness::WRITABLE | Readiness::ERROR), "{r:?}");
    assert_eq!(p.a.take_error(c), Ok(Some(Errno::ECONNREFUSED)));
    assert_eq!(p.a.take_error(c), Ok(None), "taken once");
    assert_eq!(p.a.peer_addr(c), Err(Errno::ENOTCONN));
    // a failed socket may connect again
    let l = listener(&mut p, "10.0.0.2:9", 1);
    let _ = l;
    assert_eq!(p.a.connect(c, sa("10.0.0.2:9")), Err(Errno::EINPROGRESS));
    p.settle();
    assert_eq!(p.a.take_error(c), Ok(None));
    assert_eq!(p.a.peer_addr(c), Ok(sa("10.0.0.2:9")));
}

#[test]
fn silent_peer_times_out() {
    let mut cfg = config(0);
    cfg.connect_timeout_ns = 3_000_000_000;
    let mut p = Pair::with(cfg, config(1));
    p.wire.borrow_mut().cut[1] = true; // b's answers are lost
    let c = p.a.open(Family::Inet, SockType::Stream).unwrap();
    assert_eq!(p.a.connect(c, sa("10.0.0.2:80")), Err(Errno::EINPROGRESS));
    p.run_for(2_000_000_000);
    assert_eq!(p.a.take_error(c), Ok(None), "still connecting");
    p.run_for(2_000_000_000);
    assert!(p.took_a(c).contains(Readiness::ERROR));
    assert_eq!(p.a.take_error(c), Ok(Some(Errno::ETIMEDOUT)));
}

#[test]
fn close_with_unread_data_or_linger_zero_resets_the_peer() {
    for linger in [false, true] {
        let mut p = Pair::new();
        let l = listener(&mut p, "10.0.0.2:82", 4);
        let (c, s) = connect(&mut p, l, "10.0.0.2:82");
        if linger {
            p.b.set_opt(
                s,
                opt::SOL_SOCKET,
                opt::SO_LINGER,
                &[1, 0, 0, 0, 0, 0, 0, 0],
            )
            .unwrap();
        } else {
            p.a.send(c, b"unread").unwrap();
            p.settle();
        }
        p.b.close(s).unwrap();
        p.settle();
        let r = p.took_a(c);
        assert!(
            r.contains(Readiness::ERROR | Readiness::HANGUP),
            "linger={linger}: {r:?}"
        );
        let mut buf = [0u8; 8];
        assert_eq!(
            p.a.recv(c, &mut buf),
            Err(Errno::ECONNRESET),
            "linger={linger}"
        );
        assert_eq!(p.a.recv(c, &mut buf), Ok(0), "then EOF");
        assert_eq!(p.a.send(c, b"x"), Err(Errno::EPIPE));
        assert_eq!(p.b.counters().reset_on_close, 1);
    }
}

#[test]
fn bind_errors_follow_linux() {
    let mut p = Pair::new();
    let x = p.b.open(Family::Inet, SockType::Stream).unwrap();
    let y = p.b.open(Family::Inet, SockType::Stream).unwrap();
    p.b.bind(x, sa("0.0.0.0:7000")).unwrap();
    assert_eq!(
        p.b.bind(x, sa("0.0.0.0:7001")),
        Err(Errno::EINVAL),
        "already bound"
    );
    assert_eq!(p.b.bind(y, sa("10.0.0.2:7000")), Err(Errno::EADDRINUSE));
    assert_eq!(p.b.bind(y, sa("10.9.9.9:7002")), Err(Errno::EADDRNOTAVAIL));
    assert_eq!(
        p.b.bind(y, sa("[fd00::2]:7002")),
        Err(Errno::EINVAL),
        "family mismatch"
    );
    p.b.close(x).unwrap();
    p.b.bind(y, sa("10.0.0.2:7000")).unwrap();
    assert_eq!(p.b.local_addr(y), Ok(sa("10.0.0.2:7000")));
    assert_eq!(p.b.bind(x, sa("0.0.0.0:1")), Err(Errno::EBADF));
    // port 0 picks an ephemeral port
    let z = p.b.open(Family::Inet, SockType::Datagram).unwrap();
    p.b.bind(z, sa("0.0.0.0:0")).unwrap();
    let port = p.b.local_addr(z).unwrap().port();
    assert!((32768..=60999).contains(&port), "{port}");
    // SO_REUSEADDR on both: two binds, one listener
    let (r1, r2) = (
        p.b.open(Family::Inet, SockType::Stream).unwrap(),
        p.b.open(Family::Inet, SockType::Stream).unwrap(),
    );
    for r in [r1, r2] {
        p.b.set_opt(r, opt::SOL_SOCKET, opt::SO_REUSEADDR, &int_opt(1))
            .unwrap();
        p.b.bind(r, sa("0.0.0.0:7100")).unwrap();
    }
    p.b.listen(r1, 4).unwrap();
    assert_eq!(p.b.listen(r2, 4), Err(Errno::EADDRINUSE));
    assert_eq!(
        p.b.listen(z, 4),
        Err(Errno::EOPNOTSUPP),
        "UDP cannot listen"
    );
}

#[test]
fn udp_datagrams_truncation_filtering_and_errors() {
    let mut p = Pair::new();
    let u = p.b.open(Family::Inet, SockType::Datagram).unwrap();
    p.b.bind(u, sa("10.0.0.2:53")).unwrap();
    let c = p.a.open(Family::Inet, SockType::Datagram).unwrap();
    assert_eq!(p.a.send(c, b"x"), Err(Errno::EDESTADDRREQ));
    assert_eq!(p.a.send_to(c, b"question", sa("10.0.0.2:53")), Ok(8));
    p.settle();
    assert!(p.took_b(u).contains(Readiness::READABLE));
    let mut buf = [0u8; 4];
    let (n, from) = p.b.recv_from(u, &mut buf).unwrap();
    assert_eq!((n, &buf[..n]), (4, &b"ques"[..]), "truncated to the buffer");
    assert_eq!(from.port(), p.a.local_addr(c).unwrap().port());
    assert_eq!(from.ip().to_string(), A4);
    assert_eq!(
        p.b.recv_from(u, &mut buf),
        Err(Errno::EAGAIN),
        "the rest was dropped"
    );
    p.b.send_to(u, b"answer", from).unwrap();
    p.settle();
    let mut big = [0u8; 64];
    let (n, src) = p.a.recv_from(c, &mut big).unwrap();
    assert_eq!((&big[..n], src), (&b"answer"[..], sa("10.0.0.2:53")));

    // a connected socket only hears its peer
    let other = p.b.open(Family::Inet, SockType::Datagram).unwrap();
    p.a.connect(c, sa("10.0.0.2:53")).unwrap();
    p.b.send_to(other, b"stranger", from).unwrap();
    p.b.send_to(u, b"peer", from).unwrap();
    p.settle();
    let (n, _) = p.a.recv_from(c, &mut big).unwrap();
    assert_eq!(&big[..n], b"peer");
    assert_eq!(p.a.send(c, b"via connect"), Ok(11));

    assert_eq!(
        p.a.send_to(c, &vec![0u8; 70_000], sa("10.0.0.2:53")),
        Err(Errno::EMSGSIZE)
    );
    assert_eq!(
        p.a.send_to(c, b"b", sa("10.0.0.255:53")),
        Err(Errno::EACCES)
    );
    p.a.set_opt(c, opt::SOL_SOCKET, opt::SO_BROADCAST, &int_opt(1))
        .unwrap();
    assert_eq!(p.a.send_to(c, b"b", sa("10.0.0.255:53")), Ok(1));
    assert_eq!(
        p.a.send_to(c, b"x", sa("192.0.2.1:53")),
        Err(Errno::ENETUNREACH),
        "no route"
    );
    assert_eq!(
        p.a.send_to(c, b"x", sa("[fd00::2]:53")),
        Err(Errno::EAFNOSUPPORT)
    );
}

#[test]
fn ipv6_and_v4_mapped_peers() {
    let mut p = Pair::new();
    // dual-stack listener on [::]: takes v6 and v4 (seen as v4-mapped)
    let l = listener(&mut p, "[::]:443", 4);
    let (c6, s6) = connect(&mut p, l, "[fd00::2]:443");
    assert_eq!(
        p.b.peer_addr(s6).unwrap().ip(),
        A6.parse::<std::net::IpAddr>().unwrap()
    );
    p.a.send(c6, b"v6").unwrap();
    p.settle();
    assert_eq!(recv_all(&mut p.b, s6), b"v6");

    let c4 = p.a.open(Family::Inet, SockType::Stream).unwrap();
    assert_eq!(p.a.connect(c4, sa("10.0.0.2:443")), Err(Errno::EINPROGRESS));
    p.settle();
    let acc = p.b.accept(l).unwrap();
    assert_eq!(
        acc.peer,
        sa(&format!(
            "[::ffff:{A4}]:{}",
            p.a.local_addr(c4).unwrap().port()
        ))
    );
    assert_eq!(acc.local, sa(&format!("[::ffff:{B4}]:443")));

    // V6ONLY listener: an IPv4 connection is refused (its SYN finds no
    // listener: RST, ECONNREFUSED, as on Linux), not accepted and reset
    let v6 = p.b.open(Family::Inet6, SockType::Stream).unwrap();
    p.b.set_opt(v6, opt::IPPROTO_IPV6, opt::IPV6_V6ONLY, &int_opt(1))
        .unwrap();
    p.b.bind(v6, sa("[::]:444")).unwrap();
    p.b.listen(v6, 2).unwrap();
    let c = p.a.open(Family::Inet, SockType::Stream).unwrap();
    p.a.connect(c, sa("10.0.0.2:444")).unwrap_err();
    p.settle();
    assert_eq!(p.b.accept(v6).map(|_| ()), Err(Errno::EAGAIN));
    p.settle();
    assert_eq!(
        p.a.take_error(c),
        Ok(Some(Errno::ECONNREFUSED)),
        "refused: the V6ONLY listener takes no IPv4 SYN"
    );
    assert_eq!(p.b.counters().wrong_family, 0);

    // nginx's dual listeners on one port (`listen 446; listen [::]:446;`,
    // the second V6ONLY): every connection reaches the listener of its
    // version, none is reset
    let l4b = listener(&mut p, "0.0.0.0:446", 8);
    let l6b = p.b.open(Family::Inet6, SockType::Stream).unwrap();
    p.b.set_opt(l6b, opt::IPPROTO_IPV6, opt::IPV6_V6ONLY, &int_opt(1))
        .unwrap();
    p.b.bind(l6b, sa("[::]:446")).unwrap();
    p.b.listen(l6b, 8).unwrap();
    for _ in 0..4 {
        let (c4, s4) = connect(&mut p, l4b, "10.0.0.2:446");
        assert_eq!(p.b.peer_addr(s4).unwrap().ip().to_string(), A4);
        let (c6b, s6b) = connect(&mut p, l6b, "[fd00::2]:446");
        assert_eq!(p.b.peer_addr(s6b).unwrap().ip().to_string(), A6);
        for c in [c4, c6b] {
            assert_eq!(p.a.take_error(c), Ok(None));
        }
    }
    assert_eq!(p.b.counters().wrong_family, 0);

    // an AF_INET6 client reaching an IPv4 server through a mapped address
    let m = p.a.open(Family::Inet6, SockType::Stream).unwrap();
    let l4 = listener(&mut p, "10.0.0.2:445", 2);
    assert_eq!(
        p.a.connect(m, sa(&format!("[::ffff:{B4}]:445"))),
        Err(Errno::EINPROGRESS)
    );
    p.settle();
    assert_eq!(p.a.take_error(m), Ok(None));
    assert_eq!(
        p.a.local_addr(m).unwrap().ip().to_string(),
        format!("::ffff:{A4}")
    );
    let acc = p.b.accept(l4).unwrap();
    assert_eq!(acc.peer.ip().to_string(), A4);
    let _ = (B6, s6);
}

#[test]
fn accept_queue_is_the_listen_pool() {
    let mut p = Pair::new();
    let l = listener(&mut p, "10.0.0.2:90", 2);
    let conns: Vec<_> = (0..5)
        .map(|_| {
            let c = p.a.open(Family::Inet, SockType::Stream).unwrap();
            assert_eq!(p.a.connect(c, sa("10.0.0.2:90")), Err(Errno::EINPROGRESS));
            c
        })
        .collect();
    p.settle();
    let mut accepted = 0;
    while p.b.accept(l).is_ok() {
        accepted += 1;
    }
    let refused = conns
        .iter()
        .filter(|&&c| p.a.take_error(c).unwrap() == Some(Errno::ECONNREFUSED))
        .count();
    assert_eq!(accepted, 2, "the pool holds the backlog");
    assert_eq!(accepted + refused, 5, "the others were refused, none hangs");
    // the pool is refilled: new connections are accepted again
    let c = p.a.open(Family::Inet, SockType::Stream).unwrap();
    p.a.connect(c, sa("10.0.0.2:90")).unwrap_err();
    p.settle();
    assert!(p.b.accept(l).is_ok());
}

#[test]
fn options_and_unsupported_ones() {
    let mut p = Pair::new();
    let t = p.a.open(Family::Inet, SockType::Stream).unwrap();
    p.a.set_opt(t, opt::IPPROTO_TCP, opt::TCP_NODELAY, &int_opt(1))
        .unwrap();
    let mut out = [0u8; 16];
    assert_eq!(
        p.a.get_opt(t, opt::IPPROTO_TCP, opt::TCP_NODELAY, &mut out),
        Ok(4)
    );
    assert_eq!(&out[..4], &int_opt(1));
    assert_eq!(
        p.a.get_opt(t, opt::SOL_SOCKET, opt::SO_TYPE, &mut out),
        Ok(4)
    );
    assert_eq!(&out[..4], &int_opt(1));
    assert_eq!(
        p.a.set_opt(t, opt::IPPROTO_TCP, opt::TCP_MAXSEG, &int_opt(1000)),
        Err(Errno::ENOPROTOOPT)
    );
    assert_eq!(
        p.a.set_opt(t, opt::IPPROTO_IP, opt::IP_TOS, &int_opt(16)),
        Err(Errno::ENOPROTOOPT)
    );
    assert_eq!(
        p.a.set_opt(t, opt::IPPROTO_IPV6, opt::IPV6_V6ONLY, &int_opt(1)),
        Err(Errno::ENOPROTOOPT),
        "AF_INET"
    );
    p.a.set_opt(t, opt::SOL_SOCKET, opt::SO_RCVBUF, &int_opt(8192))
        .unwrap();
    assert_eq!(
        p.a.get_opt(t, opt::SOL_SOCKET, opt::SO_RCVBUF, &mut out),
        Ok(4)
    );
    assert_eq!(&out[..4], &int_opt(8192));
    let mut names = Vec::new();
    p.a.available_congestion(&mut names);
    assert_eq!(names, ["reno"]);
    assert_eq!(p.a.tcp_info(t), None, "smoltcp keeps no segment counters");
    assert_eq!(
        p.a.route_source(B4.parse().unwrap()),
        Some(A4.parse().unwrap())
    );
    assert_eq!(p.a.open(Family::Inet, SockType::Stream).map(|_| ()), Ok(()));
}

#[test]
fn emfile_beyond_max_sockets() {
    let mut cfg = config(0);
    cfg.max_sockets = 3;
    let mut p = Pair::with(cfg, config(1));
    let hs: Vec<_> = (0..3)
        .map(|_| p.a.open(Family::Inet, SockType::Datagram).unwrap())
        .collect();
    assert_eq!(
        p.a.open(Family::Inet, SockType::Stream).map(|_| ()),
        Err(Errno::EMFILE)
    );
    p.a.close(hs[0]).unwrap();
    assert!(p.a.open(Family::Inet, SockType::Stream).is_ok());
}
