//! `ins`: an INS instance on the Linux host stack (being built).
fn main() {
    eprintln!("ins: the instance is not built yet");
    std::process::exit(2);
}
