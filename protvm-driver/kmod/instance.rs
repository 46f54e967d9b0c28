// SPDX-License-Identifier: GPL-2.0

//! Instances over the local in-kernel transport, and driver-core as their
//! host. (Instance domains over the Xen transport share the channel table
//! and its ring reading: xenchan.rs.)
//!
//! Size: over 800 lines: the channel file, the ring reader and
//! driver-core's host share the core's table and its one lock, and are
//! easier to check together; the channel file's operations are the part
//! to move out when it grows.
//!
//! An instance process joins with `INS_IOC_INSTANCE` on `/dev/ins`
//! (ins_main.rs): the module allocates the channel's region (vregion.rs),
//! lays out the two ins-protocol rings exactly as the memfd transport does
//! (`ins_transport::Layout`: ring driver→instance at 0, ring
//! instance→driver at the next page boundary), pushes its driver `Hello`
//! and returns a *channel file*:
//!
//! | on the channel fd | does |
//! | --- | --- |
//! | `mmap(len, PROT_READ|PROT_WRITE, MAP_SHARED, 0)` | maps the region (exactly its length, offset 0) |
//! | `write(8 bytes)` | the instance's doorbell: the module reads the instance→driver ring now, in this call (once dead: accepted and ignored, as an eventfd nobody reads) |
//! | `read(8 bytes)` | consumes the module's doorbell (u64 1); `EAGAIN` if not rung (non-blocking); 0 (end of file) once dead |
//! | `poll`/`epoll` | `EPOLLIN` while the module's doorbell is rung, `EPOLLOUT` always, `EPOLLHUP|EPOLLERR` once the channel is dead |
//! | `close` (last reference) | the instance leaves: driver-core declares it dead, the rings are freed |
//!
//! ```text
//!   instance                         module (this file, under Core's mutex)
//!     │ ioctl(INS_IOC_INSTANCE) ───▶ region + rings + Hello(Driver) on ring d→i
//!     │ mmap, Hello(Instance) on ring i→d, write(doorbell)
//!     │                          ──▶ pop, decode, negotiate: Driver::instance_joined
//!     │ Heartbeat … write(doorbell)
//!     │                          ──▶ pop, Msg::decode, Driver::instance_frame
//!     │ ◀── frames driver-core sends (Action::Send), EPOLLIN when asked for
//!     │ close ───────────────────▶ Driver::instance_failed(ChannelFailed), free
//! ```
//!
//! Invariants:
//! * Everything the module reads from the region goes through
//!   ins-protocol's ring (copy out, then validate; a bad index or frame
//!   length is a sticky `Corrupt`), and every frame is decoded from the
//!   private copy (`Msg::decode`, `Hello::decode`). The first bad index,
//!   frame, hello or protocol violation marks only that channel dead
//!   (poll: `EPOLLHUP|EPOLLERR`; doorbell reads: end of file); nothing the
//!   instance writes reaches a panic or an unbounded loop (a doorbell reads
//!   at most [`MAX_ROUNDS`] ring-fulls of frames).
//! * One mutex ([`Core`]) holds driver-core and every channel's rings: the
//!   core is single-threaded, and a doorbell, a status read, a new channel
//!   and a release each take it once, never while sleeping.
//! * A channel file holds an `Arc<Chan>`; the core's table holds the rings
//!   (with another `Arc<Chan>` to wake the instance) from creation to the
//!   file's release, which removes them. A mapping holds the file, so the
//!   region outlives every mapping of it.
//! * Data an instance sends for a socket goes into that socket file's
//!   receive buffer (control.rs); bytes for a socket whose file is gone are
//!   counted (`undelivered` in the status line) and dropped.
//! * Timers: driver-core's heartbeat timeouts are checked (`Driver::tick`)
//!   on every doorbell, status read and control request, and by the
//!   module's `ins-tick` kernel thread ([`Core::tick`], every
//!   [`Core::tick_ms`]), so a silent instance is found dead with nothing
//!   else happening.

use alloc::collections::VecDeque;
use alloc::vec::Vec as AVec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use driver_core::{
    Action, AppSockets, Config, Driver, Handle, InstId, InstState, InstanceLinks, LinkFailed,
    NoAppSide, ShimReplies, ShimReply, Violation,
};
use ins_protocol::hello::{Hello, Role};
use ins_protocol::msg::{
    encode_data_header, encode_data_to_header, Msg, OwnedMsg, DATA_TO_PREFIX_LEN, HEADER_LEN,
};
use ins_protocol::region::SharedRegion;
use ins_protocol::ring::{init_ring, Consumer, Producer, RingConfig, RingError};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::workqueue::Work;

use crate::control::SockEntry;
use crate::ksys::{self, WaitQueue};
use crate::kxen::GrantedRegion;
use crate::vregion::{VRegion, PAGE};
use crate::xenchan::XenPorts;

/// Rounds of reading (each bounded by the ring's capacity) a doorbell
/// does at most (see [`frames_in`]).
pub(crate) const MAX_ROUNDS: usize = 4;
/// Largest ring capacity an instance may ask for (each direction).
pub(crate) const MAX_RING: u32 = 16 << 20;
/// Smallest frame limit an instance may ask for: every frame driver-core
/// sends (a 16-byte header, its fixed part and at most a 256-byte option
/// value) and every hello fits.
pub(crate) const MIN_FRAME: u32 = 1024;
/// Frames kept for an instance whose ring is full (then it is failed).
pub(crate) const MAX_BACKLOG: usize = 4096;

/// A shared handle on a channel's region: vmalloc'd pages an instance
/// process maps (local transport), or pages granted to an instance domain
/// (Xen transport, xenchan.rs).
#[derive(Clone)]
pub(crate) enum Region {
    Local(Arc<VRegion>),
    Xen(Arc<GrantedRegion>),
}

