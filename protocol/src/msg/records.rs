//! Records the instance reports ([`Stats`], [`FlowRecord`]) and the
//! mitigation commands it obeys ([`Mitigation`], [`TcpSettings`]).
//!
//! ```text
//! Heartbeat body (StatsWire, 80 bytes)      Flow body (FlowWire, 128 bytes)
//!  0 seq u64        8 uptime_ns u64          0 flow_id u64    8 proto u8 (6|17)
//! 16 sockets_used  20 sockets_max           9 state u8  10 reason u8  11 tcp_flags u8
//! 24 connections   28 listeners             12 sock u32      16 local WireAddr
//! 32 accept_queue  36 reserved u32 (0)      48 remote WireAddr
//! 40 bytes_in  48 bytes_out  56 segs_in     80 bytes_in  88 bytes_out  96 segs_in
//! 64 segs_out  72 dropped_conns            104 segs_out 112 start_ns  120 last_ns
//!
//! Mitigate body: MitigateHead (8 bytes: op u16, reserved u16, reserved u32), then
//!   Block/Unblock/ClearRateLimit  PrefixWire(20) + reserved u32          = 24
//!   RateLimit   PrefixWire(20) + reserved u32 + conn_per_sec u32 + conn_burst u32
//!               + bytes_per_sec u64 + bytes_burst u64                     = 48
//!   CloseFlow   flow_id u64                                               =  8
//!   SetFlowOpt  flow_id u64 + level i32 + name i32, then ≤ 256 value bytes = 16+n
//!   TcpSettings TcpSettingsWire                                           = 48
//!   Drain, Resume                                                         =  0
//!   Report      flow_id u64 (0 = every connection)                        =  8
//! ```

use core::net::SocketAddr;

use zerocopy::byteorder::little_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::addr::{Prefix, PrefixWire, WireAddr};
use super::{DecodeError, Fixed, Kind, MAX_OPT_LEN, exact, split};

/// Instance counters, sent as the body of a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Heartbeat sequence number (increments by one per heartbeat).
    pub seq: u64,
    /// Nanoseconds since the instance started.
    pub uptime_ns: u64,
    /// Socket ids in use.
    pub sockets_used: u32,
    /// Socket ids the instance can hold.
    pub sockets_max: u32,
    /// Established connections.
    pub connections: u32,
    /// Listening sockets.
    pub listeners: u32,
    /// Accepted connections not yet announced to the driver.
    pub accept_queue: u32,
    /// Payload bytes received from the network.
    pub bytes_in: u64,
    /// Payload bytes sent to the network.
    pub bytes_out: u64,
    /// Segments received.
    pub segs_in: u64,
    /// Segments sent.
    pub segs_out: u64,
    /// Connections refused or dropped (mitigations, limits, queue overflow).
    pub dropped_conns: u64,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct StatsWire {
    seq: U64,
    uptime_ns: U64,
    sockets_used: U32,
    sockets_max: U32,
    connections: U32,
    listeners: U32,
    accept_queue: U32,
    reserved: U32,
    bytes_in: U64,
    bytes_out: U64,
    segs_in: U64,
    segs_out: U64,
    dropped_conns: U64,
}

const _: () = assert!(core::mem::size_of::<StatsWire>() == 80);

