//! Loom model checks of the ring's memory orderings and wake-up protocol.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p ins-protocol --test ring_loom --release`.
//!
//! The ring code under test is the crate's own `ProducerCore`/`ConsumerCore`,
//! over [`LoomMem`]: a [`RingMemory`] whose index words are loom atomics and
//! whose data bytes are loom `UnsafeCell`s. Loom explores the thread
//! interleavings and reordering its memory model allows, fails on any data
//! race on a data byte (a byte read without happening-after its write, or
//! overwritten while the consumer may still read it), and reports a deadlock
//! if a wake-up is lost (the doorbell is a mutex + condvar, like an eventfd
//! read that blocks until a write).
#![cfg(loom)]

use std::sync::atomic::Ordering;

use ins_protocol::region::OutOfBounds;
use ins_protocol::ring::{
    ConsumerCore, ProducerCore, RING_HEADER_LEN, RingConfig, RingError, RingMemory,
};
use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU32;
use loom::sync::{Arc, Condvar, Mutex};

struct Inner {
    /// The ring header as 32-bit words (index words at 0, 64, 128, 192).
    words: Vec<AtomicU32>,
    /// The data area, one cell per byte so loom tracks each byte's accesses.
    data: Vec<UnsafeCell<u8>>,
}

/// A ring at offset 0: loom atomics for the header, loom cells for data.
#[derive(Clone)]
struct LoomMem(Arc<Inner>);

impl LoomMem {
    /// All zero, including both event indices (so no wake-up is pre-armed:
    /// every wake-up must come from the prepare_wait protocol).
    fn new(capacity: usize) -> Self {
        LoomMem(Arc::new(Inner {
            words: (0..RING_HEADER_LEN / 4)
                .map(|_| AtomicU32::new(0))
                .collect(),
            data: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
        }))
    }

    fn word(&self, offset: usize) -> Result<&AtomicU32, OutOfBounds> {
        if offset % 4 != 0 {
            return Err(OutOfBounds);
        }
        self.0.words.get(offset / 4).ok_or(OutOfBounds)
    }

    /// The cells for `len` bytes at `offset` (data area only).
    fn cells(&self, offset: usize, len: usize) -> Result<&[UnsafeCell<u8>], OutOfBounds> {
        let start = offset.checked_sub(RING_HEADER_LEN).ok_or(OutOfBounds)?;
        let end = start.checked_add(len).ok_or(OutOfBounds)?;
        self.0.data.get(start..end).ok_or(OutOfBounds)
    }
}

impl RingMemory for LoomMem {
    fn len(&self) -> usize {
        RING_HEADER_LEN + self.0.data.len()
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        Ok(self.word(offset)?.load(order))
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        self.word(offset)?.store(value, order);
        Ok(())
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        let cells = self.cells(offset, dst.len())?;
        for (d, cell) in dst.iter_mut().zip(cells) {
            // SAFETY: the pointer is the cell's own, valid for a read; loom
            // checks that this read does not race with a write.
            *d = cell.with(|p| unsafe { *p });
        }
        Ok(())
    }
    fn write(&self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        for (s, cell) in src.iter().zip(self.cells(offset, src.len())?) {
            // SAFETY: the pointer is the cell's own, valid for a write; loom
            // checks that this write does not race with any other access.
            cell.with_mut(|p| unsafe { *p = *s });
        }
        Ok(())
    }
    fn fence(&self, order: Ordering) {
        loom::sync::atomic::fence(order);
    }
}

/// A doorbell with eventfd semantics: `ring` makes one `wait` return.
#[derive(Default)]
struct Doorbell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Doorbell {
    fn ring(&self) {
        *self.rung.lock().unwrap() = true;
        self.cv.notify_one();
    }
    fn wait(&self) {
        let mut rung = self.rung.lock().unwrap();
        while !*rung {
            rung = self.cv.wait(rung).unwrap();
        }
        *rung = false;
    }
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 59 + j * 13 + 1) as u8).collect()
}

/// Producer thread: pushes `lens.len()` frames, flushing after each and
/// sleeping on the space doorbell when the ring is full.
fn produce(
    mut p: ProducerCore<LoomMem>,
    lens: &[usize],
    data_bell: &Doorbell,
    space_bell: &Doorbell,
) {
    for (i, &len) in lens.iter().enumerate() {
        let frame = payload(i, len);
        loop {
            match p.try_push(&frame) {
                Ok(()) => break,
                Err(RingError::Full) => {
                    if !p.prepare_wait_space(len).unwrap() {
                        space_bell.wait();
                    }
                }
                Err(e) => panic!("push: {e}"),
            }
        }
        if p.flush().unwrap() {
            data_bell.ring();
        }
    }
}

/// Consumer thread: receives `lens.len()` frames and checks their bytes,
/// sleeping on the data doorbell when the ring is empty.
fn consume(
    mut c: ConsumerCore<LoomMem>,
    lens: &[usize],
    data_bell: &Doorbell,
    space_bell: &Doorbell,
) {
    let mut buf = [0u8; 128];
    let mut got = 0;
    while got < lens.len() {
        match c.pop(&mut buf).unwrap() {
            Some(n) => {
                assert_eq!(n, lens[got]);
                assert_eq!(&buf[..n], &payload(got, n)[..]);
                got += 1;
                if c.release().unwrap() {
                    space_bell.ring();
                }
            }
            None => {
                if !c.prepare_wait().unwrap() {
                    data_bell.wait();
                }
            }
        }
    }
}

fn run(lens: &'static [usize], preemptions: usize) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(move || {
        let cfg = RingConfig::new(256, 128).unwrap();
        let mem = LoomMem::new(256);
        let p = ProducerCore::over(mem.clone(), 0, cfg).unwrap();
        let c = ConsumerCore::over(mem, 0, cfg).unwrap();
        let data_bell = Arc::new(Doorbell::default());
        let space_bell = Arc::new(Doorbell::default());
        let (d, s) = (data_bell.clone(), space_bell.clone());
        let producer = loom::thread::spawn(move || produce(p, lens, &d, &s));
        consume(c, lens, &data_bell, &space_bell);
        producer.join().unwrap();
    });
}

/// Two frames published by separate flushes: each byte is seen after its
/// write, and a consumer that sleeps is always woken.
#[test]
fn publish_consume_no_lost_wakeup() {
    run(&[20, 12], 4);
}

/// Three 100-byte frames (104 bytes each) in a 256-byte ring: the producer
/// must wait for space (wake-up in the other direction) and the third frame
/// wraps around the end of the data area.
#[test]
fn wrap_around_and_space_wakeup() {
    run(&[100, 100, 100], 3);
}
