//! The port table against real Linux: every case of a matrix of two
//! binds (TCP and UDP; IPv4 and IPv6 wildcards, loopbacks and v4-mapped
//! addresses; `IPV6_V6ONLY` set, cleared or left at the default;
//! `SO_REUSEADDR`, `SO_REUSEPORT`; the first socket listening or not) is
//! performed natively on this host's loopback and through the driver, and
//! the second `bind()` (then its `listen()`) must get the same errno.

use super::*;
use ins_protocol::control::{Control, Op};
use ins_protocol::msg::{Msg, OwnedMsg, WireAddr};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Copy)]
struct Side {
    ip: &'static str,
    reuseaddr: bool,
    reuseport: bool,
    /// `None`: the system default.
    v6only: Option<bool>,
}

impl Side {
    fn v6(&self) -> bool {
        self.ip.contains(':')
    }
}

const IPS: [&str; 6] = [
    "0.0.0.0",
    "127.0.0.1",
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "127.0.0.2",
];

fn bindv6only() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|s| s.trim() == "1")
}

fn errno_of(r: std::io::Result<()>) -> i32 {
    r.err().map_or(0, |e| e.raw_os_error().unwrap_or(-1))
}

/// The native socket for `side`, options set, not bound.
fn native(tcp: bool, side: Side) -> Socket {
    let dom = if side.v6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let (ty, proto) = if tcp {
        (Type::STREAM, Protocol::TCP)
    } else {
        (Type::DGRAM, Protocol::UDP)
    };
    let s = Socket::new(dom, ty, Some(proto)).unwrap();
    s.set_reuse_address(side.reuseaddr).unwrap();
    s.set_reuse_port(side.reuseport).unwrap();
    if let (true, Some(v)) = (side.v6(), side.v6only) {
        s.set_only_v6(v).unwrap();
    }
    s
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// A port free for TCP and UDP on both families right now.
fn free_port() -> u16 {
    loop {
        let t = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
        t.set_only_v6(false).unwrap();
        t.bind(&SockAddr::from(addr("::", 0))).unwrap();
        let p = t.local_addr().unwrap().as_socket().unwrap().port();
        let u = Socket::new(Domain::IPV6, Type::DGRAM, None).unwrap();
        u.set_only_v6(false).unwrap();
        if u.bind(&SockAddr::from(addr("::", p))).is_ok() {
            return p;
        }
    }
}

/// Native: errnos of the second bind and (TCP, if it bound) its listen;
/// `None` if the first socket cannot be set up (not a case).
fn run_native(tcp: bool, a: Side, listen_a: bool, b: Side, port: u16) -> Option<(i32, i32)> {
    let sa = native(tcp, a);
    sa.bind(&SockAddr::from(addr(a.ip, port))).ok()?;
    if listen_a {
        sa.listen(16).ok()?;
    }
    let sb = native(tcp, b);
    let eb = errno_of(sb.bind(&SockAddr::from(addr(b.ip, port))));
    let el = if tcp && eb == 0 {
        errno_of(sb.listen(16))
    } else {
        0
    };
    Some((eb, el))
}

/// Answers `f` with success (`GetSockName` with `h`'s bound address).
fn answer_ok(d: &mut Driver, inst: InstId, h: Handle, f: &OwnedMsg, out: &mut Vec<Action>) {
    let name = WireAddr::from(d.socks.get(&h).and_then(|s| s.bound));
    let value: &[u8] = if matches!(f, OwnedMsg::GetSockName { .. }) {
        zerocopy::IntoBytes::as_bytes(&name)
    } else {
        &[]
    };
    let m = f.borrowed();
    d.instance_frame(
        inst,
        &Msg::Reply {
            sock: m.sock(),
            req: m.req(),
            errno: 0,
            value,
        },
        1,
        out,
    )
    .unwrap();
}

/// Sends `req` and answers every frame the driver sends with success
/// (what the reply causes too: replication, address queries), so the
/// next call starts clean; returns the shim's status.
fn drive(d: &mut Driver, inst: InstId, h: Handle, req: &Control<'_>) -> i32 {
    let mut out = Vec::new();
    d.shim_request(1, req, Some(h), &mut out);
    let mut status = None;
    while !out.is_empty() {
        let batch = std::mem::take(&mut out);
        for x in batch {
            match x {
                Action::Reply(r) => status = status.or(Some(r.ctl.status)),
                Action::Send { frame, .. } => answer_ok(d, inst, h, &frame, &mut out),
                _ => {}
            }
        }
    }
    status.unwrap_or_else(|| panic!("no reply to {req:?}"))
}

fn ctl(op: Op, args: [i32; 4], addr: Option<SocketAddr>, value: &[u8]) -> Control<'_> {
    Control {
        op,
        seq: 9,
        status: 0,
        args,
        addr,
        addr2: None,
        value,
    }
}

