//! Debian's dnsmasq under INS (issue 15): by default dnsmasq listens on the
//! wildcard addresses of both families (`0.0.0.0:P` and `[::]:P` with
//! `IPV6_V6ONLY`, UDP and TCP), which failed under the shim with
//! `EADDRINUSE` before the driver's port table followed Linux's rules, and
//! sets `IP_PKTINFO` / `IPV6_RECVPKTINFO`: it drops a UDP query that comes
//! without the destination address and interface (its control message)
//! and answers with `IP_PKTINFO` / `IPV6_PKTINFO` to pick the reply's
//! source, which INS carries both ways (`ins_protocol::msg::pktinfo`).
//!
//! dnsmasq answers `host.test.example` with 10.1.2.3 from
//! `--address=/test.example/10.1.2.3` (`--no-resolv --no-hosts`, no
//! configuration file, a high port, `--log-queries`), natively first, then
//! under `ins-ctl run`, with native `dig` clients:
//!
//! * default listening (wildcard, both families): it starts under INS,
//!   the four wildcard listeners (UDP and TCP, both families) belong to the
//!   instance, and `dig @127.0.0.1` and `dig @::1` get the answer over UDP
//!   and TCP.
//! * `--bind-interfaces --listen-address=127.0.0.1,::1` (one socket per
//!   address): the same four queries get the answer (UDP over IPv6 needs
//!   `IPV6_PKTINFO` in this mode too), dnsmasq logs each query from the
//!   client's address, the queries are UDP and TCP flows in `ins-ctl
//!   flows`, and dnsmasq owns no host socket.
//!
//! `pktinfo_matches_native` checks the values themselves: a Python program
//! with wildcard-bound UDP sockets of both families, `IP_PKTINFO` /
//! `IPV6_RECVPKTINFO` on, reports the control messages of a datagram sent
//! to 127.0.0.1, 127.0.0.2 and ::1 and answers with a reply whose source
//! its own `sendmsg` control message picks; under INS every value equals
//! the native run's (the interface is the same: the instance shares the
//! network namespace), and so do `getsockopt` of both options and
//! `MSG_CTRUNC` with a control buffer too small.
//!
//! Needs root (dnsmasq drops to its own user), dnsmasq-base,
//! bind9-dnsutils and python3 (`./.ci/install-deps`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use ins_e2e::*;

const NAME: &str = "host.test.example";
const ADDR: &str = "10.1.2.3";

/// `dnsmasq` in the foreground on `port`, logging to `log`; `bound`: one
/// socket per loopback address instead of the wildcard ones.
fn dnsmasq_argv(
    port: u16,
    log: &std::path::Path,
    pid: &std::path::Path,
    bound: bool,
) -> Vec<String> {
    let mut v = vec![
        require("dnsmasq").display().to_string(),
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        format!("--address=/test.example/{ADDR}"),
        format!("--port={port}"),
        "--log-queries".into(),
        format!("--log-facility={}", log.display()),
        format!("--pid-file={}", pid.display()),
    ];
    if bound {
        v.extend([
            "--bind-interfaces".into(),
            "--listen-address=127.0.0.1,::1".into(),
        ]);
    }
    v
}

/// `dig` at `server` over UDP or TCP; the `+short` answer.
fn dig(server: &str, port: u16, tcp: bool) -> Output {
    let mut c = Command::new(require("dig"));
    c.arg(format!("@{server}")).args([
        "-p",
        &port.to_string(),
        NAME,
        "A",
        if tcp { "+tcp" } else { "+notcp" },
        "+tries=2",
        "+time=3",
        "+short",
    ]);
    run(c, Duration::from_secs(30))
}

/// Over TCP to both families, and over UDP to the servers in `udp`, the
/// query must return `ADDR`, and dnsmasq must log each from the client's
/// address.
fn query_all(
    port: u16,
    udp: &[&str],
    what: &str,
    log: &std::path::Path,
    diag: &dyn Fn() -> String,
) {
    let before = read_lossy(log);
    let mut asked: Vec<(&str, bool)> = vec![("127.0.0.1", true), ("::1", true)];
    asked.extend(udp.iter().map(|s| (*s, false)));
    for &(server, tcp) in &asked {
        let o = dig(server, port, tcp);
        assert!(
            o.ok() && o.stdout.trim() == ADDR,
            "{what}: dig @{server} -p {port} {NAME} ({}) should answer {ADDR}\n{o}\n--- dnsmasq log\n{}\n{}",
            if tcp { "TCP" } else { "UDP" },
            read_lossy(log),
            diag()
        );
    }
    // dnsmasq saw each query from the client's address.
    let l = read_lossy(log);
    let new = l.get(before.len()..).unwrap_or_default();
    for from in ["127.0.0.1", "::1"] {
        let want = asked.iter().filter(|(s, _)| *s == from).count();
        let n = new
            .lines()
            .filter(|x| x.contains(&format!("query[A] {NAME} from {from}")))
            .count();
        assert!(
            n >= want,
            "{what}: dnsmasq logged {n} queries from {from} (expected {want})\n{l}"
        );
    }
}

