//! The daemon's I/O around the [`Engine`]: the subscription to the
//! driver's monitor stream, the control connection that carries the
//! mitigations, the status socket, the decision log and the configuration
//! reload.
//!
//! ```text
//!  reader thread: DIR/ctl.sock {"cmd":"subscribe","types":["conn","instance","mitigation"]}
//!        │ parsed lines (reconnects after 1 s if the driver goes away)
//!        ▼
//!  main loop: Engine::on_line … every tick: Engine::tick → commands on a second
//!        │    DIR/ctl.sock connection, decisions → log (one JSON line each),
//!        │    status → shared snapshot, config file mtime → reload
//!        ▼
//!  status thread: DIR/detect.sock (mode 0600) {"cmd":"status"} → snapshot
//! ```
//!
//! The subscription uses the control socket (not `monitor.sock`) because
//! the same peer credentials must be allowed to send mitigations. A
//! reader that falls behind is dropped by the driver; the reader then
//! reconnects and the engine carries on (connections not reported for
//! 30 s are forgotten).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::config::Config;
use crate::engine::Engine;
use crate::policy::Out;

/// Daemon settings (from the command line).
#[derive(Debug, Clone)]
pub struct Options {
    /// The driver's run directory.
    pub run_dir: PathBuf,
    /// Configuration file; `None`: `RUN_DIR/detect.toml` if it exists,
    /// else the defaults (and the file is watched for creation).
    pub config: Option<PathBuf>,
    /// Decision log; `None`: standard output.
    pub log: Option<PathBuf>,
    /// Stop after this long (tests and demos); `None`: run until killed.
    pub duration: Option<Duration>,
}

/// The status socket's path.
pub fn status_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("detect.sock")
}

enum Msg {
    Line(Value),
    Connected,
    Lost(String),
}

struct Log(Box<dyn std::io::Write + Send>);

