//! `GET /metrics`: the driver's figures in the Prometheus text exposition
//! format (version 0.0.4), served on `--metrics ADDR:PORT` from the event
//! loop.
//!
//! The figures are those of the `status` and `list` answers
//! ([`super::ctl`]): the page is rendered from the same two JSON values,
//! so the two views never disagree.
//!
//! The responder is a small HTTP/1.0–1.1 server: one request per
//! connection (`Connection: close`), `GET` or `HEAD` of `/metrics`
//! (a query string is ignored), every other path 404, every other method
//! 405. Nothing here blocks: sockets are non-blocking and edge-triggered,
//! a request head longer than `--metrics-max-request` gets 431, a scraper
//! that has not sent its request and read its answer within
//! `--metrics-timeout-ms` is disconnected, and beyond
//! `--metrics-max-clients` connections new ones are closed at once. Each
//! of these is counted (`ins_metrics_scrapers_refused_total`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::event::epoll::EventFlags;
use serde_json::Value;
use tracing::{info, warn};

use super::Daemon;
use super::event_loop::{K_METRICS, add};

/// The metrics endpoint's limits.
pub(super) struct MetricsConfig {
    pub(super) max_clients: usize,
    pub(super) max_request: usize,
    pub(super) timeout: Duration,
}

/// One scraper connection.
struct Scraper {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    woff: usize,
    /// The answer is queued (further input is read and discarded).
    answered: bool,
    /// Bytes read past the request head (discarded); more than
    /// `--metrics-max-request` of them ends the connection.
    extra: usize,
    deadline: Instant,
}

/// The metrics listener and its connections.
pub(super) struct Metrics {
    listener: TcpListener,
    conns: HashMap<u64, Scraper>,
    next: u64,
    cfg: MetricsConfig,
    /// Connections closed unanswered: over the client limit, over the
    /// request size, or past the timeout.
    refused: u64,
    /// Answers sent (any status).
    scrapes: u64,
}

/// What a request head asks for.
enum Request {
    /// `GET` (`head` false) or `HEAD` of `/metrics`.
    Metrics { head: bool },
    /// Any other answer: status line and body.
    Other(&'static str, &'static str),
}

/// Parses a complete request head (up to, not including, the blank line).
fn parse_head(head: &[u8]) -> Request {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .unwrap_or("")
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Other("400 Bad Request", "bad request line\n");
    };
    if version != "HTTP/1.0" && version != "HTTP/1.1" {
        return Request::Other("505 HTTP Version Not Supported", "HTTP/1.0 or 1.1 only\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Request::Other("404 Not Found", "only /metrics is served here\n");
    }
    match method {
        "GET" => Request::Metrics { head: false },
        "HEAD" => Request::Metrics { head: true },
        _ => Request::Other("405 Method Not Allowed", "GET or HEAD only\n"),
    }
}

/// Where the request head ends (index of the byte after the blank line).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn response(status: &str, ctype: &str, body: &str, head: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        r.push_str("Allow: GET, HEAD\r\n");
    }
    r.push_str("\r\n");
    if !head {
        r.push_str(body);
    }
    r.into_bytes()
}

/// A metric family being written: HELP and TYPE once, then samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    /// One sample; `labels` as `("k", "v")` pairs. A figure missing from
    /// the answer is left out rather than shown as 0.
    fn sample(&mut self, labels: &[(&str, &str)], v: Option<u64>) {
        let Some(v) = v else { return };
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                for c in val.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {v}");
    }
}

