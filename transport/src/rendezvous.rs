//! Rendezvous over a Unix stream socket, then the hello handshake.
//!
//! ```text
//!  driver (listens)                                    instance (connects)
//!    │ create memfd region (sealed), 2 eventfds, init both rings
//!    │ ── 64-byte Header + SCM_RIGHTS [region, bell→driver, bell→instance] ─▶ │
//!    │                                   validate fd count, header, limits,  │
//!    │                                   region size and seals, fd types     │
//!    │ ── Hello(Driver): first frame on ring driver→instance ──────────────▶ │
//!    │ ◀─ Hello(Instance): first frame on ring instance→driver ───────────── │
//!    │ both: decode, negotiate version, check ring sizes against the hello   │
//!    │ the socket stays open: hang-up = peer gone                            │
//! ```
//!
//! Header (little-endian): `magic "INSR"` u32, `version` u16, `fd_count` u16,
//! ring driver→instance `capacity`, `max_frame` (u32 each), ring
//! instance→driver `capacity`, `max_frame`, `to_driver_offset` u64,
//! `region_len` u64, 24 reserved zero bytes. The receiver recomputes the
//! layout from the ring configs and refuses any disagreement.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ins_protocol::hello::{Hello, Role};
use ins_protocol::ring::{Consumer, Producer, RingConfig, init_ring};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::channel::{Doorbell, Local, Transport};
use crate::config::ChannelConfig;
use crate::endpoint::{Endpoint, recv_parts};
use crate::error::Error;
use crate::sys::linux::{EventFd, MemfdRegion, retry};

/// `"INSR"` as a little-endian `u32`.
pub const HEADER_MAGIC: u32 = u32::from_le_bytes(*b"INSR");
/// Version of the rendezvous header.
pub const HEADER_VERSION: u16 = 1;
/// Length of the rendezvous header.
pub const HEADER_LEN: usize = 64;
/// Descriptors sent with the header: region, doorbell for the driver,
/// doorbell for the instance (in that order).
pub const FD_COUNT: usize = 3;
/// Descriptors the receiver makes room for, so that extra ones are seen
/// (and closed) rather than silently truncated.
const FD_ROOM: usize = 8;

/// Where the two rings sit in the shared region.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Ring driver→instance, at offset 0.
    pub to_instance: RingConfig,
    /// Ring instance→driver.
    pub to_driver: RingConfig,
    /// Offset of the instance→driver ring.
    pub to_driver_offset: usize,
    /// Total region length (a multiple of [`Layout::ALIGN`]).
    pub len: usize,
}

impl Layout {
    /// Alignment of each ring and of the region's length.
    pub const ALIGN: usize = 4096;

    /// The layout for two ring configurations.
    pub fn new(to_instance: RingConfig, to_driver: RingConfig) -> Result<Layout, Error> {
        let too_big = Error::Config("channel region size overflows");
        let align = |n: usize| n.checked_next_multiple_of(Self::ALIGN);
        let to_driver_offset = align(to_instance.region_len()).ok_or(too_big)?;
        let end = to_driver_offset
            .checked_add(to_driver.region_len())
            .ok_or(Error::Config("channel region size overflows"))?;
        let len = align(end).ok_or(Error::Config("channel region size overflows"))?;
        Ok(Layout {
            to_instance,
            to_driver,
            to_driver_offset,
            len,
        })
    }

    /// The layout a driver builds from its configuration.
    pub fn from_config(cfg: &ChannelConfig) -> Result<Layout, Error> {
        if (cfg.max_frame as usize) < Hello::LEN {
            return Err(Error::Config("max_frame is smaller than a hello"));
        }
        let ring = RingConfig::new(cfg.ring_capacity, cfg.max_frame)?;
        Layout::new(ring, ring)
    }
}

