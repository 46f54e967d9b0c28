//! What granted and mapped pages share: the shared mapping of a range of
//! the device's pages, and the unmap notification request.
//!
//! Invariants: a [`Mapping`] is exactly one `mmap` of `len` bytes made by
//! the kernel (null hint), unmapped exactly once, on drop; the owner drops
//! it before releasing the pages (`DEALLOC_GREF` / `UNMAP_GRANT_REF`),
//! which the kernel requires.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use ins_xen::Port;
use rustix::mm::{MapFlags, ProtFlags};

use super::ioctl;

/// A shared read-write mapping of `len` bytes of a device at `index`.
#[derive(Debug)]
pub(super) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `dev` at offset `index` (as the kernel
    /// returned it for pages it prepared).
    pub(super) fn new(dev: &File, index: u64, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint),
        // so it overlaps nothing Rust owns; `index` and `len` describe
        // pages the device prepared for exactly this mapping.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                dev,
                index,
            )
        }?;
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Mapping { base, len })
    }

    /// First byte.
    pub(super) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Length in bytes.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`, unmapped only here; no
        // references into it exist (only volatile/atomic accesses through
        // views that are gone when their owner drops).
        let r = unsafe { rustix::mm::munmap(self.base.as_ptr().cast::<c_void>(), self.len) };
        if let Err(e) = r {
            tracing::error!("munmap of xen pages failed: {e}");
        }
    }
}

/// Asks the device (`request`: gntalloc's or gntdev's `SET_UNMAP_NOTIFY`)
/// to zero the byte at `offset` of the pages at `index` and send an event
/// on `port` when this side lets go of them.
pub(super) fn set_unmap_notify(
    dev: &File,
    request: libc::c_ulong,
    index: u64,
    len: usize,
    offset: usize,
    port: Port,
) -> io::Result<()> {
    if offset >= len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "offset outside the pages",
        ));
    }
    let at = ioctl::u64_words(index + offset as u64);
    let mut arg = [
        at[0],
        at[1],
        ioctl::UNMAP_NOTIFY_CLEAR_BYTE | ioctl::UNMAP_NOTIFY_SEND_EVENT,
        port.0,
    ];
    ioctl::call(dev.as_fd(), request, &mut arg).map(drop)
}

/// Opens a grant device read-write, close-on-exec.
pub(super) fn open(path: &str) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}
