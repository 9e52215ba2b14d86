//! Replays every saved fuzzing input (`fuzz/corpus/<target>/`) through the
//! same checks the fuzz targets run (`fuzz/checks.rs`), so CI keeps them
//! passing without nightly or libFuzzer. How to fuzz: docs/ARCHITECTURE.md.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// Every input saved for `target`; there must be some.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no saved inputs in {}", dir.display());
    out
}

fn replay(target: &str, check: impl Fn(&[u8])) {
    for (name, input) in corpus(target) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        assert!(r.is_ok(), "fuzz/corpus/{target}/{name} fails its check");
    }
}

#[test]
fn event_json_corpus() {
    replay("event_json", checks::event_json);
}

#[test]
fn alertmanager_corpus() {
    replay("alertmanager", checks::alertmanager);
}

#[test]
fn template_corpus() {
    replay("template", checks::template);
}

#[test]
fn cron_corpus() {
    replay("cron", checks::cron);
}

#[test]
fn playbook_yaml_corpus() {
    let dir = tempfile::tempdir().unwrap();
    replay("playbook_yaml", |data| {
        checks::playbook_yaml(dir.path(), data)
    });
}

/// The replay can fail: a check that panics is reported with its input's name.
#[test]
fn a_failing_check_names_its_input() {
    let r = std::panic::catch_unwind(|| replay("cron", |_| panic!("boom")));
    assert!(r.is_err());
}
