//! The xenstore wire protocol (`xen/include/public/io/xs_wire.h`).
//!
//! ```text
//!  client                                   xenstored
//!    │ ── Header{type, req_id, tx_id, len} + payload ─▶ │  request
//!    │ ◀─ Header{same type | ERROR, req_id, tx_id} ──── │  reply (any order)
//!    │ ◀─ Header{WATCH_EVENT, 0, 0} + path\0token\0 ─── │  unsolicited
//! ```
//!
//! The header is four `u32` in the machine's byte order (little-endian on
//! x86, the only architecture INS targets). Payloads are at most
//! [`PAYLOAD_MAX`] bytes in both directions; a client that sends more is
//! disconnected, so [`Request::encode`] refuses to build one.
//!
//! Invariants of [`decode_reply`]: it returns a [`Reply`] only if the
//! header answers the request (same `req_id` and `tx_id`, the request's
//! type or `ERROR`), the length fits, and the payload has exactly the
//! syntax that type's reply must have; every string in it is checked
//! (paths, names, numbers, permission entries, errno names). A reply is
//! borrowed from the caller's buffer and never panics on any input.

use core::fmt;

use super::path::{self, PathError};
use super::perms::Permission;
use crate::domid::DomId;

/// Length of the message header.
pub const HEADER_LEN: usize = 16;
/// Largest payload in either direction (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Largest message: header and payload.
pub const MSG_MAX: usize = HEADER_LEN + PAYLOAD_MAX;

/// Message types (`enum xsd_sockmsg_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MsgType {
    /// `XS_CONTROL` (formerly `XS_DEBUG`).
    Control = 0,
    /// `XS_DIRECTORY`: list a node's children.
    Directory = 1,
    /// `XS_READ`.
    Read = 2,
    /// `XS_GET_PERMS`.
    GetPerms = 3,
    /// `XS_WATCH`.
    Watch = 4,
    /// `XS_UNWATCH`.
    Unwatch = 5,
    /// `XS_TRANSACTION_START`.
    TransactionStart = 6,
    /// `XS_TRANSACTION_END`.
    TransactionEnd = 7,
    /// `XS_INTRODUCE` (dom0 only).
    Introduce = 8,
    /// `XS_RELEASE` (dom0 only).
    Release = 9,
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath = 10,
    /// `XS_WRITE`.
    Write = 11,
    /// `XS_MKDIR`.
    Mkdir = 12,
    /// `XS_RM`.
    Rm = 13,
    /// `XS_SET_PERMS`.
    SetPerms = 14,
    /// `XS_WATCH_EVENT`: unsolicited.
    WatchEvent = 15,
    /// `XS_ERROR`: the reply to a failed request.
    Error = 16,
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced = 17,
    /// `XS_RESUME`.
    Resume = 18,
    /// `XS_SET_TARGET`.
    SetTarget = 19,
    /// `XS_RESTRICT` (obsolete).
    Restrict = 20,
    /// `XS_RESET_WATCHES`.
    ResetWatches = 21,
    /// `XS_DIRECTORY_PART`.
    DirectoryPart = 22,
}

impl TryFrom<u32> for MsgType {
    type Error = DecodeError;
    fn try_from(v: u32) -> Result<MsgType, DecodeError> {
        use MsgType::*;
        const ALL: [MsgType; 23] = [
            Control,
            Directory,
            Read,
            GetPerms,
            Watch,
            Unwatch,
            TransactionStart,
            TransactionEnd,
            Introduce,
            Release,
            GetDomainPath,
            Write,
            Mkdir,
            Rm,
            SetPerms,
            WatchEvent,
            Error,
            IsDomainIntroduced,
            Resume,
            SetTarget,
            Restrict,
            ResetWatches,
            DirectoryPart,
        ];
        usize::try_from(v)
            .ok()
            .and_then(|i| ALL.get(i).copied())
            .ok_or(DecodeError::UnknownType(v))
    }
}

/// The message header (`struct xsd_sockmsg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message type.
    pub ty: MsgType,
    /// Echoed in the reply; 0 in watch events.
    pub req_id: u32,
    /// Transaction id, 0 outside a transaction.
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// The wire form.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&(self.ty as u32).to_le_bytes());
        out[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.tx_id.to_le_bytes());
        out[12..16].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// Parses a header, checking the type is known and the length fits.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let len = word(12);
        if len as usize > PAYLOAD_MAX {
            return Err(DecodeError::TooLong(len));
        }
        Ok(Header {
            ty: MsgType::try_from(word(0))?,
            req_id: word(4),
            tx_id: word(8),
            len,
        })
    }
}

