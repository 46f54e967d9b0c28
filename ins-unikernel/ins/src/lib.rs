//! `ins`: an INS instance on the Linux host stack.
//!
//! * [`sys::LinuxStack`]: the [`ins_core::stack::Stack`] trait over
//!   non-blocking kernel sockets and one edge-triggered epoll set, which
//!   also watches the ring doorbell, the driver's control socket and a
//!   signalfd.
//! * [`cli`]: command line and config file → validated [`cli::Settings`].
//! * [`instance`]: the handshake and the main loop that feeds the
//!   [`ins_core::executor::Executor`] from the ring and the stack.
//!
//! `unsafe` code lives only in [`sys::raw`].
#![deny(unsafe_code)]

pub mod cli;
pub mod instance;
pub mod sys;

pub use cli::{Args, Settings, parse_args};
pub use instance::{Exit, InstanceError, run, serve};
