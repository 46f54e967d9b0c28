//! The few calls rustix does not wrap: blocking SIGTERM/SIGINT and reading
//! them from a signalfd, and the capability calls (`capget`/`capset`,
//! the bounding and ambient sets, `no_new_privs`) that [`crate::privs`]
//! uses. The only module with `unsafe` code.
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

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's capability sets as 64-bit masks (bit N is
/// capability N): effective, permitted, inheritable.
pub fn cap_get() -> io::Result<[u64; 3]> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `hdr` and `data` are live locals of the layout capget(2)
    // writes for version 3 (a header and two data structs).
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |f: fn(&CapData) -> u32| u64::from(f(&data[0])) | (u64::from(f(&data[1])) << 32);
    Ok([
        join(|d| d.effective),
        join(|d| d.permitted),
        join(|d| d.inheritable),
    ])
}

/// `capset` for the whole process's calling thread: effective, permitted
/// and inheritable become the given masks.
pub fn cap_set(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let split = |m: u64| (m as u32, (m >> 32) as u32);
    let (e0, e1) = split(effective);
    let (p0, p1) = split(permitted);
    let (i0, i1) = split(inheritable);
    let mut data = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: `hdr` and `data` are live locals of the layout capset(2)
    // reads for version 3.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether capability `cap` is in the bounding set; `None` when the
/// kernel does not know it (`EINVAL`: past the last capability).
pub fn cap_bounding_has(cap: u32) -> io::Result<Option<bool>> {
    // SAFETY: PR_CAPBSET_READ takes a capability number only.
    let r = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EINVAL) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(r == 1))
}

/// Removes capability `cap` from the bounding set (needs CAP_SETPCAP).
pub fn cap_bounding_drop(cap: u32) -> io::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes a capability number only.
    let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Empties the ambient set.
pub fn cap_ambient_clear() -> io::Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `no_new_privs` (inherited by every child, kept across `exec`).
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
