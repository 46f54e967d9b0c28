//! `close_range` and `closefrom`: the fd table follows closes of whole
//! ranges, as it follows `close`.
//!
//! OpenSSH (and many daemons) call `closefrom(3)` before `exec` and in
//! children; before these hooks the table kept the closed INS sockets'
//! entries, so a later pipe or file that got one of those numbers (through
//! a call the shim does not hook, such as `pipe`) was taken for an INS
//! socket: reads of it failed with `ENOTCONN` or went to the driver for
//! help, which a seccomp-confined child (sshd's pre-authentication
//! process) is killed for.
//!
//! Invariant: after a successful range close every entry in the range is
//! what the `close` hook leaves for one fd (host, its option cache and
//! control slot forgotten, a keeper closed); `CLOSE_RANGE_CLOEXEC` closes nothing and
//! leaves the table alone.

use libc::{c_int, c_uint};

use crate::sys::real;
use crate::table::{Entry, FD_LIMIT, TABLE};

/// `CLOSE_RANGE_CLOEXEC` (linux/close_range.h).
const CLOSE_RANGE_CLOEXEC: c_uint = 1 << 2;

/// The table's bookkeeping for the closed fds `first..=last`.
fn forget_range(first: c_uint, last: c_uint) {
    let end = (last as usize).min(FD_LIMIT - 1);
    let mut fd = first as usize;
    while fd <= end {
        let n = fd as i32;
        let e = TABLE.on_close(n);
        if e == Entry::CONTROL {
            crate::ctl::forget(n);
        } else if e.is_ins() {
            crate::inband::forget(n);
            if crate::keeper::may_keep(e) {
                crate::keeper::release(n);
            }
        }
        fd += 1;
    }
}

/// `close_range(2)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    // SAFETY: forwarded.
    let r = unsafe { real::close_range(first, last, flags) };
    if r == 0 && first <= last && (flags as c_uint) & CLOSE_RANGE_CLOEXEC == 0 {
        forget_range(first, last);
    }
    r
}

/// `closefrom(3)` (glibc ≥ 2.34; it cannot fail).
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn closefrom(lowfd: c_int) {
    // SAFETY: forwarded.
    unsafe { real::closefrom(lowfd) };
    forget_range(lowfd.max(0) as c_uint, c_uint::MAX);
}
