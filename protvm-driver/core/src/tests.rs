//! Unit tests: the decisions, and hostile instances.

use super::*;
use ins_protocol::control::{Control, Op};
use ins_protocol::msg::{Family, INSTANCE_SOCK_BIT, Msg, OwnedMitigation, OwnedMsg, SockType};
use proptest::prelude::*;
use std::net::SocketAddr;

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn req(op: Op, args: [i32; 4], addr: Option<SocketAddr>) -> Control<'static> {
    Control {
        op,
        seq: 7,
        status: 0,
        args,
        addr,
        addr2: None,
        value: &[],
    }
}

/// Frames sent to `inst`, in order.
fn sent(out: &[Action], inst: InstId) -> Vec<OwnedMsg> {
    out.iter()
        .filter_map(|x| match x {
            Action::Send { inst: i, frame } if *i == inst => Some(*frame),
            _ => None,
        })
        .collect()
}

fn replies(out: &[Action]) -> Vec<ShimReply> {
    out.iter()
        .filter_map(|x| {
            if let Action::Reply(r) = x {
                Some(*r)
            } else {
                None
            }
        })
        .collect()
}

fn req_of(f: &OwnedMsg) -> u32 {
    f.req()
}

/// Answers every request in `frames` with success (GetSockName with `name`).
fn ok_all(
    d: &mut Driver,
    inst: InstId,
    frames: &[OwnedMsg],
    name: SocketAddr,
    out: &mut Vec<Action>,
) {
    for f in frames {
        let r = req_of(f);
        if r == 0 {
            continue;
        }
        let wa = ins_protocol::msg::WireAddr::from(Some(name));
        let value: &[u8] = if matches!(f, OwnedMsg::GetSockName { .. }) {
            zerocopy_bytes(&wa)
        } else {
            &[]
        };
        let sock = f.sock();
        d.instance_frame(
            inst,
            &Msg::Reply {
                sock,
                req: r,
                errno: 0,
                value,
            },
            1,
            out,
        )
        .unwrap();
    }
}

fn zerocopy_bytes(w: &ins_protocol::msg::WireAddr) -> &[u8] {
    use zerocopy::IntoBytes;
    w.as_bytes()
}

fn driver() -> Driver {
    Driver::new(Config {
        window: 1000,
        ..Config::default()
    })
}

/// A listening socket replicated on `insts` (all joined before).
fn listener(d: &mut Driver, insts: &[InstId]) -> Handle {
    let mut out = Vec::new();
    let h = d.new_socket(100, 2, 1, 0).unwrap();
    d.shim_request(
        1,
        &req(Op::Bind, [0; 4], Some(a("127.0.0.1:8080"))),
        Some(h),
        &mut out,
    );
    let first = insts[0];
    let f = sent(&out, first);
    out.clear();
    ok_all(d, first, &f, a("127.0.0.1:8080"), &mut out);
    assert_eq!(replies(&out)[0].ctl.status, 0);
    out.clear();
    d.shim_request(1, &req(Op::Listen, [16, 0, 0, 0], None), Some(h), &mut out);
    let f = sent(&out, first);
    out.clear();
    ok_all(d, first, &f, a("127.0.0.1:8080"), &mut out);
    assert_eq!(replies(&out)[0].ctl.status, 0);
    // The program keeps a copy of the driver's end of a listener's pair.
    assert_eq!(replies(&out)[0].fd, ReplyFd::Keeper(h));
    // The GetSockName for replication.
    let f = sent(&out, first);
    let mut out2 = Vec::new();
    ok_all(d, first, &f, a("127.0.0.1:8080"), &mut out2);
    for &o in &insts[1..] {
        let f = sent(&out2, o);
        assert!(
            matches!(f.last(), Some(OwnedMsg::Listen { backlog: 16, .. })),
            "{f:?}"
        );
        assert!(f.iter().any(|x| matches!(
            x,
            OwnedMsg::SetOpt {
                name: opt::SO_REUSEPORT,
                ..
            }
        )));
        let mut o3 = Vec::new();
        ok_all(d, o, &f, a("127.0.0.1:8080"), &mut o3);
    }
    h
}

fn accepted(listener: u32, sock: u32) -> Msg<'static> {
    Msg::Accepted {
        listener,
        sock,
        peer: a("10.0.0.1:5555"),
        local: a("127.0.0.1:8080"),
    }
}

