//! `EventFd`: a non-blocking eventfd used as a doorbell.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::fs::OFlags;

use super::{poll_until, retry};
use crate::Error;
use crate::channel::Doorbell;

/// An eventfd doorbell (`EFD_NONBLOCK | EFD_CLOEXEC`).
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new doorbell with no pending notification.
    pub fn new() -> io::Result<Self> {
        let fd =
            retry(|| rustix::event::eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC))?;
        Ok(EventFd { fd })
    }

    /// Adopts a descriptor received from a peer, checking (where `/proc` is
    /// available) that it is an eventfd, and making it non-blocking.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, Error> {
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        match std::fs::read_link(&link) {
            Ok(target) if target.as_os_str() == "anon_inode:[eventfd]" => {}
            Ok(_) => return Err(Error::BadFd("doorbell is not an eventfd")),
            Err(e) => tracing::warn!("cannot check doorbell type through {link}: {e}"),
        }
        let flags = retry(|| rustix::fs::fcntl_getfl(&fd)).map_err(Error::io("fcntl F_GETFL"))?;
        if flags & OFlags::ACCMODE != OFlags::RDWR {
            return Err(Error::BadFd("doorbell is not read-write"));
        }
        if !flags.contains(OFlags::NONBLOCK) {
            retry(|| rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK))
                .map_err(Error::io("fcntl F_SETFL O_NONBLOCK"))?;
        }
        Ok(EventFd { fd })
    }

    /// Adopts a descriptor that speaks the eventfd protocol without being
    /// an eventfd: the `ins` kernel module's channel file
    /// ([`crate::sys::kmod`]), where an 8-byte write notifies the module,
    /// an 8-byte read consumes the module's notification and `POLLIN` says
    /// one is pending. Made non-blocking (the flag is the open file's, so
    /// it holds for every copy of the descriptor).
    pub(crate) fn adopt_channel_file(fd: OwnedFd) -> io::Result<Self> {
        let flags = retry(|| rustix::fs::fcntl_getfl(&fd))?;
        retry(|| rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK))?;
        Ok(EventFd { fd })
    }

    /// Waits until notified or `deadline` passes, without consuming the
    /// notification. Returns `true` if notified.
    pub fn wait_until(&self, deadline: Option<Instant>) -> io::Result<bool> {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        Ok(poll_until(&mut fds, deadline)? > 0)
    }
}

impl Doorbell for EventFd {
    fn notify(&self) -> io::Result<()> {
        match retry(|| rustix::io::write(&self.fd, &1u64.to_ne_bytes())) {
            Ok(_) => Ok(()),
            // The counter is saturated: a notification is pending anyway.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        if self.wait_until(deadline)? {
            self.drain()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn drain(&self) -> io::Result<()> {
        let mut buf = [0u8; 8];
        match retry(|| rustix::io::read(&self.fd, &mut buf)) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn as_raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_wait_drain() {
        let bell = EventFd::new().unwrap();
        assert!(!bell.wait(Some(Duration::from_millis(1))).unwrap());
        bell.notify().unwrap();
        bell.notify().unwrap();
        assert!(bell.wait(Some(Duration::from_secs(1))).unwrap());
        // Notifications merged and were consumed by the wait.
        assert!(!bell.wait(Some(Duration::ZERO)).unwrap());
        bell.notify().unwrap();
        bell.drain().unwrap();
        assert!(!bell.wait(Some(Duration::ZERO)).unwrap());
    }

    #[test]
    fn adopts_only_eventfds() {
        let bell = EventFd::new().unwrap();
        let dup = bell.as_fd().try_clone_to_owned().unwrap();
        let peer = EventFd::from_fd(dup).unwrap();
        peer.notify().unwrap();
        assert!(bell.wait(Some(Duration::from_secs(1))).unwrap());
        let memfd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        assert!(matches!(EventFd::from_fd(memfd), Err(Error::BadFd(_))));
    }
}
