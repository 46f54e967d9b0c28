//! `setsockopt()` and `getsockopt()`, and the options a socket remembers.
//!
//! Linux checks an option's level, name, length and value in the kernel,
//! so a `setsockopt` goes to the socket's instance (placing the socket
//! first) and the app gets that kernel's answer. Options that succeeded
//! are remembered (up to `Config::max_opts` per socket) and replayed on
//! every replica of a listener. The driver answers itself what only it
//! knows: `SO_TYPE`, `SO_DOMAIN`, `SO_PROTOCOL`, `SO_ACCEPTCONN`,
//! `SO_ERROR` and the app's own `SO_REUSEPORT` (the instance side keeps
//! `SO_REUSEPORT` on for replication).

use alloc::vec::Vec;

use ins_protocol::control::Op;
use ins_protocol::msg::{MAX_OPT_LEN, MsgOf, OptValue};

use crate::pending::Pending;
use crate::shim::Call;
use crate::{Action, ConnId, Driver, Handle, InstId, ShimReply, errno, opt};

impl Driver {
    /// `setsockopt()`.
    pub(crate) fn op_setopt(&mut self, c: Call<'_>, out: &mut Vec<Action>) {
        let Call { conn, req, h } = c;
        let (level, name) = (req.args[0], req.args[1]);
        let value = OptValue::new(req.value);
        let max_opts = self.cfg.max_opts;
        let s = self.socks.get_mut(&h).expect("checked");
        if level == opt::SOL_SOCKET
            && matches!(
                name,
                opt::SO_TYPE
                    | opt::SO_ERROR
                    | opt::SO_ACCEPTCONN
                    | opt::SO_PROTOCOL
                    | opt::SO_DOMAIN
            )
        {
            out.push(c.reply(errno::ENOPROTOOPT));
            return;
        }
        if s.opts.len() >= max_opts && !s.opts.iter().any(|(l, n, _)| *l == level && *n == name) {
            out.push(c.reply(errno::ENOMEM));
            return;
        }
        // Linux checks level, name, length and value in the kernel, so the
        // socket is placed now and its instance's kernel answers; the
        // option is remembered (for replicas) only once it succeeded.
        let inst = match s.inst {
            Some(i) => i,
            None => match self.ensure_placed(h, false, out) {
                Ok(i) => i,
                Err(_) => {
                    // No live instance (or the socket is dead): nothing can
                    // check the option now; it is kept for the placement
                    // that comes with the next op, as Linux would accept it.
                    let s = self.socks.get_mut(&h).expect("checked");
                    s.remember(level, name, value, max_opts);
                    out.push(c.reply(0));
                    return;
                }
            },
        };
        let s = self.socks.get_mut(&h).expect("checked");
        let listener = s
            .listener
            .as_ref()
            .map(|li| li.replicas.keys().copied().collect::<Vec<_>>());
        if level == opt::SOL_SOCKET && name == opt::SO_REUSEPORT && s.reuseport_sent {
            // The instance side keeps SO_REUSEPORT on for replication; the
            // app's value lives in the driver. The length is checked as
            // Linux does for an int option.
            if req.value.len() < 4 {
                out.push(c.reply(errno::EINVAL));
                return;
            }
            s.remember(level, name, value, max_opts);
            out.push(c.reply(0));
            return;
        }
        let p = Pending::SetOpt {
            sock: h,
            conn,
            seq: req.seq,
            level,
            name,
            value,
        };
        self.send_opt(inst, h, p, (level, name, value), out);
        for other in listener.into_iter().flatten().filter(|&i| i != inst) {
            self.send_opt(
                other,
                h,
                Pending::Internal { sock: h },
                (level, name, value),
                out,
            );
        }
    }

