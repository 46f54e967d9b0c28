//! Xenstore: the wire protocol and a client.
//!
//! * [`wire`]: the 16-byte header, message types, request encoding and
//!   response decoding (every reply is validated against the request it
//!   answers before anything in it is used);
//! * [`path`]: path, path-element and watch-token syntax;
//! * [`perms`]: permission strings (`n5`, `r5`, `w5`, `b5`);
//! * [`client`] (`alloc`): a blocking client over any byte stream
//!   (Linux `/dev/xen/xenbus`, xenstored's Unix socket, or a guest's ring),
//!   with queued watch events and transactions retried on `EAGAIN`.

#[cfg(feature = "alloc")]
pub mod client;
pub mod path;
pub mod perms;
pub mod wire;

#[cfg(feature = "alloc")]
pub use client::{Client, Error, Stream, TxId, WatchEvent};
pub use perms::{Access, Permission};
pub use wire::{DecodeError, EncodeError, Header, MsgType, Reply, Request, XsErrno};
