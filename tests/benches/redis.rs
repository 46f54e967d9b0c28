//! `make bench-redis`: `redis-benchmark -q -n 100000 -t get,set` against
//! redis-server natively and under the shim (two INS instances), in the
//! same run, side by side with the ratio (goal ≥ 70 %), plus what the
//! driver and the instances spent per request.
//!
//! Environment: `INS_BENCH_REQUESTS` (default 100000).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ins_e2e::bench::{Sampler, Spent, load_average, perf_available};
use ins_e2e::*;

fn redis(ins: Option<&Ins>, dir: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let mut c = match ins {
        Some(i) => i.shim_cmd(require("redis-server")),
        None => Command::new(require("redis-server")),
    };
    c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .args(["--daemonize", "no", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let p = Proc::spawn("redis-server", c);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let pong = wait_redis(addr, Duration::from_secs(10)).then_some(());
    assert!(pong.is_some(), "redis-server does not answer PING");
    (p, port)
}

/// `(test, requests per second, p50 ms)` from `redis-benchmark -q`.
fn bench(port: u16, n: u64) -> Vec<(String, f64, f64)> {
    let mut b = Command::new(require("redis-benchmark"));
    b.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
        .args(["-n", &n.to_string(), "-t", "get,set"]);
    let o = run(b, Duration::from_secs(600));
    assert!(o.ok(), "redis-benchmark failed\n{o}");
    let text = o.stdout.replace('\r', "\n");
    text.lines()
        .filter_map(|l| {
            let (test, rest) = l.split_once(':')?;
            let rps: f64 = rest.split_whitespace().next()?.parse().ok()?;
            let p50 = rest
                .split("p50=")
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            Some((test.trim().to_string(), rps, p50))
        })
        .filter(|(t, _, _)| t == "SET" || t == "GET")
        .collect()
}

fn main() {
    let n: u64 = std::env::var("INS_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    println!(
        "== redis-benchmark -q -n {n} -t get,set (50 clients): native vs under the shim \
         (2 INS instances), load average {}",
        load_average()
    );
    if !perf_available() {
        println!("   (perf is not installed or not allowed: system calls are not counted)");
    }
    let dir = TempDir::new("redis-bench");
    let (mut native, np) = redis(None, dir.path());
    let nat = bench(np, n);
    native.kill();
    let ins = Ins::start(2);
    let (mut shimmed, ip) = redis(Some(&ins), dir.path());
    let through = bench(ip, n);
    // Costs from a separate pass with perf attached (a quarter of the
    // requests), so that the counter does not slow the run above.
    let d = Sampler::start(&[ins.driver.pid()], "redis-drv");
    let pids: Vec<u32> = ins.instances.iter().map(|p| p.pid()).collect();
    let i = Sampler::start(&pids, "redis-ins");
    let counted = n.div_ceil(4);
    let _ = bench(ip, counted);
    let (d, i): (Spent, Spent) = (d.finish(), i.finish());
    shimmed.kill();
    for (t, rps, p50) in &nat {
        let Some((_, irps, ip50)) = through.iter().find(|x| &x.0 == t) else {
            println!("  {t}: no result through INS");
            continue;
        };
        println!(
            "  {t}: native {rps:>9.0} req/s p50 {p50:.3} ms | INS {irps:>9.0} req/s p50 {ip50:.3} ms | \
             {:.1} % (goal ≥ 70 %: {})",
            100.0 * irps / rps,
            if *irps >= 0.7 * rps { "met" } else { "NOT met" }
        );
    }
    let reqs = 2 * counted;
    let (ds, dc) = d.per(reqs);
    let (is, ic) = i.per(reqs);
    let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
    println!(
        "  per request through INS: driver {} syscalls {dc:.2} context switches | instances {} syscalls {ic:.2} context switches",
        f(ds),
        f(is)
    );
    println!("   load average at the end: {}", load_average());
}
