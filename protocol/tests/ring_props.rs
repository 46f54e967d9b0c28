//! Property tests of the frame ring against a `VecDeque` model, and against
//! a hostile peer scribbling over the shared region.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use ins_protocol::region::{HeapRegion, RegionView};
use ins_protocol::ring::{Consumer, Producer, RingConfig, RingError, init_ring};
use proptest::prelude::*;

/// Where the ring sits in the region (not at 0, to exercise offsets).
const OFF: usize = 64;

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    PushParts(Vec<usize>),
    Flush,
    Pop { small_buf: bool },
    PeekLen,
    Release,
    PrepareWait,
    FlushThenWaitSpace(usize),
    FreeSpace,
}

fn op(max: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..=max + 8).prop_map(Op::Push),
        2 => prop::collection::vec(0..=max / 2, 0..4).prop_map(Op::PushParts),
        3 => Just(Op::Flush),
        6 => any::<bool>().prop_map(|small_buf| Op::Pop { small_buf }),
        1 => Just(Op::PeekLen),
        3 => Just(Op::Release),
        2 => Just(Op::PrepareWait),
        1 => (0..=max).prop_map(Op::FlushThenWaitSpace),
        1 => Just(Op::FreeSpace),
    ]
}

fn config() -> impl Strategy<Value = (u32, u32)> {
    (8u32..=12).prop_flat_map(|shift| {
        let cap = 1u32 << shift;
        (Just(cap), 1..=cap / 2)
    })
}

fn frame_total(len: usize) -> usize {
    (len + 4).next_multiple_of(8)
}

/// What the ring must behave like.
struct Model {
    cap: usize,
    max: usize,
    /// Bytes of frames pushed and not yet released.
    used: usize,
    unflushed: VecDeque<Vec<u8>>,
    visible: VecDeque<Vec<u8>>,
    /// Bytes popped, not yet released.
    popped: usize,
    /// The consumer asked to be notified of the next flush (init_ring arms
    /// it for the first frame).
    consumer_waits: bool,
    /// Bytes of frames pushed, ever.
    pushed_total: u64,
    /// Bytes released, ever.
    released_total: u64,
    /// The producer's space event: notify when `released_total` reaches it.
    space_event: Option<u64>,
    seq: u8,
}

impl Model {
    fn next_bytes(&mut self, len: usize) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let s = self.seq;
        (0..len)
            .map(|i| s.wrapping_mul(31).wrapping_add(i as u8))
            .collect()
    }

    fn push(&mut self, len: usize) -> Result<(), RingError> {
        if len > self.max {
            return Err(RingError::TooLarge { len, max: self.max });
        }
        if self.used + frame_total(len) > self.cap {
            return Err(RingError::Full);
        }
        self.used += frame_total(len);
        self.pushed_total += frame_total(len) as u64;
        Ok(())
    }

    fn flush(&mut self) -> bool {
        if self.unflushed.is_empty() {
            return false;
        }
        self.visible.extend(self.unflushed.drain(..));
        std::mem::take(&mut self.consumer_waits)
    }
}

