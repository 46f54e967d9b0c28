//! The guest runtime: Xen ELF notes, the entry point, the boot stack, the
//! global allocator and the panic handler (feature `rt`).
//!
//! Boot, in order:
//! 1. `_start` (Xen enters with `rsi` = start_info, `rsp` = the end of the
//!    builder's one-page boot stack) moves to [`STACK_BYTES`] of our own
//!    stack in `.bss` (below it a guard page, unmapped at boot) and calls
//!    `rt_start`.
//! 2. start_info is copied and parsed; the console ring (found through the
//!    M2P table) becomes the `print!` target.
//! 3. [`Memory::init`] maps every frame of the domain and builds the
//!    foreign-mapping window (`foreign_mib=N` on the command line: N MiB,
//!    default 2; a size the domain cannot hold stops the boot with a
//!    `FATAL:` line naming the limit); page 0 and the stack guard are
//!    unmapped.
//! 4. The frames after the page tables become the heap of the global
//!    allocator (talc).
//! 5. shared_info is mapped in the window; the event channels, the clock
//!    and the timer (`VIRQ_TIMER`) are set up.
//! 6. The program's entry, declared with [`entry!`](crate::entry), runs
//!    with a [`Boot`].
//!
//! A panic prints `PANIC: <message>` on the console and shuts the domain
//! down with reason `crash`.
#![allow(unsafe_code)]

use core::fmt::Write;

use talc::TalcLock;
use talc::source::Manual;

use crate::abi::sched::CRASH;
use crate::abi::{PAGE_SHIFT, start_info as si_off};
use crate::console::Console;
use crate::events::{Events, Timer};
use crate::hypercall;
use crate::mm::{DEFAULT_WINDOW_PAGES, MemStats, Memory};
use crate::page::Mapped;
use crate::start_info::StartInfo;
use crate::time::Clock;

/// Bytes of the boot stack.
pub const STACK_BYTES: usize = 256 * 1024;

#[repr(C, align(4096))]
struct Stack([u8; STACK_BYTES]);

#[unsafe(link_section = ".bss.stack")]
static mut BOOT_STACK: Stack = Stack([0; STACK_BYTES]);

core::arch::global_asm!(
    ".macro INS_XEN_NOTE type:req, body:vararg",
    "  .balign 4",
    "  .long 4",
    "  .long 8f - 7f",
    "  .long \\type",
    "  .asciz \"Xen\"",
    "7: \\body",
    "8: .balign 4",
    ".endm",
    ".pushsection .note.Xen, \"a\", @note",
    "INS_XEN_NOTE 6, .asciz \"INS\"",            // GUEST_OS
    "INS_XEN_NOTE 7, .asciz \"0.1\"",            // GUEST_VERSION
    "INS_XEN_NOTE 5, .asciz \"xen-3.0\"",        // XEN_VERSION
    "INS_XEN_NOTE 8, .asciz \"generic\"",        // LOADER
    "INS_XEN_NOTE 1, .quad _start",              // ENTRY
    "INS_XEN_NOTE 2, .quad hypercall_page",      // HYPERCALL_PAGE
    "INS_XEN_NOTE 3, .quad 0",                   // VIRT_BASE
    "INS_XEN_NOTE 4, .quad 0",                   // PADDR_OFFSET
    "INS_XEN_NOTE 10, .asciz \"\"",              // FEATURES: none required
    ".popsection",
    ".pushsection .text.boot, \"ax\", @progbits",
    ".globl _start",
    "_start:",
    "  mov rdi, rsi",
    "  mov rsi, rsp",
    "  lea rsp, [rip + {stack} + {size}]",
    "  call {start}",
    "  ud2",
    ".popsection",
    stack = sym BOOT_STACK,
    size = const STACK_BYTES,
    start = sym rt_start,
);

unsafe extern "C" {
    /// The guard page below the boot stack (linker script).
    static __stack_guard: u8;
}

#[global_allocator]
static HEAP: TalcLock<spinning_top::RawSpinlock, Manual> = TalcLock::new(Manual);

/// Heap figures (talc's counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes handed to the allocator.
    pub claimed: usize,
    /// Bytes in live allocations.
    pub allocated: usize,
    /// Bytes still available.
    pub available: usize,
    /// Live allocations.
    pub allocations: usize,
}

/// The current heap figures.
pub fn heap_stats() -> HeapStats {
    let t = HEAP.lock();
    let c = t.counters();
    HeapStats {
        claimed: c.claimed_bytes,
        allocated: c.allocated_bytes,
        available: c.available_bytes,
        allocations: c.allocation_count,
    }
}

/// What the runtime hands to the program.
#[derive(Debug)]
pub struct Boot {
    /// start_info as Xen gave it.
    pub start_info: StartInfo,
    /// Memory, p2m lookups and the foreign-mapping window.
    pub memory: Memory,
    /// Figures from memory set-up.
    pub mem_stats: MemStats,
    /// Event channels.
    pub events: Events,
    /// Xen system time and wall clock.
    pub clock: Clock,
    /// The one-shot timer.
    pub timer: Timer,
    /// The console.
    pub console: Console,
    /// The xenstore ring page (`None` if start_info named no frame of ours).
    pub store: Option<Mapped>,
    /// Xen system time when the runtime first read the clock (shared_info
    /// mapped: a few hundred microseconds after entry).
    pub boot_ns: u64,
    /// Bytes of the image (`.text` to the end of `.bss`).
    pub image_bytes: u64,
}

