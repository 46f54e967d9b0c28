//! End to end through a real driver and instance: `ins-driver` + one `ins`
//! (built into this target directory if missing), programs under
//! `LD_PRELOAD=libshim.so`.
//!
//! * curl under the shim fetches from a native `python3 -m http.server`;
//! * `python3 -m http.server` under the shim is fetched by native curl;
//! * `tests/c/e2e.c` runs natively and under the shim: every line
//!   (return values, errnos, flags, address lengths) must match; the
//!   differences are listed.
//!
//! Where `unshare -n` works (root), shimmed programs run in a network
//! namespace with only a down loopback: they can only reach anything
//! through INS.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

fn shim_path() -> PathBuf {
    let p = profile_dir().join("libshim.so");
    assert!(p.exists(), "{} not built", p.display());
    p
}

/// `ins-driver` and `ins` from this target directory, built if missing.
fn binaries() -> (PathBuf, PathBuf) {
    let dir = profile_dir();
    let (drv, ins) = (dir.join("ins-driver"), dir.join("ins"));
    if !drv.exists() || !ins.exists() {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "ins-driver", "-p", "ins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", dir.parent().expect("target dir"));
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo build");
        assert!(st.success(), "building ins-driver and ins failed");
    }
    (drv, ins)
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Stack {
    dir: PathBuf,
    _driver: Kill,
    _instance: Kill,
}

impl Stack {
    fn shim_socket(&self) -> PathBuf {
        self.dir.join("run/shim.sock")
    }

    fn shimmed(&self, program: &str) -> Command {
        let mut c = if netns_available() {
            let mut c = Command::new("unshare");
            c.args(["-n", program]);
            c
        } else {
            Command::new(program)
        };
        c.env("LD_PRELOAD", shim_path())
            .env("INS_SHIM_SOCKET", self.shim_socket())
            .env_remove("INS_FAIL_OPEN");
        c
    }
}

fn netns_available() -> bool {
    Command::new("unshare")
        .args(["-n", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(name: &str) -> Stack {
    let (drv, ins) = binaries();
    let dir = std::env::temp_dir().join(format!("shim-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("run")).expect("tmp dir");
    let log = |n: &str| std::fs::File::create(dir.join(n)).expect("log");
    let driver = Kill(
        Command::new(drv)
            .arg("--run-dir")
            .arg(dir.join("run"))
            .stdout(log("driver.out"))
            .stderr(log("driver.log"))
            .spawn()
            .expect("ins-driver"),
    );
    wait_for("instance.sock", Duration::from_secs(10), || {
        dir.join("run/instance.sock").exists()
    });
    let instance = Kill(
        Command::new(ins)
            .arg("--driver")
            .arg(dir.join("run/instance.sock"))
            .stdout(log("ins.out"))
            .stderr(log("ins.log"))
            .spawn()
            .expect("ins"),
    );
    let stack = Stack {
        dir,
        _driver: driver,
        _instance: instance,
    };
    // Ready when a listener (which needs an instance) can be opened.
    let probe = "import socket\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()";
    wait_for("an instance", Duration::from_secs(10), || {
        stack
            .shimmed("python3")
            .args(["-c", probe])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    stack
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn test_file(dir: &Path) -> Vec<u8> {
    // 1 MiB of varied bytes.
    let data: Vec<u8> = (0u32..1 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("blob.bin"), &data).expect("write blob");
    data
}

#[test]
fn curl_through_ins_from_native_server() {
    let stack = start("curl");
    let data = test_file(&stack.dir);
    let port = free_port();
    let _server = Kill(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&stack.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("http.server"),
    );
    wait_for("native server", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let out = stack
        .shimmed("curl")
        .args(["-sS", "--max-time", "20"])
        .arg(format!("http://127.0.0.1:{port}/blob.bin"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl under the shim: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == data,
        "{} bytes fetched, {} expected",
        out.stdout.len(),
        data.len()
    );
}

#[test]
fn http_server_through_ins_to_native_curl() {
    let stack = start("server");
    let data = test_file(&stack.dir);
    let port = free_port();
    let mut server = Kill(
        stack
            .shimmed("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&stack.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("http.server"),
    );
    wait_for("shimmed server", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    for _ in 0..3 {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .arg(format!("http://127.0.0.1:{port}/blob.bin"))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "native curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == data,
            "{} bytes fetched, {} expected",
            out.stdout.len(),
            data.len()
        );
    }
    let _ = server.0.kill();
    let mut err = String::new();
    if let Some(mut e) = server.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(
        err.matches("\"GET /blob.bin HTTP/1.1\" 200").count(),
        3,
        "server log:\n{err}"
    );
}

#[test]
fn socket_semantics_match_native() {
    let stack = start("semantics");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/e2e.c");
    let bin = stack.dir.join("e2e");
    let st = Command::new("cc")
        .args(["-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success());
    let native = Command::new(&bin).output().expect("native run");
    assert!(native.status.success(), "native: {native:?}");
    let shimmed = stack
        .shimmed(bin.to_str().expect("utf-8 path"))
        .stderr(Stdio::piped())
        .output()
        .expect("shimmed run");
    let n = String::from_utf8_lossy(&native.stdout).into_owned();
    let s = String::from_utf8_lossy(&shimmed.stdout).into_owned();
    let (nl, sl): (Vec<_>, Vec<_>) = (n.lines().collect(), s.lines().collect());
    let mut diffs = Vec::new();
    for (i, want) in nl.iter().enumerate() {
        match sl.get(i) {
            Some(got) if got == want => {}
            Some(got) => diffs.push(format!("native `{want}`, under INS `{got}`")),
            None => diffs.push(format!("native `{want}`, under INS missing")),
        }
    }
    assert!(
        diffs.is_empty() && shimmed.status.success(),
        "{} difference(s):\n{}\nshimmed stderr:\n{}",
        diffs.len(),
        diffs.join("\n"),
        String::from_utf8_lossy(&shimmed.stderr)
    );
}
