// SPDX-License-Identifier: GPL-2.0

//! Datagram sockets' data on socket files (UDP), with the daemon's pair
//! format: every datagram read or written is one pair header
//! (`ins_protocol::msg::pktinfo`: the peer address, then the packet
//! information) followed by the payload, so the shim uses the same
//! header code on both drivers.
//!
//! ```text
//!  write(header + payload) ─ one DataTo frame (address, pktinfo, payload)
//!                            within driver-core's send credit
//!  read()  ◀─ one queued datagram: header (its reserved word the payload's
//!             full length) + payload, cut to the reader's buffer; the rest
//!             of a cut datagram is dropped, as UDP does
//! ```
//!
//! * Write: one `write`/`writev` is one datagram. A header whose reserved
//!   word is the shim's magic gives the destination (family 0: the
//!   connected peer) and the packet information; without it the bytes
//!   were written past the shim (a raw syscall) and go, whole, to a
//!   connected socket's peer, else `EDESTADDRREQ`. A datagram larger than
//!   the instance's ring frame is `EMSGSIZE`; one that does not fit the
//!   credit or the ring now waits (`EAGAIN` non-blocking).
//! * Read: the oldest datagram, whole or cut; credit goes back for it
//!   whole. None queued: wait (`EAGAIN` non-blocking), or 0 once the
//!   socket's instance is gone (the shim then asks for the error, as at a
//!   daemon pair's end). `INS_IOC_PEEK` copies the oldest one the same
//!   way and leaves it.
//! * Every datagram is a separate allocation, made fallibly. The queue's
//!   cost (each datagram's header and bookkeeping counted: credit counts
//!   payload only) is bounded by driver-core's window; beyond it, or with
//!   no memory, an arriving datagram is dropped (its credit returned), as
//!   UDP drops under pressure.
//! * `MSG_DONTWAIT` reaches here as `IOCB_NOWAIT` (the shim's
//!   `preadv2`/`pwritev2` with `RWF_NOWAIT`).

use core::net::SocketAddr;

use ins_protocol::msg::{
    decode_pair_header, encode_pair_header, PktInfo, WireAddr, PAIR_HEADER_LEN, PAIR_HEADER_MAGIC,
};
use kernel::bindings;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

use crate::control::{SockEntry, SockFile};
use crate::ksys;

/// The largest UDP payload (IPv6's, without jumbograms: 65535 - 8).
const MAX_UDP: usize = 65527;
/// Largest datagram write: a header and the largest UDP payload.
const MAX_WRITE: usize = PAIR_HEADER_LEN + MAX_UDP;
/// Where the reserved word sits in the header (the address's last word).
const RESERVED: core::ops::Range<usize> = WireAddr::LEN - 4..WireAddr::LEN;

/// What one queued datagram costs beyond its header and payload (its
/// allocation and queue slot, roughly), so that empty datagrams count.
const DGRAM_OVERHEAD: usize = 64;

/// What a queued datagram `d` (header and payload) costs.
fn cost(d: &[u8]) -> usize {
    d.len() + DGRAM_OVERHEAD
}

/// A datagram from the instance for socket `h`, into its queue. False if
/// there is no such datagram socket, its queue would cost more than
/// `limit` bytes (driver-core's window; credit counts payload only, so
/// without this a peer's empty datagrams would queue without end), or no
/// memory: the datagram is dropped (the caller returns its credit), as
/// UDP drops.
pub(crate) fn dgram_in(
    socks: &mut Socks,
    h: driver_core::Handle,
    addr: Option<SocketAddr>,
    info: PktInfo,
    bytes: &[u8],
    limit: usize,
) -> bool {
    // No UDP datagram is longer (a misbehaving instance's is dropped).
    if bytes.len() > MAX_UDP {
        return false;
    }
    let Some(e) = socks.iter_mut().find(|e| e.handle == h && !e.stream) else {
        return false;
    };
    let c = PAIR_HEADER_LEN + bytes.len() + DGRAM_OVERHEAD;
    if e.dgram_bytes + c > limit {
        return false;
    }
    // The reserved word tells the reader the payload's full length.
    let hdr = encode_pair_header(addr, &info, bytes.len() as u32);
    let mut d = match KVec::with_capacity(PAIR_HEADER_LEN + bytes.len(), GFP_KERNEL) {
        Ok(d) => d,
        Err(_) => return false,
    };
    if d.extend_from_slice(&hdr, GFP_KERNEL).is_err()
        || d.extend_from_slice(bytes, GFP_KERNEL).is_err()
        || e.dgrams.try_reserve(1).is_err()
    {
        return false;
    }
    e.dgram_bytes += cost(&d);
    e.dgrams.push_back(d);
    e.wake();
    true
}

