//! One `"type":"conn"` line of the monitor stream, decoded (schema in
//! `docs/monitor.md`). Durations become seconds (f64); counters stay
//! integers. A line that is not a valid conn line is an error naming the
//! field, and is skipped by the daemon (counted, never fatal).

use std::net::SocketAddr;

use serde::Deserialize;

/// Why the instance sent the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Periodic.
    Periodic,
    /// Asked for (`report`).
    OnDemand,
    /// The connection closed.
    Final,
}

/// First-bytes statistics of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
pub struct Payload {
    /// Bytes covered.
    pub sampled: u32,
    /// Entropy, bits per byte.
    pub entropy: f64,
    /// Printable share, 0 ..= 1.
    pub printable: f64,
    /// Chunk counts per length bucket.
    pub len_hist: [u32; 8],
}

#[derive(Deserialize)]
struct Line {
    inst: u64,
    flow_id: u64,
    proto: String,
    cause: Cause,
    dir: String,
    local: SocketAddr,
    remote: SocketAddr,
    age_ns: u64,
    bytes_in: u64,
    bytes_out: u64,
    #[serde(default)]
    segs_in: u64,
    #[serde(default)]
    segs_out: u64,
    idle_in_ns: u64,
    idle_out_ns: u64,
    first_in_ns: Option<u64>,
    first_out_ns: Option<u64>,
    #[serde(default)]
    peer_fin: bool,
    #[serde(default)]
    local_fin: bool,
    bytes_acked: Option<u64>,
    peer_window: Option<u64>,
    #[serde(default)]
    zero_window: bool,
    #[serde(default)]
    zero_window_ns: u64,
    rwnd_limited_us: Option<u64>,
    #[serde(default)]
    unsent: u64,
    #[serde(default)]
    sample_in: Payload,
    #[serde(default)]
    sample_out: Payload,
}

/// A connection report.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Instance id.
    pub inst: u64,
    /// Flow id (unique within the instance).
    pub flow_id: u64,
    /// Why it was sent.
    pub cause: Cause,
    /// The protected program initiated it.
    pub outbound: bool,
    /// INS-side address.
    pub local: SocketAddr,
    /// Peer.
    pub remote: SocketAddr,
    /// Age, seconds.
    pub age: f64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes sent (handed to the network).
    pub bytes_out: u64,
    /// Segments received.
    pub segs_in: u64,
    /// Segments sent.
    pub segs_out: u64,
    /// Seconds since the last byte received.
    pub idle_in: f64,
    /// Seconds since the last byte sent.
    pub idle_out: f64,
    /// Seconds from open to the first byte received.
    pub first_in: Option<f64>,
    /// Seconds from open to the first byte sent.
    pub first_out: Option<f64>,
    /// Peer sent FIN.
    pub peer_fin: bool,
    /// We shut our write side.
    pub local_fin: bool,
    /// Bytes the peer acknowledged, if known.
    pub bytes_acked: Option<u64>,
    /// Peer's window, if known.
    pub peer_window: Option<u64>,
    /// Peer's window is zero.
    pub zero_window: bool,
    /// Seconds the window has been zero.
    pub zero_window_s: f64,
    /// Seconds sending was window-limited, if known.
    pub rwnd_limited_s: Option<f64>,
    /// Bytes accepted and not yet sent.
    pub unsent: u64,
    /// First received bytes.
    pub sample_in: Payload,
    /// First sent bytes.
    pub sample_out: Payload,
}

/// Why a line is not a conn sample.
#[derive(Debug, thiserror::Error)]
#[error("bad conn line: {0}")]
pub struct SampleError(String);

const NS: f64 = 1e9;

