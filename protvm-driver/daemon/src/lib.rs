//! # ins-driver
//!
//! The protected-VM driver daemon for one Linux host: one host of
//! [`driver_core::Driver`] (it implements the core's host traits, see
//! [`driver_core::host`]) with the local transport (memfd rings, eventfd
//! doorbells) and socket pairs for the app's sockets.
//!
//! ```text
//!  app ── libshim ──SEQPACKET── DIR/shim.sock ─┐            ┌─ DIR/instance.sock ── ins (1 channel each)
//!   │  fd = app end of a socketpair            ▼            ▼
//!   └── read/write/poll ── driver end ──▶  one epoll loop (this crate) ──▶ rings
//! ```
//!
//! One thread runs one epoll loop over: the instance listener, each
//! instance's doorbell and rendezvous socket, the shim listener, every shim
//! connection, every driver-side socket-pair end (edge-triggered), a
//! signalfd and a wake-up eventfd. Instance handshakes run on short-lived
//! threads (they block for up to the handshake timeout) and hand their
//! endpoint back through a channel.
//!
//! Access (who may do what; the socket files' modes and groups are the
//! gate, checked by the kernel at `connect`, and SO_PEERCRED is logged):
//!
//! | socket | grants | default | options |
//! |---|---|---|---|
//! | `shim.sock` | running programs under INS (`ins-ctl run`, `LD_PRELOAD`): creating and using INS sockets, nothing else | 0666, every local user | `--shim-mode`, `--shim-group` |
//! | `ctl.sock` | control: scale, stop, block, limit, close flows, shutdown, and reading every table | 0600, the driver's user (root) | `--ctl-mode`, `--ctl-group` |
//! | `monitor.sock` | the same protocol, for monitoring scripts | 0660, the driver's group | `--monitor-mode`, `--monitor-group` |
//!
//! Running a program needs only `shim.sock`: `ins-ctl run` probes it and
//! never opens `ctl.sock`, so any user the shim mode admits runs programs
//! under INS without root, while control stays with root unless
//! `--ctl-mode 660 --ctl-group OPS` hands it to a group. A shim is
//! untrusted whoever runs it: the fd a request carries names the socket,
//! so no process can act on another's sockets. A user reaches a system
//! driver with `--run-dir /run/ins` (or `INS_RUN_DIR`); the run directory
//! (created with the umask's mode) must be searchable by those users.
//!
//! Management: `DIR/ctl.sock` (mode `--ctl-mode`, default 0600) takes one
//! JSON request per line (status, list, flows with follow, block, unblock,
//! limit, close, drain, stop, spawn, scale, shutdown; parsed in
//! `daemon/ctl/command.rs`, carried out in `daemon/ctl/exec.rs`). The
//! balancer lives here too: with `--ins-bin` the driver spawns, reaps and
//! respawns `ins` children (crash-loop back-off of 1 s), keeps
//! `--instances` of them, drains before stopping (listener replicas on the
//! instance are closed, its connections finish, then the channel closes),
//! and applies the policy (`--policy FILE`, TOML, see [`Policy`]):
//! autoscale, idle retirement, rotation. The driver owns the state, so
//! `ins-ctl` needs no process of its own.
//!
//! Hot path: stream bytes go from the driver end into a reusable scratch
//! buffer and from there into the ring (`try_push_parts(&[header, bytes])`);
//! instance `Data` is written straight from the popped frame into the pair.
//! Nothing allocates per message; per-socket buffers are allocated only
//! when a pair is full.
//!
//! Layout: `main.rs` parses arguments and calls [`run`]; `daemon.rs` owns
//! the tables and maps its modules (event loop, host traits, shim I/O,
//! instance channels, relay, control socket with command parsing and
//! execution apart, monitor stream, mitigations, balancer, supervisor,
//! policy); `shimio.rs` is the shim socket plumbing (packets with fds,
//! socket pairs, the connect filler); `privs.rs` what the driver keeps of
//! its capabilities once its sockets are bound; `sys.rs` the signal and
//! capability calls rustix lacks (the only `unsafe`).
#![deny(unsafe_code)]