/// The sockets' table (instance.rs's `CoreInner::socks`).
type Socks = alloc::vec::Vec<SockEntry>;

impl SockFile {
    /// `read()` on a datagram socket file.
    ///
    /// # Safety
    ///
    /// `iter` is the valid destination iterator the VFS passed.
    pub(crate) unsafe fn read_dgram(
        &self,
        iter: *mut bindings::iov_iter,
        nonblock: bool,
    ) -> Result<usize> {
        // SAFETY: `iter` is valid (caller's contract).
        let want = unsafe { ksys::iov_iter_count(iter) };
        loop {
            let reader = self.reader.lock();
            let d = {
                let mut guard = self.core.inner.lock();
                let e = guard
                    .socks
                    .iter_mut()
                    .find(|e| e.handle == self.handle)
                    .ok_or(EBADF)?;
                match e.dgrams.pop_front() {
                    Some(d) => {
                        e.dgram_bytes = e.dgram_bytes.saturating_sub(cost(&d));
                        Some(d)
                    }
                    None if e.err != 0 || e.eof => return Ok(0),
                    None => None,
                }
            };
            if let Some(d) = d {
                let k = d.len().min(want);
                // Outside the core's mutex: the app's memory may fault.
                // SAFETY: `d` is readable for `k` bytes; `iter` is valid.
                let c = unsafe { bindings::_copy_to_iter(d.as_ptr().cast(), k, iter) };
                let payload = d.len().saturating_sub(PAIR_HEADER_LEN);
                drop(d);
                let mut guard = self.core.inner.lock();
                let inner = &mut *guard;
                let drained = inner
                    .socks
                    .iter()
                    .find(|e| e.handle == self.handle)
                    .map_or(true, |e| e.dgrams.is_empty());
                inner
                    .driver
                    .delivered(self.handle, payload as u32, drained, &mut inner.actions);
                if inner.execute() {
                    self.core.replies_wq.wake(ksys::EPOLLIN);
                }
                drop(reader);
                return if c == 0 && k > 0 { Err(EFAULT) } else { Ok(c) };
            }
            if nonblock {
                return Err(EAGAIN);
            }
            drop(reader);
            self.wq.wait_until(|| self.readable())?;
        }
    }

    /// `recv(MSG_PEEK)` on a datagram socket file: the oldest datagram
    /// (header and payload, cut to `want`) copied to `buf` and left queued.
    pub(crate) fn peek_dgram(&self, buf: usize, want: usize, nonblock: bool) -> Result<usize> {
        loop {
            let copy = {
                let guard = self.core.inner.lock();
                let e = guard
                    .socks
                    .iter()
                    .find(|e| e.handle == self.handle)
                    .ok_or(EBADF)?;
                match e.dgrams.front() {
                    Some(d) => {
                        let k = d.len().min(want);
                        let mut c = KVec::with_capacity(k, GFP_KERNEL)?;
                        c.extend_from_slice(d.get(..k).ok_or(EINVAL)?, GFP_KERNEL)?;
                        Some(c)
                    }
                    None if e.err != 0 || e.eof => return Ok(0),
                    None => None,
                }
            };
            if let Some(c) = copy {
                // Outside the core's mutex: the app's memory may fault.
                UserSlice::new(buf, c.len()).writer().write_slice(&c)?;
                return Ok(c.len());
            }
            if nonblock {
                return Err(EAGAIN);
            }
            self.wq.wait_until(|| self.readable())?;
        }
    }

