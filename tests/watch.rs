//! The daemon watching its files: event files dropped into the spool
//! directory, and playbooks edited in place (saved by rename).

mod common;

use std::time::Duration;

use common::{Daemon, Fixture, holds_for, wait_for};

const WAIT: Duration = Duration::from_secs(20);
const CORE_DOWN: &str =
    r#"{"kind":"system.down","branch":"br-a","severity":"critical","labels":{"system":"core"}}"#;

fn watching() -> Fixture {
    let f = Fixture::engine();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace("watch_files: false", "watch_files: true"),
    );
    f
}

/// Writes a file the way a gateway should: under a temporary name, then renamed.
fn drop_file(f: &Fixture, name: &str, text: &str) {
    let tmp = f.path(&format!("spool/.{name}.tmp"));
    std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, f.path(&format!("spool/{name}"))).unwrap();
}

fn events(d: &Daemon) -> usize {
    d.get("/api/v1/events")["items"].as_array().unwrap().len()
}

#[test]
fn spool_files_are_ingested_refused_with_their_place_or_left_alone_until_renamed() {
    let f = watching();
    // Present before start-up.
    f.write("spool/early.json", CORE_DOWN);
    let d = Daemon::start(&f);
    wait_for(WAIT, "the early file in done/", || {
        f.path("spool/done/early.json").exists().then_some(())
    });
    assert_eq!(d.incident(1)["status"], "open");
    // A temporary name is left alone until it is renamed.
    let tmp = f.path("spool/late.json.tmp");
    std::fs::write(&tmp, CORE_DOWN.replace("br-a", "br-b")).unwrap();
    drop_file(&f, "marker.yaml", "kind: test.marker\nbranch: br-a\n");
    wait_for(WAIT, "the marker file in done/", || {
        f.path("spool/done/marker.yaml").exists().then_some(())
    });
    assert!(tmp.exists(), "a temporary file is not read");
    assert_eq!(events(&d), 2);
    std::fs::rename(&tmp, f.path("spool/late.json")).unwrap();
    wait_for(WAIT, "the renamed file in done/", || {
        f.path("spool/done/late.json").exists().then_some(())
    });
    // A malformed file: failed/, an .error naming the place, nothing stored.
    drop_file(
        &f,
        "bad.yaml",
        "- kind: system.down\n  branch: br-a\n- kind: system.down\n  branch: br-a\n  severity: awful\n",
    );
    let error = wait_for(WAIT, "the .error file", || {
        std::fs::read_to_string(f.path("spool/failed/bad.yaml.error")).ok()
    });
    assert!(error.starts_with("bad.yaml:5:13: "), "{error}");
    assert!(error.contains("severity"), "{error}");
    assert!(f.path("spool/failed/bad.yaml").exists());
    drop_file(
        &f,
        "unknown.json",
        r#"[{"kind":"x","branch":"br-a"},{"kind":"x","branch":"nowhere"}]"#,
    );
    let error = wait_for(WAIT, "the second .error file", || {
        std::fs::read_to_string(f.path("spool/failed/unknown.json.error")).ok()
    });
    assert!(
        error.contains("[1].branch: unknown branch `nowhere`"),
        "{error}"
    );
    assert_eq!(events(&d), 3, "nothing of a refused file is stored");
    // kill -9 right after a file reaches done/: its events are there.
    drop_file(
        &f,
        "last.json",
        &CORE_DOWN.replace("system.down", "test.last"),
    );
    wait_for(WAIT, "the last file in done/", || {
        f.path("spool/done/last.json").exists().then_some(())
    });
    d.kill9();
    let d = Daemon::start(&f);
    let kinds: Vec<String> = d.get("/api/v1/events")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"test.last".to_string()), "{kinds:?}");
    assert_eq!(kinds.len(), 4);
}

