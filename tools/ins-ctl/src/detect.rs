//! `ins-ctl detect status`: asks `ins-detect` (its status socket,
//! `RUN_DIR/detect.sock`, one JSON request and answer per line) for the
//! sources under suspicion, its flags and the mitigations in force with
//! their reasons, and prints them as tables or as the JSON object.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::{CtlError, Result};

/// Reads the status from `RUN_DIR/detect.sock`.
pub fn fetch(run_dir: &Path) -> Result<Value> {
    let path = run_dir.join("detect.sock");
    let s = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            CtlError::Permission(format!("{}: {e}", path.display()))
        }
        _ => CtlError::NotRunning {
            path: path.clone(),
            why: format!("ins-detect is not running ({e})"),
        },
    })?;
    let io = |e: std::io::Error| CtlError::Failed(format!("{}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    (&s).write_all(b"{\"cmd\":\"status\"}\n").map_err(io)?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).map_err(io)?;
    serde_json::from_str(&line)
        .map_err(|e| CtlError::Failed(format!("bad answer from ins-detect: {e}")))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn why(v: &Value) -> String {
    if let Some(over) = v.get("over").and_then(Value::as_array) {
        let names: Vec<String> = over.iter().map(s).collect();
        if let Some(m) = v.get("metrics") {
            let parts: Vec<String> = names
                .iter()
                .map(|n| {
                    let x = &m[n.as_str()];
                    format!("{n} {} >= {}", s(&x["value"]), s(&x["threshold"]))
                })
                .collect();
            return format!("over: {}", parts.join(", "));
        }
        return format!("over: {}", names.join(", "));
    }
    if let Some(f) = v.get("finding") {
        return s(f);
    }
    if let Some(sc) = v.get("score") {
        return format!(
            "score {} ({} outlier of {})",
            s(sc),
            s(&v["k_of_n"][0]),
            s(&v["k_of_n"][1])
        );
    }
    if let Some(n) = v.get("connections_acted_on") {
        return format!("{} connections acted on", s(n));
    }
    let t = v.to_string();
    t.chars().take(60).collect()
}

/// The status as text tables.
pub fn format_status(v: &Value) -> String {
    let mut o = String::new();
    let d = &v["detectors"];
    o += &format!(
        "ins-detect up {} s, {} connections tracked{}\n",
        s(&v["uptime_s"]),
        s(&v["connections"]),
        if v["dry_run"] == true {
            ", DRY RUN (nothing is sent)"
        } else {
            ""
        }
    );
    let clusters = d["anomaly"]["model"]["clusters"]
        .as_array()
        .map_or(0, Vec::len);
    o += &format!(
        "anomaly: {} ({} clusters, {} samples) | graph: {} ({} destinations known) | shape: {} judged, {} flagged\n",
        s(&d["anomaly"]["model"]["state"]),
        clusters,
        s(&d["anomaly"]["model"]["samples"]),
        s(&d["graph"]["model"]["state"]),
        d["graph"]["model"]["known_destinations"]
            .as_array()
            .map_or(0, Vec::len),
        s(&d["shape"]["judged"]),
        s(&d["shape"]["flagged"]),
    );
    o += "\nSUSPECTS\n";
    o += &format!(
        "{:<10} {:<22} {:>8}  {}\n",
        "DETECTOR", "SOURCE", "SINCE_S", "FLAGS"
    );
    let empty = Vec::new();
    let sus = v["suspects"].as_array().unwrap_or(&empty);
    for x in sus {
        let src = match x.get("flow") {
            Some(f) => format!("{} ({})", s(&x["source"]), s(f)),
            None => s(&x["source"]),
        };
        o += &format!(
            "{:<10} {:<22} {:>8}  {}\n",
            s(&x["detector"]),
            src,
            s(&x["since_s"]),
            why(x)
        );
    }
    if sus.is_empty() {
        o += "(none)\n";
    }
    o += "\nMITIGATIONS IN FORCE\n";
    o += &format!(
        "{:<11} {:<20} {:<10} {:>8} {:>12}  {}\n",
        "ACTION", "SUBJECT", "DETECTOR", "SINCE_S", "REMAINING_S", "WHY"
    );
    let ms = v["mitigations"].as_array().unwrap_or(&empty);
    for m in ms {
        o += &format!(
            "{:<11} {:<20} {:<10} {:>8} {:>12}  {}\n",
            s(&m["action"]),
            s(&m["subject"]),
            s(&m["detector"]),
            s(&m["since_s"]),
            s(&m["remaining_s"]),
            why(&m["why"])
        );
    }
    if ms.is_empty() {
        o += "(none)\n";
    }
    o
}

/// `detect status [--json]`.
pub fn status(run_dir: &Path, as_json: bool) -> Result<()> {
    let v = fetch(run_dir)?;
    if as_json {
        crate::outln!("{v}");
    } else {
        crate::out!("{}", format_status(&v));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables() {
        let v = json!({"ok":true,"uptime_s":12.0,"connections":3,"dry_run":false,
            "suspects":[{"detector":"threshold","source":"10.0.1.2/32","since_s":2.0,"over":["conns"]},
                        {"detector":"anomaly","source":"10.0.1.3","flow":"1:7","score":4.2,"k_of_n":[2,4]}],
            "mitigations":[{"action":"block","subject":"10.0.1.2/32","detector":"threshold","since_s":2.0,
                "remaining_s":58.0,"why":{"over":["conns"],"metrics":{"conns":{"value":280.0,"threshold":100.0}}}}],
            "detectors":{"anomaly":{"model":{"state":"trained","samples":5,"clusters":[{},{}]}},
                         "graph":{"model":{"state":"learning","known_destinations":["a"]}},
                         "shape":{"judged":9,"flagged":1}}});
        let t = format_status(&v);
        assert!(t.contains("10.0.1.2/32"), "{t}");
        assert!(t.contains("conns 280.0 >= 100.0"), "{t}");
        assert!(
            t.contains("10.0.1.3 (1:7)") && t.contains("score 4.2"),
            "{t}"
        );
        assert!(t.contains("trained (2 clusters"), "{t}");
        let none = json!({"ok":true,"suspects":[],"mitigations":[],"detectors":{}});
        assert_eq!(format_status(&none).matches("(none)").count(), 2);
    }

    #[test]
    fn not_running() {
        let d = std::env::temp_dir().join(format!("ins-ctl-detect-none-{}", std::process::id()));
        let e = fetch(&d).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::NOT_RUNNING);
        assert!(e.to_string().contains("ins-detect"), "{e}");
    }
}
