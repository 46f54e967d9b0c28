//! The mitigation engine: block lists, per-prefix rate limits, and drain.
//!
//! Policy (what to block) is decided outside the instance; this module only
//! enforces the rules it is given.
//!
//! # Matching
//!
//! Rules are keyed by [`Prefix`] (IPv4 or IPv6, host bits zeroed). A peer
//! address is canonicalized first: an IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`) is treated as the IPv4 address, so IPv4 prefixes match
//! it. Likewise a prefix given as `::ffff:a.b.c.d/n` with `n ≥ 96` is stored
//! as the IPv4 prefix `a.b.c.d/(n-96)`. IPv6 prefixes shorter than /96 do not
//! match IPv4 peers.
//!
//! * **Blocking** is any-match: a peer is blocked if any blocked prefix
//!   contains it.
//! * **Rate limits** are longest-match: the most specific limited prefix that
//!   contains the peer applies, and only that one.
//!
//! Lookups cost one hash probe per *distinct prefix length in use* (at most 33
//! for IPv4, 129 for IPv6), never a scan of the rules.
//!
//! # Rate limits
//!
//! A limit on a prefix is **one aggregate token bucket per prefix** (not one
//! per source address inside it) for new connections per second, and another
//! for bytes per second, each with its own burst. Buckets start full, refill
//! continuously at `per_sec` tokens per second up to `burst`, and use exact
//! integer arithmetic (tokens are kept in units of 10⁻⁹ token), so over any
//! interval `T` a bucket hands out at most `burst + per_sec · T` tokens and,
//! when continuously drained, no fewer than `per_sec · T` minus one token.
//! Replacing a limit with a different one starts fresh full buckets; setting
//! the same limit again changes nothing.
//!
//! # Invariants
//!
//! * Time is monotonic nanoseconds passed by the caller; a bucket ignores a
//!   `now` earlier than the last one it saw.
//! * At most `max_rules` blocks plus limits are held.
//!
//! Size: over 800 lines, a third tests; block lists, rate limits and drain
//! share the prefix table.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::hash::HashMap;

const NANOS: u128 = 1_000_000_000;

/// An IP prefix with its host bits zeroed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Errors building a [`Prefix`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Length above 32 (IPv4) or 128 (IPv6).
    #[error("prefix length {len} too long for the address family (max {max})")]
    TooLong {
        /// The length given.
        len: u8,
        /// The family's maximum.
        max: u8,
    },
    /// Unparseable text.
    #[error("not a prefix: {0:?} (expected ADDR or ADDR/LEN)")]
    Syntax(String),
}

fn mask(bits: u128, len: u8, width: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let shift = width - len;
        let m = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        bits & (m >> shift << shift)
    }
}

