//! The rules of docs/ARCHITECTURE.md that can be read off the source. Each
//! test names the **Invariant:** it keeps; a change that breaks one fails
//! here with the offending file and line, and either the change or the
//! sentence (and this test) must move.
//!
//! Test code (`#[cfg(test)] mod … { … }` blocks, `tests.rs`,
//! `*_tests.rs`) and comment lines are left out: tests may build anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A source file without its tests and comment lines.
struct Src {
    /// Relative to `src/`, with `/`.
    path: String,
    /// (line number, text) of each line kept.
    lines: Vec<(usize, String)>,
}

impl Src {
    /// The top-level module the file belongs to (`engine`, `show`, …).
    fn module(&self) -> &str {
        let first = self.path.split('/').next().unwrap_or("");
        first.strip_suffix(".rs").unwrap_or(first)
    }

    fn under(&self, prefixes: &[&str]) -> bool {
        prefixes.iter().any(|p| self.path.starts_with(p))
    }
}

fn sources() -> Vec<Src> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    assert!(out.len() > 50, "found only {} source files", out.len());
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Src>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(root, &p, out);
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&p).unwrap();
        out.push(Src {
            path: rel,
            lines: without_tests(&text),
        });
    }
}

/// The lines outside `#[cfg(test)] mod name { … }` blocks that are not
/// comments. rustfmt puts such a block's closing brace alone at the start of
/// a line, at the indentation it opened with (counting braces would trip on
/// those in strings).
fn without_tests(text: &str) -> Vec<(usize, String)> {
    // A file that is test support as a whole (`#![cfg(test)]`).
    if text.lines().any(|l| l.trim() == "#![cfg(test)]") {
        return Vec::new();
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim();
        let opens = lines.get(i + 1).filter(|n| {
            let n = n.trim_start();
            let n = ["pub(super) ", "pub(crate) ", "pub "]
                .iter()
                .find_map(|p| n.strip_prefix(p))
                .unwrap_or(n);
            n.starts_with("mod ") && n.trim_end().ends_with('{')
        });
        if let (true, Some(open)) = (t == "#[cfg(test)]", opens) {
            let indent = &open[..open.len() - open.trim_start().len()];
            let close = format!("{indent}}}");
            let mut j = i + 2;
            while j < lines.len() && lines[j].trim_end() != close {
                j += 1;
            }
            i = j + 1;
            continue;
        }
        if !t.starts_with("//") {
            out.push((i + 1, lines[i].to_string()));
        }
        i += 1;
    }
    out
}

/// `file:line: text` of every kept line of `files` containing `pat`.
fn hits<'a>(files: impl IntoIterator<Item = &'a Src>, pat: &str) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        for (n, l) in &f.lines {
            if l.contains(pat) {
                out.push(format!("src/{}:{n}: {}", f.path, l.trim()));
            }
        }
    }
    out
}

fn none_of(files: &[&Src], patterns: &[&str], rule: &str) {
    let found: Vec<String> = patterns
        .iter()
        .flat_map(|p| hits(files.iter().copied(), p))
        .collect();
    assert!(found.is_empty(), "{rule}:\n{}", found.join("\n"));
}

/// **Invariant:** loading reads files and nothing else; it never touches the
/// store or the network.
#[test]
fn loading_touches_neither_the_store_nor_the_network() {
    let all = sources();
    let config: Vec<&Src> = all.iter().filter(|f| f.module() == "config").collect();
    assert!(config.len() > 5);
    none_of(
        &config,
        &[
            "crate::store",
            "crate::engine",
            "crate::notify",
            "reqwest",
            "tokio::",
            "TcpStream",
            "TcpListener",
            "UdpSocket",
            "to_socket_addrs",
            "std::process",
            "lettre",
            "rusqlite",
        ],
        "config/ reads files only",
    );
}