#[test]
fn listener_replicated_and_replayed_on_join() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let i2 = d.instance_joined(0, 4096, &mut out);
    let l = listener(&mut d, &[i1, i2]);
    assert_eq!(d.socket(l).unwrap().replicas, vec![i1, i2]);
    out.clear();
    let i3 = d.instance_joined(0, 4096, &mut out);
    let f = sent(&out, i3);
    assert!(matches!(f[0], OwnedMsg::Open { sock, .. } if sock == l));
    assert!(matches!(
        f.last(),
        Some(OwnedMsg::Bind { .. }) | Some(OwnedMsg::Listen { .. })
    ));
    assert_eq!(d.socket(l).unwrap().replicas, vec![i1, i2, i3]);
}

/// A listener's keeper ([`ReplyFd::Keeper`]) comes with every successful
/// `listen()` (a repeated one too) and with `Identify` (after exec); other
/// sockets get none.
#[test]
fn listener_answers_carry_the_keeper() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let l = listener(&mut d, &[i1]);
    for op in [Op::Listen, Op::Identify] {
        out.clear();
        d.shim_request(1, &req(op, [16, 0, 0, 0], None), Some(l), &mut out);
        let r = replies(&out);
        assert_eq!((r.len(), r[0].ctl.status), (1, 0), "{op:?}: {out:?}");
        assert_eq!(r[0].fd, ReplyFd::Keeper(l), "{op:?}");
    }
    let s = d.new_socket(200, 2, 1, 0).unwrap();
    out.clear();
    d.shim_request(1, &req(Op::Identify, [0; 4], None), Some(s), &mut out);
    assert_eq!(replies(&out)[0].fd, ReplyFd::None);
}

/// Every successful `bind()` of a datagram socket (explicit, to a port or
/// to port 0 whose answer waits for the port, or the shim's auto-bind
/// before a first send, also on a socket already bound) and a datagram
/// `connect()` carry the keeper; a stream's bind does not.
#[test]
fn datagram_bind_and_connect_answers_carry_the_keeper() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let bind = |auto, at| (Op::Bind, [auto, 0, 0, 0], a(at));
    let connect = (Op::Connect, [0; 4], a("127.0.0.1:53"));
    let cases = [
        (2, vec![bind(0, "127.0.0.1:5353")], true),
        (2, vec![bind(0, "127.0.0.1:0")], true),
        (2, vec![bind(1, "0.0.0.0:0")], true),
        (2, vec![connect], true),
        (2, vec![connect, bind(1, "0.0.0.0:0")], true),
        (
            2,
            vec![bind(0, "127.0.0.1:5355"), bind(1, "0.0.0.0:0")],
            true,
        ),
        (1, vec![bind(0, "127.0.0.1:5354")], false),
    ];
    for (n, (ty, calls, keeper)) in cases.into_iter().enumerate() {
        let h = d.new_socket(300 + n as u64, 2, ty, 0).unwrap();
        for (op, args, at) in calls {
            out.clear();
            d.shim_request(1, &req(op, args, Some(at)), Some(h), &mut out);
            let mut r = replies(&out);
            // Answer the instance's requests until the shim has its reply
            // (a bind to port 0 asks the chosen port first).
            for _ in 0..3 {
                if !r.is_empty() {
                    break;
                }
                let f = sent(&out, i1);
                out.clear();
                ok_all(&mut d, i1, &f, a("127.0.0.1:40000"), &mut out);
                r = replies(&out);
            }
            assert_eq!((r.len(), r[0].ctl.status), (1, 0), "{op:?} {at}: {out:?}");
            let want = if keeper {
                ReplyFd::Keeper(h)
            } else {
                ReplyFd::None
            };
            assert_eq!(r[0].fd, want, "type {ty}, {op:?} {args:?} {at}");
        }
        // After exec (Identify), every bound or connected datagram socket
        // is kept.
        out.clear();
        d.shim_request(1, &req(Op::Identify, [0; 4], None), Some(h), &mut out);
        let want = if ty == 2 {
            ReplyFd::Keeper(h)
        } else {
            ReplyFd::None
        };
        assert_eq!(replies(&out)[0].fd, want, "Identify: type {ty}, case {n}");
    }
}

