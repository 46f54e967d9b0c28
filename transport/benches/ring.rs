//! Channel benchmark: two processes, shared-memory rings with eventfd
//! doorbells against a Unix socketpair-style stream, measured in one run and
//! printed side by side.
//!
//! * one-way messages/s, 64 B and 4 KiB payloads, batched (ring: flush every
//!   64 frames; socket: 64 length-prefixed frames per `write`);
//! * bulk GB/s with 64 KiB frames;
//! * round-trip latency p50/p99 of a 64-byte ping-pong: ring with
//!   spin-then-sleep (50 µs spin), ring with pure sleep, socket.
//!
//! The child is this binary re-executed with `INS_BENCH_CHILD` set. Own
//! timing loops (not criterion) because percentiles are needed and each
//! scenario needs a second process. Run: `cargo bench -p ins-transport`.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ins_protocol::hello::{Hello, Role};
use ins_protocol::ring::RingError;
use ins_transport::{ChannelConfig, Endpoint, Error, accept_channel, connect_channel_with};

const CHILD_ENV: &str = "INS_BENCH_CHILD";
const SOCK_ENV: &str = "INS_BENCH_SOCK";
const ARG_ENV: &str = "INS_BENCH_ARG";
const BATCH: usize = 64;
const MAX_FRAME: u32 = 64 << 10;
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));

fn config(spin: Duration) -> ChannelConfig {
    ChannelConfig {
        ring_capacity: 1 << 21,
        max_frame: MAX_FRAME,
        spin,
        ..ChannelConfig::default()
    }
}

fn sock_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ins-bench-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn spawn(role: &str, sock: &Path, arg: &str) -> Child {
    Command::new(std::env::current_exe().expect("bench binary"))
        .env(CHILD_ENV, role)
        .env(SOCK_ENV, sock)
        .env(ARG_ENV, arg)
        .spawn()
        .expect("spawn child")
}

fn finish(mut child: Child) {
    let status = child.wait().expect("wait child");
    assert!(status.success(), "child failed: {status}");
}

// ---------------------------------------------------------------- children

fn child_main(role: &str) {
    let sock = PathBuf::from(std::env::var_os(SOCK_ENV).expect("sock"));
    let arg = std::env::var(ARG_ENV).expect("arg");
    let mut parts = arg.split(',').map(|s| s.parse::<u64>().expect("number"));
    let a = parts.next().unwrap_or(0);
    let b = parts.next().unwrap_or(0);
    match role {
        "ring-send" | "ring-echo" => {
            let spin = if role == "ring-echo" {
                Duration::from_nanos(b)
            } else {
                Duration::from_micros(50)
            };
            let mut ep = connect_channel_with(&sock, Hello::new(Role::Instance), &config(spin))
                .expect("connect");
            if role == "ring-send" {
                ring_send(&mut ep, a as usize, b);
            } else {
                ring_echo(&mut ep, a);
            }
        }
        "sock-send" => sock_send(UnixStream::connect(&sock).expect("connect"), a as usize, b),
        "sock-echo" => sock_echo(UnixStream::connect(&sock).expect("connect"), a),
        other => panic!("unknown role {other}"),
    }
}

/// Sends `count` frames of `size` bytes (arg b reused as count).
fn ring_send(ep: &mut Endpoint, size: usize, count: u64) {
    let frame = vec![0xa5u8; size];
    for i in 0..count {
        match ep.push(&frame) {
            Ok(()) => {}
            Err(Error::Ring(RingError::Full)) => {
                assert!(ep.send_wait(&frame, TIMEOUT).expect("send_wait"));
            }
            Err(e) => panic!("push: {e}"),
        }
        if i % BATCH as u64 == BATCH as u64 - 1 {
            ep.flush().expect("flush");
        }
    }
    ep.flush().expect("flush");
    // Wait for the parent's "done" so our mapping outlives its reads.
    let mut buf = vec![0u8; MAX_FRAME as usize];
    ep.recv(&mut buf, TIMEOUT)
        .expect("done")
        .expect("done in time");
}

fn ring_echo(ep: &mut Endpoint, rounds: u64) {
    let mut buf = vec![0u8; MAX_FRAME as usize];
    for _ in 0..rounds {
        let n = ep
            .recv(&mut buf, TIMEOUT)
            .expect("recv")
            .expect("ping in time");
        ep.send(&buf[..n]).expect("pong");
    }
}

fn sock_send(mut s: UnixStream, size: usize, count: u64) {
    let mut batch = Vec::with_capacity((size + 4) * BATCH);
    for _ in 0..BATCH {
        batch.extend_from_slice(&(size as u32).to_le_bytes());
        batch.extend(std::iter::repeat_n(0xa5u8, size));
    }
    let full = count / BATCH as u64;
    for _ in 0..full {
        s.write_all(&batch).expect("write");
    }
    let rest = (count % BATCH as u64) as usize * (size + 4);
    s.write_all(&batch[..rest]).expect("write");
    let mut done = [0u8; 1];
    s.read_exact(&mut done).expect("done");
}

fn sock_echo(mut s: UnixStream, rounds: u64) {
    let mut buf = [0u8; 64];
    for _ in 0..rounds {
        s.read_exact(&mut buf).expect("read");
        s.write_all(&buf).expect("write");
    }
}

// ---------------------------------------------------------------- parent

