//! What each fuzz target does with one input. The fuzz targets
//! (`fuzz_targets/*.rs`) and the corpus replay in the test suite
//! (`tests/fuzz_corpus.rs`) both include this file, so CI checks every saved
//! input exactly as the fuzzer did, without nightly.
//!
//! Each check panics only on a bug: a parser that panics, or an error that
//! does not say where or what.

#![allow(dead_code)] // each fuzz target uses one of these

use std::path::Path;

/// An event body: parsed, or refused with a message.
pub fn event_json(data: &[u8]) {
    if let Err(e) = branchguard::event::parse_json(data) {
        assert!(!e.message.is_empty(), "an error without a message");
    }
}

/// An Alertmanager webhook body: each alert taken or refused with a message.
pub fn alertmanager(data: &[u8]) {
    match branchguard::sources::alertmanager::parse(data) {
        Ok(_) => {}
        Err(e) => assert!(!e.message.is_empty(), "an error without a message"),
    }
}

/// A message template: parsed and rendered, or refused with a message.
pub fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match branchguard::template::Template::parse(text) {
        Ok(t) => {
            let vars = branchguard::template::VARIABLES
                .iter()
                .map(|v| (v.to_string(), "x".to_string()))
                .collect();
            let _ = t.render(&vars);
        }
        Err(e) => assert!(
            !e.message.is_empty() && e.offset <= text.chars().count(),
            "{e:?}"
        ),
    }
}

/// A drill schedule: parsed and asked for its next run, or refused.
pub fn cron(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match branchguard::schedule::Schedule::parse(text) {
        Ok(s) => {
            let t0 = chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default();
            let _ = s.next_after(t0, chrono_tz::Europe::London);
        }
        Err(e) => assert!(!e.is_empty(), "an error without a message"),
    }
}

/// A playbook file in a one-branch network: loaded, or every problem
/// reported at a file, line and column.
pub fn playbook_yaml(dir: &Path, data: &[u8]) {
    let config = dir.join("branchguard.yaml");
    if !config.exists() {
        let _ = std::fs::write(
            &config,
            "branches: [{ id: b1, name: B }]\npeople: [{ id: p1, name: P, email: p@x.example, roles: [it-duty], branches: [b1] }]\n",
        );
        let _ = std::fs::create_dir_all(dir.join("playbooks"));
    }
    if std::fs::write(dir.join("playbooks/p.yaml"), data).is_err() {
        return;
    }
    if let Err(d) = branchguard::config::load(&config) {
        assert!(!d.is_empty(), "refused without an error");
        for x in &d.0 {
            assert!(x.line >= 1 && x.column >= 1 && !x.message.is_empty(), "{x}");
        }
    }
}
