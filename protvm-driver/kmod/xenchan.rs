// SPDX-License-Identifier: GPL-2.0

//! The module's Xen transport: an instance *domain* joins ins.ko over
//! pages granted to it and two event-channel ports, the layout and the
//! rendezvous of ins-xen's `channel` (the user-space driver's Xen
//! transport, transport/src/sys/xen): the rings at the start of the
//! region exactly as on the local transport, then one *status page*
//! (the driver's alive word at 0, the instance's at 64).
//!
//! ```text
//!  ins-ctl attach-xen --kmod (kpvm)        ins.ko                 instance domain
//!   ioctl INS_IOC_XEN_OFFER {domid, sizes} ─▶ grant pages (vm_map_ram'd),
//!                                             rings, Hello(Driver), status
//!                                             word, 2 ports (late EOI)
//!   ◀── channel fd, grefs, ports, layout ──
//!   xenstore: offer keys, state=Initialised ──────────────────────▶ map, bind,
//!   ◀──────────────────────────── state=Connected ───────────────── alive word
//!   state=Connected                         ◀════ hello, frames, events ═══▶
//!   holds the fd; peer gone in xenstore ─▶ close(fd) ─▶ instance dead, ports
//!                                           closed, grants ended (deferred
//!                                           while still mapped)
//!   fd hangs up (module declared it dead) ─▶ Closing, wait, close(fd)
//! ```
//!
//! The xenstore part (permissions, transactions, watches) is the helper's:
//! Linux exports no way for a module to set a node's permissions, and the
//! user-space rendezvous is already ins-xen's tested one.
//!
//! Invariants:
//! * The interrupt handlers only record the event and queue the channel's
//!   work item; the work takes the core's lock, handles the events
//!   ([`Core::xen_event`]: the alive word, then the ring, read as on the
//!   local transport: copied out, validated) and only then acknowledges
//!   them (late EOI), so events a peer raises faster are taken as one
//!   (the port is masked until then), and a failed channel's ports stay
//!   masked. A run reads at most `MAX_ROUNDS` ring-fulls; if frames are
//!   left (the instance publishes beside it), the work queues itself
//!   again (`MORE_EV`): a busy instance keeps one unbound worker reading,
//!   each run popping real frames (a bad index fails the channel), never
//!   spinning on nothing.
//! * `XenPorts` holds a strong reference to the `Chan` for the handlers
//!   (`dev_id`) from binding until both ports are unbound (its drop), and
//!   the channel file's release flushes the work, so neither outlives the
//!   channel or the module.
//! * The pages are only freed once their grants end: at once if the
//!   instance unmapped them, else by Linux's deferred list when it does
//!   (kxen.rs).

use core::ffi::c_void;
use core::sync::atomic::{AtomicU32, Ordering};

use kernel::bindings;
use kernel::c_str;
use kernel::ffi::c_int;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};
use kernel::workqueue::{self, WorkItem};

use crate::instance::{Chan, Core, Layout, Region};
use crate::ksys;
use crate::kxen::{self, BoundPort, GrantedRegion, IrqReturn, IRQ_HANDLED, PAGE_SIZE};

/// `Chan::events`: the ring port fired.
pub(crate) const RING_EV: u32 = 1;
/// `Chan::events`: the liveness port fired.
pub(crate) const LIVE_EV: u32 = 2;
/// `Chan::events`: frames were left to read (no port to acknowledge).
pub(crate) const MORE_EV: u32 = 4;
/// Offset of the driver's alive word in the status page
/// (`ins_xen::channel::DRIVER_ALIVE`).
const DRIVER_ALIVE: usize = 0;
/// Offset of the instance's alive word (`ins_xen::channel::INSTANCE_ALIVE`).
const INSTANCE_ALIVE: usize = 64;

/// A Xen channel's ports, in the core's table with its rings.
pub(crate) struct XenPorts {
    ring: Option<BoundPort>,
    live: Option<BoundPort>,
    /// A strong reference to the channel (`Arc::into_raw`), the handlers'
    /// `dev_id`, given back once both ports are unbound.
    dev: *const Chan,
    region: Arc<GrantedRegion>,
    /// Offset of the status page.
    status: usize,
}