#[test]
fn accept_queue_fed_by_all_instances_and_credit_returned() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let i2 = d.instance_joined(0, 4096, &mut out);
    let l = listener(&mut d, &[i1, i2]);
    out.clear();
    d.instance_frame(i1, &accepted(l, INSTANCE_SOCK_BIT | 5), 1, &mut out)
        .unwrap();
    d.instance_frame(i2, &accepted(l, INSTANCE_SOCK_BIT | 5), 1, &mut out)
        .unwrap();
    let news: Vec<Handle> = out
        .iter()
        .filter_map(|x| {
            if let Action::NewConnection { sock, .. } = x {
                Some(*sock)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(news.len(), 2);
    assert_eq!(
        out.iter()
            .filter(|x| matches!(x, Action::Token { .. }))
            .count(),
        2
    );
    assert_eq!(d.socket(l).unwrap().queued, 2);
    out.clear();
    d.shim_request(1, &req(Op::Accept, [0; 4], None), Some(l), &mut out);
    let r = replies(&out)[0];
    assert_eq!(
        (r.ctl.status, r.fd, r.ctl.addr),
        (0, ReplyFd::AppEnd(news[0]), Some(a("10.0.0.1:5555")))
    );
    assert_eq!(sent(&out, i1), vec![OwnedMsg::Credit { sock: l, bytes: 1 }]);
    // Connection data from i2's id 5 reaches the second connection only.
    out.clear();
    let got = d
        .instance_frame(
            i2,
            &Msg::Data {
                sock: INSTANCE_SOCK_BIT | 5,
                bytes: b"hi",
            },
            1,
            &mut out,
        )
        .unwrap();
    assert_eq!(got, Some(news[1]));
}

#[test]
fn placement_least_busy_and_round_robin() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let i2 = d.instance_joined(0, 4096, &mut out);
    let mut placed = Vec::new();
    for n in 0..4u64 {
        let h = d.new_socket(200 + n, 2, 1, 0).unwrap();
        out.clear();
        d.shim_request(
            1,
            &req(Op::Connect, [1, 0, 0, 0], Some(a("1.2.3.4:80"))),
            Some(h),
            &mut out,
        );
        assert_eq!(replies(&out)[0].ctl.status, errno::EINPROGRESS);
        placed.push(d.socket(h).unwrap().inst.unwrap());
    }
    assert_eq!(placed, vec![i1, i2, i1, i2]);
    let mut d = Driver::new(Config {
        placement: Placement::RoundRobin,
        ..Config::default()
    });
    let j1 = d.instance_joined(0, 4096, &mut out);
    let j2 = d.instance_joined(0, 4096, &mut out);
    let mut placed = Vec::new();
    for n in 0..3u64 {
        let h = d.new_socket(300 + n, 2, 2, 0).unwrap();
        d.shim_request(
            1,
            &req(Op::Connect, [0; 4], Some(a("1.2.3.4:53"))),
            Some(h),
            &mut out,
        );
        placed.push(d.socket(h).unwrap().inst.unwrap());
    }
    assert_eq!(placed, vec![j1, j2, j1]);
}

#[test]
fn connect_flow_credit_and_window() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let h = d.new_socket(1, 2, 1, 0).unwrap();
    d.shim_request(
        9,
        &req(Op::Connect, [0; 4], Some(a("1.2.3.4:80"))),
        Some(h),
        &mut out,
    );
    assert!(replies(&out).is_empty(), "blocking connect waits");
    assert_eq!(d.send_credit(h, &mut out), None);
    let f = sent(&out, i1);
    let creq = req_of(f.last().unwrap());
    out.clear();
    d.instance_frame(
        i1,
        &Msg::Reply {
            sock: h,
            req: creq,
            errno: errno::EINPROGRESS,
            value: &[],
        },
        1,
        &mut out,
    )
    .unwrap();
    d.instance_frame(
        i1,
        &Msg::Connected {
            sock: h,
            errno: 0,
            local: Some(a("9.9.9.9:1")),
            peer: Some(a("1.2.3.4:80")),
        },
        1,
        &mut out,
    )
    .unwrap();
    assert_eq!(replies(&out)[0].ctl.status, 0);
    assert_eq!(d.send_credit(h, &mut out), Some((i1, h, 4096)));
    d.consume_credit(h, 4000);
    assert_eq!(d.send_credit(h, &mut out).unwrap().2, 96);
    d.instance_frame(
        i1,
        &Msg::Credit {
            sock: h,
            bytes: 1_000_000,
        },
        1,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        d.send_credit(h, &mut out).unwrap().2,
        4096,
        "credit clamped to the window"
    );
    // Receive: window 1000, credit returned in quarters.
    out.clear();
    assert_eq!(
        d.instance_frame(
            i1,
            &Msg::Data {
                sock: h,
                bytes: &[0; 600]
            },
            1,
            &mut out
        ),
        Ok(Some(h))
    );
    d.delivered(h, 200, false, &mut out);
    assert!(sent(&out, i1).is_empty());
    d.delivered(h, 100, false, &mut out);
    assert_eq!(
        sent(&out, i1),
        vec![OwnedMsg::Credit {
            sock: h,
            bytes: 300
        }]
    );
    // 300 outstanding + 701 > 1000: beyond the window → dead.
    out.clear();
    let r = d.instance_frame(
        i1,
        &Msg::Data {
            sock: h,
            bytes: &[0; 701],
        },
        1,
        &mut out,
    );
    assert_eq!(r, Err(Violation::BeyondWindow(h)));
    assert!(out.contains(&Action::InstanceDead { inst: i1 }));
    assert!(out.contains(&Action::PeerReset {
        sock: h,
        errno: errno::ECONNRESET
    }));
    assert_eq!(d.pending_error(h), errno::ECONNRESET, "seen, not taken");
    assert_eq!(d.pending_error(h), errno::ECONNRESET);
    d.shim_request(9, &req(Op::TakeError, [0; 4], None), Some(h), &mut out);
    assert_eq!(replies(&out).last().unwrap().ctl.args[0], errno::ECONNRESET);
    assert_eq!(d.pending_error(h), 0, "taken once");
    assert_eq!(d.pending_error(Handle::MAX), 0, "no such socket");
}

