//! Flow control between the app side and an instance, per socket: the
//! questions the host's relay asks on the hot path, and the end of the
//! app's side of a socket.
//!
//! ```text
//!  app → instance:  send_credit (may I read the app side, how much?) ─▶ host pushes
//!                   Data frames ─▶ consume_credit; the instance's Credit frames refill it
//!  instance → app:  Data (data_in: ownership and window checked) ─▶ host writes it
//!                   to the app side ─▶ delivered ─▶ Credit back in quarter windows
//!                   (never per small write: the instance keeps ¾ of its window)
//!  app EOF:         app_eof(hup = false): Eof after the bytes before it
//!  app gone:        app_eof(hup = true): Close on every instance holding it,
//!                   forgotten on the last Closed (closed_on)
//! ```
//!
//! Invariants: the driver never lets an instance have more than one window
//! of data outstanding per socket (`recv_inflight ≤ Config::window`, else a
//! violation), and never credits the app more than the instance's window.
//! None of the hot-path calls allocate.

use alloc::vec::Vec;

use ins_protocol::msg::{MsgOf, SockType};

use crate::pending::Pending;
use crate::{Action, Driver, Handle, InstId, SockState, Violation};

impl Driver {
    /// How many bytes the app may send now on `sock`: `(instance, wire id,
    /// credit)`. `None` while the socket is not connected (streams) or the
    /// app side must not be read. A datagram socket not yet placed is
    /// placed now (the first `sendto` opens it on an instance); that call
    /// answers `None` plus a `Resume`, because the `Open` frame it queued in
    /// `out` must reach the ring before any datagram of the socket.
    pub fn send_credit(
        &mut self,
        sock: Handle,
        out: &mut Vec<Action>,
    ) -> Option<(InstId, u32, u32)> {
        let s = self.socks.get(&sock)?;
        if s.ty == SockType::Dgram && s.inst.is_none() && s.state == SockState::Fresh {
            self.ensure_placed(sock, false, out).ok()?;
            out.push(Action::Resume { sock });
            return None;
        }
        let s = self.socks.get(&sock)?;
        let inst = s.inst?;
        if s.stalled.is_some() {
            // A marker waits for its record: nothing after it may pass.
            return None;
        }
        let ok = match s.ty {
            SockType::Stream => s.state == SockState::Connected && !s.eof_sent,
            SockType::Dgram => s.state != SockState::Dead && s.state != SockState::Closing,
        };
        ok.then_some((inst, s.wire, s.send_credit))
    }

    /// The host sent `n` bytes of `sock` to its instance.
    pub fn consume_credit(&mut self, sock: Handle, n: u32) {
        if let Some(s) = self.socks.get_mut(&sock) {
            s.send_credit = s.send_credit.saturating_sub(n);
        }
    }

    /// The host wrote `n` bytes from the instance into `sock`'s pair
    /// (or dropped a datagram); `drained` when nothing stays buffered.
    /// Credit is returned in batches of a quarter window: with nothing
    /// buffered, what the instance has outstanding is the uncredited part,
    /// under a quarter, so it always has three quarters of its window to
    /// send and never waits for the rest (a `Credit` per small response
    /// would cost both sides a wake-up per request).
    pub fn delivered(&mut self, sock: Handle, n: u32, _drained: bool, out: &mut Vec<Action>) {
        let quarter = (self.cfg.window / 4).max(1);
        let Some(s) = self.socks.get_mut(&sock) else {
            return;
        };
        s.recv_uncredited = s.recv_uncredited.saturating_add(n);
        if s.recv_uncredited < quarter {
            return;
        }
        let Some(inst) = s.inst else { return };
        if s.state == SockState::Dead || s.state == SockState::Closing {
            return;
        }
        let bytes = s.recv_uncredited.min(s.recv_inflight);
        s.recv_inflight -= bytes;
        s.recv_uncredited = 0;
        if bytes > 0 {
            out.push(Action::Send {
                inst,
                frame: MsgOf::Credit {
                    sock: s.wire,
                    bytes,
                },
            });
        }
    }

