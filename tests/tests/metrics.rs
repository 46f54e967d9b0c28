//! The driver's Prometheus endpoint (`--metrics ADDR:PORT`): real traffic
//! through nginx under the shim, the page scraped with curl and checked
//! with `promtool check metrics`, hostile scrapers (silent, oversized)
//! that must not stall the driver, and a real Prometheus server scraping
//! it every second whose HTTP API must return the driver's figures; also
//! `ins-ctl up --metrics`.
//!
//! Needs: nginx, curl and the Debian package `prometheus` (promtool,
//! prometheus); when run as root and they are missing they are installed
//! (`apt-get install -y --no-install-recommends prometheus`) and the
//! packaged service is stopped.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ins_e2e::*;

/// promtool and prometheus, installed from Debian if missing and root.
fn prometheus_tools() -> (PathBuf, PathBuf) {
    let have = |p: &str| Path::new("/usr/bin").join(p).is_file();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !(have("promtool") && have("prometheus")) && root {
        let mut c = Command::new("apt-get");
        c.args(["install", "-y", "--no-install-recommends", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        let o = run(c, Duration::from_secs(600));
        assert!(o.ok(), "apt-get install prometheus failed\n{o}");
        let mut s = Command::new("service");
        s.args(["prometheus", "stop"]);
        let _ = run(s, Duration::from_secs(60));
    }
    (require("promtool"), require("prometheus"))
}

/// One scrape with curl: (HTTP status, body).
fn scrape(url: &str) -> (u32, String) {
    let mut c = Command::new(require("curl"));
    c.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", url]);
    let o = run(c, Duration::from_secs(20));
    assert!(o.ok(), "curl {url}\n{o}");
    let (body, code) = o.stdout.rsplit_once('\n').expect("curl -w output");
    (code.trim().parse().expect("http code"), body.to_string())
}

/// The samples of `name` in a page: (labels, value).
fn samples<'a>(page: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (n == name).then(|| (labels, v.parse().expect("sample value")))
        })
        .collect()
}

fn sum(page: &str, name: &str) -> f64 {
    samples(page, name).iter().map(|(_, v)| v).sum()
}

