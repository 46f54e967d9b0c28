//! Programs left running under the shim when the driver exits
//! (`ins-ctl down`).
//!
//! Every INS socket's driver end is gone then. A listener must behave as
//! a Linux listener that no connection reaches: never readable, `accept()`
//! waiting. Before the shim kept a copy of each listener's driver end (its
//! `keeper` module), the listener's app end read end-of-file for ever and
//! polled readable, and nginx's workers and sshd spun at 100 % CPU on an
//! `accept()` failing with `EINVAL`; a UDP socket (bound by the program,
//! auto-bound by its first send, or connected) read empty datagrams for
//! ever, and a `select` loop around `recv` spun. New Internet sockets
//! fail with `EAFNOSUPPORT` (fail closed, as documented; `INS_FAIL_OPEN=1`
//! would use the host stack).
//!
//! The bound (under 0.5 s of CPU in 3 s, for the program and its children)
//! is a correctness check, not a speed figure: an idle server uses next to
//! none, a spinning process about 3 s.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ins_e2e::*;

const WINDOW: Duration = Duration::from_secs(3);
const BOUND: Duration = Duration::from_millis(500);

/// `ins-ctl down` on the test's driver; waits until the driver is gone.
fn down(ins: &mut Ins) {
    let mut c = Command::new(bin_dir().join("ins-ctl"));
    c.arg("--run-dir").arg(ins.run_dir()).arg("down");
    let o = run(c, Duration::from_secs(20));
    assert!(o.ok(), "ins-ctl down\n{o}\n{}", ins.diagnostics());
    assert!(
        ins.driver.wait_timeout(Duration::from_secs(10)).is_some(),
        "the driver still runs after ins-ctl down"
    );
}

/// CPU time used by `pids` during [`WINDOW`], and each one's share.
fn cpu_over_window(pids: &[u32]) -> (Duration, String) {
    let before: Vec<Duration> = pids
        .iter()
        .map(|&p| cpu_time(p).unwrap_or_default())
        .collect();
    std::thread::sleep(WINDOW);
    let mut total = Duration::ZERO;
    let mut each = String::new();
    for (&p, b) in pids.iter().zip(before) {
        let used = cpu_time(p).unwrap_or_default().saturating_sub(b);
        total += used;
        each += &format!("pid {p}: {used:?}\n");
    }
    (total, each)
}

/// socket(AF_INET, SOCK_STREAM) in a new program under the shim: the errno
/// it fails with (0 if it succeeds).
fn socket_errno_under_shim(ins: &Ins) -> Output {
    let mut c = ins.shim_cmd(require("python3"));
    c.args([
        "-c",
        "import socket\n\
         try:\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n    print(0)\n\
         except OSError as e:\n    print(e.errno)",
    ]);
    run(c, Duration::from_secs(20))
}

#[test]
fn nginx_stays_idle_after_the_driver_exits() {
    let mut ins = Ins::start(1);
    let opts = NginxOpts {
        workers: 2,
        big_files: false,
        ..NginxOpts::default()
    };
    let mut ng = Nginx::start(Some(&ins), &opts);
    let r = http_get(ng.addr(), "/small.html", Duration::from_secs(5)).expect("GET through INS");
    assert_eq!(r.status, 200);
    // An idle keep-alive connection through INS when the driver goes.
    let mut keep = KeepAlive::connect(ng.addr(), Duration::from_secs(5)).expect("keep-alive");
    assert_eq!(keep.get("/small.html").expect("keep-alive GET").status, 200);

    down(&mut ins);
    // The driver's ends are closed; give the program a moment to react.
    std::thread::sleep(Duration::from_millis(500));
    let master = ng.master.pid();
    let mut pids = vec![master];
    pids.extend(children_of(master));
    assert_eq!(pids.len(), 3, "nginx master and 2 workers: {pids:?}");
    let (used, each) = cpu_over_window(&pids);
    assert!(
        used < BOUND,
        "nginx used {used:?} of CPU in {WINDOW:?} after the driver exited (a busy loop)\n{each}{}",
        ng.diagnostics()
    );
    assert!(ng.master.alive(), "nginx died\n{}", ng.diagnostics());
    let log = ng.error_log();
    assert!(
        !log.contains("accept4() failed"),
        "nginx's accept failed after the driver exited\n{}",
        ng.diagnostics()
    );
    // Nothing listens on the host's port: nginx held no host socket.
    assert!(
        TcpStream::connect_timeout(&ng.addr(), Duration::from_secs(2)).is_err(),
        "a host socket answers on nginx's port"
    );

    // New Internet sockets fail closed, with the errno documented.
    let o = socket_errno_under_shim(&ins);
    assert_eq!(
        o.stdout.trim(),
        libc::EAFNOSUPPORT.to_string(),
        "socket() under the shim with the driver gone\n{o}"
    );
    assert!(o.stderr.contains("INS driver not reachable"), "{o}");

    // nginx still stops gracefully (its workers close their listeners).
    let q = ng.signal("quit");
    assert!(q.ok(), "nginx -s quit\n{q}");
    let st = ng.master.wait_timeout(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "nginx did not exit cleanly on quit: {st:?}\n{}",
        ng.diagnostics()
    );
}

