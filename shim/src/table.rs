//! The fd table: one atomic byte per fd number, lock-free.
//!
//! Values:
//! * `0` — unknown: never seen since this process image started (inherited
//!   across `exec`, or created by a call the shim does not hook). The first
//!   hook that meets it classifies it (`fstat`, then `Identify` for Unix
//!   sockets) and caches the answer.
//! * `1..0x80` — not an INS socket ([`Entry::HOST`], [`Entry::CONTROL`]
//!   for the shim's own control connections, [`Entry::MARKER`] for the file
//!   it attaches to in-band option markers): hooks call libc directly.
//! * `0x80..` — an INS socket; the low bits carry [`Entry::V6`],
//!   [`Entry::DGRAM`], [`Entry::LISTENING`], [`Entry::CONNECTED`],
//!   [`Entry::ERR_TAKEN`], [`Entry::CONNECTING`] and [`Entry::AUTOBOUND`].
//!
//! Fds at or above the table size are host fds; the shim refuses to create
//! INS sockets there (`EMFILE`). Entries follow the kernel's fd lifetime as
//! far as the hooks see it: `close` marks host before the real close,
//! `dup*`/`F_DUPFD*` copy, fds received with `SCM_RIGHTS` become unknown.

use std::sync::atomic::{AtomicU8, Ordering};

/// Table size of the process-wide table: Linux's default `nr_open`.
pub const FD_LIMIT: usize = 1 << 20;

/// One table entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Entry(pub u8);

impl Entry {
    /// Not yet classified.
    pub const UNKNOWN: Entry = Entry(0);
    /// A host fd (file, pipe, Unix socket, …).
    pub const HOST: Entry = Entry(1);
    /// One of the shim's own control connections.
    pub const CONTROL: Entry = Entry(2);
    /// The shim's marker file (see `inband`).
    pub const MARKER: Entry = Entry(3);
    /// Marks an INS socket.
    pub const INS: u8 = 0x80;
    /// `AF_INET6` (else `AF_INET`).
    pub const V6: u8 = 0x01;
    /// `SOCK_DGRAM` (else `SOCK_STREAM`).
    pub const DGRAM: u8 = 0x02;
    /// `listen()` succeeded.
    pub const LISTENING: u8 = 0x04;
    /// Connected, connecting, or accepted (datagram: has a default peer).
    pub const CONNECTED: u8 = 0x08;
    /// The socket's pending error was already asked for at end-of-file.
    pub const ERR_TAKEN: u8 = 0x10;
    /// A connect answered `EINPROGRESS` (or was interrupted) and no later
    /// `connect()` has reported its outcome yet (Linux's `SS_CONNECTING`).
    pub const CONNECTING: u8 = 0x20;
    /// Datagram sockets: has a local port — bound by `bind()`, or by the
    /// auto-bind Linux does before the first send even if the send then
    /// fails (`inet_send_prepare`); a later `bind()` fails with `EINVAL`.
    pub const AUTOBOUND: u8 = 0x40;

    /// An INS socket entry.
    pub fn ins(v6: bool, dgram: bool) -> Entry {
        let mut v = Entry::INS;
        if v6 {
            v |= Entry::V6;
        }
        if dgram {
            v |= Entry::DGRAM;
        }
        Entry(v)
    }
    /// Not classified yet.
    pub fn is_unknown(self) -> bool {
        self.0 == 0
    }
    /// An INS socket.
    pub fn is_ins(self) -> bool {
        self.0 & Entry::INS != 0
    }
    /// A known non-INS fd.
    pub fn is_host(self) -> bool {
        self.0 != 0 && self.0 & Entry::INS == 0
    }
    /// Has all of `bits`.
    pub fn has(self, bits: u8) -> bool {
        self.0 & bits == bits
    }
    /// `AF_INET6`.
    pub fn v6(self) -> bool {
        self.has(Entry::V6)
    }
    /// `SOCK_DGRAM`.
    pub fn dgram(self) -> bool {
        self.has(Entry::DGRAM)
    }
    /// Listening.
    pub fn listening(self) -> bool {
        self.has(Entry::LISTENING)
    }
    /// Connected (or connecting / accepted).
    pub fn connected(self) -> bool {
        self.has(Entry::CONNECTED)
    }
    /// `AF_INET` or `AF_INET6`.
    pub fn domain(self) -> i32 {
        if self.v6() {
            libc::AF_INET6
        } else {
            libc::AF_INET
        }
    }
}

/// A fixed-size table of `N` entries.
pub struct FdTable<const N: usize> {
    slots: [AtomicU8; N],
}

impl<const N: usize> Default for FdTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FdTable<N> {
    /// All unknown.
    pub const fn new() -> Self {
        FdTable {
            slots: [const { AtomicU8::new(0) }; N],
        }
    }

