//! The [`Stack`] trait: an instance's view of a TCP/IP stack.
//!
//! The executor runs over this trait. Two implementations are planned: Linux
//! host sockets (non-blocking fds plus one edge-triggered epoll set) and,
//! later, a unikernel stack in the style of smoltcp. This module is the
//! contract between the executor and both; read it before writing either.
//!
//! # Model
//!
//! * **Handles.** A socket is named by an opaque, `Copy` [`Stack::Handle`]
//!   returned by [`Stack::open`] or [`Stack::accept`]. A handle stays valid
//!   until [`Stack::close`] is called on it, and only then may the stack reuse
//!   its value. Any operation on a handle that is not open fails with
//!   [`Errno::EBADF`] and has no other effect; no operation panics on bad input.
//! * **Non-blocking.** No method blocks except [`Stack::poll_events`], and that
//!   only up to its timeout. An operation that cannot make progress now returns
//!   [`Errno::EAGAIN`]; [`Stack::connect`] returns [`Errno::EINPROGRESS`] when
//!   the handshake has started.
//! * **Errors are Linux errno values** ([`Errno`]); a non-Linux stack maps onto
//!   them. The errno a C program would see from the same call on Linux is the
//!   right answer wherever one exists.
//! * **Options are named by Linux `(level, name)` numbers** (see [`opt`]) and
//!   carry the Linux byte encoding (a C `int` in native byte order for integer
//!   options, a NUL-padded name for `TCP_CONGESTION`). A stack that lacks an
//!   option answers [`Errno::ENOPROTOOPT`].
//! * **Time** is not read by this trait except for `poll_events`' timeout; the
//!   executor owns the clock and passes monotonic nanoseconds to the rest of
//!   the core.
//!
//! # Readiness: the event contract
//!
//! [`Stack::poll_events`] appends `(handle, Readiness)` pairs. The contract is
//! *edge-like with spurious wake-ups allowed*:
//!
//! 1. **No lost wake-up.** After an operation on a handle returned `EAGAIN`
//!    (or `connect` returned `EINPROGRESS`), the stack must report that handle
//!    with the corresponding bit ([`Readiness::READABLE`] for recv/recv_from/
//!    accept, [`Readiness::WRITABLE`] for send/send_to/connect completion) in a
//!    later `poll_events` once the condition may have changed. Hang-up and
//!    error conditions are reported without being asked for.
//! 2. **Spurious reports are allowed.** A reported bit is a hint: the executor
//!    must be ready for the next operation to return `EAGAIN` again.
//! 3. **The executor drains.** After a `READABLE` report the executor reads (or
//!    accepts) until `EAGAIN` or until it chooses to stop, in which case it
//!    remembers the handle as still readable itself; the stack need not report
//!    it again. The same holds for `WRITABLE`.
//! 4. **No busy reporting.** A stack should not report a handle whose readiness
//!    has not gained a bit since it was last reported and on which no operation
//!    returned `EAGAIN` since; otherwise the executor would spin.
//!
//! Every handle is registered for all readiness kinds from the moment it is
//! returned by `open`/`accept`; there is no separate registration call.
//! An epoll implementation satisfies this with `EPOLLIN|EPOLLOUT|EPOLLRDHUP|
//! EPOLLET` added at creation. A smoltcp-like implementation keeps the last
//! reported [`Readiness`] per socket and, after each interface poll, reports
//! the sockets whose readiness gained a bit, plus the sockets marked "waiting"
//! by an `EAGAIN` that are now ready.
//!
//! # Waking the executor for other reasons
//!
//! The executor also waits for its ring doorbell. `poll_events` with a
//! timeout of `Some(0)` never blocks, so an executor can wait elsewhere; a
//! Linux implementation can instead offer (outside this trait) a way to add
//! the doorbell's fd to its epoll set so one wait covers both.

use alloc::string::String;
use alloc::vec::Vec;
use core::hash::Hash;
use core::net::{IpAddr, SocketAddr};
use core::ops::{BitOr, BitOrAssign};

use crate::errno::Errno;
pub use ins_protocol::msg::PktInfo;

/// Address family of a new socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    Inet,
    /// IPv6 (`AF_INET6`); may carry v4-mapped addresses unless `IPV6_V6ONLY`.
    Inet6,
}