fn run_model(cap: u32, max: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let cfg = RingConfig::new(cap, max).unwrap();
    let region = HeapRegion::new(OFF + cfg.region_len());
    init_ring(&region, OFF, cfg).unwrap();
    let mut p = Producer::new(&region, OFF, cfg).unwrap();
    let mut c = Consumer::new(&region, OFF, cfg).unwrap();
    prop_assert_eq!(p.config(), cfg);
    prop_assert_eq!(c.config(), cfg);
    let mut m = Model {
        cap: cap as usize,
        max: max as usize,
        used: 0,
        unflushed: VecDeque::new(),
        visible: VecDeque::new(),
        popped: 0,
        consumer_waits: true,
        pushed_total: 0,
        released_total: 0,
        space_event: None,
        seq: 0,
    };
    let mut buf = vec![0u8; max as usize];
    for op in ops {
        match op {
            Op::Push(len) => {
                let bytes = m.next_bytes(len);
                let want = m.push(len);
                prop_assert_eq!(p.try_push(&bytes), want);
                if want.is_ok() {
                    m.unflushed.push_back(bytes);
                }
            }
            Op::PushParts(lens) => {
                let parts: Vec<Vec<u8>> = lens.iter().map(|&l| m.next_bytes(l)).collect();
                let slices: Vec<&[u8]> = parts.iter().map(|v| &v[..]).collect();
                let want = m.push(lens.iter().sum());
                prop_assert_eq!(p.try_push_parts(&slices), want);
                if want.is_ok() {
                    m.unflushed.push_back(parts.concat());
                }
            }
            Op::Flush => {
                let want = m.flush();
                prop_assert_eq!(p.flush(), Ok(want));
            }
            Op::Pop { small_buf } => match m.visible.front() {
                None => prop_assert_eq!(c.pop(&mut buf), Ok(None)),
                Some(f) if small_buf && !f.is_empty() => {
                    let n = f.len();
                    prop_assert_eq!(
                        c.pop(&mut buf[..n - 1]),
                        Err(RingError::TooLarge { len: n, max: n - 1 })
                    );
                }
                Some(_) => {
                    let f = m.visible.pop_front().unwrap();
                    prop_assert_eq!(c.pop(&mut buf), Ok(Some(f.len())));
                    prop_assert_eq!(&buf[..f.len()], &f[..]);
                    m.popped += frame_total(f.len());
                }
            },
            Op::PeekLen => {
                prop_assert_eq!(c.peek_len(), Ok(m.visible.front().map(Vec::len)));
            }
            Op::Release => {
                // Notify iff the space event lies in (old, new].
                let old = m.released_total;
                m.used -= m.popped;
                m.released_total += std::mem::take(&mut m.popped) as u64;
                let new = m.released_total;
                let want = m.space_event.is_some_and(|t| old < t && t <= new);
                prop_assert_eq!(c.release(), Ok(want));
            }
            Op::PrepareWait => {
                let ready = !m.visible.is_empty();
                m.consumer_waits = !ready;
                prop_assert_eq!(c.prepare_wait(), Ok(ready));
            }
            Op::FlushThenWaitSpace(len) => {
                let want = m.flush();
                prop_assert_eq!(p.flush(), Ok(want));
                let fits = m.used + frame_total(len) <= m.cap;
                if !fits {
                    let target = m.pushed_total + frame_total(len) as u64 - m.cap as u64;
                    m.space_event = Some(target);
                }
                prop_assert_eq!(p.prepare_wait_space(len), Ok(fits));
            }
            Op::FreeSpace => {
                let want = (m.cap - m.used).saturating_sub(4).min(m.max);
                prop_assert_eq!(p.free_frame_space(), Ok(want));
            }
        }
    }
    Ok(())
}

/// A write by the hostile peer into the ring's part of the region.
#[derive(Debug, Clone)]
enum Scribble {
    /// Arbitrary bytes at an arbitrary offset of the ring.
    Bytes(usize, Vec<u8>),
    /// An index word (0 prod, 1 prod_event, 2 cons, 3 cons_event) moved by
    /// a small amount, so that validation past the range checks is reached.
    Nudge(usize, i32),
    /// An index word set to anything.
    Word(usize, u32),
}

fn scribble(region_len: usize) -> impl Strategy<Value = Scribble> {
    prop_oneof![
        (0..region_len, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(o, b)| Scribble::Bytes(o, b)),
        (0..4usize, -300i32..300).prop_map(|(w, d)| Scribble::Nudge(w, d)),
        (0..4usize, any::<u32>()).prop_map(|(w, v)| Scribble::Word(w, v)),
    ]
}

