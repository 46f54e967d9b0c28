//! `ins-flow export --ipfix HOST:PORT` exactly as the README shows it (no
//! --source, no --stdin) finds the driver as `ins-ctl` does: here through
//! `$INS_RUN_DIR`, set for both, with `ins-ctl up` starting the driver.
//! Real traffic through INS (a python3 client under `ins-ctl run` to a
//! server in this test) reaches a real `nfcapd`, and `nfdump` shows the
//! flow with the bytes sent.
//!
//! Needs ins-ctl, ins-driver, ins and libshim.so next to the test
//! executable (or in `$INS_BIN_DIR`), nfdump and python3.

use std::io::Read as _;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin(name: &str) -> PathBuf {
    let d = std::env::var_os("INS_BIN_DIR").map_or_else(
        || {
            let exe = std::env::current_exe().unwrap();
            let mut d = exe.parent().unwrap().to_path_buf();
            if d.ends_with("deps") {
                d.pop();
            }
            d
        },
        PathBuf::from,
    );
    let p = d.join(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build -p ins-ctl -p ins-driver -p ins -p ins-shim`, \
         same profile) or set INS_BIN_DIR",
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

/// Runs ins-ctl with `INS_RUN_DIR=dir` and no --run-dir.
fn ctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("ins-ctl"))
        .env("INS_RUN_DIR", dir)
        .args(args)
        .output()
        .expect("run ins-ctl")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = ctl(dir, args);
    assert!(
        o.status.success(),
        "ins-ctl {args:?}: {:?}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Tears the deployment down even when the test fails half-way.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = ctl(&self.0, &["down"]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CLIENT: &str = r#"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"x" * int(sys.argv[2]))
s.close()
"#;

#[test]
fn export_as_the_readme_shows_it_finds_the_driver() {
    let dir = std::env::temp_dir().join(format!("ins-flow-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cap = dir.with_extension("nfcapd");
    let _ = std::fs::remove_dir_all(&cap);
    std::fs::create_dir_all(&cap).unwrap();

    // No driver yet: the error names the socket it looked for.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cport = udp.local_addr().unwrap().port();
    drop(udp);
    let dest = format!("127.0.0.1:{cport}");
    let o = Command::new(bin("ins-flow"))
        .env("INS_RUN_DIR", &dir)
        .args(["export", "--ipfix", &dest])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "export without a driver succeeded");
    assert!(
        err.contains("INS driver not reachable")
            && err.contains(&*dir.join("ctl.sock").to_string_lossy()),
        "{err}"
    );

    ok(&dir, &["up", "--instances", "1"]);
    let _down = Down(dir.clone());
    let nfcapd = Command::new("nfcapd")
        .args([
            "-b",
            "127.0.0.1",
            "-p",
            &cport.to_string(),
            "-t",
            "3600",
            "-w",
        ])
        .arg(&cap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nfcapd (apt-get install nfdump)");
    let mut nfcapd = Kill(nfcapd);
    wait_for("nfcapd to start", 10, || {
        std::fs::read_dir(&cap).unwrap().next().is_some()
    });

    // Exactly the README's command line.
    let export = Command::new(bin("ins-flow"))
        .env("INS_RUN_DIR", &dir)
        .args(["export", "--ipfix", &dest])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut export = Kill(export);
    wait_for("ins-flow to subscribe", 10, || {
        let st: Value = serde_json::from_str(&ok(&dir, &["status", "--json"])).unwrap();
        st.pointer("/monitor/subscribers").and_then(Value::as_u64) >= Some(1)
    });

    // Traffic through INS.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let sport = server.local_addr().unwrap().port();
    const SENT: usize = 12_345;
    let t = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        let mut b = Vec::new();
        s.read_to_end(&mut b).unwrap();
        b.len()
    });
    let st = Command::new(bin("ins-ctl"))
        .env("INS_RUN_DIR", &dir)
        .args([
            "run",
            "--",
            "python3",
            "-c",
            CLIENT,
            &sport.to_string(),
            &SENT.to_string(),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "client under the shim: {st}");
    assert_eq!(t.join().unwrap(), SENT);
    wait_for("the flow record", 10, || {
        ok(&dir, &["flows", "--json"]).contains(&format!(":{sport}"))
    });

    // Stopping the driver ends the stream: ins-flow flushes and exits.
    ok(&dir, &["down"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = export.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ins-flow did not exit after down"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    export
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "ins-flow export: {status}: {err}");
    assert!(!err.contains("records 0 "), "nothing exported: {err}");

    std::thread::sleep(Duration::from_millis(300));
    let st = Command::new("kill")
        .args(["-TERM", &nfcapd.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(nfcapd.0.wait().unwrap().success(), "nfcapd failed");
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(&cap)
        .args(["-o", "json"])
        .output()
        .expect("nfdump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: Value = serde_json::from_slice(&out.stdout).expect("nfdump JSON");
    let recs = recs.as_array().cloned().unwrap_or_default();
    let port = sport as u64;
    let ours: Vec<&Value> = recs
        .iter()
        .filter(|r| r["dst_port"].as_u64() == Some(port) || r["src_port"].as_u64() == Some(port))
        .collect();
    assert!(!ours.is_empty(), "no record for port {sport} in {recs:#?}");
    let bytes: u64 = ours
        .iter()
        .map(|r| r["in_bytes"].as_u64().unwrap_or(0) + r["out_bytes"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        bytes >= SENT as u64,
        "collector saw {bytes} bytes for the flow, {SENT} were sent: {ours:#?}"
    );
    let _ = std::fs::remove_dir_all(&cap);
}