    /// `write()` on a datagram socket file: the whole write is one
    /// datagram (module docs).
    ///
    /// # Safety
    ///
    /// `iter` is the valid source iterator the VFS passed.
    pub(crate) unsafe fn write_dgram(
        &self,
        iter: *mut bindings::iov_iter,
        nonblock: bool,
    ) -> Result<usize> {
        // SAFETY: `iter` is valid (caller's contract).
        let total = unsafe { ksys::iov_iter_count(iter) };
        if total > MAX_WRITE {
            return Err(Error::from_errno(-(bindings::EMSGSIZE as i32)));
        }
        // No writer lock: each write has its own buffer and goes whole
        // under the core's mutex, so concurrent writers cannot interleave.
        let mut buf = KVec::from_elem(0u8, total, GFP_KERNEL)?;
        // SAFETY: `buf` is writable for `total` bytes; `iter` is valid.
        let c = unsafe { bindings::_copy_from_iter(buf.as_mut_ptr().cast(), total, iter) };
        if c != total {
            // SAFETY: `iter` was advanced by exactly `c`.
            unsafe { bindings::iov_iter_revert(iter, c) };
            return Err(EFAULT);
        }
        let magic = PAIR_HEADER_MAGIC.to_le_bytes();
        let (dest, info, off) = if total >= PAIR_HEADER_LEN && buf.get(RESERVED) == Some(&magic[..])
        {
            let hdr = buf.get_mut(..PAIR_HEADER_LEN).ok_or(EINVAL)?;
            hdr.get_mut(RESERVED).ok_or(EINVAL)?.fill(0);
            let (a, i) = decode_pair_header(hdr).map_err(|_| EINVAL)?;
            (a, i, PAIR_HEADER_LEN)
        } else {
            // Past the shim: the connected peer's, whole.
            (None, PktInfo::NONE, 0)
        };
        let payload = buf.get(off..).ok_or(EINVAL)?;
        loop {
            if self.push_dgram(dest, &info, payload)? {
                return Ok(total);
            }
            if nonblock {
                // SAFETY: `iter` was advanced by exactly `total`.
                unsafe { bindings::iov_iter_revert(iter, total) };
                return Err(EAGAIN);
            }
            if let Err(e) = self.wq.wait_until(|| self.dgram_fits(payload.len())) {
                // SAFETY: as above.
                unsafe { bindings::iov_iter_revert(iter, total) };
                return Err(e);
            }
        }
    }

    /// Pushes one datagram as a `DataTo` frame if the credit and the ring
    /// take it now (`Ok(false)`: not now).
    fn push_dgram(&self, dest: Option<SocketAddr>, info: &PktInfo, payload: &[u8]) -> Result<bool> {
        let mut guard = self.core.inner.lock();
        let inner = &mut *guard;
        let e = inner
            .socks
            .iter()
            .find(|e| e.handle == self.handle)
            .ok_or(EBADF)?;
        if e.err != 0 {
            return Err(EPIPE);
        }
        if dest.is_none() && !e.connected {
            return Err(Error::from_errno(-(bindings::EDESTADDRREQ as i32)));
        }
        let credit = inner.driver.send_credit(self.handle, &mut inner.actions);
        // Placing the socket queued its `Open`: onto the ring before data.
        inner.flush_actions(&self.core.replies_wq);
        let Some((inst, wire, credit)) = credit else {
            // Not placed on an instance (yet, or any more): wait, as the
            // daemon holds such a datagram.
            return Ok(false);
        };
        if payload.len() > inner.max_dgram(inst) {
            return Err(Error::from_errno(-(bindings::EMSGSIZE as i32)));
        }
        if (credit as usize) < payload.len() || !inner.data_to_fits(inst, payload.len()) {
            return Ok(false);
        }
        if !inner.push_data_to(inst, wire, dest, info, payload)? {
            return Ok(false);
        }
        inner
            .driver
            .consume_credit(self.handle, payload.len() as u32);
        Ok(true)
    }

    /// A datagram of `len` bytes would go now (or fail at once).
    fn dgram_fits(&self, len: usize) -> bool {
        let mut guard = self.core.inner.lock();
        let inner = &mut *guard;
        let Some(e) = inner.socks.iter().find(|e| e.handle == self.handle) else {
            return true;
        };
        if e.err != 0 {
            return true;
        }
        let r = match inner.driver.send_credit(self.handle, &mut inner.actions) {
            Some((inst, _, c)) => {
                len > inner.max_dgram(inst) || (c as usize >= len && inner.data_to_fits(inst, len))
            }
            None => false,
        };
        inner.flush_actions(&self.core.replies_wq);
        r
    }
}