/// sshd (the process from the original report) with a throw-away host key
/// and nothing else of the host's configuration; needs root (privilege
/// separation).
#[test]
fn sshd_stays_idle_after_the_driver_exits() {
    assert_eq!(
        sys_euid(),
        0,
        "the sshd test needs root (sshd's privilege separation)"
    );
    let dir = TempDir::new("sshd-gone");
    let d = dir.path();
    let mut k = Command::new(require("ssh-keygen"));
    k.args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("host"));
    let o = run(k, Duration::from_secs(20));
    assert!(o.ok(), "ssh-keygen\n{o}");
    let port = free_port();
    std::fs::write(
        d.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {h}\nPidFile {p}\nUsePAM no\n",
            h = d.join("host").display(),
            p = d.join("sshd.pid").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");

    let mut ins = Ins::start(1);
    let log = d.join("sshd.log");
    let mut c = ins.shim_cmd("/usr/sbin/sshd");
    c.arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut sshd = Proc::spawn("sshd", c);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let banner = wait_for(Duration::from_secs(15), || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut b = [0u8; 8];
        s.read_exact(&mut b).ok()?;
        // Close as a client that gives up after the banner.
        let _ = s.write_all(b"SSH-2.0-test\r\n");
        Some(b)
    });
    assert_eq!(
        banner.as_ref().map(|b| &b[..]),
        Some(&b"SSH-2.0-"[..]),
        "sshd does not answer through INS\n{}\n{}",
        read_lossy(&log),
        ins.diagnostics()
    );

    down(&mut ins);
    std::thread::sleep(Duration::from_millis(500));
    let (used, each) = cpu_over_window(&[sshd.pid()]);
    assert!(
        used < BOUND,
        "sshd used {used:?} of CPU in {WINDOW:?} after the driver exited (a busy loop)\n{each}{}",
        read_lossy(&log)
    );
    assert!(sshd.alive(), "sshd died\n{}", read_lossy(&log));
    signal_group(sshd.pid(), libc::SIGTERM);
    assert!(
        sshd.wait_timeout(Duration::from_secs(10)).is_some(),
        "sshd did not stop on SIGTERM"
    );
}

fn sys_euid() -> u32 {
    let s = read_lossy(Path::new("/proc/self/status"));
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// A UDP echo server (python3: `select`, then `recvfrom`, as dnsmasq's
/// loop does) bound under the shim.
#[test]
fn udp_server_stays_idle_after_the_driver_exits() {
    let mut ins = Ins::start(1);
    let port = free_port();
    let mut c = ins.shim_cmd(require("python3"));
    c.args([
        "-c",
        "import select, socket, sys\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('127.0.0.1', int(sys.argv[1])))\n\
         while True:\n    \
             select.select([s], [], [])\n    \
             d, a = s.recvfrom(2048)\n    \
             if a:\n        s.sendto(d, a)\n",
        &port.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut server = Proc::spawn("python3 UDP server", c);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let echoed = wait_for(Duration::from_secs(15), || {
        client.send_to(b"ping", ("127.0.0.1", port)).ok()?;
        let mut b = [0u8; 16];
        let (n, _) = client.recv_from(&mut b).ok()?;
        (b[..n] == b"ping"[..]).then_some(())
    });
    assert!(
        echoed.is_some(),
        "the UDP server under the shim does not echo\n{}",
        ins.diagnostics()
    );

    down(&mut ins);
    std::thread::sleep(Duration::from_millis(500));
    let (used, each) = cpu_over_window(&[server.pid()]);
    assert!(
        used < BOUND,
        "the UDP server used {used:?} of CPU in {WINDOW:?} after the driver exited (a busy loop)\n{each}"
    );
    assert!(server.alive(), "the UDP server died");
}

/// A native UDP echo server on 127.0.0.1; returns its port.
fn native_udp_echo() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the echo socket");
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut b = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut b) {
            let _ = s.send_to(&b[..n], from);
        }
    });
    port
}

