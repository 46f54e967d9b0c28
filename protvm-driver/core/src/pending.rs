//! Requests in flight to instances, and where their replies go.
//!
//! Every request the driver sends (`Open` … `Mitigate`) gets a request id
//! unique on its instance's ring and a `Pending` entry that says who waits
//! for the `Reply`: a shim to answer, a step of a bigger operation (bind to
//! port 0, listen, replication) to continue, or nobody (the reply is only
//! checked and noted). A `Reply` for an id not in the table, or naming
//! another socket, is a violation. When an instance dies its entries are
//! failed with `ECONNRESET`.
//!
//! ```text
//!   request(inst, Pending, |req| msg) ──▶ Send{inst, msg}     (handle → wire id)
//!   Reply{req} ──▶ replied ──▶ pending.remove((inst, req)) ──▶ the handler below
//! ```

use alloc::vec::Vec;
use core::net::SocketAddr;

use ins_protocol::control::Op;
use ins_protocol::msg::{MsgOf, OptValue, OwnedMsg, SockType, WireAddr};

use crate::{
    Action, ConnId, Driver, Handle, InstId, Note, ReplyFd, ShimReply, SockState, Violation, errno,
};

/// Why a request was sent, so its reply can be routed.
// `SetOpt` carries the option value (up to 256 bytes) inline: one entry
// per request in flight, and no allocation per setsockopt.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pending {
    /// Answer this shim request with the reply (plain pass-through).
    Shim {
        sock: Handle,
        conn: ConnId,
        op: Op,
        seq: u32,
    },
    /// A stream connect: blocking connects answer the shim on `Connected`.
    Connect {
        sock: Handle,
        shim: Option<(ConnId, u32)>,
    },
    /// `Bind` for the shim: on success the address is recorded. `auto`:
    /// the shim's auto-bind before a datagram socket's first send, where
    /// "already bound" (`EINVAL`) is success.
    Bind {
        sock: Handle,
        conn: ConnId,
        seq: u32,
        addr: SocketAddr,
        auto: bool,
    },
    /// A `Bind` to port 0 succeeded: learn the port the kernel chose (so
    /// other app sockets get `EADDRINUSE` on it), then answer the shim.
    BindAddr {
        sock: Handle,
        conn: ConnId,
        seq: u32,
    },
    /// `Listen` on the first instance.
    Listen {
        sock: Handle,
        conn: ConnId,
        seq: u32,
        backlog: u32,
    },
    /// Learn the listener's bound address, then replicate it.
    ListenAddr { sock: Handle },
    /// `Shutdown(Read)` for the shim.
    Shutdown {
        sock: Handle,
        conn: ConnId,
        seq: u32,
    },
    /// `SetOpt` for the shim: on success the option is remembered (for
    /// replicas and the driver's own `SO_REUSEPORT` bookkeeping).
    SetOpt {
        sock: Handle,
        conn: ConnId,
        seq: u32,
        level: i32,
        name: i32,
        value: OptValue,
    },
    /// `Open` (errors recorded on the socket).
    Open { sock: Handle },
    /// Anything whose reply is only logged (option replay, replicas, close).
    Internal { sock: Handle },
    /// A `Mitigate` from the controller; `tag` identifies its request.
    Mitigate { tag: u64 },
}

impl Pending {
    /// The socket the request is about (0 for `Mitigate`).
    pub(crate) fn sock(&self) -> Handle {
        match *self {
            Pending::Shim { sock, .. }
            | Pending::Connect { sock, .. }
            | Pending::Bind { sock, .. }
            | Pending::Listen { sock, .. }
            | Pending::ListenAddr { sock }
            | Pending::Shutdown { sock, .. }
            | Pending::SetOpt { sock, .. }
            | Pending::BindAddr { sock, .. }
            | Pending::Open { sock }
            | Pending::Internal { sock } => sock,
            Pending::Mitigate { .. } => 0,
        }
    }
}

impl Driver {
    /// A request id not in flight on `inst`.
    fn req_id(&mut self, inst: InstId) -> u32 {
        let Some(i) = self.instances.get_mut(&inst) else {
            return 1;
        };
        loop {
            let r = i.next_req;
            i.next_req = i.next_req.wrapping_add(1).max(1);
            if !self.pending.contains_key(&(inst, r)) {
                return r;
            }
        }
    }

