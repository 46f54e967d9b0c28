//! The exported C symbols.
//!
//! Every hook starts with one table lookup. Host fds (and calls made while
//! the shim itself is running, see [`IN_SHIM`]) go straight to the real
//! function: no lock, no allocation, errno untouched. INS fds take the slow
//! paths in [`run`], which set the re-entry guard, catch panics (→ `EIO`),
//! and restore the caller's errno on success.
//!
//! Stream INS fds are real Unix stream sockets, so their data calls are the
//! kernel's own; the shim only checks state Linux would refuse (reading an
//! unconnected or listening socket: `ENOTCONN`; writing one: `EPIPE` and
//! `SIGPIPE`), strips addresses Unix sockets would reject, reports a stream
//! peer address as absent (as TCP does), and turns end-of-file into the
//! socket's pending error once (`TakeError`, asked only when the pair's end
//! hangs up: see `ops::eof_error`). Datagram INS fds add and strip
//! the 72-byte pair header ([`frame`]) on every packet, and carry
//! `sendmsg`/`recvmsg` packet information ([`crate::cmsg`]) in it.
//!
//! ABI note: `fcntl`/`fcntl64` and `prctl` are variadic in C; the hooks
//! take the variadic arguments as `c_ulong`, which is how an int or pointer
//! argument arrives on x86_64 (SysV) and aarch64 (AAPCS64, Linux) alike.
//! Not portable beyond those.
//!
//! Size: over 800 lines because it holds every exported C symbol and nothing
//! else (one short function each, all with the same lookup-then-forward
//! shape); the work is in `ops`, `inband`, `resolve` and the other modules.

use std::cell::Cell;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use libc::{
    c_int, c_uint, c_ulong, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t,
    timespec,
};

use crate::addr::{self, MAX_ADDR_LEN, Parsed, Purpose};
use crate::cmsg;
use crate::ctl;
use crate::errno::Errno;
use crate::frame;
use crate::inband;
use crate::keeper;
use crate::ops;
use crate::sys::{self, real};
use crate::table::{Entry, TABLE};
use ins_protocol::msg::{PktInfo, WireAddr};

thread_local! {
    /// Set while the shim runs a slow path: hooked calls made from inside
    /// (by std, by the panic machinery) go straight to libc.
    static IN_SHIM: Cell<bool> = const { Cell::new(false) };
}

/// `UIO_MAXIOV`.
const MAX_IOV: usize = 1024;
/// iovecs kept on the stack for a datagram (header + this many − 1).
const STACK_IOV: usize = 64;

pub(crate) fn in_shim() -> bool {
    IN_SHIM.with(|g| g.get())
}

/// Runs a slow path under the guard, panic-free towards C.
fn run<T: Copy>(fail: T, f: impl FnOnce() -> Result<T, Errno>) -> T {
    let saved = sys::errno();
    IN_SHIM.with(|g| g.set(true));
    let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(Errno::EIO));
    IN_SHIM.with(|g| g.set(false));
    match r {
        Ok(v) => {
            sys::set_errno(saved);
            v
        }
        Err(e) => {
            sys::set_errno(e.0);
            fail
        }
    }
}

/// The entry of `fd`; classifies unknown fds once. Inside the shim every
/// fd is a host fd.
#[inline(always)]
fn lookup(fd: c_int) -> Entry {
    let e = TABLE.get(fd);
    if e.is_host() {
        return e;
    }
    lookup_slow(fd, e)
}

#[cold]
fn lookup_slow(fd: c_int, e: Entry) -> Entry {
    if in_shim() {
        return Entry::HOST;
    }
    if e.is_unknown() {
        return run(Entry::HOST, || Ok(ops::classify(fd)));
    }
    e
}

fn fail<T: From<i8>>(e: c_int) -> T {
    sys::set_errno(e);
    T::from(-1)
}

/// Borrowed address bytes from a caller's `(addr, len)`.
///
/// # Safety
/// `addr` must be null or readable for `len` bytes (up to 128 are read).
unsafe fn addr_bytes<'a>(addr: *const sockaddr, len: socklen_t) -> Result<&'a [u8], Errno> {
    let len = len as usize;
    if len > MAX_ADDR_LEN {
        return Err(Errno::EINVAL);
    }
    if len == 0 {
        return Ok(&[]);
    }
    if addr.is_null() {
        return Err(Errno::EFAULT);
    }
    // SAFETY: the caller passed len readable bytes at addr.
    Ok(unsafe { std::slice::from_raw_parts(addr.cast::<u8>(), len) })
}

/// Writes `sa` like the kernel's `move_addr_to_user`.
///
/// # Safety
/// `addr` must be writable for `avail` bytes, `len` writable.
unsafe fn put_addr(
    addr: *mut sockaddr,
    len: *mut socklen_t,
    avail: i32,
    sa: Option<SocketAddr>,
) -> Result<(), Errno> {
    let Some(sa) = sa else {
        // SAFETY: len is writable.
        unsafe { *len = 0 };
        return Ok(());
    };
    let (buf, real_len) = addr::encode(&sa);
    let n = addr::copy_len(avail, real_len)?;
    if n > 0 {
        // SAFETY: addr is writable for avail ≥ n bytes; buf holds real_len ≥ n.
        unsafe { ptr::copy_nonoverlapping(buf.as_ptr(), addr.cast::<u8>(), n) };
    }
    // SAFETY: len is writable.
    unsafe { *len = real_len as socklen_t };
    Ok(())
}

