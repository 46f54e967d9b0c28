//! `libshim.so` with no driver running: Internet sockets fail closed with
//! `EAFNOSUPPORT` and one stderr line; everything else is untouched;
//! `INS_FAIL_OPEN=1` uses the host stack.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>/libshim.so`, next to this test's `deps/` directory.
fn shim_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let p = profile_dir.join("libshim.so");
    assert!(p.exists(), "{} not built", p.display());
    p
}

fn compile(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(format!("{name}.c"));
    // One binary per call: the tests run in parallel and each removes its
    // own when done.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = std::env::temp_dir().join(format!("shim-test-{name}-{}-{n}", std::process::id()));
    let st = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success(), "compiling {}", src.display());
    out
}

struct Run {
    stdout: String,
    stderr: String,
}

impl Run {
    fn step(&self, name: &str) -> (i64, i32) {
        let line = self
            .stdout
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| {
                panic!(
                    "no step {name} in:\n{}\nstderr:\n{}",
                    self.stdout, self.stderr
                )
            });
        let mut it = line.split(' ').skip(1).map(|x| x.parse::<i64>().unwrap());
        (it.next().unwrap(), it.next().unwrap() as i32)
    }
}

fn run(bin: &Path, fail_open: bool) -> Run {
    let dir = std::env::temp_dir().join(format!("shim-nodriver-{}", std::process::id()));
    let mut cmd = Command::new(bin);
    cmd.env("LD_PRELOAD", shim_path())
        .env("INS_SHIM_SOCKET", dir.join("absent.sock"))
        .env_remove("INS_FAIL_OPEN");
    if fail_open {
        cmd.env("INS_FAIL_OPEN", "1");
    }
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{out:?}");
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check_host_untouched(r: &Run) {
    for step in [
        "socketpair",
        "unix_write",
        "unix_read",
        "unix_close",
        "unix_eof",
        "unix_socket",
        "file_open",
        "file_write",
        "file_read",
        "file_fcntl_dupfd",
    ] {
        assert_eq!(r.step(step), (0, 0), "{step}\n{}", r.stdout);
    }
    assert!(r.step("unix_dup").0 >= 0);
    assert_eq!(r.step("bad_fd_read"), (-1, libc::EBADF));
}

#[test]
fn fails_closed_without_driver() {
    let bin = compile("nodriver");
    let r = run(&bin, false);
    assert_eq!(r.step("inet_stream"), (-1, libc::EAFNOSUPPORT));
    assert_eq!(r.step("inet6_dgram"), (-1, libc::EAFNOSUPPORT));
    assert_eq!(r.step("inet_raw"), (-1, libc::EPERM));
    assert_eq!(r.step("inet_ping"), (-1, libc::EACCES));
    assert_eq!(r.step("inet_badproto"), (-1, libc::EPROTONOSUPPORT));
    assert_eq!(r.step("packet"), (-1, libc::EPERM));
    assert!(
        !r.stdout.contains("host_bind"),
        "no host socket may exist: {}",
        r.stdout
    );
    let lines: Vec<_> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("libshim:"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one message, got {:?}", r.stderr);
    assert!(
        lines[0].contains("absent.sock") && lines[0].contains("INS_FAIL_OPEN=1"),
        "{}",
        lines[0]
    );
    check_host_untouched(&r);
    let _ = std::fs::remove_file(bin);
}

#[test]
fn fail_open_uses_host_stack() {
    let bin = compile("nodriver");
    let r = run(&bin, true);
    assert_eq!(r.step("inet_stream"), (0, 0));
    assert_eq!(r.step("inet6_dgram"), (0, 0));
    assert_eq!(r.step("host_bind"), (0, 0));
    assert_eq!(r.step("host_getsockname"), (0, 0));
    assert_eq!(r.step("host_listen"), (0, 0));
    // Raw sockets are still refused: fail-open only replaces the driver.
    assert_eq!(r.step("inet_raw"), (-1, libc::EPERM));
    let lines = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("libshim:"))
        .count();
    assert_eq!(lines, 1, "{}", r.stderr);
    check_host_untouched(&r);
    let _ = std::fs::remove_file(bin);
}

#[test]
fn python_socket_fails_closed() {
    let out = Command::new("python3")
        .args(["-c", "import socket\ntry:\n socket.socket()\n print('created')\nexcept OSError as e:\n print('errno', e.errno)"])
        .env("LD_PRELOAD", shim_path())
        .env("INS_SHIM_SOCKET", "/nonexistent/shim.sock")
        .env_remove("INS_FAIL_OPEN")
        .output()
        .expect("python3");
    let so = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        so.trim(),
        format!("errno {}", libc::EAFNOSUPPORT),
        "{out:?}"
    );
}
