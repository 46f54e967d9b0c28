//! `sockaddr` bytes ⇄ [`SocketAddr`], with the kernel's checks.
//!
//! Input follows Linux (`inet_bind`, `inet_stream_connect`,
//! `tcp_v4_connect`, `tcp_v6_connect`, `__ip6_datagram_connect`,
//! `udp_sendmsg`, `udpv6_sendmsg`): the minimum length per family first
//! (`EINVAL`), then the family (`EAFNOSUPPORT`, or `EINVAL` where Linux
//! says so). Output follows `move_addr_to_user`: copy
//! `min(buffer length, real length)` bytes and report the real length.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::errno::Errno;

/// `sizeof(struct sockaddr_in)`.
pub const SIN_LEN: usize = 16;
/// `sizeof(struct sockaddr_in6)`.
pub const SIN6_LEN: usize = 28;
/// `SIN6_LEN_RFC2133`: a `sockaddr_in6` without `sin6_scope_id`.
pub const SIN6_LEN_RFC2133: usize = 24;
/// `sizeof(struct sockaddr_storage)`: the kernel refuses longer input.
pub const MAX_ADDR_LEN: usize = 128;

const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;
const AF_UNSPEC: u16 = libc::AF_UNSPEC as u16;

/// What an address is for; the kernel checks each differently.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Purpose {
    /// `bind()`.
    Bind,
    /// `connect()`.
    Connect,
    /// The destination of `sendto()`/`sendmsg()` on a datagram socket.
    SendTo,
}

/// A parsed address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Parsed {
    /// An Internet address.
    Addr(SocketAddr),
    /// `AF_UNSPEC`: `connect()` dissolves the association; on an IPv6
    /// datagram socket `sendto()` treats it as "no address".
    Unspec,
}

fn family(b: &[u8]) -> u16 {
    match b {
        [a, c, ..] => u16::from_ne_bytes([*a, *c]),
        _ => 0,
    }
}

fn v4(b: &[u8]) -> SocketAddr {
    let port = u16::from_be_bytes([b[2], b[3]]);
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(b[4], b[5], b[6], b[7]),
        port,
    ))
}

fn v6(b: &[u8]) -> SocketAddr {
    let port = u16::from_be_bytes([b[2], b[3]]);
    let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&b[8..24]);
    let scope = match b.get(24..28) {
        Some(s) => u32::from_ne_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    };
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope))
}

/// Parses the `len` bytes an application passed for a socket of the given
/// kind, as Linux would.
pub fn parse(b: &[u8], sock_v6: bool, dgram: bool, purpose: Purpose) -> Result<Parsed, Errno> {
    let einval = Err(Errno::EINVAL);
    let eafnosupport = Err(Errno::EAFNOSUPPORT);
    if b.len() > MAX_ADDR_LEN {
        return einval;
    }
    let fam = family(b);
    match (purpose, sock_v6) {
        (Purpose::Bind, false) => {
            if b.len() < SIN_LEN {
                return einval;
            }
            let a = v4(b);
            match fam {
                AF_INET => Ok(Parsed::Addr(a)),
                AF_UNSPEC if a.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED) => Ok(Parsed::Addr(a)),
                _ => eafnosupport,
            }
        }
        (Purpose::Bind, true) => {
            if b.len() < SIN6_LEN_RFC2133 {
                return einval;
            }
            if fam != AF_INET6 {
                return eafnosupport;
            }
            Ok(Parsed::Addr(v6(b)))
        }
        (Purpose::Connect, _) => {
            if b.len() < 2 {
                return einval;
            }
            if fam == AF_UNSPEC {
                return Ok(Parsed::Unspec);
            }
            if !sock_v6 || (dgram && fam == AF_INET) {
                if b.len() < SIN_LEN {
                    return einval;
                }
                if fam != AF_INET {
                    return eafnosupport;
                }
                return Ok(Parsed::Addr(v4(b)));
            }
            if b.len() < SIN6_LEN_RFC2133 {
                return einval;
            }
            if fam != AF_INET6 {
                return eafnosupport;
            }
            Ok(Parsed::Addr(v6(b)))
        }
        (Purpose::SendTo, false) => {
            if b.len() < SIN_LEN {
                return einval;
            }
            match fam {
                AF_INET | AF_UNSPEC => Ok(Parsed::Addr(v4(b))),
                _ => eafnosupport,
            }
        }
        (Purpose::SendTo, true) => {
            if b.len() < 2 {
                return einval;
            }
            match fam {
                AF_INET6 if b.len() >= SIN6_LEN_RFC2133 => Ok(Parsed::Addr(v6(b))),
                AF_INET if b.len() >= SIN_LEN => Ok(Parsed::Addr(v4(b))),
                AF_UNSPEC => Ok(Parsed::Unspec),
                _ => einval,
            }
        }
    }
}

/// Encodes `sa` as a `sockaddr_in`/`sockaddr_in6`; returns the buffer and
/// the real length.
pub fn encode(sa: &SocketAddr) -> ([u8; SIN6_LEN], usize) {
    let mut out = [0u8; SIN6_LEN];
    match sa {
        SocketAddr::V4(a) => {
            out[0..2].copy_from_slice(&AF_INET.to_ne_bytes());
            out[2..4].copy_from_slice(&a.port().to_be_bytes());
            out[4..8].copy_from_slice(&a.ip().octets());
            (out, SIN_LEN)
        }
        SocketAddr::V6(a) => {
            out[0..2].copy_from_slice(&AF_INET6.to_ne_bytes());
            out[2..4].copy_from_slice(&a.port().to_be_bytes());
            out[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            out[8..24].copy_from_slice(&a.ip().octets());
            out[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            (out, SIN6_LEN)
        }
    }
}

/// The address of an unbound socket of the given family (`0.0.0.0:0` or
/// `[::]:0`), what Linux's `getsockname` reports before `bind`.
pub fn unspecified(v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0))
    } else {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
    }
}

