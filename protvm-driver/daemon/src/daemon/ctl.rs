//! The management socket (`DIR/ctl.sock`) and the balancer.
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
//! ```
//!
//! `kind` is one of `bad-request`, `unknown-instance`, `bad-prefix`,
//! `permission-denied`, `failed`. A request that fails changes nothing.
//! `flows` with `"follow":true` answers once, then sends one line per flow
//! record as it arrives until the client disconnects. `subscribe` is the
//! monitor stream: flow records, instance events and mitigation events,
//! each a line with `"v":1` and a `"type"` (schema: `docs/monitor.md`).
//! Mitigations are kept and replayed, in order, to every instance that
//! joins later.
//!
//! The same protocol is served on `DIR/monitor.sock` (mode
//! `--monitor-mode`, group `--monitor-group`), meant for monitoring
//! scripts run by another user or group.
//!
//! Access: the socket file's mode (`--ctl-mode`, default 0600) is the
//! gate; SO_PEERCRED is logged for every connection, and a peer whose uid
//! is neither root nor the driver's is refused unless the mode grants
//! other access, or group access and the peer's gid is the socket's group.
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
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Instant, SystemTime};

use driver_core::{InstId, InstState, Violation};
use ins_protocol::msg::{
    CloseReason, FlowRecord, FlowState, MitigationOf, OwnedMitigation, Prefix,
};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::policy::Policy;
use super::{Daemon, K_CTL, add};
use rustix::event::epoll::{self, EventFlags};

/// Room for replies (the `flows` backlog) on top of `--monitor-buffer`
/// before a client that does not read its replies is dropped.
const REPLY_ROOM: usize = 16 << 20;

/// Monitor schema version (`"v"` of every streamed line).
pub(super) const SCHEMA_V: u64 = 1;
/// Subscription bits.
const SUB_FLOW: u8 = 1;
const SUB_INSTANCE: u8 = 2;
const SUB_MITIGATION: u8 = 4;
const SUB_ALL: u8 = SUB_FLOW | SUB_INSTANCE | SUB_MITIGATION;

pub(super) struct CtlConn {
    stream: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// What this connection streams (`SUB_*`); 0 = request/reply only.
    sub: u8,
    /// Skipping the rest of an overlong line.
    discard: bool,
    allowed: bool,
    closing: bool,
    pid: i32,
    uid: u32,
}

struct Wait {
    conn: u64,
    remaining: usize,
    sent: usize,
    failed: Vec<Value>,
    what: Value,
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

struct FlowEntry {
    inst: InstId,
    at: SystemTime,
    rec: FlowRecord,
}

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
    /// Instances reported overloaded (above the autoscale threshold).
    overloaded: std::collections::HashSet<InstId>,
    waits: HashMap<u64, Wait>,
    next_tag: u64,
    flows: VecDeque<FlowEntry>,
    flow_cap: usize,
    /// Standing mitigations, replayed to joining instances.
    standing: Vec<OwnedMitigation>,
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
            overloaded: std::collections::HashSet::new(),
            waits: HashMap::new(),
            next_tag: 1,
            flows: VecDeque::new(),
            flow_cap: cfg.flow_cap,
            standing: Vec::new(),
            shutdown: false,
        }
    }
}

/// Balancer state.
pub(super) struct Balancer {
    pub(super) policy: Policy,
    pub(super) target: usize,
    /// Draining instances: drain deadline, heartbeat seq when it began.
    retiring: HashMap<InstId, (Instant, u64)>,
    idle_since: HashMap<InstId, Instant>,
    last_auto: Instant,
    last_rotate: Instant,
}

impl Balancer {
    pub(super) fn new(policy: Policy, target: usize) -> Balancer {
        Balancer {
            policy,
            target,
            retiring: HashMap::new(),
            idle_since: HashMap::new(),
            last_auto: Instant::now(),
            last_rotate: Instant::now(),
        }
    }
}

