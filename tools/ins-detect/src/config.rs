//! The configuration: one TOML file, every field optional (the defaults
//! need no tuning), unknown fields refused, every value range-checked with
//! an error that names the field (`threshold.flag_samples must be …`).
//!
//! ```toml
//! tick_ms = 1000            # detector evaluation period
//! dry_run = false           # decide and log, never mitigate
//! never_block = []          # prefixes no mitigation may touch
//!
//! [threshold]               # per-source thresholds with hysteresis
//! prefix_v4 = [32, 24]      # aggregation levels
//! flag_samples = 2          # k of the last `window` ticks over threshold → flag
//! clear_samples = 5         # consecutive clean ticks → clear
//! action = "block"          # close | rate_limit | block | rotate | alert
//! [threshold.conns]  floor = 100, factor = 10   (per level: see `Metric`)
//!
//! [anomaly]                 # per-connection k-means
//! [graph]                   # communication-graph invariants
//! [shape]                   # entropy / length-clustering strategy
//! [policy]                  # block and rate-limit durations, escalation
//! ```
//!
//! The full list with defaults is [`Config::default`]; `ins-detect
//! --print-config` prints it as TOML.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A mitigation a detector's decision maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Log the decision only.
    Alert,
    /// Reset the connection (`close INST:FLOW`).
    Close,
    /// Rate-limit the source prefix for a while.
    RateLimit,
    /// Block the source prefix for a while.
    Block,
    /// Replace the instance carrying the connection (spawn one, drain and
    /// stop the old one).
    Rotate,
}

impl Action {
    /// The name used in logs and the config.
    pub fn name(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Close => "close",
            Action::RateLimit => "rate_limit",
            Action::Block => "block",
            Action::Rotate => "rotate",
        }
    }
}

/// One threshold metric: a source is over when its value is at least
/// `max(floor, factor × baseline)` (baseline: the population's median
/// over active, unmitigated sources of the same level, smoothed).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Absolute minimum for a flag (per /32 or /128 source; levels with
    /// shorter prefixes multiply it by `level_scale`).
    pub floor: f64,
    /// Multiple of the population baseline.
    pub factor: f64,
}

/// Thresholds with hysteresis over per-source metrics.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Threshold {
    /// On or off.
    pub enabled: bool,
    /// IPv4 aggregation levels (prefix lengths).
    pub prefix_v4: Vec<u8>,
    /// IPv6 aggregation levels.
    pub prefix_v6: Vec<u8>,
    /// A level with a prefix shorter than the host length has its floors
    /// multiplied by this (many addresses share it).
    pub level_scale: f64,
    /// Ticks over threshold, of the last `window`, that raise a flag.
    pub flag_samples: usize,
    /// The evidence window (n of k-of-n).
    pub window: usize,
    /// Consecutive ticks under `clear_ratio` × threshold that clear a flag.
    pub clear_samples: usize,
    /// Fraction of the threshold a clean tick must stay under.
    pub clear_ratio: f64,
    /// A connection is slow once this old …
    pub slow_age_s: f64,
    /// … and moving fewer bytes per second than this (both ways, recent).
    pub slow_rate_bps: f64,
    /// A source with no connection and no new one for this long is
    /// inactive (out of the baseline and forgotten).
    pub inactive_s: f64,
    /// Open inbound connections.
    pub conns: Metric,
    /// Slow-phase connections (see `slow_age_s`, `slow_rate_bps`).
    pub slow: Metric,
    /// New connections per second.
    pub conn_rate: Metric,
    /// Segments received per second.
    pub packet_rate: Metric,
    /// Payload bytes per second, both ways.
    pub byte_rate: Metric,
    /// What a flag does.
    pub action: Action,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold {
            enabled: true,
            prefix_v4: vec![32, 24],
            prefix_v6: vec![128, 64],
            level_scale: 5.0,
            flag_samples: 2,
            window: 3,
            clear_samples: 5,
            clear_ratio: 0.5,
            slow_age_s: 2.0,
            slow_rate_bps: 512.0,
            inactive_s: 30.0,
            conns: Metric {
                floor: 100.0,
                factor: 10.0,
            },
            slow: Metric {
                floor: 24.0,
                factor: 8.0,
            },
            conn_rate: Metric {
                floor: 100.0,
                factor: 10.0,
            },
            packet_rate: Metric {
                floor: 50_000.0,
                factor: 20.0,
            },
            byte_rate: Metric {
                floor: 200e6,
                factor: 20.0,
            },
            action: Action::Block,
        }
    }
}

