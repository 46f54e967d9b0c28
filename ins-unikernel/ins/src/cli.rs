//! Command line and config file: every limit of
//! [`InstanceConfig`] and of the channel, validated into [`Settings`].
//!
//! A config file (`--config FILE`) holds one `name = value` per line (or a
//! bare `name` for a flag), `#` starting a comment; the names are the long
//! option names. Its settings are applied first, so options given on the
//! command line win.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ins_core::config::InstanceConfig;
use ins_protocol::ring::{MAX_CAPACITY, MIN_CAPACITY, RING_HEADER_LEN};
use ins_transport::ChannelConfig;
use ins_transport::sys::xen::XenConfig;
use ins_xen::DomId;

pub use crate::sys::sandbox::SandboxMode;

/// Exit codes of the `ins` binary.
pub mod exit {
    /// The driver closed the channel, or SIGTERM/SIGINT: graceful exit.
    pub const OK: i32 = 0;
    /// A system call failed while running.
    pub const RUNTIME: i32 = 1;
    /// Bad command line, config file or limits.
    pub const USAGE: i32 = 2;
    /// Could not connect to the driver or the handshake failed.
    pub const CONNECT: i32 = 3;
    /// The driver broke the ring protocol (corrupt ring).
    pub const PROTOCOL: i32 = 4;
}

const AFTER_HELP: &str = "\
Exit codes:
  0  the driver closed the channel, or SIGTERM/SIGINT (graceful shutdown,
     final flow records sent)
  1  a system call failed while running
  2  bad command line, config file or limits
  3  could not connect to the driver, or the handshake failed
  4  the driver broke the ring protocol (corrupt ring)

Logging: RUST_LOG (default `info`), to stderr.";

