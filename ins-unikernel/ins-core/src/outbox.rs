//! The executor's [`Outbox`] over the ring toward the driver, shared by
//! the Linux `ins` and the PV unikernel (each rings its own doorbell).
//!
//! Invariants: frames become visible to the driver only at
//! [`RingOutbox::publish`]; the first ring error other than `Full` (a
//! corrupt ring: the driver broke the protocol) is sticky: every later
//! push is refused and [`RingOutbox::check`] / `publish` return it, so the
//! loop stops.

use ins_protocol::msg::HEADER_LEN;
use ins_protocol::region::SharedRegion;
use ins_protocol::ring::{Producer, RingError};

use crate::executor::{Outbox, OutboxFull};

/// The ring producer toward the driver, as the executor's outbox.
pub struct RingOutbox<R: SharedRegion> {
    /// The producer (for `prepare_wait_space` before a sleep).
    pub tx: Producer<R>,
    max_payload: usize,
    error: Option<RingError>,
}

impl<R: SharedRegion> RingOutbox<R> {
    /// Wraps the channel's producer.
    pub fn new(tx: Producer<R>) -> Self {
        let max_payload = (tx.config().max_frame as usize).saturating_sub(HEADER_LEN);
        RingOutbox {
            tx,
            max_payload,
            error: None,
        }
    }

    /// The sticky ring error, if a push met one.
    pub fn check(&self) -> Result<(), RingError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Publishes the pushed frames; `Ok(true)` when the driver waits for
    /// them (ring its doorbell).
    pub fn publish(&mut self) -> Result<bool, RingError> {
        self.check()?;
        self.tx.flush()
    }

    /// Whether a frame of `len` bytes fits now.
    pub fn fits(&mut self, len: usize) -> Result<bool, RingError> {
        Ok(self.tx.free_frame_space()? >= len)
    }
}

impl<R: SharedRegion> Outbox for RingOutbox<R> {
    fn try_push(&mut self, parts: &[&[u8]]) -> Result<(), OutboxFull> {
        if self.error.is_some() {
            return Err(OutboxFull);
        }
        match self.tx.try_push_parts(parts) {
            Ok(()) => Ok(()),
            Err(RingError::Full) => Err(OutboxFull),
            Err(e) => {
                tracing::error!("outgoing ring: {e}");
                self.error = Some(e);
                Err(OutboxFull)
            }
        }
    }

    fn max_frame(&self) -> usize {
        self.max_payload
    }
}