/// `*len` of an address output argument, checked (`EFAULT`, `EINVAL`).
///
/// # Safety
/// `len` must be null or readable.
unsafe fn addr_avail(addr: *mut sockaddr, len: *mut socklen_t) -> Result<Option<i32>, Errno> {
    if addr.is_null() {
        return Ok(None);
    }
    if len.is_null() {
        return Err(Errno::EFAULT);
    }
    // SAFETY: len is non-null and, per the caller, readable.
    let avail = unsafe { *len } as i32;
    if avail < 0 {
        return Err(Errno::EINVAL);
    }
    Ok(Some(avail))
}

// ---------------------------------------------------------------- sockets

/// `socket(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    if !matches!(domain, libc::AF_INET | libc::AF_INET6 | libc::AF_PACKET) || in_shim() {
        // SAFETY: forwarded.
        let fd = unsafe { real::socket(domain, ty, protocol) };
        TABLE.set(fd, Entry::HOST);
        return fd;
    }
    run(-1, || ops::socket(domain, ty, protocol))
}

/// `socketpair(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    protocol: c_int,
    sv: *mut c_int,
) -> c_int {
    // SAFETY: forwarded.
    let r = unsafe { real::socketpair(domain, ty, protocol, sv) };
    if r == 0 {
        for i in 0..2 {
            // SAFETY: on success the kernel wrote two fds to sv.
            let fd = unsafe { *sv.wrapping_add(i) };
            TABLE.set(fd, Entry::HOST);
        }
    }
    r
}

/// `bind(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::bind(fd, addr, len) };
    }
    run(-1, || {
        // SAFETY: the caller's (addr, len).
        let b = unsafe { addr_bytes(addr, len) }?;
        ops::bind(fd, e, b).map(|()| 0)
    })
}

/// `listen(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::listen(fd, backlog) };
    }
    run(-1, || ops::listen(fd, e, backlog).map(|()| 0))
}

/// `connect(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::connect(fd, addr, len) };
    }
    run(-1, || {
        // SAFETY: the caller's (addr, len).
        let b = unsafe { addr_bytes(addr, len) }?;
        ops::connect(fd, e, b).map(|()| 0)
    })
}

unsafe fn accept_ins(
    fd: c_int,
    e: Entry,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    run(-1, || {
        // SAFETY: the caller's (addr, len).
        let avail = unsafe { addr_avail(addr, len) }?;
        let (nfd, peer) = ops::accept(fd, e, flags)?;
        if let Some(avail) = avail {
            let peer = peer.unwrap_or_else(|| addr::unspecified(e.v6()));
            // SAFETY: addr is writable for avail bytes, len writable.
            if let Err(err) = unsafe { put_addr(addr, len, avail, Some(peer)) } {
                TABLE.on_close(nfd);
                sys::close(nfd);
                return Err(err);
            }
        }
        Ok(nfd)
    })
}

/// `accept(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        let r = unsafe { real::accept(fd, addr, len) };
        TABLE.set(r, Entry::HOST);
        return r;
    }
    // SAFETY: the caller's arguments.
    unsafe { accept_ins(fd, e, addr, len, 0) }
}

/// `accept4(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        let r = unsafe { real::accept4(fd, addr, len, flags) };
        TABLE.set(r, Entry::HOST);
        return r;
    }
    // SAFETY: the caller's arguments.
    unsafe { accept_ins(fd, e, addr, len, flags) }
}

/// `shutdown(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::shutdown(fd, how) };
    }
    run(-1, || ops::shutdown(fd, e, how).map(|()| 0))
}

/// `getsockopt(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::getsockopt(fd, level, name, val, len) };
    }
    run(-1, || {
        if len.is_null() {
            return Err(Errno::EFAULT);
        }
        // SAFETY: len is non-null and readable per the C contract.
        let avail = unsafe { *len } as i32;
        let out = ops::getsockopt(fd, e, level, name, avail)?;
        if out.copy > 0 {
            if val.is_null() {
                return Err(Errno::EFAULT);
            }
            // SAFETY: val is writable for avail ≥ copy bytes.
            unsafe { ptr::copy_nonoverlapping(out.buf.as_ptr(), val.cast::<u8>(), out.copy) };
        }
        // SAFETY: len is writable.
        unsafe { *len = out.report as socklen_t };
        Ok(0)
    })
}

/// `setsockopt(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::setsockopt(fd, level, name, val, len) };
    }
    run(-1, || {
        if (len as i32) < 0 {
            return Err(Errno::EINVAL);
        }
        let n = len as usize;
        if n > ins_protocol::control::MAX_VALUE {
            return Err(Errno::EINVAL);
        }
        let v: &[u8] = if n == 0 {
            &[]
        } else if val.is_null() {
            return Err(Errno::EFAULT);
        } else {
            // SAFETY: val is readable for len bytes per the C contract.
            unsafe { std::slice::from_raw_parts(val.cast::<u8>(), n) }
        };
        ops::setsockopt(fd, e, level, name, v).map(|()| 0)
    })
}

unsafe fn name_ins(
    fd: c_int,
    e: Entry,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    peer: bool,
) -> c_int {
    run(-1, || {
        if addr.is_null() {
            return Err(Errno::EFAULT);
        }
        // SAFETY: the caller's (addr, len).
        let avail = unsafe { addr_avail(addr, len) }?.unwrap_or(0);
        let sa = if peer {
            ops::getpeername(fd, e)?
        } else {
            ops::getsockname(fd, e)?
        };
        // SAFETY: addr writable for avail bytes, len writable.
        unsafe { put_addr(addr, len, avail, Some(sa)) }?;
        Ok(0)
    })
}

/// `getsockname(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::getsockname(fd, addr, len) };
    }
    // SAFETY: the caller's arguments.
    unsafe { name_ins(fd, e, addr, len, false) }
}

/// `getpeername(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::getpeername(fd, addr, len) };
    }
    // SAFETY: the caller's arguments.
    unsafe { name_ins(fd, e, addr, len, true) }
}

// ------------------------------------------------------------ fd lifetime

