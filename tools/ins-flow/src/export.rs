//! The export loop: JSON lines in, IPFIX / NetFlow v9 datagrams out.
//!
//! A reader thread decodes lines and hands them over a channel; the main
//! loop turns records into deltas ([`DeltaTracker`]), batches them and
//! sends a batch when it holds [`BATCH`] records or when `flush` has passed
//! since its first record, and resends templates on the refresh timer while
//! idle. A line that does not decode is counted and warned about (the
//! first [`WARN_LINES`] in full, then every 1000th) and skipped. A driver
//! error reply ends the export with an error. End of input flushes and
//! returns the counters. UDP send errors (e.g. ICMP port unreachable) are
//! counted, never fatal: a collector may start after the exporter.

use std::io::{BufRead, Write as _};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use crate::encoder::{Config, EncodeError, Encoder, Format};
use crate::record::{DeltaTracker, ExportRecord};
use crate::schema::{self, Line, SchemaError};

/// Records per batch before an immediate send.
pub const BATCH: usize = 512;
/// Bad lines reported in full before throttling.
pub const WARN_LINES: u64 = 20;

/// Exporter settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Collector address.
    pub dest: SocketAddr,
    /// Wire format.
    pub format: Format,
    /// Path MTU towards the collector; messages fit in one datagram.
    pub mtu: usize,
    /// Template refresh interval.
    pub template_refresh: Duration,
    /// Longest a record waits in a batch.
    pub flush: Duration,
    /// Forget a flow's totals when its last packet is this old.
    pub forget_idle: Duration,
    /// Export the backlog in the driver's subscription reply.
    pub backlog: bool,
    /// Also export connection telemetry (IPFIX connection template).
    pub telemetry: bool,
}

/// What an export run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Lines read.
    pub lines: u64,
    /// Flow reports decoded.
    pub flows: u64,
    /// Connection-telemetry reports exported.
    pub telemetry: u64,
    /// Lines skipped because they did not decode.
    pub bad_lines: u64,
    /// Interim reports with nothing new (not exported).
    pub unchanged: u64,
    /// Data records exported.
    pub records: u64,
    /// Datagrams sent.
    pub packets: u64,
    /// Datagrams the socket refused.
    pub send_errors: u64,
}

