//! `make bench-nginx`: wrk against nginx natively and through INS in the
//! same run (req/s, p50, p99, ratios; concurrency 1 and 100; each run
//! bounded), then a many-connections run: as many simultaneous keep-alive
//! connections as the fd limits allow (target 20,000) through two instances,
//! reporting the driver's memory per connection (VmRSS delta).
//!
//! Environment: `INS_BENCH_SECS` (wrk duration, default 5, at most 10),
//! `INS_BENCH_CONNS` (connection target, default 20000).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ins_e2e::*;

#[derive(Debug, Clone, Copy, Default)]
struct Wrk {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

fn to_us(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, mul) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|x| x * mul)
}

fn wrk(port: u16, conns: u32, threads: u32, secs: u64) -> Wrk {
    let mut c = Command::new(require("wrk"));
    c.args([
        "-t",
        &threads.to_string(),
        "-c",
        &conns.to_string(),
        "-d",
        &format!("{secs}s"),
        "--latency",
    ])
    .arg(format!("http://127.0.0.1:{port}/small.html"));
    let o = run(c, Duration::from_secs(secs + 20));
    assert!(o.ok(), "wrk failed\n{o}");
    let mut w = Wrk::default();
    for l in o.stdout.lines() {
        let t = l.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            w.p50_us = to_us(v).unwrap_or(f64::NAN);
        } else if let Some(v) = t.strip_prefix("99%") {
            w.p99_us = to_us(v).unwrap_or(f64::NAN);
        } else if t.starts_with("Socket errors:") || t.starts_with("Non-2xx") {
            w.errors += t
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
            println!("    wrk: {t}");
        }
    }
    assert!(w.rps > 0.0, "could not parse wrk output\n{o}");
    w
}

/// Child mode: hold `count` keep-alive connections to `port`, one GET
/// each; print "held N failed M", then wait for stdin to close.
fn holder(spec: &str) {
    let mut it = spec.split_whitespace();
    let port: u16 = it.next().and_then(|v| v.parse().ok()).expect("port");
    let count: usize = it.next().and_then(|v| v.parse().ok()).expect("count");
    raise_nofile(NOFILE);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut held = Vec::with_capacity(count);
    let mut failed = 0;
    for _ in 0..count {
        match KeepAlive::connect(addr, Duration::from_secs(10)).and_then(|mut k| {
            let r = k.get("/small.html")?;
            if r.status == 200 {
                Ok(k)
            } else {
                Err(std::io::Error::other("status"))
            }
        }) {
            Ok(k) => held.push(k),
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    eprintln!(
                        "holder: first failure after {} connections: {e}",
                        held.len()
                    );
                }
                if failed > 20 {
                    break;
                }
            }
        }
    }
    println!("held {} failed {failed}", held.len());
    let _ = std::io::stdout().flush();
    let mut b = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut b);
    drop(held);
}

fn run_pair(label: &str, port: u16, secs: u64) -> (Wrk, Wrk) {
    // Warm-up.
    let _ = wrk(port, 10, 1, 1);
    let c1 = wrk(port, 1, 1, secs);
    let c100 = wrk(port, 100, 2, secs);
    println!(
        "  {label:<7} c=1:   {:>9.0} req/s  p50 {:>8.1} µs  p99 {:>8.1} µs  errors {}",
        c1.rps, c1.p50_us, c1.p99_us, c1.errors
    );
    println!(
        "  {label:<7} c=100: {:>9.0} req/s  p50 {:>8.1} µs  p99 {:>8.1} µs  errors {}",
        c100.rps, c100.p50_us, c100.p99_us, c100.errors
    );
    (c1, c100)
}

