//! Grant tables (v1): granting our pages to a peer, and mapping a peer's.
//!
//! Our table is `frames` pages of 8-byte entries `{u16 flags, u16 domid,
//! u32 frame}` that Xen reads and updates (`GTF_reading`/`GTF_writing`
//! while the peer maps the page), mapped in the [`Window`]. Granting writes
//! frame and domid, then (release) the flags word. Ending a grant swaps the
//! flags to 0 with a compare-and-swap that refuses while the peer still
//! maps the page: the entry then stays granted and the page must not be
//! reused (XSA-396); the caller retries later. Entries below 8 are the
//! toolstack's.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;

use crate::abi::PAGE_SIZE;
use crate::abi::gnttabop::{
    ENTRY_SIZE, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING, NR_RESERVED_ENTRIES,
};
use crate::hypercall::{self, GrantError, XenError};
use crate::mm::Window;
use crate::page::Mapped;

/// Why a grant could not be ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndError {
    /// The peer still maps the page; retry after it unmaps.
    InUse,
    /// Not a grant this table handed out.
    Invalid,
}

impl fmt::Display for EndError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndError::InUse => f.write_str("grant still mapped by the peer"),
            EndError::Invalid => f.write_str("not an active grant"),
        }
    }
}

/// Writes a grant of `frame` to `domid` into entry `gref`.
pub fn write_entry(
    table: &Mapped,
    gref: u32,
    domid: u16,
    frame: u32,
    readonly: bool,
) -> Option<()> {
    let off = gref as usize * ENTRY_SIZE;
    let v = table.view();
    v.store_u32(off + 4, frame, Ordering::Relaxed).ok()?;
    let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
    // frame before flags: the release store orders them
    v.store_u32(
        off,
        u32::from(flags) | (u32::from(domid) << 16),
        Ordering::Release,
    )
    .ok()
}

/// Ends the grant in entry `gref` unless the peer maps it.
pub fn clear_entry(table: &Mapped, gref: u32) -> Result<(), EndError> {
    let w = table
        .atomic_u32(gref as usize * ENTRY_SIZE)
        .ok_or(EndError::Invalid)?;
    let mut cur = w.load(Ordering::Acquire);
    loop {
        let flags = cur as u16;
        if flags & (GTF_READING | GTF_WRITING) != 0 {
            return Err(EndError::InUse);
        }
        if flags & GTF_PERMIT_ACCESS == 0 {
            return Err(EndError::Invalid);
        }
        match w.compare_exchange(cur, cur & 0xffff_0000, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(now) => cur = now,
        }
    }
}

/// This domain's grant table.
#[derive(Debug)]
pub struct GrantTable {
    table: Mapped,
    nr_entries: u32,
    free: Vec<u32>,
}

impl GrantTable {
    /// Sets up a table of `frames` pages (at most Xen's limit) and maps it
    /// in `window`.
    pub fn setup(window: &mut Window, frames: u32) -> Result<GrantTable, GrantError> {
        let (_, max) = hypercall::gnttab_query_size()?;
        let frames = frames.min(max).max(1) as usize;
        let mut mfns = alloc::vec![0u64; frames];
        hypercall::gnttab_setup_table(&mut mfns)?;
        let va = window
            .alloc(frames)
            .ok_or(GrantError::Xen(XenError::ENOSPC))?;
        for (i, mfn) in mfns.iter().enumerate() {
            // SAFETY: `va + i` pages were just reserved in the window and
            // the frames are this domain's grant table, which Xen lets it
            // map; the table is then only reached as shared memory.
            #[allow(unsafe_code)]
            unsafe {
                window.map(va + i * PAGE_SIZE, *mfn)?
            };
        }
        // SAFETY: the pages are mapped (above) and stay mapped for the life
        // of the domain; they are only accessed through `Mapped`.
        #[allow(unsafe_code)]
        let table = unsafe { Mapped::new(va, frames) };
        Ok(Self::over(table, frames))
    }

