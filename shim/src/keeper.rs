//! Keepers: the program's copy of the driver's end of the pair of each INS
//! listener and bound or connected datagram socket.
//!
//! A listener's app end reads one token byte per connection to accept
//! (`ops::accept`). When the driver exits, the kernel closes its end of
//! every pair; without a keeper a listener's app end would then read
//! end-of-file and poll readable for ever, and an event loop (nginx's
//! workers, sshd) would spin on an `accept()` that fails at once. The
//! driver hands a copy of its end with every successful `listen()` and
//! with `Identify` of a listener (an image started by `exec` asks that);
//! the shim keeps it, close-on-exec, as long as the program holds that
//! listener fd. The pair's other end then outlives the driver: a listener
//! whose network is gone never becomes readable, and `accept()` waits
//! (`EAGAIN` when non-blocking), as a Linux listener no connection reaches
//! does. Its cost is one fd per listener fd.
//!
//! A datagram socket is kept the same way from the answer that binds it:
//! its `bind()` (a UDP server such as dnsmasq), the auto-bind before its
//! first send (`ops::autobind`) or its `connect()` (UDP clients), and
//! `Identify` of such a socket. Without it, its app end (a
//! `SOCK_SEQPACKET` pair end) read empty datagrams for ever once the
//! driver was gone, and a `select` loop around `recv` spun. Sends on it
//! then go nowhere (the driver's end takes them until its queue is full;
//! then a send waits, or says `EAGAIN`), as datagrams into a network that
//! is gone do. A datagram socket never bound, sent on nor connected is
//! not kept (one fd fewer for sockets that never carry anything); it
//! reads empty datagrams once the driver is gone.
//!
//! Invariants: `KEEPERS[l]` is 0 or `inode << 21 | (keeper fd + 1)` for
//! listener fd `l`; keeper fds are host entries in the fd table. A keeper
//! is closed only while its number still names the socket with that
//! inode: the program may have closed it behind the shim (`closefrom`,
//! a raw system call) and the number been reused. A `dup` of a listener
//! gets a keeper of its own (a duplicate), so closing either copy leaves
//! the other kept.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ctl::Fd;
use crate::sys;
use crate::table::{Entry, FD_LIMIT, TABLE};

/// Low bits: keeper fd + 1 (fds are below [`FD_LIMIT`] = 2^20).
const FD_BITS: u32 = 21;
const FD_MASK: u64 = (1 << FD_BITS) - 1;

static KEEPERS: [AtomicU64; FD_LIMIT] = [const { AtomicU64::new(0) }; FD_LIMIT];

fn slot(fd: i32) -> Option<&'static AtomicU64> {
    usize::try_from(fd).ok().and_then(|i| KEEPERS.get(i))
}

/// Whether an fd with entry `e` may have a keeper: an INS listener or
/// datagram socket.
pub fn may_keep(e: Entry) -> bool {
    e.is_ins() && (e.listening() || e.dgram())
}

/// `keeper` came with a successful `listen()`, explicit datagram `bind()`
/// or `Identify` of `listener`: keep it (a keeper the number held before
/// is released).
pub fn keep(listener: i32, keeper: Fd) {
    let Some(s) = slot(listener) else {
        return;
    };
    let mut keeper = keeper;
    if keeper.raw() <= libc::STDERR_FILENO {
        // A program that closed a standard stream expects the next file it
        // opens to take that number: the keeper moves out of the way.
        match sys::dup_cloexec(keeper.raw(), libc::STDERR_FILENO + 1) {
            Ok(d) => keeper = Fd::adopt(d),
            Err(_) => return,
        }
    }
    let k = keeper.raw();
    let Ok((true, ino)) = sys::fstat_sock(k) else {
        return;
    };
    let Ok(kfd) = u64::try_from(k) else {
        return;
    };
    if kfd + 1 > FD_MASK || ino >> (64 - FD_BITS) != 0 {
        return;
    }
    TABLE.set(k, Entry::HOST);
    let old = s.swap(ino << FD_BITS | (kfd + 1), Ordering::AcqRel);
    let _ = keeper.into_raw();
    close_kept(old);
}

/// Fd `listener` is being closed (or replaced): close its keeper.
pub fn release(listener: i32) {
    if let Some(s) = slot(listener) {
        close_kept(s.swap(0, Ordering::AcqRel));
    }
}

/// `new` is now a copy of fd `old`: it gets a keeper of its own if `old`
/// has one.
pub fn copy(old: i32, new: i32) {
    let Some(k) = slot(old).and_then(|s| live(s.load(Ordering::Acquire))) else {
        release(new);
        return;
    };
    match sys::dup_cloexec(k, libc::STDERR_FILENO + 1) {
        Ok(d) => keep(new, Fd::adopt(d)),
        Err(_) => release(new),
    }
}

/// Whether fd `fd` has a keeper (no system call: the slot only).
pub fn has(fd: i32) -> bool {
    slot(fd).is_some_and(|s| s.load(Ordering::Relaxed) != 0)
}

/// Discards the datagrams waiting in `fd`'s keeper: what the program sent
/// on a datagram socket after its driver was gone, which nothing else will
/// ever read. Bounded by the keeper's queue (its receive buffer).
pub fn discard_queued(fd: i32) {
    if let Some(k) = slot(fd).and_then(|s| live(s.load(Ordering::Acquire))) {
        sys::discard_all(k);
    }
}

/// The keeper fd a slot value names, if the number still names it.
fn live(v: u64) -> Option<i32> {
    if v == 0 {
        return None;
    }
    let k = i32::try_from((v & FD_MASK) - 1).ok()?;
    matches!(sys::fstat_sock(k), Ok((true, ino)) if ino == v >> FD_BITS).then_some(k)
}

fn close_kept(v: u64) {
    if let Some(k) = live(v) {
        TABLE.on_close(k);
        sys::close(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (i32, i32) {
        use std::os::fd::IntoRawFd;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (a.into_raw_fd(), b.into_raw_fd())
    }

    fn open(fd: i32) -> bool {
        sys::fstat_sock(fd).is_ok()
    }

    /// The keeper is closed with its listener, and a copy's keeper is its
    /// own; a keeper number the program reused is left alone.
    #[test]
    fn keeper_follows_the_listener() {
        let (app, drv) = pair();
        keep(app, Fd::adopt(drv));
        assert!(open(drv));
        let app2 = sys::dup_cloexec(app, 0).unwrap();
        copy(app, app2);
        release(app);
        assert!(!open(drv), "the keeper is closed with its listener");
        let k2 = live(slot(app2).unwrap().load(Ordering::Acquire)).expect("the copy keeps");
        // The program closes the keeper behind the shim; the number is
        // reused by another socket: releasing must not close that one.
        sys::close(k2);
        let (x, y) = pair();
        let reused = if x == k2 || y == k2 { k2 } else { -1 };
        release(app2);
        if reused >= 0 {
            assert!(open(reused), "a reused number is not the keeper");
        }
        for fd in [app, app2, x, y] {
            sys::close(fd);
        }
    }
}
