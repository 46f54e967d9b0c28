//! Name resolution through INS (issue 15): the shim's `getaddrinfo`,
//! `gethostbyname*` and `getnameinfo` send their queries over INS sockets
//! to the nameservers of the `resolv.conf` named by `INS_RESOLV_CONF`, so
//! each query is an INS flow to port 53, and a program in an empty network
//! namespace (`ins-ctl run --isolate`) resolves names.
//!
//! The nameserver is a small native Python responder on 127.0.53.X:53
//! (`name.test` → A 127.0.0.1; `big.test` → TC over UDP, 40 A records over
//! TCP; 10.53.0.7 → PTR seven.test; everything else NXDOMAIN) that logs
//! each query; curl, getent, python (`getaddrinfo`, `getnameinfo`) and
//! `tests/c/hostbyname.c` (`gethostbyname*`) resolve through it. The
//! native comparisons run with the same `resolv.conf` bind-mounted over
//! `/etc/resolv.conf` (`unshare -m`), where glibc's own resolver uses it.
//! Needs root (port 53, mount namespaces), python3, curl, getent, unshare.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ins_e2e::*;

const RESPONDER: &str = r#"
import socket, struct, sys, threading
bind, name, addr, log = sys.argv[1], sys.argv[2].lower(), sys.argv[3], sys.argv[4]
out = open(log, "a")
lock = threading.Lock()

def answer(q, tcp):
    i, labels = 12, []
    while i < len(q) and q[i] != 0:
        n = q[i]; labels.append(q[i+1:i+1+n].decode("ascii", "replace")); i += 1 + n
    qname = ".".join(labels).lower()
    qtype = struct.unpack("!H", q[i+1:i+3])[0]
    with lock:
        out.write("QUERY%s %s %d\n" % ("-TCP" if tcp else "", qname, qtype)); out.flush()
    ptr = "7.0.53.10.in-addr.arpa"
    known = qname in (name, "big.test", ptr)
    ips = []
    if qname == name and qtype == 1:
        ips = [addr]
    if qname == "big.test" and qtype == 1:
        ips = ["10.53.0.%d" % k for k in range(1, 41)]
    flags = 0x81
    if qname == "big.test" and not tcp:
        ips, flags = [], 0x83  # TC: ask again over TCP
    an = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(a) for a in ips)
    count = len(ips)
    if qname == ptr and qtype == 12:
        target = b"\x05seven\x04test\x00"
        an, count = b"\xc0\x0c" + struct.pack("!HHIH", 12, 1, 60, len(target)) + target, 1
    hdr = q[:2] + struct.pack("!BBHHHH", flags, 0x80 | (0 if known else 3), 1, count, 0, 0)
    return hdr + q[12:i+5] + an

def tcp_server():
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((bind, 53)); t.listen(16)
    while True:
        c, _ = t.accept()
        try:
            c.settimeout(5)
            n = struct.unpack("!H", c.recv(2, socket.MSG_WAITALL))[0]
            r = answer(c.recv(n, socket.MSG_WAITALL), True)
            c.sendall(struct.pack("!H", len(r)) + r)
        except Exception:
            pass
        c.close()

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((bind, 53))
threading.Thread(target=tcp_server, daemon=True).start()
out.write("READY\n"); out.flush()
while True:
    q, peer = s.recvfrom(4096)
    if len(q) >= 12:
        s.sendto(answer(q, False), peer)
"#;

struct Dns {
    dir: TempDir,
    server: String,
    _proc: Proc,
}

