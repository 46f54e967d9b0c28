//! The local Linux transport: memfd regions and eventfd doorbells.
//!
//! `memfd` holds the crate's only `unsafe` code (mapping and unmapping);
//! everything else goes through rustix's safe wrappers. Raw descriptors are
//! owned (`OwnedFd`) from the moment they exist, and interruptible calls are
//! retried on `EINTR`.

mod eventfd;
mod memfd;

pub use eventfd::EventFd;
pub use memfd::MemfdRegion;

use std::io;
use std::time::{Duration, Instant};

use rustix::event::PollFd;
use rustix::time::Timespec;

/// Runs a rustix call, retrying while it fails with `EINTR`.
pub(crate) fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Polls `fds` until one is ready or `deadline` passes (`None`: forever).
/// Returns the number of ready descriptors (0 on timeout); read each one's
/// `revents()` afterwards. `EINTR` restarts the wait with the time left.
pub(crate) fn poll_until(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        let timeout = match deadline {
            None => None,
            Some(d) => {
                // Clamp absurd timeouts; the loop re-polls until the deadline.
                let left = d
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(3600));
                Some(Timespec::try_from(left).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "timeout out of range")
                })?)
            }
        };
        match rustix::event::poll(fds, timeout.as_ref()) {
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
            Ok(0) if deadline.is_none_or(|d| Instant::now() < d) => {}
            Ok(ready) => return Ok(ready),
        }
    }
}
