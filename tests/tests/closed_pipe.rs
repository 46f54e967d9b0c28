//! `ins-flow` and `ins-detect` writing into a closed pipe (`… | head`)
//! exit quietly with status 141, as coreutils do, instead of panicking
//! (`ins-ctl`'s commands: tools/ins-ctl/tests/operator.rs).
//!
//! Standard output is a pipe whose read end is closed before the program
//! starts, so its first write fails with EPIPE whatever the output size.
//! Needs ins-flow and ins-detect built (`cargo build --release -p ins-flow
//! -p ins-detect`).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use ins_e2e::bin_dir;

fn tool(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} missing: cargo build --release -p ins-flow -p ins-detect",
        p.display()
    );
    p
}

fn into_closed_pipe(mut c: Command) -> Output {
    let (r, w) = std::io::pipe().expect("pipe");
    drop(r);
    c.stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .output()
        .expect("spawn")
}

fn check(what: &str, o: &Output) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.is_empty(),
        "{what} into a closed pipe wrote to stderr: {err}"
    );
    assert_eq!(o.status.code(), Some(141), "{what}: {:?}", o.status);
}

#[test]
fn ins_flow_watch_into_a_closed_pipe() {
    let mut c = Command::new(tool("ins-flow"));
    c.args(["watch", "--stdin", "--count", "1", "--interval", "0.1"]);
    check("ins-flow watch", &into_closed_pipe(c));
}

#[test]
fn ins_detect_print_config_into_a_closed_pipe() {
    let mut c = Command::new(tool("ins-detect"));
    c.arg("--print-config");
    check("ins-detect --print-config", &into_closed_pipe(c));
}
