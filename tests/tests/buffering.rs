//! An INS socket buffers what a loopback TCP socket does.
//!
//! `socat TCP-LISTEN:P,reuseaddr,fork PIPE` echoes through a pipe of its
//! own. It blocks writing that pipe (a write larger than the pipe's free
//! space) whenever its socket stops being writable for a while, and then
//! never drains the pipe: a deadlock, which natively needs a send buffer
//! far below the loopback default (`sndbuf=16384`). An INS socket's app end
//! is a Unix socket, writable only while a quarter of its send buffer is
//! free; with the kernel's default for Unix sockets it turned unwritable
//! after ~50 KB the relay had not picked up yet, and socat hung in 1–4 of 10
//! runs at 1 MB. The driver now gives the app end the buffer a TCP socket
//! autotunes to (`--app-sndbuf`, `net.ipv4.tcp_wmem`'s maximum).
//!
//! The client is native: it sends N bytes, half-closes, reads the echo
//! back; a run that does not finish in 10 s is a hang.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use ins_e2e::*;

/// One echo round trip of `data`; `Err` says how far it got.
fn echo(addr: SocketAddr, data: &[u8]) -> Result<(), String> {
    let t = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, t).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(t)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    let mut sent = 0;
    while sent < data.len() {
        let end = (sent + 65536).min(data.len());
        match s.write(&data[sent..end]) {
            Ok(n) => sent += n,
            Err(e) => return Err(format!("sending: {e} after {sent} bytes")),
        }
    }
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                return Err(format!(
                    "receiving: {e} after {} of {} bytes echoed",
                    got.len(),
                    data.len()
                ));
            }
        }
    }
    if got != data {
        return Err(format!(
            "echo differs: {} bytes back for {}",
            got.len(),
            data.len()
        ));
    }
    Ok(())
}

#[test]
fn socat_echo_under_shim_never_hangs() {
    let _g = serial();
    let ins = Ins::start(1);
    let port = free_port();
    let mut c = ins.shim_cmd(require("socat"));
    c.arg(format!("TCP-LISTEN:{port},reuseaddr,fork"))
        .arg("PIPE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _socat = Proc::spawn("socat", c);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        wait_tcp(addr, Duration::from_secs(10)),
        "socat under the shim did not listen\n{}",
        ins.diagnostics()
    );
    let mut failures = Vec::new();
    for (i, size) in [64 << 10, 256 << 10, 1 << 20, 2 << 20]
        .into_iter()
        .enumerate()
    {
        let data = random_bytes(size, 11 + i as u64);
        let mut bad = 0;
        for run in 0..10 {
            if let Err(e) = echo(addr, &data) {
                bad += 1;
                failures.push(format!("{size} bytes, run {run}: {e}"));
            }
        }
        println!("socat echo of {size} bytes under the shim: {bad} of 10 runs failed");
    }
    assert!(
        failures.is_empty(),
        "{} echo runs failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        ins.diagnostics()
    );
}
