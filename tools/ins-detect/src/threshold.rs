//! Detector 1: thresholds with hysteresis per source prefix.
//!
//! Every tick, for each aggregation level (e.g. /32 and /24) and each
//! active source prefix, five metrics are computed from the connection
//! table and the reports of the tick: open inbound connections, slow-phase
//! connections (older than `slow_age_s` and moving fewer than
//! `slow_rate_bps` bytes per second), new connections, segments and bytes
//! per second. A metric is *over* when it reaches
//! `max(floor × scale, factor × baseline)`: the baseline is the median of
//! the same metric over the level's *other* active sources that are
//! neither flagged nor mitigated (leave-one-out, so one loud source cannot
//! raise its own bar even when only a few sources are active), and `scale`
//! is `level_scale` for levels shorter than a host prefix.
//!
//! Hysteresis: a source is flagged when `flag_samples` of its last
//! `window` ticks were over (k-of-n evidence), and cleared only after
//! `clear_samples` consecutive ticks with every metric under
//! `clear_ratio` × its threshold. Sources under a mitigation are left out
//! of the baselines, and a mitigated address is left out of the coarser
//! levels (a blocked /32 does not make its /24 look loud); a mitigated
//! source is still evaluated itself, so a rate-limited source that keeps
//! going stays flagged. A source with no connection and no new one for
//! `inactive_s` is forgotten unless flagged.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::config::{Metric, Net, Threshold};
use crate::conns::{Conns, Delta};

/// The metrics, in a fixed order.
pub const METRICS: [&str; 5] = ["conns", "slow", "conn_rate", "packet_rate", "byte_rate"];

fn metric(cfg: &Threshold, i: usize) -> Metric {
    match i {
        0 => cfg.conns,
        1 => cfg.slow,
        2 => cfg.conn_rate,
        3 => cfg.packet_rate,
        _ => cfg.byte_rate,
    }
}

/// Whether a connection is in its slow phase at `now`.
pub fn is_slow(c: &crate::conns::Conn, now: f64, cfg: &Threshold, report_gap: f64) -> bool {
    c.age_at(now) >= cfg.slow_age_s && c.rate_at(now, report_gap) < cfg.slow_rate_bps
}

#[derive(Debug, Clone, Default)]
struct Acc {
    new: f64,
    packets: f64,
    bytes: f64,
}

#[derive(Debug, Clone)]
struct Source {
    window: VecDeque<bool>,
    flagged: bool,
    clean_run: usize,
    flagged_at: f64,
    last_active: f64,
    values: [f64; 5],
    thresholds: [f64; 5],
}

/// A change of a source's flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The source prefix.
    pub net: Net,
    /// `true`: flagged now; `false`: cleared.
    pub flagged: bool,
    /// Values, thresholds and baselines behind the decision.
    pub evidence: Value,
}

/// The detector's state.
#[derive(Debug, Default)]
pub struct ThresholdDet {
    acc: HashMap<IpAddr, Acc>,
    sources: HashMap<Net, Source>,
}

/// Median of `sorted` without one element equal to `x` (when `member`:
/// `x` is one of the values); 0 when nothing is left.
fn median_without(sorted: &[f64], x: f64, member: bool) -> f64 {
    let skip = if member {
        sorted.iter().position(|&y| y == x)
    } else {
        None
    };
    let n = sorted.len() - usize::from(skip.is_some());
    if n == 0 {
        return 0.0;
    }
    let at = |j: usize| match skip {
        Some(i) if j >= i => sorted[j + 1],
        _ => sorted[j],
    };
    if n % 2 == 1 {
        at(n / 2)
    } else {
        (at(n / 2 - 1) + at(n / 2)) / 2.0
    }
}

impl ThresholdDet {
    /// A detector with no history.
    pub fn new() -> ThresholdDet {
        ThresholdDet::default()
    }

    /// Accounts one inbound report's delta (called for every report).
    pub fn on_delta(&mut self, remote: IpAddr, d: Delta) {
        let a = self.acc.entry(remote).or_default();
        if d.new {
            a.new += 1.0;
        }
        a.packets += d.packets as f64;
        a.bytes += (d.bytes_in + d.bytes_out) as f64;
    }

    /// Whether `net` is flagged now.
    pub fn is_flagged(&self, net: &Net) -> bool {
        self.sources.get(net).is_some_and(|s| s.flagged)
    }

    /// Flagged sources.
    pub fn flagged(&self) -> impl Iterator<Item = &Net> {
        self.sources
            .iter()
            .filter(|(_, s)| s.flagged)
            .map(|(n, _)| n)
    }

