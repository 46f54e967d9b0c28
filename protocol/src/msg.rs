//! The messages carried in ring frames.
//!
//! Every message is one frame: a 16-byte [`Header`], a fixed-size body whose
//! layout depends on the kind, then, for some kinds, a variable payload.
//! Everything is little-endian, `#[repr(C)]`, with no implicit padding.
//!
//! ```text
//!  0        2        4              8             12            16
//!  ├─ kind ─┼─ flags ┼──── len ─────┼──── sock ───┼──── req ────┤ fixed body │ payload │
//!    u16      u16 =0   u32: bytes     u32 socket id  u32 request id
//!                      after header   (0 = none)     (0 = unsolicited)
//! ```
//!
//! | kind | dir | body (bytes) | payload |
//! |---|---|---|---|
//! | 0x01 `Open` | D→I | family u16, type u16, proto i32 (8) | – |
//! | 0x02 `Bind`, 0x04 `Connect` | D→I | [`WireAddr`] (32) | – |
//! | 0x03 `Listen` | D→I | backlog u32, reserved u32 (8) | – |
//! | 0x05 `Shutdown` | D→I | how u32, reserved u32 (8) | – |
//! | 0x06 `Close`, 0x09 `GetSockName`, 0x0a `GetPeerName` | D→I | – | – |
//! | 0x07 `SetOpt` | D→I | level i32, name i32 (8) | value ≤ [`MAX_OPT_LEN`] |
//! | 0x08 `GetOpt` | D→I | level i32, name i32, max_len u32, reserved u32 (16) | – |
//! | 0x0b `Mitigate` | D→I | op u16, reserved (8) + per op, see [`records`] | `SetFlowOpt` value |
//! | 0x0c `SockOpt` | D→I | level i32, name i32 (8) | value ≤ [`MAX_OPT_LEN`] |
//! | 0x20 `Data` | both | – | stream bytes (≥ 1) |
//! | 0x21 `DataTo` | both | [`WireAddr`] (32; family 0 = none), [`PktInfo`] (40), see [`pktinfo`] | datagram (may be empty) |
//! | 0x22 `Credit` | both | bytes u32, reserved u32 (8) | – |
//! | 0x23 `Eof` | both | – | – |
//! | 0x40 `Reply` | I→D | errno i32, reserved u32 (8) | value ≤ [`MAX_OPT_LEN`] (empty if errno ≠ 0) |
//! | 0x41 `Connected` | I→D | errno i32, reserved u32, local, peer [`WireAddr`] (72) | – |
//! | 0x42 `Accepted` | I→D | sock u32, reserved u32, peer, local [`WireAddr`] (72) | – |
//! | 0x43 `Reset` | I→D | errno i32, reserved u32 (8) | – |
//! | 0x44 `Closed` | I→D | – | – |
//! | 0x45 `Heartbeat` | I→D | [`Stats`] (80) | – |
//! | 0x46 `Flow` | I→D | [`FlowRecord`] (128) | – |
//! | 0x47 `Telemetry` | I→D | [`ConnTelemetry`] (240), see [`telemetry`] | – |
//!
//! Invariants, all checked by [`Msg::decode`] (which never panics) and
//! refused by [`Msg::encode`]:
//! * `len` equals the frame length minus 16; fixed bodies have their exact
//!   size; `flags` is 0 (no kind defines flags yet); reserved bytes are 0.
//! * `sock` is non-zero for kinds that name a socket and 0 for those that do
//!   not (`Mitigate`, `Heartbeat`, `Flow`, `Telemetry`; `Reply` echoes the request's,
//!   possibly 0). `Open` and the listener of `Accepted` carry driver ids
//!   (top bit clear); the new socket of `Accepted` is an instance id
//!   ([`INSTANCE_SOCK_BIT`] set). In `Accepted` the header's `sock` is the
//!   listener and the body's is the new connection.
//! * `req` is 0 except in requests (`Open` … `Mitigate`) and `Reply`.
//!   `SockOpt` is not a request: it has no `req` and gets no `Reply`.
//! * `SockOpt` is an option set *in band*: the instance applies it after
//!   every `Data` byte of the same socket that came before it on the ring
//!   and before every byte after it (`TCP_CORK` between a header and a
//!   body). A failure is the instance's to count; nobody waits for it.
//! * errno values are 0 or a Linux errno in 1..=4095; `Reset` needs one;
//!   a failed `Reply` has no value and a failed `Connected` no addresses.
//! * Addresses and prefixes are canonical (see [`addr`]): unused bytes zero,
//!   known family, prefix length in range, host bits zero.
//!
//! Because every byte is either checked to be zero or carried in the decoded
//! value, encoding is canonical: decoding a valid frame and re-encoding it
//! gives back the same bytes.
//!
//! Size: over 800 lines because every message's layout, encoder and
//! validating decoder sit side by side, so a reviewer checks one kind's wire
//! format in one place; the tests are in `msg/tests.rs` and the owned form in
//! `msg/owned.rs`.

use core::net::SocketAddr;