#[test]
fn hostile_frames_kill_only_that_instance() {
    let cases: Vec<Box<dyn Fn(Handle, Handle) -> Msg<'static>>> = vec![
        Box::new(|_, _| Msg::Data {
            sock: 999,
            bytes: b"x",
        }),
        Box::new(|_, other| Msg::Data {
            sock: other,
            bytes: b"x",
        }),
        Box::new(|mine, _| accepted(mine, INSTANCE_SOCK_BIT | 1)),
        Box::new(|_, _| Msg::Reply {
            sock: 0,
            req: 4242,
            errno: 0,
            value: &[],
        }),
        Box::new(|mine, _| Msg::Open {
            sock: mine,
            req: 1,
            family: Family::Inet,
            ty: SockType::Stream,
            proto: 0,
        }),
        Box::new(|_, _| Msg::Closed {
            sock: INSTANCE_SOCK_BIT | 77,
        }),
        Box::new(|mine, _| Msg::Connected {
            sock: mine,
            errno: 0,
            local: None,
            peer: None,
        }),
    ];
    for (n, case) in cases.iter().enumerate() {
        let mut d = driver();
        let mut out = Vec::new();
        let i1 = d.instance_joined(0, 4096, &mut out);
        let i2 = d.instance_joined(0, 4096, &mut out);
        // `mine` connected on i1, `other` on i2.
        let mine = d.new_socket(1, 2, 1, 0).unwrap();
        let other = d.new_socket(2, 2, 1, 0).unwrap();
        for (h, i) in [(mine, i1), (other, i2)] {
            out.clear();
            d.shim_request(
                1,
                &req(Op::Connect, [1, 0, 0, 0], Some(a("1.1.1.1:1"))),
                Some(h),
                &mut out,
            );
            let f = sent(&out, i);
            let r = req_of(f.last().unwrap());
            d.instance_frame(
                i,
                &Msg::Reply {
                    sock: h,
                    req: r,
                    errno: errno::EINPROGRESS,
                    value: &[],
                },
                1,
                &mut out,
            )
            .unwrap();
            d.instance_frame(
                i,
                &Msg::Connected {
                    sock: h,
                    errno: 0,
                    local: None,
                    peer: None,
                },
                1,
                &mut out,
            )
            .unwrap();
        }
        out.clear();
        let r = d.instance_frame(i1, &case(mine, other), 1, &mut out);
        assert!(r.is_err(), "case {n} accepted");
        assert!(out.contains(&Action::InstanceDead { inst: i1 }), "case {n}");
        assert_eq!(d.socket(mine).unwrap().err, errno::ECONNRESET, "case {n}");
        assert_eq!(
            d.socket(other).unwrap().state,
            SockState::Connected,
            "case {n}"
        );
        // Frames from the dead instance are ignored from now on.
        assert_eq!(
            d.instance_frame(
                i1,
                &Msg::Data {
                    sock: mine,
                    bytes: b"x"
                },
                1,
                &mut out
            ),
            Ok(None)
        );
    }
}

