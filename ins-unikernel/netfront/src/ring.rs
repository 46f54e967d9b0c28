//! The front end of a Xen shared ring (`io/ring.h`) over a page the
//! backend maps and may write at any time.
//!
//! Layout: `req_prod, req_event, rsp_prod, rsp_event` (free-running `u32`
//! indices), padding to 64 bytes, then [`RING_SIZE`] entries of
//! `entry_size` bytes, each a union of a request and a response. We own
//! `req_prod` and `rsp_event` and the private `req_prod_pvt`, `rsp_cons`;
//! the backend owns `req_event` and `rsp_prod`.
//!
//! Hostile backend: `rsp_prod` is read once per batch and must not run
//! ahead of the requests we produced (`rsp_prod - rsp_cons <=
//! req_prod_pvt - rsp_cons`), else the ring is declared broken. Each
//! response entry is copied out once ([`FrontRing::take_response`]) and
//! parsed from the copy; we never re-read a slot.

use core::sync::atomic::Ordering;

use ins_protocol::region::{RegionView, SharedRegion};

/// Entries of a ring on one 4 KiB page, for netif's entry sizes.
pub const RING_SIZE: u32 = 256;
const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;
const ENTRIES: usize = 64;

/// The backend broke the ring protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// `rsp_prod` claims more responses than requests outstanding.
    ResponsesAhead {
        /// The backend's producer index.
        rsp_prod: u32,
        /// Our consumer index.
        rsp_cons: u32,
        /// Requests we produced.
        req_prod: u32,
    },
    /// The page is too small for the ring (a bug, not the peer).
    Layout,
}

/// The front end of one ring.
pub struct FrontRing<R> {
    page: RegionView<R>,
    entry_size: usize,
    req_prod_pvt: u32,
    rsp_cons: u32,
    /// `rsp_prod` as read at the start of the current batch.
    rsp_prod_seen: u32,
}

impl<R: SharedRegion> FrontRing<R> {
    /// Initialises the shared page (`SHARED_RING_INIT`) and the front end
    /// (`FRONT_RING_INIT`). Call before granting the page.
    pub fn init(page: RegionView<R>, entry_size: usize) -> Result<Self, RingError> {
        if page.len() < ENTRIES + RING_SIZE as usize * entry_size {
            return Err(RingError::Layout);
        }
        page.zero(0, page.len()).map_err(|_| RingError::Layout)?;
        page.store_u32(REQ_EVENT, 1, Ordering::Relaxed)
            .map_err(|_| RingError::Layout)?;
        page.store_u32(RSP_EVENT, 1, Ordering::Release)
            .map_err(|_| RingError::Layout)?;
        Ok(FrontRing {
            page,
            entry_size,
            req_prod_pvt: 0,
            rsp_cons: 0,
            rsp_prod_seen: 0,
        })
    }

    fn slot(&self, idx: u32) -> usize {
        ENTRIES + (idx % RING_SIZE) as usize * self.entry_size
    }

    /// Requests produced but not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Free request slots.
    pub fn free(&self) -> u32 {
        RING_SIZE - self.outstanding()
    }

    /// Writes the next request (not yet visible: see [`Self::push`]).
    /// `false` when the ring is full.
    pub fn put_request(&mut self, req: &[u8]) -> bool {
        if self.free() == 0 || req.len() > self.entry_size {
            return false;
        }
        let at = self.slot(self.req_prod_pvt);
        if self.page.write(at, req).is_err() {
            return false;
        }
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        true
    }

    /// Publishes the requests written so far; returns whether the backend
    /// asked to be notified (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    pub fn push(&mut self) -> bool {
        let old = self.page.load_u32(REQ_PROD, Ordering::Relaxed).unwrap_or(0);
        let new = self.req_prod_pvt;
        if old == new {
            return false;
        }
        let _ = self.page.store_u32(REQ_PROD, new, Ordering::SeqCst);
        let event = self.page.load_u32(REQ_EVENT, Ordering::SeqCst).unwrap_or(0);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Reads `rsp_prod` once and checks it against what we asked for;
    /// returns how many responses are ready.
    pub fn responses_ready(&mut self) -> Result<u32, RingError> {
        let prod = self
            .page
            .load_u32(RSP_PROD, Ordering::Acquire)
            .unwrap_or(self.rsp_cons);
        let ready = prod.wrapping_sub(self.rsp_cons);
        if ready > self.outstanding() {
            return Err(RingError::ResponsesAhead {
                rsp_prod: prod,
                rsp_cons: self.rsp_cons,
                req_prod: self.req_prod_pvt,
            });
        }
        self.rsp_prod_seen = prod;
        Ok(ready)
    }

