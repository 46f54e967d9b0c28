//! Harness of the attack tests: network namespaces made by the test,
//! the real `ins-driver`, an `ins` instance inside the server namespace,
//! `ins-detect`, nginx (Debian's default configuration with
//! `worker_connections 512`) under `libshim.so` or native, and client
//! helpers in `tests/helpers/`.
//!
//! Every address used (10.88.x.y) lives only inside namespaces this test
//! creates and deletes; every process runs in its own process group and is
//! killed when its guard drops. Tools the tests drive are installed with
//! apt-get when missing (the tests run as root, like CI).
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ins_e2e::{Proc, TempDir, bins, require, wait_for, with_nofile};
use serde_json::Value;

/// Unix time now, seconds.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Installs the Debian packages whose programs are missing (root only).
pub fn ensure_tools(tools: &[(&str, &str)]) {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(bin, _)| {
            !["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .any(|d| Path::new(d).join(bin).exists())
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return;
    }
    let st = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .expect("apt-get");
    if !st.success() {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        let st = Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .expect("apt-get");
        assert!(st.success(), "cannot install {missing:?} (run as root)");
    }
}

/// Runs `ip ARGS…`, panicking on failure.
pub fn ip(args: &[&str]) {
    let s = Command::new(require("ip")).args(args).status().expect("ip");
    assert!(s.success(), "ip {}", args.join(" "));
}

/// Runs a command quietly; returns whether it succeeded.
pub fn sh(prog: &str, args: &[&str]) -> bool {
    Command::new(prog)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Network namespaces (deleted on drop) joined to a server namespace by
/// veth pairs: link `i` is 10.88.i.1 (server side, device `vsNi`) ↔
/// 10.88.i.2 (client side, device `vcNi`).
pub struct Lab {
    /// The server namespace (the instance, native nginx).
    pub srv: String,
    names: Vec<String>,
    tag: String,
}

impl Lab {
    /// A server namespace; `tag` keeps names unique per test.
    pub fn new(tag: &str) -> Lab {
        let tag = format!("{tag}{}", std::process::id() % 100_000);
        let srv = format!("d{tag}s");
        let _ = Command::new("ip")
            .args(["netns", "del", &srv])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &srv]);
        ip(&["-n", &srv, "link", "set", "lo", "up"]);
        Lab {
            srv: srv.clone(),
            names: vec![srv],
            tag,
        }
    }

    /// Adds client namespace number `i` (1 ..= 250) with its link;
    /// returns its name.
    pub fn client(&mut self, i: u8) -> String {
        let ns = format!("d{}c{i}", self.tag);
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let (a, b) = (self.srv_dev(i), self.cli_dev(i));
        ip(&[
            "-n", &self.srv, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &ns,
        ]);
        ip(&[
            "-n",
            &self.srv,
            "addr",
            "add",
            &format!("10.88.{i}.1/24"),
            "dev",
            &a,
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.88.{i}.2/24"),
            "dev",
            &b,
        ]);
        ip(&["-n", &self.srv, "link", "set", &a, "up"]);
        ip(&["-n", &ns, "link", "set", &b, "up"]);
        self.names.push(ns.clone());
        ns
    }

    /// Server-side device of link `i`.
    pub fn srv_dev(&self, i: u8) -> String {
        format!("vs{}{i}", &self.tag[self.tag.len().saturating_sub(6)..])
    }

    /// Client-side device of link `i`.
    pub fn cli_dev(&self, i: u8) -> String {
        format!("vc{}{i}", &self.tag[self.tag.len().saturating_sub(6)..])
    }

    /// Adds addresses `10.88.i.first ..= 10.88.i.last` to client `i`.
    pub fn add_addrs(&self, ns: &str, i: u8, first: u8, last: u8) {
        let dev = self.cli_dev(i);
        for h in first..=last {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.88.{i}.{h}/24"),
                "dev",
                &dev,
            ]);
        }
    }

    /// Makes `10.88.i.h` the only address (and so the source) of client `i`.
    pub fn set_addr(&self, ns: &str, i: u8, h: u8) {
        let dev = self.cli_dev(i);
        ip(&["-n", ns, "addr", "flush", "dev", &dev]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.88.{i}.{h}/24"),
            "dev",
            &dev,
        ]);
    }

    /// Shapes traffic leaving `dev` in `ns` to `rate` (tc tbf).
    pub fn shape(&self, ns: &str, dev: &str, rate: &str) {
        let ok = Command::new(require("tc"))
            .args([
                "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
            ])
            .args(["burst", "1600", "latency", "2s"])
            .status()
            .expect("tc")
            .success();
        assert!(ok, "tc qdisc on {ns}/{dev}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A command run inside a namespace.
pub fn in_ns(ns: &str, prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(require("ip"));
    c.args(["netns", "exec", ns]).arg(prog);
    c
}

/// A helper script's path.
pub fn helper(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers")
        .join(name)
}

/// Where the workspace binaries are (`target/<profile>`).
pub fn bin(name: &str) -> PathBuf {
    let p = bins().driver.parent().expect("bin dir").join(name);
    assert!(
        p.exists(),
        "{} missing: cargo build --workspace --release",
        p.display()
    );
    p
}

/// The running INS: driver in the root namespace, one instance in the
/// server namespace, the monitor stream recorded.
pub struct Ins {
    /// Run directory.
    pub dir: TempDir,
    /// The driver.
    pub driver: Proc,
    /// The instance.
    pub instance: Proc,
    /// Mitigation events from the monitor stream (with `at`).
    pub events: Arc<Mutex<Vec<Value>>>,
}

impl Ins {
    /// Starts the driver and one instance in `srv` (extra `ins` args).
    pub fn start(srv: &str, ins_args: &[&str]) -> Ins {
        let dir = TempDir::new("detect");
        let log = dir.path().join("driver.log");
        let mut c = Command::new(&bins().driver);
        c.arg("--run-dir")
            .arg(dir.path())
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        with_nofile(&mut c);
        let driver = Proc::spawn("ins-driver", c);
        let ctl = dir.path().join("ctl.sock");
        wait_for(Duration::from_secs(10), || {
            (ctl.exists() && dir.path().join("shim.sock").exists()).then_some(())
        })
        .expect("the driver's sockets");
        let mut c = in_ns(srv, &bins().ins);
        c.arg("--driver")
            .arg(dir.path().join("instance.sock"))
            .args(["--instance-id", "1"])
            .args(ins_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("ins.log")).expect("ins log"));
        with_nofile(&mut c);
        let instance = Proc::spawn("ins", c);
        wait_for(Duration::from_secs(10), || {
            ins_e2e::read_lossy(&log)
                .contains("instance joined")
                .then_some(())
        })
        .expect("the instance joined");
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut s = UnixStream::connect(&ctl).expect("ctl.sock");
        s.write_all(b"{\"cmd\":\"subscribe\",\"types\":[\"mitigation\"]}\n")
            .expect("subscribe");
        {
            let events = events.clone();
            let r = BufReader::new(s);
            std::thread::spawn(move || {
                for l in r.lines() {
                    let Ok(l) = l else { return };
                    if let Ok(v) = serde_json::from_str::<Value>(&l)
                        && v["type"] == "mitigation"
                    {
                        events.lock().expect("events").push(v);
                    }
                }
            });
        }
        Ins {
            dir,
            driver,
            instance,
            events,
        }
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A command under the shim (root namespace).
    pub fn shim_cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(prog);
        c.env("LD_PRELOAD", &bins().shim)
            .env("INS_SHIM_SOCKET", self.dir.path().join("shim.sock"));
        with_nofile(&mut c);
        c
    }

    /// Starts `ins-detect` with no configuration (the defaults), logging
    /// decisions to `RUN_DIR/decisions.jsonl`.
    pub fn detect(&self) -> Proc {
        let mut c = Command::new(bin("ins-detect"));
        c.arg("--run-dir")
            .arg(self.dir.path())
            .arg("--log")
            .arg(self.decisions_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("detect.stderr")).expect("stderr"));
        let p = Proc::spawn("ins-detect", c);
        let log = self.decisions_path();
        wait_for(Duration::from_secs(10), || {
            ins_e2e::read_lossy(&log)
                .contains("\"subscribed\"")
                .then_some(())
        })
        .expect("ins-detect subscribed");
        p
    }

    /// The decision log's path.
    pub fn decisions_path(&self) -> PathBuf {
        self.dir.path().join("decisions.jsonl")
    }

    /// Every line ins-detect logged so far.
    pub fn decisions(&self) -> Vec<Value> {
        ins_e2e::read_lossy(&self.decisions_path())
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Mitigation events so far.
    pub fn mitigation_events(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }
}

/// nginx from Debian's default `/etc/nginx/nginx.conf` (as installed),
/// changed only where a test must: `worker_connections 512`, paths inside
/// `prefix`, no `conf.d`/`modules-enabled` includes (whatever else this
/// machine has installed), and a server block on `port` with a WebDAV PUT
/// location for uploads. Returns the config path.
pub fn nginx_conf(prefix: &Path, port: u16, www: &Path) -> PathBuf {
    let base = std::fs::read_to_string("/etc/nginx/nginx.conf")
        .expect("Debian's /etc/nginx/nginx.conf (apt-get install nginx-light)");
    let p = prefix.display().to_string();
    for d in ["logs", "tmp", "sites"] {
        std::fs::create_dir_all(prefix.join(d)).expect("mkdir");
    }
    let mut conf = String::new();
    for l in base.lines() {
        let t = l.trim();
        let line = if t.starts_with("worker_connections") {
            "\tworker_connections 512;".to_string()
        } else if t.starts_with("pid ") {
            format!("pid {p}/nginx.pid;")
        } else if t.starts_with("error_log") {
            format!("error_log {p}/logs/error.log;")
        } else if t.starts_with("access_log") {
            format!("\taccess_log {p}/logs/access.log;")
        } else if t.starts_with("include /etc/nginx/sites-enabled") {
            format!("\tinclude {p}/sites/*;")
        } else if t.starts_with("include /etc/nginx/conf.d")
            || t.starts_with("include /etc/nginx/modules-enabled")
        {
            // Extra site configs and dynamic modules of this machine are
            // not part of the default configuration the test means.
            String::new()
        } else {
            l.to_string()
        };
        conf.push_str(&line);
        conf.push('\n');
    }
    std::fs::write(
        prefix.join("sites/test"),
        format!(
            "server {{\n\tlisten {port} default_server;\n\troot {www};\n\tindex index.html;\n\
             \tclient_body_temp_path {p}/tmp;\n\
             \tlocation / {{ try_files $uri $uri/ =404; }}\n\
             \tlocation /upload/ {{ dav_methods PUT; create_full_put_path on; client_max_body_size 64m; }}\n}}\n",
            www = www.display()
        ),
    )
    .expect("server block");
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    path
}

/// Starts nginx with `conf` (`daemon off`); `cmd` decides where (under
/// the shim or in a namespace).
pub fn nginx(mut cmd: Command, conf: &Path, prefix: &Path) -> Proc {
    cmd.arg("-c")
        .arg(conf)
        .arg("-p")
        .arg(prefix)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(prefix.join("stderr")).expect("stderr"));
    with_nofile(&mut cmd);
    Proc::spawn("nginx", cmd)
}