fn apply(region: &HeapRegion, s: &Scribble, ring_len: usize) {
    let view = RegionView::new(region);
    match s {
        Scribble::Bytes(o, b) => {
            let n = b.len().min(ring_len - o);
            view.write(OFF + o, &b[..n]).unwrap();
        }
        Scribble::Nudge(w, d) => {
            let at = OFF + w * 64;
            let v = view.load_u32(at, Ordering::Relaxed).unwrap();
            view.store_u32(at, v.wrapping_add_signed(*d), Ordering::Relaxed)
                .unwrap();
        }
        Scribble::Word(w, v) => view.store_u32(OFF + w * 64, *v, Ordering::Relaxed).unwrap(),
    }
}

/// Tracks the first corruption a side reports and checks it sticks.
#[derive(Default)]
struct Side(Option<RingError>);

impl Side {
    fn check<T: std::fmt::Debug>(&mut self, r: Result<T, RingError>) -> Result<(), TestCaseError> {
        match (&self.0, r) {
            (Some(first), r) => prop_assert_eq!(r.unwrap_err(), *first),
            (None, Err(e @ RingError::Corrupt(_))) => {
                prop_assert!(!e.to_string().is_empty());
                self.0 = Some(e);
            }
            (None, Ok(_) | Err(RingError::Full | RingError::TooLarge { .. })) => {}
            (None, Err(e)) => prop_assert!(false, "unexpected error {e:?}"),
        }
        Ok(())
    }
}

fn run_hostile(
    cap: u32,
    max: u32,
    steps: Vec<(Op, Option<Scribble>)>,
) -> Result<(), TestCaseError> {
    let cfg = RingConfig::new(cap, max).unwrap();
    let region = HeapRegion::new(OFF + cfg.region_len());
    init_ring(&region, OFF, cfg).unwrap();
    let mut p = Producer::new(&region, OFF, cfg).unwrap();
    let mut c = Consumer::new(&region, OFF, cfg).unwrap();
    let (mut ps, mut cs) = (Side::default(), Side::default());
    let mut buf = vec![0u8; max as usize];
    let payload = vec![0x5au8; max as usize + 8];
    for (op, s) in steps {
        if let Some(s) = s {
            apply(&region, &s, cfg.region_len());
        }
        match op {
            Op::Push(len) => ps.check(p.try_push(&payload[..len]))?,
            Op::PushParts(lens) => {
                let parts: Vec<&[u8]> = lens.iter().map(|&l| &payload[..l]).collect();
                ps.check(p.try_push_parts(&parts))?;
            }
            Op::Flush => ps.check(p.flush())?,
            Op::Pop { small_buf } => {
                let n = if small_buf { buf.len() / 2 } else { buf.len() };
                let r = c.pop(&mut buf[..n]);
                if let Ok(Some(len)) = r {
                    prop_assert!(len <= n);
                }
                cs.check(r)?;
            }
            Op::PeekLen => {
                let r = c.peek_len();
                if let Ok(Some(len)) = r {
                    prop_assert!(len <= max as usize);
                }
                cs.check(r)?;
            }
            Op::Release => cs.check(c.release())?,
            Op::PrepareWait => cs.check(c.prepare_wait())?,
            Op::FlushThenWaitSpace(len) => {
                ps.check(p.flush())?;
                ps.check(p.prepare_wait_space(len))?;
            }
            Op::FreeSpace => {
                let r = p.free_frame_space();
                if let Ok(n) = r {
                    prop_assert!(n <= max as usize);
                }
                ps.check(r)?;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn ring_matches_model(
        ((cap, max), ops) in config().prop_flat_map(|(cap, max)| {
            (Just((cap, max)), prop::collection::vec(op(max as usize), 1..400))
        })
    ) {
        run_model(cap, max, ops)?;
    }

    #[test]
    fn hostile_peer_never_panics(
        ((cap, max), steps) in config().prop_flat_map(|(cap, max)| {
            let ring_len = 256 + cap as usize;
            let step = (op(max as usize), prop::option::weighted(0.2, scribble(ring_len)));
            (Just((cap, max)), prop::collection::vec(step, 1..300))
        })
    ) {
        run_hostile(cap, max, steps)?;
    }
}
