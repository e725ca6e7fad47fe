//! Runs the load generator binary the way every test here does.

use std::process::Command;

use serde_json::Value;

/// Runs `coffer-loadgen` with `args` and `--json`; fails the test unless it succeeds, and
/// returns its report.
pub fn run_loadgen_json(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_coffer-loadgen"))
        .args(args)
        .arg("--json")
        .output()
        .expect("running coffer-loadgen");
    assert!(
        output.status.success(),
        "coffer-loadgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("coffer-loadgen prints JSON")
}
