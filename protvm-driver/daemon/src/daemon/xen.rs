//! Instances in other Xen domains (`attach-xen` on the control socket).
//!
//! ```text
//!  ctl attach-xen {domid, channel} ─▶ attach thread: offer_xen (grant, xenstore
//!      rendezvous, hello) ─(Endpoint<Any>)─▶ wake eventfd ─▶ join (as a local one)
//!  the thread then waits on the channel's link: peer gone (domain destroyed,
//!      unmap notification, Closing) → the link hangs up the endpoint's control
//!      socket → K_INST_CTL → the instance fails exactly like a local one;
//!  endpoint dropped (failed, stopped) → the link tears down (revokes the
//!      grants once the instance unmapped, removes our keys) → Ended
//! ```
//!
//! Invariants:
//! * a channel name is busy from the attach until its link finished the
//!   teardown (the link removes the driver's directory of that name last),
//!   so two channels never share keys, and a re-attach of a name gets a
//!   fresh channel;
//! * the controller that asked gets one answer: the instance id once it
//!   joined, or why the offer failed;
//! * the driver grants, the instance maps (see `ins_transport::sys::xen`):
//!   nothing here maps another domain's memory.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ins_protocol::hello::{Hello, Role};
use ins_transport::any::Any;
use ins_transport::sys::xen::{XenConfig, offer_xen, own_domid};
use ins_transport::{ChannelConfig, Endpoint, EventFd};
use ins_xen::DomId;
use ins_xen::channel::ChannelId;
use serde_json::json;
use tracing::{info, warn};

use super::Daemon;
use super::ctl::err;

/// Which domain and channel an instance is reached through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct XenPeer {
    /// The instance's domain.
    pub(super) domid: u16,
    /// The channel's name (`/local/domain/<driver>/data/ins/<channel>`).
    pub(super) channel: String,
}

/// What an attach thread reports.
enum XenEvent {
    /// The hello exchange is done.
    Joined(XenPeer, Box<Endpoint<Any>>),
    /// The offer failed (no channel, or it could not be used).
    Failed(XenPeer, String),
    /// The thread is done: the channel, if any, is torn down.
    Ended(XenPeer),
}

/// One channel name in use.
struct Slot {
    domid: u16,
    /// The controller waiting for the answer.
    conn: Option<u64>,
}

/// A request to offer a channel (parsed from `attach-xen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Attach {
    pub(super) peer: XenPeer,
    /// How long to wait for the instance to map and bind.
    pub(super) rendezvous: Duration,
    /// How long the teardown waits for the instance to unmap.
    pub(super) teardown: Duration,
}

/// The attach threads and the names they hold.
pub(super) struct XenInstances {
    tx: mpsc::Sender<XenEvent>,
    rx: mpsc::Receiver<XenEvent>,
    /// The daemon's wake-up eventfd (a clone).
    wake: OwnedFd,
    chans: HashMap<String, Slot>,
    /// Threads that hold an open channel (joined, not yet torn down).
    linked: Arc<AtomicUsize>,
    /// Longest teardown wait asked for (bounds the wait at shutdown).
    max_teardown: Duration,
    /// Ring geometry and handshake timeout (as for local instances).
    cfg: ChannelConfig,
}

impl XenInstances {
    pub(super) fn new(wake: &EventFd, cfg: ChannelConfig) -> std::io::Result<XenInstances> {
        let (tx, rx) = mpsc::channel();
        Ok(XenInstances {
            tx,
            rx,
            wake: wake.as_fd().try_clone_to_owned()?,
            chans: HashMap::new(),
            linked: Arc::new(AtomicUsize::new(0)),
            max_teardown: Duration::ZERO,
            cfg,
        })
    }

    /// At shutdown, after the endpoints were dropped: waits (bounded by
    /// the longest teardown asked for, plus a second) for the links to
    /// revoke their grants and remove their keys.
    pub(super) fn wait_torn_down(&self) {
        let deadline = Instant::now() + self.max_teardown + Duration::from_secs(1);
        while self.linked.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = self.linked.load(Ordering::Acquire);
        if left > 0 {
            warn!(channels = left, "xen channels still tearing down at exit");
        }
    }
}

/// Counts a thread as holding a channel until dropped.
struct Linked(Arc<AtomicUsize>);

impl Linked {
    fn new(n: &Arc<AtomicUsize>) -> Linked {
        n.fetch_add(1, Ordering::AcqRel);
        Linked(n.clone())
    }
}