/// `promtool check metrics` on `page`: its output, asserting success.
fn promtool_check(promtool: &Path, page: &str) {
    let mut c = Command::new(promtool);
    c.args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = c.spawn().expect("spawn promtool");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("write to promtool");
    let o = p.wait_with_output().expect("promtool");
    assert!(
        o.status.success(),
        "promtool check metrics: {}\n{}{}\npage:\n{page}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn metrics_scraped_by_curl_promtool_and_prometheus() {
    let _g = serial();
    let (promtool, prometheus) = prometheus_tools();
    let mport = free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let mut ins = Ins::start_with(
        2,
        &[
            "--metrics",
            &maddr,
            "--metrics-timeout-ms",
            "1500",
            "--metrics-max-request",
            "4096",
        ],
    );
    let url = format!("http://{maddr}/metrics");

    // Before traffic: two live instances, no connections.
    let (code, page) = scrape(&url);
    assert_eq!(code, 200, "{page}\n{}", ins.diagnostics());
    promtool_check(&promtool, &page);
    assert_eq!(
        samples(&page, "ins_instances"),
        vec![("state=\"live\"", 2.0), ("state=\"draining\"", 0.0)],
        "{page}"
    );

    // Real traffic: 20 fetches of a file from nginx under the shim.
    let ng = Nginx::start(
        Some(&ins),
        &NginxOpts {
            big_files: false,
            ..NginxOpts::default()
        },
    );
    let (name, content) = ng
        .files
        .iter()
        .max_by_key(|(_, c)| c.len())
        .expect("nginx files")
        .clone();
    let out = TempDir::new("fetch");
    let fetches = 20;
    for k in 0..fetches {
        let (o, body) = curl_fetch(
            Command::new(require("curl")),
            &format!("http://127.0.0.1:{}/{name}", ng.port),
            &out.path().join(format!("{k}")),
        );
        assert!(
            o.ok() && body == content,
            "fetch {k}: {o}\n{}",
            ins.diagnostics()
        );
    }
    let sent = (fetches * content.len()) as f64;
    // The byte figures are `list`'s (final flow records arrive as each
    // flow closes): wait for them, bounded.
    let page = wait_for(Duration::from_secs(15), || {
        let (code, page) = scrape(&url);
        (code == 200 && sum(&page, "ins_instance_bytes_out_total") >= sent).then_some(page)
    })
    .unwrap_or_else(|| {
        panic!(
            "bytes_out never reached {sent}: {}\n{}",
            scrape(&url).1,
            ins.diagnostics()
        )
    });
    promtool_check(&promtool, &page);
    assert!(
        sum(&page, "ins_instance_accepted_total") >= fetches as f64,
        "{page}"
    );
    assert!(
        sum(&page, "ins_instance_bytes_in_total") > 0.0,
        "requests were received: {page}"
    );
    // nginx's listener (replicated on both instances) at least.
    assert!(sum(&page, "ins_sockets") >= 1.0, "{page}");
    assert!(sum(&page, "ins_instance_sockets") >= 2.0, "{page}");
    assert!(
        sum(&page, "ins_flow_records_total") >= fetches as f64,
        "{page}"
    );
    assert!(sum(&page, "ins_shim_connections") >= 1.0, "{page}");
    for (name, kind) in [
        ("ins_app_datagrams_dropped_total", "counter"),
        ("ins_monitor_subscribers_dropped_total", "counter"),
        ("ins_mitigations", "gauge"),
        ("ins_flows_kept", "gauge"),
        ("ins_connections", "gauge"),
        ("ins_instance_ring_queued_frames", "gauge"),
        ("ins_instance_ring_blocked_sockets", "gauge"),
    ] {
        assert!(
            page.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}: {page}"
        );
    }
    assert_eq!(samples(&page, "ins_instance_bytes_out_total").len(), 2);

    // A mitigation in force shows up.
    let ctl = ins.run_dir().join("ctl.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&ctl).expect("ctl.sock");
    s.write_all(b"{\"cmd\":\"block\",\"prefix\":\"192.0.2.0/24\"}\n")
        .expect("block");
    let mut ans = [0u8; 512];
    let n = s.read(&mut ans).expect("block answer");
    assert!(
        String::from_utf8_lossy(&ans[..n]).contains("\"ok\":true"),
        "{}",
        String::from_utf8_lossy(&ans[..n])
    );
    let (_, page) = scrape(&url);
    assert_eq!(
        samples(&page, "ins_mitigations")
            .iter()
            .find(|(l, _)| *l == "kind=\"block\""),
        Some(&("kind=\"block\"", 1.0)),
        "{page}"
    );

    // Other paths and methods.
    assert_eq!(scrape(&format!("http://{maddr}/")).0, 404);
    {
        let mut c = Command::new(require("curl"));
        c.args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["-X", "POST", &url]);
        let o = run(c, Duration::from_secs(20));
        assert_eq!(o.stdout.trim(), "405", "{o}");
    }

    // Hostile scrapers: one connects and sends nothing, one sends an
    // endless head. Scrapes still succeed meanwhile; both are cut off.
    let mut silent = TcpStream::connect(&maddr).expect("connect");
    let mut big = TcpStream::connect(&maddr).expect("connect");
    big.write_all(b"GET /metrics HTTP/1.1\r\n").expect("write");
    let junk = format!("X-Junk: {}\r\n", "a".repeat(1000));
    for _ in 0..8 {
        if big.write_all(junk.as_bytes()).is_err() {
            break;
        }
    }
    let (code, page) = scrape(&url);
    assert_eq!(code, 200, "scrape while hostile scrapers are connected");
    promtool_check(&promtool, &page);
    big.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = big.read_to_end(&mut got);
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 431"),
        "oversized head: {:?}",
        String::from_utf8_lossy(&got)
    );
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let t = Instant::now();
    let mut b = [0u8; 16];
    let r = silent.read(&mut b);
    assert!(
        matches!(r, Ok(0)) || r.is_err() && t.elapsed() < Duration::from_secs(9),
        "the silent scraper was not disconnected: {r:?}"
    );
    let (_, page) = scrape(&url);
    assert!(
        sum(&page, "ins_metrics_scrapers_refused_total") >= 1.0,
        "{page}"
    );

    // A real Prometheus scraping every second.
    let pport = free_port();
    let pdir = TempDir::new("prom");
    let cfg = pdir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: ins\n    static_configs:\n      - targets: ['{maddr}']\n"
        ),
    )
    .expect("prometheus.yml");
    let mut pc = Command::new(&prometheus);
    pc.arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            pdir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(pdir.path().join("prom.log")).expect("prom log"));
    let mut prom = Proc::spawn("prometheus", pc);
    let query = |q: &str| {
        let mut c = Command::new(require("curl"));
        c.args(["-sS", "--max-time", "5", "-G"])
            .arg(format!("http://127.0.0.1:{pport}/api/v1/query"))
            .arg("--data-urlencode")
            .arg(format!("query={q}"));
        run(c, Duration::from_secs(10)).stdout
    };
    let live = wait_for(Duration::from_secs(60), || {
        let r = query("ins_instances{state=\"live\"}");
        (r.contains("\"status\":\"success\"") && r.contains("\"job\":\"ins\"")).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "Prometheus never returned ins_instances: {}\nlog:\n{}",
            query("ins_instances"),
            read_lossy(&pdir.path().join("prom.log"))
        )
    });
    assert!(
        live.contains("\"2\"]"),
        "ins_instances live should be 2: {live}"
    );
    let up = query("up{job=\"ins\"}");
    assert!(up.contains("\"1\"]"), "the scrape target is up: {up}");
    let bytes = query("sum(ins_instance_bytes_out_total)");
    let v: f64 = bytes
        .rsplit_once(",\"")
        .and_then(|(_, r)| r.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bytes query: {bytes}"));
    assert!(v >= sent, "Prometheus sees {v} bytes out, sent {sent}");
    prom.kill();
    assert!(ins.driver_alive(), "{}", ins.diagnostics());
    drop(ng);
}

