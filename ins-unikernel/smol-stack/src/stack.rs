//! The [`SmolStack`]: smoltcp's interface and sockets, our socket table,
//! the poll loop and the [`Stack`] implementation (TCP in [`crate::tcp`],
//! UDP in [`crate::udp`]).

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ins_core::Errno;
use ins_core::stack::{Accepted, Family, Readiness, Shutdown, SockType, Stack, TcpCounters};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

use crate::opts::{self, SockOpts};
use crate::ports::{Ports, Proto};
use crate::tcp::TcpState;
use crate::udp::UdpState;

/// The platform's clock and its way to sleep until the device may have
/// received a frame.
pub trait Waiter {
    /// Monotonic nanoseconds.
    fn now_ns(&mut self) -> u64;
    /// Sleeps until the device may have a frame to receive or `timeout_ns`
    /// passed (`None`: no timeout). May return early.
    fn wait(&mut self, timeout_ns: Option<u64>);
    /// Whether the last [`Waiter::wait`] ended because of an event source
    /// outside the stack (another ring of the platform's loop); clears it.
    /// `poll_events` then returns without stack events so that its caller
    /// can look at that source. Default: never.
    fn take_outside_wake(&mut self) -> bool {
        false
    }
}

/// Addresses and limits of a [`SmolStack`].
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Ethernet address.
    pub mac: [u8; 6],
    /// IPv4 address and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// IPv4 default gateway.
    pub gateway4: Option<Ipv4Addr>,
    /// IPv6 address and prefix length.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// IPv6 default gateway.
    pub gateway6: Option<Ipv6Addr>,
    /// Seed of smoltcp's initial sequence numbers and of the first
    /// ephemeral port: give it entropy.
    pub random_seed: u64,
    /// Default TCP receive and send buffer per connection (bytes each).
    pub tcp_buf: usize,
    /// Largest buffer `SO_SNDBUF`/`SO_RCVBUF` may ask for.
    pub max_buf: usize,
    /// UDP payload bytes buffered per direction per socket.
    pub udp_buf: usize,
    /// UDP datagrams buffered per direction per socket.
    pub udp_packets: usize,
    /// Most open handles (`EMFILE` beyond).
    pub max_sockets: usize,
    /// Most listening smoltcp sockets per listener (its accept queue).
    pub listen_pool: usize,
    /// Ephemeral port range (inclusive).
    pub ephemeral_ports: (u16, u16),
    /// How long a TCP connect may take before `ETIMEDOUT`.
    pub connect_timeout_ns: u64,
    /// How long a closed connection may take to finish its FIN exchange
    /// in the background before it is reset.
    pub close_linger_ns: u64,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            mac: [0x02, 0, 0, 0, 0, 1],
            ipv4: None,
            gateway4: None,
            ipv6: None,
            gateway6: None,
            random_seed: 0,
            tcp_buf: 64 * 1024,
            max_buf: 1024 * 1024,
            udp_buf: 64 * 1024,
            udp_packets: 64,
            max_sockets: 1024,
            listen_pool: 8,
            ephemeral_ports: (32768, 60999),
            connect_timeout_ns: 127_000_000_000,
            close_linger_ns: 60_000_000_000,
        }
    }
}

/// Counters of stack-level events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCounters {
    /// Connections handed out by `accept`.
    pub accepted: u64,
    /// Connections reset at close (unread data or `SO_LINGER{1,0}`).
    pub reset_on_close: u64,
    /// Background closes that ran out of time and were reset.
    pub linger_expired: u64,
    /// Connections of the wrong IP version reset at a listener.
    pub wrong_family: u64,
    /// Interface polls.
    pub polls: u64,
}

/// A socket handle: never reused within a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u32);

/// What a handle names.
#[derive(Debug)]
pub(crate) enum Kind {
    Tcp(TcpState),
    Udp(UdpState),
}

