//! The engine: monitor-stream lines in, decisions and control commands
//! out. Sans-IO (the daemon feeds it lines and ticks with its clock), so
//! the whole decision path is tested without sockets.
//!
//! ```text
//! conn line ──► Conns (rates, deltas) ──► threshold.on_delta, anomaly.on_report (score),
//!                                         graph.on_report (new destination), shape (judge once)
//! tick ───────► threshold.tick (flags) · anomaly.tick (score all, k-of-n) · graph.tick
//!               └─► Policy.request / Policy.tick (release) ──► commands + decisions
//! ```
//!
//! Every decision is one JSON object with `t` (seconds since start) and
//! `ts` (Unix seconds) added here.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::anomaly::{self, AnomalyDet};
use crate::config::{Action, Config, Net};
use crate::conns::Conns;
use crate::graph::GraphDet;
use crate::policy::{Out, Policy, Request, Subject};
use crate::sample::Sample;
use crate::shape;
use crate::threshold::{ThresholdDet, round};

/// Decisions kept for the status.
const RECENT: usize = 50;

/// Counters for the status.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Conn lines applied.
    pub reports: u64,
    /// Lines that did not decode.
    pub bad_lines: u64,
    /// Decisions made.
    pub decisions: u64,
    /// Flows judged by the shape detector.
    pub shape_judged: u64,
    /// Of those, flagged.
    pub shape_flagged: u64,
    /// Connections dropped because their reports stopped.
    pub stale: u64,
}

