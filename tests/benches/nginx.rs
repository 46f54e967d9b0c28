//! `make bench-nginx`: wrk against nginx natively and through INS in the
//! same run, for the configuration users get: Debian's default `http {}`
//! settings (`sendfile on`, `tcp_nopush on`, keep-alive, an access log,
//! Debian's ~600-byte default page, `worker_processes auto`), and the same
//! with `tcp_nopush off`; then the project's old fixture (a 52-byte page,
//! no access log) for comparison; concurrency 1 and 100 each. For every INS
//! run: req/s, p50, p99, the ratios to native, and what the driver and the
//! instances spent per request (system calls from `perf stat`, context
//! switches from `/proc`). Then a many-connections run (see below).
//!
//! Environment: `INS_BENCH_SECS` (wrk duration, default 5, at most 10),
//! `INS_BENCH_CONNS` (connection target, default 20000), `INS_BENCH_QUICK=1`
//! (only the Debian configuration).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ins_e2e::bench::{Sampler, Spent, Wrk, load_average, perf_available, wrk, wrk_with};
use ins_e2e::*;

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

/// One configuration measured.
struct Config {
    name: &'static str,
    opts: NginxOpts,
    path: &'static str,
    /// A request header wrk sends.
    header: Option<&'static str>,
}

/// Debian's default page (nginx-light's `/usr/share/nginx/html/index.html`,
/// 615 bytes), or a page of that size if it is not installed.
fn debian_page() -> Vec<u8> {
    std::fs::read("/usr/share/nginx/html/index.html").unwrap_or_else(|_| {
        let mut p =
            b"<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body>".to_vec();
        p.resize(600, b' ');
        p.extend_from_slice(b"</body></html>\n");
        p
    })
}

fn configs() -> Vec<Config> {
    let debian = |nopush: bool| NginxOpts {
        workers: 0,
        tcp_nopush: nopush,
        keepalive_requests: 1000,
        index_page: Some(debian_page()),
        extra_http: "types_hash_max_size 2048; gzip on;".into(),
        worker_connections: 768,
        big_files: false,
        error_level: "error",
        no_access_log: false,
        ..NginxOpts::default()
    };
    let mut v = vec![
        Config {
            name: "debian",
            opts: debian(true),
            path: "/",
            header: None,
        },
        Config {
            name: "nopush-off",
            opts: debian(false),
            path: "/",
            header: None,
        },
    ];
    if std::env::var_os("INS_BENCH_QUICK").is_none() {
        // A browser's request: Debian's `gzip on` compresses the page in
        // memory, so nginx sends it without sendfile and without
        // TCP_CORK (what made an outside run look 5x better than this
        // bench before options went in band).
        v.push(Config {
            name: "debian+gzip-client",
            opts: debian(true),
            path: "/",
            header: Some("Accept-Encoding: gzip"),
        });
        v.push(Config {
            name: "old-fixture",
            opts: NginxOpts {
                workers: 2,
                worker_connections: 30_000,
                big_files: false,
                error_level: "error",
                no_access_log: true,
                ..NginxOpts::default()
            },
            path: "/small.html",
            header: None,
        });
    }
    v
}

/// One measured INS run and what the driver and instances spent.
struct Row {
    w: Wrk,
    driver: Spent,
    inst: Spent,
}

/// A wrk run; with `ins`, what the driver and instances spent during it
/// (perf attached: a separate pass, so that it does not slow the
/// throughput runs, which have no counter attached).
fn measure(url: &str, header: Option<&str>, conns: u32, secs: u64, ins: Option<&Ins>) -> Row {
    let threads = if conns > 1 { 2 } else { 1 };
    let pids = ins.map(|i| {
        (
            vec![i.driver.pid()],
            i.instances.iter().map(|p| p.pid()).collect::<Vec<_>>(),
        )
    });
    let samplers = pids
        .as_ref()
        .map(|(d, i)| (Sampler::start(d, "drv"), Sampler::start(i, "ins")));
    let w = wrk_with(url, conns, threads, secs, header);
    let (driver, inst) = samplers
        .map(|(d, i)| (d.finish(), i.finish()))
        .unwrap_or_default();
    if w.errors > 0 {
        println!(
            "    ({} at c={conns}, {}: wrk: {})",
            w.errors,
            if ins.is_some() { "INS" } else { "native" },
            w.error_lines
        );
    }
    Row { w, driver, inst }
}