    fn slot(&self, fd: i32) -> Option<&AtomicU8> {
        usize::try_from(fd).ok().and_then(|i| self.slots.get(i))
    }

    /// Whether `fd` can hold an INS socket.
    pub fn fits(&self, fd: i32) -> bool {
        self.slot(fd).is_some()
    }

    /// The entry of `fd`; negative and too large fds are host fds.
    #[inline(always)]
    pub fn get(&self, fd: i32) -> Entry {
        match self.slot(fd) {
            // Relaxed: the entry is a cache of per-fd facts; the fd itself
            // (a kernel object) carries all synchronisation that matters.
            Some(s) => Entry(s.load(Ordering::Relaxed)),
            None => Entry::HOST,
        }
    }

    /// Sets the entry of `fd` (ignored for fds outside the table).
    pub fn set(&self, fd: i32, e: Entry) {
        if let Some(s) = self.slot(fd) {
            s.store(e.0, Ordering::Relaxed);
        }
    }

    /// Replaces an unknown entry; returns the entry now in place.
    pub fn resolve(&self, fd: i32, e: Entry) -> Entry {
        match self.slot(fd) {
            Some(s) => match s.compare_exchange(0, e.0, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => e,
                Err(cur) => Entry(cur),
            },
            None => Entry::HOST,
        }
    }

    /// Sets `bits` on an INS entry (no effect on other entries).
    pub fn set_bits(&self, fd: i32, bits: u8) {
        self.update(fd, |v| v | bits);
    }

    /// Clears `bits` on an INS entry (no effect on other entries).
    pub fn clear_bits(&self, fd: i32, bits: u8) {
        self.update(fd, |v| v & !bits);
    }

    /// Sets `bits` on an INS entry and reports whether they were all clear
    /// before (so exactly one caller wins).
    pub fn claim_bits(&self, fd: i32, bits: u8) -> bool {
        match self.update(fd, |v| v | bits) {
            Some(old) => old & bits == 0,
            None => false,
        }
    }

    fn update(&self, fd: i32, f: impl Fn(u8) -> u8) -> Option<u8> {
        let s = self.slot(fd)?;
        s.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            (v & Entry::INS != 0).then(|| f(v))
        })
        .ok()
    }

    /// `close(fd)`: returns the old entry and marks the number host.
    pub fn on_close(&self, fd: i32) -> Entry {
        match self.slot(fd) {
            Some(s) => Entry(s.swap(Entry::HOST.0, Ordering::Relaxed)),
            None => Entry::HOST,
        }
    }

    /// `dup*(old) == new`: `new` gets `old`'s entry (a copy of a control
    /// connection or of the marker file is an ordinary host fd to us).
    pub fn on_dup(&self, old: i32, new: i32) {
        let e = self.get(old);
        let e = if e == Entry::CONTROL || e == Entry::MARKER {
            Entry::HOST
        } else {
            e
        };
        self.set(new, e);
    }
}

/// The process-wide table (1 MiB of zero pages until touched).
pub static TABLE: FdTable<FD_LIMIT> = FdTable::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        let t: FdTable<8> = FdTable::new();
        assert!(t.get(3).is_unknown());
        assert!(t.get(-1).is_host());
        assert!(t.get(8).is_host());
        assert!(!t.fits(8) && t.fits(7) && !t.fits(-1));
        assert_eq!(
            t.resolve(3, Entry::ins(true, false)),
            Entry::ins(true, false)
        );
        // A second resolution does not overwrite.
        assert_eq!(t.resolve(3, Entry::HOST), Entry::ins(true, false));
        let e = t.get(3);
        assert!(e.is_ins() && e.v6() && !e.dgram() && !e.listening());
        assert_eq!(e.domain(), libc::AF_INET6);
        t.set_bits(3, Entry::LISTENING);
        assert!(t.get(3).listening());
        t.clear_bits(3, Entry::LISTENING);
        assert!(!t.get(3).listening());
        assert!(t.claim_bits(3, Entry::ERR_TAKEN));
        assert!(!t.claim_bits(3, Entry::ERR_TAKEN));
        t.on_dup(3, 5);
        assert_eq!(t.get(5), t.get(3));
        assert!(t.on_close(3).is_ins());
        assert!(t.get(3).is_host());
        // Bits never turn a host entry into an INS one.
        t.set_bits(3, Entry::CONNECTED);
        assert_eq!(t.get(3), Entry::HOST);
        assert!(!t.claim_bits(3, Entry::ERR_TAKEN));
        t.set(4, Entry::CONTROL);
        t.on_dup(4, 6);
        assert_eq!(t.get(6), Entry::HOST);
        assert!(t.get(4).is_host());
    }
}
