//! The INS channel's rendezvous in xenstore: where its keys live, what
//! they hold, and the versioned front/back state machines.
//!
//! Roles: the *driver* (protected VM) grants the ring pages and allocates
//! an unbound event channel; the *instance* maps the pages and binds the
//! channel. Each side writes only under its own
//! `/local/domain/<id>/data/`, and each directory is owned by its writer,
//! readable by the peer and by nobody else (`n<owner>`, `r<peer>`); dom0,
//! being privileged, sees everything, as it does anyway.
//!
//! ```text
//!  /local/domain/<driver>/data/ins/<name>/          owner driver, r<instance>
//!      version, version-min       protocol versions the driver speaks
//!      instance                   the only domain allowed to map
//!      to-instance-capacity, to-instance-max-frame,
//!      to-driver-capacity, to-driver-max-frame,
//!      to-driver-offset, region-len                  ring layout
//!      ring-pages                 number of granted pages
//!      ring-ref/<k>               up to REFS_PER_KEY grant refs, space-separated
//!      event-channel              unbound port for <instance>
//!      liveness-channel           second unbound port (see LIVENESS_KEY)
//!      state                      xenbus-style state
//!  /local/domain/<instance>/data/ins/<driver>-<name>/  owner instance, r<driver>
//!      version                    the version the instance chose
//!      state
//!
//!  driver                                          instance
//!   │ grant pages, alloc unbound port                 │
//!   │ one transaction: keys, perms, state=Initialised │
//!   │ ─────────────────────────── watch fires ──────▶ │ read + validate the offer
//!   │                                                 │ map grants, bind port
//!   │ ◀── watch fires ── state=Connected, version ─── │ (one transaction)
//!   │ check version, state=Connected                  │
//!   │ ◀════ ring hello exchange (ins_protocol) ═════▶ │
//!   │ Closing ─▶ instance unmaps, writes Closed ─▶ driver revokes, removes keys
//!   │ instance directory or domain gone ─▶ driver revokes once Xen says
//!   │                                      the pages are unmapped
//! ```
//!
//! Everything here is pure: the caller does the xenstore I/O and passes
//! what it read. Every value read from the peer is parsed strictly
//! (canonical decimals, exact counts, no duplicates) before use.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::domid::DomId;
use crate::evtchn::Port;
use crate::gnttab::{GrantRef, PAGE_SIZE};
use crate::xenstore::perms::{Access, Permission};
use crate::xenstore::{self, Client, Stream, TxId, XsErrno, path};

/// The newest rendezvous version this build speaks.
pub const VERSION: u32 = 1;
/// The oldest rendezvous version this build accepts.
pub const MIN_VERSION: u32 = 1;
/// Key, in the driver's directory, of the *liveness* event channel: an
/// unbound port for the instance, raised only when a side lets go of the
/// pages (the ring's own port stays the rings' alone).
pub const LIVENESS_KEY: &str = "liveness-channel";
/// Offset of the driver's alive word in the *status page*, the region's
/// last page (after the two rings): non-zero first byte while the driver
/// holds the pages.
pub const DRIVER_ALIVE: usize = 0;
/// Offset of the instance's alive word in the status page: set to 1 once
/// it mapped the region, first byte cleared when it lets go (by its
/// kernel's unmap notification, or by itself before unmapping).
pub const INSTANCE_ALIVE: usize = 64;
/// Grant references per `ring-ref/<k>` key (≤ 2,816 bytes of value).
pub const REFS_PER_KEY: usize = 256;

/// Xenbus-style states (`io/xenbus.h`), written as decimal `state` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum State {
    /// Nothing yet.
    Unknown = 0,
    /// Setting up.
    Initialising = 1,
    /// Waiting for the peer's details.
    InitWait = 2,
    /// Our details are published.
    Initialised = 3,
    /// Mapped and bound: the rings may be used.
    Connected = 4,
    /// Tearing down: stop using the rings.
    Closing = 5,
    /// Done: our side unmapped (instance) or revoked (driver).
    Closed = 6,
}

impl State {
    /// Parses a `state` value.
    pub fn parse(bytes: &[u8]) -> Option<State> {
        Some(match crate::decimal::parse_u32(bytes)? {
            0 => State::Unknown,
            1 => State::Initialising,
            2 => State::InitWait,
            3 => State::Initialised,
            4 => State::Connected,
            5 => State::Closing,
            6 => State::Closed,
            _ => return None,
        })
    }