/// The engine.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    conns: Conns,
    th: ThresholdDet,
    an: AnomalyDet,
    gr: GraphDet,
    policy: Policy,
    last_tick: Option<f64>,
    recent: VecDeque<Value>,
    external: VecDeque<Value>,
    anomaly_sources: VecDeque<(f64, IpAddr)>,
    counters: Counters,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Engine {
    /// An engine with `cfg` (validated).
    pub fn new(cfg: Config) -> Engine {
        Engine {
            cfg,
            conns: Conns::new(),
            th: ThresholdDet::new(),
            an: AnomalyDet::new(),
            gr: GraphDet::new(),
            policy: Policy::new(),
            last_tick: None,
            recent: VecDeque::new(),
            external: VecDeque::new(),
            anomaly_sources: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Replaces the configuration (hot reload); state is kept.
    pub fn set_config(&mut self, cfg: Config) {
        self.cfg = cfg;
    }

    /// Counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn report_gap(&self) -> f64 {
        (self.cfg.tick_ms as f64 / 1000.0 * 2.5).max(2.5)
    }

    fn finish(&mut self, now: f64, out: &mut Out, from: usize) {
        for d in out.decisions.iter_mut().skip(from) {
            d["t"] = round(now).into();
            d["ts"] = unix_now().into();
            self.counters.decisions += 1;
            self.recent.push_back(d.clone());
            if self.recent.len() > RECENT {
                self.recent.pop_front();
            }
        }
    }

    /// Applies one monitor-stream line.
    pub fn on_line(&mut self, v: &Value, now: f64, out: &mut Out) {
        let from = out.decisions.len();
        match v.get("type").and_then(Value::as_str) {
            Some("conn") => match Sample::from_json(v) {
                Ok(s) => self.on_sample(s, now, out),
                Err(_) => self.counters.bad_lines += 1,
            },
            Some("instance") => {
                if v.get("event").and_then(Value::as_str) == Some("died")
                    && let Some(i) = v.get("inst").and_then(Value::as_u64)
                {
                    self.conns.drop_instance(i);
                }
            }
            Some("mitigation") => {
                self.external.push_back(v.clone());
                if self.external.len() > RECENT {
                    self.external.pop_front();
                }
            }
            _ => {}
        }
        self.finish(now, out, from);
    }

    fn on_sample(&mut self, s: Sample, now: f64, out: &mut Out) {
        self.counters.reports += 1;
        let key = (s.inst, s.flow_id);
        let (delta, mut conn) = self.conns.update(s, now);
        let c = self.conns.get_mut(&key).unwrap_or(&mut conn);
        let remote = c.s.remote.ip();
        if !c.s.outbound {
            self.th.on_delta(remote, delta);
        }
        if self.cfg.anomaly.enabled {
            self.an.on_report(c, now, &self.cfg.anomaly);
        }
        let mut reqs = Vec::new();
        if self.cfg.graph.enabled
            && let Some(f) = self.gr.on_report(c, delta, now, &self.cfg.graph)
        {
            reqs.push(Request {
                detector: "graph",
                subject: Subject::Flow {
                    inst: c.s.inst,
                    flow_id: c.s.flow_id,
                    remote,
                },
                action: self.cfg.graph.action,
                evidence: json!({"finding": f.what, "details": f.evidence}),
            });
        }
        if self.cfg.shape.enabled && !c.judged && shape::ready(&c.s, &self.cfg.shape) {
            c.judged = true;
            self.counters.shape_judged += 1;
            let v = shape::judge(&c.s, &self.cfg.shape);
            if v.flagged {
                self.counters.shape_flagged += 1;
                reqs.push(Request {
                    detector: "shape",
                    subject: Subject::Flow {
                        inst: c.s.inst,
                        flow_id: c.s.flow_id,
                        remote,
                    },
                    action: self.cfg.shape.action,
                    evidence: json!({"remote": c.s.remote.to_string(),
                                     "local": c.s.local.to_string(), "shape": v.evidence}),
                });
            }
        }
        for r in reqs {
            self.policy.request(r, now, &self.cfg, out);
        }
    }

    /// One evaluation of every detector, and releases.
    pub fn tick(&mut self, now: f64, out: &mut Out) {
        let from = out.decisions.len();
        let dt = self
            .last_tick
            .map_or(self.cfg.tick_ms as f64 / 1000.0, |t| now - t);
        self.last_tick = Some(now);
        self.counters.stale += self.conns.expire(now, 30.0) as u64;
        let gap = self.report_gap();
        let mut reqs = Vec::new();
        if self.cfg.threshold.enabled {
            let policy = &self.policy;
            let mitigated = |ip: IpAddr| policy.covering_len(ip);
            for f in self
                .th
                .tick(now, dt, &self.conns, &self.cfg.threshold, gap, &mitigated)
            {
                out.decisions.push(json!({"detector": "threshold",
                    "decision": if f.flagged { "flag" } else { "clear" },
                    "subject": f.net.to_string(), "evidence": f.evidence}));
                if f.flagged {
                    reqs.push(Request {
                        detector: "threshold",
                        subject: Subject::Source(f.net),
                        action: self.cfg.threshold.action,
                        evidence: f.evidence,
                    });
                }
            }
        }
        if self.cfg.anomaly.enabled {
            let found = self.an.tick(now, &mut self.conns, &self.cfg.anomaly, gap);
            for f in found {
                let anomaly::Finding::Conn {
                    key,
                    remote,
                    evidence,
                } = f
                else {
                    continue;
                };
                if let Some(c) = self.conns.get_mut(&key) {
                    c.acted = true;
                }
                if self.policy.covers(remote) {
                    continue;
                }
                reqs.push(Request {
                    detector: "anomaly",
                    subject: Subject::Flow {
                        inst: key.0,
                        flow_id: key.1,
                        remote,
                    },
                    action: self.cfg.anomaly.action,
                    evidence,
                });
                self.anomaly_sources.push_back((now, remote));
                if let Some(anomaly::Finding::Source { remote, evidence }) =
                    self.an.acted_on(remote, now, &self.cfg.anomaly)
                {
                    reqs.push(Request {
                        detector: "anomaly",
                        subject: Subject::Source(Net::of(remote, 128)),
                        action: self.cfg.anomaly.escalate_action,
                        evidence,
                    });
                }
            }
        }
        let window = self.cfg.anomaly.escalate_window_s;
        while self
            .anomaly_sources
            .front()
            .is_some_and(|(t, _)| now - t > window)
        {
            self.anomaly_sources.pop_front();
        }
        if self.cfg.graph.enabled {
            for f in self.gr.tick(now, &self.cfg.graph) {
                reqs.push(Request {
                    detector: "graph",
                    subject: Subject::Other {
                        what: f.what.to_string(),
                        inst: f.inst,
                    },
                    action: match self.cfg.graph.action {
                        Action::Close => Action::Alert,
                        a => a,
                    },
                    evidence: json!({"finding": f.what, "details": f.evidence}),
                });
            }
        }
        for r in reqs {
            self.policy.request(r, now, &self.cfg, out);
        }
        let th = &self.th;
        let recent = &self.anomaly_sources;
        let flagged = |det: &str, n: &Net| match det {
            "threshold" => th.is_flagged(n),
            "anomaly" => recent.iter().any(|(_, ip)| n.contains(*ip)),
            _ => false,
        };
        self.policy.tick(now, &self.cfg, &flagged, out);
        self.finish(now, out, from);
    }

    /// Whether a mitigation in force covers `ip`.
    pub fn mitigated(&self, ip: IpAddr) -> bool {
        self.policy.covers(ip)
    }

    /// The status (`ins-ctl detect status`).
    pub fn status(&self, now: f64) -> Value {
        let mut suspects: Vec<Value> = Vec::new();
        let th = self.th.status(now);
        if let Some(f) = th.get("flagged").and_then(Value::as_array) {
            for x in f {
                let mut x = x.clone();
                x["detector"] = "threshold".into();
                suspects.push(x);
            }
        }
        for (k, c) in self.conns.iter() {
            let hits = c.evidence.iter().filter(|&&e| e).count();
            if hits > 0 && !c.acted {
                suspects.push(
                    json!({"detector": "anomaly", "source": c.s.remote.ip().to_string(),
                    "flow": format!("{}:{}", k.0, k.1), "score": c.score.map(round),
                    "k_of_n": [hits, c.evidence.len()]}),
                );
            }
        }
        json!({
            "ok": true,
            "v": 1,
            "uptime_s": round(now),
            "dry_run": self.cfg.dry_run,
            "connections": self.conns.len(),
            "suspects": suspects,
            "mitigations": self.policy.status(now),
            "detectors": {
                "threshold": {"enabled": self.cfg.threshold.enabled, "sources": th["sources"]},
                "anomaly": {"enabled": self.cfg.anomaly.enabled, "model": self.an.status()},
                "graph": {"enabled": self.cfg.graph.enabled, "model": self.gr.status(now, &self.cfg.graph)},
                "shape": {"enabled": self.cfg.shape.enabled, "judged": self.counters.shape_judged,
                          "flagged": self.counters.shape_flagged},
            },
            "recent_decisions": self.recent.iter().rev().take(20).cloned().collect::<Vec<_>>(),
            "driver_mitigations": self.external.iter().rev().take(20).cloned().collect::<Vec<_>>(),
            "counters": {"reports": self.counters.reports, "bad_lines": self.counters.bad_lines,
                         "decisions": self.counters.decisions, "stale": self.counters.stale},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::tests::line;

    /// A slowloris-shaped source against 20 ordinary ones, through the
    /// whole engine: flagged, blocked, then released after it stops.
    #[test]
    fn slow_source_is_flagged_blocked_and_released() {
        let cfg = Config {
            policy: crate::config::Policy {
                block_s: 10.0,
                ..Default::default()
            },
            ..Config::default()
        };
        let mut e = Engine::new(cfg);
        let mut out = Out::default();
        let mut flow = 0u64;
        let conn = |e: &mut Engine, flow: &mut u64, now: f64, out: &mut Out| {
            *flow += 1;
            let mut v = line("10.0.1.2:4000", 3.0, 30, 0);
            v["flow_id"] = (*flow).into();
            e.on_line(&v, now, out);
        };
        for t in 0..30 {
            let now = f64::from(t);
            for i in 0..20 {
                let mut v = line(&format!("10.0.2.{}:1000", 10 + i), 0.003, 80, 20_000);
                v["cause"] = "final".into();
                v["flow_id"] = (100_000 + t * 100 + i).into();
                e.on_line(&v, now, &mut out);
            }
            let blocked = out.commands.iter().filter(|c| c["cmd"] == "block").count()
                > out
                    .commands
                    .iter()
                    .filter(|c| c["cmd"] == "unblock")
                    .count();
            if (5..12).contains(&t) && !blocked {
                for _ in 0..40 {
                    conn(&mut e, &mut flow, now, &mut out);
                }
            }
            let before = out.commands.len();
            e.tick(now, &mut out);
            // A block resets the source's connections: their final reports.
            if out.commands[before..].iter().any(|c| c["cmd"] == "block") {
                for f in 1..=flow {
                    let mut v = line("10.0.1.2:4000", 4.0, 30, 0);
                    v["flow_id"] = f.into();
                    v["cause"] = "final".into();
                    e.on_line(&v, now, &mut out);
                }
            }
        }
        let d: Vec<(String, String, String)> = out
            .decisions
            .iter()
            .map(|d| {
                (
                    d["detector"].as_str().unwrap().to_string(),
                    d["decision"].as_str().unwrap().to_string(),
                    d["subject"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let first = |det: &str, dec: &str| d.iter().position(|x| x.0 == det && x.1 == dec);
        let flag = first("threshold", "flag").expect("flagged");
        assert_eq!(d[flag].2, "10.0.1.2/32");
        assert!(
            out.commands
                .contains(&json!({"cmd":"block","prefix":"10.0.1.2/32"})),
            "{:?}",
            out.commands
        );
        assert!(
            out.commands
                .contains(&json!({"cmd":"unblock","prefix":"10.0.1.2/32"}))
        );
        assert!(
            !d.iter().any(|x| x.2.starts_with("10.0.2.")),
            "the ordinary sources are never touched: {d:?}"
        );
        let st = e.status(30.0);
        assert_eq!(st["ok"], true);
        assert!(st["mitigations"].as_array().unwrap().is_empty());
    }
}
