//! The documentation cannot drift from the code: every YAML example in
//! `docs/*.md` is a whole file, checked by the real `branchguard check` against
//! a copy of the bundled example network.
//!
//! A ```yaml block starts with `# file: PATH` (`branchguard.yaml`,
//! `playbooks/NAME.yaml` or `drills/NAME.yaml`); it replaces or adds that file.
//! A block meant to show a mistake says so on its second line:
//! `# check: fails with "TEXT"`, and must then fail with TEXT in the output.

mod common;

use std::path::{Path, PathBuf};

use common::Fixture;

struct Example {
    doc: String,
    line: usize,
    path: String,
    fails_with: Option<String>,
    text: String,
}

fn docs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files
}

/// Every ```yaml block of a Markdown text, with the line it starts on.
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```yaml" => current = Some((i + 1, String::new())),
            Some(_) if line.trim_start().starts_with("```") => {
                out.extend(current.take());
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```yaml block");
    out
}

fn examples() -> Vec<Example> {
    let mut out = Vec::new();
    for doc in docs() {
        let name = doc.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&doc).unwrap();
        for (line, block) in yaml_blocks(&text) {
            let mut lines = block.lines();
            let first = lines.next().unwrap_or_default();
            let path = first
                .strip_prefix("# file: ")
                .unwrap_or_else(|| {
                    panic!("docs/{name}:{line}: a yaml example must start with `# file: PATH`, not `{first}`")
                })
                .trim()
                .to_string();
            assert!(
                path == "branchguard.yaml"
                    || (path.starts_with("playbooks/")
                        || path.starts_with("drills/")
                        || path.starts_with("rosters/"))
                        && path.ends_with(".yaml")
                        && !path.contains(".."),
                "docs/{name}:{line}: `{path}` is not a config, playbook or drill file"
            );
            let fails_with = lines.next().and_then(|l| {
                l.strip_prefix("# check: fails with \"")
                    .and_then(|r| r.strip_suffix('"'))
                    .map(str::to_string)
            });
            out.push(Example {
                doc: name.clone(),
                line,
                path,
                fails_with,
                text: block,
            });
        }
    }
    out
}

#[test]
fn every_yaml_example_in_the_docs_passes_check_or_fails_as_it_says() {
    let all = examples();
    assert!(
        all.len() >= 10,
        "expected the reference docs to carry checked examples, found {}",
        all.len()
    );
    let mut problems = Vec::new();
    for ex in &all {
        let f = Fixture::bundled();
        f.write(&ex.path, &ex.text);
        // The reference's examples name this token variable.
        let out = f.run_env(
            &["check"],
            &[("BG_OPS_TOKEN", "an-example-token-for-the-docs")],
        );
        let said = format!("{}{}", out.stdout, out.stderr);
        let ok = match &ex.fails_with {
            None => out.code == 0,
            Some(want) => out.code == 1 && said.contains(want.as_str()),
        };
        if !ok {
            problems.push(format!(
                "docs/{}:{} ({}): expected {}, check exited {}:\n{said}",
                ex.doc,
                ex.line,
                ex.path,
                ex.fails_with
                    .as_ref()
                    .map_or("to pass".to_string(), |w| format!("to fail with \"{w}\"")),
                out.code
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The repository stands on its own: nothing points at files a user of it does not have.
#[test]
fn nothing_in_the_repository_points_outside_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs"), root.join("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let forbidden = ["../shared", "SPEC.md", "SPEC §"];
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if forbidden.iter().any(|w| line.contains(w)) {
                found.push(format!("{}:{}: {line}", f.display(), i + 1));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_block_reader_finds_blocks_and_their_lines() {
    let blocks =
        yaml_blocks("text\n```yaml\n# file: a\nx: 1\n```\n```text\nno\n```\n```yaml\ny: 2\n```\n");
    assert_eq!(
        blocks,
        vec![
            (2, "# file: a\nx: 1\n".to_string()),
            (9, "y: 2\n".to_string())
        ]
    );
}
