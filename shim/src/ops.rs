//! The INS side of each hooked call: safe code over `sys` and `ctl`.
//!
//! Every function here returns `Result<_, Errno>`; the hooks turn that into
//! the C convention (value, or -1 with errno). Errnos follow Linux: they are
//! either checked here exactly as the kernel checks (addresses, flags, state
//! the shim tracks) or come unchanged from the driver/instance.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ins_protocol::control::{MAX_VALUE, Op};

use crate::addr::{self, Parsed, Purpose};
use crate::config;
use crate::ctl::{self, CtlError, Request, Wait};
use crate::errno::Errno;
use crate::inband;
use crate::keeper;
use crate::route::{self, Route};
use crate::sys;
use crate::table::{Entry, TABLE};

static WARNED: AtomicBool = AtomicBool::new(false);
static CONFINED: AtomicBool = AtomicBool::new(false);

/// The process installed a seccomp filter (`prctl(PR_SET_SECCOMP)`, seen
/// by the hook; the mark is inherited by `fork`, as the filter is). Its
/// filter may kill it for the `socket()` that opens a control connection
/// (OpenSSH's pre-authentication child is killed so): the paths that can
/// answer without the driver then do ([`eof_error`], [`shutdown`]). An
/// image started by `exec` under an inherited filter is not marked, nor a
/// process whose filter went in through a raw `seccomp` system call.
pub fn note_confined() {
    CONFINED.store(true, Ordering::Relaxed);
}

fn confined() -> bool {
    CONFINED.load(Ordering::Relaxed)
}

fn warn_once(err: CtlError, fail_open: bool) {
    if WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    let why = match err {
        CtlError::Unreachable(e) | CtlError::Failed(e) => e.to_string(),
        CtlError::Interrupted => "interrupted".to_string(),
        CtlError::TimedOut => "timed out".to_string(),
    };
    let path = config::get().socket_path.to_string_lossy();
    let tail = if fail_open {
        "INS_FAIL_OPEN=1: Internet sockets use the host stack"
    } else {
        "Internet sockets fail (INS_FAIL_OPEN=1 to use the host stack)"
    };
    let line = format!("libshim: INS driver not reachable at {path}: {why}; {tail}\n");
    sys::write_stderr(line.as_bytes());
}

fn failed(e: CtlError) -> Errno {
    match e {
        CtlError::Failed(e)
            if matches!(
                e.0,
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
            ) =>
        {
            e
        }
        CtlError::Interrupted => Errno(libc::EINTR),
        _ => Errno::EIO,
    }
}

/// One prompt exchange about `fd`; a non-zero status is the error.
fn exchange(fd: i32, req: &Request<'_>) -> Result<ctl::Reply, Errno> {
    let r = ctl::call(req, Some(fd), true, Wait::Prompt).map_err(failed)?;
    if r.status != 0 {
        return Err(Errno(r.status));
    }
    Ok(r)
}

/// Classifies an fd the table does not know (inherited across `exec`, or
/// made by an unhooked call) and caches the answer. A Unix stream or
/// seqpacket socket is asked about with `Identify`, and so is the kernel
/// module's socket file when the module is in use.
pub fn classify(fd: i32) -> Entry {
    if !TABLE.fits(fd) {
        return Entry::HOST;
    }
    let (ty, is_sock) = match sys::fstat_type(fd) {
        Ok((t, _)) => (t, t == libc::S_IFSOCK),
        // Not open: nothing to cache; the real call reports EBADF.
        Err(_) => return Entry::HOST,
    };
    let e = if ty == 0
        && crate::kmod::is_socket_file(fd)
        && matches!(crate::kmod::device(), Ok(Some(_)))
    {
        // The kernel module's socket file (an anonymous inode) inherited
        // across exec (this image decides to use the module now, if it
        // had not): the module answers `Identify` as a daemon does.
        identify(fd)
    } else if is_sock
        && sys::sock_int_opt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) == Ok(libc::AF_UNIX)
        && matches!(
            sys::sock_int_opt(fd, libc::SOL_SOCKET, libc::SO_TYPE),
            Ok(libc::SOCK_STREAM | libc::SOCK_SEQPACKET)
        )
    {
        identify(fd)
    } else {
        Entry::HOST
    };
    let now = TABLE.resolve(fd, e);
    if now.is_ins() {
        // Whatever was cached under this number belonged to another socket.
        inband::forget(fd);
    }
    now
}