mod daemon;
pub mod privs;
mod shimio;
mod sys;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

pub use daemon::policy::{Policy, PolicyError};
pub use daemon::{parse_prefix, run};

/// Placement policy on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlacementArg {
    /// Fewest sockets, then lowest instance number.
    LeastBusy,
    /// Instances in turn.
    RoundRobin,
}

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "ins-driver", version, about = "INS protected-VM driver daemon")]
pub struct Args {
    /// Runtime directory holding instance.sock and shim.sock.
    #[arg(long, default_value = "/run/ins")]
    pub run_dir: PathBuf,
    /// Per-socket receive window granted to instances (bytes).
    #[arg(long, default_value_t = 256 << 10)]
    pub window: u32,
    /// Send buffer of the app's end of each stream socket (bytes; the
    /// kernel doubles it, as for any `SO_SNDBUF`). An AF_UNIX end stops
    /// being writable at a quarter of it, a TCP socket at two thirds of its
    /// autotuned buffer: the default, the maximum of `net.ipv4.tcp_wmem`
    /// (4 MiB if unreadable), makes an INS socket accept about what a
    /// loopback TCP socket does before `poll` says "not writable". 0 keeps
    /// the kernel's default for Unix sockets. Set with `SO_SNDBUFFORCE` when
    /// allowed, else capped at `net.core.wmem_max`.
    #[arg(long)]
    pub app_sndbuf: Option<usize>,
    /// Capacity of each ring (bytes, power of two).
    #[arg(long, default_value_t = 1 << 20)]
    pub ring_capacity: u32,
    /// Largest frame on each ring (bytes, at most half the capacity). The
    /// default, 65 KiB, holds the largest UDP datagram Linux sends
    /// (65,527 bytes over IPv6) with its frame prefix; a datagram that does
    /// not fit is dropped, counted and logged.
    #[arg(long, default_value_t = (64 << 10) + 1024)]
    pub max_frame: u32,
    /// An instance silent this long is declared dead.
    #[arg(long, default_value_t = 3000)]
    pub heartbeat_timeout_ms: u64,
    /// Placement of outgoing sockets.
    #[arg(long, value_enum, default_value_t = PlacementArg::LeastBusy)]
    pub placement: PlacementArg,
    /// Mode of shim.sock (octal): who may run programs under INS. The
    /// default lets every local user (see "Access" in the module docs).
    #[arg(long, default_value = "666")]
    pub shim_mode: String,
    /// Group of shim.sock (name or number); with `--shim-mode 660` only
    /// this group's members (and the driver's user) may use INS.
    #[arg(long, value_name = "GROUP")]
    pub shim_group: Option<String>,
    /// Most sockets in the table.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_sockets: usize,
    /// Most shim connections.
    #[arg(long, default_value_t = 65536)]
    pub max_shims: usize,
    /// Instance handshake timeout (ms).
    #[arg(long, default_value_t = 5000)]
    pub handshake_timeout_ms: u64,
    /// Log to this file instead of stderr.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Mode of ctl.sock, the management socket (octal).
    #[arg(long, default_value = "600")]
    pub ctl_mode: String,
    /// Group of ctl.sock (name or number); with `--ctl-mode 660` this
    /// group's members may control the driver (`ins-ctl` without root).
    #[arg(long, value_name = "GROUP")]
    pub ctl_group: Option<String>,
    /// Mode of monitor.sock, the monitor socket (octal; 0 = no monitor
    /// socket). It speaks the ctl.sock protocol; see docs/monitor.md.
    #[arg(long, default_value = "660")]
    pub monitor_mode: String,
    /// Group of monitor.sock (name or number); peers of this gid are let
    /// in when the mode grants group access.
    #[arg(long, value_name = "GROUP")]
    pub monitor_group: Option<String>,
    /// Output buffer per streaming client (bytes): a subscriber that lets
    /// more pile up is dropped and counted.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(4096..))]
    pub monitor_buffer: usize,
    /// Longest request line on ctl.sock / monitor.sock (bytes).
    #[arg(long, default_value_t = 64 << 10, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(64..))]
    pub ctl_max_line: usize,
    /// Serve Prometheus metrics (`GET /metrics`, text exposition format)
    /// on this TCP address (e.g. 127.0.0.1:9464); off when not given.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Most metrics scrapers connected at once (more are refused).
    #[arg(long, default_value_t = 16, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub metrics_max_clients: usize,
    /// Longest metrics request head (bytes); longer gets 431 and a close.
    #[arg(long, default_value_t = 8192, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(64..))]
    pub metrics_max_request: usize,
    /// A metrics scraper that has not sent its request and read the whole
    /// answer within this time (ms) is disconnected.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub metrics_timeout_ms: u64,
    /// Flow records kept for `flows` (a ring; 0 keeps none).
    #[arg(long, default_value_t = 4096)]
    pub flow_ring: usize,
    /// The `ins` binary; with it the driver spawns, reaps and respawns
    /// instances itself (the balancer).
    #[arg(long, value_name = "PATH")]
    pub ins_bin: Option<PathBuf>,
    /// Instances to keep running (needs --ins-bin or --xen-spawn).
    #[arg(long, default_value_t = 0)]
    pub instances: usize,
    /// Xen mode: each instance is a domain of its own, created and
    /// destroyed by dom0's toolstack agent (`ins-xen-agent --pvm <this
    /// domain>`) on the driver's requests in xenstore; the driver offers
    /// it a channel as `attach-xen` does, counts it toward the target,
    /// replaces it when it dies and has it destroyed when it is stopped.
    #[arg(long, conflicts_with_all = ["ins_bin", "netns"])]
    pub xen_spawn: bool,
    /// Xen mode: the instance domains are PV unikernels (`ins-pv`; the
    /// agent's request is `create unikernel`, served only by an agent
    /// started with `--unikernel-template` and `--unikernel-kernel`)
    /// instead of Linux guests running `ins`.
    #[arg(long, requires = "xen_spawn")]
    pub xen_unikernel: bool,
    /// Xen mode: channel names are this prefix and a number (default
    /// `x<pid>-`; with the number a channel name of `[a-z0-9-]`, at most 32
    /// bytes).
    #[arg(long, value_name = "PREFIX")]
    pub xen_channel_prefix: Option<String>,
    /// Xen mode: how long to wait for the toolstack agent's answer (ms;
    /// it runs `xl create` first).
    #[arg(long, default_value_t = 180_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub xen_agent_timeout_ms: u64,
    /// Xen mode: how long a new domain has to boot and join (ms).
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub xen_rendezvous_ms: u64,
    /// Xen mode: how long a channel's teardown waits for the instance to
    /// unmap before revoking (ms).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub xen_teardown_ms: u64,
    /// Xen mode: after a domain that ended without joining, wait this
    /// long before asking for another (ms).
    #[arg(long, default_value_t = 5000)]
    pub xen_retry_ms: u64,
    /// Extra argument for every spawned instance (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub ins_arg: Vec<String>,
    /// Sandbox of each spawned instance (`ins --sandbox`): `on` (default:
    /// once joined, the instance runs as --instance-user with no
    /// capabilities, no_new_privs, no file access and a seccomp allowlist,
    /// logging any part the system cannot apply), `strict` (all or the
    /// instance exits), `off`.
    #[arg(long, value_name = "MODE", default_value = "on", value_parser = ["on", "strict", "off"])]
    pub instance_sandbox: String,
    /// Sandboxed instances keep CAP_NET_BIND_SERVICE (only it), so
    /// applications may listen on ports below 1024 (`ins
    /// --sandbox-low-ports`). On by default; `--instance-low-ports=false`
    /// leaves instances with no capability at all.
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub instance_low_ports: bool,
    /// Same as --instance-sandbox=off.
    #[arg(long)]
    pub no_sandbox: bool,
    /// The user sandboxed instances run as: a name, UID or UID:GID, never
    /// root (`ins --sandbox-user`; default `nobody`).
    #[arg(long, value_name = "USER", default_value = "nobody")]
    pub instance_user: String,
    /// Run spawned instances in this named network namespace (`ip netns
    /// exec`): their sockets see only its interfaces.
    #[arg(long, visible_alias = "instance-netns", value_name = "NAME")]
    pub netns: Option<String>,
    /// Once its sockets are bound, drop every capability the driver does
    /// not need at run time (CAP_NET_ADMIN, CAP_KILL, and for spawned
    /// instances CAP_SETUID, CAP_SETGID, CAP_SETPCAP,
    /// CAP_NET_BIND_SERVICE with --instance-low-ports, CAP_SYS_ADMIN with
    /// --netns) from the effective, permitted and bounding sets, and set
    /// no_new_privs. On by default; `--drop-privileges=false` keeps them.
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub drop_privileges: bool,
    /// Capabilities kept besides those (comma-separated, e.g.
    /// `sys_ptrace,dac_read_search`).
    #[arg(long, value_name = "CAPS", default_value = "", value_parser = privs::parse_caps)]
    pub keep_caps: u64,
    /// Balancer policy file (TOML); the options below override it.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Policy override: fewest instances autoscale keeps.
    #[arg(long)]
    pub min_instances: Option<usize>,
    /// Policy override: most instances.
    #[arg(long)]
    pub max_instances: Option<usize>,
    /// Policy override: autoscale on (true) or off (false).
    #[arg(long)]
    pub autoscale: Option<bool>,
    /// Policy override: spawn when every instance uses more than this
    /// fraction of its sockets.
    #[arg(long)]
    pub scale_up_at: Option<f64>,
    /// Policy override: retire instances idle this long (s, 0 = never).
    #[arg(long)]
    pub idle_retire_s: Option<u64>,
    /// Policy override: rotation period (s, 0 = off).
    #[arg(long)]
    pub rotate_s: Option<u64>,
    /// Policy override: longest drain before a stop (ms).
    #[arg(long)]
    pub drain_timeout_ms: Option<u64>,
}

