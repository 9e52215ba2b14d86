//! What the engine's tests of one playbook share (a file of tests by its name,
//! so the architecture rules, which hold for the engine, leave it out): the
//! base test network with that playbook alone, and a Tuesday morning in Shanghai.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::*;

pub(super) fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T09:00:00+08:00")
        .unwrap()
        .to_utc()
}

/// The configuration of `tests/fixtures/base` with `playbook` (YAML) as its
/// only playbook; the directory lives as long as the returned guard.
pub(super) fn loaded_with(playbook: &str) -> (Loaded, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/base");
    std::fs::copy(
        base.join("branchguard.yaml"),
        dir.path().join("branchguard.yaml"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("playbooks")).unwrap();
    std::fs::write(dir.path().join("playbooks/one.yaml"), playbook).unwrap();
    let loaded = crate::config::load(&dir.path().join("branchguard.yaml")).unwrap();
    (loaded, dir)
}

/// An engine at [`t0`] running `playbook` alone.
pub(super) fn engine_with(playbook: &str) -> (Engine, tempfile::TempDir) {
    let (loaded, dir) = loaded_with(playbook);
    (Engine::new(loaded, Vec::new(), 1, 1, t0()), dir)
}
