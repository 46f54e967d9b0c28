//! The calls rustix does not wrap: blocking SIGTERM/SIGINT and reading
//! them from a signalfd, and unblocking them in spawned children. The only
//! module with `unsafe` code (the capability calls of [`crate::privs`] are
//! rustix's).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Blocks SIGTERM, SIGINT and SIGPIPE for the process and returns a
/// non-blocking signalfd that becomes readable when SIGTERM or SIGINT
/// arrives. SIGPIPE stays blocked (writes report EPIPE instead).
pub fn signal_fd() -> io::Result<OwnedFd> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `set` is valid for writes of a sigset_t.
    let r = unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGPIPE] {
        // SAFETY: `set` was initialised by sigemptyset.
        let r = unsafe { libc::sigaddset(set.as_mut_ptr(), sig) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    let mut wanted = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `wanted` is valid for writes of a sigset_t.
    let r = unsafe { libc::sigemptyset(wanted.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `wanted` was initialised by sigemptyset.
        let r = unsafe { libc::sigaddset(wanted.as_mut_ptr(), sig) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: `wanted` is initialised; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, wanted.as_ptr(), libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `cmd`'s child start with an empty signal mask (the daemon blocks
/// SIGTERM/SIGINT/SIGPIPE for its signalfd, and a mask survives `exec`).
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    let hook = || {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `set` is valid for writes of a sigset_t.
        let r = unsafe { libc::sigemptyset(set.as_mut_ptr()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `set` is initialised; a null old-set pointer is allowed;
        // sigprocmask is async-signal-safe (we are between fork and exec).
        let r = unsafe { libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only calls async-signal-safe functions and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(hook);
    }
}
