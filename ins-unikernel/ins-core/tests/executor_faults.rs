//! Executor behaviour under conditions a real stack cannot produce on
//! demand: partial writes, EAGAIN sequences, a full outbox, hostile frames.
//! The in-memory stack below only models what these tests need; end-to-end
//! behaviour over real sockets is tested against the `ins` binary.

mod common;

use common::*;
use ins_core::Errno;
use ins_core::config::InstanceConfig;
use ins_core::executor::{EEXIST, EPROTO};
use ins_core::stack::Readiness;
use ins_protocol::msg::{self, CloseReason, Mitigation, Msg, Prefix};

#[test]
fn pushes_exactly_the_driver_window_then_waits_for_credit() {
    let mut rig = Rig::new(cfg());
    rig.listen(4);
    let (id, h) = accept_one(&mut rig, "203.0.113.5:4000");
    let payload: Vec<u8> = (0..25_000u32).map(|i| (i % 251) as u8).collect();
    rig.ex
        .stack_mut()
        .socks
        .get_mut(&h)
        .unwrap()
        .rx
        .extend(&payload);
    let f = rig.event(h, Readiness::READABLE);
    let got = data_bytes(&f, id);
    assert_eq!(got.len(), DRIVER_WINDOW as usize, "must stop at the credit");
    assert_eq!(got[..], payload[..got.len()]);
    // No credit, no further reads, even on another event.
    let calls = rig.ex.stack().recv_calls;
    assert!(data_bytes(&rig.event(h, Readiness::READABLE), id).is_empty());
    assert_eq!(rig.ex.stack().recv_calls, calls, "read without credit");
    // A credit of 3000 releases exactly 3000 more.
    let f = rig.send(Msg::Credit {
        sock: id,
        bytes: 3000,
    });
    let more = data_bytes(&f, id);
    assert_eq!(more[..], payload[10_000..13_000]);
    let f = rig.send(Msg::Credit {
        sock: id,
        bytes: 50_000,
    });
    assert_eq!(data_bytes(&f, id)[..], payload[13_000..]);
    // Kernel EOF reaches the driver after the data.
    rig.ex.stack_mut().socks.get_mut(&h).unwrap().eof = true;
    let f = rig.event(h, Readiness::READ_CLOSED);
    assert_eq!(decode(&f), vec![Msg::Eof { sock: id }]);
}

#[test]
fn full_outbox_stops_and_resumes_in_order_without_spinning() {
    let mut rig = Rig::new(cfg());
    rig.listen(4);
    let (a, ha) = accept_one(&mut rig, "203.0.113.5:4000");
    let (b, hb) = accept_one(&mut rig, "203.0.113.6:4000");
    rig.out.max_frame = 1000;
    let pa: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
    let pb: Vec<u8> = (0..6000u32).map(|i| (i * 7) as u8).collect();
    rig.ex
        .stack_mut()
        .socks
        .get_mut(&ha)
        .unwrap()
        .rx
        .extend(&pa);
    rig.ex
        .stack_mut()
        .socks
        .get_mut(&hb)
        .unwrap()
        .rx
        .extend(&pb);
    rig.ex.stack_mut().socks.get_mut(&ha).unwrap().eof = true;
    rig.out.room = 3;
    let mut all = rig.event(ha, Readiness::READABLE);
    all.extend(rig.event(hb, Readiness::READABLE));
    assert_eq!(all.len(), 3);
    assert!(rig.ex.wants_ring_space().is_some());
    // Events and frames while full do not read more from the kernel.
    let calls = rig.ex.stack().recv_calls;
    for _ in 0..5 {
        all.extend(rig.event(hb, Readiness::READABLE));
        rig.ex.on_ring_space(rig.now, 0, &mut rig.out);
    }
    assert_eq!(rig.ex.stack().recv_calls, calls, "busy reading while full");
    // Room again: everything arrives, each stream in order, EOF last for a.
    for _ in 0..20 {
        rig.out.room = 2;
        rig.ex.on_ring_space(rig.now, 0, &mut rig.out);
        all.extend(rig.out.take());
    }
    assert_eq!(rig.ex.wants_ring_space(), None);
    assert_eq!(data_bytes(&all, a), pa);
    assert_eq!(data_bytes(&all, b), pb);
    let msgs = decode(&all);
    let eof_at = msgs
        .iter()
        .position(|m| *m == Msg::Eof { sock: a })
        .unwrap();
    let last_a = msgs
        .iter()
        .rposition(|m| matches!(m, Msg::Data { sock, .. } if *sock == a))
        .unwrap();
    assert!(eof_at > last_a);
    // Both streams got served while the outbox was scarce (fair rotation):
    // b's first data frame comes before a's last one.
    let first_b = msgs
        .iter()
        .position(|m| matches!(m, Msg::Data { sock, .. } if *sock == b))
        .unwrap();
    assert!(first_b < last_a);
}

