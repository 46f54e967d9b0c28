//! Unit tests: socket-call semantics the app must see as on Linux
//! (regressions found by the end-to-end conformance tests).

use super::*;
use ins_protocol::control::{Control, Op};
use ins_protocol::msg::{Msg, OwnedMsg};
use std::net::SocketAddr;

fn driver() -> Driver {
    Driver::new(Config {
        window: 1000,
        ..Config::default()
    })
}

/// The first datagram of a never-bound socket places it; the `Open` frame
/// must be queued before any datagram, so no credit is given in that call.
#[test]
fn first_sendto_places_before_credit() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    out.clear();
    let h = d.new_socket(1, 2, 2, 0).unwrap();
    assert_eq!(d.send_credit(h, &mut out), None);
    assert!(
        matches!(out.first(), Some(Action::Send { inst, frame: OwnedMsg::Open { .. } }) if *inst == i1),
        "{out:?}"
    );
    assert!(matches!(out.last(), Some(Action::Resume { sock }) if *sock == h));
    out.clear();
    assert_eq!(d.send_credit(h, &mut out), Some((i1, h, 4096)));
    assert!(out.is_empty());
}

fn set_req(level: i32, name: i32, value: &[u8]) -> Control<'_> {
    Control {
        op: Op::SetOpt,
        seq: 3,
        status: 0,
        args: [level, name, 0, 0],
        addr: None,
        addr2: None,
        value,
    }
}

fn bind_req(addr: &str) -> Control<'static> {
    Control {
        op: Op::Bind,
        seq: 4,
        status: 0,
        args: [0; 4],
        addr: Some(addr.parse().unwrap()),
        addr2: None,
        value: &[],
    }
}

fn frames(out: &[Action]) -> Vec<OwnedMsg> {
    out.iter()
        .filter_map(|x| match x {
            Action::Send { frame, .. } => Some(*frame),
            _ => None,
        })
        .collect()
}

fn statuses(out: &[Action]) -> Vec<i32> {
    out.iter()
        .filter_map(|x| match x {
            Action::Reply(r) => Some(r.ctl.status),
            _ => None,
        })
        .collect()
}

fn answer(
    d: &mut Driver,
    inst: InstId,
    f: &OwnedMsg,
    errno: i32,
    value: &[u8],
    out: &mut Vec<Action>,
) {
    let m = f.borrowed();
    d.instance_frame(
        inst,
        &Msg::Reply {
            sock: m.sock(),
            req: m.req(),
            errno,
            value,
        },
        1,
        out,
    )
    .unwrap();
}

/// Linux validates every option in the kernel: the socket is placed and
/// the instance answers; a refused option is not remembered for replay.
#[test]
fn setsockopt_is_checked_by_the_instance() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    out.clear();
    let h = d.new_socket(1, 2, 1, 0).unwrap();
    let one = 1i32.to_ne_bytes();
    d.shim_request(1, &set_req(1, 9999, &one), Some(h), &mut out);
    assert!(statuses(&out).is_empty(), "answered by the instance");
    let f = frames(&out);
    assert!(matches!(f[0], OwnedMsg::Open { .. }), "{f:?}");
    assert!(matches!(f[1], OwnedMsg::SetOpt { name: 9999, .. }), "{f:?}");
    out.clear();
    answer(&mut d, i1, &f[0], 0, &[], &mut out);
    answer(&mut d, i1, &f[1], errno::ENOPROTOOPT, &[], &mut out);
    assert_eq!(statuses(&out), vec![errno::ENOPROTOOPT]);
    assert!(d.socks[&h].opts.is_empty(), "refused option remembered");
    out.clear();
    d.shim_request(1, &set_req(1, opt::SO_REUSEADDR, &one), Some(h), &mut out);
    let f = frames(&out);
    assert!(matches!(f[..], [OwnedMsg::SetOpt { .. }]), "{f:?}");
    out.clear();
    answer(&mut d, i1, &f[0], 0, &[], &mut out);
    assert_eq!(statuses(&out), vec![0]);
    assert!(d.socks[&h].app_flag(opt::SO_REUSEADDR));
}

