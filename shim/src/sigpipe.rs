//! The program's `SIGPIPE` disposition, so that a stream write can be the
//! program's own `write`/`writev` system call whenever that gives the same
//! result.
//!
//! An INS stream socket is the app end of a Unix socket pair; a write to it
//! after the peer reset must give `ECONNRESET` without `SIGPIPE` the first
//! time and `EPIPE` with `SIGPIPE` after, as on Linux, so the shim sends
//! with `MSG_NOSIGNAL` and decides the signal itself. When `SIGPIPE` is
//! ignored the kernel's signal is discarded anyway, and `write`/`writev`
//! are sent as they are: a program that confines itself with seccomp to
//! `read`/`write` (OpenSSH's pre-authentication sandbox, which kills the
//! process on `sendto`/`sendmsg`) keeps working under the shim.
//!
//! Invariant: [`ignored`] is true only when `SIGPIPE` is `SIG_IGN`. The
//! state is learnt once per image with `sigaction(SIGPIPE, NULL, &old)`
//! (the disposition survives `exec`), then followed through the program's
//! `sigaction` and `signal` calls (hooked here); a change made another way
//! (`sigset`, `bsd_signal`, `sysv_signal`, a raw system call) makes the
//! state unknown again, which is looked up at the next write.

use std::sync::atomic::{AtomicU8, Ordering};

use libc::{c_int, sighandler_t};

use crate::sys::real;

const UNKNOWN: u8 = 0;
const IGNORED: u8 = 1;
const HANDLED: u8 = 2;

/// The disposition as last known (Relaxed: a single word, no other data
/// is published with it).
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

fn record(handler: sighandler_t) {
    let s = if handler == libc::SIG_IGN {
        IGNORED
    } else {
        HANDLED
    };
    STATE.store(s, Ordering::Relaxed);
}

/// Whether `SIGPIPE` is ignored.
pub fn ignored() -> bool {
    match STATE.load(Ordering::Relaxed) {
        IGNORED => true,
        HANDLED => false,
        _ => {
            // SAFETY: an all-zero sigaction is valid for the kernel to
            // overwrite; a null new action only reads the old one.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: as above; `old` is a live local.
            let r = unsafe { real::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) };
            if r != 0 {
                return false;
            }
            record(old.sa_sigaction);
            old.sa_sigaction == libc::SIG_IGN
        }
    }
}

/// `sigaction(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    // SAFETY: forwarded.
    let r = unsafe { real::sigaction(sig, act, old) };
    if r == 0 && sig == libc::SIGPIPE && !act.is_null() {
        // SAFETY: the caller's readable action (the call succeeded).
        let a = unsafe { &*act };
        // With SA_SIGINFO the handler is a function, never SIG_IGN.
        if a.sa_flags & libc::SA_SIGINFO != 0 {
            STATE.store(HANDLED, Ordering::Relaxed);
        } else {
            record(a.sa_sigaction);
        }
    }
    r
}

/// `signal(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn signal(sig: c_int, handler: sighandler_t) -> sighandler_t {
    // SAFETY: forwarded.
    let r = unsafe { real::signal(sig, handler) };
    if sig == libc::SIGPIPE {
        if r == libc::SIG_ERR {
            STATE.store(UNKNOWN, Ordering::Relaxed);
        } else {
            record(handler);
        }
    }
    r
}

/// Marks the state unknown (a change the hooks cannot follow).
pub fn forget() {
    STATE.store(UNKNOWN, Ordering::Relaxed);
}

/// `sigset(3)`, `bsd_signal(3)`, `sysv_signal(3)`: forwarded; the state
/// becomes unknown when `SIGPIPE` changes.
macro_rules! forgetting {
    ($name:ident, $real:ident) => {
        /// As the C function; see the module docs.
        ///
        /// # Safety
        /// As the C function.
        #[cfg_attr(not(test), unsafe(no_mangle))]
        pub unsafe extern "C" fn $name(sig: c_int, handler: sighandler_t) -> sighandler_t {
            // SAFETY: forwarded.
            let r = unsafe { real::$real(sig, handler) };
            if sig == libc::SIGPIPE {
                forget();
            }
            r
        }
    };
}
forgetting!(sigset, sigset);
forgetting!(bsd_signal, bsd_signal);
forgetting!(sysv_signal, sysv_signal);
