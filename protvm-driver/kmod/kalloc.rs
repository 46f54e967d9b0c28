// SPDX-License-Identifier: GPL-2.0

//! The allocator entry points of the `alloc` crate, over the kernel's
//! `kvrealloc` (`kernel::alloc::allocator::KVmalloc`: kmalloc, falling back
//! to vmalloc for large sizes).
//!
//! Linux 6.12 does not build `alloc`; the module builds it from rust-src
//! (build-deps.sh) so that `driver-core` (BTreeMap, VecDeque, Vec) runs
//! unchanged. A normal Rust program gets these symbols from the allocator
//! shim rustc generates for its final link; a kernel module is linked by
//! Kbuild from objects, so the module defines them itself (as Linux did
//! before 6.13). They must match the declarations in rustc 1.85's
//! `alloc::alloc` exactly (names, unmangled, Rust ABI); a rustc update
//! changes the kernel cache key and the build fails loudly if they differ.
//!
//! Invariants:
//! * Memory is allocated with GFP_KERNEL: callers are in process context
//!   and may sleep (never under a spinlock).
//! * Allocation failure returns null to `alloc`; the collections' infallible
//!   methods (`push`, `insert`) then call [`__rust_alloc_error_handler`],
//!   which cannot return: it is the one panic path of the module, taken only
//!   if a GFP_KERNEL allocation fails (README.md, "alloc").

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use kernel::alloc::allocator::KVmalloc;
use kernel::alloc::flags::{GFP_KERNEL, __GFP_ZERO};
use kernel::alloc::{Allocator, Flags};
use kernel::prelude::*;

fn alloc_with(size: usize, align: usize, flags: Flags) -> *mut u8 {
    let Ok(layout) = Layout::from_size_align(size, align) else {
        return ptr::null_mut();
    };
    match KVmalloc::alloc(layout, flags) {
        Ok(p) => p.as_ptr().cast(),
        Err(_) => ptr::null_mut(),
    }
}

/// `alloc`'s allocation entry point.
#[no_mangle]
#[allow(clippy::no_mangle_with_rust_abi)]
pub(crate) extern "Rust" fn __rust_alloc(size: usize, align: usize) -> *mut u8 {
    alloc_with(size, align, GFP_KERNEL)
}

/// `alloc`'s zeroed allocation entry point.
#[no_mangle]
#[allow(clippy::no_mangle_with_rust_abi)]
pub(crate) extern "Rust" fn __rust_alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    alloc_with(size, align, GFP_KERNEL | __GFP_ZERO)
}

/// `alloc`'s deallocation entry point.
///
/// # Safety
///
/// `ptr` was returned by [`__rust_alloc`], [`__rust_alloc_zeroed`] or
/// [`__rust_realloc`] with this `size` and `align`, and is not used again.
#[no_mangle]
#[allow(clippy::no_mangle_with_rust_abi)]
pub(crate) unsafe extern "Rust" fn __rust_dealloc(ptr: *mut u8, size: usize, align: usize) {
    let (Some(p), Ok(layout)) = (NonNull::new(ptr), Layout::from_size_align(size, align)) else {
        return;
    };
    // SAFETY: by this function's contract `p` came from `KVmalloc` with
    // `layout` and is not used after this call.
    unsafe { KVmalloc::free(p, layout) };
}

/// `alloc`'s reallocation entry point.
///
/// # Safety
///
/// `ptr` was returned by one of these functions with `old_size` and
/// `align`; on success it must not be used again (the result replaces it).
#[no_mangle]
#[allow(clippy::no_mangle_with_rust_abi)]
pub(crate) unsafe extern "Rust" fn __rust_realloc(
    ptr: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    let (Ok(old), Ok(new)) = (
        Layout::from_size_align(old_size, align),
        Layout::from_size_align(new_size, align),
    ) else {
        return ptr::null_mut();
    };
    // SAFETY: by this function's contract `ptr` came from `KVmalloc` with
    // `old` (or is null, which `realloc` treats as a fresh allocation).
    match unsafe { KVmalloc::realloc(NonNull::new(ptr), new, old, GFP_KERNEL) } {
        Ok(p) => p.as_ptr().cast(),
        Err(_) => ptr::null_mut(),
    }
}

/// Called by `alloc` when an infallible allocation failed.
#[no_mangle]
#[allow(clippy::no_mangle_with_rust_abi)]
pub(crate) extern "Rust" fn __rust_alloc_error_handler(size: usize, align: usize) -> ! {
    pr_emerg!("out of memory: {} bytes aligned to {}\n", size, align);
    panic!("ins: allocation failure in an infallible collection method");
}

/// Read by `alloc`'s default OOM handler (unused here, but linked).
#[no_mangle]
pub(crate) static __rust_alloc_error_handler_should_panic: u8 = 0;

/// Read by `alloc` to check that an allocator shim exists.
#[no_mangle]
pub(crate) static __rust_no_alloc_shim_is_unstable: u8 = 0;