fn driver_socket(d: &mut Driver, inst: InstId, inode: u64, tcp: bool, side: Side) -> Handle {
    let h = d
        .new_socket(
            inode,
            if side.v6() { 10 } else { 2 },
            if tcp { 1 } else { 2 },
            0,
        )
        .unwrap();
    let mut set = |level: i32, name: i32, v: bool| {
        let val = i32::from(v).to_ne_bytes();
        let st = drive(
            d,
            inst,
            h,
            &ctl(Op::SetOpt, [level, name, 0, 0], None, &val),
        );
        assert_eq!(st, 0);
    };
    set(opt::SOL_SOCKET, opt::SO_REUSEADDR, side.reuseaddr);
    set(opt::SOL_SOCKET, opt::SO_REUSEPORT, side.reuseport);
    if let (true, Some(v)) = (side.v6(), side.v6only) {
        set(opt::IPPROTO_IPV6, opt::IPV6_V6ONLY, v);
    }
    h
}

/// The driver: the same sequence; the instance answers every call with
/// success, so only the driver's port table can refuse.
fn run_driver(tcp: bool, a: Side, listen_a: bool, b: Side, port: u16) -> (i32, i32) {
    let mut d = Driver::new(Config {
        window: 1000,
        bindv6only: bindv6only(),
        ..Config::default()
    });
    let mut out = Vec::new();
    let inst = d.instance_joined(0, 4096, &mut out);
    let ha = driver_socket(&mut d, inst, 1, tcp, a);
    let bind = |ip: &str| ctl(Op::Bind, [0; 4], Some(addr(ip, port)), &[]);
    assert_eq!(drive(&mut d, inst, ha, &bind(a.ip)), 0);
    if listen_a {
        assert_eq!(
            drive(&mut d, inst, ha, &ctl(Op::Listen, [16, 0, 0, 0], None, &[])),
            0
        );
    }
    let hb = driver_socket(&mut d, inst, 2, tcp, b);
    let eb = drive(&mut d, inst, hb, &bind(b.ip));
    let el = if tcp && eb == 0 {
        drive(&mut d, inst, hb, &ctl(Op::Listen, [16, 0, 0, 0], None, &[]))
    } else {
        0
    };
    (eb, el)
}

fn sides() -> Vec<Side> {
    let mut v = Vec::new();
    for ip in IPS {
        for (reuseaddr, reuseport) in [(false, false), (true, false), (false, true)] {
            let v6o: &[Option<bool>] = if ip.contains(':') {
                &[None, Some(false), Some(true)]
            } else {
                &[None]
            };
            for &v6only in v6o {
                if ip.starts_with("::ffff:") && v6only.unwrap_or(bindv6only()) {
                    // EINVAL from the instance's kernel, not a port rule.
                    continue;
                }
                v.push(Side {
                    ip,
                    reuseaddr,
                    reuseport,
                    v6only,
                });
            }
        }
    }
    v
}

