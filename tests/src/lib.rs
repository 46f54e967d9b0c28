//! Harness for the end-to-end tests: runs the real INS driver (`ins-driver`),
//! INS instances (`ins`) and real programs under `libshim.so`.
//!
//! * Binaries are taken from the target directory the tests were built in
//!   (`target/<profile>/`, found from the test executable's own path); they
//!   must be built first: `cargo build --release -p ins-driver -p ins -p ins-shim`.
//!   A missing binary or a missing system program fails the test with a
//!   message saying what to build or install (nothing is skipped silently).
//! * Every process a test starts runs in its own process group and is killed
//!   (group-wide, `SIGKILL`) when its guard ([`Proc`], [`Ins`]) is dropped.
//! * Heavy tests serialize on [`serial`] so that a 2-core machine is not
//!   oversubscribed (timings and load loops stay meaningful).
//!
//! Invariant: nothing here fakes a result. Every check reads what a user
//! would see (bytes fetched, exit codes, program output, `ss`, `/proc`).
//!
//! Size: over 800 lines: the shared harness of every end-to-end test
//! (processes, the driver and instances, clients, waits); splitting it would
//! only spread one API over files.
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub mod bench;
mod sys;

pub use sys::{raise_nofile, reset_on_close, signal_group};

/// Serializes heavy tests within one test binary. Hold the guard for the
/// whole test.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The directory holding the workspace's built binaries for this profile
/// (`target/<profile>`), derived from the running test executable
/// (`target/<profile>/deps/<test>-<hash>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe has a parent").to_path_buf();
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir.pop();
    }
    dir
}

/// Paths of the three INS artifacts.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `ins-driver`.
    pub driver: PathBuf,
    /// `ins`.
    pub ins: PathBuf,
    /// `libshim.so` (absolute).
    pub shim: PathBuf,
}

/// The INS artifacts (from `INS_BIN_DIR` if set, else [`bin_dir`]);
/// panics with build instructions if one is missing.
pub fn bins() -> &'static Bins {
    static B: OnceLock<Bins> = OnceLock::new();
    B.get_or_init(|| {
        // INS_BIN_DIR: binaries of another build (an A/B benchmark).
        let d = std::env::var_os("INS_BIN_DIR").map_or_else(bin_dir, PathBuf::from);
        let b = Bins {
            driver: d.join("ins-driver"),
            ins: d.join("ins"),
            shim: d.join("libshim.so"),
        };
        let profile = d
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let flag = if profile == "debug" {
            String::new()
        } else if profile == "release" {
            " --release".into()
        } else {
            format!(" --profile {profile}")
        };
        for p in [&b.driver, &b.ins, &b.shim] {
            assert!(
                p.is_file(),
                "{} is missing: build the INS binaries into the same target dir first:\n  \
                 cargo build{flag} -p ins-driver -p ins -p ins-shim",
                p.display()
            );
        }
        // Binaries older than the sources are tested as they are, with a
        // loud warning (a stale binary makes results meaningless).
        let newest_src = newest_source_mtime();
        for p in [&b.driver, &b.ins, &b.shim] {
            let m = std::fs::metadata(p).and_then(|m| m.modified()).ok();
            if let (Some(m), Some(src)) = (m, newest_src)
                && m < src
            {
                eprintln!(
                    "WARNING: {} is older than the workspace sources; rebuild with \
                     `cargo build{flag} -p ins-driver -p ins -p ins-shim`",
                    p.display()
                );
            }
        }
        b
    })
}

/// Newest modification time of the Rust sources the three binaries are
/// built from.
fn newest_source_mtime() -> Option<std::time::SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, newest);
            } else if p.extension() == Some(OsStr::new("rs"))
                && let Ok(m) = e.metadata().and_then(|m| m.modified())
                && newest.is_none_or(|n| m > n)
            {
                *newest = Some(m);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let mut newest = None;
    for d in [
        "protocol/src",
        "transport/src",
        "shim/src",
        "protvm-driver/core/src",
        "protvm-driver/daemon/src",
        "ins-unikernel/ins-core/src",
        "ins-unikernel/ins/src",
    ] {
        walk(&root.join(d), &mut newest);
    }
    newest
}