/// The fixed header sent with the descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Must be [`HEADER_MAGIC`].
    pub magic: u32,
    /// Must be [`HEADER_VERSION`].
    pub version: u16,
    /// Must be [`FD_COUNT`].
    pub fd_count: u16,
    /// Ring driver→instance capacity.
    pub to_instance_capacity: u32,
    /// Ring driver→instance largest frame.
    pub to_instance_max_frame: u32,
    /// Ring instance→driver capacity.
    pub to_driver_capacity: u32,
    /// Ring instance→driver largest frame.
    pub to_driver_max_frame: u32,
    /// Offset of the instance→driver ring.
    pub to_driver_offset: u64,
    /// Length of the shared region.
    pub region_len: u64,
}

impl Header {
    /// The header describing `layout`.
    pub fn for_layout(layout: &Layout) -> Header {
        Header {
            magic: HEADER_MAGIC,
            version: HEADER_VERSION,
            fd_count: FD_COUNT as u16,
            to_instance_capacity: layout.to_instance.capacity,
            to_instance_max_frame: layout.to_instance.max_frame,
            to_driver_capacity: layout.to_driver.capacity,
            to_driver_max_frame: layout.to_driver.max_frame,
            to_driver_offset: layout.to_driver_offset as u64,
            region_len: layout.len as u64,
        }
    }

    /// The wire form.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.magic.to_le_bytes());
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[6..8].copy_from_slice(&self.fd_count.to_le_bytes());
        out[8..12].copy_from_slice(&self.to_instance_capacity.to_le_bytes());
        out[12..16].copy_from_slice(&self.to_instance_max_frame.to_le_bytes());
        out[16..20].copy_from_slice(&self.to_driver_capacity.to_le_bytes());
        out[20..24].copy_from_slice(&self.to_driver_max_frame.to_le_bytes());
        out[24..32].copy_from_slice(&self.to_driver_offset.to_le_bytes());
        out[32..40].copy_from_slice(&self.region_len.to_le_bytes());
        out
    }

    /// Parses the wire form, checking magic, version, fd count and reserved
    /// bytes (not the sizes: see [`Header::layout`]).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, Error> {
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | (u64::from(u32_at(i + 4)) << 32);
        let h = Header {
            magic: u32_at(0),
            version: u16::from_le_bytes([bytes[4], bytes[5]]),
            fd_count: u16::from_le_bytes([bytes[6], bytes[7]]),
            to_instance_capacity: u32_at(8),
            to_instance_max_frame: u32_at(12),
            to_driver_capacity: u32_at(16),
            to_driver_max_frame: u32_at(20),
            to_driver_offset: u64_at(24),
            region_len: u64_at(32),
        };
        if h.magic != HEADER_MAGIC {
            return Err(Error::BadHeader("wrong magic: not an INS driver"));
        }
        if h.version != HEADER_VERSION {
            return Err(Error::BadHeader("unknown header version"));
        }
        if usize::from(h.fd_count) != FD_COUNT {
            return Err(Error::BadHeader("wrong descriptor count announced"));
        }
        if bytes[40..].iter().any(|&b| b != 0) {
            return Err(Error::BadHeader("reserved bytes are not zero"));
        }
        Ok(h)
    }

    /// Validates the announced sizes against `cfg`'s limits and recomputes
    /// the layout; any disagreement is an error.
    pub fn layout(&self, cfg: &ChannelConfig) -> Result<Layout, Error> {
        for max_frame in [self.to_instance_max_frame, self.to_driver_max_frame] {
            if max_frame > cfg.max_frame_limit {
                return Err(Error::Limit {
                    what: "announced max_frame",
                    value: max_frame.into(),
                    limit: cfg.max_frame_limit.into(),
                });
            }
            if (max_frame as usize) < Hello::LEN {
                return Err(Error::BadHeader("max_frame is smaller than a hello"));
            }
        }
        if self.region_len > cfg.max_region_len as u64 {
            return Err(Error::Limit {
                what: "announced region length",
                value: self.region_len,
                limit: cfg.max_region_len as u64,
            });
        }
        let to_instance = RingConfig::new(self.to_instance_capacity, self.to_instance_max_frame)?;
        let to_driver = RingConfig::new(self.to_driver_capacity, self.to_driver_max_frame)?;
        let layout = Layout::new(to_instance, to_driver)
            .map_err(|_| Error::BadHeader("ring sizes overflow"))?;
        if layout.len as u64 != self.region_len
            || layout.to_driver_offset as u64 != self.to_driver_offset
        {
            return Err(Error::BadHeader("layout disagrees with the ring sizes"));
        }
        if layout.len > cfg.max_region_len {
            return Err(Error::Limit {
                what: "region length",
                value: layout.len as u64,
                limit: cfg.max_region_len as u64,
            });
        }
        Ok(layout)
    }
}

