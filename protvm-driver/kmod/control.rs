// SPDX-License-Identifier: GPL-2.0

//! The shim's control messages on `/dev/ins`, driven by driver-core, and
//! the socket files they make.
//!
//! Size: over 800 lines: the control ioctl and the socket files' read,
//! write and poll share `SockEntry`/`SockFile`, whose invariants (the
//! receive buffer and accept tokens under the core's mutex, one reader and
//! one writer per socket) are stated and kept in this one file; splitting
//! the file operations out is the next cleanup.
//!
//! `INS_IOC_CONTROL` (`_IOWR('I', 3, struct ins_control)`) carries one
//! ins-protocol control packet (`ins_protocol::control`, the same bytes the
//! shim sends the daemon) and the fd of the socket it is about, and
//! returns the reply packet in place:
//!
//! ```c
//! struct ins_control {
//!         __s32 fd;           /* in: the socket, -1 for none; out: the fd the reply passes, or -1 */
//!         __u32 len;          /* in: request length; out: reply length */
//!         __u8 packet[368];   /* in: request; out: reply (header + value) */
//! };
//! ```
//!
//! * `Socket` (args `[domain, type, protocol, 0]`) is answered here: a new
//!   socket file (`[ins-socket]`, anonymous inode) registered with
//!   driver-core (`Driver::new_socket`, keyed by a per-file number since all
//!   anonymous-inode files share one inode), installed as `fd` in the
//!   reply (not close-on-exec, as `socket()` without `SOCK_CLOEXEC`).
//! * Every other request goes to `Driver::shim_request` with the socket
//!   the fd names (only our socket files name one; anything else is
//!   `ENOTSOCK` from driver-core). The caller then sleeps until
//!   driver-core's reply for its `(connection, seq)` arrives, usually when
//!   an instance answers over its ring; a signal ends the wait with
//!   `EINTR` (the request stays in flight; its late reply is dropped when
//!   the `/dev/ins` file that sent it closes). The connection is the open
//!   `/dev/ins` file, numbered at open (never reused).
//! * The last close of a socket file is the app letting go
//!   (`Driver::app_eof(hup)`: the instances close their replicas).
//!
//! The data path of a connected stream socket (a blocking `Connect`
//! answered 0):
//!
//! ```text
//!  write() ── send_credit ─▶ Data frames (≤ credit, ≤ 1008 bytes, ≤ ring room)
//!          ── consume_credit; no credit or room: sleep until Resume/doorbell
//!  read()  ◀─ receive buffer ◀─ instance Data (window checked by driver-core)
//!          ── delivered (Credit back to the instance as the app reads)
//!  EOF / reset from the instance: read 0 / the errno once the buffer is empty
//! ```
//!
//! The receive buffer lives in the core's table ([`SockEntry`], under its
//! mutex) and never holds more than driver-core's window, because credit
//! goes back only as the app reads. `poll` says readable (bytes, EOF,
//! reset, or not connected) and writable (credit and ring room);
//! writers and readers sleep on the file's wait queue, woken by data,
//! EOF/reset, `Resume` and every doorbell (ring space).
//!
//! Accept (DESIGN decision 3): an announced connection
//! (`AppSockets::new_connection`) gets its [`SockEntry`] at once, with no
//! file (instance data is buffered, within the window), and the listener
//! one token (`token`: readable; a `read` takes one byte per token). The
//! shim's `Accept` after a token gets driver-core's reply passing
//! `ReplyFd::AppEnd`: the connection's socket file is made then and its fd
//! returned (`EAGAIN` if the connection went meanwhile). An entry without a
//! file goes when driver-core forgets it; one with a file, with the file.
//! A successful `shutdown(SHUT_WR|SHUT_RDWR)` ends the write side
//! (`app_eof(h, false)`: `Eof` after every byte written before; later
//! writes `EPIPE`).
//!
//! A non-blocking `Connect` is answered `EINPROGRESS` by driver-core at
//! once; the socket is *connecting* until driver-core's `ConnectDone`
//! (`connect_done`): neither readable nor writable meanwhile (reads and
//! writes `EAGAIN`, or sleep), then writable once connected, or readable
//! and writable with the error (`SO_ERROR` is driver-core's `TakeError`),
//! as a Linux TCP socket behaves.
//!
//! `SetOpt` of an option that goes in band (a boolean a marker byte
//! carries: `TCP_CORK`, `TCP_NODELAY`, `SO_KEEPALIVE`; or an `int` in its
//! range: `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`,
//! `TCP_USER_TIMEOUT`) on a connected stream is in order without a round
//! trip (`option_in_order`): its frame follows the bytes written before.
//!
//! `recv(MSG_PEEK)` is the socket file's `INS_IOC_PEEK` ioctl: the head of
//! the receive buffer copied out and left there (no credit goes back);
//! it blocks as `read` does unless the file is non-blocking or
//! `PEEK_DONTWAIT`; on a listener `ENOTCONN`.
//!
//! Datagram sockets' data: dgram.rs.
//!
//! Not yet: in-band records (`SockOpt` `EOPNOTSUPP`; other
//! options go by the synchronous `SetOpt`), writes straight into ring space (one copy
//! through a bounce
//! buffer today). The app's memory is copied outside the core's mutex (into and
//! out of a per-socket bounce buffer, one reader and one writer at a time
//! per socket), so an app whose buffer faults slowly (a userfaultfd range,
//! say) delays only its own socket.

use alloc::collections::VecDeque;
use alloc::vec::Vec as AVec;

use driver_core::{Handle, ReplyFd};
use ins_protocol::control::{Control, Op, MAX_PACKET};
use kernel::bindings;
use kernel::ffi::{c_long, c_uint, c_ulong};
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::uaccess::UserSlice;

use crate::instance::{now_ns, Core, CoreInner};
use crate::ksys::{self, WaitQueue};

/// `struct ins_control` size.
pub(crate) const CONTROL_LEN: usize = 8 + MAX_PACKET;
/// `_IOWR('I', 3, struct ins_control)`.
pub(crate) const INS_IOC_CONTROL: u32 =
    (3 << 30) | ((CONTROL_LEN as u32) << 16) | ((b'I' as u32) << 8) | 3;
