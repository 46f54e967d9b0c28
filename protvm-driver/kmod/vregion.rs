// SPDX-License-Identifier: GPL-2.0

//! [`VRegion`]: vmalloc'd pages that a channel's rings live in and that an
//! instance process maps (`mmap` of its channel file, [`VRegion::map_into`]).
//!
//! Invariants: `ptr` is a live, zeroed `Vmalloc` allocation of `len` bytes
//! (a multiple of the page size, page aligned as vmalloc memory always is)
//! until drop; this side touches its bytes only through `ins_protocol`'s
//! `RegionView` (volatile and atomic accesses), never through a Rust
//! reference, because the instance writes it at any time. Each page a user
//! mapping holds has its own page reference (`vm_insert_page`), so freeing
//! the allocation while a mapping exists would not free the page under it;
//! in practice the mapping holds the channel file and so the region.

use core::alloc::Layout;
use core::ptr::NonNull;

use ins_protocol::region::SharedRegion;
use kernel::alloc::allocator::Vmalloc;
use kernel::alloc::flags::{GFP_KERNEL, __GFP_ZERO};
use kernel::alloc::Allocator;
use kernel::bindings;
use kernel::prelude::*;

/// Page size of the mapping (x86-64).
pub(crate) const PAGE: usize = 4096;

/// A zeroed, page-aligned vmalloc'd byte region, mappable into user space.
pub(crate) struct VRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl VRegion {
    /// Allocates `len` zeroed bytes (`len` a non-zero multiple of [`PAGE`]).
    pub(crate) fn new(len: usize) -> Result<VRegion> {
        if len == 0 || len % PAGE != 0 {
            return Err(EINVAL);
        }
        let layout = Layout::from_size_align(len, PAGE).map_err(|_| EINVAL)?;
        let p = Vmalloc::alloc(layout, GFP_KERNEL | __GFP_ZERO).map_err(|_| ENOMEM)?;
        Ok(VRegion {
            ptr: p.cast(),
            layout,
        })
    }

    /// Maps every page into `vma`, which must be a shared mapping of
    /// exactly the region's length at offset 0 (else `EINVAL`).
    ///
    /// # Safety
    ///
    /// `vma` is the area the VFS passed to `f_op->mmap` (mmap lock held
    /// for writing, not yet visible to other threads).
    pub(crate) unsafe fn map_into(
        &self,
        vma: *mut bindings::vm_area_struct,
        vm_ops: *const bindings::vm_operations_struct,
    ) -> Result {
        // SAFETY: `vma` is valid and not yet visible to other threads
        // (caller's contract): this is the only reference to it, and it
        // ends before `vm_insert_page` below.
        let area = unsafe { &mut *vma };
        // SAFETY: the range is the first union member, set for every area.
        let range = unsafe { area.__bindgen_anon_1.__bindgen_anon_1 };
        // SAFETY: `vm_flags` overlays `__vm_flags`, both plain integers.
        let flags = unsafe { area.__bindgen_anon_2.vm_flags };
        let start = range.vm_start;
        let len = range.vm_end.checked_sub(start).ok_or(EINVAL)?;
        if area.vm_pgoff != 0
            || len != self.layout.size()
            || flags & bindings::VM_SHARED as usize == 0
        {
            return Err(EINVAL);
        }
        // Not a growable or dumpable area (the area is not visible to
        // other threads yet, so this is what vm_flags_set() does without
        // the per-VMA lock it does not need here), and not anonymous (a
        // null `vm_ops` would make the VM treat it as one). `vm_ops` lives
        // as long as the module, which every mapping pins (it holds the
        // file).
        area.__bindgen_anon_2.__vm_flags =
            flags | (bindings::VM_DONTEXPAND | bindings::VM_DONTDUMP) as usize;
        area.vm_ops = vm_ops;
        let mut off = 0usize;
        while off < len {
            let addr = self.ptr.as_ptr().wrapping_add(off);
            // SAFETY: `addr` is inside our live vmalloc allocation.
            let page = unsafe { bindings::vmalloc_to_page(addr.cast()) };
            if page.is_null() {
                return Err(EFAULT);
            }
            // SAFETY: `page` is an order-0 page of a live vmalloc
            // allocation; the address is inside the area; the mmap lock
            // is held. The mapping takes its own page reference.
            let r = unsafe { bindings::vm_insert_page(vma, start + off, page) };
            if r != 0 {
                return Err(Error::from_errno(r));
            }
            off += PAGE;
        }
        Ok(())
    }
}

impl Drop for VRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr` is a live `Vmalloc` allocation of `layout` (type
        // invariant) and nothing uses it after drop.
        unsafe { Vmalloc::free(self.ptr, self.layout) };
    }
}

// SAFETY: the allocation stays mapped until drop, is page aligned (≥ 64),
// `len()` bytes long, and is only accessed through `RegionView`.
unsafe impl SharedRegion for VRegion {
    fn base(&self) -> NonNull<u8> {
        self.ptr
    }
    fn len(&self) -> usize {
        self.layout.size()
    }
}

// SAFETY: the region is plain memory owned by this value; concurrent access
// goes through atomics/volatile only (SharedRegion's contract).
unsafe impl Send for VRegion {}
// SAFETY: as above.
unsafe impl Sync for VRegion {}
