//! Detector 2: per-connection resource anomaly.
//!
//! Each inbound connection is a point in feature space ([`features`]):
//! age, idle time each way, byte rates each way, zero-window share,
//! whether the response has started, bytes stuck unsent — log-scaled, then
//! standardised by the model. A k-means model ([`crate::kmeans`]) is
//! trained on the first `train_s` seconds of traffic (at least
//! `min_samples` reports; retrained every `retrain_s` on reports of
//! connections that were never flagged). A connection whose distance to
//! its nearest centre exceeds that centre's radius is an outlier.
//!
//! Scoring happens on every report (event) **and** on every tick, with the
//! features projected to the tick (age and idle times grow, the progress
//! rate decays when reports stop), so a connection that stalls is caught
//! while it stalls. Evidence for acting on a connection is k-of-n: of the
//! last `evidence_n` scores, `evidence_k` were outliers **that made no
//! progress** (recent rate below `progress_bps`): an unusual connection
//! that moves data, such as a slow but working client, is never acted on.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::config::Anomaly;
use crate::conns::{Conn, Conns, Key};
use crate::kmeans::{Model, Params};
use crate::threshold::round;

/// Feature names, in vector order.
pub const FEATURES: [&str; 8] = [
    "ln_age",
    "ln_idle_in",
    "ln_idle_out",
    "ln_rate_in",
    "ln_rate_out",
    "zero_window_share",
    "awaiting_response",
    "ln_unsent_kib",
];

/// Standardisation floors (the smallest spread a feature is given).
const FLOORS: [f64; 8] = [0.5, 0.5, 0.5, 0.75, 0.75, 0.1, 0.25, 0.5];

/// The feature vector of a connection at `now`.
pub fn features(c: &Conn, now: f64) -> [f64; 8] {
    let s = &c.s;
    let extra = (now - c.seen).max(0.0);
    let age = c.age_at(now).max(1e-3);
    let zw = if s.zero_window {
        s.zero_window_s + extra
    } else {
        s.zero_window_s
    };
    [
        age.ln_1p(),
        (s.idle_in + extra).ln_1p(),
        (s.idle_out + extra).ln_1p(),
        (s.bytes_in as f64 / age).ln_1p(),
        (s.delivered() as f64 / age).ln_1p(),
        (zw / age).min(1.0),
        if s.bytes_out == 0 { 1.0 } else { 0.0 },
        (s.unsent as f64 / 1024.0).ln_1p(),
    ]
}

/// An action on one connection, or an escalation to its source.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// This connection has enough evidence.
    Conn {
        /// The connection.
        key: Key,
        /// Its source address.
        remote: IpAddr,
        /// Scores and features behind it.
        evidence: Value,
    },
    /// This source had `escalate_after` connections acted on.
    Source {
        /// The source address.
        remote: IpAddr,
        /// How many, in how long.
        evidence: Value,
    },
}

/// The detector's state.
#[derive(Debug, Default)]
pub struct AnomalyDet {
    started: Option<f64>,
    reservoir: Vec<[f64; 8]>,
    seen: u64,
    model: Option<Model>,
    trained_at: f64,
    acted: HashMap<IpAddr, VecDeque<f64>>,
    escalated: HashMap<IpAddr, f64>,
    rng: u64,
}

impl AnomalyDet {
    /// A detector that has not trained yet.
    pub fn new() -> AnomalyDet {
        AnomalyDet {
            rng: 0x1234_5678,
            ..AnomalyDet::default()
        }
    }

    /// Whether a model exists.
    pub fn trained(&self) -> bool {
        self.model.is_some()
    }

    fn keep(&mut self, f: [f64; 8], cfg: &Anomaly) {
        self.seen += 1;
        if self.reservoir.len() < cfg.max_samples {
            self.reservoir.push(f);
        } else {
            // Reservoir sampling keeps a uniform sample of everything seen.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let j = self.rng % self.seen;
            if let Some(slot) = self.reservoir.get_mut(j as usize) {
                *slot = f;
            }
        }
    }

