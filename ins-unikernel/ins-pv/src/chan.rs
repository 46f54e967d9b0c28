//! Joining the protected-VM driver over an INS Xen channel: the mapping
//! (instance) side of the rendezvous that `ins-transport`'s `connect_xen`
//! runs for the Linux `ins`, with the same keys, state machine and hello
//! (`ins_xen::channel`, `ins_protocol::hello`).
//!
//! ```text
//!  watch the driver's dir; wait for state=Initialised (InstanceSide: Map)
//!  read + validate the offer (Offer::parse, our page limit), the liveness
//!      port, and the ring layout (recomputed from the announced sizes)
//!  bind the ring port and the liveness port (EVTCHNOP_bind_interdomain)
//!  map the grants side by side in the foreign window (GNTTABOP_map)
//!  status page: instance alive = 1
//!  one transaction: our dir (n<me> r<driver>), version, state=Connected
//!  wait for the driver's state=Connected (InstanceSide: Ready)
//!  hello (Role::Instance) on ring instance→driver, the driver's on the other
//! ```
//!
//! Invariants: every value from xenstore or the ring is validated before
//! use (the driver is untrusted here too): the offer by `Offer::parse`,
//! the layout against our limits, the rings by ins-protocol's consumer
//! and producer (indices and frame lengths checked on every access), the
//! hello by `Hello::decode`/`negotiate` and the ring sizes it announces.
//! Every wait has a deadline. On failure after mapping, and on
//! [`Channel::close`], the instance clears its alive word, raises the
//! liveness port, unmaps every grant, closes both ports and removes its
//! directory (state `Closed` first): the driver can then revoke at once.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;

use ins_core::outbox::RingOutbox;
use ins_protocol::hello::{Hello, Role};
use ins_protocol::ring::{Consumer, Producer, RingConfig};
use ins_xen::channel::{
    ChannelId, DriverView, INSTANCE_ALIVE, InstanceSide, InstanceStep, LIVENESS_KEY, Limits, Offer,
    State, read_driver_view, read_key,
};
use ins_xen::xenstore::{Client, TxId};
use ins_xen::{DomId, Port};
use ins_xen_pv::abi::PAGE_SIZE;
use ins_xen_pv::events::Events;
use ins_xen_pv::gnttab::ForeignRegion;
use ins_xen_pv::hypercall;
use ins_xen_pv::mm::Window;
use ins_xen_pv::page::Mapped;
use ins_xen_pv::time::Clock;
use ins_xen_pv::xenstore::XsRing;

/// The xenstore client of this domain.
pub type Xs = Client<XsRing>;

const WATCH_TOKEN: &str = "ins-driver";
/// Attempts of a xenstore transaction that keeps conflicting.
const TX_ATTEMPTS: u32 = 16;
/// Re-read the driver's keys this often while waiting, even without a
/// watch event (watches may be lost when permissions change).
const RECHECK_NS: u64 = 500_000_000;

/// Why the channel could not be joined or used.
#[derive(Debug)]
pub struct ChanError(pub String);

impl fmt::Display for ChanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(what: &str, e: impl fmt::Display) -> ChanError {
    ChanError(format!("{what}: {e}"))
}

/// What the command line says about the channel (`driver=`, `channel=`,
/// `chan_pages=`, `chan_max_frame=`, `rendezvous_s=`, `hello_s=`).
#[derive(Debug, Clone)]
pub struct ChanArgs {
    /// The driver's domain.
    pub driver: DomId,
    /// The channel's name.
    pub name: String,
    /// Most pages of an offer accepted (besides the free foreign window;
    /// `u32::MAX` by default: only the window limits).
    pub max_pages: u32,
    /// Largest per-frame limit accepted from the driver.
    pub max_frame_limit: u32,
    /// How long to wait for the offer and the driver's confirmation.
    pub rendezvous_ns: u64,
    /// How long to wait for the driver's hello.
    pub hello_ns: u64,
}

