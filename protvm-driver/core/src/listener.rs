//! Listeners and their replicas: one app listener is a listening socket on
//! *every* live instance, all bound to the same address with
//! `SO_REUSEPORT`, all feeding one accept queue ([`accept`](crate::accept)).
//!
//! ```text
//!  shim Listen ─▶ Listen on the socket's instance ─▶ Reply ok ─▶ Listener{replicas: {i1}}
//!                 ─▶ GetSockName (learn the address: port 0, autobind)
//!                 ─▶ Reply ─▶ replicate on every other live instance:
//!                             Open, options, SO_REUSEPORT=1, Bind, Listen
//!  instance joins ─▶ every listener replicated on it
//!  instance drains ─▶ its replicas closed (`retiring_replicas` until Closed)
//!  instance dies  ─▶ its replicas forgotten; the listener lives on elsewhere
//!  app closes     ─▶ Close to every replica; a new listener on the same
//!                    port gets its listen() answer only once every
//!                    instance released the old one (no client is handed
//!                    to a listener the app already closed)
//! ```
//!
//! Each replica holds accept *credit*: how many connections that instance
//! may still announce (the backlog, returned one by one as the app accepts).
//! An announcement beyond it is a violation.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use ins_protocol::control::Op;
use ins_protocol::msg::{MsgOf, SockType};

use crate::pending::{Pending, reply_addr};
use crate::shim::Call;
use crate::{
    Action, ConnId, Driver, Handle, InstId, InstState, Note, ReplyFd, ShimReply, SockState, errno,
};

/// The answer to `listen()` on `sock`: a success carries the keeper
/// ([`ReplyFd::Keeper`]).
fn listen_reply(conn: ConnId, seq: u32, sock: Handle, status: i32) -> ShimReply {
    let mut r = ShimReply::new(conn, Op::Listen, seq, status);
    if status == 0 {
        r.fd = ReplyFd::Keeper(sock);
    }
    r
}

/// The listener part of a socket.
#[derive(Debug, Clone)]
pub(crate) struct Listener {
    /// Backlog given to every replica (its initial accept credit).
    pub(crate) backlog: u32,
    /// Instance → connection announcements it may still make.
    pub(crate) replicas: BTreeMap<InstId, u32>,
    /// Announced connections waiting for `accept`, oldest first.
    pub(crate) queue: VecDeque<Handle>,
}

impl Driver {
    /// `listen()`: on the socket's instance first; the replicas follow
    /// once its address is known.
    pub(crate) fn op_listen(&mut self, c: Call<'_>, out: &mut Vec<Action>) {
        if !self.carried_opts(c, out) {
            return;
        }
        let Call { conn, req, h } = c;
        let s = &self.socks[&h];
        if s.ty != SockType::Stream {
            out.push(c.reply(errno::EOPNOTSUPP));
            return;
        }
        let backlog = u32::try_from(req.args[0].clamp(1, 4096)).unwrap_or(128);
        if s.listener.is_some() {
            // Linux lets listen() change the backlog; the replicas keep theirs.
            let mut r = c.answer(0);
            r.fd = ReplyFd::Keeper(h);
            out.push(Action::Reply(r));
            return;
        }
        if matches!(
            s.state,
            SockState::Connecting | SockState::Connected | SockState::Dead
        ) {
            out.push(c.reply(errno::EINVAL));
            return;
        }
        // Linux checks the port again at listen(): two SO_REUSEADDR
        // sockets may share a port until one of them listens.
        if let Some(addr) = s.bound.filter(|a| a.port() != 0)
            && self.port_in_use(h, addr)
        {
            out.push(c.reply(errno::EADDRINUSE));
            return;
        }
        let Some(inst) = self.placed_or_answer(c, true, out) else {
            return;
        };
        self.request(
            inst,
            Pending::Listen {
                sock: h,
                conn,
                seq: req.seq,
                backlog,
            },
            out,
            |r| MsgOf::Listen {
                sock: h,
                req: r,
                backlog,
            },
        );
    }

    /// The first instance answered `Listen`: the socket becomes a listener
    /// with one replica, and its address is asked for (to replicate it).
    pub(crate) fn listen_replied(
        &mut self,
        inst: InstId,
        (sock, conn, seq): (Handle, ConnId, u32),
        backlog: u32,
        errno: i32,
        out: &mut Vec<Action>,
    ) {
        let mut status = errno;
        if let Some(s) = self.socks.get_mut(&sock) {
            if status != 0 && s.open_err != 0 {
                status = s.open_err;
            }
            if status == 0 && s.state != SockState::Closing {
                let mut li = Listener {
                    backlog,
                    replicas: BTreeMap::new(),
                    queue: VecDeque::new(),
                };
                li.replicas.insert(inst, backlog);
                s.listener = Some(li);
                s.state = SockState::Listening;
                let key = s.bound_key();
                self.listeners.push(sock);
                // Learn the address (autobind, port 0) to replicate.
                self.request(inst, Pending::ListenAddr { sock }, out, |req| {
                    MsgOf::GetSockName { sock, req }
                });
                if key.is_some_and(|k| self.closing_listeners.iter().any(|&(_, c)| c == k)) {
                    // An earlier listener on this port still has replicas
                    // on some instance: a client that connects once
                    // listen() returned could land in one of them and be
                    // refused. On Linux a closed listener takes no more
                    // connections, so the answer waits until they are gone.
                    self.held_listens.push((sock, conn, seq));
                    return;
                }
            }
        }
        out.push(Action::Reply(listen_reply(conn, seq, sock, status)));
    }