// SAFETY: `dev` is an owned strong reference (Arc<Chan> is Send + Sync);
// the ports' operations may run on any thread.
unsafe impl Send for XenPorts {}
// SAFETY: as above; `&XenPorts` only notifies, acknowledges and does
// atomic loads and stores.
unsafe impl Sync for XenPorts {}

impl XenPorts {
    /// Allocates and binds the ring and liveness ports for `peer`.
    fn bind(
        chan: &Arc<Chan>,
        peer: u16,
        region: Arc<GrantedRegion>,
        status: usize,
    ) -> Result<XenPorts> {
        let dev = Arc::into_raw(chan.clone());
        let mut p = XenPorts {
            ring: None,
            live: None,
            dev,
            region,
            status,
        };
        // SAFETY: `dev` stays a live channel until `p`'s drop has unbound
        // both ports; the names are static; the handlers only record and
        // queue (interrupt context).
        p.ring = Some(unsafe {
            BoundPort::new(peer, ring_event, c_str!("ins-xen"), dev.cast_mut().cast())
        }?);
        // SAFETY: as above.
        p.live = Some(unsafe {
            BoundPort::new(
                peer,
                live_event,
                c_str!("ins-xen-live"),
                dev.cast_mut().cast(),
            )
        }?);
        Ok(p)
    }

    /// A word of the status page (shared with the peer: atomic access only).
    fn word(&self, off: usize) -> &AtomicU32 {
        let p = self.region.base().as_ptr().wrapping_add(self.status + off);
        // SAFETY: the status page is the region's last page (mapped while
        // `region` lives); `off` is 0 or 64, so the word is aligned and
        // inside it; the peer's concurrent writes are atomic accesses too.
        unsafe { &*p.cast::<AtomicU32>() }
    }

    /// Whether the instance's alive word is set (its first byte, as the
    /// instance's kernel clears exactly that byte on unmap).
    pub(crate) fn instance_alive(&self) -> bool {
        self.word(INSTANCE_ALIVE).load(Ordering::Acquire) & 0xff != 0
    }

    /// Clears our alive word and raises the liveness port (once): the
    /// instance stops and unmaps.
    pub(crate) fn let_go(&self) {
        if self.word(DRIVER_ALIVE).swap(0, Ordering::AcqRel) != 0 {
            if let Some(l) = &self.live {
                l.notify();
            }
        }
    }

    /// Rings the instance.
    pub(crate) fn notify(&self) {
        if let Some(r) = &self.ring {
            r.notify();
        }
    }

    /// Acknowledges the events in `ev` (late EOI).
    pub(crate) fn eoi(&self, ev: u32) {
        for (bit, port) in [(RING_EV, &self.ring), (LIVE_EV, &self.live)] {
            if let Some(p) = port.as_ref().filter(|_| ev & bit != 0) {
                // SAFETY: the port is bound with the late-EOI chip.
                unsafe { kxen::lateeoi(p.irq()) };
            }
        }
    }

    fn ports(&self) -> (u32, u32) {
        let n = |p: &Option<BoundPort>| p.as_ref().map_or(0, BoundPort::port);
        (n(&self.ring), n(&self.live))
    }
}

impl Drop for XenPorts {
    fn drop(&mut self) {
        self.let_go();
        // Unbinding waits for a running handler and closes the port.
        drop(self.ring.take());
        drop(self.live.take());
        // SAFETY: from `Arc::into_raw` in `bind`; both ports are unbound, so
        // no handler uses `dev` any more. Not the last reference: the
        // channel file (or the offer being made) holds one.
        drop(unsafe { Arc::from_raw(self.dev) });
    }
}

/// Records `bit` on the channel behind `dev` and queues its work.
///
/// # Safety
///
/// `dev` is a [`XenPorts`]' `dev` whose port is bound (the handler runs).
unsafe fn event(dev: *mut c_void, bit: u32) -> IrqReturn {
    // SAFETY: the reference `XenPorts` holds keeps the count above zero
    // while its ports are bound (caller's contract).
    let chan = unsafe { ArcBorrow::<Chan>::from_raw(dev.cast_const().cast()) };
    chan.events.fetch_or(bit, Ordering::AcqRel);
    queue(Arc::from(chan));
    IRQ_HANDLED
}

