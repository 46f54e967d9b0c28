//! Offering and joining a channel through xenstore, then the *link*
//! thread that watches the peer and tears the channel down.
//!
//! ```text
//!  offer_xen (driver)                         connect_xen (instance)
//!   grant pages, init rings, 2 unbound ports
//!   status word "driver alive", unmap notify
//!   tx: rm stale dir, mkdir, perms n<D> r<I>,
//!       offer keys, state=Initialised  ───▶   watch driver dir; Initialised
//!                                             read + validate offer, layout
//!                                             bind both ports, map grants,
//!                                             unmap notify, "instance alive"
//!   watch instance dir  ◀───────────────────  tx: rm stale dir, mkdir, perms
//!   version ok → state=Connected  ─────────▶  n<I> r<D>, version, state=Connected
//!   ◀═════════ ring hello (RawChannel::handshake) ═════════▶
//! ```
//!
//! The link thread owns a private xenstore connection (watching the peer's
//! directory), the liveness event channel and a clone of the region. The
//! endpoint gets one end of a socket pair as its `control`; the link holds
//! the other. Peer gone (its directory removed, `Closing`/`Closed`, its
//! alive word cleared by its kernel's unmap notification, or its domain
//! destroyed) → the link shuts down its sending side, so the endpoint sees a
//! hang-up exactly as with a local peer. Endpoint dropped → the link sees
//! end-of-file. Either way the link then tears down:
//!
//! * driver: `state=Closing`; wait (bounded by `teardown_timeout`) until the
//!   instance's alive word is clear, its state is `Closed`, or its
//!   directory is gone; drop the pages (unmap, `DEALLOC_GREF`: the grants
//!   are revoked, at once if the instance unmapped, otherwise by Linux's
//!   deferred free); close the ports; remove our keys.
//! * instance: drop the mapping (unmap: the notification clears our alive
//!   word and fires the liveness port), close the ports, write
//!   `state=Closed`, remove our keys.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ins_protocol::hello::{Hello, Role};
use ins_protocol::region::RegionView;
use ins_protocol::ring::{Consumer, Producer, init_ring};
use ins_xen::channel::{
    ChannelId, DriverSide, DriverStep, DriverView, InstanceSide, InstanceStep, LIVENESS_KEY,
    Limits, Offer, PeerView, RingSizes, State, read_driver_view, read_key,
};
use ins_xen::gnttab::GrantRef;
use ins_xen::gnttab::PAGE_SIZE;
use ins_xen::xenstore::{self, Client, TxId, XsErrno};
use ins_xen::{DomId, Port};
use rustix::event::{PollFd, PollFlags};

use super::{
    DRIVER_ALIVE, Evtchn, GrantedPages, INSTANCE_ALIVE, MappedPages, Xen, XenBell, XenConfig,
    XenRegion, XenbusStream,
};
use crate::config::ChannelConfig;
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::rendezvous::{FD_COUNT, HEADER_MAGIC, HEADER_VERSION, Header, Layout, RawChannel};
use crate::sys::linux::poll_until;

type Xs = Client<XenbusStream>;

const PEER_TOKEN: &str = "ins-peer";

/// An open Xen channel: the endpoint, and the link thread watching the
/// peer. Drop the endpoint (or call [`XenChannel::close`]) to tear down.
pub struct XenChannel {
    /// The ring endpoint, as with the local transport.
    pub endpoint: Endpoint<Xen>,
    link: JoinHandle<Result<Teardown, Error>>,
}

/// How a channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Teardown {
    /// The peer left first (or we were told to close by it).
    pub peer_left: bool,
    /// Driver: the instance had unmapped (alive word clear, state
    /// `Closed`, or gone) before we revoked. Instance: always true.
    pub unmapped_before_revoke: bool,
    /// How long the driver waited for the instance to unmap.
    pub waited: Duration,
}

impl XenChannel {
    /// Drops the endpoint and waits for the link to finish the teardown.
    pub fn close(self) -> Result<Teardown, Error> {
        let (endpoint, link) = self.into_parts();
        drop(endpoint);
        link.join()
    }

    /// The endpoint, and the link to join once the endpoint is dropped.
    pub fn into_parts(self) -> (Endpoint<Xen>, XenLink) {
        (self.endpoint, XenLink(self.link))
    }
}

