//! Links the image with `link.ld` as a static, non-PIE ELF without C
//! start files, and refuses builds without the image's RUSTFLAGS.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let has = |f: &str| flags.split('\x1f').any(|x| x.contains(f));
    if !has("no-redzone") || !has("relocation-model=static") {
        panic!(
            "ins-pv is a Xen PV kernel image: build it with `make unikernel` \
             (RUSTFLAGS=\"-C no-redzone=yes -C relocation-model=static ...\" \
             and --target x86_64-unknown-linux-gnu)"
        );
    }
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--gc-sections",
        "-Wl,-z,max-page-size=4096",
        "-Wl,-z,noexecstack",
        "-Wl,--build-id=none",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/link.ld");
}