/// Per-connection resource anomaly (k-means over standardised features).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Anomaly {
    /// On or off.
    pub enabled: bool,
    /// Seconds of traffic the first model is trained on.
    pub train_s: f64,
    /// Fewest samples to train on (training waits for them).
    pub min_samples: usize,
    /// Most samples kept for training (reservoir).
    pub max_samples: usize,
    /// Clusters.
    pub k: usize,
    /// Lloyd iterations.
    pub iterations: usize,
    /// A cluster's radius is this quantile of its members' distances …
    pub quantile: f64,
    /// … times this margin, and at least `min_radius`.
    pub margin: f64,
    /// Smallest radius (standardised units).
    pub min_radius: f64,
    /// Retrain on recent unflagged samples this often (0 = never).
    pub retrain_s: f64,
    /// Only connections at least this old are scored.
    pub min_age_s: f64,
    /// Only connections moving fewer bytes per second than this (recent,
    /// both ways) are acted on: an outlier that makes progress (a slow but
    /// working client) is left alone.
    pub progress_bps: f64,
    /// k of k-of-n: outlier ticks needed …
    pub evidence_k: usize,
    /// … of the last n ticks.
    pub evidence_n: usize,
    /// What an outlier connection gets.
    pub action: Action,
    /// After this many acted-on connections of one source (within
    /// `escalate_window_s`) the source gets `escalate_action`; 0 = never.
    pub escalate_after: usize,
    /// Window for `escalate_after`.
    pub escalate_window_s: f64,
    /// The source-level action.
    pub escalate_action: Action,
}

impl Default for Anomaly {
    fn default() -> Self {
        Anomaly {
            enabled: true,
            train_s: 15.0,
            min_samples: 100,
            max_samples: 20_000,
            k: 4,
            iterations: 25,
            quantile: 0.99,
            margin: 1.5,
            min_radius: 3.0,
            retrain_s: 600.0,
            min_age_s: 2.0,
            progress_bps: 512.0,
            evidence_k: 3,
            evidence_n: 4,
            action: Action::Close,
            escalate_after: 16,
            escalate_window_s: 30.0,
            escalate_action: Action::Block,
        }
    }
}

/// Communication-graph invariants.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Graph {
    /// On or off.
    pub enabled: bool,
    /// Learning window: edges seen in it are normal, nothing is alerted.
    pub learn_s: f64,
    /// Evaluation interval for fan-out and byte ratios after learning.
    pub interval_s: f64,
    /// Outbound destinations are grouped by this prefix length (IPv4) …
    pub dest_prefix_v4: u8,
    /// … and this one (IPv6).
    pub dest_prefix_v6: u8,
    /// Fan-out alert: distinct outbound destinations in an interval above
    /// `max(fanout_floor, fanout_factor × learned maximum)`.
    pub fanout_factor: f64,
    /// See `fanout_factor`.
    pub fanout_floor: usize,
    /// Ratio alert: outbound/inbound bytes of an interval above
    /// `ratio_factor × learned maximum` …
    pub ratio_factor: f64,
    /// … with at least this many outbound bytes in the interval.
    pub ratio_min_bytes: u64,
    /// Alert on outbound connections to destinations not learned.
    pub new_destinations: bool,
    /// Destinations (prefixes) that are never alerted.
    pub allow: Vec<String>,
    /// What an alert does (rotate: replace the instance).
    pub action: Action,
}

impl Default for Graph {
    fn default() -> Self {
        Graph {
            enabled: true,
            learn_s: 20.0,
            interval_s: 5.0,
            dest_prefix_v4: 32,
            dest_prefix_v6: 64,
            fanout_factor: 3.0,
            fanout_floor: 8,
            ratio_factor: 10.0,
            ratio_min_bytes: 1 << 20,
            new_destinations: true,
            allow: Vec::new(),
            action: Action::Alert,
        }
    }
}

/// Traffic-shape strategy: entropy and length clustering of first bytes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shape {
    /// On or off.
    pub enabled: bool,
    /// Fewest inbound bytes sampled before a flow is judged.
    pub min_bytes: u32,
    /// A direction looks random when its entropy is within this many bits
    /// of what uniform random bytes of the same count give …
    pub tolerance_bits: f64,
    /// … and its printable share is at most this.
    pub max_printable: f64,
    /// Length clustering: chunk lengths spread over at least this many
    /// histogram buckets (both directions) count as unclustered.
    pub spread_buckets: usize,
    /// Local ports where encrypted tunnels are expected (not flagged).
    pub expected_ports: Vec<u16>,
    /// What a flagged flow gets.
    pub action: Action,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            enabled: true,
            min_bytes: 96,
            tolerance_bits: 0.35,
            max_printable: 0.6,
            spread_buckets: 3,
            expected_ports: Vec::new(),
            action: Action::Alert,
        }
    }
}

