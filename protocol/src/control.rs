//! Messages between `libshim.so` and the protected-VM driver.
//!
//! A shim talks to the driver over a Unix `SOCK_SEQPACKET` socket (one per
//! process, reopened after `fork`), one request and one reply per packet.
//! The socket a request is about travels with it as an `SCM_RIGHTS` fd: the
//! driver identifies the socket by the file it receives (its inode), so no
//! fd number, pid or table ever crosses the wire, `fork`/`dup`/`exec` need
//! no bookkeeping, and no process can act on a socket it does not hold.
//!
//! ```text
//!  shim                                        driver
//!   │ ── Request{op, seq, args, addr, value} [+ fd] ──▶ │
//!   │ ◀── Reply{seq, status, args, addr, addr2, value} [+ fd] ── │
//! ```
//!
//! Both directions use one 112-byte little-endian header ([`ControlWire`])
//! followed by `value_len` bytes (at most [`MAX_VALUE`]). `status` is 0 in a
//! request and, in a reply, 0 or a positive Linux errno. Reserved bytes must
//! be zero. What `args`, `addr` and `addr2` mean per operation is on [`Op`].
//!
//! The driver treats every shim as untrusted (any local process may
//! connect): [`Control::decode`] validates everything and never panics.

use core::net::SocketAddr;

use zerocopy::byteorder::little_endian::{I32, U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::msg::{DecodeError, MAX_ERRNO, MAX_OPT_LEN, OptValue, WireAddr};

/// Largest value carried by a control message (socket option values).
pub const MAX_VALUE: usize = MAX_OPT_LEN;

/// Size of the fixed header.
pub const HEADER_LEN: usize = 112;

/// Largest control packet.
pub const MAX_PACKET: usize = HEADER_LEN + MAX_VALUE;

/// Operations a shim asks the driver for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// `socket()`. args: `[domain, type without flags, protocol, 0]`. Reply
    /// carries the new socket's fd (the app end of the pair).
    Socket = 1,
    /// `bind()`. fd; `addr`.
    Bind = 2,
    /// `listen()`. fd; args: `[backlog, 0, 0, 0]`; `value`: options set
    /// before and answered by the shim then (as for `Connect`).
    Listen = 3,
    /// `connect()`. fd; `addr`; args: `[nonblocking (0/1), 0, 0, 0]`. A
    /// non-blocking connect is answered at once (EINPROGRESS); a blocking
    /// one when the connection is established or failed. `value`: options
    /// the program set before, answered by the shim then and carried here:
    /// 12-byte entries, level and name (little-endian `i32`), the value (a
    /// native `int`); the driver sets them before it connects.
    Connect = 4,
    /// `accept()` after the shim consumed one token byte from the listener.
    /// fd (listener). Reply: the connection's fd; `addr` peer, `addr2` local.
    Accept = 5,
    /// `shutdown()`. fd; args: `[how, 0, 0, 0]`.
    Shutdown = 6,
    /// `getsockopt()`. fd; args: `[level, name, optlen, 0]`. Reply `value`.
    GetOpt = 7,
    /// `setsockopt()`. fd; args: `[level, name, cancel, record]`; `value`.
    /// `cancel` 1: the shim posted `record` (the `seq` of a [`Op::SockOpt`])
    /// for the same option but could not write its marker; the driver
    /// drops that record and this request takes its place.
    SetOpt = 8,
    /// `getsockname()`. fd. Reply `addr`.
    GetSockName = 9,
    /// `getpeername()`. fd. Reply `addr`.
    GetPeerName = 10,
    /// Is this fd an INS socket? (Inherited across `exec`.) fd. Reply
    /// status 0 and args `[domain, type, listening (0/1), 0]`, or ENOTSOCK.
    Identify = 11,
    /// The socket's pending error (`SO_ERROR`), cleared by reading. fd.
    /// Reply args `[errno, 0, 0, 0]`.
    TakeError = 12,
    /// The last reference to the socket is going away (explicit close from
    /// the shim; the driver also notices by hang-up). fd.
    Close = 13,
    /// An option set *in band* on a connected stream: a record, never
    /// answered, no fd. args: `[level, name, inode low 32 bits, inode high
    /// 32 bits]` of the socket's app end; `value`; `seq` numbers the record
    /// within the sending process. The shim then writes one *marker* byte
    /// ([`marker::record`]`(seq)`) into the socket's stream with an
    /// `SCM_RIGHTS` fd attached; the driver applies the record exactly where
    /// that byte sits in the stream (see the shim's `inband` module).
    /// Boolean options need no record: their marker says it all
    /// ([`marker::boolean`]).
    SockOpt = 14,
}

