//! The owned form of a message: [`OwnedMsg`] is [`MsgOf`] with its byte
//! payloads held inline in an [`OptValue`], so a sender can queue messages
//! (in a reused `Vec`, say) after the buffers they were built from are
//! gone, without an allocation per message.
//!
//! ```text
//!   MsgOf<P>          one enum, every kind
//!   ├── Msg<'a>       = MsgOf<&'a [u8]>   decoded in place, encoded from borrowed bytes
//!   └── OwnedMsg      = MsgOf<OptValue>   ≤ MAX_OPT_LEN bytes per payload, inline
//! ```
//!
//! The owned form is for control frames (requests, credits, mitigations):
//! its payloads are at most [`MAX_OPT_LEN`] bytes. Stream and datagram
//! bytes are never staged in it; a relay writes their frames from its own
//! buffers with [`encode_data_header`](super::encode_data_header) and
//! [`encode_data_to_header`](super::encode_data_to_header).
//!
//! Invariant: an [`OptValue`]'s bytes past its length are zero, so the
//! derived comparisons compare the value only.

use super::{EncodeError, MAX_OPT_LEN, Msg, MsgOf, records::MitigationOf};

/// Up to [`MAX_OPT_LEN`] bytes, inline: an option value, a reply value, or
/// the payload of an owned message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OptValue {
    len: u16,
    bytes: [u8; MAX_OPT_LEN],
}

const _: () = assert!(MAX_OPT_LEN <= u16::MAX as usize);

impl OptValue {
    /// The empty value.
    pub const EMPTY: OptValue = OptValue {
        len: 0,
        bytes: [0; MAX_OPT_LEN],
    };

    /// Copies `v`, truncated to [`MAX_OPT_LEN`] bytes (callers whose input
    /// was validated against that bound lose nothing; see
    /// [`OptValue::try_new`] for the checked form).
    pub fn new(v: &[u8]) -> OptValue {
        let mut out = OptValue::EMPTY;
        let n = v.len().min(MAX_OPT_LEN);
        out.bytes[..n].copy_from_slice(&v[..n]);
        // n ≤ MAX_OPT_LEN ≤ u16::MAX (asserted above).
        out.len = n as u16;
        out
    }

    /// Copies `v`, or refuses it if it is longer than [`MAX_OPT_LEN`].
    pub fn try_new(v: &[u8]) -> Result<OptValue, EncodeError> {
        if v.len() > MAX_OPT_LEN {
            return Err(EncodeError::ValueTooLong { len: v.len() });
        }
        Ok(OptValue::new(v))
    }

    /// A C `int` in native byte order (the `setsockopt` convention).
    pub fn int(v: i32) -> OptValue {
        OptValue::new(&v.to_ne_bytes())
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Default for OptValue {
    fn default() -> Self {
        OptValue::EMPTY
    }
}

impl AsRef<[u8]> for OptValue {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl core::fmt::Debug for OptValue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "OptValue({:?})", self.as_slice())
    }
}

/// A message that owns its payloads (at most [`MAX_OPT_LEN`] bytes each).
pub type OwnedMsg = MsgOf<OptValue>;

/// A mitigation command that owns its `SetFlowOpt` value.
pub type OwnedMitigation = MitigationOf<OptValue>;

