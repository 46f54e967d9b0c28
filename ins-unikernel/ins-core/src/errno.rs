//! The errno newtype every [`Stack`](crate::stack::Stack) operation returns.
//!
//! Values are Linux's (x86-64/aarch64 generic numbering), because the errors
//! end up in a C program's `errno` on a Linux PVM. A stack that is not Linux
//! (a unikernel stack) maps its own errors onto these constants; the executor
//! never interprets a raw number that is not listed here except to pass it on.
//!
//! Invariant: an `Errno` is never 0 when it describes a failure; `Errno(0)`
//! is not constructed by this crate.

use core::fmt;

/// A Linux errno value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($(#[$doc:meta])* $name:ident = $val:expr;)*) => {
        impl Errno {
            $($(#[$doc])* pub const $name: Errno = Errno($val);)*

            /// The symbolic name (`"EAGAIN"`), or `None` for a value not listed here.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    /// Operation not permitted.
    EPERM = 1;
    /// No such file or directory (also: no such option/algorithm name).
    ENOENT = 2;
    /// Interrupted call.
    EINTR = 4;
    /// I/O error.
    EIO = 5;
    /// Bad handle.
    EBADF = 9;
    /// Try again: the operation would block.
    EAGAIN = 11;
    /// Out of memory.
    ENOMEM = 12;
    /// Permission denied.
    EACCES = 13;
    /// Bad address (a buffer argument too short for an option, for example).
    EFAULT = 14;
    /// Resource busy.
    EBUSY = 16;
    /// Invalid argument.
    EINVAL = 22;
    /// Too many open handles in this instance.
    EMFILE = 24;
    /// Broken pipe: sending on a connection whose write side is shut down.
    EPIPE = 32;
    /// Destination address required.
    EDESTADDRREQ = 89;
    /// Message too long for a datagram.
    EMSGSIZE = 90;
    /// Protocol wrong type for socket.
    EPROTOTYPE = 91;
    /// Protocol not available (unknown socket option).
    ENOPROTOOPT = 92;
    /// Protocol not supported.
    EPROTONOSUPPORT = 93;
    /// Socket type not supported.
    ESOCKTNOSUPPORT = 94;
    /// Operation not supported on this kind of socket.
    EOPNOTSUPP = 95;
    /// Address family not supported.
    EAFNOSUPPORT = 97;
    /// Address already in use.
    EADDRINUSE = 98;
    /// Cannot assign requested address.
    EADDRNOTAVAIL = 99;
    /// Network is down.
    ENETDOWN = 100;
    /// Network unreachable.
    ENETUNREACH = 101;
    /// Connection aborted (before accept completed, or by a mitigation).
    ECONNABORTED = 103;
    /// Connection reset by peer.
    ECONNRESET = 104;
    /// No buffer space available.
    ENOBUFS = 105;
    /// Already connected.
    EISCONN = 106;
    /// Not connected.
    ENOTCONN = 107;
    /// Connection timed out.
    ETIMEDOUT = 110;
    /// Connection refused.
    ECONNREFUSED = 111;
    /// Host unreachable.
    EHOSTUNREACH = 113;
    /// Operation already in progress (a second connect while one is pending).
    EALREADY = 114;
    /// Operation now in progress: a non-blocking connect has started.
    EINPROGRESS = 115;
}

impl Errno {
    /// `EWOULDBLOCK` is `EAGAIN` on Linux.
    pub const EWOULDBLOCK: Errno = Errno::EAGAIN;

    /// Whether this is "would block" (`EAGAIN`): retry after a readiness event.
    pub fn is_would_block(self) -> bool {
        self == Errno::EAGAIN
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.0),
            None => write!(f, "errno {}", self.0),
        }
    }
}

impl core::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::prelude::rust_2024::*;

    #[test]
    fn linux_values() {
        assert_eq!(Errno::EAGAIN.0, 11);
        assert_eq!(Errno::EINPROGRESS.0, 115);
        assert_eq!(Errno::ECONNREFUSED.0, 111);
        assert_eq!(Errno::ECONNRESET.0, 104);
        assert_eq!(Errno::EMFILE.0, 24);
        assert_eq!(Errno::EOPNOTSUPP.0, 95);
        assert_eq!(Errno::EWOULDBLOCK, Errno::EAGAIN);
    }

    #[test]
    fn names_and_display() {
        assert_eq!(Errno::ENOTCONN.name(), Some("ENOTCONN"));
        assert_eq!(Errno(4242).name(), None);
        assert_eq!(format!("{:?}", Errno::EBADF), "EBADF");
        assert_eq!(format!("{}", Errno::EBADF), "EBADF (9)");
        assert_eq!(format!("{}", Errno(4242)), "errno 4242");
        assert!(Errno::EAGAIN.is_would_block());
        assert!(!Errno::EINTR.is_would_block());
    }
}
