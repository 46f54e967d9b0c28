//! Memory this domain shares with Xen or another domain.
//!
//! A [`Mapped`] names page-aligned memory that someone else may write at
//! any moment (shared_info, the console and xenstore rings, grant-table
//! frames, a peer's granted page). It implements
//! [`ins_protocol::region::SharedRegion`], so all access goes through
//! [`RegionView`]'s bounds-checked volatile and atomic operations, plus the
//! atomic read-modify-write operations below. No `&`/`&mut` to the bytes is
//! ever formed.
#![allow(unsafe_code)]

use core::ptr::NonNull;
use core::sync::atomic::AtomicU32;

use ins_protocol::region::{RegionView, SharedRegion};

use crate::abi::PAGE_SIZE;

/// Page-aligned memory shared with Xen or a peer domain.
#[derive(Clone, Copy, Debug)]
pub struct Mapped {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the memory is only reached through volatile and atomic
// operations, which may be issued from any thread.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Names `pages` pages starting at virtual address `va`.
    ///
    /// # Safety
    ///
    /// `va` must be page-aligned and the pages mapped readable and writable
    /// for as long as this value or a copy of it is used, and never reached
    /// through Rust references.
    pub unsafe fn new(va: usize, pages: usize) -> Mapped {
        debug_assert!(va.is_multiple_of(PAGE_SIZE) && va != 0);
        Mapped {
            // SAFETY: `va` is non-zero (checked above in debug builds, a
            // contract of the caller always).
            base: unsafe { NonNull::new_unchecked(va as *mut u8) },
            len: pages * PAGE_SIZE,
        }
    }

    /// The first byte's virtual address.
    pub fn va(&self) -> usize {
        self.base.as_ptr().addr()
    }

    /// Checked volatile access.
    pub fn view(&self) -> RegionView<Mapped> {
        RegionView::new(*self)
    }

    /// The aligned `u32` at `offset` as an atomic, for read-modify-write
    /// operations (event bits, grant flags). `None` when out of bounds or
    /// misaligned.
    pub fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        if !offset.is_multiple_of(4) || offset.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: offset + 4 <= len, so the pointer stays in the mapping.
        let p = unsafe { self.base.as_ptr().add(offset) };
        // SAFETY: `p` is 4-aligned (page-aligned base, offset multiple of
        // 4) and valid for 4 bytes while the mapping lives (the contract of
        // `new`); atomics are the sanctioned way to share memory that
        // another agent writes concurrently.
        Some(unsafe { AtomicU32::from_ptr(p.cast::<u32>()) })
    }
}

// SAFETY: `new`'s contract: `len` bytes at `base`, page-aligned (so
// 64-byte aligned), mapped while the value is used, never referenced.
unsafe impl SharedRegion for Mapped {
    fn base(&self) -> NonNull<u8> {
        self.base
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// A zeroed, page-aligned page of this domain's heap, for memory shared
/// with a peer (granted ring pages, packet buffers). Zeroed so that no
/// stale heap data reaches the peer (XSA-403).
///
/// Dropping it frees the page: only drop it once no peer can reach it any
/// more (its grant ended; see [`crate::gnttab::GrantTable::end`]). Owners
/// that cannot end a grant keep the page alive (leak it) instead.
#[derive(Debug)]
pub struct PageBox {
    page: Mapped,
}

// SAFETY: the page is only reached through `Mapped`'s volatile and atomic
// operations.
unsafe impl Send for PageBox {}

const PAGE_LAYOUT: core::alloc::Layout =
    match core::alloc::Layout::from_size_align(PAGE_SIZE, PAGE_SIZE) {
        Ok(l) => l,
        Err(_) => panic!("page layout"),
    };

impl PageBox {
    /// Allocates a zeroed page; `None` when the heap is exhausted.
    pub fn new() -> Option<PageBox> {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(PAGE_LAYOUT) };
        if p.is_null() {
            return None;
        }
        // SAFETY: a live, page-aligned, page-sized allocation owned by this
        // value until drop; only reached through `Mapped`.
        let page = unsafe { Mapped::new(p.addr(), 1) };
        Some(PageBox { page })
    }

    /// The page as shared memory.
    pub fn mapped(&self) -> Mapped {
        self.page
    }

    /// Its virtual address.
    pub fn va(&self) -> usize {
        self.page.va()
    }

    /// Gives up ownership without freeing (a page a peer may still map).
    pub fn leak(self) {
        core::mem::forget(self);
    }
}

impl Drop for PageBox {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with PAGE_LAYOUT and not freed since.
        unsafe { alloc::alloc::dealloc(self.page.va() as *mut u8, PAGE_LAYOUT) };
    }
}
