//! `MappedPages`: a peer's granted pages mapped here through
//! `/dev/xen/gntdev` (the instance's side of a channel).
//!
//! Invariants:
//! * all pages are mapped in one request and one `mmap`, contiguous, in
//!   the order of the grant references; if any grant cannot be mapped the
//!   whole mapping fails;
//! * the mapping lives exactly as long as the value and is reached only
//!   through [`ins_protocol::region::RegionView`];
//! * on drop we `munmap`, then `UNMAP_GRANT_REF` (the kernel requires that
//!   order). An unmap notification set with
//!   [`MappedPages::set_unmap_notify`] fires then, or when the process
//!   dies, telling the granting side it may revoke.
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

/// Pages granted by a peer, mapped read-write.
#[derive(Debug)]
pub struct MappedPages {
    dev: File,
    index: u64,
    count: u32,
    /// `None` only while dropping.
    map: Option<Mapping>,
}

// SAFETY: plain shared memory reached only through volatile and atomic
// operations (the SharedRegion contract).
unsafe impl Send for MappedPages {}
// SAFETY: as above.
unsafe impl Sync for MappedPages {}

impl MappedPages {
    /// Maps `grefs` of domain `peer`, in order, as one region.
    pub fn map(path: &str, peer: DomId, grefs: &[GrantRef]) -> io::Result<MappedPages> {
        let count = u32::try_from(grefs.len())
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad grant count"))?;
        let len = grefs
            .len()
            .checked_mul(PAGE_SIZE)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?;
        let dev = pages::open(path)?;
        // {u32 count, u32 pad, u64 index, {u32 domid, u32 ref} refs[count]}
        let mut arg = vec![0u32; 4 + 2 * grefs.len()];
        arg[0] = count;
        for (i, g) in grefs.iter().enumerate() {
            arg[4 + 2 * i] = u32::from(peer.0);
            arg[5 + 2 * i] = g.0;
        }
        ioctl::call(dev.as_fd(), ioctl::GNTDEV_MAP_GRANT_REF, &mut arg)?;
        let index = ioctl::words_u64(&arg[2..4]);
        let mut mapped = MappedPages {
            dev,
            index,
            count,
            map: None,
        };
        // On error, drop releases the grant references.
        mapped.map = Some(Mapping::new(&mapped.dev, index, len)?);
        Ok(mapped)
    }

    /// Asks the kernel, when this mapping goes away (drop, or the process
    /// dying), to zero the byte at `offset` (in the peer's page) and send
    /// an event on `port`: the granting side learns it may revoke.
    pub fn set_unmap_notify(&self, offset: usize, port: Port) -> io::Result<()> {
        let len = self.map.as_ref().map_or(0, Mapping::len);
        pages::set_unmap_notify(
            &self.dev,
            ioctl::GNTDEV_SET_UNMAP_NOTIFY,
            self.index,
            len,
            offset,
            port,
        )
    }
}

impl Drop for MappedPages {
    fn drop(&mut self) {
        // munmap first: the kernel refuses UNMAP_GRANT_REF while mapped.
        drop(self.map.take());
        let at = ioctl::u64_words(self.index);
        let mut arg = [at[0], at[1], self.count, 0];
        if let Err(e) = ioctl::call(self.dev.as_fd(), ioctl::GNTDEV_UNMAP_GRANT_REF, &mut arg) {
            tracing::error!("gntdev unmap failed: {e}");
        }
    }
}

// SAFETY: the mapping is a live shared mapping of `len` bytes of granted
// pages, readable and writable until drop; page-aligned. It exists from
// construction to drop. Only reached through RegionView.
unsafe impl SharedRegion for MappedPages {
    fn base(&self) -> NonNull<u8> {
        self.map.as_ref().map_or(NonNull::dangling(), Mapping::base)
    }
    fn len(&self) -> usize {
        self.map.as_ref().map_or(0, Mapping::len)
    }
}
