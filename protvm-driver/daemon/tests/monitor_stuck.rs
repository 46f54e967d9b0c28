//! A subscriber that never reads must not slow the driver.
//!
//! Starts `ins-driver` (small `--monitor-buffer`) and one `ins` instance,
//! runs `python3 -m http.server` under `libshim.so` (its listener lives in
//! the instance) and drives N sequential HTTP requests to it from a native
//! Python client, twice: once with only a reading subscriber, once with a
//! second subscriber that never reads. Asserts that the stuck one is
//! dropped and counted, that every request is served, and that the reading
//! subscriber gets one closed flow record per connection; prints the
//! request rates side by side.
//!
//! Needs `ins` and `libshim.so` beside the test executable (build them with
//! the same profile: `cargo build -p ins -p ins-shim`) and python3.
//! `MONITOR_N` sets N (default 1000).

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Driver, wait_for};
use serde_json::Value;

const CLIENT: &str = r#"
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
ok = fail = 0
t = time.monotonic()
for i in range(n):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        d = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            d += c
        s.close()
        if d.startswith(b"HTTP/1.0 200") and d.endswith(b"z" * 1000):
            ok += 1
        else:
            fail += 1
    except OSError:
        fail += 1
print(ok, fail, time.monotonic() - t)
"#;

fn shim_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("libshim.so");
    assert!(
        p.exists(),
        "{} missing: cargo build -p ins-shim (same profile)",
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn request(p: &Path, s: &str) -> Value {
    let mut c = UnixStream::connect(p).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(format!("{s}\n").as_bytes()).unwrap();
    let mut l = String::new();
    BufReader::new(c).read_line(&mut l).unwrap();
    serde_json::from_str(&l).unwrap()
}

/// Runs the client; returns (ok, failed, seconds).
fn drive(port: u16, n: usize) -> (usize, usize, f64) {
    let out = Command::new("python3")
        .args(["-c", CLIENT, &port.to_string(), &n.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap();
    let w: Vec<&str> = t.split_whitespace().collect();
    (
        w[0].parse().unwrap(),
        w[1].parse().unwrap(),
        w[2].parse().unwrap(),
    )
}

#[test]
fn stuck_subscriber_is_dropped_and_does_not_slow_the_driver() {
    let n: usize = std::env::var("MONITOR_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut d = Driver::start(&["--monitor-buffer", "16384"]);
    d.add_instance(1);
    let ctl = d.dir.join("ctl.sock");
    let mon = d.dir.join("monitor.sock");

    let www = d.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "z".repeat(1000)).unwrap();
    let port = free_port();
    let _server = Kill(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(&www)
            .env("LD_PRELOAD", shim_lib())
            .env("INS_SHIM_SOCKET", d.shim_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "http.server listening through INS",
    );
    std::thread::sleep(Duration::from_millis(300));

    // The reading subscriber: counts closed flow records of the server.
    let mut rd = UnixStream::connect(&mon).unwrap();
    rd.write_all(b"{\"cmd\":\"subscribe\"}\n").unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let events = Arc::new(Mutex::new(Vec::<Value>::new()));
    {
        let (closed, events) = (closed.clone(), events.clone());
        let local = format!("127.0.0.1:{port}");
        let r = BufReader::new(rd.try_clone().unwrap());
        std::thread::spawn(move || {
            for l in r.lines() {
                let Ok(l) = l else { return };
                let v: Value = serde_json::from_str(&l).expect("monitor line is JSON");
                if v["type"] == "flow" && v["state"] == "closed" && v["local"] == local.as_str() {
                    assert_eq!(v["v"], 1);
                    assert!(v["tcp_flags"].is_u64(), "{v}");
                    closed.fetch_add(1, Ordering::SeqCst);
                } else if v["type"] != "flow" {
                    events.lock().unwrap().push(v);
                }
            }
        });
    }
    wait_for(
        || request(&ctl, r#"{"cmd":"status"}"#)["monitor"]["subscribers"] == 1,
        "subscription",
    );

    // Warm-up, then phase A: no stuck subscriber.
    let (ok, fail, _) = drive(port, 20);
    assert_eq!((ok, fail), (20, 0));
    wait_for(
        || closed.load(Ordering::SeqCst) >= 20,
        "warm-up flow records",
    );
    let base = closed.load(Ordering::SeqCst);
    let (ok_a, fail_a, secs_a) = drive(port, n);
    assert_eq!((ok_a, fail_a), (n, 0), "phase A: every request served");
    wait_for(
        || closed.load(Ordering::SeqCst) >= base + n,
        "phase A flow records",
    );

    // Phase B: a subscriber that never reads.
    let stuck = UnixStream::connect(&mon).unwrap();
    (&stuck).write_all(b"{\"cmd\":\"subscribe\"}\n").unwrap();
    wait_for(
        || request(&ctl, r#"{"cmd":"status"}"#)["monitor"]["subscribers"] == 2,
        "stuck subscription",
    );
    let dropped0 = request(&ctl, r#"{"cmd":"status"}"#)["monitor"]["dropped_subscribers"]
        .as_u64()
        .unwrap();
    let base = closed.load(Ordering::SeqCst);
    let (ok_b, fail_b, secs_b) = drive(port, n);
    assert_eq!((ok_b, fail_b), (n, 0), "phase B: every request served");
    wait_for(
        || closed.load(Ordering::SeqCst) >= base + n,
        "phase B flow records at the reading subscriber",
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        closed.load(Ordering::SeqCst),
        base + n,
        "exactly one closed record per connection"
    );
    let st = request(&ctl, r#"{"cmd":"status"}"#);
    let dropped = st["monitor"]["dropped_subscribers"].as_u64().unwrap();
    assert!(
        dropped > dropped0,
        "stuck subscriber dropped and counted: {st}"
    );
    assert_eq!(st["monitor"]["subscribers"], 1, "{st}");
    assert!(
        d.log_text().contains("slow subscriber dropped"),
        "the drop is logged"
    );
    // The stuck client finds its stream cut once it drains what the kernel held.
    stuck
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut r = BufReader::new(&stuck);
    let mut lines = 0usize;
    loop {
        let mut l = String::new();
        match r.read_line(&mut l) {
            Ok(0) => break,
            Ok(_) => lines += 1,
            Err(e) => panic!("stuck subscriber's stream was not closed: {e}"),
        }
    }
    let _ = events;

    let (ra, rb) = (n as f64 / secs_a, n as f64 / secs_b);
    println!(
        "N = {n} requests: req/s without: {ra:.0}, with stuck: {rb:.0}, ratio {:.2} \
         (stuck subscriber dropped after {lines} lines; {dropped} dropped in total)",
        rb / ra
    );
    assert!(
        rb / ra > 0.5,
        "the stuck subscriber slowed the driver: {ra:.0} → {rb:.0} req/s"
    );
}
