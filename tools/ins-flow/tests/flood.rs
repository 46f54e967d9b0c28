//! `tools/scripts/autoblock.py` against a real flood through INS.
//!
//! Three network namespaces made for this test (all 10.x addresses live
//! only inside them): `srv` runs the `ins` instance, `fa` the flooder and
//! `fb` a well-behaved client, joined to `srv` by two veth pairs
//! (10.77.1.0/24 and 10.77.2.0/24). `python3 -m http.server` runs under
//! `libshim.so`, so its listener is executed by the instance in `srv`.
//! `fa` opens ≤ 150 connections per second for 4 s; `fb` fetches 5 times a
//! second throughout. `autoblock.py` reads the driver's flow stream and
//! sends block/unblock; a monitor subscriber records the mitigation events.
//!
//! Asserts: the flooder's /32 is blocked within 2 s of the flood's start,
//! the well-behaved client never fails and is never blocked, the block
//! bites (the flooder fails after it), and the flooder is unblocked after
//! the flood stops (hysteresis: `deflag_samples` calm samples).
//!
//! Needs root (`ip netns`), python3, and `ins-driver`, `ins`, `libshim.so`
//! beside the test executable or in `$INS_BIN_DIR`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("INS_BIN_DIR") {
        return PathBuf::from(d);
    }
    let mut d = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    if d.ends_with("deps") {
        d.pop();
    }
    d
}

fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} missing: build ins-driver, ins, ins-shim (same profile)",
        p.display()
    );
    p
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Network namespaces deleted on drop.
struct Netns(Vec<String>);
impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let s = Command::new("ip").args(args).status().expect("ip");
    assert!(s.success(), "ip {}", args.join(" "));
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Paced HTTP client: `host port rate seconds`; prints one JSON object
/// with the attempts `[[unix_time, ok], …]`.
const CLIENT: &str = r#"
import json, socket, sys, time
host, port, rate, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
out = []
t0 = time.time()
i = 0
while True:
    due = t0 + i / rate
    if due >= t0 + secs:
        break
    d = due - time.time()
    if d > 0:
        time.sleep(d)
    i += 1
    t = time.time()
    ok = False
    try:
        s = socket.create_connection((host, port), timeout=1.0)
        s.sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        b = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            b += c
        s.close()
        ok = b.startswith(b"HTTP/1.0 200") and b.endswith(b"z" * 100)
    except OSError:
        pass
    out.append([t, ok])
print(json.dumps(out))
"#;

