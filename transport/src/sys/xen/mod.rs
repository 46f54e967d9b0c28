//! The Xen transport over Linux's user-space device interfaces:
//! `/dev/xen/gntalloc` (grant our pages), `/dev/xen/gntdev` (map a peer's
//! grants), `/dev/xen/evtchn` (event channels) and `/dev/xen/xenbus`
//! (xenstore).
//!
//! Who grants: the driver (protected VM) allocates and grants the ring
//! pages and allocates the unbound event channels; the instance maps and
//! binds. The protected side thereby owns its memory and alone can revoke
//! it, and the only foreign memory ever mapped is the driver's, mapped by
//! the instance: a hostile instance can never make the driver map pages of
//! its choosing, nor keep the driver's pages (once it unmaps or dies, the
//! driver revokes; while it still maps, Linux defers freeing the page
//! rather than reuse it).
//!
//! Region layout: the two rings exactly as the local transport lays them
//! out ([`crate::Layout`]), then one *status page*:
//!
//! ```text
//!  0 ............ ring driver→instance
//!  to_driver_off  ring instance→driver
//!  layout.len     status page: +0 driver alive (u32), +64 instance alive (u32)
//! ```
//!
//! Each side writes 1 to its word once set up and asks its kernel to zero
//! the word's first byte and send an event on the *liveness* event channel
//! when it lets go of the pages (`IOCTL_GNTALLOC_SET_UNMAP_NOTIFY` /
//! `IOCTL_GNTDEV_SET_UNMAP_NOTIFY`), which also happens when the process
//! dies. A second event channel carries only these, so the ring's doorbell
//! stays the rings' alone.
//!
//! Progress is driven by ring indices only: events merge, binding marks a
//! port pending, so a wake-up means "look again" ([`evtchn`]).
//!
//! * [`ioctl`]: numbers and layouts from the uapi headers (unsafe);
//! * [`gntalloc`], [`gntdev`]: the two kinds of region (unsafe: mmap);
//! * [`evtchn`]: ports and [`XenBell`];
//! * [`xenbus`]: the xenstore byte stream for [`ins_xen::xenstore::Client`];
//! * [`rendezvous`]: offering and joining a channel through xenstore, and
//!   the link thread that watches the peer and tears down.

pub mod evtchn;
pub mod gntalloc;
pub mod gntdev;
pub mod ioctl;
mod pages;
pub mod rendezvous;
pub mod xenbus;

use std::ptr::NonNull;
use std::time::Duration;

use ins_protocol::region::SharedRegion;

pub use evtchn::{Evtchn, XenBell};
pub use gntalloc::GrantedPages;
pub use gntdev::MappedPages;
pub use rendezvous::{
    Teardown, XenChannel, XenLink, connect_xen, offer_kmod, offer_xen, own_domid,
};
pub use xenbus::XenbusStream;

use crate::channel::Transport;

/// The Xen transport: grant pages and an event channel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Xen;

impl Transport for Xen {
    type Region = XenRegion;
    type Bell = XenBell;
}

/// A channel's pages: granted by us (driver) or mapped from the peer
/// (instance).
#[derive(Debug)]
pub enum XenRegion {
    /// Ours, granted to the instance.
    Granted(GrantedPages),
    /// The driver's, mapped here.
    Mapped(MappedPages),
}

// SAFETY: both variants uphold the SharedRegion contract themselves
// (live, page-aligned shared mappings of `len` bytes until drop); this
// only forwards to them.
#[allow(unsafe_code)]
unsafe impl SharedRegion for XenRegion {
    fn base(&self) -> NonNull<u8> {
        match self {
            XenRegion::Granted(g) => g.base(),
            XenRegion::Mapped(m) => m.base(),
        }
    }
    fn len(&self) -> usize {
        match self {
            XenRegion::Granted(g) => g.len(),
            XenRegion::Mapped(m) => m.len(),
        }
    }
}

pub use ins_xen::channel::{DRIVER_ALIVE, INSTANCE_ALIVE};

/// Device paths and limits of the Xen transport. Every limit is a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenConfig {
    /// xenstore: `/dev/xen/xenbus` or xenstored's socket.
    pub xenbus: String,
    /// `/dev/xen/gntalloc`.
    pub gntalloc: String,
    /// `/dev/xen/gntdev`.
    pub gntdev: String,
    /// `/dev/xen/evtchn`.
    pub evtchn: String,
    /// How long to wait for the peer's side of the rendezvous.
    pub rendezvous_timeout: Duration,
    /// How long the driver waits, on teardown, for the instance to unmap
    /// before revoking anyway (Linux then defers the free).
    pub teardown_timeout: Duration,
    /// Most pages a channel may have (instance: largest offer accepted).
    pub max_pages: u32,
    /// Watch events queued per xenstore connection.
    pub max_events: usize,
    /// Attempts for a xenstore transaction that keeps conflicting.
    pub tx_attempts: u32,
    /// While waiting for the peer in the rendezvous, re-read its keys this
    /// often even without a watch event (watches may be lost when
    /// permissions change).
    pub recheck: Duration,
}

impl Default for XenConfig {
    fn default() -> Self {
        XenConfig {
            xenbus: xenbus::XENBUS_DEV.into(),
            gntalloc: "/dev/xen/gntalloc".into(),
            gntdev: "/dev/xen/gntdev".into(),
            evtchn: "/dev/xen/evtchn".into(),
            rendezvous_timeout: Duration::from_secs(60),
            teardown_timeout: Duration::from_secs(5),
            max_pages: 4096,
            max_events: 256,
            tx_attempts: 16,
            recheck: Duration::from_millis(500),
        }
    }
}
