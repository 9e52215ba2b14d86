#![no_main]

use std::sync::OnceLock;

#[path = "../checks.rs"]
mod checks;

/// One directory for the whole run: a network and the playbook under test.
fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("branchguard-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::playbook_yaml(dir(), data));
