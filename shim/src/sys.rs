//! The real libc functions and the syscalls the shim makes itself.
//!
//! `real::*` are the next definitions of the hooked symbols
//! (`dlsym(RTLD_NEXT)`, resolved on first use and cached in an atomic; a
//! missing symbol fails with `ENOSYS`). Everything else here is a safe
//! wrapper returning `Result<_, Errno>`; the shim never calls a hooked
//! symbol through its own export.

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::c_int;

use crate::errno::Errno;

fn resolve(slot: &AtomicUsize, name: &CStr) -> usize {
    // Acquire/Release: publish the resolved address; dlsym is idempotent,
    // so two threads racing both store the same value.
    let p = slot.load(Ordering::Acquire);
    if p != 0 {
        return p;
    }
    // SAFETY: dlsym takes a pseudo-handle and a NUL-terminated name.
    let q = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    slot.store(q, Ordering::Release);
    q
}

/// The current thread's errno.
pub fn errno() -> i32 {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    let p = unsafe { libc::__errno_location() };
    // SAFETY: the slot is valid and thread-local for the thread's lifetime.
    unsafe { *p }
}

/// Sets the current thread's errno.
pub fn set_errno(e: i32) {
    // SAFETY: as in errno().
    let p = unsafe { libc::__errno_location() };
    // SAFETY: as in errno().
    unsafe { *p = e };
}

macro_rules! real_fn {
    ($name:ident, $sym:expr, fn($($a:ident: $t:ty),* $(,)?) -> $r:ty $(,)?) => {
        /// The next (libc's) definition of this symbol.
        ///
        /// # Safety
        /// The contract of the C function.
        #[allow(clippy::too_many_arguments)] // as many as the C function
        pub unsafe fn $name($($a: $t),*) -> $r {
            static SLOT: AtomicUsize = AtomicUsize::new(0);
            let p = resolve(&SLOT, $sym);
            if p == 0 {
                set_errno(libc::ENOSYS);
                return -1i64 as $r;
            }
            // SAFETY: p is the non-null address dlsym returned for this
            // symbol, whose C prototype is the one declared here.
            let f = unsafe {
                core::mem::transmute::<usize, unsafe extern "C" fn($($t),*) -> $r>(p)
            };
            // SAFETY: forwarded under the caller's contract.
            unsafe { f($($a),*) }
        }
    };
}

/// The real functions behind the hooks.
pub mod real {
    use super::*;
    use libc::{
        c_uint, c_ulong, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t,
        timespec,
    };

