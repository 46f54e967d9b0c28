//! The executor: runs the driver's socket requests over a [`Stack`], streams
//! bytes both ways with credits, accounts flows and enforces mitigations.
//!
//! Sans-IO: no system calls and no clock reads. The binary feeds it frames
//! from the driver ([`Executor::on_frame`]), readiness events from the stack
//! ([`Executor::on_events`]), timer ticks ([`Executor::on_tick`]) and "the
//! outbox has room again" ([`Executor::on_ring_space`]); it writes frames for
//! the driver into an [`Outbox`].
//!
//! ```text
//!  driver ──frames──► on_frame ──► Stack ops, tx buffers ──► kernel
//!  driver ◄─Outbox──  pump (ready queue) ◄── on_events ◄──── kernel
//!                     backlog (control frames when the outbox is full)
//! ```
//!
//! # Streams and credits (/work/notes/flowctl.md)
//!
//! * Instance → driver: each socket starts with the driver's window
//!   (`driver_window`) as credit; received bytes are pushed as `Data`/`DataTo`
//!   while credit lasts, and `Credit` from the driver adds to it. Listeners
//!   count connection announcements instead, granted by `Listen{backlog}`.
//! * Driver → instance: the driver may have `cfg.window_bytes` bytes
//!   outstanding per socket. Bytes the kernel does not take at once are kept
//!   in a per-socket buffer that exists only while non-empty, so it never
//!   exceeds the window. Consumed bytes are returned with `Credit` once a
//!   quarter window has accumulated or the buffer drained.
//!   Datagrams are never buffered: one the kernel refuses (`EAGAIN`,
//!   `EMSGSIZE`, …) is dropped, as a lossy network would, and credited back.
//!
//! # Backpressure and ordering
//!
//! When the outbox refuses a frame, the frame is kept in an ordered backlog
//! and from then on every frame goes behind it, so a socket's `Data` always
//! precedes its `Eof`/`Reset`, and `Accepted` precedes the connection's data.
//! Sockets with readable data wait in a ready queue (each at most once);
//! nothing is read from the kernel while the backlog is non-empty, so the
//! backlog holds at most one data frame. [`Executor::on_ring_space`] flushes
//! the backlog and resumes the ready queue. Nothing spins: a socket leaves
//! the queue when the kernel says `EAGAIN`, its credit is exhausted, or a rate
//! limit defers it to a timer. Per visit a socket moves at most
//! [`FRAMES_PER_VISIT`] frames, then goes to the back of the queue.
//!
//! # Errors answered to the driver (all Linux errno values)
//!
//! | situation | answer |
//! |---|---|
//! | frame fails to decode | `Reply{sock, req from the header (0 if shorter than 16 bytes), EINVAL}` |
//! | a kind the driver may not send (`Reply`, `Accepted`, …) | `Reply{…, EPROTO}` |
//! | request for an unknown socket id | `Reply{EBADF}` |
//! | `Open` of an id in use | `Reply{EEXIST}` |
//! | `Open` beyond `max_sockets` | `Reply{EMFILE}` |
//! | `Open` with a protocol other than 0/TCP/UDP for the type | `Reply{EPROTONOSUPPORT}` |
//! | request on a socket the instance aborted (mitigation, protocol error) | `Reply{ECONNRESET}` |
//! | stream data beyond the granted window | `Reset{sock, EPROTO}`, socket aborted |
//! | `Data`/`DataTo`/`Eof`/`Credit` for an unknown or dead socket | ignored, counted in [`ExecCounters::stray_frames`] |
//! | data after the driver's own `Eof` | `Reset{sock, EPIPE}`, socket aborted |
//! | `Mitigate` with a rule table full | `Reply{ENOBUFS}`; invalid settings `EINVAL`; unknown flow `ENOENT` |
//!
//! # Mitigations
//!
//! Listeners accept eagerly while they have announcement credit; each peer
//! passes [`Mitigations::admit_connection`] or is accepted and closed at once
//! with `SO_LINGER{1,0}` (a reset), counted in `Stats.dropped_conns`. While
//! draining nothing is accepted (connections stay in the kernel backlog).
//! `Block` also aborts every connection from the prefix (`Reset{ECONNRESET}`
//! to the driver, flow reason Mitigated) and ends its UDP flows. Byte rate
//! limits throttle both directions: a socket whose allowance is 0 waits for
//! [`Mitigations::next_refill`] (a timer, see [`Executor::next_deadline`]);
//! inbound datagrams beyond the allowance are dropped. Outbound connects and
//! datagrams are not subject to blocks.
//!
//! # Telemetry
//!
//! With `cfg.telemetry` on, every TCP connection carries a
//! [`ConnTel`] fed by the receive and send
//! paths. Every `cfg.telemetry_interval_ns` (a timer like the heartbeat)
//! one `Telemetry` frame goes out per open TCP connection (TCP counters
//! read then), one more when a connection ends (cause `Final`, before its
//! final flow record), and on `Mitigate{Report}` for one flow or all.
//!
//! # Close
//!
//! `Close` answers `Reply` then `Closed` at once. A stream whose transmit
//! buffer still holds bytes lingers, detached from its id, until the bytes
//! reach the kernel (or [`LINGER_NS`] passes); its final flow record is sent
//! then.
//!
//! # Limits
//!
//! Memory taken from driver input is bounded: transmit buffers by the window,
//! option values by the protocol's 256 bytes, the backlog by
//! [`BACKLOG_CAP`] bytes (beyond it frames are dropped and counted in
//! [`ExecCounters::dropped_frames`] — only a driver that never drains its
//! ring gets there).
//!
//! Size: this file is over 800 lines because the executor is one state
//! machine over one socket table (requests, streams with credits, the outbox
//! backlog, linger, flows and mitigations all read and write the same
//! `Sock`); its helpers already live in `executor/`. Splitting the request
//! handlers from the stream pump is the next step when it changes again.

mod sock;

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;

use ins_protocol::msg::{
    self, ConnTelemetry, DATA_TO_PREFIX_LEN, DecodeError, Direction, FlowRecord, HEADER_LEN,
    INSTANCE_SOCK_BIT, MAX_ERRNO, MAX_OPT_LEN, Mitigation, Msg, Stats, TelemetryCause,
};

use crate::config::{ConfigError, InstanceConfig};
use crate::errno::Errno;
use crate::flow::{
    CloseReason, FlowId, FlowKey, FlowSnapshot, FlowState, FlowTable, Proto, RecordKind, tcp_flags,
};
use crate::hash::HashMap;
use crate::mitigation::{Admit, LimitSpec, MitigationError, Mitigations, Prefix, Rate};
use crate::profile::{SockOpt, TcpSettings, random_profile};
use crate::stack::PktInfo;
use crate::stack::{Family, Readiness, Shutdown, SockType, Stack, opt};
use crate::telemetry::{ConnTel, ReportInput};

use sock::{Phase, Sock, TxBuf};

/// `EEXIST`: `Open` of a socket id already in use.
pub const EEXIST: Errno = Errno(17);
/// `EPROTO`: protocol violation by the driver.
pub const EPROTO: Errno = Errno(71);
/// `ENOSPC` is not used; a full rule table answers `ENOBUFS`.
const RULES_FULL: Errno = Errno::ENOBUFS;

/// Frames one socket may push per visit of the ready queue.
pub const FRAMES_PER_VISIT: usize = 16;
/// Most bytes held in the backlog of frames the outbox refused.
pub const BACKLOG_CAP: usize = 16 << 20;
/// How long a closed stream may linger to hand its buffered bytes to the
/// kernel.
pub const LINGER_NS: u64 = 30_000_000_000;
/// Size of the shared receive scratch buffer (fits any UDP datagram).
pub const SCRATCH_LEN: usize = 65_536;

/// Largest control frame the executor encodes (a `Reply` with a full value).
const CTL_FRAME: usize = HEADER_LEN + 8 + MAX_OPT_LEN + 128;

/// The outbox refused a frame: nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxFull;

/// Where the executor writes frames for the driver (the ring producer in the
/// binary).
pub trait Outbox {
    /// Pushes one frame made of `parts` (e.g. `[header, payload]`);
    /// `Err(OutboxFull)` = nothing written, retry after `on_ring_space`.
    fn try_push(&mut self, parts: &[&[u8]]) -> Result<(), OutboxFull>;
    /// Largest payload one frame may carry (max frame minus header).
    fn max_frame(&self) -> usize;
}

/// Executor counters beyond [`Stats`], for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecCounters {
    /// Frames that failed to decode or broke the protocol.
    pub protocol_errors: u64,
    /// Data/credit/eof frames for unknown or dead sockets, ignored.
    pub stray_frames: u64,
    /// Datagrams dropped (kernel refused, blocked or over-limit peer, too
    /// large for the driver's window or a frame, no destination).
    pub dropped_datagrams: u64,
    /// Frames dropped because the backlog was at [`BACKLOG_CAP`].
    pub dropped_frames: u64,
    /// Times the outbox refused a frame.
    pub outbox_full: u64,
    /// Linger periods that ended with bytes still unsent.
    pub linger_timeouts: u64,
    /// In-band options (`SockOpt`) applied.
    pub inband_opts: u64,
    /// In-band options the stack refused (nobody waits for the answer: the
    /// shim validated them as Linux does, so this counts the surprises).
    pub inband_opt_errors: u64,
}

/// A closed stream still handing buffered bytes to the kernel.
struct Lingering<H> {
    sock: Sock<H>,
    id: u32,
    deadline: u64,
}

enum Visit {
    /// Done for now (EAGAIN, no credit, deferred, closed).
    Done,
    /// Used its budget; go to the back of the queue.
    Again,
    /// The outbox is full; stop pumping.
    Stalled,
}

enum TxEnd {
    Drained,
    Blocked,
    Deferred(u64),
    Failed(Errno),
}

