//! `GrantedPages`: pages this domain allocates and grants to one peer
//! through `/dev/xen/gntalloc` (the driver's side of a channel).
//!
//! Invariants:
//! * the pages are allocated zeroed by the kernel (nothing of ours leaks
//!   to the peer) and granted writable to exactly one domain;
//! * the mapping lives exactly as long as the value, reached only through
//!   [`ins_protocol::region::RegionView`] (volatile/atomic access: the
//!   peer writes these pages concurrently);
//! * on drop we unmap, then `DEALLOC_GREF`. Revoking a grant the peer
//!   still maps cannot succeed; Linux then keeps the page and its grant
//!   entry and retries ending access later (deferred free) instead of
//!   reusing the page, so dropping early is safe, only not prompt. The
//!   channel teardown waits (bounded) for the peer's unmap notification
//!   before dropping, so that revocation normally succeeds at once.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;

use ins_protocol::region::SharedRegion;
use ins_xen::gnttab::PAGE_SIZE;
use ins_xen::{DomId, GrantRef, Port};
use rustix::mm::{MapFlags, ProtFlags};

use super::ioctl;

/// Pages granted to one peer domain.
#[derive(Debug)]
pub struct GrantedPages {
    dev: File,
    index: u64,
    grefs: Vec<GrantRef>,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: plain shared memory reached only through volatile and atomic
// operations (the SharedRegion contract); the pointer is not tied to a
// thread.
unsafe impl Send for GrantedPages {}
// SAFETY: as above; concurrent access from our threads is no different
// from the peer domain's.
unsafe impl Sync for GrantedPages {}

impl GrantedPages {
    /// Allocates `pages` zeroed pages, grants them writable to `peer` and
    /// maps them here.
    pub fn alloc(path: &str, peer: DomId, pages: usize) -> io::Result<GrantedPages> {
        let count = u32::try_from(pages)
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad page count"))?;
        let len = pages
            .checked_mul(PAGE_SIZE)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?;
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        // {u16 domid, u16 flags, u32 count, u64 index, u32 gref_ids[count]}
        let mut arg = vec![0u32; 4 + pages.max(2)];
        arg[0] = u32::from(peer.0) | (u32::from(ioctl::GNTALLOC_FLAG_WRITABLE) << 16);
        arg[1] = count;
        ioctl::call(dev.as_fd(), ioctl::GNTALLOC_ALLOC_GREF, &mut arg)?;
        let index = ioctl::words_u64(&arg[2..4]);
        let grefs = arg[4..4 + pages].iter().map(|&g| GrantRef(g)).collect();
        let mut granted = GrantedPages {
            dev,
            index,
            grefs,
            base: NonNull::dangling(),
            len: 0,
        };
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint),
        // so it overlaps nothing Rust owns; the offset is the one the
        // kernel returned for exactly `len` bytes of granted pages.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &granted.dev,
                index,
            )
        }?;
        // From here on, drop unmaps and deallocates.
        granted.base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        granted.len = len;
        Ok(granted)
    }

    /// The grant references, one per page in order.
    pub fn grefs(&self) -> &[GrantRef] {
        &self.grefs
    }

    /// Asks the kernel, when this side lets go of the pages (drop, or the
    /// process dying), to zero the byte at `offset` and send an event on
    /// `port`: the peer learns that we are gone.
    pub fn set_unmap_notify(&self, offset: usize, port: Port) -> io::Result<()> {
        if offset >= self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset outside the pages",
            ));
        }
        let at = ioctl::u64_words(self.index + offset as u64);
        let mut arg = [
            at[0],
            at[1],
            ioctl::UNMAP_NOTIFY_CLEAR_BYTE | ioctl::UNMAP_NOTIFY_SEND_EVENT,
            port.0,
        ];
        ioctl::call(self.dev.as_fd(), ioctl::GNTALLOC_SET_UNMAP_NOTIFY, &mut arg).map(drop)
    }
}

impl Drop for GrantedPages {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: exactly the mapping made in `alloc`, unmapped only
            // here; no references into it exist (only volatile/atomic
            // accesses through views that are gone when this drops).
            let r = unsafe { rustix::mm::munmap(self.base.as_ptr().cast::<c_void>(), self.len) };
            if let Err(e) = r {
                tracing::error!("munmap of granted pages failed: {e}");
            }
        }
        let at = ioctl::u64_words(self.index);
        let mut arg = [at[0], at[1], self.grefs.len() as u32, 0];
        if let Err(e) = ioctl::call(self.dev.as_fd(), ioctl::GNTALLOC_DEALLOC_GREF, &mut arg) {
            tracing::error!("gntalloc dealloc failed: {e}");
        }
    }
}

// SAFETY: `base` is a live shared mapping of `len` bytes, readable and
// writable until drop (granted pages cannot be shrunk under us); mmap
// returns page-aligned addresses (64-byte aligned). Only reached through
// RegionView.
unsafe impl SharedRegion for GrantedPages {
    fn base(&self) -> NonNull<u8> {
        self.base
    }
    fn len(&self) -> usize {
        self.len
    }
}
