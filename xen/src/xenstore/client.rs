//! A blocking xenstore client over any byte stream.
//!
//! One request is outstanding at a time: each call sends it and reads
//! messages until its reply arrives. Watch events that arrive
//! meanwhile are queued (bounded; on overflow the oldest are dropped and
//! [`Client::events_dropped`] counts them — watches may fire spuriously
//! anyway, so a user that sees drops re-reads what it watches).
//!
//! Transactions: [`Client::transaction`] runs a closure between
//! `TRANSACTION_START` and `TRANSACTION_END(T)`; when the daemon answers
//! `EAGAIN` (a conflicting write committed first) it runs the whole
//! closure again, up to a caller-given number of attempts. A closure that
//! fails aborts the transaction (`TRANSACTION_END(F)`).

use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::perms::Permission;
use super::wire::{
    self, DecodeError, EncodeError, HEADER_LEN, Header, MSG_MAX, MsgType, Reply, Request, XsErrno,
};
use crate::domid::DomId;

/// A byte stream to the daemon: `/dev/xen/xenbus`, xenstored's Unix
/// socket, or a guest's shared ring.
pub trait Stream {
    /// The stream's error.
    type Error: fmt::Debug + fmt::Display;
    /// Writes all of `buf` (one whole message).
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error>;
    /// Reads exactly `buf.len()` bytes, blocking as needed.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), Self::Error>;
}

/// A transaction id; [`TxId::NONE`] outside transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxId(pub u32);

impl TxId {
    /// No transaction.
    pub const NONE: TxId = TxId(0);
}

/// A watch event with owned strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path that changed.
    pub path: String,
    /// The watch's token.
    pub token: String,
}

/// What a client call can fail with.
#[derive(Debug)]
pub enum Error<E> {
    /// The stream failed.
    Io(E),
    /// The daemon refused the request.
    Xs(XsErrno),
    /// The daemon's message was malformed or did not answer our request.
    Decode(DecodeError),
    /// Our request could not be built (bad path, too long, …).
    Encode(EncodeError),
    /// A transaction kept conflicting (`EAGAIN`) for every attempt allowed.
    Conflict {
        /// Attempts made.
        attempts: u32,
    },
}

impl<E> Error<E> {
    /// The Linux errno closest to this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io(_) | Error::Decode(_) => 5, // EIO
            Error::Xs(e) => e.errno(),
            Error::Encode(EncodeError::TooLong) => 7, // E2BIG
            Error::Encode(_) => 22,                   // EINVAL
            Error::Conflict { .. } => 11,             // EAGAIN
        }
    }

    /// Whether the daemon said `ENOENT`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Xs(XsErrno::ENOENT))
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "xenstore connection: {e}"),
            Error::Xs(e) => write!(f, "xenstore: {e}"),
            Error::Decode(e) => write!(f, "{e}"),
            Error::Encode(e) => write!(f, "{e}"),
            Error::Conflict { attempts } => {
                write!(
                    f,
                    "xenstore transaction still conflicting after {attempts} attempts"
                )
            }
        }
    }
}

#[cfg(feature = "std")]
impl<E: fmt::Debug + fmt::Display> std::error::Error for Error<E> {}

impl<E> From<DecodeError> for Error<E> {
    fn from(e: DecodeError) -> Self {
        Error::Decode(e)
    }
}

impl<E> From<EncodeError> for Error<E> {
    fn from(e: EncodeError) -> Self {
        Error::Encode(e)
    }
}

/// A xenstore connection.
pub struct Client<S: Stream> {
    stream: S,
    next_req_id: u32,
    events: VecDeque<WatchEvent>,
    max_events: usize,
    dropped: u64,
    buf: Vec<u8>,
}

/// An owned reply (the client's buffer is reused for the next message).
enum Owned {
    Ok,
    Value(Vec<u8>),
    Names(Vec<String>),
    Perms(Vec<Permission>),
    TxId(u32),
    Path(String),
}

impl<S: Stream> Client<S> {
    /// A client over `stream` that queues at most `max_events` watch
    /// events between calls.
    pub fn new(stream: S, max_events: usize) -> Self {
        Client {
            stream,
            next_req_id: 1,
            events: VecDeque::new(),
            max_events: max_events.max(1),
            dropped: 0,
            buf: alloc::vec![0u8; MSG_MAX],
        }
    }

