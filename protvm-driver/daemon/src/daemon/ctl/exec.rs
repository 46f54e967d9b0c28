//! Execution: a parsed [`Command`] carried out against the daemon, and
//! the answers that need its state (`status`, `list`). Checks that need
//! the daemon (is the instance live, was it started with `--ins-bin`, the
//! policy's maximum) are made here; a command that fails changes nothing.
//! Mitigations answer once every instance did ([`super::mitigation`]).

use driver_core::{InstId, InstState};
use ins_protocol::msg::MitigationOf;
use serde_json::{Value, json};
use tracing::info;

use super::command::{self, Command};
use super::err;
use super::mitigation::{mitigation_json, prefix_str};
use super::monitor::{SCHEMA_V, SUB_CONN, SUB_FLOW, SUB_INSTANCE, SUB_MITIGATION, flow_json};
use crate::daemon::Daemon;

impl Daemon {
    /// One request line from controller `conn`: the answer, or `None`
    /// when it comes later (mitigations).
    pub(super) fn ctl_request(&mut self, conn: u64, req: &Value) -> Option<Value> {
        match command::parse(req) {
            Ok(cmd) => self.execute(conn, cmd),
            Err(answer) => Some(answer),
        }
    }

    fn execute(&mut self, conn: u64, cmd: Command) -> Option<Value> {
        match cmd {
            Command::Status => Some(self.ctl_status()),
            Command::List => Some(self.ctl_list()),
            Command::Flows { limit, follow } => {
                let skip = self.ctl.flows.len().saturating_sub(limit);
                let flows: Vec<Value> = self.ctl.flows.iter().skip(skip).map(flow_json).collect();
                if follow && let Some(c) = self.ctl.conns.get_mut(&conn) {
                    c.sub |= SUB_FLOW;
                }
                Some(json!({"ok": true, "flows": flows}))
            }
            Command::Subscribe(mask) => {
                if let Some(c) = self.ctl.conns.get_mut(&conn) {
                    c.sub |= mask;
                }
                let names: Vec<&str> = [
                    (SUB_FLOW, "flow"),
                    (SUB_INSTANCE, "instance"),
                    (SUB_MITIGATION, "mitigation"),
                    (SUB_CONN, "conn"),
                ]
                .iter()
                .filter(|(b, _)| mask & b != 0)
                .map(|(_, n)| *n)
                .collect();
                Some(json!({"ok": true, "v": SCHEMA_V, "subscribed": names}))
            }
            Command::Block(p) => {
                if !self.ctl.standing.contains(&MitigationOf::Block(p)) {
                    self.ctl.standing.push(MitigationOf::Block(p));
                }
                info!(cmd = "block", prefix = %prefix_str(&p), "mitigation");
                let ids = self.live_ids();
                self.mitigate_to(conn, MitigationOf::Block(p), &ids)
            }
            Command::Unblock(p) => {
                self.ctl.standing.retain(|x| *x != MitigationOf::Block(p));
                info!(cmd = "unblock", prefix = %prefix_str(&p), "mitigation");
                let ids = self.live_ids();
                self.mitigate_to(conn, MitigationOf::Unblock(p), &ids)
            }
            Command::Limit {
                prefix: p,
                conn_rate,
                byte_rate,
            } => {
                self.ctl.standing.retain(
                    |x| !matches!(x, MitigationOf::RateLimit { prefix, .. } if *prefix == p),
                );
                let m = if conn_rate == 0 && byte_rate == 0 {
                    MitigationOf::ClearRateLimit(p)
                } else {
                    let m = MitigationOf::RateLimit {
                        prefix: p,
                        conn_per_sec: conn_rate,
                        conn_burst: conn_rate,
                        bytes_per_sec: byte_rate,
                        bytes_burst: byte_rate,
                    };
                    self.ctl.standing.push(m);
                    m
                };
                info!(prefix = %prefix_str(&p), conn_rate, byte_rate, "rate limit");
                let ids = self.live_ids();
                self.mitigate_to(conn, m, &ids)
            }
            Command::Close { inst, flow_id } => {
                let targets = match inst {
                    Some(i) if self.live_ids().contains(&i) => vec![i],
                    Some(i) => {
                        return Some(err("unknown-instance", format!("no live instance {i}")));
                    }
                    None => self.live_ids(),
                };
                self.mitigate_to(conn, MitigationOf::CloseFlow { flow_id }, &targets)
            }
            Command::Report { flow } => {
                let (targets, flow_id) = match flow {
                    None => (self.live_ids(), 0),
                    Some((i, f)) if self.live_ids().contains(&i) => (vec![i], f),
                    Some((i, _)) => {
                        return Some(err("unknown-instance", format!("no live instance {i}")));
                    }
                };
                self.mitigate_to(conn, MitigationOf::Report { flow_id }, &targets)
            }
            Command::Drain(id) => {
                let id = match self.known_live(id) {
                    Ok(i) => i,
                    Err(e) => return Some(e),
                };
                self.core.set_draining(id);
                let closed = self.core.drop_replicas(id, &mut self.actions);
                self.apply(None, None);
                info!(inst = id, listeners_closed = closed, "draining");
                Some(json!({"ok": true, "draining": id, "listeners_closed": closed}))
            }
            Command::Stop(id) => {
                let id = match self.known_live(id) {
                    Ok(i) => i,
                    Err(e) => return Some(e),
                };
                self.bal.target = self.bal.target.saturating_sub(1);
                self.retire(id);
                Some(json!({"ok": true, "stopping": id, "target": self.bal.target}))
            }
            Command::Spawn(n) => {
                if !self.sup.can_spawn() {
                    return Some(err(
                        "bad-request",
                        "the driver was started without --ins-bin or --xen-spawn",
                    ));
                }
                let max = self.bal.policy.max_instances;
                if self.bal.target.checked_add(n).is_none_or(|t| t > max) {
                    return Some(err(
                        "bad-request",
                        format!("{n} more instances would exceed max_instances = {max}"),
                    ));
                }
                self.bal.target += n;
                self.balance();
                Some(json!({"ok": true, "target": self.bal.target}))
            }
            Command::Scale(n) => {
                let max = self.bal.policy.max_instances;
                if n > max || !self.sup.can_spawn() {
                    return Some(err(
                        "bad-request",
                        if n > max {
                            format!("{n} exceeds max_instances = {max}")
                        } else {
                            "the driver was started without --ins-bin or --xen-spawn".into()
                        },
                    ));
                }
                self.bal.target = n;
                let retiring = self.balance();
                Some(json!({"ok": true, "target": n, "retiring": retiring}))
            }
            Command::AttachXen(a) => self.xen_attach(conn, a),
            Command::Shutdown => {
                self.ctl.shutdown = true;
                Some(json!({"ok": true}))
            }
        }
    }

