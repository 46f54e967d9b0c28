//! Socket plumbing for the shim side: the `SOCK_SEQPACKET` listener,
//! packets with an optional `SCM_RIGHTS` fd, socket pairs, inodes, and the
//! non-blocking-connect filler.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::event::{PollFd, PollFlags};
use rustix::fs::{FileType, fstat};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// A listening `SOCK_SEQPACKET` socket at `path` (an old socket file is
/// replaced) with `mode`.
pub fn seqpacket_listener(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let addr = SocketAddrUnix::new(path)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode))?;
    rustix::net::listen(&fd, 1024)?;
    Ok(fd)
}

/// Accepts one connection (non-blocking, close-on-exec). `Ok(None)` when
/// none is waiting.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(fd) => return Ok(Some(fd)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            // The peer gave up before we accepted: try the next one.
            Err(rustix::io::Errno::CONNABORTED) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One received packet.
pub enum Packet {
    /// Nothing waiting.
    None,
    /// The peer closed.
    Closed,
    /// `len` bytes in the buffer, with an fd if one came. `bad` when the
    /// packet was truncated or carried more than one fd (to be refused).
    Data {
        /// Bytes.
        len: usize,
        /// The fd.
        fd: Option<OwnedFd>,
        /// Refuse the packet.
        bad: bool,
    },
}

/// One non-blocking `recvmsg` into `buf` and `control` (`EINTR` retried).
fn recv_nb(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    control: &mut RecvAncillaryBuffer<'_>,
) -> rustix::io::Result<rustix::net::RecvMsg> {
    loop {
        match rustix::net::recvmsg(
            fd,
            &mut [IoSliceMut::new(buf)],
            control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r,
        }
    }
}

/// Receives one packet (and at most a few fds) without blocking.
pub fn recv_packet(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Packet> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = match recv_nb(fd, buf, &mut control) {
        Ok(m) => m,
        Err(rustix::io::Errno::AGAIN) => return Ok(Packet::None),
        Err(rustix::io::Errno::CONNRESET) => return Ok(Packet::Closed),
        Err(e) => return Err(e.into()),
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(r) = m {
            fds.extend(r);
        }
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(Packet::Closed);
    }
    let bad = fds.len() > 1
        || msg
            .flags
            .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC);
    Ok(Packet::Data {
        len: msg.bytes.min(buf.len()),
        fd: fds.pop(),
        bad,
    })
}

