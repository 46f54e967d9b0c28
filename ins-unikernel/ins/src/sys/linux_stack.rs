//! [`LinuxStack`]: the [`Stack`] trait on the Linux host stack.
//!
//! Every socket is a non-blocking, close-on-exec kernel socket held as an
//! [`OwnedFd`] in a slab; its [`SockHandle`] is the slab index, reused only
//! after [`Stack::close`]. One epoll set watches them all, edge-triggered for
//! `EPOLLIN | EPOLLOUT | EPOLLRDHUP`, which is exactly the edge-like event
//! contract of [`ins_core::stack`]: an operation that returned `EAGAIN` is
//! followed by an edge once the kernel's readiness changes, and a drained
//! socket is not reported again until it gains a new edge.
//!
//! Registration time: UDP sockets and accepted connections are registered
//! when created. A TCP socket is registered by its first successful `listen`
//! or by `connect` (returning `Ok`, `EINPROGRESS` or `EALREADY`): a fresh
//! TCP socket is in state `CLOSE`, which epoll reports as `EPOLLHUP`, and the
//! executor must not mistake that for a hang-up. Nothing on an unconnected,
//! non-listening TCP socket can return `EAGAIN`, so no wake-up is lost.
//!
//! The same epoll set also watches a few non-socket descriptors for the
//! binary (the ring doorbell, the driver's control socket, a signalfd; see
//! [`LinuxStack::watch`]) under reserved tokens, so one `epoll_wait` covers
//! everything; [`LinuxStack::poll`] returns them as [`WakeFlags`].
//!
//! Errors are the raw Linux errno of the failing call. Socket options pass
//! `(level, name, bytes)` straight to `setsockopt`/`getsockopt`, capped at
//! [`OPT_LEN_CAP`] bytes. `send`/`send_to` use `MSG_NOSIGNAL`, so a closed
//! peer yields `EPIPE`, never `SIGPIPE`.
//!
//! Size: over 800 lines, about half tests; it is the one place that turns the
//! `Stack` trait into Linux socket calls (and their errnos).
#![deny(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use ins_core::Errno;
use ins_core::stack::{Accepted, Family, PktInfo, Readiness, SockType, Stack, TcpCounters, opt};
use rustix::event::epoll;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use super::raw;
pub use super::raw::OPT_LEN_CAP;

/// Names a socket of a [`LinuxStack`]: its slab index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct SockHandle(u32);

impl SockHandle {
    /// The slab index (for logs).
    pub fn index(self) -> u32 {
        self.0
    }
}

/// A non-socket descriptor watched by the stack's epoll set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    /// The ring doorbell (an eventfd): level-triggered readable.
    Doorbell,
    /// The driver's control socket: hang-up / peer shutdown only.
    Control,
    /// A signalfd: level-triggered readable.
    Signal,
}

impl Watch {
    fn token(self) -> u64 {
        match self {
            Watch::Doorbell => u64::MAX,
            Watch::Control => u64::MAX - 1,
            Watch::Signal => u64::MAX - 2,
        }
    }
}

/// What besides socket readiness a [`LinuxStack::poll`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WakeFlags {
    /// The doorbell is readable (drain it, then look at the ring).
    pub doorbell: bool,
    /// The control socket hung up or has an error: the driver is gone.
    pub control_hup: bool,
    /// The signalfd is readable.
    pub signal: bool,
}

impl WakeFlags {
    fn merge(&mut self, other: WakeFlags) {
        self.doorbell |= other.doorbell;
        self.control_hup |= other.control_hup;
        self.signal |= other.signal;
    }
}

/// One open socket.
#[derive(Debug)]
struct Sock {
    fd: OwnedFd,
    ty: SockType,
    /// In the epoll set (see the module docs for when).
    registered: bool,
}

/// A slab slot: an open socket, or a link in the free list.
#[derive(Debug)]
enum Slot {
    Open(Sock),
    Free { next: u32 },
}

/// End of the free list.
const NIL: u32 = u32::MAX;

/// Default size of the preallocated epoll event array.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// The edge-triggered interest every socket is registered with.
fn socket_interest() -> epoll::EventFlags {
    epoll::EventFlags::IN
        | epoll::EventFlags::OUT
        | epoll::EventFlags::RDHUP
        | epoll::EventFlags::ET
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

fn io_errno(e: &io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(Errno::EIO.0))
}

fn to_std(addr: rustix::net::SocketAddrAny) -> Result<SocketAddr, Errno> {
    SocketAddr::try_from(addr).map_err(|_| Errno::EAFNOSUPPORT)
}

/// Converts epoll flags to [`Readiness`]. `EPOLLRDHUP` also sets
/// `READABLE` (the read returns EOF); `EPOLLHUP` sets `HANGUP` and
/// `READABLE`; `EPOLLERR` sets `ERROR` and both `READABLE` and `WRITABLE`
/// (the next operation reports the error, as does `take_error`).
pub fn readiness_of(flags: epoll::EventFlags) -> Readiness {
    let mut r = Readiness::EMPTY;
    if flags.contains(epoll::EventFlags::IN) {
        r |= Readiness::READABLE;
    }
    if flags.contains(epoll::EventFlags::OUT) {
        r |= Readiness::WRITABLE;
    }
    if flags.contains(epoll::EventFlags::RDHUP) {
        r |= Readiness::READ_CLOSED | Readiness::READABLE;
    }
    if flags.contains(epoll::EventFlags::HUP) {
        r |= Readiness::HANGUP | Readiness::READ_CLOSED | Readiness::READABLE;
    }
    if flags.contains(epoll::EventFlags::ERR) {
        r |= Readiness::ERROR | Readiness::READABLE | Readiness::WRITABLE;
    }
    r
}

/// The Linux host stack: non-blocking sockets in a slab plus one epoll set.
pub struct LinuxStack {
    epoll: OwnedFd,
    slots: Vec<Slot>,
    free_head: u32,
    open: usize,
    max_sockets: usize,
    /// Preallocated `epoll_wait` output; never grows.
    events: Vec<epoll::Event>,
    /// Wake flags seen by [`Stack::poll_events`], for [`LinuxStack::take_wake`].
    pending_wake: WakeFlags,
}

