//! Shared byte regions.
//!
//! A [`SharedRegion`] is memory that another process or domain maps too and
//! may write at any moment. This module is the only place in the crate that
//! touches such memory, and it never forms a Rust reference (`&`/`&mut`) into
//! it: every access is a bounds-checked volatile copy or an atomic operation
//! on an aligned `u32`. Anything read here is the peer's claim, to be copied
//! out and validated by the caller (Xen XSA-155: copy, then validate).
//!
//! Invariants kept by [`RegionView`]:
//! * every access is checked against the region's length before the pointer
//!   is formed, so no offset or length the peer wrote can reach outside it;
//! * atomic accesses are 4-byte aligned (checked, not assumed);
//! * the region outlives the view (the view holds the region).
#![allow(unsafe_code)]

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

/// Memory shared with an untrusted peer.
///
/// # Safety
///
/// Implementors guarantee that `base()` points to `len()` bytes that stay
/// mapped, readable and writable for as long as the value (or any clone of
/// it) lives, that `base()` is aligned to at least 64 bytes, and that the
/// memory is never accessed through Rust references by this process (only
/// volatile and atomic operations, as [`RegionView`] does).
pub unsafe trait SharedRegion {
    /// First byte of the region.
    fn base(&self) -> NonNull<u8>;
    /// Length of the region in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// SAFETY: a shared reference keeps the referent (and so its mapping) alive
// for the reference's lifetime; the guarantees are the referent's.
unsafe impl<T: SharedRegion + ?Sized> SharedRegion for &T {
    fn base(&self) -> NonNull<u8> {
        (**self).base()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
}

#[cfg(feature = "alloc")]
// SAFETY: the Arc keeps the referent (and so its mapping) alive as long as
// any clone lives; the guarantees are the referent's.
unsafe impl<T: SharedRegion + ?Sized> SharedRegion for alloc::sync::Arc<T> {
    fn base(&self) -> NonNull<u8> {
        (**self).base()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
}

/// An access out of the region's bounds or misaligned: always a bug in the
/// caller's arithmetic or a hostile value that was not validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds;

impl core::fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("access outside the shared region")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for OutOfBounds {}

/// Checked volatile and atomic access to a [`SharedRegion`].
#[derive(Clone)]
pub struct RegionView<R> {
    region: R,
}

impl<R: SharedRegion> RegionView<R> {
    /// Wraps a region.
    pub fn new(region: R) -> Self {
        Self { region }
    }

    /// The wrapped region.
    pub fn region(&self) -> &R {
        &self.region
    }

    /// Length of the region.
    pub fn len(&self) -> usize {
        self.region.len()
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.region.is_empty()
    }

    fn check(&self, offset: usize, len: usize) -> Result<*mut u8, OutOfBounds> {
        let end = offset.checked_add(len).ok_or(OutOfBounds)?;
        if end > self.region.len() {
            return Err(OutOfBounds);
        }
        // SAFETY: offset + len <= region length, so the resulting pointer is
        // within (or one past the end of) the region's allocation.
        Ok(unsafe { self.region.base().as_ptr().add(offset) })
    }

    fn atomic(&self, offset: usize) -> Result<&AtomicU32, OutOfBounds> {
        if !offset.is_multiple_of(4) {
            return Err(OutOfBounds);
        }
        let ptr = self.check(offset, 4)?;
        // SAFETY: `ptr` is in bounds for 4 bytes and 4-byte aligned (the base
        // is 64-byte aligned and offset is a multiple of 4). AtomicU32 has
        // the size and alignment of u32, and atomics are the sanctioned way
        // to share memory that another thread or process writes
        // concurrently; the reference lives no longer than `self`, which
        // keeps the mapping alive.
        Ok(unsafe { AtomicU32::from_ptr(ptr.cast::<u32>()) })
    }

    /// Atomically loads the little-endian `u32` at `offset`.
    pub fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        Ok(u32::from_le(self.atomic(offset)?.load(order)))
    }

    /// Atomically stores `value` as a little-endian `u32` at `offset`.
    pub fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        self.atomic(offset)?.store(value.to_le(), order);
        Ok(())
    }

    /// Copies `dst.len()` bytes out of the region, starting at `offset`.
    ///
    /// Volatile because the peer may write concurrently; a torn or changing
    /// value is acceptable, since the caller validates the private copy.
    /// Aligned 8-byte words are copied as words, the rest byte by byte.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        let src = self.check(offset, dst.len())?;
        let mut i = 0;
        while i < dst.len() {
            let p = src.wrapping_add(i);
            if p.addr() % 8 == 0 && dst.len() - i >= 8 {
                // SAFETY: `p` is in bounds for 8 bytes (checked for dst.len()
                // bytes from `src`, and i + 8 <= dst.len()) and 8-aligned.
                let word = unsafe { p.cast::<u64>().read_volatile() };
                dst[i..i + 8].copy_from_slice(&word.to_ne_bytes());
                i += 8;
            } else {
                // SAFETY: `p` is in bounds (i < dst.len()).
                dst[i] = unsafe { p.read_volatile() };
                i += 1;
            }
        }
        Ok(())
    }