/// **Invariant:** the engine does no I/O and never reads the clock; matching,
/// the report, scoring and `show` are pure functions too.
#[test]
fn the_engine_and_the_pure_modules_do_no_io_and_read_no_clock() {
    let all = sources();
    let pure: Vec<&Src> = all
        .iter()
        .filter(|f| {
            f.module() == "engine"
                || [
                    "matching.rs",
                    "report.rs",
                    "show.rs",
                    "scope.rs",
                    "roster.rs",
                    "roster/ics.rs",
                    "response.rs",
                    "template.rs",
                    "schedule.rs",
                ]
                .contains(&f.path.as_str())
        })
        .collect();
    assert!(pure.len() > 15);
    none_of(
        &pure,
        &[
            "crate::clock",
            "clock::now",
            "std::fs",
            "File::",
            "std::net",
            "std::process",
            "std::env",
            "std::thread",
            "tokio::time",
            "tokio::fs",
            "tokio::net",
            "tokio::spawn",
            "tokio::task",
            "reqwest",
            "rusqlite",
            "lettre",
            "println!",
            "eprintln!",
            "tracing::",
            "crate::store",
            "crate::notify",
            "crate::metrics",
        ],
        "the engine and the pure modules do no I/O",
    );
}

/// **Invariant:** every history line, audit row and notification is decided
/// in `engine/`: nothing else builds one (the store reads history back).
#[test]
fn history_lines_audit_rows_and_messages_are_made_only_by_the_engine() {
    let all = sources();
    let outside: Vec<&Src> = all.iter().filter(|f| f.module() != "engine").collect();
    let mut found = Vec::new();
    for ty in ["HistoryEntry {", "AuditLine {", "Notification {", "Round {"] {
        for h in hits(outside.iter().copied(), ty) {
            // Reading stored history back is not deciding it.
            if ty == "HistoryEntry {"
                && (h.starts_with("src/store/sqlite/mod.rs:")
                    || h.starts_with("src/store/pg/mod.rs:"))
                && h.contains("Ok(HistoryEntry {")
            {
                continue;
            }
            found.push(h);
        }
    }
    assert!(
        found.is_empty(),
        "built outside engine/:\n{}",
        found.join("\n")
    );
    // Every stored event goes through the one function that audits it.
    let engine_files: Vec<&Src> = all.iter().filter(|f| f.module() == "engine").collect();
    let pushed = hits(engine_files.iter().copied(), "events.push(");
    assert_eq!(pushed.len(), 1, "events stored past `received`: {pushed:?}");
    assert!(pushed[0].starts_with("src/engine/intake.rs:"), "{pushed:?}");
    // And the engine does build them (the test looks at the right text).
    let engine: Vec<&Src> = all.iter().filter(|f| f.module() == "engine").collect();
    for ty in [
        "history.push(HistoryEntry {",
        "audit.push(AuditLine {",
        "outbox.push(Notification {",
    ] {
        assert!(!hits(engine.iter().copied(), ty).is_empty(), "{ty}");
    }
    // The store writes the audit rows a round holds, the record of each
    // incident's stored bytes included (the chain's own key marker aside).
    let store: Vec<&Src> = all.iter().filter(|f| f.module() == "store").collect();
    none_of(
        &store,
        &["\"incident.saved\"", "\"incident-state:"],
        "an audit row composed in the store",
    );
    assert!(!hits(engine.iter().copied(), "\"incident.saved\"").is_empty());
}