/// How many bytes of a `real`-byte address go into a caller's buffer whose
/// `*addrlen` was `avail` (`EINVAL` for a negative length, as the kernel).
pub fn copy_len(avail: i32, real: usize) -> Result<usize, Errno> {
    let avail = usize::try_from(avail).map_err(|_| Errno::EINVAL)?;
    Ok(avail.min(real))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn round_trip() {
        for s in ["127.0.0.1:80", "[::1]:8080", "[fe80::1%3]:1", "0.0.0.0:0"] {
            let a = sa(s);
            let (buf, len) = encode(&a);
            let v6 = a.is_ipv6();
            assert_eq!(len, if v6 { SIN6_LEN } else { SIN_LEN });
            for p in [Purpose::Bind, Purpose::Connect, Purpose::SendTo] {
                assert_eq!(parse(&buf[..len], v6, true, p), Ok(Parsed::Addr(a)));
            }
        }
        let a = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 0x12345, 7));
        let (buf, len) = encode(&a);
        // flowinfo is in network order, scope id in host order.
        assert_eq!(&buf[4..8], &0x12345u32.to_be_bytes());
        assert_eq!(
            parse(&buf[..len], true, false, Purpose::Connect),
            Ok(Parsed::Addr(a))
        );
        // Without the scope id (RFC 2133 length) the scope is 0.
        let short = parse(&buf[..SIN6_LEN_RFC2133], true, false, Purpose::Connect).unwrap();
        assert_eq!(
            short,
            Parsed::Addr(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::LOCALHOST,
                9,
                0x12345,
                0
            )))
        );
    }

    #[test]
    fn kernel_checks() {
        let (v4b, _) = encode(&sa("10.0.0.1:5"));
        let (v6b, _) = encode(&sa("[::1]:5"));
        let e = |x| Err(Errno(x));
        // Too short.
        assert_eq!(
            parse(&v4b[..15], false, false, Purpose::Bind),
            e(libc::EINVAL)
        );
        assert_eq!(
            parse(&v6b[..23], true, false, Purpose::Bind),
            e(libc::EINVAL)
        );
        assert_eq!(
            parse(&v4b[..1], false, false, Purpose::Connect),
            e(libc::EINVAL)
        );
        assert_eq!(
            parse(&[0u8; 129], false, false, Purpose::Bind),
            e(libc::EINVAL)
        );
        // Wrong family.
        assert_eq!(
            parse(&v6b, false, false, Purpose::Bind),
            e(libc::EAFNOSUPPORT)
        );
        assert_eq!(
            parse(&v4b[..16], true, false, Purpose::Bind),
            e(libc::EINVAL)
        ); // 16 < 24
        let mut v4long = [0u8; 28];
        v4long[..16].copy_from_slice(&v4b[..16]);
        assert_eq!(
            parse(&v4long, true, false, Purpose::Bind),
            e(libc::EAFNOSUPPORT)
        );
        assert_eq!(
            parse(&v4long, true, false, Purpose::Connect),
            e(libc::EAFNOSUPPORT)
        );
        // An IPv6 datagram socket may connect/send to an IPv4 address.
        assert_eq!(
            parse(&v4b[..16], true, true, Purpose::Connect),
            Ok(Parsed::Addr(sa("10.0.0.1:5")))
        );
        assert_eq!(
            parse(&v4b[..16], true, true, Purpose::SendTo),
            Ok(Parsed::Addr(sa("10.0.0.1:5")))
        );
        // AF_UNSPEC.
        let mut unspec = [0u8; 16];
        assert_eq!(
            parse(&unspec, false, false, Purpose::Connect),
            Ok(Parsed::Unspec)
        );
        assert_eq!(
            parse(&unspec, true, true, Purpose::SendTo),
            Ok(Parsed::Unspec)
        );
        assert_eq!(
            parse(&unspec, false, true, Purpose::Bind),
            Ok(Parsed::Addr(sa("0.0.0.0:0")))
        );
        unspec[4] = 1;
        assert_eq!(
            parse(&unspec, false, true, Purpose::Bind),
            e(libc::EAFNOSUPPORT)
        );
        // Unknown family on an IPv6 sendto is EINVAL, on IPv4 EAFNOSUPPORT.
        let mut unix = [0u8; 28];
        unix[0..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(parse(&unix, true, true, Purpose::SendTo), e(libc::EINVAL));
        assert_eq!(
            parse(&unix, false, true, Purpose::SendTo),
            e(libc::EAFNOSUPPORT)
        );
    }

    #[test]
    fn truncation() {
        assert_eq!(copy_len(-1, 16), Err(Errno::EINVAL));
        assert_eq!(copy_len(0, 16), Ok(0));
        assert_eq!(copy_len(8, 16), Ok(8));
        assert_eq!(copy_len(128, 28), Ok(28));
        assert_eq!(unspecified(true), sa("[::]:0"));
        assert_eq!(unspecified(false), sa("0.0.0.0:0"));
    }
}
