//! The management socket (`DIR/ctl.sock`) and the monitor socket
//! (`DIR/monitor.sock`): connections, access, line framing and output.
//!
//! | module | owns |
//! |---|---|
//! | this file | [`Ctl`]: listeners, connections, their buffers; accept, read, write |
//! | [`command`] | a request line → a [`command::Command`] (every argument checked) |
//! | [`exec`] | carrying a command out against the daemon (status, list, spawn …) |
//! | [`monitor`] | the versioned event stream and the flow ring |
//! | [`mitigation`] | mitigations sent to every instance, their answers, the standing list |
//!
//! Protocol: a Unix stream; each request is one JSON object on one line,
//! each answer one JSON object on one line, in order:
//!
//! ```text
//! → {"cmd":"list"}
//! ← {"ok":true,"instances":[{"id":1,"pid":4242,"state":"live",…}]}
//! → {"cmd":"block","prefix":"10.0.0.0/8"}
//! ← {"ok":true,"instances":2,"failed":[]}          (after every instance replied)
//! → {"cmd":"stop","id":9}
//! ← {"ok":false,"kind":"unknown-instance","error":"no live instance 9"}
//! → {"cmd":"attach-xen","domid":5,"channel":"ins0"}
//! ← {"ok":true,"id":2,"domid":5,"channel":"ins0","tag":0}   (once it joined)
//! ```
//!
//! `kind` is one of `bad-request`, `unknown-instance`, `bad-prefix`,
//! `permission-denied`, `failed`. A request that fails changes nothing.
//! `flows` with `"follow":true` answers once, then sends one line per flow
//! record as it arrives until the client disconnects. `subscribe` is the
//! monitor stream: flow records, instance events and mitigation events,
//! each a line with `"v":1` and a `"type"` (schema: `docs/monitor.md`);
//! connection telemetry (`conn`) only when named. `report` asks the
//! instances for telemetry now.
//! Mitigations are kept and replayed, in order, to every instance that
//! joins later.
//!
//! The same protocol is served on `DIR/monitor.sock` (mode
//! `--monitor-mode`, group `--monitor-group`), meant for monitoring
//! scripts run by another user or group.
//!
//! Access: the socket file's mode and group (`--ctl-mode`, default 0600;
//! `--ctl-group`) are the gate, checked by the kernel at `connect` (so
//! supplementary groups count); SO_PEERCRED is logged for every
//! connection, and a peer whose uid is neither root nor the driver's is
//! refused unless the mode grants group or other access. On
//! `monitor.sock` group access also needs the peer's primary gid to be the
//! socket's group. Programs under the shim never need this socket (the
//! whole model is in the crate docs, "Access").
//!
//! Slow readers: nothing here ever blocks. Sockets are non-blocking; a
//! line that cannot be written goes to the connection's buffer. A
//! streaming connection (follow/subscribe) whose buffer would exceed
//! `--monitor-buffer` bytes is dropped and counted (`status` →
//! `monitor.dropped_subscribers`). A request line longer than
//! `--ctl-max-line` is answered with `bad-request` and skipped up to its
//! newline.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};

use ins_protocol::msg::OwnedMitigation;
use rustix::event::epoll::{self, EventFlags};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::Daemon;
use super::event_loop::{K_CTL, add};

pub(super) mod command;
mod exec;
pub(super) mod mitigation;
pub(super) mod monitor;

/// Room for replies (the `flows` backlog) on top of `--monitor-buffer`
/// before a client that does not read its replies is dropped.
const REPLY_ROOM: usize = 16 << 20;

/// One controller connection.
struct CtlConn {
    stream: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// What this connection streams (`monitor::SUB_*`); 0 = request/reply
    /// only.
    sub: u8,
    /// Skipping the rest of an overlong line.
    discard: bool,
    allowed: bool,
    closing: bool,
    pid: i32,
    uid: u32,
}

/// Settings of the management and monitor sockets.
pub(super) struct CtlConfig {
    /// `ctl.sock`'s mode.
    pub(super) mode: u32,
    /// `monitor.sock` with its mode and group, if served.
    pub(super) monitor: Option<(UnixListener, u32, Option<u32>)>,
    /// Flow records kept for `flows`.
    pub(super) flow_cap: usize,
    /// Per-subscriber output buffer (bytes).
    pub(super) max_out: usize,
    /// Longest request line (bytes).
    pub(super) max_line: usize,
}

