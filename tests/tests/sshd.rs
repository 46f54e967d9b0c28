//! Debian's OpenSSH server under INS with its default `ListenAddress`
//! (issue 15): with no `ListenAddress` line sshd binds `0.0.0.0:P` and then
//! `[::]:P` with `IPV6_V6ONLY`, which failed under the shim with
//! `EADDRINUSE` before the driver's port table followed Linux's rules.
//!
//! sshd runs on a high port with a throw-away ed25519 host key and an
//! authorized client key in a temporary directory (`UsePAM no`,
//! `StrictModes no`, nothing of the host's sshd configuration is read).
//! Natively first (the configuration is valid, both families listen), then
//! under `ins-ctl run`: a native `ssh` client, checking the host key
//! strictly, runs a command over IPv4 and over IPv6 and gets back a
//! random token only the server's file holds, and the addresses sshd saw
//! (`SSH_CONNECTION`). Under INS, sshd itself owns no host TCP socket.
//! Needs root (sshd's privilege separation), openssh-server and
//! openssh-client (`./.ci/install-deps`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ins_e2e::*;

/// The keys, configuration and token of one test run.
struct Setup {
    dir: TempDir,
    port: u16,
    token: String,
}

impl Setup {
    fn new() -> Setup {
        let uid = read_lossy(Path::new("/proc/self/status"))
            .lines()
            .find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|r| r.split_whitespace().next().map(str::to_string))
            })
            .flatten()
            .unwrap_or_default();
        assert_eq!(
            uid, "0",
            "the sshd test needs root (sshd's privilege separation)"
        );
        let dir = TempDir::new("sshd");
        let d = dir.path();
        let keygen = require("ssh-keygen");
        for (name, comment) in [
            ("host_ed25519", "ins-test-host"),
            ("client_ed25519", "ins-test-client"),
        ] {
            let mut c = Command::new(&keygen);
            c.args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(d.join(name));
            let o = run(c, Duration::from_secs(20));
            assert!(o.ok(), "ssh-keygen {name}\n{o}");
        }
        std::fs::copy(d.join("client_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let host_pub = std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap();
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let host_pub = host_pub.join(" ");
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_pub}\n[::1]:{port} {host_pub}\n"),
        )
        .unwrap();
        // No ListenAddress and no AddressFamily: Debian's default, both
        // families on the wildcard addresses.
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\n\
                 HostKey {d}/host_ed25519\n\
                 AuthorizedKeysFile {d}/authorized_keys\n\
                 PidFile {d}/sshd.pid\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 LogLevel VERBOSE\n",
                d = d.display()
            ),
        )
        .unwrap();
        let token = format!(
            "ins-ssh-{:016x}",
            u64::from_le_bytes(
                random_bytes(8, u64::from(std::process::id()))
                    .try_into()
                    .unwrap()
            )
        );
        std::fs::write(d.join("token"), &token).unwrap();
        // sshd refuses to start without its privilege separation directory
        // (Debian's service creates it; no service runs here).
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let sshd = require("/usr/sbin/sshd");
        let mut t = Command::new(&sshd);
        t.arg("-t").arg("-f").arg(d.join("sshd_config"));
        let o = run(t, Duration::from_secs(20));
        assert!(o.ok(), "sshd -t rejects the test configuration\n{o}");
        Setup { dir, port, token }
    }

    /// `sshd -D -e` with this configuration (sshd re-executes itself, so
    /// its path is absolute).
    fn sshd_args(&self) -> Vec<String> {
        vec![
            "/usr/sbin/sshd".into(),
            "-D".into(),
            "-e".into(),
            "-f".into(),
            self.dir.path().join("sshd_config").display().to_string(),
        ]
    }

    fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("sshd.log")
    }

    fn start(&self, cmd: Command, what: &str) -> Proc {
        let mut cmd = cmd;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log()).unwrap());
        let mut p = Proc::spawn(what, cmd);
        let up = wait_for(Duration::from_secs(15), || {
            (wait_tcp(
                ([127, 0, 0, 1], self.port).into(),
                Duration::from_millis(200),
            ) && wait_tcp(
                (std::net::Ipv6Addr::LOCALHOST, self.port).into(),
                Duration::from_millis(200),
            ))
            .then_some(())
        });
        assert!(
            up.is_some(),
            "{what}: sshd does not accept on 127.0.0.1:{p} and [::1]:{p} (alive: {})\n{}",
            p.alive(),
            read_lossy(&self.log()),
            p = self.port
        );
        p
    }

    /// A native `ssh` to `host` running a command that prints the token and
    /// `SSH_CONNECTION`; returns its stdout lines.
    fn ssh(&self, host: &str, what: &str, diag: &dyn Fn() -> String) -> Vec<String> {
        let d = self.dir.path();
        let mut c = Command::new(require("ssh"));
        c.args(["-F", "/dev/null", "-p", &self.port.to_string()])
            .arg("-i")
            .arg(d.join("client_ed25519"))
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=10",
            ])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                d.join("known_hosts").display()
            ))
            .arg(format!("root@{host}"))
            .arg(format!(
                "cat {}; echo; echo \"conn $SSH_CONNECTION\"",
                d.join("token").display()
            ));
        let o = run(c, Duration::from_secs(40));
        assert!(
            o.ok(),
            "{what}: ssh root@{host} -p {} failed\n{o}\n--- sshd log\n{}\n{}",
            self.port,
            read_lossy(&self.log()),
            diag()
        );
        o.stdout.lines().map(str::to_string).collect()
    }

    /// Runs the command over IPv4 and IPv6 and checks the answers.
    fn check_both(&self, what: &str, diag: &dyn Fn() -> String) {
        for (host, local) in [("127.0.0.1", "127.0.0.1"), ("::1", "::1")] {
            let lines = self.ssh(host, what, diag);
            assert_eq!(
                lines.first().map(String::as_str),
                Some(self.token.as_str()),
                "{what}: ssh to {host} did not return the server's token: {lines:?}"
            );
            // SSH_CONNECTION: client address, client port, server address,
            // server port, as sshd sees them.
            let conn: Vec<&str> = lines
                .iter()
                .find_map(|l| l.strip_prefix("conn "))
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            assert!(
                conn.len() == 4
                    && conn[0] == local
                    && conn[2] == local
                    && conn[3] == self.port.to_string(),
                "{what}: over {host} sshd saw SSH_CONNECTION {conn:?}, expected {local} <port> {local} {}",
                self.port
            );
        }
    }
}

