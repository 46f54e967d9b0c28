//! TCP settings applied to new sockets, and the randomized "moving target"
//! profile.
//!
//! [`TcpSettings`] are instance-wide defaults: the executor applies them to
//! every new socket (before `listen`/`connect`, so buffer sizes shape the
//! window scale) by turning them into Linux socket options with
//! [`TcpSettings::sockopts`] and passing each to
//! [`Stack::set_opt`](crate::stack::Stack::set_opt). An option the program
//! itself sets later wins over the default.
//!
//! Every field is optional: `None` means "leave the stack's default". Updates
//! merge ([`TcpSettings::merge`]): a `Some` in the update replaces the value,
//! a `None` keeps it; [`TcpSettings::default`] (all `None`) is the reset.
//!
//! [`random_profile`] picks a profile within safe ranges from a 64-bit seed,
//! deterministically (SplitMix64, written here; no `rand` dependency), so a
//! controller can rotate instance fingerprints and reproduce any profile it
//! handed out.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use crate::stack::opt;

/// Instance-wide TCP defaults for new sockets. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpSettings {
    /// Congestion control algorithm (`TCP_CONGESTION`), e.g. `"cubic"`.
    pub congestion: Option<String>,
    /// Send buffer bytes (`SO_SNDBUF`; Linux doubles it internally).
    pub sndbuf: Option<u32>,
    /// Receive buffer bytes (`SO_RCVBUF`).
    pub rcvbuf: Option<u32>,
    /// Disable Nagle (`TCP_NODELAY`).
    pub nodelay: Option<bool>,
    /// Keepalive probes on (`SO_KEEPALIVE`).
    pub keepalive: Option<bool>,
    /// Idle seconds before the first keepalive probe (`TCP_KEEPIDLE`).
    pub keepidle: Option<u32>,
    /// Seconds between keepalive probes (`TCP_KEEPINTVL`).
    pub keepintvl: Option<u32>,
    /// Unanswered probes before the connection drops (`TCP_KEEPCNT`).
    pub keepcnt: Option<u32>,
    /// Quick ACK mode (`TCP_QUICKACK`; Linux may leave it again on its own).
    pub quickack: Option<bool>,
    /// Maximum segment size to advertise and use (`TCP_MAXSEG`).
    pub maxseg: Option<u32>,
    /// Milliseconds unacknowledged data may stay before the connection drops
    /// (`TCP_USER_TIMEOUT`; 0 = the stack's default behaviour).
    pub user_timeout_ms: Option<u32>,
}

/// A setting outside what the stack accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A number outside its range.
    #[error("{field} = {value} is outside {min}..={max}")]
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A congestion control name that is empty, too long (15 bytes max) or not
    /// `[A-Za-z0-9_-]`.
    #[error("invalid congestion control name {0:?}")]
    BadCongestion(String),
}

/// Buffer sizes accepted by [`TcpSettings::validate`]: 4 KiB to 64 MiB.
pub const BUF_RANGE: (u32, u32) = (4096, 64 << 20);
/// Linux's limits for keepidle/keepintvl (seconds).
pub const KEEP_TIME_RANGE: (u32, u32) = (1, 32767);
/// Linux's limit for keepcnt.
pub const KEEPCNT_RANGE: (u32, u32) = (1, 127);
/// MSS accepted: Linux's minimum (88) to the IPv4 maximum.
pub const MAXSEG_RANGE: (u32, u32) = (88, 65495);

/// One socket option ready for [`Stack::set_opt`](crate::stack::Stack::set_opt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockOpt {
    /// Linux level (`SOL_SOCKET`, `IPPROTO_TCP`).
    pub level: i32,
    /// Linux option name.
    pub name: i32,
    buf: [u8; opt::TCP_CA_NAME_MAX],
    len: u8,
}

impl SockOpt {
    fn int(level: i32, name: i32, v: i32) -> SockOpt {
        let mut buf = [0; opt::TCP_CA_NAME_MAX];
        buf[..4].copy_from_slice(&v.to_ne_bytes());
        SockOpt {
            level,
            name,
            buf,
            len: 4,
        }
    }

