//! TCP sockets: listener pools, connections, their states and errors.

use alloc::vec;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use ins_core::Errno;
use ins_core::stack::{Accepted, Family, Readiness, Shutdown};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp::{self, CongestionControl, State};
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpListenEndpoint};

use crate::addr::{self, Versions};
use crate::opts::SockOpts;
use crate::ports::{Binding, Proto};
use crate::stack::{Closing, Handle, Kind, SmolStack, Sock, Waiter};

/// A TCP handle's state.
#[derive(Debug)]
pub(crate) enum TcpState {
    /// Neither listening nor connected (no smoltcp socket yet, so buffer
    /// options still apply).
    Idle,
    /// A listener with its pool of listening smoltcp sockets.
    Listening {
        pool: Vec<SocketHandle>,
        size: usize,
    },
    /// A connection (connecting, established, or finished).
    Conn(Conn),
}

/// A connection's smoltcp socket and what we learned about it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub h: SocketHandle,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub connecting: bool,
    pub connect_deadline: u64,
    /// The peer's FIN was seen.
    pub fin_seen: bool,
    /// Reset, refused or timed out: no more data either way.
    pub dead: bool,
    pub rd_shut: bool,
    pub wr_shut: bool,
    /// The ephemeral port this connection claimed (released at close).
    pub own_port: bool,
}

fn peer_fin(st: State) -> bool {
    matches!(
        st,
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait
    )
}

/// Readiness of a TCP handle.
pub(crate) fn readiness(t: &TcpState, sockets: &SocketSet<'static>, error: bool) -> Readiness {
    let mut r = Readiness::EMPTY;
    match t {
        TcpState::Idle => {}
        TcpState::Listening { pool, .. } => {
            if pool
                .iter()
                .any(|&h| acceptable(sockets.get::<tcp::Socket>(h).state()))
            {
                r |= Readiness::READABLE;
            }
        }
        TcpState::Conn(c) => {
            let s = sockets.get::<tcp::Socket>(c.h);
            if c.dead {
                r |= Readiness::READABLE
                    | Readiness::WRITABLE
                    | Readiness::READ_CLOSED
                    | Readiness::HANGUP;
            } else if !c.connecting {
                if s.can_recv() || c.rd_shut {
                    r |= Readiness::READABLE;
                }
                if c.fin_seen {
                    r |= Readiness::READABLE | Readiness::READ_CLOSED;
                }
                if s.can_send() && !c.wr_shut {
                    r |= Readiness::WRITABLE;
                }
                if c.fin_seen && (c.wr_shut || s.state() == State::Closed) {
                    r |= Readiness::HANGUP;
                }
            }
        }
    }
    if error {
        r |= Readiness::ERROR | Readiness::READABLE | Readiness::WRITABLE;
    }
    r
}

/// A pool socket whose handshake completed.
fn acceptable(st: State) -> bool {
    !matches!(st, State::Listen | State::SynReceived | State::Closed)
}