/// **Invariant:** a source reaches the engine only through `intake`.
#[test]
fn sources_and_http_reach_the_engine_only_through_intake() {
    let all = sources();
    let edge: Vec<&Src> = all
        .iter()
        .filter(|f| f.under(&["sources/", "http/"]))
        .collect();
    let found = hits(edge.iter().copied(), ".ingest(");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("src/sources/mod.rs:"), "{found:?}");
    // It sits in `intake`.
    let m = all.iter().find(|f| f.path == "sources/mod.rs").unwrap();
    let at: usize = found[0].split(':').nth(1).unwrap().parse().unwrap();
    let func = m
        .lines
        .iter()
        .rev()
        .filter(|(n, _)| *n < at)
        .find(|(_, l)| {
            l.trim_start().starts_with("pub async fn ")
                || l.trim_start().starts_with("pub fn ")
                || l.trim_start().starts_with("async fn ")
                || l.trim_start().starts_with("fn ")
        })
        .unwrap();
    assert!(
        func.1.contains("fn intake"),
        "ingest is called from {}",
        func.1
    );
    // Sources word no HTTP status: the HTTP layer does.
    let src: Vec<&Src> = all.iter().filter(|f| f.under(&["sources/"])).collect();
    none_of(
        &src,
        &["axum::", "StatusCode"],
        "sources/ knows nothing of HTTP",
    );
}

/// **Invariant:** nothing outside `store/` names the SQLite types; handlers
/// never name a store backend.
#[test]
fn nothing_outside_the_store_names_sqlite() {
    let all = sources();
    let outside: Vec<&Src> = all.iter().filter(|f| f.module() != "store").collect();
    none_of(
        &outside,
        &["rusqlite", "sqlite::", "Sqlite"],
        "SQLite is the store's",
    );
    // Handlers read; only the engine loop holds the writer.
    let http: Vec<&Src> = all.iter().filter(|f| f.module() == "http").collect();
    none_of(
        &http,
        &["Writer", ".commit("],
        "handlers never write the store",
    );
}

/// **Invariant:** a delivery lane is `store::Lane`, made and shown in one
/// module; whether a message is a drill's is its flag, never its subject.
#[test]
fn lanes_and_drills_are_data_not_strings() {
    let all = sources();
    let others: Vec<&Src> = all.iter().filter(|f| f.path != "store/lane.rs").collect();
    none_of(&others, &["\"webhook:"], "a lane is a `Lane`");
    let everywhere: Vec<&Src> = all.iter().collect();
    none_of(
        &everywhere,
        &[
            "starts_with(\"[DRILL]",
            "strip_prefix(\"[DRILL]",
            "contains(\"[DRILL]",
            "'[DRILL]'",
        ],
        "a drill is known by its flag",
    );
    // The rule looks at the right text: the lane module does write it.
    let lane = all.iter().find(|f| f.path == "store/lane.rs");
    assert!(lane.is_some_and(|f| !hits([f], "\"webhook:").is_empty()));
}

/// One module emits metrics: `metrics.rs` (**Invariant:** label values come
/// from configuration or small fixed sets — which it can only keep if no one
/// else registers a series).
#[test]
fn one_module_emits_metrics() {
    let all = sources();
    let outside: Vec<&Src> = all.iter().filter(|f| f.path != "metrics.rs").collect();
    none_of(&outside, &["prometheus"], "metrics are metrics.rs's");
}

/// **Invariant:** no other module than `show` formats a moment, a measured
/// span or a score for people. File names carry times in their own form;
/// configured durations are echoed as configured (`duration::short`).
#[test]
fn only_show_writes_times_for_people() {
    let all = sources();
    let outside: Vec<&Src> = all.iter().filter(|f| f.path != "show.rs").collect();
    let file_names = [
        "notify/email.rs",
        "sources/spool.rs",
        "store/sqlite/files.rs",
    ];
    let stray: Vec<String> = hits(outside.iter().copied(), ".format(\"%")
        .into_iter()
        .filter(|h| {
            !file_names
                .iter()
                .any(|f| h.starts_with(&format!("src/{f}:")))
        })
        .collect();
    assert!(
        stray.is_empty(),
        "a time formatted outside show.rs:\n{}",
        stray.join("\n")
    );
    for f in file_names {
        let lines = hits(all.iter().filter(|s| s.path == f), ".format(\"%");
        assert!(
            lines.iter().all(|l| !l.contains("%H:%M")),
            "a time for people in {f}: {lines:?}"
        );
    }
    // Configured durations, as the file says them.
    let configured = [
        "daemon/commands.rs",
        "engine/silences.rs",
        "sources/probes.rs",
    ];
    let short: Vec<String> = hits(outside.iter().copied(), "duration::short(")
        .into_iter()
        .filter(|h| {
            !configured
                .iter()
                .any(|f| h.starts_with(&format!("src/{f}:")))
        })
        .collect();
    assert!(
        short.is_empty(),
        "a measured span not written by show.rs:\n{}",
        short.join("\n")
    );
    none_of(
        &outside,
        &["as_secs()).to_string()", "{}s\""],
        "spans are written by show.rs",
    );
    // The page has one formatter of its own for times (in the branch's zone).
    let js =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/ui/app.js"))
            .unwrap();
    assert_eq!(js.matches("Intl.DateTimeFormat").count(), 1);
    assert!(
        !js.contains("toLocale"),
        "the page formats a time its own way"
    );
    assert!(!js.contains("Math.round(score") && !js.contains("toFixed(0)"));
}

