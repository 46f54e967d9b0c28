//! Slowloris (`slowhttptest -H`), slow body (`-B`, a PUT to an upload
//! location) and slow read (`-X`)
//! against nginx (Debian's default configuration, `worker_connections
//! 512`) under the shim with `ins-detect` on (default configuration),
//! while 20 well-behaved clients — each its own source address in their own
//! namespace — fetch a page, a 56 kbit/s client downloads it and a slow
//! client uploads 400 KB through a 256 kbit/s link. Then the same attacks
//! against the same nginx run natively in the server namespace, for
//! comparison.
//!
//! Printed per attack: time to detect and to mitigate, the well-behaved
//! success fraction and p95 latency (against the no-attack baseline), and
//! the native success fraction. Asserted: every attack is detected and
//! mitigated, at least 99 % of the well-behaved requests under INS
//! succeed, every request of the slow clients succeeds, and no
//! well-behaved source is ever flagged or mitigated. Latency and the
//! native figures are printed, not asserted (they are measurements).
//!
//! Bounded: each attack lasts 15 s (at most 1500 connections at 150 per
//! second); the whole test about 2.5 minutes. Needs root.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use ins_e2e::{TempDir, random_bytes, require, run, wait_for};

const PORT_INS: u16 = 8080;
const PORT_NATIVE: u16 = 8081;
const ATTACK_S: f64 = 15.0;

struct Attack {
    name: &'static str,
    args: &'static [&'static str],
    path: &'static str,
}

const ATTACKS: [Attack; 3] = [
    Attack {
        name: "slowloris (-H)",
        args: &["-H", "-i", "5"],
        path: "/",
    },
    // The body goes to a location that reads it (WebDAV PUT): nginx holds
    // the connection while the body trickles in.
    Attack {
        name: "slow body (-B)",
        args: &["-B", "-t", "PUT", "-i", "5", "-s", "100000"],
        path: "/upload/slow",
    },
    Attack {
        name: "slow read (-X)",
        args: &[
            "-X", "-w", "512", "-y", "1024", "-n", "2", "-z", "32", "-k", "3",
        ],
        path: "/big.bin",
    },
];

fn slowhttptest(ns: &str, a: &Attack, host: &str, port: u16) -> ins_e2e::Output {
    let mut c = in_ns(ns, require("bash"));
    c.arg("-c").arg(format!(
        "ulimit -n $(ulimit -Hn); exec slowhttptest {} -c 1500 -r 150 -l {} -p 3 -u http://{host}:{port}{}",
        a.args.join(" "),
        ATTACK_S as u64,
        a.path
    ));
    run(c, Duration::from_secs_f64(ATTACK_S + 15.0))
}

/// Runs the 20 well-behaved clients for `secs`, starting `attack` 2 s in;
/// returns (requests, attack start, attack end).
fn phase(
    good: &str,
    (host, port): (&str, u16),
    srcs: &[String],
    atk: Option<(&str, &Attack)>,
    secs: f64,
    dir: &Path,
    name: &str,
) -> (Vec<Req>, f64, f64) {
    let out = dir.join(format!("{name}.jsonl"));
    let mut c = clients(good, (host, port, "/index.html"), srcs, secs, 0.3, &out);
    let (mut t0, mut t1) = (now(), now() + secs);
    if let Some((ns, a)) = atk {
        std::thread::sleep(Duration::from_secs(2));
        t0 = now();
        let o = slowhttptest(ns, a, &host.replace(".2.1", ".1.1"), port);
        t1 = now();
        assert!(
            o.stdout.contains("slowhttptest") || o.stderr.contains("slowhttptest"),
            "slowhttptest did not run: {o}"
        );
    }
    c.wait_timeout(Duration::from_secs_f64(secs + 20.0))
        .expect("clients finish");
    (parse_reqs(&ins_e2e::read_lossy(&out)), t0, t1)
}

fn within(r: &[Req], t0: f64, t1: f64) -> Vec<&Req> {
    r.iter().filter(|x| x.t0 >= t0 && x.t0 < t1).collect()
}

fn success(r: &[&Req]) -> f64 {
    r.iter().filter(|x| x.ok).count() as f64 / r.len().max(1) as f64
}

fn p95(r: &[&Req]) -> f64 {
    let l: Vec<f64> = r.iter().filter(|x| x.ok).map(|x| x.t1 - x.t0).collect();
    quantile(&l, 0.95)
}

fn in_net(s: &str, net: &str) -> bool {
    s.starts_with(net)
}