/// Binds `h` (already placed or not) to `addr`, the instance choosing
/// `port` for port 0; returns the shim's status.
fn bind(d: &mut Driver, inst: InstId, h: Handle, addr: &str, port: u16) -> i32 {
    let mut out = Vec::new();
    d.shim_request(1, &bind_req(addr), Some(h), &mut out);
    loop {
        if let Some(&st) = statuses(&out).first() {
            return st;
        }
        let f = frames(&out);
        assert!(!f.is_empty(), "no reply and nothing sent: {out:?}");
        out.clear();
        for fr in &f {
            let wa = ins_protocol::msg::WireAddr::from(Some(SocketAddr::new(
                addr.parse::<SocketAddr>().unwrap().ip(),
                port,
            )));
            let value: &[u8] = if matches!(fr, OwnedMsg::GetSockName { .. }) {
                zerocopy::IntoBytes::as_bytes(&wa)
            } else {
                &[]
            };
            answer(d, inst, fr, 0, value, &mut out);
        }
    }
}

/// A port chosen by the kernel (bind to port 0) is in use for other app
/// sockets, as on Linux, even though instances bind with SO_REUSEPORT.
#[test]
fn bind_port_zero_learns_the_port_for_eaddrinuse() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let a = d.new_socket(1, 2, 1, 0).unwrap();
    assert_eq!(bind(&mut d, i1, a, "127.0.0.1:0", 40000), 0);
    assert_eq!(d.socks[&a].bound, Some("127.0.0.1:40000".parse().unwrap()));
    let b = d.new_socket(2, 2, 1, 0).unwrap();
    assert_eq!(bind(&mut d, i1, b, "127.0.0.1:40000", 0), errno::EADDRINUSE);
    assert_eq!(bind(&mut d, i1, b, "0.0.0.0:40000", 0), errno::EADDRINUSE);
    assert_eq!(bind(&mut d, i1, b, "127.0.0.2:40000", 0), 0);
    // UDP: the same port number is a different namespace.
    let u = d.new_socket(3, 2, 2, 0).unwrap();
    assert_eq!(bind(&mut d, i1, u, "127.0.0.1:40000", 0), 0);
}

/// A refused non-blocking connect: the driver end is shut before the app
/// end becomes writable; SO_ERROR says ECONNREFUSED once; connect() again
/// then says ECONNABORTED (Linux: still SS_CONNECTING, no pending error).
#[test]
fn refused_nonblocking_connect_then_connect_again() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let h = d.new_socket(1, 2, 1, 0).unwrap();
    let conn_req = |nb: i32| Control {
        op: Op::Connect,
        seq: 5,
        status: 0,
        args: [nb, 0, 0, 0],
        addr: Some("127.0.0.1:9".parse().unwrap()),
        addr2: None,
        value: &[],
    };
    out.clear();
    d.shim_request(1, &conn_req(1), Some(h), &mut out);
    assert_eq!(statuses(&out), vec![errno::EINPROGRESS]);
    let f = frames(&out);
    out.clear();
    answer(&mut d, i1, &f[0], 0, &[], &mut out);
    answer(&mut d, i1, &f[1], errno::EINPROGRESS, &[], &mut out);
    out.clear();
    d.instance_frame(
        i1,
        &Msg::Connected {
            sock: h,
            errno: errno::ECONNREFUSED,
            local: None,
            peer: None,
        },
        1,
        &mut out,
    )
    .unwrap();
    let reset = out
        .iter()
        .position(|a| matches!(a, Action::PeerReset { sock, .. } if *sock == h));
    let done = out
        .iter()
        .position(|a| matches!(a, Action::ConnectDone { sock, .. } if *sock == h));
    assert!(reset.is_some() && reset < done, "{out:?}");
    out.clear();
    d.shim_request(1, &req0(Op::TakeError), Some(h), &mut out);
    assert!(matches!(&out[..], [Action::Reply(r)] if r.ctl.args[0] == errno::ECONNREFUSED));
    out.clear();
    d.shim_request(1, &conn_req(1), Some(h), &mut out);
    assert_eq!(statuses(&out), vec![errno::ECONNABORTED]);
    // A second socket whose error was not taken: connect() reports it once.
    let h2 = d.new_socket(2, 2, 1, 0).unwrap();
    out.clear();
    d.shim_request(1, &conn_req(1), Some(h2), &mut out);
    let f = frames(&out);
    answer(&mut d, i1, &f[0], 0, &[], &mut out);
    answer(&mut d, i1, &f[1], errno::EINPROGRESS, &[], &mut out);
    d.instance_frame(
        i1,
        &Msg::Connected {
            sock: h2,
            errno: errno::ECONNREFUSED,
            local: None,
            peer: None,
        },
        1,
        &mut out,
    )
    .unwrap();
    out.clear();
    d.shim_request(1, &conn_req(1), Some(h2), &mut out);
    assert_eq!(statuses(&out), vec![errno::ECONNREFUSED]);
    out.clear();
    d.shim_request(1, &conn_req(1), Some(h2), &mut out);
    assert_eq!(statuses(&out), vec![errno::ECONNABORTED]);
}

