//! `MemfdRegion`: a sealed memfd mapped `MAP_SHARED`.
//!
//! Invariants:
//! * the file is sealed with `F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`
//!   before it is mapped (creator) or checked to be (receiver), and its size
//!   equals the mapped length, so no peer can truncate it under the mapping
//!   (which would turn our accesses into `SIGBUS`);
//! * the mapping lives exactly as long as the value and is only reached
//!   through [`ins_protocol::region::RegionView`] (volatile/atomic access);
//! * the base is page aligned, hence 64-byte aligned as
//!   [`SharedRegion`] requires.
//!
//! The one region here that is not a memfd is the `ins` kernel module's
//! channel file ([`MemfdRegion::map_channel_file`], [`crate::sys::kmod`]):
//! the module inserts every page of the region when it is mapped (the
//! mapping must be exactly the region's length) and never removes one, so
//! it cannot shrink under the mapping either.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use ins_protocol::region::SharedRegion;
use rustix::fs::{FileType, MemfdFlags, OFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

use super::retry;
use crate::Error;

/// A shared-memory region backed by a sealed memfd.
#[derive(Debug)]
pub struct MemfdRegion {
    fd: OwnedFd,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain shared memory accessed only through volatile
// and atomic operations (the SharedRegion contract); the pointer is not tied
// to a thread.
unsafe impl Send for MemfdRegion {}
// SAFETY: as above; concurrent access from several threads is the same as
// concurrent access from the peer process, which the contract already covers.
unsafe impl Sync for MemfdRegion {}

impl MemfdRegion {
    /// Seals a region must carry before we map one we did not create.
    pub const REQUIRED_SEALS: SealFlags = SealFlags::GROW
        .union(SealFlags::SHRINK)
        .union(SealFlags::SEAL);

    /// Creates a zero-filled region of `len` bytes, sealed against resizing.
    pub fn create(name: &str, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty shared region",
            ));
        }
        let fd = retry(|| {
            rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        })?;
        retry(|| rustix::fs::ftruncate(&fd, len as u64))?;
        retry(|| rustix::fs::fcntl_add_seals(&fd, Self::REQUIRED_SEALS))?;
        Self::map(fd, len)
    }

    /// Maps a region received from a peer after checking that it is a
    /// read-write regular file of exactly `expected_len` bytes, sealed
    /// against growing, shrinking and unsealing.
    pub fn from_fd(fd: OwnedFd, expected_len: usize) -> Result<Self, Error> {
        let expected = expected_len as u64;
        let bad = |reason, size| Error::BadRegion {
            reason,
            size,
            expected,
        };
        let st = retry(|| rustix::fs::fstat(&fd)).map_err(Error::io("fstat shared region"))?;
        let size = u64::try_from(st.st_size).map_err(|_| bad("negative size", 0))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(bad("not a regular file", size));
        }
        if size != expected || expected_len == 0 {
            return Err(bad("size differs from the announced length", size));
        }
        let seals = retry(|| rustix::fs::fcntl_get_seals(&fd))
            .map_err(|_| bad("file does not support seals (not a memfd)", size))?;
        if !seals.contains(Self::REQUIRED_SEALS) {
            return Err(bad("missing F_SEAL_GROW/F_SEAL_SHRINK/F_SEAL_SEAL", size));
        }
        if seals.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE) {
            return Err(bad("sealed against writing", size));
        }
        let flags = retry(|| rustix::fs::fcntl_getfl(&fd)).map_err(Error::io("fcntl F_GETFL"))?;
        if flags & OFlags::ACCMODE != OFlags::RDWR {
            return Err(bad("not opened read-write", size));
        }
        Self::map(fd, expected_len).map_err(Error::io("mmap shared region"))
    }

    /// Maps the `ins` module's channel file `fd` (`len` bytes, the
    /// region length the module announced and the caller validated).
    pub(crate) fn map_channel_file(fd: OwnedFd, len: usize) -> io::Result<Self> {
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint), so
        // it cannot overlap memory Rust already owns; `fd` is a valid open
        // file of at least `len` bytes, sealed against shrinking (or the
        // module's channel file, which maps exactly `len` bytes or fails).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }?;
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        let region = MemfdRegion { fd, base, len };
        if base.as_ptr().addr() % 64 != 0 {
            // Dropping `region` unmaps it.
            return Err(io::Error::other("mmap returned a misaligned mapping"));
        }
        Ok(region)
    }

    /// The memfd, to hand to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsFd for MemfdRegion {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for MemfdRegion {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `map`, which
        // nothing else unmaps; no references into it exist (only volatile and
        // atomic accesses through views that borrow or own this value, all of
        // which are gone when it drops).
        let result = unsafe { rustix::mm::munmap(self.base.as_ptr().cast::<c_void>(), self.len) };
        if let Err(e) = result {
            tracing::error!("munmap of shared region failed: {e}");
        }
    }
}

// SAFETY: `base` points to a live `MAP_SHARED` mapping of `len` bytes that
// stays mapped, readable and writable until drop (the file is sealed against
// shrinking, or is the module's channel file whose pages stay, so no access
// within `len` can fault); mmap returns page-aligned
// addresses and `map` checks 64-byte alignment. The crate only reaches the
// memory through `RegionView`.
unsafe impl SharedRegion for MemfdRegion {
    fn base(&self) -> NonNull<u8> {
        self.base
    }
    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ins_protocol::region::RegionView;
    use std::sync::atomic::Ordering;

    #[test]
    fn create_map_and_share() {
        let a = MemfdRegion::create("test", 8192).unwrap();
        let fd = a.fd().try_clone_to_owned().unwrap();
        let b = MemfdRegion::from_fd(fd, 8192).unwrap();
        RegionView::new(&a)
            .store_u32(4096, 0xdead_beef, Ordering::Release)
            .unwrap();
        assert_eq!(
            RegionView::new(&b).load_u32(4096, Ordering::Acquire),
            Ok(0xdead_beef)
        );
        assert_ne!(a.base(), b.base(), "two distinct mappings of one file");
    }

    #[test]
    fn refuses_wrong_size_and_unsealed() {
        let a = MemfdRegion::create("test", 4096).unwrap();
        let fd = a.fd().try_clone_to_owned().unwrap();
        assert!(matches!(
            MemfdRegion::from_fd(fd, 8192),
            Err(Error::BadRegion { size: 4096, .. })
        ));
        let raw = rustix::fs::memfd_create("unsealed", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&raw, 4096).unwrap();
        assert!(matches!(
            MemfdRegion::from_fd(raw, 4096),
            Err(Error::BadRegion { .. })
        ));
    }
}