/// `struct ins_peek { __u64 buf; __u64 len; __u32 flags; __u32 pad; }`
/// size.
pub(crate) const PEEK_LEN: usize = 24;
/// `_IOW('I', 5, struct ins_peek)`, on a socket file: `recv(MSG_PEEK)`.
/// Returns the bytes copied to `buf` (at most `len`), left in the
/// receive buffer.
pub(crate) const INS_IOC_PEEK: u32 =
    (1 << 30) | ((PEEK_LEN as u32) << 16) | ((b'I' as u32) << 8) | 5;
/// `ins_peek.flags`: do not block (`MSG_DONTWAIT`).
const PEEK_DONTWAIT: u32 = 1;
/// `EOPNOTSUPP`.
const EOPNOTSUPP_N: i32 = 95;
/// `EINPROGRESS`: a non-blocking connect's first answer.
const EINPROGRESS_N: i32 = 115;
/// `ENOMEM`.
const ENOMEM_N: i32 = 12;
/// `EAGAIN`.
const EAGAIN_N: i32 = 11;

/// What a socket file points to.
#[pin_data]
pub(crate) struct SockFile {
    pub(crate) core: Arc<Core>,
    pub(crate) handle: Handle,
    /// Readers, writers and poll/epoll wait here.
    #[pin]
    pub(crate) wq: WaitQueue,
    /// One reader at a time, with its bounce buffer: bytes are copied to
    /// the app outside the core's mutex, then taken off the receive buffer.
    #[pin]
    pub(crate) reader: Mutex<KVec<u8>>,
    /// One writer at a time, with its bounce buffer: bytes are copied from
    /// the app outside the core's mutex, then pushed.
    #[pin]
    pub(crate) writer: Mutex<KVec<u8>>,
}

impl SockFile {
    /// Something changed for this socket: look again.
    pub(crate) fn wake(&self) {
        // Every bit `sock_poll` may report, so a waiter that asked for
        // `EPOLLRDHUP` alone (or only gets `HUP`/`ERR`) is woken too.
        self.wq.wake(
            ksys::EPOLLIN
                | ksys::EPOLLRDNORM
                | ksys::EPOLLOUT
                | ksys::EPOLLWRNORM
                | ksys::EPOLLRDHUP
                | ksys::EPOLLHUP
                | ksys::EPOLLERR,
        );
    }
}

/// A socket file's receive side, in the core's table (under its mutex).
pub(crate) struct SockEntry {
    pub(crate) handle: Handle,
    /// The socket file; `None` for an accepted connection not handed over
    /// yet (its bytes are buffered until `Accept` makes its file).
    pub(crate) file: Option<Arc<SockFile>>,
    /// Bytes from the instance the app has not read (at most driver-core's
    /// window: credit goes back only as the app reads).
    rx: VecDeque<u8>,
    /// Datagrams from the instance the app has not read (dgram.rs), each
    /// its pair header and payload.
    pub(crate) dgrams: VecDeque<KVec<u8>>,
    /// A stream socket (else a datagram socket: dgram.rs).
    pub(crate) stream: bool,
    /// What the queued datagrams cost, their bookkeeping included
    /// (dgram.rs: bounded by driver-core's window).
    pub(crate) dgram_bytes: usize,
    /// The connect was answered 0, or a non-blocking one finished.
    pub(crate) connected: bool,
    /// A non-blocking connect was answered `EINPROGRESS` and has not
    /// finished yet.
    connecting: bool,
    /// A `Connect` was sent and its answer not taken yet (a blocking
    /// connect in flight, or a non-blocking one before its
    /// `EINPROGRESS`): as Linux's `SYN_SENT`, neither readable nor
    /// writable.
    connect_sent: bool,
    /// The peer sent its last byte.
    pub(crate) eof: bool,
    /// The connection was reset (errno), or 0.
    pub(crate) err: i32,
    /// `listen()` was answered 0: reads take accept tokens.
    listening: bool,
    /// Accept tokens not read yet (one per queued connection).
    tokens: u64,
    /// `shutdown(SHUT_WR)` was answered 0: writes are `EPIPE`.
    shut_wr: bool,
}

impl SockEntry {
    /// A read would not wait: an accept token on a listener; bytes, the
    /// end, a reset, or no connection (an error) on any other socket.
    fn readable(&self) -> bool {
        if self.listening {
            self.tokens > 0
        } else if !self.stream {
            !self.dgrams.is_empty() || self.eof || self.err != 0
        } else {
            !self.rx.is_empty() || self.eof || self.err != 0 || !(self.connected || self.connecting)
        }
    }

    /// Wakes the socket file's readers, writers and pollers (if it has a
    /// file yet).
    pub(crate) fn wake(&self) {
        if let Some(f) = &self.file {
            f.wake();
        }
    }

    fn new(handle: Handle, file: Option<Arc<SockFile>>, stream: bool, connected: bool) -> Self {
        SockEntry {
            handle,
            file,
            rx: VecDeque::new(),
            dgrams: VecDeque::new(),
            dgram_bytes: 0,
            stream,
            connected,
            connecting: false,
            connect_sent: false,
            eof: false,
            err: 0,
            listening: false,
            tokens: 0,
            shut_wr: false,
        }
    }
}

/// Instance `_inst` announced connection `h` (driver-core queued it on a
/// listener): its receive side now, its file when `Accept` hands it over.
/// Returns the identity driver-core keeps for it.
pub(crate) fn new_connection(
    socks: &mut AVec<SockEntry>,
    next_sock: &mut u64,
    h: Handle,
) -> core::result::Result<u64, driver_core::NoAppSide> {
    socks.try_reserve(1).map_err(|_| driver_core::NoAppSide)?;
    let id = *next_sock;
    *next_sock += 1;
    socks.push(SockEntry::new(h, None, true, true));
    Ok(id)
}

/// One more accept token on listener `l`.
pub(crate) fn token(socks: &mut AVec<SockEntry>, l: Handle) {
    if let Some(e) = socks.iter_mut().find(|e| e.handle == l) {
        e.tokens = e.tokens.saturating_add(1);
        e.wake();
    }
}

/// driver-core forgot `h`: an accepted connection never handed over goes
/// now (an entry with a file goes with its file's release).
pub(crate) fn forget(socks: &mut AVec<SockEntry>, h: Handle) {
    socks.retain(|e| e.handle != h || e.file.is_some());
}

