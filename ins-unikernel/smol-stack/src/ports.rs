//! Port bindings per protocol, with Linux's conflict rules (see the crate
//! docs) and ephemeral port selection.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::IpAddr;

use ins_core::Errno;

use crate::addr::Versions;

/// Transport protocol of a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

/// One socket's claim on a port.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Binding {
    pub owner: u32,
    /// `None`: the wildcard address.
    pub ip: Option<IpAddr>,
    pub versions: Versions,
    pub reuse_addr: bool,
    pub reuse_port: bool,
    pub listening: bool,
}

impl Binding {
    fn overlaps(&self, o: &Binding) -> bool {
        self.versions.overlaps(o.versions)
            && match (self.ip, o.ip) {
                (None, _) | (_, None) => true,
                (Some(a), Some(b)) => a == b,
            }
    }

    fn conflicts(&self, o: &Binding, proto: Proto) -> bool {
        if !self.overlaps(o) || (self.reuse_port && o.reuse_port) {
            return false;
        }
        let reuse = self.reuse_addr && o.reuse_addr;
        match proto {
            Proto::Udp => !reuse,
            Proto::Tcp => !reuse || o.listening,
        }
    }
}

/// All bindings of a stack.
#[derive(Debug)]
pub(crate) struct Ports {
    map: BTreeMap<(Proto, u16), Vec<Binding>>,
    first: u16,
    last: u16,
    next: u16,
}

impl Ports {
    pub(crate) fn new(range: (u16, u16), start: u16) -> Ports {
        let (first, last) = (range.0.max(1), range.1.max(range.0.max(1)));
        let span = u32::from(last - first) + 1;
        Ports {
            map: BTreeMap::new(),
            first,
            last,
            next: first + (u32::from(start) % span) as u16,
        }
    }

    fn conflict(&self, proto: Proto, port: u16, b: &Binding) -> bool {
        self.map.get(&(proto, port)).is_some_and(|v| {
            v.iter()
                .any(|o| o.owner != b.owner && b.conflicts(o, proto))
        })
    }

    /// Claims `port` (0: an ephemeral one) for `b`; returns the port.
    /// `exhausted` is the errno when no ephemeral port is free.
    pub(crate) fn bind(
        &mut self,
        proto: Proto,
        port: u16,
        b: Binding,
        exhausted: Errno,
    ) -> Result<u16, Errno> {
        let port = if port == 0 {
            let span = u32::from(self.last - self.first) + 1;
            let mut found = None;
            for _ in 0..span {
                let p = self.next;
                self.next = if p >= self.last { self.first } else { p + 1 };
                if !self.map.contains_key(&(proto, p)) {
                    found = Some(p);
                    break;
                }
            }
            found.ok_or(exhausted)?
        } else {
            if self.conflict(proto, port, &b) {
                return Err(Errno::EADDRINUSE);
            }
            port
        };
        self.map.entry((proto, port)).or_default().push(b);
        Ok(port)
    }

    /// Marks `owner`'s binding as listening; `EADDRINUSE` if that now
    /// conflicts (two `SO_REUSEADDR` sockets cannot both listen).
    pub(crate) fn listen(&mut self, proto: Proto, port: u16, owner: u32) -> Result<(), Errno> {
        let Some(v) = self.map.get(&(proto, port)) else {
            return Err(Errno::EINVAL);
        };
        let Some(mut me) = v.iter().find(|b| b.owner == owner).copied() else {
            return Err(Errno::EINVAL);
        };
        me.listening = true;
        if v.iter().any(|o| o.owner != owner && me.conflicts(o, proto)) {
            return Err(Errno::EADDRINUSE);
        }
        if let Some(v) = self.map.get_mut(&(proto, port)) {
            for b in v.iter_mut().filter(|b| b.owner == owner) {
                b.listening = true;
            }
        }
        Ok(())
    }

    /// Drops `owner`'s binding of `port`.
    pub(crate) fn release(&mut self, proto: Proto, port: u16, owner: u32) {
        if let Some(v) = self.map.get_mut(&(proto, port)) {
            v.retain(|b| b.owner != owner);
            if v.is_empty() {
                self.map.remove(&(proto, port));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(owner: u32, ip: Option<&str>, reuse_addr: bool, reuse_port: bool) -> Binding {
        Binding {
            owner,
            ip: ip.map(|s| s.parse().unwrap()),
            versions: Versions::Both,
            reuse_addr,
            reuse_port,
            listening: false,
        }
    }

    #[test]
    fn linux_conflict_rules() {
        let mut p = Ports::new((40000, 40002), 0);
        let e = Errno::EADDRNOTAVAIL;
        assert_eq!(p.bind(Proto::Tcp, 80, b(1, None, false, false), e), Ok(80));
        assert_eq!(
            p.bind(Proto::Tcp, 80, b(2, Some("10.0.0.1"), false, false), e),
            Err(Errno::EADDRINUSE)
        );
        assert_eq!(
            p.bind(Proto::Udp, 80, b(2, None, false, false), e),
            Ok(80),
            "other protocol"
        );
        p.release(Proto::Tcp, 80, 1);
        assert_eq!(p.bind(Proto::Tcp, 80, b(3, None, true, false), e), Ok(80));
        assert_eq!(
            p.bind(Proto::Tcp, 80, b(4, None, true, false), e),
            Ok(80),
            "both SO_REUSEADDR"
        );
        assert_eq!(p.listen(Proto::Tcp, 80, 3), Ok(()));
        assert_eq!(
            p.listen(Proto::Tcp, 80, 4),
            Err(Errno::EADDRINUSE),
            "two listeners"
        );
        assert_eq!(p.bind(Proto::Tcp, 81, b(5, None, false, true), e), Ok(81));
        assert_eq!(
            p.bind(Proto::Tcp, 81, b(6, None, false, true), e),
            Ok(81),
            "SO_REUSEPORT"
        );
        let mut v4 = b(7, None, false, false);
        v4.versions = Versions::V4;
        let mut v6 = b(8, None, false, false);
        v6.versions = Versions::V6;
        assert_eq!(p.bind(Proto::Tcp, 82, v4, e), Ok(82));
        assert_eq!(
            p.bind(Proto::Tcp, 82, v6, e),
            Ok(82),
            "V6ONLY beside an IPv4 wildcard"
        );
        // ephemeral ports wrap and run out
        let got: Vec<_> = (10..13)
            .map(|o| p.bind(Proto::Tcp, 0, b(o, None, false, false), e).unwrap())
            .collect();
        assert_eq!(got, [40000, 40001, 40002]);
        assert_eq!(p.bind(Proto::Tcp, 0, b(14, None, false, false), e), Err(e));
        p.release(Proto::Tcp, 40001, 11);
        assert_eq!(
            p.bind(Proto::Tcp, 0, b(15, None, false, false), e),
            Ok(40001)
        );
    }
}
