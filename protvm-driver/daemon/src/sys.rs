//! The few calls rustix does not wrap: blocking SIGTERM/SIGINT and reading
//! them from a signalfd. The only module with `unsafe` code.
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