impl Drop for Linked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The attach thread: offer, hand the endpoint over, then wait for the
/// link's teardown.
fn attach_thread(
    a: Attach,
    hello: Hello,
    cfg: ChannelConfig,
    tx: mpsc::Sender<XenEvent>,
    wake: OwnedFd,
    linked: Arc<AtomicUsize>,
) {
    let send = |ev: XenEvent| {
        if tx.send(ev).is_ok() {
            let _ = rustix::io::write(&wake, &1u64.to_ne_bytes());
        }
    };
    let xcfg = XenConfig {
        rendezvous_timeout: a.rendezvous,
        teardown_timeout: a.teardown,
        ..XenConfig::default()
    };
    let peer = a.peer.clone();
    let offered = own_domid(&xcfg)
        .map_err(|e| e.to_string())
        .and_then(|me| {
            ChannelId::new(me, DomId(peer.domid), &peer.channel).map_err(|e| e.to_string())
        })
        .and_then(|id| offer_xen(&id, hello, &cfg, &xcfg).map_err(|e| e.to_string()));
    let chan = match offered {
        Ok(c) => c,
        Err(why) => {
            send(XenEvent::Failed(peer.clone(), why));
            send(XenEvent::Ended(peer));
            return;
        }
    };
    let _held = Linked::new(&linked);
    let (ep, link) = chan.into_parts();
    match Endpoint::<Any>::try_from(ep) {
        Ok(ep) => send(XenEvent::Joined(peer.clone(), Box::new(ep))),
        // The endpoint is dropped: the link tears down.
        Err(e) => send(XenEvent::Failed(peer.clone(), e.to_string())),
    }
    match link.join() {
        Ok(t) => info!(
            domid = peer.domid,
            channel = %peer.channel,
            peer_left = t.peer_left,
            unmapped_before_revoke = t.unmapped_before_revoke,
            waited_ms = t.waited.as_millis() as u64,
            "xen channel torn down"
        ),
        Err(e) => {
            warn!(domid = peer.domid, channel = %peer.channel, error = %e, "xen channel teardown")
        }
    }
    send(XenEvent::Ended(peer));
}

impl Daemon {
    /// `attach-xen`: offers a channel to a domain on a thread of its own.
    /// The answer comes when the instance joined or the offer failed.
    pub(super) fn xen_attach(&mut self, conn: u64, a: Attach) -> Option<serde_json::Value> {
        if let Some(s) = self.xen.chans.get(&a.peer.channel) {
            return Some(err(
                "bad-request",
                format!(
                    "xen channel {:?} is in use (dom{}); pick another name or wait for its teardown",
                    a.peer.channel, s.domid
                ),
            ));
        }
        let mut hello = Hello::new(Role::Driver);
        hello.window = self.core.config().window;
        let tx = self.xen.tx.clone();
        let wake = match self.xen.wake.try_clone() {
            Ok(w) => w,
            Err(e) => return Some(err("failed", format!("wake-up descriptor: {e}"))),
        };
        let linked = self.xen.linked.clone();
        let cfg = self.xen.cfg.clone();
        let name = a.peer.channel.clone();
        let domid = a.peer.domid;
        self.xen.max_teardown = self.xen.max_teardown.max(a.teardown);
        info!(domid, channel = %name, rendezvous_ms = a.rendezvous.as_millis() as u64, "offering a xen channel");
        let spawned = std::thread::Builder::new()
            .name(format!("xen-attach-{name}"))
            .spawn(move || attach_thread(a, hello, cfg, tx, wake, linked));
        if let Err(e) = spawned {
            return Some(err("failed", format!("attach thread: {e}")));
        }
        self.xen.chans.insert(
            name,
            Slot {
                domid,
                conn: Some(conn),
            },
        );
        None
    }

    /// Reports from the attach threads (after a wake-up).
    pub(super) fn xen_events(&mut self) {
        while let Ok(ev) = self.xen.rx.try_recv() {
            match ev {
                XenEvent::Joined(peer, ep) => {
                    let hello_id = ep.peer.instance_id;
                    let answer = match self.join(*ep, hello_id, Some(peer.clone())) {
                        Some(id) => json!({"ok": true, "id": id, "domid": peer.domid,
                                           "channel": peer.channel, "tag": hello_id}),
                        None => err("failed", "the instance joined but could not be registered"),
                    };
                    self.xen_answer(&peer, &answer);
                }
                XenEvent::Failed(peer, why) => {
                    warn!(domid = peer.domid, channel = %peer.channel, error = %why, "xen channel offer failed");
                    self.ctl.instance_event(
                        "attach-failed",
                        None,
                        json!({"domid": peer.domid, "channel": peer.channel, "error": why}),
                    );
                    let msg = format!("xen channel {:?} to dom{}: {why}", peer.channel, peer.domid);
                    self.xen_answer(&peer, &err("failed", msg));
                }
                XenEvent::Ended(peer) => {
                    self.xen.chans.remove(&peer.channel);
                }
            }
        }
    }

    /// Answers the controller that asked for `peer`'s channel, once.
    fn xen_answer(&mut self, peer: &XenPeer, answer: &serde_json::Value) {
        let conn = self
            .xen
            .chans
            .get_mut(&peer.channel)
            .and_then(|s| s.conn.take());
        if let Some(c) = conn {
            self.ctl.send(c, answer);
        }
    }

    /// Xen channels being offered or open, for `status`.
    pub(super) fn xen_status(&self) -> serde_json::Value {
        let mut v: Vec<_> = self
            .xen
            .chans
            .iter()
            .map(|(name, s)| {
                let inst = self
                    .insts
                    .iter()
                    .find(|(_, x)| x.xen.as_ref().is_some_and(|p| &p.channel == name))
                    .map(|(&id, _)| id);
                json!({"channel": name, "domid": s.domid, "instance": inst})
            })
            .collect();
        v.sort_by(|a, b| a["channel"].as_str().cmp(&b["channel"].as_str()));
        serde_json::Value::Array(v)
    }
}
