//! A test-side INS driver: it listens on a Unix socket, spawns the real
//! `ins` binary against it, opens the shared-memory channel, and speaks the
//! message protocol (protocol/src/msg.rs) with the stream semantics of
//! notes/flowctl.md.
//!
//! ```text
//!  test thread ── Driver ── ring channel ── ins (child process) ── loopback ── std sockets
//! ```
//!
//! Invariants the driver checks on every frame it receives (a violation
//! panics the test, naming the instance's fault):
//! * every frame decodes ([`Msg::decode`]);
//! * the instance never pushes more `Data`/`DataTo` bytes on a socket than
//!   the window this driver granted (its `Hello.window` plus the `Credit`
//!   it returned);
//! * every `Reply` answers a request id this driver used, once.
//!
//! Everything is single-threaded: native peers run in their own threads.
//!
//! Size: over 800 lines: the protocol-speaking fake driver the instance's
//! tests share (rings, frames, request helpers).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ins_protocol::hello::{Hello, Role};
use ins_protocol::msg::{
    self, Family, FlowRecord, HEADER_LEN, Kind, Mitigation, Msg, PktInfo, SockType, Stats,
};
use ins_protocol::ring::RingError;
use ins_transport::{ChannelConfig, Doorbell, Endpoint, offer_channel};

/// Linux errno values the tests check.
pub mod errno {
    pub const EBADF: i32 = 9;
    pub const EAGAIN: i32 = 11;
    pub const EINVAL: i32 = 22;
    pub const EPIPE: i32 = 32;
    pub const EPROTO: i32 = 71;
    pub const EMSGSIZE: i32 = 90;
    pub const ENOPROTOOPT: i32 = 92;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ENOTCONN: i32 = 107;
    pub const ECONNRESET: i32 = 104;
    pub const ECONNREFUSED: i32 = 111;
    pub const EINPROGRESS: i32 = 115;
}

/// Options for one instance.
#[derive(Debug, Clone)]
pub struct Opts {
    /// `--max-sockets`.
    pub max_sockets: u32,
    /// `--window`: the instance's per-socket receive window (bytes).
    pub window: u32,
    /// The receive window this driver grants per socket (its Hello.window).
    pub driver_window: u32,
    /// `--heartbeat-ms`.
    pub heartbeat_ms: u64,
    /// `--flow-timeout-s` (interim flow records).
    pub flow_timeout_s: u64,
    /// `--instance-id`.
    pub instance_id: u32,
    /// Channel sizes.
    pub channel: ChannelConfig,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            max_sockets: 4096,
            window: 256 * 1024,
            driver_window: 256 * 1024,
            heartbeat_ms: 200,
            flow_timeout_s: 600,
            instance_id: 7,
            channel: ChannelConfig::default(),
        }
    }
}

/// An owned `Reply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub sock: u32,
    pub req: u32,
    pub errno: i32,
    pub value: Vec<u8>,
}

/// Something that happened on one socket (data bytes are kept apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected {
        errno: i32,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
    },
    Accepted {
        sock: u32,
        peer: SocketAddr,
        local: SocketAddr,
    },
    Reset(i32),
    Eof,
    Closed,
}

/// An accepted connection as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub sock: u32,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Result of a stream read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    Data(Vec<u8>),
    Eof,
    Reset(i32),
    Timeout,
}

#[derive(Debug)]
struct SockState {
    /// Bytes we may still send (instance's window + its credits − sent).
    send_credit: u64,
    /// Received stream bytes not yet consumed by the test.
    rx: VecDeque<u8>,
    /// Received datagrams not yet consumed.
    dgrams: VecDeque<(Option<SocketAddr>, Vec<u8>)>,
    /// Bytes the instance may still push (our window + our credits − received).
    granted: i64,
    /// Consumed but not yet credited back.
    uncredited: u64,
    events: VecDeque<Event>,
    eof: bool,
    reset: Option<i32>,
    closed: bool,
    /// Total stream/datagram payload bytes received.
    rx_total: u64,
}

impl SockState {
    fn new(send_credit: u32, granted: u32) -> Self {
        SockState {
            send_credit: send_credit.into(),
            rx: VecDeque::new(),
            dgrams: VecDeque::new(),
            granted: granted.into(),
            uncredited: 0,
            events: VecDeque::new(),
            eof: false,
            reset: None,
            closed: false,
            rx_total: 0,
        }
    }
}

static DIR_SEQ: AtomicU32 = AtomicU32::new(0);

/// Raises the soft open-file limit to the hard limit (children inherit it).
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(r, 0, "getrlimit: {}", io::Error::last_os_error());
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit with cur <= max.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(r, 0, "setrlimit: {}", io::Error::last_os_error());
    lim.rlim_cur
}

