//! Mitigation policy: turns detector decisions into control-socket
//! commands, keeps the mitigations in force and releases them.
//!
//! * `block` and `rate_limit` act on a source prefix for a duration: the
//!   first block lasts `block_s`, each repeat on the same prefix within
//!   `repeat_window_s` doubles it (up to `max_block_s`). At expiry the
//!   mitigation is lifted if the detector that asked has cleared its flag;
//!   otherwise it is extended by its duration (`release_needs_clear`).
//! * `close` resets one connection; `rotate` replaces the instance that
//!   carries it (spawn one, then drain and stop the old one), at most once
//!   per `rotate_min_gap_s`; `alert` only logs.
//! * A request for a prefix already covered by a mitigation in force is a
//!   no-op; a prefix that overlaps `never_block` is never touched (the
//!   decision is logged as `suppressed`); with `dry_run` every decision is
//!   logged and nothing is sent.
//!
//! Every decision becomes one JSON object (the daemon writes it as a line
//! with its time stamps): `{"detector","decision","subject","action",
//! "evidence",…}`.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::config::{Action, Config, Net};
use crate::threshold::round;

/// What a decision is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// A source prefix.
    Source(Net),
    /// One connection.
    Flow {
        /// Instance id.
        inst: u64,
        /// Flow id.
        flow_id: u64,
        /// Its peer.
        remote: IpAddr,
    },
    /// Something that is not a source (an outbound destination, the
    /// service as a whole); `inst` is the instance involved, if any.
    Other {
        /// Description.
        what: String,
        /// Instance involved.
        inst: Option<u64>,
    },
}

impl Subject {
    fn name(&self) -> String {
        match self {
            Subject::Source(n) => n.to_string(),
            Subject::Flow { inst, flow_id, .. } => format!("{inst}:{flow_id}"),
            Subject::Other { what, .. } => what.clone(),
        }
    }

    /// The source prefix a source-level action applies to.
    fn source(&self) -> Option<Net> {
        match self {
            Subject::Source(n) => Some(*n),
            Subject::Flow { remote, .. } => Some(Net::of(*remote, 128)),
            Subject::Other { .. } => None,
        }
    }

    fn inst(&self) -> Option<u64> {
        match self {
            Subject::Flow { inst, .. } => Some(*inst),
            Subject::Other { inst, .. } => *inst,
            Subject::Source(_) => None,
        }
    }
}

/// A detector's request for a mitigation.
#[derive(Debug, Clone)]
pub struct Request {
    /// `threshold`, `anomaly`, `graph` or `shape`.
    pub detector: &'static str,
    /// What it is about.
    pub subject: Subject,
    /// What the detector's policy says to do.
    pub action: Action,
    /// Why.
    pub evidence: Value,
}

/// A mitigation in force.
#[derive(Debug, Clone)]
pub struct Active {
    /// `block` or `rate_limit`.
    pub action: Action,
    /// The source prefix.
    pub net: Net,
    /// The detector that asked.
    pub detector: &'static str,
    /// Since (daemon clock).
    pub since: f64,
    /// Until.
    pub until: f64,
    /// Its duration (extensions add this).
    pub duration: f64,
    /// The evidence of the decision.
    pub why: Value,
}

/// Commands to send and decisions to log.
#[derive(Debug, Default)]
pub struct Out {
    /// Control-socket requests, in order.
    pub commands: Vec<Value>,
    /// Decision objects.
    pub decisions: Vec<Value>,
}

/// The policy state.
#[derive(Debug, Default)]
pub struct Policy {
    active: Vec<Active>,
    history: HashMap<Net, Vec<f64>>,
    last_rotate: Option<f64>,
}

fn overlaps(a: &Net, b: &Net) -> bool {
    a.contains(b.addr) || b.contains(a.addr)
}

impl Policy {
    /// No mitigation in force.
    pub fn new() -> Policy {
        Policy::default()
    }

    /// Mitigations in force.
    pub fn active(&self) -> &[Active] {
        &self.active
    }

    /// Whether a mitigation in force covers `ip`.
    pub fn covers(&self, ip: IpAddr) -> bool {
        self.active.iter().any(|a| a.net.contains(ip))
    }

    /// The longest prefix length of the mitigations in force covering `ip`.
    pub fn covering_len(&self, ip: IpAddr) -> Option<u8> {
        self.active
            .iter()
            .filter(|a| a.net.contains(ip))
            .map(|a| a.net.len)
            .max()
    }