/// A channel whose region and doorbells are set up but whose hello has not
/// been exchanged yet. Its fields are public so that tests and tools can
/// speak to a peer directly; [`RawChannel::handshake`] is the normal path.
pub struct RawChannel<T: Transport = Local> {
    /// Which side we are.
    pub role: Role,
    /// Our outgoing ring.
    pub tx: Producer<Arc<T::Region>>,
    /// Our incoming ring.
    pub rx: Consumer<Arc<T::Region>>,
    /// The peer's doorbell.
    pub tx_bell: T::Bell,
    /// Our doorbell.
    pub rx_bell: T::Bell,
    /// The rendezvous socket.
    pub control: UnixStream,
    /// The region and ring layout.
    pub layout: Layout,
    /// The shared region.
    pub region: Arc<T::Region>,
    /// Spin before sleeping, for the endpoint.
    pub spin: Duration,
}

impl<T: Transport> RawChannel<T> {
    fn rings(&self) -> (RingConfig, RingConfig) {
        match self.role {
            Role::Driver => (self.layout.to_instance, self.layout.to_driver),
            Role::Instance => (self.layout.to_driver, self.layout.to_instance),
        }
    }

    /// Exchanges hellos: sends `hello` (its ring fields, and pid/time if
    /// zero, are filled in) as the first frame, then waits up to `timeout`
    /// for the peer's, which must decode, be of the other role, share a
    /// version, and describe the same rings.
    pub fn handshake(mut self, mut hello: Hello, timeout: Duration) -> Result<Endpoint<T>, Error> {
        if hello.role != self.role {
            return Err(Error::Config(
                "hello role differs from our side of the channel",
            ));
        }
        let deadline = Instant::now().checked_add(timeout);
        let (tx_cfg, rx_cfg) = self.rings();
        hello.ring_capacity = tx_cfg.capacity;
        hello.max_frame = rx_cfg.max_frame;
        if hello.pid == 0 {
            hello.pid = std::process::id();
        }
        if hello.time_ns == 0 {
            hello.time_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        }
        self.tx.try_push(&hello.encode())?;
        if self.tx.flush()? {
            self.tx_bell.notify().map_err(Error::io("ring doorbell"))?;
        }
        let mut buf = vec![0u8; rx_cfg.max_frame as usize];
        let n = match recv_parts(
            &mut self.rx,
            &self.tx_bell,
            &self.rx_bell,
            &self.control,
            &mut buf,
            self.spin,
            deadline,
        )? {
            Some(n) => n,
            None => return Err(Error::Timeout("waiting for the peer's hello")),
        };
        let peer = Hello::decode(&buf[..n])?;
        let version = hello.negotiate(&peer)?;
        if peer.ring_capacity != rx_cfg.capacity {
            return Err(Error::HelloMismatch("peer's ring capacity"));
        }
        if peer.max_frame != tx_cfg.max_frame {
            return Err(Error::HelloMismatch("peer's max_frame"));
        }
        self.control
            .set_read_timeout(None)
            .map_err(Error::io("clear socket timeout"))?;
        self.control
            .set_write_timeout(None)
            .map_err(Error::io("clear socket timeout"))?;
        Ok(Endpoint {
            tx: self.tx,
            rx: self.rx,
            tx_bell: self.tx_bell,
            rx_bell: self.rx_bell,
            control: self.control,
            peer,
            version,
            spin: self.spin,
            max_frame: rx_cfg.max_frame as usize,
            region: self.region,
        })
    }
}

