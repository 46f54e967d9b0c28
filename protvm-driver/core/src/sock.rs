//! One socket record.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::net::SocketAddr;

use ins_protocol::msg::{Family, INSTANCE_SOCK_BIT, SockType};

use crate::{Handle, InstId, Value, opt};

/// Where a socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockState {
    /// Created, on no instance yet.
    Fresh,
    /// Opened on an instance (maybe bound).
    Placed,
    /// A listener (replicated).
    Listening,
    /// A stream connect is under way.
    Connecting,
    /// A connected stream (or an accepted connection).
    Connected,
    /// Reset, failed, or its instance died; the error is recorded.
    Dead,
    /// The app's last reference is gone; waiting for `Closed`.
    Closing,
}

/// Public view of a socket, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketInfo {
    /// State.
    pub state: SockState,
    /// Family.
    pub family: Family,
    /// Type.
    pub ty: SockType,
    /// Instance it lives on (the first replica for listeners).
    pub inst: Option<InstId>,
    /// Instances holding a listener replica.
    pub replicas: Vec<InstId>,
    /// Accepted connections waiting for `accept`.
    pub queued: usize,
    /// Pending error.
    pub err: i32,
    /// Bytes the app may still send before the instance's `Credit`.
    pub send_credit: u32,
    /// Bytes received from the instance and not credited back yet.
    pub recv_inflight: u32,
    /// Bound or local address.
    pub local: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub(crate) struct Listener {
    pub(crate) backlog: u32,
    /// Instance → connection announcements it may still make.
    pub(crate) replicas: BTreeMap<InstId, u32>,
    pub(crate) queue: VecDeque<Handle>,
}

#[derive(Debug, Clone)]
pub(crate) struct Sock {
    pub(crate) inode: u64,
    pub(crate) family: Family,
    pub(crate) ty: SockType,
    pub(crate) proto: i32,
    pub(crate) state: SockState,
    pub(crate) inst: Option<InstId>,
    /// Id on the wire: the handle, or the instance's id for accepted ones.
    pub(crate) wire: u32,
    pub(crate) opts: Vec<(i32, i32, Value)>,
    pub(crate) bound: Option<SocketAddr>,
    pub(crate) bind_pending: bool,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) dgram_connected: bool,
    pub(crate) reuseport_sent: bool,
    pub(crate) err: i32,
    pub(crate) open_err: i32,
    pub(crate) send_credit: u32,
    pub(crate) recv_inflight: u32,
    pub(crate) recv_uncredited: u32,
    pub(crate) eof_sent: bool,
    pub(crate) peer_eof: bool,
    pub(crate) nonblocking_connect: bool,
    pub(crate) connect_reply_pending: bool,
    pub(crate) connect_shim: Option<(u64, u32)>,
    pub(crate) listener: Option<Listener>,
    pub(crate) accepted_on: Option<Handle>,
    pub(crate) close_waits: Vec<InstId>,
    /// Listener replicas being closed on draining instances, with the
    /// accept credit they had left (connections they accepted before the
    /// close are still taken).
    pub(crate) retiring_replicas: Vec<(InstId, u32)>,
}

impl Sock {
    pub(crate) fn new(inode: u64, family: Family, ty: SockType, proto: i32, wire: u32) -> Sock {
        Sock {
            inode,
            family,
            ty,
            proto,
            state: SockState::Fresh,
            inst: None,
            wire,
            opts: Vec::new(),
            bound: None,
            bind_pending: false,
            local: None,
            peer: None,
            dgram_connected: false,
            reuseport_sent: false,
            err: 0,
            open_err: 0,
            send_credit: 0,
            recv_inflight: 0,
            recv_uncredited: 0,
            eof_sent: false,
            peer_eof: false,
            nonblocking_connect: false,
            connect_reply_pending: false,
            connect_shim: None,
            listener: None,
            accepted_on: None,
            close_waits: Vec::new(),
            retiring_replicas: Vec::new(),
        }
    }

    pub(crate) fn info(&self) -> SocketInfo {
        SocketInfo {
            state: self.state,
            family: self.family,
            ty: self.ty,
            inst: self.inst,
            replicas: self
                .listener
                .as_ref()
                .map(|l| l.replicas.keys().copied().collect())
                .unwrap_or_default(),
            queued: self.listener.as_ref().map_or(0, |l| l.queue.len()),
            err: self.err,
            send_credit: self.send_credit,
            recv_inflight: self.recv_inflight,
            local: self.local.or(self.bound),
        }
    }

    pub(crate) fn wire_if_accepted(&self) -> Option<u32> {
        (self.wire & INSTANCE_SOCK_BIT != 0).then_some(self.wire)
    }

    pub(crate) fn bound_key(&self) -> Option<(u16, u16)> {
        self.bound
            .filter(|a| a.port() != 0)
            .map(|a| (self.ty as u16, a.port()))
    }

    /// Whether the app itself set `SO_REUSEPORT` to a non-zero value.
    pub(crate) fn app_reuseport(&self) -> bool {
        self.opts.iter().any(|(l, n, v)| {
            *l == opt::SOL_SOCKET && *n == opt::SO_REUSEPORT && v.as_slice().iter().any(|&b| b != 0)
        })
    }

    /// Whether the app set the `SOL_SOCKET` option `name` to a non-zero value.
    pub(crate) fn app_flag(&self, name: i32) -> bool {
        self.opts.iter().any(|(l, n, v)| {
            *l == opt::SOL_SOCKET && *n == name && v.as_slice().iter().any(|&b| b != 0)
        })
    }

    /// The peer address, for connected sockets only.
    pub(crate) fn peer_known(&self) -> Option<SocketAddr> {
        match (self.ty, self.state) {
            (SockType::Stream, SockState::Connected) => self.peer,
            (SockType::Dgram, _) if self.dgram_connected => self.peer,
            _ => None,
        }
    }

    /// Remembers an option for replay; false if the table is full.
    pub(crate) fn remember(&mut self, level: i32, name: i32, value: Value, max: usize) -> bool {
        if let Some(e) = self
            .opts
            .iter_mut()
            .find(|(l, n, _)| *l == level && *n == name)
        {
            e.2 = value;
            return true;
        }
        if self.opts.len() >= max {
            return false;
        }
        self.opts.push((level, name, value));
        true
    }
}
