//! `make install` (issue 15, "install like a daemon"), run for real from
//! the repository with the binaries of this test build (`BUILD_DIR`):
//!
//! * into a `DESTDIR` with `PREFIX=/usr`: the tree holds the five programs
//!   (executable), `lib/ins/libshim.so`, a man page per program (sections
//!   8 and 1) that groff renders without a warning, the docs and the
//!   systemd unit with `@BINDIR@` replaced; every installed program
//!   answers `--version` (its name and the workspace version) and
//!   `--help`;
//! * into a `PREFIX` of its own (no `DESTDIR`, so the unit's paths exist):
//!   `systemd-analyze verify` accepts the unit, man pages included
//!   (`MANPATH`), and rejects a copy with a relative `ExecStart` (the
//!   check can fail); the installed `ins-ctl up` starts the installed
//!   driver, which spawns the installed `ins`, and the installed
//!   `ins-ctl run` finds `libshim.so` in `../lib/ins`: a client run with
//!   it reaches a native server through INS (a flow in `ins-ctl flows`).
//!
//! Needs make, python3, groff (groff-base), systemd-analyze (systemd).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ins_e2e::*;

const PROGRAMS: [(&str, u8); 5] = [
    ("ins-driver", 8),
    ("ins", 8),
    ("ins-ctl", 1),
    ("ins-flow", 1),
    ("ins-detect", 1),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `make install-files VARS…` from the repository.
fn make_install(vars: &[String]) {
    for (p, _) in PROGRAMS {
        assert!(
            bin_dir().join(p).is_file(),
            "{} missing: cargo build --release -p ins-driver -p ins -p ins-shim -p ins-ctl -p ins-flow -p ins-detect",
            bin_dir().join(p).display()
        );
    }
    let mut c = Command::new(require("make"));
    c.current_dir(repo())
        .args(["-s", "install-files"])
        .arg(format!("BUILD_DIR={}", bin_dir().display()))
        .args(vars);
    let o = run(c, Duration::from_secs(120));
    assert!(o.ok(), "make install-files {vars:?}\n{o}");
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[test]
fn make_install_into_destdir_gives_a_complete_tree() {
    let tmp = TempDir::new("install-destdir");
    let dest = tmp.path().join("root");
    make_install(&[format!("DESTDIR={}", dest.display()), "PREFIX=/usr".into()]);
    let usr = dest.join("usr");
    let version = format!(" {}", env!("CARGO_PKG_VERSION"));
    for (p, section) in PROGRAMS {
        let bin = usr.join("bin").join(p);
        assert!(
            is_executable(&bin),
            "{} not installed executable",
            bin.display()
        );
        let mut c = Command::new(&bin);
        c.arg("--version");
        let o = run(c, Duration::from_secs(10));
        assert!(
            o.ok() && o.stdout.trim() == format!("{p}{version}"),
            "{p} --version\n{o}"
        );
        let mut c = Command::new(&bin);
        c.arg("--help");
        let o = run(c, Duration::from_secs(10));
        assert!(
            o.ok() && o.stdout.contains("Usage:") && o.stdout.contains("--help"),
            "{p} --help\n{o}"
        );
        let man = usr.join(format!("share/man/man{section}/{p}.{section}"));
        let text = read_lossy(&man);
        assert!(
            text.starts_with(&format!(".TH \"{}\" \"{section}\"", p.to_uppercase()))
                && text.contains(".SH OPTIONS"),
            "{} is not a man page of {p}:\n{text}",
            man.display()
        );
        // Every option the program's help names is in its page.
        for opt in o
            .stdout
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 3)
        {
            let opt = opt.trim_end_matches([',', '.', ')']);
            let escaped = opt.replace('-', "\\-");
            assert!(
                text.contains(&escaped),
                "{}: {opt} from --help is missing",
                man.display()
            );
        }
        let mut g = Command::new(require("groff"));
        g.args(["-man", "-Tutf8", "-ww", "-z"]).arg(&man);
        let o = run(g, Duration::from_secs(20));
        assert!(
            o.ok() && o.stderr.trim().is_empty(),
            "groff warns on {}\n{o}",
            man.display()
        );
    }
    assert!(usr.join("lib/ins/libshim.so").is_file(), "libshim.so");
    for doc in ["README.md", "monitor.md", "performance.md"] {
        assert!(usr.join("share/doc/ins").join(doc).is_file(), "doc {doc}");
    }
    let unit = read_lossy(&usr.join("lib/systemd/system/ins-driver.service"));
    assert!(
        unit.contains("ExecStart=/usr/bin/ins-driver ")
            && unit.contains("--ins-bin /usr/bin/ins ")
            && !unit.contains("@BINDIR@"),
        "unit paths not substituted:\n{unit}"
    );
}

/// Runs `ins-ctl down` for the run dir on drop (the driver `up` started).
struct Down(PathBuf, PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(&self.0)
            .arg("--run-dir")
            .arg(&self.1)
            .arg("down")
            .output();
    }
}

