//! [`InstanceConfig`]: every limit and timer of an instance, with documented
//! defaults, validated once at start-up.
//!
//! Invariant: a config that passed [`InstanceConfig::validate`] has every
//! count non-zero, every timer non-zero and within an hour (heartbeat within
//! a minute), and a flow table large enough for one flow per socket.
//!
//! [`InstanceConfig::set_arg`] sets a field from a `key=value` word (the
//! unikernel's command line); the keys are the Linux `ins`'s flag names
//! with `_` for `-`, in the same units (see [`ARG_KEYS`]).

use crate::flow::FlowConfig;

const NS_PER_SEC: u64 = 1_000_000_000;

/// Limits and timers of one instance. Times are nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceConfig {
    /// Most sockets (listeners, connections, UDP sockets) open at once.
    /// Default 65,536.
    pub max_sockets: usize,
    /// Per-socket stream window in bytes: how much received data the instance
    /// may push ahead of the driver's credit, and how much send data it
    /// accepts before pushing back. A credit, not memory held by an idle
    /// connection. Default 256 KiB.
    pub window_bytes: u32,
    /// Largest `listen` backlog passed to the stack (larger requests are
    /// clamped). Default 4096.
    pub max_backlog: u32,
    /// Interval of heartbeat messages to the driver. Default 1 s.
    pub heartbeat_interval_ns: u64,
    /// Interim flow record interval for long flows. Default 10 s.
    pub flow_active_timeout_ns: u64,
    /// UDP flows idle this long close with reason Timeout. Default 30 s.
    pub udp_idle_timeout_ns: u64,
    /// Most flows (TCP and UDP) tracked at once. Default 262,144 (4 per
    /// socket at the default `max_sockets`).
    pub max_flows: usize,
    /// Most flow records sent in one batch message. Default 64.
    pub flow_record_batch: usize,
    /// Most blocks plus rate limits held. Default 65,536.
    pub max_mitigation_rules: usize,
    /// Most connections accepted from one listener per executor turn, so one
    /// busy listener cannot starve the rest. Default 64.
    pub accept_batch: usize,
    /// Keep live telemetry for TCP connections and report it (periodic,
    /// on demand, and once at close; see [`crate::telemetry`]). Default on.
    pub telemetry: bool,
    /// Interval of periodic telemetry reports for every open TCP
    /// connection; 0 = only on demand and at close. Default 1 s.
    pub telemetry_interval_ns: u64,
    /// Bytes sampled each way at the start of a connection for the payload
    /// statistics (entropy, printable share, chunk lengths); 0 = none, at
    /// most 65,535. Default 1024.
    pub telemetry_sample_bytes: u32,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            max_sockets: 65_536,
            window_bytes: 256 * 1024,
            max_backlog: 4096,
            heartbeat_interval_ns: NS_PER_SEC,
            flow_active_timeout_ns: 10 * NS_PER_SEC,
            udp_idle_timeout_ns: 30 * NS_PER_SEC,
            max_flows: 262_144,
            flow_record_batch: 64,
            max_mitigation_rules: 65_536,
            accept_batch: 64,
            telemetry: true,
            telemetry_interval_ns: NS_PER_SEC,
            telemetry_sample_bytes: 1024,
        }
    }
}

/// Why a config was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A count or size is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A value above its maximum.
    #[error("{field} = {value} exceeds the maximum {max}")]
    TooLarge {
        /// Field name.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The maximum.
        max: u64,
    },
    /// A value that is not a number of the field's unit (or `on`/`off`).
    #[error("{key}: '{value}' is not {what}")]
    Parse {
        /// The key.
        key: &'static str,
        /// What it takes.
        what: &'static str,
        /// The value given (truncated to 32 bytes).
        value: ShortStr,
    },
    /// A value below its minimum.
    #[error("{field} = {value} is below the minimum {min}")]
    TooSmall {
        /// Field name.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The minimum.
        min: u64,
    },
}

/// A copy of at most 32 bytes of a string (for error messages without
/// allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortStr {
    buf: [u8; 32],
    len: u8,
}