impl Family {
    /// The family an address belongs to.
    pub fn of(addr: &SocketAddr) -> Family {
        match addr {
            SocketAddr::V4(_) => Family::Inet,
            SocketAddr::V6(_) => Family::Inet6,
        }
    }
}

/// Socket type of a new socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SockType {
    /// TCP (`SOCK_STREAM`).
    Stream,
    /// UDP (`SOCK_DGRAM`).
    Datagram,
}

/// Which direction(s) [`Stack::shutdown`] closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shutdown {
    /// `SHUT_RD`.
    Read,
    /// `SHUT_WR`: sends FIN after queued data.
    Write,
    /// `SHUT_RDWR`.
    Both,
}

/// Readiness bits reported by [`Stack::poll_events`]. See the module docs for
/// the contract.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Readiness(u8);

impl Readiness {
    /// Nothing.
    pub const EMPTY: Readiness = Readiness(0);
    /// `recv`/`recv_from`/`accept` may make progress (data, a pending
    /// connection, or EOF).
    pub const READABLE: Readiness = Readiness(1);
    /// `send`/`send_to` may make progress, or a pending connect finished
    /// (successfully or not: check [`Stack::take_error`]).
    pub const WRITABLE: Readiness = Readiness(2);
    /// The peer closed its sending side (FIN received); reads will reach EOF.
    pub const READ_CLOSED: Readiness = Readiness(4);
    /// Both directions are closed (reset, or FIN both ways).
    pub const HANGUP: Readiness = Readiness(8);
    /// A socket error is pending; [`Stack::take_error`] returns it.
    pub const ERROR: Readiness = Readiness(16);

    const ALL: u8 = 31;

    /// The raw bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From raw bits; unknown bits are dropped.
    pub fn from_bits_truncate(bits: u8) -> Readiness {
        Readiness(bits & Self::ALL)
    }

    /// Whether all bits of `other` are set in `self`.
    pub fn contains(self, other: Readiness) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set in `self`.
    pub fn intersects(self, other: Readiness) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no bit is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Bits in `self` that are not in `before`: what a smoltcp-like
    /// implementation reports after comparing with the last report.
    pub fn gained_since(self, before: Readiness) -> Readiness {
        Readiness(self.0 & !before.0)
    }
}

impl BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, rhs: Readiness) -> Readiness {
        Readiness(self.0 | rhs.0)
    }
}

impl BitOrAssign for Readiness {
    fn bitor_assign(&mut self, rhs: Readiness) {
        self.0 |= rhs.0;
    }
}

impl core::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let names = [
            (Self::READABLE, "READABLE"),
            (Self::WRITABLE, "WRITABLE"),
            (Self::READ_CLOSED, "READ_CLOSED"),
            (Self::HANGUP, "HANGUP"),
            (Self::ERROR, "ERROR"),
        ];
        let mut first = true;
        write!(f, "Readiness(")?;
        for (bit, name) in names {
            if self.contains(bit) {
                if !first {
                    write!(f, "|")?;
                }
                write!(f, "{name}")?;
                first = false;
            }
        }
        write!(f, ")")
    }
}

/// A connection taken from a listener by [`Stack::accept`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted<H> {
    /// The new connection's handle (already non-blocking and registered).
    pub handle: H,
    /// The remote end.
    pub peer: SocketAddr,
    /// The local end (the address the peer connected to).
    pub local: SocketAddr,
}

/// TCP counters a stack can report per connection (Linux: `TCP_INFO`).
///
/// All counters are absolute (since the connection started), so the flow
/// table can store them directly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Segments received (`tcpi_segs_in`).
    pub segs_in: u64,
    /// Segments sent (`tcpi_segs_out`).
    pub segs_out: u64,
    /// Retransmitted segments in total (`tcpi_total_retrans`).
    pub retrans: u64,
    /// Smoothed round-trip time in microseconds (`tcpi_rtt`), 0 if unknown.
    pub rtt_us: u32,
    /// Congestion window in segments (`tcpi_snd_cwnd`), 0 if unknown.
    pub cwnd: u32,
    /// Bytes the peer acknowledged (`tcpi_bytes_acked`), 0 if unknown.
    pub bytes_acked: u64,
    /// Time sending was limited by the peer's window, microseconds
    /// (`tcpi_rwnd_limited`), 0 if unknown.
    pub rwnd_limited_us: u64,
    /// The peer's advertised window in bytes (`tcpi_snd_wnd`), `None` if
    /// the stack cannot tell.
    pub peer_window: Option<u32>,
    /// Bytes queued in the stack and not yet sent (`tcpi_notsent_bytes`).
    pub notsent: u32,
}

