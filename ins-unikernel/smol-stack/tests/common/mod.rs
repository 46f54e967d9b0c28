//! Two real SmolStacks joined by an in-memory Ethernet wire, on a shared
//! virtual clock, pumped in one thread. Nothing is faked: every frame is a
//! real Ethernet/IP/TCP or UDP frame built and parsed by smoltcp; the
//! wire can drop frames on demand (a silent peer), which a real network
//! produces only by chance.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use ins_core::stack::{Readiness, Stack};
use ins_smol_stack::smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use ins_smol_stack::smoltcp::time::Instant;
use ins_smol_stack::{Handle, SmolStack, StackConfig, Waiter};

#[derive(Default)]
pub struct WireState {
    /// Frames in flight towards side 0 and side 1.
    pub queues: [VecDeque<Vec<u8>>; 2],
    /// Side whose outgoing frames are dropped.
    pub cut: [bool; 2],
    /// Frames delivered, per sender.
    pub sent: [u64; 2],
    pub now_ns: u64,
}

pub type Wire = Rc<RefCell<WireState>>;

pub struct Port {
    pub wire: Wire,
    pub side: usize,
}

pub struct Rx(Vec<u8>);
pub struct Tx {
    wire: Wire,
    side: usize,
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        let mut w = self.wire.borrow_mut();
        if !w.cut[self.side] {
            w.sent[self.side] += 1;
            w.queues[1 - self.side].push_back(buf);
        }
        r
    }
}

impl Device for Port {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _t: Instant) -> Option<(Rx, Tx)> {
        let f = self.wire.borrow_mut().queues[self.side].pop_front()?;
        Some((
            Rx(f),
            Tx {
                wire: self.wire.clone(),
                side: self.side,
            },
        ))
    }

    fn transmit(&mut self, _t: Instant) -> Option<Tx> {
        Some(Tx {
            wire: self.wire.clone(),
            side: self.side,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

/// The virtual clock: `wait` advances it by the timeout (or 1 ms).
pub struct SimWaiter(pub Wire);

impl Waiter for SimWaiter {
    fn now_ns(&mut self) -> u64 {
        self.0.borrow().now_ns
    }
    fn wait(&mut self, timeout_ns: Option<u64>) {
        let mut w = self.0.borrow_mut();
        w.now_ns += timeout_ns.unwrap_or(1_000_000).clamp(1, 1_000_000_000);
    }
}

pub type S = SmolStack<Port, SimWaiter>;

pub const A4: &str = "10.0.0.1";
pub const B4: &str = "10.0.0.2";
pub const A6: &str = "fd00::1";
pub const B6: &str = "fd00::2";

pub fn config(side: usize) -> StackConfig {
    StackConfig {
        mac: [0x02, 0, 0, 0, 0, side as u8 + 1],
        ipv4: Some(([10, 0, 0, side as u8 + 1].into(), 24)),
        ipv6: Some((format!("fd00::{}", side + 1).parse().unwrap(), 64)),
        random_seed: 0x1234_5678 + side as u64,
        tcp_buf: 16 * 1024,
        ..StackConfig::default()
    }
}

/// Two stacks on one wire: side 0 is 10.0.0.1/fd00::1, side 1 .2/::2.
pub fn stacks(ca: StackConfig, cb: StackConfig) -> (Wire, S, S) {
    let wire: Wire = Rc::new(RefCell::new(WireState {
        now_ns: 1_000_000_000,
        ..WireState::default()
    }));
    let a = SmolStack::new(
        ca,
        Port {
            wire: wire.clone(),
            side: 0,
        },
        SimWaiter(wire.clone()),
    );
    let b = SmolStack::new(
        cb,
        Port {
            wire: wire.clone(),
            side: 1,
        },
        SimWaiter(wire.clone()),
    );
    (wire, a, b)
}

pub struct Pair {
    pub wire: Wire,
    pub a: S,
    pub b: S,
    pub ev_a: Vec<(Handle, Readiness)>,
    pub ev_b: Vec<(Handle, Readiness)>,
}

impl Pair {
    pub fn new() -> Pair {
        Pair::with(config(0), config(1))
    }

    pub fn with(ca: StackConfig, cb: StackConfig) -> Pair {
        let (wire, a, b) = stacks(ca, cb);
        Pair {
            wire,
            a,
            b,
            ev_a: Vec::new(),
            ev_b: Vec::new(),
        }
    }

    /// Polls both stacks until no frame is in flight and neither stack has
    /// a timer due within `horizon_ns` (delayed ACKs, retransmissions),
    /// advancing the virtual clock to each next timer; collects events.
    pub fn settle_within(&mut self, rounds: usize, horizon_ns: u64) {
        for _ in 0..rounds {
            self.a.poll_events(Some(0), &mut self.ev_a).unwrap();
            self.b.poll_events(Some(0), &mut self.ev_b).unwrap();
            let empty = {
                let w = self.wire.borrow();
                w.queues[0].is_empty() && w.queues[1].is_empty()
            };
            if !empty {
                continue;
            }
            let next = match (self.a.poll_delay_ns(), self.b.poll_delay_ns()) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
            match next {
                Some(d) if d <= horizon_ns => self.wire.borrow_mut().now_ns += d.max(1),
                _ => return,
            }
        }
    }

    /// Settles with a 2 s horizon: smoltcp stays silent for 1 s after a
    /// neighbour-discovery miss, so a first frame to a new neighbour can
    /// take that long.
    pub fn settle(&mut self) {
        self.settle_within(10_000, 2_000_000_000);
    }

    /// Advances the clock by `ns` in 10 ms steps, polling both stacks.
    pub fn run_for(&mut self, ns: u64) {
        let steps = ns / 10_000_000;
        for _ in 0..steps {
            self.wire.borrow_mut().now_ns += 10_000_000;
            self.a.poll_events(Some(0), &mut self.ev_a).unwrap();
            self.b.poll_events(Some(0), &mut self.ev_b).unwrap();
        }
    }

    /// Readiness reported for `h` on side a since the last call (merged).
    pub fn took_a(&mut self, h: Handle) -> Readiness {
        take(&mut self.ev_a, h)
    }

    pub fn took_b(&mut self, h: Handle) -> Readiness {
        take(&mut self.ev_b, h)
    }
}

fn take(evs: &mut Vec<(Handle, Readiness)>, h: Handle) -> Readiness {
    let mut r = Readiness::EMPTY;
    evs.retain(|&(x, y)| {
        if x == h {
            r |= y;
            false
        } else {
            true
        }
    });
    r
}

pub fn sa(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap()
}
