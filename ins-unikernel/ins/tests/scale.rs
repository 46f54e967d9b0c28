//! 10,000 simultaneous connections through one instance, and the
//! instance's memory per connection.
//!
//! Memory is the instance process's `Private_Dirty` from
//! `/proc/PID/smaps_rollup` (pages only this process wrote: its heap,
//! stacks and tables), read once the listener is up and again with every
//! connection accepted and announced. Kernel socket buffers are not in it:
//! they are the host kernel's, the same as for any server. Connection
//! count: `INS_E2E_CONNS` (default 10,000).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Driver, Opts, raise_nofile};

fn private_dirty_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .or_else(|_| std::fs::read_to_string(format!("/proc/{pid}/status")))
        .expect("read /proc");
    let key = if text.contains("Private_Dirty:") {
        "Private_Dirty:"
    } else {
        "VmRSS:"
    };
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .expect("memory line");
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("kB value")
}

#[test]
fn ten_thousand_simultaneous_connections() {
    let conns: usize = std::env::var("INS_E2E_CONNS")
        .ok()
        .map(|v| v.parse().expect("INS_E2E_CONNS"))
        .unwrap_or(10_000);
    let limit = raise_nofile();
    assert!(
        limit as usize > conns + 100,
        "RLIMIT_NOFILE hard limit {limit} is too low for {conns} connections"
    );
    let mut d = Driver::start_with(Opts {
        max_sockets: (conns + 1000) as u32,
        ..Opts::default()
    });
    let (l, laddr) = d.tcp_listener("127.0.0.1:0".parse().expect("a"), 4096);
    // Warm up: one connection through, so lazily built state exists.
    {
        let mut c = common::native_connect(laddr);
        let a = d.accept(l, Duration::from_secs(10)).expect("Accepted");
        c.write_all(b"w").expect("w");
        assert_eq!(d.read_exact(a.sock, 1, Duration::from_secs(10)), b"w");
        assert_eq!(d.close(a.sock), 0);
        let _ = c.read(&mut [0u8; 1]);
    }
    d.pump_for(Duration::from_millis(200));
    let before = private_dirty_kib(d.pid());

    let (tx, rx) = mpsc::channel::<TcpStream>();
    let start = Instant::now();
    let client = thread::spawn(move || {
        for i in 0..conns {
            let s = TcpStream::connect(laddr)
                .unwrap_or_else(|e| panic!("connection {i} of {conns}: {e}"));
            if tx.send(s).is_err() {
                return;
            }
        }
    });
    let mut streams = Vec::with_capacity(conns);
    let mut accepted = Vec::with_capacity(conns);
    let deadline = start + Duration::from_secs(120);
    while accepted.len() < conns {
        assert!(
            Instant::now() < deadline,
            "only {} of {conns} connections accepted in 120 s",
            accepted.len()
        );
        if let Some(a) = d.accept(l, Duration::from_millis(50)) {
            accepted.push(a);
        }
        streams.extend(rx.try_iter());
    }
    client.join().expect("client thread");
    streams.extend(rx.try_iter());
    assert_eq!(streams.len(), conns);
    let setup = start.elapsed();
    d.pump_for(Duration::from_millis(300));
    let ok = d.wait_for(Duration::from_secs(5), |d| {
        d.heartbeats
            .last()
            .is_some_and(|h| h.connections as usize >= conns)
    });
    assert!(
        ok,
        "heartbeat must report {conns} connections: {:?}",
        d.heartbeats.last()
    );
    let after = private_dirty_kib(d.pid());

    // Every connection is live: spot-check data both ways on a sample.
    let by_addr: std::collections::HashMap<_, usize> = streams
        .iter()
        .enumerate()
        .map(|(i, s)| (s.local_addr().expect("local"), i))
        .collect();
    for i in (0..conns).step_by((conns / 50).max(1)) {
        let a = accepted[i];
        let mut s = streams[*by_addr.get(&a.peer).expect("stream for an accepted peer")]
            .try_clone()
            .expect("clone");
        s.write_all(&(i as u32).to_le_bytes()).expect("w");
        let got = d.read_exact(a.sock, 4, Duration::from_secs(10));
        assert_eq!(got, (i as u32).to_le_bytes());
        d.send_data(a.sock, b"ok");
        let mut b = [0u8; 2];
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("to");
        s.read_exact(&mut b).expect("read back");
        assert_eq!(&b, b"ok");
    }
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / conns as f64;
    eprintln!(
        "{conns} connections set up in {setup:.2?}; instance Private_Dirty {before} KiB -> {after} KiB: {per_conn:.0} bytes per connection"
    );
    assert!(
        per_conn < 8192.0,
        "instance memory per connection {per_conn:.0} B exceeds 8 KiB"
    );
    drop(streams);
}