#[test]
fn malformed_and_hostile_frames_get_replies_and_service_continues() {
    let mut rig = Rig::new(cfg());
    // Shorter than a header.
    assert_eq!(replies(&rig.raw(&[1, 2, 3])), vec![(0, 0, 22)]);
    // Unknown kind: sock and req echoed from the header.
    let mut f = enc(Msg::Close { sock: 9, req: 77 });
    f[0] = 0x7f;
    assert_eq!(replies(&rig.raw(&f)), vec![(9, 77, 22)]);
    // Oversized option value (the decoder refuses > 256 bytes).
    let mut f = enc(Msg::SetOpt {
        sock: 9,
        req: 78,
        level: 1,
        name: 2,
        value: &[0; 256],
    });
    f.extend_from_slice(&[0; 10]);
    let len = (f.len() - 16) as u32;
    f[4..8].copy_from_slice(&len.to_le_bytes());
    assert_eq!(replies(&rig.raw(&f)), vec![(9, 78, 22)]);
    // A kind only the instance sends.
    let r = rig.send(Msg::Reset {
        sock: 9,
        errno: 104,
    });
    assert_eq!(replies(&r), vec![(9, 0, EPROTO.0)]);
    // Unknown socket.
    let r = rig.send(Msg::Bind {
        sock: 9,
        req: 79,
        addr: LOCAL.parse().unwrap(),
    });
    assert_eq!(replies(&r), vec![(9, 79, Errno::EBADF.0)]);
    assert_eq!(
        replies(&rig.send(Msg::Close { sock: 9, req: 80 })),
        vec![(9, 80, Errno::EBADF.0)]
    );
    // Data for an unknown socket is ignored and counted.
    assert!(
        rig.send(Msg::Data {
            sock: 9,
            bytes: b"x"
        })
        .is_empty()
    );
    assert_eq!(rig.ex.counters().stray_frames, 1);
    // Open twice, wrong protocol.
    let open = |sock, req, proto| Msg::Open {
        sock,
        req,
        family: msg::Family::Inet6,
        ty: msg::SockType::Dgram,
        proto,
    };
    assert_eq!(replies(&rig.send(open(3, 1, 0))), vec![(3, 1, 0)]);
    assert_eq!(replies(&rig.send(open(3, 2, 0))), vec![(3, 2, EEXIST.0)]);
    assert_eq!(
        replies(&rig.send(open(4, 3, 6))),
        vec![(4, 3, Errno::EPROTONOSUPPORT.0)]
    );
    // The good socket still works: getsockopt answers with the value.
    let r = rig.send(Msg::GetOpt {
        sock: 3,
        req: 4,
        level: 1,
        name: 7,
        max_len: 4,
    });
    assert_eq!(
        decode(&r),
        vec![Msg::Reply {
            sock: 3,
            req: 4,
            errno: 0,
            value: &7i32.to_ne_bytes()
        }]
    );
    assert_eq!(rig.ex.counters().protocol_errors, 4);
}

#[test]
fn partial_writes_buffer_then_credit_back_and_window_overrun_resets() {
    let mut rig = Rig::new(cfg());
    rig.listen(4);
    let (id, h) = accept_one(&mut rig, "203.0.113.5:4000");
    rig.ex.stack_mut().socks.get_mut(&h).unwrap().send_room = 1000;
    let chunk: Vec<u8> = (0..3000u32).map(|i| (i % 13) as u8).collect();
    let f = rig.send(Msg::Data {
        sock: id,
        bytes: &chunk,
    });
    assert!(f.is_empty(), "nothing to say yet: {:?}", decode(&f));
    let f = rig.send(Msg::Data {
        sock: id,
        bytes: &chunk,
    });
    assert!(f.is_empty());
    assert_eq!(rig.ex.stack().socks[&h].sent.len(), 1000);
    // The kernel makes room in two steps; bytes go out in order and the
    // consumed bytes are credited back: a quarter window at a time, and the
    // small remainder (1000 < 8192/4) once the buffer drains.
    rig.ex.stack_mut().socks.get_mut(&h).unwrap().send_room = 4000;
    let f1 = rig.event(h, Readiness::WRITABLE);
    rig.ex.stack_mut().socks.get_mut(&h).unwrap().send_room = 10_000;
    let f2 = rig.event(h, Readiness::WRITABLE);
    let mut expect = chunk.clone();
    expect.extend_from_slice(&chunk);
    assert_eq!(rig.ex.stack().socks[&h].sent, expect);
    assert_eq!(credits(&f1, id), 5000);
    assert_eq!(credits(&f2, id), 1000);
    // The driver may now have 8192 outstanding again; 8193 is an overrun.
    let big = vec![1u8; 8193];
    let f = rig.send(Msg::Data {
        sock: id,
        bytes: &big,
    });
    assert_eq!(
        decode(&f),
        vec![
            msg_flow_of(&f),
            Msg::Reset {
                sock: id,
                errno: EPROTO.0
            }
        ]
    );
    assert!(rig.ex.stack().closed.contains(&(h, true)), "not reset");
    // Later data for the dead socket is ignored; Close still answers.
    assert!(
        rig.send(Msg::Data {
            sock: id,
            bytes: b"x"
        })
        .is_empty()
    );
    let f = rig.send(Msg::Close { sock: id, req: 9 });
    assert_eq!(
        decode(&f),
        vec![
            Msg::Reply {
                sock: id,
                req: 9,
                errno: 0,
                value: &[]
            },
            Msg::Closed { sock: id }
        ]
    );
}

