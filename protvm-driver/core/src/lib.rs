//! # driver-core
//!
//! The protected-VM driver's decisions, without any I/O: the socket table,
//! the instance table, request tracking, placement, listener replication,
//! one accept queue per listener fed by every instance, per-socket credits
//! and instance failure. The daemon (and later the kernel module) feeds it
//! events and carries out the [`Action`]s it returns.
//!
//! ```text
//!   shim request ──▶ Driver::shim_request ──┐
//!   instance frame ─▶ Driver::instance_frame ├──▶ Vec<Action>: frames to instance N,
//!   app end EOF/HUP ─▶ Driver::app_eof       │    shim replies, tokens, pairs to create,
//!   tick / join / death ─────────────────────┘    shutdowns, sockets to forget
//! ```
//!
//! Hot data path: the daemon relays stream bytes itself. Before reading the
//! app end it asks [`Driver::send_credit`] (how much the instance admits)
//! and afterwards [`Driver::consume_credit`]; for instance `Data` it gets the
//! target socket from [`Driver::instance_frame`] (which checks ownership and
//! the window) and reports the bytes written into the pair with
//! [`Driver::delivered`]. None of these allocate.
//!
//! Invariants:
//! * A socket's driver id (its *handle*, top bit clear) is the wire id of
//!   sockets the driver opened. Accepted connections keep their instance id
//!   on the wire; `by_wire` maps `(instance, id)` to their handle.
//! * A handle is not reused before the instance's `Closed` (or its death).
//! * Every frame from an instance is checked against the tables; the first
//!   violation marks the instance dead ([`Violation`]) — never a panic, and
//!   nothing an instance sends grows a table beyond the credits granted.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod errno;
mod sock;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_semantics;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ins_protocol::control::{Control, Op};
use ins_protocol::msg::{
    EncodeError, Family, INSTANCE_SOCK_BIT, MAX_OPT_LEN, Mitigation, Msg, Shutdown, SockType, Stats,
};

use sock::{Listener, Sock};
pub use sock::{SockState, SocketInfo};

/// Instance number assigned by the core when an instance joins (never reused).
pub type InstId = u32;
/// Driver socket handle (top bit clear); the wire id of driver-opened sockets.
pub type Handle = u32;
/// A shim connection, numbered by the daemon.
pub type ConnId = u64;

/// Socket option numbers the driver itself looks at (Linux values).
pub mod opt {
    /// `SOL_SOCKET`.
    pub const SOL_SOCKET: i32 = 1;
    /// `SO_REUSEADDR`.
    pub const SO_REUSEADDR: i32 = 2;
    /// `SO_TYPE`.
    pub const SO_TYPE: i32 = 3;
    /// `SO_ERROR`.
    pub const SO_ERROR: i32 = 4;
    /// `SO_REUSEPORT`.
    pub const SO_REUSEPORT: i32 = 15;
    /// `SO_ACCEPTCONN`.
    pub const SO_ACCEPTCONN: i32 = 30;
    /// `SO_PROTOCOL`.
    pub const SO_PROTOCOL: i32 = 38;
    /// `SO_DOMAIN`.
    pub const SO_DOMAIN: i32 = 39;
    /// `IPPROTO_TCP`.
    pub const IPPROTO_TCP: i32 = 6;
    /// `IPPROTO_UDP`.
    pub const IPPROTO_UDP: i32 = 17;
}

/// How outgoing sockets pick an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Fewest sockets, then lowest instance number.
    LeastBusy,
    /// Live instances in turn.
    RoundRobin,
}

/// Limits and policy; every limit is a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Per-socket receive window the driver grants instances (bytes); must
    /// equal the driver's `Hello.window`.
    pub window: u32,
    /// An instance silent for this long (nanoseconds) is declared dead.
    pub heartbeat_timeout_ns: u64,
    /// Placement policy for sockets that are not listeners.
    pub placement: Placement,
    /// Most sockets in the table (app sockets and accepted connections).
    pub max_sockets: usize,
    /// Most remembered socket options per socket.
    pub max_opts: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: 256 << 10,
            heartbeat_timeout_ns: 3_000_000_000,
            placement: Placement::LeastBusy,
            max_sockets: 1 << 20,
            max_opts: 32,
        }
    }
}

/// An option value or reply value, up to [`MAX_OPT_LEN`] bytes, inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Value {
    len: u16,
    bytes: [u8; MAX_OPT_LEN],
}

impl Value {
    /// The empty value.
    pub const EMPTY: Value = Value {
        len: 0,
        bytes: [0; MAX_OPT_LEN],
    };

    /// Copies `v` (truncated to [`MAX_OPT_LEN`]).
    pub fn new(v: &[u8]) -> Value {
        let mut out = Value::EMPTY;
        let n = v.len().min(MAX_OPT_LEN);
        out.bytes[..n].copy_from_slice(&v[..n]);
        out.len = n as u16;
        out
    }

    /// A C `int`.
    pub fn int(v: i32) -> Value {
        Value::new(&v.to_ne_bytes())
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl core::fmt::Debug for Value {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Value({:?})", self.as_slice())
    }
}

/// A frame for an instance, owned (so actions outlive their inputs).
///
/// `SetOpt` carries its value inline: actions live in a reused `Vec`, so a
/// large variant costs no allocation, a boxed one would.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `Open`.
    Open {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Family.
        family: Family,
        /// Type.
        ty: SockType,
        /// Protocol.
        proto: i32,
    },
    /// `Bind`.
    Bind {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Address.
        addr: SocketAddr,
    },
    /// `Listen`.
    Listen {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Backlog (connection announcements granted).
        backlog: u32,
    },
    /// `Connect`.
    Connect {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Address.
        addr: SocketAddr,
    },
    /// `Shutdown`.
    Shutdown {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Direction.
        how: Shutdown,
    },
    /// `Close`.
    Close {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
    },
    /// `SetOpt`.
    SetOpt {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Level.
        level: i32,
        /// Name.
        name: i32,
        /// Value.
        value: Value,
    },
    /// `GetOpt`.
    GetOpt {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
        /// Level.
        level: i32,
        /// Name.
        name: i32,
        /// Largest value wanted.
        max_len: u32,
    },
    /// `GetSockName`.
    GetSockName {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
    },
    /// `GetPeerName`.
    GetPeerName {
        /// Socket id.
        sock: u32,
        /// Request id.
        req: u32,
    },
    /// `Credit`.
    Credit {
        /// Socket id.
        sock: u32,
        /// Bytes (or connections, for a listener).
        bytes: u32,
    },
    /// `Eof`.
    Eof {
        /// Socket id.
        sock: u32,
    },
    /// `Mitigate` (instance-wide; the reply surfaces as
    /// [`Note::MitigateDone`]).
    Mitigate {
        /// Request id.
        req: u32,
        /// The command.
        cmd: Mitigation<'static>,
    },
}

impl Frame {
    /// The socket id a request frame names, to translate handles to wire
    /// ids.
    fn sock_mut(&mut self) -> Option<&mut u32> {
        match self {
            Frame::Open { sock, .. }
            | Frame::Bind { sock, .. }
            | Frame::Listen { sock, .. }
            | Frame::Connect { sock, .. }
            | Frame::Shutdown { sock, .. }
            | Frame::Close { sock, .. }
            | Frame::SetOpt { sock, .. }
            | Frame::GetOpt { sock, .. }
            | Frame::GetSockName { sock, .. }
            | Frame::GetPeerName { sock, .. } => Some(sock),
            _ => None,
        }
    }

    /// The borrowed message.
    pub fn msg(&self) -> Msg<'_> {
        match *self {
            Frame::Open {
                sock,
                req,
                family,
                ty,
                proto,
            } => Msg::Open {
                sock,
                req,
                family,
                ty,
                proto,
            },
            Frame::Bind { sock, req, addr } => Msg::Bind { sock, req, addr },
            Frame::Listen { sock, req, backlog } => Msg::Listen { sock, req, backlog },
            Frame::Connect { sock, req, addr } => Msg::Connect { sock, req, addr },
            Frame::Shutdown { sock, req, how } => Msg::Shutdown { sock, req, how },
            Frame::Close { sock, req } => Msg::Close { sock, req },
            Frame::SetOpt {
                sock,
                req,
                level,
                name,
                ref value,
            } => Msg::SetOpt {
                sock,
                req,
                level,
                name,
                value: value.as_slice(),
            },
            Frame::GetOpt {
                sock,
                req,
                level,
                name,
                max_len,
            } => Msg::GetOpt {
                sock,
                req,
                level,
                name,
                max_len,
            },
            Frame::GetSockName { sock, req } => Msg::GetSockName { sock, req },
            Frame::GetPeerName { sock, req } => Msg::GetPeerName { sock, req },
            Frame::Credit { sock, bytes } => Msg::Credit { sock, bytes },
            Frame::Eof { sock } => Msg::Eof { sock },
            Frame::Mitigate { req, cmd } => Msg::Mitigate { req, cmd },
        }
    }

    /// Encodes into `out`; returns the frame length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.msg().encode(out)
    }
}

/// Which fd travels with a shim reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFd {
    /// None.
    None,
    /// The app end of this socket's pair (the daemon then drops its copy).
    AppEnd(Handle),
}

/// A reply to a shim request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShimReply {
    /// The shim connection.
    pub conn: ConnId,
    /// The request's op.
    pub op: Op,
    /// The request's sequence number.
    pub seq: u32,
    /// 0 or a positive errno.
    pub status: i32,
    /// Integer results.
    pub args: [i32; 4],
    /// First address.
    pub addr: Option<SocketAddr>,
    /// Second address.
    pub addr2: Option<SocketAddr>,
    /// Value (getsockopt).
    pub value: Value,
    /// Fd to pass.
    pub fd: ReplyFd,
}

