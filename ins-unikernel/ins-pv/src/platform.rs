//! Glue between the PV platform and the network stack: the waiter that
//! sleeps in `SCHEDOP_poll`, the command-line configuration and entropy.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};

use ins_core::config::InstanceConfig;

use ins_smol_stack::{StackConfig, Waiter};
use ins_xen_pv::events::{Events, Timer};
use ins_xen_pv::start_info::StartInfo;
use ins_xen_pv::time::Clock;

/// Sleeps until one of its ports fires or the one-shot timer expires.
///
/// `ports` are the stack's own (netfront); `outside` ports belong to the
/// platform's loop (the driver's ring, the liveness port, xenstore): when
/// one of them was pending after a wait, [`Waiter::take_outside_wake`]
/// says so once. Pending bits are only wake-up hints: every owner looks
/// at its shared state (ring indices, alive words) afterwards.
pub struct PvWaiter {
    clock: Clock,
    events: Events,
    timer: Timer,
    /// The stack's ports, then the outside ones, then the timer's.
    ports: Vec<u32>,
    stack_ports: usize,
    outside_woke: bool,
}

impl PvWaiter {
    /// Waits on `ports` and the timer.
    pub fn new(clock: Clock, events: Events, timer: Timer, ports: &[u32]) -> PvWaiter {
        let mut p = ports.to_vec();
        p.push(timer.port());
        PvWaiter {
            clock,
            events,
            timer,
            ports: p,
            stack_ports: ports.len(),
            outside_woke: false,
        }
    }

    /// Also waits on `ports`, which belong to the platform's loop.
    pub fn add_outside(&mut self, ports: &[u32]) {
        let timer = self.ports.pop();
        self.ports.extend_from_slice(ports);
        self.ports.extend(timer);
    }

    /// Stops waiting on the outside ports (before they are closed).
    pub fn clear_outside(&mut self) {
        let timer = self.ports.pop();
        self.ports.truncate(self.stack_ports);
        self.ports.extend(timer);
    }
}

impl Waiter for PvWaiter {
    fn now_ns(&mut self) -> u64 {
        self.clock.now_ns()
    }

    fn wait(&mut self, timeout_ns: Option<u64>) {
        if let Some(t) = timeout_ns {
            let _ = self.timer.arm(self.clock.now_ns().saturating_add(t));
        }
        let _ = self.events.wait(&self.ports, None);
        let outside = self.stack_ports..self.ports.len() - 1;
        for (i, &p) in self.ports.iter().enumerate() {
            if self.events.take(p) && outside.contains(&i) {
                self.outside_woke = true;
            }
        }
    }

    fn take_outside_wake(&mut self) -> bool {
        core::mem::take(&mut self.outside_woke)
    }
}

fn parse_cidr4(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/').unwrap_or((s, "24"));
    Some((a.parse().ok()?, l.parse().ok().filter(|&l: &u8| l <= 32)?))
}

fn parse_cidr6(s: &str) -> Option<(Ipv6Addr, u8)> {
    let (a, l) = s.split_once('/').unwrap_or((s, "64"));
    Some((a.parse().ok()?, l.parse().ok().filter(|&l: &u8| l <= 128)?))
}

