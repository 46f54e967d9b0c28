//! Detector 3: communication-graph invariants.
//!
//! The graph has the protected program in the middle, inbound edges from
//! client prefixes to its local ports and outbound edges to destinations
//! (`dest_prefix` + port) it connects to. For `learn_s` seconds the graph
//! is only learned: the outbound destinations, the largest outbound
//! fan-out (distinct destinations per interval) and the largest outbound
//! byte ratio (bytes sent / bytes received on outbound connections per
//! interval). After that:
//!
//! * an outbound connection to a destination not learned (and not in
//!   `allow`) is alerted at its first report (then remembered, so it is
//!   alerted once);
//! * every `interval_s`, a fan-out above `max(fanout_floor, fanout_factor
//!   × learned)` (a scan, lateral movement) and an outbound byte ratio
//!   above `ratio_factor × max(learned, 1)` with at least
//!   `ratio_min_bytes` sent (exfiltration) are alerted.
//!
//! Inbound edges are counted (status) but new clients are normal for a
//! server and never alerted.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use crate::config::{Graph, Net};
use crate::conns::{Conn, Delta};
use crate::threshold::round;

/// An outbound destination: prefix and port.
pub type Dest = (Net, u16);

/// An alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// `new-destination`, `fan-out` or `byte-ratio`.
    pub what: &'static str,
    /// The destination concerned (fan-out and ratio: the largest).
    pub dest: Option<Dest>,
    /// The instance of the connection that triggered it, if one did.
    pub inst: Option<u64>,
    /// Numbers behind it.
    pub evidence: Value,
}

#[derive(Debug, Default)]
struct Interval {
    dests: HashSet<Dest>,
    out_sent: u64,
    out_recv: u64,
    by_dest: HashMap<Dest, u64>,
    inbound: HashSet<Net>,
}

/// The detector's state.
#[derive(Debug, Default)]
pub struct GraphDet {
    started: Option<f64>,
    known: HashSet<Dest>,
    max_fanout: usize,
    max_ratio: f64,
    cur: Interval,
    interval_start: f64,
    alerted: HashSet<Dest>,
    inbound_known: HashSet<Net>,
}

fn dest_of(c: &Conn, cfg: &Graph) -> Dest {
    let ip = c.s.remote.ip();
    let len = if Net::of(ip, 128).addr.is_ipv4() {
        cfg.dest_prefix_v4
    } else {
        cfg.dest_prefix_v6
    };
    (Net::of(ip, len), c.s.remote.port())
}

fn dest_str(d: &Dest) -> String {
    format!("{} port {}", d.0, d.1)
}

impl GraphDet {
    /// A detector that starts learning at its first report.
    pub fn new() -> GraphDet {
        GraphDet::default()
    }

    /// Whether the learning window is over at `now`.
    pub fn learning(&self, now: f64, cfg: &Graph) -> bool {
        self.started.is_none_or(|s| now - s < cfg.learn_s)
    }

    fn allowed(d: &Dest, cfg: &Graph) -> bool {
        cfg.allow
            .iter()
            .filter_map(|p| Net::parse(p).ok())
            .any(|n| n.contains(d.0.addr) && n.len <= d.0.len)
    }

    /// A report arrived (with its delta). May alert a new destination.
    pub fn on_report(&mut self, c: &Conn, d: Delta, now: f64, cfg: &Graph) -> Option<Finding> {
        let start = *self.started.get_or_insert(now);
        if self.interval_start == 0.0 {
            self.interval_start = start;
        }
        if !c.s.outbound {
            let ip = c.s.remote.ip();
            self.cur
                .inbound
                .insert(Net::of(ip, if ip.is_ipv4() { 24 } else { 64 }));
            return None;
        }
        let dest = dest_of(c, cfg);
        self.cur.dests.insert(dest);
        self.cur.out_sent += d.bytes_out;
        self.cur.out_recv += d.bytes_in;
        *self.cur.by_dest.entry(dest).or_insert(0) += d.bytes_out;
        if now - start < cfg.learn_s {
            self.known.insert(dest);
            return None;
        }
        if cfg.new_destinations
            && !self.known.contains(&dest)
            && !self.alerted.contains(&dest)
            && !Self::allowed(&dest, cfg)
        {
            self.alerted.insert(dest);
            return Some(Finding {
                what: "new-destination",
                dest: Some(dest),
                inst: Some(c.s.inst),
                evidence: json!({"destination": dest_str(&dest), "flow": c.s.flow_name(),
                                  "local": c.s.local.to_string(),
                                  "bytes_out": c.s.bytes_out, "bytes_in": c.s.bytes_in,
                                  "known_destinations": self.known.len(),
                                  "learned_for_s": cfg.learn_s}),
            });
        }
        None
    }