impl Log {
    /// One decision line. When the log is standard output and its reader
    /// has gone (`ins-detect | head`), the daemon exits quietly as a
    /// coreutils program would (`ins_ctl::out`); other errors are ignored
    /// so that a full disk does not stop mitigation.
    fn line(&mut self, v: &Value) {
        let mut b = serde_json::to_vec(v).unwrap_or_default();
        b.push(b'\n');
        if let Err(e) = self.0.write_all(&b).and_then(|()| self.0.flush())
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            ins_ctl::out::exit_on(&e);
        }
    }
    fn event(&mut self, what: &str, mut v: Value) {
        v["event"] = what.into();
        v["ts"] = unix_now().into();
        self.line(&v);
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn reader(ctl: PathBuf, tx: mpsc::Sender<Msg>) {
    loop {
        let r = (|| -> std::io::Result<()> {
            let mut s = UnixStream::connect(&ctl)?;
            s.write_all(
                b"{\"cmd\":\"subscribe\",\"types\":[\"conn\",\"instance\",\"mitigation\"]}\n",
            )?;
            let mut r = BufReader::with_capacity(1 << 20, s);
            let mut first = String::new();
            r.read_line(&mut first)?;
            let v: Value = serde_json::from_str(&first).map_err(std::io::Error::other)?;
            if v.get("ok").and_then(Value::as_bool) != Some(true) {
                return Err(std::io::Error::other(format!(
                    "subscription refused: {first}"
                )));
            }
            if tx.send(Msg::Connected).is_err() {
                return Ok(());
            }
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    return Err(std::io::Error::other("the driver closed the stream"));
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v.get("type").is_some()
                    && tx.send(Msg::Line(v)).is_err()
                {
                    return Ok(());
                }
            }
        })();
        let why = match r {
            Ok(()) => return,
            Err(e) => e.to_string(),
        };
        if tx.send(Msg::Lost(why)).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn status_server(path: PathBuf, snap: Arc<Mutex<Value>>) -> Result<()> {
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let snap = snap.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut w = match s.try_clone() {
                    Ok(w) => w,
                    Err(_) => return,
                };
                let mut r = BufReader::new(s);
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let req: Option<Value> = serde_json::from_str(&line).ok();
                    let cmd = req
                        .as_ref()
                        .and_then(|v| v.get("cmd"))
                        .and_then(Value::as_str);
                    let resp = match cmd {
                        Some("status") => snap.lock().map(|v| v.clone()).unwrap_or(Value::Null),
                        _ => json!({"ok": false, "kind": "bad-request",
                                    "error": "expected {\"cmd\":\"status\"}"}),
                    };
                    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
                    out.push(b'\n');
                    if w.write_all(&out).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    Ok(())
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Runs the daemon until `duration` passes (or forever).
pub fn run(o: &Options) -> Result<()> {
    let cfg_path = o
        .config
        .clone()
        .unwrap_or_else(|| o.run_dir.join("detect.toml"));
    let explicit = o.config.is_some();
    let cfg = if explicit || cfg_path.exists() {
        Config::load(&cfg_path)?
    } else {
        Config::default()
    };
    let mut cfg_mtime = mtime(&cfg_path);
    let log: Box<dyn std::io::Write + Send> = match &o.log {
        Some(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("open {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let mut log = Log(log);
    let ctl = ins_ctl::ctl_socket(&o.run_dir);
    let snap = Arc::new(Mutex::new(json!({"ok": true, "v": 1, "starting": true})));
    status_server(status_socket(&o.run_dir), snap.clone())?;
    log.event(
        "started",
        json!({"run_dir": o.run_dir.display().to_string(),
               "config": if cfg_mtime.is_some() { json!(cfg_path.display().to_string()) } else { json!(null) },
               "pid": std::process::id(), "dry_run": cfg.dry_run}),
    );
    let (tx, rx) = mpsc::channel();
    {
        let ctl = ctl.clone();
        std::thread::spawn(move || reader(ctl, tx));
    }
    let start = Instant::now();
    let mut engine = Engine::new(cfg);
    let mut client: Option<ins_ctl::Client> = None;
    let mut next_tick = Duration::from_millis(engine.config().tick_ms);
    loop {
        let elapsed = start.elapsed();
        if o.duration.is_some_and(|d| elapsed >= d) {
            log.event("stopped", json!({"uptime_s": elapsed.as_secs_f64()}));
            let _ = std::fs::remove_file(status_socket(&o.run_dir));
            return Ok(());
        }
        let mut out = Out::default();
        match rx.recv_timeout(next_tick.saturating_sub(elapsed)) {
            Ok(Msg::Line(v)) => engine.on_line(&v, start.elapsed().as_secs_f64(), &mut out),
            Ok(Msg::Connected) => {
                log.event("subscribed", json!({"socket": ctl.display().to_string()}))
            }
            Ok(Msg::Lost(why)) => log.event("subscription-lost", json!({"error": why})),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the stream reader stopped"),
        }
        if start.elapsed() >= next_tick {
            let now = start.elapsed().as_secs_f64();
            engine.tick(now, &mut out);
            next_tick += Duration::from_millis(engine.config().tick_ms);
            if next_tick < start.elapsed() {
                next_tick = start.elapsed() + Duration::from_millis(engine.config().tick_ms);
            }
            // Hot reload.
            let m = mtime(&cfg_path);
            if m != cfg_mtime {
                cfg_mtime = m;
                if m.is_some() {
                    match Config::load(&cfg_path) {
                        Ok(c) => {
                            log.event(
                                "config-reloaded",
                                json!({"config": cfg_path.display().to_string()}),
                            );
                            engine.set_config(c);
                        }
                        Err(e) => log.event(
                            "config-error",
                            json!({"config": cfg_path.display().to_string(), "error": e.to_string(),
                                   "kept": "the previous configuration"}),
                        ),
                    }
                }
            }
            if let Ok(mut s) = snap.lock() {
                *s = engine.status(now);
            }
        }
        for d in &out.decisions {
            log.line(d);
        }
        for cmd in &out.commands {
            if client.is_none() {
                client = ins_ctl::Client::connect(&o.run_dir).ok();
            }
            let r = match client.as_mut() {
                Some(c) => c.call_raw(cmd).map_err(|e| e.to_string()),
                None => Err("the driver's control socket is not reachable".into()),
            };
            match r {
                Ok(v) if v.get("ok").and_then(Value::as_bool) == Some(true) => {}
                Ok(v) => log.event("command-refused", json!({"command": cmd, "reply": v})),
                Err(e) => {
                    client = None;
                    log.event("command-failed", json!({"command": cmd, "error": e}));
                }
            }
        }
    }
}