/// Why the command line is unusable.
#[derive(Debug)]
pub struct BadArg(pub &'static str);

/// Addresses and limits from the command line: `ip=A.B.C.D/len`,
/// `gw=A.B.C.D`, `ip6=addr/len`, `gw6=addr`, `tcpbuf=bytes`.
pub fn stack_config(si: &StartInfo, mac: [u8; 6], seed: u64) -> Result<StackConfig, BadArg> {
    let mut c = StackConfig {
        mac,
        random_seed: seed,
        tcp_buf: 32 * 1024,
        listen_pool: 4,
        ..StackConfig::default()
    };
    if let Some(v) = si.arg("ip") {
        c.ipv4 = Some(parse_cidr4(v).ok_or(BadArg("ip"))?);
    }
    if let Some(v) = si.arg("gw") {
        c.gateway4 = Some(v.parse().map_err(|_| BadArg("gw"))?);
    }
    if let Some(v) = si.arg("ip6") {
        c.ipv6 = Some(parse_cidr6(v).ok_or(BadArg("ip6"))?);
    }
    if let Some(v) = si.arg("gw6") {
        c.gateway6 = Some(v.parse().map_err(|_| BadArg("gw6"))?);
    }
    if let Some(v) = si.arg("tcpbuf") {
        c.tcp_buf = v.parse().map_err(|_| BadArg("tcpbuf"))?;
    }
    if c.ipv4.is_none() && c.ipv6.is_none() {
        return Err(BadArg("ip or ip6 is required"));
    }
    Ok(c)
}

/// Socket buffers (KiB) each socket may hold: receive and send.
fn socket_kib(tcp_buf: usize) -> u64 {
    (2 * tcp_buf as u64).div_ceil(1024)
}

/// The instance's limits (ins-core's [`InstanceConfig`]) from the command
/// line: the Linux `ins`'s flag names with `_` ([`ins_core::config::ARG_KEYS`]:
/// `max_sockets=`, `window=`, `max_flows=`, `max_mitigation_rules=`,
/// `telemetry=on|off`, ...). Defaults for a small domain: 64 KiB window,
/// 4096 flows, 1024 rules, telemetry off, and as many sockets as the heap
/// holds with both buffers full (`tcp_buf` each way), at most 1024.
///
/// Bounded by memory: `heap_free` bytes, less `reserve` (the ring's frame
/// buffer and slack), must hold `max_sockets` sockets' buffers (listeners
/// keep a pool of such sockets, so this is a floor, not a guarantee); a
/// `max_sockets=` beyond that is refused with the figures, as is any
/// value ins-core's [`InstanceConfig::validate`] refuses.
pub fn instance_config(
    si: &StartInfo,
    tcp_buf: usize,
    heap_free: usize,
    reserve: usize,
) -> Result<InstanceConfig, String> {
    let budget_kib = (heap_free.saturating_sub(reserve) / 1024) as u64;
    let fit = (budget_kib / socket_kib(tcp_buf).max(1)) as usize;
    let mut c = InstanceConfig {
        max_sockets: fit.clamp(1, 1024),
        window_bytes: 64 * 1024,
        max_flows: 4096,
        max_mitigation_rules: 1024,
        telemetry: false,
        ..InstanceConfig::default()
    };
    let line =
        core::str::from_utf8(si.cmd_line()).map_err(|_| "command line: not UTF-8".to_string())?;
    for word in line.split_ascii_whitespace() {
        if let Some((k, v)) = word.split_once('=') {
            c.set_arg(k, v).map_err(|e| format!("{e}"))?;
        }
    }
    c.validate().map_err(|e| format!("{e}"))?;
    if c.max_sockets > fit {
        return Err(format!(
            "max_sockets={} needs {} KiB of socket buffers ({} KiB each: tcpbuf={tcp_buf} each way); the heap has {budget_kib} KiB for them ({} KiB free, {} KiB kept for the ring's frames): at most {fit} sockets (or a larger domain, or a smaller tcpbuf=)",
            c.max_sockets,
            c.max_sockets as u64 * socket_kib(tcp_buf),
            socket_kib(tcp_buf),
            heap_free / 1024,
            reserve / 1024,
        ));
    }
    Ok(c)
}

/// Entropy for hash keys, ISNs and ephemeral ports: the toolstack's
/// `seed=` (the real secret: the guest has no RNG device), mixed with the
/// TSC, Xen system time and wall clock.
pub fn entropy(si: &StartInfo, clock: &Clock) -> [u64; 2] {
    let seed: u64 = si.arg("seed").and_then(|s| s.parse().ok()).unwrap_or(0);
    // SAFETY: RDTSC has no memory effects.
    #[allow(unsafe_code)]
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    let mix = |mut x: u64| {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    };
    let a = mix(seed ^ tsc.rotate_left(17));
    let b = mix(a ^ clock.now_ns() ^ clock.wall_ns().rotate_left(29));
    [a, b]
}