    /// Instances not dead.
    pub(in crate::daemon) fn live_ids(&self) -> Vec<InstId> {
        self.core
            .instances()
            .filter(|(_, i)| i.state != InstState::Dead)
            .map(|(id, _)| id)
            .collect()
    }

    /// `id` if it names a live instance, else the `unknown-instance` answer.
    fn known_live(&self, id: u64) -> Result<InstId, Value> {
        let id = InstId::try_from(id)
            .map_err(|_| err("unknown-instance", format!("no live instance {id}")))?;
        if self.live_ids().contains(&id) {
            Ok(id)
        } else {
            Err(err("unknown-instance", format!("no live instance {id}")))
        }
    }

    /// `status`: the driver's summary.
    pub(in crate::daemon) fn ctl_status(&self) -> Value {
        let mut live = 0;
        let mut draining = 0;
        for (_, i) in self.core.instances() {
            match i.state {
                InstState::Live => live += 1,
                InstState::Draining => draining += 1,
                InstState::Dead => {}
            }
        }
        let p = &self.bal.policy;
        json!({
            "ok": true,
            "pid": std::process::id(),
            "uptime_s": self.start.elapsed().as_secs(),
            "run_dir": self.run_dir.display().to_string(),
            "instances": {"live": live, "draining": draining, "target": self.bal.target,
                          "children": self.sup.kids.len(),
                          "xen_spawn": self.sup.xen.is_some(),
                          "xen_kind": self.sup.xen.as_ref().map(|x| x.kind.name()),
                          "xen_refused": self.xen.refusals()},
            "sockets": self.core.socket_count(),
            "shims": self.shims.len(),
            "controllers": self.ctl.conns.len(),
            "monitor": {"v": SCHEMA_V,
                        "subscribers": self.ctl.conns.values().filter(|c| c.sub != 0).count(),
                        "dropped_subscribers": self.ctl.dropped,
                        "buffer_bytes": self.ctl.max_out,
                        "max_line": self.ctl.max_line,
                        "socket": self.ctl.monitor.as_ref().map(|(_, m, g)| json!({"mode": format!("{m:o}"), "group": g}))},
            "xen_channels": self.xen_status(),
            "flows_kept": self.ctl.flows.len(),
            "flow_records": self.ctl.flow_records,
            "app_datagrams_dropped": self.app_dgrams_dropped,
            "mitigations": self.ctl.standing.iter().map(mitigation_json).collect::<Vec<_>>(),
            "policy": {"min_instances": p.min_instances, "max_instances": p.max_instances,
                       "autoscale": p.autoscale, "scale_up_at": p.scale_up_at,
                       "idle_retire_s": p.idle_retire_s, "rotate_s": p.rotate_s,
                       "drain_timeout_ms": p.drain_timeout_ms},
        })
    }