#[test]
fn installed_unit_verifies_and_installed_programs_work_together() {
    let _g = serial();
    let tmp = TempDir::new("install-prefix");
    let prefix = tmp.path().join("prefix");
    make_install(&[format!("PREFIX={}", prefix.display())]);
    let unit = prefix.join("lib/systemd/system/ins-driver.service");

    let analyze = require("systemd-analyze");
    let mut c = Command::new(&analyze);
    c.arg("verify")
        .arg(&unit)
        .env("MANPATH", prefix.join("share/man"));
    let o = run(c, Duration::from_secs(60));
    assert!(
        o.ok() && o.stderr.trim().is_empty(),
        "systemd-analyze verify {}\n{o}",
        unit.display()
    );
    // Control: a broken copy is rejected.
    let bad = tmp.path().join("ins-driver-bad.service");
    std::fs::write(
        &bad,
        read_lossy(&unit).replace(
            &format!("ExecStart={}", prefix.join("bin/ins-driver").display()),
            "ExecStart=bin/ins-driver",
        ),
    )
    .unwrap();
    let mut c = Command::new(&analyze);
    c.arg("verify")
        .arg(&bad)
        .env("MANPATH", prefix.join("share/man"));
    let o = run(c, Duration::from_secs(60));
    assert!(
        !o.ok(),
        "systemd-analyze accepted a relative ExecStart\n{o}"
    );

    // The installed programs together: up, run (libshim.so from
    // ../lib/ins), flows, down.
    let ctl = prefix.join("bin/ins-ctl");
    let run_dir = tmp.path().join("run");
    let _down = Down(ctl.clone(), run_dir.clone());
    let mut c = Command::new(&ctl);
    c.arg("--run-dir")
        .arg(&run_dir)
        .args(["up", "--instances", "1"]);
    let o = run(c, Duration::from_secs(60));
    assert!(o.ok(), "installed ins-ctl up\n{o}");
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        use std::io::Write as _;
        let (mut s, _) = server.accept().unwrap();
        s.write_all(b"installed\n").unwrap();
    });
    let mut c = Command::new(&ctl);
    c.arg("--run-dir").arg(&run_dir).args([
        "run",
        "--",
        &require("python3").display().to_string(),
        "-c",
        &format!(
            "import socket\ns=socket.create_connection(('127.0.0.1',{port}))\nprint(s.makefile().readline().strip())"
        ),
    ]);
    let o = run(c, Duration::from_secs(30));
    assert!(
        o.ok() && o.stdout.trim() == "installed",
        "installed ins-ctl run\n{o}\n--- driver.log\n{}",
        read_lossy(&run_dir.join("driver.log"))
    );
    t.join().unwrap();
    let seen = wait_for(Duration::from_secs(10), || {
        let mut c = Command::new(&ctl);
        c.arg("--run-dir").arg(&run_dir).arg("flows");
        let o = run(c, Duration::from_secs(10));
        o.stdout
            .lines()
            .any(|l| l.contains("tcp") && l.contains(&format!("127.0.0.1:{port}")))
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "no flow to 127.0.0.1:{port} through the installed INS\n{}",
        read_lossy(&run_dir.join("driver.log"))
    );
    let mut c = Command::new(&ctl);
    c.arg("--run-dir").arg(&run_dir).arg("down");
    let o = run(c, Duration::from_secs(30));
    assert!(o.ok(), "installed ins-ctl down\n{o}");
}
