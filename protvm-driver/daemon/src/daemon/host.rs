//! The daemon as a host of driver-core: the core's host traits
//! ([`driver_core::host`]) over the daemon's tables.
//!
//! | trait | here |
//! |---|---|
//! | [`InstanceLinks`] | [`Inst::send`](super::instances::Inst::send): ring or overflow queue; closing = dropping the endpoint |
//! | [`AppSockets`] | socket pairs ([`super::relay`]): a new pair per accepted connection, token bytes, filler, `shutdown(2)` |
//! | [`ShimReplies`] | a `SOCK_SEQPACKET` packet with the app end as `SCM_RIGHTS` ([`super::shim`]) |
//! | [`NoteSink`] | `tracing` and the monitor stream ([`super::ctl::monitor`]) |
//!
//! [`DaemonHost`] borrows the tables the actions touch, disjoint from the
//! core, so that [`Daemon::apply`] can hand both to
//! [`Driver::execute`](driver_core::Driver::execute).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use driver_core::{
    AppSockets, ConnId, Handle, InstId, InstanceLinks, LinkFailed, NoAppSide, ReplyFd, ShimReplies,
    ShimReply,
};
use ins_protocol::control::Op;
use ins_protocol::msg::OwnedMsg;
use rustix::event::epoll;
use rustix::net::Shutdown;
use tracing::{debug, warn};

use super::Daemon;
use super::instances::Inst;
use super::relay::{self, SockIo};
use super::shim::{self, Shim};
use crate::shimio;

/// The daemon's tables, borrowed for one [`Daemon::apply`].
struct DaemonHost<'a> {
    epfd: &'a OwnedFd,
    insts: &'a mut HashMap<InstId, Inst>,
    socks: &'a mut HashMap<Handle, SockIo>,
    shims: &'a HashMap<ConnId, Shim>,
    resume: &'a mut Vec<Handle>,
    reset_watch: &'a mut Vec<Handle>,
    /// The fd received with the shim request being handled, and the
    /// socket it names.
    req_fd: Option<BorrowedFd<'a>>,
    req_sock: Option<Handle>,
    /// `--app-sndbuf`.
    app_sndbuf: usize,
}

impl InstanceLinks for DaemonHost<'_> {
    fn send(&mut self, inst: InstId, frame: &OwnedMsg) -> Result<(), LinkFailed> {
        match self.insts.get_mut(&inst) {
            Some(x) => x.send(inst, frame),
            None => Ok(()),
        }
    }

    fn close(&mut self, inst: InstId) {
        if let Some(x) = self.insts.remove(&inst) {
            let _ = epoll::delete(self.epfd, x.ep.rx_bell.as_fd());
            let _ = epoll::delete(self.epfd, &x.ep.control);
            warn!(inst, hello_id = x.hello_id, "instance channel closed");
        }
    }
}

