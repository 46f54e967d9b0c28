//! # ins-driver
//!
//! The protected-VM driver daemon for one Linux host: it hosts
//! [`driver_core::Driver`] with the local transport (memfd rings, eventfd
//! doorbells) and carries out its actions.
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
//! Hot path: stream bytes go from the driver end into a reusable scratch
//! buffer and from there into the ring (`try_push_parts(&[header, bytes])`);
//! instance `Data` is written straight from the popped frame into the pair.
//! Nothing allocates per message; per-socket buffers are allocated only
//! when a pair is full.
#![deny(unsafe_code)]

mod daemon;
mod shimio;
mod sys;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

pub use daemon::run;

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
    /// Capacity of each ring (bytes, power of two).
    #[arg(long, default_value_t = 1 << 20)]
    pub ring_capacity: u32,
    /// Largest frame on each ring (bytes, at most half the capacity).
    #[arg(long, default_value_t = 64 << 10)]
    pub max_frame: u32,
    /// An instance silent this long is declared dead.
    #[arg(long, default_value_t = 3000)]
    pub heartbeat_timeout_ms: u64,
    /// Placement of outgoing sockets.
    #[arg(long, value_enum, default_value_t = PlacementArg::LeastBusy)]
    pub placement: PlacementArg,
    /// Mode of shim.sock (octal).
    #[arg(long, default_value = "666")]
    pub shim_mode: String,
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
