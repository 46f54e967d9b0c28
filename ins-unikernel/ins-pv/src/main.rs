//! The INS instance as a Xen PV unikernel.
//!
//! This stage boots, reports what it found, exercises the timer, the heap
//! and the grant table, prints `INS_PV_READY` with its boot-to-ready time,
//! and shuts down (`then=panic` on the command line panics instead, to
//! check the crash path).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use ins_xen_pv::abi::sched::POWEROFF;
use ins_xen_pv::gnttab::GrantTable;
use ins_xen_pv::hypercall;
use ins_xen_pv::println;
use ins_xen_pv::rt::{Boot, heap_stats};

ins_xen_pv::entry!(main);

fn main(mut boot: Boot) -> ! {
    let si = &boot.start_info;
    let (maj, min) = hypercall::xen_version();
    println!(
        "ins-pv: Xen {maj}.{min}, {} pages ({} KiB), image {} KiB, cmdline \"{}\"",
        si.nr_pages,
        si.nr_pages * 4,
        boot.image_bytes / 1024,
        core::str::from_utf8(si.cmd_line()).unwrap_or("?")
    );
    let m = boot.mem_stats;
    println!(
        "memory: free from pfn {:#x}, builder mapped up to pfn {:#x}, {} L1 tables added, heap from pfn {:#x}",
        m.free_start_pfn, m.initially_mapped_pfn, m.l1_tables_added, m.heap_start_pfn
    );
    let h = heap_stats();
    println!(
        "heap: {} KiB claimed, {} KiB available",
        h.claimed / 1024,
        h.available / 1024
    );

    // The timer: sleep 10 ms through VIRQ_TIMER and SCHEDOP_poll.
    let t0 = boot.clock.now_ns();
    let deadline = t0 + 10_000_000;
    boot.timer.arm(deadline).expect("arm the timer");
    let mut wakeups = 0;
    while boot.clock.now_ns() < deadline {
        boot.events.wait(&[boot.timer.port()], None).expect("poll");
        boot.events.take(boot.timer.port());
        wakeups += 1;
    }
    let slept = boot.clock.now_ns() - t0;
    println!("timer: slept {} us ({wakeups} wake-ups)", slept / 1000);

    // The heap: touch 4 MiB (more than the builder's initial mapping).
    let mut v: Vec<u8> = Vec::new();
    v.resize(4 << 20, 0xa5);
    let sum: u64 = v.iter().step_by(4096).map(|&b| u64::from(b)).sum();
    println!(
        "heap: 4 MiB touched (checksum {sum}), {} KiB in use",
        heap_stats().allocated / 1024
    );
    drop(v);

    // The grant table: grant a page to dom0 read-only, then end the grant.
    let mut gt = GrantTable::setup(boot.memory.window(), 1).expect("grant table");
    let page: Vec<u8> = alloc::vec![0; 8192];
    let va = (page.as_ptr().addr() + 4095) & !4095;
    let mfn = boot.memory.va_to_mfn(va).expect("mfn of a heap page");
    let gref = gt.grant(0, mfn, true).expect("grant");
    gt.end(gref).expect("end the grant");
    println!(
        "gnttab: {} entries, granted and ended ref {gref} (mfn {mfn:#x})",
        gt.nr_entries()
    );

    let ready = boot.clock.now_ns();
    let rs = hypercall::runstate().expect("runstate");
    println!(
        "INS_PV_READY created_to_ready_us={} first_run_to_ready_us={} entry_to_ready_us={} wall_s={}",
        (ready - rs.created_ns()) / 1000,
        (ready - rs.first_run_ns()) / 1000,
        (ready - boot.boot_ns) / 1000,
        boot.clock.wall_ns() / 1_000_000_000
    );
    if si.arg("then") == Some("panic") {
        panic!("requested by the command line (then=panic)");
    }
    println!("ins-pv: powering off");
    hypercall::shutdown(POWEROFF)
}
