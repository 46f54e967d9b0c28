//! Standard output for the INS tools (`ins-ctl`, `ins-flow`, `ins-detect`).
//!
//! Rust ignores `SIGPIPE`, so a write to a closed pipe (`ins-ctl flows |
//! head -1`) fails with `EPIPE`, and `println!` turns that into a panic
//! with a backtrace. The tools print through [`outln!`](crate::outln) /
//! [`out!`](crate::out!) instead: when the reader is gone the program exits
//! at once, silently, with status [`CLOSED_STDOUT`] (141 = 128 + SIGPIPE,
//! the status a shell reports for `seq 1 1000000 | head -1`'s `seq`).
//! `SIGPIPE` itself stays ignored, so a control socket whose peer went
//! away is still an ordinary error and not a silent death.

use std::fmt;
use std::io::{self, Write as _};

/// Exit status when standard output is a closed pipe.
pub const CLOSED_STDOUT: i32 = 141;

/// Writes `args` to standard output and flushes; exits quietly with
/// [`CLOSED_STDOUT`] if the reader has gone, or with status 1 and one line
/// on stderr for any other write error.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    let mut o = io::stdout().lock();
    let r = o.write_fmt(args).and_then(|()| o.flush());
    if let Err(e) = r {
        exit_on(&e);
    }
}

/// Exits for a failed write to standard output: quietly with
/// [`CLOSED_STDOUT`] for a closed pipe, else with status 1 and the error.
pub fn exit_on(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(CLOSED_STDOUT);
    }
    eprintln!("standard output: {e}");
    std::process::exit(1);
}

/// `print!` that exits quietly on a closed pipe (see the module docs).
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::out::write_fmt(format_args!($($t)*)) };
}

/// `println!` that exits quietly on a closed pipe (see the module docs).
#[macro_export]
macro_rules! outln {
    () => { $crate::out::write_fmt(format_args!("\n")) };
    ($($t:tt)*) => { $crate::out::write_fmt(format_args!("{}\n", format_args!($($t)*))) };
}