/// `ins`: an INS instance on the Linux host stack. Connects to a driver's
/// Unix socket and executes the sockets it is given.
#[derive(Parser, Debug, Clone)]
#[command(name = "ins", version, after_help = AFTER_HELP, args_override_self = true)]
pub struct Args {
    /// The driver's rendezvous Unix socket.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present_any = ["xen_driver", "kmod"],
        conflicts_with_all = ["xen_driver", "kmod"]
    )]
    pub driver: Option<PathBuf>,
    /// Join the `ins` kernel module through its misc device instead
    /// (usually /dev/ins): the module allocates the ring pages, we map them
    /// (needs CAP_NET_ADMIN).
    #[arg(long, value_name = "DEVICE", conflicts_with = "xen_driver")]
    pub kmod: Option<PathBuf>,
    /// With --kmod: the ring capacity (bytes per direction) to ask the
    /// module for; a power of two, 4096 ..= --ring-capacity. Frames are
    /// at most min(64 KiB, half of it).
    #[arg(long, value_name = "BYTES", default_value_t = ChannelConfig::DEFAULT_RING_CAPACITY)]
    pub kmod_ring: u32,
    /// Join a driver in another Xen domain instead: its domain id. The
    /// driver grants the ring pages; we map them (`/dev/xen/gntdev`) and
    /// bind its event channel, after a rendezvous in xenstore.
    #[arg(long, value_name = "DOMID", requires = "xen_channel")]
    pub xen_driver: Option<u16>,
    /// The channel's name under the driver's
    /// `/local/domain/<driver>/data/ins/` (a xenstore path element).
    #[arg(long, value_name = "NAME")]
    pub xen_channel: Option<String>,
    /// How long to wait for the driver's offer in xenstore (1 ..= 3600 s).
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub xen_rendezvous_s: u64,
    /// Most pages accepted in a Xen channel offer.
    #[arg(long, value_name = "N", default_value_t = XenConfig::default().max_pages)]
    pub xen_max_pages: u32,
    /// Instance id assigned by the controller (announced in the hello).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub instance_id: u32,
    /// Most sockets open at once (1 ..= 16,777,216).
    #[arg(long, value_name = "N", default_value_t = InstanceConfig::default().max_sockets)]
    pub max_sockets: usize,
    /// Per-socket stream window granted to the driver (4096 ..= 64 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = InstanceConfig::default().window_bytes)]
    pub window: u32,
    /// Largest listen backlog passed to the kernel (1 ..= 65535).
    #[arg(long, value_name = "N", default_value_t = InstanceConfig::default().max_backlog)]
    pub max_backlog: u32,
    /// Heartbeat interval (1 ..= 60,000 ms).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Interim flow record interval for long flows (1 ..= 3600 s).
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub flow_timeout_s: u64,
    /// Idle time after which a UDP flow ends (1 ..= 3600 s).
    #[arg(long, value_name = "S", default_value_t = 30)]
    pub udp_idle_s: u64,
    /// Most flows tracked at once (>= max-sockets).
    #[arg(long, value_name = "N", default_value_t = InstanceConfig::default().max_flows)]
    pub max_flows: usize,
    /// Most flow records per batch message (1 ..= 4096).
    #[arg(long, value_name = "N", default_value_t = InstanceConfig::default().flow_record_batch)]
    pub flow_record_batch: usize,
    /// Most block and rate-limit rules held.
    #[arg(long, value_name = "N", default_value_t = InstanceConfig::default().max_mitigation_rules)]
    pub max_mitigation_rules: usize,
    /// Most connections accepted from one listener per turn.
    #[arg(long, value_name = "N", default_value_t = InstanceConfig::default().accept_batch)]
    pub accept_batch: usize,
    /// Interval of live per-connection telemetry reports (10 ..= 3,600,000
    /// ms; 0: only on demand and at close).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub telemetry_ms: u64,
    /// Bytes sampled each way at the start of a connection for the payload
    /// statistics (0 ..= 65535).
    #[arg(long, value_name = "BYTES", default_value_t = InstanceConfig::default().telemetry_sample_bytes)]
    pub telemetry_sample: u32,
    /// No connection telemetry at all (no reports, no per-connection state).
    #[arg(long)]
    pub no_telemetry: bool,
    /// Largest ring capacity (bytes per direction) accepted from the driver;
    /// a power of two, 256 ..= 2^31.
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    pub ring_capacity: u32,
    /// Largest frame accepted from the driver.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_frame: u32,
    /// How long the rendezvous and hello exchange may take.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub handshake_timeout_ms: u64,
    /// Spin on the ring this long before sleeping when idle (0: sleep at
    /// once; at most 10,000 µs).
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub spin_us: u64,
    /// Readiness events taken per epoll_wait (1 ..= 65536).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub events: usize,
    /// Apply a randomized TCP profile to every new TCP socket; the seed is
    /// drawn from the clock and pid when not given.
    #[arg(long, value_name = "SEED", num_args = 0..=1, require_equals = true)]
    pub random_profile: Option<Option<u64>>,
    /// Sandbox of a local instance, applied once the channel with the
    /// driver is open: switch to --sandbox-user with no capabilities,
    /// no_new_privs, Landlock with no file access, and a seccomp allowlist
    /// of the calls the instance makes. `on`: apply what the system
    /// supports and log what it cannot; `strict`: all or exit 1; `off`:
    /// none. Applied in local mode and with --kmod; not with --xen-driver
    /// (its teardown needs xenstore).
    #[arg(long, value_name = "MODE", default_value = "on")]
    pub sandbox: SandboxMode,
    /// Same as --sandbox=off.
    #[arg(long)]
    pub no_sandbox: bool,
    /// The sandbox's user: a name, UID or UID:GID (never root).
    #[arg(long, value_name = "USER", default_value = "nobody")]
    pub sandbox_user: String,
    /// Keep CAP_NET_BIND_SERVICE (and no other capability) in the
    /// sandbox, so applications may listen on ports below 1024 (as a
    /// server started as root does, e.g. nginx on :80). On by default;
    /// `--sandbox-low-ports=false` drops it too.
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub sandbox_low_ports: bool,
    /// Test only: once the sandbox is applied, try each forbidden action
    /// (open, create, connect to the driver's Unix sockets or, with
    /// --kmod, open the module's device again, ptrace, exec) and print its
    /// outcome on stdout, then serve.
    #[arg(long)]
    pub sandbox_selftest: bool,
    /// FAULT INJECTION, for tests only: after serving for S seconds, turn
    /// hostile: fill the ring we produce with garbage bytes, publish a
    /// producer index past its capacity, ring the driver's doorbell, then
    /// serve nothing more (wait for the driver to close the channel or a
    /// signal). The driver must mark only this instance dead.
    #[arg(long, value_name = "S")]
    pub fault_inject_corrupt_ring_after_s: Option<u64>,
    /// Read settings from FILE first (`name = value` per line).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where a driver in another Xen domain offers our channel.
