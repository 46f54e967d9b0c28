//! The crate's only `unsafe` code: the few Linux calls that neither rustix
//! nor socket2 expose safely.
//!
//! * [`setsockopt`] / [`getsockopt`] with an arbitrary `(level, name)` and a
//!   raw byte value, so option numbers pass straight through from the wire.
//! * [`become_user`] (glibc's all-threads `setres[ug]id`) and
//!   [`ptrace_seize`]: the sandbox's switch of user and its self-test (the
//!   capability calls are rustix's, in [`super::sandbox`]).
//! * [`recvmsg_pktinfo`] / [`sendmsg_pktinfo`]: datagrams with their
//!   `IP_PKTINFO` / `IPV6_PKTINFO` control messages.
//! * [`block_signals`] + [`signalfd`]: turn SIGTERM/SIGINT into a readable
//!   descriptor that the instance's epoll set watches, so a signal wakes the
//!   loop without a signal handler.
//!
//! Invariants: every pointer handed to the kernel comes from a live Rust
//! slice or local whose length is passed alongside it; every descriptor
//! returned by the kernel is wrapped in an [`OwnedFd`] at once.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use ins_core::stack::PktInfo;
use ins_protocol::msg::{PktInfo4, PktInfo6};

/// Longest option value passed to or read from the kernel. Larger than
/// every option the instance uses (`TCP_INFO` is about 250 bytes).
pub const OPT_LEN_CAP: usize = 512;

