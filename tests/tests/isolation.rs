//! Isolation: the program runs under the shim in its own network namespace
//! (`unshare -n`, only loopback) while the driver and instances stay in the
//! host namespace. It still serves and connects through INS, and its own
//! namespace's stack never sees an INET socket of it.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ins_e2e::*;

/// `unshare -n sh -c 'ip link set lo up && exec [env SHIM…] ARGS…'`.
fn in_netns(ins: Option<&Ins>, args: &[String]) -> Command {
    let mut script = String::from("ip link set lo up && exec ");
    if let Some(i) = ins {
        script += "env";
        for (k, v) in i.shim_env() {
            script += &format!(" {k}='{v}'");
        }
        script += " ";
    }
    for a in args {
        script += &format!("'{a}' ");
    }
    let mut c = Command::new(require("unshare"));
    c.args(["-n", "sh", "-c", &script]);
    c
}

/// INET sockets visible in the network namespace of `pid` (from its
/// /proc/PID/net tables: tcp, tcp6, udp, udp6, raw, raw6).
fn netns_inet_sockets(pid: u32) -> Vec<String> {
    let mut v = Vec::new();
    for t in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"] {
        let s = read_lossy(std::path::Path::new(&format!("/proc/{pid}/net/{t}")));
        v.extend(s.lines().skip(1).map(|l| format!("{t}: {}", l.trim())));
    }
    v
}

fn netns_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn program_in_empty_netns_serves_and_connects_only_through_ins() {
    let _g = serial();
    let ins = Ins::start(1);
    let dir = TempDir::new("iso");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let data = random_bytes(3 << 20, 11);
    std::fs::write(root.join("data.bin"), &data).unwrap();
    let py = require("python3").display().to_string();
    let curl = require("curl").display().to_string();

    // 1. Serve: python http.server under the shim inside the netns.
    let port = free_port();
    let mut c = in_netns(
        Some(&ins),
        &[
            py.clone(),
            "-m".into(),
            "http.server".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--directory".into(),
            root.display().to_string(),
        ],
    );
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("py.log")).unwrap());
    let mut srv = Proc::spawn("python in netns", c);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        wait_tcp(addr, Duration::from_secs(10)),
        "python3 http.server (shim, own netns) not reachable from the host ns\n{}\n{}",
        read_lossy(&dir.path().join("py.log")),
        ins.diagnostics()
    );
    let pid = srv.pid();
    assert_ne!(
        netns_of(pid),
        netns_of(std::process::id()),
        "the server is not in its own netns"
    );
    let (o, body) = curl_fetch(
        Command::new(&curl),
        &format!("http://127.0.0.1:{port}/data.bin"),
        &dir.path().join("o1"),
    );
    assert!(
        o.ok() && body == data,
        "fetch from the netns server failed or differs\n{o}"
    );
    let socks = netns_inet_sockets(pid);
    assert!(
        socks.is_empty(),
        "the server's own netns stack holds INET sockets while serving:\n{}",
        socks.join("\n")
    );
    let ss = run(
        {
            let mut c = Command::new(require("nsenter"));
            c.args(["-t", &pid.to_string(), "-n"])
                .arg(require("ss"))
                .arg("-tuanp");
            c
        },
        Duration::from_secs(10),
    );
    assert!(ss.ok(), "nsenter ss failed: {ss}");
    let lines: Vec<&str> = ss.stdout.lines().skip(1).collect();
    assert!(
        lines.is_empty(),
        "ss -tuan inside the netns shows sockets:\n{}",
        ss.stdout
    );
    assert!(srv.alive());
    srv.kill();

    // 2. Connect out: curl under the shim inside a netns, to a native
    // server on the host loopback.
    let port2 = free_port();
    let mut nat = Command::new(&py);
    nat.args([
        "-m",
        "http.server",
        &port2.to_string(),
        "--bind",
        "127.0.0.1",
        "--directory",
    ])
    .arg(&root)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _native = Proc::spawn("native python", nat);
    assert!(wait_tcp(
        ([127, 0, 0, 1], port2).into(),
        Duration::from_secs(10)
    ));
    let url = format!("http://127.0.0.1:{port2}/data.bin");
    // Control: without the shim the netns cannot reach the host server.
    let o = run(
        in_netns(
            None,
            &[
                curl.clone(),
                "-sS".into(),
                "--max-time".into(),
                "5".into(),
                "-o".into(),
                "/dev/null".into(),
                url.clone(),
            ],
        ),
        Duration::from_secs(15),
    );
    assert!(
        !o.ok(),
        "control failed: curl reached the host from the netns without INS\n{o}"
    );
    let out = dir.path().join("o2");
    // Rate-limited so that the connection lives long enough to look at.
    let mut c = in_netns(
        Some(&ins),
        &[
            curl.clone(),
            "-sS".into(),
            "--fail".into(),
            "--limit-rate".into(),
            "1000K".into(),
            "-o".into(),
            out.display().to_string(),
            url.clone(),
        ],
    );
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("curl.log")).unwrap());
    let mut cp = Proc::spawn("curl in netns", c);
    // Look at curl's network namespace all through the transfer; a sample
    // counts only if the process was already in its own namespace (the
    // wrapper starts in the host's) and still running after it was taken.
    let host_ns = netns_of(std::process::id());
    let mut samples = 0;
    let mut seen = Vec::new();
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let ns = netns_of(cp.pid());
        let s = netns_inet_sockets(cp.pid());
        if !cp.alive() {
            break;
        }
        if !ns.is_empty() && ns != host_ns && netns_of(cp.pid()) == ns {
            samples += 1;
            seen.extend(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = cp.wait_timeout(Duration::from_secs(30));
    assert!(
        st.map(|s| s.success()).unwrap_or(false),
        "curl under the shim in a netns failed to fetch from the host: {st:?}\n{}\n{}",
        read_lossy(&dir.path().join("curl.log")),
        ins.diagnostics()
    );
    assert!(
        std::fs::read(&out).unwrap_or_default() == data,
        "curl (netns, shim) fetched different bytes"
    );
    assert!(
        samples > 0,
        "curl finished before its sockets could be inspected (rate limit too high?)"
    );
    assert!(
        seen.is_empty(),
        "curl's own netns stack held INET sockets mid-transfer ({samples} samples):\n{}",
        seen.join("\n")
    );
}
