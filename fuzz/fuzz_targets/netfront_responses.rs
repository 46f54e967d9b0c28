//! A hostile netback against netfront's response path: the input scripts
//! arbitrary writes to the shared ring page (entries and indices) between
//! the frontend's calls. The frontend must never panic or read outside the
//! page; every accepted rx packet lies inside its page and has a non-zero
//! length; every completed id was outstanding and is completed once; a
//! backend claiming more responses than requests is refused.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use ins_netfront::proto::{self, PAGE, RX_ENTRY, Slots, TX_ENTRY, TX_RSP};
use ins_netfront::ring::FrontRing;
use ins_protocol::region::{HeapRegion, RegionView};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Step {
    /// The backend writes `bytes` at `offset` of the page.
    Write { offset: u16, bytes: Vec<u8> },
    /// The backend stores an index word (0 req_prod, 1 req_event,
    /// 2 rsp_prod, 3 rsp_event).
    Index { word: u8, value: u32 },
    /// The frontend posts up to `n` requests with free ids.
    Post { n: u8 },
    /// The frontend consumes what is ready.
    Harvest,
    /// The frontend re-arms notifications.
    FinalCheck,
}

#[derive(Arbitrary, Debug)]
struct Input {
    tx: bool,
    steps: Vec<Step>,
}

fuzz_target!(|input: Input| {
    let region = HeapRegion::new(PAGE);
    let entry = if input.tx { TX_ENTRY } else { RX_ENTRY };
    let mut ring = FrontRing::init(RegionView::new(&region), entry).expect("a page holds the ring");
    let backend = RegionView::new(&region);
    let mut slots = Slots::default();
    let mut free: Vec<u16> = (0..256).rev().collect();
    let mut broken = false;
    for step in input.steps {
        match step {
            Step::Write { offset, bytes } => {
                let off = usize::from(offset) % PAGE;
                let n = bytes.len().min(PAGE - off);
                backend.write(off, &bytes[..n]).expect("in bounds");
            }
            Step::Index { word, value } => {
                let off = usize::from(word % 4) * 4;
                backend
                    .store_u32(off, value, std::sync::atomic::Ordering::Release)
                    .expect("in bounds");
            }
            Step::Post { n } => {
                for _ in 0..n {
                    let Some(id) = free.pop() else { break };
                    let req = if input.tx {
                        proto::tx_request(8 + u32::from(id), 0, 0, id, 60).to_vec()
                    } else {
                        proto::rx_request(id, 8 + u32::from(id)).to_vec()
                    };
                    assert!(slots.start(id));
                    if !ring.put_request(&req) {
                        slots.complete(id);
                        free.push(id);
                        break;
                    }
                }
                let _ = ring.push();
            }
            Step::Harvest => {
                if broken {
                    continue;
                }
                let Ok(ready) = ring.responses_ready() else {
                    broken = true;
                    continue;
                };
                assert!(ready <= 256);
                let mut done = BTreeSet::new();
                if input.tx {
                    let mut e = [0u8; TX_RSP];
                    while ring.take_response(&mut e) {
                        if let Ok(d) = proto::parse_tx(&e, &mut slots) {
                            assert!(done.insert(d.id), "id completed twice");
                            free.push(d.id);
                        }
                    }
                } else {
                    let mut e = [0u8; RX_ENTRY];
                    while ring.take_response(&mut e) {
                        if let Ok(d) = proto::parse_rx(&e, &mut slots) {
                            assert!(done.insert(d.id), "id completed twice");
                            if let Ok((off, len)) = d.packet {
                                assert!(len > 0 && usize::from(off) + usize::from(len) <= PAGE);
                            }
                            free.push(d.id);
                        }
                    }
                }
            }
            Step::FinalCheck => {
                if !broken && ring.final_check().is_err() {
                    broken = true;
                }
            }
        }
        assert_eq!(
            slots.count() as usize + free.len(),
            256,
            "ids leak or duplicate"
        );
    }
});
