//! UDP sockets.

use alloc::vec;
use core::net::{IpAddr, SocketAddr};

use ins_core::Errno;
use ins_core::stack::Readiness;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::udp::{self, PacketBuffer, PacketMetadata};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use crate::addr;
use crate::ports::Proto;
use crate::stack::{Handle, Kind, SmolStack, Waiter};

/// Largest UDP payload (IPv4: 65535 - 20 - 8).
pub const MAX_DATAGRAM: usize = 65_507;

/// A UDP handle's smoltcp socket and default peer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UdpState {
    pub h: SocketHandle,
    pub peer: Option<SocketAddr>,
}

/// Readiness of a UDP handle.
pub(crate) fn readiness(u: &UdpState, sockets: &SocketSet<'static>, error: bool) -> Readiness {
    let s = sockets.get::<udp::Socket>(u.h);
    let mut r = Readiness::EMPTY;
    if s.can_recv() {
        r |= Readiness::READABLE;
    }
    if s.can_send() {
        r |= Readiness::WRITABLE;
    }
    if error {
        r |= Readiness::ERROR;
    }
    r
}

impl<D: Device, W: Waiter> SmolStack<D, W> {
    pub(crate) fn new_udp(&mut self) -> UdpState {
        let n = self.cfg.udp_packets.max(1);
        let rx = PacketBuffer::new(vec![PacketMetadata::EMPTY; n], vec![0; self.cfg.udp_buf]);
        let tx = PacketBuffer::new(vec![PacketMetadata::EMPTY; n], vec![0; self.cfg.udp_buf]);
        UdpState {
            h: self.sockets.add(udp::Socket::new(rx, tx)),
            peer: None,
        }
    }

    fn udp(&mut self, h: Handle) -> Result<&mut UdpState, Errno> {
        match &mut self.sock(h)?.kind {
            Kind::Udp(u) => Ok(u),
            Kind::Tcp(_) => Err(Errno::EOPNOTSUPP),
        }
    }

    fn udp_bind_to(&mut self, h: Handle, a: SocketAddr) -> Result<(), Errno> {
        let bound = self.claim(Proto::Udp, h.0, a, Errno::EADDRINUSE)?;
        let ep = IpListenEndpoint {
            addr: (!bound.ip().is_unspecified()).then(|| IpAddress::from(bound.ip())),
            port: bound.port(),
        };
        let uh = self.udp(h)?.h;
        if self.sockets.get_mut::<udp::Socket>(uh).bind(ep).is_err() {
            self.ports.release(Proto::Udp, bound.port(), h.0);
            return Err(Errno::EINVAL);
        }
        self.sock(h)?.bound = Some(bound);
        Ok(())
    }

    pub(crate) fn udp_bind(&mut self, h: Handle, addr: SocketAddr) -> Result<(), Errno> {
        let s = self.sock(h)?;
        if s.bound.is_some() {
            return Err(Errno::EINVAL);
        }
        let a = addr::to_stack(s.family, s.opts.v6only, addr, Errno::EINVAL)?;
        if !self.is_local(a.ip()) {
            return Err(Errno::EADDRNOTAVAIL);
        }
        self.udp_bind_to(h, a)
    }

    /// Binds an unbound socket to the wildcard and an ephemeral port.
    fn udp_autobind(&mut self, h: Handle) -> Result<(), Errno> {
        let s = self.sock(h)?;
        if s.bound.is_some() {
            return Ok(());
        }
        let any = addr::to_stack(
            s.family,
            false,
            addr::unspecified(s.family, 0),
            Errno::EINVAL,
        )?;
        self.udp_bind_to(h, any)
    }

    pub(crate) fn udp_connect(&mut self, h: Handle, addr: SocketAddr) -> Result<(), Errno> {
        let s = self.sock(h)?;
        let remote = addr::to_stack(s.family, s.opts.v6only, addr, Errno::EAFNOSUPPORT)?;
        if !self.has_route(remote.ip()) {
            return Err(Errno::ENETUNREACH);
        }
        self.udp_autobind(h)?;
        self.udp(h)?.peer = Some(remote);
        Ok(())
    }

    fn is_broadcast(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(v4) = ip else {
            return false;
        };
        v4.is_broadcast()
            || self.iface.ip_addrs().iter().any(|c| match c {
                smoltcp::wire::IpCidr::Ipv4(c) => c.broadcast() == Some(v4),
                _ => false,
            })
    }

    pub(crate) fn udp_send_to(
        &mut self,
        h: Handle,
        buf: &[u8],
        dst: SocketAddr,
    ) -> Result<usize, Errno> {
        let s = self.sock(h)?;
        let (family, v6only, broadcast) = (s.family, s.opts.v6only, s.opts.broadcast);
        let remote = addr::to_stack(family, v6only, dst, Errno::EAFNOSUPPORT)?;
        if remote.port() == 0 {
            return Err(Errno::EINVAL);
        }
        if self.is_broadcast(remote.ip()) && !broadcast {
            return Err(Errno::EACCES);
        }
        if !self.has_route(remote.ip()) {
            return Err(Errno::ENETUNREACH);
        }
        self.udp_autobind(h)?;
        let uh = self.udp(h)?.h;
        let u = self.sockets.get_mut::<udp::Socket>(uh);
        if buf.len() > MAX_DATAGRAM || buf.len() > u.payload_send_capacity() {
            return Err(Errno::EMSGSIZE);
        }
        match u.send_slice(buf, IpEndpoint::from(remote)) {
            Ok(()) => Ok(buf.len()),
            Err(udp::SendError::BufferFull) => Err(self.eagain(h, Readiness::WRITABLE)),
            Err(udp::SendError::Unaddressable) => Err(Errno::EINVAL),
        }
    }

    pub(crate) fn udp_send(&mut self, h: Handle, buf: &[u8]) -> Result<usize, Errno> {
        let s = self.sock(h)?;
        let family = s.family;
        let peer = self.udp(h)?.peer.ok_or(Errno::EDESTADDRREQ)?;
        self.udp_send_to(h, buf, addr::to_user(family, peer))
    }

    pub(crate) fn udp_recv_from(
        &mut self,
        h: Handle,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), Errno> {
        let family = self.sock(h)?.family;
        let UdpState { h: uh, peer } = *self.udp(h)?;
        let u = self.sockets.get_mut::<udp::Socket>(uh);
        loop {
            let Ok((data, meta)) = u.recv() else {
                return Err(self.eagain(h, Readiness::READABLE));
            };
            let from = SocketAddr::from(meta.endpoint);
            if peer.is_some_and(|p| p != from) {
                continue;
            }
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            return Ok((n, addr::to_user(family, from)));
        }
    }
}