/// Sends one packet with an optional fd.
pub fn send_packet(
    fd: BorrowedFd<'_>,
    bytes: &[u8],
    pass: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let one;
    if let Some(p) = pass {
        one = [p];
        if !control.push(SendAncillaryMessage::ScmRights(&one)) {
            return Err(io::Error::other("control buffer too small"));
        }
    }
    loop {
        match rustix::net::sendmsg(
            fd,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The default `--app-sndbuf`: the largest send buffer Linux TCP
/// autotunes to (`net.ipv4.tcp_wmem`'s third field), 4 MiB if unreadable.
pub fn tcp_wmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// Sets the send buffer of an app end: `SO_SNDBUFFORCE` (beyond
/// `net.core.wmem_max`, needs `CAP_NET_ADMIN`), else `SO_SNDBUF` (capped).
/// 0 leaves it alone.
pub fn set_app_sndbuf(app: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    match rustix::net::sockopt::set_socket_send_buffer_size_force(app, bytes) {
        Ok(()) => Ok(()),
        Err(_) => Ok(rustix::net::sockopt::set_socket_send_buffer_size(
            app, bytes,
        )?),
    }
}

/// A socket pair: `(driver end (non-blocking), app end (blocking))`,
/// both close-on-exec. Streams use `SOCK_STREAM`, datagrams
/// `SOCK_SEQPACKET`; a stream's app end gets send buffer `app_sndbuf`
/// ([`set_app_sndbuf`]).
pub fn pair(stream: bool, app_sndbuf: usize) -> io::Result<(OwnedFd, OwnedFd)> {
    let ty = if stream {
        SocketType::STREAM
    } else {
        SocketType::SEQPACKET
    };
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        ty,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::io::ioctl_fionbio(&b, false)?;
    if stream {
        // The writer's pid with every read: it says whose in-band option
        // marker a read brought (see `read_stream`).
        rustix::net::sockopt::set_socket_passcred(&a, true)?;
        set_app_sndbuf(b.as_fd(), app_sndbuf)?;
    }
    Ok((a, b))
}

/// One read of a stream pair's driver end ([`read_stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRead {
    /// Bytes read (0: end of file).
    pub n: usize,
    /// The read ended with an in-band option marker: it carried
    /// `SCM_RIGHTS`. The kernel ends a stream read after an skb that
    /// carries fds, so the marker is the last byte read. There is room
    /// for the credentials only, so the kernel drops the fd itself and
    /// says so with `MSG_CTRUNC`: no descriptor is installed here, none
    /// needs closing, and the fd limit never gets in the way.
    pub marker: bool,
    /// The writer's pid (`SCM_CREDENTIALS`; 0 if none came).
    pub pid: u32,
}

/// Reads from a stream pair's driver end (made by [`pair`]) without
/// blocking, noticing in-band option markers. `EINTR` is retried.
pub fn read_stream(fd: BorrowedFd<'_>, buf: &mut [u8]) -> rustix::io::Result<StreamRead> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = recv_nb(fd, buf, &mut control)?;
    let mut marker = msg.flags.contains(ReturnFlags::CTRUNC);
    let mut pid = 0;
    for m in control.drain() {
        match m {
            // Only if a writer also sent credentials first and the buffer
            // grows: closed on drop.
            RecvAncillaryMessage::ScmRights(fds) => {
                for f in fds {
                    drop(f);
                    marker = true;
                }
            }
            RecvAncillaryMessage::ScmCredentials(c) => {
                pid = c.pid.as_raw_nonzero().get() as u32;
            }
            _ => {}
        }
    }
    Ok(StreamRead {
        n: msg.bytes,
        marker: marker && msg.bytes > 0,
        pid,
    })
}

/// `(st_dev, st_ino)` of a socket fd; `None` if it is not a socket.
pub fn socket_id(fd: BorrowedFd<'_>) -> io::Result<Option<(u64, u64)>> {
    let st = fstat(fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Ok(None);
    }
    Ok(Some((st.st_dev, st.st_ino)))
}

/// Whether `fd` is writable now.
pub fn writable(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0].revents().contains(PollFlags::OUT)
}

/// Whether the peer of `fd` hung up (its last reference is gone).
pub fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0].revents().contains(PollFlags::HUP)
}

/// Makes the app end not writable (connect in progress): shrinks its send
/// buffer and writes filler bytes (which land in the driver end's receive
/// queue) until poll says not writable. Returns `(filler bytes, old send
/// buffer size)`.
pub fn fill(app: BorrowedFd<'_>) -> io::Result<(usize, usize)> {
    let old = rustix::net::sockopt::socket_send_buffer_size(app)?;
    rustix::net::sockopt::set_socket_send_buffer_size(app, 1)?;
    let mut filled = 0usize;
    for _ in 0..256 {
        if !writable(app) {
            return Ok((filled, old));
        }
        match rustix::net::send(app, &[0u8; 64], SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::AGAIN) => return Ok((filled, old)),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((filled, old))
}

/// Undoes [`fill`]: reads exactly `filler` bytes from the driver end and
/// restores the app end's send buffer (the kernel doubles what is set, so
/// half the old value is set).
pub fn unfill(
    drv: BorrowedFd<'_>,
    app: BorrowedFd<'_>,
    filler: usize,
    old: usize,
) -> io::Result<()> {
    let mut left = filler;
    let mut buf = [0u8; 256];
    let mut spins = 0;
    while left > 0 {
        let n = left.min(buf.len());
        match rustix::io::read(drv, &mut buf[..n]) {
            Ok(0) => break,
            Ok(k) => left -= k,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                spins += 1;
                if spins > 3 {
                    return Err(io::Error::other("filler bytes missing"));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    set_app_sndbuf(app, (old / 2).max(1))?;
    Ok(())
}