// SAFETY: the Arc keeps the region (and its guarantees: fixed, mapped,
// page-aligned memory of `len` bytes) alive as long as this handle lives.
unsafe impl SharedRegion for Region {
    fn base(&self) -> core::ptr::NonNull<u8> {
        match self {
            Region::Local(r) => r.base(),
            Region::Xen(r) => r.base(),
        }
    }
    fn len(&self) -> usize {
        match self {
            Region::Local(r) => r.len(),
            Region::Xen(r) => r.len(),
        }
    }
}

/// Where the rings sit (ins-transport's `Layout`, recomputed here).
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) ring: RingConfig,
    pub(crate) to_driver_offset: usize,
    pub(crate) len: usize,
}

impl Layout {
    /// Both rings with `capacity` and `max_frame`, each page aligned.
    pub(crate) fn new(capacity: u32, max_frame: u32) -> Result<Layout> {
        if capacity > MAX_RING || max_frame < MIN_FRAME {
            return Err(EINVAL);
        }
        let ring = RingConfig::new(capacity, max_frame).map_err(|_| EINVAL)?;
        let off = ring
            .region_len()
            .checked_next_multiple_of(PAGE)
            .ok_or(EINVAL)?;
        let end = off.checked_add(ring.region_len()).ok_or(EINVAL)?;
        let len = end.checked_next_multiple_of(PAGE).ok_or(EINVAL)?;
        Ok(Layout {
            ring,
            to_driver_offset: off,
            len,
        })
    }
}

/// What a channel file points to.
#[pin_data]
pub(crate) struct Chan {
    #[pin]
    wq: WaitQueue,
    pub(crate) core: Arc<Core>,
    pub(crate) key: u64,
    region: Region,
    vm_ops: *const bindings::vm_operations_struct,
    /// The module rang the instance's doorbell and it has not read it.
    bell: AtomicBool,
    /// The channel failed or the instance was declared dead.
    dead: AtomicBool,
    /// Xen transport: the instance's domain.
    pub(crate) peer: Option<u16>,
    /// Xen transport: events taken by the interrupt handlers and not yet
    /// handled (xenchan.rs: `RING_EV`, `LIVE_EV`; `MORE_EV` when a read
    /// left frames behind).
    pub(crate) events: AtomicU32,
    /// Xen transport: handles the events in process context.
    #[pin]
    pub(crate) work: Work<Chan>,
}

// SAFETY: `vm_ops` points to the module's operations table (immutable,
// module lifetime); everything else is Send/Sync on its own.
unsafe impl Send for Chan {}
// SAFETY: as above.
unsafe impl Sync for Chan {}

impl Chan {
    fn ring(&self) {
        self.bell.store(true, Ordering::Release);
        self.wq.wake(ksys::EPOLLIN | ksys::EPOLLRDNORM);
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        self.wq
            .wake(ksys::EPOLLIN | ksys::EPOLLOUT | ksys::EPOLLHUP | ksys::EPOLLERR);
    }
}

/// One channel's rings and counters (in the core's table).
struct ChanState {
    key: u64,
    chan: Arc<Chan>,
    tx: Producer<Region>,
    rx: Consumer<Region>,
    /// Frames copied out of the ring.
    buf: KVec<u8>,
    /// Frames encoded for the ring.
    out: KVec<u8>,
    /// Frames for a full ring, oldest first.
    backlog: VecDeque<OwnedMsg>,
    /// Set when the handshake is done.
    inst: Option<InstId>,
    pid: u32,
    version: u16,
    frames: u64,
    /// Data frames dropped: socket files have no data path yet.
    undelivered: u64,
    /// Why the channel failed, if it did.
    failed: Option<&'static str>,
    /// Xen transport: the event-channel ports (bound once the channel is
    /// in the table: see [`Core::set_xen_ports`]).
    xen: Option<XenPorts>,
}

impl ChanState {
    /// Rings the instance: its local doorbell, or its event channel.
    fn bell(&self) {
        match &self.xen {
            Some(x) => x.notify(),
            None if self.chan.peer.is_none() => self.chan.ring(),
            None => {}
        }
    }

    /// The channel is dead: poll reports the hang-up; a Xen instance also
    /// sees the driver let go of the pages (status word, liveness port).
    fn kill(&self) {
        self.chan.kill();
        if let Some(x) = &self.xen {
            x.let_go();
        }
    }
}

/// driver-core and every channel, behind one mutex.
#[pin_data]
pub(crate) struct Core {
    #[pin]
    pub(crate) inner: Mutex<CoreInner>,
    /// Shim requests waiting for their reply (control.rs) sleep here.
    #[pin]
    pub(crate) replies_wq: WaitQueue,
}

pub(crate) struct CoreInner {
    pub(crate) driver: Driver,
    chans: AVec<ChanState>,
    next_key: u64,
    pub(crate) actions: AVec<Action>,
    /// Replies to shim requests not yet taken by their caller (control.rs).
    pub(crate) replies: AVec<ShimReply>,
    /// The identity of the next socket file (driver-core's "inode").
    pub(crate) next_sock: u64,
    /// Every open socket file's receive side (control.rs).
    pub(crate) socks: AVec<SockEntry>,
    /// Open `/dev/ins` files (shim connections); replies for others are
    /// dropped.
    pub(crate) conns: AVec<u64>,
    next_conn: u64,
}

/// Monotonic nanoseconds.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: plain clock read.
    let t = unsafe { bindings::ktime_get() };
    u64::try_from(t).unwrap_or(0)
}