#[test]
fn accept_beyond_backlog_is_a_violation() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let l = listener(&mut d, &[i1]);
    for k in 0..16 {
        d.instance_frame(i1, &accepted(l, INSTANCE_SOCK_BIT | k), 1, &mut out)
            .unwrap();
    }
    let r = d.instance_frame(i1, &accepted(l, INSTANCE_SOCK_BIT | 100), 1, &mut out);
    assert_eq!(r, Err(Violation::AcceptBeyondCredit(l)));
    // The listener lives on (no replica now); the queued connections reset.
    assert_eq!(d.socket(l).unwrap().state, SockState::Listening);
    assert!(d.socket(l).unwrap().replicas.is_empty());
}

#[test]
fn heartbeat_timeout_and_close_lifecycle() {
    let mut d = Driver::new(Config {
        heartbeat_timeout_ns: 100,
        ..Config::default()
    });
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let h = d.new_socket(5, 2, 2, 0).unwrap();
    // Unplaced socket closed by the app: forgotten at once.
    d.app_eof(h, true, &mut out);
    assert!(out.contains(&Action::Forget { sock: h }));
    assert!(d.lookup_inode(5).is_none());
    // Placed socket: Close, then forgotten on Closed.
    let h = d.new_socket(6, 2, 2, 0).unwrap();
    out.clear();
    assert_eq!(
        d.send_credit(h, &mut out),
        None,
        "the first send only places (Open goes first)"
    );
    assert!(
        d.send_credit(h, &mut out).is_some(),
        "datagram sockets are placed on first send"
    );
    d.app_eof(h, true, &mut out);
    let f = sent(&out, i1);
    assert!(matches!(f.last(), Some(OwnedMsg::Close { .. })));
    out.clear();
    d.instance_frame(i1, &Msg::Closed { sock: h }, 50, &mut out)
        .unwrap();
    assert!(out.contains(&Action::Forget { sock: h }));
    d.tick(120, &mut out);
    assert!(!out.contains(&Action::InstanceDead { inst: i1 }));
    d.tick(200, &mut out);
    assert!(out.contains(&Action::InstanceDead { inst: i1 }));
}

#[test]
fn set_config_applies_at_the_next_tick_and_keeps_the_window() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 1000, &mut out);
    // 1 s of silence is within the default 3 s.
    d.tick(1_000_000_000, &mut out);
    assert!(!out.contains(&Action::InstanceDead { inst: i1 }));
    let mut c = *d.config();
    c.set("heartbeat_timeout_ms", "500").unwrap();
    d.set_config(c).unwrap();
    d.tick(1_000_000_001, &mut out);
    assert!(out.contains(&Action::InstanceDead { inst: i1 }));
    let mut w = *d.config();
    w.window = 2000;
    assert_eq!(d.set_config(w), Err(SetError::Fixed));
    assert_eq!(d.config().window, 1000);
    assert_eq!(d.config().heartbeat_timeout_ns, 500_000_000);
}