use zerocopy::byteorder::little_endian::{I32, U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub mod addr;
pub mod owned;
pub mod pktinfo;
pub mod records;
pub mod telemetry;

pub use addr::{AF_INET, AF_INET6, AF_UNSPEC, PAIR_HEADER_MAGIC, Prefix, WireAddr};
pub use owned::{OptValue, OwnedMitigation, OwnedMsg};
pub use pktinfo::{
    PAIR_HEADER_LEN, PktInfo, PktInfo4, PktInfo6, decode_pair_header, encode_pair_header,
};
pub use records::{
    CloseReason, FlowRecord, FlowState, IPPROTO_TCP, IPPROTO_UDP, Mitigation, MitigationOf, Stats,
    TOGGLE_OFF, TOGGLE_ON, TOGGLE_UNCHANGED, TcpSettings,
};
pub use telemetry::{ConnTelemetry, PayloadStats, TelemetryCause};

/// Size of the frame header.
pub const HEADER_LEN: usize = 16;

/// Largest socket option value carried by `SetOpt`, `GetOpt`, `Reply` and
/// `SetFlowOpt`.
pub const MAX_OPT_LEN: usize = 256;

/// Socket ids with this bit set were allocated by the instance (accepted
/// connections); ids with it clear were allocated by the driver.
pub const INSTANCE_SOCK_BIT: u32 = 1 << 31;

/// Largest errno value carried on the wire (Linux `MAX_ERRNO`).
pub const MAX_ERRNO: i32 = 4095;

/// Bytes before the payload of a `DataTo` frame: header, address and
/// packet information (the body before the payload is laid out as a
/// [`PAIR_HEADER_LEN`]-byte pair header).
pub const DATA_TO_PREFIX_LEN: usize = HEADER_LEN + PAIR_HEADER_LEN;

/// The frame header, 16 bytes little-endian.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Header {
    /// A [`Kind`].
    pub kind: U16,
    /// Must be 0.
    pub flags: U16,
    /// Bytes after the header.
    pub len: U32,
    /// Socket id, 0 = none.
    pub sock: U32,
    /// Request id, 0 = unsolicited.
    pub req: U32,
}

const _: () = assert!(core::mem::size_of::<Header>() == HEADER_LEN);

/// Message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Kind {
    /// [`Msg::Open`].
    Open = 0x01,
    /// [`Msg::Bind`].
    Bind = 0x02,
    /// [`Msg::Listen`].
    Listen = 0x03,
    /// [`Msg::Connect`].
    Connect = 0x04,
    /// [`Msg::Shutdown`].
    Shutdown = 0x05,
    /// [`Msg::Close`].
    Close = 0x06,
    /// [`Msg::SetOpt`].
    SetOpt = 0x07,
    /// [`Msg::GetOpt`].
    GetOpt = 0x08,
    /// [`Msg::GetSockName`].
    GetSockName = 0x09,
    /// [`Msg::GetPeerName`].
    GetPeerName = 0x0a,
    /// [`Msg::Mitigate`].
    Mitigate = 0x0b,
    /// [`Msg::SockOpt`].
    SockOpt = 0x0c,
    /// [`Msg::Data`].
    Data = 0x20,
    /// [`Msg::DataTo`].
    DataTo = 0x21,
    /// [`Msg::Credit`].
    Credit = 0x22,
    /// [`Msg::Eof`].
    Eof = 0x23,
    /// [`Msg::Reply`].
    Reply = 0x40,
    /// [`Msg::Connected`].
    Connected = 0x41,
    /// [`Msg::Accepted`].
    Accepted = 0x42,
    /// [`Msg::Reset`].
    Reset = 0x43,
    /// [`Msg::Closed`].
    Closed = 0x44,
    /// [`Msg::Heartbeat`].
    Heartbeat = 0x45,
    /// [`Msg::Flow`].
    Flow = 0x46,
    /// [`Msg::Telemetry`].
    Telemetry = 0x47,
}

/// Which way a kind travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Driver to instance only.
    ToInstance,
    /// Instance to driver only.
    ToDriver,
    /// Either way.
    Both,
}

impl Kind {
    /// Every kind, in numeric order.
    pub const ALL: [Kind; 24] = [
        Kind::Open,
        Kind::Bind,
        Kind::Listen,
        Kind::Connect,
        Kind::Shutdown,
        Kind::Close,
        Kind::SetOpt,
        Kind::GetOpt,
        Kind::GetSockName,
        Kind::GetPeerName,
        Kind::Mitigate,
        Kind::SockOpt,
        Kind::Data,
        Kind::DataTo,
        Kind::Credit,
        Kind::Eof,
        Kind::Reply,
        Kind::Connected,
        Kind::Accepted,
        Kind::Reset,
        Kind::Closed,
        Kind::Heartbeat,
        Kind::Flow,
        Kind::Telemetry,
    ];

    /// Which way this kind may travel; a receiver should refuse the others.
    pub fn direction(self) -> Direction {
        match self as u16 {
            0x01..=0x1f => Direction::ToInstance,
            0x20..=0x3f => Direction::Both,
            _ => Direction::ToDriver,
        }
    }

    /// Whether the header's `req` may be non-zero.
    fn has_req(self) -> bool {
        (matches!(self.direction(), Direction::ToInstance) && self != Kind::SockOpt)
            || self == Kind::Reply
    }

    fn sock_rule(self) -> SockRule {
        match self {
            Kind::Open | Kind::Accepted => SockRule::Driver,
            Kind::Mitigate | Kind::Heartbeat | Kind::Flow | Kind::Telemetry => SockRule::Zero,
            Kind::Reply => SockRule::Any,
            _ => SockRule::NonZero,
        }
    }
}

impl TryFrom<u16> for Kind {
    type Error = DecodeError;
    fn try_from(v: u16) -> Result<Kind, DecodeError> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| *k as u16 == v)
            .ok_or(DecodeError::UnknownKind(v))
    }
}

enum SockRule {
    Zero,
    NonZero,
    /// Non-zero and allocated by the driver.
    Driver,
    Any,
}