#[test]
fn a_playbook_saved_by_rename_reloads_and_a_broken_edit_is_refused_with_its_place() {
    let f = watching();
    let d = Daemon::start(&f);
    d.post("/api/v1/events", CORE_DOWN);
    let before = d.incident(1)["playbook_version"].clone();
    let pb = std::fs::read_to_string(f.path("playbooks/failover.yaml")).unwrap();
    let save = |text: &str| {
        let tmp = f.path("playbooks/.failover.yaml.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, f.path("playbooks/failover.yaml")).unwrap();
    };
    save(&pb.replace("name: Failover", "name: Failover, edited"));
    let status = wait_for(WAIT, "the reload", || {
        let s = d.get("/api/v1/status");
        (s["last_reload"]["trigger"] == "file-watch" && s["last_reload"]["ok"] == true).then_some(s)
    });
    let version = status["playbooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "failover")
        .unwrap()["version"]
        .clone();
    assert_ne!(version, before);
    // A broken edit: refused, its place in the status, the incident runs on.
    save(&pb.replace("deadline: 4s", "deadline: 4 seconds please"));
    let status = wait_for(WAIT, "the refused reload", || {
        let s = d.get("/api/v1/status");
        (s["last_reload"]["ok"] == false).then_some(s)
    });
    let errors = status["last_reload"]["errors"].to_string();
    assert!(
        errors.contains("playbooks/failover.yaml:12:15: steps.switch.deadline"),
        "{errors}"
    );
    assert_eq!(d.incident(1)["status"], "open");
    assert_eq!(d.incident(1)["playbook_version"], before);
    // Fixed: reloads again.
    save(&pb);
    wait_for(WAIT, "the fixed reload", || {
        let s = d.get("/api/v1/status");
        (s["last_reload"]["ok"] == true).then_some(())
    });
}

/// Reading the configuration (`cat`, `check`, any CLI command that finds
/// the port in it) used to reload the daemon forever: the reload's own
/// reads came back as file events. Reads, touches and unchanged rewrites
/// reload nothing; one change of content reloads once.
#[test]
fn reading_the_watched_files_reloads_nothing_and_one_change_reloads_once() {
    let f = watching();
    let d = Daemon::start(&f);
    let reloads = || d.metric(r#"branchguard_config_reloads_total{result="success"}"#);
    let at_start = reloads().expect("the reload counter");
    let watched = [
        "branchguard.yaml",
        "playbooks/failover.yaml",
        "playbooks/conflict.yaml",
    ];
    for _ in 0..100 {
        for w in watched {
            std::fs::read_to_string(f.path(w)).unwrap();
        }
    }
    assert_eq!(f.run(&["check"]).code, 0);
    assert_eq!(f.run(&["incidents", "--url", &d.url]).code, 0);
    // Touched, and rewritten with the same bytes (an editor's save of an
    // unchanged file): no change of content.
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    std::fs::write(f.path("branchguard.yaml"), &cfg).unwrap();
    let t = std::time::SystemTime::from(branchguard::clock::now());
    std::fs::File::options()
        .write(true)
        .open(f.path("playbooks/conflict.yaml"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    // Nothing happens for five seconds (the file watcher settles in 0.3 s).
    holds_for(Duration::from_secs(5), "a read or touch reloaded", || {
        reloads() == Some(at_start)
    });
    // One change of content: exactly one reload, and no more after it.
    let pb = std::fs::read_to_string(f.path("playbooks/failover.yaml")).unwrap();
    std::fs::write(
        f.path("playbooks/failover.yaml"),
        pb.replace("name: Failover", "name: Failover, edited"),
    )
    .unwrap();
    wait_for(WAIT, "one reload", || {
        (reloads() == Some(at_start + 1.0)).then_some(())
    });
    holds_for(Duration::from_secs(3), "one change, one reload", || {
        reloads() == Some(at_start + 1.0)
    });
}

/// **Invariant:** a spool file reaches `done/` only after its events are
/// committed: while the store fails it stays where it was dropped (not in
/// `failed/`: the fault is ours), and it is read again once the store works.
#[test]
fn a_spool_file_waits_in_the_spool_while_the_store_fails() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    let lock = rusqlite::Connection::open(f.path("data/branchguard.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    drop_file(&f, "while-locked.json", CORE_DOWN);
    wait_for(WAIT, "the spool to try it and leave it", || {
        d.log()
            .contains("while-locked.json left for later")
            .then_some(())
    });
    assert!(f.path("spool/while-locked.json").exists());
    assert!(!f.path("spool/done/while-locked.json").exists());
    assert!(!f.path("spool/failed/while-locked.json").exists());
    lock.execute_batch("ROLLBACK;").unwrap();
    drop(lock);
    wait_for(WAIT, "the file in done/ once the store works", || {
        f.path("spool/done/while-locked.json")
            .exists()
            .then_some(())
    });
    assert_eq!(events(&d), 1);
    assert_eq!(d.incident(1)["status"], "open");
}

/// A `rosters/` directory made after start-up is read and watched from then
/// on: its roster takes effect, and an edit of it reloads (the watcher
/// followed only the directories it started with).
#[test]
fn a_rosters_directory_made_after_start_up_is_read_and_watched() {
    let f = watching();
    let d = Daemon::start(&f);
    let who = || d.get("/api/v1/oncall?branch=br-a")["items"][0]["person"].clone();
    assert_eq!(who(), serde_json::Value::Null, "no roster yet");
    let roster = |p: &str| {
        format!(
            "id: it-duty-a\nrole: it-duty\nbranches: [br-a]\nlayers:\n  - {{ name: days, start: 2026-01-01T08:00, shift: 1d, people: [{p}] }}\n"
        )
    };
    f.write("rosters/it-duty.yaml", &roster("it.a"));
    wait_for(WAIT, "the new roster to be read", || {
        (who() == "it.a").then_some(())
    });
    f.write("rosters/it-duty.yaml", &roster("it.b"));
    wait_for(WAIT, "the edited roster to be read", || {
        (who() == "it.b").then_some(())
    });
}
