//! `ins-detect`: parses arguments and runs the daemon.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ins_detect::config::Config;
use ins_detect::daemon::{self, Options};

/// Detects low-volume attacks on the services behind INS and mitigates
/// them through the driver's control socket. Decisions are written as JSON
/// lines (standard output, or --log). Status: `ins-ctl detect status`.
#[derive(Parser, Debug)]
#[command(name = "ins-detect", version)]
struct Cli {
    /// The driver's run directory (ctl.sock; detect.sock is created there).
    /// Default: $INS_RUN_DIR, else /run/ins for root, else
    /// $XDG_RUNTIME_DIR/ins, else /tmp/ins-UID (as ins-ctl).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Configuration file (TOML), reloaded when it changes. Default:
    /// RUN_DIR/detect.toml if it exists, else built-in defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Append decisions to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Print the configuration in effect (defaults merged with --config)
    /// as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Check the configuration file and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
}

fn main() {
    let cli = Cli::parse();
    let run_dir = cli.run_dir.unwrap_or_else(ins_ctl::default_run_dir);
    if cli.print_config || cli.check_config {
        let c = match &cli.config {
            Some(p) => Config::load(p),
            None => Ok(Config::default()),
        };
        match c {
            Ok(c) if cli.print_config => ins_ctl::out!("{}", c.to_toml()),
            Ok(_) => ins_ctl::outln!("configuration valid"),
            Err(e) => {
                eprintln!("ins-detect: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    let o = Options {
        run_dir,
        config: cli.config,
        log: cli.log,
        duration: cli.duration.map(Duration::from_secs_f64),
    };
    if let Err(e) = daemon::run(&o) {
        eprintln!("ins-detect: {e:#}");
        let usage = e
            .downcast_ref::<ins_detect::config::ConfigError>()
            .is_some();
        std::process::exit(if usage { 2 } else { 1 });
    }
}
