//! Connection telemetry on the monitor stream (`"type":"conn"`): periodic
//! lines while a connection through INS is open, an `on-demand` line for
//! the `report` command, the `final` line at close, and `report`'s
//! refusals. The connection is real: a python server under the shim, a
//! native client on loopback.
//!
//! Needs `ins` and `libshim.so` beside the test executable (same profile)
//! and python3.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Driver;
use serde_json::Value;

fn next(rx: &mpsc::Receiver<Value>, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) if f(&v) => return v,
            Ok(_) => {}
            Err(_) => panic!("no {what} within 10 s"),
        }
    }
}

fn call(d: &Driver, req: &str) -> Value {
    let mut c = UnixStream::connect(d.dir.join("ctl.sock")).unwrap();
    c.write_all(req.as_bytes()).unwrap();
    let mut l = String::new();
    BufReader::new(c).read_line(&mut l).unwrap();
    serde_json::from_str(&l).unwrap()
}

#[test]
fn connection_telemetry_is_streamed_and_reported_on_demand() {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap();
    let shim = target.join("libshim.so");
    assert!(
        shim.exists(),
        "{} missing: cargo build -p ins-shim",
        shim.display()
    );
    let ins = common::ins_bin().expect("the ins binary (cargo build -p ins)");
    let d = Driver::start(&[
        "--ins-bin",
        ins.to_str().unwrap(),
        "--instances",
        "1",
        "--ins-arg=--telemetry-ms",
        "--ins-arg=200",
    ]);
    // Joined and heartbeating (the balancer's child must be serving).
    common::wait_for(
        || {
            let l = call(&d, "{\"cmd\":\"list\"}\n");
            l["instances"]
                .as_array()
                .is_some_and(|v| v.iter().any(|i| i["heartbeat"] == true))
        },
        "a live instance",
    );

    let mut s = UnixStream::connect(d.dir.join("monitor.sock")).unwrap();
    s.write_all(b"{\"cmd\":\"subscribe\",\"types\":[\"conn\"]}\n")
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["subscribed"], serde_json::json!(["conn"]), "{first}");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in r.lines() {
            let Ok(l) = l else { return };
            let v: Value = serde_json::from_str(&l).expect("JSON line");
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    // "all" does not include conn lines.
    let all = call(&d, "{\"cmd\":\"subscribe\"}\n");
    assert!(
        !all["subscribed"]
            .as_array()
            .unwrap()
            .contains(&"conn".into()),
        "{all}"
    );

    // A server under the shim that reads a request and answers after a pause.
    let mut server = Command::new("python3")
        .args([
            "-c",
            "import socket,time\n\
             s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n\
             print(s.getsockname()[1], flush=True)\n\
             c,_=s.accept(); c.recv(100); time.sleep(0.7); c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nhi'); time.sleep(0.5); c.close()",
        ])
        .env("LD_PRELOAD", &shim)
        .env("INS_SHIM_SOCKET", d.shim_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let Ok(port) = port.trim().parse::<u16>() else {
        let mut e = String::new();
        let _ = server.stderr.take().unwrap().read_to_string(&mut e);
        panic!(
            "the server under the shim did not start: {e}\n{}",
            d.log_text()
        );
    };
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let me = c.local_addr().unwrap().to_string();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();

    let mine = |v: &Value| v["type"] == "conn" && v["remote"] == me.as_str();
    let p = next(&rx, "a periodic line", |v| {
        mine(v) && v["cause"] == "periodic" && v["bytes_in"] == 18
    });
    assert_eq!(p["v"], 1);
    assert_eq!(p["dir"], "in");
    assert_eq!(p["proto"], "tcp");
    assert_eq!(p["bytes_out"], 0, "no response yet: {p}");
    assert!(
        p["first_in_ns"].as_u64().is_some() && p["first_out_ns"].is_null(),
        "{p}"
    );
    assert!(p["peer_window"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(p["sample_in"]["sampled"], 18);
    assert_eq!(p["sample_in"]["printable"], 1.0);
    let flow = p["flow"].as_str().unwrap().to_string();

    // On demand, for this flow.
    let rep = call(&d, &format!("{{\"cmd\":\"report\",\"flow\":\"{flow}\"}}\n"));
    assert_eq!(rep["ok"], true, "{rep}");
    let od = next(&rx, "an on-demand line", |v| {
        mine(v) && v["cause"] == "on-demand"
    });
    assert_eq!(od["flow"], flow.as_str());

    // The response, then the close: the final line has both directions.
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).unwrap();
    assert!(resp.ends_with(b"hi"));
    let fin = next(&rx, "the final line", |v| mine(v) && v["cause"] == "final");
    assert_eq!(fin["bytes_out"], 21, "{fin}");
    let (fi, fo) = (
        fin["first_in_ns"].as_u64().unwrap(),
        fin["first_out_ns"].as_u64().unwrap(),
    );
    assert!(
        fo >= fi + 600_000_000,
        "response ~0.7 s after the request: {fin}"
    );
    let _ = server.wait();

    // Refusals: a malformed flow, an unknown instance, a flow that is gone.
    assert_eq!(
        call(&d, "{\"cmd\":\"report\",\"flow\":\"x\"}\n")["kind"],
        "bad-request"
    );
    assert_eq!(
        call(&d, "{\"cmd\":\"report\",\"flow\":7}\n")["kind"],
        "bad-request"
    );
    assert_eq!(
        call(&d, "{\"cmd\":\"report\",\"flow\":\"99:1\"}\n")["kind"],
        "unknown-instance"
    );
    let gone = call(&d, &format!("{{\"cmd\":\"report\",\"flow\":\"{flow}\"}}\n"));
    assert_eq!(gone["kind"], "failed", "{gone}");
    assert_eq!(call(&d, "{\"cmd\":\"report\"}\n")["ok"], true);
}
