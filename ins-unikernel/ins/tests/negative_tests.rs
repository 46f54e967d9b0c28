//! Malformed and hostile input from the driver side. Each case must get an
//! error reply or a reset, and afterwards a connection opened before it on
//! another socket must still carry data both ways.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Driver, Opts, echo_round_trip, echo_server, errno, raw_header};
use ins_protocol::msg::{HEADER_LEN, Kind, MAX_OPT_LEN, Msg};

const T: Duration = Duration::from_secs(10);

/// An instance with one healthy connection to a native echo server.
fn setup(opts: Opts) -> (Driver, u32, SocketAddr) {
    let echo = echo_server("127.0.0.1:0".parse().expect("a"));
    let mut d = Driver::start_with(opts);
    let (h, _) = d.connect_tcp(echo);
    echo_round_trip(&mut d, h, b"before");
    (d, h, echo)
}

fn still_works(d: &mut Driver, h: u32) {
    assert!(d.alive(), "the instance died");
    echo_round_trip(d, h, b"after the hostile input, still serving");
    assert_eq!(d.reset_errno(h), None, "the healthy socket was reset");
}

fn is_decode_errno(e: i32) -> bool {
    e == errno::EINVAL || e == errno::EPROTO
}

#[test]
fn bad_socket_id_gets_ebadf() {
    let (mut d, h, _) = setup(Opts::default());
    for sock in [999u32, 0x7fff_fff0, 0x8000_1234] {
        let r = d.request(&Msg::GetOpt {
            sock,
            req: 0,
            level: libc::SOL_SOCKET,
            name: libc::SO_TYPE,
            max_len: 4,
        });
        assert_eq!(r.errno, errno::EBADF, "GetOpt on unknown socket {sock:#x}");
        assert_eq!(r.sock, sock, "Reply echoes the socket id");
        assert_eq!(
            d.request(&Msg::Close { sock, req: 0 }).errno,
            errno::EBADF,
            "Close of unknown socket {sock:#x}"
        );
    }
    assert_eq!(
        d.request(&Msg::Listen {
            sock: 4242,
            req: 0,
            backlog: 1
        })
        .errno,
        errno::EBADF
    );
    // Opening an id that is in use must not replace the open socket.
    let r = d.request(&Msg::Open {
        sock: h,
        req: 0,
        family: ins_protocol::msg::Family::Inet,
        ty: ins_protocol::msg::SockType::Stream,
        proto: 0,
    });
    assert_ne!(r.errno, 0, "Open of an id already in use must fail");
    still_works(&mut d, h);
}

#[test]
fn unknown_kind_gets_an_error_reply() {
    let (mut d, h, _) = setup(Opts::default());
    let mut frame = raw_header(0x7fff, 0, 0, 0).to_vec();
    let req = d.submit_raw(&mut frame);
    let r = d.wait_reply(req, T);
    assert!(is_decode_errno(r.errno), "unknown kind: errno {}", r.errno);
    // With a body and a socket id too.
    let mut frame = raw_header(0x7fff, 4, h, 0).to_vec();
    frame.extend_from_slice(&[1, 2, 3, 4]);
    let req = d.submit_raw(&mut frame);
    assert!(is_decode_errno(d.wait_reply(req, T).errno));
    // Non-zero flags on a known kind.
    let mut frame = raw_header(Kind::Close as u16, 0, h, 0).to_vec();
    frame[2] = 1;
    let req = d.submit_raw(&mut frame);
    assert!(is_decode_errno(d.wait_reply(req, T).errno));
    // A header whose length disagrees with the frame.
    let mut frame = raw_header(Kind::Close as u16, 100, h, 0).to_vec();
    let req = d.submit_raw(&mut frame);
    assert!(is_decode_errno(d.wait_reply(req, T).errno));
    // A frame shorter than a header: nothing to echo, but no crash.
    d.send_raw(&[1, 2, 3]);
    still_works(&mut d, h);
}

#[test]
fn oversized_option_gets_an_error_reply() {
    let (mut d, h, _) = setup(Opts::default());
    let s = d.open_tcp(false);
    // SetOpt with a 300-byte value, hand-crafted (the encoder refuses it).
    let len = 300usize;
    assert!(len > MAX_OPT_LEN);
    let mut frame = raw_header(Kind::SetOpt as u16, (8 + len) as u32, s, 0).to_vec();
    frame.extend_from_slice(&libc::SOL_SOCKET.to_le_bytes());
    frame.extend_from_slice(&libc::SO_SNDBUF.to_le_bytes());
    frame.extend(std::iter::repeat_n(0xa5u8, len));
    assert_eq!(frame.len(), HEADER_LEN + 8 + len);
    let req = d.submit_raw(&mut frame);
    let r = d.wait_reply(req, T);
    assert!(
        is_decode_errno(r.errno),
        "oversized SetOpt: errno {}",
        r.errno
    );
    // GetOpt asking for more than MAX_OPT_LEN.
    let mut frame = raw_header(Kind::GetOpt as u16, 16, s, 0).to_vec();
    frame.extend_from_slice(&libc::SOL_SOCKET.to_le_bytes());
    frame.extend_from_slice(&libc::SO_SNDBUF.to_le_bytes());
    frame.extend_from_slice(&1000u32.to_le_bytes());
    frame.extend_from_slice(&0u32.to_le_bytes());
    let req = d.submit_raw(&mut frame);
    assert!(is_decode_errno(d.wait_reply(req, T).errno));
    // A too-short option for an int option fails as Linux fails it.
    assert_eq!(
        d.setopt(s, libc::SOL_SOCKET, libc::SO_SNDBUF, &[1]),
        errno::EINVAL
    );
    // The socket itself still works.
    assert_eq!(d.setopt_int(s, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1), 0);
    assert_eq!(d.getopt_int(s, libc::IPPROTO_TCP, libc::TCP_NODELAY), Ok(1));
    still_works(&mut d, h);
}