    /// One evaluation. `dt` is the tick length in seconds; `mitigated`
    /// gives the longest prefix length of the mitigations in force that
    /// cover an address (`None`: not mitigated).
    pub fn tick(
        &mut self,
        now: f64,
        dt: f64,
        conns: &Conns,
        cfg: &Threshold,
        report_gap: f64,
        mitigated: &dyn Fn(IpAddr) -> Option<u8>,
    ) -> Vec<Finding> {
        let dt = dt.max(1e-3);
        // Per-host values first.
        let mut host: HashMap<IpAddr, [f64; 5]> = HashMap::new();
        for (_, c) in conns.iter() {
            if c.s.outbound {
                continue;
            }
            let ip = c.s.remote.ip();
            let v = host.entry(ip).or_default();
            v[0] += 1.0;
            if is_slow(c, now, cfg, report_gap) {
                v[1] += 1.0;
            }
        }
        for (ip, a) in self.acc.drain() {
            let v = host.entry(ip).or_default();
            v[2] += a.new / dt;
            v[3] += a.packets / dt;
            v[4] += a.bytes / dt;
        }
        // Aggregate per level.
        let mut levels: Vec<(u8, bool)> = cfg.prefix_v4.iter().map(|&l| (l, false)).collect();
        levels.extend(cfg.prefix_v6.iter().map(|&l| (l, true)));
        let mut agg: HashMap<Net, [f64; 5]> = HashMap::new();
        for (ip, v) in &host {
            let v6 = matches!(Net::of(*ip, 128).addr, IpAddr::V6(_));
            let m = mitigated(*ip);
            for &(len, lv6) in &levels {
                if lv6 != v6 || m.is_some_and(|ml| ml > len) {
                    continue;
                }
                let a = agg.entry(Net::of(*ip, len)).or_default();
                for i in 0..5 {
                    a[i] += v[i];
                }
            }
        }
        // Baselines: for each source, the median of the other active,
        // unflagged sources of its level (leave-one-out, so a loud source
        // never raises its own bar, even when few sources are active).
        let mut pop: HashMap<(u8, bool, usize), Vec<f64>> = HashMap::new();
        for (n, v) in &agg {
            if self.is_flagged(n) || mitigated(n.addr).is_some_and(|ml| ml <= n.len) {
                continue;
            }
            for (i, x) in v.iter().enumerate() {
                pop.entry((n.len, n.addr.is_ipv6(), i))
                    .or_default()
                    .push(*x);
            }
        }
        for v in pop.values_mut() {
            v.sort_by(f64::total_cmp);
        }
        // Every known or active source of every level gets a sample.
        for n in agg.keys() {
            self.sources.entry(*n).or_insert_with(|| Source {
                window: VecDeque::new(),
                flagged: false,
                clean_run: 0,
                flagged_at: 0.0,
                last_active: now,
                values: [0.0; 5],
                thresholds: [0.0; 5],
            });
        }
        let mut out = Vec::new();
        for (n, s) in self.sources.iter_mut() {
            let v = agg.get(n).copied().unwrap_or_default();
            let flagged_before = s.flagged
                || !agg.contains_key(n)
                || mitigated(n.addr).is_some_and(|ml| ml <= n.len);
            let mut bases = [0.0; 5];
            let scale = if n.is_host() { 1.0 } else { cfg.level_scale };
            let mut over = Vec::new();
            let mut clean = true;
            for i in 0..5 {
                let m = metric(cfg, i);
                let b = pop
                    .get(&(n.len, n.addr.is_ipv6(), i))
                    .map_or(0.0, |p| median_without(p, v[i], !flagged_before));
                bases[i] = b;
                let th = (m.floor * scale).max(m.factor * b);
                s.thresholds[i] = th;
                if v[i] >= th {
                    over.push(METRICS[i]);
                }
                if v[i] >= cfg.clear_ratio * th {
                    clean = false;
                }
            }
            s.values = v;
            if v.iter().any(|&x| x > 0.0) {
                s.last_active = now;
            }
            s.window.push_back(!over.is_empty());
            while s.window.len() > cfg.window {
                s.window.pop_front();
            }
            let hits = s.window.iter().filter(|&&b| b).count();
            let wlen = s.window.len();
            let th = s.thresholds;
            let evidence = || {
                let mut m = serde_json::Map::new();
                for i in 0..5 {
                    m.insert(
                        METRICS[i].into(),
                        json!({"value": round(v[i]), "threshold": round(th[i]),
                               "baseline": round(bases[i])}),
                    );
                }
                json!({"over": over, "k_of_n": [hits, wlen], "metrics": m})
            };
            if !s.flagged && hits >= cfg.flag_samples {
                s.flagged = true;
                s.flagged_at = now;
                s.clean_run = 0;
                out.push(Finding {
                    net: *n,
                    flagged: true,
                    evidence: evidence(),
                });
            } else if s.flagged {
                if clean {
                    s.clean_run += 1;
                } else {
                    s.clean_run = 0;
                }
                if s.clean_run >= cfg.clear_samples {
                    s.flagged = false;
                    s.window.clear();
                    let mut e = evidence();
                    e["clean_samples"] = json!(s.clean_run);
                    out.push(Finding {
                        net: *n,
                        flagged: false,
                        evidence: e,
                    });
                }
            }
        }
        let inactive = cfg.inactive_s;
        self.sources
            .retain(|_, s| s.flagged || now - s.last_active <= inactive);
        out.sort_by_key(|f| f.net);
        out
    }

