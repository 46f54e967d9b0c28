//! The driver's JSON-lines flow schema, in one place.
//!
//! The driver's management socket (`DIR/ctl.sock`) answers
//! `{"cmd":"flows","follow":true}` with one reply line
//! `{"ok":true,"flows":[FLOW, …]}` (its recent backlog), then one `FLOW`
//! object per line as records arrive. A `FLOW` object:
//!
//! ```text
//! {"inst":1,"flow_id":7,"proto":"tcp","local":"10.0.0.1:80","remote":"[2001:db8::1]:5000",
//!  "bytes_in":100,"bytes_out":2000,"segs_in":3,"segs_out":4,
//!  "start_ns":1700000000000000000,"last_ns":1700000001000000000,
//!  "state":"active"|"closed","reason":""|"normal"|"reset"|"timeout"|"mitigated"|"error",
//!  "tcp_flags":27}                       (tcp_flags optional, default 0)
//! ```
//!
//! `proto` may also be the IP protocol number (6 or 17). Unknown fields are
//! ignored so the driver may add fields; a missing or mistyped known field
//! is a [`SchemaError`]. Counters are cumulative over the flow's life.

use std::net::SocketAddr;

use ins_protocol::msg::{
    CloseReason, ConnTelemetry, FlowRecord, FlowState, IPPROTO_TCP, IPPROTO_UDP, PayloadStats,
    TelemetryCause, telemetry::flags,
};
use serde_json::Value;

/// JSON field names of a flow object.
pub mod field {
    /// Instance id (number).
    pub const INST: &str = "inst";
    /// Instance-unique flow id (number).
    pub const FLOW_ID: &str = "flow_id";
    /// `"tcp"`, `"udp"`, 6 or 17.
    pub const PROTO: &str = "proto";
    /// INS-side socket address, `"ip:port"` / `"[ip6]:port"`.
    pub const LOCAL: &str = "local";
    /// Peer socket address.
    pub const REMOTE: &str = "remote";
    /// Cumulative payload bytes received by INS.
    pub const BYTES_IN: &str = "bytes_in";
    /// Cumulative payload bytes sent by INS.
    pub const BYTES_OUT: &str = "bytes_out";
    /// Cumulative segments received.
    pub const SEGS_IN: &str = "segs_in";
    /// Cumulative segments sent.
    pub const SEGS_OUT: &str = "segs_out";
    /// First packet, Unix nanoseconds.
    pub const START_NS: &str = "start_ns";
    /// Latest packet, Unix nanoseconds.
    pub const LAST_NS: &str = "last_ns";
    /// `"active"` or `"closed"`.
    pub const STATE: &str = "state";
    /// Close reason string, `""` while active.
    pub const REASON: &str = "reason";
    /// Union of TCP flags (optional).
    pub const TCP_FLAGS: &str = "tcp_flags";
    /// Socket id (optional).
    pub const SOCK: &str = "sock";
    /// Reply: success flag.
    pub const OK: &str = "ok";
    /// Reply: backlog array.
    pub const FLOWS: &str = "flows";
    /// Reply: error text.
    pub const ERROR: &str = "error";
}

/// The request that subscribes to the flow stream.
pub const FOLLOW_REQUEST: &str = "{\"cmd\":\"flows\",\"follow\":true,\"limit\":0}\n";

/// A flow record as reported by one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstFlow {
    /// The instance that reported it.
    pub inst: u32,
    /// The record (cumulative counters).
    pub rec: FlowRecord,
}

/// A connection-telemetry report (`"type":"conn"`, see
/// `docs/monitor.md`) from one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstConn {
    /// The instance that reported it.
    pub inst: u32,
    /// The report.
    pub t: ConnTelemetry,
}

/// One decoded line of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A flow record.
    Flow(InstFlow),
    /// The subscription reply with its backlog.
    Backlog(Vec<InstFlow>),
    /// A connection-telemetry report (boxed: it is much larger than the
    /// other lines).
    Conn(Box<InstConn>),
}

fn payload(o: &Value, f: &'static str) -> Result<PayloadStats, SchemaError> {
    let p = get(o, f)?;
    let frac = |k: &str, scale: f64, max: f64| -> Result<u16, SchemaError> {
        let v = p.get(k).and_then(Value::as_f64).ok_or_else(|| bad(f, p))?;
        if !(0.0..=max).contains(&v) {
            return Err(bad(f, p));
        }
        Ok((v * scale).round() as u16)
    };
    let mut hist = [0u16; 8];
    let h = p
        .get("len_hist")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(f, p))?;
    if h.len() != 8 {
        return Err(bad(f, p));
    }
    for (d, v) in hist.iter_mut().zip(h) {
        *d = v
            .as_u64()
            .and_then(|x| u16::try_from(x).ok())
            .ok_or_else(|| bad(f, p))?;
    }
    Ok(PayloadStats {
        sampled: p
            .get("sampled")
            .and_then(Value::as_u64)
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| bad(f, p))?,
        entropy_milli: frac("entropy", 1000.0, 8.0)?,
        printable_permille: frac("printable", 1000.0, 1.0)?,
        hist,
    })
}