fn err(kind: &str, msg: impl Into<String>) -> Value {
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

/// Parses `ADDR` or `ADDR/LEN`.
pub fn parse_prefix(s: &str) -> Result<Prefix, String> {
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = a
        .parse()
        .map_err(|_| format!("bad prefix {s:?}: {a:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match l {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| format!("bad prefix {s:?}: length must be 0 ..= {max}"))?,
    };
    Prefix::new(ip, len).map_err(|e| format!("bad prefix {s:?}: {e}"))
}

fn prefix_str(p: &Prefix) -> String {
    format!("{}/{}", p.addr, p.len)
}

fn mitigation_json(m: &OwnedMitigation) -> Value {
    match m {
        MitigationOf::Block(p) => json!({"block": prefix_str(p)}),
        MitigationOf::RateLimit {
            prefix,
            conn_per_sec,
            bytes_per_sec,
            ..
        } => {
            json!({"limit": prefix_str(prefix), "conn_rate": conn_per_sec, "byte_rate": bytes_per_sec})
        }
        other => json!({"other": format!("{other:?}")}),
    }
}

fn reason_str(r: CloseReason) -> &'static str {
    match r {
        CloseReason::None => "",
        CloseReason::Normal => "normal",
        CloseReason::Reset => "reset",
        CloseReason::Timeout => "timeout",
        CloseReason::Mitigated => "mitigated",
        CloseReason::Error => "error",
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn flow_json(f: &FlowEntry) -> Value {
    let r = &f.rec;
    let at =
        f.at.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
    json!({
        "v": SCHEMA_V,
        "type": "flow",
        "flow": format!("{}:{}", f.inst, r.flow_id),
        "inst": f.inst,
        "flow_id": r.flow_id,
        "proto": if r.proto == 6 { "tcp" } else { "udp" },
        "local": r.local.to_string(),
        "remote": r.remote.to_string(),
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
        "segs_in": r.segs_in,
        "segs_out": r.segs_out,
        "start_ns": r.start_ns,
        "last_ns": r.last_ns,
        "state": if r.state == FlowState::Active { "active" } else { "closed" },
        "reason": reason_str(r.reason),
        "tcp_flags": r.tcp_flags,
        "reported_at": at,
    })
}

impl Daemon {
    // ----- connections -----

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
                self.ctl_send(id, &r);
            }
        }
        self.ctl_flush();
    }

    fn ctl_send(&mut self, id: u64, v: &Value) {
        if let Some(c) = self.ctl.conns.get_mut(&id) {
            let _ = serde_json::to_writer(&mut c.wbuf, v);
            c.wbuf.push(b'\n');
        }
    }

    /// Streams `v` (one line) to every connection subscribed to `bit`.
    /// Never blocks: what the socket does not take is buffered, and a
    /// subscriber whose buffer would exceed `--monitor-buffer` is dropped.
    fn ctl_stream(&mut self, bit: u8, v: &Value) {
        if !self.ctl.conns.values().any(|c| c.sub & bit != 0) {
            return;
        }
        let mut line = match serde_json::to_vec(v) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        let max_out = self.ctl.max_out;
        for (&id, c) in self.ctl.conns.iter_mut() {
            if c.sub & bit == 0 || c.closing {
                continue;
            }
            let mut off = 0;
            if c.wbuf.is_empty() {
                // Straight to the socket when nothing is queued.
                while off < line.len() {
                    match c.stream.write(&line[off..]) {
                        Ok(n) => off += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            let rest = &line[off..];
            if rest.is_empty() {
                continue;
            }
            if c.wbuf.len() + rest.len() > max_out {
                self.ctl.dropped += 1;
                warn!(
                    conn = id,
                    pid = c.pid,
                    uid = c.uid,
                    buffered = c.wbuf.len(),
                    dropped_total = self.ctl.dropped,
                    "slow subscriber dropped (output buffer full)"
                );
                c.sub = 0;
                c.closing = true;
                c.wbuf.clear();
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
                continue;
            }
            c.wbuf.extend_from_slice(rest);
        }
    }

    /// Streams an instance event (`spawned`, `joined`, `died`, `exited`,
    /// `overloaded`, `recovered`, `draining`) with extra fields.
    pub(super) fn ctl_instance_event(&mut self, event: &str, inst: Option<InstId>, extra: Value) {
        let mut v = json!({"v": SCHEMA_V, "type": "instance", "event": event,
            "inst": inst, "at": unix_now()});
        if let (Some(o), Value::Object(x)) = (v.as_object_mut(), extra) {
            o.extend(x);
        }
        self.ctl_stream(SUB_INSTANCE, &v);
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

    pub(super) fn ctl_flow(&mut self, inst: InstId, rec: FlowRecord) {
        let e = FlowEntry {
            inst,
            at: SystemTime::now(),
            rec,
        };
        if self.ctl.conns.values().any(|c| c.sub & SUB_FLOW != 0) {
            let v = flow_json(&e);
            self.ctl_stream(SUB_FLOW, &v);
        }
        if self.ctl.flow_cap == 0 {
            return;
        }
        if self.ctl.flows.len() >= self.ctl.flow_cap {
            self.ctl.flows.pop_front();
        }
        self.ctl.flows.push_back(e);
    }

    // ----- mitigations -----

    /// Sends `cmd` to `targets`; the answer goes to `conn` when all replied.
    fn mitigate_to(
        &mut self,
        conn: u64,
        cmd: OwnedMitigation,
        targets: &[InstId],
    ) -> Option<Value> {
        let tag = self.ctl.next_tag;
        self.ctl.next_tag += 1;
        let mut sent = 0;
        for &inst in targets {
            if self.core.mitigate(inst, cmd, tag, &mut self.actions) {
                sent += 1;
            }
        }
        self.apply(None, None);
        let mut what = match cmd {
            MitigationOf::Unblock(p) => json!({"action": "unblock", "prefix": prefix_str(&p)}),
            MitigationOf::ClearRateLimit(p) => {
                json!({"action": "unlimit", "prefix": prefix_str(&p)})
            }
            MitigationOf::CloseFlow { flow_id } => json!({"action": "close", "flow_id": flow_id}),
            ref m => {
                let mut v = mitigation_json(m);
                if let Some(o) = v.as_object_mut() {
                    if let Some(p) = o.remove("block") {
                        o.insert("action".into(), "block".into());
                        o.insert("prefix".into(), p);
                    } else if let Some(p) = o.remove("limit") {
                        o.insert("action".into(), "limit".into());
                        o.insert("prefix".into(), p);
                    }
                }
                v
            }
        };
        if let (Some(o), Some(c)) = (what.as_object_mut(), self.ctl.conns.get(&conn)) {
            o.insert("by".into(), json!({"pid": c.pid, "uid": c.uid}));
        }
        if sent == 0 {
            self.mitigation_event(what, 0, &[]);
            return Some(json!({"ok": true, "instances": 0, "failed": []}));
        }
        self.ctl.waits.insert(
            tag,
            Wait {
                conn,
                remaining: sent,
                sent,
                failed: Vec::new(),
                what,
            },
        );
        None
    }

    /// Streams a mitigation event once every targeted instance answered.
    fn mitigation_event(&mut self, what: Value, sent: usize, failed: &[Value]) {
        let mut v = json!({"v": SCHEMA_V, "type": "mitigation",
            "event": if sent > 0 && failed.len() == sent { "failed" } else { "applied" },
            "instances": sent, "failed": failed, "at": unix_now()});
        if let (Some(o), Value::Object(x)) = (v.as_object_mut(), what) {
            o.extend(x);
        }
        self.ctl_stream(SUB_MITIGATION, &v);
    }

    pub(super) fn ctl_mitigate_done(&mut self, inst: InstId, tag: u64, errno: i32) {
        if errno != 0 {
            warn!(inst, tag, errno, "mitigation failed on instance");
        }
        let Some(w) = self.ctl.waits.get_mut(&tag) else {
            return;
        };
        w.remaining = w.remaining.saturating_sub(1);
        if errno != 0 {
            w.failed.push(json!({"inst": inst, "errno": errno,
                "error": io::Error::from_raw_os_error(errno).to_string()}));
        }
        if w.remaining == 0
            && let Some(w) = self.ctl.waits.remove(&tag)
        {
            let ok = w.failed.len() < w.sent;
            let first = w
                .failed
                .first()
                .and_then(|f| f.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let v = json!({"ok": ok, "kind": if ok { "" } else { "failed" },
                "error": if ok { String::new() } else { format!("refused by every instance: {first}") },
                "instances": w.sent, "failed": w.failed});
            self.ctl_send(w.conn, &v);
            self.mitigation_event(w.what, w.sent, &w.failed);
        }
    }

    /// Replays standing mitigations to a joining instance.
    pub(super) fn ctl_replay(&mut self, inst: InstId) {
        let list = self.ctl.standing.clone();
        for m in list {
            self.core.mitigate(inst, m, 0, &mut self.actions);
        }
        self.apply(None, None);
    }

    fn live_ids(&self) -> Vec<InstId> {
        self.core
            .instances()
            .filter(|(_, i)| i.state != InstState::Dead)
            .map(|(id, _)| id)
            .collect()
    }

    fn known_live(&self, v: &Value) -> Result<InstId, Value> {
        let id = v
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| err("bad-request", "missing numeric \"id\""))?;
        let id = InstId::try_from(id)
            .map_err(|_| err("unknown-instance", format!("no live instance {id}")))?;
        if self.live_ids().contains(&id) {
            Ok(id)
        } else {
            Err(err("unknown-instance", format!("no live instance {id}")))
        }
    }

    // ----- requests -----

    fn ctl_request(&mut self, conn: u64, req: &Value) -> Option<Value> {
        let cmd = req.get("cmd").and_then(Value::as_str).unwrap_or("");
        let prefix = || -> Result<Prefix, Value> {
            let s = req
                .get("prefix")
                .and_then(Value::as_str)
                .ok_or_else(|| err("bad-request", "missing \"prefix\""))?;
            parse_prefix(s).map_err(|e| err("bad-prefix", e))
        };
        match cmd {
            "status" => Some(self.ctl_status()),
            "list" => Some(self.ctl_list()),
            "flows" => {
                let n = match req.get("limit") {
                    None | Some(Value::Null) => usize::MAX,
                    Some(v) => match v.as_u64() {
                        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                        None => {
                            return Some(err(
                                "bad-request",
                                "\"limit\" must be a non-negative integer",
                            ));
                        }
                    },
                };
                let follow = match req.get("follow") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Some(err("bad-request", "\"follow\" must be a boolean")),
                };
                let skip = self.ctl.flows.len().saturating_sub(n);
                let flows: Vec<Value> = self.ctl.flows.iter().skip(skip).map(flow_json).collect();
                if follow && let Some(c) = self.ctl.conns.get_mut(&conn) {
                    c.sub |= SUB_FLOW;
                }
                Some(json!({"ok": true, "flows": flows}))
            }
            "subscribe" => {
                let mask = match req.get("types") {
                    None | Some(Value::Null) => SUB_ALL,
                    Some(Value::Array(a)) if !a.is_empty() => {
                        let mut m = 0;
                        for t in a {
                            m |= match t.as_str() {
                                Some("flow") => SUB_FLOW,
                                Some("instance") => SUB_INSTANCE,
                                Some("mitigation") => SUB_MITIGATION,
                                _ => {
                                    return Some(err(
                                        "bad-request",
                                        format!(
                                            "unknown event type {t}; expected \"flow\", \"instance\" or \"mitigation\""
                                        ),
                                    ));
                                }
                            };
                        }
                        m
                    }
                    Some(_) => {
                        return Some(err(
                            "bad-request",
                            "\"types\" must be a non-empty array of strings",
                        ));
                    }
                };
                if let Some(c) = self.ctl.conns.get_mut(&conn) {
                    c.sub |= mask;
                }
                let names: Vec<&str> = [
                    (SUB_FLOW, "flow"),
                    (SUB_INSTANCE, "instance"),
                    (SUB_MITIGATION, "mitigation"),
                ]
                .iter()
                .filter(|(b, _)| mask & b != 0)
                .map(|(_, n)| *n)
                .collect();
                Some(json!({"ok": true, "v": SCHEMA_V, "subscribed": names}))
            }
            "block" | "unblock" => {
                let p = match prefix() {
                    Ok(p) => p,
                    Err(e) => return Some(e),
                };
                let m = if cmd == "block" {
                    if !self.ctl.standing.contains(&MitigationOf::Block(p)) {
                        self.ctl.standing.push(MitigationOf::Block(p));
                    }
                    MitigationOf::Block(p)
                } else {
                    self.ctl.standing.retain(|x| *x != MitigationOf::Block(p));
                    MitigationOf::Unblock(p)
                };
                info!(cmd, prefix = %prefix_str(&p), "mitigation");
                let ids = self.live_ids();
                self.mitigate_to(conn, m, &ids)
            }
            "limit" => {
                let p = match prefix() {
                    Ok(p) => p,
                    Err(e) => return Some(e),
                };
                let num = |k: &str| -> Result<u64, Value> {
                    match req.get(k) {
                        None | Some(Value::Null) => Ok(0),
                        Some(v) => v.as_u64().ok_or_else(|| {
                            err(
                                "bad-request",
                                format!("\"{k}\" must be a non-negative integer"),
                            )
                        }),
                    }
                };
                let (cr, br) = match (num("conn_rate"), num("byte_rate")) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => return Some(e),
                };
                let Ok(cr32) = u32::try_from(cr) else {
                    return Some(err("bad-request", "conn_rate too large"));
                };
                self.ctl.standing.retain(
                    |x| !matches!(x, MitigationOf::RateLimit { prefix, .. } if *prefix == p),
                );
                let m = if cr == 0 && br == 0 {
                    MitigationOf::ClearRateLimit(p)
                } else {
                    let m = MitigationOf::RateLimit {
                        prefix: p,
                        conn_per_sec: cr32,
                        conn_burst: cr32,
                        bytes_per_sec: br,
                        bytes_burst: br,
                    };
                    self.ctl.standing.push(m);
                    m
                };
                info!(prefix = %prefix_str(&p), conn_rate = cr, byte_rate = br, "rate limit");
                let ids = self.live_ids();
                self.mitigate_to(conn, m, &ids)
            }
            "close" => {
                let s = req.get("flow").and_then(Value::as_str).unwrap_or("");
                let (inst, flow) = match s.split_once(':') {
                    Some((i, f)) => (i.parse::<InstId>().ok(), f.parse::<u64>().ok()),
                    None => (None, s.parse::<u64>().ok()),
                };
                let Some(flow_id) = flow else {
                    return Some(err(
                        "bad-request",
                        format!("bad flow {s:?}: expected INST:FLOW_ID or FLOW_ID"),
                    ));
                };
                let targets = match inst {
                    Some(i) if self.live_ids().contains(&i) => vec![i],
                    Some(i) => {
                        return Some(err("unknown-instance", format!("no live instance {i}")));
                    }
                    None => self.live_ids(),
                };
                self.mitigate_to(conn, MitigationOf::CloseFlow { flow_id }, &targets)
            }
            "drain" => {
                let id = match self.known_live(req) {
                    Ok(i) => i,
                    Err(e) => return Some(e),
                };
                self.core.set_draining(id);
                let closed = self.core.drop_replicas(id, &mut self.actions);
                self.apply(None, None);
                info!(inst = id, listeners_closed = closed, "draining");
                Some(json!({"ok": true, "draining": id, "listeners_closed": closed}))
            }
            "stop" => {
                let id = match self.known_live(req) {
                    Ok(i) => i,
                    Err(e) => return Some(e),
                };
                self.bal.target = self.bal.target.saturating_sub(1);
                self.retire(id);
                Some(json!({"ok": true, "stopping": id, "target": self.bal.target}))
            }
            "spawn" => {
                let n = match req.get("count") {
                    None | Some(Value::Null) => 1,
                    Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                        Some(n) => n,
                        None => {
                            return Some(err(
                                "bad-request",
                                "\"count\" must be a positive integer",
                            ));
                        }
                    },
                };
                if n == 0 || self.sup.bin.is_none() {
                    return Some(err(
                        "bad-request",
                        if n == 0 {
                            "count must be at least 1"
                        } else {
                            "the driver was started without --ins-bin"
                        },
                    ));
                }
                let max = self.bal.policy.max_instances;
                if self.bal.target.checked_add(n).is_none_or(|t| t > max) {
                    return Some(err(
                        "bad-request",
                        format!("{n} more instances would exceed max_instances = {max}"),
                    ));
                }
                self.bal.target += n;
                self.balance();
                Some(json!({"ok": true, "target": self.bal.target}))
            }
            "scale" => {
                let Some(n) = req.get("n").and_then(Value::as_u64).map(|n| n as usize) else {
                    return Some(err("bad-request", "missing numeric \"n\""));
                };
                let max = self.bal.policy.max_instances;
                if n > max || self.sup.bin.is_none() {
                    return Some(err(
                        "bad-request",
                        if n > max {
                            format!("{n} exceeds max_instances = {max}")
                        } else {
                            "the driver was started without --ins-bin".into()
                        },
                    ));
                }
                self.bal.target = n;
                let retiring = self.balance();
                Some(json!({"ok": true, "target": n, "retiring": retiring}))
            }
            "shutdown" => {
                self.ctl.shutdown = true;
                Some(json!({"ok": true}))
            }
            "" => Some(err("bad-request", "missing \"cmd\"")),
            other => Some(err("bad-request", format!("unknown command {other:?}"))),
        }
    }

    fn ctl_status(&self) -> Value {
        let mut live = 0;
        let mut draining = 0;
        for (_, i) in self.core.instances() {
            match i.state {
                InstState::Live => live += 1,
                InstState::Draining => draining += 1,
                InstState::Dead => {}
            }
        }
        let p = &self.bal.policy;
        json!({
            "ok": true,
            "pid": std::process::id(),
            "uptime_s": self.start.elapsed().as_secs(),
            "run_dir": self.run_dir.display().to_string(),
            "instances": {"live": live, "draining": draining, "target": self.bal.target,
                          "children": self.sup.kids.len()},
            "sockets": self.core.socket_count(),
            "shims": self.shims.len(),
            "controllers": self.ctl.conns.len(),
            "monitor": {"v": SCHEMA_V,
                        "subscribers": self.ctl.conns.values().filter(|c| c.sub != 0).count(),
                        "dropped_subscribers": self.ctl.dropped,
                        "buffer_bytes": self.ctl.max_out,
                        "max_line": self.ctl.max_line,
                        "socket": self.ctl.monitor.as_ref().map(|(_, m, g)| json!({"mode": format!("{m:o}"), "group": g}))},
            "flows_kept": self.ctl.flows.len(),
            "mitigations": self.ctl.standing.iter().map(mitigation_json).collect::<Vec<_>>(),
            "policy": {"min_instances": p.min_instances, "max_instances": p.max_instances,
                       "autoscale": p.autoscale, "scale_up_at": p.scale_up_at,
                       "idle_retire_s": p.idle_retire_s, "rotate_s": p.rotate_s,
                       "drain_timeout_ms": p.drain_timeout_ms},
        })
    }

    fn ctl_list(&self) -> Value {
        let mut out = Vec::new();
        for (id, i) in self.core.instances() {
            if i.state == InstState::Dead {
                continue;
            }
            let x = self.insts.get(&id);
            let st = i.stats.unwrap_or_default();
            out.push(json!({
                "id": id,
                "pid": x.map_or(0, |x| x.pid),
                "tag": x.map_or(0, |x| x.hello_id),
                "state": match i.state { InstState::Live => "live", InstState::Draining => "draining", InstState::Dead => "dead" },
                "sockets_used": st.sockets_used,
                "sockets_max": st.sockets_max,
                "connections": st.connections,
                "listeners": st.listeners,
                "bytes_in": st.bytes_in,
                "bytes_out": st.bytes_out,
                "driver_sockets": i.sockets,
                "accepted": i.accepted,
                "age_s": x.map_or(0, |x| x.joined.elapsed().as_secs()),
                "heartbeat": i.stats.is_some(),
            }));
        }
        json!({"ok": true, "instances": out})
    }

    // ----- balancer -----

    /// Starts draining `inst`; it is stopped when idle or after the drain
    /// timeout.
    fn retire(&mut self, inst: InstId) {
        if self.bal.retiring.contains_key(&inst) {
            return;
        }
        let deadline =
            Instant::now() + std::time::Duration::from_millis(self.bal.policy.drain_timeout_ms);
        let seq = self
            .core
            .instances()
            .find(|(id, _)| *id == inst)
            .and_then(|(_, i)| i.stats)
            .map_or(0, |s| s.seq);
        self.bal.retiring.insert(inst, (deadline, seq));
        if let Some(k) = self.sup.by_inst(inst) {
            k.retiring = true;
        }
        self.core.set_draining(inst);
        let closed = self.core.drop_replicas(inst, &mut self.actions);
        self.apply(None, None);
        info!(inst, listeners_closed = closed, "retiring: draining");
        self.ctl_instance_event("draining", Some(inst), json!({"listeners_closed": closed}));
    }

    /// Brings the number of children to the target: spawns or retires.
    /// Returns the instances it started retiring.
    pub(super) fn balance(&mut self) -> Vec<InstId> {
        let mut retired = Vec::new();
        if self.sup.bin.is_none() {
            return retired;
        }
        // Surplus: retire the newest joined children first.
        while self.sup.active() > self.bal.target {
            let pick = self
                .sup
                .kids
                .iter()
                .filter(|k| !k.retiring)
                .max_by_key(|k| (k.inst.is_none(), k.tag))
                .map(|k| (k.tag, k.inst));
            match pick {
                Some((_, Some(inst))) => {
                    self.retire(inst);
                    retired.push(inst);
                }
                Some((tag, None)) => {
                    // Not joined yet: just stop it.
                    if let Some(k) = self.sup.by_tag(tag) {
                        k.retiring = true;
                        let _ = k.child.kill();
                    }
                }
                None => break,
            }
        }
        if self.sup.hold_until.is_some_and(|t| Instant::now() < t) {
            return retired;
        }
        while self.sup.active() < self.bal.target {
            match self.sup.spawn() {
                Ok(tag) => {
                    let pid = self.sup.by_tag(tag).map(|k| k.child.id());
                    self.ctl_instance_event("spawned", None, json!({"tag": tag, "pid": pid}));
                }
                Err(e) => {
                    warn!(error = %e, "spawning an instance");
                    self.sup.hold_until = Some(Instant::now() + std::time::Duration::from_secs(1));
                    break;
                }
            }
        }
        retired
    }

    /// Runs every tick: reaping, respawning, stopping drained instances,
    /// autoscale and rotation.
    pub(super) fn balancer_tick(&mut self) {
        for (tag, inst, retiring) in self.sup.reap() {
            self.ctl_instance_event("exited", inst, json!({"tag": tag, "retiring": retiring}));
            if let Some(inst) = inst {
                self.bal.retiring.remove(&inst);
                self.bal.idle_since.remove(&inst);
                if self.insts.contains_key(&inst) {
                    self.fail_instance(inst, Violation::ChannelFailed);
                }
            }
        }
        // Instances the core declared dead (heartbeat) whose process runs.
        let dead: Vec<InstId> = self
            .sup
            .kids
            .iter()
            .filter_map(|k| k.inst)
            .filter(|i| !self.insts.contains_key(i))
            .collect();
        for inst in dead {
            let stopped = self
                .sup
                .by_inst(inst)
                .is_some_and(|k| k.stopped_at.is_some() || k.retiring);
            if !stopped {
                warn!(
                    inst,
                    "instance declared dead while its process runs; killing it"
                );
                self.sup.kill_inst(inst);
            }
        }
        // Drained or overdue: close the channel.
        let now = Instant::now();
        let ready: Vec<InstId> = self
            .bal
            .retiring
            .iter()
            .filter(|(inst, (deadline, seq))| {
                // Idle by a heartbeat sent after the drain began.
                let idle = self
                    .core
                    .instances()
                    .find(|(id, _)| id == *inst)
                    .is_some_and(|(_, i)| {
                        i.stats.is_some_and(|s| s.seq > *seq && s.connections == 0)
                    });
                idle || now >= *deadline
            })
            .map(|(&i, _)| i)
            .collect();
        for inst in ready {
            self.bal.retiring.remove(&inst);
            info!(inst, "stopping (drained or drain timeout)");
            if let Some(k) = self.sup.by_inst(inst) {
                k.retiring = true;
                k.stopped_at = Some(now);
            }
            self.fail_instance(inst, Violation::Stopped);
        }
        self.overload_events();
        self.autoscale();
        self.balance();
    }

    /// Streams `overloaded` when an instance's socket use crosses the
    /// autoscale threshold (`scale_up_at`) and `recovered` when it falls
    /// back under it, from the latest heartbeats.
    fn overload_events(&mut self) {
        let at = self.bal.policy.scale_up_at;
        let mut changes = Vec::new();
        for (id, i) in self.core.instances() {
            let Some(s) = i.stats else { continue };
            let over = i.state != InstState::Dead
                && s.sockets_max > 0
                && f64::from(s.sockets_used) > at * f64::from(s.sockets_max);
            if over != self.ctl.overloaded.contains(&id) {
                changes.push((id, over, s.sockets_used, s.sockets_max));
            }
        }
        let known: Vec<InstId> = self.core.instances().map(|(id, _)| id).collect();
        let gone: Vec<InstId> = self
            .ctl
            .overloaded
            .iter()
            .copied()
            .filter(|id| !known.contains(id))
            .collect();
        for id in gone {
            self.ctl.overloaded.remove(&id);
        }
        for (id, over, used, max) in changes {
            if over {
                self.ctl.overloaded.insert(id);
                warn!(
                    inst = id,
                    sockets_used = used,
                    sockets_max = max,
                    "instance overloaded"
                );
            } else {
                self.ctl.overloaded.remove(&id);
            }
            self.ctl_instance_event(
                if over { "overloaded" } else { "recovered" },
                Some(id),
                json!({"sockets_used": used, "sockets_max": max, "scale_up_at": at}),
            );
        }
    }

    fn autoscale(&mut self) {
        let p = self.bal.policy.clone();
        let now = Instant::now();
        if p.rotate_s > 0 && now.duration_since(self.bal.last_rotate).as_secs() >= p.rotate_s {
            self.bal.last_rotate = now;
            let oldest = self
                .sup
                .kids
                .iter()
                .filter(|k| !k.retiring && k.inst.is_some())
                .min_by_key(|k| k.tag)
                .and_then(|k| k.inst);
            if let Some(inst) = oldest {
                info!(inst, "rotation: replacing the oldest instance");
                self.retire(inst);
            }
        }
        if !p.autoscale || now.duration_since(self.bal.last_auto).as_millis() < 1000 {
            return;
        }
        self.bal.last_auto = now;
        let live: Vec<(InstId, driver_core::Instance)> = self
            .core
            .instances()
            .filter(|(id, i)| i.state == InstState::Live && !self.bal.retiring.contains_key(id))
            .map(|(id, i)| (id, i.clone()))
            .collect();
        if live.is_empty() {
            return;
        }
        let loaded = live.iter().all(|(_, i)| {
            i.stats.is_some_and(|s| {
                s.sockets_max > 0
                    && f64::from(s.sockets_used) > p.scale_up_at * f64::from(s.sockets_max)
            })
        });
        if loaded && self.bal.target < p.max_instances && self.sup.active() >= self.bal.target {
            self.bal.target += 1;
            info!(
                target = self.bal.target,
                "autoscale: every instance above {}; spawning", p.scale_up_at
            );
            return;
        }
        for (id, i) in &live {
            let idle = i.stats.is_some_and(|s| s.connections == 0);
            if idle {
                self.bal.idle_since.entry(*id).or_insert(now);
            } else {
                self.bal.idle_since.remove(id);
            }
        }
        if p.idle_retire_s > 0 && self.bal.target > p.min_instances.max(1) {
            let victim = self
                .bal
                .idle_since
                .iter()
                .filter(|(_, t)| now.duration_since(**t).as_secs() >= p.idle_retire_s)
                .map(|(&id, _)| id)
                .max();
            if let Some(id) = victim {
                self.bal.idle_since.remove(&id);
                self.bal.target -= 1;
                info!(
                    inst = id,
                    target = self.bal.target,
                    "autoscale: retiring an idle instance"
                );
                self.retire(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_prefix;

    #[test]
    fn prefixes() {
        assert_eq!(parse_prefix("10.0.0.0/8").unwrap().len, 8);
        assert_eq!(parse_prefix("10.1.2.3").unwrap().len, 32);
        assert_eq!(parse_prefix("::1").unwrap().len, 128);
        assert!(parse_prefix("10.0.0.0/33").is_err());
        assert!(parse_prefix("10.0.0.1/8").is_err(), "host bits set");
        assert!(parse_prefix("nonsense").is_err());
        assert!(parse_prefix("10.0.0.0/").is_err());
    }
}