/// The link thread of a channel whose endpoint was taken out.
#[derive(Debug)]
pub struct XenLink(JoinHandle<Result<Teardown, Error>>);

impl XenLink {
    /// Waits for the teardown; call after dropping the endpoint (until
    /// then it waits for the peer to leave).
    pub fn join(self) -> Result<Teardown, Error> {
        self.0.join().map_err(|_| Error::Io {
            op: "xen link thread",
            source: io::Error::other("panicked"),
        })?
    }
}

impl std::fmt::Debug for XenChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenChannel")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    Error::io(op)
}

/// The absolute path of key `k` under `dir`.
fn key(dir: &str, k: &str) -> String {
    format!("{dir}/{k}")
}

/// Reads a key, treating "absent" and "not readable" alike
/// ([`ins_xen::channel::read_key`]).
fn read_opt(xs: &mut Xs, path: &str) -> Result<Option<Vec<u8>>, Error> {
    read_key(xs, path).map_err(|e| Error::Xenstore {
        op: "read",
        source: e,
    })
}

fn driver_view(xs: &mut Xs, id: &ChannelId) -> Result<DriverView, Error> {
    read_driver_view(xs, id).map_err(|e| Error::Xenstore {
        op: "read",
        source: e,
    })
}

fn peer_view(xs: &mut Xs, id: &ChannelId) -> Result<PeerView, Error> {
    let dir = id.instance_dir();
    let state = read_opt(xs, &key(&dir, "state"))?;
    let version = read_opt(xs, &key(&dir, "version"))?;
    if state.is_none() && version.is_none() && read_opt(xs, &dir)?.is_none() {
        return Ok(PeerView::Absent);
    }
    Ok(PeerView::Present {
        state: state.as_deref().and_then(State::parse),
        version: version
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()),
    })
}

/// Waits for a watch event on `xs` (queued or arriving) until `deadline`,
/// or at most `recheck`. Returns whether the deadline passed.
fn wait_watch(xs: &mut Xs, deadline: Instant, recheck: Duration) -> Result<bool, Error> {
    if xs.take_event().is_some() {
        while xs.take_event().is_some() {}
        return Ok(false);
    }
    let now = Instant::now();
    if now >= deadline {
        return Ok(true);
    }
    let until = deadline.min(now + recheck);
    let ready = {
        let mut fds = [PollFd::new(xs.stream(), PollFlags::IN)];
        poll_until(&mut fds, Some(until)).map_err(io_err("poll xenstore"))?
    };
    if ready > 0 {
        xs.read_event().map_err(Error::xs("watch event"))?;
        while xs.take_event().is_some() {}
    }
    Ok(false)
}

/// Our domain id, as xenstore knows it.
fn my_domid(xs: &mut Xs) -> Result<DomId, Error> {
    let v = xs
        .read(TxId::NONE, "domid")
        .map_err(Error::xs("read domid"))?;
    DomId::parse(&v).ok_or(Error::BadHeader("xenstore domid is not a domain id"))
}

/// This domain's id, read from xenstore through `xcfg.xenbus` (a driver
/// names itself in the channels it offers).
pub fn own_domid(xcfg: &XenConfig) -> Result<DomId, Error> {
    let mut xs =
        XenbusStream::client(&xcfg.xenbus, xcfg.max_events).map_err(io_err("open xenstore"))?;
    my_domid(&mut xs)
}

fn layout_of(offer: &Offer, cfg: &ChannelConfig) -> Result<Layout, Error> {
    let ring_len = offer
        .region_len
        .checked_sub(PAGE_SIZE as u64)
        .ok_or(Error::BadHeader("region has no status page"))?;
    let header = Header {
        magic: HEADER_MAGIC,
        version: HEADER_VERSION,
        fd_count: FD_COUNT as u16,
        to_instance_capacity: offer.to_instance.capacity,
        to_instance_max_frame: offer.to_instance.max_frame,
        to_driver_capacity: offer.to_driver.capacity,
        to_driver_max_frame: offer.to_driver.max_frame,
        to_driver_offset: offer.to_driver_offset,
        region_len: ring_len,
    };
    header.layout(cfg)
}