/// One-way ring throughput: (messages/s, bytes/s).
fn ring_one_way(size: usize, count: u64) -> (f64, f64) {
    let sock = sock_path("ring1");
    let listener = UnixListener::bind(&sock).expect("bind");
    let child = spawn("ring-send", &sock, &format!("{size},{count}"));
    let mut ep = accept_channel(&listener, &config(Duration::from_micros(50))).expect("accept");
    let _ = std::fs::remove_file(&sock);
    let mut buf = vec![0u8; MAX_FRAME as usize];
    let mut got = 0u64;
    let mut bytes = 0u64;
    assert!(ep.wait_readable(TIMEOUT).expect("wait"));
    let start = Instant::now();
    while got < count {
        if !ep.wait_readable(TIMEOUT).expect("wait") {
            panic!("stalled");
        }
        got += ep
            .recv_batch(&mut buf, 4096, |f| bytes += f.len() as u64)
            .expect("recv") as u64;
    }
    let t = start.elapsed().as_secs_f64();
    ep.send(b"done").expect("done");
    finish(child);
    (count as f64 / t, bytes as f64 / t)
}

/// One-way socket throughput: (messages/s, bytes/s).
fn sock_one_way(size: usize, count: u64) -> (f64, f64) {
    let sock = sock_path("sock1");
    let listener = UnixListener::bind(&sock).expect("bind");
    let child = spawn("sock-send", &sock, &format!("{size},{count}"));
    let (mut s, _) = listener.accept().expect("accept");
    let _ = std::fs::remove_file(&sock);
    let total = count * (size as u64 + 4);
    let mut buf = vec![0u8; 1 << 20];
    let first = s.read(&mut buf).expect("read");
    let start = Instant::now();
    // Parse frame boundaries as a receiver must (length prefix).
    let mut seen = first as u64;
    while seen < total {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "socket closed early");
        seen += n as u64;
    }
    let t = start.elapsed().as_secs_f64();
    s.write_all(&[1]).expect("done");
    finish(child);
    let msgs = (count as f64) * (total - first as u64) as f64 / total as f64;
    (
        msgs / t,
        (total - first as u64) as f64 * size as f64 / (size as f64 + 4.0) / t,
    )
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn ring_rtt(spin: Duration, rounds: u64) -> (Duration, Duration) {
    let sock = sock_path("ringrtt");
    let listener = UnixListener::bind(&sock).expect("bind");
    let child = spawn("ring-echo", &sock, &format!("{rounds},{}", spin.as_nanos()));
    let mut ep = accept_channel(&listener, &config(spin)).expect("accept");
    let _ = std::fs::remove_file(&sock);
    let ping = [7u8; 64];
    let mut buf = vec![0u8; MAX_FRAME as usize];
    let mut samples = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        ep.send(&ping).expect("ping");
        let n = ep
            .recv(&mut buf, TIMEOUT)
            .expect("pong")
            .expect("pong in time");
        samples.push(t.elapsed());
        assert_eq!(n, 64);
    }
    finish(child);
    percentiles(samples)
}

fn sock_rtt(rounds: u64) -> (Duration, Duration) {
    let sock = sock_path("sockrtt");
    let listener = UnixListener::bind(&sock).expect("bind");
    let child = spawn("sock-echo", &sock, &format!("{rounds}"));
    let (mut s, _) = listener.accept().expect("accept");
    let _ = std::fs::remove_file(&sock);
    let ping = [7u8; 64];
    let mut buf = [0u8; 64];
    let mut samples = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        s.write_all(&ping).expect("ping");
        s.read_exact(&mut buf).expect("pong");
        samples.push(t.elapsed());
    }
    finish(child);
    percentiles(samples)
}

fn main() {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        child_main(&role);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then
    // run a quick smoke version.
    let quick = !std::env::args().any(|a| a == "--bench");
    let scale = if quick { 100 } else { 1 };
    println!(
        "ins-transport channel benchmark (two processes){}",
        if quick { " [quick]" } else { "" }
    );
    println!(
        "{:<34} {:>16} {:>16} {:>8}",
        "scenario", "ring (memfd)", "unix socket", "ratio"
    );
    for (size, count) in [(64usize, 20_000_000u64), (4096, 1_000_000)] {
        let count = count / scale;
        let (rm, _) = ring_one_way(size, count);
        let (sm, _) = sock_one_way(size, count);
        println!(
            "{:<34} {:>13.2} M/s {:>13.2} M/s {:>7.2}x",
            format!("one-way {size} B msgs, batch {BATCH}"),
            rm / 1e6,
            sm / 1e6,
            rm / sm
        );
    }
    {
        let count = 100_000 / scale;
        let (_, rb) = ring_one_way(MAX_FRAME as usize, count);
        let (_, sb) = sock_one_way(MAX_FRAME as usize, count);
        println!(
            "{:<34} {:>12.2} GB/s {:>12.2} GB/s {:>7.2}x",
            "bulk 64 KiB frames",
            rb / 1e9,
            sb / 1e9,
            rb / sb
        );
    }
    let rounds = 200_000 / scale;
    let (sp50, sp99) = sock_rtt(rounds);
    for (name, spin) in [
        ("RTT 64 B, spin 50 us then sleep", Duration::from_micros(50)),
        ("RTT 64 B, pure sleep (eventfd)", Duration::ZERO),
    ] {
        let (p50, p99) = ring_rtt(spin, rounds);
        println!(
            "{:<34} {:>9.2?} p50 {:>9.2?} p50 {:>7.2}x",
            name,
            p50,
            sp50,
            p50.as_secs_f64() / sp50.as_secs_f64()
        );
        println!(
            "{:<34} {:>9.2?} p99 {:>9.2?} p99 {:>7.2}x",
            "",
            p99,
            sp99,
            p99.as_secs_f64() / sp99.as_secs_f64()
        );
    }
}