/// The platform pieces the channel uses.
pub struct Platform<'a> {
    /// xenstore.
    pub xs: &'a mut Xs,
    /// Event channels.
    pub events: Events,
    /// The clock.
    pub clock: Clock,
    /// The foreign-mapping window.
    pub window: &'a mut Window,
    /// xenstore's port (to wait for watch events).
    pub store_port: u32,
}

/// A joined channel.
pub struct Channel {
    id: ChannelId,
    region: Option<ForeignRegion>,
    status: usize,
    /// The ring's port (our end).
    pub ring_port: u32,
    /// The liveness port (our end).
    pub live_port: u32,
    /// Ring instance→driver, as the executor's outbox.
    pub outbox: RingOutbox<Mapped>,
    /// Ring driver→instance.
    pub rx: Consumer<Mapped>,
    /// The driver's hello.
    pub peer: Hello,
    /// The hello version agreed.
    pub version: u16,
    side: InstanceSide,
}

fn key(dir: &str, k: &str) -> String {
    format!("{dir}/{k}")
}

fn read_opt(xs: &mut Xs, path: &str) -> Result<Option<Vec<u8>>, ChanError> {
    read_key(xs, path).map_err(|e| err("xenstore read", e))
}

fn driver_view(xs: &mut Xs, id: &ChannelId) -> Result<DriverView, ChanError> {
    read_driver_view(xs, id).map_err(|e| err("xenstore read", e))
}

/// Takes queued and arriving watch events without blocking; returns
/// whether there was any.
pub fn drain_watch(xs: &mut Xs) -> Result<bool, ChanError> {
    let mut any = false;
    while xs.stream().has_input() {
        xs.read_event()
            .map_err(|e| err("xenstore watch event", e))?;
    }
    while xs.take_event().is_some() {
        any = true;
    }
    Ok(any)
}

/// Sleeps until a watch event, [`RECHECK_NS`] or `deadline`; returns
/// whether the deadline passed.
fn wait_watch(p: &mut Platform<'_>, deadline: u64) -> Result<bool, ChanError> {
    if drain_watch(p.xs)? {
        return Ok(false);
    }
    let now = p.clock.now_ns();
    if now >= deadline {
        return Ok(true);
    }
    let until = deadline.min(now.saturating_add(RECHECK_NS));
    let _ = p.events.wait(&[p.store_port], Some(until));
    p.events.take(p.store_port);
    drain_watch(p.xs)?;
    Ok(false)
}

/// The two rings and the status page's offset, recomputed from the
/// announced sizes (as the driver lays them out: ring driver→instance at
/// 0, ring instance→driver at the next page boundary, the status page
/// after it) and checked against the offer and our limits.
fn layout(
    offer: &Offer,
    max_frame_limit: u32,
) -> Result<(RingConfig, RingConfig, usize), ChanError> {
    for mf in [offer.to_instance.max_frame, offer.to_driver.max_frame] {
        if mf > max_frame_limit {
            return Err(ChanError(format!(
                "the driver announces frames of {mf} bytes, above our limit {max_frame_limit}"
            )));
        }
        if (mf as usize) < Hello::LEN {
            return Err(ChanError(
                "announced max_frame is smaller than a hello".into(),
            ));
        }
    }
    let to_instance = RingConfig::new(offer.to_instance.capacity, offer.to_instance.max_frame)
        .map_err(|e| err("ring driver→instance", e))?;
    let to_driver = RingConfig::new(offer.to_driver.capacity, offer.to_driver.max_frame)
        .map_err(|e| err("ring instance→driver", e))?;
    let off = to_instance.region_len().next_multiple_of(PAGE_SIZE);
    let status = (off + to_driver.region_len()).next_multiple_of(PAGE_SIZE);
    if off as u64 != offer.to_driver_offset || (status + PAGE_SIZE) as u64 != offer.region_len {
        return Err(ChanError(
            "the offer's layout disagrees with its ring sizes".into(),
        ));
    }
    Ok((to_instance, to_driver, status))
}

/// Ports and pages bound so far (undone on failure).
struct Bound {
    ring: Option<u32>,
    live: Option<u32>,
    region: Option<ForeignRegion>,
    status: usize,
}

