//! The instance's main loop: one epoll set over every socket, the ring
//! doorbell, the driver's control socket and a signalfd.
//!
//! ```text
//!  loop {
//!    pop ≤ RX_BATCH frames from the driver's ring → Executor::on_frame
//!    release them (ring the driver if it waits for space)
//!    on_tick if the executor's deadline passed
//!    on_ring_space if frames wait and the outgoing ring has room again
//!    flush the outgoing ring (ring the driver if it waits for data)
//!    arm the waits: rx.prepare_wait (data), tx.prepare_wait_space (space)
//!    epoll_wait(timeout = next deadline, 0 if work is left)
//!      signal → graceful shutdown · control hang-up → exit
//!      (the doorbell is edge-triggered: a wake-up, never read; a Xen
//!      port is acknowledged, `Doorbell::ack`, or it stays masked)
//!    socket events → Executor::on_events, flush
//!  }
//! ```
//!
//! No lost wake-up: a wait on the ring is armed (`prepare_wait*`, which
//! re-checks after a full fence) before every sleep, and the doorbell is an
//! edge-triggered member of the same epoll set whose every notify is a new
//! edge, so a notification that arrives at any point after the arm makes
//! `epoll_wait` return at once (and the eventfd is never read).
//! No polling: the only timeout is the executor's next deadline; the only
//! spin is `--spin-us` on the ring, right after a turn that did work and
//! before the doorbell is armed (an answer that comes meanwhile needs no
//! notify and no sleep); an idle instance never spins.
//! No allocation per message: frames are popped into one buffer of the
//! channel's `max_frame`, events into a preallocated vector.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ins_core::config::ConfigError;
use ins_core::executor::Executor;
use ins_protocol::hello::{Hello, Role};
use ins_protocol::region::SharedRegion;
use ins_protocol::ring::{Consumer, RING_HEADER_LEN, RingConfig, RingError};
use ins_transport::channel::Transport;
use ins_transport::rendezvous::Layout;
use ins_transport::sys::kmod::connect_kmod;
use ins_transport::sys::xen::connect_xen;
use ins_transport::{Doorbell, Endpoint, MemfdRegion};
use ins_xen::{DomId, channel::ChannelId};

use crate::cli::SandboxMode;
use crate::cli::{Settings, XenTarget, exit};
use crate::sys::{LinuxStack, Watch, raw, sandbox};

/// Frames taken from the driver's ring before other work gets a turn.
pub const RX_BATCH: usize = 256;
/// How long a graceful shutdown waits for ring space for its last frames.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the instance stopped normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The driver closed the control socket.
    DriverClosed,
    /// A signal asked for a graceful shutdown (its number).
    Signal(i32),
}

/// Why the instance stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Connecting or the handshake failed.
    #[error("cannot open a channel with the driver at {path}: {source}")]
    Connect {
        /// The driver's socket.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: ins_transport::Error,
    },
    /// The driver broke the ring protocol.
    #[error("the driver broke the ring protocol: {0}")]
    Protocol(RingError),
    /// The ring refused an operation for another reason (a bug here).
    #[error("ring: {0}")]
    Ring(RingError),
    /// A system call failed.
    #[error("{op}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The sandbox could not be applied.
    #[error("{0}")]
    Sandbox(String),
    /// The executor refused the configuration.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
}

impl InstanceError {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            InstanceError::Connect { .. } => exit::CONNECT,
            InstanceError::Protocol(_) => exit::PROTOCOL,
            InstanceError::Config(_) => exit::USAGE,
            InstanceError::Ring(_) | InstanceError::Io { .. } | InstanceError::Sandbox(_) => {
                exit::RUNTIME
            }
        }
    }
}