/// Mitigation policy shared by the detectors.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// First block lasts this long …
    pub block_s: f64,
    /// … each repeat within `repeat_window_s` doubles it, up to this.
    pub max_block_s: f64,
    /// See `max_block_s`.
    pub repeat_window_s: f64,
    /// A rate limit lasts this long.
    pub limit_s: f64,
    /// Rate limit: new connections per second per source address.
    pub limit_conn_rate: u64,
    /// Rate limit: bytes per second per source address.
    pub limit_byte_rate: u64,
    /// A block or limit is lifted only when its flag is clear; otherwise it
    /// is extended by its duration.
    pub release_needs_clear: bool,
    /// Smallest gap between two rotations.
    pub rotate_min_gap_s: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            block_s: 60.0,
            max_block_s: 960.0,
            repeat_window_s: 600.0,
            limit_s: 60.0,
            limit_conn_rate: 5,
            limit_byte_rate: 64 * 1024,
            release_needs_clear: true,
            rotate_min_gap_s: 30.0,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Evaluation period of the detectors (the timer), milliseconds.
    pub tick_ms: u64,
    /// Decide and log, never send a mitigation.
    pub dry_run: bool,
    /// Prefixes (ADDR or ADDR/LEN) that no mitigation may touch.
    pub never_block: Vec<String>,
    /// Thresholds with hysteresis.
    pub threshold: Threshold,
    /// Per-connection anomaly.
    pub anomaly: Anomaly,
    /// Communication graph.
    pub graph: Graph,
    /// Traffic shape.
    pub shape: Shape,
    /// Mitigation policy.
    pub policy: Policy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tick_ms: 1000,
            dry_run: false,
            never_block: Vec::new(),
            threshold: Threshold::default(),
            anomaly: Anomaly::default(),
            graph: Graph::default(),
            shape: Shape::default(),
            policy: Policy::default(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not TOML, an unknown field or a value of the wrong type (the
    /// parser's message names the field and shows the line).
    #[error("{path}: {msg}")]
    Parse {
        /// File.
        path: String,
        /// The parser's message.
        msg: String,
    },
    /// A value out of range.
    #[error("{path}: {field} {problem}")]
    Invalid {
        /// File.
        path: String,
        /// The field, as a dotted path.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

/// A prefix as ADDR/LEN, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    /// Network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Net {
    /// The prefix of length `len` containing `ip` (IPv4-mapped IPv6
    /// addresses count as IPv4).
    pub fn of(ip: IpAddr, len: u8) -> Net {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => {
                let len = len.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Net {
                    addr: IpAddr::V4((u32::from(a) & mask).into()),
                    len,
                }
            }
            IpAddr::V6(a) => {
                let len = len.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Net {
                    addr: IpAddr::V6((u128::from(a) & mask).into()),
                    len,
                }
            }
        }
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let host = if self.addr.is_ipv4() { 32 } else { 128 };
        let n = Net::of(ip, self.len.min(host));
        n.addr == self.addr
    }

    /// Whether this is a single address.
    pub fn is_host(&self) -> bool {
        self.len == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Parses `ADDR` or `ADDR/LEN` (host bits must be zero).
    pub fn parse(s: &str) -> Result<Net, String> {
        let (a, l) = s.split_once('/').map_or((s, None), |(a, l)| (a, Some(l)));
        let ip: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("prefix length {l:?} is not 0 ..= {max}"))?,
        };
        let n = Net::of(ip, len);
        if n.addr != ip {
            return Err(format!("{s:?} has host bits set"));
        }
        Ok(n)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

struct Check<'a> {
    path: &'a str,
}

impl Check<'_> {
    fn err(&self, field: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_string(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }
    fn pos(&self, field: &str, v: f64) -> Result<(), ConfigError> {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(self.err(field, format!("must be a positive number, not {v}")))
        }
    }
    fn nonneg(&self, field: &str, v: f64) -> Result<(), ConfigError> {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(self.err(field, format!("must be zero or positive, not {v}")))
        }
    }
    fn frac(&self, field: &str, v: f64) -> Result<(), ConfigError> {
        if v > 0.0 && v <= 1.0 {
            Ok(())
        } else {
            Err(self.err(field, format!("must be in (0, 1], not {v}")))
        }
    }
    fn count(&self, field: &str, v: usize, min: usize, max: usize) -> Result<(), ConfigError> {
        if (min..=max).contains(&v) {
            Ok(())
        } else {
            Err(self.err(field, format!("must be in {min} ..= {max}, not {v}")))
        }
    }
    fn metric(&self, field: &str, m: &Metric) -> Result<(), ConfigError> {
        self.pos(&format!("{field}.floor"), m.floor)?;
        self.pos(&format!("{field}.factor"), m.factor)
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Config::parse(&text, &p)
    }

    /// Parses and validates TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            msg: e.to_string().trim_end().to_string(),
        })?;
        c.validate(path)?;
        Ok(c)
    }

    /// Checks every range; the first problem is returned.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let c = Check { path };
        if !(50..=60_000).contains(&self.tick_ms) {
            return Err(c.err("tick_ms", "must be in 50 ..= 60000"));
        }
        for (i, p) in self.never_block.iter().enumerate() {
            Net::parse(p).map_err(|e| c.err(&format!("never_block[{i}]"), e))?;
        }
        let t = &self.threshold;
        for (i, &l) in t.prefix_v4.iter().enumerate() {
            if !(8..=32).contains(&l) {
                return Err(c.err(&format!("threshold.prefix_v4[{i}]"), "must be in 8 ..= 32"));
            }
        }
        for (i, &l) in t.prefix_v6.iter().enumerate() {
            if !(16..=128).contains(&l) {
                return Err(c.err(
                    &format!("threshold.prefix_v6[{i}]"),
                    "must be in 16 ..= 128",
                ));
            }
        }
        if t.prefix_v4.is_empty() || t.prefix_v6.is_empty() {
            return Err(c.err("threshold.prefix_v4/prefix_v6", "must not be empty"));
        }
        c.pos("threshold.level_scale", t.level_scale)?;
        c.count("threshold.window", t.window, 1, 64)?;
        c.count("threshold.flag_samples", t.flag_samples, 1, t.window)?;
        c.count("threshold.clear_samples", t.clear_samples, 1, 1000)?;
        c.frac("threshold.clear_ratio", t.clear_ratio)?;
        c.nonneg("threshold.slow_age_s", t.slow_age_s)?;
        c.pos("threshold.slow_rate_bps", t.slow_rate_bps)?;
        c.pos("threshold.inactive_s", t.inactive_s)?;
        c.metric("threshold.conns", &t.conns)?;
        c.metric("threshold.slow", &t.slow)?;
        c.metric("threshold.conn_rate", &t.conn_rate)?;
        c.metric("threshold.packet_rate", &t.packet_rate)?;
        c.metric("threshold.byte_rate", &t.byte_rate)?;
        let one_of = |field: &str, a: Action, ok: &[Action]| {
            if ok.contains(&a) {
                Ok(())
            } else {
                let names: Vec<&str> = ok.iter().map(|x| x.name()).collect();
                Err(c.err(
                    field,
                    format!("{:?} is not one of {}", a.name(), names.join(", ")),
                ))
            }
        };
        let source_actions = [Action::Alert, Action::RateLimit, Action::Block];
        one_of("threshold.action", t.action, &source_actions)?;
        one_of(
            "anomaly.escalate_action",
            self.anomaly.escalate_action,
            &source_actions,
        )?;
        one_of(
            "graph.action",
            self.graph.action,
            &[Action::Alert, Action::Close, Action::Rotate],
        )?;
        let a = &self.anomaly;
        c.pos("anomaly.train_s", a.train_s)?;
        c.count("anomaly.k", a.k, 1, 64)?;
        c.count("anomaly.min_samples", a.min_samples, a.k.max(2), 10_000_000)?;
        c.count(
            "anomaly.max_samples",
            a.max_samples,
            a.min_samples,
            10_000_000,
        )?;
        c.count("anomaly.iterations", a.iterations, 1, 1000)?;
        c.frac("anomaly.quantile", a.quantile)?;
        c.pos("anomaly.margin", a.margin)?;
        c.pos("anomaly.min_radius", a.min_radius)?;
        c.nonneg("anomaly.retrain_s", a.retrain_s)?;
        c.nonneg("anomaly.min_age_s", a.min_age_s)?;
        c.nonneg("anomaly.progress_bps", a.progress_bps)?;
        c.count("anomaly.evidence_n", a.evidence_n, 1, 64)?;
        c.count("anomaly.evidence_k", a.evidence_k, 1, a.evidence_n)?;
        c.pos("anomaly.escalate_window_s", a.escalate_window_s)?;
        let g = &self.graph;
        c.pos("graph.learn_s", g.learn_s)?;
        c.pos("graph.interval_s", g.interval_s)?;
        if !(8..=32).contains(&g.dest_prefix_v4) {
            return Err(c.err("graph.dest_prefix_v4", "must be in 8 ..= 32"));
        }
        if !(16..=128).contains(&g.dest_prefix_v6) {
            return Err(c.err("graph.dest_prefix_v6", "must be in 16 ..= 128"));
        }
        c.pos("graph.fanout_factor", g.fanout_factor)?;
        c.count("graph.fanout_floor", g.fanout_floor, 1, 1_000_000)?;
        c.pos("graph.ratio_factor", g.ratio_factor)?;
        for (i, p) in g.allow.iter().enumerate() {
            Net::parse(p).map_err(|e| c.err(&format!("graph.allow[{i}]"), e))?;
        }
        let s = &self.shape;
        c.count("shape.min_bytes", s.min_bytes as usize, 16, 65_535)?;
        c.pos("shape.tolerance_bits", s.tolerance_bits)?;
        c.frac("shape.max_printable", s.max_printable)?;
        c.count("shape.spread_buckets", s.spread_buckets, 1, 8)?;
        let p = &self.policy;
        c.pos("policy.block_s", p.block_s)?;
        if p.max_block_s < p.block_s {
            return Err(c.err("policy.max_block_s", "must be at least policy.block_s"));
        }
        c.pos("policy.repeat_window_s", p.repeat_window_s)?;
        c.pos("policy.limit_s", p.limit_s)?;
        if p.limit_conn_rate == 0 && p.limit_byte_rate == 0 {
            return Err(c.err(
                "policy.limit_conn_rate/limit_byte_rate",
                "cannot both be 0 (that is no limit)",
            ));
        }
        c.nonneg("policy.rotate_min_gap_s", p.rotate_min_gap_s)?;
        Ok(())
    }

    /// The never-block prefixes, parsed (validated already).
    pub fn never_block_nets(&self) -> Vec<Net> {
        self.never_block
            .iter()
            .filter_map(|p| Net::parse(p).ok())
            .collect()
    }

    /// The configuration as TOML (for `--print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let d = Config::default();
        d.validate("default").unwrap();
        let back = Config::parse(&d.to_toml(), "x").unwrap();
        assert_eq!(back, d);
        assert_eq!(Config::parse("", "empty").unwrap(), d);
    }

    #[test]
    fn errors_name_the_field() {
        let e = |t: &str| Config::parse(t, "detect.toml").unwrap_err().to_string();
        let m = e("[threshold]\nflag_samples = 0\n");
        assert!(m.contains("threshold.flag_samples"), "{m}");
        let m = e("[threshold]\nflag_samples = 9\n");
        assert!(
            m.contains("threshold.flag_samples") && m.contains("1 ..= 3"),
            "{m}"
        );
        let m = e("[anomaly]\nquantile = 1.5\n");
        assert!(m.contains("anomaly.quantile"), "{m}");
        let m = e("never_block = [\"10.0.0.1/8\"]\n");
        assert!(
            m.contains("never_block[0]") && m.contains("host bits"),
            "{m}"
        );
        let m = e("[threshold.slow]\nfloor = -1\nfactor = 2\n");
        assert!(m.contains("threshold.slow.floor"), "{m}");
        // Unknown fields and wrong types: the parser names the key.
        let m = e("[graph]\nlearn_seconds = 3\n");
        assert!(m.contains("learn_seconds"), "{m}");
        let m = e("[shape]\nmin_bytes = \"many\"\n");
        assert!(m.contains("min_bytes"), "{m}");
        let m = e("[policy]\naction = \"nuke\"\n");
        assert!(m.contains("action"), "{m}");
        let m = e("[threshold]\naction = \"nuke\"\n");
        assert!(m.contains("nuke"), "{m}");
        let m = e("[threshold]\naction = \"close\"\n");
        assert!(m.contains("threshold.action") && m.contains("block"), "{m}");
        let m = e("[graph]\naction = \"block\"\n");
        assert!(m.contains("graph.action"), "{m}");
    }

    #[test]
    fn nets() {
        let n = Net::parse("10.1.2.0/24").unwrap();
        assert!(n.contains("10.1.2.77".parse().unwrap()));
        assert!(!n.contains("10.1.3.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.9".parse().unwrap()));
        assert_eq!(
            Net::of("10.1.2.3".parse().unwrap(), 24).to_string(),
            "10.1.2.0/24"
        );
        assert!(Net::parse("10.1.2.3/24").is_err());
        assert!(
            Net::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8::9".parse().unwrap())
        );
        assert!(Net::parse("10.0.0.1").unwrap().is_host());
    }
}