/// Absolute path of a system program the tests drive; panics (test failure,
/// not a skip) with an install hint if it is missing.
pub fn require(prog: &str) -> PathBuf {
    let candidates: Vec<PathBuf> = if prog.contains('/') {
        vec![PathBuf::from(prog)]
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut v: Vec<PathBuf> = std::env::split_paths(&path).map(|d| d.join(prog)).collect();
        v.push(Path::new("/usr/sbin").join(prog));
        v.push(Path::new("/sbin").join(prog));
        v
    };
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "required program `{prog}` is not installed; run ./.ci/install-deps (as root) \
         or apt-get install nginx-light curl redis-server redis-tools wrk python3 iproute2 util-linux socat iperf3 bind9-dnsutils openssh-server openssh-client dnsmasq-base"
    )
}

/// A fresh temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `/tmp/ins-e2e-<pid>-<n>-<tag>`.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("ins-e2e-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("INS_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process in its own process group; the whole group is killed on
/// drop.
#[derive(Debug)]
pub struct Proc {
    /// The child.
    pub child: Child,
    /// What it is (for messages).
    pub name: String,
}

impl Proc {
    /// Spawns `cmd` in a new process group.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// Waits for exit up to `timeout`; `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    /// Kills the process group with `SIGKILL` and reaps the child.
    pub fn kill(&mut self) {
        signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on and the kernel never hands out by itself:
/// below the ephemeral range (`ip_local_port_range`), so neither a
/// program's own `bind(0)` nor a connect's source port (which would make
/// a TCP connection to itself) can take it while a test expects it
/// closed. Free for TCP and UDP on 127.0.0.1 when chosen.
pub fn closed_port() -> u16 {
    static USED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (10_000u16, low.max(10_001));
    let span = u32::from(hi - lo);
    // Start somewhere that differs between processes, then walk.
    let mut p = lo + (std::process::id() % span) as u16;
    for _ in 0..span {
        p = if p + 1 >= hi { lo } else { p + 1 };
        let free = TcpListener::bind(("127.0.0.1", p)).is_ok()
            && UdpSocket::bind(("127.0.0.1", p)).is_ok();
        let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
        if free && !used.contains(&p) {
            used.push(p);
            return p;
        }
    }
    panic!("no free port in {lo}..{hi}");
}

/// A port free on the host loopback right now (bound natively with port 0,
/// then released).
pub fn free_port() -> u16 {
    // Keep the port away from ones handed out earlier in this process.
    static USED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let p = l.local_addr().expect("local_addr").port();
        // Also free for UDP and on ::1, so one port serves every test.
        let udp_ok = UdpSocket::bind(("127.0.0.1", p)).is_ok();
        let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
        if udp_ok && !used.contains(&p) {
            used.push(p);
            return p;
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    wait_for(timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .ok()
            .map(|_| ())
    })
    .is_some()
}

/// Waits until a redis server at `addr` answers `PING`.
pub fn wait_redis(addr: SocketAddr, timeout: Duration) -> bool {
    wait_for(timeout, || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"PING\r\n").ok()?;
        let mut b = [0u8; 7];
        s.read_exact(&mut b).ok()?;
        (&b == b"+PONG\r\n").then_some(())
    })
    .is_some()
}

/// Reads a file, empty string if unreadable.
pub fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The running INS: one driver and N instances in a temporary run dir.
#[derive(Debug)]
pub struct Ins {
    dir: TempDir,
    /// The driver.
    pub driver: Proc,
    /// The instances, index i has instance id i+1.
    pub instances: Vec<Proc>,
}

/// Open-file limit given to the driver and instances (and to programs run
/// with [`Ins::shim_cmd`]): raised to this when we may (root), else to the
/// hard limit.
pub const NOFILE: u64 = 65_536;

impl Ins {
    /// Starts a driver and `n` instances and waits until the driver has
    /// accepted all of them (its log says `instance joined` n times).
    pub fn start(n: usize) -> Ins {
        Ins::start_with(n, &[])
    }

