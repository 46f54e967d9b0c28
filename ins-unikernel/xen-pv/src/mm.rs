//! Pages and page tables of a 64-bit PV guest.
//!
//! Layout (set by the ELF notes: `VIRT_BASE` = `PADDR_OFFSET` = 0): the
//! virtual address of pseudo-physical frame `pfn` is `pfn << 12`. The
//! domain builder maps the image, the p2m list, start_info, the xenstore
//! and console pages, the bootstrap page tables and a one-page boot stack,
//! in that order, then at least 512 KiB more, up to a 4 MiB boundary. Every
//! frame from the end of the boot stack (`rsp` at entry) to `nr_pages` is
//! free.
//!
//! [`Memory::init`] maps the rest of the domain's frames: for each 2 MiB
//! chunk without an L1 table it fills a free, already mapped page with the
//! chunk's entries, remaps that page read-only (Xen refuses a page table
//! with writable mappings) and hooks it into the L2 table with
//! `mmu_update`. It also builds empty L1 tables for the [`Window`], a
//! range of whole 2 MiB chunks ending at 1 GiB where foreign frames are
//! mapped (shared_info, grant-table frames, a peer's granted pages). Its
//! size is the program's choice ([`WindowPlan::new`]: the unikernel's
//! `foreign_mib=` command-line key, default [`DEFAULT_WINDOW_PAGES`]); the
//! domain's memory must end at or below the window's first chunk (the
//! window and memory share the first GiB, the one L2 table the builder
//! provides), and each chunk costs one page of the domain for its L1.
//! The window's reservations are tracked as at most [`WINDOW_RANGES`]
//! disjoint ranges (shared_info, the grant table and a channel's region
//! take one each).
//!
//! Page tables are reached through the machine-to-physical table Xen maps
//! read-only at [`crate::abi::mmu::M2P_VIRT_START`]; the
//! p2m list (`start_info.mfn_list`) is this domain's own memory.
#![allow(unsafe_code)]

use core::fmt;

use crate::abi::mmu::{
    ACCESSED, DIRTY, FRAME_MASK, M2P_VIRT_START, NORMAL_PT_UPDATE, PRESENT, RW, USER, UVMF_INVLPG,
};
use crate::abi::{PAGE_SHIFT, PAGE_SIZE};
use crate::hypercall::{self, MmuUpdate, XenError};
use crate::start_info::StartInfo;

/// End of the foreign-mapping window (and of the first GiB, whose L2
/// table the builder provides).
pub const WINDOW_END: u64 = 0x4000_0000;
/// Pages of the window when the program does not choose (2 MiB).
pub const DEFAULT_WINDOW_PAGES: usize = 512;
/// Pages one L1 table covers (2 MiB).
const CHUNK_PAGES: u64 = 512;
/// Most disjoint reservations in the window at once.
pub const WINDOW_RANGES: usize = 32;
/// Pages of heap that must remain after the window's page tables.
const MIN_HEAP_PAGES: u64 = 256;

const L1_PROT: u64 = PRESENT | RW | ACCESSED;
const TABLE_PROT: u64 = PRESENT | RW | ACCESSED | DIRTY | USER;

/// Why memory set-up failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// The builder's layout is not the one this platform expects.
    Layout(&'static str),
    /// The foreign window asked for does not fit this domain.
    Window(WindowError),
    /// A hypercall failed.
    Xen(XenError),
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemError::Layout(s) => write!(f, "unexpected memory layout: {s}"),
            MemError::Window(e) => e.fmt(f),
            MemError::Xen(e) => e.fmt(f),
        }
    }
}

