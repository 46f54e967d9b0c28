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
//! `mmu_update`. It also builds an empty L1 for the [`Window`], a 2 MiB
//! range just below 1 GiB where foreign frames are mapped (shared_info,
//! grant-table frames, a peer's granted pages). Domains are limited to
//! [`MAX_DOMAIN_BYTES`] so that the window never overlaps memory.
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

/// Virtual address of the foreign-mapping window.
pub const WINDOW_VA: u64 = 0x3fe0_0000;
/// Pages in the window.
pub const WINDOW_PAGES: usize = 512;
/// Largest domain this layout supports (everything below the window).
pub const MAX_DOMAIN_BYTES: u64 = WINDOW_VA;

const L1_PROT: u64 = PRESENT | RW | ACCESSED;
const TABLE_PROT: u64 = PRESENT | RW | ACCESSED | DIRTY | USER;

/// Why memory set-up failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// The builder's layout is not the one this platform expects.
    Layout(&'static str),
    /// A hypercall failed.
    Xen(XenError),
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemError::Layout(s) => write!(f, "unexpected memory layout: {s}"),
            MemError::Xen(e) => e.fmt(f),
        }
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
    /// Maps every frame of the domain and builds the window; returns the
    /// memory and the heap range `[va, va + len)`.
    ///
    /// # Safety
    ///
    /// Call once, at boot, with the domain's own start_info and the stack
    /// pointer the domain was entered with; nothing may live in the frames
    /// from that stack pointer on.
    pub unsafe fn init(
        si: &StartInfo,
        entry_rsp: u64,
    ) -> Result<(Memory, usize, usize, MemStats), MemError> {
        let nr_pages = si.nr_pages;
        if nr_pages << PAGE_SHIFT > MAX_DOMAIN_BYTES {
            return Err(MemError::Layout(
                "domain larger than the supported 1022 MiB",
            ));
        }
        let free_start_pfn = entry_rsp.div_ceil(PAGE_SIZE as u64);
        let after_tables = (si.pt_base >> PAGE_SHIFT) + si.nr_pt_frames;
        if free_start_pfn <= after_tables || free_start_pfn >= nr_pages {
            return Err(MemError::Layout("boot stack not after the page tables"));
        }
        let mut mem = Memory {
            nr_pages,
            p2m_va: si.mfn_list,
            pt_base: si.pt_base,
            window: Window {
                l1_maddr: 0,
                used: [0; WINDOW_PAGES / 64],
            },
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
        // SAFETY: the window lies above every frame of the domain.
        unsafe {
            mem.map_chunk(
                &mut bump,
                WINDOW_VA >> PAGE_SHIFT,
                (WINDOW_VA >> PAGE_SHIFT) + 512,
                false,
            )?
        };
        stats.l1_tables_added += 1;
        mem.window.l1_maddr = mem
            .l1_maddr(WINDOW_VA)
            .ok_or(MemError::Layout("window L1 missing"))?;
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

/// A 2 MiB range of virtual addresses with an L1 table and no memory,
/// where foreign frames are mapped one page at a time.
#[derive(Debug)]
pub struct Window {
    l1_maddr: u64,
    used: [u64; WINDOW_PAGES / 64],
}

impl Window {
    /// Reserves `n` contiguous pages; returns the first one's address.
    pub fn alloc(&mut self, n: usize) -> Option<usize> {
        if n == 0 || n > WINDOW_PAGES {
            return None;
        }
        let is_used = |w: &Self, i: usize| w.used[i / 64] & (1 << (i % 64)) != 0;
        let mut start = 0;
        while start + n <= WINDOW_PAGES {
            match (start..start + n).find(|&i| is_used(self, i)) {
                Some(busy) => start = busy + 1,
                None => {
                    for i in start..start + n {
                        self.used[i / 64] |= 1 << (i % 64);
                    }
                    return Some(WINDOW_VA as usize + start * PAGE_SIZE);
                }
            }
        }
        None
    }

    /// Pages not reserved (not necessarily contiguous).
    pub fn free_pages(&self) -> usize {
        WINDOW_PAGES
            - self
                .used
                .iter()
                .map(|w| w.count_ones() as usize)
                .sum::<usize>()
    }

    /// Releases `n` pages from `va` (they must be unmapped first).
    pub fn free(&mut self, va: usize, n: usize) {
        let first = va.wrapping_sub(WINDOW_VA as usize) / PAGE_SIZE;
        for i in first..(first + n).min(WINDOW_PAGES) {
            self.used[i / 64] &= !(1 << (i % 64));
        }
    }

    /// Whether `va` is a page of the window.
    pub fn contains(&self, va: usize) -> bool {
        (WINDOW_VA as usize..WINDOW_VA as usize + WINDOW_PAGES * PAGE_SIZE).contains(&va)
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

    /// Machine address of the window's L1 table.
    pub fn l1_maddr(&self) -> u64 {
        self.l1_maddr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        Window {
            l1_maddr: 0,
            used: [0; WINDOW_PAGES / 64],
        }
    }

    #[test]
    fn window_allocation() {
        let mut w = window();
        let a = w.alloc(1).unwrap();
        assert_eq!(a, WINDOW_VA as usize);
        let b = w.alloc(3).unwrap();
        assert_eq!(b, a + PAGE_SIZE);
        w.free(a, 1);
        assert_eq!(
            w.alloc(2).unwrap(),
            b + 3 * PAGE_SIZE,
            "a 2-page hole is not at a"
        );
        assert_eq!(w.alloc(1).unwrap(), a);
        assert!(w.alloc(WINDOW_PAGES).is_none());
        assert!(w.alloc(0).is_none());
        let mut w = window();
        assert!(w.alloc(WINDOW_PAGES).is_some());
        assert!(w.alloc(1).is_none());
        assert!(w.contains(WINDOW_VA as usize));
        assert!(!w.contains(WINDOW_VA as usize + WINDOW_PAGES * PAGE_SIZE));
    }

    #[test]
    fn indices() {
        assert_eq!(index(WINDOW_VA, 1), 511);
        assert_eq!(index(WINDOW_VA, 2), 0);
        assert_eq!(index(0x20_1000, 0), 1);
        assert_eq!(index(0x20_1000, 1), 1);
    }
}
