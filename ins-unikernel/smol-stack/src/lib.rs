//! # ins-smol-stack
//!
//! [smoltcp](https://docs.rs/smoltcp) behind ins-core's
//! [`Stack`](ins_core::stack::Stack) trait, so the INS executor runs
//! unchanged in the unikernel. `no_std` + `alloc`; the network device and
//! the platform's clock/wait come from the caller ([`smoltcp::phy::Device`],
//! [`Waiter`]), so the same code runs over netfront in a Xen domain and
//! over an in-memory link in host tests.
//!
//! ## How Linux socket semantics map onto smoltcp
//!
//! * **Handles** are our own `u32`s, never reused; each names a socket
//!   that may own zero or more smoltcp sockets.
//! * **Listen and accept.** A smoltcp TCP socket listens for exactly one
//!   connection, so a listener keeps a pool of listening sockets (its
//!   backlog, capped by [`StackConfig::listen_pool`]) on the same endpoint.
//!   A pool socket whose handshake completed is handed out by `accept`
//!   and replaced. SYNs beyond the pool are answered with RST by smoltcp
//!   (Linux would queue them up to the backlog).
//! * **Addresses.** An `AF_INET6` socket sees IPv4 peers as v4-mapped
//!   addresses (`::ffff:a.b.c.d`), as on Linux; a wildcard `AF_INET6`
//!   listener takes both families unless `IPV6_V6ONLY`. A wildcard
//!   listener of one family listens on the stack's address of that family,
//!   so a SYN of the other family finds no listener and is refused (RST,
//!   `ECONNREFUSED` for the client) as on Linux, and a listener of each
//!   family can share a port; a connection of the wrong family that still
//!   reaches one (none should) is reset at `accept`.
//! * **Ports.** Binding follows Linux: `EADDRINUSE` for an overlapping
//!   binding of the same protocol and port unless both sockets set
//!   `SO_REUSEPORT`, or both set `SO_REUSEADDR` and (TCP) neither listens;
//!   `EADDRNOTAVAIL` for an address the interface does not have. Ephemeral
//!   ports come from [`StackConfig::ephemeral_ports`].
//! * **Errors.** A connection closed by RST reports `ECONNRESET` (once,
//!   through `recv`/`send`/`take_error`); a refused connect `ECONNREFUSED`;
//!   a connect that exceeds [`StackConfig::connect_timeout_ns`]
//!   `ETIMEDOUT`. `recv` after the peer's FIN returns `Ok(0)`; `send` after
//!   `shutdown(Write)` returns `EPIPE`.
//! * **Close.** Closing a connection with unread data, or with
//!   `SO_LINGER{1,0}`, resets it; otherwise FIN is sent and the socket
//!   finishes in the background for at most
//!   [`StackConfig::close_linger_ns`], then is reset.
//! * **UDP.** Datagrams are truncated to the caller's buffer (the rest is
//!   lost, as on Linux); a connected socket drops datagrams from other
//!   peers; a datagram larger than the send buffer is `EMSGSIZE`; sending
//!   to a broadcast address without `SO_BROADCAST` is `EACCES`; no route is
//!   `ENETUNREACH`.
//! * **Options** ([`opts`]): what smoltcp has is applied; what it lacks is
//!   answered as Linux answers an option it does not know
//!   (`ENOPROTOOPT`), listed in [`opts`].
//! * **Readiness** follows the trait's contract: after each interface poll
//!   every socket's readiness is recomputed and the bits it gained since
//!   the last report are reported; an `EAGAIN` clears the bit concerned,
//!   so the next time the condition holds it counts as gained.
//!
//! * **FIN after data.** `shutdown(Write)` and a graceful `close` ask
//!   smoltcp for the FIN only once the transmit queue is empty: smoltcp
//!   0.14 was seen to stall with bytes queued after `close()` (LAST-ACK,
//!   data never sent, no timer armed).
//!
//! `tcp_info` is not available (smoltcp keeps no segment counters):
//! [`Stack::tcp_info`](ins_core::stack::Stack::tcp_info) returns `None`.

#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod addr;
pub mod opts;
mod ports;
mod stack;
mod tcp;
mod udp;

pub use smoltcp;
pub use stack::{Handle, SmolStack, StackConfig, StackCounters, Waiter};
