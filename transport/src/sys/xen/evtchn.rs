//! Event channels through `/dev/xen/evtchn`, and [`XenBell`], the
//! doorbell over one.
//!
//! One descriptor per port, so that each channel's descriptor is pollable
//! on its own. The device delivers a fired port by making the descriptor
//! readable; `read` returns the pending ports (as `u32`s) and leaves them
//! masked until we write them back (unmask). A port that fires while
//! masked stays pending and is delivered again after the unmask, so no
//! event is lost, but several fire as one: an event only means "look at
//! the ring again". Binding also marks the binder's port pending, so the
//! first wait after a bind returns at once (spuriously).
//!
//! Notifying our port raises the peer's. Both directions of a channel
//! share the one port: [`XenBell`]'s `notify` sends to the peer, its
//! `wait` waits for the peer; the two bells of an endpoint are two handles
//! on the same port.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ins_xen::{DomId, Port};
use rustix::event::{PollFd, PollFlags};

use super::ioctl;
use crate::channel::Doorbell;
use crate::sys::linux::poll_until;

/// One bound event-channel port on its own descriptor. Closing the
/// descriptor unbinds the port.
#[derive(Debug)]
pub struct Evtchn {
    dev: File,
    port: Port,
}

impl Evtchn {
    fn open(path: &str) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
    }

    fn port_of(r: i32) -> io::Result<Port> {
        u32::try_from(r)
            .ok()
            .filter(|&p| p != 0 && p <= Port::MAX)
            .map(Port)
            .ok_or_else(|| io::Error::other("the kernel returned an invalid port"))
    }

    /// Allocates a port that only `peer` may bind (`alloc_unbound`).
    pub fn bind_unbound(path: &str, peer: DomId) -> io::Result<Evtchn> {
        let dev = Self::open(path)?;
        let mut arg = [u32::from(peer.0)];
        let port = Self::port_of(ioctl::call(
            dev.as_fd(),
            ioctl::EVTCHN_BIND_UNBOUND_PORT,
            &mut arg,
        )?)?;
        Ok(Evtchn { dev, port })
    }

    /// Binds to `peer`'s unbound `remote` port (`bind_interdomain`).
    pub fn bind_interdomain(path: &str, peer: DomId, remote: Port) -> io::Result<Evtchn> {
        let dev = Self::open(path)?;
        let mut arg = [u32::from(peer.0), remote.0];
        let port = Self::port_of(ioctl::call(
            dev.as_fd(),
            ioctl::EVTCHN_BIND_INTERDOMAIN,
            &mut arg,
        )?)?;
        Ok(Evtchn { dev, port })
    }

    /// Our local port.
    pub fn port(&self) -> Port {
        self.port
    }

    /// Raises the peer's port.
    pub fn notify(&self) -> io::Result<()> {
        let mut arg = [self.port.0];
        ioctl::call(self.dev.as_fd(), ioctl::EVTCHN_NOTIFY, &mut arg).map(drop)
    }

    /// Consumes every pending delivery and unmasks the ports. Returns
    /// whether anything was pending.
    pub fn drain(&self) -> io::Result<bool> {
        let mut any = false;
        let mut buf = [0u8; 64];
        loop {
            let n = match (&self.dev).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(any),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 || n % 4 != 0 {
                return Err(io::Error::other("short read from the event channel device"));
            }
            any = true;
            // Unmask what we were given (it can only be our port).
            (&self.dev).write_all(&buf[..n])?;
        }
    }

    /// Waits until the port fires or `deadline` passes, without consuming.
    pub fn wait_until(&self, deadline: Option<Instant>) -> io::Result<bool> {
        let mut fds = [PollFd::new(&self.dev, PollFlags::IN)];
        Ok(poll_until(&mut fds, deadline)? > 0)
    }
}

impl AsFd for Evtchn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }
}

/// A doorbell over an event channel (see the module docs).
#[derive(Debug, Clone)]
pub struct XenBell {
    chan: Arc<Evtchn>,
}

impl XenBell {
    /// A bell on `chan`.
    pub fn new(chan: Arc<Evtchn>) -> XenBell {
        XenBell { chan }
    }

    /// The channel.
    pub fn channel(&self) -> &Arc<Evtchn> {
        &self.chan
    }
}

impl Doorbell for XenBell {
    fn notify(&self) -> io::Result<()> {
        self.chan.notify()
    }

    fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        if self.chan.wait_until(deadline)? {
            self.chan.drain()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn drain(&self) -> io::Result<()> {
        self.chan.drain().map(drop)
    }

    /// The port stays masked until its delivery is read and written back.
    fn ack(&self) -> io::Result<()> {
        self.chan.drain().map(drop)
    }

    fn as_raw_fd(&self) -> Option<RawFd> {
        Some(self.chan.dev.as_raw_fd())
    }
}

impl AsFd for XenBell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.chan.as_fd()
    }
}
