//! `ins-driver` (being built).
fn main() {
    eprintln!("ins-driver: not built yet");
    std::process::exit(2);
}
