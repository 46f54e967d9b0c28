//! Event channels over the 2-level ABI, with upcalls masked.
//!
//! This platform never takes an event upcall: vCPU 0's
//! `evtchn_upcall_mask` stays 1 (as the domain builder leaves it), so Xen
//! never pushes a callback frame onto our stack (code from the prebuilt
//! `core`/`alloc` uses the x86-64 red zone). Instead the program sleeps in
//! `SCHEDOP_poll` on the ports it waits for, which Xen wakes when one of
//! them becomes pending whatever the masks, and then takes each port's
//! pending bit with an atomic test-and-clear in shared_info.
//!
//! A pending bit is an edge that merges: [`Events::take`] clears it, and
//! the caller then looks at the shared state (ring indices) it guards. An
//! event that arrives after `take` sets the bit again and the next poll
//! returns at once, so nothing is lost. Ports are left unmasked
//! (`EVTCHNOP_unmask` after binding, which also re-raises an event that
//! arrived while masked); with the upcall masked that only sets selector
//! bits nobody reads.

use core::sync::atomic::Ordering;

use crate::abi::shared_info::{EVTCHN_MASK, EVTCHN_PENDING, NR_PORTS, UPCALL_PENDING};
use crate::hypercall::{self, XenError};
use crate::page::Mapped;

/// The shared_info page's event bitmaps.
#[derive(Clone, Copy, Debug)]
pub struct Events {
    shared: Mapped,
}

fn word(base: usize, port: u32) -> Option<(usize, u32)> {
    (port < NR_PORTS).then(|| (base + (port / 32) as usize * 4, 1u32 << (port % 32)))
}

impl Events {
    /// Events over the mapped shared_info page.
    pub fn new(shared: Mapped) -> Events {
        Events { shared }
    }

    /// Whether `port` is pending (without clearing it).
    pub fn is_pending(&self, port: u32) -> bool {
        word(EVTCHN_PENDING, port)
            .and_then(|(o, bit)| {
                Some(self.shared.atomic_u32(o)?.load(Ordering::Acquire) & bit != 0)
            })
            .unwrap_or(false)
    }

    /// Clears `port`'s pending bit; returns whether it was set.
    pub fn take(&self, port: u32) -> bool {
        word(EVTCHN_PENDING, port)
            .and_then(|(o, bit)| {
                Some(self.shared.atomic_u32(o)?.fetch_and(!bit, Ordering::AcqRel) & bit != 0)
            })
            .unwrap_or(false)
    }

    /// Whether `port` is masked.
    pub fn is_masked(&self, port: u32) -> bool {
        word(EVTCHN_MASK, port)
            .and_then(|(o, bit)| {
                Some(self.shared.atomic_u32(o)?.load(Ordering::Acquire) & bit != 0)
            })
            .unwrap_or(true)
    }

    /// Masks `port` (its events still set the pending bit and still wake
    /// `SCHEDOP_poll`).
    pub fn mask(&self, port: u32) {
        if let Some((o, bit)) = word(EVTCHN_MASK, port)
            && let Some(w) = self.shared.atomic_u32(o)
        {
            w.fetch_or(bit, Ordering::AcqRel);
        }
    }

    /// Unmasks `port` through Xen, which re-raises an event that became
    /// pending while it was masked; then reports whether it is pending.
    pub fn unmask(&self, port: u32) -> Result<bool, XenError> {
        hypercall::evtchn_unmask(port)?;
        Ok(self.is_pending(port))
    }

    /// Raises the remote end of `port`.
    pub fn notify(&self, port: u32) -> Result<(), XenError> {
        hypercall::evtchn_send(port)
    }

    /// Sleeps until one of `ports` is pending or Xen system time reaches
    /// `deadline_ns` (`None`: no deadline). Returns at once when one is
    /// already pending. Spurious returns are possible.
    pub fn wait(&self, ports: &[u32], deadline_ns: Option<u64>) -> Result<(), XenError> {
        // upcall_pending is meaningless with the upcall masked; clearing it
        // keeps the page tidy for anyone inspecting it.
        let _ = self.shared.view().write(UPCALL_PENDING, &[0]);
        hypercall::poll(ports, deadline_ns.map_or(0, |d| d.max(1)))
    }
}

/// A one-shot timer on `VIRQ_TIMER`, waited for like any port.
///
/// Xen also drives `VIRQ_TIMER` from a 10 ms periodic timer it gives every
/// PV vCPU; [`Timer::bind`] stops that one, so the port fires only for
/// deadlines armed here. A firing is still only a hint: callers compare
/// the clock with their deadline.
#[derive(Debug)]
pub struct Timer {
    port: u32,
}

impl Timer {
    /// Stops the periodic timer and binds `VIRQ_TIMER` of vCPU 0.
    pub fn bind(events: &Events) -> Result<Timer, XenError> {
        hypercall::stop_periodic_timer()?;
        let port = hypercall::evtchn_bind_virq(crate::abi::evtchnop::VIRQ_TIMER)?;
        events.unmask(port)?;
        events.take(port);
        Ok(Timer { port })
    }

    /// The timer's port (to include in [`Events::wait`]).
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Arms the timer for Xen system time `deadline_ns` (replacing an
    /// earlier deadline); it fires at once if the time has passed.
    pub fn arm(&self, deadline_ns: u64) -> Result<(), XenError> {
        hypercall::set_singleshot_timer(deadline_ns)
    }

    /// Disarms the timer.
    pub fn disarm(&self) -> Result<(), XenError> {
        hypercall::stop_singleshot_timer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_words() {
        assert_eq!(word(2048, 0), Some((2048, 1)));
        assert_eq!(word(2048, 33), Some((2052, 2)));
        assert_eq!(word(2048, 4095), Some((2048 + 127 * 4, 1 << 31)));
        assert_eq!(word(2048, 4096), None);
    }
}
