//! # ins-ctl
//!
//! The operator's tool. The driver owns all state; this library only
//! speaks to its management socket (`RUN_DIR/ctl.sock`, one JSON object
//! per line each way, see the driver's `ctl` module) and starts or stops
//! the driver process. The driver itself spawns, reaps and respawns the
//! `ins` instances (its balancer), so `up` only starts the driver with
//! `--ins-bin` and `--instances N`.
//!
//! Every failure maps to one [`CtlError`] class with its own exit code
//! ([`CtlError::exit_code`]).
#![deny(unsafe_code)]

pub mod cmds;
pub mod detect;
pub mod out;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Exit codes, one per error class.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any other failure (the driver refused or failed the command, I/O).
    pub const FAILED: i32 = 1;
    /// Bad usage: bad arguments or values (also what clap returns).
    pub const USAGE: i32 = 2;
    /// The driver is not running (no control socket, or nobody listens).
    pub const NOT_RUNNING: i32 = 3;
    /// Permission denied on the control socket.
    pub const PERMISSION: i32 = 4;
    /// Unknown instance id.
    pub const UNKNOWN_INSTANCE: i32 = 5;
    /// Bad address prefix.
    pub const BAD_PREFIX: i32 = 6;
    /// A wait (start, drain, stop) did not finish in time.
    pub const TIMEOUT: i32 = 7;
}

/// The exit-code table for `--help`.
pub const EXIT_HELP: &str = "\
Exit codes:
  0  success
  1  the command failed (driver refused or failed it, I/O error)
  2  bad usage: bad arguments or values
  3  the driver is not running (no control socket at RUN_DIR/ctl.sock)
  4  permission denied on the control socket (run: on the shim socket)
  5  unknown instance id
  6  bad address prefix
  7  timed out waiting (start, drain, stop)
141  standard output was closed (`ins-ctl flows | head`): quiet, as coreutils

Run directory: --run-dir, else $INS_RUN_DIR, else /run/ins for root,
else $XDG_RUNTIME_DIR/ins, else /tmp/ins-UID.";

/// What went wrong, by class.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No driver behind the socket.
    #[error("INS driver not running: {path}: {why}")]
    NotRunning {
        /// Control socket path.
        path: PathBuf,
        /// Cause.
        why: String,
    },
    /// The socket or the driver refused us.
    #[error("permission denied: {0}")]
    Permission(String),
    /// No such instance.
    #[error("{0}")]
    UnknownInstance(String),
    /// Bad prefix.
    #[error("{0}")]
    BadPrefix(String),
    /// Bad arguments or values.
    #[error("{0}")]
    Usage(String),
    /// A wait did not finish.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl CtlError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::NotRunning { .. } => exit::NOT_RUNNING,
            CtlError::Permission(_) => exit::PERMISSION,
            CtlError::UnknownInstance(_) => exit::UNKNOWN_INSTANCE,
            CtlError::BadPrefix(_) => exit::BAD_PREFIX,
            CtlError::Usage(_) => exit::USAGE,
            CtlError::Timeout(_) => exit::TIMEOUT,
            CtlError::Failed(_) => exit::FAILED,
        }
    }

    fn from_reply(v: &Value) -> CtlError {
        let msg = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the driver refused the command")
            .to_string();
        match v.get("kind").and_then(Value::as_str).unwrap_or("") {
            "unknown-instance" => CtlError::UnknownInstance(msg),
            "bad-prefix" => CtlError::BadPrefix(msg),
            "bad-request" => CtlError::Usage(msg),
            "permission-denied" => CtlError::Permission(msg),
            _ => CtlError::Failed(msg),
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, CtlError>;

/// The default run directory (see [`EXIT_HELP`]).
pub fn default_run_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("INS_RUN_DIR") {
        return PathBuf::from(d);
    }
    let uid = rustix::process::geteuid().as_raw();
    if uid == 0 {
        return PathBuf::from("/run/ins");
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(d).join("ins");
    }
    PathBuf::from(format!("/tmp/ins-{uid}"))
}

/// The driver's management socket in `run_dir` (`RUN_DIR/ctl.sock`):
/// where `ins-ctl`, `ins-flow` and `ins-detect` find the driver, with
/// `run_dir` from `--run-dir` or [`default_run_dir`].
pub fn ctl_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("ctl.sock")
}