/// Driver side: grants a channel's pages to `id.instance`, publishes the
/// offer, waits (up to `xcfg.rendezvous_timeout`) for the instance to map
/// and bind, then exchanges hellos.
pub fn offer_xen(
    id: &ChannelId,
    hello: Hello,
    cfg: &ChannelConfig,
    xcfg: &XenConfig,
) -> Result<XenChannel, Error> {
    let layout = Layout::from_config(cfg)?;
    let status = layout.len;
    let len = layout.len + PAGE_SIZE;
    let pages = len / PAGE_SIZE;
    if pages > xcfg.max_pages as usize {
        return Err(Error::Limit {
            what: "channel pages",
            value: pages as u64,
            limit: xcfg.max_pages.into(),
        });
    }
    let granted =
        GrantedPages::alloc(&xcfg.gntalloc, id.instance, pages).map_err(io_err("gntalloc"))?;
    let grefs = granted.grefs().to_vec();
    let ring = Arc::new(
        Evtchn::bind_unbound(&xcfg.evtchn, id.instance).map_err(io_err("evtchn alloc_unbound"))?,
    );
    let live =
        Evtchn::bind_unbound(&xcfg.evtchn, id.instance).map_err(io_err("evtchn alloc_unbound"))?;
    granted
        .set_unmap_notify(status + DRIVER_ALIVE, live.port())
        .map_err(io_err("gntalloc unmap notify"))?;
    let region = Arc::new(XenRegion::Granted(granted));
    init_ring(&*region, 0, layout.to_instance)?;
    init_ring(&*region, layout.to_driver_offset, layout.to_driver)?;
    RegionView::new(&*region)
        .store_u32(status + DRIVER_ALIVE, 1, Ordering::Release)
        .map_err(|_| Error::BadHeader("status page"))?;

    let offer = offer_of(id, &layout, grefs, ring.port());
    let mut xs =
        XenbusStream::client(&xcfg.xenbus, xcfg.max_events).map_err(io_err("open xenstore"))?;
    let dir = id.driver_dir();
    publish_offer(&mut xs, id, &offer, live.port(), xcfg)?;

    let result = driver_wait_connected(&mut xs, id, xcfg);
    let version = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = xs.rm(TxId::NONE, &dir);
            return Err(e);
        }
    };
    tracing::info!(instance = %id.instance, name = %id.name, version, "xen channel connected");
    let tx = Producer::new(region.clone(), 0, layout.to_instance)?;
    let rx = Consumer::new(region.clone(), layout.to_driver_offset, layout.to_driver)?;
    let parts = Parts {
        role: Role::Driver,
        tx,
        rx,
        ring,
        live,
        region,
        layout,
        status,
        xs,
    };
    finish(parts, id, hello, cfg, xcfg)
}

/// The offer of a region laid out by `layout` (the rings, then the status
/// page) whose pages are granted as `grefs`, with the rings' port `port`.
fn offer_of(id: &ChannelId, layout: &Layout, grefs: Vec<GrantRef>, port: Port) -> Offer {
    Offer {
        version: ins_xen::channel::VERSION,
        version_min: ins_xen::channel::MIN_VERSION,
        instance: id.instance,
        to_instance: RingSizes {
            capacity: layout.to_instance.capacity,
            max_frame: layout.to_instance.max_frame,
        },
        to_driver: RingSizes {
            capacity: layout.to_driver.capacity,
            max_frame: layout.to_driver.max_frame,
        },
        to_driver_offset: layout.to_driver_offset as u64,
        region_len: (layout.len + PAGE_SIZE) as u64,
        grefs,
        port,
    }
}

/// Publishes `offer` (and the liveness port) under the driver's
/// directory in one transaction, readable by the instance alone, with
/// `state=Initialised` last.
fn publish_offer(
    xs: &mut Xs,
    id: &ChannelId,
    offer: &Offer,
    live: Port,
    xcfg: &XenConfig,
) -> Result<(), Error> {
    let dir = id.driver_dir();
    let perms = id.driver_perms();
    let entries = offer.entries();
    let live_port = format!("{live}");
    xs.transaction(xcfg.tx_attempts, |c, tx| {
        // Remove whatever a previous channel of this name left behind.
        c.mkdir(tx, &dir)?;
        c.rm(tx, &dir)?;
        c.mkdir(tx, &dir)?;
        c.set_perms(tx, &dir, &perms)?;
        for (k, v) in &entries {
            c.write(tx, &key(&dir, k), v.as_bytes())?;
        }
        c.write(tx, &key(&dir, LIVENESS_KEY), live_port.as_bytes())?;
        c.write(
            tx,
            &key(&dir, "state"),
            State::Initialised.value().as_bytes(),
        )
    })
    .map_err(Error::xs("publish the offer"))
}