fn ring_err(e: RingError) -> InstanceError {
    match e {
        RingError::Corrupt(_) => InstanceError::Protocol(e),
        _ => InstanceError::Ring(e),
    }
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> InstanceError {
    move |source| InstanceError::Io { op, source }
}

/// Monotonic nanoseconds.
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// Nanoseconds since the Unix epoch.
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The executor's outbox: ins-core's ring outbox over the channel's
/// producer. Frames become visible at [`flush`], after each batch.
pub type RingOutbox<R = MemfdRegion> = ins_core::outbox::RingOutbox<Arc<R>>;

/// Publishes pushed frames, ringing `bell` if the driver waits for them.
pub fn flush<R: SharedRegion, B: Doorbell>(
    ob: &mut RingOutbox<R>,
    bell: &B,
) -> Result<(), InstanceError> {
    if ob.publish().map_err(ring_err)? {
        bell.notify()
            .map_err(io_err("ring the driver's doorbell"))?;
    }
    Ok(())
}

/// The hello this instance sends.
pub fn hello(settings: &Settings) -> Hello {
    let mut h = Hello::new(Role::Instance);
    h.instance_id = settings.instance_id;
    h.max_sockets = u32::try_from(settings.instance.max_sockets).unwrap_or(u32::MAX);
    h.window = settings.instance.window_bytes;
    h.pid = std::process::id();
    h.time_ns = wall_ns();
    h
}

/// Connects to the driver and exchanges hellos.
pub fn connect(settings: &Settings) -> Result<Endpoint, InstanceError> {
    ins_transport::connect_channel_with(&settings.driver, hello(settings), &settings.channel)
        .map_err(|source| InstanceError::Connect {
            path: settings.driver.clone(),
            source,
        })
}

/// Raises the soft `RLIMIT_NOFILE` toward `max_sockets` plus some slack,
/// within the hard limit. Returns the resulting soft limit.
pub fn raise_nofile(max_sockets: usize) -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = (max_sockets as u64).saturating_add(64);
    let cur = getrlimit(Resource::Nofile);
    let soft = cur.current?;
    if soft >= want {
        return Some(soft);
    }
    let target = cur.maximum.map_or(want, |hard| hard.min(want));
    if target > soft {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: cur.maximum,
            },
        ) {
            Ok(()) => return Some(target),
            Err(e) => tracing::warn!("cannot raise RLIMIT_NOFILE to {target}: {e}"),
        }
    }
    tracing::warn!(
        "RLIMIT_NOFILE is {soft}, below max-sockets {max_sockets}: opens beyond it fail with EMFILE"
    );
    Some(soft)
}

/// The whole instance: blocks SIGTERM/SIGINT into a signalfd, raises the
/// descriptor limit, connects, then [`serve`]s until the driver goes away
/// or a signal arrives.
pub fn run(settings: &Settings) -> Result<Exit, InstanceError> {
    let signals = [libc::SIGTERM, libc::SIGINT];
    raw::block_signals(&signals).map_err(io_err("block SIGTERM/SIGINT"))?;
    let sigfd = raw::signalfd(&signals).map_err(io_err("signalfd"))?;
    raise_nofile(settings.instance.max_sockets);
    if let Some(xen) = &settings.xen {
        if settings.sandbox != SandboxMode::Off {
            // Its teardown after serving reads and writes xenstore and
            // unmaps grants through /dev/xen: not under this sandbox.
            tracing::info!("sandbox not applied with --xen-driver (local mode and --kmod only)");
        }
        return run_xen(settings, xen, sigfd);
    }
    // Resolved now: once sandboxed, /etc/passwd cannot be read.
    let user = match settings.sandbox {
        SandboxMode::Off => None,
        _ => Some(sandbox::resolve_user(&settings.sandbox_user).map_err(sandbox_err)?),
    };
    if let Some(dev) = &settings.kmod {
        return run_kmod(settings, dev, sigfd, user);
    }
    let ep = connect(settings)?;
    tracing::info!(
        driver = %settings.driver.display(),
        instance_id = settings.instance_id,
        version = ep.version,
        driver_pid = ep.peer.pid,
        driver_window = ep.peer.window,
        max_frame = ep.max_frame,
        "channel open"
    );
    enter_sandbox(settings, user)?;
    if settings.sandbox_selftest {
        let run_dir = settings
            .driver
            .parent()
            .unwrap_or(std::path::Path::new("/"));
        sandbox::selftest(Some(run_dir), ep.peer.pid, None);
    }
    serve(ep, settings, Some(sigfd))
}