/// The test-side driver with its `ins` child.
pub struct Driver {
    pub ep: Endpoint,
    child: Child,
    dir: PathBuf,
    buf: Vec<u8>,
    frame: Vec<u8>,
    next_req: u32,
    next_sock: u32,
    /// The instance's per-socket window (its Hello.window).
    pub instance_window: u32,
    /// The window this driver grants per socket.
    pub driver_window: u32,
    /// Largest frame the instance accepts (its Hello.max_frame).
    pub peer_max_frame: usize,
    socks: HashMap<u32, SockState>,
    replies: HashMap<u32, Reply>,
    outstanding: HashSet<u32>,
    /// Every flow record received, in order.
    pub flows: Vec<FlowRecord>,
    /// Connection telemetry received so far.
    pub telemetry: Vec<ins_protocol::msg::ConnTelemetry>,
    /// Every heartbeat received, in order.
    pub heartbeats: Vec<Stats>,
    /// The instance's hello.
    pub peer: Hello,
    /// Replies with request id 0 (answers to malformed frames whose header
    /// carried no request id).
    pub req0_replies: Vec<Reply>,
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ins")
}

impl Driver {
    /// Starts an instance with default options.
    pub fn start() -> Driver {
        Driver::start_with(Opts::default())
    }

    /// Starts an instance with `opts`.
    pub fn start_with(opts: Opts) -> Driver {
        let dir = std::env::temp_dir().join(format!(
            "ins-e2e-{}-{}",
            std::process::id(),
            DIR_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("driver.sock");
        let listener = UnixListener::bind(&path).expect("bind driver socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let mut child = Command::new(bin())
            .arg("--driver")
            .arg(&path)
            .args(["--instance-id", &opts.instance_id.to_string()])
            .args(["--max-sockets", &opts.max_sockets.to_string()])
            .args(["--window", &opts.window.to_string()])
            .args(["--heartbeat-ms", &opts.heartbeat_ms.to_string()])
            .args(["--flow-timeout-s", &opts.flow_timeout_s.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ins");
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(st) = child.try_wait().expect("try_wait") {
                        let _ = std::fs::remove_dir_all(&dir);
                        panic!("ins exited before connecting to the driver: {st}");
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("ins did not connect to the driver socket within 10 s");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        let raw = match offer_channel(stream, &opts.channel) {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                panic!("offer_channel: {e}");
            }
        };
        let mut hello = Hello::new(Role::Driver);
        hello.window = opts.driver_window;
        let ep = match raw.handshake(hello, Duration::from_secs(10)) {
            Ok(ep) => ep,
            Err(e) => {
                let _ = child.kill();
                let st = child.wait();
                panic!("handshake with ins failed: {e} (ins: {st:?})");
            }
        };
        let peer = ep.peer;
        assert_eq!(peer.role, Role::Instance);
        assert_eq!(peer.instance_id, opts.instance_id, "instance id in hello");
        assert_eq!(peer.window, opts.window, "instance window in hello");
        assert_eq!(peer.max_sockets, opts.max_sockets, "max_sockets in hello");
        let max_frame = ep.max_frame;
        Driver {
            buf: vec![0; max_frame],
            frame: vec![0; (peer.max_frame as usize).max(HEADER_LEN + 512)],
            ep,
            child,
            dir,
            next_req: 1,
            next_sock: 1,
            instance_window: peer.window,
            driver_window: opts.driver_window,
            peer_max_frame: peer.max_frame as usize,
            socks: HashMap::new(),
            replies: HashMap::new(),
            outstanding: HashSet::new(),
            flows: Vec::new(),
            telemetry: Vec::new(),
            heartbeats: Vec::new(),
            peer,
            req0_replies: Vec::new(),
        }
    }

    /// The instance's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Largest `Data` payload per frame.
    pub fn max_data(&self) -> usize {
        self.peer_max_frame - HEADER_LEN
    }

    fn check_alive(&mut self) {
        if let Some(st) = self.child.try_wait().expect("try_wait") {
            panic!("ins exited unexpectedly: {st}");
        }
    }

    /// Whether the instance process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    // ---- sending -------------------------------------------------------

    /// Pushes one frame made of `parts`, waiting (while processing incoming
    /// frames) for ring space. Publishes it.
    pub fn send_parts(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.ep.tx.try_push_parts(parts) {
                Ok(()) => {
                    self.ep.flush().expect("flush");
                    return;
                }
                Err(RingError::Full) => {
                    self.ep.flush().expect("flush");
                    if !self.poll_frames() {
                        self.wait(Some(len), Duration::from_millis(20));
                    }
                    assert!(
                        Instant::now() < deadline,
                        "ring to the instance stayed full for 30 s"
                    );
                }
                Err(e) => panic!("push: {e}"),
            }
        }
    }

    /// Sends one raw frame.
    pub fn send_raw(&mut self, frame: &[u8]) {
        self.send_parts(&[frame]);
    }

    /// Encodes and sends `m` as is (unsolicited kinds, or a request whose
    /// req the caller chose).
    pub fn send_msg(&mut self, m: &Msg<'_>) {
        let mut frame = std::mem::take(&mut self.frame);
        let n = m.encode(&mut frame).expect("encode");
        self.send_raw(&frame[..n]);
        self.frame = frame;
    }

    /// A fresh request id.
    pub fn new_req(&mut self) -> u32 {
        let r = self.next_req;
        self.next_req += 1;
        r
    }

    /// A fresh driver socket id.
    pub fn new_sock(&mut self) -> u32 {
        let s = self.next_sock;
        self.next_sock += 1;
        s
    }

    /// Sends request `m` (its req field is overwritten with a fresh id) and
    /// returns the id.
    pub fn submit(&mut self, m: &Msg<'_>) -> u32 {
        let req = self.new_req();
        let mut frame = std::mem::take(&mut self.frame);
        let n = m.encode(&mut frame).expect("encode request");
        frame[12..16].copy_from_slice(&req.to_le_bytes());
        assert!(Msg::decode(&frame[..n]).is_ok(), "request {m:?} re-encodes");
        self.outstanding.insert(req);
        self.send_raw(&frame[..n]);
        self.frame = frame;
        req
    }

    /// Sends a raw request frame whose header req field is patched to a
    /// fresh id; returns it.
    pub fn submit_raw(&mut self, frame: &mut [u8]) -> u32 {
        let req = self.new_req();
        frame[12..16].copy_from_slice(&req.to_le_bytes());
        self.outstanding.insert(req);
        self.send_raw(frame);
        req
    }

    /// Waits for the reply to `req`.
    pub fn wait_reply(&mut self, req: u32, timeout: Duration) -> Reply {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.replies.remove(&req) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no Reply to request {req} within {timeout:?}"
            );
            self.pump(Duration::from_millis(20));
        }
    }

    /// Sends request `m` and waits for its reply.
    pub fn request(&mut self, m: &Msg<'_>) -> Reply {
        let req = self.submit(m);
        self.wait_reply(req, Duration::from_secs(10))
    }

    // ---- receiving -----------------------------------------------------

    fn sock_mut(&mut self, sock: u32) -> &mut SockState {
        let (w, d) = (self.instance_window, self.driver_window);
        self.socks
            .entry(sock)
            .or_insert_with(|| SockState::new(w, d))
    }

    /// Processes every frame available now. Returns whether any was.
    pub fn poll_frames(&mut self) -> bool {
        let mut buf = std::mem::take(&mut self.buf);
        let mut any = false;
        loop {
            match self.ep.rx.pop(&mut buf) {
                Ok(Some(n)) => {
                    any = true;
                    self.handle(&buf[..n]);
                }
                Ok(None) => break,
                Err(e) => panic!("ring from the instance: {e}"),
            }
        }
        if any && self.ep.rx.release().expect("release") {
            self.ep.tx_bell.notify().expect("notify");
        }
        self.buf = buf;
        any
    }

    fn handle(&mut self, frame: &[u8]) {
        let m = match Msg::decode(frame) {
            Ok(m) => m,
            Err(e) => panic!(
                "instance sent an undecodable frame ({e}): {:02x?}",
                &frame[..frame.len().min(64)]
            ),
        };
        match m {
            Msg::Data { sock, bytes } => {
                let s = self.sock_mut(sock);
                s.granted -= bytes.len() as i64;
                assert!(
                    s.granted >= 0,
                    "instance overran the driver's window on socket {sock:#x} by {} bytes",
                    -s.granted
                );
                assert!(!s.eof, "Data after Eof on socket {sock:#x}");
                s.rx.extend(bytes);
                s.rx_total += bytes.len() as u64;
            }
            Msg::DataTo {
                sock, addr, bytes, ..
            } => {
                let s = self.sock_mut(sock);
                s.granted -= bytes.len() as i64;
                assert!(
                    s.granted >= 0,
                    "instance overran the driver's window on socket {sock:#x}"
                );
                s.dgrams.push_back((addr, bytes.to_vec()));
                s.rx_total += bytes.len() as u64;
            }
            Msg::Credit { sock, bytes } => {
                self.sock_mut(sock).send_credit += u64::from(bytes);
            }
            Msg::Eof { sock } => {
                let s = self.sock_mut(sock);
                s.eof = true;
                s.events.push_back(Event::Eof);
            }
            Msg::Reply {
                sock,
                req,
                errno,
                value,
            } => {
                if req == 0 {
                    self.req0_replies.push(Reply {
                        sock,
                        req,
                        errno,
                        value: value.to_vec(),
                    });
                    return;
                }
                assert!(
                    self.outstanding.remove(&req),
                    "Reply to unknown or already answered request {req} (sock {sock:#x}, errno {errno})"
                );
                self.replies.insert(
                    req,
                    Reply {
                        sock,
                        req,
                        errno,
                        value: value.to_vec(),
                    },
                );
            }
            Msg::Connected {
                sock,
                errno,
                local,
                peer,
            } => self
                .sock_mut(sock)
                .events
                .push_back(Event::Connected { errno, local, peer }),
            Msg::Accepted {
                listener,
                sock,
                peer,
                local,
            } => {
                let (w, d) = (self.instance_window, self.driver_window);
                self.socks.insert(sock, SockState::new(w, d));
                self.sock_mut(listener)
                    .events
                    .push_back(Event::Accepted { sock, peer, local });
            }
            Msg::Reset { sock, errno } => {
                let s = self.sock_mut(sock);
                s.reset = Some(errno);
                s.events.push_back(Event::Reset(errno));
            }
            Msg::Closed { sock } => {
                let s = self.sock_mut(sock);
                s.closed = true;
                s.events.push_back(Event::Closed);
            }
            Msg::Heartbeat(st) => self.heartbeats.push(st),
            Msg::Flow(f) => self.flows.push(f),
            Msg::Telemetry(t) => self.telemetry.push(t),
            other => panic!("instance sent a driver-only message: {other:?}"),
        }
    }

    /// Sleeps until the instance publishes a frame (or frees `space` bytes
    /// of ring space), at most `timeout`.
    pub fn wait(&mut self, space: Option<usize>, timeout: Duration) {
        if self.ep.rx.prepare_wait().expect("prepare_wait") {
            return;
        }
        if let Some(n) = space
            && self
                .ep
                .tx
                .prepare_wait_space(n)
                .expect("prepare_wait_space")
        {
            return;
        }
        self.ep.rx_bell.wait(Some(timeout)).expect("doorbell");
        self.check_alive();
    }

    /// Processes frames, sleeping up to `timeout` if none is there.
    pub fn pump(&mut self, timeout: Duration) {
        if !self.poll_frames() {
            self.wait(None, timeout);
            self.poll_frames();
        }
    }

    /// Pumps until `pred` holds; false on timeout.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&mut Driver) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll_frames();
            if pred(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.wait(None, (deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// Pumps for `d` regardless.
    pub fn pump_for(&mut self, d: Duration) {
        let _ = self.wait_for(d, |_| false);
    }

    /// The pending events of `sock` (not consumed).
    pub fn events(&mut self, sock: u32) -> &mut VecDeque<Event> {
        &mut self.sock_mut(sock).events
    }

    /// Waits for the first event on `sock` that `f` maps to `Some`, removing it.
    pub fn wait_event<T>(
        &mut self,
        sock: u32,
        timeout: Duration,
        mut f: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        let mut out = None;
        self.wait_for(timeout, |d| {
            let evs = &mut d.sock_mut(sock).events;
            if let Some(i) = evs.iter().position(|e| f(e).is_some()) {
                let e = evs.remove(i).expect("index");
                out = f(&e);
                true
            } else {
                false
            }
        });
        out
    }

    /// Whether the instance reset `sock`, and with which errno.
    pub fn reset_errno(&mut self, sock: u32) -> Option<i32> {
        self.sock_mut(sock).reset
    }

    /// Whether `Closed` arrived for `sock`.
    pub fn is_closed(&mut self, sock: u32) -> bool {
        self.sock_mut(sock).closed
    }

    /// Total bytes received on `sock`.
    pub fn rx_total(&mut self, sock: u32) -> u64 {
        self.sock_mut(sock).rx_total
    }

    /// Bytes the driver may still send on `sock`.
    pub fn send_credit(&mut self, sock: u32) -> u64 {
        self.sock_mut(sock).send_credit
    }

    // ---- requests --------------------------------------------------------

    /// `Open`; panics unless it succeeds. Returns the socket id.
    pub fn open(&mut self, family: Family, ty: SockType) -> u32 {
        let sock = self.new_sock();
        let r = self.request(&Msg::Open {
            sock,
            req: 0,
            family,
            ty,
            proto: 0,
        });
        assert_eq!(r.errno, 0, "Open({family:?}, {ty:?}) failed");
        let (w, d) = (self.instance_window, self.driver_window);
        self.socks.insert(sock, SockState::new(w, d));
        sock
    }

    /// A TCP socket of `addr`'s family.
    pub fn open_tcp(&mut self, v6: bool) -> u32 {
        self.open(
            if v6 { Family::Inet6 } else { Family::Inet },
            SockType::Stream,
        )
    }

    /// A UDP socket.
    pub fn open_udp(&mut self, v6: bool) -> u32 {
        self.open(
            if v6 { Family::Inet6 } else { Family::Inet },
            SockType::Dgram,
        )
    }

    /// `Bind`; returns the errno.
    pub fn bind(&mut self, sock: u32, addr: SocketAddr) -> i32 {
        self.request(&Msg::Bind { sock, req: 0, addr }).errno
    }

    /// `Listen`; returns the errno.
    pub fn listen(&mut self, sock: u32, backlog: u32) -> i32 {
        self.request(&Msg::Listen {
            sock,
            req: 0,
            backlog,
        })
        .errno
    }

    /// Opens, binds and listens; returns the socket and its bound address.
    pub fn tcp_listener(&mut self, addr: SocketAddr, backlog: u32) -> (u32, SocketAddr) {
        let sock = self.open_tcp(addr.is_ipv6());
        assert_eq!(self.bind(sock, addr), 0, "bind {addr}");
        assert_eq!(self.listen(sock, backlog), 0, "listen");
        let local = self.sockname(sock).expect("getsockname");
        (sock, local)
    }

    /// `GetSockName`.
    pub fn sockname(&mut self, sock: u32) -> Result<SocketAddr, i32> {
        let r = self.request(&Msg::GetSockName { sock, req: 0 });
        if r.errno != 0 {
            return Err(r.errno);
        }
        Ok(msg::WireAddr::parse(&r.value)
            .expect("sockname WireAddr")
            .expect("sockname present"))
    }

    /// `GetPeerName`.
    pub fn peername(&mut self, sock: u32) -> Result<SocketAddr, i32> {
        let r = self.request(&Msg::GetPeerName { sock, req: 0 });
        if r.errno != 0 {
            return Err(r.errno);
        }
        Ok(msg::WireAddr::parse(&r.value)
            .expect("peername WireAddr")
            .expect("peername present"))
    }

    /// `Connect`; returns the reply's errno (0 or EINPROGRESS on success).
    pub fn connect_start(&mut self, sock: u32, addr: SocketAddr) -> i32 {
        self.request(&Msg::Connect { sock, req: 0, addr }).errno
    }

    /// Waits for `Connected` on `sock`: (errno, local, peer).
    pub fn wait_connected(
        &mut self,
        sock: u32,
        timeout: Duration,
    ) -> (i32, Option<SocketAddr>, Option<SocketAddr>) {
        self.wait_event(sock, timeout, |e| match *e {
            Event::Connected { errno, local, peer } => Some((errno, local, peer)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Connected on socket {sock} within {timeout:?}"))
    }

    /// Open + Connect + wait for Connected; panics unless it connects.
    /// Returns (sock, local address).
    pub fn connect_tcp(&mut self, addr: SocketAddr) -> (u32, SocketAddr) {
        let sock = self.open_tcp(addr.is_ipv6());
        let e = self.connect_start(sock, addr);
        assert!(
            e == 0 || e == errno::EINPROGRESS,
            "Connect to {addr}: reply errno {e}"
        );
        let (e, local, peer) = self.wait_connected(sock, Duration::from_secs(10));
        assert_eq!(e, 0, "Connected errno for {addr}");
        assert_eq!(peer, Some(addr), "Connected peer");
        (sock, local.expect("Connected local address"))
    }

    /// Waits for an `Accepted` on `listener`, returning listener credit for it.
    pub fn accept(&mut self, listener: u32, timeout: Duration) -> Option<Accepted> {
        let a = self.wait_event(listener, timeout, |e| match *e {
            Event::Accepted { sock, peer, local } => Some(Accepted { sock, peer, local }),
            _ => None,
        })?;
        self.send_msg(&Msg::Credit {
            sock: listener,
            bytes: 1,
        });
        Some(a)
    }

    /// `SetOpt`; returns the errno.
    pub fn setopt(&mut self, sock: u32, level: i32, name: i32, value: &[u8]) -> i32 {
        self.request(&Msg::SetOpt {
            sock,
            req: 0,
            level,
            name,
            value,
        })
        .errno
    }

    /// `SetOpt` with a C int.
    pub fn setopt_int(&mut self, sock: u32, level: i32, name: i32, v: i32) -> i32 {
        self.setopt(sock, level, name, &v.to_ne_bytes())
    }

    /// `GetOpt`.
    pub fn getopt(
        &mut self,
        sock: u32,
        level: i32,
        name: i32,
        max_len: u32,
    ) -> Result<Vec<u8>, i32> {
        let r = self.request(&Msg::GetOpt {
            sock,
            req: 0,
            level,
            name,
            max_len,
        });
        if r.errno == 0 {
            Ok(r.value)
        } else {
            Err(r.errno)
        }
    }

    /// `GetOpt` of a C int.
    pub fn getopt_int(&mut self, sock: u32, level: i32, name: i32) -> Result<i32, i32> {
        let v = self.getopt(sock, level, name, 4)?;
        assert_eq!(
            v.len(),
            4,
            "int option {level}/{name} came back with {} bytes",
            v.len()
        );
        Ok(i32::from_ne_bytes(v[..4].try_into().expect("4 bytes")))
    }

    /// `Shutdown`; returns the errno.
    pub fn shutdown(&mut self, sock: u32, how: msg::Shutdown) -> i32 {
        self.request(&Msg::Shutdown { sock, req: 0, how }).errno
    }

    /// `Close`: returns the reply's errno; on success waits for `Closed`.
    pub fn close(&mut self, sock: u32) -> i32 {
        let e = self.request(&Msg::Close { sock, req: 0 }).errno;
        if e == 0 {
            let ok = self.wait_for(Duration::from_secs(10), |d| d.sock_mut(sock).closed);
            assert!(ok, "no Closed for socket {sock:#x} after Close");
        }
        e
    }

    /// `Mitigate`; returns the errno.
    pub fn mitigate(&mut self, cmd: Mitigation<'_>) -> i32 {
        self.request(&Msg::Mitigate { req: 0, cmd }).errno
    }

    // ---- streams ------------------------------------------------------------

    /// Sends `Eof` (half-close).
    pub fn send_eof(&mut self, sock: u32) {
        self.send_msg(&Msg::Eof { sock });
    }

    /// Sends all of `data` on `sock`, waiting for credit as needed.
    pub fn send_data(&mut self, sock: u32, data: &[u8]) {
        let mut off = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while off < data.len() {
            self.poll_frames();
            let credit = self.sock_mut(sock).send_credit;
            if let Some(e) = self.sock_mut(sock).reset {
                panic!("socket {sock:#x} was reset (errno {e}) while sending");
            }
            if credit == 0 {
                assert!(
                    Instant::now() < deadline,
                    "no credit on socket {sock:#x} for 60 s"
                );
                self.wait(None, Duration::from_millis(20));
                continue;
            }
            let n = (data.len() - off).min(self.max_data()).min(credit as usize);
            self.send_data_frame(sock, &data[off..off + n]);
            off += n;
        }
    }

    /// Sends one Data frame without looking at credit (callers do).
    pub fn send_data_frame(&mut self, sock: u32, payload: &[u8]) {
        let mut h = [0u8; HEADER_LEN];
        msg::encode_data_header(sock, payload.len(), &mut h).expect("data header");
        self.send_parts(&[&h, payload]);
        let s = self.sock_mut(sock);
        s.send_credit = s.send_credit.saturating_sub(payload.len() as u64);
    }

    fn consumed(&mut self, sock: u32, n: u64) {
        let quarter = u64::from(self.driver_window / 4).max(1);
        let s = self.sock_mut(sock);
        s.uncredited += n;
        let flush = s.uncredited >= quarter || (s.rx.is_empty() && s.dgrams.is_empty());
        if flush && s.uncredited > 0 {
            let bytes = u32::try_from(s.uncredited).expect("credit fits u32");
            s.uncredited = 0;
            s.granted += i64::from(bytes);
            self.send_msg(&Msg::Credit { sock, bytes });
        }
    }

    /// Takes up to `max` buffered bytes of `sock` (no waiting), returning credit.
    pub fn take_data(&mut self, sock: u32, max: usize) -> Vec<u8> {
        let s = self.sock_mut(sock);
        let n = s.rx.len().min(max);
        let out: Vec<u8> = s.rx.drain(..n).collect();
        if n > 0 {
            self.consumed(sock, n as u64);
        }
        out
    }

    /// Drops every buffered byte of `sock` (no copy), returning credit;
    /// returns how many.
    pub fn discard(&mut self, sock: u32) -> usize {
        let s = self.sock_mut(sock);
        let n = s.rx.len();
        s.rx.clear();
        if n > 0 {
            self.consumed(sock, n as u64);
        }
        n
    }

    /// Reads what is available (waiting up to `timeout`): data first, then
    /// Eof / Reset.
    pub fn read(&mut self, sock: u32, max: usize, timeout: Duration) -> ReadOutcome {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll_frames();
            let s = self.sock_mut(sock);
            if !s.rx.is_empty() {
                return ReadOutcome::Data(self.take_data(sock, max));
            }
            if let Some(e) = s.reset {
                return ReadOutcome::Reset(e);
            }
            if s.eof {
                return ReadOutcome::Eof;
            }
            let now = Instant::now();
            if now >= deadline {
                return ReadOutcome::Timeout;
            }
            self.wait(None, (deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// Reads exactly `n` bytes; panics on EOF/reset/timeout.
    pub fn read_exact(&mut self, sock: u32, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(sock, n - out.len(), left) {
                ReadOutcome::Data(d) => out.extend_from_slice(&d),
                other => panic!(
                    "socket {sock:#x}: wanted {n} bytes, got {} then {other:?}",
                    out.len()
                ),
            }
        }
        out
    }

    /// Reads until Eof; panics on reset/timeout.
    pub fn read_to_eof(&mut self, sock: u32, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(sock, usize::MAX, left) {
                ReadOutcome::Data(d) => out.extend_from_slice(&d),
                ReadOutcome::Eof => return out,
                other => panic!("socket {sock:#x}: after {} bytes: {other:?}", out.len()),
            }
        }
    }

    // ---- datagrams ------------------------------------------------------------

    /// Sends one datagram (`addr` None on a connected socket), waiting for credit.
    pub fn send_to(&mut self, sock: u32, addr: Option<SocketAddr>, bytes: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sock_mut(sock).send_credit < bytes.len() as u64 {
            assert!(Instant::now() < deadline, "no datagram credit on {sock:#x}");
            self.pump(Duration::from_millis(20));
        }
        self.send_msg(&Msg::DataTo {
            sock,
            addr,
            info: PktInfo::NONE,
            bytes,
        });
        let s = self.sock_mut(sock);
        s.send_credit -= bytes.len() as u64;
    }

    /// Receives one datagram.
    pub fn recv_from(
        &mut self,
        sock: u32,
        timeout: Duration,
    ) -> Option<(Option<SocketAddr>, Vec<u8>)> {
        let mut got = None;
        self.wait_for(timeout, |d| {
            got = d.sock_mut(sock).dgrams.pop_front();
            got.is_some()
        });
        let (a, b) = got?;
        self.consumed(sock, b.len() as u64);
        Some((a, b))
    }

    // ---- bulk ------------------------------------------------------------

    /// Sends `tx_len` bytes of `tx_pat` (then `Eof` if `eof`) while receiving
    /// and checking `rx_len` bytes of `rx_pat`, concurrently, within
    /// `timeout`. Panics on mismatch. Returns elapsed time.
    #[allow(clippy::too_many_arguments)]
    pub fn duplex(
        &mut self,
        sock: u32,
        tx_pat: &Pattern,
        tx_len: u64,
        eof: bool,
        rx_pat: &Pattern,
        rx_len: u64,
        timeout: Duration,
    ) -> Duration {
        let start = Instant::now();
        let deadline = start + timeout;
        let (mut sent, mut recvd) = (0u64, 0u64);
        let mut eof_sent = false;
        let mut chunk = vec![0u8; self.max_data()];
        let mut hdr = [0u8; HEADER_LEN];
        loop {
            let mut progress = self.poll_frames();
            let mut blocked: Option<usize> = None;
            // Send what credit and ring space admit.
            loop {
                let credit = self.sock_mut(sock).send_credit;
                if let Some(e) = self.sock_mut(sock).reset {
                    panic!(
                        "socket {sock:#x} reset (errno {e}) after {sent} sent / {recvd} received"
                    );
                }
                if sent >= tx_len || credit == 0 {
                    break;
                }
                let n = ((tx_len - sent) as usize)
                    .min(chunk.len())
                    .min(credit as usize);
                tx_pat.fill(sent, &mut chunk[..n]);
                msg::encode_data_header(sock, n, &mut hdr).expect("hdr");
                match self.ep.tx.try_push_parts(&[&hdr, &chunk[..n]]) {
                    Ok(()) => {
                        sent += n as u64;
                        self.sock_mut(sock).send_credit -= n as u64;
                        progress = true;
                    }
                    Err(RingError::Full) => {
                        blocked = Some(HEADER_LEN + n);
                        break;
                    }
                    Err(e) => panic!("push: {e}"),
                }
            }
            self.ep.flush().expect("flush");
            if sent >= tx_len && eof && !eof_sent {
                self.send_eof(sock);
                eof_sent = true;
            }
            // Consume and verify received bytes.
            let avail = self.sock_mut(sock).rx.len();
            if avail > 0 {
                let s = self.sock_mut(sock);
                let (a, b) = s.rx.as_slices();
                let mut off = recvd;
                for part in [a, b] {
                    if let Some(i) = rx_pat.verify(off, part) {
                        panic!(
                            "socket {sock:#x}: byte {} differs from the sent stream",
                            off + i as u64
                        );
                    }
                    off += part.len() as u64;
                }
                s.rx.clear();
                recvd += avail as u64;
                assert!(recvd <= rx_len, "received {recvd} > expected {rx_len}");
                self.consumed(sock, avail as u64);
                progress = true;
            }
            if sent >= tx_len && recvd >= rx_len {
                return start.elapsed();
            }
            {
                let s = self.sock_mut(sock);
                if s.eof && recvd < rx_len {
                    panic!("socket {sock:#x}: Eof after {recvd} of {rx_len} bytes");
                }
            }
            assert!(
                Instant::now() < deadline,
                "duplex on {sock:#x} timed out: sent {sent}/{tx_len}, received {recvd}/{rx_len}"
            );
            if !progress {
                self.wait(blocked, Duration::from_millis(20));
            }
        }
    }

    /// The last closed flow record matching the 5-tuple, waiting for it.
    pub fn wait_closed_flow(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        timeout: Duration,
    ) -> FlowRecord {
        let mut found = None;
        self.wait_for(timeout, |d| {
            found = d
                .flows
                .iter()
                .rev()
                .find(|f| {
                    f.state == msg::FlowState::Closed && f.local == local && f.remote == remote
                })
                .copied();
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no closed flow record {local} <-> {remote} within {timeout:?}; records: {:#?}",
                self.flows
            )
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A position-keyed pseudo-random byte stream: byte `i` depends only on the
/// seed and `i`, so any chunking can be generated and checked exactly.
#[derive(Debug, Clone, Copy)]
pub struct Pattern(pub u64);

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Pattern {
    fn word(&self, k: u64) -> [u8; 8] {
        mix(self.0 ^ k.wrapping_mul(0x2545_f491_4f6c_dd1d)).to_le_bytes()
    }

    /// Fills `buf` with bytes `off..off+len`.
    pub fn fill(&self, off: u64, buf: &mut [u8]) {
        let mut i = 0usize;
        while i < buf.len() {
            let pos = off + i as u64;
            let w = self.word(pos / 8);
            let start = (pos % 8) as usize;
            let n = (8 - start).min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&w[start..start + n]);
            i += n;
        }
    }

    /// The index of the first byte of `buf` that differs from bytes
    /// `off..`, if any.
    pub fn verify(&self, off: u64, buf: &[u8]) -> Option<usize> {
        let mut i = 0usize;
        while i < buf.len() {
            let pos = off + i as u64;
            let w = self.word(pos / 8);
            let start = (pos % 8) as usize;
            let n = (8 - start).min(buf.len() - i);
            if buf[i..i + n] != w[start..start + n] {
                let j = (0..n).find(|&j| buf[i + j] != w[start + j]).unwrap_or(0);
                return Some(i + j);
            }
            i += n;
        }
        None
    }

    /// Writes `len` bytes of the pattern to `w`.
    pub fn write_to(&self, w: &mut impl Write, len: u64) -> io::Result<()> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut off = 0u64;
        while off < len {
            let n = ((len - off) as usize).min(buf.len());
            self.fill(off, &mut buf[..n]);
            w.write_all(&buf[..n])?;
            off += n as u64;
        }
        Ok(())
    }

    /// Reads from `r` until EOF, checking each byte; returns the count.
    /// Errors on a mismatch.
    pub fn read_check(&self, r: &mut impl Read) -> io::Result<u64> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut off = 0u64;
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(off);
            }
            if let Some(i) = self.verify(off, &buf[..n]) {
                return Err(io::Error::other(format!(
                    "byte {} differs from the sent stream",
                    off + i as u64
                )));
            }
            off += n as u64;
        }
    }
}

/// Bytes per bulk direction: `INS_E2E_BYTES` if set, else 100 MiB in release
/// and 8 MiB in debug builds.
pub fn bulk_bytes() -> u64 {
    if let Ok(v) = std::env::var("INS_E2E_BYTES") {
        return v.parse().expect("INS_E2E_BYTES is a byte count");
    }
    if cfg!(debug_assertions) {
        8 << 20
    } else {
        100 << 20
    }
}

/// A native echo server on `addr` serving connections until the process
/// ends; returns its address.
pub fn echo_server(addr: SocketAddr) -> SocketAddr {
    let l = std::net::TcpListener::bind(addr).expect("bind echo server");
    let a = l.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    a
}

/// Through an instance connection to an echo server: sends `msg` and
/// expects it back.
pub fn echo_round_trip(d: &mut Driver, sock: u32, msg: &[u8]) {
    d.send_data(sock, msg);
    let back = d.read_exact(sock, msg.len(), Duration::from_secs(10));
    assert_eq!(back, msg, "echo through socket {sock:#x}");
}

/// A native stream connected to `addr` with read/write timeouts.
pub fn native_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("native connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s
}

/// Which kind a raw frame header carries.
pub fn raw_header(kind: u16, len: u32, sock: u32, req: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..2].copy_from_slice(&kind.to_le_bytes());
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..12].copy_from_slice(&sock.to_le_bytes());
    h[12..16].copy_from_slice(&req.to_le_bytes());
    h
}

/// The numeric value of a kind.
pub fn kind(k: Kind) -> u16 {
    k as u16
}