/// One well-behaved request as `clients.py` reports it.
#[derive(Debug, Clone)]
pub struct Req {
    /// Source address.
    pub src: String,
    /// Start, Unix seconds.
    pub t0: f64,
    /// End.
    pub t1: f64,
    /// Succeeded.
    pub ok: bool,
}

/// Parses `clients.py` output.
pub fn parse_reqs(out: &str) -> Vec<Req> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| Req {
            src: v["src"].as_str().unwrap_or("").to_string(),
            t0: v["t0"].as_f64().unwrap_or(0.0),
            t1: v["t1"].as_f64().unwrap_or(0.0),
            ok: v["ok"].as_bool().unwrap_or(false),
        })
        .collect()
}

/// The p-quantile of `v` (sorted copy), NaN if empty.
pub fn quantile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// Starts `clients.py` in `ns` against `http://HOST:PORT/PATH`
/// (`target`) from `sources` for `secs` seconds, pausing `pause` s between
/// requests; its stdout goes to `out`.
pub fn clients(
    ns: &str,
    target: (&str, u16, &str),
    sources: &[String],
    secs: f64,
    pause: f64,
    out: &Path,
) -> Proc {
    let (host, port, path) = target;
    let mut c = in_ns(ns, require("python3"));
    c.arg(helper("clients.py"))
        .args([
            host,
            &port.to_string(),
            path,
            &sources.join(","),
            &secs.to_string(),
            &pause.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).expect("clients out"))
        .stderr(Stdio::null());
    Proc::spawn("clients", c)
}
