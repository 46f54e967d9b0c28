//! # ins-detect
//!
//! The detection side of INS: a daemon subscribed to the driver's monitor
//! stream (connection telemetry, instance and mitigation events) that runs
//! four detectors and sends mitigations back through the driver's
//! permission-checked control socket.
//!
//! | detector | looks at | decides | default action |
//! |---|---|---|---|
//! | [`threshold`] | per-source metrics (connections, slow-phase connections, new connections, packets, bytes) at several prefix lengths | over `max(floor, factor × population baseline)` in k of n ticks; cleared after clean ticks | block the prefix for T |
//! | [`anomaly`] | each connection's resource use (k-means over standardised features) | outlier that makes no progress in k of n scores, on reports and on the timer | close the connection; block a source with many |
//! | [`graph`] | the communication graph (inbound, outbound) | new outbound destination, fan-out, outbound byte ratio after a learning window | alert |
//! | [`shape`] | first bytes' entropy, printable share and chunk lengths | random-looking flow where no tunnel is expected | alert |
//!
//! Decisions map to mitigations through [`policy`] (close, rate limit,
//! block for T, rotate the instance, alert) with automatic release. Every
//! decision is one JSON line with its evidence. The [`engine`] is sans-IO;
//! [`daemon`] does the sockets, the log and the configuration reload
//! ([`config`], one TOML file).
#![deny(unsafe_code)]

pub mod anomaly;
pub mod config;
pub mod conns;
pub mod daemon;
pub mod engine;
pub mod graph;
pub mod kmeans;
pub mod policy;
pub mod sample;
pub mod shape;
pub mod threshold;
