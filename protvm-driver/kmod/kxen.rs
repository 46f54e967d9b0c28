// SPDX-License-Identifier: GPL-2.0

//! Xen from a module: grant tables, event channels and xenstore through the
//! C functions Linux 6.12 exports (none of them is wrapped or bound by its
//! `kernel` crate), declared here by hand from their headers, plus the one
//! hypercall the exports do not cover (an unbound port for another domain).
//!
//! * [`GrantedPage`]: a zeroed page granted to one domain; dropping it
//!   revokes the grant and frees the page, at once when the peer has
//!   unmapped it, else through Linux's deferred list (which retries and
//!   frees it once the peer lets go: a peer keeping the page mapped never
//!   makes us free a page it can still write).
//! * [`BoundPort`]: an event-channel port allocated for one domain
//!   (`EVTCHNOP_alloc_unbound`) and bound to an interrupt handler with the
//!   "late EOI" chip, so that a peer that floods events is throttled by
//!   Linux rather than storming this CPU; dropping it unbinds the handler
//!   and closes the port.
//! * [`xs_read`], [`xs_write`], [`xs_rm`]: xenstore paths relative to this
//!   domain's home (`/local/domain/<self>/`), outside a transaction.
//!
//! Everything a peer writes into a granted page is untrusted: callers read
//! it with volatile or atomic loads, copy it out and validate it.

use core::ffi::c_void;
use core::ptr::NonNull;

use kernel::bindings;
use kernel::ffi::{c_char, c_int, c_long, c_uint, c_ulong};
use kernel::prelude::*;
use kernel::str::CStr;

/// Bytes in a page (x86-64).
pub(crate) const PAGE_SIZE: usize = 4096;

/// `xmaddr_t` (arch/x86/include/asm/xen/page.h): a machine address.
#[repr(C)]
#[derive(Clone, Copy)]
struct XMaddr {
    maddr: u64,
}

/// `struct xenbus_transaction` (include/xen/xenbus.h); id 0 is `XBT_NIL`.
#[repr(C)]
#[derive(Clone, Copy)]
struct XenbusTransaction {
    id: c_uint,
}

const XBT_NIL: XenbusTransaction = XenbusTransaction { id: 0 };

/// `struct evtchn_alloc_unbound` (include/xen/interface/event_channel.h).
#[repr(C)]
struct EvtchnAllocUnbound {
    dom: u16,
    remote_dom: u16,
    port: u32,
}

/// `DOMID_SELF` (include/xen/interface/xen.h).
const DOMID_SELF: u16 = 0x7ff0;
/// `__HYPERVISOR_event_channel_op` (include/xen/interface/xen.h).
const HYPERVISOR_EVENT_CHANNEL_OP: c_ulong = 32;
/// `EVTCHNOP_alloc_unbound` (include/xen/interface/event_channel.h).
const EVTCHNOP_ALLOC_UNBOUND: c_ulong = 6;
/// Largest port number of the 2-level and FIFO ABIs (2^17 - 1).
const PORT_MAX: u32 = (1 << 17) - 1;
/// Domain ids of real domains are below `DOMID_FIRST_RESERVED`.
pub(crate) const DOMID_FIRST_RESERVED: u16 = 0x7ff0;

/// `irqreturn_t` (include/linux/irqreturn.h).
pub(crate) type IrqReturn = c_uint;
/// `IRQ_HANDLED`.
pub(crate) const IRQ_HANDLED: IrqReturn = 1;
/// An interrupt handler (`irq_handler_t`).
pub(crate) type IrqHandler = unsafe extern "C" fn(irq: c_int, dev_id: *mut c_void) -> IrqReturn;

