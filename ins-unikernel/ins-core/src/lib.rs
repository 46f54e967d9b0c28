//! The portable core of an INS instance.
//!
//! Everything here is pure logic: no system calls, no sockets, no clock
//! reads. Time enters as monotonic nanoseconds (`now: u64`) passed by the
//! caller, so the same code runs in a Linux process and a unikernel and is
//! tested with simulated time.
//!
//! * [`stack`]: the [`stack::Stack`] trait the executor runs over, and
//!   [`errno::Errno`].
//! * [`flow`]: flow accounting and flow records.
//! * [`mitigation`]: block lists, per-prefix rate limits, drain.
//! * [`profile`]: TCP settings and the randomized "moving target" profile.
//! * [`config`]: the instance's limits and timers.
//! * [`executor`]: the [`executor::Executor`] that glues them together over a
//!   stack and the driver's ring.
//! * [`outbox`]: the executor's outbox over the ring toward the driver.
//! * [`telemetry`]: live per-connection telemetry (timings, TCP window,
//!   statistics of the first bytes each way).
//! * [`hash`]: the keyed hash maps the above use.
//!
//! The crate is `no_std` + `alloc`; the default `std` feature only keys the
//! hash maps with std's `RandomState` (see [`hash`]).
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod config;
pub mod errno;
pub mod executor;
pub mod flow;
pub mod hash;
pub mod mitigation;
pub mod outbox;
pub mod profile;
pub mod stack;
pub mod telemetry;

pub use errno::Errno;
pub use executor::{Executor, Outbox, OutboxFull};
