//! Limits and policy ([`Config`], [`Placement`]) and the socket option
//! numbers the driver looks at itself ([`opt`]). Every limit is a field;
//! the host fills them from its command line.

/// Socket option numbers the driver itself looks at (Linux values).
pub mod opt {
    /// `SOL_SOCKET`.
    pub const SOL_SOCKET: i32 = 1;
    /// `SO_REUSEADDR`.
    pub const SO_REUSEADDR: i32 = 2;
    /// `SO_TYPE`.
    pub const SO_TYPE: i32 = 3;
    /// `SO_ERROR`.
    pub const SO_ERROR: i32 = 4;
    /// `SO_LINGER`.
    pub const SO_LINGER: i32 = 13;
    /// `SO_REUSEPORT`.
    pub const SO_REUSEPORT: i32 = 15;
    /// `SO_ACCEPTCONN`.
    pub const SO_ACCEPTCONN: i32 = 30;
    /// `SO_PROTOCOL`.
    pub const SO_PROTOCOL: i32 = 38;
    /// `SO_DOMAIN`.
    pub const SO_DOMAIN: i32 = 39;
    /// `IPPROTO_TCP`.
    pub const IPPROTO_TCP: i32 = 6;
    /// `IPPROTO_UDP`.
    pub const IPPROTO_UDP: i32 = 17;
    /// `IPPROTO_IPV6`.
    pub const IPPROTO_IPV6: i32 = 41;
    /// `IPV6_V6ONLY`.
    pub const IPV6_V6ONLY: i32 = 26;
}

/// How outgoing sockets pick an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Fewest sockets, then lowest instance number.
    LeastBusy,
    /// Live instances in turn.
    RoundRobin,
}

/// Limits and policy; every limit is a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Per-socket receive window the driver grants instances (bytes); must
    /// equal the driver's `Hello.window`.
    pub window: u32,
    /// An instance silent for this long (nanoseconds) is declared dead.
    pub heartbeat_timeout_ns: u64,
    /// Placement policy for sockets that are not listeners.
    pub placement: Placement,
    /// Most sockets in the table (app sockets and accepted connections).
    pub max_sockets: usize,
    /// Most remembered socket options per socket.
    pub max_opts: usize,
    /// Most in-band option records waiting for their marker per socket
    /// (the oldest is dropped beyond).
    pub max_inband: usize,
    /// How long a marker may wait for its record before its socket is
    /// reset (nanoseconds).
    pub inband_stall_ns: u64,
    /// `IPV6_V6ONLY` of an IPv6 socket that did not set it: the instances'
    /// kernel default (`net.ipv6.bindv6only`), which the host reads once.
    pub bindv6only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: 256 << 10,
            heartbeat_timeout_ns: 3_000_000_000,
            placement: Placement::LeastBusy,
            max_sockets: 1 << 20,
            max_opts: 32,
            max_inband: 16,
            inband_stall_ns: 2_000_000_000,
            bindv6only: false,
        }
    }
}

/// Why a `key=value` setting was refused ([`Config::set`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// No such key.
    UnknownKey,
    /// The value does not parse, or is out of the key's range.
    BadValue,
    /// The key cannot change once the driver runs (`window`: every
    /// instance's hello carried it; `bindv6only`: the sockets made hold it).
    Fixed,
}

impl SetError {
    /// A short English reason.
    pub fn as_str(self) -> &'static str {
        match self {
            SetError::UnknownKey => "unknown key",
            SetError::BadValue => "bad value",
            SetError::Fixed => "cannot change while the driver runs",
        }
    }
}

/// Milliseconds in a nanosecond field; 1 ms ..= 1 day.
fn ms_to_ns(v: &str) -> Result<u64, SetError> {
    let ms: u64 = v.parse().map_err(|_| SetError::BadValue)?;
    if !(1..=86_400_000).contains(&ms) {
        return Err(SetError::BadValue);
    }
    Ok(ms * 1_000_000)
}

/// A positive count up to `max`.
fn count(v: &str, max: usize) -> Result<usize, SetError> {
    let n: usize = v.parse().map_err(|_| SetError::BadValue)?;
    if n == 0 || n > max {
        return Err(SetError::BadValue);
    }
    Ok(n)
}

impl Config {
    /// The keys [`Config::set`] takes, as [`Config::write_text`] writes them.
    pub const KEYS: [&'static str; 8] = [
        "window",
        "heartbeat_timeout_ms",
        "placement",
        "max_sockets",
        "max_opts",
        "max_inband",
        "inband_stall_ms",
        "bindv6only",
    ];