    /// `list`: the live and draining instances, with figures current at
    /// the moment of the request (not as of the last heartbeat, which is
    /// up to `ins --heartbeat-ms` old):
    ///
    /// * `sockets_used`: the sockets the driver has placed on the instance
    ///   (connections and listener replicas), from its own table;
    /// * `connections`: the connected streams the driver holds on it;
    /// * `bytes_in` / `bytes_out`: the larger of two lower bounds of the
    ///   payload bytes it carried, the last heartbeat's totals and the sum
    ///   of the final flow records it sent since (which arrive as each
    ///   flow closes, so a burst is counted at once);
    /// * `reported`: the instance's own figures from its last heartbeat;
    /// * `ring`: control frames waiting for space in its ring and sockets
    ///   whose relay waits for ring space.
    pub(in crate::daemon) fn ctl_list(&mut self) -> Value {
        let mut conns: std::collections::HashMap<InstId, u64> = std::collections::HashMap::new();
        for &h in self.socks.keys() {
            if let Some(info) = self.core.socket(h)
                && info.state == driver_core::SockState::Connected
                && let Some(inst) = info.inst
            {
                *conns.entry(inst).or_default() += 1;
            }
        }
        let live: Vec<InstId> = self.live_ids();
        self.ctl.ended_bytes.retain(|id, _| live.contains(id));
        let mut out = Vec::new();
        for (id, i) in self.core.instances() {
            if i.state == InstState::Dead {
                continue;
            }
            let x = self.insts.get(&id);
            let st = i.stats.unwrap_or_default();
            let (ended_in, ended_out) = self.ctl.ended_bytes.get(&id).copied().unwrap_or_default();
            out.push(json!({
                "id": id,
                "pid": x.map_or(0, |x| x.pid),
                "tag": x.map_or(0, |x| x.hello_id),
                "domid": x.and_then(|x| x.xen.as_ref()).map(|p| p.domid),
                "channel": x.and_then(|x| x.xen.as_ref()).map(|p| p.channel.clone()),
                "state": match i.state { InstState::Live => "live", InstState::Draining => "draining", InstState::Dead => "dead" },
                "sockets_used": i.sockets,
                "sockets_max": st.sockets_max,
                "connections": conns.get(&id).copied().unwrap_or(0),
                "listeners": st.listeners,
                "bytes_in": st.bytes_in.max(ended_in),
                "bytes_out": st.bytes_out.max(ended_out),
                "reported": {"seq": st.seq, "sockets_used": st.sockets_used,
                             "connections": st.connections, "bytes_in": st.bytes_in,
                             "bytes_out": st.bytes_out},
                "driver_sockets": i.sockets,
                "accepted": i.accepted,
                "age_s": x.map_or(0, |x| x.joined.elapsed().as_secs()),
                "heartbeat": i.stats.is_some(),
                "ring": {"queued_frames": x.map_or(0, |x| x.queued_frames()),
                         "blocked_sockets": x.map_or(0, |x| x.blocked.len())},
            }));
        }
        json!({"ok": true, "instances": out, "xen_refused": self.xen.refusals()})
    }
}
