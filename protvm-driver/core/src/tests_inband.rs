//! Unit tests of [`inband`](crate::inband): records meet markers by socket,
//! pid and byte; a marker first stalls its socket; a marker no record
//! matches in time resets only its socket.

use super::*;
use ins_protocol::control::{Control, Op, marker};
use ins_protocol::msg::{INSTANCE_SOCK_BIT, Msg, OptValue, OwnedMsg};

const INODE: u64 = 0x1_0000_0042;
const CORK: (i32, i32) = (6, 3);

fn args(inode: u64) -> [i32; 4] {
    [
        CORK.0,
        CORK.1,
        inode as u32 as i32,
        (inode >> 32) as u32 as i32,
    ]
}

/// A driver with one instance and one accepted connection (app end inode
/// [`INODE`]); returns `(driver, instance, handle)`.
fn connected() -> (Driver, InstId, Handle) {
    let mut d = Driver::new(Config {
        window: 1000,
        inband_stall_ns: 100,
        max_inband: 2,
        ..Config::default()
    });
    let mut out = Vec::new();
    let i = d.instance_joined(0, 4096, &mut out);
    let l = d.new_socket(100, 2, 1, 0).unwrap();
    // Listen straight away (the listener's own tests cover the steps).
    let req = |op, a| Control {
        op,
        seq: 1,
        status: 0,
        args: a,
        addr: None,
        addr2: None,
        value: &[],
    };
    out.clear();
    d.shim_request(1, &req(Op::Listen, [8, 0, 0, 0]), Some(l), &mut out);
    for f in out.clone() {
        if let Action::Send { frame, .. } = f
            && frame.req() != 0
        {
            d.instance_frame(
                i,
                &Msg::Reply {
                    sock: frame.sock(),
                    req: frame.req(),
                    errno: 0,
                    value: &[],
                },
                1,
                &mut out,
            )
            .unwrap();
        }
    }
    out.clear();
    d.instance_frame(
        i,
        &Msg::Accepted {
            listener: l,
            sock: INSTANCE_SOCK_BIT | 9,
            peer: "10.0.0.1:5".parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
        },
        1,
        &mut out,
    )
    .unwrap();
    let h = out
        .iter()
        .find_map(|a| match a {
            Action::NewConnection { sock, .. } => Some(*sock),
            _ => None,
        })
        .unwrap();
    d.attach_inode(h, INODE);
    (d, i, h)
}

fn cork(on: i32) -> OwnedMsg {
    OwnedMsg::SockOpt {
        sock: INSTANCE_SOCK_BIT | 9,
        level: CORK.0,
        name: CORK.1,
        value: OptValue::int(on),
    }
}

#[test]
fn record_then_marker_applies_in_place() {
    let (mut d, i, h) = connected();
    let mut out = Vec::new();
    d.inband_record(77, 0x1_85, args(INODE), &1i32.to_ne_bytes(), &mut out);
    assert!(out.is_empty());
    assert_eq!(
        d.inband_marker(h, 77, 0x05, 5, &mut out),
        Marked::Apply {
            inst: i,
            frame: cork(1)
        }
    );
    // The record is used up: the same marker again stalls.
    assert_eq!(d.inband_marker(h, 77, 0x05, 6, &mut out), Marked::Stall);
    let s = d.inband_stats();
    assert_eq!((s.records, s.applied, s.stalls), (1, 1, 1));
}

#[test]
fn marker_first_stalls_until_its_record() {
    let (mut d, i, h) = connected();
    let mut out = Vec::new();
    assert!(d.send_credit(h, &mut out).is_some());
    assert_eq!(d.inband_marker(h, 77, 3, 5, &mut out), Marked::Stall);
    assert!(
        d.send_credit(h, &mut out).is_none(),
        "no byte passes a stall"
    );
    // Another process's record for the same byte does not match.
    d.inband_record(78, 3, args(INODE), &1i32.to_ne_bytes(), &mut out);
    assert!(out.is_empty());
    d.inband_record(77, 3, args(INODE), &0i32.to_ne_bytes(), &mut out);
    assert_eq!(
        out,
        vec![
            Action::Send {
                inst: i,
                frame: cork(0)
            },
            Action::Resume { sock: h }
        ]
    );
    assert!(d.send_credit(h, &mut out).is_some());
}

