//! Helpers of the benchmarks (`benches/`): wrk runs parsed, and what the
//! INS processes spent per request — system calls (`perf stat` on the
//! `raw_syscalls:sys_enter` tracepoint, when `perf` is installed) and
//! context switches (`/proc/PID/task/*/status`, always).
//!
//! Nothing here is asserted: benchmarks print figures side by side with a
//! native baseline from the same run.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{require, run, signal_group};

/// One wrk run.
#[derive(Debug, Clone, Default)]
pub struct Wrk {
    /// Requests per second.
    pub rps: f64,
    /// Requests completed.
    pub requests: u64,
    /// Median latency (µs).
    pub p50_us: f64,
    /// 99th percentile latency (µs).
    pub p99_us: f64,
    /// Socket errors and non-2xx answers.
    pub errors: u64,
    /// wrk's error lines, as printed.
    pub error_lines: String,
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

/// `wrk -t threads -c conns -d secs --latency url`, parsed.
pub fn wrk(url: &str, conns: u32, threads: u32, secs: u64) -> Wrk {
    wrk_with(url, conns, threads, secs, None)
}

/// [`wrk`] with one extra request header (`"Name: value"`).
pub fn wrk_with(url: &str, conns: u32, threads: u32, secs: u64, header: Option<&str>) -> Wrk {
    let mut c = Command::new(require("wrk"));
    if let Some(h) = header {
        c.args(["-H", h]);
    }
    c.args([
        "-t",
        &threads.to_string(),
        "-c",
        &conns.to_string(),
        "-d",
        &format!("{secs}s"),
        "--latency",
        url,
    ]);
    let o = run(c, Duration::from_secs(secs + 30));
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
        } else if t.contains("requests in") {
            w.requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if t.starts_with("Socket errors:") || t.starts_with("Non-2xx") {
            w.error_lines.push_str(t);
            w.error_lines.push(' ');
            w.errors += t
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    assert!(w.rps > 0.0, "could not parse wrk output\n{o}");
    w
}

/// Voluntary plus involuntary context switches of every thread of `pid`.
pub fn ctx_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Whether `perf` can count system calls here.
pub fn perf_available() -> bool {
    Command::new("perf")
        .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What a group of processes spent during a measured window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    /// System calls (`None` without `perf`).
    pub syscalls: Option<u64>,
    /// Context switches.
    pub ctx: u64,
}

impl Spent {
    /// Per request: `(syscalls, context switches)`.
    pub fn per(&self, requests: u64) -> (Option<f64>, f64) {
        let r = requests.max(1) as f64;
        (self.syscalls.map(|s| s as f64 / r), self.ctx as f64 / r)
    }
}

/// Counts system calls and context switches of `pids` from
/// [`Sampler::start`] to [`Sampler::finish`].
pub struct Sampler {
    pids: Vec<u32>,
    ctx0: u64,
    perf: Option<(Child, std::path::PathBuf)>,
}

impl Sampler {
    /// Starts counting (perf needs a moment to attach: 200 ms).
    pub fn start(pids: &[u32], tag: &str) -> Sampler {
        let perf = perf_available().then(|| {
            let out = std::env::temp_dir()
                .join(format!("ins-bench-perf-{}-{tag}.csv", std::process::id()));
            let list = pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mut c = Command::new("perf");
            c.args([
                "stat",
                "-x,",
                "-e",
                "raw_syscalls:sys_enter",
                "-p",
                &list,
                "-o",
            ])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            (c.spawn().expect("start perf"), out)
        });
        if perf.is_some() {
            std::thread::sleep(Duration::from_millis(200));
        }
        Sampler {
            pids: pids.to_vec(),
            ctx0: pids.iter().map(|&p| ctx_switches(p)).sum(),
            perf,
        }
    }

    /// Stops counting.
    pub fn finish(self) -> Spent {
        let ctx1: u64 = self.pids.iter().map(|&p| ctx_switches(p)).sum();
        let syscalls = self.perf.and_then(|(mut child, out)| {
            signal_group(child.id(), libc::SIGINT);
            let _ = child.wait();
            let text = std::fs::read_to_string(&out).ok()?;
            let _ = std::fs::remove_file(&out);
            text.lines()
                .find(|l| l.contains("raw_syscalls:sys_enter"))
                .and_then(|l| l.split(',').next()?.trim().parse().ok())
        });
        Spent {
            syscalls,
            ctx: ctx1.saturating_sub(self.ctx0),
        }
    }
}

/// `uptime`'s load averages, for the record next to figures taken on a
/// shared machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
