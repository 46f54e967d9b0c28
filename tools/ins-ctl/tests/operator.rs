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