// `improper_ctypes`: `struct page` contains `lockdep_map` (empty in this
// configuration); only pointers to it cross.
#[allow(improper_ctypes)]
extern "C" {
    // arch/x86/xen/mmu.c (EXPORT_SYMBOL_GPL)
    fn arbitrary_virt_to_machine(vaddr: *mut c_void) -> XMaddr;
    // drivers/xen/grant-table.c (EXPORT_SYMBOL_GPL)
    fn gnttab_grant_foreign_access(domid: u16, frame: c_ulong, readonly: c_int) -> c_int;
    fn gnttab_try_end_foreign_access(gref: u32) -> c_int;
    fn gnttab_end_foreign_access(gref: u32, page: *mut bindings::page);
    // drivers/xen/events/events_base.c (EXPORT_SYMBOL_GPL)
    fn bind_evtchn_to_irqhandler_lateeoi(
        evtchn: u32,
        handler: IrqHandler,
        irqflags: c_ulong,
        devname: *const c_char,
        dev_id: *mut c_void,
    ) -> c_int;
    fn unbind_from_irqhandler(irq: c_uint, dev_id: *mut c_void);
    fn notify_remote_via_irq(irq: c_int);
    fn xen_irq_lateeoi(irq: c_uint, eoi_flags: c_uint);
    // drivers/xen/xenbus/xenbus_xs.c (EXPORT_SYMBOL_GPL)
    fn xenbus_read(
        t: XenbusTransaction,
        dir: *const c_char,
        node: *const c_char,
        len: *mut c_uint,
    ) -> *mut c_void;
    fn xenbus_write(
        t: XenbusTransaction,
        dir: *const c_char,
        node: *const c_char,
        string: *const c_char,
    ) -> c_int;
    fn xenbus_rm(t: XenbusTransaction, dir: *const c_char, node: *const c_char) -> c_int;
    // The static call every hypercall goes through since Linux 6.12
    // (arch/x86/include/asm/xen/hypercall.h: `call STATIC_CALL_TRAMP(xen_hypercall)`,
    // EXPORT_SYMBOL); not called from Rust, only named by the asm below.
    fn __SCT__xen_hypercall();
    // mm/vmalloc.c (EXPORT_SYMBOL)
    fn vm_map_ram(pages: *mut *mut bindings::page, count: c_uint, node: c_int) -> *mut c_void;
    fn vm_unmap_ram(mem: *const c_void, count: c_uint);
}

/// A two-argument hypercall, as `_hypercall2` in
/// arch/x86/include/asm/xen/hypercall.h: number in `rax`, arguments in
/// `rdi`, `rsi`, result in `rax`, through the `xen_hypercall` static call.
///
/// # Safety
///
/// Running under Xen (the static call points at a hypercall path only
/// then); `a2` is what hypercall `op` expects (here a pointer to a live
/// argument struct).
unsafe fn hypercall2(op: c_ulong, a1: c_ulong, a2: c_ulong) -> c_long {
    let ret: c_long;
    // SAFETY: the caller's contract; every caller-saved register is
    // declared clobbered (the C version clobbers rdx, r8, r10 and memory;
    // this is wider), and memory is clobbered (no `nomem`): Xen writes
    // the argument struct.
    unsafe {
        core::arch::asm!(
            "call {tramp}",
            tramp = sym __SCT__xen_hypercall,
            inlateout("rax") op => ret,
            in("rdi") a1,
            in("rsi") a2,
            clobber_abi("C"),
        );
    }
    ret
}

/// Whether this kernel runs as a Xen guest (`xen_domain_type` is not
/// `XEN_NATIVE`).
pub(crate) fn on_xen() -> bool {
    extern "C" {
        // arch/x86/xen/enlighten.c (EXPORT_SYMBOL_GPL); an enum, 0 = native.
        static xen_domain_type: c_uint;
    }
    // SAFETY: `xen_domain_type` is `__ro_after_init`: read-only by now.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(xen_domain_type)) != 0 }
}

/// A zeroed page granted read-write to one domain (type invariants: `page`
/// is a live order-0 page we own, `vaddr` its direct-map address, `gref`
/// a grant of it to the peer that we have not ended).
pub(crate) struct GrantedPage {
    page: NonNull<bindings::page>,
    vaddr: NonNull<u8>,
    gref: u32,
}

// SAFETY: the page is plain memory owned by this value (the peer's
// accesses are its own); the raw pointers are not tied to a thread.
unsafe impl Send for GrantedPage {}
// SAFETY: `&GrantedPage` only hands out the gref and the base pointer,
// whose bytes are accessed volatile/atomically by contract.
unsafe impl Sync for GrantedPage {}