impl TryFrom<u16> for Op {
    type Error = DecodeError;
    fn try_from(v: u16) -> Result<Op, DecodeError> {
        Ok(match v {
            1 => Op::Socket,
            2 => Op::Bind,
            3 => Op::Listen,
            4 => Op::Connect,
            5 => Op::Accept,
            6 => Op::Shutdown,
            7 => Op::GetOpt,
            8 => Op::SetOpt,
            9 => Op::GetSockName,
            10 => Op::GetPeerName,
            11 => Op::Identify,
            12 => Op::TakeError,
            13 => Op::Close,
            14 => Op::SockOpt,
            _ => {
                return Err(DecodeError::BadEnum {
                    field: "control op",
                    value: v as u32,
                });
            }
        })
    }
}

/// The byte of an in-band option marker (see [`Op::SockOpt`]).
///
/// ```text
///  0b0sss_ssss   a record follows on the control connection: the low 7
///                bits of its seq
///  0b1ooo_ooov   boolean option o (see BOOLS) set to v, no record
/// ```
pub mod marker {
    /// `(level, name)` of the boolean options a marker byte carries by
    /// itself, by index: `SO_KEEPALIVE`, `TCP_NODELAY`, `TCP_CORK`.
    pub const BOOLS: [(i32, i32); 3] = [(1, 9), (6, 1), (6, 3)];

    /// `(level, name, min, max)` of the `int` options that go in band as a
    /// record (the value in range, as Linux checks it, else `EINVAL`):
    /// `TCP_KEEPIDLE`, `TCP_KEEPINTVL` (1 ..= 32767), `TCP_KEEPCNT`
    /// (1 ..= 127), `TCP_USER_TIMEOUT` (0 ..= `i32::MAX`).
    pub const INTS: [(i32, i32, i32, i32); 4] = [
        (6, 4, 1, 32767),
        (6, 5, 1, 32767),
        (6, 6, 1, 127),
        (6, 18, 0, i32::MAX),
    ];

    /// The range of in-band `int` option `(level, name)`, if it is one of
    /// [`INTS`].
    pub fn int_range(level: i32, name: i32) -> Option<(i32, i32)> {
        INTS.iter()
            .find(|&&(l, n, _, _)| (l, n) == (level, name))
            .map(|&(_, _, min, max)| (min, max))
    }

    /// What a marker byte says.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Marker {
        /// A record with these low 7 bits of its seq follows.
        Record(u8),
        /// Boolean option `(level, name)` set to `on`.
        Bool {
            /// Level.
            level: i32,
            /// Name.
            name: i32,
            /// The value (0 or 1).
            on: bool,
        },
        /// No option this side knows (a hostile or newer writer).
        Unknown,
    }

    /// The marker of record `seq`.
    pub const fn record(seq: u32) -> u8 {
        (seq & 0x7f) as u8
    }

    /// The marker that sets boolean `(level, name)` to `on`, if it is one of
    /// [`BOOLS`].
    pub fn boolean(level: i32, name: i32, on: bool) -> Option<u8> {
        let i = BOOLS.iter().position(|&b| b == (level, name))?;
        Some(0x80 | ((i as u8) << 1) | u8::from(on))
    }

    /// Reads a marker byte.
    pub fn decode(b: u8) -> Marker {
        if b & 0x80 == 0 {
            return Marker::Record(b);
        }
        match BOOLS.get(usize::from((b >> 1) & 0x3f)) {
            Some(&(level, name)) => Marker::Bool {
                level,
                name,
                on: b & 1 != 0,
            },
            None => Marker::Unknown,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_byte_decodes_and_booleans_round_trip() {
            for b in 0..=255u8 {
                let _ = decode(b);
            }
            for &(level, name) in &BOOLS {
                for on in [false, true] {
                    let b = boolean(level, name, on).unwrap();
                    assert_eq!(decode(b), Marker::Bool { level, name, on });
                }
            }
            assert_eq!(boolean(6, 99, true), None);
            assert_eq!(decode(record(0x1_85)), Marker::Record(5));
            assert_eq!(decode(0xff), Marker::Unknown);
        }
    }
}