impl Bound {
    fn undo(mut self, p: &mut Platform<'_>) -> Option<ChanError> {
        let mut problem = None;
        if let Some(r) = self.region.take() {
            let _ = r
                .region()
                .view()
                .store_u32(self.status + INSTANCE_ALIVE, 0, Ordering::Release);
            if let Some(l) = self.live {
                let _ = p.events.notify(l);
            }
            if let Err(e) = r.unmap(p.window) {
                problem = Some(err("unmap the channel", e));
            }
        }
        for port in [self.ring, self.live].into_iter().flatten() {
            if let Err(e) = hypercall::evtchn_close(port) {
                problem = Some(err("close a channel port", e));
            }
        }
        problem
    }
}

/// Waits for the driver's offer for channel `args.name`, maps and binds
/// it, publishes `Connected`, waits for the driver's confirmation and
/// exchanges hellos (`hello`'s ring fields are filled in here).
pub fn join(p: &mut Platform<'_>, args: &ChanArgs, hello: Hello) -> Result<Channel, ChanError> {
    let me =
        p.xs.read(TxId::NONE, "domid")
            .ok()
            .and_then(|v| DomId::parse(&v))
            .ok_or_else(|| ChanError("cannot read our domid from xenstore".into()))?;
    let id = ChannelId::new(args.driver, me, &args.name).map_err(|e| err("channel", e))?;
    let ddir = id.driver_dir();
    p.xs.watch(&ddir, WATCH_TOKEN)
        .map_err(|e| err("watch the driver", e))?;
    let deadline = p.clock.now_ns().saturating_add(args.rendezvous_ns);
    let mut side = InstanceSide::new();
    loop {
        match side.on_driver(driver_view(p.xs, &id)?) {
            InstanceStep::Map => break,
            InstanceStep::Wait | InstanceStep::Ready => {}
            InstanceStep::Unmap => return Err(ChanError("the driver closed the channel".into())),
        }
        if wait_watch(p, deadline)? {
            return Err(ChanError("timed out waiting for the driver's offer".into()));
        }
    }
    // The region must fit the foreign window as well as `chan_pages`.
    let max_pages = args
        .max_pages
        .min(u32::try_from(p.window.free_pages()).unwrap_or(u32::MAX));
    let limits = Limits { max_pages };
    let offer = Offer::parse(me, limits, |k| read_opt(p.xs, &key(&ddir, k)))?.map_err(|e| {
        ChanError(format!(
            "the driver's offer: {e} (we accept at most {max_pages} pages: chan_pages= and the foreign window's free pages, {} of {}; boot with a larger foreign_mib= or have the driver offer smaller rings, --ring-capacity)",
            p.window.free_pages(),
            p.window.pages()
        ))
    })?;
    let live_port = read_opt(p.xs, &key(&ddir, LIVENESS_KEY))?
        .and_then(|v| Port::parse(&v))
        .ok_or_else(|| ChanError(format!("the offer's {LIVENESS_KEY} is missing or invalid")))?;
    let (to_instance, to_driver, status) = layout(&offer, args.max_frame_limit)?;

    let mut b = Bound {
        ring: None,
        live: None,
        region: None,
        status,
    };
    let r = bind_and_map(p, &id, &offer, live_port, &mut b);
    if let Err(e) = r {
        let _ = b.undo(p);
        return Err(e);
    }
    let region = b.region.as_ref().map(|r| r.region());
    let r = match (region, b.ring) {
        (Some(region), Some(ring_port)) => {
            let rings = Rings {
                region,
                to_instance,
                to_driver,
                to_driver_offset: to_driver_offset(&offer),
                ring_port,
            };
            connect(
                p,
                &id,
                &mut side,
                &rings,
                offer.choose_version(),
                deadline,
                args,
                hello,
            )
        }
        _ => Err(ChanError("the channel is not mapped and bound".into())),
    };
    match r {
        Ok((tx, rx, peer, version)) => Ok(Channel {
            id,
            region: b.region.take(),
            status,
            ring_port: b.ring.unwrap_or_default(),
            live_port: b.live.unwrap_or_default(),
            outbox: RingOutbox::new(tx),
            rx,
            peer,
            version,
            side,
        }),
        Err(e) => {
            let _ = p.xs.rm(TxId::NONE, &id.instance_dir());
            let _ = b.undo(p);
            Err(e)
        }
    }
}

