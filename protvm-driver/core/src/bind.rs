//! `bind()`, and the shim's auto-bind of a datagram socket before its first
//! send.
//!
//! ```text
//!  shim Bind ─▶ checks (family, state, EADDRINUSE via ports) ─▶ place ─▶ Bind ─▶ instance
//!  Reply ok, port ≠ 0 ─▶ port table, answer the shim
//!  Reply ok, port 0   ─▶ GetSockName ─▶ Reply ─▶ port table, answer the shim
//! ```
//!
//! The socket is bound on its instance; the driver keeps the address so
//! that listeners can be replicated at the same address and other app
//! sockets get `EADDRINUSE` ([`ports`](crate::ports)).

use alloc::vec::Vec;
use core::net::SocketAddr;

use ins_protocol::control::Op;
use ins_protocol::msg::{Family, MsgOf, SockType};

use crate::pending::{Pending, reply_addr};
use crate::shim::Call;
use crate::socket::addr_fits;
use crate::{Action, ConnId, Driver, Handle, InstId, Note, ReplyFd, ShimReply, errno};

impl Driver {
    /// `bind()`; with `args[0] == 1` the shim's auto-bind of a datagram
    /// socket before its first send (Linux binds an unbound socket to an
    /// ephemeral port then, see `inet_send_prepare`): `addr` is the
    /// wildcard address with port 0, and an already bound socket is fine.
    pub(crate) fn op_bind(&mut self, c: Call<'_>, out: &mut Vec<Action>) {
        let Call { conn, req, h } = c;
        let s = &self.socks[&h];
        let Some(addr) = req.addr else {
            out.push(c.reply(errno::EINVAL));
            return;
        };
        let auto = req.args[0] == 1;
        if auto {
            if s.ty != SockType::Dgram || addr.port() != 0 || !addr.ip().is_unspecified() {
                out.push(c.reply(errno::EINVAL));
                return;
            }
            if s.bound.is_some() || s.bind_pending || s.dgram_connected {
                out.push(Action::Reply(self.bind_reply(conn, req.seq, h, 0)));
                return;
            }
        }
        if !addr_fits(s.family, &addr) {
            out.push(c.reply(if s.family == Family::Inet {
                errno::EAFNOSUPPORT
            } else {
                errno::EINVAL
            }));
            return;
        }
        if s.bound.is_some() || s.bind_pending || s.listener.is_some() {
            out.push(c.reply(errno::EINVAL));
            return;
        }
        if addr.port() != 0 && self.port_in_use(h, addr) {
            out.push(c.reply(errno::EADDRINUSE));
            return;
        }
        let Some(inst) = self.placed_or_answer(c, true, out) else {
            return;
        };
        self.socks.get_mut(&h).expect("present").bind_pending = true;
        self.request(
            inst,
            Pending::Bind {
                sock: h,
                conn,
                seq: req.seq,
                addr,
                auto,
            },
            out,
            |r| MsgOf::Bind {
                sock: h,
                req: r,
                addr,
            },
        );
    }

    /// The instance answered a shim's `Bind`: record the address (and its
    /// port, or learn the port the kernel chose first), answer the shim.
    pub(crate) fn bind_replied(
        &mut self,
        inst: InstId,
        (sock, conn, seq): (Handle, ConnId, u32),
        addr: SocketAddr,
        auto: bool,
        errno: i32,
        out: &mut Vec<Action>,
    ) {
        let mut status = errno;
        if auto && status == errno::EINVAL {
            // Already bound on the instance (a connect did it).
            if let Some(s) = self.socks.get_mut(&sock) {
                s.bind_pending = false;
            }
            out.push(Action::Reply(self.bind_reply(conn, seq, sock, 0)));
            return;
        }
        let mut learn_port = false;
        if let Some(s) = self.socks.get_mut(&sock) {
            s.bind_pending = false;
            if status != 0 && s.open_err != 0 {
                status = s.open_err;
            }
            if status == 0 {
                s.bound = Some(addr);
                if addr.port() != 0 {
                    let key = (s.ty as u16, addr.port());
                    self.ports.add(key, sock);
                } else {
                    learn_port = true;
                }
            }
        }
        if learn_port {
            // The reply waits for the port the kernel chose.
            self.request(inst, Pending::BindAddr { sock, conn, seq }, out, |req| {
                MsgOf::GetSockName { sock, req }
            });
            return;
        }
        out.push(Action::Reply(self.bind_reply(conn, seq, sock, status)));
    }

    /// The answer to a shim's `Bind` of `sock`: a successful bind of a
    /// datagram socket (explicit, or the shim's auto-bind before a first
    /// send) carries its keeper ([`ReplyFd::Keeper`]), so a bound datagram
    /// socket outlives the driver as a listener does (never readable,
    /// instead of reading empty datagrams for ever).
    fn bind_reply(&self, conn: ConnId, seq: u32, sock: Handle, status: i32) -> ShimReply {
        let mut r = ShimReply::new(conn, Op::Bind, seq, status);
        let dgram = self
            .socks
            .get(&sock)
            .is_some_and(|s| s.ty == SockType::Dgram);
        if status == 0 && dgram {
            r.fd = ReplyFd::Keeper(sock);
        }
        r
    }

    /// The port the kernel chose for a bind to port 0 is known (or its
    /// query failed): record it, answer the shim's `bind` (which
    /// succeeded either way).
    pub(crate) fn bind_port_known(
        &mut self,
        inst: InstId,
        (sock, conn, seq): (Handle, ConnId, u32),
        errno: i32,
        value: &[u8],
        out: &mut Vec<Action>,
    ) {
        // The bind itself succeeded; a failed query only loses the
        // driver's EADDRINUSE check for this port.
        match reply_addr(errno, value) {
            Some(addr) => self.learn_bound(sock, addr),
            None => self.notes.push(Note::InternalFailed {
                inst,
                sock,
                errno: if errno == 0 { errno::EPROTO } else { errno },
            }),
        }
        out.push(Action::Reply(self.bind_reply(conn, seq, sock, 0)));
    }

    /// `sock` is bound to `addr` as its instance reports it (port 0 or an
    /// autobind resolved): record it, and its port once known.
    pub(crate) fn learn_bound(&mut self, sock: Handle, addr: SocketAddr) {
        if let Some(s) = self.socks.get_mut(&sock) {
            let was = s.bound_key();
            s.bound = Some(addr);
            if was.is_none()
                && let Some(key) = s.bound_key()
            {
                self.ports.add(key, sock);
            }
        }
    }
}
