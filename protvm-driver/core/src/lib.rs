//! # driver-core
//!
//! The protected-VM driver's decisions, without any I/O: which instance a
//! socket lives on, what a shim request becomes on the ring, how a reply
//! from an instance is routed back, how one listener is replicated on every
//! instance and fed by all of them, and what happens to everything when an
//! instance dies. A *host* (today the `ins-driver` daemon, later the Linux
//! kernel module) feeds it events and carries out the [`Action`]s it
//! returns through the small trait surface in [`host`].
//!
//! ```text
//!             host → core (inputs)                        core → host (Vec<Action>, via host::*)
//!   shim request ───▶ shim::shim_request ──┐
//!   instance frame ─▶ frame::instance_frame├─▶ tables ─▶  frames to instance N   (InstanceLinks)
//!   app bytes/EOF ──▶ relay::{send_credit, │   below      replies, fds           (ShimReplies)
//!                      delivered, app_eof} │              tokens, pairs, resets  (AppSockets)
//!   join/death/tick ▶ instance::*         ─┘              notes                  (NoteSink)
//! ```
//!
//! ## Map: one question per module
//!
//! | module | answers | owns |
//! |---|---|---|
//! | [`config`] | which limits and policy? | [`Config`], [`Placement`], [`opt`] numbers |
//! | [`socket`] | where does a socket live, and how does it end? | the socket table: handles, app-side inodes, instance wire ids; [`SockState`]; `forget` |
//! | [`ports`] | who holds which port? | bound `(type, port)` → sockets, the driver's `EADDRINUSE` check |
//! | [`listener`] | how is one listener on every instance? | `listen`, its replicas and their accept credit, replication on join, draining replicas |
//! | [`accept`] | how do connections reach `accept()`? | the accept queue per listener: `Accepted` in, tokens out, `accept` pops, credit back |
//! | [`instance`] | which instances exist, and what does a death undo? | the instance table, placement, heartbeats/tick, mitigations, failover |
//! | [`pending`] | what is in flight on each ring, and who waits for it? | request ids, `Pending`, reply routing, failing requests of a dead instance |
//! | [`shim`] | what does each shim op do? | one function per [`Op`](ins_protocol::control::Op): the dispatch table, first placement of a socket, the small ops |
//! | [`bind`] | `bind()` and auto-bind | bind requests and their replies |
//! | [`connect`] | `connect()` | stream and datagram connects, `Connected` |
//! | [`options`] | `setsockopt`/`getsockopt` | remembered options, the options the driver answers itself |
//! | [`inband`] | where in the stream does an option apply? | shim records waiting for their marker, stalled markers |
//! | [`frame`] | what may an instance say, and what does it mean? | socket-id resolution, one function per frame kind, the first violation kills the instance |
//! | [`relay`] | how much may flow? | per-socket send credit and receive window, app EOF and close |
//! | [`action`] | what must the host do? | [`Action`], [`ShimReply`], [`ReplyFd`], [`Note`], [`Violation`] |
//! | [`host`] | what must a host provide? | the host traits and [`Driver::execute`] |
//! | [`errno`] | which errors? | the Linux errno values the driver answers |
//!
//! The messages themselves are [`ins_protocol::msg`]'s: requests to an
//! instance are built as [`OwnedMsg`](ins_protocol::msg::OwnedMsg) (inline
//! payloads, no allocation) and frames from an instance arrive as
//! [`Msg`](ins_protocol::msg::Msg) borrowed from the host's copy.
//!
//! Hot data path: the host relays stream bytes itself. Before reading the
//! app end it asks [`Driver::send_credit`] (how much the instance admits)
//! and afterwards [`Driver::consume_credit`]; for instance `Data` it gets the
//! target socket from [`Driver::instance_frame`] (which checks ownership and
//! the window) and reports the bytes written into the pair with
//! [`Driver::delivered`]. None of these allocate.
//!
//! Invariants:
//! * A socket's driver id (its *handle*, top bit clear) is the wire id of
//!   sockets the driver opened. Accepted connections keep their instance id
//!   on the wire; `by_wire` maps `(instance, id)` to their handle.
//! * A handle is not reused before the instance's `Closed` (or its death).
//! * Every frame from an instance is checked against the tables; the first
//!   violation marks the instance dead ([`Violation`]) — never a panic, and
//!   nothing an instance sends grows a table beyond the credits granted.
//! * The core is single-threaded and reentrant only through its own
//!   `out` vectors: no method calls the host; [`Driver::execute`] is the one
//!   place that does, and it feeds the host's answers back in order.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod accept;
pub mod action;
pub mod bind;
pub mod config;
pub mod connect;
pub mod errno;
pub mod frame;
pub mod host;
pub mod inband;
pub mod instance;
pub mod listener;
pub mod options;
pub mod pending;
pub mod ports;
pub mod relay;
pub mod shim;
pub mod socket;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_inband;
#[cfg(test)]
mod tests_ports;
#[cfg(test)]
mod tests_semantics;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