/// The driver's shim socket in `run_dir` (`RUN_DIR/shim.sock`).
pub fn shim_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("shim.sock")
}

/// Checks that a driver accepts shim connections at `RUN_DIR/shim.sock`
/// (what a program under `ins-ctl run` needs, and all it needs): connects
/// a `SOCK_SEQPACKET` socket and closes it. No driver is
/// [`CtlError::NotRunning`]; a socket this user may not open (the driver's
/// `--shim-mode`) is [`CtlError::Permission`].
pub fn probe_shim(run_dir: &Path) -> Result<()> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let path = shim_socket(run_dir);
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| CtlError::Failed(format!("socket: {e}")))?;
    let addr = SocketAddrUnix::new(&path)
        .map_err(|e| CtlError::Usage(format!("{}: {e}", path.display())))?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::ACCESS || e == rustix::io::Errno::PERM => {
            Err(CtlError::Permission(format!(
                "{}: {} (the driver's --shim-mode decides who may run programs under INS)",
                path.display(),
                std::io::Error::from(e)
            )))
        }
        Err(e) => Err(CtlError::NotRunning {
            path,
            why: std::io::Error::from(e).to_string(),
        }),
    }
}

/// A connection to the driver's control socket.
pub struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Client {
    /// Connects to `RUN_DIR/ctl.sock`.
    pub fn connect(run_dir: &Path) -> Result<Client> {
        let path = ctl_socket(run_dir);
        let s = UnixStream::connect(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                CtlError::Permission(format!("{}: {e}", path.display()))
            }
            _ => CtlError::NotRunning {
                path: path.clone(),
                why: e.to_string(),
            },
        })?;
        let w = s.try_clone().map_err(|e| CtlError::Failed(e.to_string()))?;
        Ok(Client {
            r: BufReader::new(s),
            w,
        })
    }

    /// Sends one request and reads its answer; a refusal becomes the
    /// matching [`CtlError`].
    pub fn call(&mut self, req: &Value) -> Result<Value> {
        let v = self.call_raw(req)?;
        if v.get("ok").and_then(Value::as_bool) == Some(true) {
            Ok(v)
        } else {
            Err(CtlError::from_reply(&v))
        }
    }

    /// Sends one request and reads the answer line as it is.
    pub fn call_raw(&mut self, req: &Value) -> Result<Value> {
        let mut line = serde_json::to_vec(req).map_err(|e| CtlError::Failed(e.to_string()))?;
        line.push(b'\n');
        self.w
            .write_all(&line)
            .map_err(|e| CtlError::Failed(format!("control socket: {e}")))?;
        self.next_line()?
            .ok_or_else(|| CtlError::Failed("the driver closed the control connection".into()))
    }

    /// The next line the driver sends (`None` at end of stream).
    pub fn next_line(&mut self) -> Result<Option<Value>> {
        let mut buf = String::new();
        let n = self
            .r
            .read_line(&mut buf)
            .map_err(|e| CtlError::Failed(format!("control socket: {e}")))?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_str(&buf)
            .map(Some)
            .map_err(|e| CtlError::Failed(format!("bad answer from the driver: {e}")))
    }
}

/// One request on a fresh connection.
pub fn call(run_dir: &Path, req: Value) -> Result<Value> {
    Client::connect(run_dir)?.call(&req)
}

/// Where the sibling binaries (`ins-driver`, `ins`, `libshim.so`) are:
/// next to this program's own executable.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| CtlError::Failed(format!("own path: {e}")))?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| CtlError::Failed("own path has no directory".into()))
}