impl Stats {
    pub(crate) fn encode(&self, f: &mut Fixed) {
        f.push(
            StatsWire {
                seq: U64::new(self.seq),
                uptime_ns: U64::new(self.uptime_ns),
                sockets_used: U32::new(self.sockets_used),
                sockets_max: U32::new(self.sockets_max),
                connections: U32::new(self.connections),
                listeners: U32::new(self.listeners),
                accept_queue: U32::new(self.accept_queue),
                reserved: U32::new(0),
                bytes_in: U64::new(self.bytes_in),
                bytes_out: U64::new(self.bytes_out),
                segs_in: U64::new(self.segs_in),
                segs_out: U64::new(self.segs_out),
                dropped_conns: U64::new(self.dropped_conns),
            }
            .as_bytes(),
        );
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Stats, DecodeError> {
        let w: StatsWire = exact(Kind::Heartbeat, body)?;
        if w.reserved.get() != 0 {
            return Err(DecodeError::NonZeroReserved {
                kind: Kind::Heartbeat,
            });
        }
        Ok(Stats {
            seq: w.seq.get(),
            uptime_ns: w.uptime_ns.get(),
            sockets_used: w.sockets_used.get(),
            sockets_max: w.sockets_max.get(),
            connections: w.connections.get(),
            listeners: w.listeners.get(),
            accept_queue: w.accept_queue.get(),
            bytes_in: w.bytes_in.get(),
            bytes_out: w.bytes_out.get(),
            segs_in: w.segs_in.get(),
            segs_out: w.segs_out.get(),
            dropped_conns: w.dropped_conns.get(),
        })
    }
}

/// Whether a flow is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FlowState {
    /// Open; the record is an interim report.
    Active = 0,
    /// Closed; this is the flow's final record.
    Closed = 1,
}

impl TryFrom<u8> for FlowState {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(FlowState::Active),
            1 => Ok(FlowState::Closed),
            _ => Err(DecodeError::BadEnum {
                field: "flow state",
                value: u32::from(v),
            }),
        }
    }
}

/// Why a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CloseReason {
    /// Not closed (active flows).
    None = 0,
    /// Orderly close (FIN both ways, or the socket was closed).
    Normal = 1,
    /// Reset by the peer or by us.
    Reset = 2,
    /// Idle or retransmission timeout.
    Timeout = 3,
    /// Closed by a mitigation (block, rate limit, `CloseFlow`).
    Mitigated = 4,
    /// Any other error.
    Error = 5,
}

impl TryFrom<u8> for CloseReason {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => CloseReason::None,
            1 => CloseReason::Normal,
            2 => CloseReason::Reset,
            3 => CloseReason::Timeout,
            4 => CloseReason::Mitigated,
            5 => CloseReason::Error,
            _ => {
                return Err(DecodeError::BadEnum {
                    field: "close reason",
                    value: u32::from(v),
                });
            }
        })
    }
}

/// IP protocol number of TCP, for [`FlowRecord::proto`].
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP, for [`FlowRecord::proto`].
pub const IPPROTO_UDP: u8 = 17;

/// One flow's accounting, sent while it is active and once when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    /// Instance-unique flow id (the handle for `CloseFlow`/`SetFlowOpt`).
    pub flow_id: u64,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Local address.
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// Segments (or datagrams) received.
    pub segs_in: u64,
    /// Segments (or datagrams) sent.
    pub segs_out: u64,
    /// First packet, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// Latest packet, nanoseconds since the Unix epoch.
    pub last_ns: u64,
    /// Active or closed.
    pub state: FlowState,
    /// Why it closed ([`CloseReason::None`] while active).
    pub reason: CloseReason,
    /// Union of TCP flags seen (0 for UDP).
    pub tcp_flags: u8,
    /// The socket id carrying the flow, 0 if none (already released).
    pub sock: u32,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct FlowWire {
    flow_id: U64,
    proto: u8,
    state: u8,
    reason: u8,
    tcp_flags: u8,
    sock: U32,
    local: WireAddr,
    remote: WireAddr,
    bytes_in: U64,
    bytes_out: U64,
    segs_in: U64,
    segs_out: U64,
    start_ns: U64,
    last_ns: U64,
}

const _: () = assert!(core::mem::size_of::<FlowWire>() == 128);

impl FlowRecord {
    pub(crate) fn encode(&self, f: &mut Fixed) {
        f.push(
            FlowWire {
                flow_id: U64::new(self.flow_id),
                proto: self.proto,
                state: self.state as u8,
                reason: self.reason as u8,
                tcp_flags: self.tcp_flags,
                sock: U32::new(self.sock),
                local: self.local.into(),
                remote: self.remote.into(),
                bytes_in: U64::new(self.bytes_in),
                bytes_out: U64::new(self.bytes_out),
                segs_in: U64::new(self.segs_in),
                segs_out: U64::new(self.segs_out),
                start_ns: U64::new(self.start_ns),
                last_ns: U64::new(self.last_ns),
            }
            .as_bytes(),
        );
    }