/// Error names a daemon sends (`xsd_errors` in `xs_wire.h`), plus
/// [`XsErrno::Other`] for a well-formed name this build does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum XsErrno {
    /// `EINVAL`.
    EINVAL,
    /// `EACCES`.
    EACCES,
    /// `EEXIST`.
    EEXIST,
    /// `EISDIR`.
    EISDIR,
    /// `ENOENT`.
    ENOENT,
    /// `ENOMEM`.
    ENOMEM,
    /// `ENOSPC`.
    ENOSPC,
    /// `EIO`.
    EIO,
    /// `ENOTEMPTY`.
    ENOTEMPTY,
    /// `ENOSYS`.
    ENOSYS,
    /// `EROFS`.
    EROFS,
    /// `EBUSY`.
    EBUSY,
    /// `EAGAIN`: a transaction conflicted; retry it.
    EAGAIN,
    /// `EISCONN`.
    EISCONN,
    /// `E2BIG`.
    E2BIG,
    /// `EPERM` (sent by some daemons).
    EPERM,
    /// `EQUOTA` (sent by some daemons when a quota is exceeded).
    EQUOTA,
    /// A syntactically valid name not listed here.
    Other,
}

impl XsErrno {
    const NAMED: [(XsErrno, &'static [u8], i32); 17] = [
        (XsErrno::EINVAL, b"EINVAL", 22),
        (XsErrno::EACCES, b"EACCES", 13),
        (XsErrno::EEXIST, b"EEXIST", 17),
        (XsErrno::EISDIR, b"EISDIR", 21),
        (XsErrno::ENOENT, b"ENOENT", 2),
        (XsErrno::ENOMEM, b"ENOMEM", 12),
        (XsErrno::ENOSPC, b"ENOSPC", 28),
        (XsErrno::EIO, b"EIO", 5),
        (XsErrno::ENOTEMPTY, b"ENOTEMPTY", 39),
        (XsErrno::ENOSYS, b"ENOSYS", 38),
        (XsErrno::EROFS, b"EROFS", 30),
        (XsErrno::EBUSY, b"EBUSY", 16),
        (XsErrno::EAGAIN, b"EAGAIN", 11),
        (XsErrno::EISCONN, b"EISCONN", 106),
        (XsErrno::E2BIG, b"E2BIG", 7),
        (XsErrno::EPERM, b"EPERM", 1),
        (XsErrno::EQUOTA, b"EQUOTA", 122),
    ];

    /// Parses an error name: `E` followed by 1–15 ASCII capitals/digits.
    pub fn parse(name: &[u8]) -> Option<XsErrno> {
        if name.len() < 2
            || name.len() > 16
            || name[0] != b'E'
            || !name[1..]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return None;
        }
        Some(
            Self::NAMED
                .iter()
                .find(|(_, n, _)| *n == name)
                .map_or(XsErrno::Other, |e| e.0),
        )
    }

    /// The Linux errno value (EIO for [`XsErrno::Other`]; `EQUOTA` maps to
    /// `EDQUOT`).
    pub fn errno(self) -> i32 {
        Self::NAMED.iter().find(|e| e.0 == self).map_or(5, |e| e.2)
    }

    /// The name as sent.
    pub fn name(self) -> &'static str {
        Self::NAMED
            .iter()
            .find(|e| e.0 == self)
            .and_then(|e| core::str::from_utf8(e.1).ok())
            .unwrap_or("E?")
    }
}

impl fmt::Display for XsErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a message from the daemon was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The header announces more than [`PAYLOAD_MAX`] bytes.
    TooLong(u32),
    /// An unknown message type.
    UnknownType(u32),
    /// The buffer is shorter than the header says.
    Truncated,
    /// A reply of another type than the request (and not `ERROR`).
    UnexpectedType {
        /// The request's type.
        expected: MsgType,
        /// The reply's.
        got: MsgType,
    },
    /// The reply's `req_id` differs from the request's.
    ReqIdMismatch {
        /// Sent.
        expected: u32,
        /// Received.
        got: u32,
    },
    /// The reply's `tx_id` differs from the request's.
    TxIdMismatch {
        /// Sent.
        expected: u32,
        /// Received.
        got: u32,
    },
    /// The payload does not have the syntax its type requires.
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLong(n) => {
                write!(f, "xenstore payload of {n} bytes exceeds {PAYLOAD_MAX}")
            }
            DecodeError::UnknownType(t) => write!(f, "unknown xenstore message type {t}"),
            DecodeError::Truncated => f.write_str("truncated xenstore message"),
            DecodeError::UnexpectedType { expected, got } => {
                write!(
                    f,
                    "xenstore reply of type {got:?} to a {expected:?} request"
                )
            }
            DecodeError::ReqIdMismatch { expected, got } => {
                write!(f, "xenstore reply for request {got}, expected {expected}")
            }
            DecodeError::TxIdMismatch { expected, got } => {
                write!(
                    f,
                    "xenstore reply in transaction {got}, expected {expected}"
                )
            }
            DecodeError::Malformed(what) => write!(f, "malformed xenstore reply: {what}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// Why a request could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// A path, token or value is not allowed.
    Path(PathError),
    /// The payload would exceed [`PAYLOAD_MAX`].
    TooLong,
    /// The output buffer is too small.
    BufferTooSmall,
    /// `SET_PERMS` needs at least the owner's entry.
    NoPermissions,
    /// The request type is not one a client sends.
    Unsupported,
}

