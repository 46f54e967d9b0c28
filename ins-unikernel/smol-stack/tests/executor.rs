//! The real ins-core Executor over a SmolStack (side a, the instance),
//! driven by driver frames, with side b's SmolStack as the remote peer:
//! byte-exact TCP both ways with half-close, flow records with exact byte
//! counts, UDP request/response, a block mitigation resetting a peer, and a connection rate limit.

mod common;

use std::net::IpAddr;

use common::{S, Wire, config, sa, stacks};
use ins_core::Errno;
use ins_core::config::InstanceConfig;
use ins_core::executor::{Executor, Outbox, OutboxFull};
use ins_core::stack::{Family, Readiness, SockType, Stack};
use ins_protocol::msg::{self, FlowRecord, Mitigation, Msg, PktInfo, Prefix};

struct Out(Vec<Vec<u8>>);

impl Outbox for Out {
    fn try_push(&mut self, parts: &[&[u8]]) -> Result<(), OutboxFull> {
        self.0.push(parts.concat());
        Ok(())
    }
    fn max_frame(&self) -> usize {
        16 * 1024
    }
}

const WINDOW: u32 = 64 * 1024;

struct Rig {
    wire: Wire,
    ex: Executor<S>,
    b: S,
    ev_b: Vec<(ins_smol_stack::Handle, Readiness)>,
    out: Out,
    /// Everything the instance sent the driver, decoded later.
    frames: Vec<Vec<u8>>,
}

fn enc(m: Msg<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; m.encoded_len()];
    m.encode(&mut buf).unwrap();
    buf
}

impl Rig {
    fn new() -> Rig {
        let (wire, a, b) = stacks(config(0), config(1));
        let cfg = InstanceConfig {
            window_bytes: 32 * 1024,
            ..InstanceConfig::default()
        };
        let ex = Executor::new(a, cfg, WINDOW, 7).unwrap();
        Rig {
            wire,
            ex,
            b,
            ev_b: Vec::new(),
            out: Out(Vec::new()),
            frames: Vec::new(),
        }
    }

    fn now(&self) -> u64 {
        self.wire.borrow().now_ns
    }

    /// Sends a driver frame; returns the frames it produced at once.
    fn send(&mut self, m: Msg<'_>) -> Vec<Vec<u8>> {
        let now = self.now();
        self.ex.on_frame(&enc(m), now, now, &mut self.out);
        let f = std::mem::take(&mut self.out.0);
        self.frames.extend(f.iter().cloned());
        f
    }

    /// Runs both sides until quiet (no frame in flight, no stack timer
    /// within 2 s); returns the frames the instance produced.
    fn pump(&mut self) -> Vec<Vec<u8>> {
        let mut produced = Vec::new();
        for _ in 0..20_000 {
            let now = self.now();
            let mut evs = Vec::new();
            self.ex.stack_mut().poll_events(Some(0), &mut evs).unwrap();
            self.ex.on_events(&evs, now, now, &mut self.out);
            if self.ex.next_deadline().is_some_and(|d| d <= now) {
                self.ex.on_tick(now, now, &mut self.out);
            }
            produced.append(&mut self.out.0);
            self.b.poll_events(Some(0), &mut self.ev_b).unwrap();
            let empty = {
                let w = self.wire.borrow();
                w.queues[0].is_empty() && w.queues[1].is_empty()
            };
            if !empty || !evs.is_empty() {
                continue;
            }
            // advance to the next stack timer; the executor's periodic
            // deadlines (heartbeats) run along the way but never keep the
            // pump going by themselves
            let next = [self.ex.stack_mut().poll_delay_ns(), self.b.poll_delay_ns()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(d) if d <= 2_000_000_000 => self.wire.borrow_mut().now_ns += d.max(1),
                _ => break,
            }
        }
        self.frames.extend(produced.iter().cloned());
        produced
    }
}

fn decode(frames: &[Vec<u8>]) -> Vec<Msg<'_>> {
    frames.iter().map(|f| Msg::decode(f).unwrap()).collect()
}

fn reply_ok(frames: &[Vec<u8>]) {
    for m in decode(frames) {
        if let Msg::Reply { errno, .. } = m {
            assert_eq!(errno, 0, "{m:?}");
        }
    }
}

fn listen(r: &mut Rig, sock: u32, addr: &str) {
    let f = r.send(Msg::Open {
        sock,
        req: 1,
        family: msg::Family::Inet,
        ty: msg::SockType::Stream,
        proto: 0,
    });
    reply_ok(&f);
    reply_ok(&r.send(Msg::Bind {
        sock,
        req: 2,
        addr: sa(addr),
    }));
    reply_ok(&r.send(Msg::Listen {
        sock,
        req: 3,
        backlog: 16,
    }));
}