fn msg_flow_of(frames: &[Vec<u8>]) -> Msg<'_> {
    decode(frames)
        .into_iter()
        .find(|m| matches!(m, Msg::Flow(_)))
        .expect("a flow record")
}

#[test]
fn block_resets_existing_flows_and_refuses_new_ones() {
    let mut rig = Rig::new(cfg());
    rig.listen(8);
    let (bad, hbad) = accept_one(&mut rig, "198.51.100.7:5000");
    let (good, hgood) = accept_one(&mut rig, "203.0.113.5:4000");
    rig.ex
        .stack_mut()
        .socks
        .get_mut(&hbad)
        .unwrap()
        .rx
        .extend(b"hello");
    let f = rig.event(hbad, Readiness::READABLE);
    assert_eq!(data_bytes(&f, bad), b"hello");
    let prefix = Prefix::new("198.51.100.0".parse().unwrap(), 24).unwrap();
    let f = rig.send(Msg::Mitigate {
        req: 40,
        cmd: Mitigation::Block(prefix),
    });
    let msgs = decode(&f);
    assert!(msgs.contains(&Msg::Reset {
        sock: bad,
        errno: Errno::ECONNRESET.0
    }));
    let rec = msgs
        .iter()
        .find_map(|m| match m {
            Msg::Flow(r) => Some(*r),
            _ => None,
        })
        .unwrap();
    assert_eq!(rec.sock, bad);
    assert_eq!(rec.reason, CloseReason::Mitigated);
    assert_eq!(rec.bytes_in, 5);
    assert_eq!(
        (rec.segs_in, rec.segs_out),
        (3, 4),
        "segments from tcp_info"
    );
    assert_eq!(rec.remote, "198.51.100.7:5000".parse().unwrap());
    assert_eq!(replies(&f), vec![(0, 40, 0)]);
    assert!(rig.ex.stack().closed.contains(&(hbad, true)));
    assert!(rig.ex.stack().socks.contains_key(&hgood));
    // A new peer from the prefix is accepted and reset, not announced.
    let f = rig.incoming("198.51.100.9:6000");
    assert!(accepted(&f).is_empty());
    let refused = rig.ex.stack().next;
    assert!(rig.ex.stack().closed.contains(&(refused, true)));
    assert_eq!(rig.ex.stats().dropped_conns, 1);
    // Others still come in; the good connection still works.
    accept_one(&mut rig, "203.0.113.8:4000");
    rig.ex
        .stack_mut()
        .socks
        .get_mut(&hgood)
        .unwrap()
        .rx
        .extend(b"ok");
    assert_eq!(
        data_bytes(&rig.event(hgood, Readiness::READABLE), good),
        b"ok"
    );
    // CloseFlow on an unknown flow id.
    let f = rig.send(Msg::Mitigate {
        req: 41,
        cmd: Mitigation::CloseFlow { flow_id: 999 },
    });
    assert_eq!(replies(&f), vec![(0, 41, Errno::ENOENT.0)]);
}

#[test]
fn listener_announcements_are_bounded_by_backlog_credit_and_drain() {
    let mut rig = Rig::new(cfg());
    rig.listen(2);
    let lh = rig.handle_of_listener();
    for i in 0..4 {
        rig.ex
            .stack_mut()
            .socks
            .get_mut(&lh)
            .unwrap()
            .pending
            .push_back((
                format!("203.0.113.{i}:4000").parse().unwrap(),
                LOCAL.parse().unwrap(),
            ));
    }
    let f = rig.event(lh, Readiness::READABLE);
    assert_eq!(accepted(&f).len(), 2);
    assert_eq!(rig.ex.stack().socks[&lh].pending.len(), 2, "left in kernel");
    let f = rig.send(Msg::Mitigate {
        req: 1,
        cmd: Mitigation::Drain,
    });
    assert_eq!(replies(&f), vec![(0, 1, 0)]);
    let f = rig.send(Msg::Credit {
        sock: LISTENER,
        bytes: 5,
    });
    assert!(accepted(&f).is_empty(), "accepted while draining");
    let f = rig.send(Msg::Mitigate {
        req: 2,
        cmd: Mitigation::Resume,
    });
    assert_eq!(accepted(&f).len(), 2);
    assert_eq!(rig.ex.stats().dropped_conns, 0);
}

