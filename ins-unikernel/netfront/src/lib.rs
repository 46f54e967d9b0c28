//! # ins-netfront
//!
//! A Xen network frontend (`io/netif.h`) for the INS unikernel, treating
//! the backend as hostile.
//!
//! * [`ring`]: the front end of a shared ring; indices checked, each
//!   response copied out once.
//! * [`proto`]: request encoding and hardened response parsing (ids must
//!   match outstanding requests, statuses, packet bounds, flags).
//! * [`front`]: the device: xenbus handshake, granted rx/tx buffers, and
//!   smoltcp's `Device` trait.
//!
//! Negotiated: `request-rx-copy` (the backend copies into our granted
//! pages), `feature-rx-notify`, `feature-no-csum-offload` (no blank
//! checksums to fix up); not negotiated: scatter-gather, GSO, multiple
//! queues. Buffers are granted once at set-up and reused; packet bytes are
//! copied out of an rx page before it is posted again.

#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod front;
pub mod proto;
pub mod ring;