    /// `sock` is forgotten: if it was a closing listener, the `listen()`
    /// answers it held back are given once no other closing listener
    /// shares their port; if it was itself waiting, its answer goes now
    /// (the app's call must return; the socket is gone after it).
    pub(crate) fn listener_gone(&mut self, sock: Handle, out: &mut Vec<Action>) {
        self.closing_listeners.retain(|&(l, _)| l != sock);
        if self.held_listens.is_empty() {
            return;
        }
        let held = core::mem::take(&mut self.held_listens);
        for (h, conn, seq) in held {
            let key = self.socks.get(&h).and_then(|s| s.bound_key());
            let blocked = h != sock
                && key.is_some_and(|k| self.closing_listeners.iter().any(|&(_, c)| c == k));
            if blocked {
                self.held_listens.push((h, conn, seq));
            } else {
                out.push(Action::Reply(listen_reply(conn, seq, h, 0)));
            }
        }
    }

    /// The listener's address is known: record it and replicate the
    /// listener on every other live instance.
    pub(crate) fn listen_addr_known(
        &mut self,
        inst: InstId,
        sock: Handle,
        errno: i32,
        value: &[u8],
        out: &mut Vec<Action>,
    ) {
        let Some(addr) = reply_addr(errno, value) else {
            self.notes.push(Note::InternalFailed {
                inst,
                sock,
                errno: if errno == 0 { errno::EPROTO } else { errno },
            });
            return;
        };
        // Port 0 or autobind: the port is known only now.
        self.learn_bound(sock, addr);
        if let Some(s) = self.socks.get_mut(&sock) {
            s.local = Some(addr);
            if s.state != SockState::Listening {
                return;
            }
        }
        let others: Vec<InstId> = self
            .instances
            .iter()
            .filter(|(id, i)| **id != inst && i.state == InstState::Live)
            .map(|(id, _)| *id)
            .collect();
        for o in others {
            self.replicate(sock, o, out);
        }
    }

    /// Replays a listener onto an instance: `Open`, options,
    /// `SO_REUSEPORT`, `Bind`, `Listen`.
    pub(crate) fn replicate(&mut self, l: Handle, inst: InstId, out: &mut Vec<Action>) {
        let Some(s) = self.socks.get(&l) else { return };
        let Some(li) = s.listener.as_ref() else {
            return;
        };
        if li.replicas.contains_key(&inst) || !self.live(inst) {
            return;
        }
        let Some(addr) = s.bound else { return };
        let backlog = li.backlog;
        self.open_on(inst, l, Pending::Internal { sock: l }, true, out);
        self.reuseport_on(inst, l, out);
        self.request(inst, Pending::Internal { sock: l }, out, |req| {
            MsgOf::Bind { sock: l, req, addr }
        });
        self.request(inst, Pending::Internal { sock: l }, out, |req| {
            MsgOf::Listen {
                sock: l,
                req,
                backlog,
            }
        });
        if let Some(li) = self.socks.get_mut(&l).and_then(|s| s.listener.as_mut()) {
            li.replicas.insert(inst, backlog);
        }
        if let Some(i) = self.instances.get_mut(&inst) {
            i.sockets = i.sockets.saturating_add(1);
        }
        self.notes.push(Note::Replicated { inst, sock: l });
    }

    /// Closes the listener replicas on `inst` (draining it): the
    /// instance stops listening while its connections go on; the other
    /// replicas keep every listener. A listener whose only replica is on
    /// `inst` is left alone. Returns how many replicas were closed.
    pub fn drop_replicas(&mut self, inst: InstId, out: &mut Vec<Action>) -> usize {
        let mut n = 0;
        for l in self.listeners.clone() {
            let Some(s) = self.socks.get_mut(&l) else {
                continue;
            };
            if s.state != SockState::Listening {
                continue;
            }
            let wire = s.wire;
            let Some(li) = s.listener.as_mut() else {
                continue;
            };
            if li.replicas.len() < 2 {
                continue;
            }
            let Some(credit) = li.replicas.remove(&inst) else {
                continue;
            };
            if s.inst == Some(inst) {
                s.inst = li.replicas.keys().next().copied();
            }
            s.retiring_replicas.push((inst, credit));
            self.request(inst, Pending::Internal { sock: l }, out, |req| {
                MsgOf::Close { sock: wire, req }
            });
            n += 1;
        }
        n
    }

    /// A dead instance's replicas: forgotten; each listener lives on on
    /// its other replicas.
    pub(crate) fn forget_replicas_on(&mut self, inst: InstId) {
        for &l in &self.listeners {
            if let Some(s) = self.socks.get_mut(&l)
                && let Some(li) = s.listener.as_mut()
            {
                li.replicas.remove(&inst);
                if s.inst == Some(inst) {
                    s.inst = li.replicas.keys().next().copied();
                }
            }
            if let Some(s) = self.socks.get_mut(&l) {
                s.retiring_replicas.retain(|&(i, _)| i != inst);
            }
        }
    }
}