    /// `getsockopt()`: answered here for the options only the driver
    /// knows, else by the socket's instance.
    pub(crate) fn op_getopt(&mut self, c: Call<'_>, out: &mut Vec<Action>) {
        let Call { conn, req, h } = c;
        let (level, name) = (req.args[0], req.args[1]);
        let mut r = ShimReply::new(conn, req.op, req.seq, 0);
        let s = self.socks.get_mut(&h).expect("checked");
        if level == opt::SOL_SOCKET {
            let local = match name {
                opt::SO_TYPE => Some(s.ty as i32),
                opt::SO_DOMAIN => Some(s.family as i32),
                opt::SO_PROTOCOL => Some(s.proto),
                opt::SO_ACCEPTCONN => Some(i32::from(s.listener.is_some())),
                opt::SO_ERROR => Some(core::mem::take(&mut s.err)),
                opt::SO_REUSEPORT => Some(i32::from(s.app_reuseport())),
                _ => None,
            };
            if let Some(v) = local {
                r.ctl.value = OptValue::int(v);
                out.push(Action::Reply(r));
                return;
            }
        }
        let max_len = u32::try_from(req.args[2].clamp(0, MAX_OPT_LEN as i32)).unwrap_or(0);
        let Some(inst) = self.placed_or_answer(c, false, out) else {
            return;
        };
        self.forward(inst, c, out, |rq| MsgOf::GetOpt {
            sock: h,
            req: rq,
            level,
            name,
            max_len,
        });
    }

    /// The instance answered the app's `setsockopt`: remembered on
    /// success, the app gets the answer (or the socket's `Open` error).
    pub(crate) fn setopt_replied(
        &mut self,
        (sock, conn, seq): (Handle, ConnId, u32),
        level: i32,
        name: i32,
        value: OptValue,
        errno: i32,
        out: &mut Vec<Action>,
    ) {
        let max_opts = self.cfg.max_opts;
        let mut status = errno;
        if let Some(s) = self.socks.get_mut(&sock) {
            if status != 0 && s.open_err != 0 {
                status = s.open_err;
            }
            // Capacity was checked when the request was sent.
            if status == 0 && !s.remember(level, name, value, max_opts) {
                status = errno::ENOMEM;
            }
        }
        out.push(Action::Reply(ShimReply::new(conn, Op::SetOpt, seq, status)));
    }

    /// Sends `SetOpt(level, name, value)` for socket `h` to `inst`.
    pub(crate) fn send_opt(
        &mut self,
        inst: InstId,
        h: Handle,
        p: Pending,
        (level, name, value): (i32, i32, OptValue),
        out: &mut Vec<Action>,
    ) {
        self.request(inst, p, out, |req| MsgOf::SetOpt {
            sock: h,
            req,
            level,
            name,
            value,
        });
    }

    /// The options a shim carries with `connect`/`listen` (set before, and
    /// answered by the shim then): 12-byte entries, level and name as
    /// little-endian `i32`, the value a native `int`. Each is remembered
    /// (a listener's replicas and accepted connections get it) and, if the
    /// socket is placed already, sent to its instance now, before the
    /// request itself; an unplaced socket gets them with its `Open`.
    /// `false` (and `EINVAL` answered) if the list is malformed.
    pub(crate) fn carried_opts(&mut self, c: Call<'_>, out: &mut Vec<Action>) -> bool {
        let v = c.req.value;
        if !v.len().is_multiple_of(12) {
            out.push(c.reply(errno::EINVAL));
            return false;
        }
        let max_opts = self.cfg.max_opts;
        for e in v.chunks_exact(12) {
            let level = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let name = i32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let value = OptValue::new(&e[8..]);
            let Some(s) = self.socks.get_mut(&c.h) else {
                return false;
            };
            s.remember(level, name, value, max_opts);
            if let Some(inst) = s.inst {
                self.send_opt(
                    inst,
                    c.h,
                    Pending::Internal { sock: c.h },
                    (level, name, value),
                    out,
                );
            }
        }
        true
    }

    /// `SO_REUSEPORT` on for socket `h` on `inst`: every instance-side
    /// socket that may become a listener replica has it, so replicas on
    /// one instance never clash (the app's own value lives in the driver).
    pub(crate) fn reuseport_on(&mut self, inst: InstId, h: Handle, out: &mut Vec<Action>) {
        let one = (opt::SOL_SOCKET, opt::SO_REUSEPORT, OptValue::int(1));
        self.send_opt(inst, h, Pending::Internal { sock: h }, one, out);
    }
}