/// Why a foreign window of the size asked for cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowError {
    /// Zero pages asked for.
    Empty,
    /// The window and the domain's memory do not both fit below 1 GiB.
    AddressSpace {
        /// Pages asked for.
        pages: u64,
        /// Most pages possible next to this domain's memory.
        max_pages: u64,
        /// The domain's size in KiB.
        domain_kib: u64,
    },
    /// The window's page tables (a page per 2 MiB) would leave too little
    /// of the domain's memory for the heap.
    Tables {
        /// Pages asked for.
        pages: u64,
        /// Page-table pages that needs.
        tables: u64,
        /// Domain pages free for tables and heap.
        free: u64,
    },
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WindowError::Empty => f.write_str("foreign window: at least one page is needed"),
            WindowError::AddressSpace {
                pages,
                max_pages,
                domain_kib,
            } => write!(
                f,
                "foreign window of {pages} pages ({} KiB) does not fit: with {domain_kib} KiB of domain memory at most {max_pages} pages ({} MiB) fit below 1 GiB",
                pages * 4,
                max_pages / 256
            ),
            WindowError::Tables {
                pages,
                tables,
                free,
            } => write!(
                f,
                "foreign window of {pages} pages needs {tables} page-table pages; only {free} domain pages are free and {MIN_HEAP_PAGES} must stay for the heap"
            ),
        }
    }
}

/// Where the foreign window goes for a domain of `nr_pages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowPlan {
    /// First page's virtual address (2 MiB aligned).
    pub va: u64,
    /// Pages usable.
    pub pages: u64,
    /// L1 tables (2 MiB chunks).
    pub chunks: u64,
}

impl WindowPlan {
    /// Plans a window of `pages` pages next to a domain of `nr_pages`
    /// frames, `free_pages` of which are free for its page tables and the
    /// heap. The window is whole 2 MiB chunks ending at [`WINDOW_END`];
    /// the domain's memory, rounded up to 2 MiB, must end at or below it.
    pub fn new(nr_pages: u64, free_pages: u64, pages: u64) -> Result<WindowPlan, WindowError> {
        if pages == 0 {
            return Err(WindowError::Empty);
        }
        let total_chunks = WINDOW_END >> PAGE_SHIFT >> 9;
        let domain_chunks = nr_pages.div_ceil(CHUNK_PAGES);
        let max_pages = total_chunks.saturating_sub(domain_chunks) * CHUNK_PAGES;
        if pages > max_pages {
            return Err(WindowError::AddressSpace {
                pages,
                max_pages,
                domain_kib: nr_pages * 4,
            });
        }
        let chunks = pages.div_ceil(CHUNK_PAGES);
        if chunks + MIN_HEAP_PAGES > free_pages {
            return Err(WindowError::Tables {
                pages,
                tables: chunks,
                free: free_pages,
            });
        }
        Ok(WindowPlan {
            va: WINDOW_END - (chunks << (PAGE_SHIFT + 9)),
            pages,
            chunks,
        })
    }
}

impl From<XenError> for MemError {
    fn from(e: XenError) -> Self {
        MemError::Xen(e)
    }
}

/// Memory figures from [`Memory::init`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Frames of the domain.
    pub nr_pages: u64,
    /// First frame after the boot stack.
    pub free_start_pfn: u64,
    /// Frames the builder had mapped (end of its mapping).
    pub initially_mapped_pfn: u64,
    /// L1 tables added (memory beyond the builder's mapping + the window).
    pub l1_tables_added: u64,
    /// First frame of the heap.
    pub heap_start_pfn: u64,
    /// Pages of the foreign window.
    pub window_pages: u64,
}

/// The domain's memory: p2m lookups and the foreign-mapping window.
#[derive(Debug)]
pub struct Memory {
    nr_pages: u64,
    p2m_va: u64,
    pt_base: u64,
    window: Window,
}

