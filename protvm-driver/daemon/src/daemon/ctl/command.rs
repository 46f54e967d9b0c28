//! Parsing: one request line (a JSON object) into a [`Command`], every
//! argument checked, or the error answer. Nothing here touches the daemon;
//! what needs its state (is this instance live, was the driver started
//! with `--ins-bin`, the policy's limits) is checked by
//! [`exec`](super::exec).
//!
//! | `cmd` | arguments | [`Command`] |
//! |---|---|---|
//! | `status`, `list`, `shutdown` | – | [`Command::Status`] … |
//! | `flows` | `limit` (integer ≥ 0), `follow` (bool) | [`Command::Flows`] |
//! | `subscribe` | `types`: non-empty array of `flow`, `instance`, `mitigation`, `conn` | [`Command::Subscribe`] |
//! | `report` | `flow`: `INST:FLOW_ID` (optional; absent: every connection) | [`Command::Report`] |
//! | `block`, `unblock` | `prefix` (`ADDR[/LEN]`) | [`Command::Block`], [`Command::Unblock`] |
//! | `limit` | `prefix`, `conn_rate`, `byte_rate` (integers ≥ 0; both 0 clears) | [`Command::Limit`] |
//! | `close` | `flow`: `INST:FLOW_ID` or `FLOW_ID` | [`Command::Close`] |
//! | `drain`, `stop` | `id` (integer) | [`Command::Drain`], [`Command::Stop`] |
//! | `spawn` | `count` (integer ≥ 1, default 1) | [`Command::Spawn`] |
//! | `scale` | `n` (integer) | [`Command::Scale`] |
//! | `attach-xen` | `domid` (a real domain id), `channel` (a xenstore path element, ≤ 64 bytes), `rendezvous_ms` (1 ..= 3600000, default 60000), `teardown_ms` (0 ..= 600000, default 5000) | [`Command::AttachXen`] |

use std::net::IpAddr;

use driver_core::InstId;
use ins_protocol::msg::Prefix;
use serde_json::Value;

use super::err;
use super::monitor::{SUB_ALL, SUB_CONN, SUB_FLOW, SUB_INSTANCE, SUB_MITIGATION};
use crate::daemon::xen::{Attach, XenPeer};

/// A checked request.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Command {
    /// The driver's summary.
    Status,
    /// The instance table.
    List,
    /// The last `limit` flow records; with `follow`, every later one too.
    Flows {
        /// How many (`usize::MAX`: all kept).
        limit: usize,
        /// Keep streaming flow records.
        follow: bool,
    },
    /// Stream these event types (`monitor::SUB_*` bits).
    Subscribe(u8),
    /// Block a prefix on every instance (and later ones).
    Block(Prefix),
    /// Remove a block.
    Unblock(Prefix),
    /// Rate-limit each source in a prefix (both rates 0: clear the limit).
    Limit {
        /// The sources.
        prefix: Prefix,
        /// New connections per second (and burst).
        conn_rate: u32,
        /// Bytes per second (and burst).
        byte_rate: u64,
    },
    /// Reset one flow, on one instance or on all.
    Close {
        /// The instance (`None`: every live one).
        inst: Option<InstId>,
        /// The flow.
        flow_id: u64,
    },
    /// Connection telemetry now: one flow, or every connection.
    Report {
        /// The instance and flow (`None`: every connection everywhere).
        flow: Option<(InstId, u64)>,
    },
    /// Drain an instance (it keeps its connections, takes no new ones).
    Drain(u64),
    /// Drain and stop an instance; the target count drops by one.
    Stop(u64),
    /// Raise the target count.
    Spawn(usize),
    /// Set the target count.
    Scale(usize),
    /// Offer a Xen channel to an instance in another domain.
    AttachXen(Attach),
    /// Stop the driver.
    Shutdown,
}