#[test]
fn options_remembered_and_replayed_and_driver_answers() {
    let mut d = driver();
    let mut out = Vec::new();
    // No instance yet: nothing can check the option; it is remembered.
    let h = d.new_socket(1, 10, 1, 0).unwrap();
    let v = 1i32.to_ne_bytes();
    let set = Control {
        op: Op::SetOpt,
        seq: 1,
        status: 0,
        args: [6, 1, 0, 0],
        addr: None,
        addr2: None,
        value: &v,
    };
    d.shim_request(1, &set, Some(h), &mut out);
    assert_eq!(replies(&out)[0].ctl.status, 0);
    let i1 = d.instance_joined(0, 4096, &mut out);
    assert!(sent(&out, i1).is_empty(), "not placed yet");
    out.clear();
    d.shim_request(
        1,
        &req(Op::GetOpt, [1, opt::SO_PROTOCOL, 4, 0], None),
        Some(h),
        &mut out,
    );
    assert_eq!(replies(&out)[0].ctl.value.as_slice(), &6i32.to_ne_bytes());
    out.clear();
    d.shim_request(
        1,
        &req(Op::Connect, [1, 0, 0, 0], Some(a("[::1]:80"))),
        Some(h),
        &mut out,
    );
    let f = sent(&out, i1);
    assert!(matches!(
        f[0],
        OwnedMsg::Open {
            family: Family::Inet6,
            ..
        }
    ));
    assert!(matches!(
        f[1],
        OwnedMsg::SetOpt {
            level: 6,
            name: 1,
            ..
        }
    ));
    assert!(matches!(f[2], OwnedMsg::Connect { .. }));
    // Wrong family for an IPv6 socket.
    let h4 = d.new_socket(2, 10, 1, 0).unwrap();
    out.clear();
    d.shim_request(
        1,
        &req(Op::Connect, [0; 4], Some(a("1.2.3.4:80"))),
        Some(h4),
        &mut out,
    );
    assert_eq!(replies(&out)[0].ctl.status, errno::EAFNOSUPPORT);
    // Unknown socket.
    out.clear();
    d.shim_request(
        1,
        &req(Op::Bind, [0; 4], Some(a("[::1]:80"))),
        None,
        &mut out,
    );
    assert_eq!(replies(&out)[0].ctl.status, errno::ENOTSOCK);
}

proptest! {
    /// Arbitrary frames from an instance never panic the core, and every
    /// frame it refuses kills exactly that instance.
    #[test]
    fn random_frames_never_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 16..120), 1..40), socks in proptest::collection::vec(any::<u32>(), 1..8)) {
        let mut d = driver();
        let mut out = Vec::new();
        let i1 = d.instance_joined(0, 4096, &mut out);
        let _i2 = d.instance_joined(0, 4096, &mut out);
        let l = listener(&mut d, &[i1]);
        let _ = l;
        for mut f in frames {
            // Steer some frames at plausible ids and lengths.
            let len = (f.len() - 16) as u32;
            f[4..8].copy_from_slice(&len.to_le_bytes());
            if let Some(s) = socks.first() && f[2] & 1 == 0 { f[8..12].copy_from_slice(&s.to_le_bytes()); }
            f[2] = 0; f[3] = 0;
            if let Ok(m) = Msg::decode(&f) {
                let r = d.instance_frame(i1, &m, 1, &mut out);
                if r.is_err() {
                    let dead = out.contains(&Action::InstanceDead { inst: i1 });
                    prop_assert!(dead);
                }
            }
        }
    }
}

#[test]
fn mitigate_reply_becomes_a_note_and_death_answers_it() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let i2 = d.instance_joined(0, 4096, &mut out);
    out.clear();
    let p = ins_protocol::msg::Prefix::new("10.0.0.0".parse().unwrap(), 8).unwrap();
    assert!(d.mitigate(i1, OwnedMitigation::Block(p), 42, &mut out));
    assert!(d.mitigate(i2, OwnedMitigation::Block(p), 42, &mut out));
    let f = sent(&out, i1);
    let Some(&OwnedMsg::Mitigate { req, cmd }) = f.first() else {
        panic!("{f:?}");
    };
    assert_eq!(cmd, OwnedMitigation::Block(p));
    d.instance_frame(
        i1,
        &Msg::Reply {
            sock: 0,
            req,
            errno: 0,
            value: &[],
        },
        1,
        &mut out,
    )
    .unwrap();
    d.instance_failed(i2, Violation::Stopped, &mut out);
    let mut notes = Vec::new();
    d.take_notes(&mut notes);
    assert!(notes.contains(&Note::MitigateDone {
        inst: i1,
        tag: 42,
        errno: 0
    }));
    assert!(notes.contains(&Note::MitigateDone {
        inst: i2,
        tag: 42,
        errno: errno::ECONNRESET
    }));
    // A dead instance takes no more.
    assert!(!d.mitigate(i2, OwnedMitigation::Drain, 1, &mut out));
}