impl Dns {
    fn start() -> Dns {
        let dir = TempDir::new("dns");
        let server = format!("127.0.53.{}", 10 + std::process::id() % 200);
        std::fs::write(dir.path().join("responder.py"), RESPONDER).unwrap();
        std::fs::write(
            dir.path().join("resolv.conf"),
            format!("nameserver {server}\noptions timeout:2 attempts:2\n"),
        )
        .unwrap();
        let mut c = Command::new(require("python3"));
        c.arg(dir.path().join("responder.py"))
            .args([&server, "name.test", "127.0.0.1"])
            .arg(dir.path().join("queries.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("responder.err")).unwrap());
        let proc = Proc::spawn("dns responder", c);
        let log = dir.path().join("queries.log");
        let up = wait_for(Duration::from_secs(10), || {
            read_lossy(&log).contains("READY").then_some(())
        });
        assert!(
            up.is_some(),
            "DNS responder on {server}:53 did not start (needs root)\n{}",
            read_lossy(&dir.path().join("responder.err"))
        );
        Dns {
            dir,
            server,
            _proc: proc,
        }
    }

    fn resolv(&self) -> std::path::PathBuf {
        self.dir.path().join("resolv.conf")
    }

    fn queries(&self, name: &str) -> usize {
        read_lossy(&self.dir.path().join("queries.log"))
            .lines()
            .filter(|l| l.starts_with(&format!("QUERY {name} ")))
            .count()
    }

    /// `ARGV` natively with this resolv.conf over /etc/resolv.conf
    /// (arguments are single-quoted for `sh`: no `'` in them).
    fn native(&self, argv: &[&str]) -> Output {
        let mut script = format!(
            "mount --bind '{}' /etc/resolv.conf && exec",
            self.resolv().display()
        );
        for a in argv {
            script += &format!(" '{a}'");
        }
        let mut c = Command::new(require("unshare"));
        c.args(["-m", "sh", "-c", &script]);
        run(c, Duration::from_secs(30))
    }
}

fn ctl(ins: &Ins) -> Command {
    let mut c = Command::new(bin_dir().join("ins-ctl"));
    c.arg("--run-dir").arg(ins.run_dir());
    c
}

/// UDP flows to `server:53` in `ins-ctl flows`.
fn dns_flows(ins: &Ins, server: &str) -> usize {
    let mut f = ctl(ins);
    f.arg("flows");
    let o = run(f, Duration::from_secs(10));
    assert!(o.ok(), "ins-ctl flows\n{o}");
    o.stdout
        .lines()
        .filter(|l| l.contains("udp") && l.contains(&format!("{server}:53")))
        .count()
}

/// TCP flows to `server:53` in `ins-ctl flows`.
fn dns_flows_tcp(ins: &Ins, server: &str) -> usize {
    let mut f = ctl(ins);
    f.arg("flows");
    let o = run(f, Duration::from_secs(10));
    assert!(o.ok(), "ins-ctl flows\n{o}");
    o.stdout
        .lines()
        .filter(|l| l.contains("tcp") && l.contains(&format!("{server}:53")))
        .count()
}

/// `ins-ctl run [--isolate] -- ARGV` with `INS_RESOLV_CONF`.
fn under_ins(ins: &Ins, dns: &Dns, isolate: bool, argv: &[&str]) -> Output {
    let mut c = ctl(ins);
    c.arg("run");
    if isolate {
        c.arg("--isolate");
    }
    c.arg("--").args(argv).env("INS_RESOLV_CONF", dns.resolv());
    run(c, Duration::from_secs(30))
}

fn http_server(root: &Path) -> (Proc, u16) {
    let port = free_port();
    let mut c = Command::new(require("python3"));
    c.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .arg("--directory")
    .arg(root)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let p = Proc::spawn("http.server", c);
    assert!(
        wait_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(10)),
        "http.server did not start"
    );
    (p, port)
}

#[test]
fn names_resolve_through_ins_with_and_without_isolate() {
    let _g = serial();
    let ins = Ins::start(1);
    let dns = Dns::start();
    let root = TempDir::new("dns-www");
    let data = random_bytes(100_000, 53);
    std::fs::write(root.path().join("data.bin"), &data).unwrap();
    let (_http, port) = http_server(root.path());
    let url = format!("http://name.test:{port}/data.bin");
    let curl = require("curl").display().to_string();
    let getent = require("getent").display().to_string();
    let py = require("python3").display().to_string();

    // 1. curl under ins-ctl run: the query is an INS flow and the responder saw it.
    let out = root.path().join("out.bin");
    let o = under_ins(
        &ins,
        &dns,
        false,
        &[&curl, "-sS", "-o", &out.display().to_string(), &url],
    );
    assert!(o.ok(), "curl {url} under INS\n{o}\n{}", ins.diagnostics());
    assert_eq!(std::fs::read(&out).unwrap(), data, "body differs");
    let q = dns.queries("name.test");
    assert!(q >= 1, "the responder saw no query for name.test");
    let flows = dns_flows(&ins, &dns.server);
    assert!(
        flows >= q,
        "{q} queries reached the responder but only {flows} UDP flows to {}:53 went through INS",
        dns.server
    );

    // Control: with INS_DNS=host (glibc's resolver, the same resolv.conf
    // bind-mounted) curl resolves too, but its queries are no INS flows.
    let before = (dns.queries("name.test"), dns_flows(&ins, &dns.server));
    let mut env_args = vec!["env".to_string(), "INS_DNS=host".to_string()];
    for (k, v) in ins.shim_env() {
        env_args.push(format!("{k}={v}"));
    }
    let mut argv: Vec<&str> = env_args.iter().map(String::as_str).collect();
    argv.extend([curl.as_str(), "-sS", "-o", "/dev/null", url.as_str()]);
    let o = dns.native(&argv);
    assert!(o.ok(), "curl under the shim with INS_DNS=host\n{o}");
    assert!(
        dns.queries("name.test") > before.0,
        "INS_DNS=host: no query seen"
    );
    assert_eq!(
        dns_flows(&ins, &dns.server),
        before.1,
        "INS_DNS=host: glibc's queries should not be INS flows"
    );

    // 2. --isolate: getent and curl resolve through INS.
    let o = under_ins(&ins, &dns, true, &[&getent, "ahosts", "name.test"]);
    assert!(
        o.ok()
            && o.stdout
                .lines()
                .any(|l| l.starts_with("127.0.0.1") && l.contains("STREAM name.test")),
        "getent ahosts name.test under --isolate\n{o}\n{}",
        ins.diagnostics()
    );
    let o = under_ins(
        &ins,
        &dns,
        true,
        &[&curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", &url],
    );
    assert!(
        o.ok() && o.stdout == "200",
        "curl under --isolate\n{o}\n{}",
        ins.diagnostics()
    );

    // 3. Errors as natively: NXDOMAIN (curl 6, getent 2) and a name with no
    // address of the family (python's gaierror text).
    for isolate in [false, true] {
        let n = dns.native(&[&curl, "-sS", "http://nope.test/"]);
        let i = under_ins(&ins, &dns, isolate, &[&curl, "-sS", "http://nope.test/"]);
        assert_eq!(n.status.and_then(|s| s.code()), Some(6), "native curl\n{n}");
        assert_eq!(
            i.status.and_then(|s| s.code()),
            Some(6),
            "curl under INS (isolate {isolate})\n{i}"
        );
        assert_eq!(n.stderr, i.stderr);
        let n = dns.native(&[&getent, "ahosts", "nope.test"]);
        let i = under_ins(&ins, &dns, isolate, &[&getent, "ahosts", "nope.test"]);
        assert_eq!(
            n.status.and_then(|s| s.code()),
            Some(2),
            "native getent\n{n}"
        );
        assert_eq!(
            i.status.and_then(|s| s.code()),
            Some(2),
            "getent under INS (isolate {isolate})\n{i}"
        );
        let script = "import socket\ntry:\n    print(socket.getaddrinfo(\"name.test\", 80, socket.AF_INET6))\nexcept socket.gaierror as e:\n    print(e)";
        let n = dns.native(&[&py, "-c", script]);
        let i = under_ins(&ins, &dns, isolate, &[&py, "-c", script]);
        assert!(n.ok() && n.stdout.contains("-5"), "native python\n{n}");
        assert_eq!(
            n.stdout, i.stdout,
            "python AF_INET6 under INS (isolate {isolate})\n{i}"
        );
    }
    assert!(
        dns.queries("nope.test") >= 4,
        "NXDOMAIN queries did not reach the responder"
    );

    // 4. A truncated UDP answer is asked again over TCP (an INS TCP flow
    // to port 53): the 40 addresses as natively.
    let before = dns_flows_tcp(&ins, &dns.server);
    let n = dns.native(&[&getent, "ahostsv4", "big.test"]);
    assert!(
        n.ok() && n.stdout.contains("10.53.0.40"),
        "native getent big.test\n{n}"
    );
    for isolate in [false, true] {
        let i = under_ins(&ins, &dns, isolate, &[&getent, "ahostsv4", "big.test"]);
        assert_eq!(
            n.stdout, i.stdout,
            "getent ahostsv4 big.test under INS (isolate {isolate})\n{i}"
        );
    }
    assert!(
        dns_flows_tcp(&ins, &dns.server) >= before + 2,
        "no TCP flows to {}:53 for the truncated answers",
        dns.server
    );

    // 5. gethostbyname, gethostbyname2, gethostbyname_r, gethostbyaddr,
    // gethostbyaddr_r: the same lines as natively (addresses, h_errno,
    // ERANGE for a tiny buffer), for a DNS name, NXDOMAIN, a hosts-file
    // name, numeric ones, a PTR, an address without PTR.
    let hbn = c_program("hostbyname").display().to_string();
    let names = [
        "name.test",
        "nope.test",
        "localhost",
        "10.1",
        "10.53.0.7",
        "10.53.0.8",
        "127.0.0.1",
    ];
    let mut argv = vec![hbn.as_str()];
    argv.extend(names);
    let n = dns.native(&argv);
    assert!(
        n.ok() && n.stdout.contains("name=name.test type=2 len=4 127.0.0.1"),
        "native\n{n}"
    );
    let flows_before = dns_flows(&ins, &dns.server);
    for isolate in [false, true] {
        let i = under_ins(&ins, &dns, isolate, &argv);
        assert_eq!(
            n.stdout, i.stdout,
            "hostbyname under INS (isolate {isolate})\n{i}"
        );
    }
    assert!(
        dns_flows(&ins, &dns.server) > flows_before,
        "gethostbyname* made no INS flow to {}:53",
        dns.server
    );

    // 6. No answer (nothing listens at the nameserver): EAI_AGAIN, as natively.
    let dead = dns.dir.path().join("dead.conf");
    std::fs::write(
        &dead,
        "nameserver 127.0.54.251\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let script = "import socket\ntry:\n    print(socket.getaddrinfo(\"x.test\", 80))\nexcept socket.gaierror as e:\n    print(e)";
    let mut c = Command::new(require("unshare"));
    c.args(["-m", "sh", "-c"]).arg(format!(
        "mount --bind '{}' /etc/resolv.conf && exec '{py}' -c '{script}'",
        dead.display()
    ));
    let n = run(c, Duration::from_secs(30));
    assert!(
        n.ok() && n.stdout.contains("-3"),
        "native, dead nameserver\n{n}"
    );
    let mut c = ctl(&ins);
    c.args(["run", "--isolate", "--", &py, "-c", script])
        .env("INS_RESOLV_CONF", &dead);
    let i = run(c, Duration::from_secs(30));
    assert_eq!(n.stdout, i.stdout, "dead nameserver under INS\n{i}");

    // 7. getnameinfo: PTR through INS, NXDOMAIN with and without
    // NI_NAMEREQD, as natively.
    let script = "import socket\nfor a, f in ((\"10.53.0.7\", 0), (\"10.53.0.8\", 0), (\"10.53.0.8\", socket.NI_NAMEREQD), (\"127.0.0.1\", 0)):\n    try:\n        print(socket.getnameinfo((a, 80), f))\n    except socket.gaierror as e:\n        print(e)";
    let n = dns.native(&[&py, "-c", script]);
    assert!(
        n.ok() && n.stdout.contains("seven.test"),
        "native getnameinfo\n{n}"
    );
    let before = dns.queries("7.0.53.10.in-addr.arpa");
    for isolate in [false, true] {
        let i = under_ins(&ins, &dns, isolate, &[&py, "-c", script]);
        assert_eq!(
            n.stdout, i.stdout,
            "getnameinfo under INS (isolate {isolate})\n{i}"
        );
    }
    assert!(
        dns.queries("7.0.53.10.in-addr.arpa") >= before + 2,
        "no PTR queries seen"
    );
}
