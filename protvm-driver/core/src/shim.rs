//! Shim requests: one function per [`Op`], and the placement of a socket
//! on its instance at its first use.
//!
//! | op | function | where |
//! |---|---|---|
//! | `Socket` | answered by the host after [`Driver::new_socket`] | [`socket`](crate::socket) |
//! | `Identify` | `op_identify` | here |
//! | `TakeError` | `op_take_error` | here |
//! | `Close` | `op_close` (an ack: the last reference is the host's hang-up) | here |
//! | `Bind` | `op_bind` | [`bind`](crate::bind) |
//! | `Listen` | `op_listen` | [`listener`](crate::listener) |
//! | `Connect` | `op_connect` | [`connect`](crate::connect) |
//! | `Accept` | `op_accept` | [`accept`](crate::accept) |
//! | `Shutdown` | `op_shutdown` | here |
//! | `GetOpt`, `SetOpt` | `op_getopt`, `op_setopt` | [`options`](crate::options) |
//! | `GetSockName`, `GetPeerName` | `op_name` | here |
//!
//! A shim names its socket by the fd it sends with the request; the host
//! resolves it ([`Driver::lookup_inode`]) and a request about no socket of
//! ours gets `ENOTSOCK`. Every request gets exactly one
//! [`Action::Reply`], now or when the instance answers; `SockOpt` is a
//! record, not a request, and gets none ([`inband`](crate::inband)).

use alloc::vec::Vec;

use ins_protocol::control::{Control, Op};
use ins_protocol::msg::{MsgOf, OwnedMsg, Shutdown, SockType};

use crate::pending::Pending;
use crate::socket::unspecified;
use crate::{Action, ConnId, Driver, Handle, InstId, ReplyFd, ShimReply, SockState, errno};

/// A shim request being handled: who asked (`conn`), what (`req`), about
/// which socket (`h`, checked to exist).
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) conn: ConnId,
    pub(crate) req: &'a Control<'a>,
    pub(crate) h: Handle,
}

impl Call<'_> {
    /// The answer to this request with `status` (0 or an errno).
    pub(crate) fn answer(&self, status: i32) -> ShimReply {
        ShimReply::new(self.conn, self.req.op, self.req.seq, status)
    }

    /// The same, as an action.
    pub(crate) fn reply(&self, status: i32) -> Action {
        Action::Reply(self.answer(status))
    }
}

impl Driver {
    /// A shim request about an existing socket (every op but `Socket`,
    /// which the host answers after [`Driver::new_socket`]). `sock` is the
    /// socket the received fd names, `None` if it names none of ours.
    pub fn shim_request(
        &mut self,
        conn: ConnId,
        req: &Control<'_>,
        sock: Option<Handle>,
        out: &mut Vec<Action>,
    ) {
        let Some(h) = sock.filter(|h| self.socks.contains_key(h)) else {
            out.push(Action::Reply(ShimReply::new(
                conn,
                req.op,
                req.seq,
                errno::ENOTSOCK,
            )));
            return;
        };
        let c = Call { conn, req, h };
        match req.op {
            // Records are not requests: the host hands them to
            // `inband_record`; one sent here gets no answer either.
            Op::SockOpt => {}
            Op::Socket => out.push(c.reply(errno::EINVAL)),
            Op::Identify => self.op_identify(c, out),
            Op::TakeError => self.op_take_error(c, out),
            Op::Close => op_close(c, out),
            Op::Bind => self.op_bind(c, out),
            Op::Listen => self.op_listen(c, out),
            Op::Connect => self.op_connect(c, out),
            Op::Accept => self.op_accept(c, out),
            Op::Shutdown => self.op_shutdown(c, out),
            Op::GetOpt => self.op_getopt(c, out),
            Op::SetOpt => self.op_setopt(c, out),
            Op::GetSockName | Op::GetPeerName => self.op_name(c, out),
        }
    }

    /// Is this fd an INS socket (asked after `exec`)? Its family, type
    /// and whether it listens.
    fn op_identify(&mut self, c: Call<'_>, out: &mut Vec<Action>) {
        let s = &self.socks[&c.h];
        let mut r = c.answer(0);
        r.ctl.args = [
            s.family as i32,
            s.ty as i32,
            i32::from(s.listener.is_some()),
            0,
        ];
        if s.listener.is_some()
            || (s.ty == SockType::Dgram && (s.bound.is_some() || s.dgram_connected))
        {
            // A listener or bound or connected datagram socket inherited
            // across exec: its new image keeps a keeper too.
            r.fd = ReplyFd::Keeper(c.h);
        }
        out.push(Action::Reply(r));
    }

    /// The pending error (`SO_ERROR`), cleared by reading.
    fn op_take_error(&mut self, c: Call<'_>, out: &mut Vec<Action>) {
        let s = self.socks.get_mut(&c.h).expect("checked");
        let mut r = c.answer(0);
        r.ctl.args[0] = core::mem::take(&mut s.err);
        out.push(Action::Reply(r));
    }

    /// [`Driver::ensure_placed`], or the error answered to the shim.
    pub(crate) fn placed_or_answer(
        &mut self,
        c: Call<'_>,
        reuseport: bool,
        out: &mut Vec<Action>,
    ) -> Option<InstId> {
        match self.ensure_placed(c.h, reuseport, out) {
            Ok(i) => Some(i),
            Err(e) => {
                out.push(c.reply(e));
                None
            }
        }
    }

    /// Sends the request `f(req id)` to `inst`; the instance's answer goes
    /// to the shim as it is (`Pending::Shim`).
    pub(crate) fn forward(
        &mut self,
        inst: InstId,
        c: Call<'_>,
        out: &mut Vec<Action>,
        f: impl Fn(u32) -> OwnedMsg,
    ) {
        let p = Pending::Shim {
            sock: c.h,
            conn: c.conn,
            op: c.req.op,
            seq: c.req.seq,
        };
        self.request(inst, p, out, f);
    }