    /// The value written.
    pub fn value(self) -> String {
        format!("{}", self as u8)
    }
}

/// Names one channel between a driver domain and an instance domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelId {
    /// The granting, protected side.
    pub driver: DomId,
    /// The mapping side.
    pub instance: DomId,
    /// A path element naming the channel (unique per driver).
    pub name: String,
}

/// Why a channel description was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// A domain id is special, or both ends are the same domain.
    BadDomain,
    /// The channel name is not a valid path element.
    BadName,
    /// A key the protocol requires is absent.
    Missing(&'static str),
    /// A key's value does not parse.
    Invalid(&'static str),
    /// The values disagree with each other or with our limits.
    Inconsistent(&'static str),
    /// No version both sides speak.
    Version {
        /// The peer's range.
        peer_min: u32,
        /// The peer's range.
        peer_max: u32,
    },
    /// The offer is for another domain.
    NotForUs(DomId),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::BadDomain => f.write_str("bad domain id for a channel"),
            ChannelError::BadName => f.write_str("channel name is not a xenstore path element"),
            ChannelError::Missing(k) => write!(f, "channel key {k} is missing"),
            ChannelError::Invalid(k) => write!(f, "channel key {k} has an invalid value"),
            ChannelError::Inconsistent(why) => write!(f, "channel keys are inconsistent: {why}"),
            ChannelError::Version { peer_min, peer_max } => write!(
                f,
                "peer speaks rendezvous versions {peer_min}..={peer_max}, we speak {MIN_VERSION}..={VERSION}"
            ),
            ChannelError::NotForUs(d) => write!(f, "channel offer is for domain {d}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ChannelError {}

impl ChannelId {
    /// A channel id, checked: real, distinct domains and a path-element name.
    pub fn new(driver: DomId, instance: DomId, name: &str) -> Result<ChannelId, ChannelError> {
        if !driver.is_real() || !instance.is_real() || driver == instance {
            return Err(ChannelError::BadDomain);
        }
        if path::check_element(name.as_bytes()).is_err() || name.len() > 64 {
            return Err(ChannelError::BadName);
        }
        Ok(ChannelId {
            driver,
            instance,
            name: String::from(name),
        })
    }

    /// The driver's directory for this channel.
    pub fn driver_dir(&self) -> String {
        format!("/local/domain/{}/data/ins/{}", self.driver, self.name)
    }

    /// The instance's directory for this channel.
    pub fn instance_dir(&self) -> String {
        format!(
            "/local/domain/{}/data/ins/{}-{}",
            self.instance, self.driver, self.name
        )
    }

    /// Permissions of the driver's directory: the driver owns it, the
    /// instance reads it, nobody else has access.
    pub fn driver_perms(&self) -> [Permission; 2] {
        [
            Permission::new(self.driver, Access::None),
            Permission::new(self.instance, Access::Read),
        ]
    }

    /// Permissions of the instance's directory: the instance owns it, the
    /// driver reads it, nobody else has access.
    pub fn instance_perms(&self) -> [Permission; 2] {
        [
            Permission::new(self.instance, Access::None),
            Permission::new(self.driver, Access::Read),
        ]
    }
}

/// Size of one ring as announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSizes {
    /// Data capacity in bytes.
    pub capacity: u32,
    /// Largest frame.
    pub max_frame: u32,
}

/// What the driver publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Newest version the driver speaks.
    pub version: u32,
    /// Oldest version the driver speaks.
    pub version_min: u32,
    /// The instance allowed to map.
    pub instance: DomId,
    /// Ring driver→instance (at offset 0).
    pub to_instance: RingSizes,
    /// Ring instance→driver.
    pub to_driver: RingSizes,
    /// Offset of the instance→driver ring.
    pub to_driver_offset: u64,
    /// Length of the shared region (a whole number of pages).
    pub region_len: u64,
    /// One grant per page of the region, in order.
    pub grefs: Vec<GrantRef>,
    /// The unbound port for the instance to bind.
    pub port: Port,
}

/// Limits the instance applies to an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most pages accepted.
    pub max_pages: u32,
}

impl Offer {
    /// The `(key, value)` pairs to write under the driver's directory
    /// (`state` excluded: written last, separately).
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = [
            ("version", format!("{}", self.version)),
            ("version-min", format!("{}", self.version_min)),
            ("instance", format!("{}", self.instance)),
            (
                "to-instance-capacity",
                format!("{}", self.to_instance.capacity),
            ),
            (
                "to-instance-max-frame",
                format!("{}", self.to_instance.max_frame),
            ),
            ("to-driver-capacity", format!("{}", self.to_driver.capacity)),
            (
                "to-driver-max-frame",
                format!("{}", self.to_driver.max_frame),
            ),
            ("to-driver-offset", format!("{}", self.to_driver_offset)),
            ("region-len", format!("{}", self.region_len)),
            ("ring-pages", format!("{}", self.grefs.len())),
            ("event-channel", format!("{}", self.port)),
        ]
        .into_iter()
        .map(|(k, v)| (String::from(k), v))
        .collect();
        for (k, chunk) in self.grefs.chunks(REFS_PER_KEY).enumerate() {
            let refs: Vec<String> = chunk.iter().map(|g| format!("{g}")).collect();
            out.push((format!("ring-ref/{k}"), refs.join(" ")));
        }
        out
    }

    /// Reads and validates an offer through `get(key)` (a key relative to
    /// the driver's directory; `Ok(None)` when absent). `me` is the
    /// reading instance.
    pub fn parse<E>(
        me: DomId,
        limits: Limits,
        mut get: impl FnMut(&str) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Result<Offer, ChannelError>, E> {
        macro_rules! field {
            ($key:literal, $parse:expr) => {
                match get($key)? {
                    None => return Ok(Err(ChannelError::Missing($key))),
                    Some(v) => match $parse(&v[..]) {
                        Some(x) => x,
                        None => return Ok(Err(ChannelError::Invalid($key))),
                    },
                }
            };
        }
        let u32_of = crate::decimal::parse_u32;
        let u64_of = crate::decimal::parse_u64;
        let version = field!("version", u32_of);
        let version_min = field!("version-min", u32_of);
        if version_min > version {
            return Ok(Err(ChannelError::Invalid("version-min")));
        }
        if version < MIN_VERSION || version_min > VERSION {
            return Ok(Err(ChannelError::Version {
                peer_min: version_min,
                peer_max: version,
            }));
        }
        let instance = field!("instance", DomId::parse);
        if instance != me {
            return Ok(Err(ChannelError::NotForUs(instance)));
        }
        let to_instance = RingSizes {
            capacity: field!("to-instance-capacity", u32_of),
            max_frame: field!("to-instance-max-frame", u32_of),
        };
        let to_driver = RingSizes {
            capacity: field!("to-driver-capacity", u32_of),
            max_frame: field!("to-driver-max-frame", u32_of),
        };
        let to_driver_offset = field!("to-driver-offset", u64_of);
        let region_len = field!("region-len", u64_of);
        let pages = field!("ring-pages", u32_of);
        if pages == 0 || pages > limits.max_pages {
            return Ok(Err(ChannelError::Inconsistent(
                "ring-pages is 0 or above our limit",
            )));
        }
        if u64::from(pages) * PAGE_SIZE as u64 != region_len {
            return Ok(Err(ChannelError::Inconsistent(
                "region-len is not ring-pages pages",
            )));
        }
        if to_driver_offset >= region_len || to_driver_offset % PAGE_SIZE as u64 != 0 {
            return Ok(Err(ChannelError::Inconsistent(
                "to-driver-offset outside the region",
            )));
        }
        let port = field!("event-channel", Port::parse);
        let mut grefs = Vec::with_capacity(pages as usize);
        let keys = (pages as usize).div_ceil(REFS_PER_KEY);
        for k in 0..keys {
            let key = format!("ring-ref/{k}");
            let Some(v) = get(&key)? else {
                return Ok(Err(ChannelError::Missing("ring-ref/<k>")));
            };
            let want = (pages as usize - k * REFS_PER_KEY).min(REFS_PER_KEY);
            let mut n = 0;
            for word in v.split(|&b| b == b' ') {
                match GrantRef::parse(word) {
                    Some(g) if n < want => grefs.push(g),
                    _ => return Ok(Err(ChannelError::Invalid("ring-ref/<k>"))),
                }
                n += 1;
            }
            if n != want {
                return Ok(Err(ChannelError::Inconsistent(
                    "ring-ref/<k> holds the wrong count",
                )));
            }
        }
        if get(&format!("ring-ref/{keys}"))?.is_some() {
            return Ok(Err(ChannelError::Inconsistent(
                "more ring-ref keys than ring-pages",
            )));
        }
        let mut sorted = grefs.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Ok(Err(ChannelError::Inconsistent(
                "a grant reference is listed twice",
            )));
        }
        Ok(Ok(Offer {
            version,
            version_min,
            instance,
            to_instance,
            to_driver,
            to_driver_offset,
            region_len,
            grefs,
            port,
        }))
    }

    /// The version to speak with this offer: the newest both sides know.
    pub fn choose_version(&self) -> u32 {
        self.version.min(VERSION)
    }
}

