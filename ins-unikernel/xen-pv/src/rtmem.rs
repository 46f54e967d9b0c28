//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` for the image
//! (feature `rt`): on `x86_64-unknown-linux-gnu` the compiler calls them
//! and libc normally provides them. Written with x86 string instructions
//! so the compiler cannot turn them back into calls to themselves.
#![allow(unsafe_code)]

use core::arch::asm;

/// Copies `n` bytes from `src` to `dst` (non-overlapping).
///
/// # Safety
///
/// As C's `memcpy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller passes `n` valid bytes at both pointers; rep
    // movsb copies forward (DF is clear per the ABI).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// Copies `n` bytes from `src` to `dst`; the ranges may overlap.
///
/// # Safety
///
/// As C's `memmove`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n == 0 {
        return dst;
    }
    if dst.addr() <= src.addr() || dst.addr() >= src.addr() + n {
        // SAFETY: forward copy is correct when dst is below src or the
        // ranges do not overlap; the caller passes valid ranges.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: backward copy from the last byte (DF set, then cleared again
    // as the ABI requires); the caller passes valid ranges.
    unsafe {
        asm!("std", "rep movsb", "cld", inout("rcx") n => _,
             inout("rdi") dst.wrapping_add(n - 1) => _, inout("rsi") src.wrapping_add(n - 1) => _,
             options(nostack));
    }
    dst
}

/// Sets `n` bytes at `dst` to `c`.
///
/// # Safety
///
/// As C's `memset`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller passes `n` valid bytes at `dst`.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// Compares `n` bytes.
///
/// # Safety
///
/// As C's `memcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let left: usize;
    // SAFETY: the caller passes `n` valid bytes at both pointers; repe
    // cmpsb stops after the first differing byte (or after n bytes).
    unsafe {
        asm!("repe cmpsb", inout("rcx") n => left, inout("rsi") a => _, inout("rdi") b => _,
             options(nostack, readonly));
    }
    // the byte pair that stopped the scan is at index n - left - 1
    let i = n - left - 1;
    // SAFETY: i < n, so a + i is in bounds and readable.
    let x = unsafe { a.wrapping_add(i).read() };
    // SAFETY: i < n, so b + i is in bounds and readable.
    let y = unsafe { b.wrapping_add(i).read() };
    i32::from(x) - i32::from(y)
}

/// Compares `n` bytes for equality (0 when equal).
///
/// # Safety
///
/// As C's `bcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// The prebuilt `alloc` (built for panic=unwind) has landing pads that
/// call `_Unwind_Resume`. The image is built with panic=abort and its
/// panic handler never returns, so no unwinding ever starts and this is
/// unreachable; should it be reached anyway, the domain crashes.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::hypercall::shutdown(crate::abi::sched::CRASH)
}
