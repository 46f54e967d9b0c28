//! The kernel module as the driver: control exchanges as `INS_IOC_CONTROL`
//! ioctls on its misc device, and the stream data calls a socket file
//! cannot take as socket calls.
//!
//! Detection, once per process (and again in a forked child):
//! `INS_KMOD_DEVICE` (default `/dev/ins`; `off` disables) is opened and
//! must answer `INS_IOC_VERSION` with this shim's protocol version; then
//! every exchange goes to the module ([`call`]), else to the daemon's
//! socket as before. Everything above [`crate::ctl::call`] is the same
//! code either way: the module returns the same reply packets, and the fd
//! a reply passes comes back as the ioctl's `fd`.
//!
//! Invariants: the device fd is used only while it still names the device
//! it was opened as (same device number and inode, checked with `fstat`
//! before each exchange), so an fd the program closed behind the shim's
//! back (and whose number was reused) is never sent an ioctl; it is
//! reopened instead. A forked child opens its own (a `/dev/ins` file is one
//! shim connection; the child's request numbers restart from the
//! parent's, so sharing one would mix their replies). Under the module
//! every INS socket of the process is a socket file (module sockets and
//! daemon sockets are never mixed in one process).
//!
//! What differs from the daemon (the module's limits, README): a signal
//! during an exchange ends it with `EINTR` even for prompt requests (the
//! ioctl's wait is interruptible and the request cannot be re-sent); a
//! blocking connect's `SO_SNDTIMEO` is not applied; stream reads take
//! `MSG_PEEK` (the socket file's `INS_IOC_PEEK`) and `MSG_WAITALL` (read
//! again until full, as Linux), not both at once; flags other than those
//! and `MSG_DONTWAIT`/`MSG_NOSIGNAL` on stream data calls are
//! `EOPNOTSUPP`; a socket file inherited across `exec` is not recognised.

use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU64, Ordering};

use ins_protocol::control::{Control, MAX_PACKET, MAX_VALUE};
use libc::{c_int, c_void, iovec, msghdr, size_t, ssize_t};

use crate::config;
use crate::ctl::{CtlError, Fd, Reply};
use crate::errno::Errno;
use crate::sys::{self, real};

/// `struct ins_control` (protvm-driver/kmod/control.rs).
#[repr(C)]
struct InsControl {
    fd: i32,
    len: u32,
    packet: [u8; MAX_PACKET],
}

/// `_IOWR('I', 3, struct ins_control)`.
const INS_IOC_CONTROL: libc::c_ulong = (3 << 30)
    | ((std::mem::size_of::<InsControl>() as libc::c_ulong) << 16)
    | ((b'I' as libc::c_ulong) << 8)
    | 3;
/// `_IOR('I', 4, __u32)`.
const INS_IOC_VERSION: libc::c_ulong = (2 << 30) | (4 << 16) | ((b'I' as libc::c_ulong) << 8) | 4;

/// `struct ins_peek` (protvm-driver/kmod/control.rs): `recv(MSG_PEEK)` on
/// a socket file.
#[repr(C)]
struct InsPeek {
    buf: u64,
    len: u64,
    flags: u32,
    pad: u32,
}

/// `_IOW('I', 5, struct ins_peek)`, on a socket file.
const INS_IOC_PEEK: libc::c_ulong = (1 << 30)
    | ((std::mem::size_of::<InsPeek>() as libc::c_ulong) << 16)
    | ((b'I' as libc::c_ulong) << 8)
    | 5;
/// `ins_peek.flags`: do not block.
const PEEK_DONTWAIT: u32 = 1;

const UNKNOWN: u8 = 0;
const MODULE: u8 = 1;
const DAEMON: u8 = 2;

/// What this process talks to.
static MODE: AtomicU8 = AtomicU8::new(UNKNOWN);
/// The pid that decided [`MODE`] and opened [`DEV`].
static PID: AtomicI32 = AtomicI32::new(0);
/// The device fd, or -1.
static DEV: AtomicI32 = AtomicI32::new(-1);
/// Its device number and inode when opened.
static DEV_ID: AtomicU64 = AtomicU64::new(0);
static DEV_INO: AtomicU64 = AtomicU64::new(0);

/// Whether this process's INS sockets are the module's socket files.
pub fn active() -> bool {
    MODE.load(Ordering::Acquire) == MODULE
}

fn ids(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: stat is plain data; all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is writable.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFCHR {
        return None;
    }
    Some((st.st_rdev, st.st_ino))
}

