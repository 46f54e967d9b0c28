//! The port table: which app sockets hold which `(type, port)`, so that two
//! app sockets get `EADDRINUSE` from the driver as they would from one
//! Linux kernel, although each may live on a different instance (every
//! instance has its own port space, and listeners are bound on all of them
//! with `SO_REUSEPORT`).
//!
//! A socket enters the table when its bind succeeds with a known port (or
//! when the port the kernel chose for port 0 or an autobind is learned,
//! see [`bind`](crate::bind) and [`listener`](crate::listener)) and leaves
//! it when the app lets go of it (`app_eof` with hang-up: as on Linux, the
//! port is free again at once, although the instances close their sockets
//! later) or in `forget`.
//!
//! The rules are Linux's (`inet_csk_bind_conflict`, `udp_lib_lport_inuse`):
//! TCP and UDP ports are separate; two bindings clash when their addresses
//! overlap — equal, or one is a wildcard of a family the other receives,
//! where an IPv6 socket bound to `[::]` receives IPv4 too unless
//! `IPV6_V6ONLY` (default `net.ipv6.bindv6only`) — and they may not share:
//! both `SO_REUSEPORT`, or both `SO_REUSEADDR` with the existing one not
//! a TCP listener. `listen()` checks again, as Linux's does.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ins_protocol::msg::SockType;

use crate::socket::Sock;
use crate::{Driver, Handle, opt};

/// `(socket type, port)`.
pub(crate) type PortKey = (u16, u16);

/// Bound `(type, port)` → the sockets bound to it.
#[derive(Debug, Default)]
pub(crate) struct PortTable {
    by_port: BTreeMap<PortKey, Vec<Handle>>,
}

impl PortTable {
    /// Records that `sock` is bound to `key`.
    pub(crate) fn add(&mut self, key: PortKey, sock: Handle) {
        self.by_port.entry(key).or_default().push(sock);
    }

    /// Forgets `sock`'s binding to `key`.
    pub(crate) fn remove(&mut self, key: PortKey, sock: Handle) {
        if let Some(v) = self.by_port.get_mut(&key) {
            v.retain(|&h| h != sock);
            if v.is_empty() {
                self.by_port.remove(&key);
            }
        }
    }

    fn users(&self, key: PortKey) -> &[Handle] {
        self.by_port.get(&key).map_or(&[], Vec::as_slice)
    }
}

/// What one binding covers: the IPv4 part (an AF_INET socket, a v4-mapped
/// IPv6 address, or the IPv6 wildcard without `IPV6_V6ONLY`) and the IPv6
/// part, each `None`, `Some(wildcard)` or `Some(address)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

impl Span {
    /// The span of a binding to `ip`; `v6only` is the socket's
    /// `IPV6_V6ONLY` (meaningful for IPv6 addresses only).
    pub(crate) fn of(ip: IpAddr, v6only: bool) -> Span {
        match ip {
            IpAddr::V4(a) => Span {
                v4: Some(a),
                v6: None,
            },
            IpAddr::V6(a) => {
                if let Some(m) = a.to_ipv4_mapped() {
                    // Linux: v4-mapped binds act as IPv4 binds (and are
                    // refused on a V6ONLY socket, by the kernel).
                    Span {
                        v4: (!v6only).then_some(m),
                        v6: None,
                    }
                } else if a.is_unspecified() {
                    Span {
                        v4: (!v6only).then_some(Ipv4Addr::UNSPECIFIED),
                        v6: Some(a),
                    }
                } else {
                    // A specific IPv6 address never receives IPv4.
                    Span {
                        v4: None,
                        v6: Some(a),
                    }
                }
            }
        }
    }

    /// Whether the two bindings can receive for a common address (equal,
    /// or either part the wildcard), Linux's `inet_rcv_saddr_equal` with
    /// wildcards matching.
    pub(crate) fn overlaps(self, o: Span) -> bool {
        let v4 = match (self.v4, o.v4) {
            (Some(a), Some(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
            _ => false,
        };
        let v6 = match (self.v6, o.v6) {
            (Some(a), Some(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
            _ => false,
        };
        v4 || v6
    }
}

/// Linux's bind-conflict rule for two overlapping bindings of one port
/// (`inet_bind_conflict` for TCP, `udp_lib_lport_inuse` for UDP): they
/// may share it when both set `SO_REUSEPORT`, or both set `SO_REUSEADDR`
/// and the existing one is not a TCP listener. `SO_REUSEPORT` checks the
/// owner's uid on Linux; every socket here belongs to the one app host.
pub(crate) fn may_share(
    ty: SockType,
    (new_ra, new_rp): (bool, bool),
    (old_ra, old_rp, old_listening): (bool, bool, bool),
) -> bool {
    (new_rp && old_rp) || (new_ra && old_ra && (ty == SockType::Dgram || !old_listening))
}

impl Driver {
    /// The socket's `IPV6_V6ONLY`: as set by the app, else the default
    /// ([`Config::bindv6only`](crate::Config)).
    pub(crate) fn v6only(&self, s: &Sock) -> bool {
        s.opts
            .iter()
            .find(|(l, n, _)| *l == opt::IPPROTO_IPV6 && *n == opt::IPV6_V6ONLY)
            .map_or(self.cfg.bindv6only, |(_, _, v)| {
                v.as_slice().iter().any(|&b| b != 0)
            })
    }

    /// The app sockets whose binding keeps `h` from binding `addr` (a
    /// non-zero port), as Linux decides it: same type and port, addresses
    /// that overlap ([`Span`]), and no sharing ([`may_share`]). A socket
    /// the app has closed holds no port (it left the table then).
    pub(crate) fn port_conflicts(&self, h: Handle, addr: SocketAddr) -> Vec<Handle> {
        let Some(s) = self.socks.get(&h) else {
            return Vec::new();
        };
        let key = (s.ty as u16, addr.port());
        let mine = Span::of(addr.ip(), self.v6only(s));
        let flags = (s.app_flag(opt::SO_REUSEADDR), s.app_reuseport());
        let mut v = Vec::new();
        for &u in self.ports.users(key) {
            if u == h {
                continue;
            }
            let Some(o) = self.socks.get(&u) else {
                continue;
            };
            let Some(oa) = o.bound else { continue };
            let theirs = Span::of(oa.ip(), self.v6only(o));
            let oflags = (
                o.app_flag(opt::SO_REUSEADDR),
                o.app_reuseport(),
                o.listener.is_some(),
            );
            if mine.overlaps(theirs) && !may_share(s.ty, flags, oflags) {
                v.push(u);
            }
        }
        v
    }

    /// Whether binding `h` to `addr` clashes with another app socket's
    /// binding ([`port_conflicts`](Self::port_conflicts)).
    pub(crate) fn port_in_use(&self, h: Handle, addr: SocketAddr) -> bool {
        !self.port_conflicts(h, addr).is_empty()
    }

    /// The app sockets that would make a `bind` of `sock` to `addr` fail
    /// with `EADDRINUSE`: a host that learns of app closes asynchronously
    /// checks these for a close it has not reported yet (then reports it
    /// with [`app_eof`](Self::app_eof)) before the request goes on.
    pub fn bind_blockers(&self, sock: Handle, addr: SocketAddr) -> Vec<Handle> {
        if addr.port() == 0 {
            return Vec::new();
        }
        self.port_conflicts(sock, addr)
    }
}
