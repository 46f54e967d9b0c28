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

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use ins_protocol::region::SharedRegion;
use ins_xen::gnttab::PAGE_SIZE;
use ins_xen::{DomId, GrantRef, Port};

use super::ioctl;
use super::pages::{self, Mapping};

/// Pages granted to one peer domain.
#[derive(Debug)]
pub struct GrantedPages {
    dev: File,
    index: u64,
    grefs: Vec<GrantRef>,
    /// `None` only while dropping.
    map: Option<Mapping>,
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
        let dev = pages::open(path)?;
        // {u16 domid, u16 flags, u32 count, u64 index, u32 gref_ids[count]},
        // at least the 24 bytes of the C struct.
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
            map: None,
        };
        // On error, drop deallocates the grants.
        granted.map = Some(Mapping::new(&granted.dev, index, len)?);
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
        let len = self.map.as_ref().map_or(0, Mapping::len);
        pages::set_unmap_notify(
            &self.dev,
            ioctl::GNTALLOC_SET_UNMAP_NOTIFY,
            self.index,
            len,
            offset,
            port,
        )
    }
}

impl Drop for GrantedPages {
    fn drop(&mut self) {
        // Unmap first, then end the grants.
        drop(self.map.take());
        let at = ioctl::u64_words(self.index);
        let mut arg = [at[0], at[1], self.grefs.len() as u32, 0];
        if let Err(e) = ioctl::call(self.dev.as_fd(), ioctl::GNTALLOC_DEALLOC_GREF, &mut arg) {
            tracing::error!("gntalloc dealloc failed: {e}");
        }
    }
}

// SAFETY: the mapping is a live shared mapping of `len` bytes, readable
// and writable until drop (granted pages cannot shrink under us);
// page-aligned. It exists from construction to drop. Only reached through
// RegionView.
unsafe impl SharedRegion for GrantedPages {
    fn base(&self) -> NonNull<u8> {
        self.map.as_ref().map_or(NonNull::dangling(), Mapping::base)
    }
    fn len(&self) -> usize {
        self.map.as_ref().map_or(0, Mapping::len)
    }
}