    /// Handles one request.
    pub fn request(&mut self, r: Request, now: f64, cfg: &Config, out: &mut Out) {
        let name = r.subject.name();
        let base = |decision: &str| {
            json!({"detector": r.detector, "decision": decision, "subject": name,
                   "action": r.action.name(), "evidence": r.evidence})
        };
        match r.action {
            Action::Alert => out.decisions.push(base("alert")),
            Action::Close => {
                let Subject::Flow { inst, flow_id, .. } = r.subject else {
                    out.decisions.push(base("alert"));
                    return;
                };
                if let Some(n) = r.subject.source()
                    && self.suppressed(&n, cfg)
                {
                    out.decisions.push(base("suppressed"));
                    return;
                }
                let mut d = base("mitigate");
                if cfg.dry_run {
                    d["dry_run"] = true.into();
                } else {
                    out.commands
                        .push(json!({"cmd": "close", "flow": format!("{inst}:{flow_id}")}));
                }
                out.decisions.push(d);
            }
            Action::Rotate => {
                let Some(inst) = r.subject.inst() else {
                    out.decisions.push(base("alert"));
                    return;
                };
                if self
                    .last_rotate
                    .is_some_and(|t| now - t < cfg.policy.rotate_min_gap_s)
                {
                    let mut d = base("suppressed");
                    d["reason"] = "rotated recently".into();
                    out.decisions.push(d);
                    return;
                }
                let mut d = base("mitigate");
                d["instance"] = inst.into();
                if cfg.dry_run {
                    d["dry_run"] = true.into();
                } else {
                    self.last_rotate = Some(now);
                    out.commands.push(json!({"cmd": "spawn"}));
                    out.commands.push(json!({"cmd": "stop", "id": inst}));
                }
                out.decisions.push(d);
            }
            Action::Block | Action::RateLimit => {
                let Some(net) = r.subject.source() else {
                    out.decisions.push(base("alert"));
                    return;
                };
                if self.suppressed(&net, cfg) {
                    out.decisions.push(base("suppressed"));
                    return;
                }
                if self
                    .active
                    .iter()
                    .any(|a| a.net.contains(net.addr) && a.net.len <= net.len)
                {
                    return; // already covered
                }
                let duration = if r.action == Action::Block {
                    let h = self.history.entry(net).or_default();
                    h.retain(|&t| now - t <= cfg.policy.repeat_window_s);
                    let d = cfg.policy.block_s * 2f64.powi(h.len().min(30) as i32);
                    h.push(now);
                    d.min(cfg.policy.max_block_s)
                } else {
                    cfg.policy.limit_s
                };
                let mut d = base("mitigate");
                d["subject"] = net.to_string().into();
                d["duration_s"] = round(duration).into();
                if cfg.dry_run {
                    d["dry_run"] = true.into();
                    out.decisions.push(d);
                    return;
                }
                out.commands.push(command(r.action, &net, cfg, true));
                out.decisions.push(d);
                self.active.push(Active {
                    action: r.action,
                    net,
                    detector: r.detector,
                    since: now,
                    until: now + duration,
                    duration,
                    why: r.evidence,
                });
            }
        }
    }

    fn suppressed(&self, n: &Net, cfg: &Config) -> bool {
        cfg.never_block_nets().iter().any(|x| overlaps(x, n))
    }

    /// Releases (or extends) mitigations that expired. `flagged` says
    /// whether the detector that asked still flags the prefix.
    pub fn tick(
        &mut self,
        now: f64,
        cfg: &Config,
        flagged: &dyn Fn(&str, &Net) -> bool,
        out: &mut Out,
    ) {
        let mut keep = Vec::new();
        for mut a in std::mem::take(&mut self.active) {
            if now < a.until {
                keep.push(a);
                continue;
            }
            let decision = json!({"detector": a.detector, "subject": a.net.to_string(),
                                  "action": a.action.name(), "held_s": round(now - a.since)});
            if cfg.policy.release_needs_clear && flagged(a.detector, &a.net) {
                a.until = now + a.duration;
                let mut d = decision;
                d["decision"] = "extend".into();
                d["until_s"] = round(a.duration).into();
                out.decisions.push(d);
                keep.push(a);
            } else {
                let mut d = decision;
                d["decision"] = "release".into();
                out.decisions.push(d);
                out.commands.push(command(a.action, &a.net, cfg, false));
            }
        }
        self.active = keep;
    }

    /// Mitigations in force, for the status.
    pub fn status(&self, now: f64) -> Value {
        Value::Array(
            self.active
                .iter()
                .map(|a| {
                    json!({"action": a.action.name(), "subject": a.net.to_string(),
                           "detector": a.detector, "since_s": round(now - a.since),
                           "remaining_s": round(a.until - now), "why": a.why})
                })
                .collect(),
        )
    }
}