/// Interrupt handler of a channel's ring port.
///
/// # Safety
///
/// Bound by [`XenPorts::bind`] with its `dev`.
unsafe extern "C" fn ring_event(_irq: c_int, dev: *mut c_void) -> IrqReturn {
    // SAFETY: the handler runs only while its port is bound.
    unsafe { event(dev, RING_EV) }
}

/// Interrupt handler of a channel's liveness port.
///
/// # Safety
///
/// Bound by [`XenPorts::bind`] with its `dev`.
unsafe extern "C" fn live_event(_irq: c_int, dev: *mut c_void) -> IrqReturn {
    // SAFETY: as for `ring_event`.
    unsafe { event(dev, LIVE_EV) }
}

/// Queues the channel's work on the unbound system queue (its reading is
/// not tied to a CPU; nothing if it is queued already: it has not run yet
/// and will see the events recorded). Callable in interrupt context: the
/// reference given back when already queued is never the last one (the
/// caller holds another).
pub(crate) fn queue(chan: Arc<Chan>) {
    let _ = workqueue::system_unbound().enqueue(chan);
}

kernel::impl_has_work! {
    impl HasWork<Self> for Chan { self.work }
}

impl WorkItem for Chan {
    type Pointer = Arc<Chan>;

    fn run(this: Arc<Chan>) {
        this.core.xen_event(this.key);
    }
}

/// What [`offer`] gives the caller.
pub(crate) struct Offered {
    pub(crate) fd: i32,
    pub(crate) file: *mut bindings::file,
    pub(crate) grefs: KVec<u32>,
    pub(crate) port: u32,
    pub(crate) live_port: u32,
    pub(crate) region_len: usize,
}

/// A channel for an instance in domain `peer`: rings laid out by `layout`
/// on granted pages plus the status page, the driver's hello on its ring,
/// the ports bound, and its file with a reserved fd (not installed).
pub(crate) fn offer(
    core: &Arc<Core>,
    peer: u16,
    layout: Layout,
    fops: *const bindings::file_operations,
    cloexec: bool,
) -> Result<Offered> {
    if !kxen::on_xen() {
        return Err(ENODEV);
    }
    if peer >= kxen::DOMID_FIRST_RESERVED {
        return Err(EINVAL);
    }
    let status = layout.len;
    let pages = layout.len / PAGE_SIZE + 1;
    let region = Arc::new(GrantedRegion::new(peer, pages)?, GFP_KERNEL)?;
    let mut grefs = KVec::with_capacity(pages, GFP_KERNEL)?;
    for g in region.grefs() {
        grefs.push(g, GFP_KERNEL)?;
    }
    let chan = core.add_channel(
        Region::Xen(region.clone()),
        layout,
        core::ptr::null(),
        Some(peer),
    )?;
    let key = chan.key;
    let ports = XenPorts::bind(&chan, peer, region, status).inspect_err(|_| discard(&chan))?;
    ports.word(DRIVER_ALIVE).store(1, Ordering::Release);
    let (port, live_port) = ports.ports();
    core.set_xen_ports(key, ports)
        .inspect_err(|_| discard(&chan))?;
    let keep = chan.clone();
    let (fd, file) =
        ksys::new_anon_file(c"[ins-xen]", fops, chan, cloexec).inspect_err(|_| discard(&keep))?;
    Ok(Offered {
        fd,
        file,
        grefs,
        port,
        live_port,
        region_len: pages * PAGE_SIZE,
    })
}

/// Takes a channel that never got its file out of the table (ports
/// closed) and waits for its work.
fn discard(chan: &Arc<Chan>) {
    chan.core.release(chan.key);
    crate::instance::flush_work(chan);
}

/// The operations of Xen channel files: `poll` (`EPOLLHUP|EPOLLERR` once
/// the module declared the channel dead) and `release` (the instance is
/// gone: declared dead, ports closed, grants ended).
pub(crate) fn xen_fops(owner: *mut bindings::module) -> bindings::file_operations {
    bindings::file_operations {
        owner,
        poll: Some(crate::instance::chan_poll),
        release: Some(crate::instance::chan_release),
        llseek: Some(bindings::noop_llseek),
        // SAFETY: all-zero is a valid `file_operations` (no operation).
        ..unsafe { core::mem::zeroed() }
    }
}