/// The mapped rings' geometry.
struct Rings {
    region: Mapped,
    to_instance: RingConfig,
    to_driver: RingConfig,
    to_driver_offset: usize,
    ring_port: u32,
}

type Connected = (Producer<Mapped>, Consumer<Mapped>, Hello, u16);

/// After mapping: `Connected` published, the driver's confirmation, the
/// hellos.
#[allow(clippy::too_many_arguments)]
fn connect(
    p: &mut Platform<'_>,
    id: &ChannelId,
    side: &mut InstanceSide,
    r: &Rings,
    version: u32,
    deadline: u64,
    args: &ChanArgs,
    mut hello: Hello,
) -> Result<Connected, ChanError> {
    let mut tx = Producer::new(r.region, r.to_driver_offset, r.to_driver)
        .map_err(|e| err("ring instance→driver", e))?;
    let mut rx =
        Consumer::new(r.region, 0, r.to_instance).map_err(|e| err("ring driver→instance", e))?;
    publish_connected(p, id, version)?;
    side.connected();
    loop {
        match side.on_driver(driver_view(p.xs, id)?) {
            InstanceStep::Ready => break,
            InstanceStep::Wait | InstanceStep::Map => {}
            InstanceStep::Unmap => return Err(ChanError("the driver closed the channel".into())),
        }
        if wait_watch(p, deadline)? {
            return Err(ChanError(
                "timed out waiting for the driver to confirm".into(),
            ));
        }
    }
    hello.role = Role::Instance;
    hello.pid = u32::from(id.instance.0);
    hello.ring_capacity = r.to_driver.capacity;
    hello.max_frame = r.to_instance.max_frame;
    let peer = exchange_hello(p, &mut tx, &mut rx, r.ring_port, &hello, args.hello_ns)?;
    let v = hello
        .negotiate(&peer)
        .map_err(|e| err("the driver's hello", e))?;
    if peer.ring_capacity != r.to_instance.capacity || peer.max_frame != r.to_driver.max_frame {
        return Err(ChanError("the driver's hello describes other rings".into()));
    }
    Ok((tx, rx, peer, v))
}

fn to_driver_offset(offer: &Offer) -> usize {
    // `layout` checked it against the ring sizes (and so below the region).
    offer.to_driver_offset as usize
}

fn bind_and_map(
    p: &mut Platform<'_>,
    id: &ChannelId,
    offer: &Offer,
    live_port: Port,
    b: &mut Bound,
) -> Result<(), ChanError> {
    let ring = hypercall::evtchn_bind_interdomain(id.driver.0, offer.port.0)
        .map_err(|e| err("bind the ring's event channel", e))?;
    b.ring = Some(ring);
    let live = hypercall::evtchn_bind_interdomain(id.driver.0, live_port.0)
        .map_err(|e| err("bind the liveness event channel", e))?;
    b.live = Some(live);
    for port in [ring, live] {
        p.events
            .unmask(port)
            .map_err(|e| err("unmask a channel port", e))?;
    }
    let grefs: Vec<u32> = offer.grefs.iter().map(|g| g.0).collect();
    let free = p.window.free_pages();
    if grefs.len() > free {
        return Err(ChanError(format!(
            "the channel has {} pages, the foreign window only {free} of {} free (boot with a larger foreign_mib= or ask the driver for smaller rings: --ring-capacity)",
            grefs.len(),
            p.window.pages()
        )));
    }
    let region = ForeignRegion::map(p.window, id.driver.0, &grefs, false)
        .map_err(|e| err("map the driver's grants", e))?;
    let view = region.region().view();
    b.region = Some(region);
    view.store_u32(b.status + INSTANCE_ALIVE, 1, Ordering::Release)
        .map_err(|_| ChanError("the status page is outside the region".into()))
}