/// The executor of one instance. See the module docs.
pub struct Executor<S: Stack> {
    stack: S,
    cfg: InstanceConfig,
    driver_window: u32,
    instance_id: u32,
    socks: HashMap<u32, Sock<S::Handle>>,
    by_handle: HashMap<S::Handle, u32>,
    lingering: HashMap<S::Handle, Lingering<S::Handle>>,
    flows: FlowTable,
    /// Flow → socket id, for `CloseFlow`/`SetFlowOpt` and UDP cleanup.
    flow_sock: HashMap<FlowId, u32>,
    mit: Mitigations,
    tcp_defaults: TcpSettings,
    tcp_opts: Vec<SockOpt>,
    ready: VecDeque<u32>,
    deferred: BTreeSet<(u64, u32)>,
    backlog: VecDeque<Vec<u8>>,
    backlog_bytes: usize,
    scratch: Vec<u8>,
    snaps: Vec<FlowSnapshot>,
    next_inst_id: u32,
    started: Option<u64>,
    next_heartbeat: u64,
    next_telemetry: u64,
    hb_seq: u64,
    stats: Stats,
    counters: ExecCounters,
}

fn wire_errno(e: Errno) -> i32 {
    if (1..=MAX_ERRNO).contains(&e.0) {
        e.0
    } else {
        Errno::EIO.0
    }
}

/// The 32-byte wire form of an address (the address part of a `DataTo`
/// prefix, which is exactly a `WireAddr`).
fn wire_addr_bytes(addr: SocketAddr) -> [u8; 32] {
    let mut pre = [0u8; DATA_TO_PREFIX_LEN];
    let mut out = [0u8; 32];
    if msg::encode_data_to_header(1, Some(addr), &msg::PktInfo::NONE, 0, &mut pre).is_ok()
        && let Some(a) = pre.get(HEADER_LEN..HEADER_LEN + 32)
    {
        out.copy_from_slice(a);
    }
    out
}

fn linger_zero() -> [u8; 8] {
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&1i32.to_ne_bytes());
    v
}

fn wire_reason(r: CloseReason) -> msg::CloseReason {
    match r {
        CloseReason::Normal => msg::CloseReason::Normal,
        CloseReason::Reset => msg::CloseReason::Reset,
        CloseReason::Timeout => msg::CloseReason::Timeout,
        CloseReason::Mitigated => msg::CloseReason::Mitigated,
        CloseReason::Error => msg::CloseReason::Error,
    }
}

fn reason_of(e: Errno) -> CloseReason {
    match e {
        Errno::ECONNRESET | Errno::EPIPE | Errno::ECONNABORTED => CloseReason::Reset,
        Errno::ETIMEDOUT => CloseReason::Timeout,
        _ => CloseReason::Error,
    }
}

fn to_prefix(p: msg::Prefix) -> Result<Prefix, Errno> {
    Prefix::new(p.addr, p.len).map_err(|_| Errno::EINVAL)
}

fn rate(per_sec: u64, burst: u64) -> Option<Rate> {
    (per_sec > 0).then_some(Rate {
        per_sec,
        burst: if burst == 0 { per_sec } else { burst },
    })
}

fn settings_from_wire(w: &msg::TcpSettings) -> TcpSettings {
    let nz = |v: u32| (v != 0).then_some(v);
    let toggle = |v: u8| match v {
        msg::TOGGLE_ON => Some(true),
        msg::TOGGLE_OFF => Some(false),
        _ => None,
    };
    TcpSettings {
        congestion: w.congestion_name().map(str::to_owned),
        sndbuf: nz(w.sndbuf),
        rcvbuf: nz(w.rcvbuf),
        nodelay: toggle(w.nodelay),
        keepalive: toggle(w.keepalive),
        keepidle: nz(w.keepidle),
        keepintvl: nz(w.keepintvl),
        keepcnt: nz(w.keepcnt),
        ..TcpSettings::default()
    }
}