impl<P: AsRef<[u8]>> MitigationOf<P> {
    /// The same command borrowing its value.
    pub fn borrowed(&self) -> MitigationOf<&[u8]> {
        match *self {
            MitigationOf::Block(p) => MitigationOf::Block(p),
            MitigationOf::Unblock(p) => MitigationOf::Unblock(p),
            MitigationOf::RateLimit {
                prefix,
                conn_per_sec,
                conn_burst,
                bytes_per_sec,
                bytes_burst,
            } => MitigationOf::RateLimit {
                prefix,
                conn_per_sec,
                conn_burst,
                bytes_per_sec,
                bytes_burst,
            },
            MitigationOf::ClearRateLimit(p) => MitigationOf::ClearRateLimit(p),
            MitigationOf::CloseFlow { flow_id } => MitigationOf::CloseFlow { flow_id },
            MitigationOf::SetFlowOpt {
                flow_id,
                level,
                name,
                ref value,
            } => MitigationOf::SetFlowOpt {
                flow_id,
                level,
                name,
                value: value.as_ref(),
            },
            MitigationOf::TcpSettings(t) => MitigationOf::TcpSettings(t),
            MitigationOf::Drain => MitigationOf::Drain,
            MitigationOf::Resume => MitigationOf::Resume,
            MitigationOf::Report { flow_id } => MitigationOf::Report { flow_id },
        }
    }
}

impl<P: AsRef<[u8]>> MsgOf<P> {
    /// The same message borrowing its payloads, to encode or inspect it.
    pub fn borrowed(&self) -> Msg<'_> {
        match *self {
            MsgOf::Open {
                sock,
                req,
                family,
                ty,
                proto,
            } => MsgOf::Open {
                sock,
                req,
                family,
                ty,
                proto,
            },
            MsgOf::Bind { sock, req, addr } => MsgOf::Bind { sock, req, addr },
            MsgOf::Listen { sock, req, backlog } => MsgOf::Listen { sock, req, backlog },
            MsgOf::Connect { sock, req, addr } => MsgOf::Connect { sock, req, addr },
            MsgOf::Shutdown { sock, req, how } => MsgOf::Shutdown { sock, req, how },
            MsgOf::Close { sock, req } => MsgOf::Close { sock, req },
            MsgOf::SetOpt {
                sock,
                req,
                level,
                name,
                ref value,
            } => MsgOf::SetOpt {
                sock,
                req,
                level,
                name,
                value: value.as_ref(),
            },
            MsgOf::SockOpt {
                sock,
                level,
                name,
                ref value,
            } => MsgOf::SockOpt {
                sock,
                level,
                name,
                value: value.as_ref(),
            },
            MsgOf::GetOpt {
                sock,
                req,
                level,
                name,
                max_len,
            } => MsgOf::GetOpt {
                sock,
                req,
                level,
                name,
                max_len,
            },
            MsgOf::GetSockName { sock, req } => MsgOf::GetSockName { sock, req },
            MsgOf::GetPeerName { sock, req } => MsgOf::GetPeerName { sock, req },
            MsgOf::Mitigate { req, ref cmd } => MsgOf::Mitigate {
                req,
                cmd: cmd.borrowed(),
            },
            MsgOf::Data { sock, ref bytes } => MsgOf::Data {
                sock,
                bytes: bytes.as_ref(),
            },
            MsgOf::DataTo {
                sock,
                addr,
                info,
                ref bytes,
            } => MsgOf::DataTo {
                sock,
                addr,
                info,
                bytes: bytes.as_ref(),
            },
            MsgOf::Credit { sock, bytes } => MsgOf::Credit { sock, bytes },
            MsgOf::Eof { sock } => MsgOf::Eof { sock },
            MsgOf::Reply {
                sock,
                req,
                errno,
                ref value,
            } => MsgOf::Reply {
                sock,
                req,
                errno,
                value: value.as_ref(),
            },
            MsgOf::Connected {
                sock,
                errno,
                local,
                peer,
            } => MsgOf::Connected {
                sock,
                errno,
                local,
                peer,
            },
            MsgOf::Accepted {
                listener,
                sock,
                peer,
                local,
            } => MsgOf::Accepted {
                listener,
                sock,
                peer,
                local,
            },
            MsgOf::Reset { sock, errno } => MsgOf::Reset { sock, errno },
            MsgOf::Closed { sock } => MsgOf::Closed { sock },
            MsgOf::Heartbeat(s) => MsgOf::Heartbeat(s),
            MsgOf::Flow(r) => MsgOf::Flow(r),
            MsgOf::Telemetry(t) => MsgOf::Telemetry(t),
        }
    }
}

