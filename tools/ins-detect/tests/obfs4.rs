//! The traffic-shape strategy on real obfuscated traffic: obfs4 (Debian's
//! `obfs4proxy`, client in a client namespace, server in the server
//! namespace) through INS — the protected program is a TCP forwarder under
//! the shim in front of the obfs4 bridge — against plain HTTP and TLS
//! (nginx under the shim, Debian's default configuration plus a TLS server
//! with a self-signed certificate), `ins-detect` on with its default
//! configuration. At least 200 flows of each kind.
//!
//! Printed: the true-positive rate on obfs4 flows and the false-positive
//! rates on HTTP and TLS flows. Asserted: TPR ≥ 95 %, FPR ≤ 1 % each.
//!
//! Bounded: 220 sequential flows per kind. Needs root.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use ins_e2e::{Proc, TempDir, require, run};

const P_OBFS: u16 = 9443;
const P_HTTP: u16 = 8096;
const P_TLS: u16 = 8444;
const FLOWS: usize = 220;

fn flows_n() -> usize {
    std::env::var("OBFS_FLOWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(FLOWS)
}

#[test]
fn obfs4_is_flagged_plain_http_and_tls_are_not() {
    ensure_tools(&[
        ("obfs4proxy", "obfs4proxy"),
        ("nginx", "nginx-light"),
        ("openssl", "openssl"),
    ]);
    let mut lab = Lab::new("ob");
    let cli = lab.client(2);
    let ins = Ins::start(&lab.srv, &[]);
    let _detect = ins.detect();

    // The bridge: an echo server behind obfs4proxy, both in the server namespace.
    let mut c = in_ns(&lab.srv, require("python3"));
    c.arg(helper("servers.py"))
        .args(["echo", "7901", "300", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _echo = Proc::spawn("echo", c);
    let state = TempDir::new("obfs4s");
    let mut c = in_ns(&lab.srv, require("obfs4proxy"));
    c.env("TOR_PT_MANAGED_TRANSPORT_VER", "1")
        .env("TOR_PT_STATE_LOCATION", state.path())
        .env("TOR_PT_SERVER_TRANSPORTS", "obfs4")
        .env("TOR_PT_SERVER_BINDADDR", "obfs4-127.0.0.1:7900")
        .env("TOR_PT_ORPORT", "127.0.0.1:7901")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut bridge = Proc::spawn("obfs4proxy", c);
    let mut cert = String::new();
    let mut lines = BufReader::new(bridge.child.stdout.take().expect("stdout")).lines();
    for l in lines.by_ref() {
        let l = l.expect("obfs4proxy output");
        if let Some(a) = l.strip_prefix("SMETHOD obfs4 ") {
            let args = a.split_once("ARGS:").expect("ARGS").1;
            cert = args
                .split(',')
                .find_map(|kv| kv.strip_prefix("cert="))
                .expect("cert")
                .to_string();
            break;
        }
        assert!(!l.contains("ERROR"), "obfs4proxy: {l}");
    }
    // Keep reading: obfs4proxy dies of SIGPIPE if its stdout closes.
    std::thread::spawn(move || lines.for_each(drop));

    // The protected program: a forwarder to the bridge, through INS.
    let mut c = ins.shim_cmd(require("python3"));
    c.arg(helper("forward.py"))
        .args([&P_OBFS.to_string(), "127.0.0.1", "7900", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut fwd = Proc::spawn("forward", c);
    let mut l = String::new();
    BufReader::new(fwd.child.stdout.take().expect("stdout"))
        .read_line(&mut l)
        .unwrap();
    assert_eq!(l.trim(), "listening");

    // nginx: plain HTTP and TLS.
    let www = TempDir::new("www");
    std::fs::write(
        www.path().join("index.html"),
        "<html><body>shape test</body></html>\n".repeat(40),
    )
    .unwrap();
    assert!(sh("chmod", &["0755", &www.path().display().to_string()]));
    let pfx = TempDir::new("ngx");
    let conf = nginx_conf(pfx.path(), P_HTTP, www.path());
    let (crt, key) = (pfx.path().join("t.crt"), pfx.path().join("t.key"));
    let mut c = std::process::Command::new(require("openssl"));
    c.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test",
    ])
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&crt);
    assert!(run(c, Duration::from_secs(60)).ok(), "openssl req");
    std::fs::write(
        pfx.path().join("sites/tls"),
        format!(
            "server {{\n\tlisten {P_TLS} ssl;\n\tssl_certificate {};\n\tssl_certificate_key {};\n\
             \troot {};\n\tlocation / {{ try_files $uri $uri/ =404; }}\n}}\n",
            crt.display(),
            key.display(),
            www.path().display()
        ),
    )
    .unwrap();
    let _ngx = nginx(ins.shim_cmd(require("nginx")), &conf, pfx.path());
    let up = ins_e2e::wait_for(Duration::from_secs(15), || {
        let o = run(
            {
                let mut c = in_ns(&cli, require("python3"));
                c.arg(helper("tunnels.py"))
                    .args(["tls", "10.88.2.1", &P_TLS.to_string(), "1"]);
                c
            },
            Duration::from_secs(10),
        );
        o.stdout.contains("\"ok\": true").then_some(())
    });
    assert!(up.is_some(), "nginx TLS serves");

    let flows = |kind: &str, port: u16| -> Vec<serde_json::Value> {
        let mut c = in_ns(&cli, require("python3"));
        c.arg(helper("tunnels.py")).args([
            kind,
            "10.88.2.1",
            &port.to_string(),
            &flows_n().to_string(),
        ]);
        if kind == "obfs4" {
            c.arg(&cert);
        }
        let o = run(c, Duration::from_secs(240));
        assert!(o.ok(), "{kind} flows: {o}");
        o.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let mut made = Vec::new();
    for (kind, port) in [("http", P_HTTP), ("tls", P_TLS), ("obfs4", P_OBFS)] {
        let f = flows(kind, port);
        let ok = f.iter().filter(|v| v["ok"] == true).count();
        made.push((kind, port, ok, f.len()));
    }
    std::thread::sleep(Duration::from_secs(3));

    let d = ins.decisions();
    let flagged = |port: u16| {
        let mut subjects: Vec<&str> = d
            .iter()
            .filter(|x| x["detector"] == "shape")
            .filter(|x| {
                x["evidence"]["local"]
                    .as_str()
                    .is_some_and(|l| l.ends_with(&format!(":{port}")))
            })
            .filter_map(|x| x["subject"].as_str())
            .collect();
        subjects.sort_unstable();
        subjects.dedup();
        subjects.len()
    };
    println!(
        "{:<6} {:>6} {:>8} {:>7}",
        "kind", "flows", "flagged", "rate"
    );
    let mut rates = Vec::new();
    for &(kind, port, ok, n) in &made {
        let f = flagged(port);
        let rate = f as f64 / ok.max(1) as f64;
        println!(
            "{kind:<6} {ok:>6} {f:>8} {:>6.2}%   ({n} attempted)",
            100.0 * rate
        );
        rates.push((kind, ok, rate));
    }
    if let Some(x) = d.iter().find(|x| x["detector"] == "shape") {
        println!("an obfs4 verdict: {}", x["evidence"]["shape"]);
    }
    let tpr = rates[2].2;
    println!(
        "TPR (obfs4) {:.2} %, FPR (HTTP) {:.2} %, FPR (TLS) {:.2} %",
        100.0 * tpr,
        100.0 * rates[0].2,
        100.0 * rates[1].2
    );
    // Decisions of the other detectors (a block of the client's prefix
    // would make the later flows fail): shown when too few completed.
    let others: Vec<String> = d
        .iter()
        .filter(|x| x["detector"] != "shape")
        .map(|x| x.to_string())
        .collect();
    for (kind, ok, _) in &rates {
        assert!(
            *ok >= 200,
            "only {ok} {kind} flows completed; other detectors' decisions ({}):\n{}\nmitigation events: {:?}",
            others.len(),
            others.join("\n"),
            ins.mitigation_events()
        );
    }
    assert!(tpr >= 0.95, "obfs4 TPR {tpr}");
    assert!(rates[0].2 <= 0.01 && rates[1].2 <= 0.01, "FPR {rates:?}");
}