impl<T: Transport> std::fmt::Debug for RawChannel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawChannel")
            .field("role", &self.role)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

fn set_timeouts(stream: &UnixStream, timeout: Duration) -> Result<(), Error> {
    // A zero timeout means "none" to the socket API; use the smallest real one.
    let t = Some(timeout.max(Duration::from_millis(1)));
    stream
        .set_read_timeout(t)
        .map_err(Error::io("set socket timeout"))?;
    stream
        .set_write_timeout(t)
        .map_err(Error::io("set socket timeout"))
}

fn timeout_or(op: &'static str, what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout(what),
        io::ErrorKind::UnexpectedEof => Error::PeerClosed,
        _ => Error::Io { op, source: e },
    }
}

/// Driver side: creates the region and doorbells, initialises both rings and
/// sends them over `stream`. The hello exchange is still to do.
pub fn offer_channel(stream: UnixStream, cfg: &ChannelConfig) -> Result<RawChannel, Error> {
    let layout = Layout::from_config(cfg)?;
    set_timeouts(&stream, cfg.handshake_timeout)?;
    let region = Arc::new(
        MemfdRegion::create("ins-channel", layout.len)
            .map_err(Error::io("create shared region"))?,
    );
    init_ring(&*region, 0, layout.to_instance)?;
    init_ring(&*region, layout.to_driver_offset, layout.to_driver)?;
    let for_driver = EventFd::new().map_err(Error::io("eventfd"))?;
    let for_instance = EventFd::new().map_err(Error::io("eventfd"))?;

    let header = Header::for_layout(&layout).encode();
    let fds = [region.as_fd(), for_driver.as_fd(), for_instance.as_fd()];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(FD_COUNT))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Error::Config(
            "control buffer too small for the descriptors",
        ));
    }
    let sent = retry(|| {
        rustix::net::sendmsg(
            &stream,
            &[io::IoSlice::new(&header)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
    })
    .map_err(timeout_or(
        "sendmsg rendezvous",
        "sending the rendezvous header",
    ))?;
    // The descriptors travelled with the first byte; finish the header.
    (&stream).write_all(&header[sent..]).map_err(timeout_or(
        "write rendezvous",
        "sending the rendezvous header",
    ))?;

    let tx = Producer::new(region.clone(), 0, layout.to_instance)?;
    let rx = Consumer::new(region.clone(), layout.to_driver_offset, layout.to_driver)?;
    Ok(RawChannel {
        role: Role::Driver,
        tx,
        rx,
        tx_bell: for_instance,
        rx_bell: for_driver,
        control: stream,
        layout,
        region,
        spin: cfg.spin,
    })
}

/// Instance side: receives and validates the region and doorbells sent by
/// [`offer_channel`]. The hello exchange is still to do.
pub fn receive_channel(stream: UnixStream, cfg: &ChannelConfig) -> Result<RawChannel, Error> {
    set_timeouts(&stream, cfg.handshake_timeout)?;
    let mut header = [0u8; HEADER_LEN];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(FD_ROOM))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = retry(|| {
        rustix::net::recvmsg(
            &stream,
            &mut [io::IoSliceMut::new(&mut header)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
    })
    .map_err(timeout_or(
        "recvmsg rendezvous",
        "waiting for the rendezvous header",
    ))?;
    // Take ownership of every descriptor first, so all are closed on error.
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(FD_ROOM);
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if msg.bytes == 0 {
        return Err(Error::PeerClosed);
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(Error::BadFdCount {
            expected: FD_COUNT,
            got: fds.len().max(FD_ROOM + 1),
        });
    }
    if fds.len() != FD_COUNT {
        return Err(Error::BadFdCount {
            expected: FD_COUNT,
            got: fds.len(),
        });
    }
    (&stream)
        .read_exact(&mut header[msg.bytes..])
        .map_err(timeout_or(
            "read rendezvous",
            "waiting for the rendezvous header",
        ))?;
    let layout = Header::decode(&header)?.layout(cfg)?;

    let mut fds = fds.into_iter();
    let (Some(region_fd), Some(driver_fd), Some(instance_fd)) =
        (fds.next(), fds.next(), fds.next())
    else {
        return Err(Error::BadFdCount {
            expected: FD_COUNT,
            got: 0,
        });
    };
    let region = Arc::new(MemfdRegion::from_fd(region_fd, layout.len)?);
    let for_driver = EventFd::from_fd(driver_fd)?;
    let for_instance = EventFd::from_fd(instance_fd)?;
    let tx = Producer::new(region.clone(), layout.to_driver_offset, layout.to_driver)?;
    let rx = Consumer::new(region.clone(), 0, layout.to_instance)?;
    Ok(RawChannel {
        role: Role::Instance,
        tx,
        rx,
        tx_bell: for_driver,
        rx_bell: for_instance,
        control: stream,
        layout,
        region,
        spin: cfg.spin,
    })
}

/// Driver side over a connected stream: [`offer_channel`] then the
/// handshake with a driver hello.
pub fn accept_stream(stream: UnixStream, cfg: &ChannelConfig) -> Result<Endpoint, Error> {
    offer_channel(stream, cfg)?.handshake(Hello::new(Role::Driver), cfg.handshake_timeout)
}

/// Driver side: accepts one instance on `listener` (waiting as long as it
/// takes for one to connect) and opens a channel with it.
pub fn accept_channel(listener: &UnixListener, cfg: &ChannelConfig) -> Result<Endpoint, Error> {
    let (stream, _) = loop {
        match listener.accept() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other.map_err(Error::io("accept"))?,
        }
    };
    accept_stream(stream, cfg)
}

/// Instance side over a connected stream: [`receive_channel`] then the
/// handshake with `hello` (role [`Role::Instance`]).
pub fn connect_stream(
    stream: UnixStream,
    hello: Hello,
    cfg: &ChannelConfig,
) -> Result<Endpoint, Error> {
    receive_channel(stream, cfg)?.handshake(hello, cfg.handshake_timeout)
}

/// Instance side: connects to the driver's socket at `path` with default
/// limits.
pub fn connect_channel(path: &Path, hello: Hello) -> Result<Endpoint, Error> {
    connect_channel_with(path, hello, &ChannelConfig::default())
}

/// Instance side: connects to the driver's socket at `path` with `cfg`'s
/// limits and timeouts.
pub fn connect_channel_with(
    path: &Path,
    hello: Hello,
    cfg: &ChannelConfig,
) -> Result<Endpoint, Error> {
    let stream = UnixStream::connect(path).map_err(Error::io("connect"))?;
    connect_stream(stream, hello, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checks() {
        let cfg = ChannelConfig::default();
        let layout = Layout::from_config(&cfg).unwrap();
        let h = Header::for_layout(&layout);
        let bytes = h.encode();
        let back = Header::decode(&bytes).unwrap();
        assert_eq!(back, h);
        let l2 = back.layout(&cfg).unwrap();
        assert_eq!(l2.len, layout.len);
        assert_eq!(l2.to_driver_offset, layout.to_driver_offset);

        let mut bad = bytes;
        bad[63] = 1;
        assert!(matches!(Header::decode(&bad), Err(Error::BadHeader(_))));
        let mut bad = h;
        bad.region_len += 4096;
        assert!(matches!(bad.layout(&cfg), Err(Error::BadHeader(_))));
        let small = ChannelConfig {
            max_region_len: 4096,
            ..ChannelConfig::default()
        };
        assert!(matches!(h.layout(&small), Err(Error::Limit { .. })));
    }
}
