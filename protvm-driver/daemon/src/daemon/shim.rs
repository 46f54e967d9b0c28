//! Shim connections: each process running under `libshim.so` holds one
//! `SOCK_SEQPACKET` connection to `DIR/shim.sock`; one request and one
//! reply per packet ([`ins_protocol::control`]), the socket a request is
//! about travelling with it as an `SCM_RIGHTS` fd.
//!
//! ```text
//!  packet + fd ─▶ decode (malformed: connection closed) ─▶ Socket: a new pair, its app end back
//!                                                       └▶ other ops: fd → inode → handle ─▶ core
//!  core Reply ─▶ send_reply (+ the kept app end of an accepted connection)
//! ```
//!
//! Shims are untrusted (any local process may connect); the fd names the
//! socket, so no process can act on a socket it does not hold.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use driver_core::ConnId;
use ins_protocol::control::{Control, MAX_PACKET, Op};
use rustix::event::epoll::{self, EventFlags};
use tracing::{debug, info, warn};

use super::Daemon;
use super::event_loop::{K_SHIM, add};
use crate::shimio::{self, Packet};

/// One shim connection.
pub(super) struct Shim {
    fd: OwnedFd,
    pid: i32,
    uid: u32,
}

/// Sends `r` to shim connection `conn`, with `pass` as `SCM_RIGHTS`. A
/// reply to a shim that went away is dropped.
pub(super) fn send_reply(
    shims: &HashMap<ConnId, Shim>,
    conn: ConnId,
    r: &Control<'_>,
    pass: Option<BorrowedFd<'_>>,
) {
    let Some(shim) = shims.get(&conn) else {
        return;
    };
    let mut out = [0u8; MAX_PACKET];
    match r.encode(&mut out) {
        Ok(n) => {
            if let Err(e) = shimio::send_packet(shim.fd.as_fd(), &out[..n], pass) {
                debug!(conn, error = %e, "reply to shim lost");
            }
        }
        Err(e) => warn!(conn, error = %e, "reply encoding"),
    }
}