fn u32_of(o: &Value, f: &'static str) -> Result<u32, SchemaError> {
    let n = opt_num(o, f)?;
    u32::try_from(n).map_err(|_| bad(f, &Value::from(n)))
}

/// Decodes one `conn` object.
pub fn conn_from_value(o: &Value) -> Result<InstConn, SchemaError> {
    let inst_v = get(o, field::INST)?;
    let inst = inst_v
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| bad(field::INST, inst_v))?;
    let cv = get(o, "cause")?;
    let cause = match cv.as_str() {
        Some("periodic") => TelemetryCause::Periodic,
        Some("on-demand") => TelemetryCause::OnDemand,
        Some("final") => TelemetryCause::Final,
        _ => return Err(bad("cause", cv)),
    };
    let mut fl = 0u16;
    let mut set = |bit: u16, on: bool| {
        if on {
            fl |= bit;
        }
    };
    let dv = get(o, "dir")?;
    set(
        flags::OUTBOUND,
        match dv.as_str() {
            Some("out") => true,
            Some("in") => false,
            _ => return Err(bad("dir", dv)),
        },
    );
    let present = |k: &str| o.get(k).is_some_and(|v| !v.is_null());
    set(flags::FIRST_IN, present("first_in_ns"));
    set(flags::FIRST_OUT, present("first_out_ns"));
    set(flags::TCP_INFO, present("bytes_acked"));
    set(
        flags::PEER_FIN,
        o.get("peer_fin") == Some(&Value::Bool(true)),
    );
    set(
        flags::LOCAL_FIN,
        o.get("local_fin") == Some(&Value::Bool(true)),
    );
    set(
        flags::ZERO_WINDOW,
        o.get("zero_window") == Some(&Value::Bool(true)),
    );
    let local = addr(o, field::LOCAL)?;
    let remote = addr(o, field::REMOTE)?;
    Ok(InstConn {
        inst,
        t: ConnTelemetry {
            flow_id: num(o, field::FLOW_ID)?,
            sock: u32_of(o, field::SOCK)?,
            proto: IPPROTO_TCP,
            cause,
            flags: fl,
            local,
            remote,
            age_ns: num(o, "age_ns")?,
            bytes_in: num(o, field::BYTES_IN)?,
            bytes_out: num(o, field::BYTES_OUT)?,
            segs_in: opt_num(o, field::SEGS_IN)?,
            segs_out: opt_num(o, field::SEGS_OUT)?,
            idle_in_ns: num(o, "idle_in_ns")?,
            idle_out_ns: num(o, "idle_out_ns")?,
            first_in_ns: opt_num(o, "first_in_ns")?,
            first_out_ns: opt_num(o, "first_out_ns")?,
            bytes_acked: opt_num(o, "bytes_acked")?,
            zero_window_ns: opt_num(o, "zero_window_ns")?,
            rwnd_limited_us: opt_num(o, "rwnd_limited_us")?,
            peer_window: u32_of(o, "peer_window")?,
            rtt_us: u32_of(o, "rtt_us")?,
            retrans: u32_of(o, "retrans")?,
            unsent: u32_of(o, "unsent")?,
            sample_in: payload(o, "sample_in")?,
            sample_out: payload(o, "sample_out")?,
        },
    })
}

/// Why a line could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchemaError {
    /// Not JSON, or not an object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// A field is missing.
    #[error("missing field {0:?}")]
    Missing(&'static str),
    /// A field has the wrong type or an invalid value.
    #[error("bad value for {field:?}: {value}")]
    Bad {
        /// The field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// The driver answered with an error.
    #[error("driver error: {0}")]
    Driver(String),
}

fn get<'a>(o: &'a Value, f: &'static str) -> Result<&'a Value, SchemaError> {
    o.get(f).ok_or(SchemaError::Missing(f))
}

fn bad(field: &'static str, v: &Value) -> SchemaError {
    SchemaError::Bad {
        field,
        value: v.to_string(),
    }
}

fn num(o: &Value, f: &'static str) -> Result<u64, SchemaError> {
    let v = get(o, f)?;
    v.as_u64().ok_or_else(|| bad(f, v))
}

fn opt_num(o: &Value, f: &'static str) -> Result<u64, SchemaError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| bad(f, v)),
    }
}

fn addr(o: &Value, f: &'static str) -> Result<SocketAddr, SchemaError> {
    let v = get(o, f)?;
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(f, v))
}

