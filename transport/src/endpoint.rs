//! One side of an open channel.
//!
//! Wait discipline (no lost wake-ups): a side that finds nothing to do first
//! spins on the ring for a bounded time, then calls the ring's
//! `prepare_wait`/`prepare_wait_space`, which publishes "wake me" in shared
//! memory and re-checks the ring after a full fence. Only if that re-check
//! still finds nothing does it sleep on its doorbell. A peer that produces
//! after the re-check sees the request and rings; one that produced before it
//! is caught by the re-check. Doorbell notifications merge and may be stale,
//! so every wake-up is followed by looking at the ring again.
//!
//! While sleeping, the side also watches the rendezvous socket: hang-up there
//! means the peer process is gone, reported as [`Error::PeerClosed`] once the
//! ring holds nothing more to read.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ins_protocol::hello::Hello;
use ins_protocol::region::SharedRegion;
use ins_protocol::ring::{Consumer, Producer, RingError};
use rustix::event::{PollFd, PollFlags};

use crate::channel::{Doorbell, Local, Transport};
use crate::error::Error;
use crate::sys::linux::poll_until;

/// One side of an open channel (driver or instance) after the handshake,
/// over transport `T` (the local memfd/eventfd one unless said otherwise).
pub struct Endpoint<T: Transport = Local> {
    /// Our outgoing ring.
    pub tx: Producer<Arc<T::Region>>,
    /// Our incoming ring.
    pub rx: Consumer<Arc<T::Region>>,
    /// The peer's doorbell: rung when we publish data or free space.
    pub tx_bell: T::Bell,
    /// Our doorbell: we sleep on it (register it with epoll/mio if needed).
    pub rx_bell: T::Bell,
    /// The rendezvous socket, kept open so that hang-up reports peer death.
    pub control: UnixStream,
    /// The peer's validated hello.
    pub peer: Hello,
    /// The negotiated protocol version.
    pub version: u16,
    /// How long receivers spin before sleeping.
    pub spin: Duration,
    /// Largest frame we may receive.
    pub max_frame: usize,
    /// The shared region (both rings).
    pub region: Arc<T::Region>,
}

/// Why a sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The doorbell rang (the notification has been consumed).
    Bell,
    /// The deadline passed.
    Timeout,
    /// The rendezvous socket hung up: the peer is gone.
    PeerGone,
}

/// Sleeps on `bell` and watches `control` for hang-up until `deadline`.
pub(crate) fn sleep<B: Doorbell + AsFd>(
    bell: &B,
    control: &UnixStream,
    deadline: Option<Instant>,
) -> Result<Wake, Error> {
    let mut fds = [
        PollFd::new(bell, PollFlags::IN),
        PollFd::new(control, PollFlags::RDHUP),
    ];
    let ready = poll_until(&mut fds, deadline).map_err(Error::io("poll doorbell"))?;
    if ready == 0 {
        return Ok(Wake::Timeout);
    }
    let gone = fds[1]
        .revents()
        .intersects(PollFlags::HUP | PollFlags::RDHUP | PollFlags::ERR);
    if fds[0].revents().contains(PollFlags::IN) {
        bell.drain().map_err(Error::io("read doorbell"))?;
        return Ok(Wake::Bell);
    }
    if gone {
        return Ok(Wake::PeerGone);
    }
    // POLLNVAL or an event we did not ask for: treat as a spurious wake-up.
    Ok(Wake::Bell)
}

/// Pops one frame and publishes the freed space, ringing the producer if it
/// waits for space.
pub(crate) fn try_recv_parts<R: SharedRegion, B: Doorbell>(
    rx: &mut Consumer<Arc<R>>,
    tx_bell: &B,
    buf: &mut [u8],
) -> Result<Option<usize>, Error> {
    match rx.pop(buf)? {
        Some(n) => {
            if rx.release()? {
                tx_bell.notify().map_err(Error::io("ring doorbell"))?;
            }
            Ok(Some(n))
        }
        None => Ok(None),
    }
}

/// Receives one frame, spinning for `spin` then sleeping until `deadline`.
pub(crate) fn recv_parts<R: SharedRegion, B: Doorbell + AsFd>(
    rx: &mut Consumer<Arc<R>>,
    tx_bell: &B,
    rx_bell: &B,
    control: &UnixStream,
    buf: &mut [u8],
    spin: Duration,
    deadline: Option<Instant>,
) -> Result<Option<usize>, Error> {
    if let Some(n) = try_recv_parts(rx, tx_bell, buf)? {
        return Ok(Some(n));
    }
    if spin_until(spin, || rx.peek_len().map(|l| l.is_some()))?
        && let Some(n) = try_recv_parts(rx, tx_bell, buf)?
    {
        return Ok(Some(n));
    }
    loop {
        if !rx.prepare_wait()? {
            match sleep(rx_bell, control, deadline)? {
                Wake::Bell => {}
                Wake::Timeout => return try_recv_parts(rx, tx_bell, buf),
                Wake::PeerGone => {
                    // Deliver whatever the peer published before it died.
                    return match try_recv_parts(rx, tx_bell, buf)? {
                        Some(n) => Ok(Some(n)),
                        None => Err(Error::PeerClosed),
                    };
                }
            }
        }
        if let Some(n) = try_recv_parts(rx, tx_bell, buf)? {
            return Ok(Some(n));
        }
    }
}

