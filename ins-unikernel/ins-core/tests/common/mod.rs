//! The executor test harness: an in-memory `Stack` that models only
//! what the executor tests need (partial writes, EAGAIN sequences, pending
//! connections), an outbox of bounded room, and a rig that drives an
//! `Executor` with frames, events and ticks.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use ins_core::Errno;
use ins_core::config::InstanceConfig;
use ins_core::executor::{Executor, Outbox, OutboxFull};
use ins_core::stack::{Accepted, Family, Readiness, Shutdown, SockType, Stack, TcpCounters, opt};
use ins_protocol::msg::{self, INSTANCE_SOCK_BIT, Msg};

#[derive(Default)]
pub struct FakeSock {
    pub rx: VecDeque<u8>,
    pub eof: bool,
    /// Bytes `send` accepts before `EAGAIN`.
    pub send_room: usize,
    pub sent: Vec<u8>,
    pub pending: VecDeque<(SocketAddr, SocketAddr)>,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub linger_zero: bool,
    pub shut_wr: bool,
    /// Options set: (bytes sent before, level, name, value).
    pub opts: Vec<(usize, i32, i32, Vec<u8>)>,
}

#[derive(Default)]
pub struct FakeStack {
    pub socks: HashMap<u32, FakeSock>,
    pub next: u32,
    pub closed: Vec<(u32, bool)>,
    pub recv_calls: usize,
}

impl FakeStack {
    pub fn get(&mut self, h: u32) -> Result<&mut FakeSock, Errno> {
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
        s.opts.push((s.sent.len(), level, name, value.to_vec()));
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
pub struct Out {
    pub frames: Vec<Vec<u8>>,
    pub room: usize,
    pub max_frame: usize,
}

impl Out {
    pub fn new(room: usize) -> Out {
        Out {
            frames: Vec::new(),
            room,
            max_frame: 16 * 1024,
        }
    }
    pub fn take(&mut self) -> Vec<Vec<u8>> {
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

pub const DRIVER_WINDOW: u32 = 10_000;
pub const LISTENER: u32 = 5;
pub const LOCAL: &str = "192.0.2.1:80";

pub fn enc(m: Msg<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; m.encoded_len()];
    m.encode(&mut buf).unwrap();
    buf
}

/// The fault tests' config: a small window, no telemetry frames (the
/// telemetry tests turn it on).
pub fn cfg() -> InstanceConfig {
    InstanceConfig {
        window_bytes: 8192,
        telemetry: false,
        ..InstanceConfig::default()
    }
}

pub struct Rig {
    pub ex: Executor<FakeStack>,
    pub out: Out,
    pub now: u64,
}

impl Rig {
    pub fn new(cfg: InstanceConfig) -> Rig {
        let ex = Executor::new(FakeStack::default(), cfg, DRIVER_WINDOW, 1).unwrap();
        Rig {
            ex,
            out: Out::new(usize::MAX),
            now: 1_000,
        }
    }
    pub fn send(&mut self, m: Msg<'_>) -> Vec<Vec<u8>> {
        self.raw(&enc(m))
    }
    pub fn raw(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        self.ex.on_frame(frame, self.now, 5_000_000, &mut self.out);
        self.out.take()
    }
    pub fn event(&mut self, h: u32, r: Readiness) -> Vec<Vec<u8>> {
        self.ex
            .on_events(&[(h, r)], self.now, 5_000_000, &mut self.out);
        self.out.take()
    }
    pub fn handle_of_listener(&self) -> u32 {
        1
    }
    /// Opens a listener with announcement credit `backlog`.
    pub fn listen(&mut self, backlog: u32) {
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
    pub fn incoming(&mut self, peer: &str) -> Vec<Vec<u8>> {
        let lh = self.handle_of_listener();
        let s = self.ex.stack_mut().socks.get_mut(&lh).unwrap();
        s.pending
            .push_back((peer.parse().unwrap(), LOCAL.parse().unwrap()));
        self.event(lh, Readiness::READABLE)
    }
}

pub fn decode(frames: &[Vec<u8>]) -> Vec<Msg<'_>> {
    frames.iter().map(|f| Msg::decode(f).unwrap()).collect()
}

pub fn replies(frames: &[Vec<u8>]) -> Vec<(u32, u32, i32)> {
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

pub fn accepted(frames: &[Vec<u8>]) -> Vec<u32> {
    decode(frames)
        .into_iter()
        .filter_map(|m| match m {
            Msg::Accepted { sock, .. } => Some(sock),
            _ => None,
        })
        .collect()
}

pub fn data_bytes(frames: &[Vec<u8>], id: u32) -> Vec<u8> {
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

pub fn credits(frames: &[Vec<u8>], id: u32) -> u64 {
    decode(frames)
        .into_iter()
        .filter_map(|m| match m {
            Msg::Credit { sock, bytes } if sock == id => Some(u64::from(bytes)),
            _ => None,
        })
        .sum()
}

/// Accepts one connection from `peer`; returns (sock id, stack handle).
pub fn accept_one(rig: &mut Rig, peer: &str) -> (u32, u32) {
    let f = rig.incoming(peer);
    let ids = accepted(&f);
    assert_eq!(ids.len(), 1, "{:?}", decode(&f));
    assert_ne!(ids[0] & INSTANCE_SOCK_BIT, 0);
    let h = rig.ex.stack().next;
    (ids[0], h)
}
