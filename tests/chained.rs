//! One plan opens another: a major complaint's step sends an event that
//! opens the conflict plan at the same branch, recorded on both sides; a
//! drill's does the same as a drill; `check` refuses a loop it can see.

mod common;

use common::{Daemon, Fixture, history};

const COMPLAINT: &str = "id: complaint\nname: Complaint\ntrigger: { kind: complaint.filed }\ntiers:\n  - { level: 1, name: simple }\n  - { level: 2, name: major, labels: { major: \"yes\" } }\nsteps:\n  - id: answer\n    assignee: branch-head\n    deadline: 24h\n  - id: start-conflict-plan\n    when: \"tier >= 2\"\n    action:\n      event: { kind: customer.conflict, labels: { conflict_level: \"2\", complaint: \"{{incident}}\" }, summary: \"Major complaint #{{incident}}: {{summary}}\" }\n    deadline: 5m\n";

#[test]
fn a_major_complaint_opens_the_conflict_plan_and_both_say_so() {
    let f = Fixture::engine();
    f.write("playbooks/complaint.yaml", COMPLAINT);
    assert_eq!(f.run(&["check"]).code, 0, "{:?}", f.run(&["check"]));
    let d = Daemon::start(&f);
    // A simple complaint opens nothing more.
    let (code, b) = d.post(
        "/api/v1/events",
        r#"{"kind":"complaint.filed","branch":"br-a","labels":{"case":"1"}}"#,
    );
    assert_eq!(code, 202, "{b}");
    assert_eq!(b["incidents"].as_array().unwrap().len(), 1);
    let (code, b) = d.post("/api/v1/incidents/1/resolve", r#"{"by":"head.a"}"#);
    assert_eq!(code, 200, "{b}");
    let (code, b) = d.post(
        "/api/v1/events",
        r#"{"kind":"complaint.filed","branch":"br-a","summary":"shouting at counter 3","labels":{"major":"yes"}}"#,
    );
    assert_eq!(code, 202, "{b}");
    let complaint = b["incidents"][0].as_i64().unwrap();
    let inc = d.incident(complaint);
    let done = history(&inc, "step.done");
    let line = done[0]["detail"].as_str().unwrap();
    assert!(
        line.starts_with("step start-conflict-plan: event customer.conflict sent (event "),
        "{line}"
    );
    let conflict: i64 = line.rsplit('#').next().unwrap().parse().unwrap();
    let c = d.incident(conflict);
    assert_eq!(
        (
            c["playbook"].as_str(),
            c["branch"].as_str(),
            c["tier"].as_i64()
        ),
        (Some("conflict"), Some("br-a"), Some(2)),
        "{c}"
    );
    assert_eq!(
        c["summary"],
        format!("Major complaint #{complaint}: shouting at counter 3")
    );
    // The event is stored like any other, from the incident that sent it.
    let events = d.get("/api/v1/events?kind=customer.conflict");
    let ev = &events["items"][0];
    assert_eq!(ev["source"], format!("incident:{complaint}"), "{events}");
    assert_eq!(ev["labels"]["complaint"], complaint.to_string());
}

#[test]
fn check_refuses_a_loop_between_playbooks_where_it_is_written() {
    let f = Fixture::engine();
    f.write("playbooks/complaint.yaml", COMPLAINT);
    // The conflict plan opening a complaint again: complaint → conflict → complaint.
    let conflict = std::fs::read_to_string(f.path("playbooks/conflict.yaml")).unwrap();
    f.write(
        "playbooks/conflict.yaml",
        &format!("{conflict}  - id: file-complaint\n    action: {{ event: {{ kind: complaint.filed, labels: {{ major: \"yes\" }} }} }}\n    deadline: 5m\n"),
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("playbooks/complaint.yaml:14:22: steps.start-conflict-plan.action.event.kind: `customer.conflict` opens conflict → complaint, which opens `complaint` again: a loop"),
        "{}",
        out.stderr
    );
    // A kind no playbook is triggered by is no loop.
    f.write("playbooks/conflict.yaml", &format!("{conflict}  - id: log\n    action: {{ event: {{ kind: conflict.logged }} }}\n    deadline: 5m\n"));
    assert_eq!(f.run(&["check"]).code, 0);
}