fn check_sock(kind: Kind, sock: u32, rule: SockRule) -> Result<(), DecodeError> {
    let ok = match rule {
        SockRule::Zero => sock == 0,
        SockRule::NonZero => sock != 0,
        SockRule::Driver => sock != 0 && sock & INSTANCE_SOCK_BIT == 0,
        SockRule::Any => true,
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::BadSock { kind, sock })
    }
}

fn check_errno(errno: i32, allow_zero: bool) -> Result<(), DecodeError> {
    if (errno == 0 && allow_zero) || (1..=MAX_ERRNO).contains(&errno) {
        Ok(())
    } else {
        Err(DecodeError::BadErrno(errno))
    }
}

/// Address family of a new socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    Inet = AF_INET,
    /// IPv6 (`AF_INET6`).
    Inet6 = AF_INET6,
}

impl TryFrom<u16> for Family {
    type Error = DecodeError;
    fn try_from(v: u16) -> Result<Family, DecodeError> {
        match v {
            AF_INET => Ok(Family::Inet),
            AF_INET6 => Ok(Family::Inet6),
            _ => Err(DecodeError::BadFamily(v)),
        }
    }
}

/// Type of a new socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum SockType {
    /// `SOCK_STREAM`.
    Stream = 1,
    /// `SOCK_DGRAM`.
    Dgram = 2,
}

impl TryFrom<u16> for SockType {
    type Error = DecodeError;
    fn try_from(v: u16) -> Result<SockType, DecodeError> {
        match v {
            1 => Ok(SockType::Stream),
            2 => Ok(SockType::Dgram),
            _ => Err(DecodeError::BadEnum {
                field: "socket type",
                value: u32::from(v),
            }),
        }
    }
}

/// Which direction `shutdown` closes (Linux `SHUT_*` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Shutdown {
    /// `SHUT_RD`.
    Read = 0,
    /// `SHUT_WR`.
    Write = 1,
    /// `SHUT_RDWR`.
    Both = 2,
}