#[test]
fn unmatched_marker_resets_only_its_socket() {
    let (mut d, i, h) = connected();
    let mut out = Vec::new();
    assert_eq!(d.inband_marker(h, 77, 3, 5, &mut out), Marked::Stall);
    d.tick(50, &mut out);
    assert!(out.is_empty(), "not yet: {out:?}");
    d.tick(200, &mut out);
    assert!(out.contains(&Action::PeerReset {
        sock: h,
        errno: errno::ECONNRESET
    }));
    let f: Vec<OwnedMsg> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send { inst, frame } if *inst == i => Some(*frame),
            _ => None,
        })
        .collect();
    assert!(matches!(
        f[0],
        OwnedMsg::SockOpt {
            name: opt::SO_LINGER,
            ..
        }
    ));
    assert!(matches!(f[1], OwnedMsg::Shutdown { .. }));
    let info = d.socket(h).unwrap();
    assert_eq!((info.state, info.err), (SockState::Dead, errno::ECONNRESET));
    assert_eq!(d.inband_stats().resets, 1);
    assert!(d.instances().all(|(_, x)| x.state == InstState::Live));
    // A late record for it is ignored.
    out.clear();
    d.inband_record(77, 3, args(INODE), &0i32.to_ne_bytes(), &mut out);
    assert!(out.is_empty());
}

#[test]
fn cancel_bounds_and_unknown_sockets() {
    let (mut d, _, h) = connected();
    let mut out = Vec::new();
    d.inband_record(77, 1, args(INODE), &1i32.to_ne_bytes(), &mut out);
    d.inband_cancel(h, 77, 1);
    assert_eq!(d.inband_marker(h, 77, 1, 5, &mut out), Marked::Stall);
    let (mut d, i, h) = connected();
    // max_inband = 2: the oldest of three goes.
    for seq in 1..=3 {
        d.inband_record(77, seq, args(INODE), &1i32.to_ne_bytes(), &mut out);
    }
    assert_eq!(
        d.inband_marker(h, 77, 3, 5, &mut out),
        Marked::Apply {
            inst: i,
            frame: cork(1)
        }
    );
    assert_eq!(
        d.inband_marker(h, 77, 2, 5, &mut out),
        Marked::Apply {
            inst: i,
            frame: cork(1)
        }
    );
    assert_eq!(d.inband_marker(h, 77, 1, 5, &mut out), Marked::Stall);
    d.inband_record(77, 9, args(INODE + 1), &1i32.to_ne_bytes(), &mut out);
    assert!(out.is_empty());
    assert_eq!(d.inband_stats().dropped, 2);
}

#[test]
fn boolean_markers_need_no_record_and_unknown_ones_reset() {
    use ins_protocol::control::marker;
    let (mut d, i, h) = connected();
    let mut out = Vec::new();
    let b = marker::boolean(CORK.0, CORK.1, true).unwrap();
    assert_eq!(
        d.inband_marker(h, 0, b, 5, &mut out),
        Marked::Apply {
            inst: i,
            frame: cork(1)
        }
    );
    assert!(out.is_empty());
    assert_eq!(d.inband_marker(h, 0, 0xff, 5, &mut out), Marked::Ignore);
    assert!(out.contains(&Action::PeerReset {
        sock: h,
        errno: errno::ECONNRESET
    }));
    assert_eq!(d.inband_stats().resets, 1);
}