/// `close(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let e = TABLE.on_close(fd);
    if e == Entry::CONTROL {
        ctl::forget(fd);
    } else if e.is_ins() {
        inband::forget(fd);
        if keeper::may_keep(e) {
            keeper::release(fd);
        }
    }
    // SAFETY: forwarded.
    unsafe { real::close(fd) }
}

/// `dup(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: forwarded.
    let r = unsafe { real::dup(fd) };
    if r >= 0 {
        on_dup(fd, r);
    }
    r
}

/// `new` is now a copy of `old`: the fd table, the option cache and a
/// keeper follow.
fn on_dup(old: c_int, new: c_int) {
    TABLE.on_dup(old, new);
    let e = TABLE.get(new);
    if e.is_ins() {
        inband::on_dup(old, new);
    } else {
        inband::forget(new);
    }
    if keeper::may_keep(e) {
        keeper::copy(old, new);
    }
}

/// Before `dup2`/`dup3` onto `new`; returns whether `new` may have had a
/// keeper (it goes once the call replaced the fd).
fn before_dup_onto(old: c_int, new: c_int) -> bool {
    let e = TABLE.get(new);
    if old != new && e == Entry::CONTROL {
        ctl::forget(new);
    }
    old != new && keeper::may_keep(e)
}

/// After `dup2`/`dup3` onto `new` returned `r`.
fn after_dup_onto(old: c_int, new: c_int, r: c_int, was_kept: bool) {
    if r >= 0 && old != new {
        if was_kept {
            keeper::release(new);
        }
        on_dup(old, new);
    }
}

/// `dup2(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    let was_kept = before_dup_onto(old, new);
    // SAFETY: forwarded.
    let r = unsafe { real::dup2(old, new) };
    after_dup_onto(old, new, r, was_kept);
    r
}

/// `dup3(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    let was_kept = before_dup_onto(old, new);
    // SAFETY: forwarded.
    let r = unsafe { real::dup3(old, new, flags) };
    after_dup_onto(old, new, r, was_kept);
    r
}

fn after_fcntl(fd: c_int, cmd: c_int, r: c_int) -> c_int {
    if r >= 0 && matches!(cmd, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC) {
        on_dup(fd, r);
    }
    r
}

/// `fcntl(2)` (see the module's ABI note).
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: forwarded.
    after_fcntl(fd, cmd, unsafe { real::fcntl(fd, cmd, arg) })
}

/// `fcntl64` (glibc's target of `fcntl` under `_FILE_OFFSET_BITS=64`).
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: forwarded.
    after_fcntl(fd, cmd, unsafe { real::fcntl64(fd, cmd, arg) })
}

/// `prctl(2)` (variadic in C: see the module's ABI note). A seccomp filter
/// that goes in makes the process confined (`ops::note_confined`).
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn prctl(
    option: c_int,
    a2: c_ulong,
    a3: c_ulong,
    a4: c_ulong,
    a5: c_ulong,
) -> c_int {
    // SAFETY: forwarded.
    let r = unsafe { real::prctl(option, a2, a3, a4, a5) };
    if r == 0 && option == libc::PR_SET_SECCOMP {
        ops::note_confined();
    }
    r
}

// ------------------------------------------------------------ stream data

/// Reading a stream INS socket that cannot have data: `ENOTCONN`.
fn stream_read_refused(e: Entry) -> bool {
    e.listening() || !e.connected()
}

/// End-of-file on a stream INS socket: the pending error once, else 0.
fn stream_eof(fd: c_int) -> ssize_t {
    run(-1, || match ops::eof_error(fd) {
        0 => Ok(0),
        err => Err(Errno(err)),
    })
}

/// A stream write failed with `r`/errno: an `EPIPE` may hide the socket's
/// real error (`ECONNRESET`), reported once and without `SIGPIPE`, as
/// Linux's `sk_stream_error` does; a plain `EPIPE` raises `SIGPIPE` unless
/// the caller's `flags` have `MSG_NOSIGNAL`. The write itself went to the
/// kernel with `MSG_NOSIGNAL` (the signal is decided here).
fn stream_write_result(fd: c_int, r: ssize_t, flags: c_int) -> ssize_t {
    if r < 0 && sys::errno() == libc::EPIPE {
        let err = run(0, || Ok(ops::eof_error(fd)));
        if err != 0 {
            return fail(err);
        }
        if flags & libc::MSG_NOSIGNAL == 0 {
            sys::raise_sigpipe();
        }
        sys::set_errno(libc::EPIPE);
    }
    r
}

/// Writing a stream INS socket that is not connected: `EPIPE` (+`SIGPIPE`).
fn stream_write_refused(e: Entry, flags: c_int) -> Option<ssize_t> {
    if e.listening() || !e.connected() {
        if flags & libc::MSG_NOSIGNAL == 0 {
            sys::raise_sigpipe();
        }
        return Some(fail(libc::EPIPE));
    }
    None
}

/// Sum of iovec lengths (`EINVAL` on overflow past `ssize_t`).
///
/// # Safety
/// `iov` readable for `n` entries (or `n == 0`).
unsafe fn iov_total(iov: *const iovec, n: usize) -> Result<usize, Errno> {
    let mut total: usize = 0;
    for i in 0..n {
        // SAFETY: i < n entries readable.
        let l = unsafe { (*iov.wrapping_add(i)).iov_len };
        total = total
            .checked_add(l)
            .filter(|t| *t <= isize::MAX as usize)
            .ok_or(Errno::EINVAL)?;
    }
    Ok(total)
}

// ---------------------------------------------------------- datagram data