/// A sibling file that must exist: next to this program (a build tree,
/// or `PREFIX/bin` for the binaries), else in `../lib/ins/` (an installed
/// tree: `make install` puts `libshim.so` in `PREFIX/lib/ins/`).
pub fn sibling(name: &str) -> Result<PathBuf> {
    let dir = bin_dir()?;
    let p = dir.join(name);
    if p.exists() {
        return Ok(p);
    }
    let installed = dir.join("../lib/ins").join(name);
    if installed.exists() {
        return Ok(installed);
    }
    Err(CtlError::Failed(format!(
        "{} not found, nor {} (it is built next to ins-ctl: cargo build --workspace \
         --release; or installed by make install)",
        p.display(),
        installed.display()
    )))
}

/// The instances from a `list` answer.
pub fn instances(list: &Value) -> Vec<Value> {
    list.get("instances")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `list` as a table. `LINK` is `local`, or `domD/CHANNEL` for an
/// instance in another Xen domain.
pub fn format_list(list: &Value) -> String {
    let mut out = format!(
        "{:>4} {:>8} {:<9} {:>13} {:>6} {:>12} {:>12} {:>7} {}\n",
        "ID", "PID", "STATE", "SOCKETS", "CONNS", "BYTES_IN", "BYTES_OUT", "AGE_S", "LINK"
    );
    for i in instances(list) {
        let link = match i.get("domid").and_then(Value::as_u64) {
            Some(d) => format!("dom{d}/{}", s(&i, "channel")),
            None => "local".to_string(),
        };
        out += &format!(
            "{:>4} {:>8} {:<9} {:>13} {:>6} {:>12} {:>12} {:>7} {}\n",
            u(&i, "id"),
            u(&i, "pid"),
            s(&i, "state"),
            format!("{}/{}", u(&i, "sockets_used"), u(&i, "sockets_max")),
            u(&i, "connections"),
            u(&i, "bytes_in"),
            u(&i, "bytes_out"),
            u(&i, "age_s"),
            link,
        );
    }
    out
}

/// The header of the flow table.
pub fn flow_header() -> String {
    format!(
        "{:<10} {:<5} {:<24} {:<24} {:>10} {:>10} {:<7} {}",
        "FLOW", "PROTO", "LOCAL", "REMOTE", "BYTES_IN", "BYTES_OUT", "STATE", "REASON"
    )
}

/// One flow record as a table row.
pub fn format_flow(f: &Value) -> String {
    format!(
        "{:<10} {:<5} {:<24} {:<24} {:>10} {:>10} {:<7} {}",
        s(f, "flow"),
        s(f, "proto"),
        s(f, "local"),
        s(f, "remote"),
        u(f, "bytes_in"),
        u(f, "bytes_out"),
        s(f, "state"),
        s(f, "reason"),
    )
}

/// How many `create` requests a Xen-mode driver's toolstack agent
/// refused (from a `list` answer; 0 for any other driver).
pub fn refusals(list: &Value) -> u64 {
    list.pointer("/xen_refused/count")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// The agent's last refusal, if it refused more than `before` requests:
/// the agent did nothing, and waiting longer would only repeat it.
pub fn refused_since(list: &Value, before: u64) -> Option<String> {
    (refusals(list) > before).then(|| {
        let last = list
            .pointer("/xen_refused/last")
            .and_then(Value::as_str)
            .unwrap_or("the toolstack agent refused an instance domain");
        format!(
            "{last} (the driver asks again every --xen-retry-ms; fix the agent's options or `ins-ctl down`)"
        )
    })
}

/// Polls `list` until `done` says so, printing `progress` lines; errors
/// with [`CtlError::Timeout`] after `limit`, and at once with the
/// agent's answer when `refused_before` is given and the toolstack agent
/// refused a domain since (see [`refused_since`]).
pub fn wait_for(
    run_dir: &Path,
    limit: Duration,
    what: &str,
    refused_before: Option<u64>,
    mut done: impl FnMut(&[Value]) -> bool,
    mut progress: impl FnMut(&[Value]),
) -> Result<()> {
    let until = Instant::now() + limit;
    loop {
        let l = call(run_dir, json!({"cmd": "list"}))?;
        let v = instances(&l);
        progress(&v);
        if done(&v) {
            return Ok(());
        }
        if let Some(why) = refused_before.and_then(|b| refused_since(&l, b)) {
            return Err(CtlError::Failed(why));
        }
        if Instant::now() >= until {
            return Err(CtlError::Timeout(what.to_string()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Tracks instance changes between `list` polls and describes them.
#[derive(Default)]
pub struct Progress {
    seen: std::collections::BTreeMap<u64, (String, u64)>,
}

impl Progress {
    /// Lines describing what changed since the last call.
    pub fn update(&mut self, now: &[Value]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut next = std::collections::BTreeMap::new();
        for i in now {
            let id = u(i, "id");
            let st = s(i, "state").to_string();
            let conns = u(i, "connections");
            match self.seen.get(&id) {
                None => lines.push(format!("instance {id} (pid {}) {st}", u(i, "pid"))),
                Some((old, oc)) if *old != st || (st == "draining" && *oc != conns) => {
                    lines.push(format!("instance {id} {st}, {conns} connections"))
                }
                _ => {}
            }
            next.insert(id, (st, conns));
        }
        for id in self.seen.keys() {
            if !next.contains_key(id) {
                lines.push(format!("instance {id} stopped"));
            }
        }
        self.seen = next;
        lines
    }
}

/// Whether a process exists.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let Some(p) = rustix::process::Pid::from_raw(raw) else {
        return false;
    };
    if rustix::process::test_kill_process(p).is_err() {
        return false;
    }
    // A zombie is gone for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|st| {
            st.rsplit_once(") ")
                .is_none_or(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) {
    if let Ok(raw) = i32::try_from(pid)
        && let Some(p) = rustix::process::Pid::from_raw(raw)
    {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
}

/// Reads the pid file `RUN_DIR/driver.pid`.
pub fn read_pid(run_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(run_dir.join("driver.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_refusal_since_the_command_ends_the_wait_with_its_words() {
        let why = "the toolstack agent refused a unikernel instance domain for channel s1: this agent makes no unikernel instance domains (it was started without --unikernel-template and --unikernel-kernel)";
        let l = json!({"ok": true, "instances": [], "xen_refused": {"count": 2, "last": why}});
        assert_eq!(refusals(&l), 2);
        assert_eq!(refused_since(&l, 2), None);
        let e = refused_since(&l, 1).unwrap();
        assert!(e.starts_with(why), "{e}");
        assert!(e.contains("--xen-retry-ms"), "{e}");
        // A driver that is not in Xen mode (or older) never refuses.
        let local = json!({"ok": true, "instances": []});
        assert_eq!(refusals(&local), 0);
        assert_eq!(refused_since(&local, 0), None);
    }

    #[test]
    fn reply_kinds_map_to_exit_codes() {
        let e = CtlError::from_reply(&json!({"ok":false,"kind":"unknown-instance","error":"x"}));
        assert_eq!(e.exit_code(), exit::UNKNOWN_INSTANCE);
        let e = CtlError::from_reply(&json!({"ok":false,"kind":"bad-prefix","error":"x"}));
        assert_eq!(e.exit_code(), exit::BAD_PREFIX);
        let e = CtlError::from_reply(&json!({"ok":false,"kind":"bad-request","error":"x"}));
        assert_eq!(e.exit_code(), exit::USAGE);
    }

    #[test]
    fn not_running_when_no_socket() {
        let d = std::env::temp_dir().join(format!("ins-ctl-none-{}", std::process::id()));
        let e = Client::connect(&d).err().expect("no driver");
        assert_eq!(e.exit_code(), exit::NOT_RUNNING);
    }

    #[test]
    fn progress_reports_changes() {
        let mut p = Progress::default();
        let a = json!({"id":1,"pid":5,"state":"live","connections":0});
        assert_eq!(p.update(std::slice::from_ref(&a)).len(), 1);
        assert!(p.update(std::slice::from_ref(&a)).is_empty());
        assert_eq!(p.update(&[]), vec!["instance 1 stopped".to_string()]);
    }
}
