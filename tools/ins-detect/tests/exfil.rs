//! The communication-graph detector against a service under the shim that
//! talks to one backend for every request (inbound clients, outbound
//! backend connections through INS), with `ins-detect` on (default
//! configuration: a 20 s learning window, 5 s intervals). After a benign
//! period, the service starts sending 8 MB to a destination it never used
//! (exfiltration-shaped: much out, nothing back).
//!
//! Asserted: no decision of any detector during the benign period, and a
//! graph alert naming the new destination within one interval (5 s) of
//! the exfiltration. `INS_DETECT_BENIGN_S` lengthens the benign period
//! after learning (default 25 s; `make detect-benign` runs 300 s).
//!
//! Bounded: clients 5 requests per second; 8 MB sent once. Needs root.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use ins_e2e::{Proc, require};
use serde_json::Value;

const PORT: u16 = 8095;

#[test]
fn exfiltration_to_a_new_destination_is_alerted_and_benign_traffic_is_not() {
    let benign: f64 = std::env::var("INS_DETECT_BENIGN_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25.0);
    let learn = 20.0;
    let mut lab = Lab::new("ex");
    let cli = lab.client(2);
    let backend = lab.client(4);
    let sink = lab.client(5);
    let ins = Ins::start(&lab.srv, &[]);
    let dir = ins.run_dir().to_path_buf();
    let total = learn + benign + 20.0;
    let servers = |ns: &str, kind: &str, port: u16| {
        let mut c = in_ns(ns, require("python3"));
        c.arg(helper("servers.py"))
            .args([kind, &port.to_string(), &total.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Proc::spawn(kind, c)
    };
    let _b = servers(&backend, "backend", 9000);
    let _s = servers(&sink, "sink", 9100);
    let trigger = dir.join("exfil-now");
    let mut c = ins.shim_cmd(require("python3"));
    c.arg(helper("app.py"))
        .args([&PORT.to_string(), "10.88.4.2", "9000"])
        .arg(&trigger)
        .args(["10.88.5.2", "9100", &(8u64 << 20).to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("app.stderr")).unwrap());
    let _app = Proc::spawn("app", c);
    let up = ins_e2e::wait_for(Duration::from_secs(15), || {
        let mut c = in_ns(&cli, require("python3"));
        c.arg("-c").arg(format!(
            "import socket; s=socket.create_connection(('10.88.2.1',{PORT}),timeout=2); \
             s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); assert s.recv(12).startswith(b'HTTP/1.0 200')"
        ));
        c.stderr(Stdio::null());
        c.status().ok().filter(|s| s.success()).map(|_| ())
    });
    assert!(
        up.is_some(),
        "the service answers:\n{}",
        ins_e2e::read_lossy(&dir.join("app.stderr"))
    );
    let _detect = ins.detect();
    let t_detect = now();
    let mut g = clients(
        &cli,
        ("10.88.2.1", PORT, "/"),
        &["10.88.2.2".into()],
        total - 5.0,
        0.2,
        &dir.join("c.jsonl"),
    );
    std::thread::sleep(Duration::from_secs_f64(learn + benign));
    let t_exfil = now();
    std::fs::write(&trigger, "go").unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let d = ins.decisions();
    let acts: Vec<&Value> = d
        .iter()
        .filter(|x| matches!(x["decision"].as_str(), Some("alert" | "flag" | "mitigate")))
        .collect();
    let before: Vec<&&Value> = acts
        .iter()
        .filter(|x| x["ts"].as_f64().is_some_and(|t| t < t_exfil))
        .collect();
    let alerts: Vec<&&Value> = acts
        .iter()
        .filter(|x| x["detector"] == "graph" && x["ts"].as_f64().is_some_and(|t| t >= t_exfil))
        .collect();
    let new_dest = alerts
        .iter()
        .find(|x| x["evidence"]["finding"] == "new-destination")
        .and_then(|x| x["ts"].as_f64());
    let ratio = alerts
        .iter()
        .find(|x| x["evidence"]["finding"] == "byte-ratio")
        .and_then(|x| x["ts"].as_f64());
    g.wait_timeout(Duration::from_secs(30));
    let reqs = parse_reqs(&ins_e2e::read_lossy(&dir.join("c.jsonl")));
    println!(
        "benign: {:.0} s ({:.0} s learning) with {} requests ({} ok), {} decisions",
        t_exfil - t_detect,
        learn,
        reqs.iter().filter(|r| r.t0 < t_exfil).count(),
        reqs.iter().filter(|r| r.t0 < t_exfil && r.ok).count(),
        before.len()
    );
    println!(
        "exfiltration: new-destination alert after {}, byte-ratio alert after {}",
        new_dest.map_or("-".into(), |t| format!("{:.2} s", t - t_exfil)),
        ratio.map_or("-".into(), |t| format!("{:.2} s", t - t_exfil))
    );
    for a in &alerts {
        println!("  {}", a["evidence"]);
    }
    assert!(before.is_empty(), "decisions on benign traffic: {before:?}");
    let t = new_dest.expect("the new destination was alerted");
    assert!(t - t_exfil <= 5.0, "alerted within one interval");
    assert!(
        alerts
            .iter()
            .any(|a| a["evidence"].to_string().contains("10.88.5.2")),
        "the alert names the destination"
    );
    assert!(
        reqs.iter().filter(|r| r.ok).count() > 50,
        "the service worked"
    );
}
