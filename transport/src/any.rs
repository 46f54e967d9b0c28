//! A transport chosen at run time: the local one ([`Local`]) or Xen
//! ([`Xen`]) behind one type, for a driver that keeps instances of both
//! kinds in one table.
//!
//! Invariant: an `Endpoint<Any>` made with `From` has the same two rings
//! over the same memory as the endpoint it came from, each end with its
//! private counters kept ([`ProducerCore::with_memory`]); the doorbells
//! and the control socket are moved, not reopened. So the conversion may
//! happen at any point of a channel's life, in practice right after the
//! handshake.
//!
//! One difference stays visible: a Xen port is masked once it fires until
//! it is drained, while an eventfd needs nothing. A caller that waits
//! with edge-triggered epoll and never reads its doorbell (the driver)
//! calls [`Doorbell::ack`] on each wake-up before looking at the ring.
//!
//! [`ProducerCore::with_memory`]: ins_protocol::ring::ProducerCore::with_memory

use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use ins_protocol::region::{RegionView, SharedRegion};

use crate::channel::{Doorbell, Local, Transport};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::sys::linux::{EventFd, MemfdRegion};
use crate::sys::xen::{Xen, XenBell, XenRegion};

/// The local or the Xen transport, decided per channel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Any;

impl Transport for Any {
    type Region = AnyRegion;
    type Bell = AnyBell;
}

/// A channel's shared region, of either transport.
#[derive(Debug)]
pub enum AnyRegion {
    /// A memfd mapping.
    Local(Arc<MemfdRegion>),
    /// Pages granted to, or mapped from, another domain.
    Xen(Arc<XenRegion>),
}

// SAFETY: both variants uphold the SharedRegion contract themselves (live
// shared mappings of `len` bytes for as long as the Arc lives); this only
// forwards to them.
#[allow(unsafe_code)]
unsafe impl SharedRegion for AnyRegion {
    fn base(&self) -> NonNull<u8> {
        match self {
            AnyRegion::Local(r) => r.base(),
            AnyRegion::Xen(r) => r.base(),
        }
    }
    fn len(&self) -> usize {
        match self {
            AnyRegion::Local(r) => r.len(),
            AnyRegion::Xen(r) => r.len(),
        }
    }
}

/// A doorbell of either transport.
#[derive(Debug)]
pub enum AnyBell {
    /// An eventfd.
    Local(EventFd),
    /// An event-channel port.
    Xen(XenBell),
}

impl Doorbell for AnyBell {
    fn notify(&self) -> io::Result<()> {
        match self {
            AnyBell::Local(b) => b.notify(),
            AnyBell::Xen(b) => b.notify(),
        }
    }
    fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        match self {
            AnyBell::Local(b) => b.wait(timeout),
            AnyBell::Xen(b) => b.wait(timeout),
        }
    }
    fn drain(&self) -> io::Result<()> {
        match self {
            AnyBell::Local(b) => b.drain(),
            AnyBell::Xen(b) => b.drain(),
        }
    }
    fn ack(&self) -> io::Result<()> {
        match self {
            AnyBell::Local(b) => b.ack(),
            AnyBell::Xen(b) => b.ack(),
        }
    }
    fn as_raw_fd(&self) -> Option<RawFd> {
        match self {
            AnyBell::Local(b) => b.as_raw_fd(),
            AnyBell::Xen(b) => b.as_raw_fd(),
        }
    }
}

impl AsFd for AnyBell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            AnyBell::Local(b) => b.as_fd(),
            AnyBell::Xen(b) => b.as_fd(),
        }
    }
}

/// Moves an endpoint's rings onto the [`AnyRegion`] `wrap` makes of its
/// region (the same memory), and its bells through `bell`.
fn convert<T: Transport>(
    ep: Endpoint<T>,
    wrap: impl FnOnce(Arc<T::Region>) -> AnyRegion,
    bell: impl Fn(T::Bell) -> AnyBell,
) -> Result<Endpoint<Any>, Error> {
    let region = Arc::new(wrap(ep.region));
    Ok(Endpoint {
        tx: ep.tx.with_memory(RegionView::new(region.clone()))?,
        rx: ep.rx.with_memory(RegionView::new(region.clone()))?,
        tx_bell: bell(ep.tx_bell),
        rx_bell: bell(ep.rx_bell),
        control: ep.control,
        peer: ep.peer,
        version: ep.version,
        spin: ep.spin,
        max_frame: ep.max_frame,
        region,
    })
}

impl TryFrom<Endpoint<Local>> for Endpoint<Any> {
    type Error = Error;
    fn try_from(ep: Endpoint<Local>) -> Result<Self, Error> {
        convert(ep, AnyRegion::Local, AnyBell::Local)
    }
}

impl TryFrom<Endpoint<Xen>> for Endpoint<Any> {
    type Error = Error;
    fn try_from(ep: Endpoint<Xen>) -> Result<Self, Error> {
        convert(ep, AnyRegion::Xen, AnyBell::Xen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChannelConfig;
    use ins_protocol::hello::{Hello, Role};
    use std::os::unix::net::UnixStream;

    /// A local channel converted on the driver side keeps working both
    /// ways, frames in order, and its doorbells still wake the peer.
    #[test]
    fn local_endpoint_converts_and_keeps_working() {
        let cfg = ChannelConfig::default();
        let (a, b) = UnixStream::pair().unwrap();
        let c2 = cfg.clone();
        let inst = std::thread::spawn(move || {
            let mut ep = crate::connect_stream(b, Hello::new(Role::Instance), &c2).unwrap();
            let mut buf = vec![0u8; ep.max_frame];
            for i in 0..100u32 {
                let n = ep.recv(&mut buf, None).unwrap().unwrap();
                assert_eq!(&buf[..n], &i.to_le_bytes()[..]);
                assert!(ep.send_wait(&(i * 2).to_le_bytes(), None).unwrap());
            }
        });
        let ep = crate::offer_channel(a, &cfg)
            .unwrap()
            .handshake(Hello::new(Role::Driver), cfg.handshake_timeout)
            .unwrap();
        let mut ep: Endpoint<Any> = ep.try_into().unwrap();
        assert!(matches!(&*ep.region, AnyRegion::Local(_)));
        let mut buf = vec![0u8; ep.max_frame];
        for i in 0..100u32 {
            assert!(ep.send_wait(&i.to_le_bytes(), None).unwrap());
            let n = ep.recv(&mut buf, None).unwrap().unwrap();
            assert_eq!(&buf[..n], &(i * 2).to_le_bytes()[..]);
        }
        ep.rx_bell.ack().unwrap();
        inst.join().unwrap();
    }
}
