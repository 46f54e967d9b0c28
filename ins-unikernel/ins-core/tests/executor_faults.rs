//! Executor behaviour under conditions a real stack cannot produce on
//! demand: partial writes, EAGAIN sequences, a full outbox, hostile frames.
//! The in-memory stack below only models what these tests need; end-to-end
//! behaviour over real sockets is tested against the `ins` binary.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use ins_core::Errno;
use ins_core::config::InstanceConfig;
use ins_core::executor::{EEXIST, EPROTO, Executor, Outbox, OutboxFull};
use ins_core::stack::{Accepted, Family, Readiness, Shutdown, SockType, Stack, TcpCounters, opt};
use ins_protocol::msg::{self, CloseReason, INSTANCE_SOCK_BIT, Mitigation, Msg, Prefix};

#[derive(Default)]
struct FakeSock {
    rx: VecDeque<u8>,
    eof: bool,
    /// Bytes `send` accepts before `EAGAIN`.
    send_room: usize,
    sent: Vec<u8>,
    pending: VecDeque<(SocketAddr, SocketAddr)>,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    linger_zero: bool,
    shut_wr: bool,
}

#[derive(Default)]
struct FakeStack {
    socks: HashMap<u32, FakeSock>,
    next: u32,
    closed: Vec<(u32, bool)>,
    recv_calls: usize,
}

impl FakeStack {
    fn get(&mut self, h: u32) -> Result<&mut FakeSock, Errno> {
        self.socks.get_mut(&h).ok_or(Errno::EBADF)
    }
}

impl Stack for FakeStack {
    type Handle = u32;
    fn open(&mut self, _f: Family, _t: SockType) -> Result<u32, Errno> {
        self.next += 1;
        self.socks.insert(self.next, FakeSock::default());
        Ok(self.next)
    }
    fn bind(&mut self, h: u32, addr: SocketAddr) -> Result<(), Errno> {
        self.get(h)?.local = Some(addr);
        Ok(())
    }
    fn listen(&mut self, h: u32, _backlog: u32) -> Result<(), Errno> {
        self.get(h).map(|_| ())
    }
    fn connect(&mut self, _h: u32, _a: SocketAddr) -> Result<(), Errno> {
        Err(Errno::EINPROGRESS)
    }
    fn accept(&mut self, h: u32) -> Result<Accepted<u32>, Errno> {
        let (peer, local) = self.get(h)?.pending.pop_front().ok_or(Errno::EAGAIN)?;
        self.next += 1;
        let s = FakeSock {
            local: Some(local),
            peer: Some(peer),
            send_room: usize::MAX,
            ..FakeSock::default()
        };
        self.socks.insert(self.next, s);
        Ok(Accepted {
            handle: self.next,
            peer,
            local,
        })
    }
    fn recv(&mut self, h: u32, buf: &mut [u8]) -> Result<usize, Errno> {
        self.recv_calls += 1;
        let s = self.get(h)?;
        if s.rx.is_empty() {
            return if s.eof { Ok(0) } else { Err(Errno::EAGAIN) };
        }
        let n = buf.len().min(s.rx.len());
        for (d, b) in buf.iter_mut().zip(s.rx.drain(..n)) {
            *d = b;
        }
        Ok(n)
    }
    fn send(&mut self, h: u32, buf: &[u8]) -> Result<usize, Errno> {
        let s = self.get(h)?;
        if s.shut_wr {
            return Err(Errno::EPIPE);
        }
        let n = buf.len().min(s.send_room);
        if n == 0 {
            return Err(Errno::EAGAIN);
        }
        s.send_room -= n;
        s.sent.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn recv_from(&mut self, _h: u32, _b: &mut [u8]) -> Result<(usize, SocketAddr), Errno> {
        Err(Errno::EAGAIN)
    }
    fn send_to(&mut self, _h: u32, b: &[u8], _d: SocketAddr) -> Result<usize, Errno> {
        Ok(b.len())
    }
    fn shutdown(&mut self, h: u32, how: Shutdown) -> Result<(), Errno> {
        let s = self.get(h)?;
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            s.shut_wr = true;
        }
        Ok(())
    }
    fn close(&mut self, h: u32) -> Result<(), Errno> {
        let s = self.socks.remove(&h).ok_or(Errno::EBADF)?;
        self.closed.push((h, s.linger_zero));
        Ok(())
    }
    fn set_opt(&mut self, h: u32, level: i32, name: i32, value: &[u8]) -> Result<(), Errno> {
        let s = self.get(h)?;
        if (level, name) == (opt::SOL_SOCKET, opt::SO_LINGER) {
            s.linger_zero = value.get(..8) == Some(&[1, 0, 0, 0, 0, 0, 0, 0][..]);
        }
        Ok(())
    }
    fn get_opt(&mut self, h: u32, _l: i32, _n: i32, out: &mut [u8]) -> Result<usize, Errno> {
        self.get(h)?;
        let v = 7i32.to_ne_bytes();
        let n = out.len().min(4);
        out[..n].copy_from_slice(&v[..n]);
        Ok(n)
    }
    fn local_addr(&self, h: u32) -> Result<SocketAddr, Errno> {
        let s = self.socks.get(&h).ok_or(Errno::EBADF)?;
        Ok(s.local.unwrap_or_else(|| "0.0.0.0:0".parse().unwrap()))
    }
    fn peer_addr(&self, h: u32) -> Result<SocketAddr, Errno> {
        self.socks
            .get(&h)
            .ok_or(Errno::EBADF)?
            .peer
            .ok_or(Errno::ENOTCONN)
    }
    fn take_error(&mut self, h: u32) -> Result<Option<Errno>, Errno> {
        self.get(h).map(|_| None)
    }
    fn tcp_info(&mut self, h: u32) -> Option<TcpCounters> {
        self.socks.get(&h).map(|_| TcpCounters {
            segs_in: 3,
            segs_out: 4,
            ..TcpCounters::default()
        })
    }
    fn poll_events(
        &mut self,
        _t: Option<u64>,
        _out: &mut Vec<(u32, Readiness)>,
    ) -> Result<(), Errno> {
        Ok(())
    }
}

