//! The open connections as the telemetry describes them, with what the
//! detectors derive from consecutive reports: recent progress (bytes per
//! second both ways), projection to "now" between reports, and per-tick
//! deltas for the rate metrics.
//!
//! Invariants: a connection is in the table from its first report until
//! its final one (or until it has not been reported for `stale_after`
//! seconds: its instance died or stopped reporting). Deltas are never
//! negative: a counter that goes backwards (an instance restarted and
//! reused the flow id) restarts the connection.

use std::collections::HashMap;

use crate::sample::{Cause, Sample};

/// `(instance, flow id)`.
pub type Key = (u64, u64);

/// One open connection.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The latest report.
    pub s: Sample,
    /// When it arrived (daemon clock, seconds).
    pub seen: f64,
    /// When the first report arrived.
    pub first_seen: f64,
    /// Bytes per second moved (received + delivered) between the two
    /// latest reports; for the first report, the average since open.
    pub rate: f64,
    /// Anomaly evidence, newest last (bounded by the detector's n).
    pub evidence: Vec<bool>,
    /// Latest anomaly score (distance / radius of the nearest cluster).
    pub score: Option<f64>,
    /// A mitigation was sent for this connection.
    pub acted: bool,
    /// The shape detector judged it.
    pub judged: bool,
}

impl Conn {
    /// Age projected to `now`.
    pub fn age_at(&self, now: f64) -> f64 {
        self.s.age + (now - self.seen).max(0.0)
    }

    /// Recent rate, decayed when reports stop coming (a stalled report
    /// stream must not keep a connection "progressing").
    pub fn rate_at(&self, now: f64, report_gap: f64) -> f64 {
        let late = (now - self.seen - report_gap).max(0.0);
        if late == 0.0 {
            self.rate
        } else {
            self.rate * report_gap / (report_gap + late)
        }
    }
}

/// What one report added since the previous one of the same connection.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Delta {
    /// The connection is new (first report).
    pub new: bool,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// Segments received.
    pub packets: u64,
}

/// The connection table.
#[derive(Debug, Default)]
pub struct Conns {
    map: HashMap<Key, Conn>,
}

fn progress(s: &Sample) -> u64 {
    s.bytes_in.saturating_add(s.delivered())
}

impl Conns {
    /// An empty table.
    pub fn new() -> Conns {
        Conns::default()
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Iterates over open connections.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Conn)> {
        self.map.iter()
    }

    /// Iterates mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Key, &mut Conn)> {
        self.map.iter_mut()
    }

    /// A connection.
    pub fn get(&self, k: &Key) -> Option<&Conn> {
        self.map.get(k)
    }

    /// A connection, mutably.
    pub fn get_mut(&mut self, k: &Key) -> Option<&mut Conn> {
        self.map.get_mut(k)
    }

    /// Applies a report at `now`; returns the delta and the connection as
    /// it is now (for a final report: as it was, removed from the table).
    pub fn update(&mut self, s: Sample, now: f64) -> (Delta, Conn) {
        let key = (s.inst, s.flow_id);
        let fin = s.cause == Cause::Final;
        let prev = self.map.remove(&key).filter(|c| {
            c.s.bytes_in <= s.bytes_in
                && c.s.bytes_out <= s.bytes_out
                && c.s.segs_in <= s.segs_in
                && c.s.age <= s.age
        });
        let (delta, conn) = match prev {
            Some(mut c) => {
                let dt = s.age - c.s.age;
                let moved = progress(&s).saturating_sub(progress(&c.s));
                if dt >= 0.25 {
                    c.rate = moved as f64 / dt;
                } else if moved > 0 {
                    // Too close to measure a rate: at least it moved.
                    c.rate = c.rate.max(moved as f64 / dt.max(0.25));
                }
                let d = Delta {
                    new: false,
                    bytes_in: s.bytes_in.saturating_sub(c.s.bytes_in),
                    bytes_out: s.bytes_out.saturating_sub(c.s.bytes_out),
                    packets: s.segs_in.saturating_sub(c.s.segs_in),
                };
                c.s = s;
                c.seen = now;
                (d, c)
            }
            None => {
                let rate = progress(&s) as f64 / s.age.max(0.25);
                let d = Delta {
                    new: true,
                    bytes_in: s.bytes_in,
                    bytes_out: s.bytes_out,
                    packets: s.segs_in,
                };
                (
                    d,
                    Conn {
                        s,
                        seen: now,
                        first_seen: now,
                        rate,
                        evidence: Vec::new(),
                        score: None,
                        acted: false,
                        judged: false,
                    },
                )
            }
        };
        if !fin {
            self.map.insert(key, conn.clone());
        }
        (delta, conn)
    }

    /// Drops connections not reported for `stale_after` seconds; returns
    /// how many.
    pub fn expire(&mut self, now: f64, stale_after: f64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, c| now - c.seen <= stale_after);
        before - self.map.len()
    }

    /// Drops every connection of an instance (it died).
    pub fn drop_instance(&mut self, inst: u64) {
        self.map.retain(|k, _| k.0 != inst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::tests::line;

    fn s(age: f64, bi: u64, bo: u64) -> Sample {
        Sample::from_json(&line("10.0.0.2:5000", age, bi, bo)).unwrap()
    }

    #[test]
    fn rates_and_deltas() {
        let mut t = Conns::new();
        let (d, c) = t.update(s(1.0, 100, 0), 10.0);
        assert!(d.new);
        assert_eq!((d.bytes_in, d.bytes_out), (100, 0));
        assert!((c.rate - 100.0).abs() < 1e-9);
        let (d, c) = t.update(s(3.0, 100, 50), 12.0);
        assert!(!d.new);
        assert_eq!((d.bytes_in, d.bytes_out), (0, 50));
        assert!((c.rate - 25.0).abs() < 1e-9, "50 bytes over 2 s");
        // Projection: 4 s later with 1 s reports the rate decays.
        let c = t.get(&(1, 7)).unwrap();
        assert!((c.age_at(16.0) - 7.0).abs() < 1e-9);
        assert!(c.rate_at(12.5, 1.0) == 25.0);
        assert!(c.rate_at(16.0, 1.0) < 25.0 / 3.0);
        // Counters backwards: a new connection.
        let (d, _) = t.update(s(0.5, 1, 0), 13.0);
        assert!(d.new);
        // Final: removed.
        let mut f = s(4.0, 10, 0);
        f.cause = Cause::Final;
        t.update(f, 14.0);
        assert!(t.is_empty());
        t.update(s(1.0, 1, 1), 20.0);
        assert_eq!(t.expire(30.0, 5.0), 1);
    }
}
