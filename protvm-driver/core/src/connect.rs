//! `connect()`: datagram sockets are associated on their instance at
//! once; stream connects run asynchronously.
//!
//! ```text
//!  shim Connect ─▶ place ─▶ Connect ─▶ instance ─▶ Reply (EINPROGRESS or error)
//!                                               ─▶ Connected{errno, local, peer}
//!  blocking:      the shim's answer waits for Connected (or the error Reply)
//!  non-blocking:  EINPROGRESS at once; Connected → ConnectDone (the app side
//!                 becomes writable, SO_ERROR tells the result)
//! ```
//!
//! `Connected` before the connect's `Reply` is out of order (a violation).

use alloc::vec::Vec;
use core::net::SocketAddr;

use ins_protocol::control::Op;
use ins_protocol::msg::{MsgOf, SockType};

use crate::pending::Pending;
use crate::shim::Call;
use crate::socket::addr_fits;
use crate::{Action, ConnId, Driver, Handle, InstId, ShimReply, SockState, Violation, errno};

impl Driver {
    /// `connect()`, stream or datagram.
    pub(crate) fn op_connect(&mut self, c: Call<'_>, out: &mut Vec<Action>) {
        if !self.carried_opts(c, out) {
            return;
        }
        let Call { conn, req, h } = c;
        let s = &self.socks[&h];
        let Some(addr) = req.addr else {
            // connect(AF_UNSPEC) dissolves a UDP association: nothing to do
            // on an unconnected socket. A connected one would need the
            // instance to disconnect its socket, which the ring protocol
            // cannot say yet (`Connect` carries an address): EOPNOTSUPP.
            out.push(c.reply(match s.ty {
                SockType::Dgram if !s.dgram_connected => 0,
                SockType::Dgram => errno::EOPNOTSUPP,
                SockType::Stream => errno::EAFNOSUPPORT,
            }));
            return;
        };
        if !addr_fits(s.family, &addr) {
            out.push(c.reply(errno::EAFNOSUPPORT));
            return;
        }
        let nonblocking = req.args[0] != 0;
        if s.ty == SockType::Dgram {
            let Some(inst) = self.placed_or_answer(c, false, out) else {
                return;
            };
            self.forward(inst, c, out, |r| MsgOf::Connect {
                sock: h,
                req: r,
                addr,
            });
            return;
        }
        match s.state {
            SockState::Connecting => {
                out.push(c.reply(errno::EALREADY));
                return;
            }
            SockState::Connected => {
                out.push(c.reply(errno::EISCONN));
                return;
            }
            SockState::Dead => {
                // Linux: a pending error is reported (and cleared) first;
                // after a failed connect the socket is still SS_CONNECTING
                // and the next connect() says ECONNABORTED; a connection
                // reset after it was established is still SS_CONNECTED.
                let e = if s.err != 0 {
                    s.err
                } else if s.peer.is_none() {
                    errno::ECONNABORTED
                } else {
                    errno::EISCONN
                };
                if let Some(s) = self.socks.get_mut(&h) {
                    s.err = 0;
                }
                out.push(c.reply(e));
                return;
            }
            _ if s.listener.is_some() => {
                out.push(c.reply(errno::EISCONN));
                return;
            }
            _ => {}
        }
        let Some(inst) = self.placed_or_answer(c, false, out) else {
            return;
        };
        let s = self.socks.get_mut(&h).expect("present");
        s.state = SockState::Connecting;
        s.nonblocking_connect = nonblocking;
        s.peer = Some(addr);
        s.connect_reply_pending = true;
        let shim = if nonblocking {
            None
        } else {
            Some((conn, req.seq))
        };
        self.request(inst, Pending::Connect { sock: h, shim }, out, |r| {
            MsgOf::Connect {
                sock: h,
                req: r,
                addr,
            }
        });
        if nonblocking {
            out.push(c.reply(errno::EINPROGRESS));
        }
    }

    /// `Connected` from `inst`: a stream connect finished.
    pub(crate) fn connected(
        &mut self,
        inst: InstId,
        sock: u32,
        errno: i32,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
        out: &mut Vec<Action>,
    ) -> Result<(), Violation> {
        let h = self.resolve(inst, sock)?;
        let window = self.instances.get(&inst).map_or(0, |i| i.window);
        let s = self.socks.get_mut(&h).expect("resolved");
        if s.state != SockState::Connecting || s.ty != SockType::Stream {
            // Closing sockets may still see their connect finish.
            return if s.state == SockState::Closing {
                Ok(())
            } else {
                Err(Violation::BadState(sock))
            };
        }
        if s.connect_reply_pending {
            // Connected before the connect's Reply: out of order.
            return Err(Violation::BadState(sock));
        }
        self.finish_connect(h, errno, local, peer, window, out);
        Ok(())
    }

    /// The instance answered a stream `Connect`: in progress (`Connected`
    /// follows) or failed at once.
    pub(crate) fn connect_replied(
        &mut self,
        inst: InstId,
        sock: Handle,
        shim: Option<(ConnId, u32)>,
        errno: i32,
        out: &mut Vec<Action>,
    ) {
        let window = self.instances.get(&inst).map_or(0, |i| i.window);
        let Some(s) = self.socks.get_mut(&sock) else {
            return;
        };
        s.connect_reply_pending = false;
        if s.state != SockState::Connecting {
            return;
        }
        if errno == 0 || errno == errno::EINPROGRESS {
            // `Connected` follows.
            s.connect_shim = shim;
            return;
        }
        let e = if s.open_err != 0 { s.open_err } else { errno };
        s.connect_shim = shim;
        self.finish_connect(sock, e, None, None, window, out);
    }

    /// A stream connect ended (`errno` 0: connected): the socket's state,
    /// the blocked shim's answer, and what the host must do.
    fn finish_connect(
        &mut self,
        h: Handle,
        errno: i32,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
        window: u32,
        out: &mut Vec<Action>,
    ) {
        let s = self.socks.get_mut(&h).expect("present");
        let shim = s.connect_shim.take();
        let nb = core::mem::take(&mut s.nonblocking_connect);
        if errno == 0 {
            s.state = SockState::Connected;
            s.local = local;
            if peer.is_some() {
                s.peer = peer;
            }
            s.send_credit = window;
        } else {
            s.state = SockState::Dead;
            s.peer = None;
            if nb {
                s.err = errno;
            }
        }
        if let Some((conn, seq)) = shim {
            out.push(Action::Reply(ShimReply::new(conn, Op::Connect, seq, errno)));
        }
        if errno != 0 {
            // The app must read EOF (then the error) as soon as it can
            // see the failure: shut the driver end before `ConnectDone`
            // makes the app end writable.
            out.push(Action::PeerReset { sock: h, errno });
        }
        if nb || errno != 0 {
            out.push(Action::ConnectDone { sock: h, errno });
        }
        if errno == 0 {
            out.push(Action::Resume { sock: h });
        }
    }
}