impl Setup {
    /// A client that sends its version line, reads sshd's (and the
    /// `KEXINIT` its sandboxed pre-authentication child sends) and closes:
    /// that child reads end-of-file and sshd logs the close (`[preauth]`);
    /// under the shim the child must not need a control connection for it
    /// (its seccomp filter kills on `socket()`). With `reset`, the client
    /// resets instead (`SO_LINGER` 0): the child reads `ECONNRESET` and
    /// sshd logs "Connection reset by" (under the shim the child is
    /// confined, so a hang-up reads `ECONNRESET` without asking the driver:
    /// shim `ops::eof_error`).
    fn preauth_end(&self, reset: bool, what: &str, diag: &dyn Fn() -> String) {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(b"SSH-2.0-OpenSSH_9.2p1 ins-test\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // The version line and a binary packet after it.
        while got.len() < 64 {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        assert!(
            got.starts_with(b"SSH-2.0-") && got.len() >= 64,
            "{what}: sshd sent no version line and key exchange: {:?}",
            String::from_utf8_lossy(&got)
        );
        let port = c.local_addr().unwrap().port();
        if reset {
            reset_on_close(&c);
        }
        drop(c);
        let line = if reset {
            format!("Connection reset by 127.0.0.1 port {port} [preauth]")
        } else {
            format!("Connection closed by 127.0.0.1 port {port} [preauth]")
        };
        let seen = wait_for(Duration::from_secs(20), || {
            read_lossy(&self.log()).contains(&line).then_some(())
        });
        assert!(
            seen.is_some(),
            "{what}: sshd did not log {line:?}\n--- sshd log\n{}\n{}",
            read_lossy(&self.log()),
            diag()
        );
    }
}

/// The listening TCP sockets on `port` (`ss -tlnpH`), one line each.
fn listeners(port: u16) -> Vec<String> {
    let mut c = Command::new(require("ss"));
    c.args(["-tlnpH", &format!("sport = :{port}")]);
    let o = run(c, Duration::from_secs(10));
    o.stdout.lines().map(str::to_string).collect()
}

/// On a loaded machine this used to hang (the ssh client waited for
/// sshd's key exchange): sshd's monitor writes the version line, its
/// forked pre-authentication child the `KEXINIT`, and the kernel ends a
/// read of the driver's end (`SO_PASSCRED`) where the writer changes; the
/// driver took that short read for a drained pair and waited for an edge
/// the already queued `KEXINIT` never made. The seccomp kill of that child
/// (syscall 41) seen then came after, when the test's timeout closed the
/// client: at end-of-file the shim asked the driver for the pending error
/// over a new control connection; a plain end-of-file needs none now, and
/// a confined child reads a reset's hang-up as `ECONNRESET` without one
/// ([`Setup::preauth_end`]).
#[test]
fn sshd_default_listen_address_both_families() {
    let _g = serial();
    let s = Setup::new();
    let argv = s.sshd_args();

    // Natively: both families listen and the command runs over each.
    {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        let mut p = s.start(c, "native sshd");
        let l = listeners(s.port);
        assert!(
            l.iter().any(|l| l.contains(&format!("0.0.0.0:{}", s.port)))
                && l.iter().any(|l| l.contains(&format!("[::]:{}", s.port))),
            "native sshd should listen on 0.0.0.0 and [::]: {l:?}"
        );
        s.check_both("native", &String::new);
        s.preauth_end(false, "native", &String::new);
        s.preauth_end(true, "native", &String::new);
        p.kill();
        let gone = wait_for(Duration::from_secs(10), || {
            listeners(s.port).is_empty().then_some(())
        });
        assert!(gone.is_some(), "native sshd's port stays open");
    }

    // Under INS.
    let ins = Ins::start(1);
    let mut c = Command::new(bin_dir().join("ins-ctl"));
    c.arg("--run-dir")
        .arg(ins.run_dir())
        .args(["run", "--"])
        .args(&argv);
    with_nofile(&mut c);
    let mut p = s.start(c, "sshd under INS");
    let log = read_lossy(&s.log());
    assert!(
        !log.contains("Address already in use") && !log.contains("Cannot bind"),
        "sshd under INS logged a bind failure:\n{log}\n{}",
        ins.diagnostics()
    );
    s.check_both("under INS", &|| ins.diagnostics());
    s.preauth_end(false, "under INS", &|| ins.diagnostics());
    s.preauth_end(true, "under INS", &|| ins.diagnostics());
    // The wildcard listeners of both families belong to the instance, and
    // sshd (the `ins-ctl run` child and its descendants) owns no host TCP
    // socket: the connections came through INS.
    let l = listeners(s.port);
    let inst = ins.instances[0].pid();
    for fam in [format!("0.0.0.0:{}", s.port), format!("[::]:{}", s.port)] {
        assert!(
            l.iter()
                .any(|x| x.contains(&fam) && x.contains(&format!("pid={inst},"))),
            "no listener on {fam} owned by the instance (pid {inst}): {l:?}"
        );
    }
    let sshd_pids: Vec<u32> = std::fs::read_to_string(s.dir.path().join("sshd.pid"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(sshd_pids.len(), 1, "sshd wrote no pid file");
    let held = tcp_sockets_of(&sshd_pids);
    assert!(
        held.is_empty(),
        "sshd under INS holds host TCP sockets: {held:?}"
    );
    assert!(p.alive(), "sshd under INS exited");
    assert!(
        read_lossy(&s.log()).contains("Accepted publickey for root"),
        "sshd's log shows no accepted key\n{}",
        read_lossy(&s.log())
    );
}
