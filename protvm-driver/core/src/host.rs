//! The host boundary: what a program that runs the core must provide.
//!
//! driver-core decides; a *host* does the I/O. Today's host is the
//! user-space daemon `ins-driver`: a Unix socket pair stands for each
//! socket (the app holds one end as its fd), memfd rings with eventfd
//! doorbells reach the instances, and a `SOCK_SEQPACKET` socket carries
//! shim requests. The Linux kernel module will be a second host of the
//! same core: a file per socket instead of a pair, Xen grant pages and
//! event channels instead of memfds, a misc device instead of the shim
//! socket. Neither is visible here.
//!
//! ```text
//!            ┌────────────── host ───────────────────────────────────────┐
//!  events ─▶ │ shim requests, ring frames, app-side EOF/HUP, joins, tick │
//!            └──┬──────────────────────────────────────────▲─────────────┘
//!               │ Driver::{shim_request, instance_frame,    │ InstanceLinks, ShimReplies,
//!               │  send_credit, delivered, app_eof, …}      │ AppSockets (execute), NoteSink
//!               ▼                                           │
//!            Driver ──────────── Vec<Action> ───────────────┘
//! ```
//!
//! ## Inputs: what the host calls
//!
//! * instances: [`Driver::instance_joined`] after a handshake (the host
//!   runs it and passes the instance's window), [`Driver::instance_frame`]
//!   for every frame it copied out of a ring and decoded,
//!   [`Driver::instance_failed`] when a channel breaks,
//!   [`Driver::tick`] regularly (about every 100 ms; heartbeats are
//!   checked then);
//! * sockets: [`Driver::new_socket`] after creating a socket's app-side
//!   object, [`Driver::lookup_inode`] to resolve the object a request
//!   names, [`Driver::shim_request`] for every other request;
//! * the relay, per socket: [`Driver::send_credit`] /
//!   [`Driver::consume_credit`] around reading the app side,
//!   [`Driver::delivered`] after writing instance data to it,
//!   [`Driver::app_eof`] when the app shut its write side or let go;
//! * control: [`Driver::mitigate`], [`Driver::set_draining`],
//!   [`Driver::drop_replicas`].
//!
//! Time is an argument (`now`, nanoseconds of the host's monotonic clock),
//! as in smoltcp's `poll(timestamp, …)`: the core reads no clock, so the
//! daemon passes `Instant`-based time, a kernel `ktime_get_ns()`, and
//! tests any number they like.
//!
//! ## Outputs: what the host provides
//!
//! The inputs append [`Action`]s to a `Vec` the host owns and reuses;
//! [`Driver::execute`] carries them out in order through these traits and
//! feeds the host's answers back (a failed send kills the instance, a
//! connection without an app side is dropped). Notes are pulled when the
//! host likes ([`Driver::drain_notes`]).
//!
//! | trait | the host provides | daemon | kernel module |
//! |---|---|---|---|
//! | [`InstanceLinks`] | ordered frames to an instance; closing its channel | memfd ring + eventfd, a queue while the ring is full | grant pages + event channel |
//! | [`AppSockets`] | the app-side object of each socket and its two directions | a socket pair per socket; token bytes; `shutdown(2)` | a file per socket (anon inode) with its own queues and `poll` |
//! | [`ShimReplies`] | the answer to a shim request, with an app-side object to hand over | a `SOCK_SEQPACKET` packet + `SCM_RIGHTS` | the misc device's ioctl result + a new fd |
//! | [`NoteSink`] | logs and monitor events | `tracing` + `monitor.sock` | `pr_info` + a netlink or device stream |
//!
//! A second host must also: copy every frame out of shared memory before
//! decoding it (the core sees only the copy), relay stream and datagram
//! bytes between the app side and the rings itself (the core only says how
//! much may flow), and call [`Driver::tick`]. Each trait method takes the
//! socket or instance it is about, so a host may route them (to the relay
//! shard that owns a socket, say) without the core knowing.
//!
//! Everything else — tables, placement, replication, failover, errno
//! choices — is the core's and stays identical across hosts.

use alloc::vec::Vec;

use ins_protocol::msg::OwnedMsg;

use crate::{Action, Driver, Handle, InstId, Note, ShimReply, Violation};

/// The channel to an instance failed for good (corrupt ring, peer gone);
/// the core declares the instance dead ([`Violation::ChannelFailed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFailed;

/// The app side of a connection could not be created (out of descriptors,
/// memory); the core drops the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoAppSide;

