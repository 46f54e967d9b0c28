//! The shim-facing control protocol against a real `ins-driver`, with and
//! without real `ins` instances.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use common::*;
use ins_protocol::control::Op;
use ins_protocol::msg::{
    PAIR_HEADER_LEN, PAIR_HEADER_MAGIC, PktInfo, PktInfo4, decode_pair_header, encode_pair_header,
};
use rustix::event::PollFlags;

const ENOTSOCK: i32 = 88;
const ENETDOWN: i32 = 100;
const EINPROGRESS: i32 = 115;
const ECONNREFUSED: i32 = 111;
const ECONNRESET: i32 = 104;
const EADDRINUSE: i32 = 98;

#[test]
fn ops_answered_without_instances() {
    let d = Driver::start(&[]);
    let mut c = Client::connect(&d.shim_path());
    let s = c.socket(AF_INET, STREAM);
    let r = c.op(Op::Identify, &s, [0; 4], None);
    assert_eq!((r.status, r.args), (0, [AF_INET, STREAM, 0, 0]));
    let r = c.op(Op::GetOpt, &s, [1, 3, 4, 0], None); // SO_TYPE
    assert_eq!((r.status, r.value.as_slice()), (0, &1i32.to_ne_bytes()[..]));
    let r = c.op(Op::GetOpt, &s, [1, 39, 4, 0], None); // SO_DOMAIN
    assert_eq!(r.value, AF_INET.to_ne_bytes());
    let r = c.op(Op::GetSockName, &s, [0; 4], None);
    assert_eq!(r.addr, Some("0.0.0.0:0".parse().unwrap()));
    let r = c.op(Op::GetPeerName, &s, [0; 4], None);
    assert_eq!(r.status, 107); // ENOTCONN
    let r = c.op(Op::Bind, &s, [0; 4], Some("127.0.0.1:0".parse().unwrap()));
    assert_eq!(r.status, ENETDOWN, "no instance to bind on");
    let r = c.op(Op::TakeError, &s, [0; 4], None);
    assert_eq!(r.args[0], 0);
    // An fd that is not an INS socket.
    let (p, _q) = rustix::pipe::pipe().unwrap();
    let r = c.call(Op::Identify, [0; 4], None, &[], Some(p.as_fd()));
    assert_eq!(r.status, ENOTSOCK);
    let other = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::empty(),
        None,
    )
    .unwrap();
    let r = c.call(Op::Identify, [0; 4], None, &[], Some(other.0.as_fd()));
    assert_eq!(r.status, ENOTSOCK);
    // Unsupported family/type.
    let r = c.call(Op::Socket, [1, STREAM, 0, 0], None, &[], None);
    assert_eq!(r.status, 97); // EAFNOSUPPORT
    // Malformed packet: the driver hangs up on that connection only.
    c.raw_send(&[0xff; 20]);
    assert!(c.closed_by_driver());
    let mut c2 = Client::connect(&d.shim_path());
    let _ = c2.socket(AF_INET, DGRAM);
}

fn listen(c: &mut Client, d: &Driver) -> (std::os::fd::OwnedFd, SocketAddr) {
    let _ = d;
    let l = c.socket(AF_INET, STREAM);
    let r = c.op(Op::Bind, &l, [0; 4], Some("127.0.0.1:0".parse().unwrap()));
    assert_eq!(r.status, 0, "bind");
    let r = c.op(Op::Listen, &l, [64, 0, 0, 0], None);
    assert_eq!(r.status, 0, "listen");
    let r = c.op(Op::GetSockName, &l, [0; 4], None);
    let addr = r.addr.unwrap();
    assert_ne!(addr.port(), 0);
    (l, addr)
}

fn accept(c: &mut Client, l: &std::os::fd::OwnedFd) -> (std::os::fd::OwnedFd, SocketAddr) {
    assert!(
        poll_fd(l.as_fd(), PollFlags::IN, 10_000).contains(PollFlags::IN),
        "token"
    );
    let tok = read_exact(l, 1);
    assert_eq!(tok.len(), 1);
    let r = c.op(Op::Accept, l, [0; 4], None);
    assert_eq!(r.status, 0, "accept");
    (r.fd.expect("connection fd"), r.addr.expect("peer"))
}