#[derive(Debug, Clone)]
pub struct XenTarget {
    /// The driver's domain.
    pub driver: u16,
    /// The channel's name.
    pub channel: String,
    /// Devices, limits and timeouts of the Xen transport.
    pub config: XenConfig,
}

/// Validated settings of one instance.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The driver's socket (empty with `--xen-driver`).
    pub driver: PathBuf,
    /// The Xen driver to join instead, if any.
    pub xen: Option<XenTarget>,
    /// The kernel module's device to join instead, if any.
    pub kmod: Option<PathBuf>,
    /// Our instance id.
    pub instance_id: u32,
    /// Executor limits and timers (validated).
    pub instance: InstanceConfig,
    /// Channel limits (what we accept from the driver) and timeouts.
    pub channel: ChannelConfig,
    /// Seed of the randomized TCP profile, if enabled.
    pub random_profile: Option<u64>,
    /// Epoll batch size.
    pub events: usize,
    /// The sandbox (local mode).
    pub sandbox: SandboxMode,
    /// Its user, as given (resolved when applied).
    pub sandbox_user: String,
    /// Keep CAP_NET_BIND_SERVICE in the sandbox.
    pub sandbox_low_ports: bool,
    /// Run the sandbox self-test before serving.
    pub sandbox_selftest: bool,
    /// Fault injection (tests only): corrupt our ring after this long.
    pub fault_inject_corrupt_ring_after: Option<Duration>,
}

/// A usage error, reported with exit code [`exit::USAGE`].
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A config file line is malformed.
    #[error("{path}:{line}: {what}")]
    ConfigLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// A limit is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// Clap refused the arguments (includes --help and --version).
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

/// Turns a config file's text into `--name=value` arguments.
pub fn config_file_args(path: &Path, text: &str) -> Result<Vec<String>, UsageError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |what: String| UsageError::ConfigLine {
            path: path.to_owned(),
            line: i + 1,
            what,
        };
        let (name, value) = match line.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (line, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            return Err(bad(format!("bad setting name {name:?}")));
        }
        if name == "config" {
            return Err(bad("config files do not nest".into()));
        }
        out.push(match value {
            Some(v) => format!("--{name}={v}"),
            None => format!("--{name}"),
        });
    }
    Ok(out)
}

/// Parses the command line (with `argv[0]`), applying `--config` first.
pub fn parse_args<I, T>(argv: I) -> Result<Args, UsageError>
where
    I: IntoIterator<Item = T>,
    T: Into<String>,
{
    let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
    // Find --config (either form) before clap sees the arguments.
    let mut file = None;
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if let Some(p) = a.strip_prefix("--config=") {
            file = Some(PathBuf::from(p));
        } else if a == "--config" {
            file = it.next().map(PathBuf::from);
        }
    }
    let mut full = Vec::with_capacity(argv.len() + 16);
    full.extend(argv.first().cloned());
    if let Some(path) = &file {
        let text = std::fs::read_to_string(path).map_err(|source| UsageError::ConfigFile {
            path: path.clone(),
            source,
        })?;
        full.extend(config_file_args(path, &text)?);
    }
    full.extend(argv.iter().skip(1).cloned());
    Ok(Args::try_parse_from(full)?)
}

const NS_PER_MS: u64 = 1_000_000;
const NS_PER_S: u64 = 1_000_000_000;

fn times(field: &str, v: u64, unit: u64) -> Result<u64, UsageError> {
    v.checked_mul(unit)
        .ok_or_else(|| UsageError::Invalid(format!("{field} = {v} is too large")))
}

