//! # ins-xen
//!
//! The Xen layer of INS, with no operating-system code in it, shared by the
//! user-space driver and instance (over Linux's `/dev/xen/*`), and later by
//! the kernel module and the unikernel instance.
//!
//! * [`domid`], [`gnttab`], [`evtchn`]: the small typed values of Xen's
//!   public ABI (`xen/include/public/{xen,grant_table,event_channel}.h`),
//!   each validated where it is parsed.
//! * [`xenstore`]: the xenstore wire protocol (`io/xs_wire.h`,
//!   `docs/misc/xenstore.txt`): message header and types, request encoding,
//!   response decoding that validates every byte the daemon (or a hostile
//!   peer sharing the connection's daemon) sent, paths and permission
//!   strings, and a client over any byte stream with watches and
//!   transactions retried on `EAGAIN`.
//! * [`channel`]: where an INS channel's rendezvous keys live in xenstore,
//!   the values they hold, and the versioned front/back state machines of
//!   the driver (granting side) and the instance (mapping side).
//!
//! * [`agent`]: the requests a driver in a domU writes for dom0's
//!   toolstack agent (create and destroy instance domains) and its
//!   answers, parsed strictly on both sides.
//!
//! The crate has no `unsafe` code. It is `no_std`; the client and the
//! channel rendezvous need `alloc`.

#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "alloc")]
pub mod agent;
#[cfg(feature = "alloc")]
pub mod channel;
mod decimal;
pub mod domid;
pub mod evtchn;
pub mod gnttab;
pub mod xenstore;

pub use domid::DomId;
pub use evtchn::Port;
pub use gnttab::GrantRef;
