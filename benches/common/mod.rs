//! What the benchmarks share: starting the release binary in a directory and
//! reading percentiles.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `branchguard run` in `dir` (its `branchguard.yaml` listens on port 0):
/// the process and the URL it printed once it listens. `BRANCHGUARD_BIN`
/// names another build to measure instead of this one (for A/B comparisons
/// of two commits in alternating runs, since this machine's speed drifts).
pub fn start(dir: &Path) -> (Child, String) {
    start_with_env(dir, &[])
}

/// [`start`] with environment variables set.
pub fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let bin = std::env::var_os("BRANCHGUARD_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_branchguard").into());
    let mut child = Command::new(bin)
        .arg("run")
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start branchguard");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the listening line");
    let url = format!("http://{}", line.trim().trim_start_matches("listening on "));
    (child, url)
}

/// The `p` percentile (0 to 1) of `v`, NaN when empty.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}
