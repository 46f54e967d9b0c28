//! Two real processes open a channel over a Unix socket path and exchange
//! messages. The child is this test binary re-executed with
//! `INS_TRANSPORT_CHILD` naming its role; its entry point is the ignored test
//! `child_main`.
//!
//! `stream_of_random_frames`: the instance sends N frames of random sizes
//! (1..=max_frame, seeded xorshift) and contents; the driver regenerates the
//! same sequence and checks every frame (nothing lost, reordered or changed),
//! and both sides compare a running checksum at the end. N is 10,000,000 in
//! release builds and 200,000 in debug builds; `INS_TRANSPORT_MESSAGES`
//! overrides it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ins_protocol::hello::{Hello, Role};
use ins_protocol::ring::RingError;
use ins_transport::{ChannelConfig, Error, accept_channel, connect_channel_with};

const CHILD_ENV: &str = "INS_TRANSPORT_CHILD";
const SOCK_ENV: &str = "INS_TRANSPORT_SOCK";
const COUNT_ENV: &str = "INS_TRANSPORT_MESSAGES";
const MAX_FRAME: u32 = 256;
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const STEP: Duration = Duration::from_secs(20);

fn config() -> ChannelConfig {
    ChannelConfig {
        max_frame: MAX_FRAME,
        ..ChannelConfig::default()
    }
}

fn message_count() -> u64 {
    std::env::var(COUNT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            200_000
        } else {
            10_000_000
        })
}

/// xorshift64*: a tiny seeded generator both processes run in lockstep.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next message: a size in 1..=MAX_FRAME and its contents.
    fn message(&mut self, buf: &mut [u8]) -> usize {
        let word = self.next();
        let len = (word % u64::from(MAX_FRAME)) as usize + 1;
        let fill = self.next();
        for (i, b) in buf[..len].iter_mut().enumerate() {
            *b = (fill >> ((i % 8) * 8)) as u8 ^ (i as u8);
        }
        len
    }
}

/// A running checksum over frames (order-sensitive).
#[derive(Default, PartialEq, Eq, Debug, Clone, Copy)]
struct Checksum(u64);

impl Checksum {
    fn add(&mut self, frame: &[u8]) {
        let mut h = (self.0 ^ frame.len() as u64).wrapping_mul(0x100_0000_01b3);
        for chunk in frame.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h.rotate_left(17);
    }
}

