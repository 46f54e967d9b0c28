//! Detector 4: traffic-shape strategies on a flow's first bytes, to flag
//! obfuscated-proxy or encrypted-tunnel traffic (obfs4, scramblesuit-like
//! "look like nothing" protocols) where it is not expected.
//!
//! * **Entropy test.** A direction looks random when its byte entropy is
//!   within `tolerance_bits` of what uniformly random bytes of the same
//!   count give (the plug-in estimate is biased low for small samples, so
//!   the comparison is against a table of that expectation, computed once
//!   from a fixed-seed generator: [`uniform_entropy`]) and at most
//!   `max_printable` of it is printable. Plain text protocols fail it by
//!   bits; TLS fails it on the client side, whose handshake (cipher lists,
//!   extensions, zero padding) is far from uniform.
//! * **Length clustering.** Fully encrypted protocols pad their messages to
//!   random lengths, so the chunk lengths of the first bytes spread over
//!   many histogram buckets; protocols with fixed framing cluster. The
//!   test counts occupied buckets over both directions.
//!
//! Verdict: the inbound sample looks random **and** either the outbound one
//! does too or the lengths are spread (`spread_buckets`). A flow is judged
//! once, when `min_bytes` inbound bytes were sampled or at its final
//! report; flows on `expected_ports` are not flagged.

use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::config::Shape;
use crate::sample::{Payload, Sample};
use crate::threshold::round;

const GRID: [u32; 17] = [
    16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096, 16384, 65535,
];

/// Expected plug-in entropy (bits per byte) of `n` uniformly random bytes.
pub fn uniform_entropy(n: u32) -> f64 {
    static TABLE: OnceLock<Vec<f64>> = OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        GRID.iter()
            .map(|&n| {
                let trials = (200_000 / n).clamp(4, 64);
                let mut sum = 0.0;
                for _ in 0..trials {
                    let mut c = [0u32; 256];
                    for _ in 0..n {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        c[(x >> 24) as usize & 255] += 1;
                    }
                    sum += entropy(&c, n);
                }
                sum / f64::from(trials)
            })
            .collect()
    });
    let n = n.clamp(GRID[0], GRID[GRID.len() - 1]);
    let i = GRID.iter().position(|&g| g >= n).unwrap_or(GRID.len() - 1);
    if GRID[i] == n || i == 0 {
        return t[i];
    }
    // Linear in log n between grid points.
    let (a, b) = (f64::from(GRID[i - 1]).ln(), f64::from(GRID[i]).ln());
    let w = (f64::from(n).ln() - a) / (b - a);
    t[i - 1] + w * (t[i] - t[i - 1])
}

fn entropy(c: &[u32; 256], n: u32) -> f64 {
    let n = f64::from(n);
    c.iter()
        .filter(|&&k| k > 0)
        .map(|&k| {
            let p = f64::from(k) / n;
            -p * p.log2()
        })
        .sum()
}

/// How random one direction looks: entropy deficit against uniform bytes.
fn randomness(p: &Payload, cfg: &Shape) -> (bool, f64) {
    if p.sampled < 16 {
        return (false, f64::NAN);
    }
    let deficit = uniform_entropy(p.sampled) - p.entropy;
    (
        deficit <= cfg.tolerance_bits && p.printable <= cfg.max_printable,
        deficit,
    )
}

/// The verdict on one flow.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Looks like an obfuscated or fully encrypted tunnel.
    pub flagged: bool,
    /// The numbers behind it.
    pub evidence: Value,
}

/// Whether a report is ready to be judged.
pub fn ready(s: &Sample, cfg: &Shape) -> bool {
    !s.outbound
        && (s.sample_in.sampled >= cfg.min_bytes
            || (s.cause == crate::sample::Cause::Final && s.sample_in.sampled >= 16))
}

/// Judges a flow from its first-bytes statistics.
pub fn judge(s: &Sample, cfg: &Shape) -> Verdict {
    let (rin, din) = randomness(&s.sample_in, cfg);
    let (rout, dout) = randomness(&s.sample_out, cfg);
    let buckets = (0..8)
        .filter(|&i| s.sample_in.len_hist[i] + s.sample_out.len_hist[i] > 0)
        .count();
    let spread = buckets >= cfg.spread_buckets;
    let expected = cfg.expected_ports.contains(&s.local.port());
    let flagged = !expected && rin && (rout || spread);
    Verdict {
        flagged,
        evidence: json!({
            "in": {"sampled": s.sample_in.sampled, "entropy": s.sample_in.entropy,
                   "uniform": round(uniform_entropy(s.sample_in.sampled)),
                   "deficit": if din.is_nan() { Value::Null } else { json!(round(din)) },
                   "printable": s.sample_in.printable, "random": rin},
            "out": {"sampled": s.sample_out.sampled, "entropy": s.sample_out.entropy,
                    "deficit": if dout.is_nan() { Value::Null } else { json!(round(dout)) },
                    "printable": s.sample_out.printable, "random": rout},
            "length_buckets": buckets, "lengths_spread": spread,
            "expected_port": expected,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::tests::line;

    #[test]
    fn uniform_expectation_is_monotone_and_close_to_8() {
        let mut last = 0.0;
        for n in [16, 50, 100, 500, 1000, 5000, 65535] {
            let h = uniform_entropy(n);
            assert!(h > last, "{n}: {h}");
            last = h;
        }
        assert!(
            (uniform_entropy(1024) - 7.82).abs() < 0.03,
            "{}",
            uniform_entropy(1024)
        );
        assert!(uniform_entropy(65535) > 7.99);
        assert!(
            (uniform_entropy(16) - 4.0).abs() < 0.2,
            "16 bytes are mostly distinct"
        );
    }

    fn sample(ent_in: f64, pr_in: f64, n_in: u32, ent_out: f64, n_out: u32) -> Sample {
        let mut v = line("10.0.0.2:5000", 1.0, 1000, 1000);
        v["sample_in"] = json!({"sampled": n_in, "entropy": ent_in, "printable": pr_in, "len_hist": [0,1,0,0,0,0,0,0]});
        v["sample_out"] = json!({"sampled": n_out, "entropy": ent_out, "printable": 0.37, "len_hist": [0,0,1,0,0,0,0,0]});
        Sample::from_json(&v).unwrap()
    }

    #[test]
    fn verdicts() {
        let cfg = Shape::default();
        // Random both ways (obfs4-like).
        assert!(judge(&sample(7.8, 0.37, 1024, 7.8, 1024), &cfg).flagged);
        // HTTP: text.
        assert!(!judge(&sample(5.2, 1.0, 300, 5.5, 1024), &cfg).flagged);
        // TLS: the client's handshake is structured.
        assert!(!judge(&sample(6.6, 0.45, 517, 7.7, 1024), &cfg).flagged);
        // Expected port.
        let mut s = sample(7.8, 0.37, 1024, 7.8, 1024);
        s.local.set_port(443);
        let cfg443 = Shape {
            expected_ports: vec![443],
            ..Shape::default()
        };
        assert!(!judge(&s, &cfg443).flagged);
    }
}