fn identify(fd: i32) -> Entry {
    let r = match ctl::call(&Request::new(Op::Identify), Some(fd), true, Wait::Prompt) {
        Ok(r) if r.status == 0 => r,
        _ => return Entry::HOST,
    };
    let [domain, ty, listening, _] = r.args;
    let v6 = match domain {
        libc::AF_INET => false,
        libc::AF_INET6 => true,
        _ => return Entry::HOST,
    };
    let dgram = match ty {
        libc::SOCK_STREAM => false,
        libc::SOCK_DGRAM => true,
        _ => return Entry::HOST,
    };
    let mut e = Entry::ins(v6, dgram);
    // The driver does not say whether a non-listening socket is connected;
    // assume so (data calls then go straight to the kernel, which answers
    // from the pair's state).
    e.0 |= if listening != 0 {
        Entry::LISTENING
    } else {
        Entry::CONNECTED
    };
    if keeper::may_keep(e)
        && let Some(k) = r.fd
    {
        keeper::keep(fd, k);
    }
    e
}

fn host_socket(domain: i32, ty: i32, protocol: i32) -> Result<i32, Errno> {
    let fd = sys::socket(domain, ty, protocol)?;
    TABLE.set(fd, Entry::HOST);
    Ok(fd)
}

/// `socket()`.
pub fn socket(domain: i32, ty: i32, protocol: i32) -> Result<i32, Errno> {
    let (v6, dgram, base, nonblock, cloexec) = match route::route(domain, ty, protocol) {
        Route::Host => return host_socket(domain, ty, protocol),
        Route::Deny(e) => return Err(e),
        Route::Ins {
            v6,
            dgram,
            base_type,
            nonblock,
            cloexec,
        } => (v6, dgram, base_type, nonblock, cloexec),
    };
    let req = Request {
        op: Op::Socket,
        args: [domain, base, protocol, 0],
        addr: None,
        value: &[],
    };
    match ctl::call(&req, None, cloexec, Wait::Prompt) {
        Ok(r) if r.status != 0 => Err(Errno(r.status)),
        Ok(r) => {
            let fd = r.fd.ok_or(Errno::EIO)?;
            let raw = fd.into_raw();
            if !TABLE.fits(raw) {
                sys::close(raw);
                return Err(Errno(libc::EMFILE));
            }
            if let Err(e) = sys::set_nonblock(raw, nonblock) {
                sys::close(raw);
                return Err(e);
            }
            TABLE.set(raw, Entry::ins(v6, dgram));
            inband::forget(raw);
            Ok(raw)
        }
        Err(CtlError::Failed(e)) if matches!(e.0, libc::EMFILE | libc::ENFILE) => Err(e),
        Err(e) => {
            let fail_open = config::get().fail_open;
            warn_once(e, fail_open);
            if fail_open {
                host_socket(domain, ty, protocol)
            } else {
                Err(Errno::EAFNOSUPPORT)
            }
        }
    }
}

/// `bind()`.
pub fn bind(fd: i32, e: Entry, sa: &[u8]) -> Result<(), Errno> {
    let a = match addr::parse(sa, e.v6(), e.dgram(), Purpose::Bind)? {
        Parsed::Addr(a) => a,
        Parsed::Unspec => return Err(Errno::EINVAL),
    };
    if e.dgram() && e.has(Entry::AUTOBOUND) {
        // Already bound (by a send, see `Entry::AUTOBOUND`, or by bind).
        return Err(Errno::EINVAL);
    }
    let r = exchange(
        fd,
        &Request {
            op: Op::Bind,
            args: [0; 4],
            addr: Some(a),
            value: &[],
        },
    )?;
    if e.dgram() {
        // Sends need no auto-bind now.
        TABLE.set_bits(fd, Entry::AUTOBOUND);
        if let Some(k) = r.fd {
            keeper::keep(fd, k);
        }
    }
    Ok(())
}