    /// A table over already mapped frames (also used by host tests).
    pub fn over(table: Mapped, frames: usize) -> GrantTable {
        let nr_entries = (frames * PAGE_SIZE / ENTRY_SIZE) as u32;
        GrantTable {
            table,
            nr_entries,
            free: (NR_RESERVED_ENTRIES..nr_entries).rev().collect(),
        }
    }

    /// Grants `mfn` to `domid`; returns the grant reference.
    pub fn grant(&mut self, domid: u16, mfn: u64, readonly: bool) -> Result<u32, XenError> {
        let frame = u32::try_from(mfn).map_err(|_| XenError::EINVAL)?;
        let gref = self.free.pop().ok_or(XenError::ENOSPC)?;
        if write_entry(&self.table, gref, domid, frame, readonly).is_none() {
            self.free.push(gref);
            return Err(XenError::EINVAL);
        }
        Ok(gref)
    }

    /// Ends grant `gref`; on success the reference is free again and the
    /// page no longer reachable by the peer.
    pub fn end(&mut self, gref: u32) -> Result<(), EndError> {
        if gref < NR_RESERVED_ENTRIES || gref >= self.nr_entries {
            return Err(EndError::Invalid);
        }
        clear_entry(&self.table, gref)?;
        self.free.push(gref);
        Ok(())
    }

    /// Free grant references left.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Entries of the table.
    pub fn nr_entries(&self) -> u32 {
        self.nr_entries
    }
}

/// A peer's granted pages mapped side by side in the window, as one
/// region (an INS channel's rings and status page).
///
/// Invariant: `handles[i]` is the live mapping of page `i`. When Xen
/// refuses to unmap a page, the region's window slots all stay reserved
/// for good (a page may still hold the peer's frame), so the window never
/// hands them out again.
#[derive(Debug)]
pub struct ForeignRegion {
    region: Mapped,
    handles: Vec<u32>,
}

/// Why unmapping a [`ForeignRegion`] was incomplete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnmapError {
    /// Pages Xen refused to unmap (their window slots stay reserved).
    pub failed: usize,
    /// The first refusal.
    pub first: GrantError,
}

impl fmt::Display for UnmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Xen refused to unmap {} page(s): {}",
            self.failed, self.first
        )
    }
}