impl Core {
    /// A core with driver-core's default configuration.
    pub(crate) fn new() -> Result<Arc<Core>> {
        Arc::pin_init(
            pin_init!(Core {
                inner <- kernel::new_mutex!(CoreInner {
                    driver: Driver::new(Config::default()),
                    chans: AVec::new(),
                    next_key: 1,
                    actions: AVec::new(),
                    replies: AVec::new(),
                    next_sock: 1,
                    socks: AVec::new(),
                    conns: AVec::new(),
                    next_conn: 1,
                }),
                replies_wq <- WaitQueue::new(),
            }),
            GFP_KERNEL,
        )
    }

    /// A new shim connection (an open `/dev/ins` file): its id, never
    /// reused.
    pub(crate) fn new_conn(&self) -> Result<u64> {
        let mut inner = self.inner.lock();
        inner.conns.try_reserve(1).map_err(|_| ENOMEM)?;
        let id = inner.next_conn;
        inner.next_conn += 1;
        inner.conns.push(id);
        Ok(id)
    }

    /// A new channel for an instance, with the driver's hello on its ring.
    pub(crate) fn new_channel(
        self: &Arc<Core>,
        layout: Layout,
        vm_ops: *const bindings::vm_operations_struct,
    ) -> Result<Arc<Chan>> {
        let region = Arc::new(VRegion::new(layout.len)?, GFP_KERNEL)?;
        self.add_channel(Region::Local(region), layout, vm_ops, None)
    }

    /// A new channel on `region` (laid out by `layout` from offset 0), with
    /// the driver's hello on its ring; `peer`: the instance's domain (Xen
    /// transport; its ports come next, [`Core::set_xen_ports`]).
    pub(crate) fn add_channel(
        self: &Arc<Core>,
        region: Region,
        layout: Layout,
        vm_ops: *const bindings::vm_operations_struct,
        peer: Option<u16>,
    ) -> Result<Arc<Chan>> {
        init_ring(&region, 0, layout.ring).map_err(|_| EINVAL)?;
        init_ring(&region, layout.to_driver_offset, layout.ring).map_err(|_| EINVAL)?;
        let mut tx = Producer::new(region.clone(), 0, layout.ring).map_err(|_| EINVAL)?;
        let rx = Consumer::new(region.clone(), layout.to_driver_offset, layout.ring)
            .map_err(|_| EINVAL)?;
        let max = layout.ring.max_frame as usize;
        let buf = KVec::from_elem(0u8, max, GFP_KERNEL)?;
        let out = KVec::from_elem(0u8, max, GFP_KERNEL)?;
        let mut inner = self.inner.lock();
        let key = inner.next_key;
        inner.next_key += 1;
        let mut hello = Hello::new(Role::Driver);
        hello.ring_capacity = layout.ring.capacity;
        hello.max_frame = layout.ring.max_frame;
        hello.window = inner.driver.config().window;
        tx.try_push(&hello.encode()).map_err(|_| EINVAL)?;
        tx.flush().map_err(|_| EINVAL)?;
        let chan = Arc::pin_init(
            pin_init!(Chan {
                wq <- WaitQueue::new(),
                core: self.clone(),
                key,
                region,
                vm_ops,
                bell: AtomicBool::new(false),
                dead: AtomicBool::new(false),
                peer,
                events: AtomicU32::new(0),
                work <- kernel::new_work!("ins-xen-chan"),
            }),
            GFP_KERNEL,
        )?;
        // Fallible: `try_reserve` first, so `push` cannot allocate.
        inner.chans.try_reserve(1).map_err(|_| ENOMEM)?;
        inner.chans.push(ChanState {
            key,
            chan: chan.clone(),
            tx,
            rx,
            buf,
            out,
            backlog: VecDeque::new(),
            inst: None,
            pid: 0,
            version: 0,
            frames: 0,
            undelivered: 0,
            failed: None,
            xen: None,
        });
        Ok(chan)
    }

    /// Gives channel `key` its bound event-channel ports. `ENOENT` if the
    /// channel is gone (the ports are dropped: unbound and closed).
    pub(crate) fn set_xen_ports(&self, key: u64, ports: XenPorts) -> Result {
        let mut inner = self.inner.lock();
        let c = inner
            .chans
            .iter_mut()
            .find(|c| c.key == key)
            .ok_or(ENOENT)?;
        c.xen = Some(ports);
        // An event before this (the port number guessed) waits for us.
        if c.chan.events.load(Ordering::Acquire) != 0 {
            crate::xenchan::queue(c.chan.clone());
        }
        Ok(())
    }

    /// The instance rang: read its ring.
    fn doorbell(&self, key: u64) -> Result {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let now = now_ns();
        // A dead channel ignores its doorbell: the instance learns of the
        // death from the hang-up, as from a daemon's closed socket.
        let Some(c) = inner.chans.iter_mut().find(|c| c.key == key) else {
            return Ok(());
        };
        if c.failed.is_some() {
            return Ok(());
        }
        // (Frames left after the last round: the instance's own thread is
        // in this call; it rings again once it publishes more.)
        let _ = frames_in(
            c,
            &mut inner.driver,
            &mut inner.actions,
            &mut inner.socks,
            now,
        );
        inner.after_frames(&self.replies_wq, now);
        Ok(())
    }

    /// Events on a Xen channel's ports (from its work item, xenchan.rs):
    /// the instance unmapped (its alive word clear: dead), or frames to
    /// read. The events are acknowledged (late EOI) once handled; a
    /// failed channel's ports stay masked until they are closed.
    pub(crate) fn xen_event(&self, key: u64) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let now = now_ns();
        let Some(c) = inner.chans.iter_mut().find(|c| c.key == key) else {
            return;
        };
        // No ports yet: set_xen_ports queues us again.
        let Some(alive) = c.xen.as_ref().map(XenPorts::instance_alive) else {
            return;
        };
        let ev = c.chan.events.swap(0, Ordering::AcqRel);
        if c.failed.is_none() {
            // The instance sets its alive word before its hello and its
            // kernel clears it when the pages are unmapped.
            if c.inst.is_some() && !alive {
                fail(
                    c,
                    "instance unmapped the channel",
                    &mut inner.driver,
                    &mut inner.actions,
                );
            } else if frames_in(
                c,
                &mut inner.driver,
                &mut inner.actions,
                &mut inner.socks,
                now,
            ) {
                // Frames left after the last round, the ring not armed for
                // them (the instance publishes beside us): run again.
                c.chan
                    .events
                    .fetch_or(crate::xenchan::MORE_EV, Ordering::AcqRel);
                crate::xenchan::queue(c.chan.clone());
            }
        }
        if c.failed.is_none() {
            if let Some(x) = &c.xen {
                x.eoi(ev);
            }
        }
        inner.after_frames(&self.replies_wq, now);
    }
}

