//! A command step that was running when the daemon stopped: started again at
//! start-up, with its history line, and never by a rebuild after a failed
//! commit (the daemon did not stop; the command still runs).

use super::setup_tests::{engine_with, loaded_with, t0};
use super::*;
use crate::event::{Event, Severity, Status};

const PLAYBOOK: &str = "id: doors\nname: Doors\ntrigger: { kind: doors.stuck }\nsteps:
  - id: release
    action: { command: [\"true\"], timeout: 20s }
    deadline: 5m
";

#[test]
fn a_running_command_is_started_again_only_when_asked_at_start_up() {
    let (mut e, _dir) = engine_with(PLAYBOOK);
    let mut r = Round::default();
    let ev = Event {
        kind: "doors.stuck".into(),
        branch: "br-a".into(),
        severity: Severity::Critical,
        status: Status::Firing,
        labels: Default::default(),
        summary: None,
        occurred_at: t0(),
        source: "test".into(),
    };
    e.ingest(vec![(ev, t0())], "test", t0(), &mut r);
    e.finish(t0(), &mut r);
    assert_eq!(r.commands.len(), 1, "the step's command starts");
    let stored: Vec<Incident> = r.incidents.clone();
    assert!(stored[0].steps[0].running);

    // Rebuilt from the store (as after a failed commit): nothing restarts.
    let (loaded, _dir2) = loaded_with(PLAYBOOK);
    let later = t0() + chrono::Duration::seconds(30);
    let mut rebuilt = Engine::new(loaded.clone(), stored.clone(), 2, 2, later);
    let mut r = Round::default();
    rebuilt.tick(later, &mut r);
    assert!(r.commands.is_empty());
    assert!(!r.history.iter().any(|h| h.what == "command.restarted"));

    // At start-up: once, with its line.
    let mut started = Engine::new(loaded, stored, 2, 2, later);
    let mut r = Round::default();
    started.restart_commands(later, &mut r);
    assert_eq!(r.commands.len(), 1);
    let lines: Vec<&str> = r.history.iter().map(|h| h.what.as_str()).collect();
    assert_eq!(lines, ["command.restarted"]);
    assert!(
        r.history[0].detail.contains("step release"),
        "{}",
        r.history[0].detail
    );
}
