//! A single-producer single-consumer ring of variable-length frames over a
//! shared byte region, with Xen `ring.h` style event indices.
//!
//! Two rings make a channel (one per direction), each at its own offset of
//! one region. The peer maps the same memory and is **hostile**: every value
//! read from the region is copied out and validated before it is used, and
//! nothing it writes can make this side panic, access memory out of bounds
//! or loop without bound. The first inconsistency turns the side into a
//! failed state: every later call returns the same
//! [`RingError::Corrupt`], and the caller shuts the channel down.
//!
//! # Layout
//!
//! ```text
//!  offset + 0    ┌──────────────────────────────┐
//!                │ prod        (u32 LE)         │ written by the producer
//!  offset + 64   ├──────────────────────────────┤
//!                │ prod_event  (u32 LE)         │ written by the consumer: "notify me
//!                │                              │   when prod passes this" (Xen req_event)
//!  offset + 128  ├──────────────────────────────┤
//!                │ cons        (u32 LE)         │ written by the consumer
//!  offset + 192  ├──────────────────────────────┤
//!                │ cons_event  (u32 LE)         │ written by the producer: "notify me
//!                │                              │   when cons passes this" (Xen rsp_event)
//!  offset + 256  ├──────────────────────────────┤  = RING_HEADER_LEN
//!                │ data area, `capacity` bytes  │  capacity: power of two, 256 ..= 2^31
//!                └──────────────────────────────┘
//! ```
//!
//! Each index sits on its own 64-byte cache line so the two sides never
//! write the same line. Indices are free-running `Wrapping<u32>` byte
//! counters; the data byte of counter `i` is at `i & (capacity - 1)`.
//!
//! # Frames
//!
//! ```text
//!   8-aligned
//!   ▼
//!   ┌─────────┬──────────────────────┬─────────┐
//!   │ len u32 │ payload (len bytes)  │ padding │   total = round_up(4 + len, 8)
//!   └─────────┴──────────────────────┴─────────┘
//! ```
//!
//! A frame starts at an 8-aligned counter value with a 4-byte little-endian
//! payload length. Because `capacity` is a multiple of 8 the length word never
//! straddles the end of the data area; the payload may, and is then copied in
//! two parts (no padding marker, so no space is wasted at the end). Padding
//! bytes are unspecified. So every published `prod` and `cons` is a multiple
//! of 8, and `max_frame <= capacity / 2`, which means a largest frame always
//! fits into an empty ring.
//!
//! # Invariants
//!
//! Producer, with `prod` its private counter, `published` the last `prod` it
//! stored and `cons` its cached copy of the consumer's index:
//! `cons <= published <= prod <= cons + capacity` (in wrapping distance).
//!
//! Consumer, with `cons` its private counter, `released` the last `cons` it
//! stored and `prod` its cached copy of the producer's index:
//! `released <= cons <= prod <= released + capacity`.
//!
//! A freshly loaded peer index is accepted only if it keeps these invariants:
//! it is a multiple of 8, it did not go backwards, and it does not pass what
//! the other side has made available (`prod - released <= capacity`; `cons`
//! not beyond `published`). A frame is accepted only if `len <= max_frame`
//! and `round_up(4 + len, 8) <= prod - cons`. Each call reads at most one
//! frame header and copies at most `max_frame` bytes: bounded work.
//!
//! # Memory orderings
//!
//! * Payload bytes are written with plain volatile stores, then the index is
//!   published with a `Release` store; the peer loads the index with
//!   `Acquire` before reading the bytes it covers. So the consumer sees every
//!   byte of a published frame, and the producer never overwrites bytes the
//!   consumer may still be reading (`cons` is released only after the copy).
//! * Notification suppression is Dekker's pattern. The publisher stores its
//!   index, `fence(SeqCst)`, then loads the peer's event index; the waiter
//!   stores its event index, `fence(SeqCst)`, then re-loads the publisher's
//!   index. The two fences are totally ordered, so at least one side sees
//!   the other's store: either the publisher sees the event and notifies,
//!   or the waiter sees the new index and does not sleep. No lost wake-up.
//! * The publisher notifies iff the event index lies in `(old, new]` (Xen
//!   `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`): a burst of flushes costs one
//!   notification, and a peer that has not asked (its event index is not
//!   ahead of `old`) is not notified.
//!
//! # Batching
//!
//! [`ProducerCore::try_push`] writes a frame but only
//! [`ProducerCore::flush`] publishes `prod`; [`ConsumerCore::pop`] copies a
//! frame out but only [`ConsumerCore::release`] publishes `cons`.
//!
//! # Memory access
//!
//! All shared-memory access goes through the small [`RingMemory`] trait.
//! [`RegionView`] implements it for real regions ([`Producer`] and
//! [`Consumer`] are the ring over a `RegionView`); the loom model in
//! `tests/ring_loom.rs` implements it with loom atomics, so the same ring
//! code is model-checked.
//!
//! Size: over 800 lines, of which the tests are a third; the producer and
//! consumer share the index arithmetic and the hostile-index checks, which
//! are easier to review together.

use core::fmt;
use core::num::Wrapping;
use core::sync::atomic::Ordering;

use crate::region::{OutOfBounds, RegionView, SharedRegion};

/// Bytes of ring header before the data area: four 64-byte cache lines.
pub const RING_HEADER_LEN: usize = 256;

/// Offset of `prod` in the header.
const PROD: usize = 0;
/// Offset of `prod_event` in the header.
const PROD_EVENT: usize = 64;
/// Offset of `cons` in the header.
const CONS: usize = 128;
/// Offset of `cons_event` in the header.
const CONS_EVENT: usize = 192;
/// Bytes of the frame length word.
const LEN_WORD: u32 = 4;
/// Frame alignment.
const FRAME_ALIGN: u32 = 8;

/// Smallest ring capacity accepted.
pub const MIN_CAPACITY: u32 = 256;
/// Largest ring capacity accepted (indices are `u32` byte counters).
pub const MAX_CAPACITY: u32 = 1 << 31;

/// Geometry of one ring, agreed by both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes of the data area: a power of two in `256 ..= 2^31`.
    pub capacity: u32,
    /// Largest payload of one frame: `1 ..= capacity / 2`.
    pub max_frame: u32,
}