impl AppSockets for DaemonHost<'_> {
    fn new_connection(
        &mut self,
        sock: Handle,
        listener: Handle,
        inst: InstId,
    ) -> Result<u64, NoAppSide> {
        let made = shimio::pair(true, self.app_sndbuf).and_then(|(drv, app)| {
            let id =
                shimio::socket_id(app.as_fd())?.ok_or_else(|| io::Error::other("not a socket"))?;
            Ok((drv, app, id.1))
        });
        match made {
            Ok((drv, app, ino)) => {
                let r = relay::register(self.epfd, self.socks, sock, drv, true, Some(app));
                debug!(sock, listener, inst, "connection announced");
                match r {
                    Ok(()) => Ok(ino),
                    Err(e) => {
                        warn!(sock, error = %e, "epoll registration");
                        Err(NoAppSide)
                    }
                }
            }
            Err(e) => {
                warn!(sock, error = %e, "socket pair for an accepted connection");
                Err(NoAppSide)
            }
        }
    }

    fn token(&mut self, listener: Handle) {
        if let Some(s) = self.socks.get_mut(&listener) {
            s.add_token();
            s.sync_out(self.epfd, listener);
        }
    }

    fn connect_done(&mut self, sock: Handle, errno: i32) {
        if let Some(s) = self.socks.get_mut(&sock) {
            s.connect_done(sock, errno);
            if errno != 0 && !s.reset_shut {
                // The filler is drained: now the failed socket's writes
                // may fail with EPIPE.
                s.shut_both();
                if s.reset_shut {
                    let _ = epoll::delete(self.epfd, &s.drv);
                    self.reset_watch.push(sock);
                }
            }
        }
    }

    fn peer_eof(&mut self, sock: Handle) {
        if let Some(s) = self.socks.get_mut(&sock) {
            s.peer_eof();
        }
    }

    fn peer_reset(&mut self, sock: Handle, errno: i32) {
        if let Some(s) = self.socks.get_mut(&sock) {
            s.peer_reset(sock, errno);
            if s.reset_shut {
                // Shut both ways, the end reports hang-up for good: out
                // of epoll; the app's close is found by the tick.
                let _ = epoll::delete(self.epfd, &s.drv);
                self.reset_watch.push(sock);
                return;
            }
        }
        // Read (and discard) what the app still writes, and notice its
        // close.
        self.resume.push(sock);
    }

    fn shutdown_app_write(&mut self, _sock: Handle) {
        if let Some(fd) = self.req_fd {
            let _ = rustix::net::shutdown(fd, Shutdown::Write);
        }
    }

    fn resume(&mut self, sock: Handle) {
        self.resume.push(sock);
    }

    fn forget(&mut self, sock: Handle) {
        if let Some(s) = self.socks.remove(&sock) {
            let _ = epoll::delete(self.epfd, &s.drv);
        }
    }
}

impl ShimReplies for DaemonHost<'_> {
    fn reply(&mut self, r: &ShimReply) {
        if r.ctl.op == Op::Connect
            && r.ctl.status == driver_core::errno::EINPROGRESS
            && let (Some(fd), Some(h)) = (self.req_fd, self.req_sock)
            && let Some(s) = self.socks.get_mut(&h)
        {
            s.start_filler(h, fd);
        }
        match r.fd {
            ReplyFd::None => shim::send_reply(self.shims, r.conn, &r.ctl.borrowed(), None),
            ReplyFd::AppEnd(c) => match self.socks.get_mut(&c).and_then(|s| s.app.take()) {
                Some(app) => {
                    shim::send_reply(self.shims, r.conn, &r.ctl.borrowed(), Some(app.as_fd()))
                }
                None => {
                    let mut c2 = r.ctl;
                    c2.status = driver_core::errno::EAGAIN;
                    shim::send_reply(self.shims, r.conn, &c2.borrowed(), None);
                }
            },
            // The kernel passes a copy; the driver keeps its end. A socket
            // already gone gets its answer without one.
            ReplyFd::Keeper(h) => {
                let keeper = self.socks.get(&h).map(|s| s.drv.as_fd());
                shim::send_reply(self.shims, r.conn, &r.ctl.borrowed(), keeper)
            }
        }
    }
}

impl Daemon {
    /// Carries out the core's queued actions. `req_fd`/`req_sock`: the fd
    /// received with the shim request being handled, and its socket.
    pub(super) fn apply(&mut self, req_fd: Option<BorrowedFd<'_>>, req_sock: Option<Handle>) {
        let mut host = DaemonHost {
            epfd: &self.epfd,
            insts: &mut self.insts,
            socks: &mut self.socks,
            shims: &self.shims,
            resume: &mut self.resume,
            reset_watch: &mut self.reset_watch,
            req_fd,
            req_sock,
            app_sndbuf: self.app_sndbuf,
        };
        self.core.execute(&mut self.actions, &mut host);
    }

    /// Hands the core's notes to the log and the monitor stream.
    pub(super) fn log_notes(&mut self) {
        self.core.drain_notes(&mut self.ctl);
    }
}