/// Why an export ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Socket or input error.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Encoder settings rejected.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The driver refused the subscription.
    #[error(transparent)]
    Driver(SchemaError),
    /// The collector address did not resolve.
    #[error("cannot resolve collector {0:?}")]
    Resolve(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExportError {
    let what = what.into();
    move |source| ExportError::Io { what, source }
}

/// Resolves `HOST:PORT` to its first address.
pub fn resolve(s: &str) -> Result<SocketAddr, ExportError> {
    s.to_socket_addrs()
        .map_err(|_| ExportError::Resolve(s.to_string()))?
        .next()
        .ok_or_else(|| ExportError::Resolve(s.to_string()))
}

/// Connects to the driver's management socket and subscribes to flows
/// (with `telemetry`, to connection telemetry too; the backlog of recent
/// flows is then not available).
pub fn subscribe(
    path: &Path,
    backlog: bool,
    telemetry: bool,
) -> Result<std::io::BufReader<UnixStream>, ExportError> {
    let mut s = UnixStream::connect(path).map_err(io(format!("connect {}", path.display())))?;
    let req = if telemetry {
        "{\"cmd\":\"subscribe\",\"types\":[\"flow\",\"conn\"]}\n"
    } else if backlog {
        "{\"cmd\":\"flows\",\"follow\":true}\n"
    } else {
        schema::FOLLOW_REQUEST
    };
    s.write_all(req.as_bytes())
        .map_err(io(format!("write {}", path.display())))?;
    Ok(std::io::BufReader::new(s))
}

enum Input {
    Line(Result<Line, SchemaError>),
    ReadError(std::io::Error),
}

/// Runs the exporter until `input` ends.
pub fn run<R: BufRead + Send + 'static>(input: R, o: &Options) -> Result<Counters, ExportError> {
    let start = SystemTime::now();
    let cfg = Config {
        format: o.format,
        max_message: o.mtu.saturating_sub(if o.dest.is_ipv4() { 28 } else { 48 }),
        template_refresh: o.template_refresh,
        telemetry: o.telemetry,
    };
    let mut enc = Encoder::new(cfg, start - Duration::from_secs(86_400))?;
    let bind: SocketAddr = if o.dest.is_ipv4() {
        "0.0.0.0:0"
            .parse()
            .map_err(|_| ExportError::Resolve("0.0.0.0".into()))?
    } else {
        "[::]:0"
            .parse()
            .map_err(|_| ExportError::Resolve("::".into()))?
    };
    let sock = UdpSocket::bind(bind).map_err(io("bind UDP socket"))?;
    sock.connect(o.dest)
        .map_err(io(format!("connect {}", o.dest)))?;

    let (tx, rx) = mpsc::sync_channel::<Input>(4096);
    std::thread::spawn(move || {
        for line in input.lines() {
            let msg = match line {
                Ok(l) if l.trim().is_empty() => continue,
                Ok(l) => Input::Line(schema::parse_line(&l)),
                Err(e) => Input::ReadError(e),
            };
            let stop = matches!(msg, Input::ReadError(_));
            if tx.send(msg).is_err() || stop {
                return;
            }
        }
    });

    let mut c = Counters::default();
    let mut deltas = DeltaTracker::new();
    let mut batch: Vec<ExportRecord> = Vec::with_capacity(BATCH);
    let mut batch_since: Option<Instant> = None;
    let tick = o
        .flush
        .min(o.template_refresh)
        .max(Duration::from_millis(10));
    let mut last_sweep = Instant::now();
    let send = |msgs: Vec<Vec<u8>>, c: &mut Counters| {
        for m in msgs {
            match sock.send(&m) {
                Ok(_) => c.packets += 1,
                Err(_) => c.send_errors += 1,
            }
        }
    };
    let push = |deltas: &mut DeltaTracker,
                f: &schema::InstFlow,
                c: &mut Counters,
                batch: &mut Vec<ExportRecord>| {
        c.flows += 1;
        match deltas.update(f) {
            Some(r) => batch.push(r),
            None => c.unchanged += 1,
        }
    };
    loop {
        let wait = match batch_since {
            Some(t) => o.flush.saturating_sub(t.elapsed()),
            None => tick,
        };
        let mut ended = false;
        match rx.recv_timeout(wait) {
            Ok(Input::Line(l)) => {
                c.lines += 1;
                match l {
                    Ok(Line::Flow(f)) => push(&mut deltas, &f, &mut c, &mut batch),
                    Ok(Line::Conn(x)) => {
                        if o.telemetry {
                            c.telemetry += 1;
                            let now_ms = SystemTime::now()
                                .duration_since(SystemTime::UNIX_EPOCH)
                                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                            batch.push(ExportRecord::from_conn(x.inst, &x.t, now_ms));
                        }
                    }
                    Ok(Line::Backlog(v)) => {
                        if o.backlog {
                            for f in &v {
                                push(&mut deltas, f, &mut c, &mut batch);
                            }
                        }
                    }
                    Err(e @ SchemaError::Driver(_)) => return Err(ExportError::Driver(e)),
                    Err(e) => {
                        c.bad_lines += 1;
                        if c.bad_lines <= WARN_LINES || c.bad_lines.is_multiple_of(1000) {
                            eprintln!(
                                "ins-flow: warning: skipped line {} ({} bad so far): {e}",
                                c.lines, c.bad_lines
                            );
                        }
                    }
                }
            }
            Ok(Input::ReadError(e)) => {
                return Err(ExportError::Io {
                    what: "read input".into(),
                    source: e,
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => ended = true,
        }
        if !batch.is_empty() && batch_since.is_none() {
            batch_since = Some(Instant::now());
        }
        let due = batch_since.is_some_and(|t| t.elapsed() >= o.flush);
        if !batch.is_empty() && (ended || due || batch.len() >= BATCH) {
            c.records += batch.len() as u64;
            send(enc.encode(SystemTime::now(), &batch), &mut c);
            batch.clear();
            batch_since = None;
        }
        if ended {
            return Ok(c);
        }
        send(enc.refresh(SystemTime::now()), &mut c);
        if last_sweep.elapsed() >= Duration::from_secs(60) {
            last_sweep = Instant::now();
            let now_ns = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            let cutoff =
                now_ns.saturating_sub(u64::try_from(o.forget_idle.as_nanos()).unwrap_or(u64::MAX));
            deltas.forget_idle(cutoff);
        }
    }
}