impl TryFrom<u32> for Shutdown {
    type Error = DecodeError;
    fn try_from(v: u32) -> Result<Shutdown, DecodeError> {
        match v {
            0 => Ok(Shutdown::Read),
            1 => Ok(Shutdown::Write),
            2 => Ok(Shutdown::Both),
            _ => Err(DecodeError::BadEnum {
                field: "shutdown how",
                value: v,
            }),
        }
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame is shorter than its header.
    Short {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The header's kind is not a known [`Kind`].
    UnknownKind(u16),
    /// The header's `len` is not the frame length minus the header.
    LengthMismatch {
        /// `len` as the header states it.
        header: u32,
        /// Bytes actually after the header.
        actual: usize,
    },
    /// The body (or a part of it) has the wrong size for the kind.
    BadLength {
        /// The message kind.
        kind: Kind,
        /// Size of the body part that did not fit.
        len: usize,
    },
    /// A reserved byte, or a byte the address family does not use, is not 0.
    NonZeroReserved {
        /// The message kind.
        kind: Kind,
    },
    /// The header's flags are not 0.
    BadFlags {
        /// The message kind.
        kind: Kind,
        /// The flags found.
        flags: u16,
    },
    /// The header's socket id is not allowed for this kind (zero where one is
    /// needed, non-zero where none is, or allocated by the wrong side).
    BadSock {
        /// The message kind.
        kind: Kind,
        /// The id found.
        sock: u32,
    },
    /// A request id on a kind that is not a request or reply.
    UnexpectedReq {
        /// The message kind.
        kind: Kind,
        /// The request id found.
        req: u32,
    },
    /// An address family that is not 2 or 10 (or 0 where an address is
    /// mandatory).
    BadFamily(u16),
    /// An enumerated field out of range.
    BadEnum {
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// A prefix length beyond 32/128, or host bits set.
    BadPrefix,
    /// An option value longer than [`MAX_OPT_LEN`].
    ValueTooLong {
        /// Its length.
        len: usize,
    },
    /// An errno outside 1..=4095 (or 0 where an error is required).
    BadErrno(i32),
    /// A text field that is not NUL-padded printable ASCII.
    BadString {
        /// Which field.
        field: &'static str,
    },
    /// A field combination that is not allowed (an error reply with a
    /// value, a failed connect with addresses, empty `Data`).
    Inconsistent {
        /// The message kind.
        kind: Kind,
    },
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            DecodeError::Short { need, have } => {
                write!(
                    f,
                    "frame of {have} bytes is shorter than its {need}-byte header"
                )
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown message kind {k:#06x}"),
            DecodeError::LengthMismatch { header, actual } => write!(
                f,
                "header says {header} bytes follow it, the frame has {actual}"
            ),
            DecodeError::BadLength { kind, len } => {
                write!(f, "{kind:?} body of {len} bytes has the wrong size")
            }
            DecodeError::NonZeroReserved { kind } => {
                write!(f, "{kind:?} has a non-zero reserved byte")
            }
            DecodeError::BadFlags { kind, flags } => {
                write!(f, "{kind:?} has flags {flags:#06x}, none are defined")
            }
            DecodeError::BadSock { kind, sock } => {
                write!(f, "{kind:?} may not carry socket id {sock:#010x}")
            }
            DecodeError::UnexpectedReq { kind, req } => {
                write!(f, "{kind:?} may not carry request id {req}")
            }
            DecodeError::BadFamily(fam) => write!(f, "address family {fam} is not allowed here"),
            DecodeError::BadEnum { field, value } => write!(f, "{field} value {value} is unknown"),
            DecodeError::BadPrefix => f.write_str("prefix length out of range or host bits set"),
            DecodeError::ValueTooLong { len } => {
                write!(f, "option value of {len} bytes exceeds {MAX_OPT_LEN}")
            }
            DecodeError::BadErrno(e) => write!(f, "errno {e} is out of range"),
            DecodeError::BadString { field } => {
                write!(f, "{field} is not NUL-padded printable ASCII")
            }
            DecodeError::Inconsistent { kind } => {
                write!(f, "{kind:?} has a field combination that is not allowed")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes the frame needs.
        need: usize,
    },
    /// An option value longer than [`MAX_OPT_LEN`].
    ValueTooLong {
        /// Its length.
        len: usize,
    },
    /// The body would not fit the header's 32-bit length.
    FrameTooLong {
        /// Body length.
        len: usize,
    },
    /// The message breaks a rule [`Msg::decode`] enforces (for example a
    /// zero socket id or a prefix with host bits set).
    Invalid(DecodeError),
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EncodeError::BufferTooSmall { need } => {
                write!(f, "output buffer too small, {need} bytes needed")
            }
            EncodeError::ValueTooLong { len } => {
                write!(f, "option value of {len} bytes exceeds {MAX_OPT_LEN}")
            }
            EncodeError::FrameTooLong { len } => {
                write!(f, "body of {len} bytes exceeds the 32-bit frame length")
            }
            EncodeError::Invalid(e) => write!(f, "invalid message: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

impl From<DecodeError> for EncodeError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::ValueTooLong { len } => EncodeError::ValueTooLong { len },
            other => EncodeError::Invalid(other),
        }
    }
}

/// One message, generic over how it holds its byte payloads (option
/// values, stream bytes, datagrams, reply values): [`Msg`] borrows them
/// from a frame, [`OwnedMsg`] keeps them inline (see [`owned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgOf<P> {
    /// Create socket `sock` (driver-allocated id).
    Open {
        /// New socket id (top bit clear).
        sock: u32,
        /// Request id.
        req: u32,
        /// Address family.
        family: Family,
        /// Socket type.
        ty: SockType,
        /// Protocol number as given to `socket()` (0 = default).
        proto: i32,
    },
    /// `bind()`.
    Bind {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Local address.
        addr: SocketAddr,
    },
    /// `listen()`.
    Listen {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Backlog.
        backlog: u32,
    },
    /// `connect()`; answered by `Reply` (accepted or not) and, for streams,
    /// later by `Connected`.
    Connect {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Peer address.
        addr: SocketAddr,
    },
    /// `shutdown()`.
    Shutdown {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Which direction.
        how: Shutdown,
    },
    /// Release the socket.
    Close {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
    },
    /// `setsockopt()`.
    SetOpt {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Level.
        level: i32,
        /// Option name.
        name: i32,
        /// Value, at most [`MAX_OPT_LEN`] bytes.
        value: P,
    },
    /// `getsockopt()`; the value comes back in `Reply`.
    GetOpt {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Level.
        level: i32,
        /// Option name.
        name: i32,
        /// Largest value wanted, at most [`MAX_OPT_LEN`].
        max_len: u32,
    },
    /// `getsockname()`; a [`WireAddr`] comes back in `Reply`.
    GetSockName {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
    },
    /// `getpeername()`; a [`WireAddr`] comes back in `Reply`.
    GetPeerName {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
    },
    /// A socket option set in band: applied between the `Data` bytes
    /// before it and those after it; no `Reply`.
    SockOpt {
        /// Socket id.
        sock: u32,
        /// Level.
        level: i32,
        /// Option name.
        name: i32,
        /// Value, at most [`MAX_OPT_LEN`] bytes.
        value: P,
    },
    /// A mitigation command (instance-wide, no socket).
    Mitigate {
        /// Request id.
        req: u32,
        /// The command.
        cmd: MitigationOf<P>,
    },
    /// Stream bytes (at least one).
    Data {
        /// Socket id.
        sock: u32,
        /// The bytes.
        bytes: P,
    },
    /// One datagram with its peer address: driver→instance the destination
    /// (`None` on a connected socket), instance→driver the source.
    DataTo {
        /// Socket id.
        sock: u32,
        /// Peer address.
        addr: Option<SocketAddr>,
        /// Packet information: instance→driver what the instance's kernel
        /// reported (only for options on), driver→instance what the app
        /// gave `sendmsg`.
        info: PktInfo,
        /// The datagram (may be empty).
        bytes: P,
    },
    /// Window update: the receiver lets the sender send `bytes` more.
    Credit {
        /// Socket id.
        sock: u32,
        /// Additional bytes granted.
        bytes: u32,
    },
    /// The sender will send no more stream data (FIN / half-close).
    Eof {
        /// Socket id.
        sock: u32,
    },
    /// Answer to a request; echoes its `sock` and `req`.
    Reply {
        /// Socket id of the request (0 for `Mitigate`).
        sock: u32,
        /// Request id being answered.
        req: u32,
        /// 0 = success, else a positive Linux errno.
        errno: i32,
        /// Option bytes, a 32-byte [`WireAddr`] for get*name, or empty;
        /// always empty when `errno` ≠ 0.
        value: P,
    },
    /// A stream connect finished (successfully if `errno` is 0).
    Connected {
        /// Socket id.
        sock: u32,
        /// 0 or the connect error.
        errno: i32,
        /// Local address (success only).
        local: Option<SocketAddr>,
        /// Peer address (success only).
        peer: Option<SocketAddr>,
    },
    /// A listener accepted a connection.
    Accepted {
        /// Listening socket (driver id).
        listener: u32,
        /// The new connection's id (instance id, [`INSTANCE_SOCK_BIT`] set).
        sock: u32,
        /// Remote address.
        peer: SocketAddr,
        /// Local address.
        local: SocketAddr,
    },
    /// The connection was aborted.
    Reset {
        /// Socket id.
        sock: u32,
        /// Why (`ECONNRESET`, `ETIMEDOUT`, …), never 0.
        errno: i32,
    },
    /// The instance released the id; it may be reused.
    Closed {
        /// Socket id.
        sock: u32,
    },
    /// Periodic liveness and load report.
    Heartbeat(Stats),
    /// A flow record.
    Flow(FlowRecord),
    /// Live telemetry of one connection.
    Telemetry(ConnTelemetry),
}

/// A message borrowing its payload from a frame: what [`Msg::decode`]
/// returns and [`Msg::encode`] writes.
pub type Msg<'a> = MsgOf<&'a [u8]>;

// Fixed bodies.

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct OpenBody {
    family: U16,
    ty: U16,
    proto: I32,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct U32Body {
    value: U32,
    reserved: U32,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct OptBody {
    level: I32,
    name: I32,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct GetOptBody {
    level: I32,
    name: I32,
    max_len: U32,
    reserved: U32,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct ErrnoBody {
    errno: I32,
    reserved: U32,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct ConnectedBody {
    errno: I32,
    reserved: U32,
    local: WireAddr,
    peer: WireAddr,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct AcceptedBody {
    sock: U32,
    reserved: U32,
    peer: WireAddr,
    local: WireAddr,
}

const _: () = assert!(core::mem::size_of::<OpenBody>() == 8);
const _: () = assert!(core::mem::size_of::<U32Body>() == 8);
const _: () = assert!(core::mem::size_of::<OptBody>() == 8);
const _: () = assert!(core::mem::size_of::<GetOptBody>() == 16);
const _: () = assert!(core::mem::size_of::<ErrnoBody>() == 8);
const _: () = assert!(core::mem::size_of::<ConnectedBody>() == 72);
const _: () = assert!(core::mem::size_of::<AcceptedBody>() == 72);

/// Largest fixed body of any kind (telemetry).
const MAX_FIXED: usize = telemetry::CONN_WIRE_LEN;
const _: () = assert!(records::MITIGATE_MAX_FIXED <= MAX_FIXED);

/// A fixed body under construction, on the stack.
pub(crate) struct Fixed {
    buf: [u8; MAX_FIXED],
    len: usize,
}

impl Fixed {
    fn new() -> Fixed {
        Fixed {
            buf: [0; MAX_FIXED],
            len: 0,
        }
    }

    /// Appends `b`. Every body is at most `MAX_FIXED` bytes (asserted at
    /// compile time for each struct); should that ever fail, the bytes are
    /// dropped and the length check in `encode` refuses the frame.
    pub(crate) fn push(&mut self, b: &[u8]) {
        let end = self.len.saturating_add(b.len());
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(b);
            self.len = end;
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

/// Reads `T` from a body that must be exactly its size.
pub(crate) fn exact<T: FromBytes>(kind: Kind, body: &[u8]) -> Result<T, DecodeError> {
    T::read_from_bytes(body).map_err(|_| DecodeError::BadLength {
        kind,
        len: body.len(),
    })
}

/// Reads `T` from the front of a body; returns it and the rest.
pub(crate) fn split<T: FromBytes>(kind: Kind, body: &[u8]) -> Result<(T, &[u8]), DecodeError> {
    T::read_from_prefix(body).map_err(|_| DecodeError::BadLength {
        kind,
        len: body.len(),
    })
}

fn empty(kind: Kind, body: &[u8]) -> Result<(), DecodeError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::BadLength {
            kind,
            len: body.len(),
        })
    }
}

fn opt_value(value: &[u8]) -> Result<&[u8], DecodeError> {
    if value.len() > MAX_OPT_LEN {
        Err(DecodeError::ValueTooLong { len: value.len() })
    } else {
        Ok(value)
    }
}

/// A message split into the parts of its frame.
struct Parts<'a> {
    kind: Kind,
    sock: u32,
    req: u32,
    fixed: Fixed,
    payload: &'a [u8],
}

fn u32_body(value: u32) -> U32Body {
    U32Body {
        value: U32::new(value),
        reserved: U32::new(0),
    }
}

fn errno_body(errno: i32) -> ErrnoBody {
    ErrnoBody {
        errno: I32::new(errno),
        reserved: U32::new(0),
    }
}

fn write_header(out: &mut [u8], kind: Kind, sock: u32, req: u32, len: u32) {
    let h = Header {
        kind: U16::new(kind as u16),
        flags: U16::new(0),
        len: U32::new(len),
        sock: U32::new(sock),
        req: U32::new(req),
    };
    if let Some(dst) = out.get_mut(..HEADER_LEN) {
        dst.copy_from_slice(h.as_bytes());
    }
}

/// Writes the header of a [`Msg::Data`] frame carrying `payload_len` bytes,
/// so a ring can push `[header, payload]` without staging the payload.
/// The result equals the first 16 bytes of the encoded `Msg::Data`.
pub fn encode_data_header(
    sock: u32,
    payload_len: usize,
    out: &mut [u8; HEADER_LEN],
) -> Result<(), EncodeError> {
    check_sock(Kind::Data, sock, SockRule::NonZero)?;
    if payload_len == 0 {
        return Err(EncodeError::Invalid(DecodeError::Inconsistent {
            kind: Kind::Data,
        }));
    }
    let len =
        u32::try_from(payload_len).map_err(|_| EncodeError::FrameTooLong { len: payload_len })?;
    write_header(out, Kind::Data, sock, 0, len);
    Ok(())
}

/// Writes the header, address and packet information of a
/// [`Msg::DataTo`] frame carrying `payload_len` bytes; the payload follows
/// directly.
pub fn encode_data_to_header(
    sock: u32,
    addr: Option<SocketAddr>,
    info: &PktInfo,
    payload_len: usize,
    out: &mut [u8; DATA_TO_PREFIX_LEN],
) -> Result<(), EncodeError> {
    check_sock(Kind::DataTo, sock, SockRule::NonZero)?;
    let body = payload_len.saturating_add(PAIR_HEADER_LEN);
    let len = u32::try_from(body).map_err(|_| EncodeError::FrameTooLong { len: body })?;
    let (h, a) = out.split_at_mut(HEADER_LEN);
    write_header(h, Kind::DataTo, sock, 0, len);
    a.copy_from_slice(&encode_pair_header(addr, info, 0));
    Ok(())
}

impl<'a> Msg<'a> {
    /// The message's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Msg::Open { .. } => Kind::Open,
            Msg::Bind { .. } => Kind::Bind,
            Msg::Listen { .. } => Kind::Listen,
            Msg::Connect { .. } => Kind::Connect,
            Msg::Shutdown { .. } => Kind::Shutdown,
            Msg::Close { .. } => Kind::Close,
            Msg::SetOpt { .. } => Kind::SetOpt,
            Msg::GetOpt { .. } => Kind::GetOpt,
            Msg::GetSockName { .. } => Kind::GetSockName,
            Msg::GetPeerName { .. } => Kind::GetPeerName,
            Msg::Mitigate { .. } => Kind::Mitigate,
            Msg::SockOpt { .. } => Kind::SockOpt,
            Msg::Data { .. } => Kind::Data,
            Msg::DataTo { .. } => Kind::DataTo,
            Msg::Credit { .. } => Kind::Credit,
            Msg::Eof { .. } => Kind::Eof,
            Msg::Reply { .. } => Kind::Reply,
            Msg::Connected { .. } => Kind::Connected,
            Msg::Accepted { .. } => Kind::Accepted,
            Msg::Reset { .. } => Kind::Reset,
            Msg::Closed { .. } => Kind::Closed,
            Msg::Heartbeat(_) => Kind::Heartbeat,
            Msg::Flow(_) => Kind::Flow,
            Msg::Telemetry(_) => Kind::Telemetry,
        }
    }

    /// The socket id in the header: the listener for `Accepted`, 0 for
    /// `Mitigate`, `Heartbeat`, `Flow` and `Telemetry`.
    pub fn sock(&self) -> u32 {
        match *self {
            Msg::Open { sock, .. }
            | Msg::Bind { sock, .. }
            | Msg::Listen { sock, .. }
            | Msg::Connect { sock, .. }
            | Msg::Shutdown { sock, .. }
            | Msg::Close { sock, .. }
            | Msg::SetOpt { sock, .. }
            | Msg::GetOpt { sock, .. }
            | Msg::GetSockName { sock, .. }
            | Msg::GetPeerName { sock, .. }
            | Msg::SockOpt { sock, .. }
            | Msg::Data { sock, .. }
            | Msg::DataTo { sock, .. }
            | Msg::Credit { sock, .. }
            | Msg::Eof { sock }
            | Msg::Reply { sock, .. }
            | Msg::Connected { sock, .. }
            | Msg::Reset { sock, .. }
            | Msg::Closed { sock } => sock,
            Msg::Accepted { listener, .. } => listener,
            Msg::Mitigate { .. } | Msg::Heartbeat(_) | Msg::Flow(_) | Msg::Telemetry(_) => 0,
        }
    }

    /// The request id in the header (0 for unsolicited kinds).
    pub fn req(&self) -> u32 {
        match *self {
            Msg::Open { req, .. }
            | Msg::Bind { req, .. }
            | Msg::Listen { req, .. }
            | Msg::Connect { req, .. }
            | Msg::Shutdown { req, .. }
            | Msg::Close { req, .. }
            | Msg::SetOpt { req, .. }
            | Msg::GetOpt { req, .. }
            | Msg::GetSockName { req, .. }
            | Msg::GetPeerName { req, .. }
            | Msg::Mitigate { req, .. }
            | Msg::Reply { req, .. } => req,
            _ => 0,
        }
    }

    fn parts(&self) -> Parts<'a> {
        let mut fixed = Fixed::new();
        let mut payload: &'a [u8] = &[];
        match *self {
            Msg::Open {
                family, ty, proto, ..
            } => fixed.push(
                OpenBody {
                    family: U16::new(family as u16),
                    ty: U16::new(ty as u16),
                    proto: I32::new(proto),
                }
                .as_bytes(),
            ),
            Msg::Bind { addr, .. } | Msg::Connect { addr, .. } => {
                fixed.push(WireAddr::from(addr).as_bytes());
            }
            Msg::Listen { backlog, .. } => fixed.push(u32_body(backlog).as_bytes()),
            Msg::Shutdown { how, .. } => fixed.push(u32_body(how as u32).as_bytes()),
            Msg::Close { .. }
            | Msg::GetSockName { .. }
            | Msg::GetPeerName { .. }
            | Msg::Eof { .. }
            | Msg::Closed { .. } => {}
            Msg::SetOpt {
                level, name, value, ..
            }
            | Msg::SockOpt {
                level, name, value, ..
            } => {
                fixed.push(
                    OptBody {
                        level: I32::new(level),
                        name: I32::new(name),
                    }
                    .as_bytes(),
                );
                payload = value;
            }
            Msg::GetOpt {
                level,
                name,
                max_len,
                ..
            } => fixed.push(
                GetOptBody {
                    level: I32::new(level),
                    name: I32::new(name),
                    max_len: U32::new(max_len),
                    reserved: U32::new(0),
                }
                .as_bytes(),
            ),
            Msg::Mitigate { cmd, .. } => payload = cmd.encode(&mut fixed),
            Msg::Data { bytes, .. } => payload = bytes,
            Msg::DataTo {
                addr, info, bytes, ..
            } => {
                fixed.push(WireAddr::from(addr).as_bytes());
                fixed.push(info.to_wire().as_bytes());
                payload = bytes;
            }
            Msg::Credit { bytes, .. } => fixed.push(u32_body(bytes).as_bytes()),
            Msg::Reply { errno, value, .. } => {
                fixed.push(errno_body(errno).as_bytes());
                payload = value;
            }
            Msg::Connected {
                errno, local, peer, ..
            } => fixed.push(
                ConnectedBody {
                    errno: I32::new(errno),
                    reserved: U32::new(0),
                    local: local.into(),
                    peer: peer.into(),
                }
                .as_bytes(),
            ),
            Msg::Accepted {
                sock, peer, local, ..
            } => fixed.push(
                AcceptedBody {
                    sock: U32::new(sock),
                    reserved: U32::new(0),
                    peer: peer.into(),
                    local: local.into(),
                }
                .as_bytes(),
            ),
            Msg::Reset { errno, .. } => fixed.push(errno_body(errno).as_bytes()),
            Msg::Heartbeat(ref s) => s.encode(&mut fixed),
            Msg::Flow(ref r) => r.encode(&mut fixed),
            Msg::Telemetry(ref t) => t.encode(&mut fixed),
        }
        Parts {
            kind: self.kind(),
            sock: self.sock(),
            req: self.req(),
            fixed,
            payload,
        }
    }

    /// Size of the encoded frame, header included.
    pub fn encoded_len(&self) -> usize {
        let p = self.parts();
        HEADER_LEN
            .saturating_add(p.fixed.len)
            .saturating_add(p.payload.len())
    }

    /// Encodes the frame into the front of `out`; returns its length.
    ///
    /// Never panics. Refuses (with `out` partly written) any message that
    /// [`Msg::decode`] would reject: the frame is checked by decoding it
    /// before returning, which costs a header and fixed-body parse and
    /// never touches the payload.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let p = self.parts();
        if matches!(
            self,
            Msg::SetOpt { .. }
                | Msg::SockOpt { .. }
                | Msg::Reply { .. }
                | Msg::Mitigate {
                    cmd: Mitigation::SetFlowOpt { .. },
                    ..
                }
        ) && p.payload.len() > MAX_OPT_LEN
        {
            return Err(EncodeError::ValueTooLong {
                len: p.payload.len(),
            });
        }
        let body_len = p.fixed.len.saturating_add(p.payload.len());
        let len =
            u32::try_from(body_len).map_err(|_| EncodeError::FrameTooLong { len: body_len })?;
        let need = HEADER_LEN.saturating_add(body_len);
        let frame = out
            .get_mut(..need)
            .ok_or(EncodeError::BufferTooSmall { need })?;
        let (header, body) = frame
            .split_at_mut_checked(HEADER_LEN)
            .ok_or(EncodeError::BufferTooSmall { need })?;
        write_header(header, p.kind, p.sock, p.req, len);
        let (fixed, payload) = body
            .split_at_mut_checked(p.fixed.len)
            .ok_or(EncodeError::BufferTooSmall { need })?;
        fixed.copy_from_slice(p.fixed.bytes());
        payload.copy_from_slice(p.payload);
        Msg::decode(frame)?;
        Ok(need)
    }

    /// Decodes and validates one frame (a private copy, never shared
    /// memory). Never panics; see the module docs for what is checked.
    pub fn decode(frame: &'a [u8]) -> Result<Msg<'a>, DecodeError> {
        let (h, body) = Header::read_from_prefix(frame).map_err(|_| DecodeError::Short {
            need: HEADER_LEN,
            have: frame.len(),
        })?;
        let kind = Kind::try_from(h.kind.get())?;
        if h.flags.get() != 0 {
            return Err(DecodeError::BadFlags {
                kind,
                flags: h.flags.get(),
            });
        }
        if usize::try_from(h.len.get()).ok() != Some(body.len()) {
            return Err(DecodeError::LengthMismatch {
                header: h.len.get(),
                actual: body.len(),
            });
        }
        let (sock, req) = (h.sock.get(), h.req.get());
        check_sock(kind, sock, kind.sock_rule())?;
        if req != 0 && !kind.has_req() {
            return Err(DecodeError::UnexpectedReq { kind, req });
        }
        let reserved = DecodeError::NonZeroReserved { kind };
        Ok(match kind {
            Kind::Open => {
                let b: OpenBody = exact(kind, body)?;
                Msg::Open {
                    sock,
                    req,
                    family: Family::try_from(b.family.get())?,
                    ty: SockType::try_from(b.ty.get())?,
                    proto: b.proto.get(),
                }
            }
            Kind::Bind | Kind::Connect => {
                let addr = exact::<WireAddr>(kind, body)?.require(kind)?;
                if kind == Kind::Bind {
                    Msg::Bind { sock, req, addr }
                } else {
                    Msg::Connect { sock, req, addr }
                }
            }
            Kind::Listen => {
                let b: U32Body = exact(kind, body)?;
                if b.reserved.get() != 0 {
                    return Err(reserved);
                }
                Msg::Listen {
                    sock,
                    req,
                    backlog: b.value.get(),
                }
            }
            Kind::Shutdown => {
                let b: U32Body = exact(kind, body)?;
                if b.reserved.get() != 0 {
                    return Err(reserved);
                }
                Msg::Shutdown {
                    sock,
                    req,
                    how: Shutdown::try_from(b.value.get())?,
                }
            }
            Kind::Close => {
                empty(kind, body)?;
                Msg::Close { sock, req }
            }
            Kind::GetSockName => {
                empty(kind, body)?;
                Msg::GetSockName { sock, req }
            }
            Kind::GetPeerName => {
                empty(kind, body)?;
                Msg::GetPeerName { sock, req }
            }
            Kind::SetOpt => {
                let (b, value) = split::<OptBody>(kind, body)?;
                Msg::SetOpt {
                    sock,
                    req,
                    level: b.level.get(),
                    name: b.name.get(),
                    value: opt_value(value)?,
                }
            }
            Kind::SockOpt => {
                let (b, value) = split::<OptBody>(kind, body)?;
                Msg::SockOpt {
                    sock,
                    level: b.level.get(),
                    name: b.name.get(),
                    value: opt_value(value)?,
                }
            }
            Kind::GetOpt => {
                let b: GetOptBody = exact(kind, body)?;
                if b.reserved.get() != 0 {
                    return Err(reserved);
                }
                let max_len = b.max_len.get();
                if usize::try_from(max_len).map_or(true, |m| m > MAX_OPT_LEN) {
                    return Err(DecodeError::ValueTooLong {
                        len: usize::try_from(max_len).unwrap_or(usize::MAX),
                    });
                }
                Msg::GetOpt {
                    sock,
                    req,
                    level: b.level.get(),
                    name: b.name.get(),
                    max_len,
                }
            }
            Kind::Mitigate => Msg::Mitigate {
                req,
                cmd: Mitigation::decode(body)?,
            },
            Kind::Data => {
                if body.is_empty() {
                    return Err(DecodeError::Inconsistent { kind });
                }
                Msg::Data { sock, bytes: body }
            }
            Kind::DataTo => {
                let (a, rest) = split::<WireAddr>(kind, body)?;
                let (i, bytes) = split::<pktinfo::PktInfoWire>(kind, rest)?;
                Msg::DataTo {
                    sock,
                    addr: a.check(kind)?,
                    info: PktInfo::from_wire(&i, kind)?,
                    bytes,
                }
            }
            Kind::Credit => {
                let b: U32Body = exact(kind, body)?;
                if b.reserved.get() != 0 {
                    return Err(reserved);
                }
                Msg::Credit {
                    sock,
                    bytes: b.value.get(),
                }
            }
            Kind::Eof => {
                empty(kind, body)?;
                Msg::Eof { sock }
            }
            Kind::Reply => {
                let (b, value) = split::<ErrnoBody>(kind, body)?;
                if b.reserved.get() != 0 {
                    return Err(reserved);
                }
                let errno = b.errno.get();
                check_errno(errno, true)?;
                let value = opt_value(value)?;
                if errno != 0 && !value.is_empty() {
                    return Err(DecodeError::Inconsistent { kind });
                }
                Msg::Reply {
                    sock,
                    req,
                    errno,
                    value,
                }
            }
            Kind::Connected => {
                let b: ConnectedBody = exact(kind, body)?;
                if b.reserved.get() != 0 {
                    return Err(reserved);
                }
                let errno = b.errno.get();
                check_errno(errno, true)?;
                let local = b.local.check(kind)?;
                let peer = b.peer.check(kind)?;
                if errno != 0 && (local.is_some() || peer.is_some()) {
                    return Err(DecodeError::Inconsistent { kind });
                }
                Msg::Connected {
                    sock,
                    errno,
                    local,
                    peer,
                }
            }
            Kind::Accepted => {
                let b: AcceptedBody = exact(kind, body)?;
                if b.reserved.get() != 0 {
                    return Err(reserved);
                }
                let new = b.sock.get();
                if new & INSTANCE_SOCK_BIT == 0 {
                    return Err(DecodeError::BadSock { kind, sock: new });
                }
                Msg::Accepted {
                    listener: sock,
                    sock: new,
                    peer: b.peer.require(kind)?,
                    local: b.local.require(kind)?,
                }
            }
            Kind::Reset => {
                let b: ErrnoBody = exact(kind, body)?;
                if b.reserved.get() != 0 {
                    return Err(reserved);
                }
                check_errno(b.errno.get(), false)?;
                Msg::Reset {
                    sock,
                    errno: b.errno.get(),
                }
            }
            Kind::Closed => {
                empty(kind, body)?;
                Msg::Closed { sock }
            }
            Kind::Heartbeat => Msg::Heartbeat(Stats::decode(body)?),
            Kind::Flow => Msg::Flow(FlowRecord::decode(body)?),
            Kind::Telemetry => Msg::Telemetry(ConnTelemetry::decode(body)?),
        })
    }
}

#[cfg(test)]
mod tests;