/// How a grant ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The peer had unmapped: grant revoked and page freed at once.
    AtOnce,
    /// The peer still had it mapped: Linux's deferred list revokes and
    /// frees it once the peer lets go.
    Deferred,
}

impl GrantedPage {
    /// Allocates a zeroed page and grants it read-write to `peer`.
    pub(crate) fn new(peer: u16) -> Result<GrantedPage> {
        if peer >= DOMID_FIRST_RESERVED {
            return Err(EINVAL);
        }
        // SAFETY: plain allocation of one page; freed on every path below.
        let page = unsafe { bindings::alloc_pages(bindings::GFP_KERNEL | bindings::__GFP_ZERO, 0) };
        let page = NonNull::new(page).ok_or(ENOMEM)?;
        // x86-64 has no HIGHMEM: kmap_local_page() is page_address(), the
        // page's permanent direct-map address, valid while we own the page.
        // SAFETY: `page` is a live page we own.
        let vaddr = unsafe { bindings::kmap_local_page(page.as_ptr()) };
        let Some(vaddr) = NonNull::new(vaddr.cast::<u8>()) else {
            // SAFETY: `page` came from alloc_pages above and is not shared.
            unsafe { bindings::__free_pages(page.as_ptr(), 0) };
            return Err(ENOMEM);
        };
        // In a PV guest a grant names the machine frame.
        // SAFETY: `vaddr` is a mapped kernel address.
        let mfn = unsafe { arbitrary_virt_to_machine(vaddr.as_ptr().cast()) }.maddr >> 12;
        // SAFETY: grant tables are set up on Xen; `mfn` is our own frame.
        let gref = unsafe { gnttab_grant_foreign_access(peer, mfn as c_ulong, 0) };
        if gref < 0 {
            // SAFETY: not granted, so not shared: ours to free.
            unsafe { bindings::__free_pages(page.as_ptr(), 0) };
            return Err(Error::from_errno(gref));
        }
        Ok(GrantedPage {
            page,
            vaddr,
            gref: gref as u32,
        })
    }

    /// The grant reference the peer maps.
    pub(crate) fn gref(&self) -> u32 {
        self.gref
    }

    /// The page's bytes (shared with the peer: volatile or atomic access
    /// only, never a reference).
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.vaddr
    }

    /// Ends the grant and gives the page back (see [`Ended`]).
    pub(crate) fn end(self) -> Ended {
        let me = core::mem::ManuallyDrop::new(self);
        me.end_inner()
    }

    fn end_inner(&self) -> Ended {
        // SAFETY: `gref` is our live grant (type invariant).
        if unsafe { gnttab_try_end_foreign_access(self.gref) } != 0 {
            // The grant is gone and its reference freed: the page is ours.
            // SAFETY: live page we own, no longer reachable by the peer.
            unsafe { bindings::__free_pages(self.page.as_ptr(), 0) };
            Ended::AtOnce
        } else {
            // Hands the grant and our page reference to Linux, which
            // frees the page once the grant can be ended.
            // SAFETY: `gref` is still our grant; the page reference is
            // given away (not used again: `self` is being consumed).
            unsafe { gnttab_end_foreign_access(self.gref, self.page.as_ptr()) };
            Ended::Deferred
        }
    }
}

impl Drop for GrantedPage {
    fn drop(&mut self) {
        self.end_inner();
    }
}

/// Pages granted read-write to one domain, seen by this kernel as one
/// contiguous area (`vm_map_ram`), as ring memory must be (type
/// invariants: `base` maps every page of `pages`, in order, until drop).
pub(crate) struct GrantedRegion {
    pages: KVec<GrantedPage>,
    base: NonNull<u8>,
}

// SAFETY: the pages and their mapping are owned by this value; the bytes
// are accessed volatile/atomically by contract, from any thread.
unsafe impl Send for GrantedRegion {}
// SAFETY: as above.
unsafe impl Sync for GrantedRegion {}