/// The page: `status` and `list` are the ctl answers; `own` the
/// endpoint's (refused, scrapes) counters.
fn render(status: &Value, list: &Value, own: (u64, u64)) -> String {
    let mut o = String::with_capacity(4096);
    let u = |v: &Value| v.as_u64();
    let insts = list["instances"].as_array().cloned().unwrap_or_default();

    let mut f = Family::new(
        &mut o,
        "ins_instances",
        "gauge",
        "Instances by state (live, draining).",
    );
    f.sample(&[("state", "live")], u(&status["instances"]["live"]));
    f.sample(
        &[("state", "draining")],
        u(&status["instances"]["draining"]),
    );
    Family::new(
        &mut o,
        "ins_instances_target",
        "gauge",
        "Instances the balancer aims to keep running.",
    )
    .sample(&[], u(&status["instances"]["target"]));
    Family::new(
        &mut o,
        "ins_instance_processes",
        "gauge",
        "ins child processes the driver supervises.",
    )
    .sample(&[], u(&status["instances"]["children"]));
    Family::new(
        &mut o,
        "ins_sockets",
        "gauge",
        "Sockets the driver holds for programs under the shim.",
    )
    .sample(&[], u(&status["sockets"]));
    Family::new(
        &mut o,
        "ins_shim_connections",
        "gauge",
        "Processes connected to shim.sock.",
    )
    .sample(&[], u(&status["shims"]));
    Family::new(
        &mut o,
        "ins_controllers",
        "gauge",
        "Connections on ctl.sock and monitor.sock.",
    )
    .sample(&[], u(&status["controllers"]));
    let total_conns: u64 = insts.iter().filter_map(|i| i["connections"].as_u64()).sum();
    Family::new(
        &mut o,
        "ins_connections",
        "gauge",
        "Connected streams the driver holds, over all instances.",
    )
    .sample(&[], Some(total_conns));

    type Pick = fn(&Value) -> Option<u64>;
    let per_inst: [(&'static str, &str, &str, Pick); 7] = [
        (
            "ins_instance_sockets",
            "gauge",
            "Sockets the driver placed on the instance (connections and listener replicas).",
            |i| i["sockets_used"].as_u64(),
        ),
        (
            "ins_instance_connections",
            "gauge",
            "Connected streams the driver holds on the instance.",
            |i| i["connections"].as_u64(),
        ),
        (
            "ins_instance_accepted_total",
            "counter",
            "Connections the instance accepted.",
            |i| i["accepted"].as_u64(),
        ),
        (
            "ins_instance_bytes_in_total",
            "counter",
            "Payload bytes the instance received from the network (as ins-ctl list).",
            |i| i["bytes_in"].as_u64(),
        ),
        (
            "ins_instance_bytes_out_total",
            "counter",
            "Payload bytes the instance sent to the network (as ins-ctl list).",
            |i| i["bytes_out"].as_u64(),
        ),
        (
            "ins_instance_ring_queued_frames",
            "gauge",
            "Control frames to the instance waiting for space in its ring (the ring is full).",
            |i| i["ring"]["queued_frames"].as_u64(),
        ),
        (
            "ins_instance_ring_blocked_sockets",
            "gauge",
            "Sockets whose relay to the instance waits for ring space.",
            |i| i["ring"]["blocked_sockets"].as_u64(),
        ),
    ];
    for (name, kind, help, pick) in per_inst {
        let mut f = Family::new(&mut o, name, kind, help);
        for i in &insts {
            let id = i["id"].to_string();
            let st = i["state"].as_str().unwrap_or("");
            // A counter keeps its series when the instance starts draining.
            let labels: &[(&str, &str)] = if kind == "counter" {
                &[("instance", &id)]
            } else {
                &[("instance", &id), ("state", st)]
            };
            f.sample(labels, pick(i));
        }
    }
    let mut f = Family::new(
        &mut o,
        "ins_instance_age_seconds",
        "gauge",
        "Seconds since the instance joined.",
    );
    for i in &insts {
        let id = i["id"].to_string();
        let st = i["state"].as_str().unwrap_or("");
        f.sample(&[("instance", &id), ("state", st)], i["age_s"].as_u64());
    }

    Family::new(
        &mut o,
        "ins_app_datagrams_dropped_total",
        "counter",
        "App datagrams the driver could not deliver (counted and logged).",
    )
    .sample(&[], u(&status["app_datagrams_dropped"]));
    let mut by_kind: Vec<(String, u64)> = Vec::new();
    for m in status["mitigations"].as_array().into_iter().flatten() {
        let kind = m
            .as_object()
            .and_then(|o| o.keys().find(|k| *k != "conn_rate" && *k != "byte_rate"))
            .cloned()
            .unwrap_or_default();
        match by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => by_kind.push((kind, 1)),
        }
    }
    let mut f = Family::new(
        &mut o,
        "ins_mitigations",
        "gauge",
        "Standing mitigations by kind (block, limit).",
    );
    for k in ["block", "limit"] {
        if !by_kind.iter().any(|(x, _)| x == k) {
            by_kind.push((k.to_string(), 0));
        }
    }
    for (k, n) in &by_kind {
        f.sample(&[("kind", k)], Some(*n));
    }
    Family::new(
        &mut o,
        "ins_flow_records_total",
        "counter",
        "Flow records received from the instances (streamed to subscribers and kept).",
    )
    .sample(&[], u(&status["flow_records"]));
    Family::new(
        &mut o,
        "ins_flows_kept",
        "gauge",
        "Flow records kept in the driver's ring for `ins-ctl flows`.",
    )
    .sample(&[], u(&status["flows_kept"]));
    Family::new(
        &mut o,
        "ins_monitor_subscribers",
        "gauge",
        "Monitor-stream subscribers connected.",
    )
    .sample(&[], u(&status["monitor"]["subscribers"]));
    Family::new(
        &mut o,
        "ins_monitor_subscribers_dropped_total",
        "counter",
        "Monitor subscribers dropped because their output buffer was full.",
    )
    .sample(&[], u(&status["monitor"]["dropped_subscribers"]));
    Family::new(
        &mut o,
        "ins_metrics_scrapers_refused_total",
        "counter",
        "Metrics connections closed unanswered (client limit, request size, timeout).",
    )
    .sample(&[], Some(own.0));
    Family::new(
        &mut o,
        "ins_metrics_scrapes_total",
        "counter",
        "Answers sent by the metrics endpoint before this one.",
    )
    .sample(&[], Some(own.1));
    Family::new(
        &mut o,
        "ins_uptime_seconds",
        "gauge",
        "Seconds since the driver started.",
    )
    .sample(&[], u(&status["uptime_s"]));
    o
}