fn publish_connected(p: &mut Platform<'_>, id: &ChannelId, version: u32) -> Result<(), ChanError> {
    let idir = id.instance_dir();
    let perms = id.instance_perms();
    let version = format!("{version}");
    p.xs.transaction(TX_ATTEMPTS, |c, tx| {
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
    .map_err(|e| err("publish Connected", e))
}

fn exchange_hello(
    p: &mut Platform<'_>,
    tx: &mut Producer<Mapped>,
    rx: &mut Consumer<Mapped>,
    port: u32,
    hello: &Hello,
    timeout_ns: u64,
) -> Result<Hello, ChanError> {
    tx.try_push(&hello.encode())
        .map_err(|e| err("send the hello", e))?;
    if tx.flush().map_err(|e| err("send the hello", e))? {
        let _ = p.events.notify(port);
    }
    let deadline = p.clock.now_ns().saturating_add(timeout_ns);
    let mut buf = alloc::vec![0u8; rx.config().max_frame as usize];
    loop {
        if let Some(n) = rx.pop(&mut buf).map_err(|e| err("the driver's ring", e))? {
            if rx.release().map_err(|e| err("the driver's ring", e))? {
                let _ = p.events.notify(port);
            }
            return Hello::decode(&buf[..n]).map_err(|e| err("the driver's hello", e));
        }
        if p.clock.now_ns() >= deadline {
            return Err(ChanError("timed out waiting for the driver's hello".into()));
        }
        if !rx.prepare_wait().map_err(|e| err("the driver's ring", e))? {
            let _ = p.events.wait(&[port], Some(deadline));
            p.events.take(port);
        }
    }
}

/// Why [`Channel::check_driver`] says to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// The driver's alive word is clear (it let go of the pages).
    Unmapped,
    /// Its state left Connected, or its directory is gone.
    Closing,
}

impl Channel {
    /// The channel's id.
    pub fn id(&self) -> &ChannelId {
        &self.id
    }

    /// Pages mapped.
    pub fn pages(&self) -> usize {
        self.region.as_ref().map_or(0, ForeignRegion::pages)
    }

    /// Whether the driver still holds the pages (its alive word).
    pub fn driver_alive(&self) -> bool {
        self.region.as_ref().is_some_and(|r| {
            r.region()
                .view()
                .load_u32(
                    self.status + ins_xen::channel::DRIVER_ALIVE,
                    Ordering::Acquire,
                )
                .is_ok_and(|v| v & 0xff != 0)
        })
    }

    /// Looks at the driver: its alive word, and its state when a watch
    /// event came (or `force`).
    pub fn check_driver(&mut self, xs: &mut Xs, force: bool) -> Result<Option<Gone>, ChanError> {
        if !self.driver_alive() {
            return Ok(Some(Gone::Unmapped));
        }
        if drain_watch(xs)? || force {
            return Ok(match self.side.on_driver(driver_view(xs, &self.id)?) {
                InstanceStep::Unmap => Some(Gone::Closing),
                _ => None,
            });
        }
        Ok(None)
    }

    /// Tears down: alive word cleared and the liveness port raised, every
    /// grant unmapped, both ports closed, `state=Closed` written and our
    /// directory removed. Returns the pages unmapped.
    pub fn close(mut self, p: &mut Platform<'_>) -> Result<usize, ChanError> {
        let pages = self.pages();
        let b = Bound {
            ring: Some(self.ring_port),
            live: Some(self.live_port),
            region: self.region.take(),
            status: self.status,
        };
        let problem = b.undo(p);
        self.side.closed();
        let idir = self.id.instance_dir();
        let _ = p.xs.write(
            TxId::NONE,
            &key(&idir, "state"),
            State::Closed.value().as_bytes(),
        );
        let _ = p.xs.rm(TxId::NONE, &idir);
        let _ = p.xs.unwatch(&self.id.driver_dir(), WATCH_TOKEN);
        match problem {
            Some(e) => Err(e),
            None => Ok(pages),
        }
    }
}