    /// Read returned 0 on the driver end: the app shut its write side
    /// (`hup == false`) or the last app reference is gone (`hup`).
    pub fn app_eof(&mut self, sock: Handle, hup: bool, out: &mut Vec<Action>) {
        let Some(s) = self.socks.get_mut(&sock) else {
            return;
        };
        if !hup {
            if s.ty == SockType::Stream && s.state == SockState::Connected && !s.eof_sent {
                s.eof_sent = true;
                if let Some(inst) = s.inst {
                    out.push(Action::Send {
                        inst,
                        frame: MsgOf::Eof { sock: s.wire },
                    });
                }
            }
            return;
        }
        if s.state == SockState::Closing {
            return;
        }
        s.state = SockState::Closing;
        s.send_credit = 0;
        let wire = s.wire;
        // The app let go: its port is free again at once, as on Linux,
        // while the instances close their sockets.
        if let Some(key) = s.bound_key() {
            self.ports.remove(key, sock);
        }
        let Some(s) = self.socks.get(&sock) else {
            return;
        };
        let mut targets: Vec<InstId> = match s.listener.as_ref() {
            Some(li) => li.replicas.keys().copied().collect(),
            None => s.inst.into_iter().collect(),
        };
        targets.retain(|&i| self.live(i));
        let closing_key = s.listener.as_ref().and(s.bound_key());
        if let Some(li) = self.socks.get_mut(&sock).and_then(|s| s.listener.as_mut()) {
            li.replicas.clear();
        }
        if targets.is_empty() {
            self.forget(sock, out);
            return;
        }
        for &inst in &targets {
            self.request(inst, Pending::Internal { sock }, out, |req| MsgOf::Close {
                sock: wire,
                req,
            });
        }
        if let Some(key) = closing_key {
            self.closing_listeners.push((sock, key));
        }
        self.listeners.retain(|&l| l != sock);
        if let Some(s) = self.socks.get_mut(&sock) {
            s.close_waits = targets;
        }
    }

    /// `inst` released a socket the driver closed: forgotten once every
    /// instance that held it did.
    pub(crate) fn closed_on(&mut self, sock: Handle, inst: InstId, out: &mut Vec<Action>) {
        let Some(s) = self.socks.get_mut(&sock) else {
            return;
        };
        s.close_waits.retain(|&i| i != inst);
        if let Some(i) = self.instances.get_mut(&inst) {
            i.sockets = i.sockets.saturating_sub(1);
        }
        if s.close_waits.is_empty() {
            self.forget(sock, out);
        }
    }

    /// `Data`/`DataTo` from `inst` carrying `len` bytes: the socket that
    /// gets them (`None`: nobody reads them any more), after the ownership,
    /// kind and window checks.
    pub(crate) fn data_in(
        &mut self,
        inst: InstId,
        sock: u32,
        len: usize,
        is_to: bool,
    ) -> Result<Option<Handle>, Violation> {
        let window = self.cfg.window;
        let (h, s) = self.resolve_conn(inst, sock)?;
        if is_to != (s.ty == SockType::Dgram) {
            return Err(Violation::BadState(sock));
        }
        let n = u32::try_from(len).map_err(|_| Violation::BeyondWindow(sock))?;
        let inflight = s
            .recv_inflight
            .checked_add(n)
            .ok_or(Violation::BeyondWindow(sock))?;
        if inflight > window {
            return Err(Violation::BeyondWindow(sock));
        }
        s.recv_inflight = inflight;
        if matches!(s.state, SockState::Dead | SockState::Closing) {
            // Nobody reads it; the credit no longer matters.
            return Ok(None);
        }
        Ok(Some(h))
    }

    /// `Credit` from `inst`: the app may send more (never more than one
    /// window outstanding, whatever it says).
    pub(crate) fn credit_in(
        &mut self,
        inst: InstId,
        sock: u32,
        bytes: u32,
        out: &mut Vec<Action>,
    ) -> Result<(), Violation> {
        let window = self.instances.get(&inst).map_or(0, |i| i.window);
        let (h, s) = self.resolve_conn(inst, sock)?;
        s.send_credit = s
            .send_credit
            .saturating_add(bytes)
            .min(window.max(s.send_credit));
        out.push(Action::Resume { sock: h });
        Ok(())
    }
}