impl<D: Device, W: Waiter> SmolStack<D, W> {
    fn new_tcp(&self, o: &SockOpts) -> tcp::Socket<'static> {
        let rx = o.rcvbuf.unwrap_or(self.cfg.tcp_buf);
        let tx = o.sndbuf.unwrap_or(self.cfg.tcp_buf);
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; rx]),
            tcp::SocketBuffer::new(vec![0; tx]),
        );
        apply(o, &mut s);
        s
    }

    /// Applies a changed option to the handle's live smoltcp sockets.
    pub(crate) fn apply_opts(&mut self, h: Handle) {
        let Some(s) = self.socks.get(&h.0) else {
            return;
        };
        let o = s.opts;
        let hs: Vec<SocketHandle> = match &s.kind {
            Kind::Tcp(TcpState::Listening { pool, .. }) => pool.clone(),
            Kind::Tcp(TcpState::Conn(c)) => vec![c.h],
            Kind::Tcp(TcpState::Idle) => Vec::new(),
            Kind::Udp(u) => {
                let hs = u.h;
                self.sockets
                    .get_mut::<smoltcp::socket::udp::Socket>(hs)
                    .set_hop_limit(o.ttl);
                return;
            }
        };
        for sh in hs {
            apply(&o, self.sockets.get_mut::<tcp::Socket>(sh));
        }
    }

    /// The handle's effective `(sndbuf, rcvbuf)`.
    pub(crate) fn effective_bufs(&self, h: Handle) -> Result<(usize, usize), Errno> {
        let s = self.socks.get(&h.0).ok_or(Errno::EBADF)?;
        Ok(match &s.kind {
            Kind::Tcp(TcpState::Conn(c)) => {
                let t = self.sockets.get::<tcp::Socket>(c.h);
                (t.send_capacity(), t.recv_capacity())
            }
            Kind::Udp(u) => {
                let t = self.sockets.get::<smoltcp::socket::udp::Socket>(u.h);
                (t.payload_send_capacity(), t.payload_recv_capacity())
            }
            _ => (
                s.opts.sndbuf.unwrap_or(self.cfg.tcp_buf),
                s.opts.rcvbuf.unwrap_or(self.cfg.tcp_buf),
            ),
        })
    }

    /// Claims a port for `s` (0: ephemeral) on `ip` and records the binding.
    pub(crate) fn claim(
        &mut self,
        proto: Proto,
        owner: u32,
        addr: SocketAddr,
        exhausted: Errno,
    ) -> Result<SocketAddr, Errno> {
        let s = self.socks.get(&owner).ok_or(Errno::EBADF)?;
        let b = Binding {
            owner,
            ip: (!addr.ip().is_unspecified()).then_some(addr.ip()),
            versions: if addr.ip().is_unspecified() {
                Versions::of(s.family, s.opts.v6only)
            } else if addr.is_ipv4() {
                Versions::V4
            } else {
                Versions::V6
            },
            reuse_addr: s.opts.reuse_addr,
            reuse_port: s.opts.reuse_port,
            listening: false,
        };
        let port = self.ports.bind(proto, addr.port(), b, exhausted)?;
        Ok(SocketAddr::new(addr.ip(), port))
    }

    pub(crate) fn tcp_bind(&mut self, h: Handle, addr: SocketAddr) -> Result<(), Errno> {
        let s = self.sock(h)?;
        if s.bound.is_some() || !matches!(s.kind, Kind::Tcp(TcpState::Idle)) {
            return Err(Errno::EINVAL);
        }
        let a = addr::to_stack(s.family, s.opts.v6only, addr, Errno::EINVAL)?;
        if !self.is_local(a.ip()) {
            return Err(Errno::EADDRNOTAVAIL);
        }
        let bound = self.claim(Proto::Tcp, h.0, a, Errno::EADDRINUSE)?;
        self.sock(h)?.bound = Some(bound);
        Ok(())
    }

    pub(crate) fn tcp_listen(&mut self, h: Handle, backlog: u32) -> Result<(), Errno> {
        let s = self.sock(h)?;
        match &s.kind {
            Kind::Tcp(TcpState::Idle) => {}
            Kind::Tcp(TcpState::Listening { .. }) => return Ok(()),
            _ => return Err(Errno::EINVAL),
        }
        if s.bound.is_none() {
            let any = addr::unspecified(s.family, 0);
            let any = addr::to_stack(s.family, false, any, Errno::EINVAL)?;
            let bound = self.claim(Proto::Tcp, h.0, any, Errno::EADDRINUSE)?;
            self.sock(h)?.bound = Some(bound);
        }
        let bound = self.sock(h)?.bound.ok_or(Errno::EINVAL)?;
        self.ports.listen(Proto::Tcp, bound.port(), h.0)?;
        let size = usize::try_from(backlog)
            .unwrap_or(usize::MAX)
            .clamp(1, self.cfg.listen_pool.max(1));
        let (family, o) = {
            let s = self.sock(h)?;
            (s.family, s.opts)
        };
        let mut pool = Vec::with_capacity(size);
        for _ in 0..size {
            pool.push(self.listening_socket(family, &o, bound)?);
        }
        self.sock(h)?.kind = Kind::Tcp(TcpState::Listening { pool, size });
        Ok(())
    }

    /// One socket of a listener's pool. A wildcard listener that takes one
    /// IP version only (an `AF_INET` socket, or `AF_INET6` with
    /// `IPV6_V6ONLY`) listens on this stack's address of that version (or
    /// that version's unspecified address, which matches nothing, when the
    /// stack has none): smoltcp's "any address" would take a SYN of the
    /// other version too, complete the handshake, and leave the accept to
    /// reset it; this way the SYN finds no listener and is refused with a
    /// RST, as on Linux, and next to a listener of the other version on the
    /// same port (nginx's `listen 80; listen [::]:80;`) each SYN reaches
    /// the right one.
    fn listening_socket(
        &mut self,
        family: Family,
        o: &SockOpts,
        bound: SocketAddr,
    ) -> Result<SocketHandle, Errno> {
        let mut t = self.new_tcp(o);
        let addr = if !bound.ip().is_unspecified() {
            Some(IpAddress::from(bound.ip()))
        } else {
            match Versions::of(family, o.v6only) {
                Versions::Both => None,
                Versions::V4 => Some(IpAddress::from(
                    self.cfg.ipv4.map_or(Ipv4Addr::UNSPECIFIED, |(a, _)| a),
                )),
                Versions::V6 => Some(IpAddress::from(
                    self.cfg.ipv6.map_or(Ipv6Addr::UNSPECIFIED, |(a, _)| a),
                )),
            }
        };
        let ep = IpListenEndpoint {
            addr,
            port: bound.port(),
        };
        t.listen(ep).map_err(|_| Errno::EINVAL)?;
        Ok(self.sockets.add(t))
    }

    pub(crate) fn tcp_connect(&mut self, h: Handle, addr: SocketAddr) -> Result<(), Errno> {
        let s = self.sock(h)?;
        match &s.kind {
            Kind::Tcp(TcpState::Idle) => {}
            Kind::Tcp(TcpState::Conn(c)) if c.connecting => return Err(Errno::EALREADY),
            Kind::Tcp(TcpState::Conn(c)) if !c.dead => return Err(Errno::EISCONN),
            Kind::Tcp(TcpState::Conn(_)) => {
                // a failed connect may be retried: drop the old socket
                if let Kind::Tcp(TcpState::Conn(c)) =
                    core::mem::replace(&mut s.kind, Kind::Tcp(TcpState::Idle))
                {
                    self.sockets.remove(c.h);
                    if c.own_port {
                        self.ports.release(Proto::Tcp, c.local.port(), h.0);
                        self.sock(h)?.bound = None;
                    }
                }
            }
            _ => return Err(Errno::EISCONN),
        }
        let s = self.sock(h)?;
        let remote = addr::to_stack(s.family, s.opts.v6only, addr, Errno::EAFNOSUPPORT)?;
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(Errno::ECONNREFUSED);
        }
        let bound = s.bound;
        let o = s.opts;
        if !self.has_route(remote.ip()) {
            return Err(Errno::ENETUNREACH);
        }
        let src = self
            .iface
            .get_source_address(&IpAddress::from(remote.ip()))
            .ok_or(Errno::ENETUNREACH)?;
        let (local_ip, own_port, port) = match bound {
            Some(b) if b.is_ipv4() != remote.is_ipv4() && !b.ip().is_unspecified() => {
                return Err(Errno::EINVAL);
            }
            Some(b) => {
                let ip = if b.ip().is_unspecified() {
                    src.into()
                } else {
                    b.ip()
                };
                (ip, false, b.port())
            }
            None => {
                let a = self.claim(
                    Proto::Tcp,
                    h.0,
                    SocketAddr::new(core::net::IpAddr::from(src), 0),
                    Errno::EADDRNOTAVAIL,
                )?;
                (a.ip(), true, a.port())
            }
        };
        let mut t = self.new_tcp(&o);
        let local_ep = IpListenEndpoint {
            addr: Some(IpAddress::from(local_ip)),
            port,
        };
        if let Err(e) = t.connect(self.iface.context(), remote, local_ep) {
            if own_port {
                self.ports.release(Proto::Tcp, port, h.0);
            }
            return Err(match e {
                tcp::ConnectError::InvalidState => Errno::EISCONN,
                tcp::ConnectError::Unaddressable => Errno::ENETUNREACH,
            });
        }
        let th = self.sockets.add(t);
        let deadline = self
            .waiter
            .now_ns()
            .saturating_add(self.cfg.connect_timeout_ns);
        let s = self.sock(h)?;
        if own_port {
            s.bound = Some(SocketAddr::new(local_ip, port));
        }
        s.kind = Kind::Tcp(TcpState::Conn(Conn {
            h: th,
            local: SocketAddr::new(local_ip, port),
            peer: remote,
            connecting: true,
            connect_deadline: deadline,
            fin_seen: false,
            dead: false,
            rd_shut: false,
            wr_shut: false,
            own_port,
        }));
        Err(Errno::EINPROGRESS)
    }

    pub(crate) fn tcp_accept(&mut self, h: Handle) -> Result<Accepted<Handle>, Errno> {
        loop {
            let s = self.socks.get_mut(&h.0).ok_or(Errno::EBADF)?;
            let (family, o, bound) = (s.family, s.opts, s.bound);
            let Kind::Tcp(TcpState::Listening { pool, .. }) = &mut s.kind else {
                return Err(Errno::EINVAL);
            };
            let Some(i) = pool
                .iter()
                .position(|&ph| acceptable(self.sockets.get::<tcp::Socket>(ph).state()))
            else {
                return Err(self.eagain(h, Readiness::READABLE));
            };
            let th = pool.swap_remove(i);
            let bound = bound.ok_or(Errno::EINVAL)?;
            let fresh = self.listening_socket(family, &o, bound)?;
            if let Some(Sock {
                kind: Kind::Tcp(TcpState::Listening { pool, .. }),
                ..
            }) = self.socks.get_mut(&h.0)
            {
                pool.push(fresh);
            }
            let t = self.sockets.get_mut::<tcp::Socket>(th);
            let (Some(local), Some(peer)) = (t.local_endpoint(), t.remote_endpoint()) else {
                t.abort();
                self.closing.push(Closing {
                    h: th,
                    deadline: self.now,
                    port: None,
                    aborted: true,
                });
                continue;
            };
            let (local, peer) = (SocketAddr::from(local), SocketAddr::from(peer));
            if !Versions::of(family, o.v6only).admits(peer.ip()) {
                t.abort();
                self.counters.wrong_family += 1;
                self.closing.push(Closing {
                    h: th,
                    deadline: self.now,
                    port: None,
                    aborted: true,
                });
                continue;
            }
            let id = match self.alloc_id() {
                Ok(id) => id,
                Err(e) => {
                    self.sockets.get_mut::<tcp::Socket>(th).abort();
                    self.closing.push(Closing {
                        h: th,
                        deadline: self.now,
                        port: None,
                        aborted: true,
                    });
                    return Err(e);
                }
            };
            let st = self.sockets.get::<tcp::Socket>(th).state();
            self.socks.insert(
                id,
                Sock {
                    family,
                    ty: ins_core::stack::SockType::Stream,
                    opts: o,
                    bound: None,
                    error: None,
                    last: Readiness::EMPTY,
                    kind: Kind::Tcp(TcpState::Conn(Conn {
                        h: th,
                        local,
                        peer,
                        connecting: false,
                        connect_deadline: 0,
                        fin_seen: peer_fin(st),
                        dead: false,
                        rd_shut: false,
                        wr_shut: false,
                        own_port: false,
                    })),
                },
            );
            self.counters.accepted += 1;
            return Ok(Accepted {
                handle: Handle(id),
                peer: addr::to_user(family, peer),
                local: addr::to_user(family, local),
            });
        }
    }

    fn conn(&mut self, h: Handle) -> Result<&mut Conn, Errno> {
        match &mut self.sock(h)?.kind {
            Kind::Tcp(TcpState::Conn(c)) => Ok(c),
            _ => Err(Errno::ENOTCONN),
        }
    }

    pub(crate) fn tcp_recv(&mut self, h: Handle, buf: &mut [u8]) -> Result<usize, Errno> {
        if let Some(e) = self.sock(h)?.error.take() {
            return Err(e);
        }
        let c = self.conn(h)?;
        if c.connecting {
            return Err(self.eagain(h, Readiness::READABLE));
        }
        if c.rd_shut || c.dead || buf.is_empty() {
            return Ok(0);
        }
        let th = c.h;
        let t = self.sockets.get_mut::<tcp::Socket>(th);
        if t.can_recv() {
            return t.recv_slice(buf).map_err(|_| Errno::EIO);
        }
        match t.recv_slice(buf) {
            Err(tcp::RecvError::Finished) => {
                self.conn(h)?.fin_seen = true;
                Ok(0)
            }
            _ if peer_fin(t.state()) => {
                self.conn(h)?.fin_seen = true;
                Ok(0)
            }
            _ => Err(self.eagain(h, Readiness::READABLE)),
        }
    }

    pub(crate) fn tcp_send(&mut self, h: Handle, buf: &[u8]) -> Result<usize, Errno> {
        if let Some(e) = self.sock(h)?.error.take() {
            return Err(e);
        }
        let c = match self.conn(h) {
            Ok(c) => c,
            Err(_) => return Err(Errno::ENOTCONN),
        };
        if c.connecting {
            return Err(self.eagain(h, Readiness::WRITABLE));
        }
        if c.wr_shut || c.dead {
            return Err(Errno::EPIPE);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let th = c.h;
        let t = self.sockets.get_mut::<tcp::Socket>(th);
        match t.send_slice(buf) {
            Ok(0) => Err(self.eagain(h, Readiness::WRITABLE)),
            Ok(n) => Ok(n),
            Err(_) => Err(Errno::EPIPE),
        }
    }

    pub(crate) fn tcp_shutdown(&mut self, h: Handle, how: Shutdown) -> Result<(), Errno> {
        let c = self.conn(h)?;
        if c.connecting || c.dead {
            return Err(Errno::ENOTCONN);
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            c.rd_shut = true;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) && !c.wr_shut {
            // FIN goes out once the queued bytes have left (see fin_when_sent)
            c.wr_shut = true;
            let th = c.h;
            fin_when_sent(self.sockets.get_mut::<tcp::Socket>(th));
        }
        Ok(())
    }

    pub(crate) fn tcp_close(
        &mut self,
        owner: u32,
        o: SockOpts,
        bound: Option<SocketAddr>,
        t: TcpState,
    ) {
        let now = self.waiter.now_ns();
        match t {
            TcpState::Idle => {
                if let Some(b) = bound {
                    self.ports.release(Proto::Tcp, b.port(), owner);
                }
            }
            TcpState::Listening { pool, .. } => {
                for ph in pool {
                    let s = self.sockets.get_mut::<tcp::Socket>(ph);
                    if s.state() == State::Listen {
                        self.sockets.remove(ph);
                    } else {
                        // an unaccepted connection: reset, as Linux does
                        s.abort();
                        self.closing.push(Closing {
                            h: ph,
                            deadline: now,
                            port: None,
                            aborted: true,
                        });
                    }
                }
                if let Some(b) = bound {
                    self.ports.release(Proto::Tcp, b.port(), owner);
                }
            }
            TcpState::Conn(c) => {
                let port = bound.map(|b| (b.port(), owner));
                let s = self.sockets.get_mut::<tcp::Socket>(c.h);
                let reset = o.linger_reset() || s.recv_queue() > 0 || c.connecting;
                if reset {
                    s.abort();
                    if !c.connecting {
                        self.counters.reset_on_close += 1;
                    }
                } else {
                    fin_when_sent(s);
                }
                self.closing.push(Closing {
                    h: c.h,
                    deadline: now.saturating_add(self.cfg.close_linger_ns),
                    port,
                    aborted: reset,
                });
            }
        }
    }

    /// Follows a TCP handle's smoltcp state after an interface poll.
    pub(crate) fn maintain_tcp(&mut self, id: u32, now: u64) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        let (family, o, bound) = (s.family, s.opts, s.bound);
        match &mut s.kind {
            Kind::Tcp(TcpState::Listening { pool, size }) => {
                // re-arm pool sockets a handshake left closed
                let mut dead = Vec::new();
                pool.retain(|&ph| {
                    let keep = self.sockets.get::<tcp::Socket>(ph).state() != State::Closed;
                    if !keep {
                        dead.push(ph);
                    }
                    keep
                });
                let missing = size.saturating_sub(pool.len());
                for ph in dead {
                    self.sockets.remove(ph);
                }
                if let Some(b) = bound {
                    for _ in 0..missing {
                        if let Ok(ph) = self.listening_socket(family, &o, b)
                            && let Some(Sock {
                                kind: Kind::Tcp(TcpState::Listening { pool, .. }),
                                ..
                            }) = self.socks.get_mut(&id)
                        {
                            pool.push(ph);
                        }
                    }
                }
            }
            Kind::Tcp(TcpState::Conn(c)) => {
                let t = self.sockets.get_mut::<tcp::Socket>(c.h);
                let st = t.state();
                if c.connecting {
                    if st == State::Closed {
                        c.connecting = false;
                        c.dead = true;
                        s.error = Some(if now >= c.connect_deadline {
                            Errno::ETIMEDOUT
                        } else {
                            Errno::ECONNREFUSED
                        });
                    } else if st != State::SynSent {
                        c.connecting = false;
                        if peer_fin(st) {
                            c.fin_seen = true;
                        }
                    } else if now >= c.connect_deadline {
                        t.abort();
                        c.connecting = false;
                        c.dead = true;
                        s.error = Some(Errno::ETIMEDOUT);
                    }
                    return;
                }
                if c.dead {
                    return;
                }
                if peer_fin(st) {
                    c.fin_seen = true;
                }
                if c.wr_shut {
                    fin_when_sent(t);
                }
                if c.rd_shut && t.can_recv() {
                    // SHUT_RD: what arrives is dropped, keeping the window open
                    let _ = t.recv(|b| (b.len(), ()));
                }
                if st == State::Closed && !(c.fin_seen && c.wr_shut) {
                    // closed without both FINs: a reset (or smoltcp's
                    // user timeout, which also ends in a reset)
                    c.dead = true;
                    s.error = Some(if o.user_timeout_ms > 0 {
                        Errno::ETIMEDOUT
                    } else {
                        Errno::ECONNRESET
                    });
                }
            }
            _ => {}
        }
    }

    /// Removes background closes that finished; resets those out of time.
    pub(crate) fn maintain_closing(&mut self, now: u64) {
        let mut i = 0;
        while i < self.closing.len() {
            let c = &mut self.closing[i];
            let t = self.sockets.get_mut::<tcp::Socket>(c.h);
            let st = t.state();
            let done =
                (st == State::Closed && t.remote_endpoint().is_none()) || st == State::TimeWait;
            if done || (c.aborted && now > c.deadline) {
                let c = self.closing.swap_remove(i);
                self.sockets.remove(c.h);
                if let Some((port, owner)) = c.port {
                    self.ports.release(Proto::Tcp, port, owner);
                }
                continue;
            }
            if !c.aborted {
                fin_when_sent(t);
            }
            if now >= c.deadline && !c.aborted {
                t.abort();
                c.aborted = true;
                self.counters.linger_expired += 1;
            }
            i += 1;
        }
    }
}

/// Sends FIN once the transmit queue is empty. smoltcp can stall with
/// bytes still queued after `close()` (seen in LAST-ACK: data never sent,
/// no timer armed), so the FIN is only requested behind the data, which is
/// also exactly the order Linux gives.
fn fin_when_sent(s: &mut tcp::Socket<'static>) {
    if s.send_queue() == 0
        && matches!(
            s.state(),
            State::Established | State::CloseWait | State::SynReceived
        )
    {
        s.close();
    }
}

/// Applies TCP options to a smoltcp socket.
fn apply(o: &SockOpts, s: &mut tcp::Socket<'static>) {
    s.set_nagle_enabled(!o.nodelay);
    s.set_keep_alive(
        o.keepalive
            .then(|| Duration::from_secs(u64::from(o.keepidle_s))),
    );
    s.set_hop_limit(o.ttl);
    s.set_timeout(
        (o.user_timeout_ms > 0).then(|| Duration::from_millis(u64::from(o.user_timeout_ms))),
    );
    s.set_ack_delay(if o.quickack {
        None
    } else {
        Some(Duration::from_millis(10))
    });
    s.set_congestion_control(CongestionControl::Reno);
}
