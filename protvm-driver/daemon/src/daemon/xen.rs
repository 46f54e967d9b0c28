//! Instances in other Xen domains: `attach-xen` on the control socket,
//! and in Xen mode (`--xen-spawn`) the instance domains the balancer asks
//! dom0's toolstack agent for (`ins-xen-agent`, protocol in
//! [`ins_xen::agent`]).
//!
//! ```text
//!  balancer spawn ─▶ spawn thread: req/<channel> = "create" ─▶ agent: xl create
//!      (--xen-unikernel: "create unikernel", a PV unikernel domain)
//!      ◀─ ans/<channel> = "created <D>" ─▶ Created (the child learns D) ─▶ then
//!      exactly the attach-xen path below with {D, channel}
//!      ◀─ "error <why>" ─▶ Refused: logged, an instance event, counted in
//!      `list`/`status` (ins-ctl's up/spawn/scale stop waiting and say why);
//!      the child ends and is asked for again after --xen-retry-ms
//!  the channel ends (offer failed, instance gone, stopped) ─▶ Ended ─▶ the
//!      child is reaped (and replaced unless retiring) and a destroy thread
//!      asks the agent for `xl destroy D`
//! ```
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

use driver_core::Violation;
use ins_protocol::hello::{Hello, Role};
use ins_transport::any::Any;
use ins_transport::sys::xen::{XenConfig, XenbusStream, offer_xen, own_domid};
use ins_transport::{ChannelConfig, Endpoint, EventFd};
use ins_xen::DomId;
use ins_xen::agent::{ANS_DIR, Answer, Kind, REQ_DIR, Request};
use ins_xen::channel::ChannelId;
use ins_xen::xenstore::TxId;
use serde_json::json;
use tracing::{info, warn};

use super::Daemon;
use super::ctl::err;
use super::supervisor::Proc;

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
    /// The toolstack agent created the channel's domain.
    Created(String, u16),
    /// The toolstack agent answered the channel's `create` with an error
    /// (the whole message, for the operator).
    Refused(String, String),
    /// The hello exchange is done.
    Joined(XenPeer, Box<Endpoint<Any>>),
    /// The offer failed (no channel, or it could not be used).
    Failed(XenPeer, String),
    /// The thread is done: the channel, if any, is torn down.
    Ended(XenPeer),
}

/// One channel name in use.
struct Slot {
    /// Its domain (a spawned one's is known once created).
    domid: Option<u16>,
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
    /// Xen mode's waits.
    pub(super) spawn: SpawnTimes,
    /// `create` requests the agent refused, and the last refusal.
    refused: (u64, Option<String>),
}

/// How long Xen mode waits for each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SpawnTimes {
    /// For the agent's answer (it runs `xl create` / `xl destroy`).
    pub(super) agent: Duration,
    /// For the new domain to boot, map the channel and join.
    pub(super) rendezvous: Duration,
    /// For the instance to unmap on teardown.
    pub(super) teardown: Duration,
}

impl XenInstances {
    pub(super) fn new(
        wake: &EventFd,
        cfg: ChannelConfig,
        spawn: SpawnTimes,
    ) -> std::io::Result<XenInstances> {
        let (tx, rx) = mpsc::channel();
        Ok(XenInstances {
            tx,
            rx,
            wake: wake.as_fd().try_clone_to_owned()?,
            chans: HashMap::new(),
            linked: Arc::new(AtomicUsize::new(0)),
            max_teardown: spawn.teardown,
            cfg,
            spawn,
            refused: (0, None),
        })
    }