    real_fn!(socket, c"socket", fn(d: c_int, t: c_int, p: c_int) -> c_int);
    real_fn!(
        socketpair,
        c"socketpair",
        fn(d: c_int, t: c_int, p: c_int, sv: *mut c_int) -> c_int
    );
    real_fn!(
        bind,
        c"bind",
        fn(fd: c_int, a: *const sockaddr, l: socklen_t) -> c_int
    );
    real_fn!(listen, c"listen", fn(fd: c_int, b: c_int) -> c_int);
    real_fn!(
        accept,
        c"accept",
        fn(fd: c_int, a: *mut sockaddr, l: *mut socklen_t) -> c_int
    );
    real_fn!(
        accept4,
        c"accept4",
        fn(fd: c_int, a: *mut sockaddr, l: *mut socklen_t, f: c_int) -> c_int
    );
    real_fn!(
        connect,
        c"connect",
        fn(fd: c_int, a: *const sockaddr, l: socklen_t) -> c_int
    );
    real_fn!(shutdown, c"shutdown", fn(fd: c_int, how: c_int) -> c_int);
    real_fn!(
        getsockopt,
        c"getsockopt",
        fn(fd: c_int, lv: c_int, n: c_int, v: *mut c_void, l: *mut socklen_t) -> c_int
    );
    real_fn!(
        setsockopt,
        c"setsockopt",
        fn(fd: c_int, lv: c_int, n: c_int, v: *const c_void, l: socklen_t) -> c_int
    );
    real_fn!(
        getsockname,
        c"getsockname",
        fn(fd: c_int, a: *mut sockaddr, l: *mut socklen_t) -> c_int
    );
    real_fn!(
        getpeername,
        c"getpeername",
        fn(fd: c_int, a: *mut sockaddr, l: *mut socklen_t) -> c_int
    );
    real_fn!(close, c"close", fn(fd: c_int) -> c_int);
    /// The next (libc's) `closefrom`, which returns nothing; a libc
    /// without it (before glibc 2.34) leaves nothing to call.
    ///
    /// # Safety
    /// The contract of the C function.
    pub unsafe fn closefrom(lowfd: c_int) {
        static SLOT: AtomicUsize = AtomicUsize::new(0);
        let p = resolve(&SLOT, c"closefrom");
        if p == 0 {
            return;
        }
        // SAFETY: p is the non-null address dlsym returned for
        // `void closefrom(int)`.
        let f = unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(c_int)>(p) };
        // SAFETY: forwarded under the caller's contract.
        unsafe { f(lowfd) }
    }
    real_fn!(
        close_range,
        c"close_range",
        fn(first: c_uint, last: c_uint, flags: c_int) -> c_int
    );
    real_fn!(
        gethostbyname2_r,
        c"gethostbyname2_r",
        fn(
            name: *const libc::c_char,
            af: c_int,
            ret: *mut libc::hostent,
            buf: *mut libc::c_char,
            buflen: size_t,
            result: *mut *mut libc::hostent,
            h_errnop: *mut c_int,
        ) -> c_int
    );
    real_fn!(
        getnameinfo,
        c"getnameinfo",
        fn(
            sa: *const sockaddr,
            salen: socklen_t,
            host: *mut libc::c_char,
            hostlen: socklen_t,
            serv: *mut libc::c_char,
            servlen: socklen_t,
            flags: c_int,
        ) -> c_int
    );
    real_fn!(
        gethostbyaddr_r,
        c"gethostbyaddr_r",
        fn(
            addr: *const c_void,
            len: socklen_t,
            ty: c_int,
            ret: *mut libc::hostent,
            buf: *mut libc::c_char,
            buflen: size_t,
            result: *mut *mut libc::hostent,
            h_errnop: *mut c_int,
        ) -> c_int
    );
    real_fn!(
        getaddrinfo,
        c"getaddrinfo",
        fn(
            node: *const libc::c_char,
            service: *const libc::c_char,
            hints: *const libc::addrinfo,
            res: *mut *mut libc::addrinfo,
        ) -> c_int
    );
    real_fn!(dup, c"dup", fn(fd: c_int) -> c_int);
    real_fn!(dup2, c"dup2", fn(a: c_int, b: c_int) -> c_int);
    real_fn!(dup3, c"dup3", fn(a: c_int, b: c_int, f: c_int) -> c_int);
    real_fn!(
        send,
        c"send",
        fn(fd: c_int, b: *const c_void, n: size_t, f: c_int) -> ssize_t
    );
    real_fn!(
        sendto,
        c"sendto",
        fn(
            fd: c_int,
            b: *const c_void,
            n: size_t,
            f: c_int,
            a: *const sockaddr,
            l: socklen_t,
        ) -> ssize_t
    );
    real_fn!(
        sendmsg,
        c"sendmsg",
        fn(fd: c_int, m: *const msghdr, f: c_int) -> ssize_t
    );
    real_fn!(
        sendmmsg,
        c"sendmmsg",
        fn(fd: c_int, m: *mut mmsghdr, n: c_uint, f: c_int) -> c_int
    );
    real_fn!(
        recv,
        c"recv",
        fn(fd: c_int, b: *mut c_void, n: size_t, f: c_int) -> ssize_t
    );
    real_fn!(
        recvfrom,
        c"recvfrom",
        fn(
            fd: c_int,
            b: *mut c_void,
            n: size_t,
            f: c_int,
            a: *mut sockaddr,
            l: *mut socklen_t,
        ) -> ssize_t
    );
    real_fn!(
        recvmsg,
        c"recvmsg",
        fn(fd: c_int, m: *mut msghdr, f: c_int) -> ssize_t
    );
    real_fn!(
        recvmmsg,
        c"recvmmsg",
        fn(fd: c_int, m: *mut mmsghdr, n: c_uint, f: c_int, t: *mut timespec) -> c_int
    );
    real_fn!(
        read,
        c"read",
        fn(fd: c_int, b: *mut c_void, n: size_t) -> ssize_t
    );
    real_fn!(
        write,
        c"write",
        fn(fd: c_int, b: *const c_void, n: size_t) -> ssize_t
    );
    real_fn!(
        readv,
        c"readv",
        fn(fd: c_int, v: *const iovec, n: c_int) -> ssize_t
    );
    real_fn!(
        sigaction,
        c"sigaction",
        fn(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int
    );
    real_fn!(
        signal,
        c"signal",
        fn(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t
    );
    real_fn!(
        sigset,
        c"sigset",
        fn(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t
    );
    real_fn!(
        bsd_signal,
        c"bsd_signal",
        fn(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t
    );
    real_fn!(
        sysv_signal,
        c"sysv_signal",
        fn(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t
    );
    real_fn!(
        writev,
        c"writev",
        fn(fd: c_int, v: *const iovec, n: c_int) -> ssize_t
    );
    real_fn!(
        read_chk,
        c"__read_chk",
        fn(fd: c_int, b: *mut c_void, n: size_t, bl: size_t) -> ssize_t
    );
    real_fn!(
        recv_chk,
        c"__recv_chk",
        fn(fd: c_int, b: *mut c_void, n: size_t, bl: size_t, f: c_int) -> ssize_t
    );
    real_fn!(
        recvfrom_chk,
        c"__recvfrom_chk",
        fn(
            fd: c_int,
            b: *mut c_void,
            n: size_t,
            bl: size_t,
            f: c_int,
            a: *mut sockaddr,
            l: *mut socklen_t,
        ) -> ssize_t
    );

    fn fcntl_impl(slot: &AtomicUsize, name: &CStr, fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
        let p = resolve(slot, name);
        if p == 0 {
            set_errno(libc::ENOSYS);
            return -1;
        }
        // SAFETY: p is dlsym's non-null address of the variadic C function
        // `int fcntl(int, int, ...)`.
        let f = unsafe {
            core::mem::transmute::<usize, unsafe extern "C" fn(c_int, c_int, ...) -> c_int>(p)
        };
        // SAFETY: one integer-class variadic argument; every fcntl command
        // takes an int, a pointer or nothing, all of which the callee reads
        // from the same argument register (x86_64 SysV, aarch64 AAPCS64).
        unsafe { f(fd, cmd, arg) }
    }

    /// The real `fcntl`, the third argument passed as an integer register.
    ///
    /// # Safety
    /// As `fcntl(2)`: when `cmd` takes a pointer, `arg` must be one.
    pub unsafe fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
        static SLOT: AtomicUsize = AtomicUsize::new(0);
        fcntl_impl(&SLOT, c"fcntl", fd, cmd, arg)
    }

    /// The real `fcntl64` (glibc ≥ 2.28 redirects `fcntl` there when
    /// `_FILE_OFFSET_BITS=64`).
    ///
    /// # Safety
    /// As [`fcntl`].
    pub unsafe fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
        static SLOT: AtomicUsize = AtomicUsize::new(0);
        fcntl_impl(&SLOT, c"fcntl64", fd, cmd, arg)
    }

    /// The real `prctl` (`int prctl(int option, ...)`), its four optional
    /// arguments passed as integer registers.
    ///
    /// # Safety
    /// As `prctl(2)`: where `option` takes pointers, they must be valid.
    pub unsafe fn prctl(
        option: c_int,
        a2: c_ulong,
        a3: c_ulong,
        a4: c_ulong,
        a5: c_ulong,
    ) -> c_int {
        static SLOT: AtomicUsize = AtomicUsize::new(0);
        let p = resolve(&SLOT, c"prctl");
        if p == 0 {
            set_errno(libc::ENOSYS);
            return -1;
        }
        // SAFETY: p is dlsym's non-null address of the variadic C function
        // `int prctl(int, ...)`.
        let f =
            unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(c_int, ...) -> c_int>(p) };
        // SAFETY: four integer-class variadic arguments; every prctl option
        // takes integers or pointers, read from the integer argument
        // registers (x86_64 SysV, aarch64 AAPCS64); unused ones are ignored.
        unsafe { f(option, a2, a3, a4, a5) }
    }
}

fn check(r: c_int) -> Result<c_int, Errno> {
    if r < 0 { Err(Errno(errno())) } else { Ok(r) }
}

/// Closes an fd the shim owns (errors ignored, as after a failed op).
pub fn close(fd: c_int) {
    // SAFETY: the caller owns fd; close has no memory preconditions.
    unsafe { real::close(fd) };
}

/// `getpid()`.
pub fn getpid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() }
}