/// Instance data for socket `h` (driver-core checked the window): into its
/// receive buffer. False if there is no such socket file any more, or no
/// memory (then the bytes are dropped and the socket reset).
pub(crate) fn data_in(socks: &mut AVec<SockEntry>, h: Handle, bytes: &[u8]) -> bool {
    let Some(e) = socks.iter_mut().find(|e| e.handle == h) else {
        return false;
    };
    if e.err != 0 {
        // Bytes were dropped here before (`ENOMEM`), or the connection
        // is over: nothing after a hole is delivered.
        return false;
    }
    if e.rx.try_reserve(bytes.len()).is_err() {
        e.err = ENOMEM_N;
        e.wake();
        return false;
    }
    e.rx.extend(bytes.iter().copied());
    e.wake();
    true
}

/// One `/dev/ins` status line for a socket file: its driver-core state,
/// send credit, bytes in flight from the instance, and bytes buffered.
pub(crate) fn status_line(
    e: &SockEntry,
    driver: &driver_core::Driver,
    w: &mut crate::instance::TextOut<'_>,
) -> core::fmt::Result {
    use core::fmt::Write;
    let Some(i) = driver.socket(e.handle) else {
        return Ok(());
    };
    writeln!(
        w,
        "socket {} {:?} instance {:?} credit {} inflight {} buffered {}{}{}{}",
        e.handle,
        i.state,
        i.inst,
        i.send_credit,
        i.recv_inflight,
        e.rx.len(),
        if e.connecting { " connecting" } else { "" },
        if e.eof { " eof" } else { "" },
        if e.err != 0 { " reset" } else { "" },
    )
}

/// Socket `h`'s non-blocking connect finished: connected (`errno` 0) or
/// failed (driver-core reported the reset before, with the same errno).
pub(crate) fn connect_done(socks: &mut AVec<SockEntry>, h: Handle, errno: i32) {
    if let Some(e) = socks.iter_mut().find(|e| e.handle == h) {
        e.connecting = false;
        e.connect_sent = false;
        if errno == 0 {
            e.connected = true;
        } else if e.err == 0 {
            e.err = errno;
        }
        e.wake();
    }
}

/// The peer ended socket `h`: EOF (`errno` 0) or reset.
pub(crate) fn peer_end(socks: &mut AVec<SockEntry>, h: Handle, errno: i32) {
    if let Some(e) = socks.iter_mut().find(|e| e.handle == h) {
        if errno == 0 {
            e.eof = true;
        } else {
            e.err = errno;
        }
        e.wake();
    }
}

/// One control request from the `/dev/ins` file `conn`.
pub(crate) fn control_ioctl(
    core: &Arc<Core>,
    sock_fops: *const bindings::file_operations,
    conn: u64,
    arg: usize,
) -> Result<c_long> {
    let mut io = KVec::from_elem(0u8, CONTROL_LEN, GFP_KERNEL)?;
    UserSlice::new(arg, CONTROL_LEN)
        .reader()
        .read_slice(&mut io)?;
    let fd = i32::from_ne_bytes([io[0], io[1], io[2], io[3]]);
    let len = u32::from_ne_bytes([io[4], io[5], io[6], io[7]]) as usize;
    let packet = io.get(8..8 + len.min(MAX_PACKET)).ok_or(EINVAL)?;
    if len > MAX_PACKET {
        return Err(EINVAL);
    }
    let req = Control::decode(packet).map_err(|_| EINVAL)?;
    let mut out = KVec::from_elem(0u8, CONTROL_LEN, GFP_KERNEL)?;
    let (ctl_len, new_file) = match req.op {
        Op::Socket => socket_op(core, sock_fops, &req, &mut out)?,
        // In-band options need what socket files do not have yet
        // (control.rs docs).
        Op::SockOpt => (reply_status(&req, EOPNOTSUPP_N, &mut out)?, None),
        Op::SetOpt if option_in_order(core, sock_fops, &req, fd) => {
            (reply_status(&req, 0, &mut out)?, None)
        }
        _ => shim_op(core, sock_fops, conn, &req, fd, &mut out)?,
    };
    out[4..8].copy_from_slice(&(ctl_len as u32).to_ne_bytes());
    let (newfd, file) = match new_file {
        Some((nfd, f)) => (nfd, f),
        None => (-1, core::ptr::null_mut()),
    };
    out[0..4].copy_from_slice(&newfd.to_ne_bytes());
    if let Err(e) = UserSlice::new(arg, CONTROL_LEN).writer().write_slice(&out) {
        if !file.is_null() {
            ksys::discard_file(newfd, file);
        }
        return Err(e);
    }
    if !file.is_null() {
        // SAFETY: `newfd` was reserved for this task and `file` is ours;
        // this hands our reference to the fd table.
        unsafe { bindings::fd_install(newfd as u32, file) };
    }
    Ok(0)
}

/// `setsockopt` of an option that goes in band (driver-core's
/// `set_option_in_order`: `TCP_CORK`, `TCP_NODELAY`, `SO_KEEPALIVE`, and
/// `TCP_KEEPIDLE`/`KEEPINTVL`/`KEEPCNT`/`USER_TIMEOUT` in their ranges) on
/// a connected stream socket file, not
/// cancelling an in-band record: driver-core's `SockOpt` frame goes onto
/// the instance's ring now, behind every byte written before (a write
/// pushes its frames, or they wait behind queued ones, before it returns),
/// and the app gets 0 without waiting for the instance, as the daemon's
/// in-band markers do. nginx's `tcp_nopush` sets `TCP_CORK` twice per
/// response: synchronously that was two round trips to the instance per
/// request. `false`: the synchronous `SetOpt` (and its errno) instead.
fn option_in_order(
    core: &Arc<Core>,
    sock_fops: *const bindings::file_operations,
    req: &Control<'_>,
    fd: i32,
) -> bool {
    let [level, name, cancel, _] = req.args;
    if cancel != 0 {
        return false;
    }
    let Some(h) = handle_of(fd, sock_fops) else {
        return false;
    };
    let mut guard = core.inner.lock();
    let inner = &mut *guard;
    if !inner
        .socks
        .iter()
        .any(|e| e.handle == h && e.stream && e.connected && e.err == 0)
    {
        return false;
    }
    if !inner
        .driver
        .set_option_in_order(h, level, name, req.value, &mut inner.actions)
    {
        return false;
    }
    if inner.execute() {
        core.replies_wq.wake(ksys::EPOLLIN);
    }
    true
}

