//! Control connections to the driver and the request/reply exchange.
//!
//! When the kernel module is there (`kmod`: its device answers this
//! shim's version), every exchange is an ioctl on its device instead and
//! nothing below is used; the requests and replies are the same packets.
//!
//! A pool of at most [`POOL`] `SOCK_SEQPACKET` connections; a thread takes
//! one for a whole exchange (so a blocking `connect` waiting for its reply
//! never holds up other threads), more are opened on demand, surplus ones
//! are closed after use. Slots are atomics (`-1` empty, `fd` idle,
//! `fd | BUSY` in use): no lock, so a `fork` at any moment cannot leave a
//! lock held in the child.
//!
//! Fork: [`OWNER`] is the pid the pooled connections belong to. The first
//! exchange in a child sees another pid, empties every slot (closing the
//! inherited copies, idle or busy in the parent) and takes over; threads
//! that arrive during that reset use a one-off connection. Each pooled fd
//! is also checked against the inode it had when opened, so an fd the
//! program closed behind the shim's back (and whose number was reused) is
//! never written to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ins_protocol::control::{Control, MAX_PACKET, MAX_VALUE, Op};

use crate::config;
use crate::errno::Errno;
use crate::kmod;
use crate::sys;
use crate::table::{Entry, TABLE};

/// Pooled connections.
pub const POOL: usize = 16;
const BUSY: i32 = 1 << 30;
const EMPTY: i32 = -1;
const RESETTING: i32 = -1;

static SLOTS: [AtomicI32; POOL] = [const { AtomicI32::new(EMPTY) }; POOL];
static INODES: [AtomicU64; POOL] = [const { AtomicU64::new(0) }; POOL];
static OWNER: AtomicI32 = AtomicI32::new(0);
static SEQ: AtomicU32 = AtomicU32::new(1);

/// Why an exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtlError {
    /// The driver's socket could not be reached (not running, no access).
    Unreachable(Errno),
    /// The exchange failed (broken connection, malformed reply, fd limit).
    Failed(Errno),
    /// A signal interrupted a waiting exchange (the connection was dropped).
    Interrupted,
    /// The wait timed out (the connection was dropped).
    TimedOut,
}

/// How to wait for the reply.
#[derive(Clone, Copy, Debug)]
pub enum Wait {
    /// The driver answers at once; `EINTR` is retried.
    Prompt,
    /// The reply may take long (blocking connect): wait at most this long,
    /// give up on a signal.
    Interruptible(Option<Duration>),
}

/// An fd received from the driver; closed unless taken.
pub struct Fd(i32);

impl Fd {
    /// Takes ownership of `fd`.
    pub fn adopt(fd: i32) -> Fd {
        Fd(fd)
    }

    /// The fd number (still owned).
    pub fn raw(&self) -> i32 {
        self.0
    }

    /// Gives up ownership.
    pub fn into_raw(self) -> i32 {
        let fd = self.0;
        std::mem::forget(self);
        fd
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        sys::close(self.0);
    }
}

/// A reply, copied out of the packet.
pub struct Reply {
    /// 0 or a positive errno.
    pub status: i32,
    /// Integer results.
    pub args: [i32; 4],
    /// First address.
    pub addr: Option<SocketAddr>,
    /// Second address.
    #[allow(dead_code)]
    pub addr2: Option<SocketAddr>,
    value: [u8; MAX_VALUE],
    value_len: usize,
    /// The fd that came with the reply.
    pub fd: Option<Fd>,
}

impl Reply {
    /// A reply from its parts (the module's exchange, `kmod`).
    #[allow(clippy::too_many_arguments)] // the reply's fields
    pub(crate) fn new(
        status: i32,
        args: [i32; 4],
        addr: Option<SocketAddr>,
        addr2: Option<SocketAddr>,
        value: [u8; MAX_VALUE],
        value_len: usize,
        fd: Option<Fd>,
    ) -> Reply {
        Reply {
            status,
            args,
            addr,
            addr2,
            value,
            value_len,
            fd,
        }
    }

    /// The option value.
    pub fn value(&self) -> &[u8] {
        &self.value[..self.value_len]
    }
}

struct Conn {
    fd: i32,
    slot: Option<usize>,
    fresh: bool,
}

impl Conn {
    fn release(self) {
        match self.slot {
            Some(i) => {
                // Release: the inode written before is visible to the next
                // taker. A failed CAS means the program closed the fd.
                let _ = SLOTS[i].compare_exchange(
                    self.fd | BUSY,
                    self.fd,
                    Ordering::Release,
                    Ordering::Relaxed,
                );
            }
            None => drop_fd(self.fd),
        }
    }