/// Opens the device and checks its version; the fd, or `None`.
fn open_device() -> Option<c_int> {
    let path = config::get().kmod_device.as_ref()?;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut v: u32 = 0;
    // SAFETY: INS_IOC_VERSION writes one u32 into `v`.
    let r = unsafe { libc::ioctl(fd, INS_IOC_VERSION as _, &mut v as *mut u32) };
    if r != 0 || v != u32::from(ins_protocol::hello::VERSION) {
        sys::close(fd);
        return None;
    }
    Some(fd)
}

/// The device fd if this process uses the module (deciding on first use),
/// `None` if it uses the daemon. A process on the module whose device
/// cannot be opened again (a forked child, or the fd was closed) gets
/// `Unreachable`: its sockets are the module's, the daemon cannot serve them.
pub fn device() -> Result<Option<c_int>, CtlError> {
    let pid = sys::getpid();
    let mode = MODE.load(Ordering::Acquire);
    if mode == DAEMON {
        return Ok(None);
    }
    if mode == MODULE && PID.load(Ordering::Acquire) == pid {
        let fd = DEV.load(Ordering::Acquire);
        if fd >= 0
            && ids(fd)
                == Some((
                    DEV_ID.load(Ordering::Relaxed),
                    DEV_INO.load(Ordering::Relaxed),
                ))
        {
            return Ok(Some(fd));
        }
    }
    // First use, a forked child, or the fd was closed behind our back.
    // (Threads racing here each open one; the last stored is kept, the
    // others stay open until exit — at most one per racing thread.)
    let opened = open_device().and_then(|fd| match ids(fd) {
        Some(i) => Some((fd, i)),
        None => {
            sys::close(fd);
            None
        }
    });
    match opened {
        Some((fd, (rdev, ino))) => {
            DEV_ID.store(rdev, Ordering::Relaxed);
            DEV_INO.store(ino, Ordering::Relaxed);
            DEV.store(fd, Ordering::Release);
            PID.store(pid, Ordering::Release);
            MODE.store(MODULE, Ordering::Release);
            Ok(Some(fd))
        }
        // The process's sockets are the module's: no daemon fallback.
        None if mode == MODULE => Err(CtlError::Unreachable(Errno(libc::ENODEV))),
        None => {
            MODE.store(DAEMON, Ordering::Release);
            Ok(None)
        }
    }
}

/// One exchange through the module: `packet` (request number `seq`) about
/// `fd`; the reply as [`crate::ctl::call`] returns it. A received fd gets
/// `FD_CLOEXEC` if `cloexec`.
pub fn call(
    dev: c_int,
    packet: &[u8],
    seq: u32,
    op: ins_protocol::control::Op,
    fd: Option<c_int>,
    cloexec: bool,
) -> Result<Reply, CtlError> {
    let mut io = InsControl {
        fd: fd.unwrap_or(-1),
        len: packet.len() as u32,
        packet: [0; MAX_PACKET],
    };
    io.packet
        .get_mut(..packet.len())
        .ok_or(CtlError::Failed(Errno::EINVAL))?
        .copy_from_slice(packet);
    // SAFETY: INS_IOC_CONTROL reads and writes one `struct ins_control`.
    let r = unsafe { libc::ioctl(dev, INS_IOC_CONTROL as _, &mut io as *mut InsControl) };
    if r != 0 {
        return Err(match sys::errno() {
            libc::EINTR => CtlError::Interrupted,
            e => CtlError::Failed(Errno(e)),
        });
    }
    let rfd = (io.fd >= 0).then(|| Fd::adopt(io.fd));
    if let Some(f) = &rfd
        && cloexec
    {
        sys::set_cloexec(f.raw(), true).map_err(CtlError::Failed)?;
    }
    let len = (io.len as usize).min(MAX_PACKET);
    let reply = match Control::decode(&io.packet[..len]) {
        Ok(r) if r.seq == seq && r.op == op => r,
        _ => return Err(CtlError::Failed(Errno::EIO)),
    };
    let mut value = [0u8; MAX_VALUE];
    value[..reply.value.len()].copy_from_slice(reply.value);
    Ok(Reply::new(
        reply.status,
        reply.args,
        reply.addr,
        reply.addr2,
        value,
        reply.value.len(),
        rfd,
    ))
}

/// Flags a stream data call on a socket file can honour: `MSG_NOSIGNAL`
/// (the module never raises `SIGPIPE`; the shim decides) and
/// `MSG_DONTWAIT` (a zero-timeout `poll` first); reads (`events`
/// `POLLIN`) also `MSG_PEEK` or `MSG_WAITALL`, one at a time.
pub(crate) fn data_flags(fd: c_int, flags: c_int, events: i16) -> Result<(), Errno> {
    let mut known = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    if events == libc::POLLIN {
        known |= libc::MSG_PEEK | libc::MSG_WAITALL;
    }
    let both = libc::MSG_PEEK | libc::MSG_WAITALL;
    if flags & !known != 0 || flags & both == both {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    if flags & libc::MSG_DONTWAIT != 0 {
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, 0) } == 0 {
            return Err(Errno(libc::EAGAIN));
        }
    }
    Ok(())
}