impl Args {
    /// Validates every limit into [`Settings`].
    pub fn settings(&self) -> Result<Settings, UsageError> {
        let instance = InstanceConfig {
            max_sockets: self.max_sockets,
            window_bytes: self.window,
            max_backlog: self.max_backlog,
            heartbeat_interval_ns: times("heartbeat-ms", self.heartbeat_ms, NS_PER_MS)?,
            flow_active_timeout_ns: times("flow-timeout-s", self.flow_timeout_s, NS_PER_S)?,
            udp_idle_timeout_ns: times("udp-idle-s", self.udp_idle_s, NS_PER_S)?,
            max_flows: self.max_flows,
            flow_record_batch: self.flow_record_batch,
            max_mitigation_rules: self.max_mitigation_rules,
            accept_batch: self.accept_batch,
            telemetry: !self.no_telemetry,
            telemetry_interval_ns: times("telemetry-ms", self.telemetry_ms, NS_PER_MS)?,
            telemetry_sample_bytes: self.telemetry_sample,
        };
        instance
            .validate()
            .map_err(|e| UsageError::Invalid(e.to_string()))?;
        let cap = self.ring_capacity;
        if !cap.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) {
            return Err(UsageError::Invalid(format!(
                "ring-capacity = {cap} must be a power of two in {MIN_CAPACITY} ..= {MAX_CAPACITY}"
            )));
        }
        if self.max_frame < 64 || self.max_frame > cap / 2 {
            return Err(UsageError::Invalid(format!(
                "max-frame = {} must be in 64 ..= ring-capacity / 2 = {}",
                self.max_frame,
                cap / 2
            )));
        }
        if self.spin_us > 10_000 {
            return Err(UsageError::Invalid(format!(
                "spin-us = {} exceeds 10000",
                self.spin_us
            )));
        }
        if !(100..=600_000).contains(&self.handshake_timeout_ms) {
            return Err(UsageError::Invalid(format!(
                "handshake-timeout-ms = {} must be in 100 ..= 600000",
                self.handshake_timeout_ms
            )));
        }
        if !(1..=65_536).contains(&self.events) {
            return Err(UsageError::Invalid(format!(
                "events = {} must be in 1 ..= 65536",
                self.events
            )));
        }
        // Two rings, each header + data, each 4 KiB aligned.
        let ring = (RING_HEADER_LEN + cap as usize).next_multiple_of(4096);
        let kring = self.kmod_ring;
        if self.kmod.is_some() && (!kring.is_power_of_two() || !(4096..=cap).contains(&kring)) {
            return Err(UsageError::Invalid(format!(
                "kmod-ring = {kring} must be a power of two in 4096 ..= ring-capacity = {cap}"
            )));
        }
        // What we ask the module for (--kmod); a daemon chooses its own.
        let (ring_capacity, max_frame) = match self.kmod {
            Some(_) => (
                kring,
                ChannelConfig::DEFAULT_MAX_FRAME
                    .min(kring / 2)
                    .min(self.max_frame),
            ),
            None => (
                ChannelConfig::DEFAULT_RING_CAPACITY,
                ChannelConfig::DEFAULT_MAX_FRAME,
            ),
        };
        let channel = ChannelConfig {
            ring_capacity,
            max_frame,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            spin: Duration::from_micros(self.spin_us),
            max_region_len: 2 * ring,
            max_frame_limit: self.max_frame,
        };
        let random_profile = self
            .random_profile
            .map(|seed| seed.unwrap_or_else(clock_seed));
        let xen = match (self.xen_driver, &self.xen_channel) {
            (None, _) => None,
            (Some(driver), Some(channel)) => {
                if !(1..=3600).contains(&self.xen_rendezvous_s) {
                    return Err(UsageError::Invalid(format!(
                        "xen-rendezvous-s = {} must be in 1 ..= 3600",
                        self.xen_rendezvous_s
                    )));
                }
                if !DomId(driver).is_real()
                    || ins_xen::xenstore::path::check_element(channel.as_bytes()).is_err()
                {
                    return Err(UsageError::Invalid(format!(
                        "xen-driver = {driver} / xen-channel = {channel:?}: need a real domain id and a xenstore path element"
                    )));
                }
                Some(XenTarget {
                    driver,
                    channel: channel.clone(),
                    config: XenConfig {
                        rendezvous_timeout: Duration::from_secs(self.xen_rendezvous_s),
                        max_pages: self.xen_max_pages,
                        ..XenConfig::default()
                    },
                })
            }
            (Some(_), None) => {
                return Err(UsageError::Invalid("xen-driver needs xen-channel".into()));
            }
        };
        Ok(Settings {
            driver: self.driver.clone().unwrap_or_default(),
            xen,
            kmod: self.kmod.clone(),
            instance_id: self.instance_id,
            instance,
            channel,
            random_profile,
            events: self.events,
            sandbox: if self.no_sandbox {
                SandboxMode::Off
            } else {
                self.sandbox
            },
            sandbox_user: self.sandbox_user.clone(),
            sandbox_low_ports: self.sandbox_low_ports,
            fault_inject_corrupt_ring_after: self
                .fault_inject_corrupt_ring_after_s
                .map(Duration::from_secs),
            sandbox_selftest: self.sandbox_selftest,
        })
    }
}