    /// Copies the next response (one of those [`Self::responses_ready`]
    /// counted) into `out` and consumes its slot; `false` when none.
    pub fn take_response(&mut self, out: &mut [u8]) -> bool {
        if self.rsp_cons == self.rsp_prod_seen || out.len() > self.entry_size {
            return false;
        }
        let at = self.slot(self.rsp_cons);
        if self.page.read(at, out).is_err() {
            return false;
        }
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        true
    }

    /// Asks for a notification at the next response and re-checks
    /// (`RING_FINAL_CHECK_FOR_RESPONSES`); returns whether responses are
    /// ready after all.
    pub fn final_check(&mut self) -> Result<bool, RingError> {
        if self.responses_ready()? > 0 {
            return Ok(true);
        }
        let _ = self
            .page
            .store_u32(RSP_EVENT, self.rsp_cons.wrapping_add(1), Ordering::SeqCst);
        Ok(self.responses_ready()? > 0)
    }

    /// The shared page.
    pub fn page(&self) -> &RegionView<R> {
        &self.page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ins_protocol::region::HeapRegion;

    #[test]
    fn requests_responses_and_notification() {
        let page = RegionView::new(HeapRegion::new(4096));
        let mut r = FrontRing::init(page, 8).unwrap();
        assert_eq!(r.free(), 256);
        assert!(r.put_request(&[1; 8]));
        assert!(r.push(), "req_event 1: the first request notifies");
        assert!(!r.push(), "nothing new");
        // backend: one response, sets req_event to not be notified again soon
        let p = r.page();
        p.store_u32(REQ_EVENT, 100, Ordering::Relaxed).unwrap();
        p.write(ENTRIES, &[9; 8]).unwrap();
        p.store_u32(RSP_PROD, 1, Ordering::Release).unwrap();
        assert_eq!(r.responses_ready(), Ok(1));
        let mut e = [0u8; 8];
        assert!(r.take_response(&mut e));
        assert_eq!(e, [9; 8]);
        assert!(!r.take_response(&mut e));
        assert!(r.put_request(&[2; 8]));
        assert!(!r.push(), "req_event 100 is ahead");
        assert_eq!(r.final_check(), Ok(false));
        assert_eq!(r.page().load_u32(RSP_EVENT, Ordering::Relaxed), Ok(2));
    }

    #[test]
    fn a_backend_running_ahead_is_refused() {
        let page = RegionView::new(HeapRegion::new(4096));
        let mut r = FrontRing::init(page, 8).unwrap();
        r.put_request(&[0; 8]);
        r.push();
        r.page().store_u32(RSP_PROD, 2, Ordering::Release).unwrap();
        assert!(matches!(
            r.responses_ready(),
            Err(RingError::ResponsesAhead { .. })
        ));
        r.page()
            .store_u32(RSP_PROD, u32::MAX, Ordering::Release)
            .unwrap();
        assert!(r.responses_ready().is_err(), "wrapped backwards");
        let mut e = [0u8; 8];
        assert!(
            !r.take_response(&mut e),
            "nothing accepted from a bad batch"
        );
    }

    #[test]
    fn full_ring_refuses_requests() {
        let page = RegionView::new(HeapRegion::new(4096));
        let mut r = FrontRing::init(page, 12).unwrap();
        for _ in 0..256 {
            assert!(r.put_request(&[0; 12]));
        }
        assert!(!r.put_request(&[0; 12]));
        assert!(FrontRing::init(RegionView::new(HeapRegion::new(1024)), 12).is_err());
    }
}