/// Waits for dnsmasq to answer on 127.0.0.1 (over TCP).
fn wait_up(p: &mut Proc, port: u16, log: &std::path::Path, what: &str) {
    let up = wait_for(Duration::from_secs(15), || {
        let o = dig("127.0.0.1", port, true);
        (o.ok() && o.stdout.trim() == ADDR).then_some(())
    });
    assert!(
        up.is_some(),
        "{what}: dnsmasq does not answer on 127.0.0.1:{port} (alive: {})\n{}",
        p.alive(),
        read_lossy(log)
    );
}

/// dnsmasq natively then under INS with the given listening mode; returns
/// what the test needs to look further (the driver, the pid, the port).
struct Run {
    ins: Ins,
    dir: TempDir,
    port: u16,
    proc: Proc,
    log: PathBuf,
    pid_file: PathBuf,
}

impl Run {
    fn start(bound: bool) -> Run {
        let dir = TempDir::new("dnsmasq");
        let port = free_port();
        let mode = if bound { "bound" } else { "wildcard" };
        // Natively: every query answers.
        {
            let log = dir.path().join("native.log");
            let argv = dnsmasq_argv(port, &log, &dir.path().join("native.pid"), bound);
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("native.err")).unwrap());
            let mut p = Proc::spawn("native dnsmasq", c);
            let what = format!("native ({mode})");
            wait_up(&mut p, port, &log, &what);
            query_all(port, &["127.0.0.1", "::1"], &what, &log, &String::new);
        }
        // UDP flows of a server end after an idle time: 1 s here.
        let mut ins = Ins::start(0);
        ins.add_instance_with(&["--udp-idle-s", "1"]);
        let log = dir.path().join("ins.log");
        let pid_file = dir.path().join("ins.pid");
        let argv = dnsmasq_argv(port, &log, &pid_file, bound);
        let mut c = Command::new(bin_dir().join("ins-ctl"));
        c.arg("--run-dir")
            .arg(ins.run_dir())
            .args(["run", "--"])
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("ins.err")).unwrap());
        with_nofile(&mut c);
        let mut proc = Proc::spawn("dnsmasq under INS", c);
        wait_up(&mut proc, port, &log, &format!("under INS ({mode})"));
        let l = read_lossy(&log);
        assert!(
            !l.contains("Address already in use")
                && !l.contains("failed to create listening socket"),
            "dnsmasq under INS logged a bind failure\n{l}"
        );
        Run {
            ins,
            dir,
            port,
            proc,
            log,
            pid_file,
        }
    }

    fn diag(&self) -> String {
        format!(
            "--- dnsmasq stderr\n{}\n{}",
            read_lossy(&self.dir.path().join("ins.err")),
            self.ins.diagnostics()
        )
    }

    /// dnsmasq itself holds no host INET socket (the instance does).
    fn check_no_host_sockets(&mut self) {
        let pid: u32 = read_lossy(&self.pid_file)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("dnsmasq wrote no pid file\n{}", self.diag()));
        let inet = inet_sockets_of(pid);
        assert!(
            inet.is_empty(),
            "dnsmasq under INS holds host sockets: {inet:?}"
        );
        assert!(
            self.proc.alive(),
            "dnsmasq under INS exited\n{}",
            self.diag()
        );
    }
}

#[test]
fn dnsmasq_default_wildcard_listeners_both_families() {
    let _g = serial();
    let mut r = Run::start(false);
    query_all(
        r.port,
        &["127.0.0.1", "::1"],
        "under INS (wildcard)",
        &r.log,
        &|| r.diag(),
    );
    // The wildcard listeners of both families, UDP and TCP, are the
    // instance's.
    let inst = r.ins.instances[0].pid();
    let mut c = Command::new(require("ss"));
    c.args(["-tulnpH", &format!("sport = :{}", r.port)]);
    let ss = run(c, Duration::from_secs(10)).stdout;
    for (proto, local) in [
        ("udp", format!("0.0.0.0:{}", r.port)),
        ("udp", format!("[::]:{}", r.port)),
        ("tcp", format!("0.0.0.0:{}", r.port)),
        ("tcp", format!("[::]:{}", r.port)),
    ] {
        assert!(
            ss.lines().any(|l| l.starts_with(proto)
                && l.contains(&local)
                && l.contains(&format!("pid={inst},"))),
            "no {proto} listener on {local} owned by the instance (pid {inst}):\n{ss}\n{}",
            r.diag()
        );
    }
    r.check_no_host_sockets();
}