    pub(crate) fn decode(body: &[u8]) -> Result<FlowRecord, DecodeError> {
        let w: FlowWire = exact(Kind::Flow, body)?;
        if w.proto != IPPROTO_TCP && w.proto != IPPROTO_UDP {
            return Err(DecodeError::BadEnum {
                field: "flow protocol",
                value: u32::from(w.proto),
            });
        }
        Ok(FlowRecord {
            flow_id: w.flow_id.get(),
            proto: w.proto,
            local: w.local.require(Kind::Flow)?,
            remote: w.remote.require(Kind::Flow)?,
            bytes_in: w.bytes_in.get(),
            bytes_out: w.bytes_out.get(),
            segs_in: w.segs_in.get(),
            segs_out: w.segs_out.get(),
            start_ns: w.start_ns.get(),
            last_ns: w.last_ns.get(),
            state: FlowState::try_from(w.state)?,
            reason: CloseReason::try_from(w.reason)?,
            tcp_flags: w.tcp_flags,
            sock: w.sock.get(),
        })
    }
}

/// [`TcpSettings::nodelay`]/[`TcpSettings::keepalive`]: leave as is.
pub const TOGGLE_UNCHANGED: u8 = 0;
/// [`TcpSettings::nodelay`]/[`TcpSettings::keepalive`]: turn off.
pub const TOGGLE_OFF: u8 = 1;
/// [`TcpSettings::nodelay`]/[`TcpSettings::keepalive`]: turn on.
pub const TOGGLE_ON: u8 = 2;

/// Instance-wide TCP defaults for new connections. Every field's zero value
/// means "unchanged".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpSettings {
    /// Congestion control algorithm name: printable ASCII (no spaces),
    /// NUL-padded; all zero = unchanged. See [`TcpSettings::set_congestion`].
    pub congestion: [u8; 16],
    /// `SO_SNDBUF` in bytes, 0 = unchanged.
    pub sndbuf: u32,
    /// `SO_RCVBUF` in bytes, 0 = unchanged.
    pub rcvbuf: u32,
    /// `TCP_NODELAY`: [`TOGGLE_UNCHANGED`], [`TOGGLE_OFF`] or [`TOGGLE_ON`].
    pub nodelay: u8,
    /// `SO_KEEPALIVE`: [`TOGGLE_UNCHANGED`], [`TOGGLE_OFF`] or [`TOGGLE_ON`].
    pub keepalive: u8,
    /// `TCP_KEEPIDLE` seconds, 0 = unchanged.
    pub keepidle: u32,
    /// `TCP_KEEPINTVL` seconds, 0 = unchanged.
    pub keepintvl: u32,
    /// `TCP_KEEPCNT`, 0 = unchanged.
    pub keepcnt: u32,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct TcpSettingsWire {
    congestion: [u8; 16],
    sndbuf: U32,
    rcvbuf: U32,
    nodelay: u8,
    keepalive: u8,
    reserved0: [u8; 2],
    keepidle: U32,
    keepintvl: U32,
    keepcnt: U32,
    reserved1: [u8; 8],
}

const _: () = assert!(core::mem::size_of::<TcpSettingsWire>() == 48);

/// Whether `name` is a valid NUL-padded congestion-control name field.
fn congestion_ok(name: &[u8; 16]) -> bool {
    let n = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let (text, pad) = name.split_at(n);
    text.iter().all(u8::is_ascii_graphic) && pad.iter().all(|&b| b == 0)
}