impl Prefix {
    /// A prefix of `len` bits of `addr`; host bits are cleared, and an
    /// IPv4-mapped IPv6 prefix of length ≥ 96 becomes the IPv4 prefix.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        let (addr, len) = match addr {
            IpAddr::V6(a) if len >= 96 && a.to_ipv4_mapped().is_some() => {
                (IpAddr::V4(a.to_ipv4_mapped().expect("checked")), len - 96)
            }
            other => (other, len),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError::TooLong { len, max });
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(
                mask(u128::from(a.to_bits()), len, 32) as u32,
            )),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from_bits(mask(a.to_bits(), len, 128))),
        };
        Ok(Prefix { addr, len })
    }

    /// A prefix holding exactly one address (/32 or /128).
    pub fn host(addr: IpAddr) -> Prefix {
        let addr = addr.to_canonical();
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Prefix { addr, len }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is a /0 (matches a whole family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` (canonicalized) lies inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let k = key_of(ip.to_canonical());
        k.0 == self.addr.is_ipv6() && mask(k.1, self.len, k.2) == key_of(self.addr).1
    }

    fn key(&self) -> (bool, u8, u128) {
        let (v6, bits, _) = key_of(self.addr);
        (v6, self.len, bits)
    }
}

/// (is_v6, bits, width)
fn key_of(ip: IpAddr) -> (bool, u128, u8) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(a.to_bits()), 32),
        IpAddr::V6(a) => (true, a.to_bits(), 128),
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let bad = || PrefixError::Syntax(s.to_owned());
        match s.split_once('/') {
            None => Ok(Prefix::host(s.parse().map_err(|_| bad())?)),
            Some((a, l)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad())?;
                let len: u8 = l.parse().map_err(|_| bad())?;
                Prefix::new(addr, len)
            }
        }
    }
}

/// A map from prefixes to values with lookups in O(distinct lengths in use).
#[derive(Clone, Debug)]
struct PrefixMap<V> {
    map: HashMap<(bool, u8, u128), (Prefix, V)>,
    /// Per family (v4, v6): how many entries have each length.
    counts: [Vec<u32>; 2],
    /// Per family: lengths with a non-zero count, longest first.
    lens: [Vec<u8>; 2],
}

impl<V> PrefixMap<V> {
    fn new() -> Self {
        PrefixMap {
            map: HashMap::default(),
            counts: [vec![0; 33], vec![0; 129]],
            lens: [Vec::new(), Vec::new()],
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn get_mut(&mut self, p: &Prefix) -> Option<&mut V> {
        self.map.get_mut(&p.key()).map(|e| &mut e.1)
    }

    /// Inserts or replaces; returns the old value.
    fn insert(&mut self, p: Prefix, v: V) -> Option<V> {
        let k = p.key();
        let old = self.map.insert(k, (p, v)).map(|e| e.1);
        if old.is_none() {
            let fam = usize::from(k.0);
            self.counts[fam][usize::from(k.1)] += 1;
            if self.counts[fam][usize::from(k.1)] == 1 {
                let lens = &mut self.lens[fam];
                let at = lens.partition_point(|&l| l > k.1);
                lens.insert(at, k.1);
            }
        }
        old
    }

    fn remove(&mut self, p: &Prefix) -> Option<V> {
        let k = p.key();
        let (_, v) = self.map.remove(&k)?;
        let fam = usize::from(k.0);
        self.counts[fam][usize::from(k.1)] -= 1;
        if self.counts[fam][usize::from(k.1)] == 0 {
            self.lens[fam].retain(|&l| l != k.1);
        }
        Some(v)
    }

    /// The key of the longest prefix containing `ip`.
    fn longest_key(&self, ip: IpAddr) -> Option<(bool, u8, u128)> {
        let (v6, bits, width) = key_of(ip.to_canonical());
        self.lens[usize::from(v6)]
            .iter()
            .map(|&len| (v6, len, mask(bits, len, width)))
            .find(|k| self.map.contains_key(k))
    }

    fn longest_mut(&mut self, ip: IpAddr) -> Option<&mut (Prefix, V)> {
        let k = self.longest_key(ip)?;
        self.map.get_mut(&k)
    }

    fn iter(&self) -> impl Iterator<Item = &(Prefix, V)> {
        self.map.values()
    }
}

/// A token bucket with exact integer refill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    per_sec: u64,
    burst: u64,
    /// Tokens × 10⁹.
    scaled: u128,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket refilling `per_sec` tokens per second up to `burst`.
    /// Both must be non-zero ([`Rate::validate`]).
    pub fn new(rate: Rate, now: u64) -> Self {
        TokenBucket {
            per_sec: rate.per_sec,
            burst: rate.burst,
            scaled: u128::from(rate.burst) * NANOS,
            last_ns: now,
        }
    }

    fn refill(&mut self, now: u64) {
        if now > self.last_ns {
            let add = u128::from(now - self.last_ns).saturating_mul(u128::from(self.per_sec));
            self.scaled = self
                .scaled
                .saturating_add(add)
                .min(u128::from(self.burst) * NANOS);
            self.last_ns = now;
        }
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: u64) -> u64 {
        self.refill(now);
        (self.scaled / NANOS) as u64
    }

    /// Takes `n` tokens if all are available.
    pub fn try_take(&mut self, n: u64, now: u64) -> bool {
        self.refill(now);
        let need = u128::from(n) * NANOS;
        if self.scaled >= need {
            self.scaled -= need;
            true
        } else {
            false
        }
    }

    /// Takes as many tokens as are available, up to `n`; returns how many.
    pub fn take_up_to(&mut self, n: u64, now: u64) -> u64 {
        let got = self.available(now).min(n);
        self.scaled -= u128::from(got) * NANOS;
        got
    }

    /// The earliest time ≥ `now` at which `min(n, burst)` tokens are available.
    pub fn ready_at(&mut self, n: u64, now: u64) -> u64 {
        self.refill(now);
        let need = u128::from(n.min(self.burst)) * NANOS;
        if self.scaled >= need {
            return now.max(self.last_ns);
        }
        let wait = (need - self.scaled).div_ceil(u128::from(self.per_sec));
        self.last_ns
            .saturating_add(u64::try_from(wait).unwrap_or(u64::MAX))
    }
}

/// A rate with a burst: `per_sec` tokens per second, at most `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Sustained tokens per second (> 0).
    pub per_sec: u64,
    /// Bucket capacity (> 0).
    pub burst: u64,
}

impl Rate {
    /// Checks that both numbers are non-zero.
    pub fn validate(&self) -> Result<(), MitigationError> {
        if self.per_sec == 0 || self.burst == 0 {
            Err(MitigationError::ZeroRate)
        } else {
            Ok(())
        }
    }
}

/// The limits on one prefix; `None` leaves that dimension unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LimitSpec {
    /// New connections (accepted TCP connections, new UDP flows) per second.
    pub connections: Option<Rate>,
    /// Bytes per second, both directions together.
    pub bytes: Option<Rate>,
}

