//! Socket semantics through INS, each topic a C program (tests/c/*.c) run
//! natively and under the shim; the transcripts must match, and the shim's
//! transcript must show the expected behaviour.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use ins_e2e::*;

fn native(prog: &str, args: &[&str]) -> Output {
    let mut c = Command::new(c_program(prog));
    c.args(args);
    with_nofile(&mut c);
    run(c, Duration::from_secs(60))
}

fn shimmed(ins: &Ins, prog: &str, args: &[&str]) -> Output {
    let mut c = ins.shim_cmd(c_program(prog));
    c.args(args);
    run(c, Duration::from_secs(60))
}

/// Runs natively and under the shim; asserts both succeed, transcripts are
/// equal, and the shim's contains every `expect` line.
fn same_transcript(ins: &Ins, prog: &str, args: &[&str], expect: &[&str]) -> Output {
    let n = native(prog, args);
    assert!(
        n.ok(),
        "{prog} failed natively (test bug or host problem)\n{n}"
    );
    for e in expect {
        assert!(
            n.stdout.lines().any(|l| l == *e),
            "{prog}: native transcript lacks `{e}` (test expectation wrong?)\n{n}"
        );
    }
    let s = shimmed(ins, prog, args);
    let d = diff_lines(&n.stdout, &s.stdout);
    assert!(
        s.ok() && d.is_empty(),
        "{prog} {args:?}: under the shim the transcript differs from native ({} differences):\n{}\n--- shim run\n{s}\n{}",
        d.len(),
        d.join("\n"),
        ins.diagnostics()
    );
    s
}

#[test]
fn udp_self_request_response_v4_v6() {
    let _g = serial();
    let ins = Ins::start(1);
    for f in ["4", "6"] {
        let s = same_transcript(&ins, "udp", &["self", f], &["client: big sendto 1399"]);
        assert!(s.stdout.contains("client: reply 11 \"echo:ping-3\""), "{s}");
        let n = native("udp", &["self", f]);
        let d = diff_lines(&n.stderr, &s.stderr);
        assert!(
            d.is_empty(),
            "udp self {f}: server transcript differs:\n{}",
            d.join("\n")
        );
    }
}

/// Starts `udp server` (native or shimmed) and waits for "server: ready".
fn udp_server(cmd: Command) -> (Proc, BufReader<std::process::ChildStdout>) {
    let mut cmd = cmd;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut p = Proc::spawn("udp server", cmd);
    let mut r = BufReader::new(p.child.stdout.take().unwrap());
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    assert_eq!(l.trim(), "server: ready", "udp server did not start: {l}");
    (p, r)
}

#[test]
fn udp_both_ways_between_shim_and_native() {
    let _g = serial();
    let ins = Ins::start(1);
    for f in ["4", "6"] {
        // Server under the shim, native client.
        let port = free_port().to_string();
        let mut sc = ins.shim_cmd(c_program("udp"));
        sc.args(["server", f, &port, "5"]);
        let (mut sp, mut sout) = udp_server(sc);
        let c = native("udp", &["client", f, &port, "4"]);
        assert!(
            c.ok(),
            "native client of the shimmed UDP server ({f}) failed\n{c}\n{}",
            ins.diagnostics()
        );
        assert_eq!(c.stdout.matches("port-ok=1").count(), 4, "{c}");
        let st = sp.wait_timeout(Duration::from_secs(10));
        let mut rest = String::new();
        sout.read_to_string(&mut rest).unwrap();
        assert!(
            st.map(|s| s.success()).unwrap_or(false),
            "shimmed UDP server did not finish\n{rest}"
        );
        assert!(
            rest.contains("server: got 1399 bytes"),
            "datagram boundary lost: {rest}"
        );
        // Native server, client under the shim.
        let port = free_port().to_string();
        let mut nc = Command::new(c_program("udp"));
        nc.args(["server", f, &port, "5"]);
        let (mut np, _o) = udp_server(nc);
        let c = shimmed(&ins, "udp", &["client", f, &port, "4"]);
        assert!(
            c.ok(),
            "shimmed client of a native UDP server ({f}) failed\n{c}\n{}",
            ins.diagnostics()
        );
        assert_eq!(c.stdout.matches("port-ok=1").count(), 4, "{c}");
        np.wait_timeout(Duration::from_secs(10));
    }
}