/// An outbox that holds up to `room` frames.
struct Out {
    frames: Vec<Vec<u8>>,
    room: usize,
    max_frame: usize,
}

impl Out {
    fn new(room: usize) -> Out {
        Out {
            frames: Vec::new(),
            room,
            max_frame: 16 * 1024,
        }
    }
    fn take(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.frames)
    }
}

impl Outbox for Out {
    fn try_push(&mut self, parts: &[&[u8]]) -> Result<(), OutboxFull> {
        if self.room == 0 {
            return Err(OutboxFull);
        }
        self.room -= 1;
        self.frames.push(parts.concat());
        Ok(())
    }
    fn max_frame(&self) -> usize {
        self.max_frame
    }
}

const DRIVER_WINDOW: u32 = 10_000;
const LISTENER: u32 = 5;
const LOCAL: &str = "192.0.2.1:80";

fn enc(m: Msg<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; m.encoded_len()];
    m.encode(&mut buf).unwrap();
    buf
}

fn cfg() -> InstanceConfig {
    InstanceConfig {
        window_bytes: 8192,
        ..InstanceConfig::default()
    }
}

struct Rig {
    ex: Executor<FakeStack>,
    out: Out,
    now: u64,
}

impl Rig {
    fn new(cfg: InstanceConfig) -> Rig {
        let ex = Executor::new(FakeStack::default(), cfg, DRIVER_WINDOW, 1).unwrap();
        Rig {
            ex,
            out: Out::new(usize::MAX),
            now: 1_000,
        }
    }
    fn send(&mut self, m: Msg<'_>) -> Vec<Vec<u8>> {
        self.raw(&enc(m))
    }
    fn raw(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        self.ex.on_frame(frame, self.now, 5_000_000, &mut self.out);
        self.out.take()
    }
    fn event(&mut self, h: u32, r: Readiness) -> Vec<Vec<u8>> {
        self.ex
            .on_events(&[(h, r)], self.now, 5_000_000, &mut self.out);
        self.out.take()
    }
    fn handle_of_listener(&self) -> u32 {
        1
    }
    /// Opens a listener with announcement credit `backlog`.
    fn listen(&mut self, backlog: u32) {
        let r = self.send(Msg::Open {
            sock: LISTENER,
            req: 1,
            family: msg::Family::Inet,
            ty: msg::SockType::Stream,
            proto: 0,
        });
        assert_eq!(replies(&r), vec![(LISTENER, 1, 0)]);
        let r = self.send(Msg::Listen {
            sock: LISTENER,
            req: 2,
            backlog,
        });
        assert_eq!(replies(&r), vec![(LISTENER, 2, 0)]);
    }
    /// Queues a connection from `peer` and delivers the readiness event.
    fn incoming(&mut self, peer: &str) -> Vec<Vec<u8>> {
        let lh = self.handle_of_listener();
        let s = self.ex.stack_mut().socks.get_mut(&lh).unwrap();
        s.pending
            .push_back((peer.parse().unwrap(), LOCAL.parse().unwrap()));
        self.event(lh, Readiness::READABLE)
    }
}

fn decode(frames: &[Vec<u8>]) -> Vec<Msg<'_>> {
    frames.iter().map(|f| Msg::decode(f).unwrap()).collect()
}

fn replies(frames: &[Vec<u8>]) -> Vec<(u32, u32, i32)> {
    decode(frames)
        .into_iter()
        .filter_map(|m| match m {
            Msg::Reply {
                sock, req, errno, ..
            } => Some((sock, req, errno)),
            _ => None,
        })
        .collect()
}

fn accepted(frames: &[Vec<u8>]) -> Vec<u32> {
    decode(frames)
        .into_iter()
        .filter_map(|m| match m {
            Msg::Accepted { sock, .. } => Some(sock),
            _ => None,
        })
        .collect()
}

fn data_bytes(frames: &[Vec<u8>], id: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for m in decode(frames) {
        if let Msg::Data { sock, bytes } = m
            && sock == id
        {
            v.extend_from_slice(bytes);
        }
    }
    v
}

fn credits(frames: &[Vec<u8>], id: u32) -> u64 {
    decode(frames)
        .into_iter()
        .filter_map(|m| match m {
            Msg::Credit { sock, bytes } if sock == id => Some(u64::from(bytes)),
            _ => None,
        })
        .sum()
}

/// Accepts one connection from `peer`; returns (sock id, stack handle).
fn accept_one(rig: &mut Rig, peer: &str) -> (u32, u32) {
    let f = rig.incoming(peer);
    let ids = accepted(&f);
    assert_eq!(ids.len(), 1, "{:?}", decode(&f));
    assert_ne!(ids[0] & INSTANCE_SOCK_BIT, 0);
    let h = rig.ex.stack().next;
    (ids[0], h)
}

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
