//! The guest side of the xenstore ring (`io/xs_wire.h`): a byte stream for
//! ins-xen's xenstore client ([`ins_xen::xenstore::Client`]).
//!
//! The page holds `req[1024]`, `rsp[1024]` and four free-running `u32`
//! indices. We produce requests and consume responses; xenstored (dom0) is
//! trusted for availability only: an impossible `rsp_prod - rsp_cons` is an
//! error, never an out-of-bounds read, and every wait is bounded by a
//! timeout so a dead daemon cannot hang the instance.

use core::fmt;
use core::sync::atomic::Ordering;

use ins_xen::xenstore::Stream;

use crate::events::Events;
use crate::page::Mapped;
use crate::time::Clock;

const REQ: usize = 0;
const RSP: usize = 1024;
const RING: u32 = 1024;
const REQ_CONS: usize = 2048;
const REQ_PROD: usize = 2052;
const RSP_CONS: usize = 2056;
const RSP_PROD: usize = 2060;

/// Why the ring stream failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// xenstored did not answer within the timeout.
    Timeout,
    /// The ring's indices are impossible (corrupted by the peer).
    Corrupt,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Timeout => f.write_str("xenstore did not answer in time"),
            RingError::Corrupt => f.write_str("xenstore ring indices are corrupt"),
        }
    }
}

/// The xenstore ring of this domain.
#[derive(Debug)]
pub struct XsRing {
    page: Mapped,
    port: u32,
    events: Events,
    clock: Clock,
    timeout_ns: u64,
}

impl XsRing {
    /// The ring on `page` (start_info's `store_mfn`), kicked through `port`
    /// (`store_evtchn`); each blocking read or write gives up after
    /// `timeout_ns`.
    pub fn new(page: Mapped, port: u32, events: Events, clock: Clock, timeout_ns: u64) -> XsRing {
        XsRing {
            page,
            port,
            events,
            clock,
            timeout_ns,
        }
    }

    /// Whether xenstored has written bytes we have not read (a watch
    /// event, when no request is outstanding). Never blocks.
    pub fn has_input(&self) -> bool {
        let v = self.page.view();
        match (
            v.load_u32(RSP_PROD, Ordering::Acquire),
            v.load_u32(RSP_CONS, Ordering::Relaxed),
        ) {
            (Ok(prod), Ok(cons)) => prod != cons,
            _ => false,
        }
    }

    fn wait(&self, deadline: u64) -> Result<(), RingError> {
        if self.clock.now_ns() >= deadline {
            return Err(RingError::Timeout);
        }
        let _ = self.events.wait(&[self.port], Some(deadline));
        self.events.take(self.port);
        Ok(())
    }
}

impl Stream for XsRing {
    type Error = RingError;

    fn write_all(&mut self, mut buf: &[u8]) -> Result<(), RingError> {
        let v = self.page.view();
        let deadline = self.clock.now_ns().saturating_add(self.timeout_ns);
        while !buf.is_empty() {
            let cons = v
                .load_u32(REQ_CONS, Ordering::Acquire)
                .map_err(|_| RingError::Corrupt)?;
            let prod = v
                .load_u32(REQ_PROD, Ordering::Relaxed)
                .map_err(|_| RingError::Corrupt)?;
            let used = prod.wrapping_sub(cons);
            if used > RING {
                return Err(RingError::Corrupt);
            }
            let free = (RING - used) as usize;
            if free == 0 {
                self.wait(deadline)?;
                continue;
            }
            let at = (prod % RING) as usize;
            let n = buf.len().min(free).min(RING as usize - at);
            v.write(REQ + at, &buf[..n])
                .map_err(|_| RingError::Corrupt)?;
            v.store_u32(REQ_PROD, prod.wrapping_add(n as u32), Ordering::Release)
                .map_err(|_| RingError::Corrupt)?;
            let _ = self.events.notify(self.port);
            buf = &buf[n..];
        }
        Ok(())
    }

    fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<(), RingError> {
        let v = self.page.view();
        let deadline = self.clock.now_ns().saturating_add(self.timeout_ns);
        while !buf.is_empty() {
            let prod = v
                .load_u32(RSP_PROD, Ordering::Acquire)
                .map_err(|_| RingError::Corrupt)?;
            let cons = v
                .load_u32(RSP_CONS, Ordering::Relaxed)
                .map_err(|_| RingError::Corrupt)?;
            let avail = prod.wrapping_sub(cons);
            if avail > RING {
                return Err(RingError::Corrupt);
            }
            if avail == 0 {
                self.wait(deadline)?;
                continue;
            }
            let at = (cons % RING) as usize;
            let n = buf.len().min(avail as usize).min(RING as usize - at);
            let (head, rest) = buf.split_at_mut(n);
            v.read(RSP + at, head).map_err(|_| RingError::Corrupt)?;
            v.store_u32(RSP_CONS, cons.wrapping_add(n as u32), Ordering::Release)
                .map_err(|_| RingError::Corrupt)?;
            let _ = self.events.notify(self.port);
            buf = rest;
        }
        Ok(())
    }
}