/// Parses a request object; `Err` is the answer to send.
pub(super) fn parse(req: &Value) -> Result<Command, Value> {
    let cmd = req.get("cmd").and_then(Value::as_str).unwrap_or("");
    let prefix = || -> Result<Prefix, Value> {
        let s = req
            .get("prefix")
            .and_then(Value::as_str)
            .ok_or_else(|| err("bad-request", "missing \"prefix\""))?;
        parse_prefix(s).map_err(|e| err("bad-prefix", e))
    };
    Ok(match cmd {
        "status" => Command::Status,
        "list" => Command::List,
        "flows" => {
            let limit = match req.get("limit") {
                None | Some(Value::Null) => usize::MAX,
                Some(v) => match v.as_u64() {
                    Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                    None => {
                        return Err(err(
                            "bad-request",
                            "\"limit\" must be a non-negative integer",
                        ));
                    }
                },
            };
            let follow = match req.get("follow") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(err("bad-request", "\"follow\" must be a boolean")),
            };
            Command::Flows { limit, follow }
        }
        "subscribe" => Command::Subscribe(subscription(req)?),
        "block" => Command::Block(prefix()?),
        "unblock" => Command::Unblock(prefix()?),
        "limit" => {
            let p = prefix()?;
            let num = |k: &str| -> Result<u64, Value> {
                match req.get(k) {
                    None | Some(Value::Null) => Ok(0),
                    Some(v) => v.as_u64().ok_or_else(|| {
                        err(
                            "bad-request",
                            format!("\"{k}\" must be a non-negative integer"),
                        )
                    }),
                }
            };
            let (cr, br) = match (num("conn_rate"), num("byte_rate")) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => return Err(e),
            };
            let Ok(cr32) = u32::try_from(cr) else {
                return Err(err("bad-request", "conn_rate too large"));
            };
            Command::Limit {
                prefix: p,
                conn_rate: cr32,
                byte_rate: br,
            }
        }
        "close" => {
            let s = req.get("flow").and_then(Value::as_str).unwrap_or("");
            let (inst, flow) = match s.split_once(':') {
                Some((i, f)) => (i.parse::<InstId>().ok(), f.parse::<u64>().ok()),
                None => (None, s.parse::<u64>().ok()),
            };
            let Some(flow_id) = flow else {
                return Err(err(
                    "bad-request",
                    format!("bad flow {s:?}: expected INST:FLOW_ID or FLOW_ID"),
                ));
            };
            Command::Close { inst, flow_id }
        }
        "report" => Command::Report {
            flow: match req.get("flow") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => {
                    let parsed = s.split_once(':').and_then(|(i, f)| {
                        Some((i.parse::<InstId>().ok()?, f.parse::<u64>().ok()?))
                    });
                    match parsed {
                        Some((i, f)) if f != 0 => Some((i, f)),
                        _ => {
                            return Err(err(
                                "bad-request",
                                format!("bad flow {s:?}: expected INST:FLOW_ID"),
                            ));
                        }
                    }
                }
                Some(_) => return Err(err("bad-request", "\"flow\" must be a string")),
            },
        },
        "drain" => Command::Drain(instance_id(req)?),
        "stop" => Command::Stop(instance_id(req)?),
        "spawn" => {
            let n = match req.get("count") {
                None | Some(Value::Null) => 1,
                Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                    Some(n) => n,
                    None => {
                        return Err(err("bad-request", "\"count\" must be a positive integer"));
                    }
                },
            };
            if n == 0 {
                return Err(err("bad-request", "count must be at least 1"));
            }
            Command::Spawn(n)
        }
        "scale" => {
            let Some(n) = req.get("n").and_then(Value::as_u64).map(|n| n as usize) else {
                return Err(err("bad-request", "missing numeric \"n\""));
            };
            Command::Scale(n)
        }
        "attach-xen" => Command::AttachXen(attach_xen(req)?),
        "shutdown" => Command::Shutdown,
        "" => return Err(err("bad-request", "missing \"cmd\"")),
        other => return Err(err("bad-request", format!("unknown command {other:?}"))),
    })
}

/// `subscribe`'s `types` as `SUB_*` bits (all when absent).
fn subscription(req: &Value) -> Result<u8, Value> {
    match req.get("types") {
        None | Some(Value::Null) => Ok(SUB_ALL),
        Some(Value::Array(a)) if !a.is_empty() => {
            let mut m = 0;
            for t in a {
                m |= match t.as_str() {
                    Some("flow") => SUB_FLOW,
                    Some("instance") => SUB_INSTANCE,
                    Some("mitigation") => SUB_MITIGATION,
                    Some("conn") => SUB_CONN,
                    _ => {
                        return Err(err(
                            "bad-request",
                            format!(
                                "unknown event type {t}; expected \"flow\", \"instance\", \"mitigation\" or \"conn\""
                            ),
                        ));
                    }
                };
            }
            Ok(m)
        }
        Some(_) => Err(err(
            "bad-request",
            "\"types\" must be a non-empty array of strings",
        )),
    }
}

/// `attach-xen`'s arguments.
fn attach_xen(req: &Value) -> Result<Attach, Value> {
    let domid = req
        .get("domid")
        .and_then(Value::as_u64)
        .and_then(|d| u16::try_from(d).ok())
        .filter(|&d| ins_xen::DomId(d).is_real())
        .ok_or_else(|| err("bad-request", "\"domid\" must be a domain id (0 ..= 32751)"))?;
    let channel = req
        .get("channel")
        .and_then(Value::as_str)
        .ok_or_else(|| err("bad-request", "missing \"channel\""))?;
    if channel.len() > 64 || ins_xen::xenstore::path::check_element(channel.as_bytes()).is_err() {
        return Err(err(
            "bad-request",
            format!("bad channel {channel:?}: a xenstore path element of at most 64 bytes"),
        ));
    }
    let ms = |k: &str, default: u64, range: std::ops::RangeInclusive<u64>| match req.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().filter(|n| range.contains(n)).ok_or_else(|| {
            err(
                "bad-request",
                format!(
                    "\"{k}\" must be an integer in {} ..= {}",
                    range.start(),
                    range.end()
                ),
            )
        }),
    };
    Ok(Attach {
        peer: XenPeer {
            domid,
            channel: channel.to_string(),
        },
        rendezvous: std::time::Duration::from_millis(ms("rendezvous_ms", 60_000, 1..=3_600_000)?),
        teardown: std::time::Duration::from_millis(ms("teardown_ms", 5_000, 0..=600_000)?),
    })
}