impl CoreInner {
    /// What follows reading a channel: writers woken, timers, driver-core's
    /// actions, shim waiters woken.
    fn after_frames(&mut self, replies_wq: &WaitQueue, now: u64) {
        // Ring space may have come back: writers waiting for it look again.
        for e in self.socks.iter() {
            e.wake();
        }
        self.driver.tick(now, &mut self.actions);
        if self.execute() {
            replies_wq.wake(ksys::EPOLLIN);
        }
    }
}

impl Core {
    /// The channel file is gone: the instance left.
    pub(crate) fn release(&self, key: u64) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let Some(i) = inner.chans.iter().position(|c| c.key == key) else {
            return;
        };
        if let Some(inst) = inner.chans[i].inst {
            pr_info!("instance {} left: channel closed\n", inst);
            inner
                .driver
                .instance_failed(inst, Violation::ChannelFailed, &mut inner.actions);
        }
        if inner.execute() {
            self.replies_wq.wake(ksys::EPOLLIN);
        }
        // Its rings and region go now (no mapping is left: each holds the
        // file, whose release this is). A Xen channel's ports are closed
        // here (the instance sees the driver let go), its grants end when
        // the last reference to the region goes (xenchan.rs).
        drop(inner.chans.remove(i));
    }

    /// driver-core's timers, from the `ins-tick` thread (ins_main.rs):
    /// heartbeat timeouts, with what follows from them (the instance's
    /// channel closed, its sockets reset, waiters woken).
    pub(crate) fn tick(&self) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        inner.driver.tick(now_ns(), &mut inner.actions);
        if inner.execute() {
            self.replies_wq.wake(ksys::EPOLLIN);
        }
    }

    /// How often [`Core::tick`] runs: a quarter of driver-core's heartbeat
    /// timeout (its configuration), between 50 ms and 1 s.
    pub(crate) fn tick_ms(&self) -> u32 {
        let timeout_ns = self.inner.lock().driver.config().heartbeat_timeout_ns;
        (timeout_ns / 4 / 1_000_000).clamp(50, 1000) as u32
    }

    /// Applies `key=value` settings (separated by white space; driver-core's
    /// `Config::set` keys) all at once, or none: the first bad one is
    /// `EINVAL`, logged with its key and reason.
    pub(crate) fn configure(&self, text: &[u8]) -> Result {
        let text = core::str::from_utf8(text).map_err(|_| {
            pr_warn!("/dev/ins: settings are not UTF-8\n");
            EINVAL
        })?;
        let mut inner = self.inner.lock();
        let mut cfg = *inner.driver.config();
        for kv in text.split_whitespace() {
            let Some((k, v)) = kv.split_once('=') else {
                pr_warn!("/dev/ins: {:?}: expected key=value\n", kv);
                return Err(EINVAL);
            };
            cfg.set(k, v).map_err(|e| {
                pr_warn!("/dev/ins: {}={:?}: {}\n", k, v, e.as_str());
                EINVAL
            })?;
        }
        inner.driver.set_config(cfg).map_err(|e| {
            pr_warn!("/dev/ins: {}\n", e.as_str());
            EINVAL
        })?;
        let mut line = KVec::new();
        if cfg.write_text(&mut TextOut(&mut line)).is_ok() {
            pr_info!("settings: {}\n", core::str::from_utf8(&line).unwrap_or("?"));
        }
        Ok(())
    }

    /// A text snapshot: the settings (`config key=value …`), then one line
    /// per instance driver-core knows (live or dead) and per channel whose
    /// handshake has not finished.
    pub(crate) fn status(&self, out: &mut KVec<u8>) -> Result {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        inner.driver.tick(now_ns(), &mut inner.actions);
        if inner.execute() {
            self.replies_wq.wake(ksys::EPOLLIN);
        }
        let mut w = TextOut(out);
        let r = (|| -> core::fmt::Result {
            w.write_str("config ")?;
            inner.driver.config().write_text(&mut w)?;
            w.write_str("\n")?;
            for (id, i) in inner.driver.instances() {
                let state = match i.state {
                    InstState::Live => "live",
                    InstState::Draining => "draining",
                    InstState::Dead => "dead",
                };
                write!(w, "instance {id} {state}")?;
                let chan = inner.chans.iter().find(|c| c.inst == Some(id));
                if let Some(d) = chan.and_then(|c| c.chan.peer) {
                    write!(w, " xen dom{d}")?;
                }
                match chan {
                    Some(c) => write!(
                        w,
                        " pid {} version {} frames {} channel {}",
                        c.pid,
                        c.version,
                        c.frames,
                        c.failed.unwrap_or("open")
                    )?,
                    None => w.write_str(" channel closed")?,
                }
                if let Some(s) = i.stats {
                    write!(w, " heartbeat {}", s.seq)?;
                }
                let chan = inner.chans.iter().find(|c| c.inst == Some(id));
                if let Some(n) = chan.map(|c| c.undelivered).filter(|&n| n > 0) {
                    write!(w, " undelivered {n}")?;
                }
                if let Some(d) = i.death {
                    write!(w, " death \"{d}\"")?;
                }
                w.write_str("\n")?;
            }
            for e in inner.socks.iter() {
                crate::control::status_line(e, &inner.driver, &mut w)?;
            }
            for c in inner.chans.iter().filter(|c| c.inst.is_none()) {
                writeln!(
                    w,
                    "channel {} handshake {}",
                    c.key,
                    c.failed.unwrap_or("pending")
                )?;
            }
            Ok(())
        })();
        r.map_err(|_| ENOMEM)
    }
}