    /// Sets one field from its text form (a host's runtime settings, e.g.
    /// the kernel module's `/dev/ins`): `heartbeat_timeout_ms` and
    /// `inband_stall_ms` (1 ..= 86,400,000), `placement` (`least-busy` or
    /// `round-robin`), `max_sockets` (1 ..= 2^24), `max_opts` and
    /// `max_inband` (1 ..= 1024). `window` and `bindv6only` are refused
    /// ([`SetError::Fixed`]) unless they are the current value: every
    /// instance's hello carried the window, and the instances' kernels
    /// fixed `IPV6_V6ONLY` of the sockets already made.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SetError> {
        match key {
            "window" => match value.parse::<u32>() {
                Ok(w) if w == self.window => {}
                Ok(_) => return Err(SetError::Fixed),
                Err(_) => return Err(SetError::BadValue),
            },
            "heartbeat_timeout_ms" => self.heartbeat_timeout_ns = ms_to_ns(value)?,
            "inband_stall_ms" => self.inband_stall_ns = ms_to_ns(value)?,
            "placement" => {
                self.placement = match value {
                    "least-busy" => Placement::LeastBusy,
                    "round-robin" => Placement::RoundRobin,
                    _ => return Err(SetError::BadValue),
                }
            }
            "max_sockets" => self.max_sockets = count(value, 1 << 24)?,
            "max_opts" => self.max_opts = count(value, 1024)?,
            "max_inband" => self.max_inband = count(value, 1024)?,
            "bindv6only" => match value {
                "0" | "1" if (value == "1") == self.bindv6only => {}
                "0" | "1" => return Err(SetError::Fixed),
                _ => return Err(SetError::BadValue),
            },
            _ => return Err(SetError::UnknownKey),
        }
        Ok(())
    }

    /// Writes every field as `key=value`, space-separated, in
    /// [`Config::KEYS`] order (what [`Config::set`] takes back).
    pub fn write_text(&self, w: &mut impl core::fmt::Write) -> core::fmt::Result {
        write!(
            w,
            "window={} heartbeat_timeout_ms={} placement={} max_sockets={} max_opts={} max_inband={} inband_stall_ms={} bindv6only={}",
            self.window,
            self.heartbeat_timeout_ns / 1_000_000,
            match self.placement {
                Placement::LeastBusy => "least-busy",
                Placement::RoundRobin => "round-robin",
            },
            self.max_sockets,
            self.max_opts,
            self.max_inband,
            self.inband_stall_ns / 1_000_000,
            u8::from(self.bindv6only)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_takes_every_key_and_text_round_trips() {
        let mut c = Config::default();
        for (k, v) in [
            ("heartbeat_timeout_ms", "60000"),
            ("placement", "round-robin"),
            ("max_sockets", "5000"),
            ("max_opts", "8"),
            ("max_inband", "4"),
            ("inband_stall_ms", "250"),
            ("bindv6only", "0"),
            ("window", "262144"),
        ] {
            c.set(k, v)
                .unwrap_or_else(|e| panic!("{k}={v}: {}", e.as_str()));
        }
        assert_eq!(c.heartbeat_timeout_ns, 60_000_000_000);
        assert_eq!(c.placement, Placement::RoundRobin);
        assert_eq!((c.max_sockets, c.max_opts, c.max_inband), (5000, 8, 4));
        assert_eq!(c.inband_stall_ns, 250_000_000);
        assert!(!c.bindv6only);
        let mut text = String::new();
        c.write_text(&mut text).unwrap();
        assert_eq!(
            text,
            "window=262144 heartbeat_timeout_ms=60000 placement=round-robin max_sockets=5000 \
             max_opts=8 max_inband=4 inband_stall_ms=250 bindv6only=0"
        );
        // What write_text writes, set takes back.
        let mut back = Config::default();
        for kv in text.split(' ') {
            let (k, v) = kv.split_once('=').unwrap();
            assert!(Config::KEYS.contains(&k));
            back.set(k, v).unwrap();
        }
        assert_eq!(back, c);
    }

    #[test]
    fn set_refuses_bad_input_and_changes_nothing() {
        let mut c = Config::default();
        let before = c;
        for (k, v, e) in [
            ("heartbeat_timeout", "1", SetError::UnknownKey),
            ("heartbeat_timeout_ms", "0", SetError::BadValue),
            ("heartbeat_timeout_ms", "-5", SetError::BadValue),
            ("heartbeat_timeout_ms", "86400001", SetError::BadValue),
            ("placement", "random", SetError::BadValue),
            ("max_sockets", "0", SetError::BadValue),
            ("max_sockets", "16777217", SetError::BadValue),
            ("max_opts", "x", SetError::BadValue),
            ("bindv6only", "yes", SetError::BadValue),
            ("bindv6only", "1", SetError::Fixed),
            ("window", "1", SetError::Fixed),
            ("window", "big", SetError::BadValue),
        ] {
            assert_eq!(c.set(k, v), Err(e), "{k}={v}");
            assert_eq!(c, before, "{k}={v} changed the config");
        }
    }
}
