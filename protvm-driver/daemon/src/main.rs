//! `ins-driver`: the protected-VM driver daemon. See the library docs.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = ins_driver::Args::parse();
    ins_driver::init_logging(args.log.as_deref())?;
    ins_driver::run(&args)
}