/// One handle's socket.
#[derive(Debug)]
pub(crate) struct Sock {
    pub family: Family,
    pub ty: SockType,
    pub opts: SockOpts,
    /// Bound local address (stack form; the IP may be unspecified).
    pub bound: Option<SocketAddr>,
    pub error: Option<Errno>,
    /// Readiness at the last report, minus bits an EAGAIN cleared.
    pub last: Readiness,
    pub kind: Kind,
}

/// A closed connection finishing in the background.
#[derive(Debug)]
pub(crate) struct Closing {
    pub h: SocketHandle,
    pub deadline: u64,
    /// The port binding it keeps until gone: (port, owner).
    pub port: Option<(u16, u32)>,
    pub aborted: bool,
}

/// smoltcp behind [`Stack`]. See the crate docs for the semantics.
pub struct SmolStack<D: Device, W: Waiter> {
    pub(crate) iface: Interface,
    pub(crate) device: D,
    pub(crate) waiter: W,
    pub(crate) sockets: SocketSet<'static>,
    pub(crate) socks: BTreeMap<u32, Sock>,
    pub(crate) next_id: u32,
    pub(crate) ports: Ports,
    pub(crate) closing: Vec<Closing>,
    pub(crate) cfg: StackConfig,
    pub(crate) now: u64,
    pub(crate) counters: StackCounters,
}

/// Sleep when smoltcp keeps asking to be polled at once without progress.
const ZERO_WAIT_BACKOFF_NS: u64 = 100_000;

pub(crate) fn instant(ns: u64) -> Instant {
    Instant::from_micros(i64::try_from(ns / 1000).unwrap_or(i64::MAX))
}

pub(crate) fn clear(r: Readiness, bits: Readiness) -> Readiness {
    Readiness::from_bits_truncate(r.bits() & !bits.bits())
}

