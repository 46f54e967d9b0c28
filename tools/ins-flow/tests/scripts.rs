//! Runs the Python unit tests of `tools/scripts` (autoblock's hysteresis
//! and threshold reloading). Needs `python3` (standard library only).

use std::process::Command;

#[test]
fn python_script_unit_tests_pass() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts");
    let out = Command::new("python3")
        .args([
            "-m",
            "unittest",
            "discover",
            "-v",
            "-s",
            dir,
            "-p",
            "test_*.py",
        ])
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 is required (see .ci/install-deps)");
    let err = String::from_utf8_lossy(&out.stderr);
    print!("{err}");
    assert!(out.status.success(), "python unit tests failed:\n{err}");
    assert!(err.contains("Ran 8 tests"), "unexpected test count:\n{err}");
}
