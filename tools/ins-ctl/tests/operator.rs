//! The operator's small things (issue 15), against the real binaries:
//! output into a closed pipe, `run` as an unprivileged user, fresh `list`
//! figures.
mod common;

use std::process::{Command, Stdio};

use common::*;

/// `n` HTTP/1.0 GETs, each its own connection (one flow record each).
fn fetch_many(port: u16, n: usize) {
    for i in 0..n {
        get(port).unwrap_or_else(|e| panic!("GET {i}: {e}"));
    }
}

/// Runs ins-ctl with standard output a pipe whose read end is already
/// closed: every write fails with EPIPE.
fn into_closed_pipe(ins: &Ins, args: &[&str]) -> std::process::Output {
    let (r, w) = std::io::pipe().expect("pipe");
    drop(r);
    Command::new(ctl_bin())
        .arg("--run-dir")
        .arg(&ins.dir)
        .args(args)
        .stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .output()
        .expect("run ins-ctl")
}

#[test]
fn output_into_a_closed_pipe_exits_quietly() {
    let mut ins = Ins::new("pipe");
    ins.ok(&["up", "--instances", "1"]);
    let port = free_port();
    ins.serve(port);
    // More than a pipe's 64 KiB of table output, so that `head -1` has
    // surely exited while ins-ctl still writes.
    fetch_many(port, 800);
    let all = ins.ok(&["flows"]);
    assert!(
        all.len() > 70_000,
        "only {} bytes of flows: the test would not reach EPIPE",
        all.len()
    );
    for args in [
        &["flows"][..],
        &["flows", "--json"],
        &["list"],
        &["list", "--json"],
        &["status"],
        &["status", "--json"],
    ] {
        let o = into_closed_pipe(&ins, args);
        let err = stderr(&o);
        assert!(
            !err.contains("panicked") && err.is_empty(),
            "ins-ctl {args:?} into a closed pipe: stderr {err:?}"
        );
        assert_eq!(code(&o), 141, "ins-ctl {args:?}: {:?}", o.status);
    }
    // The shell pipeline the issue names, exactly.
    let script = format!(
        "{} --run-dir {} flows | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
        ctl_bin().display(),
        ins.dir.display()
    );
    let o = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "flows | head -1: {err}");
    assert!(err.is_empty(), "flows | head -1 wrote to stderr: {err}");
    let mut lines = out.lines();
    assert!(lines.next().is_some_and(|l| l.starts_with("FLOW")), "{out}");
    assert_eq!(lines.next(), Some("status=141"), "{out}");
}

/// The unprivileged test user (created once, with its own group).
const USER: &str = "ins-optest";

fn ensure_user() {
    let have = Command::new("id")
        .arg(USER)
        .output()
        .expect("id")
        .status
        .success();
    if !have {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
            .expect("useradd (this test runs as root)");
        assert!(st.success(), "useradd {USER}: {st}");
    }
}

/// ins-ctl as the unprivileged user.
fn ctl_as_user(ins: &Ins, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", USER, "--"])
        .arg(ctl_bin())
        .arg("--run-dir")
        .arg(&ins.dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runuser")
}

const CLIENT: &str = r#"
import os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"u" * int(sys.argv[2]))
s.close()
print("uid", os.getuid())
"#;

