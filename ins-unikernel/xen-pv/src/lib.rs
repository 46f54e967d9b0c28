//! # ins-xen-pv
//!
//! A bare 64-bit Xen PV guest platform for the INS unikernel, without an
//! operating system: the pieces a single-vCPU, event-driven program needs
//! to run as a PV domU.
//!
//! * [`hypercall`]: the hypercall page and typed hypercalls.
//! * [`start_info`]: what the domain builder passes at entry.
//! * [`mm`]: the p2m/M2P tables, mapping all of the domain's memory, and a
//!   window for foreign frames.
//! * [`page`]: memory shared with Xen or a peer, reached only through
//!   volatile and atomic operations.
//! * [`console`]: the console ring (`print!`/`println!`).
//! * [`events`]: event channels with upcalls masked, waiting with
//!   `SCHEDOP_poll`, and the one-shot timer.
//! * [`time`]: Xen system time and the wall clock.
//! * [`gnttab`]: granting pages and mapping a peer's.
//! * [`xenstore`]: the xenstore ring as a stream for ins-xen's client.
//! * `rt` (feature `rt`): the entry point, Xen ELF notes, boot stack,
//!   global allocator and panic handler.
//!
//! ## Model
//!
//! One vCPU, no interrupts: event upcalls stay masked for the life of the
//! domain, so Xen never pushes a frame onto our stack (and code built with
//! the x86-64 red zone, like the prebuilt `core`, is safe). The program
//! waits in `SCHEDOP_poll` on the event-channel ports it cares about and
//! then takes their pending bits ([`events`]). Faults are fatal: no trap
//! table is registered, so Xen crashes the domain and logs the fault.
//!
//! Only `hypercall`, `page`, `mm`, `time` and `rt` contain `unsafe` code,
//! every block one operation with its justification.

#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod abi;
pub mod console;
pub mod events;
pub mod gnttab;
pub mod hypercall;
pub mod mm;
pub mod page;
#[cfg(feature = "rt")]
pub mod rt;
#[cfg(feature = "rt")]
mod rtmem;
pub mod start_info;
pub mod time;
pub mod xenstore;