/// The management and monitor sockets' state.
pub(super) struct Ctl {
    pub(super) listener: UnixListener,
    /// `monitor.sock`, its mode and group.
    pub(super) monitor: Option<(UnixListener, u32, Option<u32>)>,
    conns: HashMap<u64, CtlConn>,
    next_conn: u64,
    open_mode: bool,
    max_out: usize,
    max_line: usize,
    /// Streaming clients dropped because their buffer was full.
    dropped: u64,
    /// Mitigations waiting for their instances' answers, by tag.
    waits: HashMap<u64, mitigation::Wait>,
    next_tag: u64,
    /// The flow ring.
    flows: VecDeque<monitor::FlowEntry>,
    flow_cap: usize,
    /// Flow records received from the instances.
    flow_records: u64,
    /// Standing mitigations, replayed to joining instances.
    standing: Vec<OwnedMitigation>,
    /// Payload bytes (in, out) of the flows each instance closed, summed
    /// from their final records as they arrive: `list`'s current lower
    /// bound on the bytes an instance carried (see `exec::ctl_list`).
    ended_bytes: HashMap<driver_core::InstId, (u64, u64)>,
    /// A `shutdown` request was accepted.
    pub(super) shutdown: bool,
}

impl Ctl {
    pub(super) fn new(listener: UnixListener, cfg: CtlConfig) -> Ctl {
        Ctl {
            listener,
            monitor: cfg.monitor,
            conns: HashMap::new(),
            next_conn: 1,
            open_mode: cfg.mode & 0o077 != 0,
            max_out: cfg.max_out,
            max_line: cfg.max_line,
            dropped: 0,
            waits: HashMap::new(),
            next_tag: 1,
            flows: VecDeque::new(),
            flow_cap: cfg.flow_cap,
            flow_records: 0,
            standing: Vec::new(),
            ended_bytes: HashMap::new(),
            shutdown: false,
        }
    }

    /// Queues one answer line for connection `id`.
    pub(in crate::daemon) fn send(&mut self, id: u64, v: &Value) {
        if let Some(c) = self.conns.get_mut(&id) {
            let _ = serde_json::to_writer(&mut c.wbuf, v);
            c.wbuf.push(b'\n');
        }
    }
}

/// An error answer: `kind` is one of `bad-request`, `unknown-instance`,
/// `bad-prefix`, `permission-denied`, `failed`.
pub(in crate::daemon) fn err(kind: &str, msg: impl Into<String>) -> Value {
    json!({"ok": false, "kind": kind, "error": msg.into()})
}

/// A group given by number or by name (looked up in `/etc/group`).
pub(super) fn group_id(g: &str) -> io::Result<u32> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    let text = std::fs::read_to_string("/etc/group")?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (name == g).then_some(gid)
        })
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no group {g:?} in /etc/group"),
            )
        })
}