/// The policy file (if any) with the command-line overrides, validated.
pub fn policy_from_args(a: &Args) -> Result<Policy, PolicyError> {
    let mut p = match &a.policy {
        Some(f) => Policy::load(f)?,
        None => Policy::default(),
    };
    if let Some(v) = a.min_instances {
        p.min_instances = v;
    }
    if let Some(v) = a.max_instances {
        p.max_instances = v;
    }
    if let Some(v) = a.autoscale {
        p.autoscale = v;
    }
    if let Some(v) = a.scale_up_at {
        p.scale_up_at = v;
    }
    if let Some(v) = a.idle_retire_s {
        p.idle_retire_s = v;
    }
    if let Some(v) = a.rotate_s {
        p.rotate_s = v;
    }
    if let Some(v) = a.drain_timeout_ms {
        p.drain_timeout_ms = v;
    }
    p.validate()?;
    Ok(p)
}

/// Sets up tracing (`RUST_LOG` filter, default `info`) to stderr or `file`.
pub fn init_logging(file: Option<&std::path::Path>) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?;
            b.with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .try_init()
                .map_err(|e| anyhow::anyhow!("logging: {e}"))
        }
        None => b
            .with_writer(std::io::stderr)
            .try_init()
            .map_err(|e| anyhow::anyhow!("logging: {e}")),
    }
}
