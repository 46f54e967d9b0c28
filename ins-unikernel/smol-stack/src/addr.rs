//! Socket addresses between the Linux view (an `AF_INET6` socket sees IPv4
//! peers as v4-mapped addresses) and smoltcp's (plain IPv4 or IPv6).

use core::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

use ins_core::Errno;
use ins_core::stack::Family;

/// Which IP versions a socket takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Versions {
    V4,
    V6,
    Both,
}

impl Versions {
    pub(crate) fn of(family: Family, v6only: bool) -> Versions {
        match (family, v6only) {
            (Family::Inet, _) => Versions::V4,
            (Family::Inet6, true) => Versions::V6,
            (Family::Inet6, false) => Versions::Both,
        }
    }

    pub(crate) fn admits(self, ip: IpAddr) -> bool {
        matches!(
            (self, ip),
            (Versions::Both, _) | (Versions::V4, IpAddr::V4(_)) | (Versions::V6, IpAddr::V6(_))
        )
    }

    pub(crate) fn overlaps(self, other: Versions) -> bool {
        self == Versions::Both || other == Versions::Both || self == other
    }
}

/// The address smoltcp uses for `a`, given by the program to a socket of
/// `family`; `wrong` is the errno for an address of the other family.
pub(crate) fn to_stack(
    family: Family,
    v6only: bool,
    a: SocketAddr,
    wrong: Errno,
) -> Result<SocketAddr, Errno> {
    match (family, a) {
        (Family::Inet, SocketAddr::V4(_)) => Ok(a),
        (Family::Inet6, SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
            Some(v4) if !v6only => Ok(SocketAddr::new(IpAddr::V4(v4), v6.port())),
            Some(_) => Err(Errno::ENETUNREACH),
            None => Ok(a),
        },
        _ => Err(wrong),
    }
}

/// The address the program sees for smoltcp's `a` on a socket of `family`.
pub(crate) fn to_user(family: Family, a: SocketAddr) -> SocketAddr {
    match (family, a) {
        (Family::Inet6, SocketAddr::V4(v4)) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        _ => a,
    }
}

/// The wildcard address of `family` with `port`.
pub(crate) fn unspecified(family: Family, port: u16) -> SocketAddr {
    match family {
        Family::Inet => SocketAddr::new(IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED), port),
        Family::Inet6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let m: SocketAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        let v4: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(to_stack(Family::Inet6, false, m, Errno::EINVAL), Ok(v4));
        assert_eq!(
            to_stack(Family::Inet6, true, m, Errno::EINVAL),
            Err(Errno::ENETUNREACH)
        );
        assert_eq!(to_stack(Family::Inet6, false, v6, Errno::EINVAL), Ok(v6));
        assert_eq!(
            to_stack(Family::Inet6, false, v4, Errno::EAFNOSUPPORT),
            Err(Errno::EAFNOSUPPORT)
        );
        assert_eq!(
            to_stack(Family::Inet, false, v6, Errno::EINVAL),
            Err(Errno::EINVAL)
        );
        assert_eq!(to_user(Family::Inet6, v4), m);
        assert_eq!(to_user(Family::Inet, v4), v4);
        assert!(Versions::Both.overlaps(Versions::V4));
        assert!(!Versions::V6.overlaps(Versions::V4));
        assert!(!Versions::V4.admits("::1".parse().unwrap()));
    }
}