fn len_of(n: usize) -> io::Result<libc::socklen_t> {
    if n > OPT_LEN_CAP {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // n <= OPT_LEN_CAP, which fits a socklen_t.
    Ok(n as libc::socklen_t)
}

/// `setsockopt(fd, level, name, value, value.len())`.
pub fn setsockopt(fd: BorrowedFd<'_>, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    let len = len_of(value.len())?;
    // SAFETY: `value` is a live slice of `len` readable bytes; the kernel
    // only reads from it, and only `len` bytes. `fd` is borrowed, so open.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast::<libc::c_void>(),
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt(fd, level, name, out, &len)`: returns the number of bytes
/// the kernel stored (truncated to `out.len()`, capped at [`OPT_LEN_CAP`]).
pub fn getsockopt(fd: BorrowedFd<'_>, level: i32, name: i32, out: &mut [u8]) -> io::Result<usize> {
    let cap = out.len().min(OPT_LEN_CAP);
    let mut len = len_of(cap)?;
    // SAFETY: `out` is a live, exclusively borrowed slice of at least `len`
    // writable bytes; the kernel writes at most `len` bytes there and
    // updates `len`, a local. `fd` is borrowed, so open.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            out.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    };
    if r == 0 {
        // The kernel never reports more than it was given room for.
        Ok((len as usize).min(cap))
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sigset(signals: &[i32]) -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `set` is a local with room for a sigset_t; sigemptyset
    // initialises all of it.
    let r = unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful sigemptyset above.
    let mut set = unsafe { set.assume_init() };
    for &sig in signals {
        // SAFETY: `set` is an initialised local sigset_t.
        let r = unsafe { libc::sigaddset(&mut set, sig) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(set)
}

/// Blocks `signals` in the calling thread (and threads it spawns later), so
/// that they stay pending for a [`signalfd`] instead of running their
/// default action. Call before spawning threads.
pub fn block_signals(signals: &[i32]) -> io::Result<()> {
    let set = sigset(signals)?;
    // SAFETY: `set` is an initialised sigset_t that outlives the call; a
    // null old-set pointer is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// A non-blocking, close-on-exec signalfd for `signals` (which should be
/// blocked with [`block_signals`]).
pub fn signalfd(signals: &[i32]) -> io::Result<OwnedFd> {
    let set = sigset(signals)?;
    // SAFETY: `set` is an initialised sigset_t that outlives the call; -1
    // asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel, is open, and nothing
    // else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal from a signalfd: `Some(signo)`, or `None` when
/// none is pending.
pub fn read_signal(fd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    // struct signalfd_siginfo is 128 bytes; ssi_signo is its first u32.
    let mut buf = [0u8; 128];
    match rustix::io::read(fd, &mut buf) {
        Ok(n) if n >= 4 => Ok(Some(i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]))),
        Ok(_) => Ok(None),
        Err(rustix::io::Errno::AGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Switches every thread of the process to `uid`/`gid` (real, effective
/// and saved) with no supplementary groups. From root to a non-zero uid
/// the kernel also clears the permitted, effective and ambient
/// capabilities.
pub fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: a zero-length list with a null pointer clears the groups.
    check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    // SAFETY: plain integer arguments; glibc applies them to all threads.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: plain integer arguments; glibc applies them to all threads.
    check(unsafe { libc::setresuid(uid, uid, uid) })
}

/// `ptrace(PTRACE_SEIZE, pid)` (the sandbox self-test: it must fail).
/// A seize does not stop the tracee; on success it is detached when we
/// exit.
pub fn ptrace_seize(pid: i32) -> io::Result<()> {
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: PTRACE_SEIZE reads no memory; addr and data (no options)
    // are unused.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, null, null) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `sockaddr` form of an address, and its length.
fn sockaddr_of(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for any
            // sockaddr; one value is written.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in>(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in6>(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    // Both sizes fit a socklen_t.
    (ss, len as libc::socklen_t)
}

/// The address in a `sockaddr` the kernel filled (`None` for an empty or
/// non-Internet one).
fn socket_addr_of(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(ss.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel stored a sockaddr_in (family and length
            // checked); sockaddr_storage is aligned for it.
            let sin = unsafe {
                std::ptr::read((ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>())
            };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, a sockaddr_in6.
            let sin6 = unsafe {
                std::ptr::read((ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>())
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A control-message buffer, aligned for `cmsghdr`; room for both
/// packet-information messages and more (other options' messages the
/// socket may have on are skipped, or cut with `MSG_CTRUNC`).
#[repr(C, align(8))]
struct Cbuf([u8; 256]);

/// `recvmsg` of one datagram with the `IP_PKTINFO` / `IPV6_PKTINFO`
/// control messages the kernel reports (those whose option is on):
/// bytes stored, the sender (`None` if the kernel gave none) and the
/// information.
pub fn recvmsg_pktinfo(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SocketAddr>, PktInfo)> {
    // SAFETY: plain data; zero is valid.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut cbuf = Cbuf([0; 256]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: plain data; zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.0.len();
    // SAFETY: every pointer in msg is a live local or `buf`, with its
    // length; the kernel writes within them and updates msg's lengths.
    let r = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut info = PktInfo::NONE;
    // SAFETY: msg was filled by recvmsg; its control pointer and length
    // describe cbuf.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: CMSG_FIRSTHDR/NXTHDR return a header within cbuf.
        let h = unsafe { std::ptr::read_unaligned(c) };
        // SAFETY: data of the header above, within cbuf.
        let data = unsafe { libc::CMSG_DATA(c) };
        let have = (h.cmsg_len as usize).saturating_sub(data as usize - c as usize);
        if h.cmsg_level == libc::IPPROTO_IP
            && h.cmsg_type == libc::IP_PKTINFO
            && have >= size_of::<libc::in_pktinfo>()
        {
            // SAFETY: the message holds a whole in_pktinfo (length checked).
            let p = unsafe { std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>()) };
            info.v4 = Some(PktInfo4 {
                ifindex: p.ipi_ifindex as u32,
                spec_dst: Ipv4Addr::from(p.ipi_spec_dst.s_addr.to_ne_bytes()),
                addr: Ipv4Addr::from(p.ipi_addr.s_addr.to_ne_bytes()),
            });
        } else if h.cmsg_level == libc::IPPROTO_IPV6
            && h.cmsg_type == libc::IPV6_PKTINFO
            && have >= size_of::<libc::in6_pktinfo>()
        {
            // SAFETY: the message holds a whole in6_pktinfo.
            let p = unsafe { std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>()) };
            info.v6 = Some(PktInfo6 {
                ifindex: p.ipi6_ifindex,
                addr: Ipv6Addr::from(p.ipi6_addr.s6_addr),
            });
        }
        // SAFETY: msg and c as above.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    Ok((r as usize, socket_addr_of(&name, msg.msg_namelen), info))
}

/// Appends one control message to `cbuf` at `*at`.
fn put_cmsg<T>(cbuf: &mut Cbuf, at: &mut usize, level: i32, ty: i32, value: T) {
    let len = size_of::<T>() as u32;
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(len) } as usize;
    // SAFETY: CMSG_LEN is arithmetic.
    let clen = unsafe { libc::CMSG_LEN(len) } as usize;
    assert!(*at + space <= cbuf.0.len(), "control buffer sized for both");
    let h = libc::cmsghdr {
        cmsg_len: clen as _,
        cmsg_level: level,
        cmsg_type: ty,
    };
    let hdr = cbuf.0[*at..].as_mut_ptr();
    // SAFETY: `hdr` has `space` writable bytes (asserted), aligned (cbuf
    // is 8-aligned and `at` a multiple of CMSG_SPACE's alignment); the
    // value follows at the data offset CMSG_LEN(0) gives.
    unsafe {
        std::ptr::write_unaligned(hdr.cast::<libc::cmsghdr>(), h);
    }
    // SAFETY: CMSG_LEN is arithmetic.
    let off = unsafe { libc::CMSG_LEN(0) } as usize;
    // SAFETY: off + size_of::<T>() = clen <= space bytes from hdr.
    unsafe { std::ptr::write_unaligned(hdr.wrapping_add(off).cast::<T>(), value) };
    *at += space;
}

/// `sendmsg` of one datagram to `dst` with the packet information as
/// `IPV6_PKTINFO` / `IP_PKTINFO` control messages (the kernel checks
/// them, as for any program's `sendmsg`).
pub fn sendmsg_pktinfo(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    dst: SocketAddr,
    info: &PktInfo,
) -> io::Result<usize> {
    let (mut name, namelen) = sockaddr_of(dst);
    let mut cbuf = Cbuf([0; 256]);
    let mut at = 0;
    if let Some(p) = info.v6 {
        let v = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: p.addr.octets(),
            },
            ipi6_ifindex: p.ifindex,
        };
        put_cmsg(
            &mut cbuf,
            &mut at,
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            v,
        );
    }
    if let Some(p) = info.v4 {
        let v = libc::in_pktinfo {
            ipi_ifindex: p.ifindex as i32,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from_ne_bytes(p.spec_dst.octets()),
            },
            ipi_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(p.addr.octets()),
            },
        };
        put_cmsg(&mut cbuf, &mut at, libc::IPPROTO_IP, libc::IP_PKTINFO, v);
    }
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: plain data; zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = namelen;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if at > 0 {
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        msg.msg_controllen = at;
    }
    // SAFETY: every pointer in msg is a live local or `buf` with its
    // length; the kernel only reads them.
    let r = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn int_option_round_trip_and_caps() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        setsockopt(
            s.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_BROADCAST,
            &1i32.to_ne_bytes(),
        )
        .unwrap();
        let mut out = [0u8; 8];
        let n = getsockopt(s.as_fd(), libc::SOL_SOCKET, libc::SO_BROADCAST, &mut out).unwrap();
        assert_eq!(n, 4);
        assert_eq!(i32::from_ne_bytes([out[0], out[1], out[2], out[3]]), 1);
        let big = vec![0u8; OPT_LEN_CAP + 1];
        let e = setsockopt(s.as_fd(), libc::SOL_SOCKET, libc::SO_BROADCAST, &big).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let e = setsockopt(s.as_fd(), libc::SOL_SOCKET, 9999, &1i32.to_ne_bytes()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
        // Truncation as Linux does it: room for 2 bytes, 2 reported.
        let mut two = [0u8; 2];
        let n = getsockopt(s.as_fd(), libc::SOL_SOCKET, libc::SO_BROADCAST, &mut two).unwrap();
        assert_eq!(n, 2);
    }

    /// Packet information both ways over loopback: a wildcard socket sends
    /// from the address its `IP_PKTINFO` names, and the receiver's kernel
    /// reports that datagram's destination.
    #[test]
    fn pktinfo_round_trip() {
        use std::net::UdpSocket;
        use std::os::fd::AsFd;
        let a = UdpSocket::bind("0.0.0.0:0").unwrap();
        let b = UdpSocket::bind("0.0.0.0:0").unwrap();
        b.set_nonblocking(false).unwrap();
        let on = 1i32.to_ne_bytes();
        setsockopt(b.as_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, &on).unwrap();
        let to: SocketAddr = format!("127.0.0.7:{}", b.local_addr().unwrap().port())
            .parse()
            .unwrap();
        let info = PktInfo {
            v4: Some(PktInfo4 {
                ifindex: 0,
                spec_dst: Ipv4Addr::new(127, 0, 0, 5),
                addr: Ipv4Addr::UNSPECIFIED,
            }),
            v6: None,
        };
        assert_eq!(sendmsg_pktinfo(a.as_fd(), b"hi", to, &info).unwrap(), 2);
        let mut buf = [0u8; 8];
        let (n, from, got) = recvmsg_pktinfo(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        let from = from.unwrap();
        assert_eq!(from.ip(), Ipv4Addr::new(127, 0, 0, 5));
        assert_eq!(from.port(), a.local_addr().unwrap().port());
        let got = got.v4.unwrap();
        let dst = Ipv4Addr::new(127, 0, 0, 7);
        assert_eq!((got.addr, got.spec_dst), (dst, dst));
        assert!(got.ifindex > 0);
        // Without the option, no information.
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to_c = c.local_addr().unwrap();
        sendmsg_pktinfo(a.as_fd(), b"x", to_c, &PktInfo::NONE).unwrap();
        let (_, _, none) = recvmsg_pktinfo(c.as_fd(), &mut buf).unwrap();
        assert_eq!(none, PktInfo::NONE);
    }
}