    /// A report arrived: keep it for training (if its connection was never
    /// flagged) and score it.
    pub fn on_report(&mut self, c: &mut Conn, now: f64, cfg: &Anomaly) {
        self.started.get_or_insert(now);
        if c.s.outbound {
            return;
        }
        let f = features(c, now);
        if c.evidence.iter().all(|e| !e) && !c.acted {
            self.keep(f, cfg);
        }
        self.score(c, now, cfg, f64::INFINITY);
    }

    fn score(&self, c: &mut Conn, now: f64, cfg: &Anomaly, report_gap: f64) {
        let Some(m) = &self.model else { return };
        if c.age_at(now) < cfg.min_age_s {
            return;
        }
        let (score, _) = m.score(&features(c, now));
        c.score = Some(score);
        let stalled = c.rate_at(now, report_gap) < cfg.progress_bps;
        c.evidence.push(score > 1.0 && stalled);
        let n = cfg.evidence_n;
        if c.evidence.len() > n {
            let cut = c.evidence.len() - n;
            c.evidence.drain(..cut);
        }
    }

    /// Trains when due; scores every connection at `now`; returns the
    /// connections (and sources) with enough evidence.
    pub fn tick(
        &mut self,
        now: f64,
        conns: &mut Conns,
        cfg: &Anomaly,
        report_gap: f64,
    ) -> Vec<Finding> {
        let start = *self.started.get_or_insert(now);
        let due = match &self.model {
            None => now - start >= cfg.train_s && self.reservoir.len() >= cfg.min_samples,
            Some(_) => cfg.retrain_s > 0.0 && now - self.trained_at >= cfg.retrain_s,
        };
        if due && self.reservoir.len() >= cfg.min_samples {
            let rows: Vec<Vec<f64>> = self.reservoir.iter().map(|r| r.to_vec()).collect();
            self.model = Model::train(
                &rows,
                &FLOORS,
                Params {
                    k: cfg.k,
                    iterations: cfg.iterations,
                    quantile: cfg.quantile,
                    margin: cfg.margin,
                    min_radius: cfg.min_radius,
                },
            );
            self.trained_at = now;
            if self.model.is_some() {
                // The next model learns from traffic after this one.
                self.reservoir.clear();
                self.seen = 0;
            }
        }
        let mut out = Vec::new();
        if self.model.is_none() {
            return out;
        }
        for (k, c) in conns.iter_mut() {
            if c.s.outbound || c.acted {
                continue;
            }
            self.score(c, now, cfg, report_gap);
            let hits = c.evidence.iter().filter(|&&e| e).count();
            if hits >= cfg.evidence_k {
                let f = features(c, now);
                out.push(Finding::Conn {
                    key: *k,
                    remote: c.s.remote.ip(),
                    evidence: json!({
                        "score": c.score.map(round),
                        "k_of_n": [hits, c.evidence.len()],
                        "rate_bps": round(c.rate_at(now, report_gap)),
                        "features": FEATURES.iter().zip(f).map(|(n, v)| (n.to_string(), json!(round(v)))).collect::<serde_json::Map<_,_>>(),
                    }),
                });
            }
        }
        out.sort_by_key(|f| match f {
            Finding::Conn { key, .. } => *key,
            Finding::Source { .. } => (0, 0),
        });
        out
    }

    /// Records that a connection of `remote` was acted on; returns an
    /// escalation when the source reached `escalate_after` in the window.
    pub fn acted_on(&mut self, remote: IpAddr, now: f64, cfg: &Anomaly) -> Option<Finding> {
        if cfg.escalate_after == 0 {
            return None;
        }
        let q = self.acted.entry(remote).or_default();
        q.push_back(now);
        while q.front().is_some_and(|&t| now - t > cfg.escalate_window_s) {
            q.pop_front();
        }
        let n = q.len();
        if n >= cfg.escalate_after
            && self
                .escalated
                .get(&remote)
                .is_none_or(|&t| now - t > cfg.escalate_window_s)
        {
            self.escalated.insert(remote, now);
            return Some(Finding::Source {
                remote,
                evidence: json!({"connections_acted_on": n, "window_s": cfg.escalate_window_s}),
            });
        }
        None
    }