/// Options set before `connect` come with it: remembered, and sent to the
/// instance after `Open` and before `Connect`; a malformed list is EINVAL.
#[test]
fn options_carried_with_connect() {
    let mut d = Driver::new(Config::default());
    let mut out = Vec::new();
    let i = d.instance_joined(0, 4096, &mut out);
    let h = d.new_socket(300, 2, 1, 0).unwrap();
    let mut carried = Vec::new();
    for (level, name, v) in [(6, 1, 1i32), (6, 6, 4)] {
        carried.extend_from_slice(&i32::to_le_bytes(level));
        carried.extend_from_slice(&i32::to_le_bytes(name));
        carried.extend_from_slice(&v.to_ne_bytes());
    }
    let mut req = Control {
        op: Op::Connect,
        seq: 3,
        status: 0,
        args: [1, 0, 0, 0],
        addr: Some("10.0.0.9:80".parse().unwrap()),
        addr2: None,
        value: &carried,
    };
    out.clear();
    d.shim_request(1, &req, Some(h), &mut out);
    let kinds: Vec<ins_protocol::msg::Kind> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send { inst, frame } if *inst == i => Some(frame.borrowed().kind()),
            _ => None,
        })
        .collect();
    use ins_protocol::msg::Kind;
    assert_eq!(
        kinds,
        vec![Kind::Open, Kind::SetOpt, Kind::SetOpt, Kind::Connect],
        "{out:?}"
    );
    let bad = [0u8; 13];
    req.value = &bad;
    let h2 = d.new_socket(301, 2, 1, 0).unwrap();
    out.clear();
    d.shim_request(1, &req, Some(h2), &mut out);
    assert!(matches!(out[..], [Action::Reply(r)] if r.ctl.status == errno::EINVAL));
}

#[test]
fn options_in_order_for_hosts_that_write_in_order() {
    let (mut d, i, h) = connected();
    let mut out = Vec::new();
    // TCP_CORK on, then off (any non-zero int is on).
    assert!(d.set_option_in_order(h, CORK.0, CORK.1, &7i32.to_ne_bytes(), &mut out));
    assert!(d.set_option_in_order(h, CORK.0, CORK.1, &0i32.to_ne_bytes(), &mut out));
    assert_eq!(
        out,
        vec![
            Action::Send {
                inst: i,
                frame: cork(1)
            },
            Action::Send {
                inst: i,
                frame: cork(0)
            }
        ]
    );
    assert_eq!(d.inband_stats().applied, 2);
    out.clear();
    // Not a marker's boolean (SO_RCVBUF), too short a value, no such
    // socket: the synchronous path instead, nothing sent.
    assert!(!d.set_option_in_order(h, 1, 8, &1i32.to_ne_bytes(), &mut out));
    assert!(!d.set_option_in_order(h, CORK.0, CORK.1, &[1, 0], &mut out));
    assert!(!d.set_option_in_order(h + 1000, CORK.0, CORK.1, &1i32.to_ne_bytes(), &mut out));
    // A socket not connected (a new one): the synchronous path too.
    let n = d.new_socket(101, 2, 1, 0).unwrap();
    assert!(!d.set_option_in_order(n, CORK.0, CORK.1, &1i32.to_ne_bytes(), &mut out));
    assert!(out.is_empty());
    // The in-band ints, in their ranges, go as they are; out of range (as
    // Linux's EINVAL) the synchronous path gives the errno.
    for (level, name, min, max) in marker::INTS {
        for v in [min, max] {
            out.clear();
            assert!(d.set_option_in_order(h, level, name, &v.to_ne_bytes(), &mut out));
            assert_eq!(
                out,
                vec![Action::Send {
                    inst: i,
                    frame: OwnedMsg::SockOpt {
                        sock: INSTANCE_SOCK_BIT | 9,
                        level,
                        name,
                        value: OptValue::int(v),
                    }
                }]
            );
        }
        out.clear();
        assert!(!d.set_option_in_order(h, level, name, &(min - 1).to_ne_bytes(), &mut out));
        if max < i32::MAX {
            assert!(!d.set_option_in_order(h, level, name, &(max + 1).to_ne_bytes(), &mut out));
        }
        assert!(out.is_empty());
    }
}