impl Sample {
    /// Decodes a `conn` object.
    pub fn from_json(v: &serde_json::Value) -> Result<Sample, SampleError> {
        let l = Line::deserialize(v).map_err(|e| SampleError(e.to_string()))?;
        if l.proto != "tcp" {
            return Err(SampleError(format!("proto {:?} is not tcp", l.proto)));
        }
        let outbound = match l.dir.as_str() {
            "in" => false,
            "out" => true,
            d => return Err(SampleError(format!("dir {d:?} is not in/out"))),
        };
        Ok(Sample {
            inst: l.inst,
            flow_id: l.flow_id,
            cause: l.cause,
            outbound,
            local: l.local,
            remote: l.remote,
            age: l.age_ns as f64 / NS,
            bytes_in: l.bytes_in,
            bytes_out: l.bytes_out,
            segs_in: l.segs_in,
            segs_out: l.segs_out,
            idle_in: l.idle_in_ns as f64 / NS,
            idle_out: l.idle_out_ns as f64 / NS,
            first_in: l.first_in_ns.map(|n| n as f64 / NS),
            first_out: l.first_out_ns.map(|n| n as f64 / NS),
            peer_fin: l.peer_fin,
            local_fin: l.local_fin,
            bytes_acked: l.bytes_acked,
            peer_window: l.peer_window,
            zero_window: l.zero_window,
            zero_window_s: l.zero_window_ns as f64 / NS,
            rwnd_limited_s: l.rwnd_limited_us.map(|u| u as f64 / 1e6),
            unsent: l.unsent,
            sample_in: l.sample_in,
            sample_out: l.sample_out,
        })
    }

    /// Bytes that reached the peer: acknowledged if known, else sent.
    pub fn delivered(&self) -> u64 {
        self.bytes_acked
            .map_or(self.bytes_out, |a| a.min(self.bytes_out.saturating_add(1)))
    }

    /// `INST:FLOW_ID`, the driver's name for the flow.
    pub fn flow_name(&self) -> String {
        format!("{}:{}", self.inst, self.flow_id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A conn line as the driver writes it.
    pub(crate) fn line(
        remote: &str,
        age_s: f64,
        bytes_in: u64,
        bytes_out: u64,
    ) -> serde_json::Value {
        json!({"v":1,"type":"conn","inst":1,"flow_id":7,"flow":"1:7","sock":1,"proto":"tcp",
            "cause":"periodic","dir":"in","local":"10.0.0.1:80","remote":remote,
            "age_ns": (age_s * 1e9) as u64,"bytes_in":bytes_in,"bytes_out":bytes_out,
            "segs_in":3,"segs_out":2,"idle_in_ns":0,"idle_out_ns":0,
            "first_in_ns":1000,"first_out_ns":null,"peer_fin":false,"local_fin":false,
            "bytes_acked":bytes_out,"peer_window":65535,"zero_window":false,"zero_window_ns":0,
            "rwnd_limited_us":0,"rtt_us":30,"retrans":0,"unsent":0,
            "sample_in":{"sampled":18,"entropy":3.7,"printable":1.0,"len_hist":[1,0,0,0,0,0,0,0]},
            "sample_out":{"sampled":0,"entropy":0.0,"printable":0.0,"len_hist":[0,0,0,0,0,0,0,0]},
            "at":1.0})
    }

    #[test]
    fn decodes_a_driver_line() {
        let s = Sample::from_json(&line("10.0.0.2:5000", 2.5, 18, 0)).unwrap();
        assert_eq!(s.flow_name(), "1:7");
        assert_eq!(s.cause, Cause::Periodic);
        assert!(!s.outbound);
        assert!((s.age - 2.5).abs() < 1e-9);
        assert_eq!(s.first_in, Some(1e-6));
        assert_eq!(s.first_out, None);
        assert_eq!(s.sample_in.sampled, 18);
        let mut bad = line("10.0.0.2:5000", 1.0, 0, 0);
        bad["dir"] = "sideways".into();
        assert!(
            Sample::from_json(&bad)
                .unwrap_err()
                .to_string()
                .contains("sideways")
        );
        let mut bad = line("10.0.0.2:5000", 1.0, 0, 0);
        bad.as_object_mut().unwrap().remove("age_ns");
        assert!(
            Sample::from_json(&bad)
                .unwrap_err()
                .to_string()
                .contains("age_ns")
        );
    }
}