/// Whether `fd` is one of the module's socket files (its link in
/// `/proc/self/fd` names the anonymous inode `[ins-socket]`).
pub fn is_socket_file(fd: c_int) -> bool {
    const NAME: &[u8] = b"anon_inode:[ins-socket]";
    let path = format!("/proc/self/fd/{fd}\0");
    let mut buf = [0u8; 64];
    // SAFETY: a NUL-terminated path and a writable buffer of its length.
    let n = unsafe { libc::readlink(path.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len()) };
    n == NAME.len() as isize && &buf[..NAME.len()] == NAME
}

fn fail(e: Errno) -> ssize_t {
    sys::set_errno(e.0);
    -1
}

/// `recv(MSG_PEEK)` on a socket file: the bytes it holds, left there.
///
/// # Safety
/// `buf` is writable for `count` bytes.
pub(crate) unsafe fn peek(fd: c_int, buf: *mut c_void, count: size_t, flags: c_int) -> ssize_t {
    let mut p = InsPeek {
        buf: buf as u64,
        len: count as u64,
        flags: if flags & libc::MSG_DONTWAIT != 0 {
            PEEK_DONTWAIT
        } else {
            0
        },
        pad: 0,
    };
    // SAFETY: a socket file's ioctl with a valid `struct ins_peek`; the
    // module writes at most `count` bytes to `buf` (caller's contract).
    let r = unsafe { libc::ioctl(fd, INS_IOC_PEEK as _, &mut p as *mut InsPeek) };
    if r < 0 && sys::errno() == libc::ENOTTY {
        // A module without INS_IOC_PEEK.
        return fail(Errno(libc::EOPNOTSUPP));
    }
    r as ssize_t
}

/// `recv(MSG_WAITALL)` on a socket file: reads until `count` bytes, the
/// end of the stream or an error; an error after some bytes returns
/// those bytes (Linux's rule, errno as it was).
///
/// # Safety
/// `buf` is writable for `count` bytes.
unsafe fn read_all(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    let iov = iovec {
        iov_base: buf,
        iov_len: count,
    };
    // SAFETY: one iovec over the caller's buffer.
    unsafe { readv_all(fd, &[iov]) }
}

/// `readv` until the iovecs are full, the end of the stream or an error
/// (an error after some bytes returns those bytes, errno as it was).
///
/// # Safety
/// Each iovec's buffer is writable for its length.
unsafe fn readv_all(fd: c_int, iovs: &[iovec]) -> ssize_t {
    let saved = sys::errno();
    let mut v: Vec<iovec> = iovs.iter().filter(|v| v.iov_len > 0).copied().collect();
    let mut at = 0usize;
    let mut got = 0usize;
    while at < v.len() {
        let n = (v.len() - at).min(1024);
        // SAFETY: `v[at..at + n]` are the caller's buffers, less what was
        // filled.
        let r = unsafe { real::readv(fd, v[at..].as_ptr(), n as c_int) };
        if r <= 0 {
            if r < 0 && got == 0 {
                return r;
            }
            break;
        }
        let mut left = r as usize;
        got += left;
        while left > 0 && at < v.len() {
            let take = left.min(v[at].iov_len);
            v[at].iov_base = (v[at].iov_base as *mut u8).wrapping_add(take).cast();
            v[at].iov_len -= take;
            left -= take;
            if v[at].iov_len == 0 {
                at += 1;
            }
        }
    }
    sys::set_errno(saved);
    got as ssize_t
}

/// `recv` on a stream INS socket: the socket call, or `read` on a socket file.
///
/// # Safety
/// As `recv(2)`.
pub unsafe fn recv(fd: c_int, buf: *mut c_void, count: size_t, flags: c_int) -> ssize_t {
    if !active() {
        // SAFETY: forwarded.
        return unsafe { real::recv(fd, buf, count, flags) };
    }
    if let Err(e) = data_flags(fd, flags, libc::POLLIN) {
        return fail(e);
    }
    if flags & libc::MSG_PEEK != 0 {
        // SAFETY: the caller's buffer.
        return unsafe { peek(fd, buf, count, flags) };
    }
    if flags & libc::MSG_WAITALL != 0 && flags & libc::MSG_DONTWAIT == 0 {
        // SAFETY: the caller's buffer.
        return unsafe { read_all(fd, buf, count) };
    }
    // SAFETY: forwarded as read.
    unsafe { real::read(fd, buf, count) }
}

