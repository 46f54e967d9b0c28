//! `ins-flow`: flow export for INS.

use std::io::BufReader;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use ins_flow::encoder::Format;
use ins_flow::export::{self, Options};
use ins_flow::ipfix;

/// Where the driver is found when neither --source nor --stdin is given.
const SOURCE_HELP: &str = "\
Input: --stdin, else --source PATH, else the driver's RUN_DIR/ctl.sock found
as ins-ctl finds it: --run-dir, else $INS_RUN_DIR, else /run/ins for root,
else $XDG_RUNTIME_DIR/ins, else /tmp/ins-UID.";

#[derive(Parser)]
#[command(name = "ins-flow", version, about = "INS flow export (IPFIX, NetFlow v9)", after_help = SOURCE_HELP)]
struct Cli {
    /// Runtime directory of the driver (as for ins-ctl); its ctl.sock is
    /// the input unless --source or --stdin is given.
    #[arg(long, global = true, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// The input socket: `--source`, else the run directory's `ctl.sock`
/// (found as `ins-ctl` finds it).
fn source_path(source: Option<PathBuf>, run_dir: Option<PathBuf>) -> Result<PathBuf> {
    match (source, run_dir) {
        (Some(_), Some(_)) => bail!("give --source PATH or --run-dir DIR, not both"),
        (Some(p), None) => Ok(p),
        (None, d) => Ok(ins_ctl::ctl_socket(
            &d.unwrap_or_else(ins_ctl::default_run_dir),
        )),
    }
}

/// Connects to the driver; a missing driver is said as ins-ctl says it.
fn subscribe(
    path: &std::path::Path,
    backlog: bool,
    telemetry: bool,
) -> Result<BufReader<std::os::unix::net::UnixStream>> {
    export::subscribe(path, backlog, telemetry).with_context(|| {
        format!(
            "INS driver not reachable at {} (start it with `ins-ctl up`, or give --run-dir, \
             --source or --stdin)",
            path.display()
        )
    })
}

#[derive(Subcommand)]
enum Cmd {
    /// Export flow records to a collector over UDP.
    Export {
        /// Send IPFIX to HOST:PORT.
        #[arg(long, value_name = "HOST:PORT", conflicts_with = "netflow_v9")]
        ipfix: Option<String>,
        /// Send NetFlow v9 to HOST:PORT.
        #[arg(long = "netflow-v9", value_name = "HOST:PORT")]
        netflow_v9: Option<String>,
        /// The driver's management socket (default: RUN_DIR/ctl.sock).
        #[arg(long, value_name = "PATH", conflicts_with = "stdin")]
        source: Option<PathBuf>,
        /// Read JSON-lines flow records from standard input.
        #[arg(long)]
        stdin: bool,
        /// Also export the driver's backlog of recent flows on subscribing.
        #[arg(long, conflicts_with = "telemetry")]
        backlog: bool,
        /// Also export live connection telemetry (IPFIX only: the
        /// connection templates 258/259 with the INS telemetry elements).
        #[arg(long, conflicts_with = "netflow_v9")]
        telemetry: bool,
        /// IPFIX enterprise number for the INS elements.
        #[arg(long, default_value_t = ipfix::DEFAULT_PEN)]
        pen: u32,
        /// Path MTU towards the collector (bytes).
        #[arg(long, default_value_t = 1500)]
        mtu: usize,
        /// Template refresh interval, seconds.
        #[arg(long, default_value_t = 60.0)]
        template_refresh: f64,
        /// Longest a record waits before it is sent, milliseconds.
        #[arg(long, default_value_t = 1000)]
        flush_ms: u64,
        /// Forget a flow's totals when it has been idle this long, seconds.
        #[arg(long, default_value_t = 3600)]
        forget_idle: u64,
    },
    /// Live view of top talkers, instances and mitigations, refreshing in place.
    Watch {
        /// The driver's management socket (default: RUN_DIR/ctl.sock).
        #[arg(long, value_name = "PATH", conflicts_with = "stdin")]
        source: Option<PathBuf>,
        /// Read JSON-lines flow records from standard input.
        #[arg(long)]
        stdin: bool,
        /// Refresh interval, seconds.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Rows of top talkers.
        #[arg(long, default_value_t = 15)]
        top: usize,
        /// Stop after this many screens (0 = until the input ends).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
}

/// Asks the driver for its status: instance counts and mitigations.
fn status_lines(path: &std::path::Path) -> Vec<String> {
    use std::io::{BufRead as _, Write as _};
    let get = || -> Result<serde_json::Value> {
        let mut s = std::os::unix::net::UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"{\"cmd\":\"status\"}\n")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(serde_json::from_str(&line)?)
    };
    match get() {
        Ok(v) => vec![
            format!(
                "instances: {}",
                v.get("instances")
                    .map(|i| i.to_string())
                    .unwrap_or_default()
            ),
            format!(
                "mitigations: {}",
                v.get("mitigations")
                    .map(|i| i.to_string())
                    .unwrap_or_default()
            ),
        ],
        Err(e) => vec![format!("driver status unavailable: {e}")],
    }
}

fn watch<R: std::io::BufRead + Send + 'static>(
    input: R,
    ctl: Option<PathBuf>,
    interval: Duration,
    top: usize,
    count: u64,
) -> Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    use std::sync::mpsc;
    let (tx, rx) = mpsc::sync_channel::<Option<ins_flow::schema::InstFlow>>(4096);
    std::thread::spawn(move || {
        let mut bad = 0u64;
        for line in input.lines() {
            let Ok(line) = line else { break };
            match ins_flow::schema::parse_line(&line) {
                Ok(ins_flow::schema::Line::Flow(f)) => {
                    if tx.send(Some(f)).is_err() {
                        return;
                    }
                }
                Ok(ins_flow::schema::Line::Backlog(_) | ins_flow::schema::Line::Conn(_)) => {}
                Err(e) => {
                    bad += 1;
                    if bad <= ins_flow::export::WARN_LINES {
                        eprintln!("ins-flow: warning: skipped line: {e}");
                    }
                }
            }
        }
        let _ = tx.send(None);
    });
    let tty = std::io::stdout().is_terminal();
    let mut w = ins_flow::watch::Window::new();
    let mut screens = 0u64;
    let mut next = std::time::Instant::now() + interval;
    let mut ended = false;
    while !ended {
        loop {
            let wait = next.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Some(f)) => w.observe(&f),
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    ended = true;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        next += interval;
        let extra = ctl.as_deref().map(status_lines).unwrap_or_default();
        let text = w.render(top, interval, &extra);
        // `ins-flow watch | head`: when the reader has gone, exit quietly
        // as a coreutils program would (ins_ctl::out, status 141). Only
        // standard output is treated so; a socket's EPIPE stays an error.
        let mut out = std::io::stdout().lock();
        let r = if tty {
            // Home the cursor and clear the screen: refresh in place.
            write!(out, "\x1b[H\x1b[2J{text}")
        } else {
            writeln!(out, "{text}----")
        };
        if let Err(e) = r.and_then(|()| out.flush()) {
            ins_ctl::out::exit_on(&e);
        }
        screens += 1;
        if count != 0 && screens >= count {
            break;
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Export {
            ipfix,
            netflow_v9,
            source,
            stdin,
            backlog,
            telemetry,
            pen,
            mtu,
            template_refresh,
            flush_ms,
            forget_idle,
        } => {
            let (format, dest) = match (ipfix, netflow_v9) {
                (Some(d), None) => (Format::Ipfix { pen }, d),
                (None, Some(d)) => (Format::NetflowV9, d),
                _ => bail!("give exactly one of --ipfix HOST:PORT or --netflow-v9 HOST:PORT"),
            };
            if !(template_refresh.is_finite() && template_refresh >= 0.0) {
                bail!("--template-refresh must be a non-negative number of seconds");
            }
            let opts = Options {
                dest: export::resolve(&dest)?,
                format,
                mtu,
                template_refresh: Duration::from_secs_f64(template_refresh),
                flush: Duration::from_millis(flush_ms),
                forget_idle: Duration::from_secs(forget_idle),
                backlog,
                telemetry,
            };
            let counters = if stdin {
                if cli.run_dir.is_some() {
                    bail!("give --stdin or --run-dir DIR, not both");
                }
                export::run(BufReader::new(std::io::stdin()), &opts).context("export")?
            } else {
                let path = source_path(source, cli.run_dir)?;
                export::run(subscribe(&path, backlog, telemetry)?, &opts).context("export")?
            };
            eprintln!(
                "ins-flow: lines {} flows {} bad {} unchanged {} records {} packets {} send-errors {}",
                counters.lines,
                counters.flows,
                counters.bad_lines,
                counters.unchanged,
                counters.records,
                counters.packets,
                counters.send_errors
            );
            Ok(())
        }
        Cmd::Watch {
            source,
            stdin,
            interval,
            top,
            count,
        } => {
            if !(interval.is_finite() && interval > 0.0) {
                bail!("--interval must be a positive number of seconds");
            }
            let interval = Duration::from_secs_f64(interval);
            if stdin {
                if cli.run_dir.is_some() {
                    bail!("give --stdin or --run-dir DIR, not both");
                }
                watch(BufReader::new(std::io::stdin()), None, interval, top, count)
            } else {
                let path = source_path(source, cli.run_dir)?;
                let r = subscribe(&path, false, false)?;
                watch(r, Some(path), interval, top, count)
            }
        }
    }
}
