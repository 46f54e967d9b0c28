//! The relay: each INS socket is a Unix socket pair whose app end the app
//! holds as its fd and whose driver end ([`SockIo`]) the daemon reads and
//! writes, moving bytes between it and the instance's ring.
//!
//! ```text
//!  app end ══ pair ══ driver end ─read─▶ scratch ─▶ ring (Data/DataTo frames)   credit: core.send_credit
//!                               ◀write─ popped frame (Data) or inbuf (rest)     window: core.delivered
//! ```
//!
//! Streams use `SOCK_STREAM` pairs; datagrams `SOCK_SEQPACKET` pairs whose
//! packets start with a [`PAIR_HEADER_LEN`]-byte header: a [`WireAddr`]
//! (the peer address, in-band; app → driver its reserved word is
//! [`PAIR_HEADER_MAGIC`]) and the datagram's [`PktInfo`]
//! (`ins_protocol::msg::pktinfo`), validated as any ring frame is, both
//! ways carried in the `DataTo` frame. A packet without the
//! magic was written past the shim (a raw `syscall(SYS_sendmmsg, …)`, as
//! Debian's libuv sends): on a connected datagram socket it goes, whole, to
//! the peer; elsewhere it is dropped, counted (`app_datagrams_dropped` in
//! the control socket's `status`) and logged, as is every app datagram the
//! relay cannot send. (A raw packet whose bytes 28..32 happen to be the
//! magic is read as a header: one chance in 2³² for arbitrary data.)
//!
//! A reset stream's driver end is shut both ways, so the app's writes fail
//! with `EPIPE` as after a TCP reset; its hang-up then no longer tells the
//! app's close, which the tick finds in `/proc/net/unix` instead
//! ([`SockIo::reset_shut`]). The
//! driver end is edge-triggered: reading goes on until `EAGAIN`, the
//! instance's credit or the ring's space runs out (a `Credit` frame or a
//! doorbell resumes it). Bytes the pair does not take are buffered in
//! `inbuf` (bounded by the window the core enforces). Nothing here
//! allocates per message; `inbuf` and `held` only when a pair is full.
//!
//! A non-blocking `connect` keeps the app end unwritable with *filler*
//! bytes until the instance reports the result (see `shimio::fill`).
//!
//! In-band options: a stream read that brought an `SCM_RIGHTS` fd ends with
//! a shim's option marker ([`shimio::read_stream`]); the bytes before it
//! are pushed, then the matching record's `SockOpt` frame
//! ([`driver_core::inband`]), or the socket waits for its record.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use driver_core::{Handle, Marked, Violation};
use ins_protocol::msg::{
    self, DATA_TO_PREFIX_LEN, HEADER_LEN, MAX_OPT_LEN, Msg, PAIR_HEADER_LEN, PAIR_HEADER_MAGIC,
    PktInfo, WireAddr,
};
use ins_protocol::ring::RingError;
use rustix::event::epoll::EventFlags;
use rustix::net::{RecvFlags, SendFlags, Shutdown};
use tracing::{debug, warn};

use super::event_loop::{K_SOCK, add};
use super::{Daemon, now_ns};
use crate::shimio;

/// Ring space kept after a read's bytes for the in-band option frame its
/// marker may bring (header, level and name, the largest value, padding).
const OPT_FRAME: usize = HEADER_LEN + 8 + MAX_OPT_LEN + 16;

/// The driver end of one socket's pair, and what is in flight through it.
pub(super) struct SockIo {
    pub(super) drv: OwnedFd,
    pub(super) stream: bool,
    /// App end kept by the driver: an accepted connection's until `Accept`,
    /// or the copy received with a non-blocking connect (filler).
    pub(super) app: Option<OwnedFd>,
    pub(super) filler: usize,
    old_sndbuf: usize,
    /// Instance bytes the pair did not take yet.
    inbuf: Vec<u8>,
    inbuf_off: usize,
    shut_after_drain: bool,
    tokens_owed: u32,
    /// A datagram waiting for credit.
    held: Option<Vec<u8>>,
    pub(super) hup: bool,
    /// `EPOLLOUT` is in the interest set (only while something waits to be
    /// written: instance bytes, tokens).
    out_armed: bool,
    /// A reset stream: the driver end is shut both ways, so the app's
    /// writes fail with `EPIPE` (and `SIGPIPE`) as after a TCP reset, and
    /// it reads EOF; the end then always reports hang-up, so the app's
    /// close is learned from `/proc/net/unix` instead (the tick).
    pub(super) reset_shut: bool,
}