fn socket_path(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("ins-transport-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn spawn_child(role: &str, sock: &Path, count: u64) -> Child {
    Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--ignored", "--exact", "child_main", "--nocapture"])
        .env(CHILD_ENV, role)
        .env(SOCK_ENV, sock)
        .env(COUNT_ENV, count.to_string())
        .spawn()
        .expect("spawn child process")
}

fn wait_child(mut child: Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            assert!(status.success(), "child failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not finish");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
#[ignore = "entry point of the child process spawned by the other tests"]
fn child_main() {
    let role = std::env::var(CHILD_ENV).expect("child role");
    let sock = PathBuf::from(std::env::var_os(SOCK_ENV).expect("socket path"));
    let mut hello = Hello::new(Role::Instance);
    hello.instance_id = 42;
    let mut ep = connect_channel_with(&sock, hello, &config()).expect("connect");
    assert_eq!(ep.peer.role, Role::Driver);
    match role.as_str() {
        "sender" => child_sender(&mut ep),
        "die" => {
            for i in 0..3u8 {
                ep.send(&[i; 10]).expect("send");
            }
            // Exit without any goodbye: the driver must notice.
            std::process::exit(0);
        }
        other => panic!("unknown child role {other}"),
    }
}

fn child_sender(ep: &mut ins_transport::Endpoint) {
    let n = message_count();
    let mut rng = Rng(SEED);
    let mut sum = Checksum::default();
    let mut buf = vec![0u8; MAX_FRAME as usize];
    for i in 0..n {
        let len = rng.message(&mut buf);
        let frame = &buf[..len];
        sum.add(frame);
        match ep.push(frame) {
            Ok(()) => {}
            Err(Error::Ring(RingError::Full)) => {
                assert!(
                    ep.send_wait(frame, Some(STEP)).expect("send_wait"),
                    "no room for {STEP:?}"
                );
            }
            Err(e) => panic!("push: {e}"),
        }
        if i % 32 == 31 {
            ep.flush().expect("flush");
        }
    }
    ep.flush().expect("flush");
    let mut trailer = [0u8; 16];
    trailer[..8].copy_from_slice(&n.to_le_bytes());
    trailer[8..].copy_from_slice(&sum.0.to_le_bytes());
    assert!(ep.send_wait(&trailer, Some(STEP)).expect("send trailer"));
    // The driver answers with the checksum it computed.
    let mut reply = vec![0u8; MAX_FRAME as usize];
    let got = ep
        .recv(&mut reply, Some(STEP))
        .expect("recv reply")
        .expect("reply in time");
    assert_eq!(got, 8);
    assert_eq!(
        u64::from_le_bytes(reply[..8].try_into().unwrap()),
        sum.0,
        "driver's checksum"
    );
}

#[test]
fn stream_of_random_frames() {
    let n = message_count();
    let sock = socket_path("stream");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let child = spawn_child("sender", &sock, n);
    let mut ep = accept_channel(&listener, &config()).expect("accept");
    let _ = std::fs::remove_file(&sock);
    assert_eq!(ep.peer.role, Role::Instance);
    assert_eq!(ep.peer.instance_id, 42);
    assert_eq!(ep.version, ins_protocol::hello::VERSION);

    let start = Instant::now();
    let mut rng = Rng(SEED);
    let mut expected = vec![0u8; MAX_FRAME as usize];
    let mut buf = vec![0u8; MAX_FRAME as usize];
    let mut sum = Checksum::default();
    let mut received = 0u64;
    let mut mismatch = None;
    while received < n {
        assert!(
            ep.wait_readable(Some(STEP)).expect("wait"),
            "stalled at {received}"
        );
        let limit = usize::try_from(n - received)
            .unwrap_or(usize::MAX)
            .min(1024);
        ep.recv_batch(&mut buf, limit, |frame| {
            let len = rng.message(&mut expected);
            if mismatch.is_none() && frame != &expected[..len] {
                mismatch = Some(received);
            }
            sum.add(frame);
            received += 1;
        })
        .expect("recv_batch");
        assert_eq!(mismatch, None, "frame differs from the sender's sequence");
    }
    let elapsed = start.elapsed();
    let len = ep
        .recv(&mut buf, Some(STEP))
        .expect("trailer")
        .expect("trailer in time");
    assert_eq!(len, 16);
    assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), n);
    assert_eq!(
        u64::from_le_bytes(buf[8..16].try_into().unwrap()),
        sum.0,
        "checksums differ"
    );
    assert!(
        ep.send_wait(&sum.0.to_le_bytes(), Some(STEP))
            .expect("reply")
    );
    wait_child(child);
    eprintln!(
        "stream_of_random_frames: {n} frames in {elapsed:?} ({:.2} M frames/s)",
        n as f64 / elapsed.as_secs_f64() / 1e6
    );
}

#[test]
fn peer_death_is_reported() {
    let sock = socket_path("die");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let child = spawn_child("die", &sock, 0);
    let mut ep = accept_channel(&listener, &config()).expect("accept");
    let _ = std::fs::remove_file(&sock);
    let mut buf = [0u8; MAX_FRAME as usize];
    // Frames published before the death are still delivered…
    for i in 0..3u8 {
        let n = ep.recv(&mut buf, Some(STEP)).expect("recv").expect("frame");
        assert_eq!(&buf[..n], &[i; 10]);
    }
    // …then the death is reported, not a hang and not a timeout.
    let start = Instant::now();
    match ep.recv(&mut buf, Some(STEP)) {
        Err(Error::PeerClosed) => {}
        other => panic!("expected PeerClosed, got {other:?}"),
    }
    assert!(start.elapsed() < STEP);
    wait_child(child);
}