impl std::fmt::Debug for LinuxStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxStack")
            .field("open", &self.open)
            .field("max_sockets", &self.max_sockets)
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// The `tcp_info` fields the instance reads, as byte offsets into the
/// kernel's `struct tcp_info` (Linux uapi `linux/tcp.h`; layout stable and
/// append-only since 4.2, where `tcpi_segs_out`/`tcpi_segs_in` were added).
mod tcpi {
    /// `__u8 tcpi_state`.
    pub const STATE: usize = 0;
    /// `__u32 tcpi_rtt` (microseconds).
    pub const RTT: usize = 68;
    /// `__u32 tcpi_snd_cwnd` (segments).
    pub const SND_CWND: usize = 80;
    /// `__u32 tcpi_total_retrans`.
    pub const TOTAL_RETRANS: usize = 100;
    /// `__u32 tcpi_segs_out`.
    pub const SEGS_OUT: usize = 136;
    /// `__u32 tcpi_segs_in`.
    pub const SEGS_IN: usize = 140;
    /// Bytes needed to cover every field above.
    pub const MIN_LEN: usize = 144;
    /// `__u64 tcpi_bytes_acked` (Linux 4.1).
    pub const BYTES_ACKED: usize = 120;
    /// `__u32 tcpi_notsent_bytes` (Linux 4.6).
    pub const NOTSENT: usize = 144;
    /// `__u64 tcpi_rwnd_limited` (microseconds, Linux 4.18).
    pub const RWND_LIMITED: usize = 176;
    /// `__u32 tcpi_snd_wnd`: the peer's advertised window in bytes
    /// (Linux 5.4).
    pub const SND_WND: usize = 228;
    /// `TCP_LISTEN` in `tcpi_state`.
    pub const STATE_LISTEN: u8 = 10;
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_ne_bytes)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    match b.get(off..off + 4) {
        Some(&[a, b, c, d]) => u32::from_ne_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Parses the counters out of a `TCP_INFO` value of `len` valid bytes.
/// `None` if too short for `tcpi_segs_in`, or the socket is a listener.
pub fn parse_tcp_info(b: &[u8]) -> Option<TcpCounters> {
    if b.len() < tcpi::MIN_LEN || b[tcpi::STATE] == tcpi::STATE_LISTEN {
        return None;
    }
    Some(TcpCounters {
        segs_in: u32_at(b, tcpi::SEGS_IN).into(),
        segs_out: u32_at(b, tcpi::SEGS_OUT).into(),
        retrans: u32_at(b, tcpi::TOTAL_RETRANS).into(),
        rtt_us: u32_at(b, tcpi::RTT),
        cwnd: u32_at(b, tcpi::SND_CWND),
        bytes_acked: u64_at(b, tcpi::BYTES_ACKED),
        rwnd_limited_us: u64_at(b, tcpi::RWND_LIMITED),
        // Older kernels return a shorter struct: no window then.
        peer_window: (b.len() >= tcpi::SND_WND + 4).then(|| u32_at(b, tcpi::SND_WND)),
        notsent: u32_at(b, tcpi::NOTSENT),
    })
}

impl LinuxStack {
    /// A stack holding at most `max_sockets` sockets, with the default
    /// event array.
    pub fn new(max_sockets: usize) -> io::Result<LinuxStack> {
        Self::with_event_capacity(max_sockets, DEFAULT_EVENT_CAPACITY)
    }

    /// A stack holding at most `max_sockets` sockets, reporting at most
    /// `events` readiness events per `epoll_wait`.
    pub fn with_event_capacity(max_sockets: usize, events: usize) -> io::Result<LinuxStack> {
        if max_sockets == 0 || max_sockets >= NIL as usize || events == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(LinuxStack {
            epoll,
            slots: Vec::new(),
            free_head: NIL,
            open: 0,
            max_sockets,
            events: Vec::with_capacity(events),
            pending_wake: WakeFlags::default(),
        })
    }

    /// Sockets open now.
    pub fn open_count(&self) -> usize {
        self.open
    }

    /// The socket limit.
    pub fn max_sockets(&self) -> usize {
        self.max_sockets
    }

    /// Bytes held by the socket table itself (slab slots, including free
    /// ones) and the event array: the stack's own memory, not the kernel's.
    pub fn table_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Slot>()
            + self.events.capacity() * size_of::<epoll::Event>()
    }

    /// Bytes of one slab slot.
    pub const SLOT_BYTES: usize = size_of::<Slot>();

    /// Adds a non-socket descriptor to the epoll set under `what`'s reserved
    /// token. The descriptor must stay open while watched (closing it
    /// removes it from the set); [`LinuxStack::unwatch`] removes it early.
    pub fn watch(&mut self, fd: BorrowedFd<'_>, what: Watch) -> io::Result<()> {
        let flags = match what {
            // Edge-triggered: each notify is an event of its own, so the
            // doorbell's eventfd never needs reading.
            Watch::Doorbell => epoll::EventFlags::IN | epoll::EventFlags::ET,
            Watch::Signal => epoll::EventFlags::IN,
            // HUP and ERR are always reported; RDHUP catches a shutdown.
            Watch::Control => epoll::EventFlags::RDHUP,
        };
        epoll::add(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(what.token()),
            flags,
        )?;
        Ok(())
    }

    /// Removes a descriptor added by [`LinuxStack::watch`].
    pub fn unwatch(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        epoll::delete(&self.epoll, fd)?;
        Ok(())
    }

    /// Waits up to `timeout_ns` (`None`: forever, `Some(0)`: not at all) for
    /// socket readiness or a watched descriptor; appends socket events to
    /// `out` and returns the watched ones (plus any seen earlier by
    /// [`Stack::poll_events`] and not yet taken). `EINTR` is returned as an
    /// empty wake-up.
    pub fn poll(
        &mut self,
        timeout_ns: Option<u64>,
        out: &mut Vec<(SockHandle, Readiness)>,
    ) -> Result<WakeFlags, Errno> {
        let mut wake = self.take_wake();
        let ts = timeout_ns.map(|ns| rustix::time::Timespec {
            tv_sec: (ns / 1_000_000_000).try_into().unwrap_or(i64::MAX),
            tv_nsec: (ns % 1_000_000_000) as _,
        });
        self.events.clear();
        match epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(&mut self.events),
            ts.as_ref(),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(wake),
            Err(e) => return Err(errno(e)),
        }
        for ev in &self.events {
            // Copy the fields out (the struct is packed on x86-64).
            let flags = ev.flags;
            let token = ev.data.u64();
            if token == Watch::Doorbell.token() {
                wake.doorbell = true;
            } else if token == Watch::Control.token() {
                if flags.intersects(
                    epoll::EventFlags::HUP | epoll::EventFlags::RDHUP | epoll::EventFlags::ERR,
                ) {
                    wake.control_hup = true;
                }
            } else if token == Watch::Signal.token() {
                wake.signal = true;
            } else if let Ok(i) = u32::try_from(token)
                && matches!(self.slots.get(i as usize), Some(Slot::Open(_)))
            {
                let r = readiness_of(flags);
                if !r.is_empty() {
                    out.push((SockHandle(i), r));
                }
            }
        }
        Ok(wake)
    }

    /// Takes the wake flags that [`Stack::poll_events`] saw and could not
    /// return.
    pub fn take_wake(&mut self) -> WakeFlags {
        std::mem::take(&mut self.pending_wake)
    }

    fn sock(&self, h: SockHandle) -> Result<&Sock, Errno> {
        match self.slots.get(h.0 as usize) {
            Some(Slot::Open(s)) => Ok(s),
            _ => Err(Errno::EBADF),
        }
    }

    fn fd(&self, h: SockHandle) -> Result<BorrowedFd<'_>, Errno> {
        Ok(self.sock(h)?.fd.as_fd())
    }

    /// The socket's descriptor, for diagnostics and tests.
    pub fn raw_fd(&self, h: SockHandle) -> Result<BorrowedFd<'_>, Errno> {
        self.fd(h)
    }

    fn has_room(&self) -> bool {
        self.open < self.max_sockets
    }

    /// Stores `fd`, registering it now if `register`.
    fn insert(&mut self, fd: OwnedFd, ty: SockType, register: bool) -> Result<SockHandle, Errno> {
        if !self.has_room() {
            return Err(Errno::EMFILE);
        }
        let index = if self.free_head != NIL {
            self.free_head
        } else {
            // open < max_sockets < NIL, and every slot below len is open or
            // free, so len < NIL here.
            self.slots.len() as u32
        };
        if register {
            epoll::add(
                &self.epoll,
                &fd,
                epoll::EventData::new_u64(index.into()),
                socket_interest(),
            )
            .map_err(errno)?;
        }
        let sock = Slot::Open(Sock {
            fd,
            ty,
            registered: register,
        });
        if index == self.free_head {
            let next = match &self.slots[index as usize] {
                Slot::Free { next } => *next,
                Slot::Open(_) => NIL,
            };
            self.free_head = next;
            self.slots[index as usize] = sock;
        } else {
            self.slots.push(sock);
        }
        self.open += 1;
        Ok(SockHandle(index))
    }

    /// Registers a TCP socket at listen/connect time.
    fn ensure_registered(&mut self, h: SockHandle) -> Result<(), Errno> {
        let epfd = &self.epoll;
        match self.slots.get_mut(h.0 as usize) {
            Some(Slot::Open(s)) if !s.registered => {
                epoll::add(
                    epfd,
                    &s.fd,
                    epoll::EventData::new_u64(h.0.into()),
                    socket_interest(),
                )
                .map_err(errno)?;
                s.registered = true;
                Ok(())
            }
            Some(Slot::Open(_)) => Ok(()),
            _ => Err(Errno::EBADF),
        }
    }
}