/// Result of [`Mitigations::admit_connection`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Admit {
    /// Let it in.
    Accept,
    /// The peer is in a blocked prefix.
    RefuseBlocked,
    /// The peer's prefix has no connection tokens left.
    RefuseRateLimited,
    /// The instance is draining: no new connections at all.
    RefuseDraining,
}

/// Errors of rule changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MitigationError {
    /// The rule table is full.
    #[error("too many mitigation rules (max {0})")]
    TooManyRules(usize),
    /// A rate or burst of zero.
    #[error("rate and burst must be non-zero")]
    ZeroRate,
}

/// Counters of refusals, for reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MitigationStats {
    /// Connections refused because the peer was blocked.
    pub refused_blocked: u64,
    /// Connections refused by a connection-rate limit.
    pub refused_rate_limited: u64,
    /// Connections refused while draining.
    pub refused_draining: u64,
    /// Bytes held back by byte-rate limits (wanted minus allowed).
    pub bytes_deferred: u64,
}

/// What [`Mitigations::list`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MitigationList {
    /// Blocked prefixes, sorted.
    pub blocked: Vec<Prefix>,
    /// Limited prefixes and their limits, sorted by prefix.
    pub limits: Vec<(Prefix, LimitSpec)>,
    /// Whether new connections are refused.
    pub draining: bool,
    /// Refusal counters.
    pub stats: MitigationStats,
}

#[derive(Clone, Debug)]
struct Limit {
    spec: LimitSpec,
    conn: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

/// The mitigation engine. See the module docs.
#[derive(Clone, Debug)]
pub struct Mitigations {
    blocks: PrefixMap<()>,
    limits: PrefixMap<Limit>,
    draining: bool,
    max_rules: usize,
    stats: MitigationStats,
}

impl Mitigations {
    /// An engine with no rules that holds at most `max_rules` rules.
    pub fn new(max_rules: usize) -> Self {
        Mitigations {
            blocks: PrefixMap::new(),
            limits: PrefixMap::new(),
            draining: false,
            max_rules,
            stats: MitigationStats::default(),
        }
    }

    fn rule_count(&self) -> usize {
        self.blocks.len() + self.limits.len()
    }

    /// Blocks a prefix. Returns whether it was not blocked before.
    pub fn block(&mut self, p: Prefix) -> Result<bool, MitigationError> {
        if self.blocks.get_mut(&p).is_some() {
            return Ok(false);
        }
        if self.rule_count() >= self.max_rules {
            return Err(MitigationError::TooManyRules(self.max_rules));
        }
        self.blocks.insert(p, ());
        Ok(true)
    }