impl From<PathError> for EncodeError {
    fn from(e: PathError) -> Self {
        EncodeError::Path(e)
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Path(e) => write!(f, "{e}"),
            EncodeError::TooLong => write!(f, "xenstore request exceeds {PAYLOAD_MAX} bytes"),
            EncodeError::BufferTooSmall => f.write_str("buffer too small for the xenstore request"),
            EncodeError::NoPermissions => f.write_str("SET_PERMS without an owner entry"),
            EncodeError::Unsupported => f.write_str("not a client request"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

/// A request a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// Read a node's value.
    Read(&'a str),
    /// Write a value (creating the node and missing parents).
    Write(&'a str, &'a [u8]),
    /// Create a node (and missing parents) if absent.
    Mkdir(&'a str),
    /// Remove a node and its children.
    Rm(&'a str),
    /// List a node's children.
    Directory(&'a str),
    /// Read a node's permissions.
    GetPerms(&'a str),
    /// Set a node's permissions (owner entry first).
    SetPerms(&'a str, &'a [Permission]),
    /// Watch a path (or `@special`) with a token.
    Watch(&'a str, &'a str),
    /// Remove a watch.
    Unwatch(&'a str, &'a str),
    /// Start a transaction (sent with `tx_id` 0).
    TransactionStart,
    /// End a transaction: commit (`true`) or abort.
    TransactionEnd(bool),
    /// Ask for a domain's home path.
    GetDomainPath(DomId),
    /// Remove all of this connection's watches and transactions.
    ResetWatches,
}

/// Appends bytes to a bounded output, tracking overflow.
struct Out<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self
            .at
            .checked_add(bytes.len())
            .ok_or(EncodeError::TooLong)?;
        if end > HEADER_LEN + PAYLOAD_MAX {
            return Err(EncodeError::TooLong);
        }
        self.buf
            .get_mut(self.at..end)
            .ok_or(EncodeError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }

    fn put_str0(&mut self, s: &[u8]) -> Result<(), EncodeError> {
        self.put(s)?;
        self.put(b"\0")
    }
}

impl Request<'_> {
    /// The message type.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Request::Read(_) => MsgType::Read,
            Request::Write(..) => MsgType::Write,
            Request::Mkdir(_) => MsgType::Mkdir,
            Request::Rm(_) => MsgType::Rm,
            Request::Directory(_) => MsgType::Directory,
            Request::GetPerms(_) => MsgType::GetPerms,
            Request::SetPerms(..) => MsgType::SetPerms,
            Request::Watch(..) => MsgType::Watch,
            Request::Unwatch(..) => MsgType::Unwatch,
            Request::TransactionStart => MsgType::TransactionStart,
            Request::TransactionEnd(_) => MsgType::TransactionEnd,
            Request::GetDomainPath(_) => MsgType::GetDomainPath,
            Request::ResetWatches => MsgType::ResetWatches,
        }
    }

    /// Encodes header and payload into `out`, returning the message length
    /// and the header sent (to check the reply with [`decode_reply`]).
    /// Paths and tokens are validated; nothing oversized is ever built.
    pub fn encode(
        &self,
        req_id: u32,
        tx_id: u32,
        out: &mut [u8],
    ) -> Result<(usize, Header), EncodeError> {
        let mut o = Out {
            buf: out,
            at: HEADER_LEN,
        };
        if o.buf.len() < HEADER_LEN {
            return Err(EncodeError::BufferTooSmall);
        }
        let tx_id = match self {
            // "It is not legal to send non-0 tx_id in TRANSACTION_START";
            // WATCH and UNWATCH ignore it: send 0.
            Request::TransactionStart | Request::Watch(..) | Request::Unwatch(..) => 0,
            _ => tx_id,
        };
        match *self {
            Request::Read(p)
            | Request::Mkdir(p)
            | Request::Rm(p)
            | Request::Directory(p)
            | Request::GetPerms(p) => {
                path::check(p.as_bytes())?;
                o.put_str0(p.as_bytes())?;
            }
            Request::Write(p, value) => {
                path::check(p.as_bytes())?;
                o.put_str0(p.as_bytes())?;
                o.put(value)?;
            }
            Request::SetPerms(p, perms) => {
                path::check(p.as_bytes())?;
                if perms.is_empty() {
                    return Err(EncodeError::NoPermissions);
                }
                o.put_str0(p.as_bytes())?;
                for perm in perms {
                    if !perm.domid.is_real() {
                        return Err(EncodeError::Path(PathError::BadChar));
                    }
                    let mut s = [0u8; Permission::MAX_LEN];
                    o.put_str0(perm.format(&mut s))?;
                }
            }
            Request::Watch(p, token) | Request::Unwatch(p, token) => {
                path::check(p.as_bytes())?;
                path::check_token(token.as_bytes())?;
                o.put_str0(p.as_bytes())?;
                o.put_str0(token.as_bytes())?;
            }
            Request::TransactionStart | Request::ResetWatches => o.put(b"\0")?,
            Request::TransactionEnd(commit) => o.put_str0(if commit { b"T" } else { b"F" })?,
            Request::GetDomainPath(d) => {
                if !d.is_real() {
                    return Err(EncodeError::Path(PathError::BadChar));
                }
                let mut digits = [0u8; 20];
                o.put_str0(crate::decimal::format_u64(u64::from(d.0), &mut digits))?;
            }
        }
        let len = o.at;
        let header = Header {
            ty: self.msg_type(),
            req_id,
            tx_id,
            len: (len - HEADER_LEN) as u32,
        };
        o.buf[..HEADER_LEN].copy_from_slice(&header.encode());
        Ok((len, header))
    }
}

/// A validated reply, borrowing the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `OK\0`: `WRITE`, `MKDIR`, `RM`, `SET_PERMS`, `WATCH`, `UNWATCH`,
    /// `TRANSACTION_END`, `RESET_WATCHES`.
    Ok,
    /// A node's value (`READ`): any bytes.
    Value(&'a [u8]),
    /// Children of a node (`DIRECTORY`), each a valid path element.
    Names(Names<'a>),
    /// A node's permissions (`GET_PERMS`), at least the owner's entry.
    Perms(Perms<'a>),
    /// A new transaction's id (`TRANSACTION_START`), never 0.
    TxId(u32),
    /// An absolute path (`GET_DOMAIN_PATH`).
    Path(&'a str),
    /// The daemon refused the request.
    Error(XsErrno),
}

/// The children in a `DIRECTORY` reply (validated when decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names<'a>(&'a [u8]);

impl<'a> Iterator for Names<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let nul = self.0.iter().position(|&b| b == 0)?;
        let (name, rest) = self.0.split_at(nul);
        self.0 = &rest[1..];
        // Validated as ASCII path elements by `decode_reply`.
        core::str::from_utf8(name).ok()
    }
}

/// The entries in a `GET_PERMS` reply (validated when decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms<'a>(&'a [u8]);

impl Iterator for Perms<'_> {
    type Item = Permission;
    fn next(&mut self) -> Option<Permission> {
        let nul = self.0.iter().position(|&b| b == 0)?;
        let (entry, rest) = self.0.split_at(nul);
        self.0 = &rest[1..];
        Permission::parse(entry)
    }
}

/// Splits a payload that must be one or more NUL-terminated strings,
/// checking each with `check`. Returns the number of strings.
fn strings(payload: &[u8], check: impl Fn(&[u8]) -> bool) -> Result<usize, DecodeError> {
    if payload.is_empty() {
        return Ok(0);
    }
    if payload.last() != Some(&0) {
        return Err(DecodeError::Malformed("string list not NUL-terminated"));
    }
    let body = &payload[..payload.len() - 1];
    let mut n = 0;
    for s in body.split(|&b| b == 0) {
        if !check(s) {
            return Err(DecodeError::Malformed("invalid entry in a string list"));
        }
        n += 1;
    }
    Ok(n)
}

/// The single NUL-terminated string a payload must be.
fn one_string(payload: &[u8]) -> Result<&[u8], DecodeError> {
    match payload.split_last() {
        Some((0, s)) if !s.contains(&0) => Ok(s),
        _ => Err(DecodeError::Malformed("expected one NUL-terminated string")),
    }
}

/// Validates `reply` (header and payload) as the answer to the request
/// whose header was `request`, and decodes its payload.
pub fn decode_reply<'a>(
    request: &Header,
    reply: &Header,
    payload: &'a [u8],
) -> Result<Reply<'a>, DecodeError> {
    if payload.len() != reply.len as usize {
        return Err(DecodeError::Truncated);
    }
    if reply.req_id != request.req_id {
        return Err(DecodeError::ReqIdMismatch {
            expected: request.req_id,
            got: reply.req_id,
        });
    }
    if reply.tx_id != request.tx_id {
        return Err(DecodeError::TxIdMismatch {
            expected: request.tx_id,
            got: reply.tx_id,
        });
    }
    if reply.ty == MsgType::Error {
        let name = one_string(payload)?;
        return XsErrno::parse(name)
            .map(Reply::Error)
            .ok_or(DecodeError::Malformed("bad error name"));
    }
    if reply.ty != request.ty {
        return Err(DecodeError::UnexpectedType {
            expected: request.ty,
            got: reply.ty,
        });
    }
    match reply.ty {
        MsgType::Read => Ok(Reply::Value(payload)),
        MsgType::Directory => {
            strings(payload, |s| path::check_element(s).is_ok())?;
            Ok(Reply::Names(Names(payload)))
        }
        MsgType::GetPerms => {
            if strings(payload, |s| Permission::parse(s).is_some())? == 0 {
                return Err(DecodeError::Malformed("no permission entries"));
            }
            Ok(Reply::Perms(Perms(payload)))
        }
        MsgType::TransactionStart => {
            let id = crate::decimal::parse_u32(one_string(payload)?)
                .filter(|&id| id != 0)
                .ok_or(DecodeError::Malformed("bad transaction id"))?;
            Ok(Reply::TxId(id))
        }
        MsgType::GetDomainPath => {
            let p = one_string(payload)?;
            path::check_absolute(p).map_err(|_| DecodeError::Malformed("bad domain path"))?;
            core::str::from_utf8(p)
                .map(Reply::Path)
                .map_err(|_| DecodeError::Malformed("bad domain path"))
        }
        MsgType::Write
        | MsgType::Mkdir
        | MsgType::Rm
        | MsgType::SetPerms
        | MsgType::Watch
        | MsgType::Unwatch
        | MsgType::TransactionEnd
        | MsgType::ResetWatches => {
            if one_string(payload)? == b"OK" {
                Ok(Reply::Ok)
            } else {
                Err(DecodeError::Malformed("expected OK"))
            }
        }
        _ => Err(DecodeError::UnexpectedType {
            expected: request.ty,
            got: reply.ty,
        }),
    }
}

/// A watch event: the path that changed and the watch's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchEventRef<'a> {
    /// The changed path (a child of the watched path, or the watched
    /// `@special` itself).
    pub path: &'a str,
    /// The token given when the watch was set.
    pub token: &'a str,
}