/// Linux socket option numbers: the option namespace of [`Stack::set_opt`]
/// and [`Stack::get_opt`].
pub mod opt {
    /// `SOL_SOCKET`.
    pub const SOL_SOCKET: i32 = 1;
    /// `SO_REUSEADDR`.
    pub const SO_REUSEADDR: i32 = 2;
    /// `SO_TYPE`.
    pub const SO_TYPE: i32 = 3;
    /// `SO_ERROR` (prefer [`Stack::take_error`](super::Stack::take_error)).
    pub const SO_ERROR: i32 = 4;
    /// `SO_BROADCAST`.
    pub const SO_BROADCAST: i32 = 6;
    /// `SO_SNDBUF`.
    pub const SO_SNDBUF: i32 = 7;
    /// `SO_RCVBUF`.
    pub const SO_RCVBUF: i32 = 8;
    /// `SO_KEEPALIVE`.
    pub const SO_KEEPALIVE: i32 = 9;
    /// `SO_LINGER` (a `struct linger`: two C ints).
    pub const SO_LINGER: i32 = 13;
    /// `SO_REUSEPORT`.
    pub const SO_REUSEPORT: i32 = 15;
    /// `IPPROTO_IP`.
    pub const IPPROTO_IP: i32 = 0;
    /// `IP_TOS`.
    pub const IP_TOS: i32 = 1;
    /// `IP_TTL`.
    pub const IP_TTL: i32 = 2;
    /// `IPPROTO_TCP`.
    pub const IPPROTO_TCP: i32 = 6;
    /// `TCP_NODELAY`.
    pub const TCP_NODELAY: i32 = 1;
    /// `TCP_MAXSEG`.
    pub const TCP_MAXSEG: i32 = 2;
    /// `TCP_KEEPIDLE` (seconds).
    pub const TCP_KEEPIDLE: i32 = 4;
    /// `TCP_KEEPINTVL` (seconds).
    pub const TCP_KEEPINTVL: i32 = 5;
    /// `TCP_KEEPCNT`.
    pub const TCP_KEEPCNT: i32 = 6;
    /// `TCP_INFO` (prefer [`Stack::tcp_info`](super::Stack::tcp_info)).
    pub const TCP_INFO: i32 = 11;
    /// `TCP_QUICKACK`.
    pub const TCP_QUICKACK: i32 = 12;
    /// `TCP_CONGESTION` (a name, up to 16 bytes).
    pub const TCP_CONGESTION: i32 = 13;
    /// `TCP_USER_TIMEOUT` (milliseconds).
    pub const TCP_USER_TIMEOUT: i32 = 18;
    /// `IPPROTO_UDP`.
    pub const IPPROTO_UDP: i32 = 17;
    /// `IPPROTO_IPV6`.
    pub const IPPROTO_IPV6: i32 = 41;
    /// `IPV6_V6ONLY`.
    pub const IPV6_V6ONLY: i32 = 26;
    /// Longest `TCP_CONGESTION` name (`TCP_CA_NAME_MAX`).
    pub const TCP_CA_NAME_MAX: usize = 16;
}

/// A TCP/IP stack as seen by an INS instance. See the module docs for the
/// handle, error, option and readiness contracts every method follows.
pub trait Stack {
    /// Names an open socket. Valid from `open`/`accept` until `close`.
    type Handle: Copy + Eq + Hash + core::fmt::Debug;

    /// Creates a non-blocking socket, registered for readiness events.
    ///
    /// Errors: `EMFILE`/`ENOBUFS`/`ENOMEM` when out of sockets,
    /// `EAFNOSUPPORT` when the family is not available.
    fn open(&mut self, family: Family, ty: SockType) -> Result<Self::Handle, Errno>;

    /// Binds to a local address (port 0 picks one; read it back with
    /// [`Stack::local_addr`]). Errors as Linux: `EADDRINUSE`,
    /// `EADDRNOTAVAIL`, `EINVAL` (already bound, or family mismatch).
    fn bind(&mut self, h: Self::Handle, addr: SocketAddr) -> Result<(), Errno>;

    /// Starts listening with at most `backlog` pending connections (the stack
    /// may clamp it). Binds to an ephemeral port first if unbound.
    fn listen(&mut self, h: Self::Handle, backlog: u32) -> Result<(), Errno>;