/// Applies the sandbox (the channel is open: nothing else is opened from
/// here on), or says it is off.
fn enter_sandbox(
    settings: &Settings,
    user: Option<sandbox::SandboxUser>,
) -> Result<(), InstanceError> {
    match user {
        Some(user) => {
            let done = sandbox::apply(settings.sandbox, user, settings.sandbox_low_ports)
                .map_err(sandbox_err)?;
            tracing::info!(
                uid = done.uid,
                landlock = done.landlock,
                syscalls = done.syscalls,
                "sandbox applied"
            );
        }
        None => tracing::info!("sandbox off"),
    }
    Ok(())
}

fn sandbox_err(e: sandbox::SandboxError) -> InstanceError {
    InstanceError::Sandbox(e.to_string())
}

/// Joins the `ins` kernel module through its device (`--kmod`) and serves
/// the channel until the module closes it or a signal arrives.
fn run_kmod(
    settings: &Settings,
    dev: &std::path::Path,
    sigfd: OwnedFd,
    user: Option<sandbox::SandboxUser>,
) -> Result<Exit, InstanceError> {
    let ep = connect_kmod(dev, hello(settings), &settings.channel).map_err(|source| {
        InstanceError::Connect {
            path: dev.to_path_buf(),
            source,
        }
    })?;
    tracing::info!(
        device = %dev.display(),
        instance_id = settings.instance_id,
        version = ep.version,
        ring = settings.channel.ring_capacity,
        max_frame = ep.max_frame,
        "kernel module channel open"
    );
    // The channel file is mapped and is both doorbells; the watcher
    // thread polls it (`poll` is on the allowlist for it).
    enter_sandbox(settings, user)?;
    if settings.sandbox_selftest {
        sandbox::selftest(None, 1, Some(dev));
    }
    serve(ep, settings, Some(sigfd))
}

/// Joins a driver domain over the Xen transport (`--xen-driver`), serves
/// the channel, then waits for the teardown (unmap, `state=Closed`, keys
/// removed) before returning.
fn run_xen(settings: &Settings, xen: &XenTarget, sigfd: OwnedFd) -> Result<Exit, InstanceError> {
    let what = || std::path::PathBuf::from(format!("xen:dom{}/{}", xen.driver, xen.channel));
    let connect_err = |source| InstanceError::Connect {
        path: what(),
        source,
    };
    let mut xs = ins_transport::sys::xen::XenbusStream::client(&xen.config.xenbus, 16)
        .map_err(|e| connect_err(ins_transport::Error::io("open xenstore")(e)))?;
    let me = xs
        .read(ins_xen::xenstore::TxId::NONE, "domid")
        .ok()
        .and_then(|v| DomId::parse(&v))
        .ok_or_else(|| {
            connect_err(ins_transport::Error::BadHeader(
                "cannot read our domid from xenstore",
            ))
        })?;
    drop(xs);
    let id =
        ChannelId::new(DomId(xen.driver), me, &xen.channel).map_err(|e| connect_err(e.into()))?;
    let ch =
        connect_xen(&id, hello(settings), &settings.channel, &xen.config).map_err(connect_err)?;
    let (ep, link) = ch.into_parts();
    tracing::info!(
        driver = %id.driver,
        channel = %id.name,
        instance_id = settings.instance_id,
        version = ep.version,
        max_frame = ep.max_frame,
        "xen channel open"
    );
    let exit = serve(ep, settings, Some(sigfd));
    match link.join() {
        Ok(t) => tracing::info!(peer_left = t.peer_left, "xen channel closed"),
        Err(e) => tracing::warn!("xen channel teardown: {e}"),
    }
    exit
}

