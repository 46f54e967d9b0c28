//! Mitigations reach every instance (and later ones); `run --isolate`
//! reaches the network only through INS.
mod common;

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn wait_two_fresh(ins: &Ins, gone_pid: u64) {
    let t0 = Instant::now();
    loop {
        let l = ins.list();
        if l.len() == 2
            && l.iter()
                .all(|i| i["pid"].as_u64() != Some(gone_pid) && i["heartbeat"] == true)
        {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "no respawn: {l:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn block_reaches_every_instance_and_is_replayed_to_new_ones() {
    let mut ins = Ins::new("block");
    ins.ok(&["up", "--instances", "2"]);
    let port = free_port();
    ins.serve(port);
    let out = ins.ok(&["block", "127.0.0.0/8"]);
    assert!(out.contains("applied on 2 instance(s)"), "{out}");
    // A replacement instance gets the standing block too.
    let victim = ins.list()[0]["pid"].as_u64().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_two_fresh(&ins, victim);
    let accepted = |ins: &Ins| -> u64 {
        ins.list()
            .iter()
            .map(|i| i["accepted"].as_u64().unwrap_or(0))
            .sum()
    };
    let before = accepted(&ins);
    for i in 0..20 {
        assert!(get(port).is_err(), "fetch {i} passed a block");
    }
    assert_eq!(
        accepted(&ins),
        before,
        "blocked connections reached the app"
    );
    let st = ins.status();
    assert_eq!(
        st["mitigations"],
        Value::Array(vec![serde_json::json!({"block": "127.0.0.0/8"})])
    );
    ins.ok(&["unblock", "127.0.0.0/8"]);
    for i in 0..20 {
        get(port).unwrap_or_else(|e| panic!("fetch {i} after unblock: {e}"));
    }
}

#[test]
fn isolated_run_reaches_the_network_only_through_ins() {
    let ins = Ins::new("isolate");
    ins.ok(&["up", "--instances", "1"]);
    // A native server on the host's loopback.
    let srv = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = srv.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in srv.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nhi\n");
        }
    });
    let url = format!("http://127.0.0.1:{port}/");
    let o = ins.ctl(&["run", "--isolate", "--", "curl", "-s", "-m", "5", &url]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\n");
    // The same without INS: the namespace has no route to the server.
    let o = std::process::Command::new("unshare")
        .args(["-n", "--", "curl", "-s", "-m", "2", &url])
        .output()
        .unwrap();
    assert!(!o.status.success(), "the namespace is not isolated");
    // The fetch is a flow of the instance.
    let until = Instant::now() + Duration::from_secs(3);
    while !ins.ok(&["flows"]).contains(&format!("127.0.0.1:{port}")) {
        assert!(Instant::now() < until, "no flow for the isolated fetch");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn flows_follow_streams_new_records() {
    let mut ins = Ins::new("follow");
    ins.ok(&["up", "--instances", "1"]);
    let port = free_port();
    ins.serve(port);
    let mut child = std::process::Command::new(ctl_bin())
        .arg("--run-dir")
        .arg(&ins.dir)
        .args(["flows", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    // Let it subscribe, then make a flow.
    std::thread::sleep(Duration::from_millis(300));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mine = s.local_addr().unwrap().to_string();
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
    let mut r = Vec::new();
    s.read_to_end(&mut r).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    let found = loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let v: Value = serde_json::from_str(&l).unwrap();
                if v["remote"] == mine.as_str() && v["state"] == "closed" {
                    break v;
                }
            }
            Err(_) => panic!("no streamed flow record for {mine}"),
        }
    };
    assert_eq!(found["proto"], "tcp");
    assert!(found["bytes_out"].as_u64().unwrap() > 0);
    let _ = child.kill();
    let _ = child.wait();
}