/// The fixed header of every control packet.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ControlWire {
    op: U16,
    flags: U16,
    seq: U32,
    status: I32,
    reserved0: U32,
    args: [I32; 4],
    addr: WireAddr,
    addr2: WireAddr,
    value_len: U32,
    reserved1: [u8; 12],
}

const _: () = assert!(core::mem::size_of::<ControlWire>() == HEADER_LEN);

/// A control message (request or reply), generic over how it holds its
/// value like [`MsgOf`](crate::msg::MsgOf): [`Control`] borrows it from a
/// packet, [`OwnedControl`] keeps it inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlOf<V> {
    /// The operation (a reply repeats its request's).
    pub op: Op,
    /// Request number chosen by the shim, echoed by the reply.
    pub seq: u32,
    /// 0 in requests; in replies 0 or a positive Linux errno.
    pub status: i32,
    /// Integer arguments; meaning per [`Op`].
    pub args: [i32; 4],
    /// First address, if any.
    pub addr: Option<SocketAddr>,
    /// Second address, if any.
    pub addr2: Option<SocketAddr>,
    /// Option value, at most [`MAX_VALUE`] bytes.
    pub value: V,
}

/// A control message borrowing its value: what [`Control::decode`] returns
/// and [`Control::encode`] writes.
pub type Control<'a> = ControlOf<&'a [u8]>;

/// A control message owning its value (at most [`MAX_VALUE`] bytes,
/// inline), for a sender that queues it.
pub type OwnedControl = ControlOf<OptValue>;

impl<V: AsRef<[u8]>> ControlOf<V> {
    /// The same message borrowing its value, to encode it.
    pub fn borrowed(&self) -> Control<'_> {
        ControlOf {
            op: self.op,
            seq: self.seq,
            status: self.status,
            args: self.args,
            addr: self.addr,
            addr2: self.addr2,
            value: self.value.as_ref(),
        }
    }
}