/// **Invariant:** branch scope is decided in `scope.rs` and nowhere else.
#[test]
fn branch_scope_is_decided_in_one_place() {
    let all = sources();
    let outside: Vec<&Src> = all
        .iter()
        // A roster's branches say where it fills a role, not who may see
        // what: `roster.rs` is the one other place that asks.
        .filter(|f| f.path != "scope.rs" && f.path != "roster.rs" && f.module() != "config")
        .collect();
    none_of(
        &outside,
        &[
            ".branches.contains(",
            "roles.contains(\"ops\")",
            "p.branches.iter()",
        ],
        "scope is scope.rs's",
    );
}

/// **Invariant:** nothing outside the engine loop builds or changes the
/// engine; the wiring's `mod.rs` decides nothing about incidents; the
/// delivery worker imports neither the wiring nor HTTP.
#[test]
fn the_engine_belongs_to_the_engine_loop_and_notify_to_no_one() {
    let all = sources();
    let built = hits(all.iter(), "Engine::new(");
    assert!(!built.is_empty());
    assert!(
        built
            .iter()
            .all(|h| h.starts_with("src/daemon/engine_loop.rs:")),
        "{built:?}"
    );
    let wiring: Vec<&Src> = all.iter().filter(|f| f.path == "daemon/mod.rs").collect();
    none_of(
        &wiring,
        &["HistoryEntry", "AuditLine", "Notification", "Round"],
        "daemon/mod.rs decides nothing",
    );
    let notify: Vec<&Src> = all.iter().filter(|f| f.module() == "notify").collect();
    none_of(
        &notify,
        &[
            "crate::daemon",
            "crate::http",
            "crate::cli",
            "crate::sources",
        ],
        "notify/ stands alone",
    );
}

/// **Invariant:** the dashboard page holds no data: everything it shows comes
/// from the API, asked with the signed-in token.
#[test]
fn the_dashboard_page_asks_the_api_for_everything() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/ui");
    let js = std::fs::read_to_string(ui.join("app.js")).unwrap();
    let mut fetches = 0;
    for (n, l) in js.lines().enumerate() {
        if let Some(at) = l.find("fetch(") {
            fetches += 1;
            let arg = &l[at + 6..];
            assert!(
                arg.starts_with("path") || arg.starts_with("'/api/v1/"),
                "app.js:{}: fetches something other than the API: {l}",
                n + 1
            );
        }
    }
    assert!(fetches >= 2);
    // `path` is always an API path.
    let mut calls = 0;
    for l in js.lines() {
        // `api(METHOD, PATH, …)` and `apiText(PATH)`.
        let found = l
            .find("await api(")
            .map(|at| l[at..].split(',').nth(1).unwrap_or(""))
            .or_else(|| l.find("await apiText(").map(|at| &l[at + 14..]));
        if let Some(path) = found {
            calls += 1;
            let path = path.trim_start();
            assert!(
                path.starts_with("'/api/v1/") || path.starts_with("`/api/v1/"),
                "app.js asks something other than the API: {l}"
            );
        }
    }
    assert!(calls >= 5, "{calls}");
    let html = std::fs::read_to_string(ui.join("index.html")).unwrap();
    assert!(
        !html.contains("sh-00") && !html.contains("incident #"),
        "the page carries data"
    );
    // The wall screen too: it reads the API and nothing else.
    let wall = std::fs::read_to_string(ui.join("wall.js")).unwrap();
    let mut fetches = 0;
    for (n, l) in wall.lines().enumerate() {
        if let Some(at) = l.find("fetch(") {
            fetches += 1;
            assert!(
                l[at + 6..].starts_with("'/api/v1/"),
                "wall.js:{}: fetches something other than the API: {l}",
                n + 1
            );
        }
    }
    assert!(fetches >= 2, "{fetches}");
    let html = std::fs::read_to_string(ui.join("wall.html")).unwrap();
    assert!(!html.contains("sh-00"), "the wall page carries data");
}