/// What the driver reads of the instance's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerView {
    /// The directory (or the whole domain) does not exist.
    Absent,
    /// The directory exists with these values (`None`: key absent or
    /// unparsable).
    Present {
        /// `state`.
        state: Option<State>,
        /// `version`.
        version: Option<u32>,
    },
}

/// What the driver should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverStep {
    /// Nothing yet.
    Wait,
    /// The instance mapped and bound: write `state=Connected` and start the
    /// ring hello with this version.
    Connect(u32),
    /// The instance asks to close: write `state=Closing`, stop using the rings.
    Close,
    /// The instance unmapped, or is gone: revoke the grants (as soon as
    /// Xen reports them unmapped), close the port, remove our keys.
    Revoke,
    /// The instance broke the protocol: close as for [`DriverStep::Close`]
    /// and mark it dead.
    Fail(&'static str),
}

/// The driver's (granting side's) state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverSide {
    state: State,
}

impl Default for DriverSide {
    fn default() -> Self {
        Self::new()
    }
}

impl DriverSide {
    /// After the offer is published (`state=Initialised`).
    pub const fn new() -> DriverSide {
        DriverSide {
            state: State::Initialised,
        }
    }

    /// Our state as it should be in xenstore.
    pub const fn state(&self) -> State {
        self.state
    }