    /// Places the socket on an instance if it is not yet, sending `Open`
    /// and the remembered options (and, with `reuseport`, `SO_REUSEPORT`
    /// for a stream socket that may become a listener). Returns the
    /// instance.
    pub(crate) fn ensure_placed(
        &mut self,
        h: Handle,
        reuseport: bool,
        out: &mut Vec<Action>,
    ) -> Result<InstId, i32> {
        let s = self.socks.get(&h).ok_or(errno::EBADF)?;
        if s.state == SockState::Dead {
            return Err(if s.err != 0 { s.err } else { errno::ECONNRESET });
        }
        let inst = match s.inst {
            Some(i) => i,
            None => {
                let inst = self.pick().ok_or(errno::ENETDOWN)?;
                self.open_on(inst, h, Pending::Open { sock: h }, false, out);
                if let Some(i) = self.instances.get_mut(&inst) {
                    i.sockets = i.sockets.saturating_add(1);
                }
                let window = self.instances.get(&inst).map_or(0, |i| i.window);
                let s = self.socks.get_mut(&h).expect("present");
                s.inst = Some(inst);
                s.state = SockState::Placed;
                if s.ty == SockType::Dgram {
                    // Datagram sockets may send from the start.
                    s.send_credit = window;
                }
                inst
            }
        };
        let s = self.socks.get_mut(&h).expect("present");
        if reuseport && s.ty == SockType::Stream && !s.reuseport_sent {
            s.reuseport_sent = true;
            self.reuseport_on(inst, h, out);
        }
        Ok(inst)
    }

    /// Opens socket `h` on `inst` (`Open` answered to `first`) and replays
    /// its remembered options (without the app's `SO_REUSEPORT` when
    /// `skip_reuseport`: replicas get it on by the driver).
    pub(crate) fn open_on(
        &mut self,
        inst: InstId,
        h: Handle,
        first: Pending,
        skip_reuseport: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self.socks.get(&h) else { return };
        let (family, ty, proto) = (s.family, s.ty, s.proto);
        let opts = s.opts.clone();
        self.request(inst, first, out, |req| MsgOf::Open {
            sock: h,
            req,
            family,
            ty,
            proto,
        });
        for o in opts {
            if skip_reuseport && o.0 == crate::opt::SOL_SOCKET && o.1 == crate::opt::SO_REUSEPORT {
                continue;
            }
            self.send_opt(inst, h, Pending::Internal { sock: h }, o, out);
        }
    }

    /// `shutdown()`: the write side is the app side's own (the host shuts
    /// it, the relay then sends `Eof` in order); the read side is the
    /// instance's.
    fn op_shutdown(&mut self, c: Call<'_>, out: &mut Vec<Action>) {
        let Call { conn, req, h } = c;
        let how = match req.args[0] {
            0 => Shutdown::Read,
            1 => Shutdown::Write,
            2 => Shutdown::Both,
            _ => {
                out.push(c.reply(errno::EINVAL));
                return;
            }
        };
        let s = &self.socks[&h];
        let connected =
            s.state == SockState::Connected || (s.ty == SockType::Dgram && s.inst.is_some());
        if !connected {
            // Dead (reset) sockets: Linux allows shutdown after a reset too,
            // but the ENOTCONN answer is what an unconnected socket gives.
            out.push(c.reply(if s.state == SockState::Dead {
                0
            } else {
                errno::ENOTCONN
            }));
            return;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            // The app end stops writing; the relay then reads EOF and sends
            // `Eof` after every byte written before, in order.
            out.push(Action::AppShutdownWrite { sock: h });
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            let Some(inst) = s.inst else {
                out.push(c.reply(errno::ENOTCONN));
                return;
            };
            self.request(
                inst,
                Pending::Shutdown {
                    sock: h,
                    conn,
                    seq: req.seq,
                },
                out,
                |r| MsgOf::Shutdown {
                    sock: h,
                    req: r,
                    how: Shutdown::Read,
                },
            );
        } else {
            out.push(c.reply(0));
        }
    }

    /// `getsockname()` / `getpeername()`: from what the driver knows, else
    /// from the instance.
    fn op_name(&mut self, c: Call<'_>, out: &mut Vec<Action>) {
        let Call { conn, req, h } = c;
        let mut r = ShimReply::new(conn, req.op, req.seq, 0);
        let s = &self.socks[&h];
        let cached = if req.op == Op::GetSockName {
            s.local
        } else {
            s.peer_known()
        };
        if let Some(a) = cached {
            r.ctl.addr = Some(a);
            out.push(Action::Reply(r));
            return;
        }
        match (s.inst, req.op) {
            (None, Op::GetSockName) => {
                r.ctl.addr = Some(s.bound.unwrap_or(unspecified(s.family)));
                out.push(Action::Reply(r));
            }
            (None, _) => {
                r.ctl.status = errno::ENOTCONN;
                out.push(Action::Reply(r));
            }
            (Some(inst), op) => {
                self.forward(inst, c, out, |rq| {
                    if op == Op::GetSockName {
                        MsgOf::GetSockName { sock: h, req: rq }
                    } else {
                        MsgOf::GetPeerName { sock: h, req: rq }
                    }
                });
            }
        }
    }
}

/// An explicit close from one process.
fn op_close(c: Call<'_>, out: &mut Vec<Action>) {
    // The last-reference signal is the hang-up on the driver
    // end; an explicit close from one process may not be the
    // last reference (fork, dup, SCM_RIGHTS), so only ack.
    out.push(c.reply(0));
}
