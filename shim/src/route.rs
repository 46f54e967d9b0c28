//! Which `socket()` calls INS takes.

use crate::errno::Errno;

/// `SOCK_TYPE_MASK`.
const TYPE_MASK: i32 = 0xf;
/// `SOCK_MAX`: types at or above it are invalid.
const SOCK_MAX: i32 = 11;

/// The decision for one `socket(domain, type, protocol)` call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Route {
    /// Not Internet-facing: the real `socket()`.
    Host,
    /// An INS socket.
    Ins {
        /// `AF_INET6`.
        v6: bool,
        /// `SOCK_DGRAM`.
        dgram: bool,
        /// The type without flags.
        base_type: i32,
        /// `SOCK_NONBLOCK` was given.
        nonblock: bool,
        /// `SOCK_CLOEXEC` was given.
        cloexec: bool,
    },
    /// Refused without touching the host stack.
    Deny(Errno),
}

/// Decides. Internet raw sockets and `AF_PACKET` get `EPERM` (what an
/// unprivileged process sees), ICMP datagram ("ping") sockets `EACCES`
/// (what Linux gives outside `ping_group_range`), other Internet types and
/// protocols `EPROTONOSUPPORT`, invalid types or flags `EINVAL`.
pub fn route(domain: i32, ty: i32, protocol: i32) -> Route {
    let v6 = match domain {
        libc::AF_INET => false,
        libc::AF_INET6 => true,
        libc::AF_PACKET => return Route::Deny(Errno(libc::EPERM)),
        _ => return Route::Host,
    };
    let base = ty & TYPE_MASK;
    let flags = ty & !TYPE_MASK;
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 || !(1..SOCK_MAX).contains(&base) {
        return Route::Deny(Errno::EINVAL);
    }
    let ins = |dgram| Route::Ins {
        v6,
        dgram,
        base_type: base,
        nonblock: flags & libc::SOCK_NONBLOCK != 0,
        cloexec: flags & libc::SOCK_CLOEXEC != 0,
    };
    match (base, protocol) {
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => ins(false),
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => ins(true),
        (libc::SOCK_DGRAM, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6) => {
            Route::Deny(Errno(libc::EACCES))
        }
        (libc::SOCK_RAW, _) => Route::Deny(Errno(libc::EPERM)),
        _ => Route::Deny(Errno(libc::EPROTONOSUPPORT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        use libc::*;
        assert_eq!(route(AF_UNIX, SOCK_STREAM, 0), Route::Host);
        assert_eq!(route(AF_NETLINK, SOCK_RAW, 0), Route::Host);
        assert_eq!(
            route(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, IPPROTO_TCP),
            Route::Ins {
                v6: true,
                dgram: false,
                base_type: SOCK_STREAM,
                nonblock: true,
                cloexec: false
            }
        );
        assert_eq!(
            route(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0),
            Route::Ins {
                v6: false,
                dgram: true,
                base_type: SOCK_DGRAM,
                nonblock: false,
                cloexec: true
            }
        );
        assert_eq!(
            route(AF_INET, SOCK_STREAM, IPPROTO_UDP),
            Route::Deny(Errno(EPROTONOSUPPORT))
        );
        assert_eq!(
            route(AF_INET, SOCK_RAW, IPPROTO_ICMP),
            Route::Deny(Errno(EPERM))
        );
        assert_eq!(
            route(AF_INET, SOCK_DGRAM, IPPROTO_ICMP),
            Route::Deny(Errno(EACCES))
        );
        assert_eq!(
            route(AF_INET, SOCK_SEQPACKET, 0),
            Route::Deny(Errno(EPROTONOSUPPORT))
        );
        assert_eq!(
            route(AF_INET, SOCK_STREAM | 0x100, 0),
            Route::Deny(Errno(EINVAL))
        );
        assert_eq!(route(AF_INET, 0, 0), Route::Deny(Errno(EINVAL)));
        assert_eq!(route(AF_PACKET, SOCK_RAW, 0), Route::Deny(Errno(EPERM)));
    }
}
