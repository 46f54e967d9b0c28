//! The port table: which app sockets hold which `(type, port)`, so that two
//! app sockets get `EADDRINUSE` from the driver as they would from one
//! Linux kernel, although each may live on a different instance (every
//! instance has its own port space, and listeners are bound on all of them
//! with `SO_REUSEPORT`).
//!
//! A socket enters the table when its bind succeeds with a known port (or
//! when the port the kernel chose for port 0 or an autobind is learned,
//! see [`bind`](crate::bind) and [`listener`](crate::listener)) and leaves
//! it in `forget`.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::SocketAddr;

use ins_protocol::msg::SockType;

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

impl Driver {
    /// Whether binding `h` to `addr` (a non-zero port) clashes with another
    /// app socket's binding. Linux: the addresses overlap (equal, or either
    /// is the wildcard) and neither both have `SO_REUSEPORT` nor both have
    /// `SO_REUSEADDR` while the other is not a TCP listener.
    pub(crate) fn port_in_use(&self, h: Handle, addr: SocketAddr) -> bool {
        let Some(s) = self.socks.get(&h) else {
            return false;
        };
        let key = (s.ty as u16, addr.port());
        let mine_rp = s.app_reuseport();
        let mine_ra = s.app_flag(opt::SO_REUSEADDR);
        for &u in self.ports.users(key) {
            let Some(o) = self.socks.get(&u) else {
                continue;
            };
            let Some(oa) = o.bound else { continue };
            let overlap =
                oa.ip() == addr.ip() || oa.ip().is_unspecified() || addr.ip().is_unspecified();
            let shared = (mine_rp && o.app_reuseport())
                || (mine_ra
                    && o.app_flag(opt::SO_REUSEADDR)
                    && (s.ty == SockType::Dgram || o.listener.is_none()));
            if overlap && !shared {
                return true;
            }
        }
        false
    }
}
