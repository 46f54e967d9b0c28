//! The balancer: how many instances run, which retire, and when.
//!
//! * the target count comes from `--instances`, `spawn`, `scale` and
//!   autoscale; [`Daemon::balance`] spawns or retires children to meet it
//!   (local `ins` processes, or in Xen mode instance domains: the same
//!   counting, respawning, draining and rotation);
//! * retiring drains first (no new sockets, listener replicas closed) and
//!   stops the instance once a heartbeat after the drain shows it idle, or
//!   after `drain_timeout_ms`;
//! * every tick: children are reaped (and replaced), instances the core
//!   declared dead while their process runs are killed, `overloaded` /
//!   `recovered` events follow the latest heartbeats, and the policy's
//!   autoscale, idle retirement and rotation run.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use driver_core::{InstId, InstState, Violation};
use serde_json::json;
use tracing::{info, warn};

use super::Daemon;
use super::policy::Policy;

/// Balancer state.
pub(super) struct Balancer {
    pub(super) policy: Policy,
    pub(super) target: usize,
    /// Draining instances: drain deadline, heartbeat seq when it began.
    retiring: HashMap<InstId, (Instant, u64)>,
    idle_since: HashMap<InstId, Instant>,
    last_auto: Instant,
    last_rotate: Instant,
    /// Instances reported overloaded (above the autoscale threshold).
    overloaded: HashSet<InstId>,
}

impl Balancer {
    pub(super) fn new(policy: Policy, target: usize) -> Balancer {
        Balancer {
            policy,
            target,
            retiring: HashMap::new(),
            idle_since: HashMap::new(),
            last_auto: Instant::now(),
            last_rotate: Instant::now(),
            overloaded: HashSet::new(),
        }
    }
}

impl Daemon {
    /// Starts draining `inst`; it is stopped when idle or after the drain
    /// timeout.
    pub(super) fn retire(&mut self, inst: InstId) {
        if self.bal.retiring.contains_key(&inst) {
            return;
        }
        let deadline =
            Instant::now() + std::time::Duration::from_millis(self.bal.policy.drain_timeout_ms);
        let seq = self
            .core
            .instances()
            .find(|(id, _)| *id == inst)
            .and_then(|(_, i)| i.stats)
            .map_or(0, |s| s.seq);
        self.bal.retiring.insert(inst, (deadline, seq));
        if let Some(k) = self.sup.by_inst(inst) {
            k.retiring = true;
        }
        self.core.set_draining(inst);
        let closed = self.core.drop_replicas(inst, &mut self.actions);
        self.apply(None, None);
        info!(inst, listeners_closed = closed, "retiring: draining");
        self.ctl
            .instance_event("draining", Some(inst), json!({"listeners_closed": closed}));
    }

    /// Brings the number of children to the target: spawns or retires.
    /// Returns the instances it started retiring.
    pub(super) fn balance(&mut self) -> Vec<InstId> {
        let mut retired = Vec::new();
        if !self.sup.can_spawn() {
            return retired;
        }
        // Surplus: retire the newest joined children first.
        while self.sup.active() > self.bal.target {
            let pick = self
                .sup
                .kids
                .iter()
                .filter(|k| !k.retiring)
                .max_by_key(|k| (k.inst.is_none(), k.tag))
                .map(|k| (k.tag, k.inst));
            match pick {
                Some((_, Some(inst))) => {
                    self.retire(inst);
                    retired.push(inst);
                }
                Some((tag, None)) => {
                    // Not joined yet: just stop it.
                    // (A Xen one is stopped once it joins.)
                    if let Some(k) = self.sup.by_tag(tag) {
                        k.retiring = true;
                        k.kill();
                    }
                }
                None => break,
            }
        }
        if self.sup.hold_until.is_some_and(|t| Instant::now() < t) {
            return retired;
        }
        while self.sup.active() < self.bal.target {
            match self.sup.spawn() {
                Ok(tag) => {
                    let kid = self.sup.by_tag(tag);
                    let pid = kid.as_ref().and_then(|k| k.pid());
                    let channel = kid.and_then(|k| k.xen()).map(|x| x.channel.clone());
                    self.ctl.instance_event(
                        "spawned",
                        None,
                        json!({"tag": tag, "pid": pid, "channel": channel}),
                    );
                    if let Some(c) = channel {
                        self.xen_spawn(c);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "spawning an instance");
                    self.sup.hold_until = Some(Instant::now() + std::time::Duration::from_secs(1));
                    break;
                }
            }
        }
        retired
    }

