//! `make bench-ins`: throughput and round trips through a real `ins`
//! instance against the same work over plain loopback TCP, in one run.
//!
//! * bulk out: driver → ring → instance → loopback TCP → native reader
//! * bulk in:  native writer → loopback TCP → instance → ring → driver
//! * native:   native writer → loopback TCP → native reader
//! * round trips: 64-byte ping-pong with a native echo server, through the
//!   instance and natively.
//!
//! Sizes: `INS_BENCH_BYTES` (default 1 GiB per bulk run, each run also
//! capped at 15 s), `INS_BENCH_RR_SECS` (default 3 s per round-trip run).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{Driver, Pattern};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib_s(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / t.as_secs_f64()
}

/// A native reader that counts bytes until EOF.
fn sink() -> (SocketAddr, thread::JoinHandle<u64>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return n,
                Ok(k) => n += k as u64,
                Err(e) => panic!("sink read: {e}"),
            }
        }
    });
    (a, h)
}

const CAP: Duration = Duration::from_secs(15);

fn native_bulk(total: u64) -> (u64, Duration) {
    let (a, h) = sink();
    let mut s = TcpStream::connect(a).expect("connect");
    let buf = vec![0x42u8; 1 << 20];
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < total && t0.elapsed() < CAP {
        let n = (total - sent).min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).expect("write");
        sent += n as u64;
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    let got = h.join().expect("sink");
    assert_eq!(got, sent);
    (sent, t0.elapsed())
}

fn instance_bulk_out(d: &mut Driver, total: u64) -> (u64, Duration) {
    let (a, h) = sink();
    let (sock, _) = d.connect_tcp(a);
    let chunk = vec![0x42u8; d.max_data()];
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < total && t0.elapsed() < CAP {
        d.poll_frames();
        let credit = d.send_credit(sock);
        if credit == 0 {
            d.wait(None, Duration::from_millis(5));
            continue;
        }
        let n = ((total - sent).min(credit) as usize).min(chunk.len());
        d.send_data_frame(sock, &chunk[..n]);
        sent += n as u64;
    }
    d.send_eof(sock);
    let got = h.join().expect("sink");
    let t = t0.elapsed();
    assert_eq!(
        got, sent,
        "native reader got every byte sent through the instance"
    );
    assert_eq!(d.close(sock), 0);
    (sent, t)
}

fn instance_bulk_in(d: &mut Driver, total: u64) -> (u64, Duration) {
    let (l, laddr) = d.tcp_listener("127.0.0.1:0".parse().expect("a"), 4);
    let writer = thread::spawn(move || {
        let mut s = TcpStream::connect(laddr).expect("connect");
        let buf = vec![0x24u8; 1 << 20];
        let t0 = Instant::now();
        let mut sent = 0u64;
        while sent < total && t0.elapsed() < CAP {
            let n = (total - sent).min(buf.len() as u64) as usize;
            s.write_all(&buf[..n]).expect("write");
            sent += n as u64;
        }
        s.shutdown(Shutdown::Write).expect("shutdown");
        sent
    });
    let a = d.accept(l, Duration::from_secs(10)).expect("Accepted");
    let t0 = Instant::now();
    let mut got = 0u64;
    // Count and drop bytes in place: the driver's own copying is not what
    // is measured.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if !d.poll_frames() {
            d.wait(None, Duration::from_millis(5));
        }
        got += d.discard(a.sock) as u64;
        if let Some(e) = d.reset_errno(a.sock) {
            panic!("bulk in: reset {e}");
        }
        if d.events(a.sock).contains(&common::Event::Eof) {
            got += d.discard(a.sock) as u64;
            break;
        }
        assert!(Instant::now() < deadline, "bulk in timed out");
    }
    let t = t0.elapsed();
    let sent = writer.join().expect("writer");
    assert_eq!(got, sent);
    assert_eq!(d.close(a.sock), 0);
    assert_eq!(d.close(l), 0);
    (got, t)
}

fn rr_native(echo: SocketAddr, secs: u64) -> (u64, Duration) {
    let mut s = TcpStream::connect(echo).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        s.write_all(&msg).expect("w");
        s.read_exact(&mut back).expect("r");
        n += 1;
    }
    (n, t0.elapsed())
}

fn rr_instance(d: &mut Driver, echo: SocketAddr, secs: u64) -> (u64, Duration) {
    let (sock, _) = d.connect_tcp(echo);
    assert_eq!(
        d.setopt_int(sock, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1),
        0
    );
    let msg = [7u8; 64];
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        d.send_data(sock, &msg);
        let back = d.read_exact(sock, 64, Duration::from_secs(10));
        assert_eq!(back, msg);
        n += 1;
    }
    let t = t0.elapsed();
    assert_eq!(d.close(sock), 0);
    (n, t)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let total = env_u64("INS_BENCH_BYTES", 1 << 30);
    let rr_secs = env_u64("INS_BENCH_RR_SECS", 3);
    let _ = Pattern(0);
    let mut d = Driver::start_with(common::Opts {
        heartbeat_ms: 1000,
        ..common::Opts::default()
    });

    let (nb, nt) = native_bulk(total);
    let (ob, ot) = instance_bulk_out(&mut d, total);
    let (ib, it) = instance_bulk_in(&mut d, total);
    let native = mib_s(nb, nt);
    let out = mib_s(ob, ot);
    let inn = mib_s(ib, it);

    let echo = common::echo_server("127.0.0.1:0".parse().expect("a"));
    let (rn, rt) = rr_native(echo, rr_secs);
    let (ri, rit) = rr_instance(&mut d, echo, rr_secs);
    let rr_n = rn as f64 / rt.as_secs_f64();
    let rr_i = ri as f64 / rit.as_secs_f64();

    println!(
        "ins bench (one instance, loopback, {} MiB cap per bulk run)",
        total >> 20
    );
    println!(
        "  bulk native loopback            {:>9.0} MiB/s  ({} MiB in {:.2?})",
        native,
        nb >> 20,
        nt
    );
    println!(
        "  bulk driver->instance->TCP      {:>9.0} MiB/s  ({} MiB in {:.2?})  ratio {:.2}",
        out,
        ob >> 20,
        ot,
        out / native
    );
    println!(
        "  bulk TCP->instance->driver      {:>9.0} MiB/s  ({} MiB in {:.2?})  ratio {:.2}",
        inn,
        ib >> 20,
        it,
        inn / native
    );
    println!(
        "  64 B round trips native         {:>9.0} /s     (mean {:.1} us)",
        rr_n,
        1e6 / rr_n
    );
    println!(
        "  64 B round trips via instance   {:>9.0} /s     (mean {:.1} us)  ratio {:.2}",
        rr_i,
        1e6 / rr_i,
        rr_i / rr_n
    );
}