/// Encodes a reply to `req` with `status` and nothing else into `out[8..]`.
fn reply_status(req: &Control<'_>, status: i32, out: &mut [u8]) -> Result<usize> {
    let r = Control::reply_to(req, status);
    r.encode(out.get_mut(8..).ok_or(EINVAL)?)
        .map_err(|_| EINVAL)
}

/// `socket()`: a socket file registered with driver-core.
fn socket_op(
    core: &Arc<Core>,
    sock_fops: *const bindings::file_operations,
    req: &Control<'_>,
    out: &mut [u8],
) -> Result<(usize, Option<(i32, *mut bindings::file)>)> {
    let [domain, ty, proto, _] = req.args;
    let handle = {
        let mut inner = core.inner.lock();
        let id = inner.next_sock;
        inner.next_sock += 1;
        match inner.driver.new_socket(id, domain, ty, proto) {
            Ok(h) => h,
            Err(errno) => return Ok((reply_status(req, errno, out)?, None)),
        }
    };
    let made = sock_file(core, handle).and_then(|sock| {
        let mut inner = core.inner.lock();
        inner.socks.try_reserve(1).map_err(|_| ENOMEM)?;
        inner
            .socks
            .push(SockEntry::new(handle, Some(sock.clone()), ty == 1, false));
        Ok(sock)
    });
    let sock = match made {
        Ok(s) => s,
        Err(e) => {
            let_go(core, handle);
            return Err(e);
        }
    };
    // Not close-on-exec, as socket() without SOCK_CLOEXEC (the shim sets
    // FD_CLOEXEC when the app asked for it).
    let (fd, f) = ksys::new_anon_file(c"[ins-socket]", sock_fops, sock, false)
        .inspect_err(|_| let_go(core, handle))?;
    Ok((reply_status(req, 0, out)?, Some((fd, f))))
}

/// A `SockFile` for `handle`, with its bounce buffers.
fn sock_file(core: &Arc<Core>, handle: Handle) -> Result<Arc<SockFile>> {
    let read_bounce = KVec::from_elem(0u8, READ_CHUNK, GFP_KERNEL)?;
    let write_bounce = KVec::from_elem(0u8, MAX_DATA, GFP_KERNEL)?;
    Arc::pin_init(
        pin_init!(SockFile {
            core: core.clone(),
            handle,
            wq <- WaitQueue::new(),
            reader <- kernel::new_mutex!(read_bounce),
            writer <- kernel::new_mutex!(write_bounce),
        }),
        GFP_KERNEL,
    )
}

/// `Accept` handed over connection `h`: its socket file (not installed).
/// `Ok(None)`: the connection is gone meanwhile (reset and forgotten), the
/// caller answers `EAGAIN` as for a token without a connection.
fn accepted_file(
    core: &Arc<Core>,
    sock_fops: *const bindings::file_operations,
    h: Handle,
) -> Result<Option<(i32, *mut bindings::file)>> {
    let sock = match sock_file(core, h) {
        Ok(s) => s,
        Err(e) => {
            let_go(core, h);
            return Err(e);
        }
    };
    {
        let mut inner = core.inner.lock();
        let Some(e) = inner.socks.iter_mut().find(|e| e.handle == h) else {
            return Ok(None);
        };
        e.file = Some(sock.clone());
    }
    // Not close-on-exec: the shim sets FD_CLOEXEC for accept4(SOCK_CLOEXEC).
    // On failure the file's release (or let_go) lets the connection go.
    let made = ksys::new_anon_file(c"[ins-socket]", sock_fops, sock, false)
        .inspect_err(|_| let_go(core, h))?;
    Ok(Some(made))
}

/// The app let go of `handle` (its file is gone, or was never made).
fn let_go(core: &Core, handle: Handle) {
    let mut guard = core.inner.lock();
    let inner = &mut *guard;
    inner.socks.retain(|e| e.handle != handle);
    inner.driver.app_eof(handle, true, &mut inner.actions);
    if inner.execute() {
        core.replies_wq.wake(ksys::EPOLLIN);
    }
}

/// The handle of the socket file `fd` names, if it is one of ours.
fn handle_of(fd: i32, sock_fops: *const bindings::file_operations) -> Option<Handle> {
    if fd < 0 {
        return None;
    }
    // SAFETY: plain lookup in the current task's table; a non-null result
    // is a reference we drop below.
    let f = unsafe { bindings::fget(fd as u32) };
    if f.is_null() {
        return None;
    }
    // SAFETY: `f` is a valid file we hold a reference on.
    let ours = core::ptr::eq(unsafe { (*f).f_op }, sock_fops);
    let h = if ours {
        // SAFETY: `f` is valid (as above).
        let private = unsafe { (*f).private_data };
        // SAFETY: one of our socket files: `private_data` is a live
        // `SockFile` while the file is (we hold a reference).
        let s = unsafe { &*(private as *const SockFile) };
        Some(s.handle)
    } else {
        None
    };
    // SAFETY: the reference fget() took.
    unsafe { bindings::fput(f) };
    h
}

