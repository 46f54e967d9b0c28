//! The transport's error type.

use std::io;

use ins_protocol::hello::HelloError;
use ins_protocol::ring::RingError;

/// What went wrong while opening or using a channel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{op}: {source}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The ring refused an operation or found the peer's indices corrupt.
    #[error("ring: {0:?}")]
    Ring(RingError),
    /// The peer's hello was refused.
    #[error("hello: {0}")]
    Hello(#[from] HelloError),
    /// The peer's hello is well formed but disagrees with the channel.
    #[error("hello does not match the channel: {0}")]
    HelloMismatch(&'static str),
    /// The rendezvous message carried the wrong number of descriptors.
    #[error("rendezvous carried {got} file descriptors, expected {expected}")]
    BadFdCount {
        /// Descriptors expected.
        expected: usize,
        /// Descriptors received.
        got: usize,
    },
    /// A received descriptor is not what it should be.
    #[error("bad file descriptor: {0}")]
    BadFd(&'static str),
    /// The shared region handed over is unusable or unsafe to map.
    #[error("bad shared region: {reason} (size {size}, expected {expected})")]
    BadRegion {
        /// Why it was refused.
        reason: &'static str,
        /// Its size as found.
        size: u64,
        /// The size the header announced.
        expected: u64,
    },
    /// The rendezvous header is malformed or out of bounds.
    #[error("bad rendezvous header: {0}")]
    BadHeader(&'static str),
    /// A configured or announced value exceeds a limit.
    #[error("{what} is {value}, limit {limit}")]
    Limit {
        /// What was too large.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// Our own configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// A deadline passed.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The peer closed the channel or died.
    #[error("peer closed the channel")]
    PeerClosed,
    /// A xenstore request failed (Xen transport).
    #[error("xenstore {op}: {source}")]
    Xenstore {
        /// What we were doing.
        op: &'static str,
        /// The client's error.
        #[source]
        source: ins_xen::xenstore::Error<io::Error>,
    },
    /// The peer's channel keys in xenstore are invalid (Xen transport).
    #[error("xen channel: {0}")]
    XenChannel(#[from] ins_xen::channel::ChannelError),
}

impl From<RingError> for Error {
    fn from(e: RingError) -> Self {
        Error::Ring(e)
    }
}

impl Error {
    /// Wraps a xenstore error with the name of the failing operation.
    pub fn xs(op: &'static str) -> impl FnOnce(ins_xen::xenstore::Error<io::Error>) -> Error {
        move |source| Error::Xenstore { op, source }
    }

    /// Wraps an I/O error with the name of the failing operation.
    pub fn io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, source }
    }
}