/// A seed from the wall clock and the pid (not secret; it only varies the
/// TCP profile between instances).
fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, UsageError> {
        let mut v = vec!["ins"];
        v.extend_from_slice(args);
        parse_args(v)?.settings()
    }

    #[test]
    fn xen_target_is_validated() {
        let s = parse(&["--xen-driver", "3", "--xen-channel", "ins0"]).unwrap();
        let xen = s.xen.expect("a xen target");
        assert_eq!((xen.driver, xen.channel.as_str()), (3, "ins0"));
        assert_eq!(xen.config.rendezvous_timeout, Duration::from_secs(60));
        assert!(parse(&["--driver", "/tmp/d.sock"]).unwrap().xen.is_none());
        // A channel name is required, a socket and a Xen driver exclude each
        // other, and the name must be a xenstore path element.
        assert!(parse(&["--xen-driver", "3"]).is_err());
        assert!(parse(&["--driver", "/x", "--xen-driver", "3", "--xen-channel", "a"]).is_err());
        assert!(parse(&["--xen-driver", "3", "--xen-channel", "a/b"]).is_err());
        assert!(parse(&["--xen-driver", "32752", "--xen-channel", "a"]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn defaults_match_the_instance_config() {
        let s = parse(&["--driver", "/tmp/d.sock"]).unwrap();
        assert_eq!(s.instance, InstanceConfig::default());
        assert_eq!(s.driver, PathBuf::from("/tmp/d.sock"));
        assert_eq!(s.random_profile, None);
        assert_eq!(s.channel.max_frame_limit, 1 << 20);
        assert!(s.channel.max_region_len >= 2 * (32 << 20));
        assert_eq!(s.channel.spin, Duration::ZERO);
        assert_eq!(s.sandbox, SandboxMode::On);
        assert_eq!(s.sandbox_user, "nobody");
        let off = parse(&["--driver=/x", "--no-sandbox", "--sandbox=strict"]).unwrap();
        assert_eq!(off.sandbox, SandboxMode::Off);
        let strict = parse(&["--driver=/x", "--sandbox=strict", "--sandbox-user=ins"]).unwrap();
        assert_eq!(
            (strict.sandbox, strict.sandbox_user.as_str()),
            (SandboxMode::Strict, "ins")
        );
        assert!(parse(&["--driver=/x", "--sandbox=maybe"]).is_err());
    }

    #[test]
    fn kmod_joins_the_module_with_its_ring_size() {
        let s = parse(&["--kmod=/dev/ins"]).unwrap();
        assert_eq!(s.kmod, Some(PathBuf::from("/dev/ins")));
        assert_eq!(s.channel.ring_capacity, 1 << 20);
        assert_eq!(s.channel.max_frame, 64 << 10);
        let s = parse(&["--kmod=/dev/ins", "--kmod-ring=8192"]).unwrap();
        assert_eq!((s.channel.ring_capacity, s.channel.max_frame), (8192, 4096));
        assert!(parse(&["--kmod=/dev/ins", "--kmod-ring=3000"]).is_err());
        assert!(parse(&["--kmod=/dev/ins", "--kmod-ring=2048"]).is_err());
        assert!(
            parse(&[
                "--kmod=/dev/ins",
                "--ring-capacity=65536",
                "--kmod-ring=131072"
            ])
            .is_err()
        );
        assert!(parse(&["--kmod=/dev/ins", "--driver=/x"]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn every_limit_is_settable() {
        let s = parse(&[
            "--driver=/x",
            "--instance-id=7",
            "--max-sockets=100",
            "--window=8192",
            "--max-backlog=10",
            "--heartbeat-ms=250",
            "--flow-timeout-s=5",
            "--udp-idle-s=2",
            "--max-flows=400",
            "--flow-record-batch=8",
            "--max-mitigation-rules=9",
            "--accept-batch=3",
            "--ring-capacity=65536",
            "--max-frame=4096",
            "--spin-us=20",
            "--events=16",
            "--random-profile=42",
        ])
        .unwrap();
        let c = &s.instance;
        assert_eq!(s.instance_id, 7);
        assert_eq!(
            (c.max_sockets, c.window_bytes, c.max_backlog),
            (100, 8192, 10)
        );
        assert_eq!(c.heartbeat_interval_ns, 250_000_000);
        assert_eq!(c.flow_active_timeout_ns, 5 * NS_PER_S);
        assert_eq!(c.udp_idle_timeout_ns, 2 * NS_PER_S);
        assert_eq!((c.max_flows, c.flow_record_batch), (400, 8));
        assert_eq!((c.max_mitigation_rules, c.accept_batch), (9, 3));
        assert_eq!(s.channel.max_frame_limit, 4096);
        assert_eq!(s.channel.spin, Duration::from_micros(20));
        assert_eq!((s.events, s.random_profile), (16, Some(42)));
        // Without a seed, one is drawn.
        assert!(
            parse(&["--driver=/x", "--random-profile"])
                .unwrap()
                .random_profile
                .is_some()
        );
    }

    #[test]
    fn bad_limits_are_refused_with_the_field_named() {
        let msg = |a: &[&str]| parse(a).unwrap_err().to_string();
        assert!(msg(&["--driver=/x", "--max-sockets=0"]).contains("max_sockets"));
        assert!(msg(&["--driver=/x", "--window=100"]).contains("window_bytes"));
        assert!(msg(&["--driver=/x", "--heartbeat-ms=0"]).contains("heartbeat"));
        assert!(msg(&["--driver=/x", "--heartbeat-ms=18446744073709551615"]).contains("too large"));
        assert!(msg(&["--driver=/x", "--ring-capacity=1000"]).contains("power of two"));
        assert!(
            msg(&["--driver=/x", "--ring-capacity=4096", "--max-frame=4096"]).contains("max-frame")
        );
        assert!(msg(&["--driver=/x", "--spin-us=20000"]).contains("spin-us"));
        assert!(msg(&["--driver=/x", "--max-flows=5"]).contains("max_flows"));
        assert!(matches!(parse(&[]), Err(UsageError::Clap(_))));
        assert!(matches!(
            parse(&["--driver=/x", "--max-sockets=lots"]),
            Err(UsageError::Clap(_))
        ));
    }

    #[test]
    fn config_file_applies_first_and_command_line_wins() {
        let dir = std::env::temp_dir().join(format!("ins-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ins.conf");
        std::fs::write(
            &f,
            "# instance 3\ndriver = /run/ins.sock\ninstance-id = 3\nmax-sockets = 50 # small\nrandom-profile\n\n",
        )
        .unwrap();
        let fs = f.to_str().unwrap();
        let s = parse(&["--config", fs, "--max-sockets=60"]).unwrap();
        assert_eq!(s.driver, PathBuf::from("/run/ins.sock"));
        assert_eq!(s.instance_id, 3);
        assert_eq!(s.instance.max_sockets, 60);
        assert!(s.random_profile.is_some());
        std::fs::write(&f, "driver = /x\nmax sockets = 3\n").unwrap();
        let e = parse(&[&format!("--config={fs}")]).unwrap_err().to_string();
        assert!(e.contains(":2:"), "{e}");
        std::fs::write(&f, "config = /etc/other\n").unwrap();
        assert!(
            parse(&["--config", fs])
                .unwrap_err()
                .to_string()
                .contains("nest")
        );
        std::fs::write(&f, "no-such-option = 1\n").unwrap();
        assert!(matches!(parse(&["--config", fs]), Err(UsageError::Clap(_))));
        let e = parse(&["--config", "/nonexistent/ins.conf"]).unwrap_err();
        assert!(matches!(e, UsageError::ConfigFile { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
