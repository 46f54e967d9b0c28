//! INS flow export: turns the driver's JSON-lines flow stream into IPFIX
//! (RFC 7011, biflow counters per RFC 5103) or NetFlow v9 (RFC 3954)
//! datagrams for standard collectors.
//!
//! ```text
//! ctl.sock / stdin ──JSON lines──► schema ──InstFlow (cumulative)──► record::DeltaTracker
//!        ──ExportRecord (delta)──► encoder (ipfix | netflow9 layout) ──UDP──► collector
//! ```
//!
//! No crate from crates.io covers both IPFIX and v9 *encoding* (the
//! registry search was unreachable from here; the known Rust crates are
//! parsers), so the encoder is this crate's own, tested byte for byte
//! against the RFC layouts and end to end against nfcapd/nfdump.

#![deny(unsafe_code)]

pub mod encoder;
pub mod export;
pub mod ipfix;
pub mod netflow9;
pub mod record;
pub mod schema;
pub mod watch;
