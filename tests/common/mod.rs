//! Shared test helpers: a copy of a fixture network in a temporary directory,
//! and the real `branchguard` binary run against it.
#![allow(dead_code)]

pub mod access;
pub mod browser;
pub mod sinks;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

/// The regional-outage playbook: every ATM its own incident, one step for
/// the on-duty engineer.
#[allow(dead_code)] // not every test binary uses it
pub const ATM_PLAYBOOK: &str = "id: atm\nname: ATM down\ntrigger: { kind: atm.down }\ngroup_by: [branch, atm]\nsteps:\n  - { id: fix, assignee: role:it-duty, deadline: 1h }\n";

pub struct Fixture {
    pub dir: TempDir,
}

/// The binary under test: this build's, or `BRANCHGUARD_TEST_BIN` (to run
/// the suite against an earlier build and see which tests it fails).
pub fn binary() -> PathBuf {
    std::env::var_os("BRANCHGUARD_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| assert_cmd::cargo::cargo_bin("branchguard"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

impl Fixture {
    /// A copy of `tests/fixtures/base`: a valid two-branch network.
    pub fn base() -> Fixture {
        Fixture::from(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/base"))
    }

    /// A copy of `tests/fixtures/engine`: seconds-scale deadlines for the daemon.
    pub fn engine() -> Fixture {
        Fixture::from(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engine"))
    }

    /// A copy of the repository's bundled example network.
    pub fn bundled() -> Fixture {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            root.join("branchguard.yaml"),
            dir.path().join("branchguard.yaml"),
        )
        .unwrap();
        copy_dir(&root.join("playbooks"), &dir.path().join("playbooks"));
        copy_dir(&root.join("drills"), &dir.path().join("drills"));
        Fixture { dir }
    }

    pub fn from(src: &Path) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(src, dir.path());
        Fixture { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    /// Replaces the `notify:` section of `branchguard.yaml` (up to `people:`)
    /// with `notify`, which starts with `notify:`.
    pub fn set_notify(&self, notify: &str) -> &Self {
        let cfg = std::fs::read_to_string(self.path("branchguard.yaml")).unwrap();
        let start = cfg.find("notify:").expect("a notify section");
        let end = cfg.find("people:").expect("a people section");
        self.write(
            "branchguard.yaml",
            &format!("{}{notify}{}", &cfg[..start], &cfg[end..]),
        )
    }

    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.path(rel)).unwrap();
        self
    }

    /// `branchguard ARGS` run inside the fixture directory.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// `branchguard ARGS` with environment variables set. A command that has
    /// not ended after two minutes (a `run` that should have refused to
    /// start) is killed and comes back with code -1, so a test fails rather
    /// than hang.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = Command::new(binary())
            .current_dir(self.dir.path())
            .args(args)
            .envs(env.iter().copied())
            .timeout(std::time::Duration::from_secs(120))
            .output()
            .unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The `file:line:col: message` lines printed.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.ends_with("error(s)"))
            .collect()
    }
}

