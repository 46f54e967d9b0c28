//! Control messages (ancillary data) of INS sockets, over the bytes of a
//! `msghdr`'s control buffer, with Linux's rules.
//!
//! Receiving: the datagram's [`PktInfo`] (what the instance's kernel
//! reported, present only when the option is on there) becomes
//! `IPV6_PKTINFO` then `IP_PKTINFO` (the kernel's order for an IPv4
//! datagram on a dual-stack socket), written as the kernel's `put_cmsg`
//! does: a message that does not fit is cut to the space left with its
//! `cmsg_len` saying so, less than a header's room writes nothing, and
//! either sets `MSG_CTRUNC`.
//!
//! Sending: the messages are walked as the kernel's `for_each_cmsghdr`
//! does (a header whose `cmsg_len` is below the header size or past the
//! buffer is `EINVAL`), dispatched as `ip_cmsg_send` (an IPv4 destination,
//! or an IPv4-mapped one on an IPv6 socket) or `ip6_datagram_send_ctl`
//! (an IPv6 destination) would:
//! * `IP_PKTINFO` (length exactly `CMSG_LEN(12)`), `IPV6_PKTINFO` and
//!   `IPV6_2292PKTINFO` (length at least `CMSG_LEN(20)`; to an IPv4-mapped
//!   destination the address must be mapped) are carried to the instance,
//!   whose kernel checks the values (a source address it does not have, an
//!   unknown interface) and drops a datagram it refuses, counted as any
//!   UDP send the instance fails;
//! * `SCM_RIGHTS`/`SCM_CREDENTIALS` are ignored, and messages of other
//!   levels skipped, as Linux does;
//! * messages Linux applies but INS does not carry (`IP_TTL`, `IP_TOS`,
//!   `IP_RETOPTS`, `IP_PROTOCOL`, `IPV6_HOPLIMIT`, `IPV6_TCLASS`,
//!   `IPV6_FLOWINFO`, `IPV6_DONTFRAG`, IPv6 extension headers, `SO_MARK`,
//!   `SO_PRIORITY`, `SO_TIMESTAMPING`, `SCM_TXTIME`) fail with
//!   `EOPNOTSUPP`, never silently dropped;
//! * any other type at `SOL_IP`/`SOL_IPV6`/`SOL_SOCKET` is `EINVAL`.
//!
//! On a connected IPv6 socket without an address in the call, the shim
//! does not know whether the peer is IPv4-mapped: both rule sets apply.
//!
//! TCP sockets: [`check_stream_send`] checks a `sendmsg`'s messages as
//! Linux's TCP does (only `SOL_SOCKET` ones count); the data then goes
//! with no control message, so no descriptor (`SCM_RIGHTS`) or
//! credential reaches the driver.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use ins_protocol::msg::{PktInfo, PktInfo4, PktInfo6};

use crate::errno::Errno;

/// `sizeof(struct cmsghdr)` (`cmsg_len` is a `size_t`).
const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
const WORD: usize = std::mem::size_of::<usize>();

const fn align(n: usize) -> usize {
    (n + WORD - 1) & !(WORD - 1)
}

/// `CMSG_LEN(n)`.
const fn cmsg_len(n: usize) -> usize {
    align(HDR) + n
}

/// `CMSG_SPACE(n)`.
const fn cmsg_space(n: usize) -> usize {
    align(HDR) + align(n)
}

/// Linux's `SO_TIMESTAMPING_OLD` and `IP_PROTOCOL` (not in `libc`).
const SO_TIMESTAMPING_OLD: i32 = 37;
const IP_PROTOCOL: i32 = 52;

/// `sizeof(struct in_pktinfo)`, `sizeof(struct in6_pktinfo)`.
const IN_PKTINFO: usize = 12;
const IN6_PKTINFO: usize = 20;

/// Largest control data [`put_recv`] writes (both messages).
pub const MAX_RECV: usize = cmsg_space(IN6_PKTINFO) + cmsg_space(IN_PKTINFO);