#[test]
fn max_sockets_gives_emfile() {
    let mut rig = Rig::new(InstanceConfig {
        max_sockets: 2,
        max_flows: 2,
        ..cfg()
    });
    let open = |sock| Msg::Open {
        sock,
        req: sock,
        family: msg::Family::Inet,
        ty: msg::SockType::Stream,
        proto: 0,
    };
    assert_eq!(replies(&rig.send(open(1))), vec![(1, 1, 0)]);
    assert_eq!(replies(&rig.send(open(2))), vec![(2, 2, 0)]);
    assert_eq!(replies(&rig.send(open(3))), vec![(3, 3, Errno::EMFILE.0)]);
    rig.send(Msg::Close { sock: 2, req: 10 });
    assert_eq!(replies(&rig.send(open(3))), vec![(3, 3, 0)]);
    assert_eq!(rig.ex.stats().sockets_used, 2);
}

#[test]
fn heartbeat_on_schedule() {
    let mut rig = Rig::new(cfg());
    assert_eq!(rig.ex.next_deadline(), Some(0));
    rig.ex.on_tick(1_000, 0, &mut rig.out);
    let hb = |f: &[Vec<u8>]| {
        decode(f)
            .into_iter()
            .filter_map(|m| match m {
                Msg::Heartbeat(s) => Some(s.seq),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(hb(&rig.out.take()), vec![1]);
    let next = rig.ex.next_deadline().unwrap();
    assert_eq!(next, 1_000 + 1_000_000_000);
    rig.ex.on_tick(next - 1, 0, &mut rig.out);
    assert!(hb(&rig.out.take()).is_empty());
    rig.ex.on_tick(next, 0, &mut rig.out);
    assert_eq!(hb(&rig.out.take()), vec![2]);
}

/// `SockOpt` applies between the bytes the driver sent before and after
/// it, also when the kernel took only part of them, and gets no reply.
#[test]
fn in_band_options_apply_between_their_bytes() {
    let mut rig = Rig::new(cfg());
    rig.listen(4);
    let (id, h) = accept_one(&mut rig, "203.0.113.5:4000");
    let cork = |on: i32| Msg::SockOpt {
        sock: id,
        level: 6,
        name: 3,
        value: Box::leak(Box::new(on.to_ne_bytes())),
    };
    // Nothing buffered: applied at once, after the 0 bytes sent so far.
    assert!(rig.send(cork(1)).is_empty(), "no reply to SockOpt");
    rig.ex.stack_mut().socks.get_mut(&h).unwrap().send_room = 100;
    assert!(
        rig.send(Msg::Data {
            sock: id,
            bytes: &[b'h'; 300]
        })
        .is_empty()
    );
    assert!(rig.send(cork(0)).is_empty());
    assert!(
        rig.send(Msg::Data {
            sock: id,
            bytes: &[b'b'; 50]
        })
        .is_empty()
    );
    assert!(rig.send(cork(1)).is_empty());
    assert_eq!(
        rig.ex.stack().socks[&h].opts.len(),
        1,
        "waits for its bytes"
    );
    rig.ex.stack_mut().socks.get_mut(&h).unwrap().send_room = 150;
    rig.event(h, Readiness::WRITABLE);
    assert_eq!(rig.ex.stack().socks[&h].sent.len(), 250);
    assert_eq!(
        rig.ex.stack().socks[&h].opts.len(),
        1,
        "not yet at byte 300"
    );
    rig.ex.stack_mut().socks.get_mut(&h).unwrap().send_room = 1000;
    rig.event(h, Readiness::WRITABLE);
    let s = &rig.ex.stack().socks[&h];
    let at: Vec<(usize, Vec<u8>)> = s.opts.iter().map(|o| (o.0, o.3.clone())).collect();
    assert_eq!(
        at,
        vec![
            (0, 1i32.to_ne_bytes().to_vec()),
            (300, 0i32.to_ne_bytes().to_vec()),
            (350, 1i32.to_ne_bytes().to_vec()),
        ]
    );
    assert_eq!(rig.ex.counters().inband_opts, 3);
    // For an unknown socket it is a stray frame, answered by nobody.
    assert!(
        rig.send(Msg::SockOpt {
            sock: 999,
            level: 6,
            name: 3,
            value: &[0; 4]
        })
        .is_empty()
    );
    assert_eq!(rig.ex.counters().stray_frames, 1);
}