/// Every other request: through driver-core; waits for its reply.
fn shim_op(
    core: &Arc<Core>,
    sock_fops: *const bindings::file_operations,
    conn: u64,
    req: &Control<'_>,
    fd: i32,
    out: &mut [u8],
) -> Result<(usize, Option<(i32, *mut bindings::file)>)> {
    let sock = handle_of(fd, sock_fops);
    {
        let mut guard = core.inner.lock();
        let inner = &mut *guard;
        if req.op == Op::Connect {
            // A stream socket neither connected nor connecting may connect
            // (again, after a failed one): the last attempt's error and
            // end of file are over. Cleared before driver-core can answer.
            if let Some(e) = sock.and_then(|h| inner.socks.iter_mut().find(|e| e.handle == h)) {
                if e.stream && !e.connected && !e.connecting {
                    e.err = 0;
                    e.eof = false;
                    e.connect_sent = true;
                }
            }
        }
        inner.driver.tick(now_ns(), &mut inner.actions);
        inner
            .driver
            .shim_request(conn, req, sock, &mut inner.actions);
        if inner.execute() {
            core.replies_wq.wake(ksys::EPOLLIN);
        }
    }
    let mut reply = None;
    let waited = core.replies_wq.wait_until(|| {
        let mut inner = core.inner.lock();
        if let Some(i) = inner
            .replies
            .iter()
            .position(|r| r.conn == conn && r.ctl.seq == req.seq)
        {
            reply = Some(inner.replies.swap_remove(i));
        }
        reply.is_some()
    });
    if waited.is_err() {
        return Err(EINTR);
    }
    let Some(r) = reply else {
        return Err(EINTR);
    };
    let mut ctl = r.ctl;
    if ctl.op == Op::Connect {
        if let Some(h) = sock {
            let mut inner = core.inner.lock();
            if let Some(e) = inner.socks.iter_mut().find(|e| e.handle == h) {
                e.connect_sent = false;
            }
        }
    }
    if ctl.op == Op::Connect && ctl.status == EINPROGRESS_N {
        // Connecting, unless its `ConnectDone` came already (an instance
        // may answer before this caller runs again).
        if let Some(h) = sock {
            let mut inner = core.inner.lock();
            if let Some(e) = inner.socks.iter_mut().find(|e| e.handle == h) {
                if e.stream && !e.connected && e.err == 0 {
                    e.connecting = true;
                }
            }
        }
    }
    if matches!(ctl.op, Op::Connect | Op::Listen) && ctl.status == 0 {
        if let Some(h) = sock {
            let mut inner = core.inner.lock();
            if let Some(e) = inner.socks.iter_mut().find(|e| e.handle == h) {
                if ctl.op == Op::Connect {
                    e.connected = true;
                } else {
                    e.listening = true;
                    e.wake();
                }
            }
        }
    }
    // SHUT_WR (1) or SHUT_RDWR (2) answered 0: the write side ends here,
    // after every byte written before (writes push onto the ring before
    // they return), as the daemon's pair EOF does.
    if ctl.op == Op::Shutdown && ctl.status == 0 && matches!(req.args[0], 1 | 2) {
        if let Some(h) = sock {
            let mut guard = core.inner.lock();
            let inner = &mut *guard;
            if let Some(e) = inner.socks.iter_mut().find(|e| e.handle == h) {
                e.shut_wr = true;
                e.wake();
            }
            inner.driver.app_eof(h, false, &mut inner.actions);
            if inner.execute() {
                core.replies_wq.wake(ksys::EPOLLIN);
            }
        }
    }
    let mut file = None;
    match r.fd {
        // A keeper is the daemon's way of keeping a listener or bound
        // datagram socket from reading EOF when the daemon goes; a socket
        // file never reads EOF for that, so nothing is passed.
        ReplyFd::None | ReplyFd::Keeper(_) => {}
        ReplyFd::AppEnd(h) => match accepted_file(core, sock_fops, h)? {
            Some(f) => file = Some(f),
            None => {
                ctl.status = EAGAIN_N;
                ctl.addr = None;
                ctl.addr2 = None;
            }
        },
    }
    let n = ctl
        .borrowed()
        .encode(out.get_mut(8..).ok_or(EINVAL)?)
        .map_err(|_| EINVAL);
    match n {
        Ok(n) => Ok((n, file)),
        Err(e) => {
            if let Some((nfd, f)) = file {
                ksys::discard_file(nfd, f);
            }
            Err(e)
        }
    }
}

/// Drops the replies nobody will take: `conn`'s `/dev/ins` file closed
/// (and replies that come for it later are dropped as they come).
pub(crate) fn conn_closed(core: &Core, conn: u64) {
    let mut inner = core.inner.lock();
    inner.replies.retain(|r| r.conn != conn);
    inner.conns.retain(|&c| c != conn);
}

/// The `SockFile` behind a socket file.
///
/// # Safety
///
/// `file` is one of our socket files (its `private_data` is the
/// `Arc<SockFile>` reference from `Arc::into_raw`, released only in
/// `release`, after which the VFS calls nothing else).
unsafe fn sock_of<'a>(file: *mut bindings::file) -> &'a SockFile {
    // SAFETY: `file` is valid (caller's contract).
    let private = unsafe { (*file).private_data };
    // SAFETY: a live `SockFile` until release (caller's contract).
    unsafe { &*(private as *const SockFile) }
}

/// Whether a read or write on `iocb` must not block.
///
/// # Safety
///
/// `iocb` is the valid kiocb the VFS passed.
unsafe fn nonblocking(iocb: *mut bindings::kiocb) -> bool {
    // SAFETY: `iocb` is valid during the call (caller's contract).
    let file = unsafe { (*iocb).ki_filp };
    // SAFETY: so is its file.
    let f_flags = unsafe { (*file).f_flags };
    // SAFETY: as above.
    let ki_flags = unsafe { (*iocb).ki_flags };
    // IOCB_NOWAIT = 0x8 (include/linux/fs.h).
    f_flags & bindings::O_NONBLOCK != 0 || ki_flags & 0x8 != 0
}

/// The head of `e`'s receive buffer (at most `want` bytes, and what
/// `bounce` holds) copied into `bounce`: `Some(k)` bytes, `Some(0)` when
/// there are none yet (wait), `None` at the end of the stream, which a
/// reset or a failed connect is too (the shim then asks driver-core for
/// the pending error once, `TakeError`, as at a daemon socket's end, so
/// `SO_ERROR`, `read` and `write` share one error as on Linux), or
/// `ENOTCONN` if it never connected, `ENOMEM` if bytes were dropped here.
/// Leaves the buffer as it is.
fn head(e: &SockEntry, want: usize, bounce: &mut [u8]) -> Result<Option<usize>> {
    let k = e.rx.len().min(want).min(bounce.len());
    if k > 0 {
        let (a, b) = e.rx.as_slices();
        let from_a = a.len().min(k);
        let (dst_a, dst_b) = bounce.split_at_mut(from_a);
        dst_a.copy_from_slice(a.get(..from_a).ok_or(EINVAL)?);
        let rest = k - from_a;
        dst_b
            .get_mut(..rest)
            .ok_or(EINVAL)?
            .copy_from_slice(b.get(..rest).ok_or(EINVAL)?);
        Ok(Some(k))
    } else if e.err == ENOMEM_N {
        // Bytes dropped here for want of memory: not the peer's doing, and
        // driver-core does not know of it.
        Err(ENOMEM)
    } else if e.err != 0 || e.eof {
        Ok(None)
    } else if !e.connected && !e.connecting {
        Err(Error::from_errno(-(bindings::ENOTCONN as i32)))
    } else {
        Ok(Some(0))
    }
}

