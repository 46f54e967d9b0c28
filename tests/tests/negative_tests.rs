//! The shim without a driver: fail closed, say so once, never use the host
//! stack; non-Internet sockets keep working.

use std::process::Command;
use std::time::Duration;

use ins_e2e::*;

const PY: &str = r#"
import socket, sys
for i in range(2):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        print("inet ok")
    except OSError as e:
        print("inet errno", e.errno)
try:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    print("inet6 ok")
except OSError as e:
    print("inet6 errno", e.errno)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
a.sendall(b"x"); print("unix", b.recv(1))
"#;

#[test]
fn no_driver_fails_closed_with_one_message() {
    let dir = TempDir::new("nodrv");
    let mut c = Command::new(require("python3"));
    c.args(["-c", PY])
        .env("LD_PRELOAD", &bins().shim)
        .env("INS_SHIM_SOCKET", dir.path().join("absent.sock"))
        .env_remove("INS_FAIL_OPEN");
    let o = run(c, Duration::from_secs(20));
    assert!(o.ok(), "{o}");
    assert_eq!(
        o.stdout.lines().collect::<Vec<_>>(),
        [
            "inet errno 97",
            "inet errno 97",
            "inet6 errno 97",
            "unix b'x'"
        ],
        "expected EAFNOSUPPORT (97) for Internet sockets and working Unix sockets\n{o}"
    );
    let msgs = o.stderr.lines().filter(|l| l.contains("libshim")).count();
    assert_eq!(
        msgs, 1,
        "expected exactly one libshim message on stderr\n{o}"
    );

    // curl under the shim cannot reach a native server: nothing falls
    // through to the host stack.
    let port = free_port();
    let mut py = Command::new(require("python3"));
    py.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--directory",
    ])
    .arg(dir.path())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let _srv = Proc::spawn("python", py);
    assert!(wait_tcp(
        ([127, 0, 0, 1], port).into(),
        Duration::from_secs(10)
    ));
    let mut c = Command::new(require("curl"));
    c.args(["-sS", "--max-time", "5", "-o", "/dev/null"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .env("LD_PRELOAD", &bins().shim)
        .env("INS_SHIM_SOCKET", dir.path().join("absent.sock"));
    let o = run(c, Duration::from_secs(15));
    assert!(
        !o.ok(),
        "curl under the shim without a driver reached the host stack\n{o}"
    );
}
