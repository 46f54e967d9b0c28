//! Channel limits. Every limit is a field; nothing is compiled in.

use std::time::Duration;

/// Sizes and timeouts of a channel.
///
/// The driver uses `ring_capacity` and `max_frame` to build the channel; the
/// instance uses `max_region_len` and `max_frame_limit` to bound what it
/// accepts from the driver. Both use the timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Capacity in bytes of each ring's data area (power of two as the ring
    /// requires).
    pub ring_capacity: u32,
    /// Largest frame payload on each ring.
    pub max_frame: u32,
    /// How long the rendezvous and hello exchange may take.
    pub handshake_timeout: Duration,
    /// How long a receiver spins on the ring before sleeping on its doorbell.
    pub spin: Duration,
    /// Receiving side: the largest shared region accepted from a peer.
    pub max_region_len: usize,
    /// Receiving side: the largest per-frame limit accepted from a peer.
    pub max_frame_limit: u32,
}

impl ChannelConfig {
    /// Default ring capacity: 1 MiB.
    pub const DEFAULT_RING_CAPACITY: u32 = 1 << 20;
    /// Default largest frame: 64 KiB.
    pub const DEFAULT_MAX_FRAME: u32 = 64 << 10;
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            ring_capacity: Self::DEFAULT_RING_CAPACITY,
            max_frame: Self::DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(5),
            spin: Duration::from_micros(50),
            max_region_len: 64 << 20,
            max_frame_limit: 1 << 20,
        }
    }
}