/// Whether the process's effective capabilities include `CAP_NET_ADMIN`
/// or `CAP_NET_RAW` (`capget`; false if it fails).
pub fn net_capable() -> bool {
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_NET_RAW: u32 = 13;
    // struct __user_cap_header_struct { version, pid } and two
    // __user_cap_data_struct { effective, permitted, inheritable }.
    let mut hdr = [VERSION_3, 0];
    let mut data = [0u32; 6];
    // SAFETY: hdr and data are the header and the two data structs the
    // kernel reads and writes for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capget, hdr.as_mut_ptr(), data.as_mut_ptr()) };
    r == 0 && data[0] & (1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW) != 0
}

/// `(is a socket, inode)` of an open fd.
pub fn fstat_sock(fd: c_int) -> Result<(bool, u64), Errno> {
    fstat_type(fd).map(|(t, ino)| (t == libc::S_IFSOCK, ino))
}

/// `fstat()`: the file type bits (`S_IFMT`; 0 for an anonymous inode, as
/// the kernel module's socket files are) and the inode number.
pub fn fstat_type(fd: c_int) -> Result<(libc::mode_t, u64), Errno> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: st is a writable stat buffer.
    check(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: zero-initialised and filled by a successful fstat.
    let st = unsafe { st.assume_init() };
    Ok((st.st_mode & libc::S_IFMT, st.st_ino))
}

