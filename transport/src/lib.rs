//! # ins-transport
//!
//! Shared regions, doorbells and the rendezvous that joins an INS driver and
//! an instance.
//!
//! A *channel* is one shared region holding two SPSC rings from
//! [`ins_protocol::ring`] plus two doorbells:
//!
//! ```text
//!            shared region (memfd, sealed against resize)
//!  ┌──────────────────────────────┬──────────────────────────────┐
//!  │ ring driver → instance       │ ring instance → driver       │
//!  │ offset 0                     │ offset Layout::to_driver_off │
//!  └──────────────────────────────┴──────────────────────────────┘
//!   doorbell "for the instance": data (or space) for the instance
//!   doorbell "for the driver":   data (or space) for the driver
//! ```
//!
//! Each side waits on exactly one doorbell (its own) and rings the other, so
//! both "data arrived" and "space was freed" wake-ups reach the side that
//! sleeps. Doorbells only say "look again": the truth is always the ring
//! indices in shared memory (notifications merge, as Xen event channels do).
//!
//! * [`channel`]: the small traits ([`Doorbell`], [`Transport`]) that the Xen
//!   transport (grant pages, event channels) implements later.
//! * [`sys::linux`]: the local implementation, [`MemfdRegion`] and
//!   [`EventFd`]; the only module with `unsafe` code.
//! * [`sys::kmod`]: joining the `ins` kernel module instead of a daemon:
//!   the module allocates the region, the instance maps its channel file
//!   (`connect_kmod`); the result is the same local [`Endpoint`].
//! * [`rendezvous`]: Unix-socket rendezvous (fds by `SCM_RIGHTS`, a fixed
//!   header) and the versioned hello handshake.
//! * [`endpoint`]: one side of an open channel, with bounded spin-then-sleep
//!   waits that never lose a wake-up.
//! * [`any`]: the local or the Xen transport chosen per channel at run time
//!   (the driver keeps both kinds of instance in one table).

#![deny(unsafe_code)]

pub mod any;
pub mod channel;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod rendezvous;
pub mod sys;

pub use channel::{Doorbell, Local, Transport};
pub use config::ChannelConfig;
pub use endpoint::Endpoint;
pub use error::Error;
pub use rendezvous::{
    Layout, RawChannel, accept_channel, accept_stream, connect_channel, connect_channel_with,
    connect_stream, offer_channel, receive_channel,
};
pub use sys::linux::{EventFd, MemfdRegion};