/// Data after the driver's own `Eof` (write side closed) is a protocol
/// error: `Reset{EPIPE}`. Data, `Eof` and `Credit` for a socket already
/// `Closed` (or never opened) are stray frames the instance ignores, as the
/// executor documents: answering them with a `Reset` would name an id the
/// driver may already have reused.
#[test]
fn data_for_closed_socket() {
    let (mut d, h, echo) = setup(Opts::default());
    let (s, _) = d.connect_tcp(echo);
    echo_round_trip(&mut d, s, b"x");
    d.send_eof(s);
    d.send_data_frame(s, b"data after our own Eof");
    let e = d.wait_event(s, T, |e| match *e {
        common::Event::Reset(e) => Some(e),
        _ => None,
    });
    assert_eq!(
        e,
        Some(errno::EPIPE),
        "Data after Eof must reset with EPIPE"
    );
    let _ = d.request(&Msg::Close { sock: s, req: 0 });

    let (c, _) = d.connect_tcp(echo);
    assert_eq!(d.close(c), 0);
    d.send_data_frame(c, b"data after Closed");
    d.send_data_frame(4711, b"nobody home");
    d.send_eof(4712);
    d.send_msg(&Msg::Credit {
        sock: 4713,
        bytes: 1000,
    });
    d.pump_for(Duration::from_millis(300));
    for sock in [c, 4711, 4712, 4713] {
        assert_eq!(
            d.events(sock)
                .iter()
                .find(|e| !matches!(e, common::Event::Closed)),
            None,
            "stray frame for {sock} must not produce events"
        );
    }
    still_works(&mut d, h);
}

/// The driver sends far more than the instance's window without waiting
/// for credit, to a peer that does not read (with small socket buffers so
/// the instance cannot have credited it all back): the instance resets
/// that socket with EPROTO and keeps serving the others.
#[test]
fn window_overrun_resets_the_socket() {
    let window = 64 * 1024;
    let (mut d, h, _) = setup(Opts {
        window,
        ..Opts::default()
    });
    let sink =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sink.set_recv_buffer_size(4096).expect("rcvbuf");
    sink.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("a").into())
        .expect("bind");
    sink.listen(4).expect("listen");
    let saddr = sink.local_addr().expect("a").as_socket().expect("inet");
    let (s, _) = d.connect_tcp(saddr);
    let (_peer, _) = sink.accept().expect("accept"); // never read
    assert_eq!(d.setopt_int(s, libc::SOL_SOCKET, libc::SO_SNDBUF, 4096), 0);
    let chunk = vec![0x5au8; 16 * 1024];
    let total = window as usize + 512 * 1024;
    let mut sent = 0;
    while sent < total && d.reset_errno(s).is_none() {
        d.send_data_frame(s, &chunk);
        sent += chunk.len();
        d.poll_frames();
    }
    let e = d.wait_event(s, T, |e| match *e {
        common::Event::Reset(e) => Some(e),
        _ => None,
    });
    assert_eq!(
        e,
        Some(errno::EPROTO),
        "overrunning the window by {} bytes must reset the socket with EPROTO",
        sent - window as usize
    );
    still_works(&mut d, h);
}

#[test]
fn hostile_credit_and_garbage_do_not_hurt_other_sockets() {
    let (mut d, h, echo) = setup(Opts::default());
    let (s, _) = d.connect_tcp(echo);
    // Credit that would overflow a 32-bit window counter.
    for _ in 0..4 {
        d.send_msg(&Msg::Credit {
            sock: s,
            bytes: u32::MAX,
        });
    }
    // Random garbage frames.
    let mut x = 0x1234_5678_9abc_def0u64;
    for i in 0..200 {
        let len = 1 + (i * 7) % 200;
        let mut f = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.push(x as u8);
        }
        // Keep the request id 0 so answers (if any) land in req0_replies.
        if f.len() >= HEADER_LEN {
            f[12..16].fill(0);
        }
        d.send_raw(&f);
    }
    d.pump_for(Duration::from_millis(300));
    still_works(&mut d, h);
    // The socket that received the hostile credit still works too.
    echo_round_trip(&mut d, s, b"hostile credit ignored or capped");
}