    /// Sends the request `f(req id)` to `inst`, remembering `p` for its
    /// reply.
    pub(crate) fn request(
        &mut self,
        inst: InstId,
        p: Pending,
        out: &mut Vec<Action>,
        f: impl Fn(u32) -> OwnedMsg,
    ) {
        let req = self.req_id(inst);
        self.pending.insert((inst, req), p);
        let mut frame = f(req);
        // Requests are built with the driver's handle; on the wire an
        // accepted socket is known by the id its instance gave it.
        if let Some(sock) = request_sock(&mut frame)
            && let Some(s) = self.socks.get(sock)
        {
            *sock = s.wire;
        }
        out.push(Action::Send { inst, frame });
    }

    /// A `Reply` from `inst`: routed to whoever waits for it.
    pub(crate) fn replied(
        &mut self,
        inst: InstId,
        sock: u32,
        req: u32,
        errno: i32,
        value: &[u8],
        out: &mut Vec<Action>,
    ) -> Result<(), Violation> {
        let p = self
            .pending
            .remove(&(inst, req))
            .ok_or(Violation::UnknownRequest(req))?;
        if sock != 0 && self.resolve(inst, sock).ok() != Some(p.sock()) {
            return Err(Violation::UnknownSocket(sock));
        }
        self.on_reply(inst, p, errno, value, out);
        Ok(())
    }

    fn on_reply(
        &mut self,
        inst: InstId,
        p: Pending,
        errno: i32,
        value: &[u8],
        out: &mut Vec<Action>,
    ) {
        match p {
            Pending::Shim {
                sock,
                conn,
                op,
                seq,
            } => self.shim_replied((sock, conn, seq), op, errno, value, out),
            Pending::Open { sock } => {
                if errno != 0 {
                    self.notes.push(Note::InternalFailed { inst, sock, errno });
                    if let Some(s) = self.socks.get_mut(&sock) {
                        s.open_err = errno;
                    }
                }
            }
            Pending::SetOpt {
                sock,
                conn,
                seq,
                level,
                name,
                value,
            } => self.setopt_replied((sock, conn, seq), level, name, value, errno, out),
            Pending::Mitigate { tag } => {
                self.notes.push(Note::MitigateDone { inst, tag, errno });
            }
            Pending::Internal { sock } => {
                if errno != 0 {
                    self.notes.push(Note::InternalFailed { inst, sock, errno });
                }
            }
            Pending::Bind {
                sock,
                conn,
                seq,
                addr,
                auto,
            } => self.bind_replied(inst, (sock, conn, seq), addr, auto, errno, out),
            Pending::BindAddr { sock, conn, seq } => {
                self.bind_port_known(inst, (sock, conn, seq), errno, value, out)
            }
            Pending::Listen {
                sock,
                conn,
                seq,
                backlog,
            } => self.listen_replied(inst, (sock, conn, seq), backlog, errno, out),
            Pending::ListenAddr { sock } => self.listen_addr_known(inst, sock, errno, value, out),
            Pending::Shutdown { conn, seq, .. } => {
                out.push(Action::Reply(ShimReply::new(
                    conn,
                    Op::Shutdown,
                    seq,
                    errno,
                )));
            }
            Pending::Connect { sock, shim } => self.connect_replied(inst, sock, shim, errno, out),
        }
    }

    /// A plain pass-through reply: the shim gets the instance's answer
    /// (values and addresses checked).
    fn shim_replied(
        &mut self,
        (sock, conn, seq): (Handle, ConnId, u32),
        op: Op,
        errno: i32,
        value: &[u8],
        out: &mut Vec<Action>,
    ) {
        let mut r = ShimReply::new(conn, op, seq, errno);
        if errno == 0 {
            match op {
                Op::GetOpt => r.ctl.value = OptValue::new(value),
                Op::GetSockName | Op::GetPeerName => {
                    r.ctl.addr = WireAddr::parse(value).ok().flatten();
                    if r.ctl.addr.is_none() {
                        r.ctl.status = errno::EPROTO;
                    }
                }
                Op::Connect => {
                    // Only a datagram connect is passed through; it
                    // carries the keeper as a bound datagram socket's
                    // answers do.
                    if let Some(s) = self.socks.get_mut(&sock) {
                        s.dgram_connected = true;
                        if s.ty == SockType::Dgram {
                            r.fd = ReplyFd::Keeper(sock);
                        }
                    }
                }
                _ => {}
            }
        }
        out.push(Action::Reply(r));
    }

