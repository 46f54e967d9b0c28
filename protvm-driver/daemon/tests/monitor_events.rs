//! Instance and mitigation events on the monitor stream (schema v1):
//! spawned and joined, overloaded and recovered (socket use above the
//! autoscale threshold), mitigation applied, died, exited and the respawn.
//!
//! Needs `ins` and `libshim.so` beside the test executable (same profile)
//! and python3.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Driver, ins_bin};
use serde_json::Value;

/// Waits for the next event matching `f`, skipping others.
fn expect(rx: &mpsc::Receiver<Value>, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) if f(&v) => return v,
            Ok(_) => {}
            Err(_) => panic!("no {what} event within 10 s"),
        }
    }
}

#[test]
fn instance_and_mitigation_events_are_streamed() {
    let ins = ins_bin().expect("the ins binary (cargo build -p ins)");
    let shim = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("libshim.so");
    assert!(
        shim.exists(),
        "{} missing: cargo build -p ins-shim",
        shim.display()
    );
    let ins = ins.to_str().unwrap().to_string();
    // Subscribe before the balancer starts its first child: the driver
    // spawns on its first tick, so connect as soon as the socket exists.
    let mut d = Driver::start(&[
        "--ins-bin",
        &ins,
        "--instances",
        "1",
        "--autoscale",
        "false",
        "--scale-up-at",
        "0.4",
        "--ins-arg=--max-sockets",
        "--ins-arg=2",
        "--ins-arg=--heartbeat-ms",
        "--ins-arg=200",
    ]);
    let mon = d.dir.join("monitor.sock");
    common::wait_for(|| mon.exists(), "monitor.sock");
    let mut s = UnixStream::connect(&mon).unwrap();
    s.write_all(b"{\"cmd\":\"subscribe\",\"types\":[\"instance\",\"mitigation\"]}\n")
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["v"], 1);
    std::thread::spawn(move || {
        for l in r.lines() {
            let Ok(l) = l else { return };
            let v: Value = serde_json::from_str(&l).expect("JSON line");
            assert_eq!(v["v"], 1, "{v}");
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    // The join is logged before its event is streamed: if the log has it
    // now, it happened before the subscription; take it from `list`.
    let (inst, pid) = if d.log_text().contains("instance joined") {
        let mut c = UnixStream::connect(d.dir.join("ctl.sock")).unwrap();
        c.write_all(b"{\"cmd\":\"list\"}\n").unwrap();
        let mut l = String::new();
        BufReader::new(c).read_line(&mut l).unwrap();
        let v: Value = serde_json::from_str(&l).unwrap();
        let i = &v["instances"][0];
        (i["id"].as_u64().unwrap(), i["pid"].as_u64().unwrap())
    } else {
        let joined = expect(&rx, "joined", |v| v["event"] == "joined");
        assert_eq!(joined["type"], "instance");
        (
            joined["inst"].as_u64().unwrap(),
            joined["pid"].as_u64().unwrap(),
        )
    };

    // One listener through the shim: 1 of 2 sockets > 0.4 → overloaded.
    let mut server = Command::new("python3")
        .args(["-c", "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); print('up', flush=True); time.sleep(3)"])
        .env("LD_PRELOAD", &shim)
        .env("INS_SHIM_SOCKET", d.shim_path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ov = expect(&rx, "overloaded", |v| v["event"] == "overloaded");
    assert_eq!(ov["inst"], inst);
    assert_eq!(ov["sockets_max"], 2, "{ov}");
    assert!(ov["sockets_used"].as_u64().unwrap() >= 1, "{ov}");
    let _ = server.kill();
    let _ = server.wait();
    let rec = expect(&rx, "recovered", |v| v["event"] == "recovered");
    assert_eq!(rec["inst"], inst);

    // A mitigation from another client, reported with who asked.
    let mut c = UnixStream::connect(d.dir.join("ctl.sock")).unwrap();
    c.write_all(b"{\"cmd\":\"block\",\"prefix\":\"198.51.100.0/24\"}\n")
        .unwrap();
    let m = expect(&rx, "mitigation", |v| v["type"] == "mitigation");
    assert_eq!(m["event"], "applied", "{m}");
    assert_eq!(m["action"], "block");
    assert_eq!(m["prefix"], "198.51.100.0/24");
    assert_eq!(m["instances"], 1);
    assert_eq!(m["by"]["pid"], std::process::id());

    // Kill the instance: died, exited, then the balancer respawns one.
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let died = expect(&rx, "died", |v| v["event"] == "died");
    assert_eq!(died["inst"], inst);
    expect(&rx, "exited", |v| v["event"] == "exited");
    expect(&rx, "respawn", |v| v["event"] == "spawned");
    let again = expect(&rx, "rejoin", |v| v["event"] == "joined");
    assert_ne!(again["inst"], inst);
    d.instances.clear();
}