fn accepted(frames: &[Vec<u8>]) -> Vec<(u32, std::net::SocketAddr)> {
    decode(frames)
        .into_iter()
        .filter_map(|m| match m {
            Msg::Accepted { sock, peer, .. } => Some((sock, peer)),
            _ => None,
        })
        .collect()
}

fn final_flows(frames: &[Vec<u8>]) -> Vec<FlowRecord> {
    decode(frames)
        .into_iter()
        .filter_map(|m| match m {
            Msg::Flow(f) if f.state == msg::FlowState::Closed => Some(f),
            _ => None,
        })
        .collect()
}

#[test]
fn tcp_echo_through_the_executor_is_byte_exact_with_exact_flow_counts() {
    let mut r = Rig::new();
    listen(&mut r, 5, "10.0.0.1:8080");
    let c = r.b.open(Family::Inet, SockType::Stream).unwrap();
    assert_eq!(r.b.connect(c, sa("10.0.0.1:8080")), Err(Errno::EINPROGRESS));
    let f = r.pump();
    let acc = accepted(&f);
    assert_eq!(acc.len(), 1, "{:?}", decode(&f));
    let (id, peer) = acc[0];
    assert_eq!(
        peer,
        r.b.local_addr(c)
            .map(|a| std::net::SocketAddr::new("10.0.0.2".parse().unwrap(), a.port()))
            .unwrap()
    );

    // b -> instance -> driver: 300 kB, then b half-closes
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (mut off, mut got, mut eof) = (0, Vec::new(), false);
    let mut rounds = 0;
    while !eof {
        rounds += 1;
        assert!(rounds < 2000, "stuck: sent {off}, driver got {}", got.len());
        while off < data.len() {
            match r.b.send(c, &data[off..]) {
                Ok(n) => off += n,
                Err(Errno::EAGAIN) => break,
                Err(e) => panic!("{e}"),
            }
        }
        if off == data.len() && r.b.peer_addr(c).is_ok() {
            let _ = r.b.shutdown(c, ins_core::stack::Shutdown::Write);
        }
        let f = r.pump();
        let mut credit = 0;
        for m in decode(&f) {
            match m {
                Msg::Data { sock, bytes } if sock == id => {
                    got.extend_from_slice(bytes);
                    credit += bytes.len() as u32;
                }
                Msg::Eof { sock } if sock == id => eof = true,
                _ => {}
            }
        }
        if credit > 0 {
            r.send(Msg::Credit {
                sock: id,
                bytes: credit,
            });
        }
    }
    assert!(
        got == data,
        "driver got {} of {} bytes, or different bytes",
        got.len(),
        data.len()
    );

    // driver -> instance -> b: echo it back, within the instance's window
    // (credits may come with any frame batch: scan everything the instance
    // produced since the last look)
    let mut sent = 0;
    let mut room = 32 * 1024usize;
    let mut echo = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut seen = r.frames.len();
    let mut eof_sent = false;
    let mut rounds = 0;
    while echo.len() < data.len() {
        rounds += 1;
        assert!(
            rounds < 2000,
            "stuck: driver sent {sent}, b got {} a {:?} b {:?} t {}",
            echo.len(),
            r.ex.stack().tcp_states(),
            r.b.tcp_states(),
            r.now()
        );
        while sent < data.len() && room > 0 {
            let n = (data.len() - sent).min(room).min(16 * 1024 - 64);
            r.send(Msg::Data {
                sock: id,
                bytes: &data[sent..sent + n],
            });
            sent += n;
            room -= n;
        }
        if sent == data.len() && !eof_sent {
            r.send(Msg::Eof { sock: id });
            eof_sent = true;
        }
        r.pump();
        loop {
            match r.b.recv(c, &mut buf) {
                Ok(0) => break,
                Ok(n) => echo.extend_from_slice(&buf[..n]),
                Err(Errno::EAGAIN) => break,
                Err(e) => panic!("{e}"),
            }
        }
        r.pump();
        for m in decode(&r.frames[seen..]) {
            if let Msg::Credit { sock, bytes } = m
                && sock == id
            {
                room += bytes as usize;
            }
        }
        seen = r.frames.len();
    }
    assert!(echo == data, "echo differs");
    r.pump();
    assert_eq!(
        r.b.recv(c, &mut buf),
        Ok(0),
        "the driver's Eof reached b as FIN"
    );

    r.send(Msg::Close { sock: id, req: 9 });
    r.pump();
    let flows = final_flows(&r.frames);
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!((flows[0].bytes_in, flows[0].bytes_out), (300_000, 300_000));
    assert_eq!(flows[0].proto, 6);
}