    /// Runs every tick: reaping, respawning, stopping drained instances,
    /// autoscale and rotation.
    pub(super) fn balancer_tick(&mut self) {
        for (tag, inst, retiring) in self.sup.reap() {
            self.ctl
                .instance_event("exited", inst, json!({"tag": tag, "retiring": retiring}));
            if let Some(inst) = inst {
                self.bal.retiring.remove(&inst);
                self.bal.idle_since.remove(&inst);
                if self.insts.contains_key(&inst) {
                    self.fail_instance(inst, Violation::ChannelFailed);
                }
            }
        }
        // Instances the core declared dead (heartbeat) whose process runs.
        let dead: Vec<InstId> = self
            .sup
            .kids
            .iter()
            .filter(|k| k.xen().is_none()) // a Xen one ends with its channel
            .filter_map(|k| k.inst)
            .filter(|i| !self.insts.contains_key(i))
            .collect();
        for inst in dead {
            let stopped = self
                .sup
                .by_inst(inst)
                .is_some_and(|k| k.stopped_at.is_some() || k.retiring);
            if !stopped {
                warn!(
                    inst,
                    "instance declared dead while its process runs; killing it"
                );
                self.sup.kill_inst(inst);
            }
        }
        // Drained or overdue: close the channel.
        let now = Instant::now();
        let ready: Vec<InstId> = self
            .bal
            .retiring
            .iter()
            .filter(|(inst, (deadline, seq))| {
                // Idle by a heartbeat sent after the drain began.
                let idle = self
                    .core
                    .instances()
                    .find(|(id, _)| id == *inst)
                    .is_some_and(|(_, i)| {
                        i.stats.is_some_and(|s| s.seq > *seq && s.connections == 0)
                    });
                idle || now >= *deadline
            })
            .map(|(&i, _)| i)
            .collect();
        for inst in ready {
            self.bal.retiring.remove(&inst);
            info!(inst, "stopping (drained or drain timeout)");
            if let Some(k) = self.sup.by_inst(inst) {
                k.retiring = true;
                k.stopped_at = Some(now);
            }
            self.fail_instance(inst, Violation::Stopped);
        }
        self.overload_events();
        self.autoscale();
        self.balance();
    }

    /// Streams `overloaded` when an instance's socket use crosses the
    /// autoscale threshold (`scale_up_at`) and `recovered` when it falls
    /// back under it, from the latest heartbeats.
    fn overload_events(&mut self) {
        let at = self.bal.policy.scale_up_at;
        let mut changes = Vec::new();
        for (id, i) in self.core.instances() {
            let Some(s) = i.stats else { continue };
            let over = i.state != InstState::Dead
                && s.sockets_max > 0
                && f64::from(s.sockets_used) > at * f64::from(s.sockets_max);
            if over != self.bal.overloaded.contains(&id) {
                changes.push((id, over, s.sockets_used, s.sockets_max));
            }
        }
        let known: Vec<InstId> = self.core.instances().map(|(id, _)| id).collect();
        let gone: Vec<InstId> = self
            .bal
            .overloaded
            .iter()
            .copied()
            .filter(|id| !known.contains(id))
            .collect();
        for id in gone {
            self.bal.overloaded.remove(&id);
        }
        for (id, over, used, max) in changes {
            if over {
                self.bal.overloaded.insert(id);
                warn!(
                    inst = id,
                    sockets_used = used,
                    sockets_max = max,
                    "instance overloaded"
                );
            } else {
                self.bal.overloaded.remove(&id);
            }
            self.ctl.instance_event(
                if over { "overloaded" } else { "recovered" },
                Some(id),
                json!({"sockets_used": used, "sockets_max": max, "scale_up_at": at}),
            );
        }
    }

    fn autoscale(&mut self) {
        let p = self.bal.policy.clone();
        let now = Instant::now();
        if p.rotate_s > 0 && now.duration_since(self.bal.last_rotate).as_secs() >= p.rotate_s {
            self.bal.last_rotate = now;
            let oldest = self
                .sup
                .kids
                .iter()
                .filter(|k| !k.retiring && k.inst.is_some())
                .min_by_key(|k| k.tag)
                .and_then(|k| k.inst);
            if let Some(inst) = oldest {
                info!(inst, "rotation: replacing the oldest instance");
                self.retire(inst);
            }
        }
        if !p.autoscale || now.duration_since(self.bal.last_auto).as_millis() < 1000 {
            return;
        }
        self.bal.last_auto = now;
        let live: Vec<(InstId, driver_core::Instance)> = self
            .core
            .instances()
            .filter(|(id, i)| i.state == InstState::Live && !self.bal.retiring.contains_key(id))
            .map(|(id, i)| (id, i.clone()))
            .collect();
        if live.is_empty() {
            return;
        }
        let loaded = live.iter().all(|(_, i)| {
            i.stats.is_some_and(|s| {
                s.sockets_max > 0
                    && f64::from(s.sockets_used) > p.scale_up_at * f64::from(s.sockets_max)
            })
        });
        if loaded && self.bal.target < p.max_instances && self.sup.active() >= self.bal.target {
            self.bal.target += 1;
            info!(
                target = self.bal.target,
                "autoscale: every instance above {}; spawning", p.scale_up_at
            );
            return;
        }
        for (id, i) in &live {
            let idle = i.stats.is_some_and(|s| s.connections == 0);
            if idle {
                self.bal.idle_since.entry(*id).or_insert(now);
            } else {
                self.bal.idle_since.remove(id);
            }
        }
        if p.idle_retire_s > 0 && self.bal.target > p.min_instances.max(1) {
            let victim = self
                .bal
                .idle_since
                .iter()
                .filter(|(_, t)| now.duration_since(**t).as_secs() >= p.idle_retire_s)
                .map(|(&id, _)| id)
                .max();
            if let Some(id) = victim {
                self.bal.idle_since.remove(&id);
                self.bal.target -= 1;
                info!(
                    inst = id,
                    target = self.bal.target,
                    "autoscale: retiring an idle instance"
                );
                self.retire(id);
            }
        }
    }
}