fn main() {
    if let Ok(spec) = std::env::var("INS_BENCH_HOLDER") {
        holder(&spec);
        return;
    }
    // `cargo bench` passes --bench; any filter argument is ignored.
    let secs: u64 = std::env::var("INS_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 10);
    let target: usize = std::env::var("INS_BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let opts = NginxOpts {
        workers: 2,
        worker_connections: 30_000,
        big_files: false,
        error_level: "error",
        no_access_log: true,
    };
    println!("== nginx: native vs INS (wrk {secs} s per run, GET /small.html)");
    let (n1, n100) = {
        let ng = Nginx::start(None, &opts);
        run_pair("native", ng.port, secs)
    };
    let ins = Ins::start(2);
    let ng = Nginx::start(Some(&ins), &opts);
    let (i1, i100) = run_pair("INS", ng.port, secs);
    println!("== ratios (INS / native)");
    for (label, n, i) in [("c=1", n1, i1), ("c=100", n100, i100)] {
        println!(
            "  {label:<6} throughput {:>5.1}% (goal ≥ 60%)   p50 {:>4.2}× (goal ≤ 2×)   p99 {:>4.2}×",
            100.0 * i.rps / n.rps,
            i.p50_us / n.p50_us,
            i.p99_us / n.p99_us
        );
    }
    println!(
        "  added latency per request at c=1: {:.1} µs from req/s, {:.1} µs at p50 (goal < 50 µs)",
        1e6 / i1.rps - 1e6 / n1.rps,
        i1.p50_us - n1.p50_us
    );

    println!("== many connections through 2 instances (target {target})");
    let my_limit = raise_nofile(NOFILE);
    // The driver holds one fd per connection (its end of the pair) and has
    // the same limit as this process: stay under it, and say so.
    let headroom = 300usize;
    let cap = usize::try_from(my_limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(headroom);
    let target = if target > cap {
        println!(
            "  RLIMIT_NOFILE here is {my_limit} (hard limit, not raisable): the driver holds one fd \
             per connection, so the run is capped at {cap} connections instead of {target}"
        );
        cap
    } else {
        target
    };
    let holders = 4usize;
    let per = target.div_ceil(holders);
    println!("  fd limit per process: {my_limit}; {holders} client processes × {per}");
    let drv = ins.driver.pid();
    let rss0 = vm_rss_kib(drv).unwrap_or(0);
    let inst_rss0: Vec<u64> = ins
        .instances
        .iter()
        .map(|p| vm_rss_kib(p.pid()).unwrap_or(0))
        .collect();
    let exe = std::env::current_exe().expect("current_exe");
    let t0 = Instant::now();
    let mut procs = Vec::new();
    for _ in 0..holders {
        let mut c = Command::new(&exe);
        c.env("INS_BENCH_HOLDER", format!("{} {per}", ng.port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        with_nofile(&mut c);
        procs.push(Proc::spawn("holder", c));
    }
    let mut held = 0usize;
    let mut failed = 0usize;
    for p in procs.iter_mut() {
        let mut l = String::new();
        let out = p.child.stdout.take().expect("stdout");
        let _ = BufReader::new(out).read_line(&mut l);
        let mut it = l.split_whitespace();
        if it.next() == Some("held") {
            held += it.next().and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
            failed += it.nth(1).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        } else {
            println!("  holder reported: {l:?}");
        }
    }
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let rss1 = vm_rss_kib(drv).unwrap_or(0);
    let inst_rss1: Vec<u64> = ins
        .instances
        .iter()
        .map(|p| vm_rss_kib(p.pid()).unwrap_or(0))
        .collect();
    let estab: Vec<usize> = ins
        .instances
        .iter()
        .map(|p| {
            tcp_sockets_of(&[p.pid()])
                .iter()
                .filter(|l| l.starts_with("ESTAB"))
                .count()
        })
        .collect();
    // Still serving with all of them open?
    let probe = http_get(ng.addr(), "/small.html", Duration::from_secs(10));
    println!(
        "  simultaneous keep-alive connections: {held} (failed {failed}) in {:.1} s; per instance (ESTAB): {estab:?}",
        took.as_secs_f64()
    );
    println!(
        "  driver VmRSS {rss0} KiB → {rss1} KiB: {:.0} bytes per connection",
        (rss1.saturating_sub(rss0) as f64 * 1024.0) / held.max(1) as f64
    );
    for (i, (a, b)) in inst_rss0.iter().zip(&inst_rss1).enumerate() {
        println!(
            "  instance {} VmRSS {a} KiB → {b} KiB: {:.0} bytes per connection it holds",
            i + 1,
            (b.saturating_sub(*a) as f64 * 1024.0)
                / estab.get(i).copied().unwrap_or(1).max(1) as f64
        );
    }
    println!(
        "  a new request while they are open: {}",
        match &probe {
            Ok(r) => format!("status {}", r.status),
            Err(e) => format!("FAILED: {e}"),
        }
    );
    if held < target {
        println!("  NOTE: fewer than the {target} targeted connections were held");
    }
    // Release the connections (closing the holders' stdin).
    for p in procs.iter_mut() {
        drop(p.child.stdin.take());
    }
    for p in procs.iter_mut() {
        p.wait_timeout(Duration::from_secs(30));
    }
    let _ = TcpStream::connect(ng.addr());
}