#[test]
fn listen_accept_and_data_through_instance() {
    let mut d = Driver::start(&[]);
    d.add_instance(1);
    let mut c = Client::connect(&d.shim_path());
    let (l, addr) = listen(&mut c, &d);
    // Double bind of the same port by another app socket: EADDRINUSE.
    let l2 = c.socket(AF_INET, STREAM);
    let r = c.op(Op::Bind, &l2, [0; 4], Some(addr));
    assert_eq!(r.status, EADDRINUSE);

    let mut native = TcpStream::connect(addr).unwrap();
    let (conn, peer) = accept(&mut c, &l);
    assert_eq!(peer, native.local_addr().unwrap());
    native.write_all(b"hello from outside").unwrap();
    assert_eq!(read_exact(&conn, 18), b"hello from outside");
    // A bigger transfer both ways (beyond one window).
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let big2 = big.clone();
    let t = std::thread::spawn(move || {
        native.write_all(&big2).unwrap();
        let mut back = vec![0u8; big2.len()];
        native.read_exact(&mut back).unwrap();
        assert_eq!(back, big2);
        native
    });
    let got = read_exact(&conn, big.len());
    assert_eq!(got, big);
    write_all(&conn, &got);
    let mut native = t.join().unwrap();
    // App shutdown(SHUT_WR) → the native peer reads EOF.
    let r = c.op(Op::Shutdown, &conn, [1, 0, 0, 0], None);
    assert_eq!(r.status, 0);
    let mut rest = Vec::new();
    native
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    native.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // Native close → app reads EOF.
    drop(native);
    assert!(poll_fd(conn.as_fd(), PollFlags::IN, 10_000).contains(PollFlags::IN));
    let mut b = [0u8; 8];
    assert_eq!(rustix::io::read(&conn, &mut b).unwrap(), 0);
}

#[test]
fn connect_out_blocking_nonblocking_and_refused() {
    let mut d = Driver::start(&[]);
    d.add_instance(1);
    let mut c = Client::connect(&d.shim_path());
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let saddr = server.local_addr().unwrap();

    // Blocking connect.
    let s = c.socket(AF_INET, STREAM);
    let r = c.op(Op::Connect, &s, [0; 4], Some(saddr));
    assert_eq!(r.status, 0);
    let (mut peer, _) = server.accept().unwrap();
    write_all(&s, b"ping");
    let mut b = [0u8; 4];
    peer.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    peer.write_all(b"pong").unwrap();
    assert_eq!(read_exact(&s, 4), b"pong");
    let r = c.op(Op::GetPeerName, &s, [0; 4], None);
    assert_eq!(r.addr, Some(saddr));
    let r = c.op(Op::Connect, &s, [0; 4], Some(saddr));
    assert_eq!(r.status, 106); // EISCONN

    // Non-blocking connect: EINPROGRESS, not writable until connected.
    let s2 = c.socket(AF_INET, STREAM);
    let r = c.op(Op::Connect, &s2, [1, 0, 0, 0], Some(saddr));
    assert_eq!(r.status, EINPROGRESS);
    assert!(
        poll_fd(s2.as_fd(), PollFlags::OUT, 10_000).contains(PollFlags::OUT),
        "EPOLLOUT on completion"
    );
    let r = c.op(Op::TakeError, &s2, [0; 4], None);
    assert_eq!(r.args[0], 0);
    let (mut peer2, _) = server.accept().unwrap();
    write_all(&s2, b"nb");
    peer2.read_exact(&mut b[..2]).unwrap();
    assert_eq!(&b[..2], b"nb");

    // Closed port: EINPROGRESS, then writable with SO_ERROR = ECONNREFUSED.
    let closed = {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        t.local_addr().unwrap()
    };
    let s3 = c.socket(AF_INET, STREAM);
    let r = c.op(Op::Connect, &s3, [1, 0, 0, 0], Some(closed));
    assert_eq!(r.status, EINPROGRESS);
    assert!(poll_fd(s3.as_fd(), PollFlags::OUT, 10_000).contains(PollFlags::OUT));
    let r = c.op(Op::GetOpt, &s3, [1, 4, 4, 0], None); // SO_ERROR
    assert_eq!(r.value, ECONNREFUSED.to_ne_bytes());
    let r = c.op(Op::TakeError, &s3, [0; 4], None);
    assert_eq!(r.args[0], 0, "SO_ERROR is cleared by reading");
    // Blocking connect to the closed port fails at once with the errno.
    let s4 = c.socket(AF_INET, STREAM);
    let r = c.op(Op::Connect, &s4, [0; 4], Some(closed));
    assert_eq!(r.status, ECONNREFUSED);
}

