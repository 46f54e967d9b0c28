//! # ins-protocol
//!
//! The wire between a protected-VM driver and an INS instance, with no
//! operating-system code in it so that the userspace driver, the kernel
//! module and a unikernel instance all share it.
//!
//! * [`region`]: the shared byte region both sides map, accessed only through
//!   bounds-checked volatile and atomic operations (the peer may write it at
//!   any time).
//! * [`ring`]: a single-producer single-consumer ring of variable-length
//!   frames over a region, with Xen `ring.h` style event indices. Two rings
//!   make a channel, one per direction.
//! * [`msg`]: the messages carried in ring frames. Fixed-layout,
//!   little-endian, `#[repr(C)]` structs with explicit reserved bytes that
//!   must be zero; decoding validates everything and never panics.
//! * [`hello`]: the versioned handshake that starts every channel.
//!
//! The crate is `no_std` and never allocates (feature `std` only adds
//! `std::error::Error` impls and test helpers).

#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod control;
pub mod hello;
pub mod msg;
pub mod region;
pub mod ring;