impl OwnedMsg {
    /// Encodes into the front of `out`; returns the frame length. Same
    /// rules as [`Msg::encode`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.borrowed().encode(out)
    }

    /// The socket id in the header (see [`Msg::sock`]).
    pub fn sock(&self) -> u32 {
        self.borrowed().sock()
    }

    /// The request id in the header (see [`Msg::req`]).
    pub fn req(&self) -> u32 {
        self.borrowed().req()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Family, HEADER_LEN, Prefix, SockType};

    /// An owned message encodes to the same bytes as the borrowed one it
    /// stands for, and decodes back to it.
    #[test]
    fn owned_encodes_like_borrowed() {
        let v = 7i32.to_ne_bytes();
        let p = Prefix::new("10.0.0.0".parse().unwrap(), 8).unwrap();
        let cases: [(OwnedMsg, Msg<'_>); 5] = [
            (
                MsgOf::SockOpt {
                    sock: 4,
                    level: 6,
                    name: 3,
                    value: OptValue::new(&v),
                },
                Msg::SockOpt {
                    sock: 4,
                    level: 6,
                    name: 3,
                    value: &v,
                },
            ),
            (
                MsgOf::SetOpt {
                    sock: 3,
                    req: 9,
                    level: 6,
                    name: 1,
                    value: OptValue::new(&v),
                },
                Msg::SetOpt {
                    sock: 3,
                    req: 9,
                    level: 6,
                    name: 1,
                    value: &v,
                },
            ),
            (
                MsgOf::Open {
                    sock: 1,
                    req: 2,
                    family: Family::Inet6,
                    ty: SockType::Dgram,
                    proto: 17,
                },
                Msg::Open {
                    sock: 1,
                    req: 2,
                    family: Family::Inet6,
                    ty: SockType::Dgram,
                    proto: 17,
                },
            ),
            (
                MsgOf::Mitigate {
                    req: 4,
                    cmd: MitigationOf::SetFlowOpt {
                        flow_id: 77,
                        level: 1,
                        name: 9,
                        value: OptValue::new(&v),
                    },
                },
                Msg::Mitigate {
                    req: 4,
                    cmd: MitigationOf::SetFlowOpt {
                        flow_id: 77,
                        level: 1,
                        name: 9,
                        value: &v,
                    },
                },
            ),
            (
                MsgOf::Mitigate {
                    req: 5,
                    cmd: MitigationOf::Block(p),
                },
                Msg::Mitigate {
                    req: 5,
                    cmd: MitigationOf::Block(p),
                },
            ),
        ];
        for (owned, borrowed) in cases {
            let mut a = [0u8; HEADER_LEN + 128 + MAX_OPT_LEN];
            let mut b = [0u8; HEADER_LEN + 128 + MAX_OPT_LEN];
            let n = owned.encode(&mut a).unwrap();
            let m = borrowed.encode(&mut b).unwrap();
            assert_eq!(a[..n], b[..m], "{owned:?}");
            assert_eq!(Msg::decode(&a[..n]).unwrap(), borrowed);
            assert_eq!(owned.borrowed(), borrowed);
            assert_eq!(
                (owned.sock(), owned.req()),
                (borrowed.sock(), borrowed.req())
            );
        }
    }

    #[test]
    fn opt_value_bounds() {
        let long = [1u8; MAX_OPT_LEN + 1];
        assert_eq!(
            OptValue::try_new(&long),
            Err(EncodeError::ValueTooLong {
                len: MAX_OPT_LEN + 1
            })
        );
        assert_eq!(OptValue::new(&long).as_slice(), &long[..MAX_OPT_LEN]);
        assert_eq!(OptValue::int(1).as_slice(), &1i32.to_ne_bytes());
        assert_eq!(OptValue::default(), OptValue::new(&[]));
    }
}
