//! `libshim.so`: an `LD_PRELOAD` interposer that sends a program's Internet
//! sockets to INS.
//!
//! Every `AF_INET`/`AF_INET6` stream or datagram socket the program creates
//! is created by the INS driver (`ins-driver`) and handed to the program as a
//! real kernel fd: one end of a Unix `SOCK_STREAM` pair (TCP) or
//! `SOCK_SEQPACKET` pair (UDP) whose other end the driver relays to an INS
//! instance. Control calls (bind, listen, accept, connect, shutdown,
//! get/setsockopt, getsockname, getpeername) travel to the driver over a Unix
//! `SOCK_SEQPACKET` control socket (`INS_SHIM_SOCKET`, default
//! `/run/ins/shim.sock`) as [`ins_protocol::control`] messages, the socket
//! they are about attached as an `SCM_RIGHTS` fd.
//!
//! ```text
//!  program ── read/write/epoll/sendfile ──▶ app end ═══ pair ═══ driver end ─▶ ring ─▶ instance
//!     │ socket/bind/listen/accept/connect/…                         ▲
//!     └─ libshim ── Control + SCM_RIGHTS(app end) ──▶ shim.sock ─────┘
//! ```
//!
//! Module map and invariants:
//! * [`table`] — a fixed lock-free array, one byte per fd: unknown / host /
//!   shim control socket / INS socket with its kind and state. A hook on a
//!   host fd costs one atomic load and the real call.
//! * [`addr`] — `sockaddr` bytes ⇄ [`std::net::SocketAddr`] with the
//!   kernel's length and family checks and its truncation rule on output.
//! * [`frame`] — the 72-byte header that starts every datagram on a UDP
//!   pair: the peer's [`ins_protocol::msg::WireAddr`] and the datagram's
//!   [`ins_protocol::msg::PktInfo`].
//! * [`cmsg`] — `recvmsg`/`sendmsg` control messages of UDP sockets:
//!   `IP_PKTINFO` / `IPV6_PKTINFO` with Linux's layout, truncation
//!   (`MSG_CTRUNC`) and errors; a TCP `sendmsg`'s messages checked as
//!   Linux's TCP does, then dropped (none reaches the pair, so no
//!   `SCM_RIGHTS` descriptor reaches the driver).
//! * [`route`] — which `socket()` calls go to INS, which to libc, which fail.
//! * `sys` (unsafe) — the real libc functions (`dlsym(RTLD_NEXT)`, resolved
//!   once) and safe wrappers around the syscalls the shim makes itself.
//! * `ctl` — the control-connection pool (re-opened after `fork`) and the
//!   request/reply exchange.
//! * `inband` — socket options of connected streams carried in band
//!   (a record to the driver, a marker byte in the stream), and the per-fd
//!   option cache that answers their `getsockopt`.
//! * `keeper` — the program's copy of the driver's end of the pair of each
//!   listener and bound or connected datagram socket, so that such a
//!   socket whose driver is gone waits instead of reading end-of-file (or
//!   empty datagrams) for ever: an event loop would spin on it.
//! * `ops` — the INS side of each call, safe code over `sys` and `ctl`.
//! * `hooks` (unsafe) — the exported C symbols. They never unwind into C:
//!   the slow paths run under `catch_unwind` and fail with `EIO`.
//!
//! * [`dns`] — the stub resolver's parsers (`resolv.conf`, hosts, strict
//!   DNS answers) and query builder.
//! * `resolve` (unsafe) — the `getaddrinfo` and `getnameinfo` hooks
//!   (`hostent`, unsafe: `gethostbyname*` and `gethostbyaddr*` over the
//!   same resolver):
//!   names go to the nameservers over INS UDP sockets (flows to port 53;
//!   TCP when an answer is truncated) instead of glibc's resolver, whose
//!   internal `__socket`/`__connect` calls the shim cannot see (a leak
//!   under `ins-ctl run`, a failure under `--isolate`). Numeric hosts and
//!   `/etc/hosts` entries stay glibc's. `INS_DNS=host` turns it off (glibc's
//!   resolver, through the host stack); `INS_RESOLV_CONF=PATH` reads
//!   another `resolv.conf`. See its docs for the rules and gaps.
//!
//! Gaps (documented, not silent): glibc-internal socket calls (the
//! resolver's `__socket`/`__connect` as still used by `res_*`,
//! `fclose` of an fdopen'd socket) are not visible to `LD_PRELOAD`; socket
//! fds closed through them keep a stale table entry until the number is
//! reused by a hooked call. Of UDP ancillary data only packet information
//! (`IP_PKTINFO`, `IPV6_PKTINFO`) travels: other received control messages
//! are not delivered, and sending one Linux would apply is `EOPNOTSUPP`
//! ([`cmsg`]), as is a TCP `sendmsg` asking for transmit timestamps;
//! `recvmmsg`'s timeout is ignored on INS fds; `FIONREAD` on a
//! UDP INS fd counts the 72-byte header.
//! `SOCK_RAW` Internet sockets and `AF_PACKET` fail with `EPERM`, ICMP
//! datagram sockets with `EACCES`, other Internet socket types with
//! `EPROTONOSUPPORT`: nothing Internet-facing reaches the host kernel unless
//! `INS_FAIL_OPEN=1` is set and the driver is unreachable.

#![deny(unsafe_code)]
// Unit-test builds do not export the hooks, so most of the crate is unused there.
#![cfg_attr(test, allow(dead_code))]

pub mod addr;
pub mod cmsg;
pub mod config;
mod ctl;
pub mod dns;
pub mod errno;
#[allow(unsafe_code)]
mod fdrange;
pub mod frame;
#[allow(unsafe_code)]
mod hooks;
#[allow(unsafe_code)]
mod hostent;
mod inband;
mod keeper;
#[allow(unsafe_code)]
mod kmod;
mod ops;
#[allow(unsafe_code)]
mod resolve;
pub mod route;
#[allow(unsafe_code)]
mod sigpipe;
#[allow(unsafe_code)]
mod sys;
pub mod table;