fn req0(op: Op) -> Control<'static> {
    Control {
        op,
        seq: 6,
        status: 0,
        args: [0; 4],
        addr: None,
        addr2: None,
        value: &[],
    }
}

/// The shim's auto-bind before a datagram socket's first send binds the
/// wildcard address, learns the port, and is a no-op when already bound.
#[test]
fn datagram_autobind_reserves_the_port() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let u = d.new_socket(1, 2, 2, 0).unwrap();
    let mut auto = bind_req("0.0.0.0:0");
    auto.args[0] = 1;
    d.shim_request(1, &auto, Some(u), &mut out);
    let f = frames(&out);
    assert!(
        matches!(f[..], [OwnedMsg::Open { .. }, OwnedMsg::Bind { .. }]),
        "{f:?}"
    );
    out.clear();
    answer(&mut d, i1, &f[0], 0, &[], &mut out);
    answer(&mut d, i1, &f[1], 0, &[], &mut out);
    let f = frames(&out);
    assert!(matches!(f[..], [OwnedMsg::GetSockName { .. }]), "{f:?}");
    let wa = ins_protocol::msg::WireAddr::from(Some("0.0.0.0:41000".parse().unwrap()));
    out.clear();
    answer(
        &mut d,
        i1,
        &f[0],
        0,
        zerocopy::IntoBytes::as_bytes(&wa),
        &mut out,
    );
    assert_eq!(statuses(&out), vec![0]);
    out.clear();
    d.shim_request(1, &auto, Some(u), &mut out);
    assert_eq!(statuses(&out), vec![0], "second auto-bind is a no-op");
    let u2 = d.new_socket(2, 2, 2, 0).unwrap();
    assert_eq!(
        bind(&mut d, i1, u2, "127.0.0.1:41000", 0),
        errno::EADDRINUSE
    );
    // Auto-bind of a socket a connect already bound on the instance.
    let u3 = d.new_socket(3, 2, 2, 0).unwrap();
    out.clear();
    d.shim_request(1, &auto, Some(u3), &mut out);
    let f = frames(&out);
    out.clear();
    answer(&mut d, i1, &f[0], 0, &[], &mut out);
    answer(&mut d, i1, &f[1], errno::EINVAL, &[], &mut out);
    assert_eq!(statuses(&out), vec![0]);
    // Only the wildcard with port 0.
    let mut bad = bind_req("127.0.0.1:0");
    bad.args[0] = 1;
    out.clear();
    d.shim_request(1, &bad, Some(u3), &mut out);
    assert_eq!(statuses(&out), vec![errno::EINVAL]);
}

/// connect(AF_UNSPEC) on an unconnected datagram socket succeeds (Linux);
/// on a connected one it is refused until the ring protocol can say it.
#[test]
fn datagram_connect_unspec() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let u = d.new_socket(1, 2, 2, 0).unwrap();
    let mut unspec = req0(Op::Connect);
    unspec.args[0] = 0;
    out.clear();
    d.shim_request(1, &unspec, Some(u), &mut out);
    assert_eq!(statuses(&out), vec![0]);
    let mut c = bind_req("127.0.0.1:53");
    c.op = Op::Connect;
    out.clear();
    d.shim_request(1, &c, Some(u), &mut out);
    let f = frames(&out);
    out.clear();
    answer(&mut d, i1, &f[0], 0, &[], &mut out);
    answer(&mut d, i1, &f[1], 0, &[], &mut out);
    assert_eq!(statuses(&out), vec![0]);
    out.clear();
    d.shim_request(1, &unspec, Some(u), &mut out);
    assert_eq!(statuses(&out), vec![errno::EOPNOTSUPP]);
}