impl Metrics {
    /// Binds `addr` (non-blocking).
    pub(super) fn bind(addr: std::net::SocketAddr, cfg: MetricsConfig) -> io::Result<Metrics> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        info!(addr = %listener.local_addr()?, "metrics endpoint");
        Ok(Metrics {
            listener,
            conns: HashMap::new(),
            next: 1,
            cfg,
            refused: 0,
            scrapes: 0,
        })
    }

    pub(super) fn listener(&self) -> &TcpListener {
        &self.listener
    }
}

impl Daemon {
    /// Accepts scrapers.
    pub(super) fn metrics_accept(&mut self) {
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        let mut new = Vec::new();
        loop {
            let stream = match m.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "accept on the metrics socket");
                    break;
                }
            };
            if m.conns.len() >= m.cfg.max_clients {
                m.refused += 1;
                warn!(
                    max = m.cfg.max_clients,
                    "metrics scraper refused: too many connections"
                );
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let id = m.next;
            m.next += 1;
            if let Err(e) = add(
                &self.epfd,
                stream.as_fd(),
                K_METRICS | id,
                EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET,
            ) {
                warn!(error = %e, "epoll add (metrics scraper)");
                continue;
            }
            m.conns.insert(
                id,
                Scraper {
                    stream,
                    rbuf: Vec::new(),
                    wbuf: Vec::new(),
                    woff: 0,
                    answered: false,
                    extra: 0,
                    deadline: Instant::now() + m.cfg.timeout,
                },
            );
            new.push(id);
        }
        // Edge-triggered: data that came with the connection is read now.
        for id in new {
            self.metrics_event(id);
        }
    }

    /// Readiness on scraper `id`: read the request, answer, write.
    pub(super) fn metrics_event(&mut self, id: u64) {
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        let max = m.cfg.max_request;
        let Some(c) = m.conns.get_mut(&id) else {
            return;
        };
        let mut eof = false;
        let mut buf = [0u8; 2048];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    if !c.answered && c.rbuf.len() <= max && head_end(&c.rbuf).is_none() {
                        c.rbuf.extend_from_slice(&buf[..n]);
                    } else {
                        // Read on to see the peer's end of input; a
                        // flood past the head ends the connection.
                        c.extra += n;
                        if c.extra > max {
                            eof = true;
                            break;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let mut req = None;
        if !c.answered {
            match head_end(&c.rbuf) {
                Some(end) if end <= max => req = Some(parse_head(&c.rbuf[..end])),
                _ if c.rbuf.len() > max => {
                    req = Some(Request::Other(
                        "431 Request Header Fields Too Large",
                        "request head too long\n",
                    ))
                }
                _ if eof => {
                    // Closed before a whole request: nothing to answer.
                    self.metrics_close(id);
                    return;
                }
                _ => {}
            }
        }
        if let Some(r) = req {
            let bytes = match r {
                Request::Metrics { head } => {
                    let status = self.ctl_status();
                    let list = self.ctl_list();
                    let m = self.metrics.as_ref().expect("metrics endpoint");
                    let body = render(&status, &list, (m.refused, m.scrapes));
                    response(
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        &body,
                        head,
                    )
                }
                Request::Other(st, body) => {
                    if st.starts_with("431") {
                        warn!("metrics request head too long");
                    }
                    response(st, "text/plain; charset=utf-8", body, false)
                }
            };
            let m = self.metrics.as_mut().expect("metrics endpoint");
            m.scrapes += 1;
            let c = m.conns.get_mut(&id).expect("metrics scraper");
            c.wbuf = bytes;
            c.answered = true;
            c.rbuf = Vec::new();
        }
        self.metrics_write(id, eof);
    }

    /// Writes what the socket takes; closes when done (after the peer's
    /// end of input, so that unread input cannot turn the close into a
    /// reset that loses the answer) or when the peer is gone.
    fn metrics_write(&mut self, id: u64, eof: bool) {
        let Some(c) = self.metrics.as_mut().and_then(|m| m.conns.get_mut(&id)) else {
            return;
        };
        let mut failed = false;
        while c.answered && c.woff < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.woff..]) {
                Ok(0) => break,
                Ok(n) => {
                    c.woff += n;
                    if c.woff == c.wbuf.len() {
                        let _ = c.stream.shutdown(Shutdown::Write);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let done = c.answered && c.woff == c.wbuf.len();
        if failed || (eof && (done || !c.answered)) {
            self.metrics_close(id);
        }
    }

    fn metrics_close(&mut self, id: u64) {
        if let Some(m) = self.metrics.as_mut() {
            // Dropping the stream closes it (and takes it out of epoll).
            m.conns.remove(&id);
        }
    }

    /// Every tick: drops scrapers past their deadline.
    pub(super) fn metrics_expire(&mut self) {
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        let now = Instant::now();
        let mut gone = 0u64;
        m.conns.retain(|_, c| {
            let keep = c.deadline > now;
            // Answered in full: the peer only had to close; not a refusal.
            let served = c.answered && c.woff == c.wbuf.len();
            if !keep && !served {
                gone += 1;
            }
            keep
        });
        if gone > 0 {
            m.refused += gone;
            warn!(scrapers = gone, "metrics scrapers timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert!(matches!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Request::Metrics { head: false }
        ));
        assert!(matches!(
            parse_head(b"HEAD /metrics?x=1 HTTP/1.0\n"),
            Request::Metrics { head: true }
        ));
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\n"),
            Request::Other(s, _) if s.starts_with("404")
        ));
        assert!(matches!(
            parse_head(b"POST /metrics HTTP/1.1\r\n"),
            Request::Other(s, _) if s.starts_with("405")
        ));
        assert!(matches!(
            parse_head(b"GET /metrics HTTP/2\r\n"),
            Request::Other(s, _) if s.starts_with("505")
        ));
        assert!(matches!(parse_head(b"garbage\r\n"), Request::Other(s, _) if s.starts_with("400")));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n"), None);
    }

    #[test]
    fn label_escaping() {
        let mut o = String::new();
        Family::new(&mut o, "x", "gauge", "h").sample(&[("k", "a\"b\\c\nd")], Some(3));
        assert!(o.ends_with("x{k=\"a\\\"b\\\\c\\nd\"} 3\n"), "{o}");
    }
}
