//! Real traffic through INS, exported to real collectors.
//!
//! Starts `ins-driver` and one `ins` instance, runs TCP and UDP clients
//! (IPv4 and IPv6) under `libshim.so` against servers in this test, and
//! runs two `ins-flow export --source ctl.sock` (IPFIX and NetFlow v9) into
//! two `nfcapd`s. Every nfdump record is compared with the flow records the
//! driver published (captured by a third subscriber) and with the traffic
//! the test generated (byte counts, ports).
//!
//! Needs the INS binaries next to the test executable (as `cargo test
//! --workspace` builds them) or in `$INS_BIN_DIR`, plus nfdump and python3.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, UdpSocket};
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
    let exe = std::env::current_exe().unwrap();
    let mut d = exe.parent().unwrap().to_path_buf();
    if d.ends_with("deps") {
        d.pop();
    }
    d
}

fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build -p ins-driver -p ins -p ins-shim`, \
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

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const CLIENT: &str = r#"
import socket, sys, time
host, port, proto, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
if proto in ("tcp", "tcplong"):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.connect((host, port))
    if proto == "tcplong":
        # Outlive two active timeouts so interim records are exported.
        s.sendall(b"q" * (n // 2))
        time.sleep(2.5)
        n -= n // 2
    s.sendall(b"q" * n)
    got = 0
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += len(d)
else:
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.sendto(b"u" * n, (host, port))
    got = len(s.recv(65536))
print(s.getsockname()[1], got)
s.close()
"#;

/// Server replies: TCP reads `req` bytes then sends `resp` and closes; UDP
/// answers one datagram with `resp` bytes.
fn tcp_server(addr: &str, req: usize, resp: usize) -> u16 {
    let l = TcpListener::bind(addr).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut buf = vec![0u8; req];
        c.read_exact(&mut buf).unwrap();
        c.write_all(&vec![b'r'; resp]).unwrap();
    });
    port
}

fn udp_server(addr: &str, resp: usize) -> u16 {
    let s = UdpSocket::bind(addr).unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        let (_, from) = s.recv_from(&mut buf).unwrap();
        s.send_to(&vec![b'r'; resp], from).unwrap();
    });
    port
}

#[test]
fn real_ins_flows_reach_nfcapd_intact() {
    let (driver, ins, shim) = (bin("ins-driver"), bin("ins"), bin("libshim.so"));
    let dir = std::env::temp_dir().join(format!("ins-flow-real-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("driver.log");
    let _driver = Kill(
        Command::new(driver)
            .arg("--run-dir")
            .arg(&dir)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("driver.stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    let ctl = dir.join("ctl.sock");
    wait_for("driver sockets", 10, || {
        ctl.exists() && dir.join("instance.sock").exists() && dir.join("shim.sock").exists()
    });
    let _ins = Kill(
        Command::new(ins)
            .arg("--driver")
            .arg(dir.join("instance.sock"))
            .args([
                "--instance-id",
                "1",
                "--flow-timeout-s",
                "1",
                "--udp-idle-s",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("ins.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("instance joined", 10, || {
        read(&log).contains("instance joined")
    });

    // Our own subscriber: the driver's records are the reference.
    let mut sub = UnixStream::connect(&ctl).unwrap();
    sub.write_all(b"{\"cmd\":\"flows\",\"follow\":true,\"limit\":0}\n")
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<Value>::new()));
    {
        let lines = lines.clone();
        let r = BufReader::new(sub.try_clone().unwrap());
        std::thread::spawn(move || {
            for l in r.lines() {
                let Ok(l) = l else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    lines.lock().unwrap().push(v);
                }
            }
        });
    }

    // Two collectors, two exporters.
    let mut caps = Vec::new();
    let mut exporters = Vec::new();
    for flag in ["--ipfix", "--netflow-v9"] {
        let cdir = dir.join(flag.trim_start_matches('-'));
        std::fs::create_dir_all(&cdir).unwrap();
        let port = free_udp_port();
        let cap = Command::new("nfcapd")
            .args([
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "3600",
                "-w",
            ])
            .arg(&cdir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nfcapd (apt-get install nfdump)");
        wait_for("nfcapd", 10, || {
            std::fs::read_dir(&cdir).unwrap().next().is_some()
        });
        let exp = Command::new(env!("CARGO_BIN_EXE_ins-flow"))
            .args(["export", flag, &format!("127.0.0.1:{port}"), "--source"])
            .arg(&ctl)
            .args(["--flush-ms", "100"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("export{flag}.log"))).unwrap())
            .spawn()
            .unwrap();
        caps.push((flag, Kill(cap), cdir));
        exporters.push(Kill(exp));
    }
    wait_for("three ctl subscribers", 10, || {
        read(&log).matches("controller connected").count() >= 3
    });
    std::thread::sleep(Duration::from_millis(200));

    // Traffic: (proto, server host, request bytes, response bytes).
    let cases = [
        ("tcp", "127.0.0.1", 1234usize, 70_000usize),
        ("tcp", "::1", 333, 4567),
        ("udp", "127.0.0.1", 100, 900),
        ("udp", "::1", 50, 60),
        ("tcplong", "127.0.0.1", 4000, 8000),
    ];
    // Expected per flow, keyed by (proto, client port): (server port, req, resp).
    let mut traffic = BTreeMap::new();
    for (proto, host, req, resp) in cases {
        let bind = if host.contains(':') {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let port = if proto != "udp" {
            tcp_server(bind, req, resp)
        } else {
            udp_server(bind, resp)
        };
        let out = Command::new("python3")
            .args([
                "-c",
                CLIENT,
                host,
                &port.to_string(),
                proto,
                &req.to_string(),
            ])
            .env("LD_PRELOAD", &shim)
            .env("INS_SHIM_SOCKET", dir.join("shim.sock"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut it = text.split_whitespace().map(|w| w.parse::<u64>().unwrap());
        let (cport, got) = (it.next().unwrap(), it.next().unwrap());
        assert_eq!(got as usize, resp, "{proto} {host}: client received");
        let proto = if proto == "udp" { "udp" } else { "tcp" };
        traffic.insert(
            (proto, cport),
            (host, u64::from(port), req as u64, resp as u64),
        );
    }

    // Wait for the final record of every flow, then for the exporters' flush.
    let finals = || -> Vec<Value> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v.get("state").and_then(Value::as_str) == Some("closed"))
            .cloned()
            .collect()
    };
    wait_for("final flow records", 15, || finals().len() >= cases.len());
    std::thread::sleep(Duration::from_millis(600));
    drop(exporters);
    let finals = finals();
    println!("driver records:");
    for v in lines.lock().unwrap().iter() {
        println!("  {v}");
    }

    for (flag, mut cap, cdir) in caps {
        let _ = Command::new("kill")
            .args(["-TERM", &cap.0.id().to_string()])
            .status();
        assert!(cap.0.wait().unwrap().success());
        let out = Command::new("nfdump")
            .env("TZ", "UTC")
            .arg("-R")
            .arg(&cdir)
            .args(["-o", "json"])
            .output()
            .unwrap();
        let got: Value = serde_json::from_slice(&out.stdout).expect("nfdump json");
        let got = got.as_array().cloned().unwrap_or_default();
        println!("{flag}: nfdump vs driver:");
        // Sum nfdump records per (proto, INS-side port) — interim reports
        // arrive as separate delta records.
        let mut sums: BTreeMap<(u64, u64), [u64; 6]> = BTreeMap::new();
        let mut records: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        for g in &got {
            let n = |k: &str| g.get(k).and_then(Value::as_u64).unwrap();
            let t = |k: &str| parse_utc_ms(g.get(k).and_then(Value::as_str).unwrap());
            let e = sums
                .entry((n("proto"), n("dst_port")))
                .or_insert([0, 0, 0, 0, u64::MAX, 0]);
            *records.entry((n("proto"), n("dst_port"))).or_default() += 1;
            e[0] += n("in_bytes");
            e[1] += n("in_packets");
            e[2] += n("out_bytes");
            e[3] += n("out_packets");
            e[4] = e[4].min(t("first"));
            e[5] = e[5].max(t("last"));
            let src = g
                .get("src4_addr")
                .or(g.get("src6_addr"))
                .and_then(Value::as_str)
                .unwrap();
            let dst = g
                .get("dst4_addr")
                .or(g.get("dst6_addr"))
                .and_then(Value::as_str)
                .unwrap();
            let proto = if n("proto") == 6 { "tcp" } else { "udp" };
            let (host, sport, _, _) = traffic[&(proto, n("dst_port"))];
            // Against the traffic: the source is the server we ran.
            assert_eq!(
                (src, n("src_port")),
                (host, sport),
                "source vs generated traffic"
            );
            // Against the driver's record of that flow (the INS-side
            // address of an unconnected UDP socket is its bound wildcard).
            let rec = finals
                .iter()
                .find(|f| {
                    f.get("proto").and_then(Value::as_str) == Some(proto)
                        && f.get("local").and_then(Value::as_str).is_some_and(|l| {
                            l.rsplit(':').next() == Some(&n("dst_port").to_string())
                        })
                })
                .expect("driver record for the collector's flow");
            let ip = |k: &str| {
                let a: std::net::SocketAddr =
                    rec.get(k).and_then(Value::as_str).unwrap().parse().unwrap();
                a.ip().to_string()
            };
            assert_eq!(
                (src, dst),
                (ip("remote").as_str(), ip("local").as_str()),
                "addresses"
            );
        }
        assert_eq!(sums.len(), cases.len(), "flows at the collector: {sums:?}");
        // The long flow was reported while active: several delta records
        // whose sums (checked below) equal the final totals.
        let most = records.values().copied().max().unwrap_or(0);
        println!("{flag}: nfdump records per flow: {records:?}");
        assert!(most >= 2, "no interim (delta) record reached the collector");
        for f in &finals {
            let n = |k: &str| f.get(k).and_then(Value::as_u64).unwrap();
            let local = f.get("local").and_then(Value::as_str).unwrap();
            let lport: u64 = local.rsplit(':').next().unwrap().parse().unwrap();
            let proto = f.get("proto").and_then(Value::as_str).unwrap();
            let pnum = if proto == "tcp" { 6 } else { 17 };
            let s = sums[&(pnum, lport)];
            let (_, _, req, resp) = traffic[&(proto, lport)];
            println!(
                "  {proto} :{lport} in {}/{} B {}/{} pkts, out {}/{} B {}/{} pkts, first {}/{} last {}/{} ms",
                s[0],
                n("bytes_in"),
                s[1],
                n("segs_in"),
                s[2],
                n("bytes_out"),
                s[3],
                n("segs_out"),
                s[4],
                n("start_ns") / 1_000_000,
                s[5],
                n("last_ns") / 1_000_000
            );
            assert_eq!(
                [s[0], s[1], s[2], s[3]],
                [n("bytes_in"), n("segs_in"), n("bytes_out"), n("segs_out")]
            );
            // And against the traffic itself.
            assert_eq!(
                (s[0], s[2]),
                (resp, req),
                "{proto} bytes vs generated traffic"
            );
            assert!(s[4].abs_diff(n("start_ns") / 1_000_000) < 1000, "first");
            assert!(s[5].abs_diff(n("last_ns") / 1_000_000) < 1000, "last");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `2026-12-02T00:06:40.123` (UTC) → Unix ms.
fn parse_utc_ms(s: &str) -> u64 {
    let num = |r: std::ops::Range<usize>| -> i64 { s[r].parse().unwrap() };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm, ss, ms) = (num(11..13), num(14..16), num(17..19), num(20..23));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + hh) * 60 + mm) * 60 + ss).unwrap() * 1000
        + u64::try_from(ms).unwrap()
}
