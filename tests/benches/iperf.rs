//! `make bench-iperf`: one iperf3 TCP stream (native client, 5 s) to an
//! iperf3 server natively and under the shim (one INS instance), in the
//! same run, side by side with the ratio (goal ≥ 60 %), plus what the
//! driver and the instance spent per MiB.
//!
//! Environment: `INS_BENCH_SECS` (default 5, at most 20).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ins_e2e::bench::{Sampler, load_average, perf_available};
use ins_e2e::*;

fn server(ins: Option<&Ins>) -> (Proc, u16) {
    let port = free_port();
    let mut c = match ins {
        Some(i) => i.shim_cmd(require("iperf3")),
        None => Command::new(require("iperf3")),
    };
    c.args(["-s", "-p", &port.to_string(), "-B", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let p = Proc::spawn("iperf3 -s", c);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        wait_tcp(addr, Duration::from_secs(10)),
        "iperf3 -s did not listen"
    );
    // The probe connection above ends an iperf3 "test"; let it settle.
    std::thread::sleep(Duration::from_millis(300));
    (p, port)
}

/// Received bits per second of one stream.
fn client(port: u16, secs: u64) -> f64 {
    let mut c = Command::new(require("iperf3"));
    c.args([
        "-c",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        &secs.to_string(),
        "-J",
    ]);
    let o = run(c, Duration::from_secs(secs + 30));
    assert!(o.ok(), "iperf3 -c failed\n{o}");
    // "sum_received": { ... "bits_per_second": N ... }
    let tail = o
        .stdout
        .split("\"sum_received\"")
        .nth(1)
        .expect("iperf3 JSON has sum_received");
    tail.split("\"bits_per_second\":")
        .nth(1)
        .and_then(|v| v.trim().split([',', '\n', '}']).next()?.trim().parse().ok())
        .expect("bits_per_second")
}

fn main() {
    let secs: u64 = std::env::var("INS_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 20);
    println!(
        "== iperf3, one TCP stream for {secs} s, native client: server native vs under the shim \
         (1 INS instance), load average {}",
        load_average()
    );
    if !perf_available() {
        println!("   (perf is not installed or not allowed: system calls are not counted)");
    }
    let ins = Ins::start(1);
    // Alternating runs: a shared machine's load moves between them. A
    // fresh server each time (iperf3 -s re-opens its listener between
    // tests; that is issue 15's business, not this benchmark's).
    for round in 1..=2 {
        let (mut n, np) = server(None);
        let native = client(np, secs);
        n.kill();
        let (mut s, ip) = server(Some(&ins));
        let through = client(ip, secs);
        s.kill();
        println!(
            "  run {round}: native {:.2} Gbit/s | INS {:.2} Gbit/s | {:.1} % (goal ≥ 60 %: {})",
            native / 1e9,
            through / 1e9,
            100.0 * through / native,
            if through >= 0.6 * native {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    // Costs from a separate pass with perf attached.
    let (mut s, ip) = server(Some(&ins));
    let d = Sampler::start(&[ins.driver.pid()], "iperf-drv");
    let i = Sampler::start(&[ins.instances[0].pid()], "iperf-ins");
    let through = client(ip, secs);
    let (d, i) = (d.finish(), i.finish());
    s.kill();
    let mib = (through / 8.0 * secs as f64 / (1 << 20) as f64).max(1.0) as u64;
    let (ds, dc) = d.per(mib);
    let (is, ic) = i.per(mib);
    let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
    println!(
        "  per MiB through INS: driver {} syscalls {dc:.2} context switches | instance {} syscalls {ic:.2} context switches",
        f(ds),
        f(is)
    );
    println!("   load average at the end: {}", load_average());
}
