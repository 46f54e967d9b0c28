//! `close_range` and `closefrom` under the shim (the fd table follows
//! them, as it follows `close`): a program closes an INS socket with
//! `os.closerange` (CPython calls libc's `close_range`) or with libc's
//! `closefrom`, then `pipe()` (not hooked) hands out the same number. The
//! pipe must work as natively; with a stale table entry the shim took it
//! for the closed, unconnected INS socket (`write` gave `EPIPE`, `read`
//! `ENOTCONN`), and a seccomp-confined child would be killed when the shim
//! asked the driver about it.

use std::process::Command;
use std::time::Duration;

use ins_e2e::*;

const SCRIPT: &str = r#"
import ctypes, os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
fd = s.detach()
os.closerange(fd, fd + 1)
r, w = os.pipe()
print("close_range reused", fd in (r, w))
os.write(w, b"ping")
print(os.read(r, 4).decode())
s2 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
fd2 = s2.detach()
ctypes.CDLL(None).closefrom(fd2)
r2, w2 = os.pipe()
print("closefrom reused", fd2 in (r2, w2))
os.write(w2, b"pong")
print(os.read(r2, 4).decode())
"#;

#[test]
fn closed_ranges_leave_no_stale_ins_entries() {
    let _g = serial();
    let py = require("python3");
    let mut n = Command::new(&py);
    n.args(["-c", SCRIPT]);
    let native = run(n, Duration::from_secs(20));
    assert!(
        native.ok()
            && native.stdout == "close_range reused True\nping\nclosefrom reused True\npong\n",
        "natively (test bug)\n{native}"
    );
    let ins = Ins::start(1);
    let mut c = ins.shim_cmd(&py);
    c.args(["-c", SCRIPT]);
    let o = run(c, Duration::from_secs(20));
    assert_eq!(
        o.stdout,
        native.stdout,
        "under the shim\n{o}\n{}",
        ins.diagnostics()
    );
    assert!(o.ok(), "under the shim\n{o}");
}