pub use action::{Action, Note, ReplyFd, ShimReply, Violation};
pub use config::{Config, Placement, SetError, opt};
pub use host::{AppSockets, Host, InstanceLinks, LinkFailed, NoAppSide, NoteSink, ShimReplies};
pub use inband::{InbandStats, Marked};
pub use instance::{InstState, Instance};
pub use socket::{SockState, SocketInfo};

use pending::Pending;
use ports::PortTable;
use socket::Sock;

/// Instance number assigned by the core when an instance joins (never reused).
pub type InstId = u32;
/// Driver socket handle (top bit clear); the wire id of driver-opened sockets.
pub type Handle = u32;
/// A shim connection, numbered by the host.
pub type ConnId = u64;

/// The driver core: the tables below, each owned by the module named.
#[derive(Debug)]
pub struct Driver {
    cfg: Config,
    /// [`instance`]: every instance that ever joined (dead ones stay, so
    /// ids are never reused and a late frame finds its sender dead).
    instances: BTreeMap<InstId, Instance>,
    next_inst: InstId,
    /// [`instance`]: the last instance round-robin placement picked.
    rr: InstId,
    /// [`socket`]: the socket table.
    socks: BTreeMap<Handle, Sock>,
    /// [`socket`]: app-side inode → socket.
    by_inode: BTreeMap<u64, Handle>,
    /// [`socket`]: `(instance, instance-allocated id)` → accepted socket.
    by_wire: BTreeMap<(InstId, u32), Handle>,
    next_handle: Handle,
    /// [`pending`]: requests in flight, by `(instance, request id)`.
    pending: BTreeMap<(InstId, u32), Pending>,
    /// [`ports`]: bound ports of app sockets.
    ports: PortTable,
    /// [`listener`]: listening sockets, replayed onto joining instances.
    listeners: Vec<Handle>,
    /// [`listener`]: listeners the app closed whose replicas some
    /// instance still holds, with their `(type, port)`.
    closing_listeners: Vec<(Handle, (u16, u16))>,
    /// [`listener`]: `listen()` answers held back until the closing
    /// listeners on the same port are gone: `(socket, shim, seq)`.
    held_listens: Vec<(Handle, ConnId, u32)>,
    /// [`action`]: notes for the host, oldest first.
    notes: Vec<Note>,
    /// [`inband`]: counters.
    inband: InbandStats,
    /// [`inband`]: sockets whose relay waits for a record.
    stalled: Vec<Handle>,
}

impl Driver {
    /// An empty driver.
    pub fn new(cfg: Config) -> Driver {
        Driver {
            cfg,
            instances: BTreeMap::new(),
            next_inst: 1,
            rr: 0,
            socks: BTreeMap::new(),
            by_inode: BTreeMap::new(),
            by_wire: BTreeMap::new(),
            pending: BTreeMap::new(),
            ports: PortTable::default(),
            listeners: Vec::new(),
            closing_listeners: Vec::new(),
            held_listens: Vec::new(),
            next_handle: 1,
            notes: Vec::new(),
            inband: InbandStats::default(),
            stalled: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Replaces the configuration while the driver runs (new limits apply
    /// from the next decision: a lower `max_sockets` refuses new sockets,
    /// never closes existing ones). The `window` (every instance's hello
    /// carried it) and `bindv6only` (the sockets made hold it) cannot
    /// change: [`SetError::Fixed`].
    pub fn set_config(&mut self, cfg: Config) -> Result<(), SetError> {
        if cfg.window != self.cfg.window || cfg.bindv6only != self.cfg.bindv6only {
            return Err(SetError::Fixed);
        }
        self.cfg = cfg;
        Ok(())
    }

    /// Events since the last call (for logging), oldest first.
    pub fn take_notes(&mut self, out: &mut Vec<Note>) {
        out.append(&mut self.notes);
    }

    /// The instance table.
    pub fn instances(&self) -> impl Iterator<Item = (InstId, &Instance)> {
        self.instances.iter().map(|(&i, s)| (i, s))
    }

    /// Number of sockets in the table.
    pub fn socket_count(&self) -> usize {
        self.socks.len()
    }

    /// Outstanding requests to instances.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The error `TakeError` would answer for `sock` now (0: none, or no
    /// such socket), without taking it: a host's `poll` reports `POLLERR`
    /// while there is one, as Linux does for `sk_err`.
    pub fn pending_error(&self, sock: Handle) -> i32 {
        self.socks.get(&sock).map_or(0, |s| s.err)
    }

    /// A socket's public description.
    pub fn socket(&self, sock: Handle) -> Option<SocketInfo> {
        self.socks.get(&sock).map(Sock::info)
    }

    /// The socket whose app end has this inode.
    pub fn lookup_inode(&self, inode: u64) -> Option<Handle> {
        self.by_inode.get(&inode).copied()
    }
}