/// Declares the program's entry: `fn(Boot) -> !`.
#[macro_export]
macro_rules! entry {
    ($f:path) => {
        #[unsafe(no_mangle)]
        fn __ins_pv_main(boot: $crate::rt::Boot) -> ! {
            let f: fn($crate::rt::Boot) -> ! = $f;
            f(boot)
        }
    };
}

unsafe extern "Rust" {
    fn __ins_pv_main(boot: Boot) -> !;
}

unsafe extern "C" {
    static __image_start: u8;
    static _end: u8;
}

fn fatal(what: &str, err: &dyn core::fmt::Display) -> ! {
    if let Some(mut c) = Console::global() {
        let _ = writeln!(c, "FATAL: {what}: {err}");
    }
    hypercall::shutdown(CRASH)
}

extern "C" fn rt_start(si_va: u64, entry_rsp: u64) -> ! {
    let mut raw = [0u8; si_off::LEN];
    // SAFETY: Xen enters with rsi = the virtual address of start_info, a
    // mapped page of this domain at least LEN bytes long.
    unsafe { core::ptr::copy_nonoverlapping(si_va as *const u8, raw.as_mut_ptr(), si_off::LEN) };
    let Ok(si) = StartInfo::parse(&raw) else {
        hypercall::shutdown(CRASH);
    };
    // The console page is mapped by the builder at pfn << 12; find the pfn
    // through the M2P table before Memory exists.
    let console_pfn = {
        // SAFETY: Xen maps the M2P table read-only into every PV guest;
        // console_mfn is a frame of this domain, so its entry exists.
        unsafe {
            core::ptr::read_volatile(
                (crate::abi::mmu::M2P_VIRT_START + si.console_mfn * 8) as *const u64,
            )
        }
    };
    let store_pfn = {
        // SAFETY: as above, for the xenstore page (a frame of this domain).
        unsafe {
            core::ptr::read_volatile(
                (crate::abi::mmu::M2P_VIRT_START + si.store_mfn * 8) as *const u64,
            )
        }
    };
    if console_pfn < si.nr_pages {
        // SAFETY: the console ring page is mapped by the domain builder
        // and shared with the console daemon (only reached via Mapped).
        let ring = unsafe { Mapped::new((console_pfn << PAGE_SHIFT) as usize, 1) };
        Console::new(ring, si.console_evtchn).install();
    }
    let window_pages = match si.arg("foreign_mib").map(|v| v.parse::<u64>()) {
        None => DEFAULT_WINDOW_PAGES as u64,
        Some(Ok(mib)) if (1..=1024).contains(&mib) => mib * 256,
        Some(_) => fatal(
            "command line",
            &"foreign_mib= must be a whole number of MiB, 1 ..= 1024 (and fit below 1 GiB with the domain's memory)",
        ),
    };
    // SAFETY: called once at boot with the real start_info and entry rsp;
    // the frames past the boot stack are free.
    let (mut memory, heap_va, heap_len, mem_stats) =
        match unsafe { Memory::init(&si, entry_rsp, window_pages) } {
            Ok(v) => v,
            Err(e) => fatal("memory set-up", &e),
        };
    // SAFETY: nothing lives at page 0 or in the guard page below the boot
    // stack; unmapping them turns null dereferences and stack overflows
    // into faults.
    unsafe {
        let _ = hypercall::update_va_mapping(0, 0, crate::abi::mmu::UVMF_INVLPG);
    }
    let guard = (&raw const __stack_guard).addr() as u64;
    // SAFETY: as above.
    unsafe {
        let _ = hypercall::update_va_mapping(guard, 0, crate::abi::mmu::UVMF_INVLPG);
    }
    // SAFETY: [heap_va, heap_va + heap_len) are mapped, writable frames no
    // one else uses (after the page tables Memory::init took).
    if unsafe { HEAP.lock().claim(heap_va as *mut u8, heap_len) }.is_none() {
        fatal("heap", &"cannot claim the heap");
    }
    let Some(sh_va) = memory.window().alloc(1) else {
        fatal("shared_info", &"window full");
    };
    // SAFETY: the slot was just reserved; shared_info is a frame Xen lets
    // every PV guest map.
    if let Err(e) = unsafe {
        memory
            .window()
            .map(sh_va, si.shared_info_maddr >> PAGE_SHIFT)
    } {
        fatal("shared_info", &e);
    }
    // SAFETY: mapped above for the life of the domain.
    let shared = unsafe { Mapped::new(sh_va, 1) };
    let clock = Clock::new(shared);
    let boot_ns = clock.now_ns();
    let events = Events::new(shared);
    let timer = match Timer::bind(&events) {
        Ok(t) => t,
        Err(e) => fatal("timer", &e),
    };
    let console = Console::global().unwrap_or_else(|| fatal("console", &"no console page"));
    let store = (store_pfn < memory.nr_pages()
        && memory.pfn_to_mfn(store_pfn) == Some(si.store_mfn))
    .then(|| {
        // SAFETY: the xenstore ring page is mapped by the domain builder
        // at pfn << 12 and shared with xenstored (only reached via Mapped).
        unsafe { Mapped::new((store_pfn << PAGE_SHIFT) as usize, 1) }
    });
    let image_bytes = ((&raw const _end).addr() - (&raw const __image_start).addr()) as u64;
    let boot = Boot {
        start_info: si,
        memory,
        mem_stats,
        events,
        clock,
        timer,
        console,
        store,
        boot_ns,
        image_bytes,
    };
    // SAFETY: defined by the program through `entry!` with this signature.
    unsafe { __ins_pv_main(boot) }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if let Some(mut c) = Console::global() {
        let _ = writeln!(c, "PANIC: {info}");
    }
    hypercall::shutdown(CRASH)
}