/// Runs `f` with an iovec array `[header, user…]`.
///
/// # Safety
/// `user` readable for `n ≤ MAX_IOV` entries (or `n == 0`).
unsafe fn with_header_iov<R>(
    hdr: *mut u8,
    user: *const iovec,
    n: usize,
    f: impl FnOnce(*mut iovec, usize) -> R,
) -> R {
    let first = iovec {
        iov_base: hdr.cast(),
        iov_len: frame::HEADER_LEN,
    };
    let empty = iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    };
    if n < STACK_IOV {
        let mut v = [empty; STACK_IOV];
        v[0] = first;
        if n > 0 {
            let dst = v[1..].as_mut_ptr();
            // SAFETY: user has n readable entries; v[1..] has room for n.
            unsafe { ptr::copy_nonoverlapping(user, dst, n) };
        }
        f(v.as_mut_ptr(), n + 1)
    } else {
        let mut v = Vec::with_capacity(n + 1);
        v.push(first);
        for i in 0..n {
            // SAFETY: i < n entries readable.
            v.push(unsafe { *user.wrapping_add(i) });
        }
        f(v.as_mut_ptr(), n + 1)
    }
}

/// Sends one datagram on a UDP INS fd; `control`: `sendmsg`'s control
/// messages ([`cmsg::parse_send`]).
///
/// # Safety
/// `iov` readable for `n` entries; `dest` (if any) as `addr_bytes`.
unsafe fn udp_send(
    fd: c_int,
    e: Entry,
    iov: *const iovec,
    n: usize,
    dest: Option<(*const sockaddr, socklen_t)>,
    control: &[u8],
    flags: c_int,
) -> Result<ssize_t, Errno> {
    let to = match dest {
        None => {
            ops::autobind(fd, e)?;
            None
        }
        Some((p, l)) => {
            // SAFETY: the caller's address.
            let b = unsafe { addr_bytes(p, l) }?;
            // Linux auto-binds once the address is copied in, before the
            // protocol checks it.
            ops::autobind(fd, e)?;
            match addr::parse(b, e.v6(), true, Purpose::SendTo)? {
                Parsed::Addr(a) => Some(a),
                Parsed::Unspec => None,
            }
        }
    };
    if to.is_none() && !e.connected() {
        return Err(Errno(libc::EDESTADDRREQ));
    }
    let info = cmsg::parse_send(control, e.v6(), to)?;
    if n > MAX_IOV {
        return Err(Errno(libc::EMSGSIZE));
    }
    // SAFETY: n readable entries.
    let total = unsafe { iov_total(iov, n) }?;
    frame::check_len(total, e.v6())?;
    let mut hdr = frame::header(to, &info);
    if crate::kmod::active() {
        // A socket file takes one datagram per write, header first
        // (protvm-driver/kmod/dgram.rs); `MSG_DONTWAIT` is this write's
        // `RWF_NOWAIT` (the module honours `IOCB_NOWAIT`).
        let nowait = flags & libc::MSG_DONTWAIT != 0;
        let hdr_ptr = hdr.as_mut_ptr();
        let write = |v: *mut iovec, cnt: usize| {
            if nowait {
                // SAFETY: `v` holds `cnt` live iovecs (the header, the
                // caller's); offset -1: the file's position, as writev.
                unsafe { libc::pwritev2(fd, v, cnt as c_int, -1, libc::RWF_NOWAIT) }
            } else {
                // SAFETY: as above.
                unsafe { real::writev(fd, v, cnt as c_int) }
            }
        };
        // SAFETY: iov has n ≤ MAX_IOV readable entries; the header lives.
        let r = unsafe { with_header_iov(hdr_ptr, iov, n, write) };
        if r < 0 {
            return Err(Errno(sys::errno()));
        }
        return Ok((r as usize).saturating_sub(frame::HEADER_LEN) as ssize_t);
    }
    let hdr_ptr = hdr.as_mut_ptr();
    // A kept socket (see `keeper`) is tried without waiting first: once
    // its driver is gone, its sends fill the keeper's queue, which nothing
    // reads, and a blocking send would then wait for ever.
    let kept = keeper::has(fd);
    let flags = flags & (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
    let send = |f: c_int| {
        move |v: *mut iovec, cnt: usize| {
            // SAFETY: msghdr is plain data; zero is valid.
            let mut msg: msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = v;
            msg.msg_iovlen = cnt as _;
            // SAFETY: msg describes live buffers.
            unsafe { real::sendmsg(fd, &msg, f) }
        }
    };
    let first = if kept {
        flags | libc::MSG_DONTWAIT
    } else {
        flags
    };
    // SAFETY: iov has n ≤ MAX_IOV readable entries.
    let mut r = unsafe { with_header_iov(hdr_ptr, iov, n, send(first)) };
    if r < 0 && kept && sys::errno() == libc::EAGAIN {
        if ctl::driver_gone() {
            // The network is gone: the datagram is lost in it, as Linux
            // loses one it cannot deliver, and what waited is dropped
            // so the queue never fills.
            keeper::discard_queued(fd);
            return Ok(total as ssize_t);
        }
        if flags & libc::MSG_DONTWAIT == 0 && !sys::get_nonblock(fd)? {
            // SAFETY: as above.
            r = unsafe { with_header_iov(hdr_ptr, iov, n, send(flags)) };
        } else {
            sys::set_errno(libc::EAGAIN);
        }
    }
    if r < 0 {
        return Err(Errno(sys::errno()));
    }
    Ok((r as usize).saturating_sub(frame::HEADER_LEN) as ssize_t)
}

/// One received datagram: payload length (per `MSG_TRUNC` rules), source,
/// packet information, `msg_flags`.
struct Got {
    len: usize,
    src: Option<SocketAddr>,
    info: PktInfo,
    flags: c_int,
}

/// Receives one datagram on a UDP INS fd.
///
/// # Safety
/// `iov` readable for `n` entries, each buffer writable.
unsafe fn udp_recv(fd: c_int, iov: *const iovec, n: usize, flags: c_int) -> Result<Got, Errno> {
    if n > MAX_IOV {
        return Err(Errno(libc::EMSGSIZE));
    }
    if crate::kmod::active() {
        // SAFETY: the caller's contract.
        return unsafe { kmod_udp_recv(fd, iov, n, flags) };
    }
    let mut hdr = [0u8; frame::HEADER_LEN];
    let hdr_ptr = hdr.as_mut_ptr();
    let recv = |v: *mut iovec, cnt: usize| {
        // SAFETY: msghdr is plain data; zero is valid.
        let mut msg: msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = v;
        msg.msg_iovlen = cnt as _;
        let keep = libc::MSG_DONTWAIT | libc::MSG_PEEK | libc::MSG_TRUNC;
        // SAFETY: msg describes live, writable buffers.
        let r = unsafe { real::recvmsg(fd, &mut msg, flags & keep) };
        (r, msg.msg_flags)
    };
    // SAFETY: iov has n ≤ MAX_IOV readable entries.
    let (r, mflags) = unsafe { with_header_iov(hdr_ptr, iov, n, recv) };
    if r < 0 {
        return Err(Errno(sys::errno()));
    }
    if r == 0 {
        // The driver closed its end.
        return udp_eof(fd);
    }
    let len = frame::payload_len(r as usize)?;
    let (src, info) = frame::source(&hdr)?;
    Ok(Got {
        len,
        src,
        info,
        flags: mflags,
    })
}

/// What a UDP receive gives once the driver's end is gone: the pending
/// error, or an empty datagram.
fn udp_eof(fd: c_int) -> Result<Got, Errno> {
    match ops::eof_error(fd) {
        0 => Ok(Got {
            len: 0,
            src: None,
            info: PktInfo::NONE,
            flags: 0,
        }),
        err => Err(Errno(err)),
    }
}

/// [`udp_recv`] on the kernel module's socket file: one datagram per
/// read, its header first; the header's reserved word is the payload's
/// full length (protvm-driver/kmod/dgram.rs), which `MSG_TRUNC` reports.
///
/// # Safety
/// `iov` readable for `n` (≤ `MAX_IOV`) entries, each buffer writable.
unsafe fn kmod_udp_recv(
    fd: c_int,
    iov: *const iovec,
    n: usize,
    flags: c_int,
) -> Result<Got, Errno> {
    let nowait = flags & libc::MSG_DONTWAIT != 0;
    let mut hdr = [0u8; frame::HEADER_LEN];
    let r = if flags & libc::MSG_PEEK != 0 {
        // SAFETY: n readable entries.
        let total = unsafe { iov_total(iov, n) }?;
        // No datagram is longer than UDP's largest payload.
        let mut buf = vec![0u8; frame::HEADER_LEN + total.min(frame::MAX_UDP6)];
        // SAFETY: `buf` is writable for its length.
        let r = unsafe { crate::kmod::peek(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
        // The module copies at most the buffer; never index past it.
        let r = r.min(buf.len() as ssize_t);
        if r >= frame::HEADER_LEN as ssize_t {
            hdr.copy_from_slice(&buf[..frame::HEADER_LEN]);
            let mut at = frame::HEADER_LEN;
            for i in 0..n {
                // SAFETY: i < n readable entries.
                let v = unsafe { *iov.wrapping_add(i) };
                let k = v.iov_len.min(r as usize - at);
                let src = buf[at..].as_ptr();
                // SAFETY: the caller's buffer is writable for its length;
                // `src` has at least `k` bytes left.
                unsafe { ptr::copy_nonoverlapping(src, v.iov_base.cast(), k) };
                at += k;
            }
        }
        r
    } else {
        let hdr_ptr = hdr.as_mut_ptr();
        let read = |v: *mut iovec, cnt: usize| {
            if nowait {
                // SAFETY: `v` holds `cnt` live iovecs (the header, the
                // caller's); `MSG_DONTWAIT` is this read's `RWF_NOWAIT`.
                unsafe { libc::preadv2(fd, v, cnt as c_int, -1, libc::RWF_NOWAIT) }
            } else {
                // SAFETY: as above.
                unsafe { real::readv(fd, v, cnt as c_int) }
            }
        };
        // SAFETY: iov has n ≤ MAX_IOV entries; the header lives.
        unsafe { with_header_iov(hdr_ptr, iov, n, read) }
    };
    if r < 0 {
        return Err(Errno(sys::errno()));
    }
    if r == 0 {
        // The socket's instance is gone.
        return udp_eof(fd);
    }
    let got = frame::payload_len(r as usize)?;
    let reserved = WireAddr::LEN - 4..WireAddr::LEN;
    let mut word = [0u8; 4];
    word.copy_from_slice(&hdr[reserved.clone()]);
    let full = u32::from_le_bytes(word) as usize;
    hdr[reserved].fill(0);
    let (src, info) = frame::source(&hdr)?;
    Ok(Got {
        len: if flags & libc::MSG_TRUNC != 0 {
            full
        } else {
            got
        },
        src,
        info,
        flags: if full > got { libc::MSG_TRUNC } else { 0 },
    })
}

/// A single-buffer iovec.
fn one_iov(buf: *mut c_void, n: size_t) -> iovec {
    iovec {
        iov_base: buf,
        iov_len: n,
    }
}

// ------------------------------------------------------------ data hooks

/// `read(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::read(fd, buf, count) };
    }
    if e.dgram() {
        let v = one_iov(buf, count);
        return run(-1, || {
            // SAFETY: one writable buffer.
            unsafe { udp_recv(fd, &v, 1, 0) }.map(|g| g.len as ssize_t)
        });
    }
    if stream_read_refused(e) {
        return fail(libc::ENOTCONN);
    }
    // SAFETY: forwarded.
    let r = unsafe { real::read(fd, buf, count) };
    if r == 0 && count > 0 {
        return stream_eof(fd);
    }
    r
}

/// `__read_chk` (`_FORTIFY_SOURCE`).
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    buflen: size_t,
) -> ssize_t {
    if count > buflen {
        // SAFETY: forwarded (libc reports the overflow).
        return unsafe { real::read_chk(fd, buf, count, buflen) };
    }
    // SAFETY: the caller's arguments.
    unsafe { read(fd, buf, count) }
}