#[test]
fn dnsmasq_bound_loopback_udp_and_tcp() {
    let _g = serial();
    let mut r = Run::start(true);
    query_all(
        r.port,
        &["127.0.0.1", "::1"],
        "under INS (bound)",
        &r.log,
        &|| r.diag(),
    );
    // The queries are INS flows: UDP and TCP to port P on both families.
    // A record is made when the flow ends: TCP at the close, UDP after
    // the instance's 1 s idle time.
    let wanted = [
        ("udp", format!("127.0.0.1:{}", r.port)),
        ("udp", format!("[::1]:{}", r.port)),
        ("tcp", format!("127.0.0.1:{}", r.port)),
        ("tcp", format!("[::1]:{}", r.port)),
    ];
    let mut last = String::new();
    let seen = wait_for(Duration::from_secs(15), || {
        let mut f = Command::new(bin_dir().join("ins-ctl"));
        f.arg("--run-dir").arg(r.ins.run_dir()).arg("flows");
        let flows = run(f, Duration::from_secs(10));
        assert!(flows.ok(), "ins-ctl flows\n{flows}");
        last = flows.stdout;
        wanted
            .iter()
            .all(|(proto, local)| {
                last.lines()
                    .any(|x| x.contains(proto) && x.contains(local.as_str()))
            })
            .then_some(())
    });
    println!("ins-ctl flows:\n{last}");
    assert!(
        seen.is_some(),
        "ins-ctl flows lacks one of {wanted:?} within 15 s\n{last}\n{}",
        r.diag()
    );
    r.check_no_host_sockets();
}

/// `tests/fixtures/pktinfo.py`: one `step: value` line per observation.
const PKTINFO_PY: &str = include_str!("../fixtures/pktinfo.py");

/// Steps where INS differs from Linux on purpose, and what it gives.
const PKTINFO_DIFFERS: &[(&str, &str, &str)] = &[(
    "send-ip-ttl",
    // Python's name for errno 95 (EOPNOTSUPP).
    "ENOTSUP",
    "IP_TTL as a sendmsg control message: Linux applies it, INS does not \
     carry it and says so (shim/src/cmsg.rs)",
)];

fn steps(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn pktinfo_matches_native() {
    let _g = serial();
    let ins = Ins::start(1);
    let py = require("python3");
    let mut n = Command::new(&py);
    n.args(["-c", PKTINFO_PY]);
    let native = run(n, Duration::from_secs(60));
    assert!(native.ok(), "pktinfo.py failed natively\n{native}");
    let mut s = ins.shim_cmd(&py);
    s.args(["-c", PKTINFO_PY]);
    let shim = run(s, Duration::from_secs(60));
    println!("native:\n{}\nunder INS:\n{}", native.stdout, shim.stdout);
    let nat = steps(&native.stdout);
    let got = steps(&shim.stdout);
    // The native run is the baseline; check it says what the test is about.
    let find = |v: &[(String, String)], k: &str| {
        v.iter()
            .find(|(s, _)| s == k)
            .map(|(_, x)| x.clone())
            .unwrap_or_else(|| panic!("step {k} missing\n{native}\n{shim}"))
    };
    for (k, want) in [
        ("recv-v4-off", "none ctrunc=False"),
        ("recv-v4-127.0.0.2", "spec_dst=127.0.0.2 addr=127.0.0.2"),
        ("reply-v4-127.0.0.2", "from 127.0.0.2"),
        ("recv-v6", "IPV6_PKTINFO ifindex="),
        ("reply-v6", "from ::1"),
        ("small-control-0", "[] ctrunc=True"),
        ("small-control-24", "ctrunc=True"),
        ("send-ip-pktinfo-13-bytes", "EINVAL"),
        ("send-ipv6-pktinfo-19-bytes", "EINVAL"),
    ] {
        let v = find(&nat, k);
        assert!(v.contains(want), "native {k}: {v} (expected {want})");
    }
    assert!(nat.len() >= 20, "native printed {} steps", nat.len());
    let mut diffs = Vec::new();
    for (k, nv) in &nat {
        let sv = got.iter().find(|(s, _)| s == k).map(|(_, v)| v);
        match (sv, PKTINFO_DIFFERS.iter().find(|(s, _, _)| s == k)) {
            (Some(sv), None) if sv == nv => {}
            (Some(sv), Some((_, want, _))) if sv == want => {}
            (sv, why) => diffs.push(format!(
                "{k}: native {nv}, under INS {}{}",
                sv.map_or("<missing>", |s| s.as_str()),
                why.map_or(String::new(), |(_, w, r)| format!(" (expected {w}: {r})"))
            )),
        }
    }
    assert!(
        diffs.is_empty() && shim.ok() && got.len() == nat.len(),
        "packet information under INS differs from Linux:\n{}\n{shim}\n{}",
        diffs.join("\n"),
        ins.diagnostics()
    );
}

/// TCP and UDP sockets of `pid` in `ss -tuanp`.
fn inet_sockets_of(pid: u32) -> Vec<String> {
    let mut c = Command::new(require("ss"));
    c.args(["-tuanpH"]);
    let o = run(c, Duration::from_secs(10));
    o.stdout
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .map(str::to_string)
        .collect()
}