fn client(ns: &str, host: &str, port: u16, rate: f64, secs: f64) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", CLIENT, host])
        .args([port.to_string(), rate.to_string(), secs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn attempts(c: Child) -> Vec<(f64, bool)> {
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: Vec<(f64, bool)> = serde_json::from_slice(&out.stdout).unwrap();
    v
}

/// One request from `ns` after everything: served again?
fn flood_probe_ok(ns: &str, port: u16) -> bool {
    attempts(client(ns, "10.77.1.1", port, 1.0, 1.0))
        .iter()
        .all(|a| a.1)
}

#[test]
fn autoblock_blocks_a_flood_and_lifts_the_block() {
    let (driver, ins, shim) = (bin("ins-driver"), bin("ins"), bin("libshim.so"));
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    let tag = std::process::id();
    let (srv, fa, fb) = (
        format!("insfl{tag}s"),
        format!("insfl{tag}a"),
        format!("insfl{tag}b"),
    );
    let _ns = Netns(vec![srv.clone(), fa.clone(), fb.clone()]);
    for n in [&srv, &fa, &fb] {
        ip(&["netns", "add", n]);
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    for (n, net) in [(&fa, 1), (&fb, 2)] {
        let (a, b) = (format!("vfl{tag}{net}s"), format!("vfl{tag}{net}c"));
        ip(&[
            "-n", &srv, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", n,
        ]);
        ip(&[
            "-n",
            &srv,
            "addr",
            "add",
            &format!("10.77.{net}.1/24"),
            "dev",
            &a,
        ]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("10.77.{net}.2/24"),
            "dev",
            &b,
        ]);
        ip(&["-n", &srv, "link", "set", &a, "up"]);
        ip(&["-n", n, "link", "set", &b, "up"]);
    }

    let dir = std::env::temp_dir().join(format!("ins-flood-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "z".repeat(100)).unwrap();
    let log = dir.join("driver.log");
    let _driver = Kill(
        Command::new(driver)
            .arg("--run-dir")
            .arg(&dir)
            .arg("--log")
            .arg(&log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (ctl, mon) = (dir.join("ctl.sock"), dir.join("monitor.sock"));
    wait_for("driver", 10, || {
        ctl.exists() && mon.exists() && dir.join("shim.sock").exists()
    });
    let _ins = Kill(
        Command::new("ip")
            .args(["netns", "exec", &srv])
            .arg(ins)
            .arg("--driver")
            .arg(dir.join("instance.sock"))
            .args(["--instance-id", "1"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("instance joined", 10, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("instance joined")
    });
    let port = 8077u16;
    let _server = Kill(
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "0.0.0.0", &port.to_string()])
            .current_dir(dir.join("www"))
            .env("LD_PRELOAD", &shim)
            .env("INS_SHIM_SOCKET", dir.join("shim.sock"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("server reachable from fb", 10, || {
        Command::new("ip")
            .args(["netns", "exec", &fb, "python3", "-c"])
            .arg(format!(
                "import socket; socket.create_connection(('10.77.2.1', {port}), timeout=0.5)"
            ))
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    });

    // Mitigation events, as the monitor stream reports them.
    let mut sub = UnixStream::connect(&mon).unwrap();
    sub.write_all(b"{\"cmd\":\"subscribe\",\"types\":[\"mitigation\"]}\n")
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::<Value>::new()));
    {
        let events = events.clone();
        let r = BufReader::new(sub.try_clone().unwrap());
        std::thread::spawn(move || {
            for l in r.lines() {
                let Ok(l) = l else { return };
                let v: Value = serde_json::from_str(&l).unwrap();
                if v["type"] == "mitigation" {
                    events.lock().unwrap().push(v);
                }
            }
        });
    }

    let cfg = dir.join("thresholds.json");
    std::fs::write(
        &cfg,
        r#"{"interval": 0.5, "conn_rate": 40, "byte_rate": 0, "flag_samples": 1,
            "deflag_samples": 3, "deflag_ratio": 0.5, "probe": true}"#,
    )
    .unwrap();
    let ab_out = dir.join("autoblock.out");
    let _autoblock = Kill(
        Command::new("python3")
            .arg(scripts.join("autoblock.py"))
            .arg("--config")
            .arg(&cfg)
            .arg("--socket")
            .arg(&ctl)
            .stdout(std::fs::File::create(&ab_out).unwrap())
            .stderr(std::fs::File::create(dir.join("autoblock.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("autoblock subscribed", 10, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("controller connected")
            .count()
            >= 3
    });

    // The well-behaved client runs throughout; the flood starts 1 s in.
    let good = client(&fb, "10.77.2.1", port, 5.0, 11.0);
    std::thread::sleep(Duration::from_secs(1));
    let flood = client(&fa, "10.77.1.1", port, 150.0, 4.0);
    let flood = attempts(flood);
    let good = attempts(good);
    std::thread::sleep(Duration::from_millis(500));
    let ev = events.lock().unwrap().clone();

    let f_start = flood.first().unwrap().0;
    let f_end = flood.last().unwrap().0;
    let flooder: Vec<(f64, String)> = ev
        .iter()
        .filter(|e| e["prefix"] == "10.77.1.2/32" && e["event"] == "applied")
        .map(|e| {
            (
                e["at"].as_f64().unwrap(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    println!("mitigations on the flooder (s after the flood started):");
    for (t, a) in &flooder {
        println!("  {:6.2} {a}", t - f_start);
    }
    let blocked = flooder.iter().find(|(_, a)| a == "block").map(|x| x.0);
    // Lifted for good: the limit cleared ("unlimit") as the last action.
    let unblocked = flooder.last().filter(|(_, a)| a == "unlimit").map(|x| x.0);
    let good_fail = good.iter().filter(|a| !a.1).count();
    let fail_after_block = blocked.map_or(0, |b| {
        flood.iter().filter(|a| a.0 > b + 0.05 && !a.1).count()
    });
    let ok_before_block = flood
        .iter()
        .filter(|a| blocked.is_none_or(|b| a.0 < b) && a.1)
        .count();
    println!(
        "flood: {} attempts in {:.2} s ({:.0}/s), {} served before the block, {} refused after it",
        flood.len(),
        f_end - f_start,
        flood.len() as f64 / (f_end - f_start),
        ok_before_block,
        fail_after_block
    );
    println!(
        "blocked {:.2} s after the flood started; unblocked {:.2} s after it stopped; \
         good client: {} requests, {} failures",
        blocked.map_or(f64::NAN, |b| b - f_start),
        unblocked.map_or(f64::NAN, |u| u - f_end),
        good.len(),
        good_fail
    );
    println!(
        "autoblock said:\n{}",
        std::fs::read_to_string(&ab_out).unwrap_or_default()
    );
    assert!(flood.len() <= 600, "bounded flood");
    let blocked = blocked.expect("the flooding source was blocked");
    assert!(
        blocked - f_start <= 2.0,
        "blocked {:.2} s after the flood started",
        blocked - f_start
    );
    assert!(
        fail_after_block > 0,
        "the block refused the flooder's connections"
    );
    assert_eq!(good_fail, 0, "the well-behaved source was always served");
    assert!(
        !ev.iter().any(|e| e["prefix"] == "10.77.2.2/32"),
        "the well-behaved source was never touched: {ev:?}"
    );
    let unblocked = unblocked.expect("the flooder was unblocked after the flood stopped");
    assert!(unblocked > f_end, "unblocked only after the flood stopped");
    assert!(
        unblocked - f_end < 6.0,
        "unblocked {:.2} s after the flood",
        unblocked - f_end
    );
    assert!(
        !flooder
            .iter()
            .any(|(t, a)| a == "block" && *t > f_end + 0.5),
        "no block after the flood stopped"
    );
    assert!(
        flood_probe_ok(&fa, port),
        "the flooder is served again once unblocked"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
