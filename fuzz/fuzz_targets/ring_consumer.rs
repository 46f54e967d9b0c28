//! A hostile producer against a ring `Consumer`: the input scripts writes of
//! arbitrary bytes anywhere in the ring (indices included) interleaved with
//! consumer calls. Every result must be `Ok` or `Corrupt` (sticky), and a
//! popped frame must fit the buffer and `max_frame`; never a panic.
#![no_main]

use arbitrary::Arbitrary;
use ins_protocol::region::{HeapRegion, RegionView};
use ins_protocol::ring::{Consumer, RingConfig, RingError, init_ring};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Step {
    /// The producer writes `bytes` at `offset` (mod the ring's length).
    Write {
        offset: u16,
        bytes: Vec<u8>,
    },
    /// The producer stores an index word (0 prod, 1 prod_event, 2 cons,
    /// 3 cons_event).
    Index {
        word: u8,
        value: u32,
    },
    PeekLen,
    Pop {
        buf_len: u16,
    },
    Release,
    PrepareWait,
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
    let mut c = Consumer::new(&region, 0, cfg).expect("ring fits");
    let mut failed: Option<RingError> = None;
    let mut buf = vec![0u8; capacity as usize];
    for step in input.steps {
        let r: Result<Option<usize>, RingError> = match step {
            Step::Write { offset, bytes } => {
                let at = usize::from(offset) % cfg.region_len();
                let n = bytes.len().min(cfg.region_len() - at);
                view.write(at, &bytes[..n]).expect("in bounds");
                continue;
            }
            Step::Index { word, value } => {
                let at = usize::from(word % 4) * 64;
                view.store_u32(at, value, std::sync::atomic::Ordering::Relaxed)
                    .expect("in bounds");
                continue;
            }
            Step::PeekLen => c.peek_len(),
            Step::Pop { buf_len } => {
                let n = usize::from(buf_len) % (buf.len() + 1);
                let r = c.pop(&mut buf[..n]);
                if let Ok(Some(len)) = r {
                    assert!(len <= n && len <= max_frame as usize);
                }
                r
            }
            Step::Release => c.release().map(|_| None),
            Step::PrepareWait => c.prepare_wait().map(|_| None),
        };
        match (failed, r) {
            (Some(first), r) => assert_eq!(r, Err(first), "corruption is sticky"),
            (None, Err(e @ RingError::Corrupt(_))) => failed = Some(e),
            (None, Ok(Some(len))) => assert!(len <= max_frame as usize),
            (None, Ok(None) | Err(RingError::TooLarge { .. })) => {}
            (None, Err(e)) => panic!("unexpected consumer error {e:?}"),
        }
    }
});