/// `getsockopt()` into `out`; returns the length the kernel reported.
pub fn getsockopt_bytes(
    fd: c_int,
    level: c_int,
    name: c_int,
    out: &mut [u8],
) -> Result<usize, Errno> {
    let mut len = out.len() as libc::socklen_t;
    // SAFETY: out is writable for len bytes; len is a valid socklen_t.
    check(unsafe { real::getsockopt(fd, level, name, out.as_mut_ptr().cast(), &mut len) })?;
    Ok(len as usize)
}

/// An `int` socket option.
pub fn sock_int_opt(fd: c_int, level: c_int, name: c_int) -> Result<i32, Errno> {
    let mut b = [0u8; 4];
    getsockopt_bytes(fd, level, name, &mut b)?;
    Ok(i32::from_ne_bytes(b))
}

/// `setsockopt()` with `val`.
pub fn setsockopt_bytes(fd: c_int, level: c_int, name: c_int, val: &[u8]) -> Result<(), Errno> {
    // SAFETY: val is readable for its length.
    check(unsafe {
        real::setsockopt(
            fd,
            level,
            name,
            val.as_ptr().cast(),
            val.len() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Whether the fd's file description has `O_NONBLOCK`.
pub fn get_nonblock(fd: c_int) -> Result<bool, Errno> {
    // SAFETY: F_GETFL takes no argument.
    let fl = check(unsafe { real::fcntl(fd, libc::F_GETFL, 0) })?;
    Ok(fl & libc::O_NONBLOCK != 0)
}

/// Sets or clears `O_NONBLOCK` (a no-op if already so).
pub fn set_nonblock(fd: c_int, on: bool) -> Result<(), Errno> {
    // SAFETY: F_GETFL takes no argument.
    let fl = check(unsafe { real::fcntl(fd, libc::F_GETFL, 0) })?;
    let new = if on {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    if new != fl {
        // SAFETY: F_SETFL takes an int.
        check(unsafe { real::fcntl(fd, libc::F_SETFL, new as libc::c_ulong) })?;
    }
    Ok(())
}

/// Sets or clears `FD_CLOEXEC`.
pub fn set_cloexec(fd: c_int, on: bool) -> Result<(), Errno> {
    let v = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD takes an int.
    check(unsafe { real::fcntl(fd, libc::F_SETFD, v as libc::c_ulong) })?;
    Ok(())
}

/// A close-on-exec duplicate of `fd` numbered `min` or above (the real
/// `fcntl(F_DUPFD_CLOEXEC)`).
pub fn dup_cloexec(fd: c_int, min: c_int) -> Result<c_int, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC takes an int (the lowest number to use).
    check(unsafe { real::fcntl(fd, libc::F_DUPFD_CLOEXEC, min as libc::c_ulong) })
}

/// Reads one accept token byte with the real `read` (blocking or not per
/// the fd's own flags; `EINTR` is returned, not retried).
pub fn read_token(fd: c_int) -> Result<usize, Errno> {
    let mut b = [0u8; 1];
    // SAFETY: b is writable for 1 byte.
    let n = unsafe { real::read(fd, b.as_mut_ptr().cast(), 1) };
    if n < 0 {
        Err(Errno(errno()))
    } else {
        Ok(n as usize)
    }
}

/// `shutdown()` with the real function.
pub fn shutdown(fd: c_int, how: c_int) -> Result<(), Errno> {
    // SAFETY: no memory arguments.
    check(unsafe { real::shutdown(fd, how) })?;
    Ok(())
}

/// Opens a `SOCK_SEQPACKET` connection to the driver's shim socket.
pub fn ctl_connect(path: &CStr) -> Result<c_int, Errno> {
    let bytes = path.to_bytes();
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= sun.sun_path.len() {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in sun.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: no memory arguments.
    let fd = check(unsafe {
        real::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)
    })?;
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    loop {
        // SAFETY: sun is a valid sockaddr_un of len bytes.
        let r = unsafe { real::connect(fd, (&raw const sun).cast(), len) };
        if r == 0 {
            return Ok(fd);
        }
        let e = errno();
        if e != libc::EINTR {
            close(fd);
            return Err(Errno(e));
        }
    }
}

/// Room for one `SCM_RIGHTS` message of up to two fds, aligned.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Sends one packet, with `fd` attached as `SCM_RIGHTS` if given.
pub fn send_packet(sock: c_int, data: &[u8], fd: Option<c_int>) -> Result<(), Errno> {
    send_with_fd(sock, data, fd, libc::MSG_NOSIGNAL)
}

/// Sends `data` in one `sendmsg` with `flags`, `fd` attached as
/// `SCM_RIGHTS` if given; all of it or an error (`EINTR` retried).
pub fn send_with_fd(
    sock: c_int,
    data: &[u8],
    fd: Option<c_int>,
    flags: c_int,
) -> Result<(), Errno> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    let mut cbuf = CmsgBuf([0; 64]);
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(4) } as usize;
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg's control buffer is set and at least CMSG_SPACE(4) long.
        let c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        // SAFETY: c points at the start of cbuf (non-null: controllen ≥ header).
        unsafe {
            (*c).cmsg_level = libc::SOL_SOCKET;
        }
        // SAFETY: as above.
        unsafe {
            (*c).cmsg_type = libc::SCM_RIGHTS;
        }
        // SAFETY: CMSG_LEN is a pure computation.
        let clen = unsafe { libc::CMSG_LEN(4) } as usize;
        // SAFETY: as above.
        unsafe {
            (*c).cmsg_len = clen;
        }
        // SAFETY: CMSG_DATA(c) has room for 4 bytes inside cbuf.
        let d = unsafe { libc::CMSG_DATA(c) };
        // SAFETY: d is valid for 4 bytes, possibly unaligned.
        unsafe { d.cast::<c_int>().write_unaligned(fd) };
    }
    loop {
        // SAFETY: msg points at live iov and control buffers.
        let n = unsafe { real::sendmsg(sock, &msg, flags) };
        if n >= 0 {
            return if n as usize == data.len() {
                Ok(())
            } else {
                Err(Errno::EIO)
            };
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(Errno(e));
        }
    }
}

/// Receives one packet into `buf` and at most one `SCM_RIGHTS` fd (any
/// other fd is closed). `Ok((0, None))` is end-of-file. `EINTR` retried.
pub fn recv_packet(
    sock: c_int,
    buf: &mut [u8],
    cloexec: bool,
) -> Result<(usize, Option<c_int>), Errno> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = CmsgBuf([0; 64]);
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.0.len();
    let flags = if cloexec { libc::MSG_CMSG_CLOEXEC } else { 0 };
    let n = loop {
        // SAFETY: msg points at live iov and control buffers.
        let n = unsafe { real::recvmsg(sock, &mut msg, flags) };
        if n >= 0 {
            break n as usize;
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(Errno(e));
        }
    };
    let mut got = None;
    // SAFETY: msg was filled by recvmsg; its control fields describe cbuf.
    unsafe {
        for_each_fd(&msg, |fd| {
            if got.is_none() {
                got = Some(fd);
            } else {
                close(fd);
            }
        })
    };
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        if let Some(fd) = got {
            close(fd);
        }
        return Err(Errno::EIO);
    }
    Ok((n, got))
}

