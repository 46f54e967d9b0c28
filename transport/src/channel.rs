//! The transport traits.
//!
//! They are deliberately small: a transport supplies a shared region and a
//! doorbell; rings, framing, the handshake and the wait discipline live above
//! it and are the same for every transport. The local transport ([`Local`])
//! is a memfd plus eventfds; the Xen transport will be grant-mapped pages plus
//! event channels.

use std::io;
use std::os::fd::{AsFd, RawFd};
use std::time::Duration;

use ins_protocol::region::SharedRegion;

/// A one-way wake-up signal between two processes or domains.
///
/// Notifications merge: several `notify` calls before a `wait` may wake it
/// once. A doorbell therefore only means "look at shared memory again"; the
/// rings' indices are the truth.
pub trait Doorbell: Send + Sync {
    /// Wakes the side waiting on this doorbell.
    fn notify(&self) -> io::Result<()>;

    /// Waits until notified or until `timeout` passes (`None`: forever).
    /// Consumes pending notifications. Returns `true` if notified.
    fn wait(&self, timeout: Option<Duration>) -> io::Result<bool>;

    /// Consumes pending notifications without waiting.
    fn drain(&self) -> io::Result<()>;

    /// Call after an edge-triggered wake-up (epoll `ET` on the doorbell's
    /// fd), before looking at the ring again. A Xen event-channel port
    /// stays masked once it fired until its delivery is read back, so
    /// without this no further wake-up would come; an eventfd needs
    /// nothing (the default: its counter is left alone, every notify is a
    /// new edge anyway).
    fn ack(&self) -> io::Result<()> {
        Ok(())
    }

    /// A file descriptor that becomes readable when notified, for
    /// epoll/mio registration, if the transport has one.
    fn as_raw_fd(&self) -> Option<RawFd>;
}

/// A family of shared regions and doorbells.
pub trait Transport {
    /// The shared memory both sides map.
    type Region: SharedRegion + Send + Sync;
    /// The doorbell each side waits on (pollable).
    type Bell: Doorbell + AsFd;
}

/// The local transport: memfd regions and eventfd doorbells.
///
/// The Xen transport is [`crate::sys::xen::Xen`]: granted or grant-mapped
/// pages and an event channel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Transport for Local {
    type Region = crate::sys::linux::MemfdRegion;
    type Bell = crate::sys::linux::EventFd;
}