/// Transports to instances: one ordered channel each.
pub trait InstanceLinks {
    /// Queues `frame` to `inst` after everything sent to it before. A full
    /// ring is not a failure: the host keeps the frame (and the order) until
    /// there is space. A frame for an instance the host no longer has is
    /// dropped.
    fn send(&mut self, inst: InstId, frame: &OwnedMsg) -> Result<(), LinkFailed>;

    /// The instance is dead ([`Action::InstanceDead`]): close its channel.
    fn close(&mut self, inst: InstId);
}

/// The app-side object of each socket (the daemon: the app's end of a
/// socket pair, whose other end the host reads and writes; the kernel
/// module: a file) and what the core asks of it.
pub trait AppSockets {
    /// Instance `inst` announced a connection on `listener`: create its app
    /// side now (data may arrive before the app accepts) and keep it until
    /// a reply hands it over ([`ReplyFd::AppEnd`](crate::ReplyFd::AppEnd)).
    /// Returns the identity the host will resolve it by later (its inode).
    fn new_connection(
        &mut self,
        sock: Handle,
        listener: Handle,
        inst: InstId,
    ) -> Result<u64, NoAppSide>;

    /// One more connection waits in `listener`'s queue: make the listener
    /// readable by one more accept token.
    fn token(&mut self, listener: Handle);

    /// A non-blocking connect finished (`errno` 0 or its error): the app
    /// side becomes writable; on an error the app reads EOF.
    fn connect_done(&mut self, sock: Handle, errno: i32);

    /// The peer sent its last byte: once the bytes before it are delivered,
    /// the app reads EOF.
    fn peer_eof(&mut self, sock: Handle);

    /// The connection was reset (or its instance died): buffered bytes are
    /// dropped and the app reads EOF (the error is in the core's table).
    fn peer_reset(&mut self, sock: Handle, errno: i32);

    /// The app called `shutdown(SHUT_WR)` on the object that came with the
    /// request being handled: shut its write side, so the relay reads EOF
    /// after every byte written before.
    fn shutdown_app_write(&mut self, sock: Handle);

    /// Credit arrived or the socket became connected: relay from the app
    /// side again.
    fn resume(&mut self, sock: Handle);

    /// The socket is gone from the core: release its app side (and any
    /// object still kept for it) and its buffers.
    fn forget(&mut self, sock: Handle);
}

/// Answers to shim requests.
pub trait ShimReplies {
    /// Sends `reply` to its shim connection, handing over the app-side
    /// object `reply.fd` names (if the host no longer has it, the shim is
    /// answered `EAGAIN` instead, as if the connection had not come).
    fn reply(&mut self, reply: &ShimReply);
}

/// Where notes go (logs, the monitor stream).
pub trait NoteSink {
    /// One note, oldest first.
    fn note(&mut self, note: Note);
}

/// Everything a host provides.
pub trait Host: InstanceLinks + AppSockets + ShimReplies + NoteSink {}

impl<T: InstanceLinks + AppSockets + ShimReplies + NoteSink + ?Sized> Host for T {}

impl Driver {
    /// Carries out `actions` in order on `host`, including the actions its
    /// answers cause (appended and carried out in the same pass), then
    /// clears `actions`.
    pub fn execute<H>(&mut self, actions: &mut Vec<Action>, host: &mut H)
    where
        H: InstanceLinks + AppSockets + ShimReplies + ?Sized,
    {
        let mut i = 0;
        while let Some(&a) = actions.get(i) {
            i += 1;
            match a {
                Action::Send { inst, frame } => {
                    if host.send(inst, &frame).is_err() {
                        self.instance_failed(inst, Violation::ChannelFailed, actions);
                    }
                }
                Action::Reply(r) => host.reply(&r),
                Action::NewConnection {
                    sock,
                    listener,
                    inst,
                } => match host.new_connection(sock, listener, inst) {
                    Ok(inode) => self.attach_inode(sock, inode),
                    Err(NoAppSide) => self.connection_failed(sock, actions),
                },
                Action::Token { listener } => host.token(listener),
                Action::ConnectDone { sock, errno } => host.connect_done(sock, errno),
                Action::PeerEof { sock } => host.peer_eof(sock),
                Action::PeerReset { sock, errno } => host.peer_reset(sock, errno),
                Action::AppShutdownWrite { sock } => host.shutdown_app_write(sock),
                Action::Resume { sock } => host.resume(sock),
                Action::Forget { sock } => host.forget(sock),
                Action::InstanceDead { inst } => host.close(inst),
            }
        }
        actions.clear();
    }

    /// Hands the notes since the last call to `sink`, oldest first.
    pub fn drain_notes(&mut self, sink: &mut (impl NoteSink + ?Sized)) {
        for n in self.notes.drain(..) {
            sink.note(n);
        }
    }
}