/// Calls `f` for every fd in the `SCM_RIGHTS` messages of a received
/// `msghdr`.
///
/// # Safety
/// `msg` must be a `msghdr` just filled by a successful `recvmsg`, its
/// control buffer still live.
pub unsafe fn for_each_fd(msg: *const libc::msghdr, mut f: impl FnMut(c_int)) {
    // SAFETY: the caller guarantees msg describes a valid control buffer.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: c is a header inside the control buffer.
        let h = unsafe { *c };
        let (level, ty, len) = (h.cmsg_level, h.cmsg_type, h.cmsg_len);
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN is a pure computation.
            let hdr = unsafe { libc::CMSG_LEN(0) } as usize;
            let n = len.saturating_sub(hdr) / 4;
            // SAFETY: c is a valid header; its data follows.
            let d = unsafe { libc::CMSG_DATA(c) };
            for i in 0..n {
                // SAFETY: i < n fds fit in the cmsg's data, inside the buffer.
                let fd = unsafe { d.wrapping_add(i * 4).cast::<c_int>().read_unaligned() };
                f(fd);
            }
        }
        // SAFETY: msg and c are valid as above.
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
}

/// Waits until `fd` is readable; `timeout_ms` < 0 waits forever. Returns
/// `false` on timeout; `EINTR` is returned, not retried.
pub fn poll_in(fd: c_int, timeout_ms: i32) -> Result<bool, Errno> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: p is one valid pollfd.
    let r = check(unsafe { libc::poll(&mut p, 1, timeout_ms) })?;
    Ok(r > 0)
}

