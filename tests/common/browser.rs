//! Scripts in tests/browser (playwright-core driving Debian's Chromium) run
//! from a test: each prints its figures as one JSON line at the end.

use std::path::PathBuf;
use std::process::Command;

pub fn dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        d.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (.ci/run does)"
    );
    d
}

/// Where screenshots go: target/test-artifacts.
pub fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts")
}

/// Runs `script` with `env`; fails the test with its output if it fails,
/// else returns the figures it printed last.
pub fn run(script: &str, env: &[(&str, String)]) -> serde_json::Value {
    let d = dir();
    let out = Command::new("node")
        .arg(d.join(script))
        .current_dir(&d)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("node (apt-get install nodejs; the machine has it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("figures from {script}: {e}: {stdout}"))
}