    /// Unblocks exactly this prefix (not narrower or wider ones). Returns
    /// whether it was blocked.
    pub fn unblock(&mut self, p: &Prefix) -> bool {
        self.blocks.remove(p).is_some()
    }

    /// Sets the limits of a prefix. Returns whether anything changed; a new
    /// or different spec starts with full buckets at `now`.
    pub fn limit(&mut self, p: Prefix, spec: LimitSpec, now: u64) -> Result<bool, MitigationError> {
        if let Some(r) = spec.connections {
            r.validate()?;
        }
        if let Some(r) = spec.bytes {
            r.validate()?;
        }
        let exists = match self.limits.get_mut(&p) {
            Some(l) if l.spec == spec => return Ok(false),
            Some(_) => true,
            None => false,
        };
        if !exists && self.rule_count() >= self.max_rules {
            return Err(MitigationError::TooManyRules(self.max_rules));
        }
        let limit = Limit {
            spec,
            conn: spec.connections.map(|r| TokenBucket::new(r, now)),
            bytes: spec.bytes.map(|r| TokenBucket::new(r, now)),
        };
        self.limits.insert(p, limit);
        Ok(true)
    }

    /// Removes the limits of exactly this prefix. Returns whether it had any.
    pub fn clear_limit(&mut self, p: &Prefix) -> bool {
        self.limits.remove(p).is_some()
    }

    /// Stops admitting new connections. Returns whether that is a change.
    pub fn drain(&mut self) -> bool {
        !core::mem::replace(&mut self.draining, true)
    }

    /// Admits new connections again. Returns whether that is a change.
    pub fn resume(&mut self) -> bool {
        core::mem::replace(&mut self.draining, false)
    }

    /// Whether the engine is draining.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Whether any blocked prefix contains `ip`.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        self.blocks.longest_key(ip).is_some()
    }

    /// The prefix whose limit applies to `ip` (the longest limited one).
    pub fn limiting_prefix(&self, ip: IpAddr) -> Option<Prefix> {
        let k = self.limits.longest_key(ip)?;
        self.limits.map.get(&k).map(|e| e.0)
    }

    /// Decides on a new connection (or new UDP flow) from `peer`, consuming a
    /// connection token when accepted. Order: draining, blocked, rate.
    pub fn admit_connection(&mut self, peer: IpAddr, now: u64) -> Admit {
        if self.draining {
            self.stats.refused_draining += 1;
            return Admit::RefuseDraining;
        }
        if self.is_blocked(peer) {
            self.stats.refused_blocked += 1;
            return Admit::RefuseBlocked;
        }
        if let Some((_, l)) = self.limits.longest_mut(peer)
            && let Some(b) = &mut l.conn
            && !b.try_take(1, now)
        {
            self.stats.refused_rate_limited += 1;
            return Admit::RefuseRateLimited;
        }
        Admit::Accept
    }

    /// How many of `wanted` bytes a flow from `peer` may move now; the bytes
    /// are consumed from the prefix's byte bucket. `wanted` when no byte limit
    /// applies; 0 for a blocked peer (its flows should be closed).
    pub fn bytes_allowance(&mut self, peer: IpAddr, now: u64, wanted: usize) -> usize {
        if self.is_blocked(peer) {
            return 0;
        }
        let allowed = match self.limits.longest_mut(peer) {
            Some((_, Limit { bytes: Some(b), .. })) => {
                b.take_up_to(u64::try_from(wanted).unwrap_or(u64::MAX), now) as usize
            }
            _ => wanted,
        };
        self.stats.bytes_deferred = self
            .stats
            .bytes_deferred
            .saturating_add((wanted - allowed) as u64);
        allowed
    }

    /// When `min(wanted, burst)` bytes will be allowed for `peer` (ns, ≥ now),
    /// so the executor can schedule a retry; `None` if no byte limit applies
    /// (or the peer is blocked, when no retry will help).
    pub fn next_refill(&mut self, peer: IpAddr, now: u64, wanted: usize) -> Option<u64> {
        if self.is_blocked(peer) {
            return None;
        }
        match self.limits.longest_mut(peer) {
            Some((_, Limit { bytes: Some(b), .. })) => {
                Some(b.ready_at(u64::try_from(wanted).unwrap_or(u64::MAX), now))
            }
            _ => None,
        }
    }