impl ForeignRegion {
    /// Maps grants `grefs` of domain `domid`, in order, into consecutive
    /// pages of `window`. On any failure the pages mapped so far are
    /// unmapped again and the error returned.
    pub fn map(
        window: &mut Window,
        domid: u16,
        grefs: &[u32],
        readonly: bool,
    ) -> Result<ForeignRegion, GrantError> {
        let n = grefs.len();
        let va = window.alloc(n).ok_or(GrantError::Xen(XenError::ENOSPC))?;
        let mut handles = Vec::with_capacity(n);
        for (i, &gref) in grefs.iter().enumerate() {
            // SAFETY: `va + i` pages were just reserved in the window (they
            // have an L1 table and nothing uses them); the peer's page is
            // then shared memory, reached only through `Mapped`.
            #[allow(unsafe_code)]
            let r = unsafe {
                hypercall::gnttab_map((va + i * PAGE_SIZE) as u64, domid, gref, readonly)
            };
            match r {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // SAFETY: the pages below `i` were mapped above and
                    // nothing has used them yet.
                    #[allow(unsafe_code)]
                    let region = unsafe { Mapped::new(va, n) };
                    let partial = ForeignRegion { region, handles };
                    if partial.unmap_pages().is_ok() {
                        window.free(va, n);
                    }
                    return Err(e);
                }
            }
        }
        // SAFETY: all `n` pages are mapped (above) until `unmap`.
        #[allow(unsafe_code)]
        let region = unsafe { Mapped::new(va, n) };
        Ok(ForeignRegion { region, handles })
    }

    /// The mapped pages (copies must not be used after [`Self::unmap`]).
    pub fn region(&self) -> Mapped {
        self.region
    }

    /// Pages mapped.
    pub fn pages(&self) -> usize {
        self.handles.len()
    }

    fn unmap_pages(&self) -> Result<(), UnmapError> {
        let mut err: Option<UnmapError> = None;
        let va = self.region.va();
        for (i, &h) in self.handles.iter().enumerate() {
            let page = va + i * PAGE_SIZE;
            // SAFETY: the owner is being consumed (`unmap`) or was never
            // handed out (`map`'s failure path): nothing reaches the page.
            #[allow(unsafe_code)]
            let r = unsafe { hypercall::gnttab_unmap(page as u64, h) };
            if let Err(e) = r {
                match &mut err {
                    Some(u) => u.failed += 1,
                    None => {
                        err = Some(UnmapError {
                            failed: 1,
                            first: e,
                        })
                    }
                }
            }
        }
        err.map_or(Ok(()), Err)
    }

    /// Unmaps every page and releases the window slots, unless Xen refused
    /// a page (then the slots stay reserved, see [`UnmapError`]).
    pub fn unmap(self, window: &mut Window) -> Result<(), UnmapError> {
        let r = self.unmap_pages();
        if r.is_ok() {
            window.free(self.region.va(), self.handles.len());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Page(*mut u8);
    impl Page {
        fn new() -> Page {
            let l = std::alloc::Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).unwrap();
            // SAFETY: non-zero size.
            #[allow(unsafe_code)]
            Page(unsafe { std::alloc::alloc_zeroed(l) })
        }
        fn mapped(&self) -> Mapped {
            // SAFETY: a live, zeroed, page-aligned allocation, freed on drop.
            #[allow(unsafe_code)]
            unsafe {
                Mapped::new(self.0.addr(), 1)
            }
        }
    }
    impl Drop for Page {
        fn drop(&mut self) {
            let l = std::alloc::Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).unwrap();
            // SAFETY: allocated in `new` with this layout.
            #[allow(unsafe_code)]
            unsafe {
                std::alloc::dealloc(self.0, l)
            };
        }
    }

    #[test]
    fn grant_and_end() {
        let p = Page::new();
        let mut t = GrantTable::over(p.mapped(), 1);
        assert_eq!(t.nr_entries(), 512);
        assert_eq!(t.available(), 504);
        let g = t.grant(7, 0x1234, true).unwrap();
        assert_eq!(g, 8, "first non-reserved entry");
        let mut e = [0u8; 8];
        p.mapped().view().read(g as usize * 8, &mut e).unwrap();
        assert_eq!(
            u16::from_le_bytes([e[0], e[1]]),
            GTF_PERMIT_ACCESS | GTF_READONLY
        );
        assert_eq!(u16::from_le_bytes([e[2], e[3]]), 7);
        assert_eq!(u32::from_le_bytes([e[4], e[5], e[6], e[7]]), 0x1234);
        // the peer maps it: Xen sets GTF_reading
        let w = p.mapped();
        w.atomic_u32(64)
            .unwrap()
            .fetch_or(u32::from(GTF_READING), Ordering::SeqCst);
        assert_eq!(t.end(g), Err(EndError::InUse));
        assert_eq!(t.available(), 503);
        w.atomic_u32(64)
            .unwrap()
            .fetch_and(!u32::from(GTF_READING), Ordering::SeqCst);
        assert_eq!(t.end(g), Ok(()));
        assert_eq!(t.end(g), Err(EndError::Invalid), "ended twice");
        assert_eq!(t.end(3), Err(EndError::Invalid), "reserved");
        assert_eq!(t.end(512), Err(EndError::Invalid), "past the table");
        assert_eq!(t.available(), 504);
        assert_eq!(
            t.grant(1, 1 << 40, false),
            Err(XenError::EINVAL),
            "frame beyond 32 bits"
        );
        assert_eq!(t.available(), 504);
    }
}
