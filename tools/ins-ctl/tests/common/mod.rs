//! Helpers: run the real `ins-ctl` (and through it the real driver,
//! instances and shim) in a private run directory.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The ins-ctl binary under test.
pub fn ctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ins-ctl"))
}

/// Panics with a clear message when the sibling binaries are missing.
pub fn require_siblings() {
    let dir = ctl_bin().parent().unwrap().to_path_buf();
    for n in ["ins-driver", "ins", "libshim.so"] {
        assert!(
            dir.join(n).exists(),
            "{} missing: build them first (cargo build -p ins-driver -p ins -p ins-shim, same profile)",
            dir.join(n).display()
        );
    }
}

/// A private INS deployment (run dir), torn down on drop.
pub struct Ins {
    /// Run directory.
    pub dir: PathBuf,
    /// Programs started under the shim.
    pub servers: Vec<Child>,
}

impl Ins {
    /// A fresh run directory named after the test.
    pub fn new(name: &str) -> Ins {
        require_siblings();
        let dir = std::env::temp_dir().join(format!("ins-ctl-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Ins {
            dir,
            servers: Vec::new(),
        }
    }

    /// Runs ins-ctl with this run dir.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(ctl_bin())
            .arg("--run-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("run ins-ctl")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "ins-ctl {args:?}: {:?}\nstdout: {}\nstderr: {}\ndriver log: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(self.dir.join("driver.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `list --json`.
    pub fn list(&self) -> Vec<Value> {
        let s = self.ok(&["list", "--json"]);
        serde_json::from_str::<Value>(&s)
            .expect("list --json")
            .as_array()
            .cloned()
            .unwrap()
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).expect("status --json")
    }

    /// Starts `python3 -m http.server PORT` under the shim and waits until
    /// it answers.
    pub fn serve(&mut self, port: u16) {
        let www = self.dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), "hello through INS\n").unwrap();
        let log = std::fs::File::create(self.dir.join(format!("http-{port}.log"))).unwrap();
        let c = Command::new(ctl_bin())
            .arg("--run-dir")
            .arg(&self.dir)
            .args(["run", "--", "python3", "-m", "http.server"])
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--directory"])
            .arg(&www)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(c);
        let until = Instant::now() + Duration::from_secs(15);
        while get(port).is_err() {
            assert!(
                Instant::now() < until,
                "http.server under the shim never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Ins {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = self.ctl(&["down"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.0 GET of /index.html; Ok if the status is 200 and the body
/// is the page.
pub fn get(port: u16) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut r = Vec::new();
    s.read_to_end(&mut r).map_err(|e| format!("read: {e}"))?;
    let r = String::from_utf8_lossy(&r);
    if r.starts_with("HTTP/1.0 200") && r.ends_with("hello through INS\n") {
        Ok(())
    } else {
        Err(format!("bad answer: {r:?}"))
    }
}

/// A free loopback port (bound natively, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Exit code.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether a process exists (zombies count as gone).
pub fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        .unwrap_or(false)
}
