//! The ioctls of Linux's `/dev/xen/{gntalloc,gntdev,evtchn}`, with their
//! numbers and argument layouts taken from the public uapi headers
//! (`include/uapi/xen/gntalloc.h`, `gntdev.h`, `evtchn.h`).
//!
//! Numbers are `_IOC(_IOC_NONE, type, nr, size)`: on x86 that is
//! `size << 16 | type << 8 | nr` (direction bits 0), where `size` is the C
//! `sizeof` of the argument struct *including* its one-element trailing
//! array and padding. Variable-length arguments (`gref_ids[count]`,
//! `refs[count]`) are passed as a buffer of `u32` words holding the fixed
//! part followed by the array; the kernel copies the header, then the
//! array from the array's offset. Little-endian (x86) layouts only.
//!
//! Each function is one `ioctl` call on a descriptor we own, with a
//! pointer to a buffer we own and that outlives the call.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const fn ioc_none(ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    ((size as libc::c_ulong) << 16) | ((ty as libc::c_ulong) << 8) | nr as libc::c_ulong
}

/// `IOCTL_GNTALLOC_ALLOC_GREF`: `{u16 domid, u16 flags, u32 count, u64 index,
/// u32 gref_ids[1]}`, sizeof 24.
pub const GNTALLOC_ALLOC_GREF: libc::c_ulong = ioc_none(b'G', 5, 24);
/// `IOCTL_GNTALLOC_DEALLOC_GREF`: `{u64 index, u32 count}`, sizeof 16.
pub const GNTALLOC_DEALLOC_GREF: libc::c_ulong = ioc_none(b'G', 6, 16);
/// `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`: `{u64 index, u32 action, u32 port}`, sizeof 16.
pub const GNTALLOC_SET_UNMAP_NOTIFY: libc::c_ulong = ioc_none(b'G', 7, 16);
/// `GNTALLOC_FLAG_WRITABLE`.
pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;

/// `IOCTL_GNTDEV_MAP_GRANT_REF`: `{u32 count, u32 pad, u64 index,
/// {u32 domid, u32 ref} refs[1]}`, sizeof 24.
pub const GNTDEV_MAP_GRANT_REF: libc::c_ulong = ioc_none(b'G', 0, 24);
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF`: `{u64 index, u32 count, u32 pad}`, sizeof 16.
pub const GNTDEV_UNMAP_GRANT_REF: libc::c_ulong = ioc_none(b'G', 1, 16);
/// `IOCTL_GNTDEV_SET_UNMAP_NOTIFY`: `{u64 index, u32 action, u32 port}`, sizeof 16.
pub const GNTDEV_SET_UNMAP_NOTIFY: libc::c_ulong = ioc_none(b'G', 7, 16);

/// `UNMAP_NOTIFY_CLEAR_BYTE`: zero the byte at `index` on unmap.
pub const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 1;
/// `UNMAP_NOTIFY_SEND_EVENT`: send an event on `port` on unmap.
pub const UNMAP_NOTIFY_SEND_EVENT: u32 = 2;

/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: `{uint remote_domain, remote_port}`.
pub const EVTCHN_BIND_INTERDOMAIN: libc::c_ulong = ioc_none(b'E', 1, 8);
/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: `{uint remote_domain}`.
pub const EVTCHN_BIND_UNBOUND_PORT: libc::c_ulong = ioc_none(b'E', 2, 4);
/// `IOCTL_EVTCHN_UNBIND`: `{uint port}`.
pub const EVTCHN_UNBIND: libc::c_ulong = ioc_none(b'E', 3, 4);
/// `IOCTL_EVTCHN_NOTIFY`: `{uint port}`.
pub const EVTCHN_NOTIFY: libc::c_ulong = ioc_none(b'E', 4, 4);

/// Runs `ioctl(fd, request, arg)` where `arg` points to `words`, retrying
/// on `EINTR`. Returns the ioctl's non-negative result.
pub fn call(fd: BorrowedFd<'_>, request: libc::c_ulong, words: &mut [u32]) -> io::Result<i32> {
    loop {
        // SAFETY: `fd` is an open descriptor borrowed for the call; `words`
        // is a live, writable buffer at least as large as the argument the
        // kernel reads and writes for `request` (callers size it from the
        // uapi layout and the count they put in it), and it outlives the
        // call.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, words.as_mut_ptr()) };
        if r >= 0 {
            return Ok(r);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Splits a `u64` into two little-endian `u32` words.
pub fn u64_words(v: u64) -> [u32; 2] {
    [v as u32, (v >> 32) as u32]
}

/// Joins two little-endian `u32` words.
pub fn words_u64(w: &[u32]) -> u64 {
    u64::from(w[0]) | (u64::from(w[1]) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_uapi_encoding() {
        // _IOC(_IOC_NONE, 'G', 5, 24) and friends, computed by hand.
        assert_eq!(GNTALLOC_ALLOC_GREF, 0x0018_4705);
        assert_eq!(GNTDEV_MAP_GRANT_REF, 0x0018_4700);
        assert_eq!(GNTDEV_SET_UNMAP_NOTIFY, 0x0010_4707);
        assert_eq!(EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
        assert_eq!(EVTCHN_NOTIFY, 0x0004_4504);
        assert_eq!(
            words_u64(&u64_words(0x1234_5678_9abc_def0)),
            0x1234_5678_9abc_def0
        );
    }
}