impl<'a> Control<'a> {
    /// A request with no arguments.
    pub fn request(op: Op, seq: u32) -> Control<'static> {
        Control {
            op,
            seq,
            status: 0,
            args: [0; 4],
            addr: None,
            addr2: None,
            value: &[],
        }
    }

    /// A reply to `req` with `status` and nothing else.
    pub fn reply_to(req: &Control<'_>, status: i32) -> Control<'static> {
        Control {
            op: req.op,
            seq: req.seq,
            status,
            args: [0; 4],
            addr: None,
            addr2: None,
            value: &[],
        }
    }

    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.value.len()
    }

    /// Encodes into `out`, returning the length used.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, DecodeError> {
        if self.value.len() > MAX_VALUE {
            return Err(DecodeError::ValueTooLong {
                len: self.value.len(),
            });
        }
        if !(0..=MAX_ERRNO).contains(&self.status) {
            return Err(DecodeError::BadErrno(self.status));
        }
        let need = self.encoded_len();
        if out.len() < need {
            return Err(DecodeError::Short {
                need,
                have: out.len(),
            });
        }
        let wire = ControlWire {
            op: U16::new(self.op as u16),
            flags: U16::new(0),
            seq: U32::new(self.seq),
            status: I32::new(self.status),
            reserved0: U32::new(0),
            args: self.args.map(I32::new),
            addr: WireAddr::from(self.addr),
            addr2: WireAddr::from(self.addr2),
            value_len: U32::new(self.value.len() as u32),
            reserved1: [0; 12],
        };
        out[..HEADER_LEN].copy_from_slice(wire.as_bytes());
        out[HEADER_LEN..need].copy_from_slice(self.value);
        Ok(need)
    }

    /// Decodes and validates one packet (a private copy).
    pub fn decode(packet: &'a [u8]) -> Result<Control<'a>, DecodeError> {
        let (wire, value) =
            ControlWire::read_from_prefix(packet).map_err(|_| DecodeError::Short {
                need: HEADER_LEN,
                have: packet.len(),
            })?;
        let op = Op::try_from(wire.op.get())?;
        if wire.flags.get() != 0 {
            return Err(DecodeError::BadFlags {
                kind: crate::msg::Kind::Reply,
                flags: wire.flags.get(),
            });
        }
        if wire.reserved0.get() != 0 || wire.reserved1.iter().any(|&b| b != 0) {
            return Err(DecodeError::NonZeroReserved {
                kind: crate::msg::Kind::Reply,
            });
        }
        let status = wire.status.get();
        if !(0..=MAX_ERRNO).contains(&status) {
            return Err(DecodeError::BadErrno(status));
        }
        let value_len = wire.value_len.get() as usize;
        if value_len > MAX_VALUE {
            return Err(DecodeError::ValueTooLong { len: value_len });
        }
        if value.len() != value_len {
            return Err(DecodeError::LengthMismatch {
                header: value_len as u32,
                actual: value.len(),
            });
        }
        let addr = WireAddr::parse(wire.addr.as_bytes())?;
        let addr2 = WireAddr::parse(wire.addr2.as_bytes())?;
        Ok(Control {
            op,
            seq: wire.seq.get(),
            status,
            args: wire.args.map(|a| a.get()),
            addr,
            addr2,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = [1u8, 2, 3, 4];
        let msg = Control {
            op: Op::SetOpt,
            seq: 99,
            status: 0,
            args: [6, 1, 0, -1],
            addr: Some("[::1]:80".parse().unwrap()),
            addr2: Some("127.0.0.1:9".parse().unwrap()),
            value: &v,
        };
        let mut buf = [0u8; MAX_PACKET];
        let n = msg.encode(&mut buf).unwrap();
        assert_eq!(n, HEADER_LEN + 4);
        assert_eq!(Control::decode(&buf[..n]).unwrap(), msg);
    }

    #[test]
    fn owned_encodes_like_borrowed() {
        let v = [9u8; 7];
        let owned = OwnedControl {
            op: Op::GetOpt,
            seq: 5,
            status: 0,
            args: [1, 2, 3, 4],
            addr: None,
            addr2: Some("10.1.2.3:4".parse().unwrap()),
            value: OptValue::new(&v),
        };
        let mut a = [0u8; MAX_PACKET];
        let n = owned.borrowed().encode(&mut a).unwrap();
        let back = Control::decode(&a[..n]).unwrap();
        assert_eq!(back, owned.borrowed());
        assert_eq!(back.value, &v);
    }

    #[test]
    fn rejects_bad_packets() {
        let mut buf = [0u8; MAX_PACKET];
        let n = Control::request(Op::Listen, 1).encode(&mut buf).unwrap();
        assert!(matches!(
            Control::decode(&buf[..n - 1]),
            Err(DecodeError::Short { .. })
        ));
        let mut bad = buf;
        bad[0] = 200;
        assert!(matches!(
            Control::decode(&bad[..n]),
            Err(DecodeError::BadEnum { .. })
        ));
        let mut bad = buf;
        bad[100] = 1;
        assert!(matches!(
            Control::decode(&bad[..n]),
            Err(DecodeError::NonZeroReserved { .. })
        ));
        let mut bad = buf;
        bad[96] = 5; // value_len 5 with no value bytes
        assert!(matches!(
            Control::decode(&bad[..n]),
            Err(DecodeError::LengthMismatch { .. })
        ));
        let mut bad = buf;
        bad[8] = 0xff; // status -1
        bad[9] = 0xff;
        bad[10] = 0xff;
        bad[11] = 0xff;
        assert!(matches!(
            Control::decode(&bad[..n]),
            Err(DecodeError::BadErrno(-1))
        ));
        let mut bad = buf;
        bad[32] = 7; // addr family 7
        assert!(Control::decode(&bad[..n]).is_err());
        let long = [0u8; MAX_VALUE + 1];
        let mut msg = Control::request(Op::SetOpt, 2);
        msg.value = &long;
        assert!(msg.encode(&mut [0u8; 1024]).is_err());
    }
}
