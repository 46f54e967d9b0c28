//! The monitor stream and the flow ring.
//!
//! A controller connection (on `ctl.sock` or `monitor.sock`) that sent
//! `subscribe` (or `flows` with `follow`) gets one JSON line per event,
//! each with `"v"` ([`SCHEMA_V`]) and a `"type"`: `flow` (a flow record as
//! an instance reported it), `instance` (spawned, joined, died, exited,
//! draining, overloaded, recovered), `mitigation` (applied or failed,
//! once every instance answered) and — only when named — `conn` (live
//! telemetry of one connection). Schema: `docs/monitor.md`.
//!
//! Nothing here blocks: what a socket does not take is buffered, and a
//! subscriber whose buffer would exceed `--monitor-buffer` is dropped and
//! counted. The last `--flow-ring` flow records are kept for `flows`.
//!
//! The core's notes arrive here too ([`NoteSink`]): they become log lines
//! and `instance` / `mitigation` events.

use std::io::{self, Write as _};
use std::time::SystemTime;

use driver_core::{InstId, Note, NoteSink};
use ins_protocol::msg::{
    CloseReason, ConnTelemetry, FlowRecord, FlowState, PayloadStats, TelemetryCause,
    telemetry::flags,
};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::Ctl;

/// Monitor schema version (`"v"` of every streamed line).
pub(in crate::daemon) const SCHEMA_V: u64 = 1;
/// Subscription bit: flow records.
pub(super) const SUB_FLOW: u8 = 1;
/// Subscription bit: instance events.
pub(super) const SUB_INSTANCE: u8 = 2;
/// Subscription bit: mitigation events.
pub(super) const SUB_MITIGATION: u8 = 4;
/// Subscription bit: connection telemetry (one line per connection per
/// interval, so only for subscribers that name it; not in [`SUB_ALL`]).
pub(super) const SUB_CONN: u8 = 8;
/// The subscription bits of a plain `subscribe`.
pub(super) const SUB_ALL: u8 = SUB_FLOW | SUB_INSTANCE | SUB_MITIGATION;

/// A flow record as kept in the ring.
pub(super) struct FlowEntry {
    inst: InstId,
    at: SystemTime,
    rec: FlowRecord,
}

fn reason_str(r: CloseReason) -> &'static str {
    match r {
        CloseReason::None => "",
        CloseReason::Normal => "normal",
        CloseReason::Reset => "reset",
        CloseReason::Timeout => "timeout",
        CloseReason::Mitigated => "mitigated",
        CloseReason::Error => "error",
    }
}

pub(super) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub(super) fn flow_json(f: &FlowEntry) -> Value {
    let r = &f.rec;
    let at =
        f.at.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
    json!({
        "v": SCHEMA_V,
        "type": "flow",
        "flow": format!("{}:{}", f.inst, r.flow_id),
        "inst": f.inst,
        "flow_id": r.flow_id,
        "proto": if r.proto == 6 { "tcp" } else { "udp" },
        "local": r.local.to_string(),
        "remote": r.remote.to_string(),
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
        "segs_in": r.segs_in,
        "segs_out": r.segs_out,
        "start_ns": r.start_ns,
        "last_ns": r.last_ns,
        "state": if r.state == FlowState::Active { "active" } else { "closed" },
        "reason": reason_str(r.reason),
        "tcp_flags": r.tcp_flags,
        "reported_at": at,
    })
}

fn payload_json(p: &PayloadStats) -> Value {
    json!({
        "sampled": p.sampled,
        "entropy": f64::from(p.entropy_milli) / 1000.0,
        "printable": f64::from(p.printable_permille) / 1000.0,
        "len_hist": p.hist,
    })
}

/// A `conn` line.
pub(super) fn conn_json(inst: InstId, t: &ConnTelemetry) -> Value {
    let tcpi = t.has(flags::TCP_INFO);
    let opt = |on: bool, v: u64| if on { json!(v) } else { Value::Null };
    json!({
        "v": SCHEMA_V,
        "type": "conn",
        "inst": inst,
        "flow_id": t.flow_id,
        "flow": format!("{inst}:{}", t.flow_id),
        "sock": t.sock,
        "proto": if t.proto == 6 { "tcp" } else { "udp" },
        "cause": match t.cause {
            TelemetryCause::Periodic => "periodic",
            TelemetryCause::OnDemand => "on-demand",
            TelemetryCause::Final => "final",
        },
        "dir": if t.has(flags::OUTBOUND) { "out" } else { "in" },
        "local": t.local.to_string(),
        "remote": t.remote.to_string(),
        "age_ns": t.age_ns,
        "bytes_in": t.bytes_in,
        "bytes_out": t.bytes_out,
        "segs_in": t.segs_in,
        "segs_out": t.segs_out,
        "idle_in_ns": t.idle_in_ns,
        "idle_out_ns": t.idle_out_ns,
        "first_in_ns": opt(t.has(flags::FIRST_IN), t.first_in_ns),
        "first_out_ns": opt(t.has(flags::FIRST_OUT), t.first_out_ns),
        "peer_fin": t.has(flags::PEER_FIN),
        "local_fin": t.has(flags::LOCAL_FIN),
        "bytes_acked": opt(tcpi, t.bytes_acked),
        "peer_window": opt(tcpi, u64::from(t.peer_window)),
        "zero_window": t.has(flags::ZERO_WINDOW),
        "zero_window_ns": t.zero_window_ns,
        "rwnd_limited_us": opt(tcpi, t.rwnd_limited_us),
        "rtt_us": opt(tcpi, u64::from(t.rtt_us)),
        "retrans": opt(tcpi, u64::from(t.retrans)),
        "unsent": t.unsent,
        "sample_in": payload_json(&t.sample_in),
        "sample_out": payload_json(&t.sample_out),
        "at": unix_now(),
    })
}