impl<D: Device, W: Waiter> SmolStack<D, W> {
    /// A stack on `device` with the addresses of `cfg`.
    pub fn new(cfg: StackConfig, mut device: D, mut waiter: W) -> Self {
        let now = waiter.now_ns();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(cfg.mac)));
        config.random_seed = cfg.random_seed;
        let mut iface = Interface::new(config, &mut device, instant(now));
        iface.update_ip_addrs(|addrs| {
            if let Some((a, len)) = cfg.ipv4 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(a), len));
            }
            if let Some((a, len)) = cfg.ipv6 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(a), len));
            }
        });
        if let Some(gw) = cfg.gateway4 {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        if let Some(gw) = cfg.gateway6 {
            let _ = iface.routes_mut().add_default_ipv6_route(gw);
        }
        let ports = Ports::new(cfg.ephemeral_ports, (cfg.random_seed >> 16) as u16);
        SmolStack {
            iface,
            device,
            waiter,
            sockets: SocketSet::new(Vec::new()),
            socks: BTreeMap::new(),
            next_id: 1,
            ports,
            closing: Vec::new(),
            cfg,
            now,
            counters: StackCounters::default(),
        }
    }

    /// The device (e.g. for its counters).
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The waiter.
    pub fn waiter_mut(&mut self) -> &mut W {
        &mut self.waiter
    }

    /// One line per smoltcp TCP socket (state, queued bytes, peer), for
    /// diagnostics.
    pub fn tcp_states(&self) -> Vec<String> {
        self.sockets
            .iter()
            .filter_map(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => Some(alloc::format!(
                    "{} sendq {} recvq {} peer {:?}",
                    t.state(),
                    t.send_queue(),
                    t.recv_queue(),
                    t.remote_endpoint()
                )),
                _ => None,
            })
            .collect()
    }

    /// Stack-level counters.
    pub fn counters(&self) -> StackCounters {
        self.counters
    }

    /// Open handles.
    pub fn open_handles(&self) -> usize {
        self.socks.len()
    }

    /// smoltcp sockets alive, including those closing in the background.
    pub fn smoltcp_sockets(&self) -> usize {
        self.sockets.iter().count()
    }

    /// Nanoseconds until the stack needs to be polled again (a TCP timer),
    /// `None` when only new frames can change anything. The platform's
    /// loop waits at most this long.
    pub fn poll_delay_ns(&mut self) -> Option<u64> {
        let now = self.waiter.now_ns();
        let mut d = self
            .iface
            .poll_delay(instant(now), &self.sockets)
            .map(|d| d.total_micros().saturating_mul(1000));
        for t in self.internal_deadlines() {
            let left = t.saturating_sub(now);
            d = Some(d.map_or(left, |d| d.min(left)));
        }
        d
    }

    fn internal_deadlines(&self) -> impl Iterator<Item = u64> + '_ {
        self.closing
            .iter()
            .map(|c| c.deadline)
            .chain(self.socks.values().filter_map(|s| match &s.kind {
                Kind::Tcp(TcpState::Conn(c)) if c.connecting => Some(c.connect_deadline),
                _ => None,
            }))
    }

    pub(crate) fn alloc_id(&mut self) -> Result<u32, Errno> {
        if self.socks.len() >= self.cfg.max_sockets {
            return Err(Errno::EMFILE);
        }
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).ok_or(Errno::EMFILE)?;
        Ok(id)
    }

    pub(crate) fn sock(&mut self, h: Handle) -> Result<&mut Sock, Errno> {
        self.socks.get_mut(&h.0).ok_or(Errno::EBADF)
    }

    /// An `EAGAIN` on `h`: the next time `bits` hold they count as gained.
    pub(crate) fn eagain(&mut self, h: Handle, bits: Readiness) -> Errno {
        if let Some(s) = self.socks.get_mut(&h.0) {
            s.last = clear(s.last, bits);
        }
        Errno::EAGAIN
    }

    /// Whether `ip` is an address of the interface (or the wildcard).
    pub(crate) fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_unspecified()
            || self
                .iface
                .ip_addrs()
                .iter()
                .any(|c| IpAddr::from(c.address()) == ip)
    }

    /// Whether `ip` is on a local subnet or a default gateway of its
    /// version is configured (smoltcp itself would pick a source address
    /// and silently drop the packet).
    pub(crate) fn has_route(&self, ip: IpAddr) -> bool {
        let on_link = self
            .iface
            .ip_addrs()
            .iter()
            .any(|c| c.contains_addr(&IpAddress::from(ip)));
        on_link
            || match ip {
                IpAddr::V4(_) => self.cfg.gateway4.is_some(),
                IpAddr::V6(_) => self.cfg.gateway6.is_some(),
            }
    }

    /// Polls the interface and updates every socket's state.
    fn poll_iface(&mut self) {
        self.now = self.waiter.now_ns();
        self.counters.polls += 1;
        self.iface
            .poll(instant(self.now), &mut self.device, &mut self.sockets);
        self.maintain();
    }

    fn maintain(&mut self) {
        let now = self.now;
        let ids: Vec<u32> = self.socks.keys().copied().collect();
        for id in ids {
            self.maintain_tcp(id, now);
        }
        self.maintain_closing(now);
    }

    fn collect(&mut self, out: &mut Vec<(Handle, Readiness)>) {
        for (&id, s) in self.socks.iter_mut() {
            let r = match &s.kind {
                Kind::Tcp(t) => crate::tcp::readiness(t, &self.sockets, s.error.is_some()),
                Kind::Udp(u) => crate::udp::readiness(u, &self.sockets, s.error.is_some()),
            };
            let gained = r.gained_since(s.last);
            s.last = r;
            if !gained.is_empty() {
                out.push((Handle(id), r));
            }
        }
    }
}

impl<D: Device, W: Waiter> Stack for SmolStack<D, W> {
    type Handle = Handle;