    /// Starts connecting (TCP) or sets the default peer (UDP).
    ///
    /// For TCP the normal answer is `Err(EINPROGRESS)`; completion is signalled
    /// by [`Readiness::WRITABLE`], after which [`Stack::take_error`] says
    /// whether it succeeded (`None`) or why not (`ECONNREFUSED`,
    /// `ETIMEDOUT`, ...). `Ok(())` means connected at once (loopback, UDP).
    /// A second call while pending returns `EALREADY`; once connected, `EISCONN`.
    fn connect(&mut self, h: Self::Handle, addr: SocketAddr) -> Result<(), Errno>;

    /// Whether a stream [`Stack::recv`] that returned fewer bytes than
    /// asked counts as the `EAGAIN` of rule 1 of the event contract: the
    /// receive queue was empty then, and a later arrival is reported. True
    /// for edge-triggered epoll (every new segment is an edge); the
    /// default, false, makes the executor read until `EAGAIN`. A hang-up or
    /// error already reported for the handle still has the executor read
    /// on, to see the end of the stream.
    fn short_read_is_eagain(&self) -> bool {
        false
    }

    /// Takes one pending connection from a listener, or `EAGAIN`.
    fn accept(&mut self, h: Self::Handle) -> Result<Accepted<Self::Handle>, Errno>;

    /// Reads stream bytes. `Ok(0)` with a non-empty buffer is EOF (the peer
    /// sent FIN); `EAGAIN` when nothing is queued; `ECONNRESET` after a reset.
    fn recv(&mut self, h: Self::Handle, buf: &mut [u8]) -> Result<usize, Errno>;

    /// Queues stream bytes; returns how many were accepted (possibly fewer
    /// than offered), or `EAGAIN` when none fit. `EPIPE` after shutdown(Write),
    /// `ENOTCONN` before the connection is established.
    fn send(&mut self, h: Self::Handle, buf: &[u8]) -> Result<usize, Errno>;

    /// Receives one datagram, truncated to `buf.len()`; returns the number of
    /// bytes stored and the sender. `EAGAIN` when none is queued.
    fn recv_from(&mut self, h: Self::Handle, buf: &mut [u8]) -> Result<(usize, SocketAddr), Errno>;

    /// Sends one datagram to `dst` whole, or fails (`EMSGSIZE`, `EAGAIN`).
    fn send_to(&mut self, h: Self::Handle, buf: &[u8], dst: SocketAddr) -> Result<usize, Errno>;

    /// [`Stack::recv_from`] with the datagram's packet information: the
    /// `IP_PKTINFO` / `IPV6_PKTINFO` control messages the stack reports
    /// for it (only those whose option is on for the socket). The default,
    /// for stacks without them, reports none.
    fn recv_from_info(
        &mut self,
        h: Self::Handle,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr, PktInfo), Errno> {
        let (n, from) = self.recv_from(h, buf)?;
        Ok((n, from, PktInfo::NONE))
    }

    /// [`Stack::send_to`] with packet information from the app's `sendmsg`
    /// (source address, interface), applied as Linux applies those control
    /// messages. The default, for stacks without them, sends a datagram
    /// without information and refuses one with it (`EOPNOTSUPP`).
    fn send_to_info(
        &mut self,
        h: Self::Handle,
        buf: &[u8],
        dst: SocketAddr,
        info: &PktInfo,
    ) -> Result<usize, Errno> {
        if info.is_none() {
            self.send_to(h, buf, dst)
        } else {
            Err(Errno::EOPNOTSUPP)
        }
    }

    /// Shuts down one or both directions (`ENOTCONN` if not connected).
    fn shutdown(&mut self, h: Self::Handle, how: Shutdown) -> Result<(), Errno>;

    /// Releases the handle. The handle is invalid afterwards whatever the
    /// result; an error only reports what happened to pending data. Closing a
    /// connection with unread received data resets it (as Linux does).
    fn close(&mut self, h: Self::Handle) -> Result<(), Errno>;

    /// Sets a socket option named by Linux numbers (see [`opt`]).
    /// `ENOPROTOOPT` for an option this stack does not have; `EINVAL` for a
    /// value of the wrong size or range.
    fn set_opt(
        &mut self,
        h: Self::Handle,
        level: i32,
        name: i32,
        value: &[u8],
    ) -> Result<(), Errno>;