/// Runs the executor over a [`LinuxStack`] on an open channel until the
/// driver closes it (`Ok(Exit::DriverClosed)`), `signals` (a signalfd)
/// becomes readable (graceful shutdown, `Ok(Exit::Signal)`), or an error.
pub fn serve<T: Transport>(
    ep: Endpoint<T>,
    settings: &Settings,
    signals: Option<OwnedFd>,
) -> Result<Exit, InstanceError> {
    let Endpoint {
        tx,
        mut rx,
        tx_bell,
        rx_bell,
        control,
        peer,
        max_frame,
        region: _region,
        ..
    } = ep;
    let mut stack = LinuxStack::with_event_capacity(settings.instance.max_sockets, settings.events)
        .map_err(io_err("create the epoll set"))?;
    stack
        .watch(rx_bell.as_fd(), Watch::Doorbell)
        .map_err(io_err("watch the doorbell"))?;
    stack
        .watch(control.as_fd(), Watch::Control)
        .map_err(io_err("watch the control socket"))?;
    if let Some(fd) = &signals {
        stack
            .watch(fd.as_fd(), Watch::Signal)
            .map_err(io_err("watch the signalfd"))?;
    }
    let mut exec = Executor::new(
        stack,
        settings.instance.clone(),
        peer.window,
        settings.instance_id,
    )?
    .with_random_profile(settings.random_profile);
    if let Some(seed) = settings.random_profile {
        tracing::info!(seed, profile = ?exec.tcp_defaults(), "random TCP profile");
    }
    let mut ob = RingOutbox::new(tx);
    let mut rxbuf = vec![0u8; max_frame];
    let mut events = Vec::with_capacity(settings.events);
    let spin = settings.channel.spin;
    let mut worked = false;
    let fault_at = settings
        .fault_inject_corrupt_ring_after
        .map(|d| Instant::now() + d);

    loop {
        if fault_at.is_some_and(|t| Instant::now() >= t) {
            let to_instance = rx.config();
            return fault_inject_corrupt(
                &ob,
                to_instance,
                &tx_bell,
                &rx_bell,
                exec.stack_mut(),
                &signals,
            );
        }
        let now = mono_ns();
        let wall = wall_ns();

        // Frames from the driver, one batch.
        let mut popped = 0;
        while popped < RX_BATCH {
            match rx.pop(&mut rxbuf).map_err(ring_err)? {
                Some(n) => {
                    exec.on_frame(&rxbuf[..n], now, wall, &mut ob);
                    popped += 1;
                }
                None => break,
            }
        }
        if popped > 0 && rx.release().map_err(ring_err)? {
            tx_bell
                .notify()
                .map_err(io_err("ring the driver's doorbell"))?;
        }
        ob.check().map_err(ring_err)?;

        if exec.next_deadline().is_some_and(|d| d <= now) {
            exec.on_tick(now, wall, &mut ob);
        }
        if let Some(need) = exec.wants_ring_space()
            && ob.fits(need).map_err(ring_err)?
        {
            exec.on_ring_space(now, wall, &mut ob);
        }
        flush(&mut ob, &tx_bell)?;

        // How long may we sleep? Right after work (an answer is likely on
        // its way) spin on the ring first, before asking for a doorbell:
        // a frame that comes meanwhile costs the driver no notify and us
        // no sleep.
        let mut timeout = exec.next_deadline().map(|d| d.saturating_sub(mono_ns()));
        let busy = popped > 0 || worked;
        let spun = popped < RX_BATCH && busy && !spin.is_zero() && spin_on(&mut rx, spin)?;
        if popped == RX_BATCH || spun || rx.prepare_wait().map_err(ring_err)? {
            timeout = Some(0);
        }
        if let Some(need) = exec.wants_ring_space()
            && ob.tx.prepare_wait_space(need).map_err(ring_err)?
        {
            timeout = Some(0);
        }

        if let Some(t) = fault_at {
            let left = t.saturating_duration_since(Instant::now()).as_nanos();
            let left = u64::try_from(left).unwrap_or(u64::MAX);
            timeout = Some(timeout.map_or(left, |x| x.min(left)));
        }

        events.clear();
        let wake = exec
            .stack_mut()
            .poll(timeout, &mut events)
            .map_err(|e| InstanceError::Io {
                op: "epoll_wait",
                source: io::Error::from_raw_os_error(e.0),
            })?;
        if wake.signal
            && let Some(fd) = &signals
            && let Some(sig) = raw::read_signal(fd.as_fd()).map_err(io_err("read signalfd"))?
        {
            tracing::info!(signal = sig, "shutting down");
            graceful_shutdown(&mut exec, &mut ob, &tx_bell, &rx_bell)?;
            log_stats(&exec);
            return Ok(Exit::Signal(sig));
        }
        // A Xen port stays masked until acknowledged; an eventfd needs
        // nothing (see `Doorbell::ack`). Before the ring is looked at again.
        if wake.doorbell {
            rx_bell.ack().map_err(io_err("acknowledge the doorbell"))?;
        }
        if wake.control_hup {
            tracing::info!("the driver closed the channel");
            log_stats(&exec);
            return Ok(Exit::DriverClosed);
        }
        worked = !events.is_empty();
        if worked {
            exec.on_events(&events, mono_ns(), wall_ns(), &mut ob);
            flush(&mut ob, &tx_bell)?;
        }
    }
}