impl SockIo {
    /// A non-blocking connect finished: the filler bytes are drained and
    /// the app end's send buffer restored (it becomes writable); after an
    /// error the driver end's write side is shut, so the app reads EOF.
    pub(super) fn connect_done(&mut self, sock: Handle, errno: i32) {
        if let Some(app) = self.app.take()
            && let Err(e) =
                shimio::unfill(self.drv.as_fd(), app.as_fd(), self.filler, self.old_sndbuf)
        {
            warn!(sock, error = %e, "undoing the connect filler");
        }
        self.filler = 0;
        if errno != 0 {
            let _ = rustix::net::shutdown(&self.drv, Shutdown::Write);
        }
    }

    /// The peer's EOF: shut the driver end's write side once the buffered
    /// bytes are written.
    pub(super) fn peer_eof(&mut self) {
        if self.inbuf.len() == self.inbuf_off {
            let _ = rustix::net::shutdown(&self.drv, Shutdown::Write);
        } else {
            self.shut_after_drain = true;
        }
    }

    /// The connection was reset: buffered bytes dropped, the driver end's
    /// write side shut, and its read side with it in the same call unless
    /// a connect filler is still queued (the shim reads a hang-up as "an
    /// error is pending": the app end must never show end-of-file without
    /// hang-up while the driver keeps an error).
    pub(super) fn peer_reset(&mut self, sock: Handle, errno: i32) {
        debug!(sock, errno, "reset");
        self.inbuf = Vec::new();
        self.inbuf_off = 0;
        self.held = None;
        if self.filler == 0 && self.stream {
            self.shut_both();
        } else {
            let _ = rustix::net::shutdown(&self.drv, Shutdown::Write);
        }
    }

    /// A reset stream (or a failed connect, once its filler is drained):
    /// the driver end's read side is shut too, so the app end's send side
    /// is, and the app's writes fail with `EPIPE` (see `reset_shut`).
    pub(super) fn shut_both(&mut self) {
        if self.stream && !self.reset_shut {
            let _ = rustix::net::shutdown(&self.drv, Shutdown::Both);
            self.reset_shut = true;
        }
    }

    /// One more accept token is owed to the listener's app end: written
    /// now if the pair takes it, else when it becomes writable.
    pub(super) fn add_token(&mut self) {
        self.tokens_owed += 1;
        self.write_tokens();
    }

    /// Writes the accept tokens owed, one byte each.
    fn write_tokens(&mut self) {
        while self.tokens_owed > 0 {
            match rustix::io::write(&self.drv, &[1u8]) {
                Ok(_) => self.tokens_owed -= 1,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => break,
            }
        }
    }

    /// A non-blocking connect is under way: fill the app end (a copy of
    /// the fd that came with the request) until it is not writable.
    pub(super) fn start_filler(&mut self, sock: Handle, fd: BorrowedFd<'_>) {
        let Ok(copy) = fd.try_clone_to_owned() else {
            return;
        };
        match shimio::fill(copy.as_fd()) {
            Ok((filler, old)) => {
                self.filler = filler;
                self.old_sndbuf = old;
                self.app = Some(copy);
            }
            Err(e) => warn!(sock, error = %e, "connect filler"),
        }
    }
}

/// The epoll interest of a driver end: always readable and hang-up,
/// edge-triggered; writable only while something waits to be written (a
/// wake-up per `read` of the app otherwise).
fn interest(out: bool) -> EventFlags {
    let base = EventFlags::IN | EventFlags::RDHUP | EventFlags::ET;
    if out { base | EventFlags::OUT } else { base }
}