impl SockFile {
    /// `read()`: bytes from the receive buffer; driver-core credits the
    /// instance for what the app took.
    ///
    /// # Safety
    ///
    /// `iter` is the valid destination iterator the VFS passed.
    unsafe fn read(&self, iter: *mut bindings::iov_iter, nonblock: bool) -> Result<usize> {
        if !self.stream()? {
            // SAFETY: the caller's contract.
            return unsafe { self.read_dgram(iter, nonblock) };
        }
        // SAFETY: `iter` is valid (caller's contract).
        let want = unsafe { ksys::iov_iter_count(iter) };
        if want == 0 {
            return Ok(0);
        }
        let mut bounce = self.reader.lock();
        loop {
            // Under the core's mutex: copy the head of the receive buffer
            // (kernel memory only), or learn why there is none.
            let k = {
                let mut guard = self.core.inner.lock();
                let e = guard
                    .socks
                    .iter_mut()
                    .find(|e| e.handle == self.handle)
                    .ok_or(EBADF)?;
                if e.listening {
                    // Accept tokens: one byte each.
                    let k = (e.tokens.min(want as u64) as usize).min(bounce.len());
                    if k > 0 {
                        e.tokens -= k as u64;
                        bounce.get_mut(..k).ok_or(EINVAL)?.fill(1);
                        drop(guard);
                        let src = bounce.get(..k).ok_or(EINVAL)?;
                        // SAFETY: `src` is readable for `k` bytes; `iter` is valid.
                        let c = unsafe { bindings::_copy_to_iter(src.as_ptr().cast(), k, iter) };
                        if c < k {
                            // Tokens not delivered go back.
                            let mut guard = self.core.inner.lock();
                            if let Some(e) =
                                guard.socks.iter_mut().find(|e| e.handle == self.handle)
                            {
                                e.tokens += (k - c) as u64;
                            }
                        }
                        return if c == 0 { Err(EFAULT) } else { Ok(c) };
                    }
                    if nonblock {
                        return Err(EAGAIN);
                    }
                    drop(guard);
                    // Not holding `reader` while asleep: another reader
                    // (a non-blocking one) must not wait on it.
                    drop(bounce);
                    self.wq.wait_until(|| self.readable())?;
                    bounce = self.reader.lock();
                    continue;
                }
                head(e, want, &mut bounce)?
            };
            let Some(k) = k else {
                return Ok(0);
            };
            if k > 0 {
                let src = bounce.get(..k).ok_or(EINVAL)?;
                // Outside the core's mutex: the app's memory may fault.
                // SAFETY: `src` is readable for `k` bytes; `iter` is valid.
                let c = unsafe { bindings::_copy_to_iter(src.as_ptr().cast(), k, iter) };
                if c == 0 {
                    return Err(EFAULT);
                }
                // Only this reader takes bytes off the buffer (it holds
                // `reader`) and data is only appended, so its head is still
                // the `c` bytes copied.
                let mut guard = self.core.inner.lock();
                let inner = &mut *guard;
                if let Some(e) = inner.socks.iter_mut().find(|e| e.handle == self.handle) {
                    e.rx.drain(..c.min(e.rx.len()));
                    let drained = e.rx.is_empty();
                    inner
                        .driver
                        .delivered(self.handle, c as u32, drained, &mut inner.actions);
                    if inner.execute() {
                        self.core.replies_wq.wake(ksys::EPOLLIN);
                    }
                }
                return Ok(c);
            }
            if nonblock {
                return Err(EAGAIN);
            }
            drop(bounce);
            self.wq.wait_until(|| self.readable())?;
            bounce = self.reader.lock();
        }
    }

    /// `recv(MSG_PEEK)` (`INS_IOC_PEEK`): the head of the receive buffer
    /// copied to the app's `buf` and left where it is; blocks as `read`
    /// does unless `nonblock`. A listening socket file has no bytes:
    /// `ENOTCONN`, as Linux's `recv` on a listener.
    fn peek(&self, buf: usize, want: usize, nonblock: bool) -> Result<usize> {
        if !self.stream()? {
            return self.peek_dgram(buf, want, nonblock);
        }
        if want == 0 {
            return Ok(0);
        }
        let mut bounce = self.reader.lock();
        loop {
            let k = {
                let guard = self.core.inner.lock();
                let e = guard
                    .socks
                    .iter()
                    .find(|e| e.handle == self.handle)
                    .ok_or(EBADF)?;
                if e.listening {
                    return Err(Error::from_errno(-(bindings::ENOTCONN as i32)));
                }
                head(e, want, &mut bounce)?
            };
            let Some(k) = k else {
                return Ok(0);
            };
            if k > 0 {
                // Outside the core's mutex: the app's memory may fault.
                UserSlice::new(buf, k)
                    .writer()
                    .write_slice(bounce.get(..k).ok_or(EINVAL)?)?;
                return Ok(k);
            }
            if nonblock {
                return Err(EAGAIN);
            }
            drop(bounce);
            self.wq.wait_until(|| self.readable())?;
            bounce = self.reader.lock();
        }
    }

    /// Whether this is a stream socket (else datagrams: dgram.rs).
    fn stream(&self) -> Result<bool> {
        let inner = self.core.inner.lock();
        inner
            .socks
            .iter()
            .find(|e| e.handle == self.handle)
            .map(|e| e.stream)
            .ok_or(EBADF)
    }

    pub(crate) fn readable(&self) -> bool {
        let inner = self.core.inner.lock();
        inner
            .socks
            .iter()
            .find(|e| e.handle == self.handle)
            .map_or(true, SockEntry::readable)
    }

