//! `ins-flow watch`: top talkers per refresh window, per-instance activity,
//! and (with the driver socket) the standing mitigations.
//!
//! [`Window`] is pure accounting: feed it flow reports, then
//! [`Window::render`] the text of one screen and start the next window.
//! Rates are the deltas of the cumulative counters ([`DeltaTracker`]) seen
//! during the window divided by its length; a flow counts as a new
//! connection in the window where it is first reported.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use ins_protocol::msg::FlowState;

use crate::record::DeltaTracker;
use crate::schema::InstFlow;

#[derive(Debug, Default, Clone, Copy)]
struct Acc {
    conns: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// One refresh window of accounting.
#[derive(Debug, Default)]
pub struct Window {
    deltas: DeltaTracker,
    active: HashSet<(u32, u64)>,
    by_src: HashMap<IpAddr, Acc>,
    by_inst: BTreeMap<u32, Acc>,
    reports: u64,
}

/// One row of the top-talkers table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Talker {
    /// Source (remote peer) address.
    pub src: IpAddr,
    /// New connections per second.
    pub conn_rate: f64,
    /// Bytes per second received from it.
    pub in_rate: f64,
    /// Bytes per second sent to it.
    pub out_rate: f64,
}

impl Window {
    /// Empty accounting.
    pub fn new() -> Window {
        Window::default()
    }

    /// Accounts one flow report.
    pub fn observe(&mut self, f: &InstFlow) {
        self.reports += 1;
        let key = (f.inst, f.rec.flow_id);
        let new = match f.rec.state {
            FlowState::Active => self.active.insert(key),
            FlowState::Closed => !self.active.remove(&key),
        };
        // `new`: first report of the flow (active, or closed without an
        // earlier active report).
        let is_new = new;
        let Some(r) = self.deltas.update(f) else {
            return;
        };
        for acc in [
            self.by_src.entry(r.src.ip()).or_default(),
            self.by_inst.entry(f.inst).or_default(),
        ] {
            acc.conns += u64::from(is_new);
            acc.bytes_in += r.octets;
            acc.bytes_out += r.rev_octets;
        }
    }

    /// Flows currently open.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// The window's top `n` sources by total byte rate, then connection rate.
    pub fn top(&self, n: usize, len: Duration) -> Vec<Talker> {
        let secs = len.as_secs_f64().max(1e-3);
        let mut v: Vec<Talker> = self
            .by_src
            .iter()
            .map(|(ip, a)| Talker {
                src: *ip,
                conn_rate: a.conns as f64 / secs,
                in_rate: a.bytes_in as f64 / secs,
                out_rate: a.bytes_out as f64 / secs,
            })
            .collect();
        v.sort_by(|a, b| {
            (b.in_rate + b.out_rate)
                .total_cmp(&(a.in_rate + a.out_rate))
                .then(b.conn_rate.total_cmp(&a.conn_rate))
                .then(a.src.cmp(&b.src))
        });
        v.truncate(n);
        v
    }

    /// The screen text for this window (no terminal control codes), then
    /// starts the next window. `extra` lines (instances, mitigations from
    /// the driver) are printed under the header.
    pub fn render(&mut self, n: usize, len: Duration, extra: &[String]) -> String {
        let secs = len.as_secs_f64().max(1e-3);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ins-flow watch   window {:.1} s   reports {}   open flows {}",
            secs,
            self.reports,
            self.active()
        );
        for e in extra {
            let _ = writeln!(s, "{e}");
        }
        let _ = writeln!(s, "\nINSTANCE      conn/s        in B/s       out B/s");
        for (i, a) in &self.by_inst {
            let _ = writeln!(
                s,
                "{:<8} {:>11.1} {:>13.0} {:>13.0}",
                i,
                a.conns as f64 / secs,
                a.bytes_in as f64 / secs,
                a.bytes_out as f64 / secs
            );
        }
        let _ = writeln!(
            s,
            "\nTOP TALKERS (source)                       conn/s        in B/s       out B/s"
        );
        for t in self.top(n, len) {
            let _ = writeln!(
                s,
                "{:<40} {:>10.1} {:>13.0} {:>13.0}",
                t.src.to_string(),
                t.conn_rate,
                t.in_rate,
                t.out_rate
            );
        }
        self.by_src.clear();
        self.by_inst.clear();
        self.reports = 0;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ins_protocol::msg::{CloseReason, FlowRecord};

    fn f(inst: u32, id: u64, remote: &str, bi: u64, bo: u64, state: FlowState) -> InstFlow {
        InstFlow {
            inst,
            rec: FlowRecord {
                flow_id: id,
                proto: 6,
                local: "10.0.0.1:80".parse().unwrap(),
                remote: remote.parse().unwrap(),
                bytes_in: bi,
                bytes_out: bo,
                segs_in: 1,
                segs_out: 1,
                start_ns: 1,
                last_ns: 2,
                state,
                reason: CloseReason::None,
                tcp_flags: 0,
                sock: 0,
            },
        }
    }

    #[test]
    fn ranks_by_byte_rate_and_counts_new_connections_once() {
        let mut w = Window::new();
        let s = Duration::from_secs(2);
        w.observe(&f(1, 1, "10.0.0.9:1", 100, 0, FlowState::Active));
        w.observe(&f(1, 1, "10.0.0.9:1", 300, 0, FlowState::Closed));
        for id in 10..14 {
            w.observe(&f(2, id, "10.0.0.7:1", 1000, 3000, FlowState::Closed));
        }
        let top = w.top(5, s);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].src, "10.0.0.7".parse::<IpAddr>().unwrap());
        assert_eq!(
            (top[0].conn_rate, top[0].in_rate, top[0].out_rate),
            (2.0, 2000.0, 6000.0)
        );
        assert_eq!((top[1].conn_rate, top[1].in_rate), (0.5, 150.0));
        let text = w.render(1, s, &["mitigations: none".into()]);
        assert!(
            text.contains("10.0.0.7") && !text.contains("10.0.0.9"),
            "{text}"
        );
        assert!(text.contains("mitigations: none"));
        // Next window starts empty; the open-flow set is kept.
        assert!(w.top(5, s).is_empty());
        assert_eq!(w.active(), 0);
    }
}