impl RingConfig {
    /// A validated configuration.
    pub const fn new(capacity: u32, max_frame: u32) -> Result<RingConfig, RingError> {
        if !capacity.is_power_of_two() {
            return Err(RingError::Config("ring capacity is not a power of two"));
        }
        if capacity < MIN_CAPACITY {
            return Err(RingError::Config("ring capacity is below 256 bytes"));
        }
        if capacity > MAX_CAPACITY {
            return Err(RingError::Config("ring capacity is above 2^31 bytes"));
        }
        if max_frame == 0 {
            return Err(RingError::Config("max_frame is zero"));
        }
        if max_frame > capacity / 2 {
            return Err(RingError::Config(
                "max_frame exceeds half the ring capacity",
            ));
        }
        Ok(RingConfig {
            capacity,
            max_frame,
        })
    }

    /// Bytes the ring occupies at its offset: header plus data area (a
    /// multiple of 64).
    pub const fn region_len(&self) -> usize {
        RING_HEADER_LEN + self.capacity as usize
    }

    /// Re-checks a configuration that may have been built field by field.
    const fn validate(self) -> Result<RingConfig, RingError> {
        RingConfig::new(self.capacity, self.max_frame)
    }
}

/// Bytes a frame with a `len`-byte payload occupies (`len <= 2^31`).
const fn frame_total(len: u32) -> u32 {
    (len + LEN_WORD).next_multiple_of(FRAME_ALIGN)
}

/// What was wrong with the peer's view of the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The peer's index is more than `capacity` away from ours, or beyond
    /// what we made available.
    IndexOutOfRange {
        /// Producer index involved.
        prod: u32,
        /// Consumer index involved.
        cons: u32,
    },
    /// The peer's index moved backwards.
    IndexWentBackwards {
        /// Value seen before.
        old: u32,
        /// Value seen now.
        new: u32,
    },
    /// The peer's index is not on an 8-byte frame boundary.
    Misaligned {
        /// The index read.
        index: u32,
    },
    /// A frame header announces more than `max_frame` bytes.
    FrameTooLarge {
        /// Announced payload length.
        len: u32,
        /// The ring's `max_frame`.
        max: u32,
    },
    /// A frame extends past the producer's published index.
    FrameBeyondProducer {
        /// Announced payload length.
        len: u32,
        /// Bytes published between cons and prod.
        available: u32,
    },
    /// A region access was out of bounds (the region shrank or the
    /// arithmetic is wrong; never expected).
    OutOfBounds,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Corruption::IndexOutOfRange { prod, cons } => write!(
                f,
                "ring index out of range (prod {prod:#x}, cons {cons:#x})"
            ),
            Corruption::IndexWentBackwards { old, new } => {
                write!(f, "peer ring index went backwards ({old:#x} -> {new:#x})")
            }
            Corruption::Misaligned { index } => {
                write!(f, "peer ring index {index:#x} is not 8-byte aligned")
            }
            Corruption::FrameTooLarge { len, max } => {
                write!(f, "ring frame of {len} bytes exceeds max_frame {max}")
            }
            Corruption::FrameBeyondProducer { len, available } => write!(
                f,
                "ring frame of {len} bytes extends past prod ({available} bytes published)"
            ),
            Corruption::OutOfBounds => f.write_str("ring access outside the shared region"),
        }
    }
}