/// `core::fmt::Write` over a `KVec<u8>` (allocation failure: `fmt::Error`).
pub(crate) struct TextOut<'a>(&'a mut KVec<u8>);

impl Write for TextOut<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0
            .extend_from_slice(s.as_bytes(), GFP_KERNEL)
            .map_err(|_| core::fmt::Error)
    }
}

/// Marks a channel failed (before or after its handshake).
fn fail(c: &mut ChanState, why: &'static str, driver: &mut Driver, actions: &mut AVec<Action>) {
    if c.failed.is_some() {
        return;
    }
    c.failed = Some(why);
    match c.inst {
        Some(inst) => {
            pr_warn!("instance {} failed: {}\n", inst, why);
            driver.instance_failed(inst, Violation::ChannelFailed, actions);
        }
        None => pr_warn!("channel {} failed before joining: {}\n", c.key, why),
    }
    c.kill();
}

/// Pops, copies out, decodes and hands to driver-core every frame
/// published, then releases the space and re-arms the ring; again while
/// re-arming finds more (at most [`MAX_ROUNDS`] times).
///
/// Bounded work: within a round nothing is released, so the instance
/// cannot add frames beyond the ring's capacity (every frame takes at
/// least 8 bytes: at most capacity / 8 frames a round). On the local
/// transport the instance's own thread is in this call, so a well-behaved
/// (single-producer-thread) instance has published nothing new when the
/// round ends and re-arming succeeds at once. Returns `true` if frames
/// are left after the last round (the ring is not armed for them): the
/// Xen transport, whose instance runs beside this, queues itself again.
fn frames_in(
    c: &mut ChanState,
    driver: &mut Driver,
    actions: &mut AVec<Action>,
    socks: &mut AVec<SockEntry>,
    now: u64,
) -> bool {
    for _ in 0..MAX_ROUNDS {
        loop {
            let n = match c.rx.pop(&mut c.buf) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(RingError::Corrupt(_)) => {
                    fail(c, "corrupt ring", driver, actions);
                    return false;
                }
                Err(_) => {
                    fail(c, "ring error", driver, actions);
                    return false;
                }
            };
            c.frames += 1;
            if let Err(why) = frame_in(c, n, driver, actions, socks, now) {
                fail(c, why, driver, actions);
                return false;
            }
            if c.failed.is_some() {
                return false;
            }
        }
        match c.rx.release() {
            Ok(true) => c.bell(),
            Ok(false) => {}
            Err(_) => {
                fail(c, "corrupt ring", driver, actions);
                return false;
            }
        }
        // Ask to be rung on the next frame; `true`: more came meanwhile.
        match c.rx.prepare_wait() {
            Ok(false) => return false,
            Ok(true) => {}
            Err(_) => {
                fail(c, "corrupt ring", driver, actions);
                return false;
            }
        }
    }
    true
}

/// One frame, `n` bytes in `c.buf`: the hello first, then messages.
fn frame_in(
    c: &mut ChanState,
    n: usize,
    driver: &mut Driver,
    actions: &mut AVec<Action>,
    socks: &mut AVec<SockEntry>,
    now: u64,
) -> core::result::Result<(), &'static str> {
    let Some(inst) = c.inst else {
        return handshake(c, n, driver, actions, now);
    };
    let frame = c.buf.get(..n).ok_or("frame length")?;
    let msg = Msg::decode(frame).map_err(|_| "malformed frame")?;
    match driver.instance_frame(inst, &msg, now, actions) {
        Ok(None) => {}
        // Data for a socket (window checked by driver-core): into its
        // receive buffer, credited back as the app reads it (control.rs).
        Ok(Some(h)) => match msg {
            Msg::DataTo {
                addr, info, bytes, ..
            } => {
                let limit = driver.config().window as usize;
                if !crate::dgram::dgram_in(socks, h, addr, info, bytes, limit) {
                    // Dropped, as UDP drops: its credit goes back.
                    c.undelivered += 1;
                    driver.delivered(h, bytes.len() as u32, true, actions);
                }
            }
            Msg::Data { bytes, .. } => {
                if !crate::control::data_in(socks, h, bytes) {
                    c.undelivered += 1;
                }
            }
            _ => {}
        },
        Err(v) => {
            // driver-core declared it dead already.
            pr_warn!("instance {} violated the protocol: {}\n", inst, v);
            c.failed = Some("protocol violation");
            c.kill();
        }
    }
    Ok(())
}

/// The first frame: the instance's hello.
fn handshake(
    c: &mut ChanState,
    n: usize,
    driver: &mut Driver,
    actions: &mut AVec<Action>,
    now: u64,
) -> core::result::Result<(), &'static str> {
    let frame = c.buf.get(..n).ok_or("hello length")?;
    let peer = Hello::decode(frame).map_err(|_| "malformed hello")?;
    let version = Hello::new(Role::Driver)
        .negotiate(&peer)
        .map_err(|_| "incompatible hello")?;
    let ring = c.tx.config();
    if peer.ring_capacity != ring.capacity || peer.max_frame != ring.max_frame {
        return Err("hello disagrees with the rings");
    }
    let window = if peer.window == 0 {
        driver.config().window
    } else {
        peer.window
    };
    let inst = driver.instance_joined(now, window, actions);
    c.inst = Some(inst);
    c.pid = peer.pid;
    c.version = version;
    pr_info!(
        "instance {} joined: pid {}, protocol {}, ring {} bytes, window {}\n",
        inst,
        peer.pid,
        version,
        ring.capacity,
        window
    );
    Ok(())
}

