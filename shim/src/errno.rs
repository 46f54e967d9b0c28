//! The one errno type the shim answers C callers with.

use core::fmt;

/// A positive Linux errno value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// `EIO`: the shim's answer to anything it cannot map (a broken control
    /// connection, a malformed reply, a caught panic).
    pub const EIO: Errno = Errno(libc::EIO);
    /// `EINVAL`.
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// `EAFNOSUPPORT`.
    pub const EAFNOSUPPORT: Errno = Errno(libc::EAFNOSUPPORT);
    /// `EFAULT`.
    pub const EFAULT: Errno = Errno(libc::EFAULT);
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({})", self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}