/// `send` on a stream INS socket: the socket call, or `write` on a socket file.
///
/// # Safety
/// As `send(2)`.
pub unsafe fn send(fd: c_int, buf: *const c_void, count: size_t, flags: c_int) -> ssize_t {
    if !active() {
        // SAFETY: forwarded.
        return unsafe { real::send(fd, buf, count, flags) };
    }
    if let Err(e) = data_flags(fd, flags, libc::POLLOUT) {
        return fail(e);
    }
    // SAFETY: forwarded as write.
    unsafe { real::write(fd, buf, count) }
}

/// `sendmsg` on a stream INS socket: the socket call, or `writev` on a
/// socket file (no address, no control messages).
///
/// # Safety
/// As `sendmsg(2)`.
pub unsafe fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if !active() {
        // SAFETY: forwarded.
        return unsafe { real::sendmsg(fd, msg, flags) };
    }
    // SAFETY: the caller's msghdr is readable.
    let m = unsafe { &*msg };
    if m.msg_controllen != 0 {
        return fail(Errno(libc::EOPNOTSUPP));
    }
    if let Err(e) = data_flags(fd, flags, libc::POLLOUT) {
        return fail(e);
    }
    // SAFETY: forwarded as writev with the caller's iovecs.
    unsafe { real::writev(fd, m.msg_iov as *const iovec, m.msg_iovlen as c_int) }
}

/// `recvmsg` on a stream INS socket: the socket call, or `readv` on a
/// socket file (no address, no control messages, `msg_flags` 0).
///
/// # Safety
/// As `recvmsg(2)`.
pub unsafe fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if !active() {
        // SAFETY: forwarded.
        return unsafe { real::recvmsg(fd, msg, flags) };
    }
    if let Err(e) = data_flags(fd, flags, libc::POLLIN) {
        return fail(e);
    }
    // SAFETY: the caller's msghdr is writable.
    let m = unsafe { &mut *msg };
    if m.msg_iovlen > 1024 {
        return fail(Errno(libc::EMSGSIZE));
    }
    let r = if flags & libc::MSG_PEEK != 0 {
        // SAFETY: the caller's iovecs.
        unsafe { peek_iovs(fd, m.msg_iov, m.msg_iovlen, flags) }
    } else if flags & libc::MSG_WAITALL != 0 && flags & libc::MSG_DONTWAIT == 0 {
        // SAFETY: the caller's iovecs.
        let iovs = unsafe { iov_slice(m.msg_iov, m.msg_iovlen) };
        // SAFETY: the caller's buffers.
        unsafe { readv_all(fd, iovs) }
    } else {
        // SAFETY: forwarded as readv with the caller's iovecs.
        unsafe { real::readv(fd, m.msg_iov as *const iovec, m.msg_iovlen as c_int) }
    };
    if r >= 0 {
        m.msg_controllen = 0;
        m.msg_flags = 0;
        m.msg_namelen = 0;
    }
    r
}

/// A `msghdr`'s iovecs as a slice (empty for none).
///
/// # Safety
/// `iov` points to `iovlen` iovecs, or is null.
unsafe fn iov_slice<'a>(iov: *const iovec, iovlen: size_t) -> &'a [iovec] {
    if iov.is_null() || iovlen == 0 {
        &[]
    } else {
        // SAFETY: the caller's iovecs.
        unsafe { std::slice::from_raw_parts(iov, iovlen) }
    }
}

/// The most a `MSG_PEEK` `recvmsg` on a socket file shows at once (a
/// peek may show less than there is).
const SCRATCH_MAX: usize = 1 << 20;

/// `recvmsg` with `MSG_PEEK` on a socket file: [`peek`] into one buffer,
/// then spread over the iovecs.
///
/// # Safety
/// `iov` points to `iovlen` iovecs of writable buffers.
unsafe fn peek_iovs(fd: c_int, iov: *mut iovec, iovlen: size_t, flags: c_int) -> ssize_t {
    // SAFETY: the caller's iovecs.
    let iovs = unsafe { iov_slice(iov, iovlen) };
    let total = iovs
        .iter()
        .fold(0usize, |t, v| t.saturating_add(v.iov_len))
        .min(SCRATCH_MAX);
    let mut scratch = vec![0u8; total];
    // SAFETY: `scratch` is writable for `total` bytes.
    let r = unsafe { peek(fd, scratch.as_mut_ptr().cast(), total, flags) };
    if r <= 0 {
        return r;
    }
    // Never more than asked for, whatever the module said.
    let r = r.min(total as ssize_t);
    let mut left = &scratch[..r as usize];
    for v in iovs {
        if left.is_empty() {
            break;
        }
        let n = v.iov_len.min(left.len());
        // SAFETY: the caller's iovec is writable for `iov_len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(left.as_ptr(), v.iov_base.cast::<u8>(), n) };
        left = &left[n..];
    }
    r
}