impl CoreInner {
    /// Carries out driver-core's actions, then publishes what was pushed.
    /// Returns whether a shim reply arrived (the caller wakes its waiters).
    pub(crate) fn execute(&mut self) -> bool {
        let CoreInner {
            driver,
            chans,
            actions,
            replies,
            socks,
            conns,
            next_sock,
            ..
        } = self;
        let before = replies.len();
        let mut host = KHost {
            chans,
            replies,
            socks,
            conns,
            next_sock,
        };
        driver.execute(actions, &mut host);
        let replied = replies.len() > before;
        for c in chans.iter_mut() {
            if c.failed.is_some() {
                continue;
            }
            // Frames queued while the ring was full go first, as far as
            // they fit now. (Every frame fits an empty ring: the frame
            // limit is at least MIN_FRAME, so a push error only means full.)
            while let Some(head) = c.backlog.front().copied() {
                if !matches!(c.push(&head), Ok(true)) {
                    break;
                }
                c.backlog.pop_front();
            }
            let need = c.backlog.front().map(|m| m.borrowed().encoded_len());
            let r = c.tx.flush().and_then(|rang| match need {
                // Ask for a doorbell once the backlog's head fits.
                Some(n) => c.tx.prepare_wait_space(n).map(|_| rang),
                None => Ok(rang),
            });
            match r {
                Ok(true) => c.bell(),
                Ok(false) => {}
                Err(_) => {
                    c.failed = Some("corrupt ring");
                    c.kill();
                }
            }
        }
        replied
    }
}

impl CoreInner {
    /// Pushes a `Data` frame carrying `payload` for socket `wire` onto
    /// `inst`'s ring and publishes it. `Ok(false)`: no room now (frames
    /// queued before it, or the ring is full); the ring is armed, so the
    /// instance's next release rings the module, whose doorbell wakes the
    /// socket writers. `EPIPE` if the instance's channel is gone.
    pub(crate) fn push_data(&mut self, inst: InstId, wire: u32, payload: &[u8]) -> Result<bool> {
        let mut hdr = [0u8; HEADER_LEN];
        encode_data_header(wire, payload.len(), &mut hdr).map_err(|_| EINVAL)?;
        self.push_parts(inst, &hdr, payload)
    }

    /// Pushes one frame, `hdr` then `payload`, onto `inst`'s ring (as
    /// [`CoreInner::push_data`] says).
    fn push_parts(&mut self, inst: InstId, hdr: &[u8], payload: &[u8]) -> Result<bool> {
        let Some(c) = self.chans.iter_mut().find(|c| c.inst == Some(inst)) else {
            return Err(EPIPE);
        };
        if c.failed.is_some() {
            return Err(EPIPE);
        }
        let need = hdr.len() + payload.len();
        // Frames queued before (credits, requests) go first.
        while let Some(head) = c.backlog.front().copied() {
            if !matches!(c.push(&head), Ok(true)) {
                break;
            }
            c.backlog.pop_front();
        }
        for _ in 0..2 {
            if c.backlog.is_empty() {
                match c.tx.try_push_parts(&[hdr, payload]) {
                    Ok(()) => {
                        if c.tx.flush().map_err(|_| EIO)? {
                            c.bell();
                        }
                        return Ok(true);
                    }
                    Err(RingError::Full) => {}
                    Err(_) => return Err(EIO),
                }
            }
            // `true`: room came meanwhile, try once more.
            if !c.tx.prepare_wait_space(need).map_err(|_| EIO)? {
                return Ok(false);
            }
        }
        Ok(false)
    }
}

impl CoreInner {
    /// Pushes a `DataTo` frame (a datagram for socket `wire`, to `dest` or
    /// the connected peer) onto `inst`'s ring, as [`CoreInner::push_data`].
    pub(crate) fn push_data_to(
        &mut self,
        inst: InstId,
        wire: u32,
        dest: Option<core::net::SocketAddr>,
        info: &ins_protocol::msg::PktInfo,
        payload: &[u8],
    ) -> Result<bool> {
        let mut pre = [0u8; DATA_TO_PREFIX_LEN];
        encode_data_to_header(wire, dest, info, payload.len(), &mut pre).map_err(|_| EINVAL)?;
        self.push_parts(inst, &pre, payload)
    }

    /// The largest datagram payload one frame on `inst`'s ring carries (0
    /// if its channel is gone).
    pub(crate) fn max_dgram(&self, inst: InstId) -> usize {
        self.chans
            .iter()
            .find(|c| c.inst == Some(inst))
            .map_or(0, |c| {
                (c.tx.config().max_frame as usize).saturating_sub(DATA_TO_PREFIX_LEN)
            })
    }

    /// Whether a `DataTo` frame of `len` payload bytes fits `inst`'s ring
    /// now (nothing queued before it); if not, the ring is armed so that
    /// the instance's release rings the module once it does, and the
    /// doorbell wakes the writers.
    pub(crate) fn data_to_fits(&mut self, inst: InstId, len: usize) -> bool {
        let Some(c) = self.chans.iter_mut().find(|c| c.inst == Some(inst)) else {
            return false;
        };
        if c.failed.is_some() || !c.backlog.is_empty() {
            return false;
        }
        let need = DATA_TO_PREFIX_LEN + len;
        if c.tx.free_frame_space().is_ok_and(|free| free >= need) {
            return true;
        }
        // `true`: room came meanwhile.
        c.tx.prepare_wait_space(need).unwrap_or(false)
    }