fn fmt_spent(s: &Spent, reqs: u64) -> String {
    let (sys, ctx) = s.per(reqs);
    match sys {
        Some(sys) => format!("{sys:>5.1} sys {ctx:>4.2} cs"),
        None => format!("  n/a sys {ctx:>4.2} cs"),
    }
}

fn print_conf(c: &Config) {
    let o = &c.opts;
    let page = match c.path {
        "/" => o.index_page.as_ref().map_or(0, Vec::len),
        _ => 52,
    };
    println!(
        "-- config {}: sendfile on; tcp_nopush {}; keepalive_timeout 65; keepalive_requests {}; \
         worker_processes {}; worker_connections {}; access_log {}; {} ; GET {} ({} bytes){}",
        c.name,
        if o.tcp_nopush { "on" } else { "off" },
        o.keepalive_requests,
        if o.workers == 0 {
            "auto".to_string()
        } else {
            o.workers.to_string()
        },
        o.worker_connections,
        if o.no_access_log {
            "off"
        } else {
            "on (a file)"
        },
        o.extra_http,
        c.path,
        page,
        c.header
            .map_or(String::new(), |h| format!(", request header \"{h}\""))
    );
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
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "== nginx: native vs INS; wrk {secs} s per run (-t1 at c=1, -t2 at c=100, keep-alive), \
         2 INS instances, {cpus} CPUs, load average {} at start",
        load_average()
    );
    if !perf_available() {
        println!("   (perf is not installed or not allowed: system calls are not counted)");
    }
    println!(
        "   per-request cost columns: system calls and context switches of the driver | of the instances \
         (from a separate, shorter pass with perf attached; the throughput runs have no counter attached)"
    );
    let ins = Ins::start(2);
    for c in configs() {
        print_conf(&c);
        let native = Nginx::start(None, &c.opts);
        let url = format!("http://127.0.0.1:{}{}", native.port, c.path);
        let _ = wrk(&url, 10, 1, 1);
        let n1 = measure(&url, c.header, 1, secs, None);
        let n100 = measure(&url, c.header, 100, secs, None);
        drop(native);
        let ng = Nginx::start(Some(&ins), &c.opts);
        let url = format!("http://127.0.0.1:{}{}", ng.port, c.path);
        let _ = wrk(&url, 10, 1, 1);
        let mut i1 = measure(&url, c.header, 1, secs, None);
        let mut i100 = measure(&url, c.header, 100, secs, None);
        let count_secs = (secs / 2).max(2);
        let k1 = measure(&url, c.header, 1, count_secs, Some(&ins));
        let k100 = measure(&url, c.header, 100, count_secs, Some(&ins));
        (i1.driver, i1.inst, i1.w.requests) = (k1.driver, k1.inst, k1.w.requests);
        (i100.driver, i100.inst, i100.w.requests) = (k100.driver, k100.inst, k100.w.requests);
        drop(ng);
        for (label, n, i) in [("c=1  ", &n1, &i1), ("c=100", &n100, &i100)] {
            println!(
                "  {label} native {:>8.0} req/s p50 {:>7.1} µs p99 {:>8.1} µs | INS {:>8.0} req/s p50 {:>7.1} µs p99 {:>8.1} µs | \
                 {:>5.1}% req/s, p50 {:+7.1} µs | driver {} | instances {}",
                n.w.rps,
                n.w.p50_us,
                n.w.p99_us,
                i.w.rps,
                i.w.p50_us,
                i.w.p99_us,
                100.0 * i.w.rps / n.w.rps,
                i.w.p50_us - n.w.p50_us,
                fmt_spent(&i.driver, i.w.requests),
                fmt_spent(&i.inst, i.w.requests),
            );
        }
        println!(
            "  goals: c=100 ≥ 80 % ({}), c=1 ≥ 60 % ({}), added p50 at c=1 < 50 µs ({})",
            if i100.w.rps >= 0.8 * n100.w.rps {
                "met"
            } else {
                "NOT met"
            },
            if i1.w.rps >= 0.6 * n1.w.rps {
                "met"
            } else {
                "NOT met"
            },
            if i1.w.p50_us - n1.w.p50_us < 50.0 {
                "met"
            } else {
                "NOT met"
            },
        );
    }
    println!("   load average at the end: {}", load_average());

    let opts = NginxOpts {
        workers: 2,
        worker_connections: 30_000,
        big_files: false,
        error_level: "error",
        no_access_log: true,
        ..NginxOpts::default()
    };
    let ng = Nginx::start(Some(&ins), &opts);
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