    /// Refusal counters.
    pub fn stats(&self) -> MitigationStats {
        self.stats
    }

    /// All rules, sorted, with the drain state and counters.
    pub fn list(&self) -> MitigationList {
        let mut blocked: Vec<Prefix> = self.blocks.iter().map(|e| e.0).collect();
        blocked.sort();
        let mut limits: Vec<(Prefix, LimitSpec)> =
            self.limits.iter().map(|(p, l)| (*p, l.spec)).collect();
        limits.sort_by_key(|e| e.0);
        MitigationList {
            blocked,
            limits,
            draining: self.draining,
            stats: self.stats,
        }
    }

    /// Removes every block and limit (drain state stays).
    pub fn clear(&mut self) {
        self.blocks = PrefixMap::new();
        self.limits = PrefixMap::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::prelude::rust_2024::*;

    const S: u64 = 1_000_000_000;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_parse_normalize() {
        assert_eq!(p("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(p("::ffff:10.1.2.3/104").to_string(), "10.0.0.0/8");
        assert_eq!(p("::ffff:10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(p("2001:db8::1/32").to_string(), "2001:db8::/32");
        assert_eq!(p("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert!(matches!(
            "10.0.0.0/33".parse::<Prefix>(),
            Err(PrefixError::TooLong { len: 33, max: 32 })
        ));
        assert!("::/129".parse::<Prefix>().is_err());
        assert!(matches!(
            "10.0.0/8".parse::<Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
        assert!("10.0.0.0/x".parse::<Prefix>().is_err());
        assert!(p("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(p("10.0.0.0/8").contains(ip("::ffff:10.255.0.1")));
        assert!(!p("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(!p("::/0").contains(ip("10.0.0.1")));
    }

    #[test]
    fn block_unblock_and_mapped() {
        let mut m = Mitigations::new(100);
        assert_eq!(m.block(p("192.0.2.0/24")), Ok(true));
        assert_eq!(
            m.block(p("192.0.2.9/24")),
            Ok(false),
            "same prefix after normalization"
        );
        assert_eq!(m.block(p("2001:db8::/48")), Ok(true));
        assert!(m.is_blocked(ip("192.0.2.200")));
        assert!(m.is_blocked(ip("::ffff:192.0.2.200")));
        assert!(!m.is_blocked(ip("192.0.3.1")));
        assert!(m.is_blocked(ip("2001:db8:0:ffff::1")));
        assert!(!m.is_blocked(ip("2001:db8:1::1")));
        assert_eq!(m.admit_connection(ip("192.0.2.1"), 0), Admit::RefuseBlocked);
        assert_eq!(m.bytes_allowance(ip("192.0.2.1"), 0, 100), 0);
        assert_eq!(m.bytes_allowance(ip("192.0.3.1"), 0, 100), 100);
        assert!(!m.unblock(&p("192.0.2.0/25")));
        assert!(m.unblock(&p("192.0.2.0/24")));
        assert!(!m.is_blocked(ip("192.0.2.200")));
        assert_eq!(m.admit_connection(ip("192.0.2.1"), 0), Admit::Accept);
        assert_eq!(m.stats().refused_blocked, 1);
    }

    #[test]
    fn rule_limit_and_zero_rate() {
        let mut m = Mitigations::new(2);
        m.block(p("1.0.0.0/8")).unwrap();
        let spec = LimitSpec {
            connections: Some(Rate {
                per_sec: 1,
                burst: 1,
            }),
            bytes: None,
        };
        assert_eq!(m.limit(p("2.0.0.0/8"), spec, 0), Ok(true));
        assert_eq!(m.limit(p("2.0.0.0/8"), spec, 0), Ok(false));
        assert_eq!(
            m.block(p("3.0.0.0/8")),
            Err(MitigationError::TooManyRules(2))
        );
        assert_eq!(
            m.block(p("1.0.0.0/8")),
            Ok(false),
            "existing rule still fine when full"
        );
        let zero = LimitSpec {
            connections: Some(Rate {
                per_sec: 0,
                burst: 1,
            }),
            bytes: None,
        };
        assert_eq!(
            m.limit(p("2.0.0.0/8"), zero, 0),
            Err(MitigationError::ZeroRate)
        );
        assert!(m.clear_limit(&p("2.0.0.0/8")));
        assert!(!m.clear_limit(&p("2.0.0.0/8")));
    }

    #[test]
    fn drain_resume() {
        let mut m = Mitigations::new(10);
        assert!(m.drain());
        assert!(!m.drain());
        assert_eq!(m.admit_connection(ip("1.1.1.1"), 0), Admit::RefuseDraining);
        assert!(m.list().draining);
        assert!(m.resume());
        assert!(!m.resume());
        assert_eq!(m.admit_connection(ip("1.1.1.1"), 0), Admit::Accept);
    }

    #[test]
    fn connection_rate_over_five_seconds() {
        let mut m = Mitigations::new(10);
        let spec = LimitSpec {
            connections: Some(Rate {
                per_sec: 20,
                burst: 5,
            }),
            bytes: None,
        };
        m.limit(p("198.51.100.0/24"), spec, 0).unwrap();
        // an attacker tries a connection every millisecond for 5 s, from many sources
        let mut admitted = 0;
        for ms in 0..=5000u64 {
            let src = IpAddr::V4(Ipv4Addr::new(198, 51, 100, (ms % 250) as u8));
            if m.admit_connection(src, ms * 1_000_000) == Admit::Accept {
                admitted += 1;
            }
        }
        // 20/s × 5 s + burst 5 = 105 exactly with exact arithmetic
        assert_eq!(admitted, 105);
        assert_eq!(m.stats().refused_rate_limited, 5001 - 105);
        // other prefixes are not limited
        assert_eq!(m.admit_connection(ip("198.51.101.1"), 5 * S), Admit::Accept);
    }

    #[test]
    fn byte_rate_and_next_refill() {
        let mut m = Mitigations::new(10);
        let spec = LimitSpec {
            connections: None,
            bytes: Some(Rate {
                per_sec: 200_000,
                burst: 16_384,
            }),
        };
        m.limit(p("203.0.113.0/24"), spec, 0).unwrap();
        let peer = ip("203.0.113.5");
        let mut moved = 0u64;
        let mut now = 0u64;
        // a flow that wants 64 KiB whenever it may, retrying at next_refill
        while now <= 10 * S {
            let got = m.bytes_allowance(peer, now, 65_536);
            moved += got as u64;
            if got < 65_536 {
                let t = m.next_refill(peer, now, 65_536).unwrap();
                assert!(t > now);
                now = t;
            }
        }
        let expect = 200_000.0 * 10.0 + 16_384.0;
        let err = (moved as f64 - expect).abs() / expect;
        assert!(err < 0.02, "moved {moved}, expected about {expect}");
        assert_eq!(m.next_refill(ip("8.8.8.8"), now, 10), None);
    }

    #[test]
    fn longest_limit_wins() {
        let mut m = Mitigations::new(10);
        let wide = LimitSpec {
            connections: Some(Rate {
                per_sec: 1,
                burst: 1,
            }),
            bytes: None,
        };
        let narrow = LimitSpec {
            connections: Some(Rate {
                per_sec: 1,
                burst: 3,
            }),
            bytes: None,
        };
        m.limit(p("10.0.0.0/8"), wide, 0).unwrap();
        m.limit(p("10.1.0.0/16"), narrow, 0).unwrap();
        assert_eq!(m.limiting_prefix(ip("10.1.2.3")), Some(p("10.1.0.0/16")));
        assert_eq!(m.limiting_prefix(ip("10.2.2.3")), Some(p("10.0.0.0/8")));
        assert_eq!(m.limiting_prefix(ip("11.0.0.1")), None);
        let inner: Vec<_> = (0..4)
            .map(|_| m.admit_connection(ip("10.1.2.3"), 0))
            .collect();
        assert_eq!(inner.iter().filter(|a| **a == Admit::Accept).count(), 3);
        assert_eq!(m.admit_connection(ip("10.2.0.1"), 0), Admit::Accept);
        assert_eq!(
            m.admit_connection(ip("10.2.0.1"), 0),
            Admit::RefuseRateLimited
        );
        let l = m.list();
        assert_eq!(l.limits.len(), 2);
        assert_eq!(l.limits[0].0, p("10.0.0.0/8"));
        m.clear();
        assert_eq!(m.list().limits.len(), 0);
    }

    fn arb_prefix() -> impl Strategy<Value = Prefix> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Prefix::new(
                IpAddr::V4(Ipv4Addr::from_bits(a)),
                l
            )
            .unwrap()),
            // v6 prefixes clustered so matches happen
            (any::<u16>(), any::<u16>(), 0u8..=128).prop_map(|(a, b, l)| {
                let addr = Ipv6Addr::new(0x2001, 0xdb8, a & 0x3, b, 0, 0, 0, b & 0xf);
                Prefix::new(IpAddr::V6(addr), l).unwrap()
            }),
        ]
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from_bits(a))),
            any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from_bits(a).to_ipv6_mapped())),
            (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(a, b, c)| IpAddr::V6(
                Ipv6Addr::new(0x2001, 0xdb8, a & 3, b, 0, 0, 0, c & 0xf)
            )),
        ]
    }

    fn model_contains(p: &Prefix, ip: IpAddr) -> bool {
        // bit-by-bit comparison, independent of the masking code
        let ip = ip.to_canonical();
        let (a, b, w): (Vec<u8>, Vec<u8>, usize) = match (p.addr(), ip) {
            (IpAddr::V4(x), IpAddr::V4(y)) => (x.octets().to_vec(), y.octets().to_vec(), 32),
            (IpAddr::V6(x), IpAddr::V6(y)) => (x.octets().to_vec(), y.octets().to_vec(), 128),
            _ => return false,
        };
        (0..usize::from(p.len()).min(w))
            .all(|i| (a[i / 8] >> (7 - i % 8)) & 1 == (b[i / 8] >> (7 - i % 8)) & 1)
    }

    proptest! {
        #[test]
        fn blocking_matches_brute_force(
            prefixes in proptest::collection::vec(arb_prefix(), 0..40),
            removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
            ips in proptest::collection::vec(arb_ip(), 1..40),
        ) {
            let mut m = Mitigations::new(1000);
            let mut model: Vec<Prefix> = Vec::new();
            for pr in &prefixes {
                let fresh = m.block(*pr).unwrap();
                prop_assert_eq!(fresh, !model.contains(pr));
                if fresh { model.push(*pr); }
            }
            for r in &removed {
                if model.is_empty() { break; }
                let pr = model.remove(r.index(model.len()));
                prop_assert!(m.unblock(&pr));
            }
            for ip in &ips {
                let expect = model.iter().any(|pr| model_contains(pr, *ip));
                prop_assert_eq!(m.is_blocked(*ip), expect, "ip {}", ip);
            }
            // some hits for addresses inside the prefixes
            for pr in &model {
                prop_assert!(m.is_blocked(pr.addr()));
            }
        }

        #[test]
        fn bucket_never_exceeds_rate_time_plus_burst(
            per_sec in 1u64..1_000_000,
            burst in 1u64..100_000,
            steps in proptest::collection::vec((0u64..50_000_000, 0u64..200_000), 1..200),
        ) {
            let mut b = TokenBucket::new(Rate { per_sec, burst }, 0);
            let mut now = 0u64;
            let mut taken: u128 = 0;
            for (dt, want) in steps {
                now += dt;
                taken += u128::from(b.take_up_to(want, now));
                let bound = u128::from(burst) + u128::from(per_sec) * u128::from(now) / 1_000_000_000;
                prop_assert!(taken <= bound, "taken {} > bound {}", taken, bound);
                let ready = b.ready_at(want, now);
                prop_assert!(ready >= now);
                // at `ready` the promised tokens really are there
                let mut probe = b.clone();
                prop_assert!(probe.try_take(want.min(burst), ready));
            }
        }
    }
}
