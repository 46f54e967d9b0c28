//! Event channels (`xen/include/public/event_channel.h`).
//!
//! An event channel is a pair of ports in two domains. One side allocates
//! an *unbound* port naming the peer allowed to bind it
//! (`EVTCHNOP_alloc_unbound`), the peer binds it (`EVTCHNOP_bind_interdomain`)
//! and each side then *sends* on its own port to raise the other's. An
//! event is one pending bit: events merge, binding sets the binder's port
//! pending, and a port that fires while masked stays pending until
//! unmasked. A receiver therefore treats every event as "look again" and
//! takes progress from shared memory (ring indices), never from a count of
//! events.

use core::fmt;

/// A port number in one domain's event-channel space. Port 0 is never a
/// valid channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u32);

impl Port {
    /// The largest port of the FIFO ABI (2^17 − 1); the 2-level ABI allows
    /// fewer. A peer announcing more is broken or hostile.
    pub const MAX: u32 = (1 << 17) - 1;

    /// Parses a canonical decimal port, refusing 0 and values past
    /// [`Port::MAX`].
    pub fn parse(bytes: &[u8]) -> Option<Port> {
        let v = crate::decimal::parse_u32(bytes)?;
        (v != 0 && v <= Self::MAX).then_some(Port(v))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(Port::parse(b"0"), None);
        assert_eq!(Port::parse(b"5"), Some(Port(5)));
        assert_eq!(Port::parse(b"131071"), Some(Port(Port::MAX)));
        assert_eq!(Port::parse(b"131072"), None);
    }
}