/// **Invariant:** there are no import cycles among top-level modules.
#[test]
fn no_import_cycles_between_top_level_modules() {
    let all = sources();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in all
        .iter()
        .filter(|f| f.path != "lib.rs" && f.path != "main.rs")
    {
        let me = f.module().to_string();
        let entry = edges.entry(me.clone()).or_default();
        for (_, l) in &f.lines {
            for part in l.split("crate::").skip(1) {
                let names: Vec<String> = if let Some(group) = part.strip_prefix('{') {
                    let inner = group.split('}').next().unwrap_or("");
                    inner
                        .split(',')
                        .filter_map(|s| s.trim().split("::").next().map(str::to_string))
                        .filter(|s| !s.is_empty())
                        .collect()
                } else {
                    vec![
                        part.chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect(),
                    ]
                };
                for n in names {
                    if !n.is_empty() && n != me {
                        entry.insert(n);
                    }
                }
            }
        }
    }
    assert!(
        edges.get("daemon").is_some_and(|d| d.contains("engine")),
        "{edges:?}"
    );
    // A cycle is a module that reaches itself.
    let mut cycles = Vec::new();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = todo.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    let mut p = path.clone();
                    p.push(start.clone());
                    cycles.push(p.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    todo.push((next.clone(), p));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The test's own reading of the source: test blocks and comments are left
/// out, code after a test block is kept.
#[test]
fn the_reader_leaves_out_tests_and_comments_only() {
    let text = "fn a() {}\n// HistoryEntry {\n#[cfg(test)]\nmod tests {\n    fn b() { \"}\" }\n}\nfn c() {}\n#[cfg(test)]\npub(super) mod t {\n}\n";
    let kept: Vec<String> = without_tests(text).into_iter().map(|(_, l)| l).collect();
    assert_eq!(kept, vec!["fn a() {}", "fn c() {}"]);
}

/// **Invariant:** nothing in branchguard deletes or rewrites audit rows: the
/// bank keeps its records at least 3 years, and the chain is the record.
/// (Tests may; the reader of `sources()` leaves tests out.)
#[test]
fn nothing_deletes_or_rewrites_audit_rows() {
    let all = sources();
    let files: Vec<&Src> = all.iter().collect();
    // One statement per backend writes them, and it appends (the test sees the store).
    let inserts = hits(files.iter().copied(), "INSERT INTO audit");
    let backends: Vec<&str> = inserts
        .iter()
        .filter_map(|h| h.strip_prefix("src/store/")?.split('/').next())
        .collect();
    assert_eq!(backends, ["pg", "sqlite"], "{inserts:?}");
    none_of(
        &files,
        &[
            "DELETE FROM audit",
            "UPDATE audit",
            "DROP TABLE audit",
            "DROP TABLE IF EXISTS audit",
            "REPLACE INTO audit",
        ],
        "audit rows are kept (at least 3 years: SCENARIOS' records rule)",
    );
}