/// `write(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::write(fd, buf, count) };
    }
    if e.dgram() {
        let v = one_iov(buf as *mut c_void, count);
        // SAFETY: one readable buffer.
        return run(-1, || unsafe { udp_send(fd, e, &v, 1, None, &[], 0) });
    }
    if let Some(r) = stream_write_refused(e, 0) {
        return r;
    }
    if crate::sigpipe::ignored() {
        // SAFETY: forwarded; the kernel's SIGPIPE is discarded (ignored).
        return stream_write_result(
            fd,
            unsafe { real::write(fd, buf, count) },
            libc::MSG_NOSIGNAL,
        );
    }
    // SAFETY: forwarded as send(), identical on a stream socket but for
    // the signal.
    stream_write_result(
        fd,
        unsafe { crate::kmod::send(fd, buf, count, libc::MSG_NOSIGNAL) },
        0,
    )
}

/// `readv(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::readv(fd, iov, n) };
    }
    if n < 0 || n as usize > MAX_IOV {
        return fail(libc::EINVAL);
    }
    if e.dgram() {
        return run(-1, || {
            // SAFETY: the caller's iovecs.
            unsafe { udp_recv(fd, iov, n as usize, 0) }.map(|g| g.len as ssize_t)
        });
    }
    if stream_read_refused(e) {
        return fail(libc::ENOTCONN);
    }
    // SAFETY: forwarded.
    let r = unsafe { real::readv(fd, iov, n) };
    // SAFETY: the caller's iovecs (read only at end-of-file).
    if r == 0 && unsafe { iov_total(iov, n as usize) }.unwrap_or(0) > 0 {
        return stream_eof(fd);
    }
    r
}