/// The JSON name of a close reason.
pub fn reason_name(r: CloseReason) -> &'static str {
    match r {
        CloseReason::None => "",
        CloseReason::Normal => "normal",
        CloseReason::Reset => "reset",
        CloseReason::Timeout => "timeout",
        CloseReason::Mitigated => "mitigated",
        CloseReason::Error => "error",
    }
}

/// Decodes one flow object.
pub fn flow_from_value(o: &Value) -> Result<InstFlow, SchemaError> {
    if !o.is_object() {
        return Err(SchemaError::NotJson(o.to_string()));
    }
    let inst_v = get(o, field::INST)?;
    let inst = inst_v
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| bad(field::INST, inst_v))?;
    let pv = get(o, field::PROTO)?;
    let proto = match (pv.as_str(), pv.as_u64()) {
        (Some("tcp"), _) | (_, Some(6)) => IPPROTO_TCP,
        (Some("udp"), _) | (_, Some(17)) => IPPROTO_UDP,
        _ => return Err(bad(field::PROTO, pv)),
    };
    let sv = get(o, field::STATE)?;
    let state = match sv.as_str() {
        Some("active") => FlowState::Active,
        Some("closed") => FlowState::Closed,
        _ => return Err(bad(field::STATE, sv)),
    };
    let reason = match o.get(field::REASON) {
        None | Some(Value::Null) => CloseReason::None,
        Some(v) => match v.as_str() {
            Some("") => CloseReason::None,
            Some("normal") => CloseReason::Normal,
            Some("reset") => CloseReason::Reset,
            Some("timeout") => CloseReason::Timeout,
            Some("mitigated") => CloseReason::Mitigated,
            Some("error") => CloseReason::Error,
            _ => return Err(bad(field::REASON, v)),
        },
    };
    let flags = opt_num(o, field::TCP_FLAGS)?;
    let tcp_flags = u8::try_from(flags).map_err(|_| bad(field::TCP_FLAGS, &Value::from(flags)))?;
    let sock = opt_num(o, field::SOCK)?;
    let sock = u32::try_from(sock).map_err(|_| bad(field::SOCK, &Value::from(sock)))?;
    let local = addr(o, field::LOCAL)?;
    let remote = addr(o, field::REMOTE)?;
    if local.is_ipv4() != remote.is_ipv4() {
        return Err(bad(field::REMOTE, get(o, field::REMOTE)?));
    }
    Ok(InstFlow {
        inst,
        rec: FlowRecord {
            flow_id: num(o, field::FLOW_ID)?,
            proto,
            local,
            remote,
            bytes_in: num(o, field::BYTES_IN)?,
            bytes_out: num(o, field::BYTES_OUT)?,
            segs_in: num(o, field::SEGS_IN)?,
            segs_out: num(o, field::SEGS_OUT)?,
            start_ns: num(o, field::START_NS)?,
            last_ns: num(o, field::LAST_NS)?,
            state,
            reason,
            tcp_flags,
            sock,
        },
    })
}

/// Decodes one line: a flow object, or the subscription reply.
pub fn parse_line(line: &str) -> Result<Line, SchemaError> {
    let v: Value =
        serde_json::from_str(line.trim()).map_err(|e| SchemaError::NotJson(e.to_string()))?;
    if let Some(ok) = v.get(field::OK) {
        if ok.as_bool() != Some(true) {
            let msg = v
                .get(field::ERROR)
                .and_then(Value::as_str)
                .unwrap_or("request failed");
            return Err(SchemaError::Driver(msg.to_string()));
        }
        let list = match v.get(field::FLOWS) {
            None => return Ok(Line::Backlog(Vec::new())),
            Some(l) => l.as_array().ok_or_else(|| bad(field::FLOWS, l))?,
        };
        return list
            .iter()
            .map(flow_from_value)
            .collect::<Result<_, _>>()
            .map(Line::Backlog);
    }
    if v.get("type").and_then(Value::as_str) == Some("conn") {
        return conn_from_value(&v).map(|c| Line::Conn(Box::new(c)));
    }
    flow_from_value(&v).map(Line::Flow)
}