impl ShimReply {
    fn new(conn: ConnId, op: Op, seq: u32, status: i32) -> ShimReply {
        ShimReply {
            conn,
            op,
            seq,
            status,
            args: [0; 4],
            addr: None,
            addr2: None,
            value: Value::EMPTY,
            fd: ReplyFd::None,
        }
    }

    /// The control message to send.
    pub fn control(&self) -> Control<'_> {
        Control {
            op: self.op,
            seq: self.seq,
            status: self.status,
            args: self.args,
            addr: self.addr,
            addr2: self.addr2,
            value: self.value.as_slice(),
        }
    }
}

/// What the daemon must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Push this frame to the instance's ring.
    Send {
        /// Instance.
        inst: InstId,
        /// Frame.
        frame: Frame,
    },
    /// Answer a shim.
    Reply(ShimReply),
    /// An instance announced a connection: create its pair now (instance
    /// data may arrive before the app accepts) and keep the app end until
    /// an `Accept` reply passes it on.
    NewConnection {
        /// The new connection.
        sock: Handle,
        /// Its listener.
        listener: Handle,
    },
    /// Write one accept token byte into the listener's driver end.
    Token {
        /// Listener.
        listener: Handle,
    },
    /// A non-blocking connect finished (errno 0 or the error): drain the
    /// filler bytes, restore the app end's send buffer. On error also shut
    /// the driver end's write side so the app reads EOF.
    ConnectDone {
        /// Socket.
        sock: Handle,
        /// Result.
        errno: i32,
    },
    /// The instance sent `Eof`: shut the driver end's write side once the
    /// bytes buffered for the app are written.
    PeerEof {
        /// Socket.
        sock: Handle,
    },
    /// The connection was reset (or its instance died): drop buffered
    /// bytes, shut the driver end's write side; the error is recorded.
    PeerReset {
        /// Socket.
        sock: Handle,
        /// Error.
        errno: i32,
    },
    /// Shut the write side of the app end (shutdown(SHUT_WR) by the app),
    /// using the fd received with the request.
    AppShutdownWrite {
        /// Socket.
        sock: Handle,
    },
    /// Credit arrived or the socket became connected: read the driver end
    /// again.
    Resume {
        /// Socket.
        sock: Handle,
    },
    /// The socket is gone: close the driver end (and any kept app end),
    /// drop buffers.
    Forget {
        /// Socket.
        sock: Handle,
    },
    /// The instance is dead: close its channel.
    InstanceDead {
        /// Instance.
        inst: InstId,
    },
}

/// Why an instance was declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A frame kind that only the driver sends.
    WrongDirection,
    /// A socket id the instance does not hold.
    UnknownSocket(u32),
    /// A request id the driver did not send to it.
    UnknownRequest(u32),
    /// `Accepted` on something that is not its listener replica.
    NotAListener(u32),
    /// `Accepted` beyond the announcements granted, or a duplicate id.
    AcceptBeyondCredit(u32),
    /// Data beyond the window the driver granted.
    BeyondWindow(u32),
    /// A frame that does not fit the socket's state or type.
    BadState(u32),
    /// The socket table is full.
    TableFull,
    /// No heartbeat in time.
    HeartbeatTimeout,
    /// The daemon saw the channel fail (corrupt ring, hang-up).
    ChannelFailed,
    /// The operator (or the balancer) stopped it.
    Stopped,
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Violation::WrongDirection => f.write_str("frame kind only the driver may send"),
            Violation::UnknownSocket(s) => write!(f, "socket id {s:#x} it does not hold"),
            Violation::UnknownRequest(r) => write!(f, "reply to request {r} never sent to it"),
            Violation::NotAListener(s) => write!(f, "Accepted on {s:#x}, not its listener"),
            Violation::AcceptBeyondCredit(s) => {
                write!(f, "Accepted on {s:#x} beyond credit or with a duplicate id")
            }
            Violation::BeyondWindow(s) => write!(f, "data on {s:#x} beyond the granted window"),
            Violation::BadState(s) => write!(f, "frame does not fit the state of {s:#x}"),
            Violation::TableFull => f.write_str("socket table full"),
            Violation::HeartbeatTimeout => f.write_str("heartbeat timeout"),
            Violation::ChannelFailed => f.write_str("channel failed"),
            Violation::Stopped => f.write_str("stopped by the controller"),
        }
    }
}

/// Instance liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstState {
    /// Takes new sockets and listeners.
    Live,
    /// Keeps its sockets, gets no new ones.
    Draining,
    /// Gone.
    Dead,
}

/// What the core knows about one instance.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Liveness.
    pub state: InstState,
    /// Per-socket window the instance granted (its `Hello.window`).
    pub window: u32,
    /// Sockets placed on it (connections and listener replicas).
    pub sockets: u32,
    /// Last heartbeat's stats.
    pub stats: Option<Stats>,
    /// When it last spoke (ns, the daemon's clock).
    pub last_seen: u64,
    /// Connections it announced.
    pub accepted: u64,
    /// Why it died.
    pub death: Option<Violation>,
    next_req: u32,
}

/// Why a request was sent, so its reply can be routed.
// `SetOpt` carries the option value (up to 256 bytes) inline: one entry
// per request in flight, and no allocation per setsockopt.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// Answer this shim request with the reply (plain pass-through).
    Shim {
        sock: Handle,
        conn: ConnId,
        op: Op,
        seq: u32,
    },
    /// A stream connect: blocking connects answer the shim on `Connected`.
    Connect {
        sock: Handle,
        shim: Option<(ConnId, u32)>,
    },
    /// `Bind` for the shim: on success the address is recorded. `auto`:
    /// the shim's auto-bind before a datagram socket's first send, where
    /// "already bound" (`EINVAL`) is success.
    Bind {
        sock: Handle,
        conn: ConnId,
        seq: u32,
        addr: SocketAddr,
        auto: bool,
    },
    /// A `Bind` to port 0 succeeded: learn the port the kernel chose (so
    /// other app sockets get `EADDRINUSE` on it), then answer the shim.
    BindAddr {
        sock: Handle,
        conn: ConnId,
        seq: u32,
    },
    /// `Listen` on the first instance.
    Listen {
        sock: Handle,
        conn: ConnId,
        seq: u32,
        backlog: u32,
    },
    /// Learn the listener's bound address, then replicate it.
    ListenAddr { sock: Handle },
    /// `Shutdown(Read)` for the shim.
    Shutdown {
        sock: Handle,
        conn: ConnId,
        seq: u32,
    },
    /// `SetOpt` for the shim: on success the option is remembered (for
    /// replicas and the driver's own `SO_REUSEPORT` bookkeeping).
    SetOpt {
        sock: Handle,
        conn: ConnId,
        seq: u32,
        level: i32,
        name: i32,
        value: Value,
    },
    /// `Open` (errors recorded on the socket).
    Open { sock: Handle },
    /// Anything whose reply is only logged (option replay, replicas, close).
    Internal { sock: Handle },
    /// A `Mitigate` from the controller; `tag` identifies its request.
    Mitigate { tag: u64 },
}

impl Pending {
    fn sock(&self) -> Handle {
        match *self {
            Pending::Shim { sock, .. }
            | Pending::Connect { sock, .. }
            | Pending::Bind { sock, .. }
            | Pending::Listen { sock, .. }
            | Pending::ListenAddr { sock }
            | Pending::Shutdown { sock, .. }
            | Pending::SetOpt { sock, .. }
            | Pending::BindAddr { sock, .. }
            | Pending::Open { sock }
            | Pending::Internal { sock } => sock,
            Pending::Mitigate { .. } => 0,
        }
    }
}

/// An event worth a log line, for the daemon (and the controller later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// An internal request failed (replica listen, option replay …).
    InternalFailed {
        /// Instance.
        inst: InstId,
        /// Socket.
        sock: Handle,
        /// Errno.
        errno: i32,
    },
    /// An instance was declared dead.
    InstanceDied {
        /// Instance.
        inst: InstId,
        /// Why.
        why: Violation,
        /// Connections reset.
        reset: u32,
    },
    /// An instance answered a [`Driver::mitigate`] request (`errno`
    /// `ECONNRESET` when it died first).
    MitigateDone {
        /// Instance.
        inst: InstId,
        /// The tag given to [`Driver::mitigate`].
        tag: u64,
        /// 0 or the instance's errno.
        errno: i32,
    },
    /// A listener was replicated onto an instance.
    Replicated {
        /// Instance.
        inst: InstId,
        /// Listener.
        sock: Handle,
    },
}

/// The driver core.
#[derive(Debug)]
pub struct Driver {
    cfg: Config,
    instances: BTreeMap<InstId, Instance>,
    next_inst: InstId,
    rr: InstId,
    socks: BTreeMap<Handle, Sock>,
    by_inode: BTreeMap<u64, Handle>,
    by_wire: BTreeMap<(InstId, u32), Handle>,
    pending: BTreeMap<(InstId, u32), Pending>,
    /// Bound (type, port) → sockets, for EADDRINUSE between app sockets.
    ports: BTreeMap<(u16, u16), Vec<Handle>>,
    listeners: Vec<Handle>,
    next_handle: Handle,
    notes: Vec<Note>,
}

