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