    fn open(&mut self, family: Family, ty: SockType) -> Result<Handle, Errno> {
        let family_ok = match family {
            Family::Inet => self.cfg.ipv4.is_some(),
            Family::Inet6 => self.cfg.ipv6.is_some() || self.cfg.ipv4.is_some(),
        };
        if !family_ok {
            return Err(Errno::EAFNOSUPPORT);
        }
        let id = self.alloc_id()?;
        let kind = match ty {
            SockType::Stream => Kind::Tcp(TcpState::Idle),
            SockType::Datagram => Kind::Udp(self.new_udp()),
        };
        self.socks.insert(
            id,
            Sock {
                family,
                ty,
                opts: SockOpts::default(),
                bound: None,
                error: None,
                last: Readiness::EMPTY,
                kind,
            },
        );
        Ok(Handle(id))
    }

    fn bind(&mut self, h: Handle, addr: SocketAddr) -> Result<(), Errno> {
        match self.sock(h)?.ty {
            SockType::Stream => self.tcp_bind(h, addr),
            SockType::Datagram => self.udp_bind(h, addr),
        }
    }

    fn listen(&mut self, h: Handle, backlog: u32) -> Result<(), Errno> {
        match self.sock(h)?.ty {
            SockType::Stream => self.tcp_listen(h, backlog),
            SockType::Datagram => Err(Errno::EOPNOTSUPP),
        }
    }

    fn connect(&mut self, h: Handle, addr: SocketAddr) -> Result<(), Errno> {
        match self.sock(h)?.ty {
            SockType::Stream => self.tcp_connect(h, addr),
            SockType::Datagram => self.udp_connect(h, addr),
        }
    }

    fn accept(&mut self, h: Handle) -> Result<Accepted<Handle>, Errno> {
        match self.sock(h)?.ty {
            SockType::Stream => self.tcp_accept(h),
            SockType::Datagram => Err(Errno::EOPNOTSUPP),
        }
    }

    fn recv(&mut self, h: Handle, buf: &mut [u8]) -> Result<usize, Errno> {
        match self.sock(h)?.ty {
            SockType::Stream => self.tcp_recv(h, buf),
            SockType::Datagram => self.udp_recv_from(h, buf).map(|(n, _)| n),
        }
    }

    fn send(&mut self, h: Handle, buf: &[u8]) -> Result<usize, Errno> {
        match self.sock(h)?.ty {
            SockType::Stream => self.tcp_send(h, buf),
            SockType::Datagram => self.udp_send(h, buf),
        }
    }

    fn recv_from(&mut self, h: Handle, buf: &mut [u8]) -> Result<(usize, SocketAddr), Errno> {
        match self.sock(h)?.ty {
            SockType::Stream => {
                let n = self.tcp_recv(h, buf)?;
                let peer = self.peer_addr(h)?;
                Ok((n, peer))
            }
            SockType::Datagram => self.udp_recv_from(h, buf),
        }
    }

    fn send_to(&mut self, h: Handle, buf: &[u8], dst: SocketAddr) -> Result<usize, Errno> {
        match self.sock(h)?.ty {
            SockType::Stream => Err(Errno::EISCONN),
            SockType::Datagram => self.udp_send_to(h, buf, dst),
        }
    }

    fn shutdown(&mut self, h: Handle, how: Shutdown) -> Result<(), Errno> {
        match self.sock(h)?.ty {
            SockType::Stream => self.tcp_shutdown(h, how),
            SockType::Datagram => match &self.sock(h)?.kind {
                Kind::Udp(u) if u.peer.is_some() => Ok(()),
                _ => Err(Errno::ENOTCONN),
            },
        }
    }

    fn close(&mut self, h: Handle) -> Result<(), Errno> {
        let s = self.socks.remove(&h.0).ok_or(Errno::EBADF)?;
        match s.kind {
            Kind::Tcp(t) => self.tcp_close(h.0, s.opts, s.bound, t),
            Kind::Udp(u) => {
                self.sockets.remove(u.h);
                if let Some(b) = s.bound {
                    self.ports.release(Proto::Udp, b.port(), h.0);
                }
            }
        }
        Ok(())
    }

