//! The instance's sandbox (local mode), with real processes: a driver, an
//! `ins` started as root the way the driver starts it, nginx under the
//! shim and a native client.
//!
//! * From inside: `ins --sandbox-selftest` tries, once sandboxed, to open
//!   and create files, connect to the driver's `ctl.sock`, `shim.sock` and
//!   `instance.sock`, ptrace the driver and exec `/bin/true`; each must be
//!   refused (`EPERM`/`EACCES`), while a TCP socket must still work.
//! * From outside: `/proc/PID/status` of the instance shows a non-root
//!   uid/gid, no capabilities (effective, permitted, bounding), no_new_privs
//!   and seccomp filter mode.
//! * The sandboxed instance still serves nginx byte for byte.
//! * Control: with `--no-sandbox` the same self-test reports the actions
//!   allowed and the status shows root, so the checks above can fail.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ins_e2e::*;

/// The forbidden actions the self-test reports, in order.
const FORBIDDEN: [&str; 8] = [
    "open /etc/passwd",
    "open /proc/self/status",
    "create /tmp file",
    "connect ctl.sock",
    "connect shim.sock",
    "connect instance.sock",
    "ptrace driver",
    "exec /bin/true",
];

/// Starts an `ins` with `args` against `ins`'s driver, its stdout in
/// `out`; waits until it joined.
fn spawn_instance(ins: &Ins, id: u32, out: &Path, args: &[&str]) -> Proc {
    let before = ins.driver_log().matches("instance joined").count();
    let mut cmd = Command::new(&bins().ins);
    cmd.arg("--driver")
        .arg(ins.run_dir().join("instance.sock"))
        .arg("--instance-id")
        .arg(id.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).expect("stdout file"))
        .stderr(
            std::fs::File::create(ins.run_dir().join(format!("ins-{id}.log"))).expect("ins log"),
        );
    with_nofile(&mut cmd);
    let p = Proc::spawn(&format!("ins #{id}"), cmd);
    let joined = wait_for(Duration::from_secs(10), || {
        (ins.driver_log().matches("instance joined").count() > before).then_some(())
    });
    assert!(
        joined.is_some(),
        "instance {id} did not join\n{}",
        ins.diagnostics()
    );
    p
}

/// The self-test's outcome per action: `Ok(())` allowed, `Err(errno)`.
fn outcomes(text: &str) -> HashMap<String, Result<(), i32>> {
    text.lines()
        .filter_map(|l| {
            let l = l.strip_prefix("sandbox-selftest ")?;
            let (action, rest) = l.split_once(": ")?;
            let r = if rest.starts_with("ALLOWED") {
                Ok(())
            } else {
                let n = rest.strip_prefix("refused errno=")?;
                let n: String = n.chars().take_while(char::is_ascii_digit).collect();
                Err(n.parse().ok()?)
            };
            Some((action.to_string(), r))
        })
        .collect()
}

/// `name:` fields of /proc/PID/status.
fn status(pid: u32) -> HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc/PID/status")
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// /proc/PID/status once the sandbox is in force (its seccomp filter is
/// installed last), or as it is after 10 s.
fn sandboxed_status(pid: u32) -> HashMap<String, String> {
    wait_for(Duration::from_secs(10), || {
        let st = status(pid);
        (st.get("Seccomp").map(String::as_str) == Some("2")).then_some(st)
    })
    .unwrap_or_else(|| status(pid))
}

fn is_root() -> bool {
    status(std::process::id()).get("Uid").map(String::as_str) == Some("0\t0\t0\t0")
}