    fn poison(self) {
        let ours = match self.slot {
            Some(i) => SLOTS[i]
                .compare_exchange(self.fd | BUSY, EMPTY, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok(),
            None => true,
        };
        if ours {
            drop_fd(self.fd);
        }
    }
}

fn drop_fd(fd: i32) {
    TABLE.set(fd, Entry::HOST);
    sys::close(fd);
}

/// The program is closing (or `dup2`-ing over) `fd`, one of our control
/// connections: forget it (the program's call does the close).
pub fn forget(fd: i32) {
    for s in &SLOTS {
        let v = s.load(Ordering::Relaxed);
        if v >= 0 && v & !BUSY == fd {
            let _ = s.compare_exchange(v, EMPTY, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

fn pooled_for(pid: i32) -> bool {
    let owner = OWNER.load(Ordering::Acquire);
    if owner == pid {
        return true;
    }
    if owner == RESETTING {
        return false;
    }
    if owner == 0 {
        return match OWNER.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(now) => now == pid,
        };
    }
    // A forked child: the slots hold the parent's connections.
    if OWNER
        .compare_exchange(owner, RESETTING, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    for s in &SLOTS {
        let v = s.swap(EMPTY, Ordering::AcqRel);
        if v >= 0 {
            drop_fd(v & !BUSY);
        }
    }
    OWNER.store(pid, Ordering::Release);
    true
}

fn take() -> Result<Conn, CtlError> {
    let pooled = pooled_for(sys::getpid());
    if pooled {
        for (i, s) in SLOTS.iter().enumerate() {
            let v = s.load(Ordering::Relaxed);
            if v < 0 || v & BUSY != 0 {
                continue;
            }
            if s.compare_exchange(v, v | BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let ok = TABLE.get(v) == Entry::CONTROL
                && matches!(sys::fstat_sock(v), Ok((true, ino)) if ino == INODES[i].load(Ordering::Relaxed));
            if ok {
                return Ok(Conn {
                    fd: v,
                    slot: Some(i),
                    fresh: false,
                });
            }
            // Not ours any more: forget without closing.
            let _ = s.compare_exchange(v | BUSY, EMPTY, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
    let fd = sys::ctl_connect(&config::get().socket_path).map_err(|e| match e.0 {
        libc::ENOENT
        | libc::ECONNREFUSED
        | libc::EACCES
        | libc::EPERM
        | libc::ENOTDIR
        | libc::ENAMETOOLONG
        | libc::ENOTSOCK
        | libc::EPROTOTYPE => CtlError::Unreachable(e),
        _ => CtlError::Failed(e),
    })?;
    TABLE.set(fd, Entry::CONTROL);
    let mut slot = None;
    if pooled && let Ok((_, ino)) = sys::fstat_sock(fd) {
        for (i, s) in SLOTS.iter().enumerate() {
            if s.compare_exchange(EMPTY, fd | BUSY, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                INODES[i].store(ino, Ordering::Relaxed);
                slot = Some(i);
                break;
            }
        }
    }
    Ok(Conn {
        fd,
        slot,
        fresh: true,
    })
}

/// Whether the driver this process talked to is gone: a pooled control
/// connection hangs up once it exits (one `poll`, no work for a live
/// driver), and without one the shim socket refuses a new connection.
/// A pooled connection that hung up is dropped and the socket tried once
/// more, so a restarted driver counts as there (the caller's sockets,
/// though, belonged to the old one). Unknown failures count as there: the
/// caller must not drop data on a guess.
pub fn driver_gone() -> bool {
    match kmod::device() {
        // The module cannot go while the process has socket files open.
        Ok(Some(_)) => return false,
        Err(_) => return true,
        Ok(None) => {}
    }
    for _ in 0..2 {
        match take() {
            Err(CtlError::Unreachable(_)) => return true,
            Err(_) => return false,
            Ok(conn) if !conn.fresh && sys::hung_up(conn.fd) => conn.poison(),
            Ok(conn) => {
                conn.release();
                return false;
            }
        }
    }
    false
}

/// A request: what [`call`] sends.
pub struct Request<'a> {
    /// The operation.
    pub op: Op,
    /// Integer arguments.
    pub args: [i32; 4],
    /// Address argument.
    pub addr: Option<SocketAddr>,
    /// Option value.
    pub value: &'a [u8],
}

impl Request<'static> {
    /// A request with no arguments.
    pub fn new(op: Op) -> Self {
        Request {
            op,
            args: [0; 4],
            addr: None,
            value: &[],
        }
    }
}

/// A request number not used before by this process (records and
/// requests share the space).
pub fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// `req` as packet number `seq`, into `buf`; returns its length.
fn encode(req: &Request<'_>, seq: u32, buf: &mut [u8]) -> Result<usize, CtlError> {
    Control {
        op: req.op,
        seq,
        status: 0,
        args: req.args,
        addr: req.addr,
        addr2: None,
        value: req.value,
    }
    .encode(buf)
    .map_err(|_| CtlError::Failed(Errno::EINVAL))
}

/// Sends `req` as record number `seq` that gets no reply
/// ([`Op::SockOpt`]), no fd attached. A pooled connection that turns out
/// dead is replaced once.
pub fn post(req: &Request<'_>, seq: u32) -> Result<(), CtlError> {
    let mut buf = [0u8; MAX_PACKET];
    let n = encode(req, seq, &mut buf)?;
    if let Some(dev) = kmod::device()? {
        // The module answers every packet; a record's answer is dropped.
        return kmod::call(dev, &buf[..n], seq, req.op, None, true).map(drop);
    }
    for _ in 0..2 {
        let conn = take()?;
        match sys::send_packet(conn.fd, &buf[..n], None) {
            Ok(()) => {
                conn.release();
                return Ok(());
            }
            Err(e) => {
                let fresh = conn.fresh;
                conn.poison();
                if !fresh && matches!(e.0, libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) {
                    continue;
                }
                return Err(CtlError::Failed(e));
            }
        }
    }
    Err(CtlError::Failed(Errno::EIO))
}

/// One exchange: sends `req` (with `fd` attached) and returns the reply.
/// A received fd gets `FD_CLOEXEC` if `cloexec`. A pooled connection that
/// turns out dead (driver restarted) is replaced once.
pub fn call(
    req: &Request<'_>,
    fd: Option<i32>,
    cloexec: bool,
    wait: Wait,
) -> Result<Reply, CtlError> {
    if let Some(dev) = kmod::device()? {
        // The module: one ioctl, whose wait is interruptible (`wait` has no
        // other effect there; kmod.rs says what differs).
        let seq = next_seq();
        let mut buf = [0u8; MAX_PACKET];
        let n = encode(req, seq, &mut buf)?;
        return kmod::call(dev, &buf[..n], seq, req.op, fd, cloexec);
    }
    for _ in 0..2 {
        let conn = take()?;
        let seq = next_seq();
        let mut buf = [0u8; MAX_PACKET];
        let n = match encode(req, seq, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                conn.release();
                return Err(e);
            }
        };
        if let Err(e) = sys::send_packet(conn.fd, &buf[..n], fd) {
            let fresh = conn.fresh;
            conn.poison();
            if !fresh && matches!(e.0, libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) {
                continue;
            }
            return Err(CtlError::Failed(if e.0 == libc::EBADF {
                Errno::EIO
            } else {
                e
            }));
        }
        if let Wait::Interruptible(timeout) = wait {
            let deadline = timeout.map(|d| Instant::now() + d);
            loop {
                let ms = match deadline {
                    None => -1,
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                    }
                };
                match sys::poll_in(conn.fd, ms) {
                    Ok(true) => break,
                    Ok(false) if ms == 0 => {
                        conn.poison();
                        return Err(CtlError::TimedOut);
                    }
                    Ok(false) => continue,
                    Err(e) if e.0 == libc::EINTR => {
                        conn.poison();
                        return Err(CtlError::Interrupted);
                    }
                    Err(e) => {
                        conn.poison();
                        return Err(CtlError::Failed(e));
                    }
                }
            }
        }
        let (m, rfd) = match sys::recv_packet(conn.fd, &mut buf, cloexec) {
            Ok(x) => x,
            Err(_) => {
                conn.poison();
                return Err(CtlError::Failed(Errno::EIO));
            }
        };
        let rfd = rfd.map(Fd);
        let reply = match Control::decode(&buf[..m]) {
            Ok(r) if m > 0 && r.seq == seq && r.op == req.op => r,
            _ => {
                conn.poison();
                return Err(CtlError::Failed(Errno::EIO));
            }
        };
        let mut value = [0u8; MAX_VALUE];
        value[..reply.value.len()].copy_from_slice(reply.value);
        let out = Reply {
            status: reply.status,
            args: reply.args,
            addr: reply.addr,
            addr2: reply.addr2,
            value,
            value_len: reply.value.len(),
            fd: rfd,
        };
        conn.release();
        return Ok(out);
    }
    Err(CtlError::Failed(Errno::EIO))
}
