// SPDX-License-Identifier: GPL-2.0

//! [`KRegion`]: kernel memory that rings live in.
//!
//! Invariants: `ptr` is a live `Kmalloc` allocation of `layout` (page
//! aligned, zeroed when made) until drop; only `ins_protocol`'s
//! `RegionView` (volatile and atomic accesses) touches its bytes, never a
//! Rust reference, because a peer may write it at any time.

use core::alloc::Layout;
use core::ptr::NonNull;

use ins_protocol::region::SharedRegion;
use kernel::alloc::allocator::Kmalloc;
use kernel::alloc::flags::{GFP_KERNEL, __GFP_ZERO};
use kernel::alloc::Allocator;
use kernel::prelude::*;

/// A zeroed, page-aligned kmalloc'd byte region.
pub(crate) struct KRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl KRegion {
    /// Allocates `len` zeroed bytes aligned to 4096 (kmalloc pads the size
    /// to a multiple of the alignment, which makes the object aligned).
    pub(crate) fn new(len: usize) -> Result<KRegion> {
        let layout = Layout::from_size_align(len, 4096).map_err(|_| EINVAL)?;
        let p = Kmalloc::alloc(layout, GFP_KERNEL | __GFP_ZERO).map_err(|_| ENOMEM)?;
        Ok(KRegion {
            ptr: p.cast(),
            layout,
        })
    }
}

impl Drop for KRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr` is a live `Kmalloc` allocation of `layout` (type
        // invariant) and nothing uses it after drop.
        unsafe { Kmalloc::free(self.ptr, self.layout) };
    }
}

// SAFETY: the allocation stays mapped until drop, is page aligned (≥ 64),
// `len()` bytes long, and is only accessed through `RegionView`.
unsafe impl SharedRegion for KRegion {
    fn base(&self) -> NonNull<u8> {
        self.ptr
    }
    fn len(&self) -> usize {
        self.layout.size()
    }
}

// SAFETY: the region is plain memory owned by this value; concurrent access
// goes through atomics/volatile only (SharedRegion's contract).
unsafe impl Send for KRegion {}
// SAFETY: as above.
unsafe impl Sync for KRegion {}