impl SockIo {
    /// Whether anything waits for the driver end to become writable.
    fn waits_to_write(&self) -> bool {
        self.tokens_owed > 0 || self.inbuf_off < self.inbuf.len()
    }

    /// Puts `EPOLLOUT` in or out of the interest set to match
    /// [`SockIo::waits_to_write`].
    pub(super) fn sync_out(&mut self, epfd: &OwnedFd, h: Handle) {
        let want = self.waits_to_write();
        if want == self.out_armed {
            return;
        }
        let r = rustix::event::epoll::modify(
            epfd,
            &self.drv,
            rustix::event::epoll::EventData::new_u64(K_SOCK | u64::from(h)),
            interest(want),
        );
        match r {
            Ok(()) => self.out_armed = want,
            Err(e) => warn!(sock = h, error = %e, "epoll interest"),
        }
    }
}

/// Registers a socket's driver end (edge-triggered) and adds it to the
/// table; `app` is an app end the daemon keeps (an accepted connection's,
/// until `accept` hands it over).
pub(super) fn register(
    epfd: &OwnedFd,
    socks: &mut HashMap<Handle, SockIo>,
    h: Handle,
    drv: OwnedFd,
    stream: bool,
    app: Option<OwnedFd>,
) -> io::Result<()> {
    add(epfd, drv.as_fd(), K_SOCK | u64::from(h), interest(false))?;
    socks.insert(
        h,
        SockIo {
            drv,
            stream,
            app,
            filler: 0,
            old_sndbuf: 0,
            inbuf: Vec::new(),
            inbuf_off: 0,
            shut_after_drain: false,
            tokens_owed: 0,
            held: None,
            hup: false,
            out_armed: false,
            reset_shut: false,
        },
    );
    Ok(())
}

impl Daemon {
    /// [`register`] on the daemon's tables.
    pub(super) fn register_sock(
        &mut self,
        h: Handle,
        drv: OwnedFd,
        stream: bool,
        app: Option<OwnedFd>,
    ) -> io::Result<()> {
        register(&self.epfd, &mut self.socks, h, drv, stream, app)
    }

    /// Relays every socket resumed since the last call, then publishes.
    pub(super) fn run_resumes(&mut self) {
        while let Some(h) = self.resume.pop() {
            self.relay_out(h);
        }
        self.flush_all();
    }

    // ----- instance → app -----

    /// Writes instance bytes into the pair (what does not fit is buffered;
    /// the core bounded it by the window).
    pub(super) fn deliver(&mut self, h: Handle, m: &Msg<'_>) {
        let Some(s) = self.socks.get_mut(&h) else {
            return;
        };
        match *m {
            Msg::Data { bytes, .. } => {
                let mut written = 0;
                if s.inbuf.len() == s.inbuf_off {
                    while written < bytes.len() {
                        match rustix::io::write(&s.drv, &bytes[written..]) {
                            Ok(n) => written += n,
                            Err(rustix::io::Errno::INTR) => {}
                            Err(rustix::io::Errno::AGAIN) => break,
                            Err(_) => {
                                // The app is gone; the hang-up closes it.
                                written = bytes.len();
                                break;
                            }
                        }
                    }
                }
                if written < bytes.len() {
                    if s.inbuf_off > 0 && s.inbuf_off == s.inbuf.len() {
                        s.inbuf.clear();
                        s.inbuf_off = 0;
                    }
                    s.inbuf.extend_from_slice(&bytes[written..]);
                }
                let drained = s.inbuf.len() == s.inbuf_off;
                s.sync_out(&self.epfd, h);
                self.core
                    .delivered(h, written as u32, drained, &mut self.actions);
            }
            Msg::DataTo {
                addr, info, bytes, ..
            } => {
                let hdr = msg::encode_pair_header(addr, &info, 0);
                let r = rustix::net::sendmsg(
                    &s.drv,
                    &[io::IoSlice::new(&hdr), io::IoSlice::new(bytes)],
                    &mut rustix::net::SendAncillaryBuffer::default(),
                    SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
                );
                if let Err(e) = r {
                    debug!(sock = h, error = %e, "datagram dropped (app queue full)");
                }
                self.core
                    .delivered(h, bytes.len() as u32, true, &mut self.actions);
            }
            _ => {}
        }
    }

