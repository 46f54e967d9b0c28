//! The crate's only `unsafe` code: the few Linux calls that neither rustix
//! nor socket2 expose safely.
//!
//! * [`setsockopt`] / [`getsockopt`] with an arbitrary `(level, name)` and a
//!   raw byte value, so option numbers pass straight through from the wire.
//! * [`become_user`] (glibc's all-threads `setres[ug]id`) and
//!   [`ptrace_seize`]: the sandbox's switch of user and its self-test (the
//!   capability calls are rustix's, in [`super::sandbox`]).
//! * [`block_signals`] + [`signalfd`]: turn SIGTERM/SIGINT into a readable
//!   descriptor that the instance's epoll set watches, so a signal wakes the
//!   loop without a signal handler.
//!
//! Invariants: every pointer handed to the kernel comes from a live Rust
//! slice or local whose length is passed alongside it; every descriptor
//! returned by the kernel is wrapped in an [`OwnedFd`] at once.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Longest option value passed to or read from the kernel. Larger than
/// every option the instance uses (`TCP_INFO` is about 250 bytes).
pub const OPT_LEN_CAP: usize = 512;

fn len_of(n: usize) -> io::Result<libc::socklen_t> {
    if n > OPT_LEN_CAP {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // n <= OPT_LEN_CAP, which fits a socklen_t.
    Ok(n as libc::socklen_t)
}

/// `setsockopt(fd, level, name, value, value.len())`.
pub fn setsockopt(fd: BorrowedFd<'_>, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    let len = len_of(value.len())?;
    // SAFETY: `value` is a live slice of `len` readable bytes; the kernel
    // only reads from it, and only `len` bytes. `fd` is borrowed, so open.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast::<libc::c_void>(),
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt(fd, level, name, out, &len)`: returns the number of bytes
/// the kernel stored (truncated to `out.len()`, capped at [`OPT_LEN_CAP`]).
pub fn getsockopt(fd: BorrowedFd<'_>, level: i32, name: i32, out: &mut [u8]) -> io::Result<usize> {
    let cap = out.len().min(OPT_LEN_CAP);
    let mut len = len_of(cap)?;
    // SAFETY: `out` is a live, exclusively borrowed slice of at least `len`
    // writable bytes; the kernel writes at most `len` bytes there and
    // updates `len`, a local. `fd` is borrowed, so open.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            out.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    };
    if r == 0 {
        // The kernel never reports more than it was given room for.
        Ok((len as usize).min(cap))
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sigset(signals: &[i32]) -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `set` is a local with room for a sigset_t; sigemptyset
    // initialises all of it.
    let r = unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful sigemptyset above.
    let mut set = unsafe { set.assume_init() };
    for &sig in signals {
        // SAFETY: `set` is an initialised local sigset_t.
        let r = unsafe { libc::sigaddset(&mut set, sig) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(set)
}

/// Blocks `signals` in the calling thread (and threads it spawns later), so
/// that they stay pending for a [`signalfd`] instead of running their
/// default action. Call before spawning threads.
pub fn block_signals(signals: &[i32]) -> io::Result<()> {
    let set = sigset(signals)?;
    // SAFETY: `set` is an initialised sigset_t that outlives the call; a
    // null old-set pointer is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// A non-blocking, close-on-exec signalfd for `signals` (which should be
/// blocked with [`block_signals`]).
pub fn signalfd(signals: &[i32]) -> io::Result<OwnedFd> {
    let set = sigset(signals)?;
    // SAFETY: `set` is an initialised sigset_t that outlives the call; -1
    // asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel, is open, and nothing
    // else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal from a signalfd: `Some(signo)`, or `None` when
/// none is pending.
pub fn read_signal(fd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    // struct signalfd_siginfo is 128 bytes; ssi_signo is its first u32.
    let mut buf = [0u8; 128];
    match rustix::io::read(fd, &mut buf) {
        Ok(n) if n >= 4 => Ok(Some(i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]))),
        Ok(_) => Ok(None),
        Err(rustix::io::Errno::AGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Switches every thread of the process to `uid`/`gid` (real, effective
/// and saved) with no supplementary groups. From root to a non-zero uid
/// the kernel also clears the permitted, effective and ambient
/// capabilities.
pub fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: a zero-length list with a null pointer clears the groups.
    check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    // SAFETY: plain integer arguments; glibc applies them to all threads.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: plain integer arguments; glibc applies them to all threads.
    check(unsafe { libc::setresuid(uid, uid, uid) })
}

/// `ptrace(PTRACE_SEIZE, pid)` (the sandbox self-test: it must fail).
/// A seize does not stop the tracee; on success it is detached when we
/// exit.
pub fn ptrace_seize(pid: i32) -> io::Result<()> {
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: PTRACE_SEIZE reads no memory; addr and data (no options)
    // are unused.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, null, null) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn int_option_round_trip_and_caps() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        setsockopt(
            s.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_BROADCAST,
            &1i32.to_ne_bytes(),
        )
        .unwrap();
        let mut out = [0u8; 8];
        let n = getsockopt(s.as_fd(), libc::SOL_SOCKET, libc::SO_BROADCAST, &mut out).unwrap();
        assert_eq!(n, 4);
        assert_eq!(i32::from_ne_bytes([out[0], out[1], out[2], out[3]]), 1);
        let big = vec![0u8; OPT_LEN_CAP + 1];
        let e = setsockopt(s.as_fd(), libc::SOL_SOCKET, libc::SO_BROADCAST, &big).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let e = setsockopt(s.as_fd(), libc::SOL_SOCKET, 9999, &1i32.to_ne_bytes()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
        // Truncation as Linux does it: room for 2 bytes, 2 reported.
        let mut two = [0u8; 2];
        let n = getsockopt(s.as_fd(), libc::SOL_SOCKET, libc::SO_BROADCAST, &mut two).unwrap();
        assert_eq!(n, 2);
    }
}