impl Daemon {
    /// A new shim connection (refused beyond `--max-shims`).
    pub(super) fn new_shim(&mut self, fd: OwnedFd) -> anyhow::Result<()> {
        let cred = rustix::net::sockopt::socket_peercred(&fd).ok();
        let (pid, uid) = cred.map_or((0, 0), |c| (c.pid.as_raw_nonzero().get(), c.uid.as_raw()));
        if self.shims.len() >= self.max_shims {
            warn!(pid, uid, "too many shim connections; refused");
            return Ok(());
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        add(
            &self.epfd,
            fd.as_fd(),
            K_SHIM | conn,
            EventFlags::IN | EventFlags::RDHUP | EventFlags::ET,
        )?;
        info!(conn, pid, uid, "shim connected");
        self.shims.insert(conn, Shim { fd, pid, uid });
        Ok(())
    }

    /// The shim went away (or misbehaved).
    fn drop_shim(&mut self, conn: ConnId) {
        if let Some(s) = self.shims.remove(&conn) {
            let _ = epoll::delete(&self.epfd, &s.fd);
            debug!(conn, pid = s.pid, uid = s.uid, "shim disconnected");
        }
    }

    /// Reads and handles every request waiting on a shim connection.
    pub(super) fn shim_readable(&mut self, conn: ConnId) {
        loop {
            let Some(shim) = self.shims.get(&conn) else {
                return;
            };
            let mut buf = std::mem::take(&mut self.ctl_buf);
            let r = shimio::recv_packet(shim.fd.as_fd(), &mut buf);
            let keep = match r {
                Ok(Packet::None) => {
                    self.ctl_buf = buf;
                    return;
                }
                Ok(Packet::Closed) | Err(_) => {
                    self.ctl_buf = buf;
                    self.drop_shim(conn);
                    return;
                }
                Ok(Packet::Data { len, fd, bad }) => {
                    let ok = !bad && len <= MAX_PACKET;
                    match (ok, Control::decode(&buf[..len])) {
                        (true, Ok(req)) if req.status == 0 => {
                            self.shim_request(conn, &req, fd);
                            true
                        }
                        _ => {
                            warn!(conn, "malformed shim request; connection closed");
                            false
                        }
                    }
                }
            };
            self.ctl_buf = buf;
            if !keep {
                self.drop_shim(conn);
                return;
            }
        }
    }

    /// Answers a request with `status` only (and `pass` as its fd).
    fn reply_now(
        &mut self,
        conn: ConnId,
        req: &Control<'_>,
        status: i32,
        pass: Option<BorrowedFd<'_>>,
    ) {
        let mut r = Control::reply_to(req, status);
        r.args = [0; 4];
        send_reply(&self.shims, conn, &r, pass);
    }

    /// One request: `Socket` here, the rest through the core with the
    /// socket the received fd names.
    fn shim_request(&mut self, conn: ConnId, req: &Control<'_>, fd: Option<OwnedFd>) {
        if req.op == Op::Socket {
            self.op_socket(conn, req);
            return;
        }
        let pid = self.shims.get(&conn).map_or(0, |s| s.pid as u32);
        if req.op == Op::SockOpt {
            // A record: never answered; an fd sent with it means nothing.
            drop(fd);
            self.core
                .inband_record(pid, req.seq, req.args, req.value, &mut self.actions);
            self.apply(None, None);
            return;
        }
        let Some(fd) = fd else {
            self.reply_now(conn, req, driver_core::errno::EBADF, None);
            return;
        };
        let sock = match shimio::socket_id(fd.as_fd()) {
            Ok(Some((dev, ino))) if Some(dev) == self.sock_dev => self.core.lookup_inode(ino),
            _ => None,
        };
        if let Some(h) = sock
            && matches!(req.op, Op::SetOpt | Op::GetOpt)
        {
            if req.op == Op::SetOpt && req.args[2] == 1 {
                // The shim could not write the marker of this record.
                self.core.inband_cancel(h, pid, req.args[3] as u32);
            }
            // What the app wrote before this call goes first, as the
            // kernel would have it.
            self.relay_out(h);
        }
        // bind() names the address; listen() checks the bound one again.
        let checked = match req.op {
            Op::Bind => req.addr,
            Op::Listen => sock.and_then(|h| self.core.socket(h)).and_then(|i| i.local),
            _ => None,
        };
        if let Some(h) = sock
            && let Some(addr) = checked
        {
            // A socket the app closed just before this call may not have
            // been seen hung up yet (its pair is another epoll source):
            // Linux frees a port at close(), so such a close is taken in
            // now, before the port table answers.
            for b in self.core.bind_blockers(h, addr) {
                if self
                    .socks
                    .get(&b)
                    .is_some_and(|s| shimio::hung_up(s.drv.as_fd()))
                {
                    self.relay_out(b);
                }
            }
        }
        self.core.shim_request(conn, req, sock, &mut self.actions);
        self.apply(Some(fd.as_fd()), sock);
    }

    /// `socket()`: a new pair; the core gets the app end's inode, the app
    /// gets the app end.
    fn op_socket(&mut self, conn: ConnId, req: &Control<'_>) {
        let [domain, ty, proto, _] = req.args;
        let stream = ty == 1;
        let (drv, app) = match shimio::pair(stream, self.app_sndbuf) {
            Ok(p) => p,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(driver_core::errno::EIO);
                self.reply_now(conn, req, errno, None);
                return;
            }
        };
        let (dev, ino) = match shimio::socket_id(app.as_fd()) {
            Ok(Some(id)) => id,
            _ => {
                self.reply_now(conn, req, driver_core::errno::EIO, None);
                return;
            }
        };
        self.sock_dev.get_or_insert(dev);
        match self.core.new_socket(ino, domain, ty, proto) {
            Ok(h) => {
                if let Err(e) = self.register_sock(h, drv, stream, None) {
                    warn!(error = %e, "epoll registration of a socket");
                    self.core.app_eof(h, true, &mut self.actions);
                    self.apply(None, None);
                    self.reply_now(conn, req, driver_core::errno::ENOMEM, None);
                    return;
                }
                self.reply_now(conn, req, 0, Some(app.as_fd()));
                debug!(conn, sock = h, domain, ty, "socket");
            }
            Err(errno) => self.reply_now(conn, req, errno, None),
        }
    }
}