fn unspecified(family: Family) -> SocketAddr {
    match family {
        Family::Inet => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        Family::Inet6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

fn family_of(domain: i32) -> Option<Family> {
    match domain {
        2 => Some(Family::Inet),
        10 => Some(Family::Inet6),
        _ => None,
    }
}

fn addr_fits(family: Family, addr: &SocketAddr) -> bool {
    match family {
        Family::Inet => addr.is_ipv4(),
        // An IPv6 socket takes IPv6 addresses (v4-mapped included).
        Family::Inet6 => addr.is_ipv6(),
    }
}

impl Driver {
    /// An empty driver.
    pub fn new(cfg: Config) -> Driver {
        Driver {
            cfg,
            instances: BTreeMap::new(),
            next_inst: 1,
            rr: 0,
            socks: BTreeMap::new(),
            by_inode: BTreeMap::new(),
            by_wire: BTreeMap::new(),
            pending: BTreeMap::new(),
            ports: BTreeMap::new(),
            listeners: Vec::new(),
            next_handle: 1,
            notes: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Events since the last call (for logging), oldest first.
    pub fn take_notes(&mut self, out: &mut Vec<Note>) {
        out.append(&mut self.notes);
    }

    /// The instance table.
    pub fn instances(&self) -> impl Iterator<Item = (InstId, &Instance)> {
        self.instances.iter().map(|(&i, s)| (i, s))
    }

    /// Number of sockets in the table.
    pub fn socket_count(&self) -> usize {
        self.socks.len()
    }

    /// Outstanding requests to instances.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// A socket's public description.
    pub fn socket(&self, sock: Handle) -> Option<SocketInfo> {
        self.socks.get(&sock).map(Sock::info)
    }

    /// The socket whose app end has this inode.
    pub fn lookup_inode(&self, inode: u64) -> Option<Handle> {
        self.by_inode.get(&inode).copied()
    }

    // ----- instances -----

    /// An instance finished its handshake. `window` is its `Hello.window`.
    /// Every listener is replayed onto it.
    pub fn instance_joined(&mut self, now: u64, window: u32, out: &mut Vec<Action>) -> InstId {
        let id = self.next_inst;
        self.next_inst = self.next_inst.wrapping_add(1).max(1);
        self.instances.insert(
            id,
            Instance {
                state: InstState::Live,
                window,
                sockets: 0,
                stats: None,
                last_seen: now,
                accepted: 0,
                death: None,
                next_req: 1,
            },
        );
        let listeners = self.listeners.clone();
        for l in listeners {
            self.replicate(l, id, out);
        }
        id
    }

    /// Sends a mitigation command to a live or draining instance; its
    /// reply becomes [`Note::MitigateDone`] with `tag`. False if the
    /// instance is dead or unknown.
    pub fn mitigate(
        &mut self,
        inst: InstId,
        cmd: Mitigation<'static>,
        tag: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        if !self.live(inst) {
            return false;
        }
        self.request(inst, Pending::Mitigate { tag }, out, |req| {
            Frame::Mitigate { req, cmd }
        });
        true
    }

    /// Closes the listener replicas on `inst` (draining it): the
    /// instance stops listening while its connections go on; the other
    /// replicas keep every listener. A listener whose only replica is on
    /// `inst` is left alone. Returns how many replicas were closed.
    pub fn drop_replicas(&mut self, inst: InstId, out: &mut Vec<Action>) -> usize {
        let mut n = 0;
        for l in self.listeners.clone() {
            let Some(s) = self.socks.get_mut(&l) else {
                continue;
            };
            if s.state != SockState::Listening {
                continue;
            }
            let wire = s.wire;
            let Some(li) = s.listener.as_mut() else {
                continue;
            };
            if li.replicas.len() < 2 {
                continue;
            }
            let Some(credit) = li.replicas.remove(&inst) else {
                continue;
            };
            if s.inst == Some(inst) {
                s.inst = li.replicas.keys().next().copied();
            }
            s.retiring_replicas.push((inst, credit));
            self.request(inst, Pending::Internal { sock: l }, out, |req| {
                Frame::Close { sock: wire, req }
            });
            n += 1;
        }
        n
    }

    /// Stops placing new sockets on an instance (it keeps its own).
    pub fn set_draining(&mut self, inst: InstId) {
        if let Some(i) = self.instances.get_mut(&inst)
            && i.state == InstState::Live
        {
            i.state = InstState::Draining;
        }
    }

    /// Declares an instance dead (channel failure seen by the daemon, or a
    /// violation found here): its connections are reset, its listener
    /// replicas forgotten, its pending requests answered.
    pub fn instance_failed(&mut self, inst: InstId, why: Violation, out: &mut Vec<Action>) {
        let Some(i) = self.instances.get_mut(&inst) else {
            return;
        };
        if i.state == InstState::Dead {
            return;
        }
        i.state = InstState::Dead;
        i.death = Some(why);
        i.sockets = 0;
        out.push(Action::InstanceDead { inst });

        // Pending requests: answer shims, forget the rest.
        let keys: Vec<(InstId, u32)> = self
            .pending
            .range((inst, 0)..=(inst, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(p) = self.pending.remove(&k) {
                if let Pending::Mitigate { tag } = p {
                    self.notes.push(Note::MitigateDone {
                        inst,
                        tag,
                        errno: errno::ECONNRESET,
                    });
                }
                self.fail_pending(p, errno::ECONNRESET, out);
            }
        }
        // Listeners: drop the replica; the listener lives on elsewhere.
        for &l in &self.listeners {
            if let Some(s) = self.socks.get_mut(&l)
                && let Some(li) = s.listener.as_mut()
            {
                li.replicas.remove(&inst);
                if s.inst == Some(inst) {
                    s.inst = li.replicas.keys().next().copied();
                }
            }
            if let Some(s) = self.socks.get_mut(&l) {
                s.retiring_replicas.retain(|&(i, _)| i != inst);
            }
        }
        // Connections and other sockets placed there.
        let mut reset = 0u32;
        let handles: Vec<Handle> = self
            .socks
            .iter()
            .filter(|(_, s)| s.inst == Some(inst) && s.listener.is_none())
            .map(|(&h, _)| h)
            .collect();
        for h in handles {
            let Some(s) = self.socks.get_mut(&h) else {
                continue;
            };
            if let Some(w) = s.wire_if_accepted() {
                self.by_wire.remove(&(inst, w));
            }
            s.inst = None;
            if s.state == SockState::Closing {
                // The app is gone already; nothing left to tell.
                self.forget(h, out);
                continue;
            }
            reset += 1;
            let s = self.socks.get_mut(&h).expect("present");
            s.err = errno::ECONNRESET;
            s.state = SockState::Dead;
            s.send_credit = 0;
            let nb = s.nonblocking_connect;
            s.nonblocking_connect = false;
            if let Some((conn, seq)) = s.connect_shim.take() {
                out.push(Action::Reply(ShimReply::new(
                    conn,
                    Op::Connect,
                    seq,
                    errno::ECONNRESET,
                )));
            }
            if nb {
                out.push(Action::ConnectDone {
                    sock: h,
                    errno: errno::ECONNRESET,
                });
            }
            out.push(Action::PeerReset {
                sock: h,
                errno: errno::ECONNRESET,
            });
        }
        // Listeners that were closing and waited for this instance.
        let closing: Vec<Handle> = self
            .socks
            .iter()
            .filter(|(_, s)| s.state == SockState::Closing && s.close_waits.contains(&inst))
            .map(|(&h, _)| h)
            .collect();
        for h in closing {
            self.closed_on(h, inst, out);
        }
        self.notes.push(Note::InstanceDied { inst, why, reset });
    }

    /// Time passes: instances silent for longer than the heartbeat timeout
    /// are declared dead.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Action>) {
        let late: Vec<InstId> = self
            .instances
            .iter()
            .filter(|(_, i)| {
                i.state != InstState::Dead
                    && now.saturating_sub(i.last_seen) > self.cfg.heartbeat_timeout_ns
            })
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            self.instance_failed(id, Violation::HeartbeatTimeout, out);
        }
    }

    fn live(&self, inst: InstId) -> bool {
        self.instances
            .get(&inst)
            .is_some_and(|i| i.state != InstState::Dead)
    }

    fn pick(&mut self) -> Option<InstId> {
        let live = || {
            self.instances
                .iter()
                .filter(|(_, i)| i.state == InstState::Live)
        };
        match self.cfg.placement {
            Placement::LeastBusy => live().min_by_key(|(id, i)| (i.sockets, **id)).map(|x| *x.0),
            Placement::RoundRobin => {
                let after = live().map(|x| *x.0).find(|&id| id > self.rr);
                let pick = after.or_else(|| live().map(|x| *x.0).next());
                if let Some(p) = pick {
                    self.rr = p;
                }
                pick
            }
        }
    }

    fn req_id(&mut self, inst: InstId) -> u32 {
        let Some(i) = self.instances.get_mut(&inst) else {
            return 1;
        };
        loop {
            let r = i.next_req;
            i.next_req = i.next_req.wrapping_add(1).max(1);
            if !self.pending.contains_key(&(inst, r)) {
                return r;
            }
        }
    }

    fn request(
        &mut self,
        inst: InstId,
        p: Pending,
        out: &mut Vec<Action>,
        f: impl Fn(u32) -> Frame,
    ) {
        let req = self.req_id(inst);
        self.pending.insert((inst, req), p);
        let mut frame = f(req);
        // Requests are built with the driver's handle; on the wire an
        // accepted socket is known by the id its instance gave it.
        if let Some(sock) = frame.sock_mut()
            && let Some(s) = self.socks.get(sock)
        {
            *sock = s.wire;
        }
        out.push(Action::Send { inst, frame });
    }

    // ----- sockets -----

    /// `socket()`: the daemon created the pair (app end inode `inode`).
    /// Returns the new handle or an errno.
    pub fn new_socket(
        &mut self,
        inode: u64,
        domain: i32,
        ty: i32,
        proto: i32,
    ) -> Result<Handle, i32> {
        let family = family_of(domain).ok_or(errno::EAFNOSUPPORT)?;
        let (ty, proto) = match (ty, proto) {
            (1, 0) | (1, 6) => (SockType::Stream, opt::IPPROTO_TCP),
            (2, 0) | (2, 17) => (SockType::Dgram, opt::IPPROTO_UDP),
            (1 | 2, _) => return Err(errno::EPROTONOSUPPORT),
            _ => return Err(errno::ESOCKTNOSUPPORT),
        };
        let h = self.alloc_handle()?;
        self.socks.insert(h, Sock::new(inode, family, ty, proto, h));
        self.by_inode.insert(inode, h);
        Ok(h)
    }

    fn alloc_handle(&mut self) -> Result<Handle, i32> {
        if self.socks.len() >= self.cfg.max_sockets {
            return Err(errno::ENFILE);
        }
        loop {
            let h = self.next_handle;
            self.next_handle = (self.next_handle.wrapping_add(1)) & !INSTANCE_SOCK_BIT;
            if self.next_handle == 0 {
                self.next_handle = 1;
            }
            if !self.socks.contains_key(&h) {
                return Ok(h);
            }
        }
    }

    /// Records the app end inode of a connection announced by
    /// [`Action::NewConnection`] once the daemon made its pair.
    pub fn attach_inode(&mut self, sock: Handle, inode: u64) {
        if let Some(s) = self.socks.get_mut(&sock) {
            s.inode = inode;
            self.by_inode.insert(inode, sock);
        }
    }

    /// The daemon could not create a pair for an announced connection:
    /// drop it (the instance is told to close it).
    pub fn connection_failed(&mut self, sock: Handle, out: &mut Vec<Action>) {
        self.remove_from_queues(sock);
        self.app_eof(sock, true, out);
    }

    fn remove_from_queues(&mut self, sock: Handle) {
        let Some(l) = self.socks.get(&sock).and_then(|s| s.accepted_on) else {
            return;
        };
        if let Some(li) = self.socks.get_mut(&l).and_then(|s| s.listener.as_mut()) {
            li.queue.retain(|&c| c != sock);
        }
    }

    fn forget(&mut self, sock: Handle, out: &mut Vec<Action>) {
        let Some(s) = self.socks.remove(&sock) else {
            return;
        };
        if self.by_inode.get(&s.inode) == Some(&sock) {
            self.by_inode.remove(&s.inode);
        }
        if let (Some(inst), Some(w)) = (s.inst, s.wire_if_accepted()) {
            self.by_wire.remove(&(inst, w));
        }
        if let Some(port) = s.bound_key()
            && let Some(v) = self.ports.get_mut(&port)
        {
            v.retain(|&h| h != sock);
            if v.is_empty() {
                self.ports.remove(&port);
            }
        }
        if s.listener.is_some() {
            self.listeners.retain(|&l| l != sock);
        }
        if let Some(l) = s.accepted_on
            && let Some(li) = self.socks.get_mut(&l).and_then(|x| x.listener.as_mut())
        {
            li.queue.retain(|&c| c != sock);
        }
        // Connections still queued on a listener that goes away are closed.
        if let Some(li) = s.listener {
            for c in li.queue {
                if let Some(cs) = self.socks.get_mut(&c) {
                    cs.accepted_on = None;
                }
                self.app_eof(c, true, out);
            }
        }
        out.push(Action::Forget { sock });
    }

    // ----- shim requests -----

    /// A shim request about an existing socket (every op but `Socket`,
    /// which the daemon answers after [`Driver::new_socket`]). `sock` is the
    /// socket the received fd names, `None` if it names none of ours.
    pub fn shim_request(
        &mut self,
        conn: ConnId,
        req: &Control<'_>,
        sock: Option<Handle>,
        out: &mut Vec<Action>,
    ) {
        let reply = |status| ShimReply::new(conn, req.op, req.seq, status);
        let Some(h) = sock.filter(|h| self.socks.contains_key(h)) else {
            out.push(Action::Reply(reply(errno::ENOTSOCK)));
            return;
        };
        match req.op {
            Op::Socket => out.push(Action::Reply(reply(errno::EINVAL))),
            Op::Identify => {
                let s = &self.socks[&h];
                let mut r = reply(0);
                r.args = [
                    s.family as i32,
                    s.ty as i32,
                    i32::from(s.listener.is_some()),
                    0,
                ];
                out.push(Action::Reply(r));
            }
            Op::TakeError => {
                let s = self.socks.get_mut(&h).expect("checked");
                let mut r = reply(0);
                r.args[0] = core::mem::take(&mut s.err);
                out.push(Action::Reply(r));
            }
            Op::Close => {
                // The last-reference signal is the hang-up on the driver
                // end; an explicit close from one process may not be the
                // last reference (fork, dup, SCM_RIGHTS), so only ack.
                out.push(Action::Reply(reply(0)));
            }
            Op::Bind => self.op_bind(conn, req, h, out),
            Op::Listen => self.op_listen(conn, req, h, out),
            Op::Connect => self.op_connect(conn, req, h, out),
            Op::Accept => self.op_accept(conn, req, h, out),
            Op::Shutdown => self.op_shutdown(conn, req, h, out),
            Op::GetOpt => self.op_getopt(conn, req, h, out),
            Op::SetOpt => self.op_setopt(conn, req, h, out),
            Op::GetSockName | Op::GetPeerName => self.op_name(conn, req, h, out),
        }
    }

    /// Places the socket on an instance if it is not yet, sending `Open`
    /// and the remembered options. Returns the instance.
    fn ensure_placed(
        &mut self,
        h: Handle,
        reuseport: bool,
        out: &mut Vec<Action>,
    ) -> Result<InstId, i32> {
        let s = self.socks.get(&h).ok_or(errno::EBADF)?;
        if s.state == SockState::Dead {
            return Err(if s.err != 0 { s.err } else { errno::ECONNRESET });
        }
        let (family, ty, proto, placed) = (s.family, s.ty, s.proto, s.inst);
        let opts = s.opts.clone();
        let inst = match placed {
            Some(i) => i,
            None => {
                let inst = self.pick().ok_or(errno::ENETDOWN)?;
                self.request(inst, Pending::Open { sock: h }, out, |req| Frame::Open {
                    sock: h,
                    req,
                    family,
                    ty,
                    proto,
                });
                for (level, name, value) in opts {
                    self.request(inst, Pending::Internal { sock: h }, out, |req| {
                        Frame::SetOpt {
                            sock: h,
                            req,
                            level,
                            name,
                            value,
                        }
                    });
                }
                if let Some(i) = self.instances.get_mut(&inst) {
                    i.sockets = i.sockets.saturating_add(1);
                }
                let window = self.instances.get(&inst).map_or(0, |i| i.window);
                let s = self.socks.get_mut(&h).expect("present");
                s.inst = Some(inst);
                s.state = SockState::Placed;
                if s.ty == SockType::Dgram {
                    // Datagram sockets may send from the start.
                    s.send_credit = window;
                }
                inst
            }
        };
        let s = self.socks.get_mut(&h).expect("present");
        if reuseport && s.ty == SockType::Stream && !s.reuseport_sent {
            s.reuseport_sent = true;
            self.request(inst, Pending::Internal { sock: h }, out, |req| {
                Frame::SetOpt {
                    sock: h,
                    req,
                    level: opt::SOL_SOCKET,
                    name: opt::SO_REUSEPORT,
                    value: Value::int(1),
                }
            });
        }
        Ok(inst)
    }

    /// `bind()`; with `args[0] == 1` the shim's auto-bind of a datagram
    /// socket before its first send (Linux binds an unbound socket to an
    /// ephemeral port then, see `inet_send_prepare`): `addr` is the
    /// wildcard address with port 0, and an already bound socket is fine.
    fn op_bind(&mut self, conn: ConnId, req: &Control<'_>, h: Handle, out: &mut Vec<Action>) {
        let reply = |st| Action::Reply(ShimReply::new(conn, req.op, req.seq, st));
        let s = &self.socks[&h];
        let Some(addr) = req.addr else {
            out.push(reply(errno::EINVAL));
            return;
        };
        let auto = req.args[0] == 1;
        if auto {
            if s.ty != SockType::Dgram || addr.port() != 0 || !addr.ip().is_unspecified() {
                out.push(reply(errno::EINVAL));
                return;
            }
            if s.bound.is_some() || s.bind_pending || s.dgram_connected {
                out.push(reply(0));
                return;
            }
        }
        if !addr_fits(s.family, &addr) {
            out.push(reply(if s.family == Family::Inet {
                errno::EAFNOSUPPORT
            } else {
                errno::EINVAL
            }));
            return;
        }
        if s.bound.is_some() || s.bind_pending || s.listener.is_some() {
            out.push(reply(errno::EINVAL));
            return;
        }
        if addr.port() != 0 {
            let key = (s.ty as u16, addr.port());
            let mine_rp = s.app_reuseport();
            let mine_ra = s.app_flag(opt::SO_REUSEADDR);
            if let Some(users) = self.ports.get(&key) {
                for &u in users {
                    let Some(o) = self.socks.get(&u) else {
                        continue;
                    };
                    let Some(oa) = o.bound else { continue };
                    let overlap = oa.ip() == addr.ip()
                        || oa.ip().is_unspecified()
                        || addr.ip().is_unspecified();
                    // Linux: both SO_REUSEPORT, or both SO_REUSEADDR while
                    // the other is not a TCP listener, may share a port.
                    let shared = (mine_rp && o.app_reuseport())
                        || (mine_ra
                            && o.app_flag(opt::SO_REUSEADDR)
                            && (s.ty == SockType::Dgram || o.listener.is_none()));
                    if overlap && !shared {
                        out.push(reply(errno::EADDRINUSE));
                        return;
                    }
                }
            }
        }
        let inst = match self.ensure_placed(h, true, out) {
            Ok(i) => i,
            Err(e) => {
                out.push(reply(e));
                return;
            }
        };
        self.socks.get_mut(&h).expect("present").bind_pending = true;
        self.request(
            inst,
            Pending::Bind {
                sock: h,
                conn,
                seq: req.seq,
                addr,
                auto,
            },
            out,
            |r| Frame::Bind {
                sock: h,
                req: r,
                addr,
            },
        );
    }

    fn op_listen(&mut self, conn: ConnId, req: &Control<'_>, h: Handle, out: &mut Vec<Action>) {
        let reply = |st| Action::Reply(ShimReply::new(conn, req.op, req.seq, st));
        let s = &self.socks[&h];
        if s.ty != SockType::Stream {
            out.push(reply(errno::EOPNOTSUPP));
            return;
        }
        let backlog = u32::try_from(req.args[0].clamp(1, 4096)).unwrap_or(128);
        if s.listener.is_some() {
            // Linux lets listen() change the backlog; the replicas keep theirs.
            out.push(reply(0));
            return;
        }
        if matches!(
            s.state,
            SockState::Connecting | SockState::Connected | SockState::Dead
        ) {
            out.push(reply(errno::EINVAL));
            return;
        }
        let inst = match self.ensure_placed(h, true, out) {
            Ok(i) => i,
            Err(e) => {
                out.push(reply(e));
                return;
            }
        };
        self.request(
            inst,
            Pending::Listen {
                sock: h,
                conn,
                seq: req.seq,
                backlog,
            },
            out,
            |r| Frame::Listen {
                sock: h,
                req: r,
                backlog,
            },
        );
    }

    /// Replays a listener onto an instance: `Open`, options,
    /// `SO_REUSEPORT`, `Bind`, `Listen`.
    fn replicate(&mut self, l: Handle, inst: InstId, out: &mut Vec<Action>) {
        let Some(s) = self.socks.get(&l) else { return };
        let Some(li) = s.listener.as_ref() else {
            return;
        };
        if li.replicas.contains_key(&inst) || !self.live(inst) {
            return;
        }
        let Some(addr) = s.bound else { return };
        let backlog = li.backlog;
        let (family, ty, proto) = (s.family, s.ty, s.proto);
        let opts = s.opts.clone();
        self.request(inst, Pending::Internal { sock: l }, out, |req| {
            Frame::Open {
                sock: l,
                req,
                family,
                ty,
                proto,
            }
        });
        for (level, name, value) in opts {
            if level == opt::SOL_SOCKET && name == opt::SO_REUSEPORT {
                continue;
            }
            self.request(inst, Pending::Internal { sock: l }, out, |req| {
                Frame::SetOpt {
                    sock: l,
                    req,
                    level,
                    name,
                    value,
                }
            });
        }
        self.request(inst, Pending::Internal { sock: l }, out, |req| {
            Frame::SetOpt {
                sock: l,
                req,
                level: opt::SOL_SOCKET,
                name: opt::SO_REUSEPORT,
                value: Value::int(1),
            }
        });
        self.request(inst, Pending::Internal { sock: l }, out, |req| {
            Frame::Bind { sock: l, req, addr }
        });
        self.request(inst, Pending::Internal { sock: l }, out, |req| {
            Frame::Listen {
                sock: l,
                req,
                backlog,
            }
        });
        if let Some(li) = self.socks.get_mut(&l).and_then(|s| s.listener.as_mut()) {
            li.replicas.insert(inst, backlog);
        }
        if let Some(i) = self.instances.get_mut(&inst) {
            i.sockets = i.sockets.saturating_add(1);
        }
        self.notes.push(Note::Replicated { inst, sock: l });
    }

    fn op_connect(&mut self, conn: ConnId, req: &Control<'_>, h: Handle, out: &mut Vec<Action>) {
        let reply = |st| Action::Reply(ShimReply::new(conn, req.op, req.seq, st));
        let s = &self.socks[&h];
        let Some(addr) = req.addr else {
            // connect(AF_UNSPEC) dissolves a UDP association: nothing to do
            // on an unconnected socket. A connected one would need the
            // instance to disconnect its socket, which the ring protocol
            // cannot say yet (`Connect` carries an address): EOPNOTSUPP.
            out.push(reply(match s.ty {
                SockType::Dgram if !s.dgram_connected => 0,
                SockType::Dgram => errno::EOPNOTSUPP,
                SockType::Stream => errno::EAFNOSUPPORT,
            }));
            return;
        };
        if !addr_fits(s.family, &addr) {
            out.push(reply(errno::EAFNOSUPPORT));
            return;
        }
        let nonblocking = req.args[0] != 0;
        if s.ty == SockType::Dgram {
            let inst = match self.ensure_placed(h, false, out) {
                Ok(i) => i,
                Err(e) => {
                    out.push(reply(e));
                    return;
                }
            };
            self.request(
                inst,
                Pending::Shim {
                    sock: h,
                    conn,
                    op: req.op,
                    seq: req.seq,
                },
                out,
                |r| Frame::Connect {
                    sock: h,
                    req: r,
                    addr,
                },
            );
            return;
        }
        match s.state {
            SockState::Connecting => {
                out.push(reply(errno::EALREADY));
                return;
            }
            SockState::Connected => {
                out.push(reply(errno::EISCONN));
                return;
            }
            SockState::Dead => {
                // Linux: a pending error is reported (and cleared) first;
                // after a failed connect the socket is still SS_CONNECTING
                // and the next connect() says ECONNABORTED; a connection
                // reset after it was established is still SS_CONNECTED.
                let e = if s.err != 0 {
                    s.err
                } else if s.peer.is_none() {
                    errno::ECONNABORTED
                } else {
                    errno::EISCONN
                };
                if let Some(s) = self.socks.get_mut(&h) {
                    s.err = 0;
                }
                out.push(reply(e));
                return;
            }
            _ if s.listener.is_some() => {
                out.push(reply(errno::EISCONN));
                return;
            }
            _ => {}
        }
        let inst = match self.ensure_placed(h, false, out) {
            Ok(i) => i,
            Err(e) => {
                out.push(reply(e));
                return;
            }
        };
        let s = self.socks.get_mut(&h).expect("present");
        s.state = SockState::Connecting;
        s.nonblocking_connect = nonblocking;
        s.peer = Some(addr);
        s.connect_reply_pending = true;
        let shim = if nonblocking {
            None
        } else {
            Some((conn, req.seq))
        };
        self.request(inst, Pending::Connect { sock: h, shim }, out, |r| {
            Frame::Connect {
                sock: h,
                req: r,
                addr,
            }
        });
        if nonblocking {
            out.push(reply(errno::EINPROGRESS));
        }
    }

    fn op_accept(&mut self, conn: ConnId, req: &Control<'_>, h: Handle, out: &mut Vec<Action>) {
        let reply = |st| ShimReply::new(conn, req.op, req.seq, st);
        let s = self.socks.get_mut(&h).expect("checked");
        let Some(li) = s.listener.as_mut() else {
            out.push(Action::Reply(reply(errno::EINVAL)));
            return;
        };
        let Some(c) = li.queue.pop_front() else {
            // A token was read but nothing is queued (a connection of a
            // dead instance was dropped): the shim retries like EAGAIN.
            out.push(Action::Reply(reply(errno::EAGAIN)));
            return;
        };
        let Some(cs) = self.socks.get_mut(&c) else {
            out.push(Action::Reply(reply(errno::EAGAIN)));
            return;
        };
        cs.accepted_on = None;
        let from = cs.inst;
        let mut r = reply(0);
        r.addr = cs.peer;
        r.addr2 = cs.local;
        r.fd = ReplyFd::AppEnd(c);
        out.push(Action::Reply(r));
        // Give the producing instance its announcement back.
        if let Some(inst) = from
            && self.live(inst)
            && let Some(li) = self.socks.get_mut(&h).and_then(|s| s.listener.as_mut())
            && let Some(credit) = li.replicas.get_mut(&inst)
        {
            *credit = credit.saturating_add(1);
            out.push(Action::Send {
                inst,
                frame: Frame::Credit { sock: h, bytes: 1 },
            });
        }
    }

    fn op_shutdown(&mut self, conn: ConnId, req: &Control<'_>, h: Handle, out: &mut Vec<Action>) {
        let reply = |st| Action::Reply(ShimReply::new(conn, req.op, req.seq, st));
        let how = match req.args[0] {
            0 => Shutdown::Read,
            1 => Shutdown::Write,
            2 => Shutdown::Both,
            _ => {
                out.push(reply(errno::EINVAL));
                return;
            }
        };
        let s = &self.socks[&h];
        let connected =
            s.state == SockState::Connected || (s.ty == SockType::Dgram && s.inst.is_some());
        if !connected {
            // Dead (reset) sockets: Linux allows shutdown after a reset too,
            // but the ENOTCONN answer is what an unconnected socket gives.
            out.push(reply(if s.state == SockState::Dead {
                0
            } else {
                errno::ENOTCONN
            }));
            return;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            // The app end stops writing; the relay then reads EOF and sends
            // `Eof` after every byte written before, in order.
            out.push(Action::AppShutdownWrite { sock: h });
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            let Some(inst) = s.inst else {
                out.push(reply(errno::ENOTCONN));
                return;
            };
            self.request(
                inst,
                Pending::Shutdown {
                    sock: h,
                    conn,
                    seq: req.seq,
                },
                out,
                |r| Frame::Shutdown {
                    sock: h,
                    req: r,
                    how: Shutdown::Read,
                },
            );
        } else {
            out.push(reply(0));
        }
    }

    fn op_setopt(&mut self, conn: ConnId, req: &Control<'_>, h: Handle, out: &mut Vec<Action>) {
        let reply = |st| Action::Reply(ShimReply::new(conn, req.op, req.seq, st));
        let (level, name) = (req.args[0], req.args[1]);
        let value = Value::new(req.value);
        let max_opts = self.cfg.max_opts;
        let s = self.socks.get_mut(&h).expect("checked");
        if level == opt::SOL_SOCKET
            && matches!(
                name,
                opt::SO_TYPE
                    | opt::SO_ERROR
                    | opt::SO_ACCEPTCONN
                    | opt::SO_PROTOCOL
                    | opt::SO_DOMAIN
            )
        {
            out.push(reply(errno::ENOPROTOOPT));
            return;
        }
        if s.opts.len() >= max_opts && !s.opts.iter().any(|(l, n, _)| *l == level && *n == name) {
            out.push(reply(errno::ENOMEM));
            return;
        }
        // Linux checks level, name, length and value in the kernel, so the
        // socket is placed now and its instance's kernel answers; the
        // option is remembered (for replicas) only once it succeeded.
        let inst = match s.inst {
            Some(i) => i,
            None => match self.ensure_placed(h, false, out) {
                Ok(i) => i,
                Err(_) => {
                    // No live instance (or the socket is dead): nothing can
                    // check the option now; it is kept for the placement
                    // that comes with the next op, as Linux would accept it.
                    let s = self.socks.get_mut(&h).expect("checked");
                    s.remember(level, name, value, max_opts);
                    out.push(reply(0));
                    return;
                }
            },
        };
        let s = self.socks.get_mut(&h).expect("checked");
        let listener = s
            .listener
            .as_ref()
            .map(|li| li.replicas.keys().copied().collect::<Vec<_>>());
        if level == opt::SOL_SOCKET && name == opt::SO_REUSEPORT && s.reuseport_sent {
            // The instance side keeps SO_REUSEPORT on for replication; the
            // app's value lives in the driver. The length is checked as
            // Linux does for an int option.
            if req.value.len() < 4 {
                out.push(reply(errno::EINVAL));
                return;
            }
            s.remember(level, name, value, max_opts);
            out.push(reply(0));
            return;
        }
        self.request(
            inst,
            Pending::SetOpt {
                sock: h,
                conn,
                seq: req.seq,
                level,
                name,
                value,
            },
            out,
            |r| Frame::SetOpt {
                sock: h,
                req: r,
                level,
                name,
                value,
            },
        );
        for other in listener.into_iter().flatten().filter(|&i| i != inst) {
            self.request(other, Pending::Internal { sock: h }, out, |r| {
                Frame::SetOpt {
                    sock: h,
                    req: r,
                    level,
                    name,
                    value,
                }
            });
        }
    }

    fn op_getopt(&mut self, conn: ConnId, req: &Control<'_>, h: Handle, out: &mut Vec<Action>) {
        let (level, name) = (req.args[0], req.args[1]);
        let mut r = ShimReply::new(conn, req.op, req.seq, 0);
        let s = self.socks.get_mut(&h).expect("checked");
        if level == opt::SOL_SOCKET {
            let local = match name {
                opt::SO_TYPE => Some(s.ty as i32),
                opt::SO_DOMAIN => Some(s.family as i32),
                opt::SO_PROTOCOL => Some(s.proto),
                opt::SO_ACCEPTCONN => Some(i32::from(s.listener.is_some())),
                opt::SO_ERROR => Some(core::mem::take(&mut s.err)),
                opt::SO_REUSEPORT => Some(i32::from(s.app_reuseport())),
                _ => None,
            };
            if let Some(v) = local {
                r.value = Value::int(v);
                out.push(Action::Reply(r));
                return;
            }
        }
        let max_len = u32::try_from(req.args[2].clamp(0, MAX_OPT_LEN as i32)).unwrap_or(0);
        let inst = match self.ensure_placed(h, false, out) {
            Ok(i) => i,
            Err(e) => {
                r.status = e;
                out.push(Action::Reply(r));
                return;
            }
        };
        self.request(
            inst,
            Pending::Shim {
                sock: h,
                conn,
                op: req.op,
                seq: req.seq,
            },
            out,
            |rq| Frame::GetOpt {
                sock: h,
                req: rq,
                level,
                name,
                max_len,
            },
        );
    }

    fn op_name(&mut self, conn: ConnId, req: &Control<'_>, h: Handle, out: &mut Vec<Action>) {
        let mut r = ShimReply::new(conn, req.op, req.seq, 0);
        let s = &self.socks[&h];
        let cached = if req.op == Op::GetSockName {
            s.local
        } else {
            s.peer_known()
        };
        if let Some(a) = cached {
            r.addr = Some(a);
            out.push(Action::Reply(r));
            return;
        }
        match (s.inst, req.op) {
            (None, Op::GetSockName) => {
                r.addr = Some(s.bound.unwrap_or(unspecified(s.family)));
                out.push(Action::Reply(r));
            }
            (None, _) => {
                r.status = errno::ENOTCONN;
                out.push(Action::Reply(r));
            }
            (Some(inst), op) => {
                self.request(
                    inst,
                    Pending::Shim {
                        sock: h,
                        conn,
                        op,
                        seq: req.seq,
                    },
                    out,
                    |rq| {
                        if op == Op::GetSockName {
                            Frame::GetSockName { sock: h, req: rq }
                        } else {
                            Frame::GetPeerName { sock: h, req: rq }
                        }
                    },
                );
            }
        }
    }

    // ----- relay -----

    /// How many bytes the app may send now on `sock`: `(instance, wire id,
    /// credit)`. `None` while the socket is not connected (streams) or the
    /// app side must not be read. A datagram socket not yet placed is
    /// placed now (the first `sendto` opens it on an instance); that call
    /// answers `None` plus a `Resume`, because the `Open` frame it queued in
    /// `out` must reach the ring before any datagram of the socket.
    pub fn send_credit(
        &mut self,
        sock: Handle,
        out: &mut Vec<Action>,
    ) -> Option<(InstId, u32, u32)> {
        let s = self.socks.get(&sock)?;
        if s.ty == SockType::Dgram && s.inst.is_none() && s.state == SockState::Fresh {
            self.ensure_placed(sock, false, out).ok()?;
            out.push(Action::Resume { sock });
            return None;
        }
        let s = self.socks.get(&sock)?;
        let inst = s.inst?;
        let ok = match s.ty {
            SockType::Stream => s.state == SockState::Connected && !s.eof_sent,
            SockType::Dgram => s.state != SockState::Dead && s.state != SockState::Closing,
        };
        ok.then_some((inst, s.wire, s.send_credit))
    }

    /// The daemon sent `n` bytes of `sock` to its instance.
    pub fn consume_credit(&mut self, sock: Handle, n: u32) {
        if let Some(s) = self.socks.get_mut(&sock) {
            s.send_credit = s.send_credit.saturating_sub(n);
        }
    }

    /// The daemon wrote `n` bytes from the instance into `sock`'s pair
    /// (or dropped a datagram); `drained` when nothing stays buffered.
    /// Credit is returned in batches of a quarter window, or on drain.
    pub fn delivered(&mut self, sock: Handle, n: u32, drained: bool, out: &mut Vec<Action>) {
        let quarter = (self.cfg.window / 4).max(1);
        let Some(s) = self.socks.get_mut(&sock) else {
            return;
        };
        s.recv_uncredited = s.recv_uncredited.saturating_add(n);
        if s.recv_uncredited == 0 || (s.recv_uncredited < quarter && !drained) {
            return;
        }
        let Some(inst) = s.inst else { return };
        if s.state == SockState::Dead || s.state == SockState::Closing {
            return;
        }
        let bytes = s.recv_uncredited.min(s.recv_inflight);
        s.recv_inflight -= bytes;
        s.recv_uncredited = 0;
        if bytes > 0 {
            out.push(Action::Send {
                inst,
                frame: Frame::Credit {
                    sock: s.wire,
                    bytes,
                },
            });
        }
    }

    /// Read returned 0 on the driver end: the app shut its write side
    /// (`hup == false`) or the last app reference is gone (`hup`).
    pub fn app_eof(&mut self, sock: Handle, hup: bool, out: &mut Vec<Action>) {
        let Some(s) = self.socks.get_mut(&sock) else {
            return;
        };
        if !hup {
            if s.ty == SockType::Stream && s.state == SockState::Connected && !s.eof_sent {
                s.eof_sent = true;
                if let Some(inst) = s.inst {
                    out.push(Action::Send {
                        inst,
                        frame: Frame::Eof { sock: s.wire },
                    });
                }
            }
            return;
        }
        if s.state == SockState::Closing {
            return;
        }
        s.state = SockState::Closing;
        s.send_credit = 0;
        let wire = s.wire;
        let mut targets: Vec<InstId> = match s.listener.as_ref() {
            Some(li) => li.replicas.keys().copied().collect(),
            None => s.inst.into_iter().collect(),
        };
        targets.retain(|&i| self.live(i));
        if let Some(li) = self.socks.get_mut(&sock).and_then(|s| s.listener.as_mut()) {
            li.replicas.clear();
        }
        if targets.is_empty() {
            self.forget(sock, out);
            return;
        }
        for &inst in &targets {
            self.request(inst, Pending::Internal { sock }, out, |req| Frame::Close {
                sock: wire,
                req,
            });
        }
        self.listeners.retain(|&l| l != sock);
        if let Some(s) = self.socks.get_mut(&sock) {
            s.close_waits = targets;
        }
    }

    fn closed_on(&mut self, sock: Handle, inst: InstId, out: &mut Vec<Action>) {
        let Some(s) = self.socks.get_mut(&sock) else {
            return;
        };
        s.close_waits.retain(|&i| i != inst);
        if let Some(i) = self.instances.get_mut(&inst) {
            i.sockets = i.sockets.saturating_sub(1);
        }
        if s.close_waits.is_empty() {
            self.forget(sock, out);
        }
    }

    // ----- instance frames -----

    /// Resolves a socket id an instance used: its accepted connections by
    /// `(inst, id)`, driver ids only if placed (or replicated) there.
    fn resolve(&self, inst: InstId, wire: u32) -> Result<Handle, Violation> {
        if wire & INSTANCE_SOCK_BIT != 0 {
            return self
                .by_wire
                .get(&(inst, wire))
                .copied()
                .ok_or(Violation::UnknownSocket(wire));
        }
        let s = self
            .socks
            .get(&wire)
            .ok_or(Violation::UnknownSocket(wire))?;
        let here = s.inst == Some(inst)
            || s.close_waits.contains(&inst)
            || s.retiring_replicas.iter().any(|&(i, _)| i == inst)
            || s.listener
                .as_ref()
                .is_some_and(|li| li.replicas.contains_key(&inst));
        if here && s.wire == wire {
            Ok(wire)
        } else {
            Err(Violation::UnknownSocket(wire))
        }
    }

    /// One decoded frame from instance `inst`. For `Data`/`DataTo` returns
    /// the socket whose pair gets the payload (window already checked);
    /// the daemon then reports what it wrote with [`Driver::delivered`].
    /// A violation marks the instance dead (actions included) and is
    /// returned for the log.
    pub fn instance_frame(
        &mut self,
        inst: InstId,
        msg: &Msg<'_>,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<Option<Handle>, Violation> {
        if !self.live(inst) {
            return Ok(None);
        }
        if let Some(i) = self.instances.get_mut(&inst) {
            i.last_seen = now;
        }
        match self.frame_inner(inst, msg, out) {
            Ok(r) => Ok(r),
            Err(v) => {
                self.instance_failed(inst, v, out);
                Err(v)
            }
        }
    }

    fn frame_inner(
        &mut self,
        inst: InstId,
        msg: &Msg<'_>,
        out: &mut Vec<Action>,
    ) -> Result<Option<Handle>, Violation> {
        match *msg {
            Msg::Heartbeat(stats) => {
                if let Some(i) = self.instances.get_mut(&inst) {
                    i.stats = Some(stats);
                }
                Ok(None)
            }
            // Flow records and telemetry are for the daemon's monitor stream.
            Msg::Flow(_) | Msg::Telemetry(_) => Ok(None),
            Msg::Reply {
                req, errno, value, ..
            } => {
                let p = self
                    .pending
                    .remove(&(inst, req))
                    .ok_or(Violation::UnknownRequest(req))?;
                if msg.sock() != 0 && self.resolve(inst, msg.sock()).ok() != Some(p.sock()) {
                    return Err(Violation::UnknownSocket(msg.sock()));
                }
                self.on_reply(inst, p, errno, value, out);
                Ok(None)
            }
            Msg::Data { sock, bytes } | Msg::DataTo { sock, bytes, .. } => {
                let h = self.resolve(inst, sock)?;
                let s = self.socks.get_mut(&h).expect("resolved");
                let is_to = matches!(msg, Msg::DataTo { .. });
                if s.listener.is_some() || is_to != (s.ty == SockType::Dgram) {
                    return Err(Violation::BadState(sock));
                }
                let n = u32::try_from(bytes.len()).map_err(|_| Violation::BeyondWindow(sock))?;
                let inflight = s
                    .recv_inflight
                    .checked_add(n)
                    .ok_or(Violation::BeyondWindow(sock))?;
                if inflight > self.cfg.window {
                    return Err(Violation::BeyondWindow(sock));
                }
                s.recv_inflight = inflight;
                if matches!(s.state, SockState::Dead | SockState::Closing) {
                    // Nobody reads it; the credit no longer matters.
                    return Ok(None);
                }
                Ok(Some(h))
            }
            Msg::Credit { sock, bytes } => {
                let h = self.resolve(inst, sock)?;
                let window = self.instances.get(&inst).map_or(0, |i| i.window);
                let s = self.socks.get_mut(&h).expect("resolved");
                if s.listener.is_some() {
                    return Err(Violation::BadState(sock));
                }
                // Never more than one window outstanding, whatever it says.
                s.send_credit = s
                    .send_credit
                    .saturating_add(bytes)
                    .min(window.max(s.send_credit));
                out.push(Action::Resume { sock: h });
                Ok(None)
            }
            Msg::Eof { sock } => {
                let h = self.resolve(inst, sock)?;
                let s = self.socks.get_mut(&h).expect("resolved");
                if s.listener.is_some() || s.ty != SockType::Stream {
                    return Err(Violation::BadState(sock));
                }
                if !s.peer_eof && s.state != SockState::Closing {
                    s.peer_eof = true;
                    out.push(Action::PeerEof { sock: h });
                }
                Ok(None)
            }
            Msg::Reset { sock, errno } => {
                let h = self.resolve(inst, sock)?;
                let s = self.socks.get_mut(&h).expect("resolved");
                if s.listener.is_some() {
                    return Err(Violation::BadState(sock));
                }
                if matches!(s.state, SockState::Closing | SockState::Dead) {
                    return Ok(None);
                }
                s.err = errno;
                s.state = SockState::Dead;
                s.send_credit = 0;
                out.push(Action::PeerReset { sock: h, errno });
                Ok(None)
            }
            Msg::Connected {
                sock,
                errno,
                local,
                peer,
            } => {
                let h = self.resolve(inst, sock)?;
                let window = self.instances.get(&inst).map_or(0, |i| i.window);
                let s = self.socks.get_mut(&h).expect("resolved");
                if s.state != SockState::Connecting || s.ty != SockType::Stream {
                    // Closing sockets may still see their connect finish.
                    return if s.state == SockState::Closing {
                        Ok(None)
                    } else {
                        Err(Violation::BadState(sock))
                    };
                }
                if s.connect_reply_pending {
                    // Connected before the connect's Reply: out of order.
                    return Err(Violation::BadState(sock));
                }
                self.finish_connect(h, errno, local, peer, window, out);
                Ok(None)
            }
            Msg::Accepted {
                listener,
                sock,
                peer,
                local,
            } => {
                let l = self
                    .resolve(inst, listener)
                    .map_err(|_| Violation::NotAListener(listener))?;
                let ls = self.socks.get(&l).expect("resolved");
                let Some(li) = ls.listener.as_ref() else {
                    return Err(Violation::NotAListener(listener));
                };
                if ls.state == SockState::Closing {
                    // The app closed the listener; the instance gets Close
                    // for the listener and this connection is dropped by it.
                    return Ok(None);
                }
                let retiring = !li.replicas.contains_key(&inst);
                let credit = match li.replicas.get(&inst) {
                    Some(&c) => c,
                    // A replica being closed: what it accepted before the
                    // close is still a client's connection.
                    None => ls
                        .retiring_replicas
                        .iter()
                        .find(|&&(i, _)| i == inst)
                        .map(|&(_, c)| c)
                        .ok_or(Violation::NotAListener(listener))?,
                };
                if credit == 0 || self.by_wire.contains_key(&(inst, sock)) {
                    return Err(Violation::AcceptBeyondCredit(listener));
                }
                let (family, ty, proto) = (ls.family, ls.ty, ls.proto);
                let h = self.alloc_handle().map_err(|_| Violation::TableFull)?;
                let window = self.instances.get(&inst).map_or(0, |i| i.window);
                let mut c = Sock::new(0, family, ty, proto, sock);
                c.inst = Some(inst);
                c.state = SockState::Connected;
                c.accepted_on = Some(l);
                c.local = Some(local);
                c.peer = Some(peer);
                c.send_credit = window;
                self.socks.insert(h, c);
                self.by_wire.insert((inst, sock), h);
                if let Some(i) = self.instances.get_mut(&inst) {
                    i.sockets = i.sockets.saturating_add(1);
                    i.accepted += 1;
                }
                if retiring {
                    if let Some(r) = ls_retiring(&mut self.socks, l, inst) {
                        r.1 = credit - 1;
                    }
                } else if let Some(li) = self.socks.get_mut(&l).and_then(|s| s.listener.as_mut()) {
                    li.replicas.insert(inst, credit - 1);
                }
                let li = self
                    .socks
                    .get_mut(&l)
                    .and_then(|s| s.listener.as_mut())
                    .expect("listener");
                li.queue.push_back(h);
                out.push(Action::NewConnection {
                    sock: h,
                    listener: l,
                });
                out.push(Action::Token { listener: l });
                Ok(None)
            }
            Msg::Closed { sock } => {
                let h = self.resolve(inst, sock)?;
                let s = self.socks.get_mut(&h).expect("resolved");
                if let Some(pos) = s.retiring_replicas.iter().position(|&(i, _)| i == inst) {
                    s.retiring_replicas.swap_remove(pos);
                    if let Some(i) = self.instances.get_mut(&inst) {
                        i.sockets = i.sockets.saturating_sub(1);
                    }
                    return Ok(None);
                }
                if s.state != SockState::Closing || !s.close_waits.contains(&inst) {
                    return Err(Violation::BadState(sock));
                }
                self.closed_on(h, inst, out);
                Ok(None)
            }
            _ => Err(Violation::WrongDirection),
        }
    }

    fn finish_connect(
        &mut self,
        h: Handle,
        errno: i32,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
        window: u32,
        out: &mut Vec<Action>,
    ) {
        let s = self.socks.get_mut(&h).expect("present");
        let shim = s.connect_shim.take();
        let nb = core::mem::take(&mut s.nonblocking_connect);
        if errno == 0 {
            s.state = SockState::Connected;
            s.local = local;
            if peer.is_some() {
                s.peer = peer;
            }
            s.send_credit = window;
        } else {
            s.state = SockState::Dead;
            s.peer = None;
            if nb {
                s.err = errno;
            }
        }
        if let Some((conn, seq)) = shim {
            out.push(Action::Reply(ShimReply::new(conn, Op::Connect, seq, errno)));
        }
        if errno != 0 {
            // The app must read EOF (then the error) as soon as it can
            // see the failure: shut the driver end before `ConnectDone`
            // makes the app end writable.
            out.push(Action::PeerReset { sock: h, errno });
        }
        if nb || errno != 0 {
            out.push(Action::ConnectDone { sock: h, errno });
        }
        if errno == 0 {
            out.push(Action::Resume { sock: h });
        }
    }

    fn on_reply(
        &mut self,
        inst: InstId,
        p: Pending,
        errno: i32,
        value: &[u8],
        out: &mut Vec<Action>,
    ) {
        let window = self.instances.get(&inst).map_or(0, |i| i.window);
        match p {
            Pending::Shim {
                sock,
                conn,
                op,
                seq,
            } => {
                let mut r = ShimReply::new(conn, op, seq, errno);
                if errno == 0 {
                    match op {
                        Op::GetOpt => r.value = Value::new(value),
                        Op::GetSockName | Op::GetPeerName => {
                            r.addr = ins_protocol::msg::WireAddr::parse(value).ok().flatten();
                            if r.addr.is_none() {
                                r.status = errno::EPROTO;
                            }
                        }
                        Op::Connect => {
                            if let Some(s) = self.socks.get_mut(&sock) {
                                s.dgram_connected = true;
                            }
                        }
                        _ => {}
                    }
                }
                out.push(Action::Reply(r));
            }
            Pending::Open { sock } => {
                if errno != 0 {
                    self.notes.push(Note::InternalFailed { inst, sock, errno });
                    if let Some(s) = self.socks.get_mut(&sock) {
                        s.open_err = errno;
                    }
                }
            }
            Pending::SetOpt {
                sock,
                conn,
                seq,
                level,
                name,
                value,
            } => {
                let max_opts = self.cfg.max_opts;
                let mut status = errno;
                if let Some(s) = self.socks.get_mut(&sock) {
                    if status != 0 && s.open_err != 0 {
                        status = s.open_err;
                    }
                    // Capacity was checked when the request was sent.
                    if status == 0 && !s.remember(level, name, value, max_opts) {
                        status = errno::ENOMEM;
                    }
                }
                out.push(Action::Reply(ShimReply::new(conn, Op::SetOpt, seq, status)));
            }
            Pending::Mitigate { tag } => {
                self.notes.push(Note::MitigateDone { inst, tag, errno });
            }
            Pending::Internal { sock } => {
                if errno != 0 {
                    self.notes.push(Note::InternalFailed { inst, sock, errno });
                }
            }
            Pending::Bind {
                sock,
                conn,
                seq,
                addr,
                auto,
            } => {
                let mut status = errno;
                if auto && status == errno::EINVAL {
                    // Already bound on the instance (a connect did it).
                    if let Some(s) = self.socks.get_mut(&sock) {
                        s.bind_pending = false;
                    }
                    out.push(Action::Reply(ShimReply::new(conn, Op::Bind, seq, 0)));
                    return;
                }
                let mut learn_port = false;
                if let Some(s) = self.socks.get_mut(&sock) {
                    s.bind_pending = false;
                    if status != 0 && s.open_err != 0 {
                        status = s.open_err;
                    }
                    if status == 0 {
                        s.bound = Some(addr);
                        if addr.port() != 0 {
                            let key = (s.ty as u16, addr.port());
                            self.ports.entry(key).or_default().push(sock);
                        } else {
                            learn_port = true;
                        }
                    }
                }
                if learn_port {
                    // The reply waits for the port the kernel chose.
                    self.request(inst, Pending::BindAddr { sock, conn, seq }, out, |req| {
                        Frame::GetSockName { sock, req }
                    });
                    return;
                }
                out.push(Action::Reply(ShimReply::new(conn, Op::Bind, seq, status)));
            }
            Pending::BindAddr { sock, conn, seq } => {
                let addr = if errno == 0 {
                    ins_protocol::msg::WireAddr::parse(value).ok().flatten()
                } else {
                    None
                };
                // The bind itself succeeded; a failed query only loses
                // the driver's EADDRINUSE check for this port.
                match addr {
                    Some(addr) => {
                        if let Some(s) = self.socks.get_mut(&sock) {
                            let was = s.bound_key();
                            s.bound = Some(addr);
                            if was.is_none()
                                && let Some(key) = s.bound_key()
                            {
                                self.ports.entry(key).or_default().push(sock);
                            }
                        }
                    }
                    None => self.notes.push(Note::InternalFailed {
                        inst,
                        sock,
                        errno: if errno == 0 { errno::EPROTO } else { errno },
                    }),
                }
                out.push(Action::Reply(ShimReply::new(conn, Op::Bind, seq, 0)));
            }
            Pending::Listen {
                sock,
                conn,
                seq,
                backlog,
            } => {
                let mut status = errno;
                if let Some(s) = self.socks.get_mut(&sock) {
                    if status != 0 && s.open_err != 0 {
                        status = s.open_err;
                    }
                    if status == 0 && s.state != SockState::Closing {
                        let mut li = Listener {
                            backlog,
                            replicas: BTreeMap::new(),
                            queue: VecDeque::new(),
                        };
                        li.replicas.insert(inst, backlog);
                        s.listener = Some(li);
                        s.state = SockState::Listening;
                        self.listeners.push(sock);
                        // Learn the address (autobind, port 0) to replicate.
                        self.request(inst, Pending::ListenAddr { sock }, out, |req| {
                            Frame::GetSockName { sock, req }
                        });
                    }
                }
                out.push(Action::Reply(ShimReply::new(conn, Op::Listen, seq, status)));
            }
            Pending::ListenAddr { sock } => {
                let addr = if errno == 0 {
                    ins_protocol::msg::WireAddr::parse(value).ok().flatten()
                } else {
                    None
                };
                let Some(addr) = addr else {
                    self.notes.push(Note::InternalFailed {
                        inst,
                        sock,
                        errno: if errno == 0 { errno::EPROTO } else { errno },
                    });
                    return;
                };
                if let Some(s) = self.socks.get_mut(&sock) {
                    let was = s.bound_key();
                    s.bound = Some(addr);
                    s.local = Some(addr);
                    if was.is_none()
                        && let Some(key) = s.bound_key()
                    {
                        // Port 0 or autobind: the port is known only now.
                        self.ports.entry(key).or_default().push(sock);
                    }
                    if s.state != SockState::Listening {
                        return;
                    }
                }
                let others: Vec<InstId> = self
                    .instances
                    .iter()
                    .filter(|(id, i)| **id != inst && i.state == InstState::Live)
                    .map(|(id, _)| *id)
                    .collect();
                for o in others {
                    self.replicate(sock, o, out);
                }
            }
            Pending::Shutdown { conn, seq, .. } => {
                out.push(Action::Reply(ShimReply::new(
                    conn,
                    Op::Shutdown,
                    seq,
                    errno,
                )));
            }
            Pending::Connect { sock, shim } => {
                let Some(s) = self.socks.get_mut(&sock) else {
                    return;
                };
                s.connect_reply_pending = false;
                if s.state != SockState::Connecting {
                    return;
                }
                if errno == 0 || errno == errno::EINPROGRESS {
                    // `Connected` follows.
                    s.connect_shim = shim;
                    return;
                }
                let e = if s.open_err != 0 { s.open_err } else { errno };
                s.connect_shim = shim;
                self.finish_connect(sock, e, None, None, window, out);
            }
        }
    }

    fn fail_pending(&mut self, p: Pending, errno: i32, out: &mut Vec<Action>) {
        match p {
            Pending::Shim { conn, op, seq, .. } => {
                out.push(Action::Reply(ShimReply::new(conn, op, seq, errno)))
            }
            Pending::Bind {
                conn, seq, sock, ..
            } => {
                if let Some(s) = self.socks.get_mut(&sock) {
                    s.bind_pending = false;
                }
                out.push(Action::Reply(ShimReply::new(conn, Op::Bind, seq, errno)));
            }
            Pending::Listen { conn, seq, .. } => {
                out.push(Action::Reply(ShimReply::new(conn, Op::Listen, seq, errno)))
            }
            Pending::SetOpt { conn, seq, .. } => {
                out.push(Action::Reply(ShimReply::new(conn, Op::SetOpt, seq, errno)))
            }
            Pending::BindAddr { conn, seq, .. } => {
                out.push(Action::Reply(ShimReply::new(conn, Op::Bind, seq, errno)))
            }
            Pending::Shutdown { conn, seq, .. } => out.push(Action::Reply(ShimReply::new(
                conn,
                Op::Shutdown,
                seq,
                errno,
            ))),
            Pending::Connect { sock, shim } => {
                if let Some(s) = self.socks.get_mut(&sock)
                    && s.connect_shim.is_none()
                {
                    s.connect_shim = shim;
                }
            }
            Pending::ListenAddr { .. }
            | Pending::Open { .. }
            | Pending::Internal { .. }
            | Pending::Mitigate { .. } => {}
        }
        // A connect whose `Connected` will never come is answered by the
        // instance-death path (the socket is reset there).
        let sock = p.sock();
        if let Some(s) = self.socks.get_mut(&sock)
            && s.state == SockState::Connecting
            && let Some((conn, seq)) = s.connect_shim.take()
        {
            out.push(Action::Reply(ShimReply::new(conn, Op::Connect, seq, errno)));
        }
    }
}

fn ls_retiring(
    socks: &mut BTreeMap<Handle, Sock>,
    l: Handle,
    inst: InstId,
) -> Option<&mut (InstId, u32)> {
    socks
        .get_mut(&l)?
        .retiring_replicas
        .iter_mut()
        .find(|r| r.0 == inst)
}
