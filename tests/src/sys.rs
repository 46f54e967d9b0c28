//! The few libc calls the harness needs (signals to process groups,
//! resource limits, the effective uid).
#![allow(unsafe_code)]

/// Sends `sig` to the process group `pgid` (ignoring errors: the group may
/// be gone already).
pub fn signal_group(pgid: u32, sig: i32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions; a negative pid names
    // a process group.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Raises the calling process's RLIMIT_NOFILE: soft and hard to `want` if
/// allowed (root may raise the hard limit), else soft to the hard limit.
/// Async-signal-safe (used between fork and exec). Returns the new soft
/// limit.
pub fn raise_nofile(want: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    if r.rlim_max < want {
        let up = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        // SAFETY: `up` is a valid rlimit; failure (no privilege) is handled.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &up) } == 0 {
            return want;
        }
    }
    let soft = libc::rlimit {
        rlim_cur: r.rlim_max.min(want.max(r.rlim_cur)),
        rlim_max: r.rlim_max,
    };
    // SAFETY: `soft` is a valid rlimit within the hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } == 0 {
        soft.rlim_cur
    } else {
        r.rlim_cur
    }
}

/// The effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, the unit of the CPU
/// times in `/proc/PID/stat`).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Makes closing `s` reset the connection (`SO_LINGER` on, 0 s): the
/// kernel sends an RST instead of a FIN.
pub fn reset_on_close(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `l` is a valid linger value of the length given; the fd is
    // open for the borrow's duration.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        r,
        0,
        "setsockopt(SO_LINGER): {}",
        std::io::Error::last_os_error()
    );
}