/// Waits for `f` to return `Some`, polling, for at most `timeout`.
pub fn wait_for<T>(
    timeout: std::time::Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let watch = branchguard::clock::Stopwatch::start();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            watch.seconds() < timeout.as_secs_f64(),
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// Checks that `holds` stays true for all of `span`: what must *not* happen
/// (a reload after a read) can only be seen by watching for a while.
pub fn holds_for(span: std::time::Duration, what: &str, mut holds: impl FnMut() -> bool) {
    let watch = branchguard::clock::Stopwatch::start();
    while watch.seconds() < span.as_secs_f64() {
        assert!(holds(), "{what}");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// The real `branchguard run` on a free loopback port, in a fixture directory.
pub struct Daemon {
    pub child: std::process::Child,
    pub url: String,
    pub http: reqwest::blocking::Client,
    /// Everything the daemon logged (stderr), as it comes.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    pub fn start(f: &Fixture) -> Daemon {
        Daemon::start_with_env(f, &[])
    }

    pub fn start_with_env(f: &Fixture, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(f, &[], env)
    }

    /// `branchguard run ARGS` with environment variables set.
    pub fn start_with(f: &Fixture, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary())
            .current_dir(f.dir.path())
            .args(["run"])
            .args(args)
            // A test's own RUST_LOG (set after) wins.
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start branchguard");
        // The log is kept for assertions and passed on, so a failing test shows it.
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let keep = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("{line}");
                keep.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the daemon printed its address");
        let addr = line
            .strip_prefix("listening on ")
            .expect("a `listening on` line")
            .to_string();
        Daemon {
            child,
            url: format!("http://{addr}"),
            http: reqwest::blocking::Client::new(),
            log,
        }
    }

    /// The metrics page, as scraped.
    pub fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .expect("GET /metrics")
            .text()
            .expect("the metrics text")
    }

    /// One sample of the metrics page: the value of the line that starts
    /// with `series` (a name with its labels), or `None`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// What the daemon has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .expect("GET");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().expect("JSON")
    }

    /// POSTs a body; returns the status code and the JSON answer.
    pub fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("POST");
        let code = r.status().as_u16();
        (code, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// Every id of a paged list (`path` already has a `?`), following `next`.
    pub fn all_ids(&self, path: &str) -> std::collections::BTreeSet<i64> {
        let mut ids = std::collections::BTreeSet::new();
        let mut cursor: Option<i64> = None;
        loop {
            let q = match cursor {
                Some(c) => format!("{path}&limit=500&cursor={c}"),
                None => format!("{path}&limit=500"),
            };
            let page = self.get(&q);
            ids.extend(
                page["items"]
                    .as_array()
                    .expect("a list has items")
                    .iter()
                    .filter_map(|e| e["id"].as_i64()),
            );
            match page["next"].as_i64() {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        ids
    }

    pub fn incident(&self, id: i64) -> serde_json::Value {
        self.get(&format!("/api/v1/incidents/{id}"))
    }

    /// `kill -9`: no chance to flush or say goodbye.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit code, once the daemon has ended by itself.
    pub fn try_exit_code(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.code().unwrap_or(-1))
    }

    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        wait_for(
            std::time::Duration::from_secs(30),
            "the daemon to exit",
            || self.child.try_wait().ok().flatten(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The step `id` of an incident resource.
pub fn step<'a>(incident: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    incident["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {incident}"))
}

/// An incident's outbox rows once the daemon has recorded every send: a
/// receiver holds a message a moment before the sender's commit says so.
pub fn delivered_rows(d: &Daemon, id: i64) -> Vec<serde_json::Value> {
    wait_for(
        std::time::Duration::from_secs(30),
        &format!("incident {id}'s sends recorded"),
        || {
            let rows = d.incident(id)["outbox"].as_array().cloned()?;
            let done = !rows.is_empty() && rows.iter().all(|r| r["delivered_at"].is_string());
            done.then_some(rows)
        },
    )
}

/// History lines of an incident whose `what` is `what`.
pub fn history<'a>(incident: &'a serde_json::Value, what: &str) -> Vec<&'a serde_json::Value> {
    incident["history"]
        .as_array()
        .map(|h| h.iter().filter(|x| x["what"] == what).collect())
        .unwrap_or_default()
}

/// On the engine fixture's failover: IT A acknowledges the switch and marks it done; Head A resolves.
pub fn answer_and_resolve(d: &Daemon, id: i64) {
    for verb in ["ack", "done"] {
        let (code, b) = d.post(
            &format!("/api/v1/incidents/{id}/steps/switch/{verb}"),
            r#"{"by":"it.a"}"#,
        );
        assert_eq!(code, 200, "{b}");
    }
    let (code, b) = d.post(
        &format!("/api/v1/incidents/{id}/resolve"),
        r#"{"by":"head.a"}"#,
    );
    assert_eq!(code, 200, "{b}");
}