/// Whether `fd` reports hang-up (`POLLHUP`) now, without waiting: on a
/// Unix stream socket, both directions are shut.
pub fn hung_up(fd: c_int) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: p is one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLHUP != 0
}

/// Reads and drops every packet queued on `fd` without waiting (the
/// packets' bytes are cut with `MSG_TRUNC`; a 1-byte buffer is enough).
pub fn discard_all(fd: c_int) {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: b is a live 1-byte buffer.
        let r = unsafe {
            libc::recv(
                fd,
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if r < 0 && errno() != libc::EINTR {
            return;
        }
    }
}

/// Writes a diagnostic line to stderr with the real `write`.
pub fn write_stderr(msg: &[u8]) {
    let mut rest = msg;
    while !rest.is_empty() {
        // SAFETY: rest is readable for its length.
        let n = unsafe { real::write(2, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            return;
        }
        rest = &rest[n as usize..];
    }
}

/// Sends `SIGPIPE` to the calling thread, as the kernel does for `EPIPE`.
pub fn raise_sigpipe() {
    // SAFETY: raise has no memory preconditions.
    unsafe { libc::raise(libc::SIGPIPE) };
}

/// `socket()` with the real function.
pub fn socket(domain: c_int, ty: c_int, protocol: c_int) -> Result<c_int, Errno> {
    // SAFETY: no memory arguments.
    check(unsafe { real::socket(domain, ty, protocol) })
}

/// A new `eventfd` (close-on-exec, non-blocking): a file that is not a
/// socket, to attach to in-band option markers.
pub fn eventfd() -> Result<c_int, Errno> {
    // SAFETY: no memory arguments.
    check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })
}

/// Registers `child` to run in the child after every `fork`.
pub fn at_fork_child(child: extern "C" fn()) {
    // SAFETY: the handler is a plain function with no preconditions.
    unsafe { libc::pthread_atfork(None, None, Some(child)) };
}