    /// Carries out actions driver-core left (e.g. a socket's `Open`, which
    /// `send_credit` queues when it places a socket: it must reach the
    /// ring before the socket's data), waking shim waiters for replies.
    pub(crate) fn flush_actions(&mut self, replies_wq: &WaitQueue) {
        if !self.actions.is_empty() && self.execute() {
            replies_wq.wake(ksys::EPOLLIN);
        }
    }
}

impl CoreInner {
    /// How many payload bytes one `Data` frame on `inst`'s ring can carry
    /// now (0: the ring is full, frames are queued before it, or the
    /// channel is gone; a full ring is armed, so the instance's release
    /// rings the module and its doorbell wakes the writers). Ring space
    /// only grows until this side pushes, so a frame of that size pushed
    /// under the same lock fits.
    pub(crate) fn data_room(&mut self, inst: InstId) -> usize {
        let Some(c) = self.chans.iter_mut().find(|c| c.inst == Some(inst)) else {
            return 0;
        };
        if c.failed.is_some() || !c.backlog.is_empty() {
            return 0;
        }
        let room = |c: &mut ChanState| {
            c.tx.free_frame_space()
                .map_or(0, |free| free.saturating_sub(HEADER_LEN))
        };
        let n = room(c);
        // Full: ask the instance to ring when a small frame fits (`true`:
        // it fits already).
        if n == 0 && c.tx.prepare_wait_space(HEADER_LEN + 1).unwrap_or(false) {
            return room(c);
        }
        n
    }
}

/// driver-core's host: the channels, and the replies for shim requests.
struct KHost<'a> {
    chans: &'a mut AVec<ChanState>,
    replies: &'a mut AVec<ShimReply>,
    socks: &'a mut AVec<SockEntry>,
    conns: &'a AVec<u64>,
    next_sock: &'a mut u64,
}

impl ChanState {
    /// Encodes and pushes `frame`; `Ok(false)` if the ring is full.
    fn push(&mut self, frame: &OwnedMsg) -> core::result::Result<bool, LinkFailed> {
        let n = frame.encode(&mut self.out).map_err(|_| LinkFailed)?;
        let bytes = self.out.get(..n).ok_or(LinkFailed)?;
        match self.tx.try_push(bytes) {
            Ok(()) => Ok(true),
            Err(RingError::Full) => Ok(false),
            Err(_) => Err(LinkFailed),
        }
    }
}

impl InstanceLinks for KHost<'_> {
    fn send(&mut self, inst: InstId, frame: &OwnedMsg) -> core::result::Result<(), LinkFailed> {
        let Some(c) = self.chans.iter_mut().find(|c| c.inst == Some(inst)) else {
            return Ok(());
        };
        if c.failed.is_some() {
            return Ok(());
        }
        // Older frames first: a backlog drains (in order) before this one.
        while let Some(head) = c.backlog.front().copied() {
            if !c.push(&head)? {
                break;
            }
            c.backlog.pop_front();
        }
        if c.backlog.is_empty() && c.push(frame)? {
            return Ok(());
        }
        if c.backlog.len() >= MAX_BACKLOG {
            return Err(LinkFailed);
        }
        c.backlog.try_reserve(1).map_err(|_| LinkFailed)?;
        c.backlog.push_back(*frame);
        Ok(())
    }

    fn close(&mut self, inst: InstId) {
        if let Some(c) = self.chans.iter_mut().find(|c| c.inst == Some(inst)) {
            if c.failed.is_none() {
                c.failed = Some("instance dead");
                pr_info!("instance {} closed by driver-core\n", inst);
            }
            c.kill();
        }
    }
}

// The app side of each socket is its socket file (control.rs); an
// announced connection gets its receive side now and its file when
// `Accept` hands it over; a non-blocking connect is refused (control.rs).
impl AppSockets for KHost<'_> {
    fn new_connection(
        &mut self,
        sock: Handle,
        _listener: Handle,
        _inst: InstId,
    ) -> core::result::Result<u64, NoAppSide> {
        crate::control::new_connection(self.socks, self.next_sock, sock)
    }
    fn token(&mut self, listener: Handle) {
        crate::control::token(self.socks, listener);
    }
    fn connect_done(&mut self, sock: Handle, errno: i32) {
        crate::control::connect_done(self.socks, sock, errno);
    }
    fn peer_eof(&mut self, sock: Handle) {
        crate::control::peer_end(self.socks, sock, 0);
    }
    fn peer_reset(&mut self, sock: Handle, errno: i32) {
        crate::control::peer_end(self.socks, sock, errno);
    }
    fn shutdown_app_write(&mut self, _sock: Handle) {}
    fn resume(&mut self, sock: Handle) {
        if let Some(e) = self.socks.iter().find(|e| e.handle == sock) {
            e.wake();
        }
    }
    // A socket file's entry goes with its file (control.rs, release); an
    // accepted connection never handed over goes now.
    fn forget(&mut self, sock: Handle) {
        crate::control::forget(self.socks, sock);
    }
}

impl ShimReplies for KHost<'_> {
    fn reply(&mut self, reply: &ShimReply) {
        // Kept for the caller waiting on it (control.rs), if its /dev/ins
        // file is still open. If memory is short the reply is lost and the
        // caller waits until a signal.
        if !self.conns.contains(&reply.conn) {
            return;
        }
        if self.replies.try_reserve(1).is_ok() {
            self.replies.push(*reply);
        } else {
            pr_warn!("shim reply dropped: out of memory\n");
        }
    }
}

/// The `Chan` behind a channel file.
///
/// # Safety
///
/// `file` is one of our channel files (its `private_data` came from
/// `Arc::into_raw` in [`install`] and is released only in `release`).
unsafe fn chan_of<'a>(file: *mut bindings::file) -> &'a Chan {
    // SAFETY: `file` is valid (caller's contract).
    let private = unsafe { (*file).private_data };
    // SAFETY: by the contract `private_data` is a live `Chan` until
    // release, and the VFS calls no other file operation after release.
    unsafe { &*(private as *const Chan) }
}