/// The numeric `id` of `drain` and `stop` (whether it names a live
/// instance is for the executor).
fn instance_id(req: &Value) -> Result<u64, Value> {
    req.get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| err("bad-request", "missing numeric \"id\""))
}

/// Parses `ADDR` or `ADDR/LEN`.
pub fn parse_prefix(s: &str) -> Result<Prefix, String> {
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = a
        .parse()
        .map_err(|_| format!("bad prefix {s:?}: {a:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match l {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| format!("bad prefix {s:?}: length must be 0 ..= {max}"))?,
    };
    Prefix::new(ip, len).map_err(|e| format!("bad prefix {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prefixes() {
        assert_eq!(parse_prefix("10.0.0.0/8").unwrap().len, 8);
        assert_eq!(parse_prefix("10.1.2.3").unwrap().len, 32);
        assert_eq!(parse_prefix("::1").unwrap().len, 128);
        assert!(parse_prefix("10.0.0.0/33").is_err());
        assert!(parse_prefix("10.0.0.1/8").is_err(), "host bits set");
        assert!(parse_prefix("nonsense").is_err());
        assert!(parse_prefix("10.0.0.0/").is_err());
    }

    /// The argument checks that need no daemon state answer as before the
    /// split, word for word.
    #[test]
    fn arguments_checked_with_their_answers() {
        let kind = |v: Value| {
            let e = parse(&v).unwrap_err();
            (
                e["kind"].as_str().unwrap().to_string(),
                e["error"].as_str().unwrap().to_string(),
            )
        };
        assert_eq!(
            kind(json!({})),
            ("bad-request".into(), "missing \"cmd\"".into())
        );
        assert_eq!(
            kind(json!({"cmd": "frobnicate"})),
            (
                "bad-request".into(),
                "unknown command \"frobnicate\"".into()
            )
        );
        assert_eq!(
            kind(json!({"cmd": "block", "prefix": "10.0.0.1/8"})).0,
            "bad-prefix"
        );
        assert_eq!(
            kind(json!({"cmd": "limit", "prefix": "10.0.0.0/8", "conn_rate": 1u64 << 33})),
            ("bad-request".into(), "conn_rate too large".into())
        );
        assert_eq!(
            kind(json!({"cmd": "spawn", "count": 0})),
            ("bad-request".into(), "count must be at least 1".into())
        );
        assert_eq!(
            kind(json!({"cmd": "stop"})),
            ("bad-request".into(), "missing numeric \"id\"".into())
        );
        assert_eq!(
            parse(&json!({"cmd": "close", "flow": "3:17"})).unwrap(),
            Command::Close {
                inst: Some(3),
                flow_id: 17
            }
        );
        assert_eq!(
            parse(&json!({"cmd": "flows", "limit": 2, "follow": true})).unwrap(),
            Command::Flows {
                limit: 2,
                follow: true
            }
        );
        assert_eq!(
            parse(&json!({"cmd": "subscribe", "types": ["flow", "mitigation"]})).unwrap(),
            Command::Subscribe(SUB_FLOW | SUB_MITIGATION)
        );
        let Command::AttachXen(a) =
            parse(&json!({"cmd": "attach-xen", "domid": 5, "channel": "ins0"})).unwrap()
        else {
            panic!("not attach-xen")
        };
        assert_eq!((a.peer.domid, a.peer.channel.as_str()), (5, "ins0"));
        assert_eq!(a.rendezvous, std::time::Duration::from_secs(60));
        for bad in [
            json!({"cmd": "attach-xen", "channel": "ins0"}),
            json!({"cmd": "attach-xen", "domid": 32752, "channel": "ins0"}),
            json!({"cmd": "attach-xen", "domid": 5, "channel": "a/b"}),
            json!({"cmd": "attach-xen", "domid": 5, "channel": ""}),
            json!({"cmd": "attach-xen", "domid": 5, "channel": "x".repeat(65)}),
            json!({"cmd": "attach-xen", "domid": 5, "channel": "ins0", "rendezvous_ms": 0}),
        ] {
            assert_eq!(kind(bad.clone()).0, "bad-request", "{bad}");
        }
    }
}