/// A driver with one instance, a client, a native UDP socket on loopback
/// and an INS UDP socket bound to `bind`.
fn udp_setup(bind: &str) -> (Driver, Client, UdpSocket, OwnedFd) {
    let mut d = Driver::start(&[]);
    d.add_instance(1);
    let mut c = Client::connect(&d.shim_path());
    let native = UdpSocket::bind("127.0.0.1:0").unwrap();
    native
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let u = c.socket(AF_INET, DGRAM);
    let r = c.op(Op::Bind, &u, [0; 4], Some(bind.parse().unwrap()));
    assert_eq!(r.status, 0);
    (d, c, native, u)
}

#[test]
fn udp_both_ways() {
    let (_d, mut c, native, u) = udp_setup("127.0.0.1:0");
    let naddr = native.local_addr().unwrap();
    let mut pkt = encode_pair_header(Some(naddr), &PktInfo::NONE, PAIR_HEADER_MAGIC).to_vec();
    pkt.extend_from_slice(b"datagram out");
    write_all(&u, &pkt);
    let mut b = [0u8; 64];
    let (n, from) = native.recv_from(&mut b).unwrap();
    assert_eq!(&b[..n], b"datagram out");
    native.send_to(b"datagram back", from).unwrap();
    assert!(poll_fd(u.as_fd(), PollFlags::IN, 10_000).contains(PollFlags::IN));
    let mut rb = [0u8; 128];
    let n = rustix::io::read(&u, &mut rb).unwrap();
    assert_eq!(
        decode_pair_header(&rb[..PAIR_HEADER_LEN]).unwrap(),
        (Some(naddr), PktInfo::NONE),
        "no packet information unless IP_PKTINFO is on"
    );
    assert_eq!(&rb[PAIR_HEADER_LEN..n], b"datagram back");
    let r = c.op(Op::GetSockName, &u, [0; 4], None);
    assert_eq!(r.addr, Some(from));
}

/// `IP_PKTINFO` through driver and instance: once on, a received
/// datagram's header carries what the instance's kernel reported (a
/// wildcard-bound socket: the destination, loopback's index); a sent
/// one's packet information picks the source address there.
#[test]
fn udp_pktinfo_both_ways() {
    let (d, mut c, native, u) = udp_setup("0.0.0.0:0");
    let on = 1i32.to_ne_bytes();
    let r = c.call(
        Op::SetOpt,
        [libc::IPPROTO_IP, libc::IP_PKTINFO, 0, 0],
        None,
        &on,
        Some(u.as_fd()),
    );
    assert_eq!(r.status, 0, "setsockopt(IP_PKTINFO)");
    let r = c.op(Op::GetSockName, &u, [0; 4], None);
    let port = r.addr.unwrap().port();
    let to: SocketAddr = format!("127.0.0.9:{port}").parse().unwrap();
    native.send_to(b"to 127.0.0.9", to).unwrap();
    assert!(poll_fd(u.as_fd(), PollFlags::IN, 10_000).contains(PollFlags::IN));
    let mut rb = [0u8; 128];
    let n = rustix::io::read(&u, &mut rb).unwrap();
    let (from, info) = decode_pair_header(&rb[..PAIR_HEADER_LEN]).unwrap();
    assert_eq!(from, Some(native.local_addr().unwrap()));
    assert_eq!(&rb[PAIR_HEADER_LEN..n], b"to 127.0.0.9");
    let lo: u32 = std::fs::read_to_string("/sys/class/net/lo/ifindex")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = PktInfo4 {
        ifindex: lo,
        spec_dst: "127.0.0.9".parse().unwrap(),
        addr: "127.0.0.9".parse().unwrap(),
    };
    assert_eq!(
        info,
        PktInfo {
            v4: Some(want),
            v6: None
        }
    );
    // The reply from the address the query went to.
    let reply = PktInfo {
        v4: Some(PktInfo4 {
            ifindex: 0,
            spec_dst: "127.0.0.9".parse().unwrap(),
            addr: "0.0.0.0".parse().unwrap(),
        }),
        v6: None,
    };
    // Packet information is validated like any wire input: a header whose
    // (absent) IPv6 part has a stray byte is dropped and logged.
    let mut bad = encode_pair_header(from, &reply, PAIR_HEADER_MAGIC).to_vec();
    bad[PAIR_HEADER_LEN - 10] = 1;
    bad.extend_from_slice(b"invalid");
    write_all(&u, &bad);
    let mut pkt = encode_pair_header(from, &reply, PAIR_HEADER_MAGIC).to_vec();
    pkt.extend_from_slice(b"from 127.0.0.9");
    write_all(&u, &pkt);
    let mut b = [0u8; 64];
    let (n, src) = native.recv_from(&mut b).unwrap();
    assert_eq!(&b[..n], b"from 127.0.0.9");
    assert_eq!(src, to, "the source the packet information chose");
    assert!(
        d.log_text().contains("invalid address header"),
        "the invalid header was not logged\n{}",
        d.log_text()
    );
}

