//! The socket table: one `Sock` per socket the app holds (and per
//! accepted connection not yet closed), found by its handle, by the inode
//! of its app-side object ([`Driver::lookup_inode`]) or, for accepted
//! connections, by `(instance, id)` on the wire. A socket is born in
//! [`Driver::new_socket`] (the host made its app side first) or when an
//! instance announces a connection ([`accept`](crate::accept)), and ends in
//! `forget`, which unlinks it from every other table.
//!
//! ```text
//!  Fresh ──place──▶ Placed ──listen──▶ Listening
//!    │                 │ connect
//!    │                 ▼
//!    │             Connecting ──Connected──▶ Connected ──Reset/death──▶ Dead
//!    └─ app's last reference gone (any state) ──▶ Closing ──Closed──▶ forgotten
//! ```

use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ins_protocol::msg::{Family, INSTANCE_SOCK_BIT, OptValue, SockType};

use crate::listener::Listener;
use crate::{Action, Driver, Handle, InstId, errno, opt};

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
    /// The app side's identity (the host's inode of it).
    pub inode: u64,
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
    /// Connected: a stream's connection is established, or a datagram
    /// socket has a default peer (its instance's socket is connected).
    pub connected: bool,
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
    pub(crate) opts: Vec<(i32, i32, OptValue)>,
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
    /// In-band option records waiting for their marker ([`inband`](crate::inband)).
    pub(crate) inband: Vec<crate::inband::Record>,
    /// A marker read before its record: the relay waits.
    pub(crate) stalled: Option<crate::inband::Stalled>,
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
            inband: Vec::new(),
            stalled: None,
        }
    }

    pub(crate) fn info(&self) -> SocketInfo {
        SocketInfo {
            inode: self.inode,
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
            connected: match self.ty {
                SockType::Stream => self.state == SockState::Connected,
                SockType::Dgram => self.dgram_connected,
            },
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
    pub(crate) fn remember(&mut self, level: i32, name: i32, value: OptValue, max: usize) -> bool {
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

/// The wildcard address of a family, port 0.
pub(crate) fn unspecified(family: Family) -> SocketAddr {
    match family {
        Family::Inet => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        Family::Inet6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// `AF_INET`/`AF_INET6` as a [`Family`].
fn family_of(domain: i32) -> Option<Family> {
    match domain {
        2 => Some(Family::Inet),
        10 => Some(Family::Inet6),
        _ => None,
    }
}

/// Whether a socket of `family` takes `addr`.
pub(crate) fn addr_fits(family: Family, addr: &SocketAddr) -> bool {
    match family {
        Family::Inet => addr.is_ipv4(),
        // An IPv6 socket takes IPv6 addresses (v4-mapped included).
        Family::Inet6 => addr.is_ipv6(),
    }
}

impl Driver {
    /// `socket()`: the host created the socket's app-side object first
    /// (the daemon: a socket pair, whose app end has inode `inode`).
    /// Returns the new handle or an errno.
    pub fn new_socket(
        &mut self,
        inode: u64,
        domain: i32,
        ty: i32,
        proto: i32,
    ) -> Result<Handle, i32> {
        let family = family_of(domain).ok_or(errno::EAFNOSUPPORT)?;
        let (ty, proto) = match (ty, proto) {
            (1, 0) | (1, 6) => (SockType::Stream, opt::IPPROTO_TCP),
            (2, 0) | (2, 17) => (SockType::Dgram, opt::IPPROTO_UDP),
            (1 | 2, _) => return Err(errno::EPROTONOSUPPORT),
            _ => return Err(errno::ESOCKTNOSUPPORT),
        };
        let h = self.alloc_handle()?;
        self.socks.insert(h, Sock::new(inode, family, ty, proto, h));
        self.by_inode.insert(inode, h);
        Ok(h)
    }

    pub(crate) fn alloc_handle(&mut self) -> Result<Handle, i32> {
        if self.socks.len() >= self.cfg.max_sockets {
            return Err(errno::ENFILE);
        }
        loop {
            let h = self.next_handle;
            self.next_handle = (self.next_handle.wrapping_add(1)) & !INSTANCE_SOCK_BIT;
            if self.next_handle == 0 {
                self.next_handle = 1;
            }
            if !self.socks.contains_key(&h) {
                return Ok(h);
            }
        }
    }

    /// Records the app end inode of a connection announced by
    /// [`Action::NewConnection`] once the host made its app-side object
    /// ([`Driver::execute`] does this with [`AppSockets::new_connection`](crate::AppSockets::new_connection)'s answer).
    pub fn attach_inode(&mut self, sock: Handle, inode: u64) {
        if let Some(s) = self.socks.get_mut(&sock) {
            s.inode = inode;
            self.by_inode.insert(inode, sock);
        }
    }

    /// The host could not create the app side of an announced connection:
    /// drop it (the instance is told to close it).
    pub fn connection_failed(&mut self, sock: Handle, out: &mut Vec<Action>) {
        self.remove_from_queues(sock);
        self.app_eof(sock, true, out);
    }

    /// The end of a socket: unlinked from every table (its queued
    /// connections, if a listener, are closed too); the host drops its side.
    pub(crate) fn forget(&mut self, sock: Handle, out: &mut Vec<Action>) {
        let Some(s) = self.socks.remove(&sock) else {
            return;
        };
        if s.stalled.is_some() {
            self.inband_forget(sock);
        }
        if self.by_inode.get(&s.inode) == Some(&sock) {
            self.by_inode.remove(&s.inode);
        }
        if let (Some(inst), Some(w)) = (s.inst, s.wire_if_accepted()) {
            self.by_wire.remove(&(inst, w));
        }
        if let Some(port) = s.bound_key() {
            self.ports.remove(port, sock);
        }
        if s.listener.is_some() {
            self.listeners.retain(|&l| l != sock);
        }
        self.listener_gone(sock, out);
        if let Some(l) = s.accepted_on
            && let Some(li) = self.socks.get_mut(&l).and_then(|x| x.listener.as_mut())
        {
            li.queue.retain(|&c| c != sock);
        }
        // Connections still queued on a listener that goes away are closed.
        if let Some(li) = s.listener {
            for c in li.queue {
                if let Some(cs) = self.socks.get_mut(&c) {
                    cs.accepted_on = None;
                }
                self.app_eof(c, true, out);
            }
        }
        out.push(Action::Forget { sock });
    }
}