    /// Reads a socket option into `out`; returns the number of bytes written
    /// (the option's length, truncated to `out.len()` as Linux does).
    fn get_opt(
        &mut self,
        h: Self::Handle,
        level: i32,
        name: i32,
        out: &mut [u8],
    ) -> Result<usize, Errno>;

    /// The bound local address (`EINVAL` if unbound on stacks that cannot
    /// report the wildcard; Linux reports `0.0.0.0:0`).
    fn local_addr(&self, h: Self::Handle) -> Result<SocketAddr, Errno>;

    /// The connected peer (`ENOTCONN` when none).
    fn peer_addr(&self, h: Self::Handle) -> Result<SocketAddr, Errno>;

    /// Takes and clears the pending socket error (`SO_ERROR`): `Ok(None)` when
    /// there is none.
    fn take_error(&mut self, h: Self::Handle) -> Result<Option<Errno>, Errno>;

    /// TCP counters for a stream socket, `None` when unknown (not TCP, not
    /// supported, or not connected yet).
    fn tcp_info(&mut self, h: Self::Handle) -> Option<TcpCounters>;

    /// The source address the stack would use to reach `remote`, if it can
    /// tell without sending (used to answer `getsockname` on an unbound
    /// connected UDP socket). Default: unknown.
    fn route_source(&mut self, remote: IpAddr) -> Option<IpAddr> {
        let _ = remote;
        None
    }

    /// Congestion control algorithms this stack offers for
    /// `TCP_CONGESTION`, appended to `out` (Linux:
    /// `net.ipv4.tcp_available_congestion_control`). Default: none, meaning the
    /// option is not supported.
    fn available_congestion(&self, out: &mut Vec<String>) {
        let _ = out;
    }

    /// Appends readiness events to `out` (it is not cleared), waiting up to
    /// `timeout_ns` nanoseconds for at least one (`None`: wait indefinitely,
    /// `Some(0)`: do not wait). Returns after the timeout with nothing appended
    /// if nothing happened; `EINTR` may be returned and is harmless. A handle
    /// appears at most once per call. See the module docs for the contract.
    fn poll_events(
        &mut self,
        timeout_ns: Option<u64>,
        out: &mut Vec<(Self::Handle, Readiness)>,
    ) -> Result<(), Errno>;
}

/// Encodes a C `int` option value as Linux expects it.
pub fn int_opt(v: i32) -> [u8; 4] {
    v.to_ne_bytes()
}

/// Decodes a C `int` option value as Linux does for integer options: the
/// first 4 bytes are read, a shorter value is `EINVAL`.
pub fn parse_int_opt(value: &[u8]) -> Result<i32, Errno> {
    match value.first_chunk::<4>() {
        Some(b) => Ok(i32::from_ne_bytes(*b)),
        None => Err(Errno::EINVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::prelude::rust_2024::*;

    #[test]
    fn readiness_bits() {
        let r = Readiness::READABLE | Readiness::HANGUP;
        assert!(r.contains(Readiness::READABLE));
        assert!(!r.contains(Readiness::READABLE | Readiness::WRITABLE));
        assert!(r.intersects(Readiness::READABLE | Readiness::WRITABLE));
        assert!(!r.intersects(Readiness::WRITABLE));
        assert_eq!(format!("{r:?}"), "Readiness(READABLE|HANGUP)");
        assert_eq!(Readiness::from_bits_truncate(0xff).bits(), 31);
        let before = Readiness::WRITABLE;
        let now = Readiness::WRITABLE | Readiness::READABLE;
        assert_eq!(now.gained_since(before), Readiness::READABLE);
        assert!(before.gained_since(now).is_empty());
    }

    #[test]
    fn int_opts() {
        assert_eq!(parse_int_opt(&int_opt(-7)), Ok(-7));
        assert_eq!(parse_int_opt(&[1, 2, 3]), Err(Errno::EINVAL));
        assert_eq!(
            parse_int_opt(&[1, 0, 0, 0, 9, 9, 9, 9]),
            Ok(i32::from_ne_bytes([1, 0, 0, 0]))
        );
    }

    #[test]
    fn family_of() {
        assert_eq!(Family::of(&"1.2.3.4:5".parse().unwrap()), Family::Inet);
        assert_eq!(Family::of(&"[::1]:5".parse().unwrap()), Family::Inet6);
    }
}