    /// Like [`Ins::start`] with extra driver flags.
    pub fn start_with(n: usize, driver_args: &[&str]) -> Ins {
        let b = bins();
        let dir = TempDir::new("run");
        let log = dir.path().join("driver.log");
        let mut cmd = Command::new(&b.driver);
        cmd.arg("--run-dir")
            .arg(dir.path())
            .arg("--log")
            .arg(&log)
            .args(driver_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("driver.stderr")).expect("stderr file"));
        with_nofile(&mut cmd);
        let mut driver = Proc::spawn("ins-driver", cmd);
        let inst_sock = dir.path().join("instance.sock");
        let shim_sock = dir.path().join("shim.sock");
        let up = wait_for(Duration::from_secs(10), || {
            (inst_sock.exists() && shim_sock.exists()).then_some(())
        });
        if up.is_none() {
            let alive = driver.alive();
            panic!(
                "ins-driver did not create {} and {} within 10 s (alive: {alive})\nlog:\n{}\nstderr:\n{}",
                inst_sock.display(),
                shim_sock.display(),
                read_lossy(&log),
                read_lossy(&dir.path().join("driver.stderr"))
            );
        }
        let mut ins = Ins {
            dir,
            driver,
            instances: Vec::new(),
        };
        for _ in 0..n {
            ins.add_instance();
        }
        ins
    }

    /// Starts one more instance and waits until the driver reports it
    /// joined.
    pub fn add_instance(&mut self) {
        self.add_instance_with(&[]);
    }

    /// Like [`Ins::add_instance`] with extra `ins` flags.
    pub fn add_instance_with(&mut self, args: &[&str]) {
        let id = self.instances.len() + 1;
        let before = self.joined();
        let mut cmd = Command::new(&bins().ins);
        cmd.arg("--driver")
            .arg(self.dir.path().join("instance.sock"))
            .arg("--instance-id")
            .arg(id.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.path().join(format!("ins-{id}.log")))
                    .expect("ins log"),
            );
        with_nofile(&mut cmd);
        self.instances.push(Proc::spawn(&format!("ins #{id}"), cmd));
        let ok = wait_for(Duration::from_secs(10), || {
            (self.joined() > before).then_some(())
        });
        if ok.is_none() {
            panic!(
                "the driver did not report instance {id} joined within 10 s\n{}",
                self.diagnostics()
            );
        }
    }

    fn joined(&self) -> usize {
        read_lossy(&self.dir.path().join("driver.log"))
            .matches("instance joined")
            .count()
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The shim's control socket path.
    pub fn shim_socket(&self) -> PathBuf {
        self.dir.path().join("shim.sock")
    }

    /// The environment that puts a program under the shim.
    pub fn shim_env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), bins().shim.display().to_string()),
            (
                "INS_SHIM_SOCKET".into(),
                self.shim_socket().display().to_string(),
            ),
        ]
    }

    /// A command for `program` under the shim (with a raised fd limit).
    pub fn shim_cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        c.envs(self.shim_env());
        with_nofile(&mut c);
        c
    }

    /// The driver's log so far.
    pub fn driver_log(&self) -> String {
        read_lossy(&self.dir.path().join("driver.log"))
    }

    /// Driver log, driver stderr and instance logs (for failure messages).
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        let tail = |t: String| {
            let lines: Vec<&str> = t.lines().collect();
            let from = lines.len().saturating_sub(40);
            lines[from..].join("\n")
        };
        s += &format!("--- driver.log (tail)\n{}\n", tail(self.driver_log()));
        s += &format!(
            "--- driver.stderr (tail)\n{}\n",
            tail(read_lossy(&self.dir.path().join("driver.stderr")))
        );
        for i in 1..=self.instances.len() {
            s += &format!(
                "--- ins-{i}.log (tail)\n{}\n",
                tail(read_lossy(&self.dir.path().join(format!("ins-{i}.log"))))
            );
        }
        s
    }

    /// Pids of the instances still running.
    pub fn instance_pids(&mut self) -> Vec<u32> {
        self.instances
            .iter_mut()
            .filter_map(|p| p.alive().then(|| p.pid()))
            .collect()
    }

    /// Whether the driver is still running.
    pub fn driver_alive(&mut self) -> bool {
        self.driver.alive()
    }

    /// Number of socket fds the driver holds (pair ends, channels, shim
    /// connections).
    pub fn driver_socket_fds(&self) -> usize {
        socket_fds(self.driver.pid())
    }
}

/// Number of fds of `pid` that are sockets.
pub fn socket_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .map(|t| t.to_string_lossy().starts_with("socket:"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// CPU time `pid` has used so far (user + system, from `/proc/PID/stat`).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is 3,
    // utime 14 and stime 15.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / sys::clock_ticks() as f64,
    ))
}