#[test]
fn sandboxed_instance_cannot_open_exec_ptrace_or_reach_the_driver() {
    let _g = serial();
    if !is_root() {
        eprintln!("SKIP: the sandbox switches user only when the instance starts as root");
        return;
    }
    let mut ins = Ins::start(0);
    let out = ins.run_dir().join("selftest.out");
    let mut p = spawn_instance(&ins, 1, &out, &["--sandbox-selftest"]);
    let text = wait_for(Duration::from_secs(10), || {
        let t = read_lossy(&out);
        t.contains("sandbox-selftest done").then_some(t)
    })
    .unwrap_or_else(|| {
        panic!(
            "no self-test report\nstdout:\n{}\n{}",
            read_lossy(&out),
            ins.diagnostics()
        )
    });
    let got = outcomes(&text);
    for action in FORBIDDEN {
        match got.get(action) {
            Some(Err(e)) => assert!(
                [libc::EPERM, libc::EACCES].contains(e),
                "{action}: refused with errno {e}, want EPERM or EACCES\n{text}"
            ),
            other => panic!("{action}: {other:?}, want refused\n{text}"),
        }
    }
    assert_eq!(
        got.get("tcp socket (must be allowed)"),
        Some(&Ok(())),
        "a TCP socket must still work\n{text}"
    );
    assert!(p.alive(), "the instance died\n{}", ins.diagnostics());

    // From outside.
    let st = status(p.pid());
    for (k, want) in [
        // CAP_NET_BIND_SERVICE only (the default --sandbox-low-ports).
        ("CapEff", "0000000000000400"),
        ("CapPrm", "0000000000000400"),
        ("CapInh", "0000000000000000"),
        ("CapBnd", "0000000000000400"),
        ("CapAmb", "0000000000000000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
    ] {
        assert_eq!(st.get(k).map(String::as_str), Some(want), "{k}: {st:?}");
    }
    for k in ["Uid", "Gid"] {
        let ids = st.get(k).expect(k);
        assert!(
            ids.split_whitespace().all(|id| id != "0"),
            "{k} {ids}: an id is still root"
        );
    }
    let log = read_lossy(&ins.run_dir().join("ins-1.log"));
    assert!(log.contains("sandbox applied"), "{log}");

    // It still serves: nginx under the shim, a native client.
    ins.instances.push(p);
    let ng = Nginx::start(
        Some(&ins),
        &NginxOpts {
            big_files: false,
            ..NginxOpts::default()
        },
    );
    for _ in 0..20 {
        let r = http_get(ng.addr(), "/small.html", Duration::from_secs(10)).unwrap_or_else(|e| {
            panic!(
                "GET through the sandboxed instance: {e}\n{}\n{}",
                ng.diagnostics(),
                ins.diagnostics()
            )
        });
        assert_eq!(r.status, 200);
        assert_eq!(r.body, ng.file("small.html"));
    }
    let pid = ins.instance_pids()[0];
    assert!(
        tcp_sockets_of(&[pid])
            .iter()
            .any(|l| l.starts_with("LISTEN") && l.contains(&format!(":{} ", ng.port))),
        "nginx's listener is not on the sandboxed instance"
    );
    assert!(ins.driver_alive(), "driver died");
}

/// The control: without the sandbox the same self-test sees its actions
/// allowed (the instance then execs /bin/true and exits) and the status
/// shows root, no seccomp.
#[test]
fn without_the_sandbox_the_same_checks_fail() {
    let _g = serial();
    if !is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let ins = Ins::start(0);
    let out = ins.run_dir().join("selftest.out");
    let mut p = spawn_instance(&ins, 1, &out, &["--no-sandbox"]);
    let st = status(p.pid());
    assert_eq!(st.get("Uid").map(String::as_str), Some("0\t0\t0\t0"));
    assert_eq!(st.get("Seccomp").map(String::as_str), Some("0"));
    p.kill();
    let mut p = spawn_instance(&ins, 2, &out, &["--no-sandbox", "--sandbox-selftest"]);
    let _ = p.wait_timeout(Duration::from_secs(10));
    let text = read_lossy(&out);
    let got = outcomes(&text);
    for action in ["open /etc/passwd", "connect ctl.sock", "connect shim.sock"] {
        assert_eq!(got.get(action), Some(&Ok(())), "{action}\n{text}");
    }
    // exec succeeded: the process became /bin/true, so no exec line.
    assert!(!text.contains("sandbox-selftest done"), "{text}");
    assert!(!p.alive());
}

/// Waits until the driver of `ins` (started with `--ins-bin` and one
/// instance) says its instance joined; that instance's pid (the driver's
/// only child).
fn the_spawned_instance(ins: &Ins) -> u32 {
    let joined = wait_for(Duration::from_secs(10), || {
        ins.driver_log().contains("instance joined").then_some(())
    });
    assert!(joined.is_some(), "{}", ins.diagnostics());
    let driver = ins.driver.pid();
    let kids: Vec<u32> = std::fs::read_to_string(format!("/proc/{driver}/task/{driver}/children"))
        .expect("children")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(kids.len(), 1, "{kids:?}");
    kids[0]
}

/// The driver's own instances (`--ins-bin`) are sandboxed by default, as
/// the user given with `--instance-user`.
#[test]
fn driver_spawned_instances_run_as_the_instance_user() {
    let _g = serial();
    if !is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let ins_bin = bins().ins.to_string_lossy().into_owned();
    let mut ins = Ins::start_with(
        0,
        &[
            "--ins-bin",
            &ins_bin,
            "--instances",
            "1",
            "--instance-user",
            "4242:4243",
        ],
    );
    let st = sandboxed_status(the_spawned_instance(&ins));
    assert_eq!(st.get("Seccomp").map(String::as_str), Some("2"), "{st:?}");
    assert_eq!(
        st.get("Uid").map(String::as_str),
        Some("4242\t4242\t4242\t4242")
    );
    assert_eq!(
        st.get("Gid").map(String::as_str),
        Some("4243\t4243\t4243\t4243")
    );
    assert_eq!(
        st.get("CapEff").map(String::as_str),
        Some("0000000000000400")
    );
    assert_eq!(st.get("NoNewPrivs").map(String::as_str), Some("1"));
    assert!(ins.driver_alive());
}

/// A port below 1024 not in use on this machine.
fn free_low_port() -> u16 {
    (900..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 900..1000")
}

/// What a program under the shim gets binding and listening on
/// 127.0.0.1:`port` through `ins`'s only instance: "ok" or the errno.
fn bind_under_shim(ins: &Ins, port: u16) -> String {
    let script = format!(
        "import socket\ns=socket.socket()\ntry:\n    s.bind(('127.0.0.1',{port}))\n    s.listen()\n    print('ok')\nexcept OSError as e:\n    print('errno', e.errno)\n"
    );
    let mut c = ins.shim_cmd(require("python3"));
    c.args(["-c", &script]);
    let o = run(c, Duration::from_secs(20));
    assert!(o.ok(), "python3 under the shim\n{o}\n{}", ins.diagnostics());
    o.stdout.trim().to_string()
}

/// By default a sandboxed instance keeps CAP_NET_BIND_SERVICE, and only
/// it, so a port below 1024 binds (as for a server started as root);
/// with `--sandbox-low-ports=false` it has no capability and the bind is
/// refused with EACCES, as Linux refuses an unprivileged program.
#[test]
fn low_ports_need_the_low_ports_option() {
    let _g = serial();
    if !is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let port = free_low_port();
    for (args, cap, want) in [
        (
            &["--sandbox-low-ports=false"][..],
            "0000000000000000",
            format!("errno {}", libc::EACCES),
        ),
        (&[][..], "0000000000000400", "ok".to_string()),
    ] {
        let mut ins = Ins::start(0);
        let out = ins.run_dir().join("stdout");
        let p = spawn_instance(&ins, 1, &out, args);
        let st = sandboxed_status(p.pid());
        for k in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(st.get(k).map(String::as_str), Some(cap), "{args:?} {k}");
        }
        assert_eq!(st.get("Seccomp").map(String::as_str), Some("2"));
        assert_ne!(st.get("Uid").map(String::as_str), Some("0\t0\t0\t0"));
        ins.instances.push(p);
        assert_eq!(bind_under_shim(&ins, port), want, "{args:?}");
    }
}

/// A named network namespace with only loopback up, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("ins-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let st = Command::new(require("ip")).args(&args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        }
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `--instance-netns NAME` (issue 15): the driver's instances run in that
/// namespace, so a program under the shim reaches only its network. A
/// host listener on 127.0.0.1 is out of reach (refused: nothing listens
/// on the namespace's loopback), a listener the program opens is reached
/// from inside the namespace and refused from the host; the instance's
/// `/proc/PID/ns/net` is the namespace's. Control: the same program with
/// instances in the host namespace reaches the host listener.
#[test]
fn instance_netns_puts_the_instances_on_that_network_only() {
    let _g = serial();
    if !is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let ns = Netns::new("inst");
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    let connect = format!(
        "import socket\ns=socket.socket()\ntry:\n    s.connect(('127.0.0.1',{host_port}))\n    print('ok')\nexcept OSError as e:\n    print('errno', e.errno)\n"
    );
    let connect_under = |ins: &Ins| {
        let mut c = ins.shim_cmd(require("python3"));
        c.args(["-c", &connect]);
        let o = run(c, Duration::from_secs(20));
        assert!(o.ok(), "python3 under the shim\n{o}\n{}", ins.diagnostics());
        o.stdout.trim().to_string()
    };
    let ins_bin = bins().ins.to_string_lossy().into_owned();
    let start = |extra: &[&str]| {
        let mut args = vec!["--ins-bin", &ins_bin, "--instances", "1"];
        args.extend_from_slice(extra);
        let ins = Ins::start_with(0, &args);
        let pid = the_spawned_instance(&ins);
        (ins, pid)
    };

    // Control: instances in the host namespace reach the host listener.
    {
        let (ins, _) = start(&[]);
        assert_eq!(connect_under(&ins), "ok");
    }

    let (mut ins, inst) = start(&["--instance-netns", &ns.0]);
    let driver = ins.driver.pid();
    let ino = |p: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).map(|m| m.ino()).unwrap_or(0)
    };
    let inst_ns = ino(&format!("/proc/{inst}/ns/net"));
    assert_eq!(inst_ns, ino(&format!("/run/netns/{}", ns.0)));
    assert_ne!(inst_ns, ino(&format!("/proc/{driver}/ns/net")));

    // The host listener is out of reach.
    assert_eq!(connect_under(&ins), format!("errno {}", libc::ECONNREFUSED));

    // A listener under the shim: reached inside the namespace only.
    let port = free_port();
    let server = format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{port}))\ns.listen()\nprint('listening',flush=True)\nc,_=s.accept()\nc.sendall(b'hello from INS')\nc.close()\n"
    );
    let mut c = ins.shim_cmd(require("python3"));
    c.args(["-c", &server]).stdout(Stdio::piped());
    let mut srv = Proc::spawn("python3 server", c);
    let client = format!(
        "import socket,sys\ntry:\n    s=socket.create_connection(('127.0.0.1',{port}),timeout=5)\n    sys.stdout.write(s.recv(100).decode())\nexcept OSError as e:\n    print('errno', e.errno)\n"
    );
    let listening = wait_for(Duration::from_secs(10), || {
        let mut c = Command::new(require("python3"));
        c.args(["-c", &client]);
        // From the host: refused while the server is up.
        let host = run(c, Duration::from_secs(10));
        let mut c = Command::new(require("ip"));
        c.args(["netns", "exec", &ns.0, "python3", "-c", &client]);
        let inside = run(c, Duration::from_secs(10));
        (inside.stdout.trim() == "hello from INS").then_some(host.stdout.trim().to_string())
    });
    assert_eq!(
        listening.as_deref(),
        Some(format!("errno {}", libc::ECONNREFUSED).as_str()),
        "{}",
        ins.diagnostics()
    );
    srv.wait_timeout(Duration::from_secs(10));
    assert!(ins.driver_alive());
}
