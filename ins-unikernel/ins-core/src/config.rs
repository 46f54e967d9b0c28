//! [`InstanceConfig`]: every limit and timer of an instance, with documented
//! defaults, validated once at start-up.
//!
//! Invariant: a config that passed [`InstanceConfig::validate`] has every
//! count non-zero, every timer non-zero and within an hour (heartbeat within
//! a minute), and a flow table large enough for one flow per socket.

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
