//! The INS instance as a Xen PV unikernel.
//!
//! Boot: the PV runtime (ins-xen-pv) maps memory and the console; then
//! xenstore, the grant table, netfront and smoltcp are brought up from
//! the command line's addresses (`ip=`, `gw=`, `ip6=`, `gw6=`, `seed=`),
//! `INS_PV_READY` is printed with boot figures, and the instance serves.
//! `then=poweroff` / `then=panic` stop after READY instead, and `net=none`
//! skips networking (boot tests without a vif).
#![no_std]
#![no_main]

extern crate alloc;

mod demo;
mod platform;

use ins_netfront::front::{NetConfig, Netfront};
use ins_smol_stack::SmolStack;
use ins_xen::xenstore::Client;
use ins_xen_pv::abi::sched::POWEROFF;
use ins_xen_pv::gnttab::GrantTable;
use ins_xen_pv::hypercall;
use ins_xen_pv::println;
use ins_xen_pv::rt::{Boot, heap_stats};
use ins_xen_pv::start_info::StartInfo;
use ins_xen_pv::time::Clock;
use ins_xen_pv::xenstore::XsRing;

ins_xen_pv::entry!(main);

/// How long one xenstore read or write may wait.
const XS_TIMEOUT_NS: u64 = 10_000_000_000;
/// Grant-table frames (512 entries each).
const GRANT_FRAMES: u32 = 2;

fn main(mut boot: Boot) -> ! {
    let si = boot.start_info.clone();
    let (maj, min) = hypercall::xen_version();
    println!(
        "ins-pv: Xen {maj}.{min}, {} KiB, image {} KiB, cmdline \"{}\"",
        si.nr_pages * 4,
        boot.image_bytes / 1024,
        core::str::from_utf8(si.cmd_line()).unwrap_or("?")
    );
    let seed = platform::entropy(&si, &boot.clock);
    ins_core::hash::set_seed(seed[0], seed[1]);

    let Some(store) = boot.store else {
        panic!("no xenstore page");
    };
    let ring = XsRing::new(
        store,
        si.store_evtchn,
        boot.events,
        boot.clock,
        XS_TIMEOUT_NS,
    );
    let mut xs = Client::new(ring, 16);
    let mut gt = GrantTable::setup(boot.memory.window(), GRANT_FRAMES).expect("grant table");
    if si.arg("net") == Some("none") {
        // boot tests: no vif
        report_ready(boot.clock, boot.boot_ns);
        finish(&si, None);
    }
    let t_net = boot.clock.now_ns();
    let nf = match Netfront::connect(
        &mut xs,
        &mut gt,
        &boot.memory,
        boot.events,
        &NetConfig::default(),
    ) {
        Ok(nf) => nf,
        Err(e) => panic!("netfront: {e}"),
    };
    let net_ms = (boot.clock.now_ns() - t_net) / 1_000_000;
    let mac = nf.mac();
    let cfg = match platform::stack_config(&si, mac, seed[1]) {
        Ok(c) => c,
        Err(e) => panic!("command line: {}", e.0),
    };
    println!(
        "net: mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, {} pages of buffers, connected in {net_ms} ms, ip {:?} gw {:?}",
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5],
        nf.pages(),
        cfg.ipv4,
        cfg.gateway4
    );
    let waiter = platform::PvWaiter::new(boot.clock, boot.events, boot.timer, &[nf.port()]);
    let mut stack = SmolStack::new(cfg, nf, waiter);

    report_ready(boot.clock, boot.boot_ns);
    finish(&si, Some(&mut stack))
}

fn report_ready(clock: Clock, boot_ns: u64) {
    let ready = clock.now_ns();
    let rs = hypercall::runstate().expect("runstate");
    let h = heap_stats();
    println!(
        "INS_PV_READY created_to_ready_us={} first_run_to_ready_us={} entry_to_ready_us={} heap_used_kib={} heap_free_kib={}",
        (ready - rs.created_ns()) / 1000,
        (ready - rs.first_run_ns()) / 1000,
        (ready - boot_ns) / 1000,
        h.allocated / 1024,
        h.available / 1024,
    );
}

fn finish(si: &StartInfo, stack: Option<&mut demo::S>) -> ! {
    match (si.arg("then"), stack) {
        (Some("panic"), _) => panic!("requested by the command line (then=panic)"),
        (Some("poweroff"), _) | (_, None) => {
            println!("ins-pv: powering off");
            hypercall::shutdown(POWEROFF)
        }
        (_, Some(stack)) => demo::serve(stack),
    }
}