impl Stack for LinuxStack {
    type Handle = SockHandle;

    fn open(&mut self, family: Family, ty: SockType) -> Result<SockHandle, Errno> {
        if !self.has_room() {
            return Err(Errno::EMFILE);
        }
        let af = match family {
            Family::Inet => AddressFamily::INET,
            Family::Inet6 => AddressFamily::INET6,
        };
        let st = match ty {
            SockType::Stream => SocketType::STREAM,
            SockType::Datagram => SocketType::DGRAM,
        };
        let fd =
            rustix::net::socket_with(af, st, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC, None)
                .map_err(errno)?;
        // UDP sockets never report a misleading state: register now.
        self.insert(fd, ty, ty == SockType::Datagram)
    }

    fn bind(&mut self, h: SockHandle, addr: SocketAddr) -> Result<(), Errno> {
        rustix::net::bind(self.fd(h)?, &addr).map_err(errno)
    }

    fn listen(&mut self, h: SockHandle, backlog: u32) -> Result<(), Errno> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        rustix::net::listen(self.fd(h)?, backlog).map_err(errno)?;
        self.ensure_registered(h)
    }

    fn connect(&mut self, h: SockHandle, addr: SocketAddr) -> Result<(), Errno> {
        let r = rustix::net::connect(self.fd(h)?, &addr).map_err(errno);
        match r {
            Ok(()) | Err(Errno::EINPROGRESS) | Err(Errno::EALREADY) => {
                self.ensure_registered(h)?;
            }
            Err(_) => {}
        }
        r
    }

    fn accept(&mut self, h: SockHandle) -> Result<Accepted<SockHandle>, Errno> {
        let listener = self.fd(h)?;
        // Leave the connection in the kernel's backlog when there is no
        // slot for it.
        if !self.has_room() {
            return Err(Errno::EMFILE);
        }
        // Errors that concern only the connection being accepted (man 2
        // accept: treat like EAGAIN and retry). Each consumes one pending
        // connection, so the loop ends; it is capped anyway.
        let mut tries = 0;
        let (fd, peer) = loop {
            match rustix::net::acceptfrom_with(
                listener,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            ) {
                Ok(x) => break x,
                Err(
                    e @ (rustix::io::Errno::CONNABORTED
                    | rustix::io::Errno::PROTO
                    | rustix::io::Errno::NETDOWN
                    | rustix::io::Errno::HOSTDOWN
                    | rustix::io::Errno::NONET
                    | rustix::io::Errno::HOSTUNREACH
                    | rustix::io::Errno::NETUNREACH),
                ) if tries < 1024 => {
                    tracing::debug!("accept on {h:?}: {e}; trying the next connection");
                    tries += 1;
                }
                Err(e) => return Err(errno(e)),
            }
        };
        let peer = match peer {
            Some(p) => to_std(p)?,
            None => to_std(
                rustix::net::getpeername(&fd)
                    .map_err(errno)?
                    .ok_or(Errno::ENOTCONN)?,
            )?,
        };
        let local = to_std(rustix::net::getsockname(&fd).map_err(errno)?)?;
        let handle = self.insert(fd, SockType::Stream, true)?;
        Ok(Accepted {
            handle,
            peer,
            local,
        })
    }

    fn recv(&mut self, h: SockHandle, buf: &mut [u8]) -> Result<usize, Errno> {
        let (n, _) = rustix::net::recv(self.fd(h)?, buf, RecvFlags::empty()).map_err(errno)?;
        Ok(n)
    }

    fn send(&mut self, h: SockHandle, buf: &[u8]) -> Result<usize, Errno> {
        rustix::net::send(self.fd(h)?, buf, SendFlags::NOSIGNAL).map_err(errno)
    }

    fn recv_from(&mut self, h: SockHandle, buf: &mut [u8]) -> Result<(usize, SocketAddr), Errno> {
        let fd = self.fd(h)?;
        let (n, _, from) = rustix::net::recvfrom(fd, buf, RecvFlags::empty()).map_err(errno)?;
        let from = match from {
            Some(a) => to_std(a)?,
            None => self.peer_addr(h)?,
        };
        Ok((n, from))
    }

    fn send_to(&mut self, h: SockHandle, buf: &[u8], dst: SocketAddr) -> Result<usize, Errno> {
        rustix::net::sendto(self.fd(h)?, buf, SendFlags::NOSIGNAL, &dst).map_err(errno)
    }

    fn recv_from_info(
        &mut self,
        h: SockHandle,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr, PktInfo), Errno> {
        let (n, from, info) = raw::recvmsg_pktinfo(self.fd(h)?, buf).map_err(|e| io_errno(&e))?;
        let from = match from {
            Some(a) => a,
            None => self.peer_addr(h)?,
        };
        Ok((n, from, info))
    }

    fn send_to_info(
        &mut self,
        h: SockHandle,
        buf: &[u8],
        dst: SocketAddr,
        info: &PktInfo,
    ) -> Result<usize, Errno> {
        if info.is_none() {
            return self.send_to(h, buf, dst);
        }
        raw::sendmsg_pktinfo(self.fd(h)?, buf, dst, info).map_err(|e| io_errno(&e))
    }

    fn shutdown(&mut self, h: SockHandle, how: ins_core::stack::Shutdown) -> Result<(), Errno> {
        use ins_core::stack::Shutdown as S;
        let how = match how {
            S::Read => rustix::net::Shutdown::Read,
            S::Write => rustix::net::Shutdown::Write,
            S::Both => rustix::net::Shutdown::Both,
        };
        rustix::net::shutdown(self.fd(h)?, how).map_err(errno)
    }

    fn close(&mut self, h: SockHandle) -> Result<(), Errno> {
        let i = h.0 as usize;
        if !matches!(self.slots.get(i), Some(Slot::Open(_))) {
            return Err(Errno::EBADF);
        }
        // Dropping the only descriptor of the socket also removes it from
        // the epoll set.
        let old = std::mem::replace(
            &mut self.slots[i],
            Slot::Free {
                next: self.free_head,
            },
        );
        self.free_head = h.0;
        self.open -= 1;
        drop(old);
        Ok(())
    }

    fn set_opt(&mut self, h: SockHandle, level: i32, name: i32, value: &[u8]) -> Result<(), Errno> {
        raw::setsockopt(self.fd(h)?, level, name, value).map_err(|e| io_errno(&e))
    }

    fn get_opt(
        &mut self,
        h: SockHandle,
        level: i32,
        name: i32,
        out: &mut [u8],
    ) -> Result<usize, Errno> {
        raw::getsockopt(self.fd(h)?, level, name, out).map_err(|e| io_errno(&e))
    }

    fn local_addr(&self, h: SockHandle) -> Result<SocketAddr, Errno> {
        to_std(rustix::net::getsockname(self.fd(h)?).map_err(errno)?)
    }

    fn peer_addr(&self, h: SockHandle) -> Result<SocketAddr, Errno> {
        let a = rustix::net::getpeername(self.fd(h)?).map_err(errno)?;
        to_std(a.ok_or(Errno::ENOTCONN)?)
    }

    fn short_read_is_eagain(&self) -> bool {
        // Edge-triggered epoll: every segment that arrives after the read
        // is a new edge.
        true
    }

    fn take_error(&mut self, h: SockHandle) -> Result<Option<Errno>, Errno> {
        match rustix::net::sockopt::socket_error(self.fd(h)?).map_err(errno)? {
            Ok(()) => Ok(None),
            Err(e) => Ok(Some(errno(e))),
        }
    }

    fn tcp_info(&mut self, h: SockHandle) -> Option<TcpCounters> {
        let s = self.sock(h).ok()?;
        if s.ty != SockType::Stream {
            return None;
        }
        let mut buf = [0u8; 256];
        let n = raw::getsockopt(s.fd.as_fd(), opt::IPPROTO_TCP, opt::TCP_INFO, &mut buf).ok()?;
        parse_tcp_info(&buf[..n])
    }

    fn route_source(&mut self, remote: IpAddr) -> Option<IpAddr> {
        if remote.is_unspecified() {
            return None;
        }
        let af = match remote {
            IpAddr::V4(_) => AddressFamily::INET,
            IpAddr::V6(_) => AddressFamily::INET6,
        };
        // A connected UDP socket sends nothing, but the kernel picks its
        // route and source address at connect time.
        let probe =
            rustix::net::socket_with(af, SocketType::DGRAM, SocketFlags::CLOEXEC, None).ok()?;
        rustix::net::connect(&probe, &SocketAddr::new(remote, 9)).ok()?;
        let local = to_std(rustix::net::getsockname(&probe).ok()?).ok()?;
        Some(local.ip())
    }

    fn available_congestion(&self, out: &mut Vec<String>) {
        match std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control") {
            Ok(s) => out.extend(s.split_whitespace().map(str::to_owned)),
            Err(e) => tracing::warn!("cannot read the available congestion controls: {e}"),
        }
    }

    fn poll_events(
        &mut self,
        timeout_ns: Option<u64>,
        out: &mut Vec<(SockHandle, Readiness)>,
    ) -> Result<(), Errno> {
        let wake = self.poll(timeout_ns, out)?;
        self.pending_wake.merge(wake);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ins_core::stack::{Shutdown, int_opt, parse_int_opt};
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    const MS: u64 = 1_000_000;

    /// Polls until every `(h, want)` has been reported with a bit of `want`
    /// (2 s at most); returns everything reported for each meanwhile.
    fn wait_all(s: &mut LinuxStack, wants: &[(SockHandle, Readiness)]) -> Vec<Readiness> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut seen = vec![Readiness::EMPTY; wants.len()];
        let mut out = Vec::new();
        while Instant::now() < deadline {
            out.clear();
            s.poll_events(Some(100 * MS), &mut out).unwrap();
            for &(hh, r) in &out {
                for (i, &(h, _)) in wants.iter().enumerate() {
                    if hh == h {
                        seen[i] |= r;
                    }
                }
            }
            if wants.iter().zip(&seen).all(|(&(_, w), r)| r.intersects(w)) {
                return seen;
            }
        }
        panic!("not all of {wants:?} reported (saw {seen:?})");
    }

    fn wait_for(s: &mut LinuxStack, h: SockHandle, want: Readiness) -> Readiness {
        wait_all(s, &[(h, want)])[0]
    }

    /// Readiness reported for `h` by one non-blocking poll.
    fn poll_now(s: &mut LinuxStack, h: SockHandle) -> Readiness {
        let mut out = Vec::new();
        s.poll_events(Some(0), &mut out).unwrap();
        out.iter()
            .filter(|(x, _)| *x == h)
            .fold(Readiness::EMPTY, |a, (_, r)| a | *r)
    }

    fn listener(s: &mut LinuxStack, addr: &str) -> (SockHandle, SocketAddr) {
        let addr: SocketAddr = addr.parse().unwrap();
        let l = s.open(Family::of(&addr), SockType::Stream).unwrap();
        s.bind(l, addr).unwrap();
        s.listen(l, 16).unwrap();
        let at = s.local_addr(l).unwrap();
        assert_ne!(at.port(), 0);
        (l, at)
    }

    /// A connected pair inside one stack: (client, server side).
    fn pair(s: &mut LinuxStack, addr: &str) -> (SockHandle, SockHandle, SockHandle) {
        let (l, at) = listener(s, addr);
        let c = s.open(Family::of(&at), SockType::Stream).unwrap();
        match s.connect(c, at) {
            Ok(()) | Err(Errno::EINPROGRESS) => {}
            Err(e) => panic!("connect: {e:?}"),
        }
        // Both edges may come in one poll: wait for them together.
        wait_all(s, &[(l, Readiness::READABLE), (c, Readiness::WRITABLE)]);
        let a = s.accept(l).unwrap();
        assert_eq!(a.local, at);
        assert_eq!(a.peer, s.local_addr(c).unwrap());
        assert_eq!(s.take_error(c), Ok(None));
        assert_eq!(s.peer_addr(c), Ok(at));
        (l, c, a.handle)
    }

    fn tcp_round_trip(addr: &str) {
        let mut s = LinuxStack::new(16).unwrap();
        let (l, c, a) = pair(&mut s, addr);
        assert_eq!(s.accept(l).unwrap_err(), Errno::EAGAIN);
        let mut buf = [0u8; 64];
        assert_eq!(s.recv(a, &mut buf), Err(Errno::EAGAIN));
        assert_eq!(s.send(c, b"hello"), Ok(5));
        assert!(wait_for(&mut s, a, Readiness::READABLE).contains(Readiness::READABLE));
        assert_eq!(s.recv(a, &mut buf), Ok(5));
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(s.recv(a, &mut buf), Err(Errno::EAGAIN));
        // Half-close: the server reads EOF, and can still answer.
        s.shutdown(c, Shutdown::Write).unwrap();
        assert!(wait_for(&mut s, a, Readiness::READ_CLOSED).contains(Readiness::READABLE));
        assert_eq!(s.recv(a, &mut buf), Ok(0));
        assert_eq!(s.send(a, b"bye"), Ok(3));
        wait_for(&mut s, c, Readiness::READABLE);
        assert_eq!(s.recv(c, &mut buf), Ok(3));
        assert_eq!(s.send(c, b"x"), Err(Errno::EPIPE));
        s.close(a).unwrap();
        s.close(c).unwrap();
        s.close(l).unwrap();
        assert_eq!(s.open_count(), 0);
    }

    #[test]
    fn tcp_ipv4_listen_connect_accept_send_recv_eof() {
        tcp_round_trip("127.0.0.1:0");
    }

    #[test]
    fn tcp_ipv6_listen_connect_accept_send_recv_eof() {
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("no IPv6 loopback here; skipping");
            return;
        }
        tcp_round_trip("[::1]:0");
    }

    #[test]
    fn edge_triggered_reports_after_eagain_and_not_busily() {
        let mut s = LinuxStack::new(16).unwrap();
        let (_l, c, a) = pair(&mut s, "127.0.0.1:0");
        let mut buf = [0u8; 16];
        assert_eq!(s.recv(a, &mut buf), Err(Errno::EAGAIN));
        // Drain whatever edges are queued; then nothing more is reported
        // for `a` while nothing changes (no busy reporting).
        poll_now(&mut s, a);
        assert!(poll_now(&mut s, a).is_empty());
        assert!(poll_now(&mut s, a).is_empty());
        // New data is a new edge.
        s.send(c, b"abc").unwrap();
        assert!(wait_for(&mut s, a, Readiness::READABLE).contains(Readiness::READABLE));
        // Not draining: no second report without a new edge.
        assert!(poll_now(&mut s, a).is_empty());
        s.send(c, b"def").unwrap();
        wait_for(&mut s, a, Readiness::READABLE);
        assert_eq!(s.recv(a, &mut buf), Ok(6));

        // Writable edge after filling the send buffer.
        s.set_opt(c, opt::SOL_SOCKET, opt::SO_SNDBUF, &int_opt(4096))
            .unwrap();
        let chunk = [7u8; 65536];
        let mut sent = 0usize;
        loop {
            match s.send(c, &chunk) {
                Ok(n) => sent += n,
                Err(Errno::EAGAIN) => break,
                Err(e) => panic!("send: {e:?}"),
            }
            assert!(sent < 64 << 20, "send never blocked");
        }
        poll_now(&mut s, c);
        let mut got = 0usize;
        let mut big = vec![0u8; 1 << 16];
        while got < sent {
            match s.recv(a, &mut big) {
                Ok(n) => got += n,
                Err(Errno::EAGAIN) => {
                    wait_for(&mut s, a, Readiness::READABLE);
                }
                Err(e) => panic!("recv: {e:?}"),
            }
        }
        assert!(wait_for(&mut s, c, Readiness::WRITABLE).contains(Readiness::WRITABLE));
    }

    #[test]
    fn data_queued_before_accept_is_reported() {
        let mut s = LinuxStack::new(4).unwrap();
        let (l, at) = listener(&mut s, "127.0.0.1:0");
        let mut client = std::net::TcpStream::connect(at).unwrap();
        client.write_all(b"early").unwrap();
        wait_for(&mut s, l, Readiness::READABLE);
        std::thread::sleep(Duration::from_millis(20));
        let a = s.accept(l).unwrap().handle;
        assert!(wait_for(&mut s, a, Readiness::READABLE).contains(Readiness::READABLE));
        let mut buf = [0u8; 16];
        assert_eq!(s.recv(a, &mut buf), Ok(5));
    }

    #[test]
    fn fresh_tcp_socket_reports_nothing_until_connect() {
        let mut s = LinuxStack::new(4).unwrap();
        let h = s.open(Family::Inet, SockType::Stream).unwrap();
        assert!(poll_now(&mut s, h).is_empty());
        assert_eq!(s.local_addr(h), Ok("0.0.0.0:0".parse().unwrap()));
        assert_eq!(s.peer_addr(h), Err(Errno::ENOTCONN));
        assert_eq!(s.shutdown(h, Shutdown::Both), Err(Errno::ENOTCONN));
    }

    #[test]
    fn refused_connect_reports_error() {
        let mut s = LinuxStack::new(4).unwrap();
        // A port with no listener: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let c = s.open(Family::Inet, SockType::Stream).unwrap();
        match s.connect(c, port) {
            Err(Errno::EINPROGRESS) => {
                let r = wait_for(&mut s, c, Readiness::WRITABLE | Readiness::ERROR);
                assert!(r.contains(Readiness::ERROR), "{r:?}");
                assert_eq!(s.take_error(c), Ok(Some(Errno::ECONNREFUSED)));
                assert_eq!(s.take_error(c), Ok(None));
            }
            Err(e) => assert_eq!(e, Errno::ECONNREFUSED),
            Ok(()) => panic!("connected to a closed port"),
        }
    }

    #[test]
    fn udp_send_to_recv_from_v4_and_v6() {
        let mut s = LinuxStack::new(8).unwrap();
        let mut addrs = vec!["127.0.0.1:0"];
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            addrs.push("[::1]:0");
        }
        for addr in addrs {
            let addr: SocketAddr = addr.parse().unwrap();
            let a = s.open(Family::of(&addr), SockType::Datagram).unwrap();
            let b = s.open(Family::of(&addr), SockType::Datagram).unwrap();
            s.bind(a, addr).unwrap();
            s.bind(b, addr).unwrap();
            let (aa, ba) = (s.local_addr(a).unwrap(), s.local_addr(b).unwrap());
            let mut buf = [0u8; 8];
            assert_eq!(s.recv_from(b, &mut buf), Err(Errno::EAGAIN));
            assert_eq!(s.send_to(a, b"datagram!", ba), Ok(9));
            wait_for(&mut s, b, Readiness::READABLE);
            // Truncated to the buffer, sender reported.
            assert_eq!(s.recv_from(b, &mut buf), Ok((8, aa)));
            assert_eq!(&buf, b"datagram");
            assert_eq!(s.recv_from(b, &mut buf), Err(Errno::EAGAIN));
            // Connected UDP: send/recv without addresses.
            s.connect(a, ba).unwrap();
            assert_eq!(s.send(a, b"hi"), Ok(2));
            wait_for(&mut s, b, Readiness::READABLE);
            assert_eq!(s.recv_from(b, &mut buf), Ok((2, aa)));
            s.close(a).unwrap();
            s.close(b).unwrap();
        }
        // A v4 destination on an AF_INET socket of the wrong size fails as
        // Linux does.
        let c = s.open(Family::Inet, SockType::Datagram).unwrap();
        let too_big = vec![0u8; 70_000];
        assert_eq!(
            s.send_to(c, &too_big, "127.0.0.1:9".parse().unwrap()),
            Err(Errno::EMSGSIZE)
        );
    }

    fn get_int(s: &mut LinuxStack, h: SockHandle, level: i32, name: i32) -> i32 {
        let mut b = [0u8; 4];
        assert_eq!(s.get_opt(h, level, name, &mut b), Ok(4));
        parse_int_opt(&b).unwrap()
    }

    #[test]
    fn options_set_and_read_back() {
        let mut s = LinuxStack::new(8).unwrap();
        let t = s.open(Family::Inet, SockType::Stream).unwrap();
        for (level, name) in [
            (opt::IPPROTO_TCP, opt::TCP_NODELAY),
            (opt::SOL_SOCKET, opt::SO_REUSEADDR),
            (opt::SOL_SOCKET, opt::SO_REUSEPORT),
            (opt::SOL_SOCKET, opt::SO_KEEPALIVE),
        ] {
            assert_eq!(get_int(&mut s, t, level, name), 0, "{level}/{name}");
            s.set_opt(t, level, name, &int_opt(1)).unwrap();
            assert_eq!(get_int(&mut s, t, level, name), 1, "{level}/{name}");
        }
        s.set_opt(t, opt::IPPROTO_TCP, opt::TCP_KEEPIDLE, &int_opt(77))
            .unwrap();
        assert_eq!(get_int(&mut s, t, opt::IPPROTO_TCP, opt::TCP_KEEPIDLE), 77);
        s.set_opt(t, opt::IPPROTO_TCP, opt::TCP_KEEPCNT, &int_opt(5))
            .unwrap();
        assert_eq!(get_int(&mut s, t, opt::IPPROTO_TCP, opt::TCP_KEEPCNT), 5);
        s.set_opt(t, opt::IPPROTO_TCP, opt::TCP_USER_TIMEOUT, &int_opt(1500))
            .unwrap();
        assert_eq!(
            get_int(&mut s, t, opt::IPPROTO_TCP, opt::TCP_USER_TIMEOUT),
            1500
        );
        // Linux doubles the buffer sizes it is given.
        s.set_opt(t, opt::SOL_SOCKET, opt::SO_RCVBUF, &int_opt(65536))
            .unwrap();
        assert_eq!(get_int(&mut s, t, opt::SOL_SOCKET, opt::SO_RCVBUF), 131072);
        // SO_LINGER: struct linger { int l_onoff; int l_linger; }.
        let mut linger = [0u8; 8];
        linger[..4].copy_from_slice(&int_opt(1));
        linger[4..].copy_from_slice(&int_opt(3));
        s.set_opt(t, opt::SOL_SOCKET, opt::SO_LINGER, &linger)
            .unwrap();
        let mut back = [0u8; 8];
        assert_eq!(
            s.get_opt(t, opt::SOL_SOCKET, opt::SO_LINGER, &mut back),
            Ok(8)
        );
        assert_eq!(back, linger);
        assert_eq!(
            get_int(&mut s, t, opt::SOL_SOCKET, opt::SO_TYPE),
            libc::SOCK_STREAM
        );
        // TCP_CONGESTION: a NUL-padded name, read back as set.
        let mut algos = Vec::new();
        s.available_congestion(&mut algos);
        if let Some(algo) = algos.first() {
            let mut name = [0u8; opt::TCP_CA_NAME_MAX];
            name[..algo.len()].copy_from_slice(algo.as_bytes());
            s.set_opt(t, opt::IPPROTO_TCP, opt::TCP_CONGESTION, &name)
                .unwrap();
            let mut got = [0u8; opt::TCP_CA_NAME_MAX];
            let n = s
                .get_opt(t, opt::IPPROTO_TCP, opt::TCP_CONGESTION, &mut got)
                .unwrap();
            let got = std::str::from_utf8(&got[..n])
                .unwrap()
                .trim_end_matches('\0');
            assert_eq!(got, algo);
        }
        let mut bogus = [0u8; opt::TCP_CA_NAME_MAX];
        bogus[..7].copy_from_slice(b"no-such");
        assert_eq!(
            s.set_opt(t, opt::IPPROTO_TCP, opt::TCP_CONGESTION, &bogus),
            Err(Errno::ENOENT)
        );
        // Unknown option, short value, oversized value.
        assert_eq!(
            s.set_opt(t, opt::SOL_SOCKET, 4242, &int_opt(1)),
            Err(Errno::ENOPROTOOPT)
        );
        assert_eq!(
            s.set_opt(t, opt::IPPROTO_TCP, opt::TCP_NODELAY, &[1]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            s.set_opt(
                t,
                opt::SOL_SOCKET,
                opt::SO_KEEPALIVE,
                &[0u8; OPT_LEN_CAP + 1]
            ),
            Err(Errno::EINVAL)
        );
        // IPV6_V6ONLY on an IPv6 socket.
        let v6 = s.open(Family::Inet6, SockType::Stream).unwrap();
        s.set_opt(v6, opt::IPPROTO_IPV6, opt::IPV6_V6ONLY, &int_opt(1))
            .unwrap();
        assert_eq!(get_int(&mut s, v6, opt::IPPROTO_IPV6, opt::IPV6_V6ONLY), 1);
        s.set_opt(v6, opt::IPPROTO_IPV6, opt::IPV6_V6ONLY, &int_opt(0))
            .unwrap();
        assert_eq!(get_int(&mut s, v6, opt::IPPROTO_IPV6, opt::IPV6_V6ONLY), 0);
    }

    #[test]
    fn tcp_info_counters_move() {
        let mut s = LinuxStack::new(8).unwrap();
        let (l, c, a) = pair(&mut s, "127.0.0.1:0");
        assert_eq!(s.tcp_info(l), None, "a listener has no flow counters");
        let before = s.tcp_info(c).unwrap();
        // The handshake: SYN out, SYN-ACK in, ACK out.
        assert!(before.segs_out >= 2 && before.segs_in >= 1, "{before:?}");
        let mut buf = [0u8; 64];
        for _ in 0..5 {
            s.send(c, b"ping").unwrap();
            wait_for(&mut s, a, Readiness::READABLE);
            while s.recv(a, &mut buf).is_ok() {}
        }
        let after = s.tcp_info(c).unwrap();
        assert!(
            after.segs_out >= before.segs_out + 5,
            "{before:?} -> {after:?}"
        );
        let srv = s.tcp_info(a).unwrap();
        assert!(srv.segs_in >= 5, "{srv:?}");
        assert!(after.cwnd > 0);
        let u = s.open(Family::Inet, SockType::Datagram).unwrap();
        assert_eq!(s.tcp_info(u), None);
    }

    #[test]
    fn handles_bad_closed_reused_and_limited() {
        let mut s = LinuxStack::new(2).unwrap();
        let a = s.open(Family::Inet, SockType::Datagram).unwrap();
        let b = s.open(Family::Inet, SockType::Stream).unwrap();
        assert_eq!(s.open(Family::Inet, SockType::Stream), Err(Errno::EMFILE));
        s.close(a).unwrap();
        assert_eq!(s.close(a), Err(Errno::EBADF));
        let mut buf = [0u8; 4];
        assert_eq!(s.recv(a, &mut buf), Err(Errno::EBADF));
        assert_eq!(s.local_addr(SockHandle(77)), Err(Errno::EBADF));
        assert_eq!(
            s.set_opt(a, opt::SOL_SOCKET, opt::SO_KEEPALIVE, &int_opt(1)),
            Err(Errno::EBADF)
        );
        assert_eq!(s.tcp_info(a), None);
        let c = s.open(Family::Inet6, SockType::Datagram).unwrap();
        assert_eq!(c, a, "a closed handle's slot is reused");
        assert_eq!(s.open_count(), 2);
        // A full table leaves connections in the kernel's backlog.
        s.close(c).unwrap();
        s.bind(b, "127.0.0.1:0".parse().unwrap()).unwrap();
        s.listen(b, 4).unwrap();
        let at = s.local_addr(b).unwrap();
        let filler = s.open(Family::Inet, SockType::Datagram).unwrap();
        let _peer = std::net::TcpStream::connect(at).unwrap();
        wait_for(&mut s, b, Readiness::READABLE);
        assert_eq!(s.accept(b).unwrap_err(), Errno::EMFILE);
        s.close(filler).unwrap();
        assert!(s.accept(b).is_ok(), "the connection waited in the backlog");
        assert!(LinuxStack::new(0).is_err());
    }

    #[test]
    fn route_source_and_congestion_list() {
        let mut s = LinuxStack::new(1).unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(s.route_source(lo), Some(lo));
        assert_eq!(s.route_source("0.0.0.0".parse().unwrap()), None);
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            let lo6: IpAddr = "::1".parse().unwrap();
            assert_eq!(s.route_source(lo6), Some(lo6));
        }
        assert_eq!(s.open_count(), 0, "the probe socket is not a stack socket");
        let mut algos = Vec::new();
        s.available_congestion(&mut algos);
        if std::path::Path::new("/proc/sys/net/ipv4/tcp_available_congestion_control").exists() {
            assert!(!algos.is_empty());
            assert!(
                algos
                    .iter()
                    .all(|a| !a.is_empty() && a.len() < opt::TCP_CA_NAME_MAX)
            );
        }
    }

    #[test]
    fn watched_descriptors_wake_the_poll() {
        let mut s = LinuxStack::new(4).unwrap();
        let bell = rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK).unwrap();
        let (control, driver) = std::os::unix::net::UnixStream::pair().unwrap();
        s.watch(bell.as_fd(), Watch::Doorbell).unwrap();
        s.watch(control.as_fd(), Watch::Control).unwrap();
        let mut out = Vec::new();
        let t0 = Instant::now();
        assert_eq!(
            s.poll(Some(20 * MS), &mut out).unwrap(),
            WakeFlags::default()
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(19),
            "the timeout was honoured"
        );
        rustix::io::write(&bell, &1u64.to_ne_bytes()).unwrap();
        let w = s.poll(Some(1000 * MS), &mut out).unwrap();
        assert!(w.doorbell && !w.control_hup);
        // Edge-triggered: one wake-up per notify, the eventfd never read.
        assert!(!s.poll(Some(0), &mut out).unwrap().doorbell);
        rustix::io::write(&bell, &1u64.to_ne_bytes()).unwrap();
        assert!(s.poll(Some(0), &mut out).unwrap().doorbell);
        assert!(!s.poll(Some(0), &mut out).unwrap().doorbell);
        // Bytes on the control socket are not a wake-up; hang-up is.
        (&driver).write_all(b"x").unwrap();
        assert!(!s.poll(Some(0), &mut out).unwrap().control_hup);
        drop(driver);
        assert!(s.poll(Some(1000 * MS), &mut out).unwrap().control_hup);
        let mut rest = Vec::new();
        (&control).read_to_end(&mut rest).unwrap();
        assert!(out.is_empty());
        // Through the trait, wake flags are kept for take_wake.
        s.poll_events(Some(0), &mut out).unwrap();
        assert!(s.take_wake().control_hup);
        assert!(s.take_wake() == WakeFlags::default());
    }

    #[test]
    fn tcp_info_parse_rejects_short_and_listen() {
        let mut b = [0u8; tcpi::MIN_LEN];
        assert_eq!(parse_tcp_info(&b[..tcpi::MIN_LEN - 1]), None);
        b[tcpi::STATE] = 1;
        b[tcpi::SEGS_IN..tcpi::SEGS_IN + 4].copy_from_slice(&9u32.to_ne_bytes());
        b[tcpi::SEGS_OUT..tcpi::SEGS_OUT + 4].copy_from_slice(&11u32.to_ne_bytes());
        b[tcpi::RTT..tcpi::RTT + 4].copy_from_slice(&250u32.to_ne_bytes());
        let c = parse_tcp_info(&b).unwrap();
        assert_eq!((c.segs_in, c.segs_out, c.rtt_us), (9, 11, 250));
        b[tcpi::STATE] = tcpi::STATE_LISTEN;
        assert_eq!(parse_tcp_info(&b), None);
    }

    #[test]
    fn tcp_info_of_a_real_connection_has_window_and_acked_bytes() {
        use std::io::{Read as _, Write as _};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut a, _) = l.accept().unwrap();
        c.write_all(&[7u8; 5000]).unwrap();
        let mut got = vec![0u8; 5000];
        a.read_exact(&mut got).unwrap();
        a.write_all(b"ok").unwrap();
        let mut two = [0u8; 2];
        c.read_exact(&mut two).unwrap();
        let mut buf = [0u8; 256];
        let n = raw::getsockopt(c.as_fd(), opt::IPPROTO_TCP, opt::TCP_INFO, &mut buf).unwrap();
        let t = parse_tcp_info(&buf[..n]).unwrap();
        // Linux counts the SYN as one acknowledged byte.
        assert!((5000..=5001).contains(&t.bytes_acked), "{t:?}");
        assert!(t.peer_window.is_some_and(|w| w > 0), "{t:?}");
        assert_eq!(t.notsent, 0);
    }

    #[test]
    fn memory_per_socket_in_the_table() {
        const { assert!(LinuxStack::SLOT_BYTES <= 16) };
        let mut s = LinuxStack::with_event_capacity(1000, 64).unwrap();
        let base = s.table_bytes();
        for _ in 0..1000 {
            s.open(Family::Inet, SockType::Datagram).unwrap();
        }
        let per = (s.table_bytes() - base) as f64 / 1000.0;
        eprintln!(
            "slot {} B; table growth {per:.1} B per socket",
            LinuxStack::SLOT_BYTES
        );
        assert!(per <= 2.0 * LinuxStack::SLOT_BYTES as f64);
    }
}