/// Every pair of bindings, natively and through the driver: same errnos.
#[test]
fn bind_rules_match_linux() {
    let all = sides();
    let mut cases = 0;
    let mut diffs = Vec::new();
    for tcp in [true, false] {
        for &a in &all {
            for &b in &all {
                for listen_a in if tcp {
                    &[false, true][..]
                } else {
                    &[false][..]
                } {
                    let port = free_port();
                    let Some(native) = run_native(tcp, a, *listen_a, b, port) else {
                        continue;
                    };
                    cases += 1;
                    let ours = run_driver(tcp, a, *listen_a, b, port);
                    if native != ours {
                        diffs.push(format!(
                            "{} {a:?} listen={listen_a} then {b:?}: linux {native:?}, driver {ours:?}",
                            if tcp { "tcp" } else { "udp" }
                        ));
                    }
                }
            }
        }
    }
    assert!(cases > 1000, "only {cases} cases ran");
    assert!(
        diffs.is_empty(),
        "{} of {cases} differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// The app closed a listener: its port is free at once (Linux), although
/// the instance has not confirmed the close yet.
#[test]
fn port_free_right_after_app_close() {
    let mut d = Driver::new(Config {
        window: 1000,
        ..Config::default()
    });
    let mut out = Vec::new();
    let inst = d.instance_joined(0, 4096, &mut out);
    let side = Side {
        ip: "127.0.0.1",
        reuseaddr: true,
        reuseport: false,
        v6only: None,
    };
    let bind = ctl(Op::Bind, [0; 4], Some(addr("127.0.0.1", 5555)), &[]);
    let listen = ctl(Op::Listen, [16, 0, 0, 0], None, &[]);
    let a = driver_socket(&mut d, inst, 1, true, side);
    assert_eq!(drive(&mut d, inst, a, &bind), 0);
    assert_eq!(drive(&mut d, inst, a, &listen), 0);
    let b = driver_socket(&mut d, inst, 2, true, side);
    assert_eq!(drive(&mut d, inst, b, &bind), errno::EADDRINUSE);
    out.clear();
    d.app_eof(a, true, &mut out);
    assert!(
        out.iter().any(|x| matches!(
            x,
            Action::Send {
                frame: OwnedMsg::Close { .. },
                ..
            }
        )),
        "{out:?}"
    );
    assert!(d.socks.contains_key(&a), "still closing on the instance");
    assert_eq!(drive(&mut d, inst, b, &bind), 0);
    // listen() itself is answered once the old listener is released
    // (no client may land in it after listen() returned).
    out.clear();
    d.shim_request(1, &listen, Some(b), &mut out);
    while out.iter().any(|x| matches!(x, Action::Send { .. })) {
        let batch = std::mem::take(&mut out);
        for x in batch {
            if let Action::Send { frame, .. } = x {
                answer_ok(&mut d, inst, b, &frame, &mut out);
            } else {
                assert!(!matches!(x, Action::Reply(_)), "answered early: {x:?}");
            }
        }
    }
    d.instance_frame(inst, &Msg::Closed { sock: a }, 1, &mut out)
        .unwrap();
    assert!(
        out.iter()
            .any(|x| matches!(x, Action::Reply(r) if r.ctl.op == Op::Listen && r.ctl.status == 0)),
        "{out:?}"
    );
}

/// A connection the instance accepted on a listener the app has just
/// closed (iperf3 closes and reopens its listener between tests): the
/// driver closes it and takes the instance's frames for it until it is
/// released — no violation, no instance lost.
#[test]
fn connection_accepted_on_a_closing_listener_is_closed() {
    let mut d = Driver::new(Config {
        window: 1000,
        ..Config::default()
    });
    let mut out = Vec::new();
    let inst = d.instance_joined(0, 4096, &mut out);
    let side = Side {
        ip: "127.0.0.1",
        reuseaddr: true,
        reuseport: false,
        v6only: None,
    };
    let l = driver_socket(&mut d, inst, 1, true, side);
    let bind = ctl(Op::Bind, [0; 4], Some(addr("127.0.0.1", 5556)), &[]);
    assert_eq!(drive(&mut d, inst, l, &bind), 0);
    let listen = ctl(Op::Listen, [16, 0, 0, 0], None, &[]);
    assert_eq!(drive(&mut d, inst, l, &listen), 0);
    let wire = d.socks[&l].wire;
    out.clear();
    d.app_eof(l, true, &mut out);
    out.clear();
    let conn = ins_protocol::msg::INSTANCE_SOCK_BIT | 7;
    let accepted = Msg::Accepted {
        listener: wire,
        sock: conn,
        peer: addr("127.0.0.1", 40000),
        local: addr("127.0.0.1", 5556),
    };
    d.instance_frame(inst, &accepted, 1, &mut out).unwrap();
    let close = out.iter().find_map(|x| match x {
        Action::Send {
            frame: f @ OwnedMsg::Close { sock, .. },
            ..
        } if *sock == conn => Some(*f),
        _ => None,
    });
    let close = close.unwrap_or_else(|| panic!("no Close for the connection: {out:?}"));
    assert!(
        !out.iter()
            .any(|x| matches!(x, Action::NewConnection { .. })),
        "{out:?}"
    );
    // The instance's frames for it until it is released are no violation.
    let data = Msg::Data {
        sock: conn,
        bytes: b"late",
    };
    d.instance_frame(inst, &data, 1, &mut out).unwrap();
    d.instance_frame(inst, &Msg::Eof { sock: conn }, 1, &mut out)
        .unwrap();
    let m = close.borrowed();
    d.instance_frame(
        inst,
        &Msg::Reply {
            sock: m.sock(),
            req: m.req(),
            errno: 0,
            value: &[],
        },
        1,
        &mut out,
    )
    .unwrap();
    d.instance_frame(inst, &Msg::Closed { sock: conn }, 1, &mut out)
        .unwrap();
    assert!(
        !d.socks.values().any(|s| s.wire == conn),
        "the connection is still in the table"
    );
}