/// Whether the instance, as xenstore shows it, is leaving or gone.
fn instance_leaving(xs: &mut Xs, id: &ChannelId) -> Result<bool, Error> {
    Ok(match peer_view(xs, id)? {
        PeerView::Absent => true,
        PeerView::Present { state, .. } => {
            matches!(state, Some(State::Closing | State::Closed) | None)
        }
    })
}

/// Driver side with the kernel module (ins.ko): the module granted the
/// pages, laid out the rings and bound the ports (`INS_IOC_XEN_OFFER`,
/// [`crate::sys::kmod::xen_offer`]); this publishes that offer, waits (up
/// to `xcfg.rendezvous_timeout`) for the instance to map and bind, calls
/// `connected` with the version, then holds the channel until the
/// instance leaves (its directory gone, as when its domain is destroyed,
/// or `Closing`/`Closed`) or the module hangs the channel file up (it
/// declared the instance dead). Teardown: if the module ended it, write
/// `state=Closing` and wait (bounded by `teardown_timeout`) for the
/// instance to close; then close the channel file (the module closes the
/// ports and ends the grants, deferred while still mapped) and remove our
/// keys. The hello and every frame are the module's.
pub fn offer_kmod(
    id: &ChannelId,
    ko: crate::sys::kmod::KmodXenOffer,
    xcfg: &XenConfig,
    connected: impl FnOnce(u32),
) -> Result<Teardown, Error> {
    let layout = ko.layout;
    let grefs = ko.grefs.iter().map(|&g| GrantRef(g)).collect();
    let offer = offer_of(id, &layout, grefs, Port(ko.port));
    let mut xs =
        XenbusStream::client(&xcfg.xenbus, xcfg.max_events).map_err(io_err("open xenstore"))?;
    let dir = id.driver_dir();
    publish_offer(&mut xs, id, &offer, Port(ko.live_port), xcfg)?;
    let version = match driver_wait_connected(&mut xs, id, xcfg) {
        Ok(v) => v,
        Err(e) => {
            let _ = xs.rm(TxId::NONE, &dir);
            return Err(e);
        }
    };
    connected(version);
    let held = hold_kmod(&mut xs, id, &ko.fd);
    let start = Instant::now();
    let (peer_left, closed) = match held {
        Ok(true) => (true, true),
        Ok(false) => {
            let _ = xs.write(
                TxId::NONE,
                &key(&dir, "state"),
                State::Closing.value().as_bytes(),
            );
            (
                false,
                wait_instance_closed(&mut xs, id, start + xcfg.teardown_timeout, xcfg),
            )
        }
        Err(e) => {
            // Watching failed: tear down all the same (no keys left).
            tracing::warn!("xen channel {}: stopped watching: {e}", id.name);
            drop(ko.fd);
            let _ = xs.rm(TxId::NONE, &dir);
            return Err(e);
        }
    };
    let waited = start.elapsed();
    drop(ko.fd);
    let _ = xs.unwatch(&id.instance_dir(), PEER_TOKEN);
    xs.rm(TxId::NONE, &dir)
        .map_err(Error::xs("remove the channel keys"))?;
    Ok(Teardown {
        peer_left,
        unmapped_before_revoke: closed,
        waited,
    })
}

