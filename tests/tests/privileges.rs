//! What a root-started driver keeps once its sockets are bound (issue 15;
//! README, "The driver's privileges"): `/proc/<driver>/status` of a real
//! `ins-driver`.
//!
//! * Alone: effective = permitted = bounding = `CAP_KILL`,
//!   `CAP_NET_ADMIN`; inheritable and ambient empty; `NoNewPrivs: 1`. It
//!   still serves: a native client fetches through an instance from a
//!   program under the shim.
//! * Spawning sandboxed instances (`--ins-bin`, low ports on by default):
//!   also `CAP_SETUID`, `CAP_SETGID`, `CAP_SETPCAP`,
//!   `CAP_NET_BIND_SERVICE`; the instance it spawns still applies its own
//!   sandbox (uid `nobody`, only `CAP_NET_BIND_SERVICE`).
//! * `--keep-caps sys_ptrace` adds that one.
//! * Control: `--drop-privileges=false` keeps root's full sets, so the
//!   checks above can fail.
//!
//! Needs root.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use ins_e2e::*;

const KILL: u64 = 1 << 5;
const SETGID: u64 = 1 << 6;
const SETUID: u64 = 1 << 7;
const SETPCAP: u64 = 1 << 8;
const NET_BIND_SERVICE: u64 = 1 << 10;
const NET_ADMIN: u64 = 1 << 12;
const SYS_PTRACE: u64 = 1 << 19;

/// The `Cap*`, `NoNewPrivs` and `Uid` fields of `/proc/PID/status`.
fn status(pid: u32) -> HashMap<String, String> {
    read_lossy(std::path::Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect()
}

fn mask(st: &HashMap<String, String>, key: &str) -> u64 {
    u64::from_str_radix(st.get(key).map_or("", String::as_str), 16)
        .unwrap_or_else(|_| panic!("{key} missing in status: {st:?}"))
}

/// Waits for the driver's "privileges dropped" line and returns its
/// status.
fn dropped(ins: &Ins) -> HashMap<String, String> {
    let ok = wait_for(Duration::from_secs(10), || {
        ins.driver_log()
            .contains("privileges dropped")
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "no 'privileges dropped' line\n{}",
        ins.diagnostics()
    );
    status(ins.driver.pid())
}

/// The driver's sets must be `want` within what it started with (this
/// test's own sets: a driver never gains a capability).
fn check_sets(st: &HashMap<String, String>, want: u64, what: &str) {
    let own = status(std::process::id());
    assert_ne!(
        mask(&own, "CapPrm"),
        0,
        "this test needs root with capabilities"
    );
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        let expect = want & mask(&own, if key == "CapBnd" { "CapBnd" } else { "CapPrm" });
        assert_eq!(
            mask(st, key),
            expect,
            "{what}: {key} is {:#x}, expected {expect:#x}",
            mask(st, key)
        );
    }
    assert_eq!(mask(st, "CapInh"), 0, "{what}: CapInh");
    assert_eq!(mask(st, "CapAmb"), 0, "{what}: CapAmb");
    assert_eq!(
        st.get("NoNewPrivs").map(String::as_str),
        Some("1"),
        "{what}: NoNewPrivs"
    );
}

fn assert_root() {
    let st = status(std::process::id());
    assert!(
        st.get("Uid")
            .is_some_and(|u| u.starts_with("0\t") || u.starts_with("0 ")),
        "this test needs root (the driver must start with capabilities to drop)"
    );
}

#[test]
fn driver_alone_keeps_kill_and_net_admin_and_still_serves() {
    let _g = serial();
    assert_root();
    let ins = Ins::start(1);
    let st = dropped(&ins);
    check_sets(&st, KILL | NET_ADMIN, "driver alone");

    // Still serves: a python echo server under the shim, a native client.
    let port = free_port();
    let mut c = ins.shim_cmd(require("python3"));
    c.args([
        "-c",
        &format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('127.0.0.1',{port}))\ns.listen(1)\nc,_=s.accept()\nc.sendall(c.recv(100)[::-1])\nc.close()"
        ),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _srv = Proc::spawn("echo server", c);
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = wait_for(Duration::from_secs(10), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
    })
    .unwrap_or_else(|| panic!("echo server under INS not reachable\n{}", ins.diagnostics()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"privileges").unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "segelivirp", "{}", ins.diagnostics());
}

#[test]
fn driver_spawning_sandboxed_instances_keeps_what_they_need() {
    let _g = serial();
    assert_root();
    let ins_bin = bins().ins.display().to_string();
    let ins = Ins::start_with(
        0,
        &[
            "--ins-bin",
            &ins_bin,
            "--instances",
            "1",
            "--keep-caps",
            "sys_ptrace",
        ],
    );
    let st = dropped(&ins);
    check_sets(
        &st,
        KILL | NET_ADMIN | SETUID | SETGID | SETPCAP | NET_BIND_SERVICE | SYS_PTRACE,
        "driver with --ins-bin --keep-caps sys_ptrace",
    );
    // The instance it spawned (after the drop) joined and sandboxed itself.
    let joined = wait_for(Duration::from_secs(15), || {
        let log = read_lossy(&ins.run_dir().join("driver.log"));
        log.contains("instance joined").then_some(())
    });
    assert!(
        joined.is_some(),
        "the spawned instance did not join\n{}",
        ins.diagnostics()
    );
    let o = run(
        {
            let mut c = Command::new(require("pgrep"));
            c.args(["-P", &ins.driver.pid().to_string()]);
            c
        },
        Duration::from_secs(10),
    );
    let child: u32 = o
        .stdout
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("the driver has no child\n{o}\n{}", ins.diagnostics()));
    let sandboxed = wait_for(Duration::from_secs(10), || {
        let st = status(child);
        st.get("Uid")
            .is_some_and(|u| u.starts_with("65534"))
            .then_some(st)
    })
    .unwrap_or_else(|| {
        panic!(
            "the spawned instance {child} is not running as nobody: {:?}",
            status(child)
        )
    });
    assert_eq!(
        mask(&sandboxed, "CapEff"),
        NET_BIND_SERVICE,
        "instance CapEff"
    );
    assert_eq!(
        mask(&sandboxed, "CapBnd"),
        NET_BIND_SERVICE,
        "instance CapBnd"
    );
}

#[test]
fn drop_privileges_false_keeps_everything() {
    let _g = serial();
    assert_root();
    let ins = Ins::start_with(1, &["--drop-privileges=false"]);
    let ok = wait_for(Duration::from_secs(10), || {
        ins.driver_log().contains("privileges kept").then_some(())
    });
    assert!(
        ok.is_some(),
        "no 'privileges kept' line\n{}",
        ins.diagnostics()
    );
    let st = status(ins.driver.pid());
    let own = status(std::process::id());
    assert_eq!(
        mask(&st, "CapEff"),
        mask(&own, "CapEff"),
        "CapEff with --drop-privileges=false"
    );
    assert_eq!(
        mask(&st, "CapBnd"),
        mask(&own, "CapBnd"),
        "CapBnd with --drop-privileges=false"
    );
    assert!(
        mask(&st, "CapBnd") & !(KILL | NET_ADMIN | SETUID | SETGID | SETPCAP | NET_BIND_SERVICE)
            != 0,
        "the control needs a driver with more than the kept capabilities"
    );
    assert_eq!(st.get("NoNewPrivs").map(String::as_str), Some("0"));
}