/// `read` of channel files: consume the module's doorbell.
///
/// # Safety
///
/// Called by the VFS with one of our files and a user buffer of `len`.
unsafe extern "C" fn chan_read(
    file: *mut bindings::file,
    buf: *mut kernel::ffi::c_char,
    len: usize,
    _pos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: the VFS passes one of our files.
    let chan = unsafe { chan_of(file) };
    // SAFETY: as above.
    let nonblock = unsafe { (*file).f_flags } & bindings::O_NONBLOCK != 0;
    let r = (|| -> Result<isize> {
        if len < 8 {
            return Err(EINVAL);
        }
        loop {
            if chan.bell.swap(false, Ordering::AcqRel) {
                let one = 1u64.to_ne_bytes();
                kernel::uaccess::UserSlice::new(buf as usize, 8)
                    .writer()
                    .write_slice(&one)?;
                return Ok(8);
            }
            if chan.dead.load(Ordering::Acquire) {
                return Ok(0);
            }
            if nonblock {
                return Err(EAGAIN);
            }
            chan.wq.wait_until(|| {
                chan.bell.load(Ordering::Acquire) || chan.dead.load(Ordering::Acquire)
            })?;
        }
    })();
    r.unwrap_or_else(|e| e.to_errno() as isize)
}

/// `write` of channel files: the instance's doorbell.
///
/// # Safety
///
/// Called by the VFS with one of our files.
unsafe extern "C" fn chan_write(
    file: *mut bindings::file,
    _buf: *const kernel::ffi::c_char,
    len: usize,
    _pos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: the VFS passes one of our files.
    let chan = unsafe { chan_of(file) };
    if len != 8 {
        return EINVAL.to_errno() as isize;
    }
    match chan.core.doorbell(chan.key) {
        Ok(()) => 8,
        Err(e) => e.to_errno() as isize,
    }
}

/// `poll` of channel files.
///
/// # Safety
///
/// Called by the VFS with one of our files and its poll table (or null).
pub(crate) unsafe extern "C" fn chan_poll(
    file: *mut bindings::file,
    pt: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: the VFS passes one of our files.
    let chan = unsafe { chan_of(file) };
    // SAFETY: the queue lives in the Chan, which the file keeps alive until
    // release, after poll/epoll entries are gone.
    unsafe { ksys::poll_wait(file, chan.wq.as_ptr(), pt.cast()) };
    let mut bits = 0;
    if chan.bell.load(Ordering::Acquire) {
        bits |= ksys::EPOLLIN | ksys::EPOLLRDNORM;
    }
    if chan.dead.load(Ordering::Acquire) {
        bits |= ksys::EPOLLHUP | ksys::EPOLLERR;
    } else {
        bits |= ksys::EPOLLOUT | ksys::EPOLLWRNORM;
    }
    bits
}

/// `mmap` of channel files: the region, whole, shared.
///
/// # Safety
///
/// Called by the VFS with one of our files and the new area.
unsafe extern "C" fn chan_mmap(
    file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> i32 {
    // SAFETY: the VFS passes one of our files.
    let chan = unsafe { chan_of(file) };
    let Region::Local(region) = &chan.region else {
        // A Xen channel's pages are the instance domain's to map.
        return ENODEV.to_errno();
    };
    // SAFETY: `vma` is the area being set up under the mmap lock.
    match unsafe { region.map_into(vma, chan.vm_ops) } {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `release` of channel files.
///
/// # Safety
///
/// Called by the VFS once, when the last reference to one of our files
/// goes; no other operation on it follows.
pub(crate) unsafe extern "C" fn chan_release(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> i32 {
    // SAFETY: the VFS passes the file being released.
    let private = unsafe { (*file).private_data };
    // SAFETY: last reference to one of our files: `private_data` is the
    // `Arc<Chan>` reference from `Arc::into_raw`, never used again.
    let chan = unsafe { Arc::from_raw(private as *const Chan) };
    chan.core.release(chan.key);
    // A Xen channel's ports are closed now: no event queues its work any
    // more; wait for one queued before (it holds a reference, and the
    // module must not go while it is pending).
    flush_work(&chan);
    0
}

/// Waits until the channel's work item (xenchan.rs), if queued, has run.
pub(crate) fn flush_work(chan: &Chan) {
    // SAFETY: `work` was initialised with the Chan, which `chan` keeps.
    let work = unsafe { Work::raw_get(&chan.work) };
    // SAFETY: an initialised work item, alive during the call.
    unsafe { bindings::flush_work(work) };
}

/// The channel files' operations (module lifetime).
pub(crate) fn chan_fops(owner: *mut bindings::module) -> bindings::file_operations {
    bindings::file_operations {
        owner,
        read: Some(chan_read),
        write: Some(chan_write),
        poll: Some(chan_poll),
        mmap: Some(chan_mmap),
        release: Some(chan_release),
        llseek: Some(bindings::noop_llseek),
        // SAFETY: all-zero is a valid `file_operations` (no operation).
        ..unsafe { core::mem::zeroed() }
    }
}

/// Makes the channel's file and reserves an fd (`O_CLOEXEC` if asked)
/// without installing it (`ksys::new_anon_file`). On failure the channel
/// is removed from the core's table.
pub(crate) fn install(
    chan: Arc<Chan>,
    fops: *const bindings::file_operations,
    cloexec: bool,
) -> Result<(i32, *mut bindings::file)> {
    let (core, key) = (chan.core.clone(), chan.key);
    ksys::new_anon_file(c"[ins-instance]", fops, chan, cloexec).inspect_err(|_| core.release(key))
}