#[test]
fn two_instances_replicated_listener_and_failover() {
    let mut d = Driver::start(&[]);
    let pid1 = d.add_instance(1);
    let _pid2 = d.add_instance(2);
    let mut c = Client::connect(&d.shim_path());
    let (l, addr) = listen(&mut c, &d);
    wait_for(
        || d.log_text().contains("listener replicated"),
        "replication",
    );
    // Many connections: both instances must announce some.
    let mut conns = Vec::new();
    for _ in 0..40 {
        let n = TcpStream::connect(addr).unwrap();
        let (a, _) = accept(&mut c, &l);
        conns.push((n, a));
    }
    let log = d.log_text();
    let on1 = log
        .lines()
        .filter(|l| l.contains("connection announced") && l.contains("inst=1"))
        .count();
    let on2 = log
        .lines()
        .filter(|l| l.contains("connection announced") && l.contains("inst=2"))
        .count();
    assert_eq!(on1 + on2, 40, "{log}");
    assert!(
        on1 > 0 && on2 > 0,
        "connections on both instances: {on1} / {on2}"
    );
    // Which accepted fds are on instance 1? Exchange data to be sure all work.
    for (n, a) in &mut conns {
        n.write_all(b"x").unwrap();
        assert_eq!(read_exact(a, 1), b"x");
    }
    // kill -9 instance 1.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid1 as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_for(
        || d.log_text().contains("instance declared dead"),
        "death noticed",
    );
    // Its connections are reset: the app reads EOF and TakeError says ECONNRESET.
    let mut resets = 0;
    for (_, a) in &conns {
        if poll_fd(a.as_fd(), PollFlags::IN, 50).contains(PollFlags::IN) {
            let mut b = [0u8; 4];
            if rustix::io::read(a, &mut b).unwrap() == 0 {
                let r = c.op(Op::TakeError, a, [0; 4], None);
                assert_eq!(r.args[0], ECONNRESET);
                resets += 1;
            }
        }
    }
    assert_eq!(
        resets, on1,
        "every connection of the dead instance was reset"
    );
    // The listener still serves, through the other instance.
    for _ in 0..5 {
        let mut n = TcpStream::connect(addr).unwrap();
        let (a, _) = accept(&mut c, &l);
        n.write_all(b"still").unwrap();
        assert_eq!(read_exact(&a, 5), b"still");
        write_all(&a, b"yes");
        let mut b = [0u8; 3];
        n.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"yes");
    }
    // A new instance joining gets the listener replayed.
    d.add_instance(3);
    wait_for(
        || d.log_text().matches("listener replicated").count() >= 2,
        "replay on join",
    );
    // The driver is still up.
    assert!(d.child.try_wait().unwrap().is_none());
}