    /// Interval end: fan-out and byte-ratio checks.
    pub fn tick(&mut self, now: f64, cfg: &Graph) -> Vec<Finding> {
        let Some(start) = self.started else {
            return Vec::new();
        };
        if now - self.interval_start < cfg.interval_s {
            return Vec::new();
        }
        let iv = std::mem::take(&mut self.cur);
        self.interval_start = now;
        let fanout = iv.dests.len();
        let ratio = iv.out_sent as f64 / (iv.out_recv.max(1)) as f64;
        self.inbound_known.extend(iv.inbound.iter().copied());
        if now - start < cfg.learn_s {
            self.max_fanout = self.max_fanout.max(fanout);
            if iv.out_sent >= cfg.ratio_min_bytes / 16 {
                self.max_ratio = self.max_ratio.max(ratio);
            }
            return Vec::new();
        }
        let mut out = Vec::new();
        let fan_limit = (cfg.fanout_factor * self.max_fanout as f64).max(cfg.fanout_floor as f64);
        if fanout as f64 > fan_limit {
            out.push(Finding {
                what: "fan-out",
                dest: None,
                inst: None,
                evidence: json!({"destinations": fanout, "limit": round(fan_limit),
                                  "learned_max": self.max_fanout}),
            });
        }
        let ratio_limit = cfg.ratio_factor * self.max_ratio.max(1.0);
        if iv.out_sent >= cfg.ratio_min_bytes && ratio > ratio_limit {
            let top = iv.by_dest.iter().max_by_key(|(_, b)| **b).map(|(d, _)| *d);
            out.push(Finding {
                what: "byte-ratio",
                dest: top,
                inst: None,
                evidence: json!({"sent": iv.out_sent, "received": iv.out_recv,
                                  "ratio": round(ratio), "limit": round(ratio_limit),
                                  "learned_max": round(self.max_ratio),
                                  "top_destination": top.map(|d| dest_str(&d))}),
            });
        }
        out
    }

    /// State for the status.
    pub fn status(&self, now: f64, cfg: &Graph) -> Value {
        json!({
            "state": if self.learning(now, cfg) { "learning" } else { "active" },
            "known_destinations": self.known.iter().map(dest_str).collect::<Vec<_>>(),
            "alerted_destinations": self.alerted.iter().map(dest_str).collect::<Vec<_>>(),
            "learned_max_fanout": self.max_fanout,
            "learned_max_ratio": round(self.max_ratio),
            "inbound_prefixes": self.inbound_known.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conns::Conns;
    use crate::sample::{Sample, tests::line};

    fn out_conn(t: &mut Conns, remote: &str, flow: u64, sent: u64, now: f64) -> (Conn, Delta) {
        out_conn_rx(t, remote, flow, sent, 100, now)
    }

    fn out_conn_rx(
        t: &mut Conns,
        remote: &str,
        flow: u64,
        sent: u64,
        recv: u64,
        now: f64,
    ) -> (Conn, Delta) {
        let mut v = line(remote, 1.0, recv, sent);
        v["dir"] = "out".into();
        v["flow_id"] = flow.into();
        let (d, c) = t.update(Sample::from_json(&v).unwrap(), now);
        (c, d)
    }

    #[test]
    fn learns_then_alerts_new_destination_fanout_and_ratio() {
        let cfg = Graph {
            learn_s: 10.0,
            interval_s: 2.0,
            ..Graph::default()
        };
        let mut g = GraphDet::new();
        let mut t = Conns::new();
        // Learning: the backend only, small requests, larger answers.
        for i in 0..10u64 {
            let now = i as f64;
            let (c, d) = out_conn_rx(&mut t, "10.4.0.2:9000", i, 200, 2000, now);
            assert!(g.on_report(&c, d, now, &cfg).is_none());
            assert!(g.tick(now, &cfg).is_empty());
        }
        // The known backend is fine after learning.
        let (c, d) = out_conn(&mut t, "10.4.0.2:9000", 50, 200, 11.0);
        assert!(g.on_report(&c, d, 11.0, &cfg).is_none());
        // A new destination: alerted once.
        let (c, d) = out_conn(&mut t, "10.5.0.2:9100", 51, 1000, 12.0);
        let f = g.on_report(&c, d, 12.0, &cfg).unwrap();
        assert_eq!(f.what, "new-destination");
        assert_eq!(f.inst, Some(1));
        let (c, d) = out_conn(&mut t, "10.5.0.2:9100", 52, 1000, 12.5);
        assert!(g.on_report(&c, d, 12.5, &cfg).is_none());
        // Exfiltration-shaped bytes: 4 MB out, little back.
        let (c, d) = out_conn_rx(&mut t, "10.5.0.2:9100", 53, 4 << 20, 10, 12.8);
        g.on_report(&c, d, 12.8, &cfg);
        assert!(g.tick(13.0, &cfg).iter().any(|f| f.what == "byte-ratio"));
        // A scan: 20 destinations in an interval.
        for p in 0..20u16 {
            let (c, d) = out_conn(
                &mut t,
                &format!("10.6.0.{}:{}", p + 1, 22),
                100 + u64::from(p),
                0,
                14.0,
            );
            g.on_report(&c, d, 14.0, &cfg);
        }
        assert!(g.tick(15.5, &cfg).iter().any(|f| f.what == "fan-out"));
    }
}