impl TcpSettings {
    /// Sets [`congestion`](Self::congestion) from a name of 1 to 16
    /// printable ASCII characters, or clears it (unchanged) for `""`.
    pub fn set_congestion(&mut self, name: &str) -> Result<(), DecodeError> {
        let bytes = name.as_bytes();
        let mut field = [0u8; 16];
        let dst = field.get_mut(..bytes.len()).ok_or(DecodeError::BadString {
            field: "congestion",
        })?;
        dst.copy_from_slice(bytes);
        if !congestion_ok(&field) {
            return Err(DecodeError::BadString {
                field: "congestion",
            });
        }
        self.congestion = field;
        Ok(())
    }

    /// The congestion-control name, `None` if unchanged (all zero) or not
    /// valid ASCII.
    pub fn congestion_name(&self) -> Option<&str> {
        let n = self
            .congestion
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.congestion.len());
        let text = self.congestion.get(..n)?;
        if n == 0 || !congestion_ok(&self.congestion) {
            return None;
        }
        core::str::from_utf8(text).ok()
    }

    fn encode(&self, f: &mut Fixed) {
        f.push(
            TcpSettingsWire {
                congestion: self.congestion,
                sndbuf: U32::new(self.sndbuf),
                rcvbuf: U32::new(self.rcvbuf),
                nodelay: self.nodelay,
                keepalive: self.keepalive,
                reserved0: [0; 2],
                keepidle: U32::new(self.keepidle),
                keepintvl: U32::new(self.keepintvl),
                keepcnt: U32::new(self.keepcnt),
                reserved1: [0; 8],
            }
            .as_bytes(),
        );
    }

    fn decode(body: &[u8]) -> Result<TcpSettings, DecodeError> {
        let w: TcpSettingsWire = exact(Kind::Mitigate, body)?;
        if w.reserved0 != [0; 2] || w.reserved1 != [0; 8] {
            return Err(DecodeError::NonZeroReserved {
                kind: Kind::Mitigate,
            });
        }
        if !congestion_ok(&w.congestion) {
            return Err(DecodeError::BadString {
                field: "congestion",
            });
        }
        for (field, v) in [("nodelay", w.nodelay), ("keepalive", w.keepalive)] {
            if v > TOGGLE_ON {
                return Err(DecodeError::BadEnum {
                    field,
                    value: u32::from(v),
                });
            }
        }
        Ok(TcpSettings {
            congestion: w.congestion,
            sndbuf: w.sndbuf.get(),
            rcvbuf: w.rcvbuf.get(),
            nodelay: w.nodelay,
            keepalive: w.keepalive,
            keepidle: w.keepidle.get(),
            keepintvl: w.keepintvl.get(),
            keepcnt: w.keepcnt.get(),
        })
    }
}

/// A command to an instance's mitigation engine, the body of
/// [`Msg::Mitigate`](super::MsgOf::Mitigate), generic over how it holds
/// the `SetFlowOpt` value like [`MsgOf`](super::MsgOf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MitigationOf<P> {
    /// Refuse new connections and datagrams from the prefix and reset
    /// existing ones.
    Block(Prefix),
    /// Remove a block.
    Unblock(Prefix),
    /// Limit each source address in the prefix; 0 = unlimited.
    RateLimit {
        /// Sources the limit applies to.
        prefix: Prefix,
        /// New connections per second.
        conn_per_sec: u32,
        /// Connection burst.
        conn_burst: u32,
        /// Bytes per second.
        bytes_per_sec: u64,
        /// Byte burst.
        bytes_burst: u64,
    },
    /// Remove a rate limit.
    ClearRateLimit(Prefix),
    /// Reset one flow.
    CloseFlow {
        /// The flow, as reported in [`FlowRecord::flow_id`].
        flow_id: u64,
    },
    /// Set a socket option on one flow's socket.
    SetFlowOpt {
        /// The flow, as reported in [`FlowRecord::flow_id`].
        flow_id: u64,
        /// `setsockopt` level.
        level: i32,
        /// `setsockopt` option name.
        name: i32,
        /// Option value, at most [`MAX_OPT_LEN`] bytes.
        value: P,
    },
    /// Change TCP defaults for new connections.
    TcpSettings(TcpSettings),
    /// Stop accepting new connections (keep serving existing ones).
    Drain,
    /// Undo [`Drain`](MitigationOf::Drain).
    Resume,
    /// Send a [`ConnTelemetry`](super::ConnTelemetry) now (cause
    /// `OnDemand`) for one flow, or for every open connection when
    /// `flow_id` is 0. Not a mitigation: the instance-wide command channel
    /// carries it; an unknown flow is `ENOENT`.
    Report {
        /// The flow, or 0 for all.
        flow_id: u64,
    },
}