/// Encodes a flow as one JSON object in this schema (for tests and tools).
pub fn flow_to_json(f: &InstFlow) -> String {
    let r = &f.rec;
    serde_json::json!({
        field::INST: f.inst,
        field::FLOW_ID: r.flow_id,
        field::PROTO: if r.proto == IPPROTO_TCP { "tcp" } else { "udp" },
        field::LOCAL: r.local.to_string(),
        field::REMOTE: r.remote.to_string(),
        field::BYTES_IN: r.bytes_in,
        field::BYTES_OUT: r.bytes_out,
        field::SEGS_IN: r.segs_in,
        field::SEGS_OUT: r.segs_out,
        field::START_NS: r.start_ns,
        field::LAST_NS: r.last_ns,
        field::STATE: if r.state == FlowState::Active { "active" } else { "closed" },
        field::REASON: reason_name(r.reason),
        field::TCP_FLAGS: r.tcp_flags,
        field::SOCK: r.sock,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRIVER_LINE: &str = r#"{"flow":"1:7","inst":1,"flow_id":7,"proto":"tcp","local":"10.0.0.1:80","remote":"10.0.0.2:5000","bytes_in":100,"bytes_out":2000,"segs_in":3,"segs_out":4,"start_ns":1700000000000000000,"last_ns":1700000001000000000,"state":"closed","reason":"reset","reported_at":1.5}"#;

    #[test]
    fn parses_driver_line_and_round_trips() {
        let Line::Flow(f) = parse_line(DRIVER_LINE).unwrap() else {
            panic!("not a flow")
        };
        assert_eq!(f.inst, 1);
        assert_eq!(f.rec.flow_id, 7);
        assert_eq!(f.rec.proto, 6);
        assert_eq!(f.rec.remote, "10.0.0.2:5000".parse().unwrap());
        assert_eq!(f.rec.bytes_out, 2000);
        assert_eq!(f.rec.state, FlowState::Closed);
        assert_eq!(f.rec.reason, CloseReason::Reset);
        assert_eq!(f.rec.tcp_flags, 0);
        assert_eq!(parse_line(&flow_to_json(&f)).unwrap(), Line::Flow(f));
    }

    #[test]
    fn parses_backlog_and_errors() {
        let l = format!("{{\"ok\":true,\"flows\":[{DRIVER_LINE}]}}");
        let Line::Backlog(v) = parse_line(&l).unwrap() else {
            panic!("not a backlog")
        };
        assert_eq!(v.len(), 1);
        assert_eq!(
            parse_line(r#"{"ok":false,"error":"nope"}"#),
            Err(SchemaError::Driver("nope".into()))
        );
    }

    #[test]
    fn parses_conn_lines() {
        let l = r#"{"v":1,"type":"conn","inst":2,"flow_id":9,"flow":"2:9","sock":5,"proto":"tcp","cause":"final","dir":"out","local":"10.0.0.1:40000","remote":"10.0.0.9:443","age_ns":3000000000,"bytes_in":10,"bytes_out":20,"segs_in":2,"segs_out":3,"idle_in_ns":5,"idle_out_ns":6,"first_in_ns":null,"first_out_ns":7,"peer_fin":true,"local_fin":false,"bytes_acked":21,"peer_window":0,"zero_window":true,"zero_window_ns":100,"rwnd_limited_us":4,"rtt_us":30,"retrans":1,"unsent":0,"sample_in":{"sampled":10,"entropy":3.25,"printable":1.0,"len_hist":[1,0,0,0,0,0,0,0]},"sample_out":{"sampled":20,"entropy":7.9,"printable":0.375,"len_hist":[0,1,0,0,0,0,0,0]},"at":1.0}"#;
        let Line::Conn(c) = parse_line(l).unwrap() else {
            panic!("not a conn line")
        };
        assert_eq!(c.inst, 2);
        let t = c.t;
        assert_eq!(
            (t.flow_id, t.cause, t.age_ns),
            (9, TelemetryCause::Final, 3_000_000_000)
        );
        assert!(t.has(
            flags::OUTBOUND
                | flags::FIRST_OUT
                | flags::TCP_INFO
                | flags::ZERO_WINDOW
                | flags::PEER_FIN
        ));
        assert!(!t.has(flags::FIRST_IN));
        assert_eq!(
            (t.sample_in.entropy_milli, t.sample_out.printable_permille),
            (3250, 375)
        );
        assert!(parse_line(&l.replace("\"final\"", "\"later\"")).is_err());
        assert!(parse_line(&l.replace("\"entropy\":3.25", "\"entropy\":9.5")).is_err());
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(matches!(
            parse_line("garbage"),
            Err(SchemaError::NotJson(_))
        ));
        assert_eq!(
            parse_line(&DRIVER_LINE.replace("\"flow_id\":7,", "")),
            Err(SchemaError::Missing("flow_id"))
        );
        assert!(parse_line(&DRIVER_LINE.replace("\"tcp\"", "\"icmp\"")).is_err());
        assert!(parse_line(&DRIVER_LINE.replace("10.0.0.2:5000", "[::1]:5000")).is_err());
        assert!(parse_line(&DRIVER_LINE.replace("\"inst\":1", "\"inst\":-1")).is_err());
        assert!(parse_line(&DRIVER_LINE.replace("\"reset\"", "\"bogus\"")).is_err());
    }
}