/// Writes `info`'s control messages into `out` (the app's buffer, at most
/// its `msg_controllen` bytes). Returns the bytes used (the new
/// `msg_controllen`) and whether anything was cut (`MSG_CTRUNC`).
pub fn put_recv(info: &PktInfo, out: &mut [u8]) -> (usize, bool) {
    let mut used = 0;
    let mut trunc = false;
    if let Some(p) = info.v6 {
        let mut d = [0u8; IN6_PKTINFO];
        d[..16].copy_from_slice(&p.addr.octets());
        d[16..].copy_from_slice(&p.ifindex.to_ne_bytes());
        put(
            out,
            &mut used,
            &mut trunc,
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            &d,
        );
    }
    if let Some(p) = info.v4 {
        let mut d = [0u8; IN_PKTINFO];
        d[..4].copy_from_slice(&p.ifindex.to_ne_bytes());
        d[4..8].copy_from_slice(&p.spec_dst.octets());
        d[8..].copy_from_slice(&p.addr.octets());
        put(
            out,
            &mut used,
            &mut trunc,
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            &d,
        );
    }
    (used, trunc)
}

/// The kernel's `put_cmsg`.
fn put(out: &mut [u8], used: &mut usize, trunc: &mut bool, level: i32, ty: i32, data: &[u8]) {
    let rest = out.get_mut(*used..).unwrap_or_default();
    if rest.len() < HDR {
        *trunc = true;
        return;
    }
    let mut len = cmsg_len(data.len());
    if rest.len() < len {
        *trunc = true;
        len = rest.len();
    }
    rest[..WORD].copy_from_slice(&len.to_ne_bytes());
    rest[WORD..WORD + 4].copy_from_slice(&level.to_ne_bytes());
    rest[WORD + 4..HDR].copy_from_slice(&ty.to_ne_bytes());
    let n = len - align(HDR);
    rest[align(HDR)..len].copy_from_slice(&data[..n]);
    *used += cmsg_space(data.len()).min(rest.len());
}

/// Which of the kernel's send paths a datagram takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `ip_cmsg_send` (an IPv4 destination; `mapped`: on an IPv6 socket).
    V4 { mapped: bool },
    /// `ip6_datagram_send_ctl`.
    V6,
    /// A connected IPv6 socket: either.
    Unknown,
}

/// Parses the control messages of a `sendmsg` on a UDP INS socket into
/// the packet information to carry (rules in the module docs). `v6`: an
/// `AF_INET6` socket; `dest`: the call's address, if any.
pub fn parse_send(control: &[u8], v6: bool, dest: Option<SocketAddr>) -> Result<PktInfo, Errno> {
    let path = match (v6, dest) {
        (false, _) => Path::V4 { mapped: false },
        (true, Some(SocketAddr::V6(a))) if a.ip().to_ipv4_mapped().is_some() => {
            Path::V4 { mapped: true }
        }
        (true, Some(_)) => Path::V6,
        (true, None) => Path::Unknown,
    };
    let mut info = PktInfo::NONE;
    walk(control, |level, ty, len, data| {
        one(path, level, ty, len, data, &mut info)
    })?;
    Ok(info)
}

/// Calls `f(level, type, cmsg_len, data)` for each control message in
/// order, as the kernel's `for_each_cmsghdr` walks them: a header whose
/// `cmsg_len` is below the header size or past the buffer is `EINVAL`
/// (`CMSG_OK`); the first error ends the walk.
fn walk(
    control: &[u8],
    mut f: impl FnMut(i32, i32, usize, &[u8]) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let mut off = 0;
    while control.len().saturating_sub(off) >= HDR {
        let h = &control[off..];
        let mut w = [0u8; WORD];
        w.copy_from_slice(&h[..WORD]);
        let len = usize::from_ne_bytes(w);
        if len < HDR || len > h.len() {
            return Err(Errno::EINVAL);
        }
        let level = i32::from_ne_bytes([h[WORD], h[WORD + 1], h[WORD + 2], h[WORD + 3]]);
        let ty = i32::from_ne_bytes([h[WORD + 4], h[WORD + 5], h[WORD + 6], h[WORD + 7]]);
        let data = h.get(align(HDR)..len).unwrap_or_default();
        f(level, ty, len, data)?;
        // The next header, if a whole one fits after this message.
        match off.checked_add(align(len)) {
            Some(next) => off = next,
            None => break,
        }
    }
    Ok(())
}