    /// Copies `src` into the region, starting at `offset`.
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        let dst = self.check(offset, src.len())?;
        let mut i = 0;
        while i < src.len() {
            let p = dst.wrapping_add(i);
            if p.addr() % 8 == 0 && src.len() - i >= 8 {
                let mut word = [0u8; 8];
                word.copy_from_slice(&src[i..i + 8]);
                // SAFETY: `p` is in bounds for 8 bytes (checked for src.len()
                // bytes from `dst`, and i + 8 <= src.len()) and 8-aligned.
                unsafe { p.cast::<u64>().write_volatile(u64::from_ne_bytes(word)) };
                i += 8;
            } else {
                // SAFETY: `p` is in bounds (i < src.len()).
                unsafe { p.write_volatile(src[i]) };
                i += 1;
            }
        }
        Ok(())
    }

    /// Sets `len` bytes starting at `offset` to zero.
    pub fn zero(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        let dst = self.check(offset, len)?;
        for i in 0..len {
            // SAFETY: `dst + i` is in bounds (checked for len bytes).
            unsafe { dst.wrapping_add(i).write_volatile(0) };
        }
        Ok(())
    }
}

/// A region on the heap, for tests and for both ends of a ring inside one
/// process.
#[cfg(feature = "alloc")]
pub struct HeapRegion {
    words: alloc::boxed::Box<[core::cell::UnsafeCell<CacheLine>]>,
}

/// One 64-byte, 64-byte-aligned line of a [`HeapRegion`].
#[cfg(feature = "alloc")]
#[repr(C, align(64))]
struct CacheLine([u8; 64]);

#[cfg(feature = "alloc")]
impl HeapRegion {
    /// A zeroed region of at least `len` bytes (rounded up to 64).
    pub fn new(len: usize) -> Self {
        let lines = len.div_ceil(64).max(1);
        let words = (0..lines)
            .map(|_| core::cell::UnsafeCell::new(CacheLine([0; 64])))
            .collect();
        Self { words }
    }
}

#[cfg(feature = "alloc")]
// SAFETY: the memory is only accessed through volatile and atomic
// operations (the SharedRegion contract), so sharing across threads is the
// same as sharing with another process.
unsafe impl Sync for HeapRegion {}

#[cfg(feature = "alloc")]
// SAFETY: the boxed slice stays allocated as long as the HeapRegion lives;
// its elements are `align(64)` lines, so the base is 64-byte aligned. The
// contents are only reached through RegionView.
unsafe impl SharedRegion for HeapRegion {
    fn base(&self) -> NonNull<u8> {
        NonNull::new(self.words.as_ptr().cast_mut().cast::<u8>()).expect("boxed slice is non-null")
    }
    fn len(&self) -> usize {
        self.words.len() * 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let region = HeapRegion::new(128);
        let view = RegionView::new(&region);
        assert_eq!(view.len(), 128);
        let mut buf = [0u8; 8];
        assert!(view.read(120, &mut buf).is_ok());
        assert_eq!(view.read(121, &mut buf), Err(OutOfBounds));
        assert_eq!(view.read(usize::MAX, &mut buf), Err(OutOfBounds));
        assert_eq!(view.write(125, &buf), Err(OutOfBounds));
        assert_eq!(view.load_u32(2, Ordering::Relaxed), Err(OutOfBounds));
        assert_eq!(view.load_u32(128, Ordering::Relaxed), Err(OutOfBounds));
        assert!(view.store_u32(124, 7, Ordering::Relaxed).is_ok());
        assert_eq!(view.load_u32(124, Ordering::Relaxed), Ok(7));
    }

    #[test]
    fn unaligned_copies_round_trip() {
        let region = HeapRegion::new(256);
        let view = RegionView::new(&region);
        let data: [u8; 77] = core::array::from_fn(|i| i as u8 ^ 0x5a);
        for offset in 0..16 {
            view.zero(0, 256).unwrap();
            view.write(offset, &data).unwrap();
            let mut out = [0u8; 77];
            view.read(offset, &mut out).unwrap();
            assert_eq!(out, data, "offset {offset}");
            let mut before = [1u8; 1];
            if offset > 0 {
                view.read(offset - 1, &mut before).unwrap();
                assert_eq!(before, [0], "write spilled before offset {offset}");
            }
            view.read(offset + 77, &mut before).unwrap();
            assert_eq!(before, [0], "write spilled after offset {offset}");
        }
    }

    #[test]
    fn copies_round_trip() {
        let region = HeapRegion::new(64);
        let view = RegionView::new(&region);
        view.write(3, b"hello").unwrap();
        let mut out = [0u8; 5];
        view.read(3, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        view.zero(3, 5).unwrap();
        view.read(3, &mut out).unwrap();
        assert_eq!(out, [0; 5]);
    }
}
