//! A hostile consumer against a ring `Producer`: the input scripts writes of
//! indices (cons, events, and the producer's own words) and arbitrary bytes
//! interleaved with producer calls. Every result must be `Ok`, `Full`,
//! `TooLarge` or `Corrupt` (sticky); never a panic.
#![no_main]

use arbitrary::Arbitrary;
use ins_protocol::region::{HeapRegion, RegionView};
use ins_protocol::ring::{Producer, RingConfig, RingError, init_ring};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Step {
    /// The consumer writes `bytes` at `offset` (mod the ring's length).
    Write {
        offset: u16,
        bytes: Vec<u8>,
    },
    /// The consumer stores an index word (0 prod, 1 prod_event, 2 cons,
    /// 3 cons_event).
    Index {
        word: u8,
        value: u32,
    },
    /// The consumer moves `cons` by a small amount (reaches the checks past
    /// the range test more often than arbitrary values do).
    Nudge {
        delta: i16,
    },
    Push {
        len: u16,
    },
    PushParts {
        lens: Vec<u8>,
    },
    Flush,
    FreeSpace,
    PrepareWaitSpace {
        len: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    capacity_shift: u8,
    max_frame: u16,
    steps: Vec<Step>,
}

fuzz_target!(|input: Input| {
    let capacity = 1u32 << (8 + input.capacity_shift % 5);
    let max_frame = u32::from(input.max_frame) % (capacity / 2) + 1;
    let cfg = RingConfig::new(capacity, max_frame).expect("valid config");
    let region = HeapRegion::new(cfg.region_len());
    init_ring(&region, 0, cfg).expect("ring fits");
    let view = RegionView::new(&region);
    let mut p = Producer::new(&region, 0, cfg).expect("ring fits");
    let mut failed: Option<RingError> = None;
    let payload = vec![0xa5u8; u16::MAX as usize + 1];
    let ord = std::sync::atomic::Ordering::Relaxed;
    for step in input.steps {
        let r: Result<(), RingError> = match step {
            Step::Write { offset, bytes } => {
                let at = usize::from(offset) % cfg.region_len();
                let n = bytes.len().min(cfg.region_len() - at);
                view.write(at, &bytes[..n]).expect("in bounds");
                continue;
            }
            Step::Index { word, value } => {
                let at = usize::from(word % 4) * 64;
                view.store_u32(at, value, ord).expect("in bounds");
                continue;
            }
            Step::Nudge { delta } => {
                let cons = view.load_u32(128, ord).expect("in bounds");
                view.store_u32(128, cons.wrapping_add_signed(i32::from(delta)), ord)
                    .expect("in bounds");
                continue;
            }
            Step::Push { len } => p.try_push(&payload[..usize::from(len)]),
            Step::PushParts { lens } => {
                let parts: Vec<&[u8]> = lens.iter().map(|&l| &payload[..usize::from(l)]).collect();
                p.try_push_parts(&parts)
            }
            Step::Flush => p.flush().map(drop),
            Step::FreeSpace => p
                .free_frame_space()
                .map(|n| assert!(n <= max_frame as usize)),
            Step::PrepareWaitSpace { len } => p.prepare_wait_space(usize::from(len)).map(drop),
        };
        match (failed, r) {
            (Some(first), r) => assert_eq!(r, Err(first), "corruption is sticky"),
            (None, Err(e @ RingError::Corrupt(_))) => failed = Some(e),
            (None, Ok(()) | Err(RingError::Full | RingError::TooLarge { .. })) => {}
            // Waiting for space that only unflushed frames could free.
            (None, Err(RingError::Config(_))) => {}
        }
    }
});