    /// The driver end is writable again: owed tokens, then buffered
    /// instance bytes (crediting the instance for what went through).
    pub(super) fn sock_writable(&mut self, h: Handle) {
        let Some(s) = self.socks.get_mut(&h) else {
            return;
        };
        s.write_tokens();
        let mut written = 0usize;
        while s.inbuf_off < s.inbuf.len() {
            match rustix::io::write(&s.drv, &s.inbuf[s.inbuf_off..]) {
                Ok(n) => {
                    s.inbuf_off += n;
                    written += n;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => {
                    written += s.inbuf.len() - s.inbuf_off;
                    s.inbuf_off = s.inbuf.len();
                }
            }
        }
        let drained = s.inbuf_off == s.inbuf.len();
        if drained && !s.inbuf.is_empty() {
            s.inbuf = Vec::new();
            s.inbuf_off = 0;
        }
        if drained && s.shut_after_drain {
            s.shut_after_drain = false;
            let _ = rustix::net::shutdown(&s.drv, Shutdown::Write);
        }
        s.sync_out(&self.epfd, h);
        if written > 0 {
            self.core
                .delivered(h, written as u32, drained, &mut self.actions);
            self.apply(None, None);
        }
    }

    // ----- app → instance -----

    /// Reads the app's bytes from the driver end into the ring while the
    /// core grants credit and the ring has space.
    /// An app's datagram the driver cannot send: counted (the control
    /// socket's `status` shows `app_datagrams_dropped`) and logged (the
    /// first, then every 1024th).
    fn app_dgram_dropped(&mut self, h: Handle, len: usize, why: &'static str) {
        self.app_dgrams_dropped += 1;
        let n = self.app_dgrams_dropped;
        if n == 1 || n.is_multiple_of(1024) {
            warn!(sock = h, len, why, total = n, "app datagram dropped");
        } else {
            debug!(sock = h, len, why, total = n, "app datagram dropped");
        }
    }

    /// The tick's look at the reset streams ([`SockIo::reset_shut`]): an
    /// app end no longer in `/proc/net/unix` was closed by the app (the
    /// driver created both ends, so both are in its network namespace).
    pub(super) fn watch_reset(&mut self) {
        self.reset_watch.retain(|h| self.socks.contains_key(h));
        if self.reset_watch.is_empty() {
            return;
        }
        let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
            return;
        };
        // Columns: Num RefCount Protocol Flags Type St Inode [Path].
        let live: std::collections::HashSet<u64> = table
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(6)?.parse().ok())
            .collect();
        let gone: Vec<Handle> = self
            .reset_watch
            .iter()
            .copied()
            .filter(|&h| {
                self.core
                    .socket(h)
                    .is_some_and(|i| !live.contains(&i.inode))
            })
            .collect();
        for h in gone {
            self.reset_watch.retain(|&x| x != h);
            self.core.app_eof(h, true, &mut self.actions);
        }
        if !self.actions.is_empty() {
            self.apply(None, None);
        }
    }

    pub(super) fn relay_out(&mut self, h: Handle) {
        let Some(stream) = self.socks.get(&h).map(|s| s.stream) else {
            return;
        };
        if stream {
            self.relay_stream(h);
        } else {
            self.relay_dgram(h);
        }
        if !self.actions.is_empty() {
            self.apply(None, None);
        }
    }

    /// Stream bytes: `Data` frames of what the credit, the frame size and
    /// the ring space allow; EOF and hang-up go to the core.
    fn relay_stream(&mut self, h: Handle) {
        loop {
            let credit = self.core.send_credit(h, &mut self.actions);
            let Some(s) = self.socks.get_mut(&h) else {
                return;
            };
            let Some((inst, wire, credit)) = credit else {
                if s.reset_shut {
                    // Nothing to read; the app's close comes from the tick.
                    return;
                }
                // Not connected: read only to discard after a reset and to
                // notice the app's close.
                if self
                    .core
                    .socket(h)
                    .is_some_and(|i| i.state == driver_core::SockState::Dead)
                {
                    loop {
                        match rustix::io::read(&s.drv, &mut self.scratch[..]) {
                            Ok(0) => {
                                let hup = s.hup || shimio::hung_up(s.drv.as_fd());
                                if hup {
                                    self.core.app_eof(h, true, &mut self.actions);
                                }
                                return;
                            }
                            Ok(_) => {}
                            Err(rustix::io::Errno::INTR) => {}
                            Err(_) => return,
                        }
                    }
                }
                // A listener or a socket never connected: the app's close
                // shows as hang-up (a listener's end carries only tokens).
                if (s.hup || shimio::hung_up(s.drv.as_fd())) && s.filler == 0 {
                    self.core.app_eof(h, true, &mut self.actions);
                }
                return;
            };
            if credit == 0 {
                return;
            }
            let Some(x) = self.insts.get_mut(&inst) else {
                return;
            };
            if x.queued() {
                if !x.blocked.contains(&h) {
                    x.blocked.push(h);
                }
                return;
            }
            let space = match x.ep.tx.free_frame_space() {
                Ok(sp) => sp,
                Err(_) => return,
            };
            // Room is kept for an in-band option frame after the bytes.
            let max = (credit as usize)
                .min(x.max_payload)
                .min(space.saturating_sub(HEADER_LEN + OPT_FRAME));
            if max == 0 {
                let _ = x.ep.tx.flush();
                x.dirty = true;
                match x.ep.tx.prepare_wait_space(HEADER_LEN + OPT_FRAME + 1) {
                    Ok(true) => continue,
                    _ => {
                        if !x.blocked.contains(&h) {
                            x.blocked.push(h);
                        }
                        return;
                    }
                }
            }
            let r = match shimio::read_stream(s.drv.as_fd(), &mut self.scratch[..max]) {
                Ok(r) if r.n == 0 => {
                    let hup = s.hup || shimio::hung_up(s.drv.as_fd());
                    self.core.app_eof(h, hup, &mut self.actions);
                    return;
                }
                Ok(r) => r,
                Err(_) => return,
            };
            // An in-band option marker is the last byte of a read. A read
            // shorter than asked does not mean the pair is drained: the
            // kernel also ends a read where the writer changes (the end
            // has `SO_PASSCRED`, and it never glues bytes of different
            // processes, e.g. sshd's monitor and its forked child). Bytes
            // already queued behind that cut make no new edge, so the loop
            // reads on until `EAGAIN`.
            let n = if r.marker { r.n - 1 } else { r.n };
            if n > 0 {
                let mut hdr = [0u8; HEADER_LEN];
                if msg::encode_data_header(wire, n, &mut hdr).is_err() {
                    return;
                }
                if let Err(e) = x.ep.tx.try_push_parts(&[&hdr, &self.scratch[..n]]) {
                    // Space was checked; only a corrupt ring gets here.
                    warn!(inst, error = %e, "ring push");
                    self.fail_instance(inst, Violation::ChannelFailed);
                    return;
                }
                x.dirty = true;
                self.core.consume_credit(h, n as u32);
            }
            if r.marker {
                let tag = self.scratch[n];
                let now = now_ns(self.start);
                match self
                    .core
                    .inband_marker(h, r.pid, tag, now, &mut self.actions)
                {
                    Marked::Apply { inst: to, frame } if to == inst => {
                        // Room was kept: it goes into the ring, right
                        // after the bytes before the marker.
                        if x.send(inst, &frame).is_err() {
                            self.fail_instance(inst, Violation::ChannelFailed);
                            return;
                        }
                    }
                    Marked::Stall => {
                        debug!(
                            sock = h,
                            pid = r.pid,
                            tag,
                            "in-band marker before its record"
                        );
                        return;
                    }
                    Marked::Apply { .. } | Marked::Ignore => {
                        if !self.actions.is_empty() {
                            // A reset: the socket is done.
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Datagrams: one `DataTo` frame each (address in-band); a datagram
    /// that does not fit the credit or the ring waits in `held`.
    fn relay_dgram(&mut self, h: Handle) {
        loop {
            let Some(s) = self.socks.get_mut(&h) else {
                return;
            };
            // A held datagram first, else the next one from the pair.
            let len = if let Some(held) = s.held.take() {
                let n = held.len();
                self.scratch[..n].copy_from_slice(&held);
                n
            } else {
                match rustix::net::recv(
                    &s.drv,
                    &mut self.scratch[..],
                    RecvFlags::DONTWAIT | RecvFlags::TRUNC,
                ) {
                    Ok((_, 0)) => {
                        let hup = s.hup || shimio::hung_up(s.drv.as_fd());
                        if hup {
                            self.core.app_eof(h, true, &mut self.actions);
                        }
                        return;
                    }
                    Ok((_, full)) if full > self.scratch.len() => {
                        self.app_dgram_dropped(h, full, "larger than the relay buffer");
                        continue;
                    }
                    Ok((n, _)) => n,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => return,
                }
            };
            // The shim's header (its reserved word the magic), or a
            // header-less datagram written past the shim: the connected
            // peer's, whole.
            let magic = PAIR_HEADER_MAGIC.to_le_bytes();
            let (addr, info, off) = if len >= PAIR_HEADER_LEN
                && self.scratch[WireAddr::LEN - 4..WireAddr::LEN] == magic
            {
                let mut hdr = [0u8; PAIR_HEADER_LEN];
                hdr.copy_from_slice(&self.scratch[..PAIR_HEADER_LEN]);
                hdr[WireAddr::LEN - 4..WireAddr::LEN].fill(0);
                match msg::decode_pair_header(&hdr) {
                    Ok((a, info)) => (a, info, PAIR_HEADER_LEN),
                    Err(_) => {
                        self.app_dgram_dropped(h, len, "invalid address header");
                        continue;
                    }
                }
            } else if self.core.socket(h).is_some_and(|i| i.connected) {
                (None, PktInfo::NONE, 0)
            } else {
                // Linux would say EDESTADDRREQ; the call is past the shim,
                // so only the count and the log can say it.
                self.app_dgram_dropped(h, len, "no address header on an unconnected socket");
                continue;
            };
            let payload = len - off;
            let credit = self.core.send_credit(h, &mut self.actions);
            let Some(s) = self.socks.get_mut(&h) else {
                return;
            };
            let Some((inst, wire, credit)) = credit else {
                if self.core.socket(h).is_some() {
                    // Not placed (no instance): keep it until one is.
                    s.held = Some(self.scratch[..len].to_vec());
                }
                return;
            };
            let Some(x) = self.insts.get_mut(&inst) else {
                s.held = Some(self.scratch[..len].to_vec());
                return;
            };
            // Frames queued for ring space (e.g. the Open) go first.
            if x.queued() || (payload as u32) > credit {
                s.held = Some(self.scratch[..len].to_vec());
                if x.queued() && !x.blocked.contains(&h) {
                    x.blocked.push(h);
                }
                return;
            }
            if payload + DATA_TO_PREFIX_LEN > x.max_payload + HEADER_LEN {
                self.app_dgram_dropped(h, payload, "larger than a ring frame");
                continue;
            }
            let mut pre = [0u8; DATA_TO_PREFIX_LEN];
            if msg::encode_data_to_header(wire, addr, &info, payload, &mut pre).is_err() {
                continue;
            }
            match x.ep.tx.try_push_parts(&[&pre, &self.scratch[off..len]]) {
                Ok(()) => {
                    x.dirty = true;
                    self.core.consume_credit(h, payload as u32);
                }
                Err(RingError::Full) => {
                    s.held = Some(self.scratch[..len].to_vec());
                    let _ = x.ep.tx.flush();
                    x.dirty = true;
                    if !matches!(
                        x.ep.tx.prepare_wait_space(payload + DATA_TO_PREFIX_LEN),
                        Ok(true)
                    ) {
                        if !x.blocked.contains(&h) {
                            x.blocked.push(h);
                        }
                        return;
                    }
                }
                Err(_) => {
                    self.fail_instance(inst, Violation::ChannelFailed);
                    return;
                }
            }
            if !self.actions.is_empty() {
                self.apply(None, None);
            }
        }
    }
}