    /// `write()`: `Data` frames within driver-core's send credit onto the
    /// instance's ring. Blocking writes put everything in; non-blocking
    /// ones what the credit and the ring admit now.
    ///
    /// # Safety
    ///
    /// `iter` is the valid source iterator the VFS passed.
    unsafe fn write(&self, iter: *mut bindings::iov_iter, nonblock: bool) -> Result<usize> {
        if !self.stream()? {
            // SAFETY: the caller's contract.
            return unsafe { self.write_dgram(iter, nonblock) };
        }
        let mut done = 0usize;
        let mut bounce = self.writer.lock();
        let err = |done: usize, e: Error| if done > 0 { Ok(done) } else { Err(e) };
        loop {
            // SAFETY: `iter` is valid (caller's contract).
            let left = unsafe { ksys::iov_iter_count(iter) };
            if left == 0 {
                return Ok(done);
            }
            // How much may go now: credit, one frame, ring room.
            let n = match self.sendable(left) {
                Ok(n) => n,
                Err(e) => return err(done, e),
            };
            if n > 0 {
                let buf = bounce.get_mut(..n).ok_or(EINVAL)?;
                // Outside the core's mutex: the app's memory may fault.
                // SAFETY: `buf` is writable for `n` bytes; `iter` is valid.
                // A short copy advances `iter` by `c`.
                let c = unsafe { bindings::_copy_from_iter(buf.as_mut_ptr().cast(), n, iter) };
                if c == 0 {
                    return err(done, EFAULT);
                }
                let chunk = buf.get(..c).ok_or(EINVAL)?;
                // Credit and room only grow meanwhile (this writer holds
                // `writer`), unless the socket was reset: check again.
                match self.push(chunk) {
                    Ok(true) => {
                        done += c;
                        continue;
                    }
                    Ok(false) => {
                        // SAFETY: `iter` was advanced by exactly `c`.
                        unsafe { bindings::iov_iter_revert(iter, c) };
                    }
                    Err(e) => {
                        // SAFETY: as above.
                        unsafe { bindings::iov_iter_revert(iter, c) };
                        return err(done, e);
                    }
                }
            }
            if nonblock {
                return err(done, EAGAIN);
            }
            // Not holding `writer` while asleep (a non-blocking writer
            // must not wait on it); Linux interleaves concurrent blocking
            // writes on a stream the same way.
            drop(bounce);
            if let Err(e) = self.wq.wait_until(|| self.writable()) {
                return err(done, e);
            }
            bounce = self.writer.lock();
        }
    }

    /// How many of `left` bytes may be sent now (0: wait), or why none
    /// ever will.
    fn sendable(&self, left: usize) -> Result<usize> {
        let mut guard = self.core.inner.lock();
        let inner = &mut *guard;
        let e = inner
            .socks
            .iter()
            .find(|e| e.handle == self.handle)
            .ok_or(EBADF)?;
        if e.err != 0 || e.shut_wr {
            return Err(EPIPE);
        }
        if !e.stream {
            return Err(Error::from_errno(-EOPNOTSUPP_N));
        }
        // Connecting: no credit yet; wait (or EAGAIN) as Linux does.
        let connected = e.connected || e.connecting;
        Ok(
            match inner.driver.send_credit(self.handle, &mut inner.actions) {
                None if !connected => return Err(Error::from_errno(-(bindings::ENOTCONN as i32))),
                None => 0,
                Some((inst, _, credit)) => left
                    .min(credit as usize)
                    .min(MAX_DATA)
                    .min(inner.data_room(inst)),
            },
        )
    }

    /// Pushes `chunk` as one `Data` frame if the credit and the ring still
    /// take it (`Ok(false)`: not now).
    fn push(&self, chunk: &[u8]) -> Result<bool> {
        let mut guard = self.core.inner.lock();
        let inner = &mut *guard;
        let Some((inst, wire, credit)) = inner.driver.send_credit(self.handle, &mut inner.actions)
        else {
            return Ok(false);
        };
        if (credit as usize) < chunk.len() || inner.data_room(inst) < chunk.len() {
            return Ok(false);
        }
        if !inner.push_data(inst, wire, chunk)? {
            return Ok(false);
        }
        inner.driver.consume_credit(self.handle, chunk.len() as u32);
        Ok(true)
    }

    fn writable(&self) -> bool {
        let mut guard = self.core.inner.lock();
        self.writable_in(&mut guard)
    }

    /// [`Self::writable`] under the core's mutex.
    fn writable_in(&self, inner: &mut CoreInner) -> bool {
        let Some(e) = inner.socks.iter().find(|e| e.handle == self.handle) else {
            return true;
        };
        if !e.stream {
            // A datagram socket: writable while its instance's credit and
            // ring take a datagram (an empty one, at least); not while it
            // is not placed on an instance (a write then waits: dgram.rs).
            if e.err != 0 {
                return true;
            }
            let w = match inner.driver.send_credit(self.handle, &mut inner.actions) {
                Some((inst, _, c)) => c > 0 && inner.data_to_fits(inst, 0),
                None => false,
            };
            inner.flush_actions(&self.core.replies_wq);
            return w;
        }
        if e.err != 0 || e.shut_wr || !(e.connected || e.connecting) {
            return true;
        }
        // Credit, and room on the instance's ring for a frame.
        match inner.driver.send_credit(self.handle, &mut inner.actions) {
            Some((inst, _, c)) if c > 0 => inner.data_room(inst) > 0,
            _ => false,
        }
    }

    /// What `poll` reports, under one hold of the core's mutex: as Linux's
    /// `tcp_poll`, a listener only readable (a token), a stream socket that
    /// never connected writable and hung up; otherwise readable, writable,
    /// and beyond those `EPOLLRDHUP` once
    /// the peer's end or a reset came, `EPOLLHUP` when the connection is
    /// over both ways (reset, failed connect, or end both ways), and
    /// `EPOLLERR` while driver-core holds an error `SO_ERROR` has not
    /// taken.
    fn poll_bits(&self) -> u32 {
        let mut guard = self.core.inner.lock();
        let inner = &mut *guard;
        const IN: u32 = ksys::EPOLLIN | ksys::EPOLLRDNORM;
        const OUT: u32 = ksys::EPOLLOUT | ksys::EPOLLWRNORM;
        match inner.socks.iter().find(|e| e.handle == self.handle) {
            None => return IN | OUT | ksys::EPOLLHUP,
            // A listener: readable with a token, never writable
            // (`inet_csk_listen_poll`).
            Some(e) if e.listening => return if e.tokens > 0 { IN } else { 0 },
            // A stream socket never connected: writable and hung up, not
            // readable (`TCP_CLOSE`), or nothing while its connect is in
            // flight (`SYN_SENT`).
            Some(e)
                if e.stream
                    && !(e.connected || e.connecting)
                    && e.err == 0
                    && !e.eof
                    && inner.driver.pending_error(self.handle) == 0 =>
            {
                return if e.connect_sent {
                    0
                } else {
                    OUT | ksys::EPOLLHUP
                };
            }
            Some(_) => {}
        }
        let mut bits = 0;
        if self.writable_in(inner) {
            bits |= OUT;
        }
        let Some(e) = inner.socks.iter().find(|e| e.handle == self.handle) else {
            return bits | IN | ksys::EPOLLHUP;
        };
        if e.readable() {
            bits |= IN;
        }
        if e.eof || e.err != 0 {
            bits |= ksys::EPOLLRDHUP;
        }
        if e.err != 0 || (e.eof && e.shut_wr) {
            bits |= ksys::EPOLLHUP;
        }
        if inner.driver.pending_error(self.handle) != 0 {
            bits |= ksys::EPOLLERR;
        }
        bits
    }
}