    /// We want to close (shutdown, instance retired).
    pub fn close(&mut self) {
        if self.state < State::Closing {
            self.state = State::Closing;
        }
    }

    /// Advances on a fresh look at the instance's directory.
    pub fn on_peer(&mut self, peer: PeerView) -> DriverStep {
        let (state, version) = match peer {
            PeerView::Absent => {
                // Never came (keep waiting) or gone after connecting.
                return if self.state == State::Initialised {
                    DriverStep::Wait
                } else {
                    self.state = State::Closed;
                    DriverStep::Revoke
                };
            }
            PeerView::Present { state, version } => (state, version),
        };
        match (self.state, state) {
            (State::Closed, _) => DriverStep::Wait,
            (_, Some(State::Closed)) => {
                self.state = State::Closed;
                DriverStep::Revoke
            }
            (State::Closing, _) => DriverStep::Wait,
            (_, Some(State::Closing)) => {
                self.state = State::Closing;
                DriverStep::Close
            }
            (State::Initialised, Some(State::Connected)) => match version {
                Some(v) if (MIN_VERSION..=VERSION).contains(&v) => {
                    self.state = State::Connected;
                    DriverStep::Connect(v)
                }
                _ => {
                    self.state = State::Closing;
                    DriverStep::Fail("instance chose a version we do not speak")
                }
            },
            (State::Connected, Some(State::Connected)) => DriverStep::Wait,
            (State::Connected, _) => {
                self.state = State::Closing;
                DriverStep::Fail("instance left the Connected state")
            }
            (_, None) => DriverStep::Wait,
            _ => DriverStep::Wait,
        }
    }
}

/// What the instance reads of the driver's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverView {
    /// The directory does not exist (not yet, or removed).
    Absent,
    /// The driver's `state` (`None`: absent or unparsable).
    State(Option<State>),
}