#[test]
fn drop_replicas_closes_only_that_replica_and_takes_its_last_connections() {
    let mut d = driver();
    let mut out = Vec::new();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let i2 = d.instance_joined(0, 4096, &mut out);
    let l = listener(&mut d, &[i1, i2]);
    out.clear();
    assert_eq!(d.drop_replicas(i2, &mut out), 1);
    let f = sent(&out, i2);
    assert!(
        matches!(f[..], [OwnedMsg::Close { sock, .. }] if sock == l),
        "{f:?}"
    );
    assert_eq!(d.socket(l).unwrap().replicas, vec![i1]);
    // It accepted one more before the close: still a client's connection.
    out.clear();
    d.instance_frame(i2, &accepted(l, INSTANCE_SOCK_BIT | 5), 1, &mut out)
        .unwrap();
    assert!(
        out.iter()
            .any(|x| matches!(x, Action::Token { listener } if *listener == l))
    );
    d.instance_frame(i2, &Msg::Closed { sock: l }, 1, &mut out)
        .unwrap();
    // After Closed, more Accepted on it is a violation.
    assert!(
        d.instance_frame(i2, &accepted(l, INSTANCE_SOCK_BIT | 6), 1, &mut out)
            .is_err()
    );
    // The last replica is never dropped.
    let mut d = driver();
    let i1 = d.instance_joined(0, 4096, &mut out);
    let l = listener(&mut d, &[i1]);
    out.clear();
    assert_eq!(d.drop_replicas(i1, &mut out), 0);
    assert_eq!(d.socket(l).unwrap().replicas, vec![i1]);
}

/// Answers every request the driver sent to any of `insts` in `out`.
fn ok_everywhere(d: &mut Driver, insts: &[InstId], out: &[Action]) -> Vec<Action> {
    let mut next = Vec::new();
    for &i in insts {
        let f = sent(out, i);
        ok_all(d, i, &f, a("127.0.0.1:8080"), &mut next);
    }
    next
}

/// A listener closed by the app, then a new one on the same port (the
/// iperf3 pattern): the new `listen()` is answered only once every
/// instance released the old replicas — before that a client could land
/// in a closed listener's replica (`SO_REUSEPORT` spreads connections)
/// and be refused. An instance that dies releases its share too.
#[test]
fn relisten_on_a_port_waits_until_the_old_listener_is_released() {
    for die in [false, true] {
        let mut d = driver();
        let mut out = Vec::new();
        let i1 = d.instance_joined(0, 4096, &mut out);
        let i2 = d.instance_joined(0, 4096, &mut out);
        let l1 = listener(&mut d, &[i1, i2]);
        out.clear();
        d.app_eof(l1, true, &mut out);
        for i in [i1, i2] {
            assert!(matches!(sent(&out, i).last(), Some(OwnedMsg::Close { .. })));
        }
        out.clear();
        let l2 = d.new_socket(101, 2, 1, 0).unwrap();
        let bind = req(Op::Bind, [0; 4], Some(a("127.0.0.1:8080")));
        d.shim_request(1, &bind, Some(l2), &mut out);
        let out2 = ok_everywhere(&mut d, &[i1, i2], &out);
        assert_eq!(replies(&out2).len(), 1);
        assert_eq!(replies(&out2)[0].ctl.status, 0, "the port is free at once");
        out.clear();
        d.shim_request(1, &req(Op::Listen, [16, 0, 0, 0], None), Some(l2), &mut out);
        let out2 = ok_everywhere(&mut d, &[i1, i2], &out);
        assert!(replies(&out2).is_empty(), "answered too early: {out2:?}");
        out.clear();
        d.instance_frame(i1, &Msg::Closed { sock: l1 }, 1, &mut out)
            .unwrap();
        assert!(replies(&out).is_empty(), "i2 still holds the old replica");
        out.clear();
        if die {
            d.instance_failed(i2, Violation::ChannelFailed, &mut out);
        } else {
            d.instance_frame(i2, &Msg::Closed { sock: l1 }, 1, &mut out)
                .unwrap();
        }
        let r = replies(&out);
        assert_eq!(r.len(), 1, "{out:?}");
        assert_eq!((r[0].ctl.op, r[0].ctl.status), (Op::Listen, 0));
        assert_eq!(r[0].fd, ReplyFd::Keeper(l2), "a held answer keeps too");
        assert!(out.contains(&Action::Forget { sock: l1 }));
    }
}
