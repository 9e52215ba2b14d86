//! Every shell example of README.md and docs/*.md runs, in order, against a
//! real daemon on a copy of the bundled network, as a user would type it:
//! `cargo run --release --` stands for the binary, `127.0.0.1:9700` for the
//! daemon's address. The docs say what to expect on the command's first
//! line, after two spaces and `#`:
//!
//! - `# exits N: …` — the exit code (default 0);
//! - `# answers NNN …` — the HTTP status of each `curl` (default 2xx);
//! - `# not run: WHY` — a command the test cannot run, and why;
//!
//! and `# …` lines right after a command are output it must print (`...`
//! stands for anything). Each command's `--help` is compared with CLI.md:
//! every option it has is documented, and every option documented exists.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Daemon, Fixture};

/// Commands of the README that are the reader's setup, not the tour.
const SETUP: &[(&str, &str)] = &[
    (
        "cargo run --release -- run",
        "the daemon: the test runs it itself, on a free port",
    ),
    ("cargo test", "this is the test (and its own binaries)"),
    (
        "cargo bench",
        "benchmarks run for minutes and need Prometheus Alertmanager: see docs/PERFORMANCE.md",
    ),
];

#[derive(Debug, Default)]
struct Command {
    doc: String,
    line: usize,
    text: String,
    shown: Vec<String>,
    exits: i32,
    answers: Option<u16>,
    skip: Option<String>,
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, root.join("README.md"));
    docs
}

/// A command's text without its comments (after two spaces and `#`,
/// outside quotes, to the end of their line), the first comment, and
/// whether a quote is still open at its end.
fn annotation(text: &str) -> (String, Option<String>, bool) {
    let mut quote: Option<char> = None;
    let mut out = String::new();
    let mut note = None;
    let mut comment = false;
    let chars: Vec<char> = text.chars().collect();
    for i in 0..chars.len() {
        let c = chars[i];
        if comment {
            if c == '\n' {
                comment = false;
                out.push(c);
            }
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && i >= 2 && chars[i - 1] == ' ' && chars[i - 2] == ' ' => {
                let rest: String = chars[i + 1..].iter().take_while(|c| **c != '\n').collect();
                note.get_or_insert_with(|| rest.trim().to_string());
                comment = true;
                while out.ends_with(' ') {
                    out.pop();
                }
                continue;
            }
            None => {}
        }
        out.push(c);
    }
    (out, note, quote.is_some())
}