/// `writev(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::writev(fd, iov, n) };
    }
    if n < 0 || n as usize > MAX_IOV {
        return fail(libc::EINVAL);
    }
    if e.dgram() {
        // SAFETY: the caller's iovecs.
        return run(-1, || unsafe {
            udp_send(fd, e, iov, n as usize, None, &[], 0)
        });
    }
    if let Some(r) = stream_write_refused(e, 0) {
        return r;
    }
    if crate::sigpipe::ignored() {
        // SAFETY: forwarded; the kernel's SIGPIPE is discarded (ignored).
        return stream_write_result(fd, unsafe { real::writev(fd, iov, n) }, libc::MSG_NOSIGNAL);
    }
    // SAFETY: an all-zero msghdr is valid; the caller's iovecs.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov as *mut iovec;
    m.msg_iovlen = n as usize;
    // SAFETY: forwarded as sendmsg(), identical on a stream socket but for
    // the signal (n ≤ MAX_IOV checked above).
    stream_write_result(
        fd,
        unsafe { crate::kmod::sendmsg(fd, &m, libc::MSG_NOSIGNAL) },
        0,
    )
}

/// `send(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn send(
    fd: c_int,
    buf: *const c_void,
    count: size_t,
    flags: c_int,
) -> ssize_t {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::send(fd, buf, count, flags) };
    }
    if e.dgram() {
        let v = one_iov(buf as *mut c_void, count);
        // SAFETY: one readable buffer.
        return run(-1, || unsafe { udp_send(fd, e, &v, 1, None, &[], flags) });
    }
    if let Some(r) = stream_write_refused(e, flags) {
        return r;
    }
    // SAFETY: forwarded; the signal is decided after.
    stream_write_result(
        fd,
        unsafe { crate::kmod::send(fd, buf, count, flags | libc::MSG_NOSIGNAL) },
        flags,
    )
}

/// `sendto(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    count: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::sendto(fd, buf, count, flags, addr, len) };
    }
    if e.dgram() {
        let v = one_iov(buf as *mut c_void, count);
        let dest = (!addr.is_null()).then_some((addr, len));
        // SAFETY: one readable buffer; the caller's address.
        return run(-1, || unsafe { udp_send(fd, e, &v, 1, dest, &[], flags) });
    }
    // TCP ignores the address; a Unix stream socket would refuse it.
    if let Some(r) = stream_write_refused(e, flags) {
        return r;
    }
    // SAFETY: forwarded; the signal is decided after.
    stream_write_result(
        fd,
        unsafe { crate::kmod::send(fd, buf, count, flags | libc::MSG_NOSIGNAL) },
        flags,
    )
}