/// Binds an unbound datagram socket to an ephemeral port before its first
/// send, as Linux does (`inet_send_prepare`) even when the send then fails:
/// `getsockname` shows the port, other sockets get `EADDRINUSE` on it and
/// a later `bind()` says `EINVAL`. Once per socket (the `AUTOBOUND` bit).
pub fn autobind(fd: i32, e: Entry) -> Result<(), Errno> {
    if e.has(Entry::AUTOBOUND) || !TABLE.claim_bits(fd, Entry::AUTOBOUND) {
        return Ok(());
    }
    if e.connected() {
        // connect() bound it already.
        return Ok(());
    }
    let any = if e.v6() {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    let r = exchange(
        fd,
        &Request {
            op: Op::Bind,
            args: [1, 0, 0, 0],
            addr: Some(any),
            value: &[],
        },
    );
    match r {
        Ok(r) => {
            // A UDP client is kept as a server is (see `keeper`).
            if let Some(k) = r.fd {
                keeper::keep(fd, k);
            }
            Ok(())
        }
        Err(e) => {
            TABLE.clear_bits(fd, Entry::AUTOBOUND);
            Err(e)
        }
    }
}

/// `listen()`.
pub fn listen(fd: i32, e: Entry, backlog: i32) -> Result<(), Errno> {
    if e.dgram() {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    let (carried, n) = inband::take_pending(fd);
    let r = exchange(
        fd,
        &Request {
            op: Op::Listen,
            args: [backlog, 0, 0, 0],
            addr: None,
            value: &carried[..n],
        },
    )?;
    TABLE.clear_bits(fd, Entry::CONNECTED);
    TABLE.set_bits(fd, Entry::LISTENING);
    if let Some(k) = r.fd {
        keeper::keep(fd, k);
    }
    Ok(())
}

fn sndtimeo(fd: i32) -> Option<Duration> {
    let mut tv = [0u8; 16];
    let n = sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &mut tv).ok()?;
    if n != 16 {
        return None;
    }
    let sec = i64::from_ne_bytes(tv[..8].try_into().ok()?);
    let usec = i64::from_ne_bytes(tv[8..].try_into().ok()?);
    let d = Duration::from_secs(u64::try_from(sec).ok()?)
        + Duration::from_micros(u64::try_from(usec).ok()?);
    (!d.is_zero()).then_some(d)
}

/// `connect()`.
pub fn connect(fd: i32, e: Entry, sa: &[u8]) -> Result<(), Errno> {
    let target = match addr::parse(sa, e.v6(), e.dgram(), Purpose::Connect)? {
        Parsed::Addr(a) => Some(a),
        Parsed::Unspec => None,
    };
    let nonblocking = sys::get_nonblock(fd)?;
    let wait = if nonblocking || e.dgram() || target.is_none() {
        Wait::Prompt
    } else {
        Wait::Interruptible(sndtimeo(fd))
    };
    let (carried, n) = inband::take_pending(fd);
    let req = Request {
        op: Op::Connect,
        args: [i32::from(nonblocking), 0, 0, 0],
        addr: target,
        value: &carried[..n],
    };
    let mark = |ok: bool| {
        if ok && target.is_some() {
            TABLE.set_bits(fd, Entry::CONNECTED);
        } else if ok {
            // connect(AF_UNSPEC) also releases an auto-bound port.
            TABLE.clear_bits(fd, Entry::CONNECTED | Entry::AUTOBOUND);
        }
    };
    let in_progress = || TABLE.set_bits(fd, Entry::CONNECTING);
    match ctl::call(&req, Some(fd), true, wait) {
        Ok(r) => {
            mark(matches!(
                r.status,
                0 | libc::EINPROGRESS | libc::EALREADY | libc::EISCONN
            ));
            // A datagram connect carries the keeper (see `keeper`).
            if e.dgram()
                && r.status == 0
                && let Some(k) = r.fd
            {
                keeper::keep(fd, k);
            }
            match r.status {
                0 => {
                    TABLE.clear_bits(fd, Entry::CONNECTING);
                    Ok(())
                }
                libc::EINPROGRESS => {
                    in_progress();
                    Err(Errno(r.status))
                }
                // Linux: the first connect() after a non-blocking connect
                // completed reports success (SS_CONNECTING → SS_CONNECTED);
                // only later ones say EISCONN.
                libc::EISCONN if e.has(Entry::CONNECTING) && !e.dgram() => {
                    TABLE.clear_bits(fd, Entry::CONNECTING);
                    Ok(())
                }
                libc::EALREADY => Err(Errno(r.status)),
                s => {
                    TABLE.clear_bits(fd, Entry::CONNECTING);
                    Err(Errno(s))
                }
            }
        }
        Err(CtlError::TimedOut) => {
            mark(true);
            in_progress();
            Err(Errno(libc::EINPROGRESS))
        }
        Err(CtlError::Interrupted) => {
            mark(true);
            in_progress();
            Err(Errno(libc::EINTR))
        }
        Err(err) => Err(failed(err)),
    }
}

/// A token was read but the connection cannot be taken: the driver is
/// gone (or the exchange broke). The connection is lost as one aborted
/// before `accept` is on Linux (`ECONNABORTED`, which servers such as
/// nginx skip quietly); the fd-limit errors stay what they are.
fn accept_failed(e: CtlError) -> Errno {
    match e {
        CtlError::Unreachable(_) | CtlError::Failed(_) | CtlError::TimedOut => match failed(e) {
            Errno::EIO => Errno(libc::ECONNABORTED),
            e => e,
        },
        CtlError::Interrupted => Errno(libc::EINTR),
    }
}

/// `accept4()` on an INS listener: consume a token, take the connection.
/// Returns the new fd and the peer address.
pub fn accept(fd: i32, e: Entry, flags: i32) -> Result<(i32, Option<SocketAddr>), Errno> {
    if e.dgram() {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 || !e.listening() {
        return Err(Errno::EINVAL);
    }
    let cloexec = flags & libc::SOCK_CLOEXEC != 0;
    loop {
        match sys::read_token(fd)? {
            1 => {}
            // The listener was shut down.
            _ => return Err(Errno::EINVAL),
        }
        let r = ctl::call(&Request::new(Op::Accept), Some(fd), cloexec, Wait::Prompt)
            .map_err(accept_failed)?;
        if r.status == libc::EAGAIN {
            // A token without a queued connection (only after an instance
            // died between the two): like a connection aborted before
            // accept, try the next token, or report EAGAIN if non-blocking.
            if sys::get_nonblock(fd)? {
                return Err(Errno(libc::EAGAIN));
            }
            continue;
        }
        if r.status != 0 {
            return Err(Errno(r.status));
        }
        let nfd = r.fd.ok_or(Errno::EIO)?;
        if !TABLE.fits(nfd.raw()) {
            return Err(Errno(libc::EMFILE));
        }
        sys::set_nonblock(nfd.raw(), flags & libc::SOCK_NONBLOCK != 0)?;
        let raw = nfd.into_raw();
        TABLE.set(raw, Entry(Entry::ins(e.v6(), false).0 | Entry::CONNECTED));
        inband::forget(raw);
        return Ok((raw, r.addr));
    }
}

/// `shutdown()`: the driver answers the errno, then the app end is shut
/// down for real so the kernel's own EOF reaches the driver (and the
/// program's later reads see it). A confined process ([`note_confined`])
/// only shuts the app end: the driver's checks (`ENOTCONN` on a socket
/// never connected) and a read side's shutdown on the instance are
/// skipped; the write side's EOF still reaches the peer.
pub fn shutdown(fd: i32, _e: Entry, how: i32) -> Result<(), Errno> {
    if !(libc::SHUT_RD..=libc::SHUT_RDWR).contains(&how) {
        return Err(Errno::EINVAL);
    }
    if confined() {
        // No driver to ask (see `eof_error`): the app end is shut for
        // real, its EOF reaches the driver; the hang-up a shut read side
        // shows is the program's own doing, not an error.
        if how != libc::SHUT_WR {
            TABLE.set_bits(fd, Entry::ERR_TAKEN);
        }
        return match sys::shutdown(fd, how) {
            Err(e) if e.0 != libc::ENOTCONN => Err(e),
            _ => Ok(()),
        };
    }
    exchange(
        fd,
        &Request {
            op: Op::Shutdown,
            args: [how, 0, 0, 0],
            addr: None,
            value: &[],
        },
    )
    .map_err(forgotten_is_closed)?;
    if crate::kmod::active() {
        // A socket file is no socket: the module ended the write side
        // itself when it answered.
        return Ok(());
    }
    match sys::shutdown(fd, how) {
        Err(e) if e.0 != libc::ENOTCONN => Err(e),
        _ => Ok(()),
    }
}

/// `ENOTSOCK` from the driver about an fd the table knows as an INS socket:
/// the driver has forgotten it, which happens once both directions of a
/// stream were shut down (its end of the pair then reports hang-up as if
/// the app had closed it). Such a socket is closed: Linux answers
/// `ENOTCONN` to `shutdown`/`getpeername` on it.
fn forgotten_is_closed(e: Errno) -> Errno {
    if e.0 == libc::ENOTSOCK {
        Errno(libc::ENOTCONN)
    } else {
        e
    }
}

/// The socket's pending error (0 if none), cleared.
pub fn take_error(fd: i32) -> Result<i32, Errno> {
    Ok(exchange(fd, &Request::new(Op::TakeError))?.args[0])
}

/// At end-of-file on a stream read: the pending error (once per fd), or 0.
///
/// The driver keeps an error only for a connection it reset (or whose
/// connect failed), and then shuts its end of the pair both ways, so the
/// app end hangs up; a plain end-of-file (the peer's FIN) shuts only the
/// driver end's write side. Without hang-up there is nothing to ask, and
/// no control connection is needed. A connect still in progress is asked
/// regardless (the driver shuts its end both ways only once the connect
/// filler is drained).
///
/// A confined process ([`note_confined`]: it installed a seccomp filter,
/// as OpenSSH's pre-authentication child does, which kills it for the
/// `socket()` a control connection needs) does not ask about a connected
/// stream: there a hang-up reads as `ECONNRESET`, what a reset gives on
/// Linux, with no system call beyond the `poll` that sees the hang-up.
/// The driver's actual error may be another (`ETIMEDOUT` after a
/// keep-alive or user timeout); a confined process reads `ECONNRESET` for
/// it too. A connect of its own still in progress needed the driver
/// already, so its error is asked for.
pub fn eof_error(fd: i32) -> i32 {
    let connecting = TABLE.get(fd).has(Entry::CONNECTING);
    if !connecting && !sys::hung_up(fd) {
        return 0;
    }
    if !TABLE.claim_bits(fd, Entry::ERR_TAKEN) {
        return 0;
    }
    if confined() && !connecting {
        return libc::ECONNRESET;
    }
    take_error(fd).unwrap_or(0)
}

const SO_RCVTIMEO_NEW: i32 = 66;
const SO_SNDTIMEO_NEW: i32 = 67;

fn is_timeout_opt(level: i32, name: i32) -> bool {
    level == libc::SOL_SOCKET
        && matches!(
            name,
            libc::SO_RCVTIMEO | libc::SO_SNDTIMEO | SO_RCVTIMEO_NEW | SO_SNDTIMEO_NEW
        )
}

/// An option value to hand back: bytes to copy and the length to report.
pub struct OptOut {
    /// Value bytes (the first `copy` are copied out).
    pub buf: [u8; MAX_VALUE],
    /// Bytes to copy into the caller's buffer.
    pub copy: usize,
    /// Value for `*optlen`.
    pub report: usize,
}

fn int_opt(v: i32, avail: usize) -> OptOut {
    let mut buf = [0u8; MAX_VALUE];
    buf[..4].copy_from_slice(&v.to_ne_bytes());
    let n = avail.min(4);
    OptOut {
        buf,
        copy: n,
        report: n,
    }
}

/// `getsockopt()` with `*optlen == avail`.
pub fn getsockopt(fd: i32, e: Entry, level: i32, name: i32, avail: i32) -> Result<OptOut, Errno> {
    if let Some(r) = inband::get(fd, e, level, name, avail) {
        let (v, copy) = r?;
        let mut out = int_opt(v, 4);
        out.copy = copy;
        out.report = copy;
        return Ok(out);
    }
    let avail = usize::try_from(avail).map_err(|_| Errno::EINVAL)?;
    if level == libc::SOL_SOCKET {
        let local = match name {
            libc::SO_TYPE => Some(if e.dgram() {
                libc::SOCK_DGRAM
            } else {
                libc::SOCK_STREAM
            }),
            libc::SO_DOMAIN => Some(e.domain()),
            libc::SO_PROTOCOL => Some(if e.dgram() {
                libc::IPPROTO_UDP
            } else {
                libc::IPPROTO_TCP
            }),
            libc::SO_ACCEPTCONN => Some(i32::from(e.listening())),
            libc::SO_ERROR => Some(take_error(fd)?),
            _ => None,
        };
        if let Some(v) = local {
            return Ok(int_opt(v, avail));
        }
    }
    let want = avail.min(MAX_VALUE);
    if is_timeout_opt(level, name) {
        let mut buf = [0u8; MAX_VALUE];
        let n = sys::getsockopt_bytes(fd, level, name, &mut buf[..want])?;
        return Ok(OptOut {
            buf,
            copy: n.min(want),
            report: n,
        });
    }
    let req = Request {
        op: Op::GetOpt,
        args: [level, name, want as i32, 0],
        addr: None,
        value: &[],
    };
    let r = exchange(fd, &req)?;
    let v = r.value();
    let mut buf = [0u8; MAX_VALUE];
    buf[..v.len()].copy_from_slice(v);
    Ok(OptOut {
        buf,
        copy: v.len().min(avail),
        report: v.len(),
    })
}

/// `setsockopt()`. BPF attachments are refused (`ENOPROTOOPT`: their value
/// points into this process and means nothing to an instance); values over
/// 256 bytes are `EINVAL`. On a connected stream the options of
/// [`inband`] travel in band, and timeouts are the app end's alone.
pub fn setsockopt(fd: i32, e: Entry, level: i32, name: i32, val: &[u8]) -> Result<(), Errno> {
    if level == libc::SOL_SOCKET
        && matches!(
            name,
            libc::SO_ATTACH_FILTER
                | libc::SO_ATTACH_BPF
                | libc::SO_ATTACH_REUSEPORT_CBPF
                | libc::SO_ATTACH_REUSEPORT_EBPF
        )
    {
        return Err(Errno(libc::ENOPROTOOPT));
    }
    if val.len() > MAX_VALUE {
        return Err(Errno::EINVAL);
    }
    if is_timeout_opt(level, name) && !e.dgram() && e.connected() && !e.listening() {
        // Only the app end blocks; the instance never does.
        return sys::setsockopt_bytes(fd, level, name, val);
    }
    let cancel = match inband::set(fd, e, level, name, val) {
        inband::Set::Done(r) => return r,
        inband::Set::Sync => [0, 0],
        inband::Set::SyncCancel(seq) => [1, seq as i32],
    };
    exchange(
        fd,
        &Request {
            op: Op::SetOpt,
            args: [level, name, cancel[0], cancel[1]],
            addr: None,
            value: val,
        },
    )?;
    inband::synced(fd, level, name, val);
    if level == libc::SOL_SOCKET && name == libc::SO_SNDBUF && !e.dgram() {
        // The app end's own buffer decides when a write blocks and when
        // poll says writable: it follows what the program asked for, as a
        // TCP socket's would (capped by net.core.wmem_max, as it is).
        let _ = sys::setsockopt_bytes(fd, level, name, val);
    }
    if is_timeout_opt(level, name) {
        // Mirror on the app end, so reads, writes and a blocking connect
        // time out as the program asked.
        sys::setsockopt_bytes(fd, level, name, val)?;
    }
    Ok(())
}

/// `getsockname()`.
pub fn getsockname(fd: i32, e: Entry) -> Result<SocketAddr, Errno> {
    let r = exchange(fd, &Request::new(Op::GetSockName))?;
    Ok(r.addr.unwrap_or_else(|| addr::unspecified(e.v6())))
}

/// `getpeername()`.
pub fn getpeername(fd: i32, _e: Entry) -> Result<SocketAddr, Errno> {
    let r = exchange(fd, &Request::new(Op::GetPeerName)).map_err(forgotten_is_closed)?;
    r.addr.ok_or(Errno(libc::ENOTCONN))
}