fn read_u64(va: u64) -> u64 {
    // SAFETY: callers pass addresses inside mapped tables (page tables,
    // the p2m list, the M2P table), all 8-aligned; volatile because Xen
    // may update them (accessed/dirty bits, M2P).
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

fn mfn_to_pfn(mfn: u64) -> u64 {
    read_u64(M2P_VIRT_START + mfn * 8)
}

/// Virtual address of the table an entry points at (tables live in this
/// domain's frames, mapped at `pfn << 12`).
fn table_va(entry: u64) -> Option<u64> {
    (entry & PRESENT != 0).then(|| mfn_to_pfn((entry & FRAME_MASK) >> PAGE_SHIFT) << PAGE_SHIFT)
}

fn index(va: u64, level: u32) -> u64 {
    (va >> (PAGE_SHIFT + 9 * level)) & 511
}

impl Memory {
    /// Maps every frame of the domain and builds a window of
    /// `window_pages` pages ([`WindowPlan`]); returns the memory and the
    /// heap range `[va, va + len)`.
    ///
    /// # Safety
    ///
    /// Call once, at boot, with the domain's own start_info and the stack
    /// pointer the domain was entered with; nothing may live in the frames
    /// from that stack pointer on.
    pub unsafe fn init(
        si: &StartInfo,
        entry_rsp: u64,
        window_pages: u64,
    ) -> Result<(Memory, usize, usize, MemStats), MemError> {
        let nr_pages = si.nr_pages;
        let free_start_pfn = entry_rsp.div_ceil(PAGE_SIZE as u64);
        let after_tables = (si.pt_base >> PAGE_SHIFT) + si.nr_pt_frames;
        if free_start_pfn <= after_tables || free_start_pfn >= nr_pages {
            return Err(MemError::Layout("boot stack not after the page tables"));
        }
        // memory's own L1 tables come out of the free frames too (at most
        // one per 2 MiB chunk)
        let free = (nr_pages - free_start_pfn).saturating_sub(nr_pages.div_ceil(CHUNK_PAGES));
        let plan = WindowPlan::new(nr_pages, free, window_pages).map_err(MemError::Window)?;
        let mut mem = Memory {
            nr_pages,
            p2m_va: si.mfn_list,
            pt_base: si.pt_base,
            window: Window::new(plan.va as usize, plan.pages as usize),
        };
        let mut stats = MemStats {
            nr_pages,
            free_start_pfn,
            ..MemStats::default()
        };
        let mut bump = free_start_pfn;
        // the builder's mapping is contiguous from 0: find its end
        let mut mapped = free_start_pfn;
        while mapped < nr_pages
            && mem
                .pte(mapped << PAGE_SHIFT)
                .is_some_and(|e| e & PRESENT != 0)
        {
            mapped += 1;
        }
        stats.initially_mapped_pfn = mapped;
        let mut pfn = mapped;
        while pfn < nr_pages {
            let chunk_end = ((pfn | 511) + 1).min(nr_pages);
            // SAFETY: the frames [pfn, chunk_end) are free (after the boot
            // stack) and not mapped yet; `bump` is a free mapped frame.
            unsafe { mem.map_chunk(&mut bump, pfn, chunk_end, true)? };
            stats.l1_tables_added += 1;
            pfn = chunk_end;
        }
        for c in 0..plan.chunks {
            let first = (plan.va >> PAGE_SHIFT) + c * CHUNK_PAGES;
            if mem.l1_maddr(first << PAGE_SHIFT).is_some() {
                return Err(MemError::Layout("the window's range is already mapped"));
            }
            // SAFETY: the window lies above every frame of the domain
            // (WindowPlan) and has no L1 yet (checked): an empty one.
            unsafe { mem.map_chunk(&mut bump, first, first + CHUNK_PAGES, false)? };
            stats.l1_tables_added += 1;
        }
        stats.window_pages = plan.pages;
        stats.heap_start_pfn = bump;
        let heap_va = (bump << PAGE_SHIFT) as usize;
        let heap_len = ((nr_pages - bump) << PAGE_SHIFT) as usize;
        Ok((mem, heap_va, heap_len, stats))
    }

    /// The L1 entry mapping `va`, if its L1 table exists.
    fn pte(&self, va: u64) -> Option<u64> {
        let l3 = table_va(read_u64(self.pt_base + index(va, 3) * 8))?;
        let l2 = table_va(read_u64(l3 + index(va, 2) * 8))?;
        let l1 = table_va(read_u64(l2 + index(va, 1) * 8))?;
        Some(read_u64(l1 + index(va, 0) * 8))
    }

    /// Machine address of the L1 table covering `va`.
    fn l1_maddr(&self, va: u64) -> Option<u64> {
        let l3 = table_va(read_u64(self.pt_base + index(va, 3) * 8))?;
        let l2 = table_va(read_u64(l3 + index(va, 2) * 8))?;
        let e2 = read_u64(l2 + index(va, 1) * 8);
        (e2 & PRESENT != 0).then_some(e2 & FRAME_MASK)
    }

    /// Maps frames `[from, to)` (one 2 MiB chunk) with a new L1 table taken
    /// from `*bump`, or an empty L1 when `fill` is false.
    unsafe fn map_chunk(
        &mut self,
        bump: &mut u64,
        from: u64,
        to: u64,
        fill: bool,
    ) -> Result<(), MemError> {
        let va = from << PAGE_SHIFT;
        let l3 = table_va(read_u64(self.pt_base + index(va, 3) * 8))
            .ok_or(MemError::Layout("no L3 table"))?;
        let e3 = read_u64(l3 + index(va, 2) * 8);
        let l2_va = table_va(e3).ok_or(MemError::Layout("no L2 table"))?;
        let l2_entry_maddr = (e3 & FRAME_MASK) + index(va, 1) * 8;
        if read_u64(l2_va + index(va, 1) * 8) & PRESENT != 0 {
            // an L1 exists (a partly mapped chunk): map the missing pages
            for pfn in from..to {
                if self
                    .pte(pfn << PAGE_SHIFT)
                    .is_some_and(|e| e & PRESENT == 0)
                {
                    let mfn = self
                        .pfn_to_mfn(pfn)
                        .ok_or(MemError::Layout("pfn past the p2m"))?;
                    // SAFETY: the frame is free and unmapped (caller).
                    unsafe {
                        hypercall::update_va_mapping(
                            pfn << PAGE_SHIFT,
                            (mfn << PAGE_SHIFT) | L1_PROT,
                            UVMF_INVLPG,
                        )?
                    };
                }
            }
            return Ok(());
        }
        let l1_pfn = *bump;
        if self
            .pte(l1_pfn << PAGE_SHIFT)
            .is_none_or(|e| e & PRESENT == 0)
        {
            return Err(MemError::Layout("ran out of mapped pages for page tables"));
        }
        *bump += 1;
        let l1_va = l1_pfn << PAGE_SHIFT;
        let l1_mfn = self
            .pfn_to_mfn(l1_pfn)
            .ok_or(MemError::Layout("pfn past the p2m"))?;
        let first = from & !511;
        for i in 0..512u64 {
            let pfn = first + i;
            let entry = if fill && pfn >= from && pfn < to {
                let mfn = self
                    .pfn_to_mfn(pfn)
                    .ok_or(MemError::Layout("pfn past the p2m"))?;
                (mfn << PAGE_SHIFT) | L1_PROT
            } else {
                0
            };
            // SAFETY: `l1_va` is a free, mapped, writable frame of ours
            // (checked above), 8-aligned slot i < 512.
            unsafe { core::ptr::write_volatile((l1_va + i * 8) as *mut u64, entry) };
        }
        // SAFETY: the frame becomes a page table: nothing else uses it and
        // from now on it is only read.
        unsafe {
            hypercall::update_va_mapping(
                l1_va,
                (l1_mfn << PAGE_SHIFT) | PRESENT | ACCESSED,
                UVMF_INVLPG,
            )?
        };
        let req = [MmuUpdate {
            ptr: l2_entry_maddr | NORMAL_PT_UPDATE,
            val: (l1_mfn << PAGE_SHIFT) | TABLE_PROT,
        }];
        // SAFETY: the new L1 maps only free frames of this domain (or none).
        unsafe { hypercall::mmu_update(&req)? };
        Ok(())
    }

    /// Frames of the domain.
    pub fn nr_pages(&self) -> u64 {
        self.nr_pages
    }

    /// The machine frame of pseudo-physical frame `pfn`.
    pub fn pfn_to_mfn(&self, pfn: u64) -> Option<u64> {
        (pfn < self.nr_pages).then(|| read_u64(self.p2m_va + pfn * 8))
    }

    /// The machine frame behind virtual address `va` of this domain's
    /// memory (not the window).
    pub fn va_to_mfn(&self, va: usize) -> Option<u64> {
        self.pfn_to_mfn(va as u64 >> PAGE_SHIFT)
    }

    /// Virtual address of a machine frame of this domain (console and
    /// xenstore pages, found by mfn in start_info).
    pub fn mfn_to_va(&self, mfn: u64) -> Option<usize> {
        let pfn = mfn_to_pfn(mfn);
        (pfn < self.nr_pages && self.pfn_to_mfn(pfn) == Some(mfn))
            .then_some((pfn << PAGE_SHIFT) as usize)
    }

    /// The foreign-mapping window.
    pub fn window(&mut self) -> &mut Window {
        &mut self.window
    }
}

/// A range of virtual addresses with L1 tables and no memory, where
/// foreign frames are mapped one page at a time. Reservations are kept
/// as sorted, disjoint `(first page, pages)` ranges.
#[derive(Debug)]
pub struct Window {
    va: usize,
    pages: usize,
    ranges: [(u32, u32); WINDOW_RANGES],
    nr_ranges: usize,
}

impl Window {
    /// A window of `pages` pages from `va`, nothing reserved.
    fn new(va: usize, pages: usize) -> Window {
        Window {
            va,
            pages,
            ranges: [(0, 0); WINDOW_RANGES],
            nr_ranges: 0,
        }
    }

    /// Pages of the window.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Reserves `n` contiguous pages; returns the first one's address.
    /// `None` if no hole is large enough or [`WINDOW_RANGES`] reservations
    /// are held already.
    pub fn alloc(&mut self, n: usize) -> Option<usize> {
        if n == 0 || n > self.pages || self.nr_ranges == WINDOW_RANGES {
            return None;
        }
        let mut start = 0usize;
        let mut at = self.nr_ranges;
        for (i, &(s, len)) in self.ranges[..self.nr_ranges].iter().enumerate() {
            if s as usize >= start + n {
                at = i;
                break;
            }
            start = s as usize + len as usize;
        }
        if start + n > self.pages {
            return None;
        }
        self.ranges.copy_within(at..self.nr_ranges, at + 1);
        self.ranges[at] = (start as u32, n as u32);
        self.nr_ranges += 1;
        Some(self.va + start * PAGE_SIZE)
    }

    /// Pages not reserved (not necessarily contiguous).
    pub fn free_pages(&self) -> usize {
        self.pages
            - self.ranges[..self.nr_ranges]
                .iter()
                .map(|&(_, n)| n as usize)
                .sum::<usize>()
    }

    /// Releases the reservation of `n` pages at `va` (they must be
    /// unmapped first); anything else is ignored.
    pub fn free(&mut self, va: usize, n: usize) {
        let first = va.wrapping_sub(self.va) / PAGE_SIZE;
        if let Some(i) = self.ranges[..self.nr_ranges]
            .iter()
            .position(|&(s, len)| s as usize == first && len as usize == n)
        {
            self.ranges.copy_within(i + 1..self.nr_ranges, i);
            self.nr_ranges -= 1;
        }
    }

    /// Whether `va` is a page of the window.
    pub fn contains(&self, va: usize) -> bool {
        (self.va..self.va + self.pages * PAGE_SIZE).contains(&va)
    }

    /// Maps machine frame `mfn` at window page `va`.
    ///
    /// # Safety
    ///
    /// `va` must be reserved by the caller and not in use; the frame must be
    /// one Xen lets this domain map (its own, shared_info, grant-table
    /// frames) and is then shared memory (see [`crate::page::Mapped`]).
    pub unsafe fn map(&mut self, va: usize, mfn: u64) -> Result<(), XenError> {
        if !self.contains(va) {
            return Err(XenError::EINVAL);
        }
        // SAFETY: the caller vouches for `va` and the frame.
        unsafe {
            hypercall::update_va_mapping(
                va as u64,
                (mfn << PAGE_SHIFT) | L1_PROT | DIRTY,
                UVMF_INVLPG,
            )
        }
    }

    /// Unmaps window page `va`.
    ///
    /// # Safety
    ///
    /// Nothing may use `va` afterwards.
    pub unsafe fn unmap(&mut self, va: usize) -> Result<(), XenError> {
        if !self.contains(va) {
            return Err(XenError::EINVAL);
        }
        // SAFETY: the caller vouches that `va` is unused.
        unsafe { hypercall::update_va_mapping(va as u64, 0, UVMF_INVLPG) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VA: usize = 0x3fe0_0000;

    fn window() -> Window {
        Window::new(VA, DEFAULT_WINDOW_PAGES)
    }

    #[test]
    fn window_allocation() {
        let mut w = window();
        let a = w.alloc(1).unwrap();
        assert_eq!(a, VA);
        let b = w.alloc(3).unwrap();
        assert_eq!(b, a + PAGE_SIZE);
        w.free(a, 1);
        assert_eq!(w.free_pages(), DEFAULT_WINDOW_PAGES - 3);
        assert_eq!(
            w.alloc(2).unwrap(),
            b + 3 * PAGE_SIZE,
            "a 2-page hole is not at a"
        );
        assert_eq!(w.alloc(1).unwrap(), a);
        assert!(w.alloc(DEFAULT_WINDOW_PAGES).is_none());
        assert!(w.alloc(0).is_none());
        let mut w = window();
        assert!(w.alloc(DEFAULT_WINDOW_PAGES).is_some());
        assert!(w.alloc(1).is_none());
        assert_eq!(w.free_pages(), 0);
        assert!(w.contains(VA));
        assert!(!w.contains(VA + DEFAULT_WINDOW_PAGES * PAGE_SIZE));
        assert!(!w.contains(VA - 1));
    }

    #[test]
    fn window_ranges_are_bounded_and_reused() {
        let mut w = window();
        let got: std::vec::Vec<usize> = (0..WINDOW_RANGES).map(|_| w.alloc(1).unwrap()).collect();
        assert!(w.alloc(1).is_none(), "more than WINDOW_RANGES reservations");
        w.free(got[5], 1);
        assert_eq!(w.alloc(1), Some(got[5]), "the hole is reused first");
        w.free(got[7], 2);
        assert!(w.alloc(1).is_none(), "a wrong length frees nothing");
    }

    #[test]
    fn larger_windows() {
        let mut w = Window::new(VA, 1030);
        let a = w.alloc(515).unwrap();
        let b = w.alloc(515).unwrap();
        assert_eq!(b, a + 515 * PAGE_SIZE);
        assert!(w.alloc(1).is_none());
        w.free(a, 515);
        assert_eq!(w.alloc(515), Some(a));
    }

    #[test]
    fn window_plans() {
        // 32 MiB domain, default window: the last 2 MiB chunk below 1 GiB
        let p = WindowPlan::new(8192, 8000, 512).unwrap();
        assert_eq!((p.va, p.pages, p.chunks), (0x3fe0_0000, 512, 1));
        // 4 MiB: two chunks
        let p = WindowPlan::new(8192, 8000, 1024).unwrap();
        assert_eq!((p.va, p.chunks), (0x3fc0_0000, 2));
        // 3 MiB: rounded up to two chunks, 768 pages usable
        let p = WindowPlan::new(8192, 8000, 768).unwrap();
        assert_eq!((p.va, p.pages, p.chunks), (0x3fc0_0000, 768, 2));
        assert_eq!(WindowPlan::new(8192, 8000, 0), Err(WindowError::Empty));
        // 1022 MiB domain: one chunk left
        let nr = (1022 << 20) >> 12;
        assert!(WindowPlan::new(nr, 200, 512).is_err(), "no heap left");
        assert_eq!(WindowPlan::new(nr, nr - 1000, 512).unwrap().va, 0x3fe0_0000);
        let e = WindowPlan::new(nr, nr - 1000, 513).unwrap_err();
        assert_eq!(
            e,
            WindowError::AddressSpace {
                pages: 513,
                max_pages: 512,
                domain_kib: 1022 * 1024
            }
        );
        assert!(std::format!("{e}").contains("at most 512 pages (2 MiB)"));
        // the tables must leave the heap its minimum
        let e = WindowPlan::new(8192, 300, 100 * 512).unwrap_err();
        assert!(
            matches!(e, WindowError::Tables { tables: 100, .. }),
            "{e:?}"
        );
        // 16 MiB domain: up to 1008 MiB of window
        assert_eq!(
            WindowPlan::new(4096, 4000, 1008 * 256).unwrap().va,
            16 << 20
        );
        assert!(WindowPlan::new(4096, 4000, 1008 * 256 + 1).is_err());
    }

    #[test]
    fn indices() {
        assert_eq!(index(0x3fe0_0000, 1), 511);
        assert_eq!(index(0x3fe0_0000, 2), 0);
        assert_eq!(index(0x20_1000, 0), 1);
        assert_eq!(index(0x20_1000, 1), 1);
    }
}
