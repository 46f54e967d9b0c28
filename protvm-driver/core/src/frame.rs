//! Frames from an instance: what each kind may say, and what it means.
//!
//! Everything an instance sends is hostile until checked. A frame is
//! decoded (by the host, from its private copy) and then checked here
//! against the tables: the socket id must be one the instance holds
//! (`resolve`), the kind must fit the socket's state and type, data must
//! fit the window, announcements the credit. The first violation marks the
//! instance dead ([`Driver::instance_failed`]) — never a panic, never a
//! table grown beyond what the driver granted.
//!
//! | kind | handled by |
//! |---|---|
//! | `Heartbeat`, `Flow` | here (stats kept; flows are the host's) |
//! | `Reply` | [`pending`](crate::pending) |
//! | `Data`, `DataTo`, `Credit` | [`relay`](crate::relay) |
//! | `Eof`, `Reset`, `Closed` | here |
//! | `Connected` | [`connect`](crate::connect) |
//! | `Accepted` | [`accept`](crate::accept) |
//! | requests (`Open` … `Mitigate`) | a violation: only the driver sends them |

use alloc::vec::Vec;

use ins_protocol::msg::{INSTANCE_SOCK_BIT, Msg, SockType};

use crate::socket::Sock;
use crate::{Action, Driver, Handle, InstId, SockState, Violation};

impl Driver {
    /// One decoded frame from instance `inst`. For `Data`/`DataTo` returns
    /// the socket whose pair gets the payload (window already checked);
    /// the host then reports what it wrote with [`Driver::delivered`].
    /// A violation marks the instance dead (actions included) and is
    /// returned for the log.
    pub fn instance_frame(
        &mut self,
        inst: InstId,
        msg: &Msg<'_>,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<Option<Handle>, Violation> {
        if !self.live(inst) {
            return Ok(None);
        }
        if let Some(i) = self.instances.get_mut(&inst) {
            i.last_seen = now;
        }
        match self.dispatch(inst, msg, out) {
            Ok(r) => Ok(r),
            Err(v) => {
                self.instance_failed(inst, v, out);
                Err(v)
            }
        }
    }

    /// One frame, checked and handled by its kind.
    fn dispatch(
        &mut self,
        inst: InstId,
        msg: &Msg<'_>,
        out: &mut Vec<Action>,
    ) -> Result<Option<Handle>, Violation> {
        match *msg {
            Msg::Heartbeat(stats) => {
                if let Some(i) = self.instances.get_mut(&inst) {
                    i.stats = Some(stats);
                }
            }
            // Flow records and telemetry are for the daemon's monitor stream.
            Msg::Flow(_) | Msg::Telemetry(_) => {}
            Msg::Reply {
                sock,
                req,
                errno,
                value,
            } => self.replied(inst, sock, req, errno, value, out)?,
            Msg::Data { sock, bytes } => return self.data_in(inst, sock, bytes.len(), false),
            Msg::DataTo { sock, bytes, .. } => return self.data_in(inst, sock, bytes.len(), true),
            Msg::Credit { sock, bytes } => self.credit_in(inst, sock, bytes, out)?,
            Msg::Eof { sock } => self.eof_in(inst, sock, out)?,
            Msg::Reset { sock, errno } => self.reset_in(inst, sock, errno, out)?,
            Msg::Connected {
                sock,
                errno,
                local,
                peer,
            } => self.connected(inst, sock, errno, local, peer, out)?,
            Msg::Accepted {
                listener,
                sock,
                peer,
                local,
            } => self.accepted(inst, listener, sock, peer, local, out)?,
            Msg::Closed { sock } => self.closed_in(inst, sock, out)?,
            _ => return Err(Violation::WrongDirection),
        }
        Ok(None)
    }

    /// Resolves a socket id an instance used: its accepted connections by
    /// `(inst, id)`, driver ids only if placed (or replicated) there.
    pub(crate) fn resolve(&self, inst: InstId, wire: u32) -> Result<Handle, Violation> {
        if wire & INSTANCE_SOCK_BIT != 0 {
            return self
                .by_wire
                .get(&(inst, wire))
                .copied()
                .ok_or(Violation::UnknownSocket(wire));
        }
        let s = self
            .socks
            .get(&wire)
            .ok_or(Violation::UnknownSocket(wire))?;
        let here = s.inst == Some(inst)
            || s.close_waits.contains(&inst)
            || s.retiring_replicas.iter().any(|&(i, _)| i == inst)
            || s.listener
                .as_ref()
                .is_some_and(|li| li.replicas.contains_key(&inst));
        if here && s.wire == wire {
            Ok(wire)
        } else {
            Err(Violation::UnknownSocket(wire))
        }
    }

    /// [`resolve`](Self::resolve) for the kinds about a connection's data
    /// or life (`Data`, `Credit`, `Eof`, `Reset`), which no listener takes.
    pub(crate) fn resolve_conn(
        &mut self,
        inst: InstId,
        sock: u32,
    ) -> Result<(Handle, &mut Sock), Violation> {
        let h = self.resolve(inst, sock)?;
        let s = self.socks.get_mut(&h).expect("resolved");
        if s.listener.is_some() {
            return Err(Violation::BadState(sock));
        }
        Ok((h, s))
    }

    /// `Eof`: the peer will send no more; the host shuts the app side's
    /// read direction once the bytes before it are delivered.
    fn eof_in(&mut self, inst: InstId, sock: u32, out: &mut Vec<Action>) -> Result<(), Violation> {
        let (h, s) = self.resolve_conn(inst, sock)?;
        if s.ty != SockType::Stream {
            return Err(Violation::BadState(sock));
        }
        if !s.peer_eof && s.state != SockState::Closing {
            s.peer_eof = true;
            out.push(Action::PeerEof { sock: h });
        }
        Ok(())
    }

    /// `Reset`: the connection is gone; the error is kept for the app.
    fn reset_in(
        &mut self,
        inst: InstId,
        sock: u32,
        errno: i32,
        out: &mut Vec<Action>,
    ) -> Result<(), Violation> {
        let (h, s) = self.resolve_conn(inst, sock)?;
        if matches!(s.state, SockState::Closing | SockState::Dead) {
            return Ok(());
        }
        s.err = errno;
        s.state = SockState::Dead;
        s.send_credit = 0;
        out.push(Action::PeerReset { sock: h, errno });
        Ok(())
    }

    /// `Closed`: the instance released a socket the driver closed (or a
    /// retiring listener replica).
    fn closed_in(
        &mut self,
        inst: InstId,
        sock: u32,
        out: &mut Vec<Action>,
    ) -> Result<(), Violation> {
        let h = self.resolve(inst, sock)?;
        let s = self.socks.get_mut(&h).expect("resolved");
        if let Some(pos) = s.retiring_replicas.iter().position(|&(i, _)| i == inst) {
            s.retiring_replicas.swap_remove(pos);
            if let Some(i) = self.instances.get_mut(&inst) {
                i.sockets = i.sockets.saturating_sub(1);
            }
            return Ok(());
        }
        if s.state != SockState::Closing || !s.close_waits.contains(&inst) {
            return Err(Violation::BadState(sock));
        }
        self.closed_on(h, inst, out);
        Ok(())
    }
}