#[test]
fn ins_ctl_up_passes_metrics() {
    let _g = serial();
    let ctl = bins().driver.with_file_name("ins-ctl");
    assert!(
        ctl.is_file(),
        "{} is missing: cargo build --release -p ins-ctl",
        ctl.display()
    );
    let dir = TempDir::new("up");
    let maddr = format!("127.0.0.1:{}", free_port());
    let mut c = Command::new(&ctl);
    c.arg("--run-dir")
        .arg(dir.path())
        .args(["up", "--instances", "1", "--metrics", &maddr]);
    let o = run(c, Duration::from_secs(60));
    let down = || {
        let mut c = Command::new(&ctl);
        c.arg("--run-dir").arg(dir.path()).arg("down");
        run(c, Duration::from_secs(30))
    };
    if !o.ok() {
        let d = down();
        panic!(
            "ins-ctl up: {o}\n{d}\n{}",
            read_lossy(&dir.path().join("driver.log"))
        );
    }
    let (code, page) = scrape(&format!("http://{maddr}/metrics"));
    let d = down();
    assert_eq!(code, 200, "{page}");
    assert_eq!(
        samples(&page, "ins_instances").first(),
        Some(&("state=\"live\"", 1.0)),
        "{page}"
    );
    assert_eq!(samples(&page, "ins_instance_processes"), vec![("", 1.0)]);
    assert!(d.ok(), "ins-ctl down: {d}");
}