/// Spins until `ready` says so or `spin` passes. Returns whether it did.
fn spin_until(
    spin: Duration,
    mut ready: impl FnMut() -> Result<bool, RingError>,
) -> Result<bool, Error> {
    if spin.is_zero() {
        return Ok(false);
    }
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            if ready()? {
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= spin {
            return Ok(false);
        }
    }
}

impl<T: Transport> Endpoint<T> {
    /// Pushes one frame without publishing it; call [`Endpoint::flush`]
    /// after a batch. `Err(Error::Ring(RingError::Full))` when it does not
    /// fit now (nothing is written).
    #[inline]
    pub fn push(&mut self, frame: &[u8]) -> Result<(), Error> {
        self.tx.try_push(frame)?;
        Ok(())
    }

    /// Publishes pushed frames and rings the peer if it waits for them.
    #[inline]
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.tx.flush()? {
            self.tx_bell.notify().map_err(Error::io("ring doorbell"))?;
        }
        Ok(())
    }

    /// Pushes and publishes one frame, ringing the peer if needed. Fails with
    /// `Error::Ring(RingError::Full)` if there is no room now; see
    /// [`Endpoint::send_wait`] to wait for room.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), Error> {
        self.push(frame)?;
        self.flush()
    }

    /// Sends one frame, waiting (spin, then sleep) up to `timeout` for room.
    /// Returns `Ok(false)` if the timeout passed first.
    pub fn send_wait(&mut self, frame: &[u8], timeout: Option<Duration>) -> Result<bool, Error> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            match self.tx.try_push(frame) {
                Ok(()) => {
                    self.flush()?;
                    return Ok(true);
                }
                Err(RingError::Full) => {}
                Err(e) => return Err(e.into()),
            }
            // Whatever we pushed before must be visible, or we wait forever.
            self.flush()?;
            let need = frame.len();
            if spin_until(self.spin, || {
                self.tx.free_frame_space().map(|free| free >= need)
            })? {
                continue;
            }
            if self.tx.prepare_wait_space(need)? {
                continue;
            }
            match sleep(&self.rx_bell, &self.control, deadline)? {
                Wake::Bell => {}
                Wake::Timeout => return Ok(false),
                Wake::PeerGone => return Err(Error::PeerClosed),
            }
        }
    }

    /// Receives one frame into `buf` (which must hold `max_frame` bytes)
    /// without waiting.
    #[inline]
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        try_recv_parts(&mut self.rx, &self.tx_bell, buf)
    }

    /// Receives one frame into `buf`, spinning for `spin` and then sleeping
    /// on the doorbell for up to `timeout` (`None`: forever). `Ok(None)` on
    /// timeout; [`Error::PeerClosed`] if the peer went away and nothing is
    /// left to read.
    pub fn recv_wait(
        &mut self,
        buf: &mut [u8],
        spin: Duration,
        timeout: Option<Duration>,
    ) -> Result<Option<usize>, Error> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        recv_parts(
            &mut self.rx,
            &self.tx_bell,
            &self.rx_bell,
            &self.control,
            buf,
            spin,
            deadline,
        )
    }

    /// [`Endpoint::recv_wait`] with the channel's configured spin.
    pub fn recv(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<Option<usize>, Error> {
        self.recv_wait(buf, self.spin, timeout)
    }

    /// Receives every frame available now (at most `max`), calling `f` on
    /// each, and publishes the freed space once at the end. Returns how
    /// many were received. `buf` must hold `max_frame` bytes.
    pub fn recv_batch(
        &mut self,
        buf: &mut [u8],
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, Error> {
        let mut count = 0;
        while count < max {
            match self.rx.pop(buf)? {
                Some(n) => {
                    f(&buf[..n]);
                    count += 1;
                }
                None => break,
            }
        }
        if count > 0 && self.rx.release()? {
            self.tx_bell.notify().map_err(Error::io("ring doorbell"))?;
        }
        Ok(count)
    }

    /// Waits (spin, then sleep) until a frame is available or `timeout`
    /// passes, without consuming it. Returns whether one is available.
    pub fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool, Error> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        if self.rx.peek_len()?.is_some() {
            return Ok(true);
        }
        if spin_until(self.spin, || self.rx.peek_len().map(|l| l.is_some()))? {
            return Ok(true);
        }
        loop {
            if self.rx.prepare_wait()? {
                return Ok(true);
            }
            match sleep(&self.rx_bell, &self.control, deadline)? {
                Wake::Bell => {}
                Wake::Timeout => return Ok(self.rx.peek_len()?.is_some()),
                Wake::PeerGone => {
                    return if self.rx.peek_len()?.is_some() {
                        Ok(true)
                    } else {
                        Err(Error::PeerClosed)
                    };
                }
            }
            if self.rx.peek_len()?.is_some() {
                return Ok(true);
            }
        }
    }
}

impl<T: Transport> std::fmt::Debug for Endpoint<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("peer", &self.peer)
            .field("version", &self.version)
            .field("spin", &self.spin)
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}