/// Holds a module's channel until the instance leaves (`Ok(true)`) or the
/// channel file `fd` hangs up (`Ok(false)`: the module declared the
/// instance dead).
fn hold_kmod(xs: &mut Xs, id: &ChannelId, fd: &OwnedFd) -> Result<bool, Error> {
    let gone = PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL;
    loop {
        // Events the reads below took in are looked at by the next check.
        while xs.take_event().is_some() {}
        if instance_leaving(xs, id)? {
            return Ok(true);
        }
        if xs.take_event().is_some() {
            continue;
        }
        let (xs_ready, hung_up) = {
            let mut fds = [
                PollFd::new(xs.stream(), PollFlags::IN),
                PollFd::new(fd, PollFlags::empty()),
            ];
            poll_until(&mut fds, None).map_err(io_err("poll the channel"))?;
            (
                !fds[0].revents().is_empty(),
                fds[1].revents().intersects(gone),
            )
        };
        if hung_up {
            return Ok(false);
        }
        if xs_ready {
            xs.read_event().map_err(Error::xs("watch event"))?;
        }
    }
}

/// After `state=Closing`: waits (until `deadline`) for the instance to
/// unmap, write `Closed` or remove its directory. Whether it did.
fn wait_instance_closed(xs: &mut Xs, id: &ChannelId, deadline: Instant, xcfg: &XenConfig) -> bool {
    loop {
        match peer_view(xs, id) {
            Ok(
                PeerView::Absent
                | PeerView::Present {
                    state: Some(State::Closed),
                    ..
                },
            ) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        if !matches!(wait_watch(xs, deadline, xcfg.recheck), Ok(false)) {
            return false;
        }
    }
}

fn driver_wait_connected(xs: &mut Xs, id: &ChannelId, xcfg: &XenConfig) -> Result<u32, Error> {
    xs.watch(&id.instance_dir(), PEER_TOKEN)
        .map_err(Error::xs("watch the instance"))?;
    let deadline = Instant::now() + xcfg.rendezvous_timeout;
    let mut side = DriverSide::new();
    loop {
        match side.on_peer(peer_view(xs, id)?) {
            DriverStep::Wait => {}
            DriverStep::Connect(v) => {
                xs.write(
                    TxId::NONE,
                    &key(&id.driver_dir(), "state"),
                    State::Connected.value().as_bytes(),
                )
                .map_err(Error::xs("write state"))?;
                return Ok(v);
            }
            DriverStep::Fail(why) => return Err(Error::HelloMismatch(why)),
            DriverStep::Close | DriverStep::Revoke => return Err(Error::PeerClosed),
        }
        if wait_watch(xs, deadline, xcfg.recheck)? {
            return Err(Error::Timeout(
                "waiting for the instance to map the channel",
            ));
        }
    }
}

/// Instance side: waits (up to `xcfg.rendezvous_timeout`) for the driver's
/// offer for `id`, validates it against `cfg`'s limits, maps and binds,
/// publishes `Connected`, waits for the driver's confirmation, then
/// exchanges hellos.
pub fn connect_xen(
    id: &ChannelId,
    hello: Hello,
    cfg: &ChannelConfig,
    xcfg: &XenConfig,
) -> Result<XenChannel, Error> {
    let mut xs =
        XenbusStream::client(&xcfg.xenbus, xcfg.max_events).map_err(io_err("open xenstore"))?;
    let me = my_domid(&mut xs)?;
    if me != id.instance {
        return Err(Error::Config("this domain is not the channel's instance"));
    }
    let ddir = id.driver_dir();
    xs.watch(&ddir, PEER_TOKEN)
        .map_err(Error::xs("watch the driver"))?;
    let deadline = Instant::now() + xcfg.rendezvous_timeout;
    let mut side = InstanceSide::new();
    loop {
        match side.on_driver(driver_view(&mut xs, id)?) {
            InstanceStep::Map => break,
            InstanceStep::Wait | InstanceStep::Ready => {}
            InstanceStep::Unmap => return Err(Error::PeerClosed),
        }
        if wait_watch(&mut xs, deadline, xcfg.recheck)? {
            return Err(Error::Timeout("waiting for the driver's offer"));
        }
    }
    let limits = Limits {
        max_pages: xcfg.max_pages,
    };
    let offer = Offer::parse(me, limits, |k| read_opt(&mut xs, &key(&ddir, k)))??;
    let live_port = read_opt(&mut xs, &key(&ddir, LIVENESS_KEY))?
        .and_then(|v| Port::parse(&v))
        .ok_or(ins_xen::channel::ChannelError::Invalid(LIVENESS_KEY))?;
    let layout = layout_of(&offer, cfg)?;
    let status = layout.len;
    if offer.region_len != (layout.len + PAGE_SIZE) as u64 {
        return Err(Error::BadHeader("region length disagrees with the layout"));
    }

    let ring = Arc::new(
        Evtchn::bind_interdomain(&xcfg.evtchn, id.driver, offer.port)
            .map_err(io_err("evtchn bind_interdomain"))?,
    );
    let live = Evtchn::bind_interdomain(&xcfg.evtchn, id.driver, live_port)
        .map_err(io_err("evtchn bind_interdomain"))?;
    let mapped =
        MappedPages::map(&xcfg.gntdev, id.driver, &offer.grefs).map_err(io_err("gntdev map"))?;
    mapped
        .set_unmap_notify(status + INSTANCE_ALIVE, live.port())
        .map_err(io_err("gntdev unmap notify"))?;
    let region = Arc::new(XenRegion::Mapped(mapped));
    RegionView::new(&*region)
        .store_u32(status + INSTANCE_ALIVE, 1, Ordering::Release)
        .map_err(|_| Error::BadHeader("status page"))?;
    let tx = Producer::new(region.clone(), layout.to_driver_offset, layout.to_driver)?;
    let rx = Consumer::new(region.clone(), 0, layout.to_instance)?;

    let idir = id.instance_dir();
    let perms = id.instance_perms();
    let version = format!("{}", offer.choose_version());
    xs.transaction(xcfg.tx_attempts, |c, tx| {
        c.mkdir(tx, &idir)?;
        c.rm(tx, &idir)?;
        c.mkdir(tx, &idir)?;
        c.set_perms(tx, &idir, &perms)?;
        c.write(tx, &key(&idir, "version"), version.as_bytes())?;
        c.write(
            tx,
            &key(&idir, "state"),
            State::Connected.value().as_bytes(),
        )
    })
    .map_err(Error::xs("publish Connected"))?;
    side.connected();
    loop {
        match side.on_driver(driver_view(&mut xs, id)?) {
            InstanceStep::Ready => break,
            InstanceStep::Wait | InstanceStep::Map => {}
            InstanceStep::Unmap => {
                let _ = xs.rm(TxId::NONE, &idir);
                return Err(Error::PeerClosed);
            }
        }
        if wait_watch(&mut xs, deadline, xcfg.recheck)? {
            let _ = xs.rm(TxId::NONE, &idir);
            return Err(Error::Timeout("waiting for the driver to confirm"));
        }
    }
    let parts = Parts {
        role: Role::Instance,
        tx,
        rx,
        ring,
        live,
        region,
        layout,
        status,
        xs,
    };
    finish(parts, id, hello, cfg, xcfg)
}

/// Everything either side has set up before the hello.
struct Parts {
    role: Role,
    tx: Producer<Arc<XenRegion>>,
    rx: Consumer<Arc<XenRegion>>,
    ring: Arc<Evtchn>,
    live: Evtchn,
    region: Arc<XenRegion>,
    layout: Layout,
    status: usize,
    xs: Xs,
}

/// Builds the endpoint's raw channel, starts the link thread on the other
/// end of its control socket and runs the hello exchange.
fn finish(
    p: Parts,
    id: &ChannelId,
    hello: Hello,
    cfg: &ChannelConfig,
    xcfg: &XenConfig,
) -> Result<XenChannel, Error> {
    let (ep_end, link_end) = UnixStream::pair().map_err(io_err("socketpair"))?;
    let raw = RawChannel::<Xen> {
        role: p.role,
        tx: p.tx,
        rx: p.rx,
        tx_bell: XenBell::new(p.ring.clone()),
        rx_bell: XenBell::new(p.ring),
        control: ep_end,
        layout: p.layout,
        region: p.region.clone(),
        spin: cfg.spin,
    };
    let link = Link {
        xs: p.xs,
        id: id.clone(),
        live: p.live,
        region: p.region,
        status: p.status,
        role: p.role,
        teardown_timeout: xcfg.teardown_timeout,
    };
    let thread = std::thread::Builder::new()
        .name(format!("xen-link-{}", link.id.name))
        .spawn(move || link.run(link_end))
        .map_err(io_err("spawn the xen link thread"))?;
    match raw.handshake(hello, cfg.handshake_timeout) {
        Ok(endpoint) => Ok(XenChannel {
            endpoint,
            link: thread,
        }),
        Err(e) => {
            // The endpoint is gone: the link sees end-of-file and tears down.
            let _ = thread.join();
            Err(e)
        }
    }
}

/// The link thread's state.
struct Link {
    xs: Xs,
    id: ChannelId,
    live: Evtchn,
    region: Arc<XenRegion>,
    status: usize,
    role: Role,
    teardown_timeout: Duration,
}

/// What woke the link.
enum Ended {
    /// The endpoint was dropped.
    Local,
    /// The peer left or died.
    Peer,
}

impl Link {
    fn alive(&self, word: usize) -> bool {
        RegionView::new(&*self.region)
            .load_u32(self.status + word, Ordering::Acquire)
            .is_ok_and(|v| v & 0xff != 0)
    }

    fn peer_alive_word(&self) -> usize {
        match self.role {
            Role::Driver => INSTANCE_ALIVE,
            Role::Instance => DRIVER_ALIVE,
        }
    }

    /// Whether the peer, as xenstore shows it, is leaving or gone.
    fn peer_leaving(&mut self) -> Result<bool, Error> {
        Ok(match self.role {
            Role::Driver => match peer_view(&mut self.xs, &self.id)? {
                PeerView::Absent => true,
                PeerView::Present { state, .. } => {
                    matches!(state, Some(State::Closing | State::Closed) | None)
                }
            },
            Role::Instance => !matches!(
                driver_view(&mut self.xs, &self.id)?,
                DriverView::State(Some(State::Connected))
            ),
        })
    }

    fn run(mut self, ctl: UnixStream) -> Result<Teardown, Error> {
        let ended = self.watch(&ctl);
        let peer_left = matches!(ended, Ok(Ended::Peer));
        if peer_left {
            // Tell the endpoint (it reads end-of-file: a hang-up, as from a
            // local peer), then wait until its owner drops it, so that our
            // teardown (unmap, Closed; or revoke) follows its last access.
            // Only our sending side is shut: ours reads end-of-file only
            // when the endpoint's end closes.
            let _ = ctl.shutdown(std::net::Shutdown::Write);
            let mut fds = [PollFd::new(&ctl, PollFlags::IN | PollFlags::RDHUP)];
            let _ = poll_until(&mut fds, None);
        }
        drop(ctl);
        if let Err(e) = &ended {
            tracing::warn!("xen link for {} stopped watching: {e}", self.id.name);
        }
        match self.role {
            Role::Driver => self.driver_teardown(peer_left),
            Role::Instance => self.instance_teardown(peer_left),
        }
    }

    /// Waits until the endpoint is dropped or the peer leaves. xenstore is
    /// re-read only when a watch fires, and the liveness port only makes
    /// us look at the peer's alive word, so a peer flooding events costs
    /// a memory read each, not a xenstore round trip.
    fn watch(&mut self, ctl: &UnixStream) -> Result<Ended, Error> {
        if !self.alive(self.peer_alive_word()) || self.peer_leaving()? {
            return Ok(Ended::Peer);
        }
        loop {
            let (xs_ready, live_ready, ctl_ready) = {
                let mut fds = [
                    PollFd::new(self.xs.stream(), PollFlags::IN),
                    PollFd::new(&self.live, PollFlags::IN),
                    PollFd::new(ctl, PollFlags::IN | PollFlags::RDHUP),
                ];
                poll_until(&mut fds, None).map_err(io_err("poll the xen link"))?;
                (
                    !fds[0].revents().is_empty(),
                    !fds[1].revents().is_empty(),
                    !fds[2].revents().is_empty(),
                )
            };
            if ctl_ready {
                return Ok(Ended::Local);
            }
            if live_ready {
                self.live.drain().map_err(io_err("liveness port"))?;
                if !self.alive(self.peer_alive_word()) {
                    return Ok(Ended::Peer);
                }
            }
            if xs_ready {
                self.xs.read_event().map_err(Error::xs("watch event"))?;
                while self.xs.take_event().is_some() {}
                if self.peer_leaving()? {
                    return Ok(Ended::Peer);
                }
            }
        }
    }

    fn driver_teardown(mut self, peer_left: bool) -> Result<Teardown, Error> {
        let dir = self.id.driver_dir();
        let _ = self.xs.write(
            TxId::NONE,
            &key(&dir, "state"),
            State::Closing.value().as_bytes(),
        );
        let start = Instant::now();
        let deadline = start + self.teardown_timeout;
        let unmapped = loop {
            let gone = !self.alive(INSTANCE_ALIVE)
                || matches!(
                    peer_view(&mut self.xs, &self.id),
                    Ok(PeerView::Absent
                        | PeerView::Present {
                            state: Some(State::Closed),
                            ..
                        })
                );
            if gone {
                break true;
            }
            let ready = {
                let mut fds = [
                    PollFd::new(self.xs.stream(), PollFlags::IN),
                    PollFd::new(&self.live, PollFlags::IN),
                ];
                poll_until(&mut fds, Some(deadline)).map_err(io_err("poll the xen link"))?
            };
            if ready == 0 {
                break false;
            }
            let _ = self.live.drain();
            let mut fds = [PollFd::new(self.xs.stream(), PollFlags::IN)];
            if poll_until(&mut fds, Some(Instant::now())).unwrap_or(0) > 0 {
                self.xs.read_event().map_err(Error::xs("watch event"))?;
                while self.xs.take_event().is_some() {}
            }
        };
        let waited = start.elapsed();
        if !unmapped {
            tracing::warn!(instance = %self.id.instance, "instance still maps the channel after {waited:?}; revoking (Linux defers the free)");
        }
        // Unmap and DEALLOC_GREF: the grants end here.
        drop(self.region);
        drop(self.live);
        let _ = self.xs.unwatch(&self.id.instance_dir(), PEER_TOKEN);
        self.xs
            .rm(TxId::NONE, &dir)
            .map_err(Error::xs("remove the channel keys"))?;
        Ok(Teardown {
            peer_left,
            unmapped_before_revoke: unmapped,
            waited,
        })
    }

    fn instance_teardown(mut self, peer_left: bool) -> Result<Teardown, Error> {
        // Unmap first: the notification clears our alive word and fires
        // the liveness port, so the driver may revoke at once.
        drop(self.region);
        drop(self.live);
        let dir = self.id.instance_dir();
        let _ = self.xs.write(
            TxId::NONE,
            &key(&dir, "state"),
            State::Closed.value().as_bytes(),
        );
        let _ = self.xs.unwatch(&self.id.driver_dir(), PEER_TOKEN);
        self.xs
            .rm(TxId::NONE, &dir)
            .map_err(Error::xs("remove the channel keys"))?;
        Ok(Teardown {
            peer_left,
            unmapped_before_revoke: true,
            waited: Duration::ZERO,
        })
    }
}

/// Reads the driver's and the instance's channel keys as `snooper` would:
/// every read and write must be refused. Returns, for each key tried,
/// the path and what xenstore answered (`Ok` if it was *allowed*).
pub fn probe_access(
    xs: &mut Xs,
    id: &ChannelId,
) -> Vec<(String, &'static str, Result<(), XsErrno>)> {
    let mut out = Vec::new();
    for dir in [id.driver_dir(), id.instance_dir()] {
        for k in ["state", "version", "event-channel", "ring-ref/0"] {
            let p = key(&dir, k);
            let r = match xs.read(TxId::NONE, &p) {
                Ok(_) => Ok(()),
                Err(xenstore::Error::Xs(e)) => Err(e),
                Err(_) => Err(XsErrno::EIO),
            };
            out.push((p.clone(), "read", r));
            let w = match xs.write(TxId::NONE, &p, b"6") {
                Ok(()) => Ok(()),
                Err(xenstore::Error::Xs(e)) => Err(e),
                Err(_) => Err(XsErrno::EIO),
            };
            out.push((p, "write", w));
        }
        let d = match xs.directory(TxId::NONE, &dir) {
            Ok(_) => Ok(()),
            Err(xenstore::Error::Xs(e)) => Err(e),
            Err(_) => Err(XsErrno::EIO),
        };
        out.push((dir, "list", d));
    }
    out
}