/// The commands of every ```sh block of `text`.
fn commands(doc: &str, text: &str) -> Vec<Command> {
    let mut out: Vec<Command> = Vec::new();
    let mut in_block = false;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if !in_block {
            in_block = line.trim() == "```sh";
            i += 1;
            continue;
        }
        if line.trim_start().starts_with("```") {
            in_block = false;
            i += 1;
            continue;
        }
        if line.trim().is_empty() {
            i += 1;
            continue;
        }
        if let Some(shown) = line.trim_start().strip_prefix("# ") {
            let last = out
                .last_mut()
                .filter(|c| c.doc == doc)
                .unwrap_or_else(|| panic!("{doc}:{}: output before any command", i + 1));
            last.shown.push(shown.to_string());
            i += 1;
            continue;
        }
        let start = i;
        let mut text = line.to_string();
        // Continued lines, a quote open across lines, a here-document.
        let heredoc = text
            .split("<<'")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .map(str::to_string);
        loop {
            let (bare, _, open) = annotation(&text);
            let continued = bare.ends_with('\\');
            if !(open || continued) || i + 1 >= lines.len() {
                break;
            }
            i += 1;
            text.push('\n');
            text.push_str(lines[i]);
        }
        if let Some(end) = heredoc {
            while i + 1 < lines.len() && lines[i].trim() != end {
                i += 1;
                text.push('\n');
                text.push_str(lines[i]);
            }
        }
        let (text, note, _) = annotation(&text);
        let mut c = Command {
            doc: doc.to_string(),
            line: start + 1,
            text,
            ..Command::default()
        };
        if let Some(n) = note {
            if let Some(why) = n.strip_prefix("not run: ") {
                c.skip = Some(why.to_string());
            } else if let Some(rest) = n.strip_prefix("exits ") {
                c.exits = rest
                    .split(|ch: char| !ch.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or_else(|| panic!("{doc}:{}: `exits N`", start + 1));
            } else if let Some(rest) = n.strip_prefix("answers ") {
                c.answers = rest.get(..3).and_then(|d| d.parse().ok());
            }
        }
        if let Some((_, why)) = SETUP.iter().find(|(p, _)| c.text.starts_with(p)) {
            c.skip = Some(why.to_string());
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Whether `stdout` shows `want`, where `...` stands for anything.
fn shows(stdout: &str, want: &str) -> bool {
    let mut rest = stdout;
    for piece in want.split("...").map(str::trim).filter(|p| !p.is_empty()) {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    true
}

const CURL: &str = r#"
curl() {
  local body code
  body=$(mktemp)
  code=$(command curl -sS -o "$body" -w '%{http_code}' "$@") || { cat "$body"; rm -f "$body"; return 7; }
  cat "$body"; rm -f "$body"
  echo "$code" >> "$OUT/$N.curl"
}
"#;

#[test]
fn every_shell_example_runs_against_a_real_daemon_as_documented() {
    let bin_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(common::binary(), bin_dir.path().join("branchguard")).unwrap();
    let mut problems = Vec::new();
    let mut ran = 0;
    for doc in documents() {
        let name = doc
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .display()
            .to_string();
        let cmds = commands(&name, &std::fs::read_to_string(&doc).unwrap());
        if cmds.is_empty() {
            continue;
        }
        let f = Fixture::bundled();
        copy_examples(&f);
        let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
        f.write(
            "branchguard.yaml",
            &cfg.replace("listen: 127.0.0.1:9700", "listen: 127.0.0.1:0"),
        );
        let d = Daemon::start(&f);
        let addr = d.url.trim_start_matches("http://").to_string();
        let out = tempfile::tempdir().unwrap();
        let mut script = format!("set -o pipefail\n{CURL}\n");
        for (n, c) in cmds.iter().enumerate() {
            if c.skip.is_some() {
                continue;
            }
            let text = c
                .text
                .replace("cargo run --release --", "branchguard")
                .replace("127.0.0.1:9700", &addr);
            script.push_str(&format!(
                "N={n}\n{{\n{text}\n}} > \"$OUT/{n}.out\" 2> \"$OUT/{n}.err\"\necho $? > \"$OUT/{n}.exit\"\n"
            ));
        }
        let run = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(f.dir.path())
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin_dir.path().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("BRANCHGUARD_URL", &d.url)
            .env("OUT", out.path())
            .output()
            .unwrap();
        assert!(
            run.status.success() || run.status.code().is_some(),
            "{run:?}"
        );
        for (n, c) in cmds.iter().enumerate() {
            let at = format!(
                "{}:{}: `{}`",
                c.doc,
                c.line,
                c.text.lines().next().unwrap_or("")
            );
            if c.skip.is_some() {
                continue;
            }
            ran += 1;
            let read = |ext: &str| {
                std::fs::read_to_string(out.path().join(format!("{n}.{ext}"))).unwrap_or_default()
            };
            let (stdout, stderr) = (read("out"), read("err"));
            let exit: i32 = read("exit").trim().parse().unwrap_or(-1);
            if exit != c.exits {
                problems.push(format!(
                    "{at}: exited {exit}, the doc says {}\n{stdout}{stderr}",
                    c.exits
                ));
            }
            for code in read("curl").lines() {
                let code: u16 = code.trim().parse().unwrap_or(0);
                let ok = match c.answers {
                    Some(want) => code == want,
                    None => (200..300).contains(&code),
                };
                if !ok {
                    problems.push(format!(
                        "{at}: answered {code}, the doc says {}\n{stdout}",
                        c.answers.map_or("2xx".to_string(), |a| a.to_string())
                    ));
                }
            }
            for want in &c.shown {
                if !shows(&stdout, want) {
                    problems.push(format!("{at}: does not print `{want}`:\n{stdout}{stderr}"));
                }
            }
        }
    }
    assert!(ran >= 30, "only {ran} commands ran");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

fn copy_examples(f: &Fixture) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/events");
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        f.write(
            &format!(
                "examples/events/{}",
                p.file_name().unwrap().to_string_lossy()
            ),
            &std::fs::read_to_string(&p).unwrap(),
        );
    }
}

/// Long options (`--name`) in a text.
fn options(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"--[a-z][a-z-]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

/// The text of CLI.md's section whose heading names `command` (its first
/// word for two-word commands' groups), down to the next heading of the
/// same or a higher level.
fn section<'a>(doc: &'a str, command: &str) -> Option<&'a str> {
    let lines: Vec<(usize, &str)> = doc
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain([0])
        .map(|i| (i, &doc[i..]))
        .collect();
    let mut starts: Vec<(usize, usize, &str)> = Vec::new();
    for (at, rest) in lines {
        let line = rest.lines().next().unwrap_or("");
        let level = line.chars().take_while(|c| *c == '#').count();
        if level >= 2 && line[level..].starts_with(' ') {
            starts.push((at, level, line));
        }
    }
    starts.sort();
    let quoted = format!("`{command}`");
    let i = starts.iter().position(|(_, _, l)| l.contains(&quoted))?;
    let (from, level, _) = starts[i];
    let to = starts[i + 1..]
        .iter()
        .find(|(_, l, _)| *l <= level)
        .map_or(doc.len(), |(at, _, _)| *at);
    Some(&doc[from..to])
}

#[test]
fn every_commands_help_matches_cli_md() {
    let cli_md =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CLI.md")).unwrap();
    let help = |args: &[&str]| {
        let out = std::process::Command::new(common::binary())
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // Every command of `branchguard --help` is in CLI.md's list and has a section.
    let top = help(&[]);
    let listed: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(listed.len() >= 12, "{top}");
    let mut problems = Vec::new();
    let common_opts: BTreeSet<String> = ["--help", "--version", "--url", "--config"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for cmd in &listed {
        if !cli_md.contains(&format!("  {cmd} ")) {
            problems.push(format!("`{cmd}` is not in CLI.md's list of commands"));
        }
        let sub_help = help(&[cmd]);
        let subs: Vec<String> = sub_help
            .lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|c| c != "help")
            .collect();
        let leaves: Vec<Vec<String>> = if subs.is_empty() {
            vec![vec![cmd.clone()]]
        } else {
            subs.iter().map(|s| vec![cmd.clone(), s.clone()]).collect()
        };
        for leaf in leaves {
            let name = leaf.join(" ");
            let args: Vec<&str> = leaf.iter().map(String::as_str).collect();
            let have = options(&help(&args));
            let Some(text) = section(&cli_md, &name).or_else(|| section(&cli_md, cmd)) else {
                problems.push(format!("CLI.md has no section for `{name}`"));
                continue;
            };
            for o in have.difference(&common_opts) {
                if !text.contains(o.as_str()) {
                    problems.push(format!(
                        "`{name} {o}` is not documented in its CLI.md section"
                    ));
                }
            }
            if leaf.len() == 1 {
                for o in options(text).difference(&have) {
                    if !common_opts.contains(o) && !o.starts_with("--release") {
                        problems.push(format!("CLI.md's `{name}` section names `{o}`, which `{name} --help` does not have"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_example_reader_joins_lines_and_reads_what_the_doc_says() {
    let doc = "x\n```sh\nBG=http://127.0.0.1:9700\ncurl -s -X POST $BG/x -d '{\n  \"a\": 1 }'  # answers 400\n# {\"error\": ...}\nbranchguard check   # exits 1: a broken file\nbranchguard run  # not run: it runs for ever\n```\n";
    let c = commands("d.md", doc);
    assert_eq!(c.len(), 4, "{c:?}");
    assert_eq!(c[1].text, "curl -s -X POST $BG/x -d '{\n  \"a\": 1 }'");
    assert_eq!((c[1].answers, c[1].line), (Some(400), 4));
    assert_eq!(c[1].shown, ["{\"error\": ...}"]);
    assert_eq!(c[2].exits, 1);
    assert_eq!(c[3].skip.as_deref(), Some("it runs for ever"));
    assert!(shows("a {\"error\": \"x\"} b", "{\"error\": ...}"));
    assert!(!shows("nothing", "{\"error\": ...}"));
}
