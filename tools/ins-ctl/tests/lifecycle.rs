//! up/down, bad inputs, respawn after kill -9 — against the real binaries.
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn up_down_twice_in_a_row() {
    let ins = Ins::new("updown");
    for round in 0..2 {
        let out = ins.ok(&["up", "--instances", "2"]);
        assert!(out.contains("INS up: 2 instance(s)"), "{out}");
        let again = ins.ok(&["up", "--instances", "2"]);
        assert!(again.contains("already running"), "round {round}: {again}");
        let l = ins.list();
        assert_eq!(l.len(), 2, "{l:?}");
        let pids: Vec<u64> = l.iter().map(|i| i["pid"].as_u64().unwrap()).collect();
        let driver = ins.status()["pid"].as_u64().unwrap();
        assert!(alive(driver));
        assert!(ins.ok(&["down"]).contains("INS stopped"));
        assert!(!alive(driver), "driver still running after down");
        // Instances exit when their channel closes.
        let until = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|&p| alive(p)) {
            assert!(Instant::now() < until, "instances outlived the driver");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(ins.ok(&["down"]).contains("not running"));
        let o = ins.ctl(&["list"]);
        assert_eq!(code(&o), 3, "list without a driver: {}", stderr(&o));
        assert!(stderr(&o).contains("not running"), "{}", stderr(&o));
        assert!(!ins.dir.join("ctl.sock").exists());
    }
}

#[test]
fn bad_inputs_give_documented_errors_and_change_nothing() {
    let ins = Ins::new("bad");
    ins.ok(&["up", "--instances", "1"]);
    let before_list: Vec<(u64, String)> = ins
        .list()
        .iter()
        .map(|i| {
            (
                i["id"].as_u64().unwrap(),
                i["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    let before = ins.status();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["block", "10.0.0.1/8"], 6, "bad prefix"),
        (&["block", "nonsense"], 6, "bad prefix"),
        (&["unblock", "10.0.0.0/40"], 6, "bad prefix"),
        (&["limit", "::1/129", "--conn-rate", "5"], 6, "bad prefix"),
        (&["stop", "999"], 5, "no live instance 999"),
        (&["drain", "999"], 5, "no live instance 999"),
        (&["close", "999:1"], 5, "no live instance 999"),
        (&["close", "x"], 2, "bad flow"),
        (&["scale", "100000"], 2, "max_instances"),
        (&["spawn", "--count", "0"], 2, "at least 1"),
        (
            &["spawn", "--xen"],
            2,
            "makes local instances, not Xen domains",
        ),
        (
            &["scale", "1", "--xen", "--unikernel"],
            2,
            "makes local instances",
        ),
        (&["spawn", "--unikernel"], 2, "--xen"),
        (&["scale", "-1"], 2, ""),
        (&["stop", "abc"], 2, ""),
        (&["run"], 2, ""),
        (&["frobnicate"], 2, ""),
    ];
    for (args, want, text) in cases {
        let o = ins.ctl(args);
        assert_eq!(code(&o), *want, "ins-ctl {args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(text),
            "ins-ctl {args:?}: {}",
            stderr(&o)
        );
        assert_eq!(stderr(&o).trim_end().lines().count().min(1), 1);
    }
    let after_list: Vec<(u64, String)> = ins
        .list()
        .iter()
        .map(|i| {
            (
                i["id"].as_u64().unwrap(),
                i["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(before_list, after_list);
    let after = ins.status();
    assert_eq!(before["instances"], after["instances"]);
    assert_eq!(after["mitigations"], Value::Array(vec![]));
    // Another run dir: nobody there.
    let o = std::process::Command::new(ctl_bin())
        .args(["--run-dir", "/nonexistent/ins", "status"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
}

#[test]
fn permission_denied_is_reported() {
    if rustix_uid() != 0 {
        eprintln!("not root: cannot run the client as another user");
        return;
    }
    let ins = Ins::new("perm");
    ins.ok(&["up", "--instances", "1"]);
    // The run dir must be traversable for the other user to reach ctl.sock.
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(ctl_bin())
        .arg("--run-dir")
        .arg(&ins.dir)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
}

fn rustix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|u| u.parse().ok())
        .unwrap()
}

#[test]
fn kill_9_respawns_within_2s_with_listeners() {
    let mut ins = Ins::new("kill9");
    ins.ok(&["up", "--instances", "2"]);
    let port = free_port();
    ins.serve(port);
    // Listeners are on both instances.
    let until = Instant::now() + Duration::from_secs(5);
    while !ins
        .list()
        .iter()
        .all(|i| i["listeners"].as_u64() == Some(1))
    {
        assert!(Instant::now() < until, "listener not on every instance");
        std::thread::sleep(Duration::from_millis(100));
    }
    let l = ins.list();
    let victim = l[0]["pid"].as_u64().unwrap();
    let victim_id = l[0]["id"].as_u64().unwrap();
    let t0 = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let respawned = loop {
        let l = ins.list();
        let fresh: Vec<&Value> = l
            .iter()
            .filter(|i| i["id"].as_u64() != Some(victim_id) && i["pid"].as_u64() != Some(victim))
            .filter(|i| i["heartbeat"] == true && i["listeners"].as_u64() == Some(1))
            .collect();
        if l.len() == 2 && fresh.len() == 2 {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "not respawned with listeners within 2 s: {l:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("respawned with the listener replicated in {respawned:?}");
    for i in 0..20 {
        get(port).unwrap_or_else(|e| panic!("fetch {i} after respawn: {e}"));
    }
    // Every fetch is accounted as a flow by some instance.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let flows = ins.ok(&["flows", "--json"]);
        let n = flows
            .lines()
            .filter(|l| l.contains(&format!(":{port}\"")))
            .count();
        if n >= 20 {
            break;
        }
        assert!(Instant::now() < until, "{n} flows for 20 fetches: {flows}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