/// Linux's `SOF_TIMESTAMPING_TX_RECORD_MASK`: `TX_HARDWARE`,
/// `TX_SOFTWARE`, `TX_SCHED`, `TX_ACK`, `TX_COMPLETION`.
const TX_RECORD_MASK: u32 = 1 | 2 | 1 << 8 | 1 << 9 | 1 << 18;

/// The highest `SO_PRIORITY` a process without `CAP_NET_ADMIN` or
/// `CAP_NET_RAW` may ask for.
const PRIO_UNPRIVILEGED_MAX: u32 = 6;

/// Checks the control messages of a `sendmsg` on a TCP INS socket as
/// Linux's `tcp_sendmsg_locked` (`sock_cmsg_send`) does; the data is then
/// sent with none. `net_cap`: whether the process has `CAP_NET_ADMIN` or
/// `CAP_NET_RAW` (asked only when a message needs it).
///
/// * A malformed header is `EINVAL`; messages of levels other than
///   `SOL_SOCKET` are skipped.
/// * `SCM_RIGHTS` and `SCM_CREDENTIALS` are ignored: no descriptor or
///   credential leaves the program (a Unix socket would pass them).
/// * `SO_MARK` (privileged, length `CMSG_LEN(4)`), `SO_PRIORITY` (length
///   `CMSG_LEN(4)`; above 6 privileged) are checked and then have no
///   effect, as on Linux, whose TCP sends by the socket's own mark and
///   priority.
/// * `SO_TIMESTAMPING` (length `CMSG_LEN(4)`, transmit-record flags only)
///   asks for transmit timestamps INS does not carry: with any flag set
///   the call fails with `EOPNOTSUPP` (not silently without them), unless
///   another message fails Linux's checks (`EINVAL` first).
/// * `SCM_TXTIME` is `EINVAL`, as on a socket without `SO_TXTIME` (the
///   shim does not track that option; on a socket that set it Linux
///   accepts the message and ignores it).
/// * Any other `SOL_SOCKET` type is `EINVAL` (Linux TCP answers every
///   failure of these checks with `EINVAL`, a missing privilege too).
pub fn check_stream_send(control: &[u8], net_cap: impl Fn() -> bool) -> Result<(), Errno> {
    let mut unsupported = false;
    walk(control, |level, ty, len, data| {
        if level != libc::SOL_SOCKET {
            return Ok(());
        }
        let u32_value = || {
            (len == cmsg_len(4)).then(|| u32::from_ne_bytes([data[0], data[1], data[2], data[3]]))
        };
        let ok = match ty {
            libc::SCM_RIGHTS | libc::SCM_CREDENTIALS => true,
            libc::SO_MARK => net_cap() && u32_value().is_some(),
            libc::SO_PRIORITY => {
                u32_value().is_some_and(|p| p <= PRIO_UNPRIVILEGED_MAX || net_cap())
            }
            SO_TIMESTAMPING_OLD | libc::SO_TIMESTAMPING_NEW => match u32_value() {
                Some(f) if f & !TX_RECORD_MASK == 0 => {
                    unsupported |= f != 0;
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if ok { Ok(()) } else { Err(Errno::EINVAL) }
    })?;
    if unsupported {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    Ok(())
}

/// One control message of a send.
fn one(
    path: Path,
    level: i32,
    ty: i32,
    len: usize,
    data: &[u8],
    info: &mut PktInfo,
) -> Result<(), Errno> {
    let unsupported = Err(Errno(libc::EOPNOTSUPP));
    let v4_rules = matches!(path, Path::V4 { .. } | Path::Unknown);
    let v6_rules = matches!(path, Path::V6 | Path::Unknown);
    match level {
        libc::SOL_SOCKET => match ty {
            libc::SCM_RIGHTS | libc::SCM_CREDENTIALS => Ok(()),
            libc::SO_MARK
            | libc::SO_PRIORITY
            | SO_TIMESTAMPING_OLD
            | libc::SO_TIMESTAMPING_NEW
            | libc::SCM_TXTIME => unsupported,
            _ => Err(Errno::EINVAL),
        },
        libc::IPPROTO_IP if v4_rules => match ty {
            libc::IP_PKTINFO => {
                if len != cmsg_len(IN_PKTINFO) {
                    return Err(Errno::EINVAL);
                }
                let b = |i: usize| [data[i], data[i + 1], data[i + 2], data[i + 3]];
                info.v4 = Some(PktInfo4 {
                    ifindex: u32::from_ne_bytes(b(0)),
                    spec_dst: Ipv4Addr::from(b(4)),
                    addr: Ipv4Addr::from(b(8)),
                });
                Ok(())
            }
            libc::IP_TTL | libc::IP_TOS | libc::IP_RETOPTS | IP_PROTOCOL => unsupported,
            _ => Err(Errno::EINVAL),
        },
        libc::IPPROTO_IPV6 if ty == libc::IPV6_PKTINFO || ty == libc::IPV6_2292PKTINFO => {
            if path == (Path::V4 { mapped: false }) {
                // An IPv4 socket skips SOL_IPV6.
                return Ok(());
            }
            if len < cmsg_len(IN6_PKTINFO) {
                return Err(Errno::EINVAL);
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&data[..16]);
            let addr = Ipv6Addr::from(a);
            if path == (Path::V4 { mapped: true }) && addr.to_ipv4_mapped().is_none() {
                return Err(Errno::EINVAL);
            }
            info.v6 = Some(PktInfo6 {
                ifindex: u32::from_ne_bytes([data[16], data[17], data[18], data[19]]),
                addr,
            });
            Ok(())
        }
        libc::IPPROTO_IPV6 if v6_rules => match ty {
            libc::IPV6_FLOWINFO
            | libc::IPV6_2292HOPOPTS
            | libc::IPV6_HOPOPTS
            | libc::IPV6_2292DSTOPTS
            | libc::IPV6_DSTOPTS
            | libc::IPV6_RTHDRDSTOPTS
            | libc::IPV6_2292RTHDR
            | libc::IPV6_RTHDR
            | libc::IPV6_2292HOPLIMIT
            | libc::IPV6_HOPLIMIT
            | libc::IPV6_TCLASS
            | libc::IPV6_DONTFRAG => unsupported,
            _ => Err(Errno::EINVAL),
        },
        // Other levels, and the family the destination does not use.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(level: i32, ty: i32, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; cmsg_space(data.len())];
        v[..WORD].copy_from_slice(&cmsg_len(data.len()).to_ne_bytes());
        v[WORD..WORD + 4].copy_from_slice(&level.to_ne_bytes());
        v[WORD + 4..HDR].copy_from_slice(&ty.to_ne_bytes());
        v[align(HDR)..align(HDR) + data.len()].copy_from_slice(data);
        v
    }

    fn info4() -> PktInfo4 {
        PktInfo4 {
            ifindex: 1,
            spec_dst: Ipv4Addr::new(127, 0, 0, 9),
            addr: Ipv4Addr::new(127, 0, 0, 1),
        }
    }

    fn in_pktinfo(p: &PktInfo4) -> Vec<u8> {
        let mut d = p.ifindex.to_ne_bytes().to_vec();
        d.extend_from_slice(&p.spec_dst.octets());
        d.extend_from_slice(&p.addr.octets());
        d
    }

    fn in6_pktinfo(p: &PktInfo6) -> Vec<u8> {
        let mut d = p.addr.octets().to_vec();
        d.extend_from_slice(&p.ifindex.to_ne_bytes());
        d
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn sizes_are_linux_ones() {
        // CMSG_LEN / CMSG_SPACE of glibc on 64-bit Linux.
        assert_eq!((cmsg_len(IN_PKTINFO), cmsg_space(IN_PKTINFO)), (28, 32));
        assert_eq!((cmsg_len(IN6_PKTINFO), cmsg_space(IN6_PKTINFO)), (36, 40));
        assert_eq!(IN_PKTINFO, std::mem::size_of::<libc::in_pktinfo>());
        assert_eq!(IN6_PKTINFO, std::mem::size_of::<libc::in6_pktinfo>());
        assert_eq!(MAX_RECV, 72);
    }

    #[test]
    fn send_v4() {
        let d = in_pktinfo(&info4());
        let got = parse_send(&msg(libc::IPPROTO_IP, libc::IP_PKTINFO, &d), false, None);
        assert_eq!(
            got,
            Ok(PktInfo {
                v4: Some(info4()),
                v6: None
            })
        );
        // Exact length only.
        let mut long = d.clone();
        long.push(0);
        let m = msg(libc::IPPROTO_IP, libc::IP_PKTINFO, &long);
        assert_eq!(parse_send(&m, false, None), Err(Errno::EINVAL));
        // cmsg_len below a header, or past the buffer.
        let mut m = msg(libc::IPPROTO_IP, libc::IP_PKTINFO, &d);
        m[..WORD].copy_from_slice(&8usize.to_ne_bytes());
        assert_eq!(parse_send(&m, false, None), Err(Errno::EINVAL));
        m[..WORD].copy_from_slice(&100usize.to_ne_bytes());
        assert_eq!(parse_send(&m, false, None), Err(Errno::EINVAL));
        // Short buffer: no header at all is no message.
        assert_eq!(parse_send(&m[..HDR - 1], false, None), Ok(PktInfo::NONE));
        // Unknown SOL_IP type; known but not carried; other levels skipped.
        let m = msg(libc::IPPROTO_IP, 99, &[0; 4]);
        assert_eq!(parse_send(&m, false, None), Err(Errno::EINVAL));
        let m = msg(libc::IPPROTO_IP, libc::IP_TTL, &64i32.to_ne_bytes());
        assert_eq!(parse_send(&m, false, None), Err(Errno(libc::EOPNOTSUPP)));
        let m = msg(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &[0; 4]);
        assert_eq!(parse_send(&m, false, None), Ok(PktInfo::NONE));
        let m = msg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &[0; 4]);
        assert_eq!(parse_send(&m, false, None), Ok(PktInfo::NONE));
        let m = msg(libc::SOL_SOCKET, 999, &[0; 4]);
        assert_eq!(parse_send(&m, false, None), Err(Errno::EINVAL));
    }

    #[test]
    fn send_v6() {
        let p6 = PktInfo6 {
            ifindex: 3,
            addr: Ipv6Addr::LOCALHOST,
        };
        let dst6: SocketAddr = "[::1]:53".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:53".parse().unwrap();
        let m = msg(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &in6_pktinfo(&p6));
        let want = PktInfo {
            v4: None,
            v6: Some(p6),
        };
        assert_eq!(parse_send(&m, true, Some(dst6)), Ok(want));
        assert_eq!(parse_send(&m, true, None), Ok(want));
        // To a mapped destination the address must be mapped.
        assert_eq!(parse_send(&m, true, Some(mapped)), Err(Errno::EINVAL));
        let short = msg(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &[0; 19]);
        assert_eq!(parse_send(&short, true, Some(dst6)), Err(Errno::EINVAL));
        // SOL_IP is skipped towards an IPv6 destination, applied to a
        // mapped one.
        let v4 = msg(libc::IPPROTO_IP, libc::IP_PKTINFO, &in_pktinfo(&info4()));
        assert_eq!(parse_send(&v4, true, Some(dst6)), Ok(PktInfo::NONE));
        assert_eq!(
            parse_send(&v4, true, Some(mapped)).unwrap().v4,
            Some(info4())
        );
        let hl = msg(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, &[0; 4]);
        assert_eq!(
            parse_send(&hl, true, Some(dst6)),
            Err(Errno(libc::EOPNOTSUPP))
        );
        assert_eq!(parse_send(&hl, true, Some(mapped)), Ok(PktInfo::NONE));
        // Two messages, the second after the first's aligned length.
        let mut both = m.clone();
        both.extend_from_slice(&v4);
        let got = parse_send(&both, true, None).unwrap();
        assert_eq!((got.v4, got.v6), (Some(info4()), Some(p6)));
    }

    #[test]
    fn recv_and_truncation() {
        let info = PktInfo {
            v4: Some(info4()),
            v6: Some(PktInfo6 {
                ifindex: 1,
                addr: "::ffff:127.0.0.1".parse().unwrap(),
            }),
        };
        let mut out = [0u8; MAX_RECV];
        assert_eq!(put_recv(&info, &mut out), (MAX_RECV, false));
        let six = msg(
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            &in6_pktinfo(&info.v6.unwrap()),
        );
        let four = msg(libc::IPPROTO_IP, libc::IP_PKTINFO, &in_pktinfo(&info4()));
        assert_eq!(&out[..six.len()], &six[..]);
        // The kernel does not write padding: compare the message bytes.
        assert_eq!(&out[six.len()..six.len() + 28], &four[..28]);
        // Room for the first only: the second is cut to the 24 bytes left.
        let mut out = [0u8; 64];
        let (used, trunc) = put_recv(&info, &mut out);
        assert_eq!((used, trunc), (64, true));
        assert_eq!(usize::from_ne_bytes(out[40..48].try_into().unwrap()), 24);
        // Less than a header: nothing.
        let mut out = [0u8; 15];
        assert_eq!(put_recv(&info, &mut out), (0, true));
        let mut out = [0u8; 0];
        assert_eq!(put_recv(&PktInfo::NONE, &mut out), (0, false));
    }

    /// TCP: Linux's `sock_cmsg_send` rules, every failure `EINVAL`;
    /// transmit timestamps INS does not carry are `EOPNOTSUPP` only when
    /// Linux would have accepted the whole buffer.
    #[test]
    fn stream_send_rules() {
        let check = |c: &[u8], cap: bool| check_stream_send(c, || cap).map_err(|e| e.0);
        let fd = 7i32.to_ne_bytes();
        let rights = msg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &fd);
        let creds = msg(libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &[0; 12]);
        let ttl = msg(libc::IPPROTO_IP, libc::IP_TTL, &[0; 4]);
        let bogus_level = msg(12345, 1, &[]);
        for c in [&rights, &creds, &ttl, &bogus_level, &[][..].to_vec()] {
            assert_eq!(check(c, false), Ok(()), "{c:?}");
        }
        assert_eq!(
            check(&[rights.clone(), ttl.clone()].concat(), false),
            Ok(())
        );
        // Malformed: cmsg_len below a header, or past the buffer.
        let mut short = rights.clone();
        short[..WORD].copy_from_slice(&8usize.to_ne_bytes());
        let mut long = ttl.clone();
        long[..WORD].copy_from_slice(&64usize.to_ne_bytes());
        for c in [&short, &long] {
            assert_eq!(check(c, true), Err(libc::EINVAL));
        }
        // A buffer shorter than a header is no message.
        assert_eq!(check(&[0u8; HDR - 1], false), Ok(()));
        let four = |ty, v: u32| msg(libc::SOL_SOCKET, ty, &v.to_ne_bytes());
        let mark = four(libc::SO_MARK, 5);
        assert_eq!(check(&mark, true), Ok(()));
        assert_eq!(check(&mark, false), Err(libc::EINVAL), "unprivileged");
        let mark8 = msg(libc::SOL_SOCKET, libc::SO_MARK, &[0; 8]);
        assert_eq!(check(&mark8, true), Err(libc::EINVAL));
        assert_eq!(check(&four(libc::SO_PRIORITY, 6), false), Ok(()));
        assert_eq!(check(&four(libc::SO_PRIORITY, 7), false), Err(libc::EINVAL));
        assert_eq!(check(&four(libc::SO_PRIORITY, 7), true), Ok(()));
        let ts = four(libc::SO_TIMESTAMPING_NEW, 2);
        assert_eq!(check(&ts, false), Err(libc::EOPNOTSUPP));
        assert_eq!(check(&four(SO_TIMESTAMPING_OLD, 0), false), Ok(()));
        // A receive flag is not a transmit-record flag.
        assert_eq!(
            check(&four(SO_TIMESTAMPING_OLD, 4), false),
            Err(libc::EINVAL)
        );
        // Linux's failure wins over what INS cannot carry, in any order.
        assert_eq!(
            check(&[ts.clone(), short.clone()].concat(), false),
            Err(libc::EINVAL)
        );
        let txtime = msg(libc::SOL_SOCKET, libc::SCM_TXTIME, &[0; 8]);
        assert_eq!(check(&txtime, true), Err(libc::EINVAL));
        assert_eq!(check(&four(libc::SO_KEEPALIVE, 1), true), Err(libc::EINVAL));
    }
}