#[test]
fn slow_attacks_are_detected_and_mitigated_while_clients_are_served() {
    ensure_tools(&[
        ("slowhttptest", "slowhttptest"),
        ("nginx", "nginx-light"),
        ("tc", "iproute2"),
    ]);
    let mut lab = Lab::new("at");
    let atk = lab.client(1);
    let good = lab.client(2);
    let slow = lab.client(3);
    lab.add_addrs(&good, 2, 10, 29);
    let srcs: Vec<String> = (10..=29).map(|h| format!("10.88.2.{h}")).collect();
    // 56 kbit/s towards the slow client, 256 kbit/s from it.
    lab.shape(&lab.srv, &lab.srv_dev(3), "56kbit");
    lab.shape(&slow, &lab.cli_dev(3), "256kbit");

    let www = TempDir::new("www");
    let html = www.path().join("html");
    std::fs::create_dir_all(html.join("upload")).unwrap();
    let page: Vec<u8> = random_bytes(18_000, 3)
        .iter()
        .map(|b| b"abcdefghijklmnopqrstuvwxyz0123456789 \n"[usize::from(*b) % 38])
        .collect();
    std::fs::write(html.join("index.html"), &page).unwrap();
    std::fs::write(html.join("big.bin"), random_bytes(2 << 20, 4)).unwrap();
    for d in [www.path(), &html, &html.join("upload")] {
        assert!(sh("chmod", &["0777", &d.display().to_string()]));
    }

    let ins = Ins::start(&lab.srv, &[]);
    let _detect = ins.detect();
    let pfx = TempDir::new("ngx-ins");
    let conf = nginx_conf(pfx.path(), PORT_INS, &html);
    let _ngx = nginx(ins.shim_cmd(require("nginx")), &conf, pfx.path());
    let npfx = TempDir::new("ngx-native");
    let nconf = nginx_conf(npfx.path(), PORT_NATIVE, &html);
    let _native = nginx(in_ns(&lab.srv, require("nginx")), &nconf, npfx.path());
    for port in [PORT_INS, PORT_NATIVE] {
        let up = wait_for(Duration::from_secs(15), || {
            let mut c = in_ns(&good, require("python3"));
            c.arg("-c").arg(format!(
                "import socket; s=socket.create_connection(('10.88.2.1',{port}),timeout=1); \
                 s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); assert s.recv(12).startswith(b'HTTP/1.1 200')"
            ));
            c.stderr(Stdio::null());
            c.status().ok().filter(|s| s.success()).map(|_| ())
        });
        assert!(
            up.is_some(),
            "nginx on port {port} serves\n{}\n{}",
            nginx_err(&pfx, &npfx),
            ins_e2e::read_lossy(&ins.run_dir().join("ins.log"))
        );
    }
    let dir = ins.run_dir().to_path_buf();

    // The slow clients run through every INS phase.
    let ins_total = 15.0 + 3.0 * (ATTACK_S + 6.0);
    let slow_out = dir.join("slow.jsonl");
    let mut slow_dl = clients(
        &slow,
        ("10.88.3.1", PORT_INS, "/index.html"),
        &["10.88.3.2".into()],
        ins_total,
        0.5,
        &slow_out,
    );
    let up_out = dir.join("upload.jsonl");
    let mut c = in_ns(&slow, require("python3"));
    c.arg(helper("upload.py"))
        .args([
            "10.88.3.1",
            &PORT_INS.to_string(),
            "10.88.3.2",
            &ins_total.to_string(),
            "400000",
        ])
        .stdout(std::fs::File::create(&up_out).unwrap())
        .stderr(Stdio::null());
    let mut slow_up = ins_e2e::Proc::spawn("upload", c);

    // Baseline: no attack (ins-detect trains its model meanwhile).
    let (base, _, _) = phase(
        &good,
        ("10.88.2.1", PORT_INS),
        &srcs,
        None,
        15.0,
        &dir,
        "base",
    );
    let base_all: Vec<&Req> = base.iter().collect();
    let base_p95 = p95(&base_all);

    struct Row {
        name: &'static str,
        detect: Option<f64>,
        mitigate: Option<f64>,
        ok: f64,
        n: usize,
        p95: f64,
        native_ok: f64,
        native_n: usize,
    }
    let mut rows = Vec::new();
    for (k, a) in ATTACKS.iter().enumerate() {
        let host = 10 + k as u8;
        lab.set_addr(&atk, 1, host);
        let attacker = format!("10.88.1.{host}");
        let (r, t0, t1) = phase(
            &good,
            ("10.88.2.1", PORT_INS),
            &srcs,
            Some((&atk, a)),
            ATTACK_S + 4.0,
            &dir,
            &format!("ins{k}"),
        );
        std::thread::sleep(Duration::from_secs(2));
        let w = within(&r, t0, t1);
        let detect = ins
            .decisions()
            .iter()
            .filter(|d| matches!(d["decision"].as_str(), Some("flag" | "mitigate" | "alert")))
            .filter(|d| {
                d["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&attacker))
                    || d["evidence"]["remote"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(&attacker))
            })
            .filter_map(|d| d["ts"].as_f64())
            .map(|t| t - t0)
            .filter(|&t| t >= 0.0)
            .reduce(f64::min);
        let mitigate = ins
            .mitigation_events()
            .iter()
            .filter(|e| e["event"] == "applied")
            .filter(|e| {
                e["prefix"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&attacker))
            })
            .filter_map(|e| e["at"].as_f64())
            .map(|t| t - t0)
            .filter(|&t| t >= 0.0)
            .reduce(f64::min);
        rows.push(Row {
            name: a.name,
            detect,
            mitigate,
            ok: success(&w),
            n: w.len(),
            p95: p95(&w),
            native_ok: f64::NAN,
            native_n: 0,
        });
    }
    slow_dl
        .wait_timeout(Duration::from_secs(30))
        .expect("slow client ends");
    slow_up
        .wait_timeout(Duration::from_secs(60))
        .expect("upload ends");

    // Native nginx, same attacks (new attacker addresses; INS is not involved).
    let (nbase, _, _) = phase(
        &good,
        ("10.88.2.1", PORT_NATIVE),
        &srcs,
        None,
        6.0,
        &dir,
        "nbase",
    );
    let nbase_all: Vec<&Req> = nbase.iter().collect();
    for (k, a) in ATTACKS.iter().enumerate() {
        lab.set_addr(&atk, 1, 20 + k as u8);
        let (r, t0, t1) = phase(
            &good,
            ("10.88.2.1", PORT_NATIVE),
            &srcs,
            Some((&atk, a)),
            ATTACK_S + 4.0,
            &dir,
            &format!("native{k}"),
        );
        let w = within(&r, t0, t1);
        rows[k].native_ok = success(&w);
        rows[k].native_n = w.len();
        std::thread::sleep(Duration::from_secs(2));
    }

    println!(
        "baseline (no attack): INS p95 {:.1} ms over {} requests, {:.2} % ok; native p95 {:.1} ms",
        base_p95 * 1e3,
        base.len(),
        100.0 * success(&base_all),
        p95(&nbase_all) * 1e3
    );
    println!(
        "{:<16} {:>9} {:>10} {:>12} {:>10} {:>9} {:>14}",
        "attack", "detect_s", "mitigate_s", "ok % (INS)", "p95 ms", "p95/base", "ok % (native)"
    );
    for r in &rows {
        println!(
            "{:<16} {:>9} {:>10} {:>7.2} ({:>3}) {:>10.1} {:>9.2} {:>8.2} ({:>3})",
            r.name,
            r.detect.map_or("-".into(), |t| format!("{t:.2}")),
            r.mitigate.map_or("-".into(), |t| format!("{t:.2}")),
            100.0 * r.ok,
            r.n,
            r.p95 * 1e3,
            r.p95 / base_p95,
            100.0 * r.native_ok,
            r.native_n
        );
    }
    let slow_reqs = parse_reqs(&ins_e2e::read_lossy(&slow_out));
    let ups = parse_reqs(&ins_e2e::read_lossy(&up_out));
    let dur = |v: &[Req]| v.iter().map(|r| r.t1 - r.t0).fold(0.0, f64::max);
    println!(
        "56 kbit/s client: {}/{} ok (longest {:.1} s); slow upload: {}/{} ok (longest {:.1} s)",
        slow_reqs.iter().filter(|r| r.ok).count(),
        slow_reqs.len(),
        dur(&slow_reqs),
        ups.iter().filter(|r| r.ok).count(),
        ups.len(),
        dur(&ups)
    );

    // Nobody well-behaved was flagged or mitigated.
    let touched: Vec<String> = ins
        .decisions()
        .iter()
        .filter(|d| matches!(d["decision"].as_str(), Some("flag" | "mitigate")))
        .filter(|d| {
            let s = d["subject"].as_str().unwrap_or("");
            let r = d["evidence"]["remote"].as_str().unwrap_or("");
            in_net(s, "10.88.2.")
                || in_net(s, "10.88.3.")
                || in_net(r, "10.88.2.")
                || in_net(r, "10.88.3.")
        })
        .map(|d| d.to_string())
        .collect();
    assert!(
        touched.is_empty(),
        "well-behaved sources were acted on: {touched:?}"
    );
    assert!(
        !ins.mitigation_events().iter().any(|e| {
            e["prefix"]
                .as_str()
                .is_some_and(|p| in_net(p, "10.88.2.") || in_net(p, "10.88.3."))
        }),
        "a well-behaved prefix was mitigated"
    );
    assert!(
        slow_reqs.len() >= 5 && slow_reqs.iter().all(|r| r.ok),
        "56 kbit/s client: {slow_reqs:?}"
    );
    assert!(dur(&slow_reqs) > 1.5, "the 56 kbit/s client is slow");
    assert!(
        ups.len() >= 2 && ups.iter().all(|r| r.ok),
        "slow upload: {ups:?}"
    );
    for r in &rows {
        assert!(r.detect.is_some(), "{} was not detected", r.name);
        assert!(r.mitigate.is_some(), "{} was not mitigated", r.name);
        assert!(r.n >= 200, "{}: only {} well-behaved requests", r.name, r.n);
        assert!(
            r.ok >= 0.99,
            "{}: {:.2} % of well-behaved requests succeeded",
            r.name,
            100.0 * r.ok
        );
    }
}

fn nginx_err(a: &TempDir, b: &TempDir) -> String {
    let r = |p: &TempDir, f: &str| ins_e2e::read_lossy(&p.path().join(f));
    format!(
        "--- nginx (INS)\n{}{}\n--- nginx (native)\n{}{}",
        r(a, "logs/error.log"),
        r(a, "stderr"),
        r(b, "logs/error.log"),
        r(b, "stderr")
    )
}