impl ShortStr {
    /// The first 32 bytes of `s` (cut at a character boundary).
    pub fn new(s: &str) -> ShortStr {
        let mut len = s.len().min(32);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0; 32];
        buf[..len].copy_from_slice(&s.as_bytes()[..len]);
        ShortStr {
            buf,
            len: len as u8,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

impl core::fmt::Display for ShortStr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The keys [`InstanceConfig::set_arg`] takes, with their units.
pub const ARG_KEYS: &[(&str, &str)] = &[
    ("max_sockets", "count"),
    ("window", "bytes"),
    ("max_backlog", "count"),
    ("heartbeat_ms", "ms"),
    ("flow_timeout_s", "s"),
    ("udp_idle_s", "s"),
    ("max_flows", "count"),
    ("flow_record_batch", "count"),
    ("max_mitigation_rules", "count"),
    ("accept_batch", "count"),
    ("telemetry", "on|off"),
    ("telemetry_ms", "ms (0: only on demand and at close)"),
    ("telemetry_sample", "bytes"),
];

fn range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::Zero(field))
    } else if value < min {
        Err(ConfigError::TooSmall { field, value, min })
    } else if value > max {
        Err(ConfigError::TooLarge { field, value, max })
    } else {
        Ok(())
    }
}

impl InstanceConfig {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let hour = 3600 * NS_PER_SEC;
        range("max_sockets", self.max_sockets as u64, 1, 1 << 24)?;
        // At least a page (so a window can carry a useful segment), at most
        // 64 MiB (a window field must fit in a u32 with room for arithmetic).
        range("window_bytes", self.window_bytes.into(), 4096, 64 << 20)?;
        range("max_backlog", self.max_backlog.into(), 1, 65_535)?;
        range(
            "heartbeat_interval_ns",
            self.heartbeat_interval_ns,
            NS_PER_SEC / 1000,
            60 * NS_PER_SEC,
        )?;
        range(
            "flow_active_timeout_ns",
            self.flow_active_timeout_ns,
            NS_PER_SEC / 10,
            hour,
        )?;
        range(
            "udp_idle_timeout_ns",
            self.udp_idle_timeout_ns,
            NS_PER_SEC / 10,
            hour,
        )?;
        range(
            "max_flows",
            self.max_flows as u64,
            self.max_sockets as u64,
            1 << 26,
        )?;
        range("flow_record_batch", self.flow_record_batch as u64, 1, 4096)?;
        range(
            "max_mitigation_rules",
            self.max_mitigation_rules as u64,
            1,
            1 << 22,
        )?;
        range("accept_batch", self.accept_batch as u64, 1, 65_536)?;
        if self.telemetry_interval_ns != 0 {
            range(
                "telemetry_interval_ns",
                self.telemetry_interval_ns,
                NS_PER_SEC / 100,
                hour,
            )?;
        }
        if self.telemetry_sample_bytes > 65_535 {
            return Err(ConfigError::TooLarge {
                field: "telemetry_sample_bytes",
                value: self.telemetry_sample_bytes.into(),
                max: 65_535,
            });
        }
        Ok(())
    }

    /// Sets the field `key` names from `value` (see [`ARG_KEYS`]); returns
    /// `Ok(false)` for a key that is not one of them (nothing changed).
    /// Values are only parsed here: [`InstanceConfig::validate`] checks
    /// the ranges afterwards.
    pub fn set_arg(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        let Some(&(key, unit)) = ARG_KEYS.iter().find(|(k, _)| *k == key) else {
            return Ok(false);
        };
        let bad = |what| ConfigError::Parse {
            key,
            what,
            value: ShortStr::new(value),
        };
        let num = || value.parse::<u64>().map_err(|_| bad("a whole number"));
        let scaled = |unit: u64| {
            num()?.checked_mul(unit).ok_or(ConfigError::TooLarge {
                field: key,
                value: u64::MAX,
                max: u64::MAX / unit,
            })
        };
        let small = |max: u64| {
            let v = num()?;
            if v > max {
                Err(ConfigError::TooLarge {
                    field: key,
                    value: v,
                    max,
                })
            } else {
                Ok(v)
            }
        };
        match key {
            "max_sockets" => self.max_sockets = small(usize::MAX as u64)? as usize,
            "window" => self.window_bytes = small(u32::MAX.into())? as u32,
            "max_backlog" => self.max_backlog = small(u32::MAX.into())? as u32,
            "heartbeat_ms" => self.heartbeat_interval_ns = scaled(1_000_000)?,
            "flow_timeout_s" => self.flow_active_timeout_ns = scaled(NS_PER_SEC)?,
            "udp_idle_s" => self.udp_idle_timeout_ns = scaled(NS_PER_SEC)?,
            "max_flows" => self.max_flows = small(usize::MAX as u64)? as usize,
            "flow_record_batch" => self.flow_record_batch = small(usize::MAX as u64)? as usize,
            "max_mitigation_rules" => {
                self.max_mitigation_rules = small(usize::MAX as u64)? as usize
            }
            "accept_batch" => self.accept_batch = small(usize::MAX as u64)? as usize,
            "telemetry" => {
                self.telemetry = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad(unit)),
                }
            }
            "telemetry_ms" => self.telemetry_interval_ns = scaled(1_000_000)?,
            "telemetry_sample" => self.telemetry_sample_bytes = small(u32::MAX.into())? as u32,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The flow table's settings.
    pub fn flow_config(&self) -> FlowConfig {
        FlowConfig {
            active_timeout_ns: self.flow_active_timeout_ns,
            udp_idle_timeout_ns: self.udp_idle_timeout_ns,
            max_flows: self.max_flows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::prelude::rust_2024::*;

    #[test]
    fn set_arg_parses_each_key() {
        let mut c = InstanceConfig::default();
        for (k, v) in [
            ("max_sockets", "300"),
            ("window", "65536"),
            ("max_backlog", "16"),
            ("heartbeat_ms", "500"),
            ("flow_timeout_s", "5"),
            ("udp_idle_s", "7"),
            ("max_flows", "1200"),
            ("flow_record_batch", "8"),
            ("max_mitigation_rules", "99"),
            ("accept_batch", "4"),
            ("telemetry", "off"),
            ("telemetry_ms", "0"),
            ("telemetry_sample", "0"),
        ] {
            assert_eq!(c.set_arg(k, v), Ok(true), "{k}");
        }
        assert_eq!(c.set_arg("ip", "10.0.0.1/24"), Ok(false));
        assert_eq!(c.max_sockets, 300);
        assert_eq!(c.window_bytes, 65_536);
        assert_eq!(c.max_backlog, 16);
        assert_eq!(c.heartbeat_interval_ns, 500_000_000);
        assert_eq!(c.flow_active_timeout_ns, 5 * NS_PER_SEC);
        assert_eq!(c.udp_idle_timeout_ns, 7 * NS_PER_SEC);
        assert_eq!(c.max_flows, 1200);
        assert_eq!(c.flow_record_batch, 8);
        assert_eq!(c.max_mitigation_rules, 99);
        assert_eq!(c.accept_batch, 4);
        assert!(!c.telemetry);
        assert_eq!(c.telemetry_interval_ns, 0);
        assert_eq!(c.telemetry_sample_bytes, 0);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.set_arg("telemetry", "on"), Ok(true));
        assert!(c.telemetry);
        assert_eq!(ARG_KEYS.len(), 13);
    }

    #[test]
    fn set_arg_refuses_bad_values_clearly() {
        let mut c = InstanceConfig::default();
        let e = c.set_arg("max_sockets", "lots").unwrap_err();
        assert_eq!(e.to_string(), "max_sockets: 'lots' is not a whole number");
        let e = c.set_arg("telemetry", "yes").unwrap_err();
        assert_eq!(e.to_string(), "telemetry: 'yes' is not on|off");
        let e = c.set_arg("window", "4294967296").unwrap_err();
        assert_eq!(
            e.to_string(),
            "window = 4294967296 exceeds the maximum 4294967295"
        );
        assert!(c.set_arg("heartbeat_ms", "18446744073709551615").is_err());
        assert!(c.set_arg("max_flows", "-1").is_err());
        let long = "x".repeat(100);
        let e = c.set_arg("max_flows", &long).unwrap_err();
        assert_eq!(
            e.to_string(),
            std::format!("max_flows: '{}' is not a whole number", "x".repeat(32))
        );
        assert_eq!(c, InstanceConfig::default(), "nothing changed on errors");
        // ranges are validate()'s job
        c.set_arg("window", "100").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("window_bytes")
        );
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = InstanceConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.max_sockets, 65_536);
        assert_eq!(c.window_bytes, 262_144);
        assert_eq!(c.heartbeat_interval_ns, 1_000_000_000);
        assert_eq!(c.flow_active_timeout_ns, 10_000_000_000);
        assert_eq!(c.udp_idle_timeout_ns, 30_000_000_000);
        let f = c.flow_config();
        assert_eq!(f, FlowConfig::default());
    }

    #[test]
    fn errors_name_the_field() {
        let c = InstanceConfig {
            max_sockets: 0,
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("max_sockets")));
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "max_sockets must be greater than zero"
        );
        let c = InstanceConfig {
            window_bytes: 100,
            ..Default::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::TooSmall {
                field: "window_bytes",
                value: 100,
                min: 4096
            })
        );
        let c = InstanceConfig {
            heartbeat_interval_ns: 120 * NS_PER_SEC,
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TooLarge {
                field: "heartbeat_interval_ns",
                ..
            })
        ));
        let c = InstanceConfig {
            max_flows: 10,
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TooSmall {
                field: "max_flows",
                ..
            })
        ));
        let c = InstanceConfig {
            flow_record_batch: 0,
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("flow_record_batch")));
    }
}
