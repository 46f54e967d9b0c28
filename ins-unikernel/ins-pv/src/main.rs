//! The INS instance as a Xen PV unikernel.
//!
//! Boot: the PV runtime (ins-xen-pv) maps memory and the console; then
//! xenstore, the grant table, netfront and smoltcp are brought up from
//! the command line's addresses (`ip=`, `gw=`, `ip6=`, `gw6=`, `seed=`),
//! `INS_PV_READY` is printed with boot figures, and the instance serves.
//! `then=poweroff` / `then=panic` stop after READY instead, and `net=none`
//! skips networking (boot tests without a vif).
//!
//! With `driver=<domid> channel=<name>` the instance joins that driver
//! over an INS Xen channel ([`chan`]) and runs ins-core's executor over
//! smoltcp on the driver's ring ([`serve`]) until the driver closes the
//! channel or goes away; it then tears the channel down and powers off.
//! Without them it serves the stand-alone demo of [`demo`].
#![no_std]
#![no_main]

extern crate alloc;

mod chan;
mod demo;
mod platform;
mod serve;

use ins_core::Executor;
use ins_core::config::InstanceConfig;
use ins_netfront::front::{NetConfig, Netfront};
use ins_protocol::hello::{Hello, Role};
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
    let joining = si.arg("driver").is_some() || si.arg("channel").is_some();
    let mut cfg = cfg;
    let mut joined = None;
    if joining {
        let args = match chan_args(&si) {
            Ok(a) => a,
            Err(e) => panic!("command line: {}", e.0),
        };
        // the ring's frame buffer plus 1 MiB of slack stay out of the
        // socket budget
        let reserve = args.max_frame_limit as usize + (1 << 20);
        let icfg =
            match platform::instance_config(&si, cfg.tcp_buf, heap_stats().available, reserve) {
                Ok(c) => c,
                Err(e) => panic!("command line: {e}"),
            };
        cfg.max_sockets = icfg.max_sockets;
        println!(
            "instance: max_sockets={} window={} max_flows={} max_mitigation_rules={} telemetry={} heartbeat_ms={} tcpbuf={} foreign window {} pages ({} free)",
            icfg.max_sockets,
            icfg.window_bytes,
            icfg.max_flows,
            icfg.max_mitigation_rules,
            if icfg.telemetry { "on" } else { "off" },
            icfg.heartbeat_interval_ns / 1_000_000,
            cfg.tcp_buf,
            boot.memory.window().pages(),
            boot.memory.window().free_pages(),
        );
        joined = Some((args, icfg));
    }
    let waiter = platform::PvWaiter::new(boot.clock, boot.events, boot.timer, &[nf.port()]);
    let mut stack = SmolStack::new(cfg, nf, waiter);

    report_ready(boot.clock, boot.boot_ns);
    if let Some((args, icfg)) = joined {
        let mut p = chan::Platform {
            xs: &mut xs,
            events: boot.events,
            clock: boot.clock,
            window: boot.memory.window(),
            store_port: si.store_evtchn,
        };
        join_and_serve(&si, &args, icfg, &mut p, stack)
    }
    finish(&si, Some(&mut stack))
}

/// The channel's command-line arguments.
fn chan_args(si: &StartInfo) -> Result<chan::ChanArgs, platform::BadArg> {
    use platform::BadArg;
    fn num<T: core::str::FromStr>(
        si: &StartInfo,
        k: &'static str,
        default: T,
    ) -> Result<T, BadArg> {
        si.arg(k)
            .map_or(Ok(default), |v| v.parse().map_err(|_| BadArg(k)))
    }
    let driver = si
        .arg("driver")
        .and_then(|v| ins_xen::DomId::parse(v.as_bytes()))
        .filter(|d| d.is_real())
        .ok_or(BadArg(
            "driver= (a real domain id) is required with channel=",
        ))?;
    let name = si
        .arg("channel")
        .ok_or(BadArg("channel= is required with driver="))?;
    Ok(chan::ChanArgs {
        driver,
        name: name.into(),
        // by default only the free foreign window limits an offer
        max_pages: num(si, "chan_pages", u32::MAX)?,
        max_frame_limit: num(si, "chan_max_frame", 1u32 << 20)?,
        rendezvous_ns: num(si, "rendezvous_s", 300u64)?.saturating_mul(1_000_000_000),
        hello_ns: num(si, "hello_s", 60u64)?.saturating_mul(1_000_000_000),
    })
}

/// Joins the driver, serves its ring until it goes, tears the channel
/// down and powers off.
fn join_and_serve(
    si: &StartInfo,
    args: &chan::ChanArgs,
    icfg: InstanceConfig,
    p: &mut chan::Platform<'_>,
    stack: demo::S,
) -> ! {
    let instance_id: u32 = match si.arg("instance_id").map(str::parse) {
        None => 0,
        Some(Ok(id)) => id,
        Some(Err(_)) => panic!("command line: instance_id= must be a number (0 ..= 4294967295)"),
    };
    let mut hello = Hello::new(Role::Instance);
    hello.instance_id = instance_id;
    hello.max_sockets = icfg.max_sockets as u32;
    hello.window = icfg.window_bytes;
    hello.time_ns = p.clock.wall_ns();
    let t = p.clock.now_ns();
    let mut ch = match chan::join(p, args, hello) {
        Ok(ch) => ch,
        Err(e) => {
            println!("INS_PV_CHANNEL_FAILED {e}");
            hypercall::shutdown(POWEROFF)
        }
    };
    println!(
        "INS_PV_JOINED driver={} channel={} version={} pages={} ring_port={} live_port={} driver_window={} in {} ms",
        ch.id().driver,
        ch.id().name,
        ch.version,
        ch.pages(),
        ch.ring_port,
        ch.live_port,
        ch.peer.window,
        (p.clock.now_ns() - t) / 1_000_000
    );
    let mut stack = stack;
    stack
        .waiter_mut()
        .add_outside(&[ch.ring_port, ch.live_port, p.store_port]);
    let mut exec = match Executor::new(stack, icfg, ch.peer.window, instance_id) {
        Ok(e) => e,
        Err(e) => panic!("instance config: {e}"),
    };
    let end = serve::run(&mut exec, &mut ch, p.xs, p.events, p.clock);
    let c = exec.counters();
    println!("INS_PV_SERVING_ENDED {end}; executor {c:?}");
    exec.stack_mut().waiter_mut().clear_outside();
    match ch.close(p) {
        Ok(pages) => println!("INS_PV_CHANNEL_CLOSED unmapped={pages} ports closed, keys removed"),
        Err(e) => println!("INS_PV_CHANNEL_CLOSE_FAILED {e}"),
    }
    hypercall::shutdown(POWEROFF)
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