/// Decodes a `WATCH_EVENT` payload: `path\0token\0`, both valid. Some
/// daemons append further NUL-terminated fields; they are ignored once
/// checked to be NUL-terminated.
pub fn decode_watch_event(payload: &[u8]) -> Result<WatchEventRef<'_>, DecodeError> {
    if payload.last() != Some(&0) {
        return Err(DecodeError::Malformed("watch event not NUL-terminated"));
    }
    let mut parts = payload[..payload.len() - 1].split(|&b| b == 0);
    let (Some(p), Some(t)) = (parts.next(), parts.next()) else {
        return Err(DecodeError::Malformed("watch event without a token"));
    };
    path::check(p).map_err(|_| DecodeError::Malformed("bad path in a watch event"))?;
    path::check_token(t).map_err(|_| DecodeError::Malformed("bad token in a watch event"))?;
    match (core::str::from_utf8(p), core::str::from_utf8(t)) {
        (Ok(path), Ok(token)) => Ok(WatchEventRef { path, token }),
        _ => Err(DecodeError::Malformed("watch event is not ASCII")),
    }
}

/// A whole message split and checked: header, and a payload of exactly
/// the announced length.
pub fn split_message(bytes: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    let head: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(DecodeError::Truncated)?;
    let header = Header::decode(head)?;
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != header.len as usize {
        return Err(DecodeError::Truncated);
    }
    Ok((header, payload))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