/// Errors of ring operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// Not enough free space for the frame right now; nothing was written.
    Full,
    /// A frame (or the caller's buffer) has the wrong size: `len` bytes
    /// against a limit of `max`. Nothing changed.
    TooLarge {
        /// Size of the frame.
        len: usize,
        /// The limit it exceeds (`max_frame`, or the buffer length).
        max: usize,
    },
    /// The peer broke the ring protocol; this side is failed for good.
    Corrupt(Corruption),
    /// Bad configuration or placement, or misuse of the API.
    Config(&'static str),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Full => f.write_str("ring full"),
            RingError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds limit of {max}")
            }
            RingError::Corrupt(c) => write!(f, "ring corrupt: {c}"),
            RingError::Config(what) => write!(f, "ring configuration: {what}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Corruption {}

#[cfg(feature = "std")]
impl std::error::Error for RingError {}

impl From<OutOfBounds> for RingError {
    fn from(_: OutOfBounds) -> Self {
        RingError::Corrupt(Corruption::OutOfBounds)
    }
}

/// The shared-memory operations a ring needs.
///
/// [`RegionView`] is the implementation for real shared regions; a model
/// checker implements it with its own atomics. Implementations must bounds
/// check every access (returning [`OutOfBounds`]) and must not panic.
pub trait RingMemory {
    /// Length of the memory in bytes.
    fn len(&self) -> usize;
    /// Whether the memory is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Atomically loads the little-endian `u32` at `offset` (4-aligned).
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds>;
    /// Atomically stores `value` little-endian at `offset` (4-aligned).
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds>;
    /// Copies bytes out, starting at `offset`.
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds>;
    /// Copies bytes in, starting at `offset`.
    fn write(&self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds>;
    /// A memory fence of the given ordering.
    fn fence(&self, order: Ordering);
}

impl<R: SharedRegion> RingMemory for RegionView<R> {
    fn len(&self) -> usize {
        RegionView::len(self)
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        RegionView::load_u32(self, offset, order)
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        RegionView::store_u32(self, offset, value, order)
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        RegionView::read(self, offset, dst)
    }
    fn write(&self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        RegionView::write(self, offset, src)
    }
    fn fence(&self, order: Ordering) {
        core::sync::atomic::fence(order);
    }
}

/// Checks that a ring with `cfg` fits at `offset` of `mem`.
fn check_placement<M: RingMemory>(
    mem: &M,
    offset: usize,
    cfg: RingConfig,
) -> Result<(), RingError> {
    cfg.validate()?;
    if !offset.is_multiple_of(64) {
        return Err(RingError::Config("ring offset is not 64-byte aligned"));
    }
    match offset.checked_add(cfg.region_len()) {
        Some(end) if end <= mem.len() => Ok(()),
        _ => Err(RingError::Config("ring does not fit in the region")),
    }
}

/// Prepares a ring in `region` at `offset`: zeroes the indices and arms
/// `prod_event` at 1 (as Xen does) so that the first frame notifies even a
/// consumer that went to sleep without [`ConsumerCore::prepare_wait`]. The
/// creator calls it before sharing the region.
pub fn init_ring<R: SharedRegion>(
    region: &R,
    offset: usize,
    cfg: RingConfig,
) -> Result<(), RingError> {
    init_ring_memory(&RegionView::new(region), offset, cfg)
}

/// [`init_ring`] over any [`RingMemory`].
pub fn init_ring_memory<M: RingMemory>(
    mem: &M,
    offset: usize,
    cfg: RingConfig,
) -> Result<(), RingError> {
    check_placement(mem, offset, cfg)?;
    // Relaxed: the region is not shared yet; sharing it (a syscall, a grant)
    // orders these stores before anything the peer does.
    mem.store_u32(offset + PROD, 0, Ordering::Relaxed)?;
    mem.store_u32(offset + PROD_EVENT, 1, Ordering::Relaxed)?;
    mem.store_u32(offset + CONS, 0, Ordering::Relaxed)?;
    mem.store_u32(offset + CONS_EVENT, 0, Ordering::Relaxed)?;
    let zero = [0u8; 64];
    for line in (0..RING_HEADER_LEN).step_by(64) {
        // The rest of each header line is reserved and kept zero.
        mem.write(offset + line + 4, &zero[4..])?;
    }
    Ok(())
}

/// Whether `event` lies in `(old, new]`: the Xen notify test
/// `(new - event) < (new - old)` in wrapping arithmetic.
fn event_in(event: Wrapping<u32>, old: Wrapping<u32>, new: Wrapping<u32>) -> bool {
    (new - event).0 < (new - old).0
}

/// Geometry and placement shared by both ends.
#[derive(Clone, Copy)]
struct Layout {
    cfg: RingConfig,
    /// Offset of the header in the memory.
    header: usize,
    /// Offset of the data area in the memory.
    data: usize,
    /// `capacity - 1`.
    mask: u32,
}

impl Layout {
    fn new<M: RingMemory>(mem: &M, offset: usize, cfg: RingConfig) -> Result<Layout, RingError> {
        check_placement(mem, offset, cfg)?;
        Ok(Layout {
            cfg,
            header: offset,
            data: offset + RING_HEADER_LEN,
            mask: cfg.capacity - 1,
        })
    }

    /// Writes `src` into the data area at counter `at`, wrapping around the
    /// end if needed. `src.len() <= capacity`.
    fn write_data<M: RingMemory>(
        &self,
        mem: &M,
        at: Wrapping<u32>,
        src: &[u8],
    ) -> Result<(), RingError> {
        let pos = (at.0 & self.mask) as usize;
        let first = src.len().min(self.cfg.capacity as usize - pos);
        let (a, b) = src.split_at(first);
        mem.write(self.data + pos, a)?;
        if !b.is_empty() {
            mem.write(self.data, b)?;
        }
        Ok(())
    }

    /// Reads `dst.len()` bytes from the data area at counter `at`, wrapping
    /// around the end if needed. `dst.len() <= capacity`.
    fn read_data<M: RingMemory>(
        &self,
        mem: &M,
        at: Wrapping<u32>,
        dst: &mut [u8],
    ) -> Result<(), RingError> {
        let pos = (at.0 & self.mask) as usize;
        let first = dst.len().min(self.cfg.capacity as usize - pos);
        let (a, b) = dst.split_at_mut(first);
        mem.read(self.data + pos, a)?;
        if !b.is_empty() {
            mem.read(self.data, b)?;
        }
        Ok(())
    }
}

/// Validates a freshly loaded peer index `new` against the cached `old`.
/// The peer may legitimately advance by at most `room` bytes.
fn check_peer_index(
    old: Wrapping<u32>,
    new: Wrapping<u32>,
    room: u32,
    capacity: u32,
    out_of_range: Corruption,
) -> Result<(), Corruption> {
    if !new.0.is_multiple_of(FRAME_ALIGN) {
        return Err(Corruption::Misaligned { index: new.0 });
    }
    if (new - old).0 <= room {
        return Ok(());
    }
    if (old - new).0 <= capacity {
        return Err(Corruption::IndexWentBackwards {
            old: old.0,
            new: new.0,
        });
    }
    Err(out_of_range)
}

/// The producing end of a ring over a shared region.
pub type Producer<R> = ProducerCore<RegionView<R>>;

/// The consuming end of a ring over a shared region.
pub type Consumer<R> = ConsumerCore<RegionView<R>>;

/// The producing end of a ring over any [`RingMemory`] (see [`Producer`]).
pub struct ProducerCore<M> {
    mem: M,
    layout: Layout,
    /// Private producer counter: end of the last frame written.
    prod: Wrapping<u32>,
    /// Last `prod` stored to the header.
    published: Wrapping<u32>,
    /// Cached consumer counter (validated).
    cons: Wrapping<u32>,
    /// Sticky failure.
    failed: Option<Corruption>,
}

impl<R: SharedRegion> ProducerCore<RegionView<R>> {
    /// The producer of the ring at `offset` of `region` (initialised with
    /// [`init_ring`]). Checks that the ring fits and is 64-byte aligned.
    pub fn new(region: R, offset: usize, cfg: RingConfig) -> Result<Self, RingError> {
        Self::over(RegionView::new(region), offset, cfg)
    }
}

impl<M: RingMemory> ProducerCore<M> {
    /// The producer of the ring at `offset` of `mem`. It starts from the
    /// indices found there, validated like any peer value.
    pub fn over(mem: M, offset: usize, cfg: RingConfig) -> Result<Self, RingError> {
        let layout = Layout::new(&mem, offset, cfg)?;
        // Acquire: pairs with the consumer's Release of `cons` (at start-up
        // both are normally zero from init_ring).
        let prod = Wrapping(mem.load_u32(layout.header + PROD, Ordering::Acquire)?);
        let cons = Wrapping(mem.load_u32(layout.header + CONS, Ordering::Acquire)?);
        if !prod.0.is_multiple_of(FRAME_ALIGN)
            || !cons.0.is_multiple_of(FRAME_ALIGN)
            || (prod - cons).0 > cfg.capacity
        {
            return Err(RingError::Corrupt(Corruption::IndexOutOfRange {
                prod: prod.0,
                cons: cons.0,
            }));
        }
        Ok(ProducerCore {
            mem,
            layout,
            prod,
            published: prod,
            cons,
            failed: None,
        })
    }

    /// The ring's configuration.
    pub fn config(&self) -> RingConfig {
        self.layout.cfg
    }

    /// The memory the ring lives in.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    fn fail(&mut self, c: Corruption) -> RingError {
        self.failed = Some(c);
        RingError::Corrupt(c)
    }

    /// This producer over `mem`, another handle to the same memory (say, a
    /// type-erased one), keeping its private counters. The placement is
    /// checked again against `mem`; handing it other memory cannot break
    /// this side either, it only makes the ring look corrupt.
    pub fn with_memory<N: RingMemory>(self, mem: N) -> Result<ProducerCore<N>, RingError> {
        let layout = Layout::new(&mem, self.layout.header, self.layout.cfg)?;
        Ok(ProducerCore {
            mem,
            layout,
            prod: self.prod,
            published: self.published,
            cons: self.cons,
            failed: self.failed,
        })
    }

    fn check_failed(&self) -> Result<(), RingError> {
        match self.failed {
            Some(c) => Err(RingError::Corrupt(c)),
            None => Ok(()),
        }
    }

    /// Makes any error sticky if it is a corruption.
    fn sticky<T>(&mut self, r: Result<T, RingError>) -> Result<T, RingError> {
        if let Err(RingError::Corrupt(c)) = r {
            self.failed = Some(c);
        }
        r
    }

    /// Loads and validates the consumer's index.
    fn refresh_cons(&mut self) -> Result<(), RingError> {
        // Acquire: pairs with the consumer's Release store of `cons`, so its
        // reads of the bytes it released happened before we overwrite them.
        let new = Wrapping(
            self.mem
                .load_u32(self.layout.header + CONS, Ordering::Acquire)
                .map_err(|e| self.fail_oob(e))?,
        );
        let room = (self.published - self.cons).0;
        let out = Corruption::IndexOutOfRange {
            prod: self.published.0,
            cons: new.0,
        };
        match check_peer_index(self.cons, new, room, self.layout.cfg.capacity, out) {
            Ok(()) => {
                self.cons = new;
                Ok(())
            }
            Err(c) => Err(self.fail(c)),
        }
    }

    fn fail_oob(&mut self, _: OutOfBounds) -> RingError {
        self.fail(Corruption::OutOfBounds)
    }

    /// Free bytes with the cached consumer index.
    fn free(&self) -> u32 {
        self.layout.cfg.capacity - (self.prod - self.cons).0
    }

    /// Writes one frame made of `parts` (total `len`); does not publish.
    fn push_inner(&mut self, parts: &[&[u8]], len: usize) -> Result<(), RingError> {
        self.check_failed()?;
        let max = self.layout.cfg.max_frame;
        if len > max as usize {
            return Err(RingError::TooLarge {
                len,
                max: max as usize,
            });
        }
        // len <= max_frame <= 2^30, so the casts and the sum are exact.
        let total = frame_total(len as u32);
        if total > self.free() {
            self.refresh_cons()?;
            if total > self.free() {
                return Err(RingError::Full);
            }
        }
        let layout = self.layout;
        let r = (|| -> Result<(), RingError> {
            let header = (len as u32).to_le_bytes();
            layout.write_data(&self.mem, self.prod, &header)?;
            let mut at = self.prod + Wrapping(LEN_WORD);
            for part in parts {
                layout.write_data(&self.mem, at, part)?;
                at += Wrapping(part.len() as u32);
            }
            Ok(())
        })();
        self.sticky(r)?;
        self.prod += Wrapping(total);
        Ok(())
    }

    /// Writes one frame; it becomes visible to the consumer at the next
    /// [`flush`](Self::flush). `Err(Full)` writes nothing.
    pub fn try_push(&mut self, frame: &[u8]) -> Result<(), RingError> {
        self.push_inner(&[frame], frame.len())
    }

    /// Writes one frame made of the concatenation of `parts`; like
    /// [`try_push`](Self::try_push).
    pub fn try_push_parts(&mut self, parts: &[&[u8]]) -> Result<(), RingError> {
        let mut len = 0usize;
        for p in parts {
            len = len.checked_add(p.len()).ok_or(RingError::TooLarge {
                len: usize::MAX,
                max: self.layout.cfg.max_frame as usize,
            })?;
        }
        self.push_inner(parts, len)
    }

    /// Publishes the frames written since the last flush. `Ok(true)` means
    /// the consumer asked to be woken for them: ring its doorbell.
    pub fn flush(&mut self) -> Result<bool, RingError> {
        self.check_failed()?;
        let (old, new) = (self.published, self.prod);
        if old == new {
            return Ok(false);
        }
        let h = self.layout.header;
        // Release: the frame bytes written before are visible to a consumer
        // that Acquire-loads this value.
        let r = self.mem.store_u32(h + PROD, new.0, Ordering::Release);
        self.sticky(r.map_err(RingError::from))?;
        self.published = new;
        // SeqCst fence: orders the store of `prod` before the load of
        // `prod_event` (store-load), pairing with the fence in the
        // consumer's prepare_wait. Without it both could miss each other.
        self.mem.fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence; the value only decides a wake-up.
        let ev = self.mem.load_u32(h + PROD_EVENT, Ordering::Relaxed);
        let ev = self.sticky(ev.map_err(RingError::from))?;
        Ok(event_in(Wrapping(ev), old, new))
    }

    /// The largest payload that fits right now (at most `max_frame`),
    /// re-reading the consumer's index. 0 also when nothing fits at all.
    pub fn free_frame_space(&mut self) -> Result<usize, RingError> {
        self.check_failed()?;
        self.refresh_cons()?;
        let free = self.free();
        Ok(free.saturating_sub(LEN_WORD).min(self.layout.cfg.max_frame) as usize)
    }

    /// Asks the consumer to notify when a `payload_len`-byte frame fits.
    /// `Ok(true)`: it fits already, don't sleep. `Ok(false)`: sleep until
    /// the doorbell, then retry. Flush before waiting: the space needed must
    /// be releasable from published frames, else `Err(Config)`.
    pub fn prepare_wait_space(&mut self, payload_len: usize) -> Result<bool, RingError> {
        self.check_failed()?;
        let max = self.layout.cfg.max_frame;
        if payload_len > max as usize {
            return Err(RingError::TooLarge {
                len: payload_len,
                max: max as usize,
            });
        }
        let total = frame_total(payload_len as u32);
        // Re-read cons first: a stale cached value would arm a wait (and a
        // later, spurious notification) for space that is already free.
        self.refresh_cons()?;
        if total <= self.free() {
            return Ok(true);
        }
        // The consumer index at which the frame fits.
        let target = self.prod + Wrapping(total) - Wrapping(self.layout.cfg.capacity);
        if (target - self.cons).0 > (self.published - self.cons).0 {
            return Err(RingError::Config(
                "prepare_wait_space needs unflushed frames released: flush first",
            ));
        }
        let h = self.layout.header;
        // Relaxed store, then SeqCst fence: pairs with the fence in the
        // consumer's release (store cons; fence; load cons_event).
        let r = self
            .mem
            .store_u32(h + CONS_EVENT, target.0, Ordering::Relaxed);
        self.sticky(r.map_err(RingError::from))?;
        self.mem.fence(Ordering::SeqCst);
        self.refresh_cons()?;
        Ok(total <= self.free())
    }
}

/// The consuming end of a ring over any [`RingMemory`] (see [`Consumer`]).
pub struct ConsumerCore<M> {
    mem: M,
    layout: Layout,
    /// Private consumer counter: start of the next frame to pop.
    cons: Wrapping<u32>,
    /// Last `cons` stored to the header.
    released: Wrapping<u32>,
    /// Cached producer counter (validated).
    prod: Wrapping<u32>,
    /// Validated payload length of the frame at `cons`, once read: the
    /// header is fetched from shared memory once per frame.
    head: Option<u32>,
    /// Sticky failure.
    failed: Option<Corruption>,
}

impl<R: SharedRegion> ConsumerCore<RegionView<R>> {
    /// The consumer of the ring at `offset` of `region` (initialised with
    /// [`init_ring`]). Checks that the ring fits and is 64-byte aligned.
    pub fn new(region: R, offset: usize, cfg: RingConfig) -> Result<Self, RingError> {
        Self::over(RegionView::new(region), offset, cfg)
    }
}

impl<M: RingMemory> ConsumerCore<M> {
    /// The consumer of the ring at `offset` of `mem`. It starts at the `cons`
    /// found there; `prod` is read (and validated) on first use.
    pub fn over(mem: M, offset: usize, cfg: RingConfig) -> Result<Self, RingError> {
        let layout = Layout::new(&mem, offset, cfg)?;
        // Relaxed: `cons` is this side's own index.
        let cons = Wrapping(mem.load_u32(layout.header + CONS, Ordering::Relaxed)?);
        if !cons.0.is_multiple_of(FRAME_ALIGN) {
            return Err(RingError::Corrupt(Corruption::Misaligned { index: cons.0 }));
        }
        Ok(ConsumerCore {
            mem,
            layout,
            cons,
            released: cons,
            prod: cons,
            head: None,
            failed: None,
        })
    }

    /// The ring's configuration.
    pub fn config(&self) -> RingConfig {
        self.layout.cfg
    }

    /// The memory the ring lives in.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    fn fail(&mut self, c: Corruption) -> RingError {
        self.failed = Some(c);
        RingError::Corrupt(c)
    }

    /// This consumer over `mem`, another handle to the same memory (say, a
    /// type-erased one), keeping its private counters (see
    /// [`ProducerCore::with_memory`]).
    pub fn with_memory<N: RingMemory>(self, mem: N) -> Result<ConsumerCore<N>, RingError> {
        let layout = Layout::new(&mem, self.layout.header, self.layout.cfg)?;
        Ok(ConsumerCore {
            mem,
            layout,
            cons: self.cons,
            released: self.released,
            prod: self.prod,
            head: self.head,
            failed: self.failed,
        })
    }

    fn check_failed(&self) -> Result<(), RingError> {
        match self.failed {
            Some(c) => Err(RingError::Corrupt(c)),
            None => Ok(()),
        }
    }

    /// Loads and validates the producer's index.
    fn refresh_prod(&mut self) -> Result<(), RingError> {
        // Acquire: pairs with the producer's Release store of `prod`, making
        // the bytes of every frame it covers visible before we read them.
        let new = match self
            .mem
            .load_u32(self.layout.header + PROD, Ordering::Acquire)
        {
            Ok(v) => Wrapping(v),
            Err(_) => return Err(self.fail(Corruption::OutOfBounds)),
        };
        let cap = self.layout.cfg.capacity;
        let room = (self.released + Wrapping(cap) - self.prod).0;
        let out = Corruption::IndexOutOfRange {
            prod: new.0,
            cons: self.released.0,
        };
        match check_peer_index(self.prod, new, room, cap, out) {
            Ok(()) => {
                self.prod = new;
                Ok(())
            }
            Err(c) => Err(self.fail(c)),
        }
    }

    /// The validated payload length of the next frame, if one is published.
    fn head(&mut self) -> Result<Option<u32>, RingError> {
        self.check_failed()?;
        if let Some(len) = self.head {
            return Ok(Some(len));
        }
        if self.cons == self.prod {
            self.refresh_prod()?;
            if self.cons == self.prod {
                return Ok(None);
            }
        }
        let mut word = [0u8; 4];
        if self
            .layout
            .read_data(&self.mem, self.cons, &mut word)
            .is_err()
        {
            return Err(self.fail(Corruption::OutOfBounds));
        }
        let len = u32::from_le_bytes(word);
        let max = self.layout.cfg.max_frame;
        if len > max {
            return Err(self.fail(Corruption::FrameTooLarge { len, max }));
        }
        let available = (self.prod - self.cons).0;
        if frame_total(len) > available {
            return Err(self.fail(Corruption::FrameBeyondProducer { len, available }));
        }
        self.head = Some(len);
        Ok(Some(len))
    }

    /// The payload length of the next frame, if one is published.
    pub fn peek_len(&mut self) -> Result<Option<usize>, RingError> {
        Ok(self.head()?.map(|l| l as usize))
    }

    /// Copies the next frame's payload into `buf` and returns its length.
    /// `Err(TooLarge)` if `buf` is too small (the frame stays). The space is
    /// handed back to the producer at the next [`release`](Self::release).
    pub fn pop(&mut self, buf: &mut [u8]) -> Result<Option<usize>, RingError> {
        let Some(len) = self.head()? else {
            return Ok(None);
        };
        let n = len as usize;
        let Some(dst) = buf.get_mut(..n) else {
            return Err(RingError::TooLarge {
                len: n,
                max: buf.len(),
            });
        };
        if self
            .layout
            .read_data(&self.mem, self.cons + Wrapping(LEN_WORD), dst)
            .is_err()
        {
            return Err(self.fail(Corruption::OutOfBounds));
        }
        self.cons += Wrapping(frame_total(len));
        self.head = None;
        Ok(Some(n))
    }

    /// Hands the space of popped frames back to the producer. `Ok(true)`
    /// means the producer waits for that space: ring its doorbell.
    pub fn release(&mut self) -> Result<bool, RingError> {
        self.check_failed()?;
        let (old, new) = (self.released, self.cons);
        if old == new {
            return Ok(false);
        }
        let h = self.layout.header;
        // Release: our reads of the released frames happen before the
        // producer (Acquire-loading `cons`) overwrites them.
        if self
            .mem
            .store_u32(h + CONS, new.0, Ordering::Release)
            .is_err()
        {
            return Err(self.fail(Corruption::OutOfBounds));
        }
        self.released = new;
        // SeqCst fence: store of `cons` before load of `cons_event`, pairing
        // with the fence in the producer's prepare_wait_space.
        self.mem.fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence; the value only decides a wake-up.
        match self.mem.load_u32(h + CONS_EVENT, Ordering::Relaxed) {
            Ok(ev) => Ok(event_in(Wrapping(ev), old, new)),
            Err(_) => Err(self.fail(Corruption::OutOfBounds)),
        }
    }

    /// Asks the producer to notify when a frame beyond the ones already
    /// popped is published. `Ok(true)`: frames are available already, don't
    /// sleep. `Ok(false)`: sleep until the doorbell, then pop again.
    pub fn prepare_wait(&mut self) -> Result<bool, RingError> {
        self.check_failed()?;
        if self.head.is_some() || self.cons != self.prod {
            return Ok(true);
        }
        let h = self.layout.header;
        let event = self.cons + Wrapping(1);
        // Relaxed store, then SeqCst fence: pairs with the fence in the
        // producer's flush (store prod; fence; load prod_event).
        if self
            .mem
            .store_u32(h + PROD_EVENT, event.0, Ordering::Relaxed)
            .is_err()
        {
            return Err(self.fail(Corruption::OutOfBounds));
        }
        self.mem.fence(Ordering::SeqCst);
        self.refresh_prod()?;
        Ok(self.cons != self.prod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::HeapRegion;

    const OFF: usize = 128;

    fn pair(cap: u32, max: u32) -> (Producer<&'static HeapRegion>, Consumer<&'static HeapRegion>) {
        let cfg = RingConfig::new(cap, max).unwrap();
        let region: &'static HeapRegion =
            Box::leak(Box::new(HeapRegion::new(OFF + cfg.region_len())));
        init_ring(&region, OFF, cfg).unwrap();
        (
            Producer::new(region, OFF, cfg).unwrap(),
            Consumer::new(region, OFF, cfg).unwrap(),
        )
    }

    fn frame(seed: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seed * 31 + i * 7) as u8).collect()
    }

    /// Moving both ends to another handle on the same memory mid-stream
    /// keeps their state: frames unpublished, published but unread, and
    /// unreleased all come out once, in order.
    #[test]
    fn with_memory_keeps_private_state() {
        let (mut p, mut c) = pair(512, 64);
        let region: &'static HeapRegion = p.memory().region();
        let mut buf = [0u8; 64];
        p.try_push(&frame(1, 20)).unwrap();
        p.flush().unwrap();
        p.try_push(&frame(2, 30)).unwrap();
        assert_eq!(c.pop(&mut buf).unwrap(), Some(20));
        let mut p = p
            .with_memory(RegionView::new(std::sync::Arc::new(region)))
            .unwrap();
        let mut c = c
            .with_memory(RegionView::new(std::sync::Arc::new(region)))
            .unwrap();
        assert_eq!(c.pop(&mut buf).unwrap(), None, "frame 2 is not published");
        p.flush().unwrap();
        assert_eq!(c.pop(&mut buf).unwrap(), Some(30));
        assert_eq!(&buf[..30], &frame(2, 30)[..]);
        c.release().unwrap();
        for i in 0..40 {
            p.try_push(&frame(i, 40)).unwrap();
            p.flush().unwrap();
            assert_eq!(c.pop(&mut buf).unwrap(), Some(40));
            assert_eq!(&buf[..40], &frame(i, 40)[..]);
            c.release().unwrap();
        }
        let small = HeapRegion::new(OFF);
        assert!(
            p.with_memory(RegionView::new(&small)).is_err(),
            "the placement is checked again"
        );
    }

    #[test]
    fn config_is_validated() {
        assert!(RingConfig::new(256, 128).is_ok());
        assert!(matches!(RingConfig::new(300, 8), Err(RingError::Config(_))));
        assert!(matches!(RingConfig::new(128, 8), Err(RingError::Config(_))));
        assert!(matches!(
            RingConfig::new(256, 129),
            Err(RingError::Config(_))
        ));
        assert!(matches!(RingConfig::new(256, 0), Err(RingError::Config(_))));
        assert_eq!(RingConfig::new(4096, 64).unwrap().region_len(), 4096 + 256);
        let cfg = RingConfig::new(256, 64).unwrap();
        let r = HeapRegion::new(1024);
        assert!(matches!(
            Producer::new(&r, 32, cfg),
            Err(RingError::Config(_))
        ));
        assert!(matches!(
            Consumer::new(&r, 576, cfg),
            Err(RingError::Config(_))
        ));
        assert!(Consumer::new(&r, 512, cfg).is_ok());
        assert!(matches!(
            init_ring(&r, 1024, cfg),
            Err(RingError::Config(_))
        ));
    }

    #[test]
    fn full_ring_refuses_and_writes_nothing() {
        let (mut p, mut c) = pair(256, 128);
        // 4 + 60 = 64 bytes per frame: four fill the ring exactly.
        for i in 0..4 {
            p.try_push(&frame(i, 60)).unwrap();
        }
        assert_eq!(p.try_push(&[]), Err(RingError::Full));
        assert_eq!(p.free_frame_space(), Ok(0));
        assert_eq!(
            p.try_push(&[0; 129]),
            Err(RingError::TooLarge { len: 129, max: 128 })
        );
        // Nothing visible before the flush.
        assert_eq!(c.peek_len(), Ok(None));
        p.flush().unwrap();
        let mut buf = [0u8; 128];
        assert_eq!(c.pop(&mut buf), Ok(Some(60)));
        assert_eq!(&buf[..60], &frame(0, 60)[..]);
        // Popped but not released: the producer still sees a full ring.
        assert_eq!(p.try_push(&[1]), Err(RingError::Full));
        c.release().unwrap();
        assert_eq!(p.free_frame_space(), Ok(60));
        p.try_push(&frame(9, 60)).unwrap();
        assert_eq!(p.try_push(&[]), Err(RingError::Full));
        p.flush().unwrap();
        for i in [1, 2, 3, 9] {
            assert_eq!(c.pop(&mut buf), Ok(Some(60)));
            assert_eq!(&buf[..60], &frame(i, 60)[..]);
        }
        assert_eq!(c.pop(&mut buf), Ok(None));
    }

    #[test]
    fn wrap_around_every_size_and_position() {
        // For every 8-aligned start position and every frame size, push and
        // pop a frame straddling (or not) the end of the data area.
        let (mut p, mut c) = pair(256, 128);
        let mut buf = [0u8; 128];
        let mut seed = 0;
        for start in (0..256).step_by(8) {
            for len in 0..=128usize {
                // Move both indices to `start` (mod 256) with filler frames.
                loop {
                    let at = (p.prod.0 % 256) as usize;
                    if at == start {
                        break;
                    }
                    let gap = (start + 256 - at) % 256;
                    let fill = gap.min(128 + 4 - 4).min(gap.saturating_sub(4));
                    p.try_push(&frame(0, fill)).unwrap();
                    p.flush().unwrap();
                    assert_eq!(c.pop(&mut buf), Ok(Some(fill)));
                    c.release().unwrap();
                }
                seed += 1;
                let f = frame(seed, len);
                p.try_push_parts(&[&f[..len / 3], &f[len / 3..]]).unwrap();
                p.flush().unwrap();
                assert_eq!(c.peek_len(), Ok(Some(len)));
                assert_eq!(c.pop(&mut buf), Ok(Some(len)));
                assert_eq!(&buf[..len], &f[..], "start {start} len {len}");
                c.release().unwrap();
            }
        }
    }

    #[test]
    fn too_small_buffer_keeps_frame() {
        let (mut p, mut c) = pair(256, 100);
        p.try_push(&frame(1, 50)).unwrap();
        p.flush().unwrap();
        let mut small = [0u8; 49];
        assert_eq!(
            c.pop(&mut small),
            Err(RingError::TooLarge { len: 50, max: 49 })
        );
        let mut buf = [0u8; 50];
        assert_eq!(c.pop(&mut buf), Ok(Some(50)));
        assert_eq!(&buf[..], &frame(1, 50)[..]);
    }

    #[test]
    fn batch_is_published_by_flush_only() {
        let (mut p, mut c) = pair(1024, 128);
        let mut buf = [0u8; 128];
        for i in 0..5 {
            p.try_push(&frame(i, 10 + i)).unwrap();
        }
        assert_eq!(c.peek_len(), Ok(None));
        assert_eq!(c.prepare_wait(), Ok(false));
        // One flush publishes all five, with one notification.
        assert_eq!(p.flush(), Ok(true));
        assert_eq!(p.flush(), Ok(false));
        for i in 0..5 {
            assert_eq!(c.pop(&mut buf), Ok(Some(10 + i)));
            assert_eq!(&buf[..10 + i], &frame(i, 10 + i)[..]);
        }
        assert_eq!(c.pop(&mut buf), Ok(None));
        // cons is published by release only.
        let before = p.memory().load_u32(OFF + CONS, Ordering::Relaxed).unwrap();
        assert_eq!(before, 0);
        assert_eq!(c.release(), Ok(false));
        let after = p.memory().load_u32(OFF + CONS, Ordering::Relaxed).unwrap();
        assert_eq!(after, 3 * 16 + 2 * 24);
    }

    #[test]
    fn notify_decisions() {
        let (mut p, mut c) = pair(1024, 128);
        let mut buf = [0u8; 128];
        // init_ring arms prod_event = 1: the very first frame notifies.
        p.try_push(b"a").unwrap();
        assert_eq!(p.flush(), Ok(true));
        // The consumer is awake (never asked again): no notifications.
        p.try_push(b"b").unwrap();
        assert_eq!(p.flush(), Ok(false));
        // Data pending: prepare_wait says don't sleep.
        assert_eq!(c.prepare_wait(), Ok(true));
        while c.pop(&mut buf).unwrap().is_some() {}
        assert_eq!(c.prepare_wait(), Ok(false));
        // A burst of flushes: only the first notifies.
        p.try_push(b"c").unwrap();
        assert_eq!(p.flush(), Ok(true));
        p.try_push(b"d").unwrap();
        assert_eq!(p.flush(), Ok(false));
        p.try_push(b"e").unwrap();
        assert_eq!(p.flush(), Ok(false));
        // The consumer drains and re-arms: the next one notifies again.
        while c.pop(&mut buf).unwrap().is_some() {}
        assert_eq!(c.prepare_wait(), Ok(false));
        p.try_push(b"f").unwrap();
        assert_eq!(p.flush(), Ok(true));
        // Popped frames not released yet still count as "seen": a wait
        // after popping everything is armed beyond them.
        assert_eq!(c.pop(&mut buf), Ok(Some(1)));
        assert_eq!(c.prepare_wait(), Ok(false));
        p.try_push(b"g").unwrap();
        assert_eq!(p.flush(), Ok(true));
        assert_eq!(c.release(), Ok(false));
    }

    #[test]
    fn space_wait_decisions() {
        let (mut p, mut c) = pair(256, 128);
        let mut buf = [0u8; 128];
        p.try_push(&frame(0, 124)).unwrap(); // 128 bytes
        p.try_push(&frame(1, 60)).unwrap(); // 64 bytes
        p.try_push(&frame(2, 28)).unwrap(); // 32 bytes, 32 free
        assert_eq!(p.prepare_wait_space(28), Ok(true));
        // 100 bytes need 104: not releasable from published frames yet.
        assert!(matches!(
            p.prepare_wait_space(100),
            Err(RingError::Config(_))
        ));
        assert_eq!(p.flush(), Ok(true));
        assert_eq!(p.prepare_wait_space(100), Ok(false));
        // Releasing 64 bytes of the first frame only is impossible; release
        // the first frame (128 bytes): 160 free, enough: notify.
        assert_eq!(c.pop(&mut buf), Ok(Some(124)));
        assert_eq!(c.release(), Ok(true));
        // Nobody waits any more.
        assert_eq!(c.pop(&mut buf), Ok(Some(60)));
        assert_eq!(c.release(), Ok(false));
        // A wait needing more than one release is woken only when enough.
        p.try_push(&frame(3, 124)).unwrap();
        p.try_push(&frame(4, 12)).unwrap();
        assert_eq!(p.flush(), Ok(false));
        // used: 32 + 128 + 16 = 176; 128-byte payload needs 136 -> free 80.
        assert_eq!(p.prepare_wait_space(128), Ok(false));
        assert_eq!(c.pop(&mut buf), Ok(Some(28)));
        assert_eq!(c.release(), Ok(false)); // free 112 < 136
        assert_eq!(c.pop(&mut buf), Ok(Some(124)));
        assert_eq!(c.release(), Ok(true)); // free 240
        assert_eq!(p.try_push(&frame(5, 128)), Ok(()));
    }

    fn write_u32(r: &HeapRegion, at: usize, v: u32) {
        RegionView::new(r)
            .store_u32(at, v, Ordering::Relaxed)
            .unwrap();
    }

    #[test]
    fn hostile_producer_is_detected_and_sticky() {
        let mut buf = [0u8; 128];
        let cases: [(u32, Option<u32>, Corruption); 5] = [
            (12, None, Corruption::Misaligned { index: 12 }),
            (
                264,
                None,
                Corruption::IndexOutOfRange { prod: 264, cons: 0 },
            ),
            (
                16,
                Some(200),
                Corruption::FrameTooLarge { len: 200, max: 128 },
            ),
            (
                16,
                Some(20),
                Corruption::FrameBeyondProducer {
                    len: 20,
                    available: 16,
                },
            ),
            (
                0u32.wrapping_sub(8),
                None,
                Corruption::IndexWentBackwards {
                    old: 0,
                    new: 0u32.wrapping_sub(8),
                },
            ),
        ];
        for (prod, len, want) in cases {
            let (_p, mut c) = pair(256, 128);
            let region = *c.memory().region();
            if let Some(len) = len {
                write_u32(region, OFF + RING_HEADER_LEN, len);
            }
            write_u32(region, OFF + PROD, prod);
            assert_eq!(c.pop(&mut buf), Err(RingError::Corrupt(want)));
            // Sticky, even after the peer "fixes" the ring.
            write_u32(region, OFF + PROD, 0);
            assert_eq!(c.peek_len(), Err(RingError::Corrupt(want)));
            assert_eq!(c.release(), Err(RingError::Corrupt(want)));
            assert_eq!(c.prepare_wait(), Err(RingError::Corrupt(want)));
            assert!(!format!("{}", RingError::Corrupt(want)).is_empty());
        }
    }

    #[test]
    fn hostile_consumer_is_detected_and_sticky() {
        let (mut p, _c) = pair(256, 128);
        let region = *p.memory().region();
        p.try_push(&[0; 60]).unwrap();
        p.flush().unwrap();
        // cons beyond published prod.
        write_u32(region, OFF + CONS, 72);
        let want = Corruption::IndexOutOfRange { prod: 64, cons: 72 };
        assert_eq!(p.free_frame_space(), Err(RingError::Corrupt(want)));
        write_u32(region, OFF + CONS, 0);
        assert_eq!(p.try_push(&[]), Err(RingError::Corrupt(want)));
        assert_eq!(p.flush(), Err(RingError::Corrupt(want)));

        let (mut p, _c) = pair(256, 128);
        let region = *p.memory().region();
        p.try_push(&[0; 60]).unwrap();
        p.flush().unwrap();
        write_u32(region, OFF + CONS, 64);
        assert_eq!(p.free_frame_space(), Ok(128));
        write_u32(region, OFF + CONS, 60);
        assert_eq!(
            p.free_frame_space(),
            Err(RingError::Corrupt(Corruption::Misaligned { index: 60 }))
        );
        let (mut p, _c) = pair(256, 128);
        let region = *p.memory().region();
        p.try_push(&[0; 60]).unwrap();
        p.flush().unwrap();
        write_u32(region, OFF + CONS, 64);
        assert_eq!(p.free_frame_space(), Ok(128));
        write_u32(region, OFF + CONS, 0);
        assert_eq!(
            p.free_frame_space(),
            Err(RingError::Corrupt(Corruption::IndexWentBackwards {
                old: 64,
                new: 0
            }))
        );
    }

    #[test]
    fn long_run_wraps_the_counters() {
        // Start the indices near u32::MAX so the counters wrap.
        let cfg = RingConfig::new(512, 200).unwrap();
        let region: &'static HeapRegion = Box::leak(Box::new(HeapRegion::new(cfg.region_len())));
        init_ring(&region, 0, cfg).unwrap();
        let start = 0u32.wrapping_sub(1024);
        write_u32(region, PROD, start);
        write_u32(region, CONS, start);
        let mut p = Producer::new(region, 0, cfg).unwrap();
        let mut c = Consumer::new(region, 0, cfg).unwrap();
        let mut buf = [0u8; 200];
        for i in 0..500 {
            let len = (i * 37) % 201;
            p.try_push(&frame(i, len)).unwrap();
            p.flush().unwrap();
            assert_eq!(c.pop(&mut buf), Ok(Some(len)));
            assert_eq!(&buf[..len], &frame(i, len)[..]);
            c.release().unwrap();
        }
    }
}