#[test]
fn ipv6_listen_and_connect() {
    let _g = serial();
    let ins = Ins::start(1);
    same_transcript(
        &ins,
        "ipv6",
        &[],
        &[
            "accept: fd peer AF_INET6 ::1 port>0 len=28",
            "accept: fd peer AF_INET6 ::ffff:127.0.0.1 port>0 len=28",
            "recv back: 5 pong6",
        ],
    );
    // A shimmed IPv6 server, native client.
    let port = free_port();
    let mut c = ins.shim_cmd(c_program("ipv6"));
    c.args(["server", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut p = Proc::spawn("ipv6 server", c);
    let mut r = BufReader::new(p.child.stdout.take().unwrap());
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    assert_eq!(l.trim(), "server: ready", "{}", ins.diagnostics());
    let addr: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect [::1]");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"world").unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).expect("read reply");
    assert_eq!(got, "hello world");
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("server: accepted peer AF_INET6 ::1 port>0 len=28"),
        "{rest}"
    );
}

#[test]
fn nonblocking_connect_semantics() {
    let _g = serial();
    let ins = Ins::start(1);
    let closed = closed_port().to_string();
    same_transcript(
        &ins,
        "nbconnect",
        &[&closed],
        &[
            "connect: -1 EINPROGRESS",
            "epoll_wait: 1 out=1 err=0 hup=0",
            "connected: getsockopt 0 SO_ERROR=0",
            "refused connect: -1 EINPROGRESS",
            "refused epoll_wait: 1 out=1",
            "refused: getsockopt 0 SO_ERROR=ECONNREFUSED",
            "refused again: getsockopt 0 SO_ERROR=0",
            "refused2 read: -1 ECONNREFUSED",
            "blocking refused: -1 ECONNREFUSED",
            "v6 poll: 1 pollout=1",
        ],
    );
}

#[test]
fn select_poll_epoll_on_ins_fds() {
    let _g = serial();
    let ins = Ins::start(1);
    same_transcript(
        &ins,
        "multiplex",
        &[],
        &[
            "select listener before connect: 0",
            "select listener after connect: 1",
            "epoll LT after partial read: 1 IN ",
            "epoll ET after partial read (no new data): 0",
            "epoll ET new data: 1 IN ",
            "second set sees data: 1",
            "cascade ready: 1",
            "epoll after peer SHUT_WR: 1 IN RDHUP ",
            "client read eof: 0",
        ],
    );
}

#[test]
fn fds_above_1024_with_epoll() {
    let _g = serial();
    let ins = Ins::start(1);
    same_transcript(
        &ins,
        "highfd",
        &["300"],
        &[
            "listener fd above 1024: 1",
            "connected: 300 of 300, both ends above 1024: 300",
            "clients got their echo: 300 of 300",
            "getpeername(3000): 0 AF_INET 127.0.0.1 port>0 len=16",
            "eof event after closing the last reference: 1",
        ],
    );
}

#[test]
fn fork_and_exec_with_ins_sockets() {
    let _g = serial();
    let ins = Ins::start(1);
    same_transcript(
        &ins,
        "forkexec",
        &[],
        &[
            "fork-child accept: fd recv 4 ping",
            "fork-child new socket connect: 0",
            "parent recv: 4 pong child exit 0",
            "exec-child getsockname: 0 AF_INET 127.0.0.1 port>0 len=16",
            "exec-child SO_DOMAIN: 0 AF_INET",
            "exec-child recv: 5 hello",
            "parent got from exec-child: 5 child exit 0",
            "parent eof after exec-child exit: 0",
        ],
    );
}

#[test]
fn concurrent_threads_on_ins_sockets() {
    let _g = serial();
    let ins = Ins::start(1);
    same_transcript(
        &ins,
        "threads",
        &["8", "40"],
        &["echo rounds ok: 320 of 320", "server thread: ok"],
    );
}

/// A listener's port is free again at once after close() (iperf3 -s
/// reopens its listener between tests): 200 rounds of bind, listen, one
/// connection, close; then dual-stack pairs of listeners in both orders.
/// No failure natively, none under the shim.
///
/// Under CPU load this used to hang part-way: `listen()` was answered as
/// soon as one instance listened, while a slower instance still held the
/// previous round's replica, so the client's connection could land there
/// and be closed. The driver now answers `listen()` once every instance
/// released the old listener on that port.
#[test]
fn rebind_after_close_and_dual_stack_pairs() {
    let _g = serial();
    // Two instances: the listener is replicated on both, and each must
    // confirm the close.
    let ins = Ins::start(2);
    let port = free_port().to_string();
    same_transcript(
        &ins,
        "rebind",
        &[&port, "200"],
        &[
            "rebind rounds: 200, failures: 0",
            "dual-stack pairs: 20, failures: 0",
            "bind [::] without V6ONLY after 0.0.0.0: -1 EADDRINUSE",
        ],
    );
}

/// A connected UDP socket written past the shim (raw `syscall(SYS_sendmmsg,
/// …)` as Debian's libuv does, raw `write`, `sendmsg`, `sendto`) reaches
/// its peer, a native echo server, as natively; a raw send on an
/// unconnected socket (no address the driver can see) is counted and
/// logged, never dropped silently.
#[test]
fn raw_syscall_datagrams_on_connected_udp() {
    let _g = serial();
    let ins = Ins::start(1);
    let port = free_port();
    let mut sc = Command::new(c_program("rawudp"));
    sc.args(["server", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut server = Proc::spawn("rawudp server", sc);
    let mut r = BufReader::new(server.child.stdout.take().unwrap());
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    assert_eq!(l.trim(), "server: ready");
    let p = port.to_string();
    same_transcript(
        &ins,
        "rawudp",
        &["client", &p],
        &[
            "raw sendmmsg: 2 -",
            "reply 0: 13 \"echo:mmsg-one\"",
            "reply 0: 14 \"echo:raw-write\"",
            "reply 0: 45 \"echo:0123456789012345678901234567890123456789\"",
            "reply 0: 11 \"echo:hooked\"",
        ],
    );
    let s = shimmed(&ins, "rawudp", &["unconnected", &p]);
    assert!(s.ok(), "{s}");
    let log = std::fs::read_to_string(ins.run_dir().join("driver.log")).unwrap_or_default();
    let ok = wait_for(Duration::from_secs(5), || {
        let log = std::fs::read_to_string(ins.run_dir().join("driver.log")).unwrap_or_default();
        log.contains("no address header on an unconnected socket")
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "the dropped datagram was not logged:\n{log}\n{}",
        ins.diagnostics()
    );
}