/// A mitigation command borrowing its `SetFlowOpt` value from a frame.
pub type Mitigation<'a> = MitigationOf<&'a [u8]>;

/// Mitigation opcodes on the wire.
mod op {
    pub const BLOCK: u16 = 1;
    pub const UNBLOCK: u16 = 2;
    pub const RATE_LIMIT: u16 = 3;
    pub const CLEAR_RATE_LIMIT: u16 = 4;
    pub const CLOSE_FLOW: u16 = 5;
    pub const SET_FLOW_OPT: u16 = 6;
    pub const TCP_SETTINGS: u16 = 7;
    pub const DRAIN: u16 = 8;
    pub const RESUME: u16 = 9;
    pub const REPORT: u16 = 10;
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct MitigateHead {
    op: U16,
    reserved0: U16,
    reserved1: U32,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct PrefixBody {
    prefix: PrefixWire,
    reserved: U32,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RateLimitBody {
    prefix: PrefixWire,
    reserved: U32,
    conn_per_sec: U32,
    conn_burst: U32,
    bytes_per_sec: U64,
    bytes_burst: U64,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct CloseFlowBody {
    flow_id: U64,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct SetFlowOptBody {
    flow_id: U64,
    level: I32,
    name: I32,
}

const _: () = assert!(core::mem::size_of::<MitigateHead>() == 8);
const _: () = assert!(core::mem::size_of::<PrefixBody>() == 24);
const _: () = assert!(core::mem::size_of::<RateLimitBody>() == 48);
const _: () = assert!(core::mem::size_of::<CloseFlowBody>() == 8);
const _: () = assert!(core::mem::size_of::<SetFlowOptBody>() == 16);

/// Largest fixed part of a Mitigate body (head + rate limit).
pub(crate) const MITIGATE_MAX_FIXED: usize = 8 + 48;

const M: Kind = Kind::Mitigate;

fn prefix_body(prefix: &Prefix) -> PrefixBody {
    PrefixBody {
        prefix: prefix.to_wire(),
        reserved: U32::new(0),
    }
}

fn decode_prefix_body(rest: &[u8]) -> Result<Prefix, DecodeError> {
    let b: PrefixBody = exact(M, rest)?;
    if b.reserved.get() != 0 {
        return Err(DecodeError::NonZeroReserved { kind: M });
    }
    Prefix::from_wire(&b.prefix, M)
}

impl<'a> Mitigation<'a> {
    fn op(&self) -> u16 {
        match self {
            Mitigation::Block(_) => op::BLOCK,
            Mitigation::Unblock(_) => op::UNBLOCK,
            Mitigation::RateLimit { .. } => op::RATE_LIMIT,
            Mitigation::ClearRateLimit(_) => op::CLEAR_RATE_LIMIT,
            Mitigation::CloseFlow { .. } => op::CLOSE_FLOW,
            Mitigation::SetFlowOpt { .. } => op::SET_FLOW_OPT,
            Mitigation::TcpSettings(_) => op::TCP_SETTINGS,
            Mitigation::Drain => op::DRAIN,
            Mitigation::Resume => op::RESUME,
            Mitigation::Report { .. } => op::REPORT,
        }
    }

    /// Writes the fixed part into `f`; returns the variable payload.
    pub(crate) fn encode(&self, f: &mut Fixed) -> &'a [u8] {
        f.push(
            MitigateHead {
                op: U16::new(self.op()),
                reserved0: U16::new(0),
                reserved1: U32::new(0),
            }
            .as_bytes(),
        );
        match *self {
            Mitigation::Block(p) | Mitigation::Unblock(p) | Mitigation::ClearRateLimit(p) => {
                f.push(prefix_body(&p).as_bytes());
            }
            Mitigation::RateLimit {
                prefix,
                conn_per_sec,
                conn_burst,
                bytes_per_sec,
                bytes_burst,
            } => f.push(
                RateLimitBody {
                    prefix: prefix.to_wire(),
                    reserved: U32::new(0),
                    conn_per_sec: U32::new(conn_per_sec),
                    conn_burst: U32::new(conn_burst),
                    bytes_per_sec: U64::new(bytes_per_sec),
                    bytes_burst: U64::new(bytes_burst),
                }
                .as_bytes(),
            ),
            Mitigation::CloseFlow { flow_id } | Mitigation::Report { flow_id } => f.push(
                CloseFlowBody {
                    flow_id: U64::new(flow_id),
                }
                .as_bytes(),
            ),
            Mitigation::SetFlowOpt {
                flow_id,
                level,
                name,
                value,
            } => {
                f.push(
                    SetFlowOptBody {
                        flow_id: U64::new(flow_id),
                        level: I32::new(level),
                        name: I32::new(name),
                    }
                    .as_bytes(),
                );
                return value;
            }
            Mitigation::TcpSettings(t) => t.encode(f),
            Mitigation::Drain | Mitigation::Resume => {}
        }
        &[]
    }

    pub(crate) fn decode(body: &'a [u8]) -> Result<Mitigation<'a>, DecodeError> {
        let (head, rest) = split::<MitigateHead>(M, body)?;
        if head.reserved0.get() != 0 || head.reserved1.get() != 0 {
            return Err(DecodeError::NonZeroReserved { kind: M });
        }
        Ok(match head.op.get() {
            op::BLOCK => Mitigation::Block(decode_prefix_body(rest)?),
            op::UNBLOCK => Mitigation::Unblock(decode_prefix_body(rest)?),
            op::CLEAR_RATE_LIMIT => Mitigation::ClearRateLimit(decode_prefix_body(rest)?),
            op::RATE_LIMIT => {
                let b: RateLimitBody = exact(M, rest)?;
                if b.reserved.get() != 0 {
                    return Err(DecodeError::NonZeroReserved { kind: M });
                }
                Mitigation::RateLimit {
                    prefix: Prefix::from_wire(&b.prefix, M)?,
                    conn_per_sec: b.conn_per_sec.get(),
                    conn_burst: b.conn_burst.get(),
                    bytes_per_sec: b.bytes_per_sec.get(),
                    bytes_burst: b.bytes_burst.get(),
                }
            }
            op::CLOSE_FLOW => {
                let b: CloseFlowBody = exact(M, rest)?;
                Mitigation::CloseFlow {
                    flow_id: b.flow_id.get(),
                }
            }
            op::REPORT => {
                let b: CloseFlowBody = exact(M, rest)?;
                Mitigation::Report {
                    flow_id: b.flow_id.get(),
                }
            }
            op::SET_FLOW_OPT => {
                let (b, value) = split::<SetFlowOptBody>(M, rest)?;
                if value.len() > MAX_OPT_LEN {
                    return Err(DecodeError::ValueTooLong { len: value.len() });
                }
                Mitigation::SetFlowOpt {
                    flow_id: b.flow_id.get(),
                    level: b.level.get(),
                    name: b.name.get(),
                    value,
                }
            }
            op::TCP_SETTINGS => Mitigation::TcpSettings(TcpSettings::decode(rest)?),
            op::DRAIN | op::RESUME => {
                if !rest.is_empty() {
                    return Err(DecodeError::BadLength {
                        kind: M,
                        len: body.len(),
                    });
                }
                if head.op.get() == op::DRAIN {
                    Mitigation::Drain
                } else {
                    Mitigation::Resume
                }
            }
            other => {
                return Err(DecodeError::BadEnum {
                    field: "mitigation op",
                    value: u32::from(other),
                });
            }
        })
    }
}