    /// State for the status.
    pub fn status(&self) -> Value {
        json!({
            "state": if self.model.is_some() { "trained" } else { "training" },
            "samples": self.reservoir.len(),
            "clusters": self.model.as_ref().map(|m| m.centres.iter().zip(&m.radii).zip(&m.sizes)
                .map(|((_, r), s)| json!({"radius": round(*r), "members": s})).collect::<Vec<_>>()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Anomaly;
    use crate::sample::{Sample, tests::line};

    fn report(t: &mut Conns, flow: u64, age: f64, bi: u64, bo: u64, idle: f64, now: f64) -> Key {
        let mut v = line("10.0.0.2:5000", age, bi, bo);
        v["flow_id"] = flow.into();
        v["idle_in_ns"] = ((idle * 1e9) as u64).into();
        v["idle_out_ns"] = ((idle * 1e9) as u64).into();
        let s = Sample::from_json(&v).unwrap();
        t.update(s, now);
        (1, flow)
    }

    #[test]
    fn trains_then_acts_on_a_stalled_outlier_but_not_a_slow_worker() {
        let cfg = Anomaly {
            train_s: 5.0,
            min_samples: 50,
            ..Anomaly::default()
        };
        let mut det = AnomalyDet::new();
        let mut t = Conns::new();
        // Training: short request/response connections.
        for i in 0..200u64 {
            let now = i as f64 * 0.03;
            let k = report(
                &mut t,
                i + 100,
                0.002 + (i % 5) as f64 * 0.001,
                80,
                20_000,
                0.0,
                now,
            );
            let c = t.get_mut(&k).unwrap();
            det.on_report(c, now, &cfg);
        }
        assert!(det.tick(6.0, &mut Conns::new(), &cfg, 1.0).is_empty());
        assert!(det.trained());
        // A stalled connection (a few bytes in, nothing out) and a slow
        // worker (7 KB/s down), both 3 s old and growing.
        let mut t = Conns::new();
        let stalled = report(&mut t, 1, 3.0, 40, 0, 2.0, 6.0);
        let worker = report(&mut t, 2, 3.0, 80, 21_000, 0.0, 6.0);
        let mut acted = Vec::new();
        for tick in 0u32..6 {
            let now = 7.0 + f64::from(tick);
            // The worker keeps delivering; the stalled one reports nothing new.
            report(
                &mut t,
                2,
                4.0 + f64::from(tick),
                80,
                28_000 + 7_000 * u64::from(tick),
                0.0,
                now,
            );
            for f in det.tick(now, &mut t, &cfg, 1.0) {
                if let Finding::Conn { key, .. } = f {
                    acted.push((tick, key));
                    t.get_mut(&key).unwrap().acted = true;
                }
            }
        }
        assert_eq!(acted.len(), 1, "{acted:?}");
        assert_eq!(acted[0].1, stalled);
        assert!(acted[0].0 <= 3, "k-of-n within a few ticks: {acted:?}");
        assert!(
            t.get(&worker).unwrap().score.unwrap() > 1.0,
            "the worker is unusual …"
        );
        assert!(!t.get(&worker).unwrap().acted, "… but makes progress");
    }

    #[test]
    fn escalation_after_n_connections() {
        let cfg = Anomaly {
            escalate_after: 3,
            ..Anomaly::default()
        };
        let mut det = AnomalyDet::new();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(det.acted_on(ip, 1.0, &cfg).is_none());
        assert!(det.acted_on(ip, 2.0, &cfg).is_none());
        assert!(det.acted_on(ip, 3.0, &cfg).is_some());
        assert!(det.acted_on(ip, 4.0, &cfg).is_none(), "once per window");
    }
}
