// SPDX-License-Identifier: GPL-2.0

//! `ins_xenprobe`: the Xen primitives of the module's coming Xen transport
//! (kxen.rs), exercised against a real peer domain in the Xen lab.
//!
//! At load, in a Xen guest: reads the peer's domain id from xenstore
//! (`data/kprobe/peer` in this domain's home), grants it [`PAGES`] zeroed
//! pages (read-write), fills them with a known pattern, allocates an
//! event-channel port for it and binds a handler, then publishes
//! `data/kprobe/grefs` ("g0 g1 …"), `data/kprobe/port` and
//! `data/kprobe/state` = `offered`.
//!
//! The peer (tests/xen: `xenchan kprobe-peer`) maps the pages, checks the
//! pattern, then for each round writes a request number into page 0 and
//! raises the port; the handler copies the number out, writes it back as
//! the answer and raises the peer. Page 0: bytes 0..8 `INSKPRB1`, 8..12 the
//! peer's request (untrusted, copied out once), 12..16 our answer, 64.. the
//! pattern; the other pages: the pattern throughout.
//!
//! At unload: the handler is unbound (the port closed), every grant ended
//! (at once if the peer unmapped, else deferred to Linux, which frees the
//! page once the peer lets go), the keys removed, and the log says how
//! many events were handled and how each grant ended.

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use kernel::ffi::c_int;
use kernel::prelude::*;
use kernel::str::{CStr, CString};
use kernel::{c_str, fmt};

// Shared with ins.ko, whose Xen transport uses the contiguous regions.
#[allow(dead_code)]
#[path = "kxen.rs"]
mod kxen;

use kxen::{BoundPort, Ended, GrantedPage, PAGE_SIZE};

module! {
    type: XenProbe,
    name: "ins_xenprobe",
    author: "INS",
    description: "Grants, an event channel and xenstore from a module, against a peer domain",
    license: "GPL",
}

/// Pages granted to the peer.
const PAGES: usize = 4;
/// Page 0's magic.
const MAGIC: &[u8; 8] = b"INSKPRB1";
/// Page 0: the peer's request word, our answer word, the pattern's start.
const REQ: usize = 8;
const ANS: usize = 12;
const PATTERN_START: usize = 64;

/// The byte at `offset` of page `page`.
fn pattern(page: usize, offset: usize) -> u8 {
    (page.wrapping_mul(31).wrapping_add(offset.wrapping_mul(7)) & 0xff) as u8
}

/// What the handler reaches (through `dev_id`): page 0 and the port's irq.
struct Shared {
    page0: AtomicPtr<u8>,
    events: AtomicU32,
    last: AtomicU32,
}

static SHARED: Shared = Shared {
    page0: AtomicPtr::new(core::ptr::null_mut()),
    events: AtomicU32::new(0),
    last: AtomicU32::new(0),
};

/// The raised-port handler: copies the peer's request out, answers it,
/// raises the peer.
///
/// # Safety
///
/// Called by Linux for the irq `BoundPort::new` bound, with the `dev_id`
/// given there (`&SHARED`).
unsafe extern "C" fn on_event(irq: c_int, dev_id: *mut c_void) -> kxen::IrqReturn {
    // SAFETY: `dev_id` is `&SHARED` (bound in `init`), a static.
    let shared = unsafe { &*dev_id.cast::<Shared>() };
    let p = shared.page0.load(Ordering::Acquire);
    if !p.is_null() {
        // The word is the peer's: one atomic load, the value is only
        // echoed back (any u32 is a valid request).
        // SAFETY: page 0 is live while the port is bound (unbound before
        // the grants end), 4-aligned at REQ, and only accessed atomically.
        let req = unsafe { AtomicU32::from_ptr(p.wrapping_add(REQ).cast()) };
        let req = req.load(Ordering::Acquire);
        // SAFETY: as above, at ANS.
        let ans = unsafe { AtomicU32::from_ptr(p.wrapping_add(ANS).cast()) };
        ans.store(req, Ordering::Release);
        shared.last.store(req, Ordering::Relaxed);
        shared.events.fetch_add(1, Ordering::Relaxed);
        if let Some(port) = PORT_IRQ.get() {
            port.notify();
        }
    }
    // SAFETY: the late-EOI chip bound this irq (BoundPort::new).
    unsafe { kxen::lateeoi(irq) };
    kxen::IRQ_HANDLED
}

/// The bound port, for the handler to raise the peer (set once in `init`
/// before the state says `offered`, cleared in `drop` after unbinding).
struct PortSlot(AtomicPtr<BoundPort>);

impl PortSlot {
    fn get(&self) -> Option<&BoundPort> {
        let p = self.0.load(Ordering::Acquire);
        // SAFETY: non-null only while the `BoundPort` in the module struct
        // is alive (set after it is built, cleared before it is dropped).
        (!p.is_null()).then(|| unsafe { &*p })
    }
}