/// UDP clients (python3) under the shim that never bind: one `connect()`s
/// and `send`s, one `sendto`s (the shim's auto-bind). Each waits for its
/// echo, then loops on `select` and `recv`, as a client waiting for
/// answers does. Before the auto-bind's and the datagram connect's
/// answers carried the keeper, both read empty datagrams for ever once
/// the driver was gone and spun.
#[test]
fn udp_clients_stay_idle_after_the_driver_exits() {
    let mut ins = Ins::start(1);
    let port = native_udp_echo();
    let dir = TempDir::new("udp-clients");
    let mut clients = Vec::new();
    for mode in ["connect", "sendto"] {
        let flag = dir.path().join(mode);
        let mut c = ins.shim_cmd(require("python3"));
        c.args([
            "-c",
            "import select, socket, sys\n\
             port, mode, flag = int(sys.argv[1]), sys.argv[2], sys.argv[3]\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             to = ('127.0.0.1', port)\n\
             if mode == 'connect':\n    s.connect(to)\n\
             while True:\n    \
                 if mode == 'connect':\n        s.send(b'ping')\n    \
                 else:\n        s.sendto(b'ping', to)\n    \
                 r, _, _ = select.select([s], [], [], 0.3)\n    \
                 if r and s.recv(2048) == b'ping':\n        break\n\
             open(flag, 'w').close()\n\
             n = 0\n\
             while True:\n    \
                 select.select([s], [], [])\n    \
                 s.recv(2048)\n    \
                 n += 1\n    \
                 if n == 100:\n        open(flag + '.woke', 'w').close()\n",
            &port.to_string(),
            mode,
        ])
        .arg(&flag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut p = Proc::spawn(&format!("python3 UDP client ({mode})"), c);
        let echoed = wait_for(Duration::from_secs(15), || flag.exists().then_some(()));
        assert!(
            echoed.is_some(),
            "the UDP client ({mode}) under the shim got no echo (alive: {})\n{}",
            p.alive(),
            ins.diagnostics()
        );
        clients.push((mode, p));
    }

    down(&mut ins);
    std::thread::sleep(Duration::from_millis(500));
    let mut found = Vec::new();
    for (mode, p) in &mut clients {
        let (used, each) = cpu_over_window(&[p.pid()]);
        eprintln!("UDP client ({mode}): {used:?} of CPU in {WINDOW:?}");
        found.push((*mode, used, each, p.alive()));
    }
    for (mode, used, each, alive) in found {
        // The echoes of a few extra pings may arrive late; a hundred
        // wake-ups with nothing sent to it are a loop on a dead pair.
        assert!(
            !dir.path().join(format!("{mode}.woke")).exists(),
            "the UDP client ({mode}) woke a hundred times with no datagram for it after the driver exited"
        );
        assert!(
            used < BOUND,
            "the UDP client ({mode}) used {used:?} of CPU in {WINDOW:?} after the driver exited (a busy loop)\n{each}"
        );
        assert!(alive, "the UDP client ({mode}) died");
    }
}

/// Blocking UDP senders (python3 under the shim: connected, `sendto`, and
/// an explicitly bound one) keep sending after the driver exits, as a
/// metrics or syslog client does: each of 20,000 sends must return at once
/// with the datagram's length (lost in a network that is gone, as Linux
/// loses one it cannot deliver). A kept socket's sends used to fill the
/// keeper's queue, which nothing reads, and a blocking send then waited
/// for ever (after a few hundred datagrams).
#[test]
fn udp_senders_never_block_after_the_driver_exits() {
    let mut ins = Ins::start(1);
    let port = native_udp_echo();
    let dir = TempDir::new("udp-senders");
    let mut senders = Vec::new();
    for mode in ["connect", "sendto", "bound"] {
        let flag = dir.path().join(mode);
        let mut c = ins.shim_cmd(require("python3"));
        c.args([
            "-c",
            "import os, select, socket, sys, time\n\
             port, mode, flag = int(sys.argv[1]), sys.argv[2], sys.argv[3]\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             to = ('127.0.0.1', port)\n\
             if mode == 'bound':\n    s.bind(('127.0.0.1', 0))\n\
             if mode == 'connect':\n    s.connect(to)\n\
             send = (lambda b: s.send(b)) if mode == 'connect' else (lambda b: s.sendto(b, to))\n\
             while True:\n    \
                 send(b'ping')\n    \
                 r, _, _ = select.select([s], [], [], 0.3)\n    \
                 if r and s.recv(2048) == b'ping':\n        break\n\
             open(flag, 'w').close()\n\
             while not os.path.exists(flag + '.go'):\n    time.sleep(0.05)\n\
             sent = sum(send(b'x' * 100) for _ in range(20000))\n\
             print('sent', sent, flush=True)\n",
            &port.to_string(),
            mode,
        ])
        .arg(&flag)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let p = Proc::spawn(&format!("python3 UDP sender ({mode})"), c);
        let echoed = wait_for(Duration::from_secs(15), || flag.exists().then_some(()));
        assert!(
            echoed.is_some(),
            "the UDP sender ({mode}) under the shim got no echo\n{}",
            ins.diagnostics()
        );
        senders.push((mode, flag, p));
    }
    down(&mut ins);
    for (_, flag, _) in &senders {
        std::fs::write(flag.with_extension("go"), b"").unwrap();
    }
    for (mode, _, mut p) in senders {
        let status = p.wait_timeout(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "the UDP sender ({mode}) did not finish its sends within 30 s after the driver exited (a send blocked for ever?): {status:?}"
        );
        let mut out = String::new();
        if let Some(o) = p.child.stdout.as_mut() {
            let _ = o.read_to_string(&mut out);
        }
        assert_eq!(out.trim(), "sent 2000000", "UDP sender ({mode})");
    }
}