    /// The option value in Linux's encoding.
    pub fn value(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

fn valid_congestion(name: &str) -> bool {
    !name.is_empty()
        && name.len() < opt::TCP_CA_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check(field: &'static str, v: Option<u32>, (min, max): (u32, u32)) -> Result<(), SettingsError> {
    match v {
        Some(v) if v < min || v > max => Err(SettingsError::OutOfRange {
            field,
            value: v.into(),
            min: min.into(),
            max: max.into(),
        }),
        _ => Ok(()),
    }
}

impl TcpSettings {
    /// Applies an update: each `Some` field of `update` replaces ours.
    pub fn merge(&mut self, update: &TcpSettings) {
        fn m<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
            if let Some(v) = src {
                *dst = Some(v.clone());
            }
        }
        m(&mut self.congestion, &update.congestion);
        m(&mut self.sndbuf, &update.sndbuf);
        m(&mut self.rcvbuf, &update.rcvbuf);
        m(&mut self.nodelay, &update.nodelay);
        m(&mut self.keepalive, &update.keepalive);
        m(&mut self.keepidle, &update.keepidle);
        m(&mut self.keepintvl, &update.keepintvl);
        m(&mut self.keepcnt, &update.keepcnt);
        m(&mut self.quickack, &update.quickack);
        m(&mut self.maxseg, &update.maxseg);
        m(&mut self.user_timeout_ms, &update.user_timeout_ms);
    }

    /// Checks every set field against the ranges above.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(c) = &self.congestion
            && !valid_congestion(c)
        {
            return Err(SettingsError::BadCongestion(c.clone()));
        }
        check("sndbuf", self.sndbuf, BUF_RANGE)?;
        check("rcvbuf", self.rcvbuf, BUF_RANGE)?;
        check("keepidle", self.keepidle, KEEP_TIME_RANGE)?;
        check("keepintvl", self.keepintvl, KEEP_TIME_RANGE)?;
        check("keepcnt", self.keepcnt, KEEPCNT_RANGE)?;
        check("maxseg", self.maxseg, MAXSEG_RANGE)?;
        check(
            "user_timeout_ms",
            self.user_timeout_ms,
            (0, i32::MAX as u32),
        )?;
        Ok(())
    }

    /// Appends the socket options for the set fields, for a TCP socket.
    /// Values out of `i32` range are clamped (call [`TcpSettings::validate`]
    /// first to refuse them instead); an invalid congestion name is skipped.
    pub fn sockopts(&self, out: &mut Vec<SockOpt>) {
        let int = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        let b = i32::from;
        if let Some(c) = &self.congestion
            && valid_congestion(c)
        {
            let mut buf = [0; opt::TCP_CA_NAME_MAX];
            buf[..c.len()].copy_from_slice(c.as_bytes());
            out.push(SockOpt {
                level: opt::IPPROTO_TCP,
                name: opt::TCP_CONGESTION,
                buf,
                len: c.len() as u8,
            });
        }
        let items = [
            (opt::SOL_SOCKET, opt::SO_SNDBUF, self.sndbuf.map(int)),
            (opt::SOL_SOCKET, opt::SO_RCVBUF, self.rcvbuf.map(int)),
            (opt::IPPROTO_TCP, opt::TCP_NODELAY, self.nodelay.map(b)),
            (opt::SOL_SOCKET, opt::SO_KEEPALIVE, self.keepalive.map(b)),
            (opt::IPPROTO_TCP, opt::TCP_KEEPIDLE, self.keepidle.map(int)),
            (
                opt::IPPROTO_TCP,
                opt::TCP_KEEPINTVL,
                self.keepintvl.map(int),
            ),
            (opt::IPPROTO_TCP, opt::TCP_KEEPCNT, self.keepcnt.map(int)),
            (opt::IPPROTO_TCP, opt::TCP_QUICKACK, self.quickack.map(b)),
            (opt::IPPROTO_TCP, opt::TCP_MAXSEG, self.maxseg.map(int)),
            (
                opt::IPPROTO_TCP,
                opt::TCP_USER_TIMEOUT,
                self.user_timeout_ms.map(int),
            ),
        ];
        for (level, name, v) in items {
            if let Some(v) = v {
                out.push(SockOpt::int(level, name, v));
            }
        }
    }
}

/// SplitMix64: a tiny, well-distributed 64-bit generator (Steele, Lea and
/// Flood, 2014). Not cryptographic; the seed is the secret.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform value in `lo..=hi` (`lo ≤ hi`), by multiply-shift (bias
    /// below 2⁻³² for the small ranges used here).
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        let span = u64::from(hi - lo) + 1;
        lo + ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u32
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}