/// Largest payload of one `Data` frame from a socket file (frames are at
/// least MIN_FRAME = 1024 bytes with their 16-byte header).
const MAX_DATA: usize = 1024 - 16;
/// Largest read taken off a receive buffer at once.
const READ_CHUNK: usize = 16 * 1024;

/// One read or write on a socket file: `op` is [`SockFile::read`] or
/// [`SockFile::write`].
///
/// # Safety
///
/// Called by the VFS with a valid kiocb for one of our socket files and a
/// valid iterator of the direction `op` needs.
unsafe fn sock_rw(
    iocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
    op: unsafe fn(&SockFile, *mut bindings::iov_iter, bool) -> Result<usize>,
) -> isize {
    // SAFETY: the VFS passes a valid kiocb.
    let file = unsafe { (*iocb).ki_filp };
    // SAFETY: the kiocb is for one of our socket files.
    let sock = unsafe { sock_of(file) };
    // SAFETY: `iocb` is valid.
    let nb = unsafe { nonblocking(iocb) };
    // SAFETY: `iter` is valid for `op`'s direction (caller's contract).
    match unsafe { op(sock, iter, nb) } {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// `read_iter` of socket files.
///
/// # Safety
///
/// Called by the VFS with a valid kiocb for one of our socket files and a
/// valid destination iterator.
unsafe extern "C" fn sock_read_iter(
    iocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: as the VFS calls read_iter (this function's contract).
    unsafe { sock_rw(iocb, iter, SockFile::read) }
}

/// `write_iter` of socket files.
///
/// # Safety
///
/// Called by the VFS with a valid kiocb for one of our socket files and a
/// valid source iterator.
unsafe extern "C" fn sock_write_iter(
    iocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: as the VFS calls write_iter (this function's contract).
    unsafe { sock_rw(iocb, iter, SockFile::write) }
}

/// `poll` of socket files.
///
/// # Safety
///
/// Called by the VFS with one of our socket files and its poll table.
unsafe extern "C" fn sock_poll(
    file: *mut bindings::file,
    pt: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: the VFS passes one of our socket files.
    let sock = unsafe { sock_of(file) };
    // SAFETY: the queue lives in the SockFile, which the file keeps alive
    // until release, after poll/epoll entries are gone.
    unsafe { ksys::poll_wait(file, sock.wq.as_ptr(), pt.cast()) };
    sock.poll_bits()
}

/// `release` of socket files: the app let go.
///
/// # Safety
///
/// Called by the VFS once, when the last reference to one of our socket
/// files goes; no other operation on it follows.
unsafe extern "C" fn sock_release(_inode: *mut bindings::inode, file: *mut bindings::file) -> i32 {
    // SAFETY: the VFS passes the file being released.
    let private = unsafe { (*file).private_data };
    // SAFETY: last reference to one of our socket files: `private_data` is
    // the `Arc<SockFile>` reference from `Arc::into_raw`, never used again.
    let sock = unsafe { Arc::from_raw(private as *const SockFile) };
    let_go(&sock.core, sock.handle);
    0
}

/// `unlocked_ioctl` of socket files: `INS_IOC_PEEK`; anything else is
/// `ENOTTY`.
///
/// # Safety
///
/// Called by the VFS with one of our socket files, not released.
unsafe extern "C" fn sock_ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
    if cmd != INS_IOC_PEEK {
        return -(bindings::ENOTTY as c_long);
    }
    // SAFETY: the VFS passes one of our socket files.
    let sock = unsafe { sock_of(file) };
    // SAFETY: `file` is valid during the call.
    let f_flags = unsafe { (*file).f_flags };
    let mut io = [0u8; PEEK_LEN];
    if let Err(e) = UserSlice::new(arg, PEEK_LEN).reader().read_slice(&mut io) {
        return e.to_errno() as c_long;
    }
    let word = |at: usize| {
        io.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
    };
    let (Some(buf), Some(len)) = (word(0), word(8)) else {
        return -(bindings::EINVAL as c_long);
    };
    let flags = u32::from_ne_bytes([io[16], io[17], io[18], io[19]]);
    if flags & !PEEK_DONTWAIT != 0 {
        return -(bindings::EINVAL as c_long);
    }
    let nonblock = f_flags & bindings::O_NONBLOCK != 0 || flags & PEEK_DONTWAIT != 0;
    let want = usize::try_from(len).unwrap_or(usize::MAX);
    match sock.peek(buf as usize, want, nonblock) {
        Ok(n) => n as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// The socket files' operations (module lifetime).
pub(crate) fn sock_fops(owner: *mut bindings::module) -> bindings::file_operations {
    bindings::file_operations {
        owner,
        read_iter: Some(sock_read_iter),
        write_iter: Some(sock_write_iter),
        poll: Some(sock_poll),
        release: Some(sock_release),
        unlocked_ioctl: Some(sock_ioctl),
        llseek: Some(bindings::noop_llseek),
        // The generic helpers over read_iter/write_iter: splice and
        // sendfile (nginx's `sendfile on`) from and to the socket.
        splice_read: Some(bindings::copy_splice_read),
        splice_write: Some(bindings::iter_file_splice_write),
        // SAFETY: all-zero is a valid `file_operations` (no operation).
        ..unsafe { core::mem::zeroed() }
    }
}