impl Daemon {
    /// Accepts on `ctl.sock` (`monitor` false) or `monitor.sock`.
    pub(super) fn ctl_accept(&mut self, monitor: bool) {
        loop {
            let l = match (&self.ctl.monitor, monitor) {
                (Some((l, _, _)), true) => l,
                (None, true) => return,
                (_, false) => &self.ctl.listener,
            };
            let (stream, _) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "accept on the control socket");
                    return;
                }
            };
            let cred = rustix::net::sockopt::socket_peercred(&stream).ok();
            let (pid, uid, gid) = cred.map_or((0, u32::MAX, u32::MAX), |c| {
                (c.pid.as_raw_nonzero().get(), c.uid.as_raw(), c.gid.as_raw())
            });
            let me = rustix::process::geteuid().as_raw();
            let by_mode = match (&self.ctl.monitor, monitor) {
                (Some((_, mode, group)), true) => {
                    mode & 0o007 != 0
                        || (mode & 0o070 != 0
                            && gid == group.unwrap_or_else(|| rustix::process::getegid().as_raw()))
                }
                _ => self.ctl.open_mode,
            };
            let allowed = uid == 0 || uid == me || by_mode;
            let sock = if monitor { "monitor" } else { "ctl" };
            if allowed {
                info!(pid, uid, gid, sock, "controller connected");
            } else {
                warn!(
                    pid,
                    uid, gid, sock, "controller refused: uid/gid not allowed"
                );
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let id = self.ctl.next_conn;
            self.ctl.next_conn += 1;
            if let Err(e) = add(
                &self.epfd,
                stream.as_fd(),
                K_CTL | id,
                EventFlags::IN | EventFlags::RDHUP,
            ) {
                warn!(error = %e, "epoll registration of a controller");
                continue;
            }
            let mut c = CtlConn {
                stream,
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                sub: 0,
                discard: false,
                allowed,
                closing: false,
                pid,
                uid,
            };
            if !allowed {
                let line = err(
                    "permission-denied",
                    format!("uid {uid} may not control this driver"),
                );
                c.wbuf = format!("{line}\n").into_bytes();
                c.closing = true;
            }
            self.ctl.conns.insert(id, c);
        }
    }

    pub(super) fn ctl_readable(&mut self, id: u64) {
        let mut lines = Vec::new();
        {
            let Some(c) = self.ctl.conns.get_mut(&id) else {
                return;
            };
            let max_line = self.ctl.max_line;
            let mut buf = [0u8; 4096];
            loop {
                let n = match c.stream.read(&mut buf) {
                    Ok(0) => {
                        c.closing = true;
                        c.wbuf.clear();
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        c.closing = true;
                        break;
                    }
                };
                // Split as we go so that rbuf never holds more than one
                // line of at most max_line bytes.
                let mut chunk = &buf[..n];
                while !chunk.is_empty() {
                    let nl = chunk.iter().position(|&b| b == b'\n');
                    let (part, rest) = match nl {
                        Some(p) => (&chunk[..p], &chunk[p + 1..]),
                        None => (chunk, &chunk[chunk.len()..]),
                    };
                    if !c.discard {
                        c.rbuf.extend_from_slice(part);
                        if c.rbuf.len() > max_line {
                            c.rbuf.clear();
                            c.discard = true;
                            lines.push(None);
                        }
                    }
                    if nl.is_some() {
                        if !c.discard {
                            lines.push(Some(std::mem::take(&mut c.rbuf)));
                        }
                        c.discard = false;
                    }
                    chunk = rest;
                }
            }
            if !c.allowed {
                lines.clear();
            }
        }
        let max_line = self.ctl.max_line;
        for line in lines {
            let resp = match line {
                None => Some(err(
                    "bad-request",
                    format!("request line longer than {max_line} bytes; skipped"),
                )),
                Some(l) if l.iter().all(u8::is_ascii_whitespace) => None,
                Some(l) => match serde_json::from_slice::<Value>(&l) {
                    Ok(req) if req.is_object() => self.ctl_request(id, &req),
                    Ok(_) => Some(err("bad-request", "a request is a JSON object")),
                    Err(e) => Some(err("bad-request", format!("not a JSON request: {e}"))),
                },
            };
            if let Some(r) = resp {
                self.ctl.send(id, &r);
            }
        }
        self.ctl_flush();
    }

    /// Writes pending output; drops closed or stuck clients.
    pub(super) fn ctl_flush(&mut self) {
        let mut dead = Vec::new();
        for (&id, c) in self.ctl.conns.iter_mut() {
            while !c.wbuf.is_empty() {
                match c.stream.write(&c.wbuf) {
                    Ok(n) => {
                        c.wbuf.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.closing = true;
                        c.wbuf.clear();
                    }
                }
            }
            if c.closing && c.wbuf.is_empty() {
                dead.push(id);
            } else if c.wbuf.len() > self.ctl.max_out + REPLY_ROOM {
                self.ctl.dropped += 1;
                warn!(
                    conn = id,
                    pid = c.pid,
                    uid = c.uid,
                    "client not reading its replies; dropped"
                );
                dead.push(id);
            }
        }
        for id in dead {
            if let Some(c) = self.ctl.conns.remove(&id) {
                let _ = epoll::delete(&self.epfd, &c.stream);
            }
            self.ctl.waits.retain(|_, w| w.conn != id);
        }
    }

    // ----- flows -----
}