    /// Flagged sources with their latest values, for the status.
    pub fn status(&self, now: f64) -> Value {
        let flagged: Vec<Value> = self
            .sources
            .iter()
            .filter(|(_, s)| s.flagged)
            .map(|(n, s)| {
                let over: Vec<&str> = (0..5)
                    .filter(|&i| s.values[i] >= s.thresholds[i])
                    .map(|i| METRICS[i])
                    .collect();
                json!({"source": n.to_string(), "since_s": round(now - s.flagged_at),
                       "over": over,
                       "values": (0..5).map(|i| (METRICS[i].to_string(), json!(round(s.values[i])))).collect::<serde_json::Map<_,_>>()})
            })
            .collect();
        json!({"sources": self.sources.len(), "flagged": flagged})
    }
}

/// Rounds for logs (3 decimals).
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Sample, tests::line};

    fn conn(t: &mut Conns, det: &mut ThresholdDet, remote: &str, flow: u64, age: f64, now: f64) {
        let mut v = line(remote, age, 10, 0);
        v["flow_id"] = flow.into();
        let s = Sample::from_json(&v).unwrap();
        let ip = s.remote.ip();
        let (d, _) = t.update(s, now);
        det.on_delta(ip, d);
    }

    #[test]
    fn many_slow_connections_from_one_source_flag_then_clear() {
        let cfg = Threshold::default();
        let mut det = ThresholdDet::new();
        let mut t = Conns::new();
        let none = |_: IpAddr| None;
        // 20 ordinary sources with one connection each.
        for i in 0..20 {
            conn(
                &mut t,
                &mut det,
                &format!("10.0.2.{}:1000", i + 10),
                1000 + i,
                0.1,
                0.0,
            );
        }
        assert!(det.tick(0.0, 1.0, &t, &cfg, 1.0, &none).is_empty());
        // The attacker: 60 connections trickling bytes, 3 s old.
        let mut flow = 1;
        let mut flagged_at = None;
        for tick in 1..=6 {
            let now = f64::from(tick);
            for _ in 0..30 {
                conn(&mut t, &mut det, "10.0.1.2:2000", flow, 3.0, now);
                flow += 1;
            }
            let f = det.tick(now, 1.0, &t, &cfg, 1.0, &none);
            if let Some(x) = f.iter().find(|x| x.flagged) {
                assert_eq!(x.net.to_string(), "10.0.1.2/32");
                assert!(
                    x.evidence["over"]
                        .as_array()
                        .unwrap()
                        .contains(&"slow".into()),
                    "{}",
                    x.evidence
                );
                flagged_at.get_or_insert(tick);
            }
        }
        assert_eq!(flagged_at, Some(2), "two of three ticks over");
        assert!(!det.is_flagged(&Net::parse("10.0.2.10").unwrap()));
        // The attack stops (its connections are gone): clear after 5 clean ticks.
        let mut t2 = Conns::new();
        let mut cleared = None;
        for tick in 7..20 {
            let f = det.tick(f64::from(tick), 1.0, &t2, &cfg, 1.0, &none);
            if f.iter().any(|x| !x.flagged) {
                cleared = Some(tick);
                break;
            }
            t2 = Conns::new();
        }
        assert_eq!(cleared, Some(11));
    }

    #[test]
    fn a_flood_from_many_addresses_flags_the_prefix_not_the_hosts() {
        let cfg = Threshold::default();
        let mut det = ThresholdDet::new();
        let t = Conns::new();
        let none = |_: IpAddr| None;
        let mut flagged = Vec::new();
        for tick in 0..3 {
            // 40 addresses × 20 new connections per second; one normal host.
            for h in 0..40u8 {
                for _ in 0..20 {
                    det.on_delta(
                        format!("10.9.9.{h}").parse().unwrap(),
                        Delta {
                            new: true,
                            bytes_in: 100,
                            bytes_out: 0,
                            packets: 3,
                        },
                    );
                }
            }
            det.on_delta(
                "10.7.0.1".parse().unwrap(),
                Delta {
                    new: true,
                    bytes_in: 100,
                    bytes_out: 0,
                    packets: 3,
                },
            );
            for f in det.tick(f64::from(tick), 1.0, &t, &cfg, 1.0, &none) {
                flagged.push(f.net.to_string());
            }
        }
        assert_eq!(flagged, vec!["10.9.9.0/24"]);
    }

    #[test]
    fn a_mitigated_host_does_not_flag_its_prefix() {
        let cfg = Threshold::default();
        let mut det = ThresholdDet::new();
        let mut t = Conns::new();
        let blocked = |ip: IpAddr| (ip == "10.0.1.2".parse::<IpAddr>().unwrap()).then_some(32);
        let mut flagged = Vec::new();
        for tick in 0..4u32 {
            for i in 0..600 {
                conn(
                    &mut t,
                    &mut det,
                    "10.0.1.2:2000",
                    u64::from(tick) * 1000 + i,
                    3.0,
                    f64::from(tick),
                );
            }
            for f in det.tick(f64::from(tick), 1.0, &t, &cfg, 1.0, &blocked) {
                flagged.push(f.net.to_string());
            }
        }
        assert_eq!(
            flagged,
            vec!["10.0.1.2/32"],
            "the host itself is still evaluated"
        );
    }
}