#[test]
fn run_as_an_unprivileged_user_needs_only_the_shim_socket() {
    assert_eq!(
        rustix_uid(),
        0,
        "this test runs as root: it creates a user and switches to it"
    );
    ensure_user();
    // ins-ctl and libshim.so must be reachable by the user.
    let mut p = ctl_bin();
    while p.pop() {
        if p.as_os_str().is_empty() {
            break;
        }
        let o = Command::new("runuser")
            .args(["-u", USER, "--", "test", "-x"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(o.success(), "{} is not searchable by {USER}", p.display());
    }
    let ins = Ins::new("unpriv");
    ins.ok(&["up", "--instances", "1"]);
    let uid: u32 = String::from_utf8(
        Command::new("id")
            .args(["-u", USER])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();

    // Control stays with root: ctl.sock is 0600.
    let o = ctl_as_user(&ins, &["list"]);
    assert_eq!(code(&o), 4, "list as {USER}: {}", stderr(&o));
    // (The kernel refuses the connect, EACCES: the user cannot reach
    // ctl.sock at all, so the run below cannot have used it.)

    // A plain run works: the program connects through INS as the user.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    const SENT: usize = 4321;
    let t = std::thread::spawn(move || {
        use std::io::Read as _;
        let (mut s, _) = server.accept().unwrap();
        let mut b = Vec::new();
        s.read_to_end(&mut b).unwrap();
        b.len()
    });
    let o = ctl_as_user(
        &ins,
        &[
            "run",
            "--",
            "python3",
            "-c",
            CLIENT,
            &port.to_string(),
            &SENT.to_string(),
        ],
    );
    assert!(
        o.status.success(),
        "run as {USER}: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("uid {uid}")
    );
    assert_eq!(t.join().unwrap(), SENT);
    // It went through INS: the driver has its flow.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let f = ins.ok(&["flows", "--json"]);
        if f.contains(&format!("127.0.0.1:{port}")) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "no flow to port {port}: {f}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // --isolate as the user (unshare -rn: a user namespace with an empty
    // network namespace): the host's loopback is reachable only through
    // INS.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        use std::io::Read as _;
        let (mut s, _) = server.accept().unwrap();
        let mut b = Vec::new();
        s.read_to_end(&mut b).unwrap();
        b.len()
    });
    let o = ctl_as_user(
        &ins,
        &[
            "run",
            "--isolate",
            "--",
            "python3",
            "-c",
            CLIENT,
            &port.to_string(),
            &SENT.to_string(),
        ],
    );
    assert!(
        o.status.success(),
        "run --isolate as {USER}: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    assert_eq!(t.join().unwrap(), SENT);
    ins.ok(&["down"]);

    // A shim socket the user may not open is exit 4, naming shim.sock.
    let ins = Ins::new("unpriv-shim");
    ins.ok(&["up", "--instances", "1", "--", "--shim-mode", "600"]);
    let o = ctl_as_user(&ins, &["run", "--", "true"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("shim.sock"), "{}", stderr(&o));
    ins.ok(&["down"]);

    // Control and the shim handed to a group: --ctl-group, --shim-group.
    let ins = Ins::new("unpriv-group");
    ins.ok(&[
        "up",
        "--instances",
        "1",
        "--",
        "--ctl-mode",
        "660",
        "--ctl-group",
        USER,
        "--shim-mode",
        "660",
        "--shim-group",
        USER,
    ]);
    let o = ctl_as_user(&ins, &["run", "--", "true"]);
    assert_eq!(
        code(&o),
        0,
        "run as a member of --shim-group: {}",
        stderr(&o)
    );
    let o = ctl_as_user(&ins, &["list", "--json"]);
    assert_eq!(
        code(&o),
        0,
        "list as a member of --ctl-group: {}",
        stderr(&o)
    );
    let l: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(l.as_array().map(Vec::len), Some(1), "{l}");
}

fn rustix_uid() -> u32 {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn run_without_a_driver_says_not_running() {
    let o = Command::new(ctl_bin())
        .args(["--run-dir", "/nonexistent/ins", "run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not running") && stderr(&o).contains("/nonexistent/ins/shim.sock"),
        "{}",
        stderr(&o)
    );
}

/// Opens N connections to 127.0.0.1:PORT, sends 5 bytes on each, says
/// "ready" and holds them until a byte arrives on stdin.
const HOLDER: &str = r#"
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
cs = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
for c in cs:
    c.sendall(b"hello")
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.read(1)
for c in cs:
    c.close()
"#;

/// `list` right after a burst: the figures are current, not a heartbeat
/// old. The instance beats only once a minute here (its first beat is at
/// start, before any traffic), so every non-zero figure below comes from
/// the driver's own tables and the flow records, as they are now.
#[test]
fn list_is_current_right_after_a_burst() {
    use std::io::{Read as _, Write as _};
    let mut ins = Ins::new("fresh");
    ins.ok(&[
        "up",
        "--instances",
        "1",
        "--",
        "--heartbeat-timeout-ms",
        "180000",
        "--ins-arg=--heartbeat-ms=60000",
    ]);
    let port = free_port();
    ins.serve(port);
    let base = ins.list();
    assert_eq!(base.len(), 1, "{base:?}");
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(u64::MAX);
    let (in0, out0) = (n(&base[0], "bytes_in"), n(&base[0], "bytes_out"));

    // Burst: a program under the shim opens 20 connections to a server
    // here, sends on each, and holds them until told.
    const OPEN: usize = 20;
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sport = server.local_addr().unwrap().port();
    let acc = std::thread::spawn(move || {
        let mut v = Vec::new();
        for _ in 0..OPEN {
            let (mut c, _) = server.accept().unwrap();
            let mut b = [0u8; 5];
            c.read_exact(&mut b).unwrap();
            v.push(c);
        }
        v
    });
    let mut holder = Command::new(ctl_bin())
        .arg("--run-dir")
        .arg(&ins.dir)
        .args(["run", "--", "python3", "-c", HOLDER, &sport.to_string()])
        .arg(OPEN.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    holder
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();
    assert_eq!(&ready, b"ready\n");
    let accepted = acc.join().unwrap();
    let l = ins.list();
    assert!(
        n(&l[0], "connections") >= OPEN as u64,
        "{OPEN} connections are open, list says {}",
        l[0]
    );
    assert!(
        n(&l[0], "sockets_used") > OPEN as u64,
        "{OPEN} connections and a listener, list says {}",
        l[0]
    );
    assert_eq!(
        l[0]["reported"]["seq"], base[0]["reported"]["seq"],
        "a heartbeat came in between: the test proves nothing"
    );
    // Let them go; then 50 short requests to the server under the shim.
    holder.stdin.take().unwrap().write_all(b"x").unwrap();
    assert!(holder.wait().unwrap().success());
    drop(accepted);
    fetch_many(port, 50);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let l = ins.list();
        let (bi, bo) = (n(&l[0], "bytes_in"), n(&l[0], "bytes_out"));
        if bi > in0 && bo > out0 && n(&l[0], "connections") == 0 {
            assert_eq!(
                l[0]["reported"]["seq"], base[0]["reported"]["seq"],
                "a heartbeat came in between: the test proves nothing"
            );
            // 50 requests of > 30 bytes in and answers of > 100 bytes
            // out, and 5 bytes out on each held connection.
            assert!(bi - in0 >= 50 * 30, "{}", l[0]);
            assert!(bo - out0 >= 50 * 100 + 5 * OPEN as u64, "{}", l[0]);
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "list did not catch up with the burst: {}",
            l[0]
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The table shows the same.
    let t = ins.ok(&["list"]);
    assert!(t.lines().count() == 2, "{t}");
}