impl GrantedRegion {
    /// `count` zeroed pages granted to `peer`, mapped contiguously.
    pub(crate) fn new(peer: u16, count: usize) -> Result<GrantedRegion> {
        let n = c_uint::try_from(count).map_err(|_| EINVAL)?;
        if count == 0 {
            return Err(EINVAL);
        }
        let mut pages = KVec::with_capacity(count, GFP_KERNEL)?;
        let mut ptrs = KVec::with_capacity(count, GFP_KERNEL)?;
        for _ in 0..count {
            // On failure the pages granted so far are dropped: nobody was
            // told their grants, so each ends at once.
            let p = GrantedPage::new(peer)?;
            ptrs.push(p.page.as_ptr(), GFP_KERNEL)?;
            pages.push(p, GFP_KERNEL)?;
        }
        // SAFETY: `ptrs` holds `count` live pages we own; the mapping is
        // undone in drop, before the pages go.
        let base = unsafe { vm_map_ram(ptrs.as_mut_ptr(), n, -1) };
        let base = NonNull::new(base.cast::<u8>()).ok_or(ENOMEM)?;
        Ok(GrantedRegion { pages, base })
    }

    /// The grant references, one per page, in order.
    pub(crate) fn grefs(&self) -> impl Iterator<Item = u32> + '_ {
        self.pages.iter().map(GrantedPage::gref)
    }

    /// Start of the contiguous mapping (shared with the peer: volatile or
    /// atomic access only).
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.pages.len() * PAGE_SIZE
    }
}

impl Drop for GrantedRegion {
    fn drop(&mut self) {
        // SAFETY: `base` is the mapping of all our pages (type invariant),
        // made with this count; nothing uses it after drop.
        unsafe { vm_unmap_ram(self.base.as_ptr().cast(), self.pages.len() as c_uint) };
        let (mut now, mut later) = (0, 0);
        for p in core::mem::take(&mut self.pages) {
            match p.end() {
                Ended::AtOnce => now += 1,
                Ended::Deferred => later += 1,
            }
        }
        pr_info!(
            "xen channel pages: grants ended: {} at once, {} deferred\n",
            now,
            later
        );
    }
}

/// An event-channel port for one peer, bound to `handler` (type
/// invariants: `irq` is bound to our port with `dev_id`, until drop).
pub(crate) struct BoundPort {
    port: u32,
    irq: c_uint,
    dev_id: *mut c_void,
}

// SAFETY: the irq number and dev_id are plain values; the functions used
// with them are callable from any thread.
unsafe impl Send for BoundPort {}
// SAFETY: as above (notify is callable concurrently).
unsafe impl Sync for BoundPort {}

impl BoundPort {
    /// Allocates a port that `peer` may bind and binds `handler` to it with
    /// the late-EOI chip: the handler must call [`lateeoi`] once done.
    ///
    /// # Safety
    ///
    /// `name` and `dev_id` stay valid until the port is dropped, and
    /// `handler` may run (in interrupt context, with `dev_id`) from now
    /// until then.
    pub(crate) unsafe fn new(
        peer: u16,
        handler: IrqHandler,
        name: &'static CStr,
        dev_id: *mut c_void,
    ) -> Result<BoundPort> {
        if peer >= DOMID_FIRST_RESERVED {
            return Err(EINVAL);
        }
        let mut op = EvtchnAllocUnbound {
            dom: DOMID_SELF,
            remote_dom: peer,
            port: 0,
        };
        // SAFETY: on Xen (callers check `on_xen`), with a live argument.
        let r = unsafe {
            hypercall2(
                HYPERVISOR_EVENT_CHANNEL_OP,
                EVTCHNOP_ALLOC_UNBOUND,
                core::ptr::addr_of_mut!(op) as c_ulong,
            )
        };
        if r < 0 {
            return Err(Error::from_errno(r as c_int));
        }
        let port = op.port;
        if port == 0 || port > PORT_MAX {
            return Err(EIO);
        }
        // SAFETY: `port` is ours and unbound; the caller keeps `name` and
        // `dev_id` valid and `handler` ready. If `request_irq` fails,
        // Linux unbinds and closes the port; if no irq could be made for
        // it at all, the port stays allocated until the domain dies (one
        // port per such failure: closing it here could close a number
        // Linux already closed and handed out again).
        let irq = unsafe {
            bind_evtchn_to_irqhandler_lateeoi(port, handler, 0, name.as_char_ptr(), dev_id)
        };
        if irq < 0 {
            return Err(Error::from_errno(irq));
        }
        Ok(BoundPort {
            port,
            irq: irq as c_uint,
            dev_id,
        })
    }

