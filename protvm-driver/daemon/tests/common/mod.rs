//! Test harness: starts `ins-driver` (and `ins` instances) in a temporary
//! run directory and speaks the shim control protocol to it.
#![allow(dead_code)]

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ins_protocol::control::{Control, MAX_PACKET, Op};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

pub struct Driver {
    pub child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub instances: Vec<Child>,
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub fn ins_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("INS_BIN") {
        return Some(PathBuf::from(p));
    }
    // target/<profile>/deps/<test> → target/<profile>/ins
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("ins");
    p.exists().then_some(p)
}

impl Driver {
    pub fn start(extra: &[&str]) -> Driver {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ins-driver-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("driver.log");
        let child = Command::new(env!("CARGO_BIN_EXE_ins-driver"))
            .arg("--run-dir")
            .arg(&dir)
            .arg("--log")
            .arg(&log)
            .args(extra)
            .env("RUST_LOG", "ins_driver=debug,info")
            .stdin(Stdio::null())
            .spawn()
            .expect("start ins-driver");
        let d = Driver {
            child,
            dir,
            log,
            instances: Vec::new(),
        };
        wait_for(|| d.dir.join("shim.sock").exists(), "shim.sock");
        d
    }

    pub fn shim_path(&self) -> PathBuf {
        self.dir.join("shim.sock")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts an `ins` instance and waits until the driver logged its join.
    pub fn add_instance(&mut self, id: u32) -> u32 {
        let bin = ins_bin().expect("the `ins` binary (cargo build -p ins, or INS_BIN)");
        let before = self.log_text().matches("instance joined").count();
        let child = Command::new(bin)
            .arg("--driver")
            .arg(self.dir.join("instance.sock"))
            .arg("--instance-id")
            .arg(id.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start ins");
        let pid = child.id();
        self.instances.push(child);
        wait_for(
            || self.log_text().matches("instance joined").count() > before,
            "instance join",
        );
        pid
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        for c in &mut self.instances {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A shim-side control connection.
pub struct Client {
    fd: OwnedFd,
    seq: u32,
}

pub struct Reply {
    pub status: i32,
    pub args: [i32; 4],
    pub addr: Option<SocketAddr>,
    pub addr2: Option<SocketAddr>,
    pub value: Vec<u8>,
    pub fd: Option<OwnedFd>,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::connect(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
        Client { fd, seq: 0 }
    }

    pub fn raw_send(&self, bytes: &[u8]) {
        rustix::net::send(&self.fd, bytes, SendFlags::NOSIGNAL).unwrap();
    }

    /// Whether the driver closed the connection (within a second).
    pub fn closed_by_driver(&self) -> bool {
        let mut buf = [0u8; 16];
        let mut fds = [rustix::event::PollFd::new(
            &self.fd,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::time::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        let _ = rustix::event::poll(&mut fds, Some(&ts));
        matches!(
            rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::DONTWAIT),
            Ok((_, 0)) | Err(rustix::io::Errno::CONNRESET)
        )
    }

    pub fn call(
        &mut self,
        op: Op,
        args: [i32; 4],
        addr: Option<SocketAddr>,
        value: &[u8],
        fd: Option<BorrowedFd<'_>>,
    ) -> Reply {
        self.seq += 1;
        let req = Control {
            op,
            seq: self.seq,
            status: 0,
            args,
            addr,
            addr2: None,
            value,
        };
        let mut buf = [0u8; MAX_PACKET];
        let n = req.encode(&mut buf).unwrap();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let one;
        if let Some(f) = fd {
            one = [f];
            assert!(control.push(SendAncillaryMessage::ScmRights(&one)));
        }
        rustix::net::sendmsg(
            &self.fd,
            &[IoSlice::new(&buf[..n])],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .unwrap();
        let mut rbuf = [0u8; MAX_PACKET];
        let mut rspace = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut rcontrol = RecvAncillaryBuffer::new(&mut rspace);
        let mut fds = [rustix::event::PollFd::new(
            &self.fd,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::time::Timespec {
            tv_sec: 10,
            tv_nsec: 0,
        };
        assert_eq!(
            rustix::event::poll(&mut fds, Some(&ts)).unwrap(),
            1,
            "no reply to {op:?} within 10 s"
        );
        let m = rustix::net::recvmsg(
            &self.fd,
            &mut [IoSliceMut::new(&mut rbuf)],
            &mut rcontrol,
            RecvFlags::CMSG_CLOEXEC,
        )
        .unwrap();
        let mut got = None;
        for c in rcontrol.drain() {
            if let RecvAncillaryMessage::ScmRights(mut r) = c {
                got = r.next();
            }
        }
        let rep = Control::decode(&rbuf[..m.bytes]).unwrap();
        assert_eq!(rep.seq, self.seq);
        assert_eq!(rep.op, op);
        Reply {
            status: rep.status,
            args: rep.args,
            addr: rep.addr,
            addr2: rep.addr2,
            value: rep.value.to_vec(),
            fd: got,
        }
    }

    pub fn socket(&mut self, domain: i32, ty: i32) -> OwnedFd {
        let r = self.call(Op::Socket, [domain, ty, 0, 0], None, &[], None);
        assert_eq!(r.status, 0, "socket");
        r.fd.expect("socket fd")
    }

    pub fn op(&mut self, op: Op, fd: &OwnedFd, args: [i32; 4], addr: Option<SocketAddr>) -> Reply {
        self.call(op, args, addr, &[], Some(fd.as_fd()))
    }
}

/// poll() one fd for `ev` up to `ms`.
pub fn poll_fd(
    fd: BorrowedFd<'_>,
    ev: rustix::event::PollFlags,
    ms: i64,
) -> rustix::event::PollFlags {
    let mut fds = [rustix::event::PollFd::new(&fd, ev)];
    let ts = rustix::time::Timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    };
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(1) => fds[0].revents(),
        _ => rustix::event::PollFlags::empty(),
    }
}

pub fn read_exact(fd: &OwnedFd, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        assert!(
            !poll_fd(fd.as_fd(), rustix::event::PollFlags::IN, 10_000).is_empty(),
            "timeout reading"
        );
        let k = rustix::io::read(fd, &mut out[got..]).unwrap();
        assert!(k > 0, "EOF after {got} of {n} bytes");
        got += k;
    }
    out
}

pub fn write_all(fd: &OwnedFd, mut b: &[u8]) {
    while !b.is_empty() {
        let n = rustix::io::write(fd, b).unwrap();
        b = &b[n..];
    }
}

pub const AF_INET: i32 = 2;
pub const STREAM: i32 = 1;
pub const DGRAM: i32 = 2;
