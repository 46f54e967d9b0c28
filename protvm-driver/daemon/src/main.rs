//! `ins-driver`: the protected-VM driver daemon. See the library docs.
use clap::Parser;

fn main() {
    let args = ins_driver::Args::parse();
    let r = ins_driver::init_logging(args.log.as_deref()).and_then(|()| ins_driver::run(&args));
    if let Err(e) = r {
        // One line, whatever RUST_BACKTRACE says.
        eprintln!("ins-driver: {e:#}");
        std::process::exit(1);
    }
}