#[test]
fn udp_request_response_through_the_executor() {
    let mut r = Rig::new();
    reply_ok(&r.send(Msg::Open {
        sock: 6,
        req: 1,
        family: msg::Family::Inet,
        ty: msg::SockType::Dgram,
        proto: 0,
    }));
    reply_ok(&r.send(Msg::Bind {
        sock: 6,
        req: 2,
        addr: sa("10.0.0.1:5353"),
    }));
    r.pump();
    let u = r.b.open(Family::Inet, SockType::Datagram).unwrap();
    for i in 0..3u8 {
        r.b.send_to(u, &[b'q', i], sa("10.0.0.1:5353")).unwrap();
    }
    let f = r.pump();
    let mut asked = Vec::new();
    for m in decode(&f) {
        if let Msg::DataTo {
            sock: 6,
            addr: Some(a),
            bytes,
            ..
        } = m
        {
            asked.push((a, bytes.to_vec()));
        }
    }
    assert_eq!(asked.len(), 3, "{:?}", decode(&f));
    for (a, q) in &asked {
        assert_eq!(a.ip(), "10.0.0.2".parse::<IpAddr>().unwrap());
        let mut reply = b"re:".to_vec();
        reply.extend_from_slice(q);
        r.send(Msg::DataTo {
            sock: 6,
            addr: Some(*a),
            info: PktInfo::NONE,
            bytes: &reply,
        });
    }
    r.pump();
    let mut buf = [0u8; 64];
    for i in 0..3u8 {
        let (n, from) = r.b.recv_from(u, &mut buf).unwrap();
        assert_eq!(&buf[..n], &[b'r', b'e', b':', b'q', i]);
        assert_eq!(from, sa("10.0.0.1:5353"));
    }
}

#[test]
fn blocking_a_peer_resets_its_connections_and_refuses_new_ones() {
    let mut r = Rig::new();
    listen(&mut r, 5, "10.0.0.1:8080");
    let c = r.b.open(Family::Inet, SockType::Stream).unwrap();
    let _ = r.b.connect(c, sa("10.0.0.1:8080"));
    let f = r.pump();
    assert_eq!(accepted(&f).len(), 1);
    let f = r.send(Msg::Mitigate {
        req: 4,
        cmd: Mitigation::Block(Prefix {
            addr: "10.0.0.2".parse().unwrap(),
            len: 32,
        }),
    });
    reply_ok(&f);
    r.pump();
    let mut buf = [0u8; 8];
    assert_eq!(
        r.b.recv(c, &mut buf),
        Err(Errno::ECONNRESET),
        "established connection reset"
    );
    let c2 = r.b.open(Family::Inet, SockType::Stream).unwrap();
    let _ = r.b.connect(c2, sa("10.0.0.1:8080"));
    let f = r.pump();
    assert!(accepted(&f).is_empty(), "a blocked peer is not announced");
    let e = r.b.take_error(c2).unwrap();
    let got = r.b.recv(c2, &mut buf);
    assert!(
        e == Some(Errno::ECONNRESET) || got == Err(Errno::ECONNRESET),
        "new connection reset: {e:?} {got:?}"
    );
}

#[test]
fn a_connection_rate_limit_holds_over_smoltcp() {
    let mut r = Rig::new();
    listen(&mut r, 5, "10.0.0.1:8080");
    reply_ok(&r.send(Msg::Mitigate {
        req: 4,
        cmd: Mitigation::RateLimit {
            prefix: Prefix {
                addr: "10.0.0.2".parse().unwrap(),
                len: 32,
            },
            conn_per_sec: 1,
            conn_burst: 1,
            bytes_per_sec: 0,
            bytes_burst: 0,
        },
    }));
    // four connections at once: the bucket holds one token
    let conns: Vec<_> = (0..4)
        .map(|_| {
            let c = r.b.open(Family::Inet, SockType::Stream).unwrap();
            let _ = r.b.connect(c, sa("10.0.0.1:8080"));
            c
        })
        .collect();
    let f = r.pump();
    assert_eq!(accepted(&f).len(), 1, "one of four within the burst");
    let mut buf = [0u8; 8];
    let reset = conns
        .iter()
        .filter(|&&c| {
            let e = r.b.take_error(c).unwrap();
            e == Some(Errno::ECONNRESET) || r.b.recv(c, &mut buf) == Err(Errno::ECONNRESET)
        })
        .count();
    assert_eq!(reset, 3, "the three over the limit are reset");
    // a second later the bucket has one token again
    r.wire.borrow_mut().now_ns += 1_000_000_000;
    let c = r.b.open(Family::Inet, SockType::Stream).unwrap();
    let _ = r.b.connect(c, sa("10.0.0.1:8080"));
    let f = r.pump();
    assert_eq!(accepted(&f).len(), 1, "refilled after 1 s");
}