    /// The agent's refusals so far and the last one (`list`, `status`).
    pub(super) fn refusals(&self) -> serde_json::Value {
        json!({"count": self.refused.0, "last": self.refused.1})
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

/// Reports to the daemon's loop (and wakes it).
struct Reporter {
    tx: mpsc::Sender<XenEvent>,
    wake: OwnedFd,
}

impl Reporter {
    fn send(&self, ev: XenEvent) {
        if self.tx.send(ev).is_ok() {
            let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        }
    }
}

/// Writes `req` for `channel` under our `data/ins-agent/req/` and waits
/// (up to `timeout`) for the agent's answer, which it then removes. On a
/// timeout a `create` is withdrawn; a `destroy` stays for the agent.
pub(super) fn agent_call(
    xcfg: &XenConfig,
    channel: &str,
    req: Request,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut xs = XenbusStream::client(&xcfg.xenbus, xcfg.max_events)
        .map_err(|e| format!("open xenstore: {e}"))?;
    // Relative paths: under our own domain's home.
    let req_path = format!("{REQ_DIR}/{channel}");
    let ans_path = format!("{ANS_DIR}/{channel}");
    let _ = xs.rm(TxId::NONE, &ans_path);
    xs.write(TxId::NONE, &req_path, req.value().as_bytes())
        .map_err(|e| format!("write {req_path}: {e}"))?;
    let until = Instant::now() + timeout;
    loop {
        match xs.try_read(TxId::NONE, &ans_path) {
            Ok(Some(v)) => {
                let _ = xs.rm(TxId::NONE, &ans_path);
                return Answer::parse(&v).map_err(|e| format!("the agent's answer: {e}"));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("read {ans_path}: {e}")),
        }
        if Instant::now() >= until {
            if matches!(req, Request::Create(_)) {
                let _ = xs.rm(TxId::NONE, &req_path);
            }
            return Err(format!(
                "no answer from the toolstack agent within {} s (is ins-xen-agent running in dom0 for this domain?)",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Why no domain came of a `create`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotCreated {
    /// The agent answered with an error: nothing was made, and why.
    Refused(String),
    /// No usable answer (no agent, xenstore failed, a strange answer).
    Failed(String),
}

/// What the agent's answer to a `create` of `kind` for `channel` means.
fn created(kind: Kind, channel: &str, answer: Result<Answer, String>) -> Result<u16, NotCreated> {
    match answer {
        Ok(Answer::Created(d)) => Ok(d.0),
        Ok(Answer::Error(why)) => Err(NotCreated::Refused(format!(
            "the toolstack agent refused a {} instance domain for channel {channel}: {why}",
            kind.name()
        ))),
        Ok(other) => Err(NotCreated::Failed(format!(
            "the toolstack agent answered {:?} to a create",
            other.value()
        ))),
        Err(why) => Err(NotCreated::Failed(why)),
    }
}

/// The spawn thread: asks the agent for a domain, then offers it the
/// channel as `attach-xen` does.
fn spawn_thread(
    channel: String,
    kind: Kind,
    times: SpawnTimes,
    hello: Hello,
    cfg: ChannelConfig,
    out: Reporter,
    linked: Arc<AtomicUsize>,
) {
    let no_domain = XenPeer {
        domid: 0,
        channel: channel.clone(),
    };
    let t = Instant::now();
    let answer = agent_call(
        &XenConfig::default(),
        &channel,
        Request::Create(kind),
        times.agent,
    );
    let domid = match created(kind, &channel, answer) {
        Ok(d) => d,
        Err(NotCreated::Refused(why)) => {
            out.send(XenEvent::Refused(channel.clone(), why));
            out.send(XenEvent::Ended(no_domain));
            return;
        }
        Err(NotCreated::Failed(why)) => {
            out.send(XenEvent::Failed(no_domain.clone(), why));
            out.send(XenEvent::Ended(no_domain));
            return;
        }
    };
    info!(channel = %channel, kind = kind.name(), domid, took_ms = t.elapsed().as_millis() as u64, "instance domain created by the toolstack agent");
    out.send(XenEvent::Created(channel.clone(), domid));
    let a = Attach {
        peer: XenPeer { domid, channel },
        rendezvous: times.rendezvous,
        teardown: times.teardown,
    };
    offer_and_link(a, hello, cfg, &out, linked);
}

/// The attach thread: offer, hand the endpoint over, then wait for the
/// link's teardown.
fn attach_thread(
    a: Attach,
    hello: Hello,
    cfg: ChannelConfig,
    out: Reporter,
    linked: Arc<AtomicUsize>,
) {
    offer_and_link(a, hello, cfg, &out, linked);
}

fn offer_and_link(
    a: Attach,
    hello: Hello,
    cfg: ChannelConfig,
    out: &Reporter,
    linked: Arc<AtomicUsize>,
) {
    let send = |ev: XenEvent| out.send(ev);
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
    /// The hello a driver sends, and a reporter for a new thread.
    fn xen_thread_kit(&self) -> std::io::Result<(Hello, Reporter)> {
        let mut hello = Hello::new(Role::Driver);
        hello.window = self.core.config().window;
        let out = Reporter {
            tx: self.xen.tx.clone(),
            wake: self.xen.wake.try_clone()?,
        };
        Ok((hello, out))
    }

    /// Xen mode: asks the agent for the domain of the child named
    /// `channel` and offers it the channel, on a thread of its own. A
    /// failure ends the child (it is replaced after `--xen-retry-ms`).
    pub(super) fn xen_spawn(&mut self, channel: String) {
        let (hello, out) = match self.xen_thread_kit() {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %e, "wake-up descriptor");
                self.xen_child_ended(&channel);
                return;
            }
        };
        let cfg = self.xen.cfg.clone();
        let linked = self.xen.linked.clone();
        let times = self.xen.spawn;
        let kind = self.sup.xen.as_ref().map_or(Kind::Linux, |x| x.kind);
        let name = channel.clone();
        info!(channel = %name, kind = kind.name(), "asking the toolstack agent for an instance domain");
        let spawned = std::thread::Builder::new()
            .name(format!("xen-spawn-{name}"))
            .spawn(move || spawn_thread(name, kind, times, hello, cfg, out, linked));
        if let Err(e) = spawned {
            warn!(error = %e, "spawn thread");
            self.xen_child_ended(&channel);
            return;
        }
        self.xen.chans.insert(
            channel,
            Slot {
                domid: None,
                conn: None,
            },
        );
    }

    /// Marks the Xen child of `channel` ended (reaped next tick) and has
    /// its domain, if any, destroyed.
    fn xen_child_ended(&mut self, channel: &str) {
        let Some(k) = self.sup.by_channel(channel) else {
            return;
        };
        let Proc::Xen(x) = &mut k.proc else { return };
        if x.ended {
            return;
        }
        x.ended = true;
        if let Some(d) = x.domid {
            let chan = channel.to_string();
            let timeout = self.xen.spawn.agent;
            let _ = std::thread::Builder::new()
                .name(format!("xen-destroy-{d}"))
                .spawn(move || destroy_domain(&chan, d, timeout));
        }
    }

    /// At shutdown: has every instance domain still in use destroyed,
    /// waiting at most `timeout` for the agent's answers.
    pub(super) fn xen_destroy_all(&self, doomed: Vec<(String, u16)>, timeout: Duration) {
        let t = timeout.min(self.xen.spawn.agent);
        let threads: Vec<_> = doomed
            .into_iter()
            .map(|(c, d)| std::thread::spawn(move || destroy_domain(&c, d, t)))
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }

    /// `attach-xen`: offers a channel to a domain on a thread of its own.
    /// The answer comes when the instance joined or the offer failed.
    pub(super) fn xen_attach(&mut self, conn: u64, a: Attach) -> Option<serde_json::Value> {
        if let Some(s) = self.xen.chans.get(&a.peer.channel) {
            return Some(err(
                "bad-request",
                format!(
                    "xen channel {:?} is in use (dom{}); pick another name or wait for its teardown",
                    a.peer.channel,
                    s.domid.map_or("?".into(), |d| d.to_string())
                ),
            ));
        }
        let (hello, out) = match self.xen_thread_kit() {
            Ok(k) => k,
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
            .spawn(move || attach_thread(a, hello, cfg, out, linked));
        if let Err(e) = spawned {
            return Some(err("failed", format!("attach thread: {e}")));
        }
        self.xen.chans.insert(
            name,
            Slot {
                domid: Some(domid),
                conn: Some(conn),
            },
        );
        None
    }

    /// Reports from the attach threads (after a wake-up).
    pub(super) fn xen_events(&mut self) {
        while let Ok(ev) = self.xen.rx.try_recv() {
            match ev {
                XenEvent::Created(channel, domid) => {
                    if let Some(s) = self.xen.chans.get_mut(&channel) {
                        s.domid = Some(domid);
                    }
                    if let Some(k) = self.sup.by_channel(&channel)
                        && let Proc::Xen(x) = &mut k.proc
                    {
                        x.domid = Some(domid);
                    }
                    self.ctl.instance_event(
                        "domain-created",
                        None,
                        json!({"domid": domid, "channel": channel}),
                    );
                }
                XenEvent::Refused(channel, why) => {
                    warn!(channel = %channel, error = %why, "instance domain refused");
                    self.ctl.instance_event(
                        "spawn-refused",
                        None,
                        json!({"channel": channel, "error": why}),
                    );
                    self.xen.refused.0 += 1;
                    self.xen.refused.1 = Some(why);
                }
                XenEvent::Joined(peer, ep) => {
                    let hello_id = ep.peer.instance_id;
                    let joined = self.join(*ep, hello_id, Some(peer.clone()));
                    if let Some(id) = joined
                        && let Some(k) = self.sup.by_channel(&peer.channel)
                    {
                        k.inst = Some(id);
                        if k.retiring {
                            // Retired before it joined: stop it now.
                            self.fail_instance(id, Violation::Stopped);
                        }
                    }
                    let answer = match joined {
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
                    self.xen_child_ended(&peer.channel);
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

/// Asks the agent to destroy `domid` (the domain of `channel`) and logs
/// its answer.
fn destroy_domain(channel: &str, domid: u16, timeout: Duration) {
    match agent_call(
        &XenConfig::default(),
        channel,
        Request::Destroy(DomId(domid)),
        timeout,
    ) {
        Ok(Answer::Destroyed) => info!(channel, domid, "instance domain destroyed"),
        Ok(a) => warn!(channel, domid, answer = %a.value(), "destroying an instance domain"),
        Err(e) => warn!(channel, domid, error = %e, "destroying an instance domain"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_refusal_is_reported_whole_and_apart_from_failures() {
        let why = "this agent makes no unikernel instance domains (it was started without --unikernel-template and --unikernel-kernel)";
        let a = Answer::parse(format!("error {why}").as_bytes()).unwrap();
        assert_eq!(
            created(Kind::Unikernel, "s1", Ok(a)),
            Err(NotCreated::Refused(format!(
                "the toolstack agent refused a unikernel instance domain for channel s1: {why}"
            )))
        );
        assert_eq!(
            created(Kind::Linux, "s1", Ok(Answer::Created(DomId(7)))),
            Ok(7)
        );
        assert_eq!(
            created(Kind::Linux, "s1", Ok(Answer::Destroyed)),
            Err(NotCreated::Failed(
                "the toolstack agent answered \"destroyed\" to a create".into()
            ))
        );
        assert_eq!(
            created(Kind::Linux, "s1", Err("no answer".into())),
            Err(NotCreated::Failed("no answer".into()))
        );
        // The wire form the agent reads.
        assert_eq!(Request::Create(Kind::Unikernel).value(), "create unikernel");
    }
}