    /// The underlying stream (to poll its descriptor, for example).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Watch events dropped because the queue was full.
    pub fn events_dropped(&self) -> u64 {
        self.dropped
    }

    /// Reads one message into the buffer; returns its header.
    fn read_message(&mut self) -> Result<Header, Error<S::Error>> {
        let mut head = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut head).map_err(Error::Io)?;
        let header = Header::decode(&head)?;
        let len = header.len as usize;
        self.stream
            .read_exact(&mut self.buf[..len])
            .map_err(Error::Io)?;
        Ok(header)
    }

    fn queue_event(&mut self, len: usize) -> Result<(), Error<S::Error>> {
        let ev = wire::decode_watch_event(&self.buf[..len])?;
        if self.events.len() >= self.max_events {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(WatchEvent {
            path: ev.path.to_string(),
            token: ev.token.to_string(),
        });
        Ok(())
    }

    /// Reads one message that must be a watch event (the stream is
    /// readable and no request is outstanding) and queues it.
    pub fn read_event(&mut self) -> Result<(), Error<S::Error>> {
        let h = self.read_message()?;
        if h.ty != MsgType::WatchEvent {
            return Err(Error::Decode(DecodeError::UnexpectedType {
                expected: MsgType::WatchEvent,
                got: h.ty,
            }));
        }
        self.queue_event(h.len as usize)
    }

    /// The oldest queued watch event, if any (does not read the stream).
    pub fn take_event(&mut self) -> Option<WatchEvent> {
        self.events.pop_front()
    }

    /// The next watch event, blocking until one arrives.
    pub fn wait_event(&mut self) -> Result<WatchEvent, Error<S::Error>> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Ok(ev);
            }
            self.read_event()?;
        }
    }

    fn request(&mut self, tx: TxId, req: Request<'_>) -> Result<Owned, Error<S::Error>> {
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1).max(1);
        let mut msg = [0u8; MSG_MAX];
        let (n, sent) = req.encode(req_id, tx.0, &mut msg)?;
        self.stream.write_all(&msg[..n]).map_err(Error::Io)?;
        loop {
            let h = self.read_message()?;
            let len = h.len as usize;
            if h.ty == MsgType::WatchEvent {
                self.queue_event(len)?;
                continue;
            }
            let owned = match wire::decode_reply(&sent, &h, &self.buf[..len])? {
                Reply::Ok => Owned::Ok,
                Reply::Value(v) => Owned::Value(v.to_vec()),
                Reply::Names(names) => Owned::Names(names.map(String::from).collect()),
                Reply::Perms(perms) => Owned::Perms(perms.collect()),
                Reply::TxId(id) => Owned::TxId(id),
                Reply::Path(p) => Owned::Path(p.to_string()),
                Reply::Error(e) => return Err(Error::Xs(e)),
            };
            return Ok(owned);
        }
    }

    fn expect_ok(&mut self, tx: TxId, req: Request<'_>) -> Result<(), Error<S::Error>> {
        match self.request(tx, req)? {
            Owned::Ok => Ok(()),
            _ => Err(Error::Decode(DecodeError::Malformed(
                "unexpected reply kind",
            ))),
        }
    }

    /// Reads a node's value.
    pub fn read(&mut self, tx: TxId, path: &str) -> Result<Vec<u8>, Error<S::Error>> {
        match self.request(tx, Request::Read(path))? {
            Owned::Value(v) => Ok(v),
            _ => Err(Error::Decode(DecodeError::Malformed(
                "unexpected reply kind",
            ))),
        }
    }

    /// Reads a node's value; `None` if it does not exist.
    pub fn try_read(&mut self, tx: TxId, path: &str) -> Result<Option<Vec<u8>>, Error<S::Error>> {
        match self.read(tx, path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a node's value.
    pub fn write(&mut self, tx: TxId, path: &str, value: &[u8]) -> Result<(), Error<S::Error>> {
        self.expect_ok(tx, Request::Write(path, value))
    }

    /// Creates a node if absent.
    pub fn mkdir(&mut self, tx: TxId, path: &str) -> Result<(), Error<S::Error>> {
        self.expect_ok(tx, Request::Mkdir(path))
    }

    /// Removes a node and its children (not an error if absent).
    pub fn rm(&mut self, tx: TxId, path: &str) -> Result<(), Error<S::Error>> {
        self.expect_ok(tx, Request::Rm(path))
    }

    /// Lists a node's children.
    pub fn directory(&mut self, tx: TxId, path: &str) -> Result<Vec<String>, Error<S::Error>> {
        match self.request(tx, Request::Directory(path))? {
            Owned::Names(n) => Ok(n),
            _ => Err(Error::Decode(DecodeError::Malformed(
                "unexpected reply kind",
            ))),
        }
    }

    /// Reads a node's permissions (owner first).
    pub fn get_perms(&mut self, tx: TxId, path: &str) -> Result<Vec<Permission>, Error<S::Error>> {
        match self.request(tx, Request::GetPerms(path))? {
            Owned::Perms(p) => Ok(p),
            _ => Err(Error::Decode(DecodeError::Malformed(
                "unexpected reply kind",
            ))),
        }
    }

    /// Sets a node's permissions (owner first).
    pub fn set_perms(
        &mut self,
        tx: TxId,
        path: &str,
        perms: &[Permission],
    ) -> Result<(), Error<S::Error>> {
        self.expect_ok(tx, Request::SetPerms(path, perms))
    }

    /// Watches `path` (fires once at once, then on every change below it).
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), Error<S::Error>> {
        self.expect_ok(TxId::NONE, Request::Watch(path, token))
    }

    /// Removes a watch.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), Error<S::Error>> {
        self.expect_ok(TxId::NONE, Request::Unwatch(path, token))
    }

    /// A domain's home path (`/local/domain/<id>`).
    pub fn domain_path(&mut self, domid: DomId) -> Result<String, Error<S::Error>> {
        match self.request(TxId::NONE, Request::GetDomainPath(domid))? {
            Owned::Path(p) => Ok(p),
            _ => Err(Error::Decode(DecodeError::Malformed(
                "unexpected reply kind",
            ))),
        }
    }

    /// Starts a transaction.
    pub fn transaction_start(&mut self) -> Result<TxId, Error<S::Error>> {
        match self.request(TxId::NONE, Request::TransactionStart)? {
            Owned::TxId(id) => Ok(TxId(id)),
            _ => Err(Error::Decode(DecodeError::Malformed(
                "unexpected reply kind",
            ))),
        }
    }

    /// Ends a transaction: commit or abort.
    pub fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<(), Error<S::Error>> {
        self.expect_ok(tx, Request::TransactionEnd(commit))
    }

    /// Runs `f` inside a transaction, committing at the end and running it
    /// again (from a fresh transaction) while the daemon answers `EAGAIN`,
    /// at most `attempts` times in all. If `f` fails, the transaction is
    /// aborted and its error returned (an `EAGAIN` from inside `f` also
    /// retries).
    pub fn transaction<T>(
        &mut self,
        attempts: u32,
        mut f: impl FnMut(&mut Self, TxId) -> Result<T, Error<S::Error>>,
    ) -> Result<T, Error<S::Error>> {
        let attempts = attempts.max(1);
        for _ in 0..attempts {
            let tx = self.transaction_start()?;
            match f(self, tx) {
                Ok(v) => match self.transaction_end(tx, true) {
                    Ok(()) => return Ok(v),
                    Err(Error::Xs(XsErrno::EAGAIN)) => continue,
                    Err(e) => return Err(e),
                },
                Err(Error::Xs(XsErrno::EAGAIN)) => {
                    self.transaction_end(tx, false).or_else(ignore_gone_tx)?;
                    continue;
                }
                Err(e) => {
                    // Best effort: the daemon may already have dropped it.
                    let _ = self.transaction_end(tx, false);
                    return Err(e);
                }
            }
        }
        Err(Error::Conflict { attempts })
    }
}

/// Aborting a transaction the daemon already dropped is not a failure.
fn ignore_gone_tx<E>(e: Error<E>) -> Result<(), Error<E>> {
    match e {
        Error::Xs(XsErrno::ENOENT) => Ok(()),
        e => Err(e),
    }
}
