//! Accept queues: one per listener, fed by every instance holding one of
//! its replicas, drained by the app's `accept()` calls.
//!
//! ```text
//!  instance: Accepted{listener, id} ─▶ credit check ─▶ new socket (Connected)
//!        ─▶ queue.push_back ─▶ NewConnection (host makes the app side now:
//!           data may come before accept) ─▶ Token (one byte: the listener
//!           becomes readable, so poll/epoll/blocking accept work unchanged)
//!  shim: Accept (after reading one token) ─▶ queue.pop_front ─▶ reply with
//!        the connection's app side ─▶ Credit{listener, 1} to the instance
//!        that announced it
//! ```
//!
//! Invariants: a queued connection's `accepted_on` names its listener; an
//! instance never has more connections announced and not yet accepted
//! than its replica's credit (initially the backlog), so an instance cannot
//! grow a queue beyond what the driver granted.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::SocketAddr;

use ins_protocol::msg::MsgOf;

use crate::pending::Pending;
use crate::shim::Call;
use crate::socket::Sock;
use crate::{Action, Driver, Handle, InstId, ReplyFd, SockState, Violation, errno};

impl Driver {
    /// `Accepted` from `inst`: a connection on one of its listener replicas.
    pub(crate) fn accepted(
        &mut self,
        inst: InstId,
        listener: u32,
        sock: u32,
        peer: SocketAddr,
        local: SocketAddr,
        out: &mut Vec<Action>,
    ) -> Result<(), Violation> {
        let l = self
            .resolve(inst, listener)
            .map_err(|_| Violation::NotAListener(listener))?;
        let ls = self.socks.get(&l).expect("resolved");
        let Some(li) = ls.listener.as_ref() else {
            return Err(Violation::NotAListener(listener));
        };
        if ls.state == SockState::Closing {
            // The app closed the listener while the instance accepted
            // this connection (on Linux the client would have been
            // refused): the driver closes it, and tolerates the frames
            // the instance sends for it until it is released. Ignoring it
            // left the instance sending for a socket the driver did not
            // know — a protocol violation that cost the instance.
            let (family, ty, proto) = (ls.family, ls.ty, ls.proto);
            let h = self.alloc_handle().map_err(|_| Violation::TableFull)?;
            let mut c = Sock::new(0, family, ty, proto, sock);
            c.inst = Some(inst);
            c.state = SockState::Closing;
            c.local = Some(local);
            c.peer = Some(peer);
            c.close_waits = alloc::vec![inst];
            self.socks.insert(h, c);
            self.by_wire.insert((inst, sock), h);
            if let Some(i) = self.instances.get_mut(&inst) {
                i.sockets = i.sockets.saturating_add(1);
            }
            self.request(inst, Pending::Internal { sock: h }, out, |req| {
                MsgOf::Close { sock, req }
            });
            return Ok(());
        }
        let retiring = !li.replicas.contains_key(&inst);
        let credit = match li.replicas.get(&inst) {
            Some(&c) => c,
            // A replica being closed: what it accepted before the
            // close is still a client's connection.
            None => ls
                .retiring_replicas
                .iter()
                .find(|&&(i, _)| i == inst)
                .map(|&(_, c)| c)
                .ok_or(Violation::NotAListener(listener))?,
        };
        if credit == 0 || self.by_wire.contains_key(&(inst, sock)) {
            return Err(Violation::AcceptBeyondCredit(listener));
        }
        let (family, ty, proto) = (ls.family, ls.ty, ls.proto);
        let h = self.alloc_handle().map_err(|_| Violation::TableFull)?;
        let window = self.instances.get(&inst).map_or(0, |i| i.window);
        let mut c = Sock::new(0, family, ty, proto, sock);
        c.inst = Some(inst);
        c.state = SockState::Connected;
        c.accepted_on = Some(l);
        c.local = Some(local);
        c.peer = Some(peer);
        c.send_credit = window;
        self.socks.insert(h, c);
        self.by_wire.insert((inst, sock), h);
        if let Some(i) = self.instances.get_mut(&inst) {
            i.sockets = i.sockets.saturating_add(1);
            i.accepted += 1;
        }
        if retiring {
            if let Some(r) = ls_retiring(&mut self.socks, l, inst) {
                r.1 = credit - 1;
            }
        } else if let Some(li) = self.socks.get_mut(&l).and_then(|s| s.listener.as_mut()) {
            li.replicas.insert(inst, credit - 1);
        }
        let li = self
            .socks
            .get_mut(&l)
            .and_then(|s| s.listener.as_mut())
            .expect("listener");
        li.queue.push_back(h);
        out.push(Action::NewConnection {
            sock: h,
            listener: l,
            inst,
        });
        out.push(Action::Token { listener: l });
        Ok(())
    }

    /// `accept()` after the shim consumed one token: the oldest queued
    /// connection, and its announcement credit back to its instance.
    pub(crate) fn op_accept(&mut self, c: Call<'_>, out: &mut Vec<Action>) {
        let Call { h, .. } = c;
        let s = self.socks.get_mut(&h).expect("checked");
        let Some(li) = s.listener.as_mut() else {
            out.push(c.reply(errno::EINVAL));
            return;
        };
        let Some(next) = li.queue.pop_front() else {
            // A token was read but nothing is queued (a connection of a
            // dead instance was dropped): the shim retries like EAGAIN.
            out.push(c.reply(errno::EAGAIN));
            return;
        };
        let Some(cs) = self.socks.get_mut(&next) else {
            out.push(c.reply(errno::EAGAIN));
            return;
        };
        cs.accepted_on = None;
        let from = cs.inst;
        let mut r = c.answer(0);
        r.ctl.addr = cs.peer;
        r.ctl.addr2 = cs.local;
        r.fd = ReplyFd::AppEnd(next);
        out.push(Action::Reply(r));
        // Give the producing instance its announcement back.
        if let Some(inst) = from
            && self.live(inst)
            && let Some(li) = self.socks.get_mut(&h).and_then(|s| s.listener.as_mut())
            && let Some(credit) = li.replicas.get_mut(&inst)
        {
            *credit = credit.saturating_add(1);
            out.push(Action::Send {
                inst,
                frame: MsgOf::Credit { sock: h, bytes: 1 },
            });
        }
    }

    /// Takes a connection out of its listener's queue (its app side could
    /// not be made).
    pub(crate) fn remove_from_queues(&mut self, sock: Handle) {
        let Some(l) = self.socks.get(&sock).and_then(|s| s.accepted_on) else {
            return;
        };
        if let Some(li) = self.socks.get_mut(&l).and_then(|s| s.listener.as_mut()) {
            li.queue.retain(|&c| c != sock);
        }
    }
}

/// The retiring replica of listener `l` on `inst`, with its credit.
fn ls_retiring(
    socks: &mut BTreeMap<Handle, Sock>,
    l: Handle,
    inst: InstId,
) -> Option<&mut (InstId, u32)> {
    socks
        .get_mut(&l)?
        .retiring_replicas
        .iter_mut()
        .find(|r| r.0 == inst)
}
