//! End-to-end tests: the real `ins` binary driven over its ring channel by
//! the test-side driver in `common`, with real TCP/UDP peers on loopback.
//!
//! Bulk sizes: `INS_E2E_BYTES` (default 100 MiB per direction in release
//! builds, 8 MiB in debug builds).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

use common::{Driver, Pattern, ReadOutcome, bulk_bytes, errno, native_connect};
use ins_protocol::msg::{CloseReason, FlowState, IPPROTO_TCP, IPPROTO_UDP, Msg};

const T: Duration = Duration::from_secs(10);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn ipv6_available() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// (a) The instance listens; a native client connects; bulk data both ways
/// at once, checked byte for byte; the flow record counts exactly.
fn instance_listens_bulk(bind: &str) {
    let n = bulk_bytes();
    let mut d = Driver::start();
    let (l, laddr) = d.tcp_listener(addr(bind), 16);
    assert_ne!(laddr.port(), 0, "listener got a port");
    let (up, down) = (Pattern(0x11), Pattern(0x22));
    let client = thread::spawn(move || {
        let s = native_connect(laddr);
        let local = s.local_addr().expect("local");
        let mut w = s.try_clone().expect("clone");
        let writer = thread::spawn(move || {
            up.write_to(&mut w, n).expect("client write");
            w.shutdown(Shutdown::Write).expect("client shutdown");
        });
        let mut r = s;
        let got = down.read_check(&mut r).expect("client read");
        writer.join().expect("writer");
        (local, got)
    });
    let a = d.accept(l, T).expect("no Accepted for the native client");
    assert_eq!(a.local, laddr, "Accepted local address");
    let took = d.duplex(a.sock, &down, n, true, &up, n, Duration::from_secs(300));
    assert_eq!(
        d.read(a.sock, 1, T),
        ReadOutcome::Eof,
        "client's shutdown(WR) must arrive as Eof"
    );
    let (client_local, got) = client.join().expect("client thread");
    assert_eq!(got, n, "client received every byte, then EOF");
    assert_eq!(a.peer, client_local, "Accepted peer is the client");
    eprintln!(
        "instance-listens {bind}: {} MiB each way in {:.2?} ({:.0} MiB/s each way)",
        n >> 20,
        took,
        n as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
    assert_eq!(d.close(a.sock), 0, "Close");
    let f = d.wait_closed_flow(laddr, client_local, T);
    assert_eq!(f.proto, IPPROTO_TCP);
    assert_eq!(f.bytes_in, n, "flow bytes_in = bytes the client sent");
    assert_eq!(f.bytes_out, n, "flow bytes_out = bytes the client received");
    assert_eq!(f.reason, CloseReason::Normal);
    assert!(f.segs_in > 0 && f.segs_out > 0, "segments counted: {f:?}");
    assert!(f.start_ns > 0 && f.last_ns >= f.start_ns, "times: {f:?}");
}

#[test]
fn tcp_instance_listens_native_client_bulk_both_ways() {
    instance_listens_bulk("127.0.0.1:0");
}

/// (b) The instance connects out to a native server; bulk data both ways.
fn instance_connects_bulk(bind: &str) {
    let n = bulk_bytes();
    let mut d = Driver::start();
    let server = TcpListener::bind(bind).expect("bind");
    let saddr = server.local_addr().expect("addr");
    let (up, down) = (Pattern(0x33), Pattern(0x44));
    let srv = thread::spawn(move || {
        let (s, peer) = server.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("to");
        let mut w = s.try_clone().expect("clone");
        let writer = thread::spawn(move || {
            down.write_to(&mut w, n).expect("server write");
            w.shutdown(Shutdown::Write).expect("server shutdown");
        });
        let mut r = s;
        let got = up.read_check(&mut r).expect("server read");
        writer.join().expect("writer");
        (peer, got)
    });
    let (sock, local) = d.connect_tcp(saddr);
    assert_eq!(d.peername(sock), Ok(saddr));
    assert_eq!(d.sockname(sock), Ok(local));
    let took = d.duplex(sock, &up, n, true, &down, n, Duration::from_secs(300));
    assert_eq!(d.read(sock, 1, T), ReadOutcome::Eof, "server's FIN → Eof");
    let (peer, got) = srv.join().expect("server thread");
    assert_eq!(got, n, "server received every byte, then EOF");
    assert_eq!(
        peer, local,
        "Connected local address is what the server saw"
    );
    eprintln!(
        "instance-connects {bind}: {} MiB each way in {:.2?}",
        n >> 20,
        took
    );
    assert_eq!(d.close(sock), 0);
    let f = d.wait_closed_flow(local, saddr, T);
    assert_eq!(f.proto, IPPROTO_TCP);
    assert_eq!(f.bytes_out, n, "flow bytes_out = bytes sent to the server");
    assert_eq!(f.bytes_in, n, "flow bytes_in = bytes the server sent");
    assert_eq!(f.reason, CloseReason::Normal);
}

#[test]
fn tcp_instance_connects_native_server_bulk_both_ways() {
    instance_connects_bulk("127.0.0.1:0");
}

#[test]
fn tcp_half_close_both_directions() {
    let mut d = Driver::start();
    // Driver half-closes first: the server sees EOF and can still answer.
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let saddr = server.local_addr().expect("addr");
    let srv = thread::spawn(move || {
        let (mut s, _) = server.accept().expect("accept");
        s.set_read_timeout(Some(T)).expect("to");
        let mut req = Vec::new();
        s.read_to_end(&mut req).expect("server read to EOF");
        s.write_all(b"response after your FIN")
            .expect("write after peer FIN");
        req
    });
    let (sock, local) = d.connect_tcp(saddr);
    d.send_data(sock, b"request");
    d.send_eof(sock);
    let back = d.read_to_eof(sock, T);
    assert_eq!(srv.join().expect("server"), b"request");
    assert_eq!(back, b"response after your FIN");
    assert_eq!(d.close(sock), 0);
    let f = d.wait_closed_flow(local, saddr, T);
    assert_eq!((f.bytes_out, f.bytes_in), (7, 23));
    assert_eq!(f.reason, CloseReason::Normal);
    // The connection's last telemetry report, from real TCP counters.
    let t = d
        .telemetry
        .iter()
        .rev()
        .find(|t| t.flow_id == f.flow_id)
        .expect("a final telemetry report");
    use ins_protocol::msg::{TelemetryCause, telemetry::flags};
    assert_eq!(t.cause, TelemetryCause::Final);
    assert_eq!((t.bytes_out, t.bytes_in), (7, 23));
    assert!(t.has(flags::OUTBOUND | flags::FIRST_IN | flags::FIRST_OUT | flags::TCP_INFO));
    assert!(t.has(flags::PEER_FIN | flags::LOCAL_FIN), "{t:?}");
    assert!(t.first_out_ns <= t.first_in_ns, "request before response");
    assert!(t.peer_window > 0 && t.bytes_acked >= 7, "{t:?}");
    assert_eq!((t.sample_in.sampled, t.sample_out.sampled), (23, 7));
    assert_eq!(t.sample_in.printable_permille, 1000);

    // Native client half-closes first: the driver sees Eof and still sends.
    let (l, laddr) = d.tcp_listener(addr("127.0.0.1:0"), 4);
    let cl = thread::spawn(move || {
        let mut s = native_connect(laddr);
        s.write_all(b"ping").expect("write");
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut back = Vec::new();
        s.read_to_end(&mut back).expect("read");
        back
    });
    let a = d.accept(l, T).expect("Accepted");
    assert_eq!(d.read_to_eof(a.sock, T), b"ping");
    d.send_data(a.sock, b"pong after your FIN");
    d.send_eof(a.sock);
    assert_eq!(cl.join().expect("client"), b"pong after your FIN");
    assert_eq!(d.close(a.sock), 0);
}

#[test]
fn tcp_peer_reset_is_reported() {
    let mut d = Driver::start();
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let saddr = server.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let srv = thread::spawn(move || {
        let (mut s, _) = server.accept().expect("accept");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        rx.recv().expect("go");
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .expect("linger 0");
        drop(s); // RST
        buf
    });
    let (sock, local) = d.connect_tcp(saddr);
    d.send_data(sock, b"hello");
    tx.send(()).expect("signal");
    assert_eq!(&srv.join().expect("server"), b"hello");
    assert_eq!(
        d.read(sock, 1, T),
        ReadOutcome::Reset(errno::ECONNRESET),
        "peer RST must arrive as Reset(ECONNRESET)"
    );
    let _ = d.request(&Msg::Close { sock, req: 0 });
    let f = d.wait_closed_flow(local, saddr, T);
    assert_eq!(f.reason, CloseReason::Reset, "flow closed by reset: {f:?}");
    assert_eq!(f.bytes_out, 5);
}

#[test]
fn tcp_connection_refused() {
    let mut d = Driver::start();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let sock = d.open_tcp(false);
    let e = d.connect_start(sock, closed);
    if e != errno::ECONNREFUSED {
        assert!(e == 0 || e == errno::EINPROGRESS, "Connect reply errno {e}");
        let (e, local, peer) = d.wait_connected(sock, T);
        assert_eq!(e, errno::ECONNREFUSED, "Connected errno for a closed port");
        assert_eq!((local, peer), (None, None));
    }
    assert_eq!(d.close(sock), 0);
}

fn udp_both_ways(v6: bool) {
    let lo = if v6 { "[::1]:0" } else { "127.0.0.1:0" };
    let mut d = Driver::start();
    // Native client → instance server.
    let s = d.open_udp(v6);
    assert_eq!(d.bind(s, addr(lo)), 0);
    let saddr = d.sockname(s).expect("sockname");
    let client = UdpSocket::bind(lo).expect("bind");
    client.set_read_timeout(Some(T)).expect("to");
    client.send_to(b"question", saddr).expect("send");
    let (from, q) = d.recv_from(s, T).expect("no datagram at the instance");
    assert_eq!(from, Some(client.local_addr().expect("addr")));
    assert_eq!(q, b"question");
    d.send_to(s, from, b"answer!");
    let mut buf = [0u8; 64];
    let (n, src) = client.recv_from(&mut buf).expect("no answer");
    assert_eq!((&buf[..n], src), (&b"answer!"[..], saddr));
    // An empty datagram is a datagram too.
    client.send_to(b"", saddr).expect("send empty");
    let (_, e) = d.recv_from(s, T).expect("no empty datagram");
    assert!(e.is_empty());
    assert_eq!(d.close(s), 0);
    let f = d.wait_closed_flow(saddr, client.local_addr().expect("a"), T);
    assert_eq!(f.proto, IPPROTO_UDP);
    assert_eq!((f.bytes_in, f.bytes_out), (8, 7), "{f:?}");

    // Instance client (unbound, then connected) → native server.
    let server = UdpSocket::bind(lo).expect("bind");
    server.set_read_timeout(Some(T)).expect("to");
    let srv = server.local_addr().expect("addr");
    let c = d.open_udp(v6);
    d.send_to(c, Some(srv), b"ping");
    let (n, src) = server.recv_from(&mut buf).expect("server got nothing");
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(d.sockname(c).expect("sockname").port(), src.port());
    server.send_to(b"pong", src).expect("send");
    assert_eq!(d.recv_from(c, T), Some((Some(srv), b"pong".to_vec())));
    assert_eq!(d.connect_start(c, srv), 0, "UDP connect");
    d.send_to(c, None, b"connected");
    let (n, _) = server.recv_from(&mut buf).expect("server got nothing");
    assert_eq!(&buf[..n], b"connected");
    assert_eq!(d.close(c), 0);
}

#[test]
fn udp_request_response_both_ways() {
    udp_both_ways(false);
}

#[test]
fn ipv6_udp_request_response_both_ways() {
    if !ipv6_available() {
        eprintln!("SKIPPED: no ::1 on this host");
        return;
    }
    udp_both_ways(true);
}

#[test]
fn ipv6_tcp_both_directions() {
    if !ipv6_available() {
        eprintln!("SKIPPED: no ::1 on this host");
        return;
    }
    let mut d = Driver::start();
    let (l, laddr) = d.tcp_listener(addr("[::1]:0"), 4);
    assert!(laddr.is_ipv6());
    let cl = thread::spawn(move || {
        let mut s = native_connect(laddr);
        s.write_all(b"six").expect("w");
        let mut b = [0u8; 4];
        s.read_exact(&mut b).expect("r");
        (s.local_addr().expect("a"), b)
    });
    let a = d.accept(l, T).expect("Accepted over IPv6");
    assert_eq!(d.read_exact(a.sock, 3, T), b"six");
    d.send_data(a.sock, b"four");
    let (cla, b) = cl.join().expect("client");
    assert_eq!(&b, b"four");
    assert_eq!(a.peer, cla);

    let server = TcpListener::bind("[::1]:0").expect("bind");
    let saddr = server.local_addr().expect("a");
    let srv = thread::spawn(move || {
        let (mut s, _) = server.accept().expect("accept");
        let mut b = [0u8; 2];
        s.read_exact(&mut b).expect("r");
        s.write_all(b"v6!").expect("w");
        b
    });
    let (sock, _) = d.connect_tcp(saddr);
    d.send_data(sock, b"hi");
    assert_eq!(d.read_exact(sock, 3, T), b"v6!");
    assert_eq!(&srv.join().expect("server"), b"hi");
}

/// setsockopt then getsockopt on a native socket of the same kind: what
/// Linux itself reports, the reference for the instance.
fn native_set_get(v6: bool, level: i32, name: i32, value: &[u8], max_len: usize) -> Vec<u8> {
    let dom = if v6 {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let s = socket2::Socket::new(dom, socket2::Type::STREAM, None).expect("socket");
    let fd = s.as_raw_fd();
    // SAFETY: `value` is valid for its length; fd is an open socket.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    assert_eq!(
        r,
        0,
        "native setsockopt {level}/{name}: {}",
        std::io::Error::last_os_error()
    );
    let mut out = vec![0u8; max_len];
    let mut len = max_len as libc::socklen_t;
    // SAFETY: `out` is writable for `len` bytes.
    let r = unsafe { libc::getsockopt(fd, level, name, out.as_mut_ptr().cast(), &mut len) };
    assert_eq!(r, 0, "native getsockopt {level}/{name}");
    out.truncate(len as usize);
    out
}

/// Congestion controls any process may set (reno and the machine's
/// `tcp_allowed_congestion_control`): the instance runs sandboxed, without
/// the CAP_NET_ADMIN that other available ones need, as Linux gives an
/// unprivileged program.
fn allowed_congestion() -> Vec<Vec<u8>> {
    let allowed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
        .unwrap_or_default();
    let mut v = vec![b"reno".to_vec()];
    v.extend(
        allowed
            .split_whitespace()
            .filter(|n| *n != "reno")
            .take(1)
            .map(|n| n.as_bytes().to_vec()),
    );
    v
}

fn int(v: i32) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

#[test]
fn socket_options_set_and_read_back_as_linux_does() {
    let mut d = Driver::start();
    let linger = |on: i32, secs: i32| -> Vec<u8> {
        let mut v = on.to_ne_bytes().to_vec();
        v.extend_from_slice(&secs.to_ne_bytes());
        v
    };
    let (tcp, sol, ip6) = (libc::IPPROTO_TCP, libc::SOL_SOCKET, libc::IPPROTO_IPV6);
    /// (name, on IPv6, level, option, values set in turn, read length)
    type Case = (&'static str, bool, i32, i32, Vec<Vec<u8>>, usize);
    let cases: Vec<Case> = vec![
        (
            "IPV6_V6ONLY",
            true,
            ip6,
            libc::IPV6_V6ONLY,
            vec![int(1), int(0)],
            4,
        ),
        (
            "SO_REUSEADDR",
            false,
            sol,
            libc::SO_REUSEADDR,
            vec![int(1), int(0)],
            4,
        ),
        (
            "SO_REUSEPORT",
            false,
            sol,
            libc::SO_REUSEPORT,
            vec![int(1), int(0)],
            4,
        ),
        (
            "TCP_NODELAY",
            false,
            tcp,
            libc::TCP_NODELAY,
            vec![int(1), int(0)],
            4,
        ),
        (
            "SO_KEEPALIVE",
            false,
            sol,
            libc::SO_KEEPALIVE,
            vec![int(1), int(0)],
            4,
        ),
        (
            "TCP_KEEPIDLE",
            false,
            tcp,
            libc::TCP_KEEPIDLE,
            vec![int(37), int(600)],
            4,
        ),
        (
            "TCP_KEEPINTVL",
            false,
            tcp,
            libc::TCP_KEEPINTVL,
            vec![int(7), int(61)],
            4,
        ),
        (
            "TCP_KEEPCNT",
            false,
            tcp,
            libc::TCP_KEEPCNT,
            vec![int(4), int(11)],
            4,
        ),
        (
            "SO_SNDBUF",
            false,
            sol,
            libc::SO_SNDBUF,
            vec![int(65536), int(12345)],
            4,
        ),
        (
            "SO_RCVBUF",
            false,
            sol,
            libc::SO_RCVBUF,
            vec![int(65536), int(23456)],
            4,
        ),
        (
            "SO_LINGER",
            false,
            sol,
            libc::SO_LINGER,
            vec![linger(1, 5), linger(0, 0)],
            8,
        ),
        (
            "TCP_CONGESTION",
            false,
            tcp,
            libc::TCP_CONGESTION,
            allowed_congestion(),
            16,
        ),
    ];
    let s4 = d.open_tcp(false);
    let s6 = d.open_tcp(true);
    for (what, v6, level, name, values, max_len) in cases {
        let s = if v6 { s6 } else { s4 };
        for v in values {
            let want = native_set_get(v6, level, name, &v, max_len);
            assert_eq!(d.setopt(s, level, name, &v), 0, "set {what} = {v:?}");
            let got = d
                .getopt(s, level, name, max_len as u32)
                .unwrap_or_else(|e| panic!("get {what}: errno {e}"));
            let trim = |b: &[u8]| -> Vec<u8> {
                if name == libc::TCP_CONGESTION {
                    b.iter().copied().take_while(|&c| c != 0).collect()
                } else {
                    b.to_vec()
                }
            };
            assert_eq!(trim(&got), trim(&want), "{what} after setting {v:?}");
        }
    }
    // SO_SNDBUF: Linux doubles the request; make sure that is what we saw.
    assert_eq!(d.setopt_int(s4, sol, libc::SO_SNDBUF, 65536), 0);
    assert_eq!(d.getopt_int(s4, sol, libc::SO_SNDBUF), Ok(131072));

    // SO_REUSEPORT has its effect: two sockets share a port only with it.
    let a = d.open_tcp(false);
    let b = d.open_tcp(false);
    assert_eq!(d.bind(a, addr("127.0.0.1:0")), 0);
    let port = d.sockname(a).expect("sockname").port();
    let same = SocketAddr::from(([127, 0, 0, 1], port));
    assert_ne!(
        d.bind(b, same),
        0,
        "second bind without SO_REUSEPORT must fail"
    );
    let c = d.open_tcp(false);
    let e = d.open_tcp(false);
    assert_eq!(d.setopt_int(c, sol, libc::SO_REUSEPORT, 1), 0);
    assert_eq!(d.setopt_int(e, sol, libc::SO_REUSEPORT, 1), 0);
    assert_eq!(d.bind(c, addr("127.0.0.1:0")), 0);
    let port = d.sockname(c).expect("sockname").port();
    assert_eq!(
        d.bind(e, SocketAddr::from(([127, 0, 0, 1], port))),
        0,
        "SO_REUSEPORT lets a second socket bind the port"
    );
    // An unknown option fails as Linux fails it.
    assert_eq!(
        d.getopt(s4, tcp, 9999, 4),
        Err(errno::ENOPROTOOPT),
        "unknown TCP option"
    );
}

#[test]
fn heartbeats_report_sockets_and_connections() {
    let mut d = Driver::start_with(common::Opts {
        heartbeat_ms: 100,
        ..common::Opts::default()
    });
    let (l, laddr) = d.tcp_listener(addr("127.0.0.1:0"), 4);
    let _c = native_connect(laddr);
    let _a = d.accept(l, T).expect("Accepted");
    let ok = d.wait_for(Duration::from_secs(3), |d| {
        d.heartbeats
            .last()
            .is_some_and(|h| h.listeners == 1 && h.connections == 1 && h.sockets_used == 2)
            && d.heartbeats.len() >= 3
    });
    assert!(ok, "heartbeats: {:#?}", d.heartbeats.last());
    let hb = d.heartbeats.clone();
    assert!(hb.len() >= 3, "at least 3 heartbeats at 100 ms in ≥ 0.3 s");
    for w in hb.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "heartbeat seq increments");
        assert!(w[1].uptime_ns > w[0].uptime_ns);
    }
    assert_eq!(hb[0].sockets_max, d.peer.max_sockets);
    let _ = (FlowState::Active, laddr);
}

/// The byte-for-byte checks above are only as good as `Pattern::verify`.
#[test]
fn pattern_check_detects_corruption() {
    let p = Pattern(9);
    let mut buf = vec![0u8; 1000];
    p.fill(12345, &mut buf);
    assert_eq!(p.verify(12345, &buf), None);
    assert!(
        p.verify(12346, &buf).is_some(),
        "shifted stream must not match"
    );
    assert!(
        Pattern(10).verify(12345, &buf).is_some(),
        "other seed must not match"
    );
    buf[777] ^= 1;
    assert_eq!(p.verify(12345, &buf), Some(777));
    let mut split = vec![0u8; 1000];
    p.fill(12345, &mut split[..3]);
    p.fill(12348, &mut split[3..]);
    buf[777] ^= 1;
    assert_eq!(split, buf, "chunking does not change the stream");
}