/// `sendmsg(2)` on an INS fd.
///
/// # Safety
/// `msg` a valid `msghdr`.
unsafe fn sendmsg_ins(fd: c_int, e: Entry, msg: *const msghdr, flags: c_int) -> ssize_t {
    if msg.is_null() {
        return fail(libc::EFAULT);
    }
    // SAFETY: msg is a valid msghdr.
    let m = unsafe { *msg };
    if e.dgram() {
        let dest = (!m.msg_name.is_null() && m.msg_namelen > 0).then_some((
            m.msg_name as *const sockaddr,
            m.msg_namelen.min(MAX_ADDR_LEN as socklen_t),
        ));
        return run(-1, || {
            // SAFETY: the caller's control buffer.
            let control = unsafe { control_in(&m) }?;
            // SAFETY: the caller's iovecs and address.
            unsafe { udp_send(fd, e, m.msg_iov, m.msg_iovlen, dest, control, flags) }
        });
    }
    // The kernel copies the control buffer in before TCP sees the call;
    // TCP checks its messages once the socket may send (see
    // `cmsg::check_stream_send`).
    // SAFETY: the caller's control buffer.
    let control = match unsafe { control_in(&m) } {
        Ok(c) => c,
        Err(e) => return fail(e.0),
    };
    if let Some(r) = stream_write_refused(e, flags) {
        return r;
    }
    if let Err(e) = cmsg::check_stream_send(control, sys::net_capable) {
        return fail(e.0);
    }
    let mut copy = m;
    copy.msg_name = ptr::null_mut();
    copy.msg_namelen = 0;
    // No control message reaches the pair: a descriptor or credential
    // would go to the driver.
    copy.msg_control = ptr::null_mut();
    copy.msg_controllen = 0;
    // SAFETY: forwarded with the address and control messages removed.
    stream_write_result(
        fd,
        unsafe { crate::kmod::sendmsg(fd, &copy, flags | libc::MSG_NOSIGNAL) },
        flags,
    )
}

/// `sendmsg(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::sendmsg(fd, msg, flags) };
    }
    // SAFETY: the caller's msghdr.
    unsafe { sendmsg_ins(fd, e, msg, flags) }
}

/// `sendmmsg(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    vec: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
) -> c_int {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::sendmmsg(fd, vec, vlen, flags) };
    }
    let vlen = (vlen as usize).min(MAX_IOV);
    let mut done = 0;
    while done < vlen {
        // `msg_hdr` is the first field of the repr(C) mmsghdr.
        let h = vec.wrapping_add(done);
        // SAFETY: h is a valid mmsghdr.
        let r = unsafe { sendmsg_ins(fd, e, h.cast::<msghdr>(), flags) };
        if r < 0 {
            if done == 0 {
                return -1;
            }
            break;
        }
        // SAFETY: h is writable.
        unsafe { (*h).msg_len = r as c_uint };
        done += 1;
    }
    done as c_int
}

/// `recv(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, count: size_t, flags: c_int) -> ssize_t {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::recv(fd, buf, count, flags) };
    }
    if e.dgram() {
        let v = one_iov(buf, count);
        return run(-1, || {
            // SAFETY: one writable buffer.
            unsafe { udp_recv(fd, &v, 1, flags) }.map(|g| g.len as ssize_t)
        });
    }
    if stream_read_refused(e) {
        return fail(libc::ENOTCONN);
    }
    // SAFETY: forwarded.
    let r = unsafe { crate::kmod::recv(fd, buf, count, flags) };
    if r == 0 && count > 0 {
        return stream_eof(fd);
    }
    r
}

/// `__recv_chk` (`_FORTIFY_SOURCE`).
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    if count > buflen {
        // SAFETY: forwarded (libc reports the overflow).
        return unsafe { real::recv_chk(fd, buf, count, buflen, flags) };
    }
    // SAFETY: the caller's arguments.
    unsafe { recv(fd, buf, count, flags) }
}

/// `recvfrom` on an INS fd.
///
/// # Safety
/// As the C function.
unsafe fn recvfrom_ins(
    fd: c_int,
    e: Entry,
    buf: *mut c_void,
    count: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if e.dgram() {
        let v = one_iov(buf, count);
        return run(-1, || {
            // SAFETY: the caller's (addr, len).
            let avail = unsafe { addr_avail(addr, len) }?;
            // SAFETY: one writable buffer.
            let g = unsafe { udp_recv(fd, &v, 1, flags) }?;
            if let Some(avail) = avail {
                // SAFETY: addr writable for avail bytes, len writable.
                unsafe { put_addr(addr, len, avail, g.src) }?;
            }
            Ok(g.len as ssize_t)
        });
    }
    if stream_read_refused(e) {
        return fail(libc::ENOTCONN);
    }
    // SAFETY: forwarded without the address (TCP reports none).
    let r = unsafe { crate::kmod::recv(fd, buf, count, flags) };
    if r >= 0 && !addr.is_null() && !len.is_null() {
        // SAFETY: len is writable.
        unsafe { *len = 0 };
    }
    if r == 0 && count > 0 {
        return stream_eof(fd);
    }
    r
}

/// `recvfrom(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        return unsafe { real::recvfrom(fd, buf, count, flags, addr, len) };
    }
    // SAFETY: the caller's arguments.
    unsafe { recvfrom_ins(fd, e, buf, count, flags, addr, len) }
}

/// `__recvfrom_chk` (`_FORTIFY_SOURCE`).
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if count > buflen {
        // SAFETY: forwarded (libc reports the overflow).
        return unsafe { real::recvfrom_chk(fd, buf, count, buflen, flags, addr, len) };
    }
    // SAFETY: the caller's arguments.
    unsafe { recvfrom(fd, buf, count, flags, addr, len) }
}

/// Marks fds received with `SCM_RIGHTS` on a host socket as unknown: one
/// of them may be an INS socket sent by another process.
///
/// # Safety
/// `msg` just filled by a successful `recvmsg`.
unsafe fn note_received_fds(msg: *const msghdr) {
    // SAFETY: msg is valid per the caller.
    if unsafe { (*msg).msg_controllen } == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { sys::for_each_fd(msg, |fd| TABLE.set(fd, Entry::UNKNOWN)) };
}