/// `--fault-inject-corrupt-ring-after-s` (tests only): garbage into the
/// ring toward the driver and a producer index past its capacity, the
/// doorbell rung; then nothing is served any more: wait (keeping the
/// channel mapped, so the driver finds the corruption rather than a
/// departure) until the driver closes the channel or a signal comes.
///
/// The ring toward the driver sits where [`Layout::new`] puts it (the
/// handshake refused any other layout); its header starts with `prod` (the
/// ring's documented layout). Only the region's bounds-checked accessors
/// are used: no unsafe here.
fn fault_inject_corrupt<R: SharedRegion>(
    ob: &RingOutbox<R>,
    to_instance: RingConfig,
    tx_bell: &impl Doorbell,
    rx_bell: &impl Doorbell,
    stack: &mut LinuxStack,
    signals: &Option<OwnedFd>,
) -> Result<Exit, InstanceError> {
    const GARBAGE: &[u8] = b"\xde\xad\xbe\xef INS FAULT INJECTION garbage frame \xff\xff\xff\x7f";
    /// Offset of `prod` in a ring header.
    const PROD: usize = 0;
    let fault = |what: &'static str| InstanceError::Io {
        op: "fault injection",
        source: io::Error::other(what),
    };
    let to_driver = ob.tx.config();
    let off = Layout::new(to_instance, to_driver)
        .map_err(|_| fault("no ring layout"))?
        .to_driver_offset;
    let mem = ob.tx.memory();
    let oob = |_| fault("ring outside the region");
    let cap = to_driver.capacity as usize;
    let data = off + RING_HEADER_LEN;
    let mut at = 0;
    while at < cap {
        let n = GARBAGE.len().min(cap - at);
        mem.write(data + at, &GARBAGE[..n]).map_err(oob)?;
        at += n;
    }
    // Past capacity whatever the driver has consumed (at most what we
    // published). Release: the garbage above is visible with it.
    let prod = mem.load_u32(off + PROD, Ordering::Relaxed).map_err(oob)?;
    let bad = prod.wrapping_add(to_driver.capacity).wrapping_add(8);
    mem.store_u32(off + PROD, bad, Ordering::Release)
        .map_err(oob)?;
    tx_bell
        .notify()
        .map_err(io_err("ring the driver's doorbell"))?;
    tracing::warn!(
        prod,
        bad,
        capacity = to_driver.capacity,
        "FAULT INJECTION: garbage and a producer index past capacity written into our ring, doorbell rung; serving nothing more"
    );
    let mut events = Vec::with_capacity(16);
    loop {
        events.clear();
        let wake = stack
            .poll(None, &mut events)
            .map_err(|e| InstanceError::Io {
                op: "epoll_wait",
                source: io::Error::from_raw_os_error(e.0),
            })?;
        if wake.signal
            && let Some(fd) = signals
            && let Some(sig) = raw::read_signal(fd.as_fd()).map_err(io_err("read signalfd"))?
        {
            tracing::info!(signal = sig, "shutting down after the fault injection");
            return Ok(Exit::Signal(sig));
        }
        if wake.control_hup {
            tracing::info!("the driver closed the channel after the fault injection");
            return Ok(Exit::DriverClosed);
        }
        if wake.doorbell {
            rx_bell.ack().map_err(io_err("acknowledge the doorbell"))?;
        }
        // Sockets are no longer served: their readiness may repeat; a
        // short sleep keeps this wait from spinning.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Spins on the ring for up to `spin`; returns whether a frame arrived.
fn spin_on<R: SharedRegion>(
    rx: &mut Consumer<Arc<R>>,
    spin: Duration,
) -> Result<bool, InstanceError> {
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            if rx.peek_len().map_err(ring_err)?.is_some() {
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= spin {
            return Ok(false);
        }
    }
}

/// Closes every socket through the executor (final flow records) and waits
/// up to [`SHUTDOWN_GRACE`] for ring space to hand them all to the driver.
fn graceful_shutdown<R: SharedRegion, B: Doorbell>(
    exec: &mut Executor<LinuxStack>,
    ob: &mut RingOutbox<R>,
    tx_bell: &B,
    rx_bell: &B,
) -> Result<(), InstanceError> {
    exec.shutdown(mono_ns(), wall_ns(), ob);
    flush(ob, tx_bell)?;
    let deadline = mono_ns().saturating_add(SHUTDOWN_GRACE.as_nanos() as u64);
    let mut scratch = Vec::new();
    while let Some(need) = exec.wants_ring_space() {
        let now = mono_ns();
        if now >= deadline {
            tracing::warn!("the driver did not make room for the last frames; dropping them");
            break;
        }
        if ob.fits(need).map_err(ring_err)? {
            exec.on_ring_space(now, wall_ns(), ob);
            flush(ob, tx_bell)?;
            continue;
        }
        if ob.tx.prepare_wait_space(need).map_err(ring_err)? {
            continue;
        }
        scratch.clear();
        let wake = exec
            .stack_mut()
            .poll(Some(deadline - now), &mut scratch)
            .map_err(|e| InstanceError::Io {
                op: "epoll_wait",
                source: io::Error::from_raw_os_error(e.0),
            })?;
        if wake.doorbell {
            rx_bell.ack().map_err(io_err("acknowledge the doorbell"))?;
        }
        if wake.control_hup {
            break;
        }
    }
    Ok(())
}

fn log_stats(exec: &Executor<LinuxStack>) {
    tracing::info!(stats = ?exec.stats(), counters = ?exec.counters(), "instance stopped");
}

#[cfg(test)]
mod tests {
    //! A smoke test of the whole loop with a minimal in-process driver; the
    //! full end-to-end suite against the binary is in `tests/`.
    use super::*;
    use crate::cli::parse_args;
    use ins_protocol::msg::{self, Msg};
    use ins_transport::ChannelConfig;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    struct TestDriver {
        ep: Endpoint,
        buf: Vec<u8>,
        out: Vec<u8>,
        heartbeats: Vec<msg::Stats>,
    }

    impl TestDriver {
        fn send(&mut self, m: Msg<'_>) {
            let n = m.encode(&mut self.out).unwrap();
            assert!(
                self.ep
                    .send_wait(&self.out[..n], Some(Duration::from_secs(5)))
                    .unwrap()
            );
        }

        /// Receives frames until `pick` returns a value (heartbeats are
        /// collected on the way).
        fn until<T>(&mut self, mut pick: impl FnMut(&Msg<'_>) -> Option<T>) -> T {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "timed out waiting for the instance");
                let Some(n) = self.ep.recv(&mut self.buf, Some(left)).unwrap() else {
                    continue;
                };
                let m = Msg::decode(&self.buf[..n]).unwrap();
                if let Msg::Heartbeat(s) = m {
                    self.heartbeats.push(s);
                }
                if let Some(v) = pick(&m) {
                    return v;
                }
            }
        }

        fn reply(&mut self, want: u32) -> (i32, Vec<u8>) {
            self.until(|m| match *m {
                Msg::Reply {
                    req, errno, value, ..
                } if req == want => Some((errno, value.to_vec())),
                _ => None,
            })
        }
    }

    #[test]
    fn smoke_listen_accept_data_heartbeats_and_driver_close() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = std::env::temp_dir().join(format!("ins-smoke-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("driver.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let settings = parse_args([
            "ins",
            "--driver",
            path.to_str().unwrap(),
            "--instance-id=5",
            "--max-sockets=64",
            "--max-flows=64",
            "--heartbeat-ms=100",
        ])
        .unwrap()
        .settings()
        .unwrap();
        let inst = std::thread::spawn(move || {
            let ep = connect(&settings)?;
            serve(ep, &settings, None)
        });
        // The driver grants a 64 KiB window (the plain accept_channel hello
        // grants none, so nothing could be pushed before a Credit).
        let (stream, _) = listener.accept().unwrap();
        let cfg = ChannelConfig::default();
        let mut hello = Hello::new(Role::Driver);
        hello.window = 64 << 10;
        let ep = ins_transport::offer_channel(stream, &cfg)
            .unwrap()
            .handshake(hello, cfg.handshake_timeout)
            .unwrap();
        assert_eq!(ep.peer.instance_id, 5);
        assert_eq!(ep.peer.max_sockets, 64);
        assert_eq!(ep.peer.window, 256 * 1024);
        assert_eq!(ep.peer.pid, std::process::id());
        let started = Instant::now();
        let mut d = TestDriver {
            buf: vec![0; ep.max_frame],
            out: vec![0; 4096],
            ep,
            heartbeats: Vec::new(),
        };
        d.send(Msg::Open {
            sock: 1,
            req: 1,
            family: msg::Family::Inet,
            ty: msg::SockType::Stream,
            proto: 0,
        });
        assert_eq!(d.reply(1).0, 0);
        d.send(Msg::Bind {
            sock: 1,
            req: 2,
            addr: "127.0.0.1:0".parse().unwrap(),
        });
        assert_eq!(d.reply(2).0, 0);
        d.send(Msg::Listen {
            sock: 1,
            req: 3,
            backlog: 8,
        });
        assert_eq!(d.reply(3).0, 0);
        d.send(Msg::GetSockName { sock: 1, req: 4 });
        let (e, v) = d.reply(4);
        assert_eq!(e, 0);
        let at = msg::WireAddr::parse(&v).unwrap().unwrap();
        assert_eq!(at.ip(), std::net::IpAddr::from([127, 0, 0, 1]));

        let mut client = std::net::TcpStream::connect(at).unwrap();
        client.write_all(b"hello instance").unwrap();
        let (sock, peer) = d.until(|m| match *m {
            Msg::Accepted {
                listener: 1,
                sock,
                peer,
                local,
            } => {
                assert_eq!(local, at);
                Some((sock, peer))
            }
            _ => None,
        });
        assert_eq!(peer, client.local_addr().unwrap());
        assert_ne!(sock & msg::INSTANCE_SOCK_BIT, 0);
        let mut got = Vec::new();
        while got.len() < 14 {
            let chunk = d.until(|m| match *m {
                Msg::Data { sock: s, bytes } if s == sock => Some(bytes.to_vec()),
                _ => None,
            });
            got.extend(chunk);
        }
        assert_eq!(got, b"hello instance");

        // Heartbeats every 100 ms while idle (no polling in between is
        // checked by the timeout-driven loop; here: they keep coming).
        let hb0 = d.heartbeats.len();
        d.until(|m| matches!(m, Msg::Heartbeat(_)).then_some(()));
        d.until(|m| matches!(m, Msg::Heartbeat(_)).then_some(()));
        d.until(|m| matches!(m, Msg::Heartbeat(_)).then_some(()));
        let elapsed = started.elapsed();
        let hbs = &d.heartbeats;
        assert!(hbs.len() >= hb0 + 3);
        let last = hbs[hbs.len() - 1];
        assert_eq!(
            (last.listeners, last.connections, last.sockets_used),
            (1, 1, 2)
        );
        for w in hbs.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1);
            let gap = w[1].uptime_ns - w[0].uptime_ns;
            assert!(
                (90_000_000..400_000_000).contains(&gap),
                "heartbeat gap {gap} ns"
            );
        }
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");

        // The driver goes away: the instance exits cleanly.
        drop(d);
        assert_eq!(inst.join().unwrap().unwrap(), Exit::DriverClosed);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn connect_failure_is_a_connect_error() {
        let settings = parse_args(["ins", "--driver=/nonexistent/ins.sock"])
            .unwrap()
            .settings()
            .unwrap();
        let e = connect(&settings).unwrap_err();
        assert_eq!(e.exit_code(), exit::CONNECT);
        assert!(e.to_string().contains("/nonexistent/ins.sock"), "{e}");
    }
}
