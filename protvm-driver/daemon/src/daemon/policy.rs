//! The balancer's policy: a TOML file (`--policy FILE`) whose fields the
//! command line can override, validated into [`Policy`].
//!
//! ```toml
//! min_instances = 1       # never retire below this (autoscale)
//! max_instances = 8       # never spawn above this
//! autoscale = true        # spawn/retire by load
//! scale_up_at = 0.5       # spawn when EVERY live instance uses more than
//!                         # this fraction of its sockets
//! idle_retire_s = 30      # retire an instance idle (no connections) this
//!                         # long while more than min_instances run; 0 = never
//! rotate_s = 0            # replace the oldest instance every T s (0 = off);
//!                         # each new instance gets a fresh random TCP profile
//! drain_timeout_ms = 10000 # a draining instance is stopped after this even
//!                         # with connections left
//! ```

use std::path::Path;

use serde::Deserialize;

/// Why a policy is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("policy file {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a policy.
    #[error("policy file {path}: {msg}")]
    Parse {
        /// File.
        path: String,
        /// The parser's message.
        msg: String,
    },
    /// A value out of range.
    #[error("policy: {0}")]
    Invalid(String),
}

/// Balancer policy (validated).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Fewest instances autoscale retires down to.
    pub min_instances: usize,
    /// Most instances ever spawned at once.
    pub max_instances: usize,
    /// Spawn and retire by load.
    pub autoscale: bool,
    /// Load fraction (sockets used / max) above which every instance must
    /// be for autoscale to spawn another.
    pub scale_up_at: f64,
    /// Idle seconds after which autoscale retires an instance (0 = never).
    pub idle_retire_s: u64,
    /// Rotation period in seconds (0 = off).
    pub rotate_s: u64,
    /// Longest drain before a stop closes the channel anyway.
    pub drain_timeout_ms: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            min_instances: 1,
            max_instances: 64,
            autoscale: false,
            scale_up_at: 0.5,
            idle_retire_s: 30,
            rotate_s: 0,
            drain_timeout_ms: 10_000,
        }
    }
}

/// Upper bound on `max_instances`.
pub const MAX_INSTANCES: usize = 1024;

impl Policy {
    /// Reads a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// Parses and validates policy text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let p: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: origin.to_string(),
            msg: e.message().to_string(),
        })?;
        p.validate()?;
        Ok(p)
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |m: String| Err(PolicyError::Invalid(m));
        if self.max_instances == 0 || self.max_instances > MAX_INSTANCES {
            return bad(format!(
                "max_instances = {} (must be 1 ..= {MAX_INSTANCES})",
                self.max_instances
            ));
        }
        if self.min_instances > self.max_instances {
            return bad(format!(
                "min_instances = {} is above max_instances = {}",
                self.min_instances, self.max_instances
            ));
        }
        if !(self.scale_up_at > 0.0 && self.scale_up_at <= 1.0) {
            return bad(format!(
                "scale_up_at = {} (must be a fraction in (0, 1])",
                self.scale_up_at
            ));
        }
        if self.drain_timeout_ms == 0 || self.drain_timeout_ms > 3_600_000 {
            return bad(format!(
                "drain_timeout_ms = {} (must be 1 ..= 3600000)",
                self.drain_timeout_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let p = Policy::parse("max_instances = 4\nautoscale = true\n", "t").unwrap();
        assert_eq!(p.max_instances, 4);
        assert!(p.autoscale);
        assert_eq!(p.min_instances, 1);
    }

    #[test]
    fn rejects_unknown_fields_and_ranges() {
        let e = Policy::parse("max_instance = 4\n", "f.toml").unwrap_err();
        assert!(e.to_string().contains("f.toml"), "{e}");
        assert!(e.to_string().contains("max_instance"), "{e}");
        let e = Policy::parse("min_instances = 5\nmax_instances = 2\n", "f").unwrap_err();
        assert!(e.to_string().contains("above max_instances"), "{e}");
        assert!(Policy::parse("scale_up_at = 1.5\n", "f").is_err());
        assert!(Policy::parse("scale_up_at = 0\n", "f").is_err());
        assert!(Policy::parse("max_instances = \"x\"\n", "f").is_err());
    }
}