impl Ctl {
    /// Streams `v` (one line) to every connection subscribed to `bit`.
    /// Never blocks: what the socket does not take is buffered, and a
    /// subscriber whose buffer would exceed `--monitor-buffer` is dropped.
    pub(super) fn stream(&mut self, bit: u8, v: &Value) {
        if !self.conns.values().any(|c| c.sub & bit != 0) {
            return;
        }
        let mut line = match serde_json::to_vec(v) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        let max_out = self.max_out;
        for (&id, c) in self.conns.iter_mut() {
            if c.sub & bit == 0 || c.closing {
                continue;
            }
            let mut off = 0;
            if c.wbuf.is_empty() {
                // Straight to the socket when nothing is queued.
                while off < line.len() {
                    match c.stream.write(&line[off..]) {
                        Ok(n) => off += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            let rest = &line[off..];
            if rest.is_empty() {
                continue;
            }
            if c.wbuf.len() + rest.len() > max_out {
                self.dropped += 1;
                warn!(
                    conn = id,
                    pid = c.pid,
                    uid = c.uid,
                    buffered = c.wbuf.len(),
                    dropped_total = self.dropped,
                    "slow subscriber dropped (output buffer full)"
                );
                c.sub = 0;
                c.closing = true;
                c.wbuf.clear();
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
                continue;
            }
            c.wbuf.extend_from_slice(rest);
        }
    }

    /// Streams an instance event (`spawned`, `joined`, `died`, `exited`,
    /// `overloaded`, `recovered`, `draining`) with extra fields.
    pub(in crate::daemon) fn instance_event(
        &mut self,
        event: &str,
        inst: Option<InstId>,
        extra: Value,
    ) {
        let mut v = json!({"v": SCHEMA_V, "type": "instance", "event": event,
            "inst": inst, "at": unix_now()});
        if let (Some(o), Value::Object(x)) = (v.as_object_mut(), extra) {
            o.extend(x);
        }
        self.stream(SUB_INSTANCE, &v);
    }

    /// Connection telemetry from `inst`: streamed to `conn` subscribers.
    pub(in crate::daemon) fn telemetry(&mut self, inst: InstId, t: &ConnTelemetry) {
        if self.conns.values().any(|c| c.sub & SUB_CONN != 0) {
            let v = conn_json(inst, t);
            self.stream(SUB_CONN, &v);
        }
    }

    /// A flow record from `inst`: streamed and kept.
    pub(in crate::daemon) fn flow(&mut self, inst: InstId, rec: FlowRecord) {
        self.flow_records += 1;
        if rec.state == FlowState::Closed {
            let b = self.ended_bytes.entry(inst).or_default();
            b.0 = b.0.saturating_add(rec.bytes_in);
            b.1 = b.1.saturating_add(rec.bytes_out);
        }
        let e = FlowEntry {
            inst,
            at: SystemTime::now(),
            rec,
        };
        if self.conns.values().any(|c| c.sub & SUB_FLOW != 0) {
            let v = flow_json(&e);
            self.stream(SUB_FLOW, &v);
        }
        if self.flow_cap == 0 {
            return;
        }
        if self.flows.len() >= self.flow_cap {
            self.flows.pop_front();
        }
        self.flows.push_back(e);
    }
}

impl NoteSink for Ctl {
    fn note(&mut self, n: Note) {
        match n {
            Note::InstanceDied { inst, why, reset } => {
                warn!(inst, %why, connections_reset = reset, event = "instance-dead", "instance declared dead");
                self.instance_event(
                    "died",
                    Some(inst),
                    json!({"why": why.to_string(), "connections_reset": reset}),
                );
            }
            Note::InternalFailed { inst, sock, errno } => {
                warn!(inst, sock, errno, "internal request failed on instance")
            }
            Note::Replicated { inst, sock } => info!(inst, sock, "listener replicated"),
            Note::InbandReset { sock } => warn!(
                sock,
                "connection reset: its app wrote an in-band option marker that no record matched"
            ),
            Note::MitigateDone { inst, tag, errno } => self.mitigate_done(inst, tag, errno),
        }
    }
}