impl<S: Stack> Executor<S> {
    /// An executor over `stack`. `driver_window` is the driver's
    /// `Hello.window` (initial push credit per socket); our own window
    /// (announced as our `Hello.window`) is `cfg.window_bytes`.
    pub fn new(
        stack: S,
        cfg: InstanceConfig,
        driver_window: u32,
        instance_id: u32,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Executor {
            stack,
            flows: FlowTable::new(cfg.flow_config()),
            mit: Mitigations::new(cfg.max_mitigation_rules),
            cfg,
            driver_window,
            instance_id,
            socks: HashMap::default(),
            by_handle: HashMap::default(),
            lingering: HashMap::default(),
            flow_sock: HashMap::default(),
            tcp_defaults: TcpSettings::default(),
            tcp_opts: Vec::new(),
            ready: VecDeque::new(),
            deferred: BTreeSet::new(),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            scratch: vec![0; SCRATCH_LEN],
            snaps: Vec::new(),
            next_inst_id: 1,
            started: None,
            next_heartbeat: 0,
            next_telemetry: 0,
            hb_seq: 0,
            stats: Stats::default(),
            counters: ExecCounters::default(),
        })
    }

    /// Applies a randomized TCP profile ([`random_profile`]) to every new
    /// TCP socket, drawn from `seed` and the stack's congestion algorithms;
    /// `None` leaves the defaults unchanged.
    pub fn with_random_profile(mut self, seed: Option<u64>) -> Self {
        if let Some(seed) = seed {
            let mut names = Vec::new();
            self.stack.available_congestion(&mut names);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            self.set_tcp_defaults(random_profile(seed, &refs));
        }
        self
    }

    /// Replaces the instance-wide TCP defaults applied to new sockets.
    pub fn with_tcp_defaults(mut self, s: TcpSettings) -> Self {
        self.set_tcp_defaults(s);
        self
    }

    fn set_tcp_defaults(&mut self, s: TcpSettings) {
        self.tcp_defaults = s;
        self.tcp_opts.clear();
        self.tcp_defaults.sockopts(&mut self.tcp_opts);
    }

    /// The TCP defaults applied to new sockets.
    pub fn tcp_defaults(&self) -> &TcpSettings {
        &self.tcp_defaults
    }

    /// Our per-socket receive window (the `Hello.window` to announce):
    /// `cfg.window_bytes`.
    pub fn window(&self) -> u32 {
        self.cfg.window_bytes
    }

    /// The instance id given at creation.
    pub fn instance_id(&self) -> u32 {
        self.instance_id
    }

    /// The stack.
    pub fn stack(&self) -> &S {
        &self.stack
    }

    /// The stack, mutably (the binary polls it).
    pub fn stack_mut(&mut self) -> &mut S {
        &mut self.stack
    }

    /// Executor counters (protocol errors, drops).
    pub fn counters(&self) -> ExecCounters {
        self.counters
    }

    /// The mitigation engine (read-only, for listings).
    pub fn mitigations(&self) -> &Mitigations {
        &self.mit
    }

    /// Current counters as a heartbeat would report them (`seq` and
    /// `uptime_ns` as of the last heartbeat).
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.sockets_used = u32::try_from(self.socks.len() + self.lingering.len()).unwrap_or(u32::MAX);
        s.sockets_max = u32::try_from(self.cfg.max_sockets).unwrap_or(u32::MAX);
        let (mut conns, mut listeners) = (0u32, 0u32);
        for sk in self.socks.values() {
            match sk.phase {
                Phase::Listening => listeners += 1,
                Phase::Open if sk.ty == SockType::Stream => conns += 1,
                _ => {}
            }
        }
        s.connections = conns;
        s.listeners = listeners;
        s.accept_queue = 0;
        s
    }

    /// When `on_tick` must run next (monotonic ns).
    pub fn next_deadline(&self) -> Option<u64> {
        let Some(_) = self.started else {
            return Some(0);
        };
        let mut d = self.next_heartbeat;
        if self.periodic_telemetry() {
            d = d.min(self.next_telemetry);
        }
        if let Some(f) = self.flows.next_deadline() {
            d = d.min(f);
        }
        if let Some(&(t, _)) = self.deferred.first() {
            d = d.min(t);
        }
        for l in self.lingering.values() {
            d = d.min(l.deadline);
            if let Some(t) = l.sock.deferred {
                d = d.min(t);
            }
        }
        Some(d)
    }

    /// `Some(bytes)` while frames wait for room in the outbox: the size of
    /// the next one.
    pub fn wants_ring_space(&self) -> Option<usize> {
        self.backlog.front().map(Vec::len)
    }

    fn start(&mut self, now: u64) {
        if self.started.is_none() {
            self.started = Some(now);
            self.next_heartbeat = now;
            self.next_telemetry = now.saturating_add(self.cfg.telemetry_interval_ns);
        }
    }

    fn periodic_telemetry(&self) -> bool {
        self.cfg.telemetry && self.cfg.telemetry_interval_ns > 0
    }

    fn new_tel(&self, now: u64, outbound: bool) -> Option<Box<ConnTel>> {
        self.cfg
            .telemetry
            .then(|| Box::new(ConnTel::new(now, outbound, self.cfg.telemetry_sample_bytes)))
    }

    /// Sends a `Telemetry` frame for every open TCP connection (including
    /// closed ones still handing bytes to the kernel).
    fn report_all(&mut self, cause: TelemetryCause, now: u64, out: &mut impl Outbox) {
        let ids: Vec<u32> = self
            .socks
            .iter()
            .filter(|(_, s)| s.tel.is_some() && s.flow.is_some() && s.phase == Phase::Open)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let rep = match self.socks.get_mut(&id) {
                Some(s) => conn_report(&mut self.stack, &mut self.flows, id, s, cause, now),
                None => None,
            };
            if let Some(t) = rep {
                self.emit(out, &Msg::Telemetry(t));
            }
        }
        let hs: Vec<S::Handle> = self.lingering.keys().copied().collect();
        for h in hs {
            let rep = match self.lingering.get_mut(&h) {
                Some(l) => {
                    conn_report(&mut self.stack, &mut self.flows, 0, &mut l.sock, cause, now)
                }
                None => None,
            };
            if let Some(t) = rep {
                self.emit(out, &Msg::Telemetry(t));
            }
        }
    }

    // ---------------------------------------------------------------- output

    /// Pushes a frame, or queues it behind earlier refused frames. Returns
    /// whether it went straight out.
    fn emit_parts(&mut self, out: &mut impl Outbox, parts: &[&[u8]]) -> bool {
        if self.backlog.is_empty() {
            if out.try_push(parts).is_ok() {
                return true;
            }
            self.counters.outbox_full += 1;
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.backlog_bytes.saturating_add(len) > BACKLOG_CAP {
            self.counters.dropped_frames += 1;
            tracing::warn!(len, "executor backlog full, frame dropped");
            return false;
        }
        let mut v = Vec::with_capacity(len);
        for p in parts {
            v.extend_from_slice(p);
        }
        self.backlog_bytes += len;
        self.backlog.push_back(v);
        false
    }

    fn emit(&mut self, out: &mut impl Outbox, m: &Msg<'_>) -> bool {
        let mut buf = [0u8; CTL_FRAME];
        match m.encode(&mut buf) {
            Ok(n) => self.emit_parts(out, &[buf.get(..n).unwrap_or(&[])]),
            Err(e) => {
                tracing::error!(?e, kind = ?m.kind(), "executor built an invalid frame");
                false
            }
        }
    }

    fn reply(&mut self, out: &mut impl Outbox, sock: u32, req: u32, r: Result<&[u8], Errno>) {
        let m = match r {
            Ok(value) => Msg::Reply {
                sock,
                req,
                errno: 0,
                value,
            },
            Err(e) => Msg::Reply {
                sock,
                req,
                errno: wire_errno(e),
                value: &[],
            },
        };
        self.emit(out, &m);
    }

    fn flush_backlog(&mut self, out: &mut impl Outbox) -> bool {
        while let Some(f) = self.backlog.front() {
            if out.try_push(&[f]).is_err() {
                return false;
            }
            self.backlog_bytes -= f.len();
            self.backlog.pop_front();
        }
        true
    }

    fn enqueue(&mut self, id: u32) {
        if let Some(s) = self.socks.get_mut(&id)
            && !s.queued
        {
            s.queued = true;
            self.ready.push_back(id);
        }
    }

    // ------------------------------------------------------------ entry points

    /// Handles one frame from the driver (a private copy).
    pub fn on_frame(&mut self, frame: &[u8], now: u64, wall_ns: u64, out: &mut impl Outbox) {
        self.start(now);
        match Msg::decode(frame) {
            Ok(m) => self.handle(m, now, wall_ns, out),
            Err(e) => self.bad_frame(frame, e, out),
        }
        self.pump(now, wall_ns, out);
    }

    fn bad_frame(&mut self, frame: &[u8], e: DecodeError, out: &mut impl Outbox) {
        self.counters.protocol_errors += 1;
        let (sock, req) = match frame.first_chunk::<HEADER_LEN>() {
            Some(h) => {
                let w = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
                (w(8), w(12))
            }
            None => (0, 0),
        };
        tracing::debug!(?e, sock, req, "malformed frame from the driver");
        self.reply(out, sock, req, Err(Errno::EINVAL));
    }

    /// Handles readiness events from the stack.
    pub fn on_events(
        &mut self,
        events: &[(S::Handle, Readiness)],
        now: u64,
        wall_ns: u64,
        out: &mut impl Outbox,
    ) {
        self.start(now);
        for &(h, r) in events {
            if let Some(&id) = self.by_handle.get(&h) {
                self.sock_event(id, r, now, wall_ns, out);
            } else if self.lingering.contains_key(&h)
                && r.intersects(Readiness::WRITABLE | Readiness::ERROR | Readiness::HANGUP)
            {
                self.linger_flush(h, now, wall_ns, out);
            }
        }
        self.pump(now, wall_ns, out);
    }

    /// Heartbeat, flow timeouts, rate-limit retries, lingering sockets.
    pub fn on_tick(&mut self, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        self.start(now);
        if now >= self.next_heartbeat {
            self.heartbeat(now, out);
        }
        if self.periodic_telemetry() && now >= self.next_telemetry {
            self.report_all(TelemetryCause::Periodic, now, out);
            self.next_telemetry = now.saturating_add(self.cfg.telemetry_interval_ns);
        }
        self.snaps.clear();
        let mut snaps = core::mem::take(&mut self.snaps);
        self.flows.due_timeouts(now, &mut snaps);
        for snap in &mut snaps {
            let sock = self.flow_sock.get(&snap.id).copied().unwrap_or(0);
            if snap.key.proto == Proto::Tcp
                && let Some(s) = self.socks.get(&sock)
                && s.handle_open
                && let Some(c) = self.stack.tcp_info(s.handle)
            {
                self.flows.set_segments(snap.id, c.segs_in, c.segs_out);
                snap.segs_in = c.segs_in;
                snap.segs_out = c.segs_out;
            }
            if snap.kind == RecordKind::Final {
                self.flow_sock.remove(&snap.id);
                if let Some(u) = self.socks.get_mut(&sock).and_then(|s| s.udp.as_mut()) {
                    u.flows.remove(&snap.id);
                }
            }
            self.emit_flow(snap, sock, now, wall_ns, out);
        }
        self.snaps = snaps;
        while let Some(&(t, id)) = self.deferred.first() {
            if t > now {
                break;
            }
            self.deferred.pop_first();
            if let Some(s) = self.socks.get_mut(&id)
                && s.deferred == Some(t)
            {
                s.deferred = None;
                let readable = s.readable;
                if s.tx_len() > 0 {
                    self.flush_tx(id, now, wall_ns, out);
                }
                if readable {
                    self.enqueue(id);
                }
            }
        }
        let due: Vec<S::Handle> = self
            .lingering
            .iter()
            .filter(|(_, l)| l.deadline <= now || l.sock.deferred.is_some_and(|t| t <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            self.linger_flush(h, now, wall_ns, out);
        }
        self.pump(now, wall_ns, out);
    }

    /// The outbox has room again: flush the backlog, resume the ready queue.
    pub fn on_ring_space(&mut self, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        self.start(now);
        self.pump(now, wall_ns, out);
    }

    /// Closes everything and sends the final flow records (reason Normal).
    pub fn shutdown(&mut self, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        self.start(now);
        let ids: Vec<u32> = self.socks.keys().copied().collect();
        for id in ids {
            if let Some(s) = self.socks.remove(&id) {
                self.by_handle.remove(&s.handle);
                self.release(id, s, CloseReason::Normal, now, wall_ns, out);
            }
        }
        let hs: Vec<S::Handle> = self.lingering.keys().copied().collect();
        for h in hs {
            if let Some(l) = self.lingering.remove(&h) {
                self.release(l.id, l.sock, CloseReason::Normal, now, wall_ns, out);
            }
        }
        self.ready.clear();
        self.deferred.clear();
        self.flush_backlog(out);
    }

    fn heartbeat(&mut self, now: u64, out: &mut impl Outbox) {
        self.hb_seq += 1;
        self.stats.seq = self.hb_seq;
        self.stats.uptime_ns = now.saturating_sub(self.started.unwrap_or(now));
        let s = self.stats();
        self.emit(out, &Msg::Heartbeat(s));
        self.next_heartbeat = now.saturating_add(self.cfg.heartbeat_interval_ns);
    }

    fn emit_flow(
        &mut self,
        snap: &FlowSnapshot,
        sock: u32,
        now: u64,
        wall_ns: u64,
        out: &mut impl Outbox,
    ) {
        let wall = |mono: u64| wall_ns.saturating_sub(now.saturating_sub(mono));
        let rec = FlowRecord {
            flow_id: snap.id,
            proto: snap.key.proto as u8,
            local: snap.key.local,
            remote: snap.key.remote,
            bytes_in: snap.bytes_in,
            bytes_out: snap.bytes_out,
            segs_in: snap.segs_in,
            segs_out: snap.segs_out,
            start_ns: wall(snap.first_ns),
            last_ns: wall(snap.last_ns),
            state: match snap.kind {
                RecordKind::Interim => msg::FlowState::Active,
                RecordKind::Final => msg::FlowState::Closed,
            },
            reason: snap
                .close_reason
                .map_or(msg::CloseReason::None, wire_reason),
            tcp_flags: snap.tcp_flags,
            sock,
        };
        self.emit(out, &Msg::Flow(rec));
    }

    /// Ends a socket's flows (TCP: refreshes segments first) and sends the
    /// final records.
    fn end_flows(
        &mut self,
        id: u32,
        reason: CloseReason,
        now: u64,
        wall_ns: u64,
        out: &mut impl Outbox,
    ) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        let last = conn_report(
            &mut self.stack,
            &mut self.flows,
            id,
            s,
            TelemetryCause::Final,
            now,
        );
        s.tel = None;
        let mut ended: Vec<FlowId> = Vec::new();
        if let Some(f) = s.flow.take() {
            ended.push(f);
            if s.handle_open
                && let Some(c) = self.stack.tcp_info(s.handle)
            {
                self.flows.set_segments(f, c.segs_in, c.segs_out);
            }
        }
        if let Some(u) = s.udp.as_mut() {
            ended.extend(u.flows.drain());
        }
        if let Some(t) = last {
            self.emit(out, &Msg::Telemetry(t));
        }
        for f in ended {
            self.flow_sock.remove(&f);
            if let Some(snap) = self.flows.close(f, reason, now) {
                self.stats.segs_in = self.stats.segs_in.saturating_add(snap.segs_in);
                self.stats.segs_out = self.stats.segs_out.saturating_add(snap.segs_out);
                self.emit_flow(&snap, id, now, wall_ns, out);
            }
        }
    }

    /// Releases a socket that is no longer in the tables: flows, handle.
    fn release(
        &mut self,
        id: u32,
        mut s: Sock<S::Handle>,
        reason: CloseReason,
        now: u64,
        wall_ns: u64,
        out: &mut impl Outbox,
    ) {
        if let Some(t) = s.deferred.take() {
            self.deferred.remove(&(t, id));
        }
        // Reuse end_flows by parking the socket under its id briefly is not
        // possible (the id may be reused); close its flows directly.
        if let Some(t) = conn_report(
            &mut self.stack,
            &mut self.flows,
            id,
            &mut s,
            TelemetryCause::Final,
            now,
        ) {
            self.emit(out, &Msg::Telemetry(t));
        }
        s.tel = None;
        let mut ended: Vec<FlowId> = Vec::new();
        if let Some(f) = s.flow.take() {
            if s.handle_open
                && let Some(c) = self.stack.tcp_info(s.handle)
            {
                self.flows.set_segments(f, c.segs_in, c.segs_out);
            }
            ended.push(f);
        }
        if let Some(u) = s.udp.as_mut() {
            ended.extend(u.flows.drain());
        }
        for f in ended {
            self.flow_sock.remove(&f);
            if let Some(snap) = self.flows.close(f, reason, now) {
                self.stats.segs_in = self.stats.segs_in.saturating_add(snap.segs_in);
                self.stats.segs_out = self.stats.segs_out.saturating_add(snap.segs_out);
                self.emit_flow(&snap, id, now, wall_ns, out);
            }
        }
        if s.handle_open {
            let _ = self.stack.close(s.handle);
        }
    }

    /// Aborts a socket: linger-0 close (RST), `Reset{errno}` to the driver,
    /// flow final with `reason`. The id stays until the driver's `Close`.
    fn abort(
        &mut self,
        id: u32,
        errno: Errno,
        reason: CloseReason,
        now: u64,
        wall_ns: u64,
        out: &mut impl Outbox,
    ) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        if s.phase == Phase::Dead && !s.handle_open {
            return;
        }
        if let Some(f) = s.flow {
            self.flows.add_tcp_flags(f, tcp_flags::RST);
        }
        self.end_flows(id, reason, now, wall_ns, out);
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        let send_reset = s.phase != Phase::Dead;
        if s.handle_open {
            if s.ty == SockType::Stream {
                let _ =
                    self.stack
                        .set_opt(s.handle, opt::SOL_SOCKET, opt::SO_LINGER, &linger_zero());
            }
            let _ = self.stack.close(s.handle);
            self.by_handle.remove(&s.handle);
            s.handle_open = false;
        }
        s.phase = Phase::Dead;
        s.tx = None;
        s.readable = false;
        s.rx_done = true;
        s.wr_closed = true;
        if let Some(t) = s.deferred.take() {
            self.deferred.remove(&(t, id));
        }
        if send_reset {
            self.emit(
                out,
                &Msg::Reset {
                    sock: id,
                    errno: wire_errno(errno),
                },
            );
        }
    }

    /// The socket failed on its own (peer reset, timeout): `Reset` to the
    /// driver, flow final; the handle stays open until `Close`.
    fn fail(&mut self, id: u32, e: Errno, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        if s.phase == Phase::Dead {
            return;
        }
        if let Some(f) = s.flow {
            self.flows.add_tcp_flags(f, tcp_flags::RST);
        }
        self.end_flows(id, reason_of(e), now, wall_ns, out);
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        s.phase = Phase::Dead;
        s.tx = None;
        s.readable = false;
        s.rx_done = true;
        s.wr_closed = true;
        if let Some(t) = s.deferred.take() {
            self.deferred.remove(&(t, id));
        }
        self.emit(
            out,
            &Msg::Reset {
                sock: id,
                errno: wire_errno(e),
            },
        );
    }

    // --------------------------------------------------------------- requests

    fn handle(&mut self, m: Msg<'_>, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        if m.kind().direction() == Direction::ToDriver {
            self.counters.protocol_errors += 1;
            self.reply(out, m.sock(), m.req(), Err(EPROTO));
            return;
        }
        match m {
            Msg::Open {
                sock,
                req,
                family,
                ty,
                proto,
            } => {
                let r = self.open(sock, family, ty, proto);
                self.reply(out, sock, req, r.map(|()| &[][..]));
            }
            Msg::Mitigate { req, cmd } => {
                let r = self.mitigate(cmd, now, wall_ns, out);
                self.reply(out, 0, req, r.map(|()| &[][..]));
            }
            Msg::Data { sock, bytes } => {
                self.on_data(sock, None, &PktInfo::NONE, bytes, now, wall_ns, out);
            }
            Msg::DataTo {
                sock,
                addr,
                info,
                bytes,
            } => self.on_data(sock, addr, &info, bytes, now, wall_ns, out),
            Msg::Credit { sock, bytes } => self.on_credit(sock, bytes),
            Msg::Eof { sock } => self.on_eof(sock, now, wall_ns, out),
            Msg::Close { sock, req } => self.close(sock, req, now, wall_ns, out),
            Msg::SockOpt {
                sock,
                level,
                name,
                value,
            } => self.on_sockopt(sock, level, name, value),
            m => self.request(m, now, wall_ns, out),
        }
    }

    fn open(
        &mut self,
        sock: u32,
        family: msg::Family,
        ty: msg::SockType,
        proto: i32,
    ) -> Result<(), Errno> {
        if self.socks.contains_key(&sock) {
            return Err(EEXIST);
        }
        let (ty, ok_proto) = match ty {
            msg::SockType::Stream => (SockType::Stream, opt::IPPROTO_TCP),
            msg::SockType::Dgram => (SockType::Datagram, opt::IPPROTO_UDP),
        };
        if proto != 0 && proto != ok_proto {
            return Err(Errno::EPROTONOSUPPORT);
        }
        if self.socks.len() + self.lingering.len() >= self.cfg.max_sockets {
            return Err(Errno::EMFILE);
        }
        let family = match family {
            msg::Family::Inet => Family::Inet,
            msg::Family::Inet6 => Family::Inet6,
        };
        let h = self.stack.open(family, ty)?;
        if ty == SockType::Stream {
            self.apply_tcp_defaults(h);
        }
        self.by_handle.insert(h, sock);
        self.socks
            .insert(sock, Sock::new(h, ty, self.driver_window));
        Ok(())
    }

    fn apply_tcp_defaults(&mut self, h: S::Handle) {
        for o in &self.tcp_opts {
            if let Err(e) = self.stack.set_opt(h, o.level, o.name, o.value()) {
                tracing::debug!(
                    level = o.level,
                    name = o.name,
                    ?e,
                    "TCP default not applied"
                );
            }
        }
    }

    /// Requests that need an open handle: bind, listen, connect, shutdown,
    /// options, names.
    fn request(&mut self, m: Msg<'_>, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        let (sock, req) = (m.sock(), m.req());
        let Some(s) = self.socks.get(&sock) else {
            self.reply(out, sock, req, Err(Errno::EBADF));
            return;
        };
        if !s.handle_open {
            self.reply(out, sock, req, Err(Errno::ECONNRESET));
            return;
        }
        let h = s.handle;
        match m {
            Msg::Bind { addr, .. } => {
                let r = self.stack.bind(h, addr);
                self.reply(out, sock, req, r.map(|()| &[][..]));
            }
            Msg::Listen { backlog, .. } => {
                let r = self.stack.listen(h, backlog.min(self.cfg.max_backlog));
                if r.is_ok()
                    && let Some(s) = self.socks.get_mut(&sock)
                    && s.phase != Phase::Listening
                {
                    s.phase = Phase::Listening;
                    s.credit = backlog;
                    s.readable = true;
                    self.enqueue(sock);
                }
                self.reply(out, sock, req, r.map(|()| &[][..]));
            }
            Msg::Connect { addr, .. } => self.connect(sock, req, addr, now, wall_ns, out),
            Msg::Shutdown { how, .. } => {
                let r = self.shutdown_req(sock, how, now, wall_ns, out);
                self.reply(out, sock, req, r.map(|()| &[][..]));
            }
            Msg::SetOpt {
                level, name, value, ..
            } => {
                let r = self.stack.set_opt(h, level, name, value);
                self.reply(out, sock, req, r.map(|()| &[][..]));
            }
            Msg::GetOpt {
                level,
                name,
                max_len,
                ..
            } => {
                let mut buf = [0u8; MAX_OPT_LEN];
                let n = usize::try_from(max_len).unwrap_or(0).min(MAX_OPT_LEN);
                let r = self
                    .stack
                    .get_opt(h, level, name, buf.get_mut(..n).unwrap_or(&mut []));
                match r {
                    Ok(len) => {
                        let v = buf.get(..len.min(n)).unwrap_or(&[]);
                        self.reply(out, sock, req, Ok(v));
                    }
                    Err(e) => self.reply(out, sock, req, Err(e)),
                }
            }
            Msg::GetSockName { .. } => {
                let r = self.stack.local_addr(h).map(|mut a| {
                    if a.ip().is_unspecified()
                        && let Some(p) = self.socks.get(&sock).and_then(|s| s.peer)
                        && let Some(ip) = self.stack.route_source(p.ip())
                    {
                        a.set_ip(ip);
                    }
                    wire_addr_bytes(a)
                });
                match r {
                    Ok(b) => self.reply(out, sock, req, Ok(&b)),
                    Err(e) => self.reply(out, sock, req, Err(e)),
                }
            }
            Msg::GetPeerName { .. } => match self.stack.peer_addr(h) {
                Ok(a) => self.reply(out, sock, req, Ok(&wire_addr_bytes(a))),
                Err(e) => self.reply(out, sock, req, Err(e)),
            },
            other => {
                // Every other driver kind is handled in `handle`.
                self.reply(out, other.sock(), other.req(), Err(EPROTO));
            }
        }
    }

    fn connect(
        &mut self,
        sock: u32,
        req: u32,
        addr: SocketAddr,
        now: u64,
        wall_ns: u64,
        out: &mut impl Outbox,
    ) {
        let Some(s) = self.socks.get(&sock) else {
            return;
        };
        let (h, ty) = (s.handle, s.ty);
        match self.stack.connect(h, addr) {
            Ok(()) => {
                self.reply(out, sock, req, Ok(&[]));
                if ty == SockType::Stream {
                    self.connected(sock, now, wall_ns, out);
                } else if let Some(s) = self.socks.get_mut(&sock) {
                    s.peer = Some(addr);
                    s.local = None;
                    s.phase = Phase::Open;
                    s.readable = true;
                    self.enqueue(sock);
                }
            }
            Err(Errno::EINPROGRESS) if ty == SockType::Stream => {
                if let Some(s) = self.socks.get_mut(&sock) {
                    s.phase = Phase::Connecting;
                }
                self.reply(out, sock, req, Err(Errno::EINPROGRESS));
            }
            Err(e) => self.reply(out, sock, req, Err(e)),
        }
    }

    /// A stream connect finished successfully.
    fn connected(&mut self, sock: u32, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        let Some(s) = self.socks.get(&sock) else {
            return;
        };
        let h = s.handle;
        let local = self.stack.local_addr(h).ok();
        let peer = self.stack.peer_addr(h).ok();
        let flow = match (local, peer) {
            (Some(local), Some(remote)) => self
                .flows
                .open(
                    FlowKey {
                        proto: Proto::Tcp,
                        local,
                        remote,
                    },
                    FlowState::Established,
                    now,
                )
                .ok(),
            _ => None,
        };
        if let Some(f) = flow {
            self.flows.add_tcp_flags(f, tcp_flags::SYN | tcp_flags::ACK);
            self.flow_sock.insert(f, sock);
        }
        let tel = flow.and_then(|_| self.new_tel(now, true));
        if let Some(s) = self.socks.get_mut(&sock) {
            s.phase = Phase::Open;
            s.local = local;
            s.peer = peer;
            s.flow = flow;
            s.tel = tel;
            s.readable = true;
        }
        self.emit(
            out,
            &Msg::Connected {
                sock,
                errno: 0,
                local,
                peer,
            },
        );
        self.enqueue(sock);
        // Bytes the driver sent before the connection was up.
        self.flush_tx(sock, now, wall_ns, out);
    }

    fn shutdown_req(
        &mut self,
        sock: u32,
        how: msg::Shutdown,
        now: u64,
        wall_ns: u64,
        out: &mut impl Outbox,
    ) -> Result<(), Errno> {
        let Some(s) = self.socks.get_mut(&sock) else {
            return Err(Errno::EBADF);
        };
        let h = s.handle;
        let buffered = s.tx_len() > 0;
        match how {
            msg::Shutdown::Read => self.stack.shutdown(h, Shutdown::Read),
            msg::Shutdown::Write | msg::Shutdown::Both => {
                if buffered {
                    // Check the socket can be shut down at all, like Linux
                    // would, then shut the write side once the bytes are out.
                    if how == msg::Shutdown::Both {
                        self.stack.shutdown(h, Shutdown::Read)?;
                    }
                    s.shut_wr_pending = true;
                    s.wr_closed = true;
                    self.flush_tx(sock, now, wall_ns, out);
                    Ok(())
                } else {
                    let r = self.stack.shutdown(
                        h,
                        if how == msg::Shutdown::Both {
                            Shutdown::Both
                        } else {
                            Shutdown::Write
                        },
                    );
                    if r.is_ok() {
                        s.wr_closed = true;
                        if let Some(f) = s.flow {
                            self.flows.add_tcp_flags(f, tcp_flags::FIN);
                            self.flows.set_state(f, FlowState::Closing, now);
                        }
                    }
                    r
                }
            }
        }
    }

    fn close(&mut self, sock: u32, req: u32, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        let Some(mut s) = self.socks.remove(&sock) else {
            self.reply(out, sock, req, Err(Errno::EBADF));
            return;
        };
        if s.handle_open {
            self.by_handle.remove(&s.handle);
        }
        s.queued = false;
        if let Some(t) = s.deferred.take() {
            self.deferred.remove(&(t, sock));
        }
        let mut linger = None;
        if s.handle_open && s.tx_len() > 0 && s.phase == Phase::Open {
            // Hand the buffered bytes to the kernel before closing.
            let h = s.handle;
            linger = Some(h);
            self.lingering.insert(
                h,
                Lingering {
                    sock: s,
                    id: sock,
                    deadline: now.saturating_add(LINGER_NS),
                },
            );
        } else {
            self.release(sock, s, CloseReason::Normal, now, wall_ns, out);
        }
        self.reply(out, sock, req, Ok(&[]));
        self.emit(out, &Msg::Closed { sock });
        if let Some(h) = linger {
            self.linger_flush(h, now, wall_ns, out);
        }
    }

    fn linger_flush(&mut self, h: S::Handle, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        let Some(mut l) = self.lingering.remove(&h) else {
            return;
        };
        l.sock.deferred = None;
        let end = match l.sock.tx.take() {
            None => TxEnd::Drained,
            Some(mut tx) => {
                let (_, end) = drain_tx(
                    &mut self.stack,
                    &mut self.mit,
                    &mut self.flows,
                    &mut self.stats,
                    &mut self.counters,
                    &mut l.sock,
                    &mut tx,
                    now,
                );
                if tx.len() == 0 {
                    TxEnd::Drained
                } else {
                    l.sock.tx = Some(tx);
                    end
                }
            }
        };
        match end {
            TxEnd::Blocked if now < l.deadline => {
                self.lingering.insert(h, l);
            }
            TxEnd::Deferred(t) if now < l.deadline => {
                l.sock.deferred = Some(t);
                self.lingering.insert(h, l);
            }
            TxEnd::Drained => {
                self.release(l.id, l.sock, CloseReason::Normal, now, wall_ns, out);
            }
            TxEnd::Failed(e) => {
                self.release(l.id, l.sock, reason_of(e), now, wall_ns, out);
            }
            TxEnd::Blocked | TxEnd::Deferred(_) => {
                self.counters.linger_timeouts += 1;
                self.release(l.id, l.sock, CloseReason::Timeout, now, wall_ns, out);
            }
        }
    }

    // ------------------------------------------------------------ data path

    #[allow(clippy::too_many_arguments)]
    fn on_data(
        &mut self,
        sock: u32,
        addr: Option<SocketAddr>,
        info: &PktInfo,
        bytes: &[u8],
        now: u64,
        wall_ns: u64,
        out: &mut impl Outbox,
    ) {
        let window = self.cfg.window_bytes;
        let Some(s) = self.socks.get_mut(&sock) else {
            self.counters.stray_frames += 1;
            return;
        };
        if s.phase == Phase::Dead || !s.handle_open {
            self.counters.stray_frames += 1;
            return;
        }
        let n = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let total = s.outstanding.saturating_add(n);
        if total > window {
            self.counters.protocol_errors += 1;
            tracing::debug!(sock, total, window, "driver overran the window");
            self.abort(sock, EPROTO, CloseReason::Error, now, wall_ns, out);
            return;
        }
        if s.ty == SockType::Datagram {
            s.outstanding = total;
            self.send_datagram(sock, addr, info, bytes, now, out);
            return;
        }
        // DataTo on a stream: the address and packet information are
        // ignored, as sendto() on TCP ignores the address (the shim sends
        // none on a stream).
        if s.phase == Phase::Listening {
            self.counters.stray_frames += 1;
            return;
        }
        if s.wr_closed {
            self.counters.protocol_errors += 1;
            self.abort(sock, Errno::EPIPE, CloseReason::Error, now, wall_ns, out);
            return;
        }
        if bytes.is_empty() {
            return;
        }
        s.outstanding = total;
        if s.tx_len() == 0 && s.deferred.is_none() && s.phase == Phase::Open {
            let (written, end) = send_some(
                &mut self.stack,
                &mut self.mit,
                &mut self.flows,
                &mut self.stats,
                s,
                bytes,
                now,
            );
            if let Some(t) = s.tel.as_mut() {
                t.on_out(bytes.get(..written).unwrap_or(&[]), now);
            }
            let rest = bytes.get(written..).unwrap_or(&[]);
            s.to_credit = s.to_credit.saturating_add(written as u32);
            if !rest.is_empty() {
                let tx = s.tx.get_or_insert_with(Box::default);
                tx.buf.extend_from_slice(rest);
            }
            self.after_tx(sock, end, false, now, wall_ns, out);
        } else {
            let tx = s.tx.get_or_insert_with(|| Box::new(TxBuf::default()));
            tx.buf.extend_from_slice(bytes);
        }
    }

    /// Writes buffered driver bytes to the kernel.
    fn flush_tx(&mut self, sock: u32, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        let Some(s) = self.socks.get_mut(&sock) else {
            return;
        };
        if s.phase != Phase::Open || !s.handle_open {
            return;
        }
        let Some(mut tx) = s.tx.take() else {
            return;
        };
        let (n, end) = drain_tx(
            &mut self.stack,
            &mut self.mit,
            &mut self.flows,
            &mut self.stats,
            &mut self.counters,
            s,
            &mut tx,
            now,
        );
        s.to_credit = s.to_credit.saturating_add(n as u32);
        if tx.len() > 0 {
            s.tx = Some(tx);
        }
        self.after_tx(sock, end, true, now, wall_ns, out);
    }

    /// Credit, deferral, deferred shutdown and errors after a write attempt.
    fn after_tx(
        &mut self,
        sock: u32,
        end: TxEnd,
        buffered_path: bool,
        now: u64,
        wall_ns: u64,
        out: &mut impl Outbox,
    ) {
        let Some(s) = self.socks.get_mut(&sock) else {
            return;
        };
        match end {
            TxEnd::Failed(e) => {
                self.fail(sock, e, now, wall_ns, out);
                return;
            }
            TxEnd::Deferred(t) => {
                if s.deferred.is_none() {
                    s.deferred = Some(t);
                    self.deferred.insert((t, sock));
                }
            }
            TxEnd::Blocked | TxEnd::Drained => {}
        }
        self.maybe_credit(sock, buffered_path, out);
        let Some(s) = self.socks.get_mut(&sock) else {
            return;
        };
        if s.tx_len() == 0 && s.shut_wr_pending {
            s.shut_wr_pending = false;
            let _ = self.stack.shutdown(s.handle, Shutdown::Write);
            if let Some(f) = s.flow {
                self.flows.add_tcp_flags(f, tcp_flags::FIN);
                self.flows.set_state(f, FlowState::Closing, now);
            }
        }
    }

    /// Returns consumed bytes to the driver: when a quarter window has
    /// accumulated, or the transmit buffer drained after holding bytes
    /// (`buffered_path`). Small direct writes wait for the quarter: the
    /// driver then still has three quarters of its window, so it never
    /// stalls on an uncredited remainder.
    fn maybe_credit(&mut self, sock: u32, buffered_path: bool, out: &mut impl Outbox) {
        let quarter = self.cfg.window_bytes / 4;
        let Some(s) = self.socks.get_mut(&sock) else {
            return;
        };
        if s.to_credit == 0 {
            return;
        }
        if s.to_credit >= quarter || (buffered_path && s.tx_len() == 0) {
            let n = s.to_credit;
            s.outstanding = s.outstanding.saturating_sub(n);
            s.to_credit = 0;
            self.emit(out, &Msg::Credit { sock, bytes: n });
        }
    }

    fn send_datagram(
        &mut self,
        sock: u32,
        addr: Option<SocketAddr>,
        info: &PktInfo,
        bytes: &[u8],
        now: u64,
        out: &mut impl Outbox,
    ) {
        let Some(s) = self.socks.get_mut(&sock) else {
            return;
        };
        let n = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        s.to_credit = s.to_credit.saturating_add(n);
        let dst = addr.or(s.peer);
        let sent = match dst {
            None => Err(Errno::EDESTADDRREQ),
            Some(dst) => self.stack.send_to_info(s.handle, bytes, dst, info),
        };
        match sent {
            Ok(_) => {
                if s.phase == Phase::Fresh {
                    s.phase = Phase::Open;
                    s.readable = true;
                }
                self.stats.bytes_out = self.stats.bytes_out.saturating_add(bytes.len() as u64);
                if let Some(dst) = dst {
                    if s.local.is_none_or(|l| l.port() == 0) {
                        s.local = self.stack.local_addr(s.handle).ok();
                    }
                    if let Some(local) = s.local
                        && let Ok(f) = self.flows.open(
                            FlowKey {
                                proto: Proto::Udp,
                                local,
                                remote: dst,
                            },
                            FlowState::Established,
                            now,
                        )
                    {
                        self.flows.account_out(f, bytes.len() as u64, now);
                        if let Some(u) = s.udp.as_mut() {
                            u.flows.insert(f);
                        }
                        self.flow_sock.insert(f, sock);
                    }
                }
                let readable = s.readable;
                if readable {
                    self.enqueue(sock);
                }
            }
            Err(e) => {
                tracing::trace!(sock, ?e, "datagram dropped");
                self.counters.dropped_datagrams += 1;
            }
        }
        self.maybe_credit(sock, false, out);
    }

    fn on_credit(&mut self, sock: u32, bytes: u32) {
        let Some(s) = self.socks.get_mut(&sock) else {
            self.counters.stray_frames += 1;
            return;
        };
        if s.phase == Phase::Dead {
            self.counters.stray_frames += 1;
            return;
        }
        s.credit = s.credit.saturating_add(bytes);
        if s.phase == Phase::Listening {
            s.readable = true;
        }
        if s.readable || s.udp.as_ref().is_some_and(|u| u.held.is_some()) {
            self.enqueue(sock);
        }
    }

    /// `SockOpt`: an option set in band. It applies after every byte the
    /// driver sent before it: now if the kernel took them all, else when
    /// the transmit buffer drains up to it. No reply.
    fn on_sockopt(&mut self, sock: u32, level: i32, name: i32, value: &[u8]) {
        let Some(s) = self.socks.get_mut(&sock) else {
            self.counters.stray_frames += 1;
            return;
        };
        if s.phase == Phase::Dead || !s.handle_open {
            self.counters.stray_frames += 1;
            return;
        }
        if let Some(tx) = s.tx.as_mut()
            && tx.len() > 0
        {
            tx.opts.push(sock::PendingOpt {
                at: tx.len(),
                level,
                name,
                value: msg::OptValue::new(value),
            });
            return;
        }
        apply_opt(
            &mut self.stack,
            &mut self.counters,
            s.handle,
            level,
            name,
            value,
        );
    }

    fn on_eof(&mut self, sock: u32, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        let Some(s) = self.socks.get_mut(&sock) else {
            self.counters.stray_frames += 1;
            return;
        };
        if s.phase == Phase::Dead || s.ty != SockType::Stream || s.wr_closed {
            self.counters.stray_frames += 1;
            return;
        }
        s.wr_closed = true;
        s.shut_wr_pending = true;
        if s.tx_len() == 0 && s.phase == Phase::Open {
            self.after_tx(sock, TxEnd::Drained, false, now, wall_ns, out);
        } else if s.phase == Phase::Open {
            self.flush_tx(sock, now, wall_ns, out);
        }
    }

    fn sock_event(&mut self, id: u32, r: Readiness, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        let h = s.handle;
        if s.phase == Phase::Connecting {
            if r.intersects(Readiness::WRITABLE | Readiness::ERROR | Readiness::HANGUP) {
                match self.stack.take_error(h) {
                    Ok(None) => {
                        // HANGUP without an error still means refused on some
                        // stacks; confirm with the peer address.
                        if self.stack.peer_addr(h).is_ok() {
                            self.connected(id, now, wall_ns, out);
                        } else if r.intersects(Readiness::HANGUP | Readiness::ERROR) {
                            self.connect_failed(id, Errno::ECONNREFUSED, out);
                        }
                    }
                    Ok(Some(e)) | Err(e) => self.connect_failed(id, e, out),
                }
            }
            return;
        }
        if r.intersects(Readiness::READ_CLOSED | Readiness::HANGUP | Readiness::ERROR) {
            s.closed_hint = true;
        }
        if r.intersects(
            Readiness::READABLE | Readiness::READ_CLOSED | Readiness::HANGUP | Readiness::ERROR,
        ) && !s.rx_done
        {
            s.readable = true;
            if s.deferred.is_none() {
                self.enqueue(id);
            }
        }
        let Some(s) = self.socks.get(&id) else {
            return;
        };
        if r.intersects(Readiness::WRITABLE | Readiness::ERROR | Readiness::HANGUP)
            && s.tx_len() > 0
            && s.deferred.is_none()
        {
            self.flush_tx(id, now, wall_ns, out);
        }
    }

    fn connect_failed(&mut self, id: u32, e: Errno, out: &mut impl Outbox) {
        if let Some(s) = self.socks.get_mut(&id) {
            s.phase = Phase::Fresh;
        }
        self.emit(
            out,
            &Msg::Connected {
                sock: id,
                errno: wire_errno(e),
                local: None,
                peer: None,
            },
        );
    }

    // --------------------------------------------------------------- pumping

    fn pump(&mut self, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        if !self.flush_backlog(out) {
            return;
        }
        loop {
            let n = self.ready.len();
            if n == 0 {
                return;
            }
            let mut again = false;
            for _ in 0..n {
                let Some(id) = self.ready.pop_front() else {
                    return;
                };
                match self.socks.get_mut(&id) {
                    Some(s) if s.queued => s.queued = false,
                    _ => continue,
                }
                match self.visit(id, now, wall_ns, out) {
                    Visit::Done => {}
                    Visit::Again => {
                        again = true;
                        self.enqueue(id);
                    }
                    Visit::Stalled => {
                        if let Some(s) = self.socks.get_mut(&id)
                            && !s.queued
                            && (s.readable || s.udp.as_ref().is_some_and(|u| u.held.is_some()))
                        {
                            s.queued = true;
                            self.ready.push_front(id);
                        }
                        return;
                    }
                }
            }
            if !again {
                return;
            }
        }
    }

    fn visit(&mut self, id: u32, now: u64, wall_ns: u64, out: &mut impl Outbox) -> Visit {
        let Some(s) = self.socks.get(&id) else {
            return Visit::Done;
        };
        if !s.handle_open || s.deferred.is_some() {
            return Visit::Done;
        }
        match (s.phase, s.ty) {
            (Phase::Listening, _) => self.accept_some(id, now, wall_ns, out),
            (Phase::Open, SockType::Stream) => self.recv_stream(id, now, wall_ns, out),
            (Phase::Open | Phase::Fresh, SockType::Datagram) => {
                self.recv_datagrams(id, now, wall_ns, out)
            }
            _ => Visit::Done,
        }
    }

    fn defer(&mut self, id: u32, t: u64) {
        if let Some(s) = self.socks.get_mut(&id)
            && s.deferred.is_none()
        {
            s.deferred = Some(t);
            self.deferred.insert((t, id));
        }
    }

    fn recv_stream(&mut self, id: u32, now: u64, wall_ns: u64, out: &mut impl Outbox) -> Visit {
        let max_payload = out.max_frame().min(SCRATCH_LEN);
        if max_payload == 0 {
            return Visit::Done;
        }
        let mut scratch = core::mem::take(&mut self.scratch);
        let mut result = Visit::Again;
        for _ in 0..FRAMES_PER_VISIT {
            if !self.backlog.is_empty() {
                result = Visit::Stalled;
                break;
            }
            let Some(s) = self.socks.get_mut(&id) else {
                result = Visit::Done;
                break;
            };
            if !s.readable || s.rx_done || s.credit == 0 {
                result = Visit::Done;
                break;
            }
            let mut want = (s.credit as usize).min(max_payload);
            if let Some(p) = s.peer {
                let allow = self.mit.bytes_allowance(p.ip(), now, want);
                if allow == 0 {
                    if let Some(t) = self.mit.next_refill(p.ip(), now, want) {
                        self.defer(id, t.max(now + 1));
                    }
                    result = Visit::Done;
                    break;
                }
                want = allow;
            }
            let Some(buf) = scratch.get_mut(..want) else {
                result = Visit::Done;
                break;
            };
            match self.stack.recv(s.handle, buf) {
                Ok(0) => {
                    s.readable = false;
                    s.rx_done = true;
                    if let Some(f) = s.flow {
                        self.flows.add_tcp_flags(f, tcp_flags::FIN);
                        self.flows.set_state(f, FlowState::Closing, now);
                    }
                    self.emit(out, &Msg::Eof { sock: id });
                    result = Visit::Done;
                    break;
                }
                Ok(n) => {
                    let n = n.min(want);
                    s.credit = s.credit.saturating_sub(n as u32);
                    self.stats.bytes_in = self.stats.bytes_in.saturating_add(n as u64);
                    if let Some(f) = s.flow {
                        self.flows.account_in(f, n as u64, now);
                    }
                    if let Some(t) = s.tel.as_mut() {
                        t.on_in(scratch.get(..n).unwrap_or(&[]), now);
                    }
                    let mut hdr = [0u8; HEADER_LEN];
                    if msg::encode_data_header(id, n, &mut hdr).is_err() {
                        result = Visit::Done;
                        break;
                    }
                    let payload = scratch.get(..n).unwrap_or(&[]);
                    // A short read emptied the queue (when the stack says so
                    // and no end of stream is pending): no EAGAIN read.
                    let drained = n < want && !s.closed_hint && self.stack.short_read_is_eagain();
                    if drained {
                        s.readable = false;
                    }
                    if !self.emit_parts(out, &[&hdr, payload]) {
                        result = Visit::Stalled;
                        break;
                    }
                    if drained {
                        result = Visit::Done;
                        break;
                    }
                }
                Err(Errno::EAGAIN) => {
                    s.readable = false;
                    result = Visit::Done;
                    break;
                }
                Err(e) => {
                    self.fail(id, e, now, wall_ns, out);
                    result = Visit::Done;
                    break;
                }
            }
        }
        self.scratch = scratch;
        result
    }

    fn recv_datagrams(&mut self, id: u32, now: u64, _wall_ns: u64, out: &mut impl Outbox) -> Visit {
        let max_payload = out
            .max_frame()
            .saturating_sub(msg::WireAddr::LEN)
            .min(SCRATCH_LEN);
        let mut scratch = core::mem::take(&mut self.scratch);
        let mut result = Visit::Again;
        for _ in 0..FRAMES_PER_VISIT {
            if !self.backlog.is_empty() {
                result = Visit::Stalled;
                break;
            }
            let Some(s) = self.socks.get_mut(&id) else {
                result = Visit::Done;
                break;
            };
            // A datagram held for credit goes first.
            if let Some(u) = s.udp.as_mut()
                && let Some((src, info, d)) = u.held.take()
            {
                if (s.credit as usize) < d.len() {
                    u.held = Some((src, info, d));
                    result = Visit::Done;
                    break;
                }
                s.credit = s.credit.saturating_sub(d.len() as u32);
                let mut pre = [0u8; DATA_TO_PREFIX_LEN];
                if msg::encode_data_to_header(id, Some(src), &info, d.len(), &mut pre).is_ok()
                    && !self.emit_parts(out, &[&pre, &d])
                {
                    result = Visit::Stalled;
                    break;
                }
                continue;
            }
            if !s.readable || s.credit == 0 {
                result = Visit::Done;
                break;
            }
            let (n, src, info) = match self.stack.recv_from_info(s.handle, &mut scratch) {
                Ok(v) => v,
                Err(Errno::EAGAIN) => {
                    s.readable = false;
                    result = Visit::Done;
                    break;
                }
                Err(e) => {
                    // ICMP errors on UDP sockets (ECONNREFUSED…) are reported
                    // by Linux on the next receive; they do not end the socket.
                    tracing::trace!(sock = id, ?e, "datagram receive error");
                    continue;
                }
            };
            let n = n.min(scratch.len());
            self.stats.bytes_in = self.stats.bytes_in.saturating_add(n as u64);
            let ip = src.ip();
            if self.mit.is_blocked(ip) {
                self.counters.dropped_datagrams += 1;
                continue;
            }
            // Flow accounting; a new flow must be admitted.
            if s.local.is_none_or(|l| l.port() == 0) {
                s.local = self.stack.local_addr(s.handle).ok();
            }
            if let Some(local) = s.local {
                let f = match self.flows.udp_lookup(local, src) {
                    Some(f) => Some(f),
                    None => match self.mit.admit_connection(ip, now) {
                        Admit::Accept => self
                            .flows
                            .open(
                                FlowKey {
                                    proto: Proto::Udp,
                                    local,
                                    remote: src,
                                },
                                FlowState::Established,
                                now,
                            )
                            .ok(),
                        _ => {
                            self.stats.dropped_conns += 1;
                            self.counters.dropped_datagrams += 1;
                            continue;
                        }
                    },
                };
                if let Some(f) = f {
                    self.flows.account_in(f, n as u64, now);
                    if let Some(u) = s.udp.as_mut() {
                        u.flows.insert(f);
                    }
                    self.flow_sock.insert(f, id);
                }
            }
            if self.mit.bytes_allowance(ip, now, n) < n
                || n > max_payload
                || n > self.driver_window as usize
            {
                self.counters.dropped_datagrams += 1;
                continue;
            }
            let d = scratch.get(..n).unwrap_or(&[]);
            if (s.credit as usize) < n {
                if let Some(u) = s.udp.as_mut() {
                    u.held = Some((src, info, d.to_vec()));
                }
                result = Visit::Done;
                break;
            }
            s.credit = s.credit.saturating_sub(n as u32);
            let mut pre = [0u8; DATA_TO_PREFIX_LEN];
            if msg::encode_data_to_header(id, Some(src), &info, n, &mut pre).is_err() {
                continue;
            }
            if !self.emit_parts(out, &[&pre, d]) {
                result = Visit::Stalled;
                break;
            }
        }
        self.scratch = scratch;
        result
    }

    fn accept_some(&mut self, id: u32, now: u64, wall_ns: u64, out: &mut impl Outbox) -> Visit {
        let _ = wall_ns;
        for _ in 0..self.cfg.accept_batch {
            if !self.backlog.is_empty() {
                return Visit::Stalled;
            }
            let Some(s) = self.socks.get_mut(&id) else {
                return Visit::Done;
            };
            if !s.readable || s.credit == 0 || self.mit.is_draining() {
                return Visit::Done;
            }
            let lh = s.handle;
            let a = match self.stack.accept(lh) {
                Ok(a) => a,
                Err(Errno::EAGAIN) => {
                    s.readable = false;
                    return Visit::Done;
                }
                Err(e) => {
                    // ECONNABORTED and resource errors: skip this one.
                    tracing::debug!(sock = id, ?e, "accept failed");
                    if matches!(e, Errno::EMFILE | Errno::ENOBUFS | Errno::ENOMEM) {
                        s.readable = false;
                        return Visit::Done;
                    }
                    continue;
                }
            };
            let full = self.socks.len() + self.lingering.len() >= self.cfg.max_sockets;
            if full || self.mit.admit_connection(a.peer.ip(), now) != Admit::Accept {
                let _ =
                    self.stack
                        .set_opt(a.handle, opt::SOL_SOCKET, opt::SO_LINGER, &linger_zero());
                let _ = self.stack.close(a.handle);
                self.stats.dropped_conns += 1;
                continue;
            }
            let new_id = self.alloc_instance_id();
            if let Some(s) = self.socks.get_mut(&id) {
                s.credit -= 1;
            }
            if !self.tcp_opts.is_empty() {
                self.apply_tcp_defaults(a.handle);
            }
            let flow = self
                .flows
                .open(
                    FlowKey {
                        proto: Proto::Tcp,
                        local: a.local,
                        remote: a.peer,
                    },
                    FlowState::Established,
                    now,
                )
                .ok();
            let mut ns = Sock::new(a.handle, SockType::Stream, self.driver_window);
            ns.phase = Phase::Open;
            ns.peer = Some(a.peer);
            ns.local = Some(a.local);
            ns.flow = flow;
            ns.readable = true;
            if flow.is_some() {
                ns.tel = self.new_tel(now, false);
            }
            if let Some(f) = flow {
                self.flows.add_tcp_flags(f, tcp_flags::SYN | tcp_flags::ACK);
                self.flow_sock.insert(f, new_id);
            }
            self.by_handle.insert(a.handle, new_id);
            self.socks.insert(new_id, ns);
            self.emit(
                out,
                &Msg::Accepted {
                    listener: id,
                    sock: new_id,
                    peer: a.peer,
                    local: a.local,
                },
            );
            self.enqueue(new_id);
        }
        Visit::Again
    }

    fn alloc_instance_id(&mut self) -> u32 {
        loop {
            let id = INSTANCE_SOCK_BIT | (self.next_inst_id & !INSTANCE_SOCK_BIT);
            self.next_inst_id = self.next_inst_id.wrapping_add(1) & !INSTANCE_SOCK_BIT;
            if self.next_inst_id == 0 {
                self.next_inst_id = 1;
            }
            if id != INSTANCE_SOCK_BIT && !self.socks.contains_key(&id) {
                return id;
            }
        }
    }

    // ------------------------------------------------------------ mitigations

    fn mitigate(
        &mut self,
        cmd: Mitigation<'_>,
        now: u64,
        wall_ns: u64,
        out: &mut impl Outbox,
    ) -> Result<(), Errno> {
        let rules = |e: MitigationError| match e {
            MitigationError::TooManyRules(_) => RULES_FULL,
            MitigationError::ZeroRate => Errno::EINVAL,
        };
        match cmd {
            Mitigation::Block(p) => {
                let p = to_prefix(p)?;
                self.mit.block(p).map_err(rules)?;
                self.reset_matching(&p, now, wall_ns, out);
                Ok(())
            }
            Mitigation::Unblock(p) => {
                self.mit.unblock(&to_prefix(p)?);
                Ok(())
            }
            Mitigation::RateLimit {
                prefix,
                conn_per_sec,
                conn_burst,
                bytes_per_sec,
                bytes_burst,
            } => {
                let spec = LimitSpec {
                    connections: rate(conn_per_sec.into(), conn_burst.into()),
                    bytes: rate(bytes_per_sec, bytes_burst),
                };
                self.mit
                    .limit(to_prefix(prefix)?, spec, now)
                    .map_err(rules)?;
                Ok(())
            }
            Mitigation::ClearRateLimit(p) => {
                let p = to_prefix(p)?;
                self.mit.clear_limit(&p);
                // Sockets waiting for a refill of that limit may go now.
                let ids: Vec<u32> = self
                    .socks
                    .iter()
                    .filter(|(_, s)| {
                        s.deferred.is_some() && s.peer.is_some_and(|a| p.contains(a.ip()))
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    if let Some(s) = self.socks.get_mut(&id)
                        && let Some(t) = s.deferred.take()
                    {
                        self.deferred.remove(&(t, id));
                        self.flush_tx(id, now, wall_ns, out);
                        self.enqueue(id);
                    }
                }
                Ok(())
            }
            Mitigation::CloseFlow { flow_id } => {
                let sock = *self.flow_sock.get(&flow_id).ok_or(Errno::ENOENT)?;
                let is_tcp = self
                    .socks
                    .get(&sock)
                    .is_some_and(|s| s.flow == Some(flow_id));
                if is_tcp {
                    self.abort(
                        sock,
                        Errno::ECONNRESET,
                        CloseReason::Mitigated,
                        now,
                        wall_ns,
                        out,
                    );
                } else {
                    self.flow_sock.remove(&flow_id);
                    if let Some(u) = self.socks.get_mut(&sock).and_then(|s| s.udp.as_mut()) {
                        u.flows.remove(&flow_id);
                    }
                    if let Some(snap) = self.flows.close(flow_id, CloseReason::Mitigated, now) {
                        self.emit_flow(&snap, sock, now, wall_ns, out);
                    }
                }
                Ok(())
            }
            Mitigation::SetFlowOpt {
                flow_id,
                level,
                name,
                value,
            } => {
                let sock = *self.flow_sock.get(&flow_id).ok_or(Errno::ENOENT)?;
                let s = self.socks.get(&sock).ok_or(Errno::ENOENT)?;
                if !s.handle_open {
                    return Err(Errno::ENOENT);
                }
                self.stack.set_opt(s.handle, level, name, value)
            }
            Mitigation::TcpSettings(w) => {
                let mut merged = self.tcp_defaults.clone();
                merged.merge(&settings_from_wire(&w));
                merged.validate().map_err(|_| Errno::EINVAL)?;
                if merged.congestion.is_some() {
                    let mut names = Vec::new();
                    self.stack.available_congestion(&mut names);
                    if !names.iter().any(|n| Some(n) == merged.congestion.as_ref()) {
                        return Err(Errno::ENOENT);
                    }
                }
                self.set_tcp_defaults(merged);
                Ok(())
            }
            Mitigation::Report { flow_id } => {
                if !self.cfg.telemetry {
                    return Err(Errno::EOPNOTSUPP);
                }
                if flow_id == 0 {
                    self.report_all(TelemetryCause::OnDemand, now, out);
                    return Ok(());
                }
                let sock = *self.flow_sock.get(&flow_id).ok_or(Errno::ENOENT)?;
                let s = self.socks.get_mut(&sock).ok_or(Errno::ENOENT)?;
                if s.flow != Some(flow_id) {
                    return Err(Errno::ENOENT);
                }
                let t = conn_report(
                    &mut self.stack,
                    &mut self.flows,
                    sock,
                    s,
                    TelemetryCause::OnDemand,
                    now,
                )
                .ok_or(Errno::ENOENT)?;
                self.emit(out, &Msg::Telemetry(t));
                Ok(())
            }
            Mitigation::Drain => {
                self.mit.drain();
                Ok(())
            }
            Mitigation::Resume => {
                if self.mit.resume() {
                    let ls: Vec<u32> = self
                        .socks
                        .iter()
                        .filter(|(_, s)| s.phase == Phase::Listening)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ls {
                        if let Some(s) = self.socks.get_mut(&id) {
                            s.readable = true;
                        }
                        self.enqueue(id);
                    }
                }
                Ok(())
            }
        }
    }

    /// Aborts every connection and ends every UDP flow whose peer is in `p`.
    fn reset_matching(&mut self, p: &Prefix, now: u64, wall_ns: u64, out: &mut impl Outbox) {
        let ids: Vec<u32> = self
            .socks
            .iter()
            .filter(|(_, s)| {
                s.ty == SockType::Stream
                    && s.phase != Phase::Dead
                    && s.flow.is_some()
                    && s.peer.is_some_and(|a| p.contains(a.ip()))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.abort(
                id,
                Errno::ECONNRESET,
                CloseReason::Mitigated,
                now,
                wall_ns,
                out,
            );
        }
        let udp: Vec<(FlowId, u32)> = self
            .flow_sock
            .iter()
            .filter(|(f, sock)| {
                self.socks
                    .get(*sock)
                    .is_some_and(|s| s.ty == SockType::Datagram && s.flow != Some(**f))
            })
            .filter(|(f, _)| {
                self.flows
                    .snapshot(**f)
                    .is_some_and(|snap| p.contains(snap.key.remote.ip()))
            })
            .map(|(f, s)| (*f, *s))
            .collect();
        for (f, sock) in udp {
            self.flow_sock.remove(&f);
            if let Some(u) = self.socks.get_mut(&sock).and_then(|s| s.udp.as_mut()) {
                u.flows.remove(&f);
            }
            if let Some(snap) = self.flows.close(f, CloseReason::Mitigated, now) {
                self.emit_flow(&snap, sock, now, wall_ns, out);
            }
        }
    }
}

/// The telemetry report of a TCP connection (reads the stack's TCP
/// counters and refreshes the flow's segment counts); `None` without
/// telemetry state or an open flow.
fn conn_report<S: Stack>(
    stack: &mut S,
    flows: &mut FlowTable,
    id: u32,
    s: &mut Sock<S::Handle>,
    cause: TelemetryCause,
    now: u64,
) -> Option<ConnTelemetry> {
    let f = s.flow?;
    let tel = s.tel.as_mut()?;
    let tcp = if s.handle_open {
        stack.tcp_info(s.handle)
    } else {
        None
    };
    if let Some(c) = tcp {
        flows.set_segments(f, c.segs_in, c.segs_out);
    }
    let snap = flows.snapshot(f)?;
    tel.report(
        cause,
        now,
        tcp,
        &ReportInput {
            flow_id: f,
            sock: id,
            local: Some(snap.key.local),
            remote: Some(snap.key.remote),
            bytes_in: snap.bytes_in,
            bytes_out: snap.bytes_out,
            segs_in: snap.segs_in,
            segs_out: snap.segs_out,
            buffered: s.tx.as_ref().map_or(0, |t| t.len()),
            peer_fin: s.rx_done,
            local_fin: s.wr_closed,
        },
    )
}

/// Applies an in-band option to the stack, counting it (and a refusal).
fn apply_opt<S: Stack>(
    stack: &mut S,
    counters: &mut ExecCounters,
    h: S::Handle,
    level: i32,
    name: i32,
    value: &[u8],
) {
    counters.inband_opts += 1;
    if let Err(e) = stack.set_opt(h, level, name, value) {
        counters.inband_opt_errors += 1;
        tracing::debug!(level, name, ?e, "in-band option refused by the stack");
    }
}

/// Hands `tx`'s bytes to the kernel as far as it takes them, applying each
/// in-band option when the bytes before it are out. Returns the bytes
/// written and how it stopped.
#[allow(clippy::too_many_arguments)]
fn drain_tx<S: Stack>(
    stack: &mut S,
    mit: &mut Mitigations,
    flows: &mut FlowTable,
    stats: &mut Stats,
    counters: &mut ExecCounters,
    s: &mut Sock<S::Handle>,
    tx: &mut TxBuf,
    now: u64,
) -> (usize, TxEnd) {
    let mut total = 0usize;
    loop {
        while tx.opts.first().is_some_and(|o| o.at == 0) {
            let o = tx.opts.remove(0);
            apply_opt(
                stack,
                counters,
                s.handle,
                o.level,
                o.name,
                o.value.as_slice(),
            );
        }
        let upto = tx.opts.first().map_or(tx.len(), |o| o.at);
        if upto == 0 {
            return (total, TxEnd::Drained);
        }
        let (n, end) = send_some(
            stack,
            mit,
            flows,
            stats,
            s,
            tx.pending().get(..upto).unwrap_or(&[]),
            now,
        );
        if let Some(t) = s.tel.as_mut() {
            t.on_out(tx.pending().get(..n).unwrap_or(&[]), now);
        }
        tx.consume(n);
        total += n;
        if !matches!(end, TxEnd::Drained) {
            return (total, end);
        }
    }
}

/// Writes as much of `bytes` as the rate limit and the kernel take.
fn send_some<S: Stack>(
    stack: &mut S,
    mit: &mut Mitigations,
    flows: &mut FlowTable,
    stats: &mut Stats,
    s: &Sock<S::Handle>,
    bytes: &[u8],
    now: u64,
) -> (usize, TxEnd) {
    let mut done = 0usize;
    loop {
        let rest = bytes.get(done..).unwrap_or(&[]);
        if rest.is_empty() {
            return (done, TxEnd::Drained);
        }
        let mut want = rest.len();
        if let Some(p) = s.peer {
            let allow = mit.bytes_allowance(p.ip(), now, want);
            if allow == 0 {
                return match mit.next_refill(p.ip(), now, want) {
                    Some(t) => (done, TxEnd::Deferred(t.max(now + 1))),
                    None => (done, TxEnd::Blocked),
                };
            }
            want = allow;
        }
        match stack.send(s.handle, rest.get(..want).unwrap_or(&[])) {
            Ok(n) => {
                let n = n.min(want);
                done += n;
                stats.bytes_out = stats.bytes_out.saturating_add(n as u64);
                if let Some(f) = s.flow {
                    flows.account_out(f, n as u64, now);
                }
                if n == 0 {
                    return (done, TxEnd::Blocked);
                }
            }
            Err(Errno::EAGAIN) => return (done, TxEnd::Blocked),
            Err(e) => return (done, TxEnd::Failed(e)),
        }
    }
}