    /// Every request in flight on a dead instance: shims answered,
    /// mitigations noted, the rest forgotten.
    pub(crate) fn fail_requests_of(&mut self, inst: InstId, out: &mut Vec<Action>) {
        let keys: Vec<(InstId, u32)> = self
            .pending
            .range((inst, 0)..=(inst, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(p) = self.pending.remove(&k) {
                if let Pending::Mitigate { tag } = p {
                    self.notes.push(Note::MitigateDone {
                        inst,
                        tag,
                        errno: errno::ECONNRESET,
                    });
                }
                self.fail_pending(p, errno::ECONNRESET, out);
            }
        }
    }

    fn fail_pending(&mut self, p: Pending, errno: i32, out: &mut Vec<Action>) {
        match p {
            Pending::Shim { conn, op, seq, .. } => {
                out.push(Action::Reply(ShimReply::new(conn, op, seq, errno)))
            }
            Pending::Bind {
                conn, seq, sock, ..
            } => {
                if let Some(s) = self.socks.get_mut(&sock) {
                    s.bind_pending = false;
                }
                out.push(Action::Reply(ShimReply::new(conn, Op::Bind, seq, errno)));
            }
            Pending::Listen { conn, seq, .. } => {
                out.push(Action::Reply(ShimReply::new(conn, Op::Listen, seq, errno)))
            }
            Pending::SetOpt { conn, seq, .. } => {
                out.push(Action::Reply(ShimReply::new(conn, Op::SetOpt, seq, errno)))
            }
            Pending::BindAddr { conn, seq, .. } => {
                out.push(Action::Reply(ShimReply::new(conn, Op::Bind, seq, errno)))
            }
            Pending::Shutdown { conn, seq, .. } => out.push(Action::Reply(ShimReply::new(
                conn,
                Op::Shutdown,
                seq,
                errno,
            ))),
            Pending::Connect { sock, shim } => {
                if let Some(s) = self.socks.get_mut(&sock)
                    && s.connect_shim.is_none()
                {
                    s.connect_shim = shim;
                }
            }
            Pending::ListenAddr { .. }
            | Pending::Open { .. }
            | Pending::Internal { .. }
            | Pending::Mitigate { .. } => {}
        }
        // A connect whose `Connected` will never come is answered by the
        // instance-death path (the socket is reset there).
        let sock = p.sock();
        if let Some(s) = self.socks.get_mut(&sock)
            && s.state == SockState::Connecting
            && let Some((conn, seq)) = s.connect_shim.take()
        {
            out.push(Action::Reply(ShimReply::new(conn, Op::Connect, seq, errno)));
        }
    }
}

/// The address in a get*name `Reply` (`None` if it failed or is malformed).
pub(crate) fn reply_addr(errno: i32, value: &[u8]) -> Option<SocketAddr> {
    if errno == 0 {
        WireAddr::parse(value).ok().flatten()
    } else {
        None
    }
}

/// The socket id a request names, to translate handles to wire ids
/// (`Mitigate` names none).
fn request_sock(m: &mut OwnedMsg) -> Option<&mut u32> {
    match m {
        MsgOf::Open { sock, .. }
        | MsgOf::Bind { sock, .. }
        | MsgOf::Listen { sock, .. }
        | MsgOf::Connect { sock, .. }
        | MsgOf::Shutdown { sock, .. }
        | MsgOf::Close { sock, .. }
        | MsgOf::SetOpt { sock, .. }
        | MsgOf::GetOpt { sock, .. }
        | MsgOf::GetSockName { sock, .. }
        | MsgOf::GetPeerName { sock, .. } => Some(sock),
        _ => None,
    }
}