/// The control buffer of a `sendmsg` (`EFAULT` for a null one with a
/// length, `ENOBUFS` past `INT_MAX`, as the kernel says).
///
/// # Safety
/// `m` the caller's `msghdr`: `msg_control` readable for `msg_controllen`
/// bytes when not null.
unsafe fn control_in(m: &msghdr) -> Result<&[u8], Errno> {
    if m.msg_controllen == 0 {
        return Ok(&[]);
    }
    if m.msg_controllen > c_int::MAX as usize {
        return Err(Errno(libc::ENOBUFS));
    }
    if m.msg_control.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: readable for msg_controllen bytes per the caller.
    Ok(unsafe { std::slice::from_raw_parts(m.msg_control.cast::<u8>(), m.msg_controllen) })
}

/// The part of a `recvmsg` control buffer the shim may write (no more
/// than [`cmsg::MAX_RECV`] bytes; empty for a null buffer).
///
/// # Safety
/// `m` the caller's `msghdr`: `msg_control` writable for `msg_controllen`
/// bytes when not null, and not otherwise borrowed.
unsafe fn control_out<'a>(m: &msghdr) -> &'a mut [u8] {
    if m.msg_control.is_null() {
        return &mut [];
    }
    let n = m.msg_controllen.min(cmsg::MAX_RECV);
    // SAFETY: writable for msg_controllen ≥ n bytes per the caller.
    unsafe { std::slice::from_raw_parts_mut(m.msg_control.cast::<u8>(), n) }
}

/// `recvmsg` on an INS fd.
///
/// # Safety
/// `msg` a valid, writable `msghdr`.
unsafe fn recvmsg_ins(fd: c_int, e: Entry, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if msg.is_null() {
        return fail(libc::EFAULT);
    }
    // SAFETY: msg is valid.
    let m = unsafe { *msg };
    if e.dgram() {
        return run(-1, || {
            let avail = if m.msg_name.is_null() {
                None
            } else {
                Some(m.msg_namelen as i32)
            };
            if avail.is_some_and(|a| a < 0) {
                return Err(Errno::EINVAL);
            }
            // SAFETY: the caller's iovecs.
            let g = unsafe { udp_recv(fd, m.msg_iov, m.msg_iovlen, flags) }?;
            let mut namelen = m.msg_namelen;
            if let Some(avail) = avail {
                // SAFETY: msg_name writable for msg_namelen bytes.
                unsafe { put_addr(m.msg_name.cast(), &mut namelen, avail, g.src) }?;
            }
            // SAFETY: msg is writable.
            unsafe {
                (*msg).msg_namelen = if avail.is_some() { namelen } else { 0 };
            }
            // SAFETY: the caller's control buffer.
            let control = unsafe { control_out(&m) };
            let (used, ctrunc) = cmsg::put_recv(&g.info, control);
            // SAFETY: msg is writable.
            unsafe { (*msg).msg_controllen = used };
            let ctrunc = if ctrunc { libc::MSG_CTRUNC } else { 0 };
            // SAFETY: msg is writable.
            unsafe { (*msg).msg_flags = g.flags | ctrunc };
            Ok(g.len as ssize_t)
        });
    }
    if stream_read_refused(e) {
        return fail(libc::ENOTCONN);
    }
    let mut copy = m;
    copy.msg_name = ptr::null_mut();
    copy.msg_namelen = 0;
    // SAFETY: forwarded without the name.
    let r = unsafe { crate::kmod::recvmsg(fd, &mut copy, flags) };
    if r >= 0 {
        // SAFETY: msg is writable.
        unsafe { (*msg).msg_namelen = 0 };
        // SAFETY: msg is writable.
        unsafe { (*msg).msg_controllen = copy.msg_controllen };
        // SAFETY: msg is writable.
        unsafe { (*msg).msg_flags = copy.msg_flags };
    }
    // SAFETY: the caller's iovecs (read only at end-of-file).
    if r == 0 && unsafe { iov_total(m.msg_iov, m.msg_iovlen) }.unwrap_or(0) > 0 {
        return stream_eof(fd);
    }
    r
}

/// `recvmsg(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        let r = unsafe { real::recvmsg(fd, msg, flags) };
        if r >= 0 {
            // SAFETY: filled by a successful recvmsg.
            unsafe { note_received_fds(msg) };
        }
        return r;
    }
    // SAFETY: the caller's msghdr.
    unsafe { recvmsg_ins(fd, e, msg, flags) }
}

/// `recvmmsg(2)`. On INS fds the timeout is ignored; `MSG_WAITFORONE`
/// makes every message after the first non-blocking.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    vec: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
    timeout: *mut timespec,
) -> c_int {
    let e = lookup(fd);
    if !e.is_ins() {
        // SAFETY: forwarded.
        let r = unsafe { real::recvmmsg(fd, vec, vlen, flags, timeout) };
        for i in 0..r.max(0) as usize {
            // SAFETY: the first r entries were filled.
            unsafe { note_received_fds(vec.wrapping_add(i).cast::<msghdr>()) };
        }
        return r;
    }
    let vlen = (vlen as usize).min(MAX_IOV);
    let mut done = 0;
    let mut fl = flags & !libc::MSG_WAITFORONE;
    while done < vlen {
        // `msg_hdr` is the first field of the repr(C) mmsghdr.
        let h = vec.wrapping_add(done);
        // SAFETY: h is a valid mmsghdr.
        let r = unsafe { recvmsg_ins(fd, e, h.cast::<msghdr>(), fl) };
        if r < 0 {
            if done == 0 {
                return -1;
            }
            break;
        }
        // SAFETY: h is writable.
        unsafe { (*h).msg_len = r as c_uint };
        done += 1;
        if flags & libc::MSG_WAITFORONE != 0 {
            fl |= libc::MSG_DONTWAIT;
        }
    }
    done as c_int
}

// ----------------------------------------------------------- constructor

extern "C" fn init() {
    // Read the settings while the process is single-threaded.
    let _ = crate::config::get();
    inband::init();
}

#[cfg(not(test))]
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;
