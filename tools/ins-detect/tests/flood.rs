//! A flood of new connections from 40 addresses of one /24 (each address
//! alone stays under the per-address threshold) against nginx under the
//! shim with `ins-detect` on (default configuration), while clients in two
//! other prefixes fetch pages. Asserted: the flooding /24 is blocked, no
//! address or prefix of the other clients is touched, the other clients are
//! served (≥ 99 %), and the flood is refused after the block. Printed: the
//! flood rate, the time to block, the clients' success.
//!
//! Bounded: 40 × 25 connections per second for 8 s. Needs root.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use ins_e2e::{Proc, TempDir, require};
use serde_json::Value;

const PORT: u16 = 8090;

#[test]
fn a_many_address_flood_gets_its_prefix_blocked_and_nothing_else() {
    ensure_tools(&[("nginx", "nginx-light")]);
    let mut lab = Lab::new("fl");
    let fl = lab.client(1);
    let good = lab.client(2);
    let other = lab.client(3);
    lab.add_addrs(&fl, 1, 10, 49);
    let ins = Ins::start(&lab.srv, &[]);
    let _detect = ins.detect();
    let www = TempDir::new("www");
    std::fs::write(
        www.path().join("index.html"),
        "flood test page\n".repeat(50),
    )
    .unwrap();
    assert!(sh("chmod", &["0755", &www.path().display().to_string()]));
    let pfx = TempDir::new("ngx");
    let conf = nginx_conf(pfx.path(), PORT, www.path());
    let _ngx = nginx(ins.shim_cmd(require("nginx")), &conf, pfx.path());
    let dir = ins.run_dir().to_path_buf();
    let up = ins_e2e::wait_for(Duration::from_secs(15), || {
        let mut c = in_ns(&good, require("python3"));
        c.arg("-c").arg(format!(
            "import socket; socket.create_connection(('10.88.2.1',{PORT}),timeout=1)"
        ));
        c.stderr(Stdio::null());
        c.status().ok().filter(|s| s.success()).map(|_| ())
    });
    assert!(up.is_some(), "nginx serves");

    let g1 = clients(
        &good,
        ("10.88.2.1", PORT, "/index.html"),
        &["10.88.2.2".into()],
        16.0,
        0.2,
        &dir.join("g1.jsonl"),
    );
    let g2 = clients(
        &other,
        ("10.88.3.1", PORT, "/index.html"),
        &["10.88.3.2".into()],
        16.0,
        0.2,
        &dir.join("g2.jsonl"),
    );
    std::thread::sleep(Duration::from_secs(4));
    let srcs: Vec<String> = (10..=49).map(|h| format!("10.88.1.{h}")).collect();
    let mut c = in_ns(&fl, require("python3"));
    c.arg(helper("flood.py"))
        .args(["10.88.1.1", &PORT.to_string(), &srcs.join(","), "25", "8"])
        .stdout(std::fs::File::create(dir.join("flood.jsonl")).unwrap())
        .stderr(Stdio::null());
    let mut f = Proc::spawn("flood", c);
    f.wait_timeout(Duration::from_secs(40)).expect("flood ends");
    // What an operator sees while the block is in force.
    let mut st = std::process::Command::new(bin("ins-ctl"));
    st.arg("--run-dir")
        .arg(&dir)
        .args(["detect", "status", "--json"]);
    let st = ins_e2e::run(st, Duration::from_secs(10));
    assert!(st.ok(), "ins-ctl detect status: {st}");
    let status: Value = serde_json::from_str(st.stdout.trim()).expect("status JSON");
    let mut table = std::process::Command::new(bin("ins-ctl"));
    table.arg("--run-dir").arg(&dir).args(["detect", "status"]);
    let table = ins_e2e::run(table, Duration::from_secs(10));
    println!("ins-ctl detect status:\n{}", table.stdout);
    for mut g in [g1, g2] {
        g.wait_timeout(Duration::from_secs(30))
            .expect("clients end");
    }
    std::thread::sleep(Duration::from_secs(1));

    let flood: Vec<Value> = ins_e2e::read_lossy(&dir.join("flood.jsonl"))
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let goods: Vec<Req> = [dir.join("g1.jsonl"), dir.join("g2.jsonl")]
        .iter()
        .flat_map(|p| parse_reqs(&ins_e2e::read_lossy(p)))
        .collect();
    let t_start = flood
        .iter()
        .filter_map(|v| v["t"].as_f64())
        .fold(f64::INFINITY, f64::min);
    let t_end = flood
        .iter()
        .filter_map(|v| v["t"].as_f64())
        .fold(0.0, f64::max);
    let ev = ins.mitigation_events();
    let blocked = ev
        .iter()
        .filter(|e| e["event"] == "applied" && e["action"] == "block")
        .filter(|e| e["prefix"] == "10.88.1.0/24")
        .filter_map(|e| e["at"].as_f64())
        .fold(f64::INFINITY, f64::min);
    let refused_after = flood
        .iter()
        .filter(|v| v["t"].as_f64().is_some_and(|t| t > blocked + 0.2))
        .filter(|v| v["ok"] == false)
        .count();
    let served_before = flood
        .iter()
        .filter(|v| v["t"].as_f64().is_some_and(|t| t < blocked) && v["ok"] == true)
        .count();
    println!(
        "flood: {} connections from 40 addresses in {:.1} s ({:.0}/s), {} served before the block, {} refused after it",
        flood.len(),
        t_end - t_start,
        flood.len() as f64 / (t_end - t_start),
        served_before,
        refused_after
    );
    println!(
        "10.88.1.0/24 blocked {:.2} s after the flood started; other prefixes: {}/{} requests ok",
        blocked - t_start,
        goods.iter().filter(|r| r.ok).count(),
        goods.len()
    );
    for d in ins
        .decisions()
        .iter()
        .filter(|d| d["decision"] == "mitigate")
    {
        println!(
            "  decision: {} {} {}",
            d["detector"], d["action"], d["subject"]
        );
    }
    assert!(blocked.is_finite(), "the flooding /24 was blocked: {ev:?}");
    let in_force = status["mitigations"].as_array().expect("mitigations");
    assert!(
        in_force.iter().any(|m| m["subject"] == "10.88.1.0/24"
            && m["action"] == "block"
            && m["detector"] == "threshold"),
        "ins-ctl detect status shows the block and why: {status}"
    );
    assert!(
        table.stdout.contains("10.88.1.0/24") && table.stdout.contains("over: conn_rate"),
        "{}",
        table.stdout
    );
    assert!(blocked - t_start < 6.0, "blocked within the flood");
    assert!(refused_after > 0, "the block refuses the flood");
    let touched: Vec<&Value> = ev
        .iter()
        .filter(|e| {
            e["prefix"]
                .as_str()
                .is_some_and(|p| p.starts_with("10.88.2.") || p.starts_with("10.88.3."))
        })
        .collect();
    assert!(
        touched.is_empty(),
        "other prefixes were mitigated: {touched:?}"
    );
    assert!(
        !ev.iter().any(|e| e["prefix"]
            .as_str()
            .is_some_and(|p| p.starts_with("10.88.1.") && p.ends_with("/32"))),
        "the flood is one prefix: no per-address blocks needed"
    );
    assert!(
        goods.len() >= 100,
        "only {} requests from the other prefixes",
        goods.len()
    );
    let failed: Vec<String> = goods
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} at {:+.2} s", r.src, r.t0 - t_start))
        .collect();
    // Unaffected: never mitigated (above), and served (one failure in a
    // hundred allowed for a machine shared with other work).
    assert!(
        failed.len() * 100 <= goods.len(),
        "the other prefixes are served; failed (s after the flood started): {failed:?}"
    );
}