    /// The port number the peer binds to.
    pub(crate) fn port(&self) -> u32 {
        self.port
    }

    /// The interrupt bound to the port.
    pub(crate) fn irq(&self) -> c_int {
        self.irq as c_int
    }

    /// Raises the peer's side.
    pub(crate) fn notify(&self) {
        // SAFETY: `irq` is bound (type invariant).
        unsafe { notify_remote_via_irq(self.irq as c_int) };
    }
}

impl Drop for BoundPort {
    fn drop(&mut self) {
        // SAFETY: bound with this `dev_id` (type invariant); this waits for
        // a running handler, frees the irq and closes the port.
        unsafe { unbind_from_irqhandler(self.irq, self.dev_id) };
    }
}

/// Signals the end of handling an event on `irq` (late-EOI chip).
///
/// # Safety
///
/// `irq` is bound with the late-EOI chip (a [`BoundPort`]'s, from its
/// handler).
pub(crate) unsafe fn lateeoi(irq: c_int) {
    // SAFETY: the caller's contract.
    unsafe { xen_irq_lateeoi(irq as c_uint, 0) };
}

/// Whether `p` is an `ERR_PTR`.
fn is_err(p: *mut c_void) -> Option<c_int> {
    let v = p as isize;
    (-4095..0).contains(&v).then_some(v as c_int)
}

/// Reads `dir/node` (relative to this domain's home): at most `max`
/// bytes, else `E2BIG`.
pub(crate) fn xs_read(dir: &CStr, node: &CStr, max: usize) -> Result<KVec<u8>> {
    let mut len: c_uint = 0;
    // SAFETY: NUL-terminated strings and a live `len`; may sleep (process
    // context only: callers are module init/exit and ioctl paths).
    let p = unsafe { xenbus_read(XBT_NIL, dir.as_char_ptr(), node.as_char_ptr(), &mut len) };
    if let Some(e) = is_err(p) {
        return Err(Error::from_errno(e));
    }
    let len = len as usize;
    let r = if len > max {
        Err(E2BIG)
    } else {
        // SAFETY: xenbus_read returned a kmalloc'd buffer of `len` bytes
        // (plus a NUL).
        let s = unsafe { core::slice::from_raw_parts(p.cast::<u8>(), len) };
        let mut out = KVec::new();
        out.extend_from_slice(s, GFP_KERNEL)
            .map(|()| out)
            .map_err(|_| ENOMEM)
    };
    // SAFETY: the buffer is ours to free (kmalloc'd by xenbus_read).
    unsafe { bindings::kfree(p) };
    r
}

/// Writes `value` to `dir/node` (relative to this domain's home).
pub(crate) fn xs_write(dir: &CStr, node: &CStr, value: &CStr) -> Result {
    // SAFETY: NUL-terminated strings; process context.
    let r = unsafe {
        xenbus_write(
            XBT_NIL,
            dir.as_char_ptr(),
            node.as_char_ptr(),
            value.as_char_ptr(),
        )
    };
    if r < 0 {
        Err(Error::from_errno(r))
    } else {
        Ok(())
    }
}

/// Removes `dir/node` and everything under it.
pub(crate) fn xs_rm(dir: &CStr, node: &CStr) -> Result {
    // SAFETY: NUL-terminated strings; process context.
    let r = unsafe { xenbus_rm(XBT_NIL, dir.as_char_ptr(), node.as_char_ptr()) };
    if r < 0 {
        Err(Error::from_errno(r))
    } else {
        Ok(())
    }
}
