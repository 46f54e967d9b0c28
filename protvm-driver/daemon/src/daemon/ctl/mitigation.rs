//! Mitigations: a command (block, unblock, limit, close) goes to every
//! targeted instance; the controller's answer and the `mitigation` event
//! wait until each answered (or died, which counts as `ECONNRESET`).
//! Blocks and rate limits stand: they are kept, in order, and replayed to
//! every instance that joins later.
//!
//! ```text
//!  command ─▶ mitigate_to: core.mitigate(inst, cmd, tag) for each target ─▶ Wait{tag}
//!  Note::MitigateDone{inst, tag, errno} ─▶ mitigate_done ─▶ … last one ─▶ answer + event
//! ```

use std::io;

use driver_core::InstId;
use ins_protocol::msg::{MitigationOf, OwnedMitigation, Prefix};
use serde_json::{Value, json};
use tracing::warn;

use super::Ctl;
use super::monitor::{SCHEMA_V, SUB_MITIGATION, unix_now};
use crate::daemon::Daemon;

/// A mitigation waiting for its instances' answers.
pub(super) struct Wait {
    /// The controller to answer.
    pub(super) conn: u64,
    remaining: usize,
    sent: usize,
    failed: Vec<Value>,
    /// The event's description.
    what: Value,
}

/// `ADDR/LEN`.
pub(super) fn prefix_str(p: &Prefix) -> String {
    format!("{}/{}", p.addr, p.len)
}

/// A standing mitigation, for `status`.
pub(super) fn mitigation_json(m: &OwnedMitigation) -> Value {
    match m {
        MitigationOf::Block(p) => json!({"block": prefix_str(p)}),
        MitigationOf::RateLimit {
            prefix,
            conn_per_sec,
            bytes_per_sec,
            ..
        } => {
            json!({"limit": prefix_str(prefix), "conn_rate": conn_per_sec, "byte_rate": bytes_per_sec})
        }
        other => json!({"other": format!("{other:?}")}),
    }
}

impl Daemon {
    /// Sends `cmd` to `targets`; the answer goes to `conn` when all replied.
    pub(super) fn mitigate_to(
        &mut self,
        conn: u64,
        cmd: OwnedMitigation,
        targets: &[InstId],
    ) -> Option<Value> {
        let tag = self.ctl.next_tag;
        self.ctl.next_tag += 1;
        let mut sent = 0;
        for &inst in targets {
            if self.core.mitigate(inst, cmd, tag, &mut self.actions) {
                sent += 1;
            }
        }
        self.apply(None, None);
        let mut what = match cmd {
            MitigationOf::Unblock(p) => json!({"action": "unblock", "prefix": prefix_str(&p)}),
            MitigationOf::ClearRateLimit(p) => {
                json!({"action": "unlimit", "prefix": prefix_str(&p)})
            }
            MitigationOf::CloseFlow { flow_id } => json!({"action": "close", "flow_id": flow_id}),
            MitigationOf::Report { flow_id } => json!({"action": "report", "flow_id": flow_id}),
            ref m => {
                let mut v = mitigation_json(m);
                if let Some(o) = v.as_object_mut() {
                    if let Some(p) = o.remove("block") {
                        o.insert("action".into(), "block".into());
                        o.insert("prefix".into(), p);
                    } else if let Some(p) = o.remove("limit") {
                        o.insert("action".into(), "limit".into());
                        o.insert("prefix".into(), p);
                    }
                }
                v
            }
        };
        if let (Some(o), Some(c)) = (what.as_object_mut(), self.ctl.conns.get(&conn)) {
            o.insert("by".into(), json!({"pid": c.pid, "uid": c.uid}));
        }
        if sent == 0 {
            self.ctl.mitigation_event(what, 0, &[]);
            return Some(json!({"ok": true, "instances": 0, "failed": []}));
        }
        self.ctl.waits.insert(
            tag,
            Wait {
                conn,
                remaining: sent,
                sent,
                failed: Vec::new(),
                what,
            },
        );
        None
    }

    /// Replays standing mitigations to a joining instance.
    pub(in crate::daemon) fn ctl_replay(&mut self, inst: InstId) {
        let list = self.ctl.standing.clone();
        for m in list {
            self.core.mitigate(inst, m, 0, &mut self.actions);
        }
        self.apply(None, None);
    }
}

impl Ctl {
    /// Streams a mitigation event once every targeted instance answered.
    fn mitigation_event(&mut self, what: Value, sent: usize, failed: &[Value]) {
        // A telemetry request travels like a mitigation but is not one.
        if what.get("action").and_then(Value::as_str) == Some("report") {
            return;
        }
        let mut v = json!({"v": SCHEMA_V, "type": "mitigation",
            "event": if sent > 0 && failed.len() == sent { "failed" } else { "applied" },
            "instances": sent, "failed": failed, "at": unix_now()});
        if let (Some(o), Value::Object(x)) = (v.as_object_mut(), what) {
            o.extend(x);
        }
        self.stream(SUB_MITIGATION, &v);
    }

    /// One instance answered mitigation `tag` (or died: `ECONNRESET`).
    pub(super) fn mitigate_done(&mut self, inst: InstId, tag: u64, errno: i32) {
        if errno != 0 {
            warn!(inst, tag, errno, "mitigation failed on instance");
        }
        let Some(w) = self.waits.get_mut(&tag) else {
            return;
        };
        w.remaining = w.remaining.saturating_sub(1);
        if errno != 0 {
            w.failed.push(json!({"inst": inst, "errno": errno,
                "error": io::Error::from_raw_os_error(errno).to_string()}));
        }
        if w.remaining == 0
            && let Some(w) = self.waits.remove(&tag)
        {
            let ok = w.failed.len() < w.sent;
            let first = w
                .failed
                .first()
                .and_then(|f| f.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let v = json!({"ok": ok, "kind": if ok { "" } else { "failed" },
                "error": if ok { String::new() } else { format!("refused by every instance: {first}") },
                "instances": w.sent, "failed": w.failed});
            self.send(w.conn, &v);
            self.mitigation_event(w.what, w.sent, &w.failed);
        }
    }
}