/// Reads a channel key: absent and unreadable alike are `None`
/// (xenstored answers `EACCES` for a missing node under a parent we may
/// not read, as when the peer's directory is gone).
pub fn read_key<S: Stream>(
    xs: &mut Client<S>,
    path: &str,
) -> Result<Option<Vec<u8>>, xenstore::Error<S::Error>> {
    match xs.read(TxId::NONE, path) {
        Ok(v) => Ok(Some(v)),
        Err(xenstore::Error::Xs(XsErrno::ENOENT | XsErrno::EACCES)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The instance's fresh look at the driver's directory (its `state`).
pub fn read_driver_view<S: Stream>(
    xs: &mut Client<S>,
    id: &ChannelId,
) -> Result<DriverView, xenstore::Error<S::Error>> {
    Ok(match read_key(xs, &format!("{}/state", id.driver_dir()))? {
        None => DriverView::Absent,
        Some(v) => DriverView::State(State::parse(&v)),
    })
}

/// What the instance should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStep {
    /// Nothing yet.
    Wait,
    /// The offer is published: read and validate it, map, bind, then
    /// write `version` and `state=Connected` (and call
    /// [`InstanceSide::connected`]).
    Map,
    /// The driver confirmed: start the ring hello.
    Ready,
    /// The driver closes or is gone: stop, unmap, unbind, write
    /// `state=Closed`.
    Unmap,
}

/// The instance's (mapping side's) state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceSide {
    state: State,
    confirmed: bool,
}

impl Default for InstanceSide {
    fn default() -> Self {
        Self::new()
    }
}

impl InstanceSide {
    /// Before anything is mapped.
    pub const fn new() -> InstanceSide {
        InstanceSide {
            state: State::Initialising,
            confirmed: false,
        }
    }

    /// Our state as it should be in xenstore.
    pub const fn state(&self) -> State {
        self.state
    }

    /// The pages are mapped and the port bound.
    pub fn connected(&mut self) {
        if self.state == State::Initialising {
            self.state = State::Connected;
        }
    }

    /// We unmapped everything.
    pub fn closed(&mut self) {
        self.state = State::Closed;
    }

    /// Advances on a fresh look at the driver's directory.
    pub fn on_driver(&mut self, driver: DriverView) -> InstanceStep {
        let state = match driver {
            DriverView::Absent => None,
            DriverView::State(s) => s,
        };
        match (self.state, driver, state) {
            (State::Closed, ..) => InstanceStep::Wait,
            (State::Initialising, _, Some(State::Initialised)) => InstanceStep::Map,
            (State::Initialising, ..) => InstanceStep::Wait,
            (State::Connected, _, Some(State::Connected)) if !self.confirmed => {
                self.confirmed = true;
                InstanceStep::Ready
            }
            (State::Connected, _, Some(State::Connected | State::Initialised)) => {
                InstanceStep::Wait
            }
            (State::Connected, DriverView::State(None), _) => InstanceStep::Wait,
            _ => {
                self.state = State::Closing;
                InstanceStep::Unmap
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    fn offer(pages: usize) -> Offer {
        Offer {
            version: 1,
            version_min: 1,
            instance: DomId(5),
            to_instance: RingSizes {
                capacity: 4096,
                max_frame: 1024,
            },
            to_driver: RingSizes {
                capacity: 4096,
                max_frame: 1024,
            },
            to_driver_offset: (pages / 2 * PAGE_SIZE) as u64,
            region_len: (pages * PAGE_SIZE) as u64,
            grefs: (0..pages).map(|i| GrantRef(100 + i as u32)).collect(),
            port: Port(9),
        }
    }

    fn parse(map: &BTreeMap<String, String>, me: u16) -> Result<Offer, ChannelError> {
        Offer::parse::<()>(DomId(me), Limits { max_pages: 1024 }, |k| {
            Ok(map.get(k).map(|v| v.clone().into_bytes()))
        })
        .unwrap()
    }

    #[test]
    fn offer_round_trip_and_refusals() {
        let o = offer(600);
        let map: BTreeMap<String, String> = o.entries().into_iter().collect();
        assert_eq!(map.keys().filter(|k| k.starts_with("ring-ref/")).count(), 3);
        assert_eq!(parse(&map, 5), Ok(o.clone()));
        assert_eq!(parse(&map, 6), Err(ChannelError::NotForUs(DomId(5))));

        let mut m = map.clone();
        m.insert("ring-pages".into(), "2000".into());
        assert!(matches!(parse(&m, 5), Err(ChannelError::Inconsistent(_))));
        let mut m = map.clone();
        m.insert("ring-ref/0".into(), "100 100".into());
        assert!(parse(&m, 5).is_err());
        let mut m = map.clone();
        m.insert("ring-ref/3".into(), "999".into());
        assert!(parse(&m, 5).is_err());
        let mut m = map.clone();
        m.insert("version-min".into(), "2".into());
        m.insert("version".into(), "3".into());
        assert_eq!(
            parse(&m, 5),
            Err(ChannelError::Version {
                peer_min: 2,
                peer_max: 3
            })
        );
        let mut m = map.clone();
        m.remove("event-channel");
        assert_eq!(parse(&m, 5), Err(ChannelError::Missing("event-channel")));

        let small = offer(2);
        let mut m: BTreeMap<String, String> = small.entries().into_iter().collect();
        m.insert("ring-ref/0".into(), "100 100".into());
        assert!(matches!(parse(&m, 5), Err(ChannelError::Inconsistent(_))));
        m.insert("ring-ref/0".into(), "100  101".into());
        assert_eq!(parse(&m, 5), Err(ChannelError::Invalid("ring-ref/<k>")));
    }

    #[test]
    fn ids_and_perms() {
        let id = ChannelId::new(DomId(2), DomId(7), "ch0").unwrap();
        assert_eq!(id.driver_dir(), "/local/domain/2/data/ins/ch0");
        assert_eq!(id.instance_dir(), "/local/domain/7/data/ins/2-ch0");
        assert_eq!(
            crate::xenstore::perms::access_of(&id.driver_perms(), DomId(7)),
            Some(Access::Read)
        );
        assert_eq!(
            crate::xenstore::perms::access_of(&id.driver_perms(), DomId(9)),
            Some(Access::None)
        );
        assert!(ChannelId::new(DomId(2), DomId(2), "x").is_err());
        assert!(ChannelId::new(DomId(2), DomId(3), "a/b").is_err());
    }

    #[test]
    fn handshake_happy_path_and_teardown() {
        let mut d = DriverSide::new();
        let mut i = InstanceSide::new();
        assert_eq!(d.on_peer(PeerView::Absent), DriverStep::Wait);
        assert_eq!(i.on_driver(DriverView::Absent), InstanceStep::Wait);
        assert_eq!(
            i.on_driver(DriverView::State(Some(d.state()))),
            InstanceStep::Map
        );
        i.connected();
        let peer = PeerView::Present {
            state: Some(i.state()),
            version: Some(1),
        };
        assert_eq!(d.on_peer(peer), DriverStep::Connect(1));
        assert_eq!(d.on_peer(peer), DriverStep::Wait);
        assert_eq!(
            i.on_driver(DriverView::State(Some(d.state()))),
            InstanceStep::Ready
        );
        assert_eq!(
            i.on_driver(DriverView::State(Some(d.state()))),
            InstanceStep::Wait
        );
        d.close();
        assert_eq!(
            i.on_driver(DriverView::State(Some(d.state()))),
            InstanceStep::Unmap
        );
        i.closed();
        assert_eq!(
            d.on_peer(PeerView::Present {
                state: Some(State::Closed),
                version: Some(1)
            }),
            DriverStep::Revoke
        );
        assert_eq!(d.state(), State::Closed);
    }

    #[test]
    fn driver_refuses_bad_versions_and_notices_death() {
        let mut d = DriverSide::new();
        let bad = PeerView::Present {
            state: Some(State::Connected),
            version: Some(99),
        };
        assert!(matches!(d.on_peer(bad), DriverStep::Fail(_)));
        let mut d = DriverSide::new();
        let ok = PeerView::Present {
            state: Some(State::Connected),
            version: Some(1),
        };
        assert_eq!(d.on_peer(ok), DriverStep::Connect(1));
        assert_eq!(d.on_peer(PeerView::Absent), DriverStep::Revoke);
        let mut i = InstanceSide::new();
        assert_eq!(
            i.on_driver(DriverView::State(Some(State::Initialised))),
            InstanceStep::Map
        );
        i.connected();
        assert_eq!(i.on_driver(DriverView::Absent), InstanceStep::Unmap);
    }
}
