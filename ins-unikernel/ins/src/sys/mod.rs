//! Linux-specific code: the host-stack [`Stack`](ins_core::stack::Stack)
//! implementation and the few raw system calls it needs.
//!
//! `raw` holds the crate's only `unsafe` code (raw `get`/`setsockopt`,
//! signal masks and the signalfd); everything else here is safe rustix.

pub mod linux_stack;
pub mod raw;
pub mod sandbox;

pub use linux_stack::{LinuxStack, SockHandle, WakeFlags, Watch};
