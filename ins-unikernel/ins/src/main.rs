//! `ins`: an INS instance on the Linux host stack. Parses the command line
//! and runs [`ins::run`]; see `ins --help` for options and exit codes.
#![deny(unsafe_code)]

use ins::cli::{UsageError, exit};
use tracing_subscriber::EnvFilter;

fn main() {
    let settings = match ins::parse_args(std::env::args()).and_then(|a| a.settings()) {
        Ok(s) => s,
        Err(UsageError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("ins: {e}");
            std::process::exit(exit::USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match ins::run(&settings) {
        Ok(how) => {
            tracing::info!(?how, "exit");
            std::process::exit(exit::OK);
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ins: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