fn command(a: Action, net: &Net, cfg: &Config, on: bool) -> Value {
    let p = net.to_string();
    match (a, on) {
        (Action::Block, true) => json!({"cmd": "block", "prefix": p}),
        (Action::Block, false) => json!({"cmd": "unblock", "prefix": p}),
        (_, true) => json!({"cmd": "limit", "prefix": p,
                            "conn_rate": cfg.policy.limit_conn_rate,
                            "byte_rate": cfg.policy.limit_byte_rate}),
        (_, false) => json!({"cmd": "limit", "prefix": p, "conn_rate": 0, "byte_rate": 0}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(subject: Subject, action: Action) -> Request {
        Request {
            detector: "threshold",
            subject,
            action,
            evidence: json!({"x": 1}),
        }
    }

    fn src(s: &str) -> Subject {
        Subject::Source(Net::parse(s).unwrap())
    }

    #[test]
    fn block_dedup_release_and_doubling() {
        let cfg = Config::default();
        let mut p = Policy::new();
        let mut o = Out::default();
        p.request(req(src("10.0.1.2"), Action::Block), 0.0, &cfg, &mut o);
        assert_eq!(
            o.commands,
            vec![json!({"cmd":"block","prefix":"10.0.1.2/32"})]
        );
        assert_eq!(o.decisions[0]["decision"], "mitigate");
        assert_eq!(o.decisions[0]["duration_s"], 60.0);
        assert!(p.covers("10.0.1.2".parse().unwrap()));
        // Covered: nothing more.
        let mut o = Out::default();
        p.request(req(src("10.0.1.2"), Action::Block), 1.0, &cfg, &mut o);
        assert!(o.commands.is_empty() && o.decisions.is_empty());
        // Still flagged at expiry: extended; then released.
        let mut o = Out::default();
        p.tick(60.0, &cfg, &|_, _| true, &mut o);
        assert_eq!(o.decisions[0]["decision"], "extend");
        assert!(o.commands.is_empty());
        let mut o = Out::default();
        p.tick(120.0, &cfg, &|_, _| false, &mut o);
        assert_eq!(o.decisions[0]["decision"], "release");
        assert_eq!(
            o.commands,
            vec![json!({"cmd":"unblock","prefix":"10.0.1.2/32"})]
        );
        assert!(!p.covers("10.0.1.2".parse().unwrap()));
        // A repeat doubles the duration.
        let mut o = Out::default();
        p.request(req(src("10.0.1.2"), Action::Block), 130.0, &cfg, &mut o);
        assert_eq!(o.decisions[0]["duration_s"], 120.0);
    }

    #[test]
    fn never_block_dry_run_close_rotate() {
        let mut cfg = Config {
            never_block: vec!["10.0.2.0/24".into()],
            ..Config::default()
        };
        let mut p = Policy::new();
        let mut o = Out::default();
        p.request(req(src("10.0.2.7"), Action::Block), 0.0, &cfg, &mut o);
        p.request(
            req(src("10.0.0.0/16"), Action::RateLimit),
            0.0,
            &cfg,
            &mut o,
        );
        assert!(o.commands.is_empty());
        assert_eq!(o.decisions.len(), 2);
        assert!(o.decisions.iter().all(|d| d["decision"] == "suppressed"));
        let flow = Subject::Flow {
            inst: 2,
            flow_id: 9,
            remote: "10.0.1.2".parse().unwrap(),
        };
        let mut o = Out::default();
        p.request(req(flow.clone(), Action::Close), 0.0, &cfg, &mut o);
        assert_eq!(o.commands, vec![json!({"cmd":"close","flow":"2:9"})]);
        let mut o = Out::default();
        p.request(req(flow.clone(), Action::Rotate), 0.0, &cfg, &mut o);
        assert_eq!(
            o.commands,
            vec![json!({"cmd":"spawn"}), json!({"cmd":"stop","id":2})]
        );
        let mut o = Out::default();
        p.request(req(flow.clone(), Action::Rotate), 1.0, &cfg, &mut o);
        assert!(o.commands.is_empty(), "rotated recently");
        cfg.dry_run = true;
        let mut o = Out::default();
        p.request(req(src("10.0.9.9"), Action::Block), 0.0, &cfg, &mut o);
        assert!(o.commands.is_empty());
        assert_eq!(o.decisions[0]["dry_run"], true);
        assert!(!p.covers("10.0.9.9".parse().unwrap()));
        let mut o = Out::default();
        p.request(
            req(flow, Action::RateLimit),
            0.0,
            &Config::default(),
            &mut o,
        );
        assert_eq!(o.commands[0]["prefix"], "10.0.1.2/32");
        assert_eq!(o.commands[0]["conn_rate"], 5);
    }
}