    fn set_opt(&mut self, h: Handle, level: i32, name: i32, value: &[u8]) -> Result<(), Errno> {
        let max_buf = self.cfg.max_buf;
        let s = self.sock(h)?;
        if level == ins_core::stack::opt::IPPROTO_IPV6 && s.family != Family::Inet6 {
            return Err(Errno::ENOPROTOOPT);
        }
        if level == ins_core::stack::opt::IPPROTO_IPV6 && s.bound.is_some() {
            return Err(Errno::EINVAL);
        }
        let applied = opts::set(&mut s.opts, s.ty, level, name, value, max_buf)?;
        if applied != opts::Applied::Stored {
            self.apply_opts(h);
        }
        Ok(())
    }

    fn get_opt(
        &mut self,
        h: Handle,
        level: i32,
        name: i32,
        out: &mut [u8],
    ) -> Result<usize, Errno> {
        let bufs = self.effective_bufs(h)?;
        let s = self.sock(h)?;
        if level == ins_core::stack::opt::IPPROTO_IPV6 && s.family != Family::Inet6 {
            return Err(Errno::ENOPROTOOPT);
        }
        opts::get(&s.opts, s.ty, level, name, bufs, &mut s.error, out)
    }

    fn local_addr(&self, h: Handle) -> Result<SocketAddr, Errno> {
        let s = self.socks.get(&h.0).ok_or(Errno::EBADF)?;
        let local = match &s.kind {
            Kind::Tcp(TcpState::Conn(c)) => Some(c.local),
            _ => s.bound,
        };
        Ok(local.map_or_else(
            || crate::addr::unspecified(s.family, 0),
            |a| crate::addr::to_user(s.family, a),
        ))
    }

    fn peer_addr(&self, h: Handle) -> Result<SocketAddr, Errno> {
        let s = self.socks.get(&h.0).ok_or(Errno::EBADF)?;
        let peer = match &s.kind {
            Kind::Tcp(TcpState::Conn(c)) if !c.connecting && !c.dead => Some(c.peer),
            Kind::Udp(u) => u.peer,
            _ => None,
        };
        peer.map(|a| crate::addr::to_user(s.family, a))
            .ok_or(Errno::ENOTCONN)
    }

    fn take_error(&mut self, h: Handle) -> Result<Option<Errno>, Errno> {
        Ok(self.sock(h)?.error.take())
    }

    fn tcp_info(&mut self, _h: Handle) -> Option<TcpCounters> {
        None
    }

    fn route_source(&mut self, remote: IpAddr) -> Option<IpAddr> {
        let remote = match remote {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(remote, IpAddr::V4),
            v4 => v4,
        };
        self.iface
            .get_source_address(&IpAddress::from(remote))
            .map(IpAddr::from)
    }

    fn available_congestion(&self, out: &mut Vec<String>) {
        out.extend(opts::CONGESTION.iter().map(|c| c.to_string()));
    }

    fn poll_events(
        &mut self,
        timeout_ns: Option<u64>,
        out: &mut Vec<(Handle, Readiness)>,
    ) -> Result<(), Errno> {
        let start = self.waiter.now_ns();
        let deadline = timeout_ns.map(|t| start.saturating_add(t));
        let mut zero_waits = 0u32;
        loop {
            self.poll_iface();
            let before = out.len();
            self.collect(out);
            if out.len() > before {
                return Ok(());
            }
            let now = self.now;
            if deadline.is_some_and(|d| now >= d) {
                return Ok(());
            }
            let mut wait = deadline.map(|d| d - now);
            if let Some(d) = self.poll_delay_ns() {
                wait = Some(wait.map_or(d, |w| w.min(d)));
            }
            if wait == Some(0) {
                // smoltcp wants to run again at once; if that keeps making
                // no visible progress (e.g. the device cannot transmit),
                // sleep a little instead of spinning.
                zero_waits += 1;
                if zero_waits > 2 {
                    self.waiter.wait(Some(ZERO_WAIT_BACKOFF_NS));
                }
            } else {
                zero_waits = 0;
                self.waiter.wait(wait);
            }
            if self.waiter.take_outside_wake() {
                self.poll_iface();
                self.collect(out);
                return Ok(());
            }
        }
    }
}