static PORT_IRQ: PortSlot = PortSlot(AtomicPtr::new(core::ptr::null_mut()));

struct XenProbe {
    pages: KVec<GrantedPage>,
    port: Option<KBox<BoundPort>>,
    peer: u16,
    /// The offer was published (init finished).
    offered: bool,
}

fn fill(pages: &[GrantedPage]) {
    for (i, g) in pages.iter().enumerate() {
        let base = g.base().as_ptr();
        let start = if i == 0 { PATTERN_START } else { 0 };
        for off in start..PAGE_SIZE {
            // SAFETY: `off` < PAGE_SIZE inside a live granted page; volatile
            // since the peer may already map it.
            unsafe { core::ptr::write_volatile(base.wrapping_add(off), pattern(i, off)) };
        }
        if i == 0 {
            for (k, b) in MAGIC.iter().enumerate() {
                // SAFETY: within page 0's first 8 bytes.
                unsafe { core::ptr::write_volatile(base.wrapping_add(k), *b) };
            }
        }
    }
}

fn read_peer() -> Result<u16> {
    let v = kxen::xs_read(c_str!("data/kprobe"), c_str!("peer"), 8)?;
    let s = core::str::from_utf8(&v).map_err(|_| EINVAL)?;
    let d: u16 = s.trim().parse().map_err(|_| EINVAL)?;
    if d >= kxen::DOMID_FIRST_RESERVED {
        return Err(EINVAL);
    }
    Ok(d)
}

impl kernel::Module for XenProbe {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        if !kxen::on_xen() {
            pr_err!("not a Xen guest\n");
            return Err(ENODEV);
        }
        let peer = read_peer().inspect_err(|e| {
            pr_err!("data/kprobe/peer: {:?}\n", e);
        })?;
        let mut me = XenProbe {
            pages: KVec::new(),
            port: None,
            peer,
            offered: false,
        };
        for _ in 0..PAGES {
            let g = GrantedPage::new(peer)?;
            me.pages.push(g, GFP_KERNEL)?;
        }
        fill(&me.pages);
        let page0 = me.pages.first().ok_or(EINVAL)?.base().as_ptr();
        SHARED.page0.store(page0, Ordering::Release);
        let dev_id = core::ptr::addr_of!(SHARED).cast_mut().cast::<c_void>();
        // SAFETY: the name is static, `dev_id` points at a static, and
        // `on_event` only touches page 0 (published above, live until the
        // port is dropped first in `drop`).
        let port = unsafe { BoundPort::new(peer, on_event, c_str!("ins-xenprobe"), dev_id) }?;
        let port = KBox::new(port, GFP_KERNEL)?;
        PORT_IRQ
            .0
            .store(core::ptr::from_ref(&*port).cast_mut(), Ordering::Release);
        let port_no = port.port();
        me.port = Some(port);

        let mut grefs = KVec::new();
        for (i, g) in me.pages.iter().enumerate() {
            let s = CString::try_from_fmt(fmt!("{}{}", if i == 0 { "" } else { " " }, g.gref()))?;
            grefs.extend_from_slice(s.as_bytes(), GFP_KERNEL)?;
        }
        grefs.push(0, GFP_KERNEL)?;
        let grefs = CStr::from_bytes_with_nul(&grefs).map_err(|_| EINVAL)?;
        kxen::xs_write(c_str!("data/kprobe"), c_str!("grefs"), grefs)?;
        let p = CString::try_from_fmt(fmt!("{}", port_no))?;
        kxen::xs_write(c_str!("data/kprobe"), c_str!("port"), &p)?;
        kxen::xs_write(c_str!("data/kprobe"), c_str!("state"), c_str!("offered"))?;
        me.offered = true;
        pr_info!(
            "offered {} pages ({}) and port {} to dom{}\n",
            PAGES,
            grefs.to_str().unwrap_or("?"),
            port_no,
            peer
        );
        Ok(me)
    }
}

impl Drop for XenProbe {
    fn drop(&mut self) {
        // The handler first (unbinding waits for a running one), so
        // nothing touches the pages while they are given back.
        PORT_IRQ.0.store(core::ptr::null_mut(), Ordering::Release);
        drop(self.port.take());
        SHARED.page0.store(core::ptr::null_mut(), Ordering::Release);
        let (mut at_once, mut deferred) = (0, 0);
        for g in core::mem::replace(&mut self.pages, KVec::new()) {
            match g.end() {
                Ended::AtOnce => at_once += 1,
                Ended::Deferred => deferred += 1,
            }
        }
        let _ = kxen::xs_rm(c_str!("data"), c_str!("kprobe"));
        pr_info!(
            "{}: {} events from dom{} handled (last request {}); grants ended: {} at once, {} deferred\n",
            if self.offered {
                "unloaded"
            } else {
                "init failed, released"
            },
            SHARED.events.load(Ordering::Relaxed),
            self.peer,
            SHARED.last.load(Ordering::Relaxed),
            at_once,
            deferred
        );
    }
}
