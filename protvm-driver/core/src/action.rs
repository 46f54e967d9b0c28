//! What the core asks of its host ([`Action`], carried out in order by
//! [`Driver::execute`](crate::Driver::execute) through the traits in
//! [`host`](crate::host)), the replies it gives shims ([`ShimReply`]), the
//! notes it leaves for logs and monitors ([`Note`]) and why it declares an
//! instance dead ([`Violation`]).
//!
//! Actions are `Copy` and hold their frames inline
//! ([`OwnedMsg`]): the host keeps one reused `Vec<Action>`, so producing an
//! action never allocates.

use ins_protocol::control::{ControlOf, Op, OwnedControl};
use ins_protocol::msg::{OptValue, OwnedMsg};

use crate::{ConnId, Handle, InstId};

/// Which fd travels with a shim reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFd {
    /// None.
    None,
    /// The app-side object the host keeps for this socket (an accepted
    /// connection's; the host hands it over and drops its copy).
    AppEnd(Handle),
    /// A copy of the host's own end of a listener's pair (the host keeps
    /// its end). With it the program holds the pair's other end too, so
    /// the listener it accepts on never reads end-of-file (and never polls
    /// readable) only because the host went away: a listener whose
    /// network is gone then waits, as a Linux listener with no incoming
    /// connections does, instead of spinning on a readable fd.
    Keeper(Handle),
}

/// A reply to a shim request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShimReply {
    /// The shim connection.
    pub conn: ConnId,
    /// The control message: the request's op and sequence number, the
    /// status (0 or a positive errno) and the results.
    pub ctl: OwnedControl,
    /// Fd to pass.
    pub fd: ReplyFd,
}

impl ShimReply {
    pub(crate) fn new(conn: ConnId, op: Op, seq: u32, status: i32) -> ShimReply {
        ShimReply {
            conn,
            ctl: ControlOf {
                op,
                seq,
                status,
                args: [0; 4],
                addr: None,
                addr2: None,
                value: OptValue::EMPTY,
            },
            fd: ReplyFd::None,
        }
    }
}

/// What the host must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Push this frame to the instance's ring, after every frame sent to
    /// it before.
    Send {
        /// Instance.
        inst: InstId,
        /// Frame.
        frame: OwnedMsg,
    },
    /// Answer a shim.
    Reply(ShimReply),
    /// An instance announced a connection: create its app side now
    /// (instance data may arrive before the app accepts) and keep it until
    /// an `Accept` reply passes it on. [`Driver::execute`](crate::Driver::execute)
    /// reports the result back to the core.
    NewConnection {
        /// The new connection.
        sock: Handle,
        /// Its listener.
        listener: Handle,
        /// The instance that announced it (and holds it).
        inst: InstId,
    },
    /// One more accept token for the listener (the daemon: one byte
    /// written into the listener's pair).
    Token {
        /// Listener.
        listener: Handle,
    },
    /// A non-blocking connect finished (errno 0 or the error): the app
    /// side becomes writable (the daemon: the filler bytes are drained and
    /// the send buffer restored). On error the app also reads EOF.
    ConnectDone {
        /// Socket.
        sock: Handle,
        /// Result.
        errno: i32,
    },
    /// The instance sent `Eof`: the app reads EOF once the bytes
    /// buffered for it are delivered.
    PeerEof {
        /// Socket.
        sock: Handle,
    },
    /// The connection was reset (or its instance died): buffered bytes
    /// are dropped and the app reads EOF; the error is in the core's table.
    PeerReset {
        /// Socket.
        sock: Handle,
        /// Error.
        errno: i32,
    },
    /// Shut the write side of the app side (`shutdown(SHUT_WR)` by the
    /// app), through the object that came with the request being handled.
    AppShutdownWrite {
        /// Socket.
        sock: Handle,
    },
    /// Credit arrived or the socket became connected: relay from the app
    /// side again.
    Resume {
        /// Socket.
        sock: Handle,
    },
    /// The socket is gone: release its app side (and any object kept for
    /// it) and its buffers.
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
    /// The host saw the channel fail (corrupt ring, hang-up).
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

/// An event worth a log line or a monitor event, for the host.
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
    /// An instance answered a [`Driver::mitigate`](crate::Driver::mitigate) request (`errno`
    /// `ECONNRESET` when it died first).
    MitigateDone {
        /// Instance.
        inst: InstId,
        /// The tag given to [`Driver::mitigate`](crate::Driver::mitigate).
        tag: u64,
        /// 0 or the instance's errno.
        errno: i32,
    },
    /// A socket was reset: its app wrote an in-band option marker that no
    /// record matched in time (see [`inband`](crate::inband)).
    InbandReset {
        /// Socket.
        sock: Handle,
    },
    /// A listener was replicated onto an instance.
    Replicated {
        /// Instance.
        inst: InstId,
        /// Listener.
        sock: Handle,
    },
}