/// Safe ranges of [`random_profile`].
pub mod ranges {
    /// Socket buffers: 64 KiB to 4 MiB, in 4 KiB steps.
    pub const BUF: (u32, u32) = (64 << 10, 4 << 20);
    /// Keepalive idle: 30 s to 10 min.
    pub const KEEPIDLE: (u32, u32) = (30, 600);
    /// Keepalive interval: 5 s to 75 s.
    pub const KEEPINTVL: (u32, u32) = (5, 75);
    /// Keepalive probes: 3 to 9.
    pub const KEEPCNT: (u32, u32) = (3, 9);
    /// MSS: 1200 to 1440 bytes (fits every path that carries 1280-byte IPv6).
    pub const MAXSEG: (u32, u32) = (1200, 1440);
}

/// A randomized profile for `seed`: the same seed and list always give the
/// same profile. Buffers, keepalive timing and MSS come from [`ranges`];
/// Nagle and quick-ACK are coin flips; the congestion algorithm is one of
/// `available_congestion` (invalid names are ignored; `None` if none is
/// left). Keepalive is always on, so dead peers are eventually noticed.
pub fn random_profile(seed: u64, available_congestion: &[&str]) -> TcpSettings {
    let mut r = SplitMix64::new(seed);
    let buf = |r: &mut SplitMix64| r.range(ranges::BUF.0 / 4096, ranges::BUF.1 / 4096) * 4096;
    let sndbuf = buf(&mut r);
    let rcvbuf = buf(&mut r);
    let usable: Vec<&str> = available_congestion
        .iter()
        .copied()
        .filter(|c| valid_congestion(c))
        .collect();
    let congestion = if usable.is_empty() {
        None
    } else {
        Some(usable[r.range(0, usable.len() as u32 - 1) as usize].to_owned())
    };
    TcpSettings {
        congestion,
        sndbuf: Some(sndbuf),
        rcvbuf: Some(rcvbuf),
        nodelay: Some(r.coin()),
        keepalive: Some(true),
        keepidle: Some(r.range(ranges::KEEPIDLE.0, ranges::KEEPIDLE.1)),
        keepintvl: Some(r.range(ranges::KEEPINTVL.0, ranges::KEEPINTVL.1)),
        keepcnt: Some(r.range(ranges::KEEPCNT.0, ranges::KEEPCNT.1)),
        quickack: Some(r.coin()),
        maxseg: Some(r.range(ranges::MAXSEG.0, ranges::MAXSEG.1)),
        user_timeout_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::prelude::rust_2024::*;

    #[test]
    fn merge_semantics() {
        let mut s = TcpSettings {
            sndbuf: Some(100_000),
            nodelay: Some(true),
            ..Default::default()
        };
        s.merge(&TcpSettings {
            nodelay: Some(false),
            congestion: Some("bbr".into()),
            ..Default::default()
        });
        assert_eq!(
            s.sndbuf,
            Some(100_000),
            "None in the update keeps the value"
        );
        assert_eq!(s.nodelay, Some(false));
        assert_eq!(s.congestion.as_deref(), Some("bbr"));
    }

    #[test]
    fn validate_ranges() {
        assert!(TcpSettings::default().validate().is_ok());
        let bad = TcpSettings {
            keepcnt: Some(200),
            ..Default::default()
        };
        assert_eq!(
            bad.validate(),
            Err(SettingsError::OutOfRange {
                field: "keepcnt",
                value: 200,
                min: 1,
                max: 127
            })
        );
        let bad = TcpSettings {
            sndbuf: Some(10),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        for name in ["", "a_very_long_name_x", "cu bic", "ré"] {
            let s = TcpSettings {
                congestion: Some(name.into()),
                ..Default::default()
            };
            assert!(
                matches!(s.validate(), Err(SettingsError::BadCongestion(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn sockopts_encoding() {
        let s = TcpSettings {
            congestion: Some("cubic".into()),
            rcvbuf: Some(131_072),
            nodelay: Some(true),
            ..Default::default()
        };
        let mut o = Vec::new();
        s.sockopts(&mut o);
        assert_eq!(o.len(), 3);
        assert_eq!(
            (o[0].level, o[0].name, o[0].value()),
            (opt::IPPROTO_TCP, opt::TCP_CONGESTION, &b"cubic"[..])
        );
        assert_eq!((o[1].level, o[1].name), (opt::SOL_SOCKET, opt::SO_RCVBUF));
        assert_eq!(o[1].value(), &131_072i32.to_ne_bytes());
        assert_eq!(
            (o[2].name, o[2].value()),
            (opt::TCP_NODELAY, &1i32.to_ne_bytes()[..])
        );
        let mut o = Vec::new();
        TcpSettings::default().sockopts(&mut o);
        assert!(o.is_empty());
    }

    #[test]
    fn random_profile_is_deterministic_and_in_range() {
        let algs = ["reno", "cubic", "bbr"];
        assert_eq!(random_profile(42, &algs), random_profile(42, &algs));
        let mut seen_cc = HashSet::new();
        let mut seen_buf = HashSet::new();
        let mut nodelay = [0usize; 2];
        for seed in 0..2000u64 {
            let p = random_profile(seed, &algs);
            p.validate().unwrap();
            let (lo, hi) = ranges::BUF;
            for b in [p.sndbuf.unwrap(), p.rcvbuf.unwrap()] {
                assert!((lo..=hi).contains(&b) && b % 4096 == 0, "{b}");
                seen_buf.insert(b);
            }
            assert!((ranges::KEEPIDLE.0..=ranges::KEEPIDLE.1).contains(&p.keepidle.unwrap()));
            assert!((ranges::KEEPINTVL.0..=ranges::KEEPINTVL.1).contains(&p.keepintvl.unwrap()));
            assert!((ranges::KEEPCNT.0..=ranges::KEEPCNT.1).contains(&p.keepcnt.unwrap()));
            assert!((ranges::MAXSEG.0..=ranges::MAXSEG.1).contains(&p.maxseg.unwrap()));
            assert_eq!(p.keepalive, Some(true));
            seen_cc.insert(p.congestion.unwrap());
            nodelay[usize::from(p.nodelay.unwrap())] += 1;
        }
        assert_eq!(seen_cc.len(), 3, "every algorithm gets picked");
        assert!(
            seen_buf.len() > 500,
            "buffers spread over the range: {}",
            seen_buf.len()
        );
        assert!(nodelay[0] > 800 && nodelay[1] > 800, "{nodelay:?}");
        assert_ne!(random_profile(1, &algs), random_profile(2, &algs));
    }

    #[test]
    fn random_profile_congestion_edge_cases() {
        assert_eq!(random_profile(7, &[]).congestion, None);
        assert_eq!(random_profile(7, &["bad name", ""]).congestion, None);
        assert_eq!(
            random_profile(7, &["bad name", "bbr"])
                .congestion
                .as_deref(),
            Some("bbr")
        );
    }

    #[test]
    fn splitmix_range_bounds() {
        let mut r = SplitMix64::new(0);
        // reference value of SplitMix64 from seed 0
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        for _ in 0..1000 {
            assert!(r.range(5, 5) == 5);
            let w = r.range(10, 12);
            assert!((10..=12).contains(&w));
        }
    }
}