/// The pids whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(d) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|c| {
            std::fs::read_to_string(format!("/proc/{c}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// `VmRSS` of `pid` in KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

/// Raises RLIMIT_NOFILE of the command's process to [`NOFILE`] (or the hard
/// limit when not allowed to raise it).
pub fn with_nofile(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (getrlimit/setrlimit).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            raise_nofile(NOFILE);
            Ok(())
        });
    }
}

/// TCP sockets (lines of `ss -tanp`) owned by any of `pids`.
pub fn tcp_sockets_of(pids: &[u32]) -> Vec<String> {
    let out = Command::new(require("ss"))
        .args(["-tanp"])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| pids.iter().any(|p| l.contains(&format!("pid={p},"))))
        .map(str::to_string)
        .collect()
}

/// Output of a finished command.
#[derive(Debug)]
pub struct Output {
    /// Exit status (`None` if killed by the timeout).
    pub status: Option<std::process::ExitStatus>,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Output {
    /// Whether it exited with status 0.
    pub fn ok(&self) -> bool {
        self.status.map(|s| s.success()).unwrap_or(false)
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion with a timeout (killing its process group when
/// it expires).
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let desc = format!("{cmd:?}");
    let mut p = Proc::spawn(&desc, cmd);
    let mut so = p.child.stdout.take().expect("stdout");
    let mut se = p.child.stderr.take().expect("stderr");
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let status = p.wait_timeout(timeout);
    if status.is_none() {
        p.kill();
    }
    let stdout = String::from_utf8_lossy(&t1.join().unwrap_or_default()).into_owned();
    let mut stderr = String::from_utf8_lossy(&t2.join().unwrap_or_default()).into_owned();
    if status.is_none() {
        stderr += &format!("\n[killed after {timeout:?} timeout]");
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), for generated files.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Compiles `tests/c/<name>.c` (once per process) and returns the binary.
pub fn c_program(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut g = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(name) {
        return p.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("c")
        .join(format!("{name}.c"));
    let out_dir = bin_dir().join("e2e-c");
    std::fs::create_dir_all(&out_dir).expect("create e2e-c dir");
    let out = out_dir.join(name);
    let tmp = out_dir.join(format!("{name}.tmp{}", std::process::id()));
    let o = Command::new(require("cc"))
        .args([
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-D_GNU_SOURCE",
            "-pthread",
            "-o",
        ])
        .arg(&tmp)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        o.status.success(),
        "cc failed for {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &out).expect("rename compiled program");
    map.insert(name.to_string(), out.clone());
    out
}

/// Result of one HTTP/1.1 GET.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// One GET over a new connection (`Connection: close`), natively.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_response(&buf)
}

/// A keep-alive HTTP/1.1 client connection (native).
#[derive(Debug)]
pub struct KeepAlive {
    /// The stream.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    /// Connects.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<KeepAlive> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(KeepAlive {
            stream: s,
            buf: Vec::new(),
        })
    }
    /// One GET on the connection; the response must carry Content-Length.
    pub fn get(&mut self, path: &str) -> std::io::Result<HttpResponse> {
        write!(self.stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")?;
        loop {
            if let Some(hend) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..hend]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| std::io::Error::other("no content-length"))?;
                if self.buf.len() >= hend + 4 + len {
                    let rest = self.buf.split_off(hend + 4 + len);
                    let whole = std::mem::replace(&mut self.buf, rest);
                    return parse_response(&whole);
                }
            }
            let mut tmp = [0u8; 65536];
            let n = self.stream.read(&mut tmp)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn parse_response(buf: &[u8]) -> std::io::Result<HttpResponse> {
    let hend = find(buf, b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {} bytes", buf.len())))?;
    let head = String::from_utf8_lossy(&buf[..hend]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    Ok(HttpResponse {
        status,
        body: buf[hend + 4..].to_vec(),
    })
}

/// Counts of a background load loop.
#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    /// Requests that got `200` and the expected body.
    pub ok: u64,
    /// Requests that failed, with the first few errors.
    pub failed: u64,
    /// Up to 10 error descriptions.
    pub errors: Vec<String>,
}

/// A bounded load loop: `threads` threads, each doing GET `path` over a new
/// connection until stopped, checking the body against `expect`.
#[derive(Debug)]
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stats: std::sync::Arc<Mutex<LoadStats>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts the loop.
    pub fn start(addr: SocketAddr, path: &str, expect: Vec<u8>, threads: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stats = std::sync::Arc::new(Mutex::new(LoadStats::default()));
        let expect = std::sync::Arc::new(expect);
        let handles = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                let stats = stats.clone();
                let expect = expect.clone();
                let path = path.to_string();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let r = http_get(addr, &path, Duration::from_secs(5));
                        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                        match r {
                            Ok(r) if r.status == 200 && r.body == *expect => s.ok += 1,
                            Ok(r) => {
                                s.failed += 1;
                                if s.errors.len() < 10 {
                                    s.errors.push(format!(
                                        "status {} body {} bytes",
                                        r.status,
                                        r.body.len()
                                    ));
                                }
                            }
                            Err(e) => {
                                s.failed += 1;
                                if s.errors.len() < 10 {
                                    s.errors.push(e.to_string());
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            stats,
            handles,
        }
    }
    /// Counts so far.
    pub fn snapshot(&self) -> LoadStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Stops and returns the counts.
    pub fn finish(mut self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        self.snapshot()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An nginx instance in a temporary prefix with generated static files.
#[derive(Debug)]
pub struct Nginx {
    /// The prefix (conf, logs, html root).
    pub prefix: TempDir,
    /// Listen port on 127.0.0.1.
    pub port: u16,
    /// The master process.
    pub master: Proc,
    /// Generated files: name → content.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Options for [`Nginx::start`].
#[derive(Debug, Clone)]
pub struct NginxOpts {
    /// `worker_processes` (0: `auto`).
    pub workers: u32,
    /// `tcp_nopush` (with `sendfile on`: `TCP_CORK` around every response).
    pub tcp_nopush: bool,
    /// `keepalive_requests`.
    pub keepalive_requests: u32,
    /// `index.html` to serve (with `GET /`), if any.
    pub index_page: Option<Vec<u8>>,
    /// More `http {}` directives, verbatim.
    pub extra_http: String,
    /// `worker_connections`.
    pub worker_connections: u32,
    /// Generate the 1 MiB and 10 MiB files too.
    pub big_files: bool,
    /// `error_log` level.
    pub error_level: &'static str,
    /// `access_log off`.
    pub no_access_log: bool,
    /// The server's `listen` directives, `@PORT@` standing for the port
    /// (default `listen 127.0.0.1:@PORT@;`).
    pub listen: String,
}

impl Default for NginxOpts {
    fn default() -> Self {
        NginxOpts {
            workers: 2,
            tcp_nopush: true,
            keepalive_requests: 1_000_000,
            index_page: None,
            extra_http: String::new(),
            worker_connections: 1024,
            big_files: true,
            listen: "listen 127.0.0.1:@PORT@;".into(),
            error_level: "info",
            no_access_log: false,
        }
    }
}

impl Nginx {
    /// Starts nginx (`daemon off`, master + workers) from the config
    /// template `fixtures/nginx.conf.in`, under the shim when `ins` is
    /// given, natively otherwise; waits until it serves.
    pub fn start(ins: Option<&Ins>, opts: &NginxOpts) -> Nginx {
        let nginx = require("nginx");
        let prefix = TempDir::new("nginx");
        let root = prefix.path().join("html");
        std::fs::create_dir_all(&root).expect("html dir");
        std::fs::create_dir_all(prefix.path().join("logs")).expect("logs dir");
        std::fs::create_dir_all(prefix.path().join("tmp")).expect("tmp dir");
        let mut files = vec![(
            "small.html".to_string(),
            b"<html><body>INS end-to-end test page</body></html>\n".to_vec(),
        )];
        if opts.big_files {
            files.push(("1m.bin".into(), random_bytes(1 << 20, 1)));
            files.push(("10m.bin".into(), random_bytes(10 << 20, 2)));
        }
        if let Some(page) = &opts.index_page {
            files.push(("index.html".into(), page.clone()));
        }
        for (n, c) in &files {
            std::fs::write(root.join(n), c).expect("write static file");
        }
        let port = free_port();
        let tpl = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nginx.conf.in"),
        )
        .expect("read fixtures/nginx.conf.in");
        let user = if sys::euid() == 0 { "user root;" } else { "" };
        let conf = tpl
            .replace("@LISTEN@", &opts.listen)
            .replace("@USER@", user)
            .replace("@PREFIX@", &prefix.path().display().to_string())
            .replace("@PORT@", &port.to_string())
            .replace(
                "@WORKERS@",
                &if opts.workers == 0 {
                    "auto".to_string()
                } else {
                    opts.workers.to_string()
                },
            )
            .replace("@NOPUSH@", if opts.tcp_nopush { "on" } else { "off" })
            .replace("@KEEPALIVE_REQUESTS@", &opts.keepalive_requests.to_string())
            .replace("@EXTRA_HTTP@", &opts.extra_http)
            .replace("@WORKER_CONNECTIONS@", &opts.worker_connections.to_string())
            .replace("@NOFILE@", &raise_nofile(NOFILE).to_string())
            .replace("@ERROR_LEVEL@", opts.error_level)
            .replace(
                "@ACCESS_LOG@",
                &if opts.no_access_log {
                    "access_log off;".to_string()
                } else {
                    format!("access_log {}/logs/access.log;", prefix.path().display())
                },
            );
        let conf_path = prefix.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut cmd = match ins {
            Some(i) => i.shim_cmd(&nginx),
            None => {
                let mut c = Command::new(&nginx);
                with_nofile(&mut c);
                c
            }
        };
        cmd.arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(prefix.path().join("stdout")).expect("stdout"))
            .stderr(std::fs::File::create(prefix.path().join("stderr")).expect("stderr"));
        let mut master = Proc::spawn("nginx", cmd);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let up = wait_for(Duration::from_secs(15), || {
            if !master.alive() {
                return Some(false);
            }
            http_get(addr, "/small.html", Duration::from_secs(2))
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| true)
        });
        if up != Some(true) {
            let n = Nginx {
                prefix,
                port,
                master,
                files,
            };
            panic!(
                "nginx ({}) did not serve http://{addr}/small.html within 15 s\n{}\n{}",
                if ins.is_some() {
                    "under the shim"
                } else {
                    "native"
                },
                n.diagnostics(),
                ins.map(|i| i.diagnostics()).unwrap_or_default()
            );
        }
        Nginx {
            prefix,
            port,
            master,
            files,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Content of a generated file.
    pub fn file(&self, name: &str) -> &[u8] {
        &self
            .files
            .iter()
            .find(|(n, _)| n == name)
            .expect("generated file")
            .1
    }

    /// Runs `nginx -s SIGNAL` (natively: it only reads the pid file and
    /// sends a signal).
    pub fn signal(&self, sig: &str) -> Output {
        let mut c = Command::new(require("nginx"));
        c.arg("-p")
            .arg(self.prefix.path())
            .arg("-c")
            .arg(self.prefix.path().join("nginx.conf"))
            .args(["-s", sig]);
        run(c, Duration::from_secs(10))
    }

    /// error.log, stderr.
    pub fn diagnostics(&self) -> String {
        let el = read_lossy(&self.prefix.path().join("logs/error.log"));
        let lines: Vec<&str> = el.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!(
            "--- nginx error.log (tail)\n{}\n--- nginx stderr\n{}",
            lines[from..].join("\n"),
            read_lossy(&self.prefix.path().join("stderr"))
        )
    }

    /// The error log.
    pub fn error_log(&self) -> String {
        read_lossy(&self.prefix.path().join("logs/error.log"))
    }
}

/// Runs `curl` (natively or with the given env) and returns the fetched
/// bytes written to a temp file.
pub fn curl_fetch(cmd: Command, url: &str, out: &Path) -> (Output, Vec<u8>) {
    let mut cmd = cmd;
    cmd.args(["-sS", "--fail", "--max-time", "30", "-o"])
        .arg(out)
        .arg(url);
    let o = run(cmd, Duration::from_secs(40));
    let body = std::fs::read(out).unwrap_or_default();
    (o, body)
}

/// Compares two transcripts line by line; returns the differences.
pub fn diff_lines(native: &str, shim: &str) -> Vec<String> {
    let a: Vec<&str> = native.lines().collect();
    let b: Vec<&str> = shim.lines().collect();
    let mut d = Vec::new();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or("<missing>");
        let y = b.get(i).copied().unwrap_or("<missing>");
        if x != y {
            d.push(format!("line {}:\n    native: {x}\n    shim:   {y}", i + 1));
        }
    }
    d
}
