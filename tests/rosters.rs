//! Duty rosters against the real daemon: the page goes to the person on duty,
//! the hand-over passes the open step on, an escalation after it reaches the
//! incoming person, and `check` reports the holes in a roster.

mod common;

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use common::sinks::SmtpServer;
use common::{Daemon, Fixture, history, step, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// A local time in the fixture's zone, as roster files are written.
fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

fn with_mail(f: &Fixture, smtp: &SmtpServer) {
    f.set_notify(&format!(
        "notify:\n  digest: 1s\n  email:\n    from: \"Branch Guard <guard@bank.example>\"\n    smtp: {{ host: 127.0.0.1, port: {}, security: none, timeout: 5s }}\n  retry: {{ initial: 200ms, max: 1s, horizon: 1h, warn_after: 1s }}\n  webhooks:\n    ops-centre: {{ url: \"http://127.0.0.1:9/hook\" }}\n",
        smtp.port
    ));
    f.write(
        "playbooks/duty.yaml",
        "id: duty\nname: Duty\ntrigger: { kind: duty.test }\nresolve: manual\nsteps:\n  - id: take\n    title: Take the call\n    assignee: role:it-duty\n    deadline: 1h\n    escalate:\n      - { after: 9s, to: [role:it-duty] }\n",
    );
}

/// IT duty at br-a: IT B by override for the next six seconds, then IT A by
/// the daily layer (without the roster the role would reach IT A only).
#[test]
fn the_page_goes_to_the_person_on_duty_and_the_escalation_after_the_hand_over_to_the_next() {
    let smtp = SmtpServer::start();
    let f = Fixture::engine();
    with_mail(&f, &smtp);
    let now = branchguard::clock::now();
    // Whole seconds, as the roster file says it.
    let change = (now + chrono::Duration::seconds(6))
        .with_nanosecond(0)
        .unwrap();
    f.write(
        "rosters/it-duty.yaml",
        &format!(
            "id: it-duty-a\nrole: it-duty\nbranches: [br-a]\nlayers:\n  - name: days\n    start: 2026-01-01T08:00\n    shift: 1d\n    people: [it.a]\noverrides:\n  - {{ person: it.b, from: {}, to: {} }}\nhandoff: {{ notify: true }}\n",
            local(now - chrono::Duration::hours(1)),
            local(change)
        ),
    );
    let out = f.run(&["check"]);
    assert!(out.code == 0 && out.stdout.contains("1 roster"), "{out:?}");
    let d = Daemon::start(&f);
    // Who is on duty, and who is next, before the change.
    let on = d.get("/api/v1/oncall?role=it-duty&branch=br-a");
    let item = &on["items"][0];
    assert_eq!(item["person"], "it.b", "{on}");
    assert_eq!(item["next"]["person"], "it.a", "{on}");
    let (code, body) = d.post("/api/v1/events", r#"{"kind":"duty.test","branch":"br-a"}"#);
    assert_eq!(code, 202, "{body}");
    let id = body["incidents"][0].as_i64().unwrap();
    let first = wait_for(WAIT, "the page to IT B", || {
        smtp.to("it.b@bank.example").into_iter().next()
    });
    assert!(first.subject().starts_with("ACTION"), "{}", first.subject());
    // The mail names its reader as the owner, not everyone with the role.
    assert!(
        first
            .text()
            .contains("Owner:     IT duty at Branch A: IT B (on duty)"),
        "{}",
        first.text()
    );
    let inc = d.incident(id);
    assert_eq!(step(&inc, "take")["on_duty"], "it.b", "{inc}");
    // The dashboard names the one person paged, and who is on duty now.
    let board = d.get("/api/v1/dashboard");
    let owner = board["incidents"]["items"][0]["steps"][0]["owner"]
        .as_str()
        .unwrap();
    assert!(owner.ends_with(": IT B (on duty)"), "{owner}");
    let duty = &board["on_duty"][0];
    assert_eq!(
        (
            duty["role"].as_str(),
            duty["branch"].as_str(),
            duty["name"].as_str()
        ),
        (Some("it-duty"), Some("br-a"), Some("IT B")),
        "{board}"
    );
    let notified = history(&inc, "step.notified");
    assert!(
        notified[0]["detail"]
            .as_str()
            .unwrap()
            .contains("on duty: it-duty-a, override"),
        "{notified:?}"
    );
    // The change of duty: IT A gets the open step in one message.
    let handover = wait_for(WAIT, "the hand-over to IT A", || {
        smtp.to("it.a@bank.example")
            .into_iter()
            .find(|m| m.subject().starts_with("HANDOVER"))
    });
    assert!(
        handover.text().contains(&format!("#{id} Take the call")),
        "{}",
        handover.text()
    );
    assert!(
        branchguard::clock::now() >= change,
        "the hand-over came before the change of duty"
    );
    // The escalation after the hand-over reaches the incoming person only.
    let escalation = wait_for(WAIT, "the escalation to IT A", || {
        smtp.to("it.a@bank.example")
            .into_iter()
            .find(|m| m.subject().starts_with("ESCALATION"))
    });
    assert!(
        escalation.text().contains("Take the call"),
        "{}",
        escalation.text()
    );
    assert!(
        smtp.to("it.b@bank.example")
            .iter()
            .all(|m| !m.subject().starts_with("ESCALATION")),
        "the outgoing person was escalated to"
    );
    let inc = d.incident(id);
    assert_eq!(step(&inc, "take")["on_duty"], "it.a", "{inc}");
    let moved = history(&inc, "step.handover");
    assert_eq!(moved.len(), 1, "{inc}");
    assert!(
        moved[0]["detail"]
            .as_str()
            .unwrap()
            .contains("handed over from IT B to IT A"),
        "{moved:?}"
    );
    // `incident show` says whom the role went to.
    let out = f.run(&["incident", "show", &id.to_string(), "--url", &d.url]);
    assert!(out.stdout.contains("role:it-duty (it.a)"), "{out:?}");
    // The CLI says who is on duty now.
    let out = f.run(&["oncall", "--role", "it-duty", "--url", &d.url]);
    assert!(out.code == 0 && out.stdout.contains("it.a"), "{out:?}");
}

/// `check` lists each hole with its times and the step that needs the role;
/// `--strict` makes them errors; a roster without holes says nothing.
#[test]
fn check_reports_a_hole_in_a_roster_with_its_times_and_strict_refuses_it() {
    let f = Fixture::engine();
    // Days only: the nights from 20:00 to 08:00 are nobody's.
    f.write(
        "rosters/it-duty.yaml",
        "id: it-duty-a\nrole: it-duty\nbranches: [br-a]\nlayers:\n  - name: days\n    start: 2026-01-01T08:00\n    shift: 1d\n    people: [it.a]\n    only: { from: \"08:00\", to: \"20:00\" }\n",
    );
    let out = f.run(&["check", "--horizon", "3d"]);
    assert_eq!(out.code, 0, "{out:?}");
    let gaps: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(": warning: gap "))
        .collect();
    assert!(
        (3..=4).contains(&gaps.len()),
        "a night a day for three days: {out:?}"
    );
    // Each night from 20:00 to 08:00; run during a night, the first gap
    // starts now and the last ends at the horizon.
    let last = gaps.len() - 1;
    assert!(
        gaps.iter().enumerate().all(|(k, g)| g
            .starts_with("rosters/it-duty.yaml:1:5: warning: gap ")
            && (k == 0 || g.contains(" 20:00:00 +08:00 .. "))
            && (k == last || g.contains(" 08:00:00 +08:00: nobody"))
            && g.contains(
                "nobody is role:it-duty at br-a; needed by playbook failover step switch"
            )),
        "{gaps:?}"
    );
    assert!(
        gaps[1..].iter().all(|g| g.contains(" 20:00:00 +08:00 .. ")),
        "every night but one under way starts at 20:00: {gaps:?}"
    );
    // The daemon says so too: seconds of gap in the next 7 days (twelve
    // hours a night), and a warning in its status.
    let d = Daemon::start(&f);
    let secs = d
        .metric("branchguard_roster_gap_seconds{roster=\"it-duty-a\"}")
        .expect("the gap metric");
    assert!(
        (6.0 * 43_200.0..=7.0 * 43_200.0 + 1.0).contains(&secs),
        "{secs}"
    );
    let status = d.get("/api/v1/status");
    let warned = status["roster_gaps"].as_array().unwrap();
    assert!(!warned.is_empty(), "{status}");
    assert_eq!(warned[0]["needed_by"]["step"], "switch", "{status}");
    drop(d);
    // A gap says who is away: a token of another branch is not told.
    common::access::add_tokens(
        &f,
        &[
            ("a", "viewer", ", branches: [br-a]"),
            ("b", "viewer", ", branches: [br-b]"),
            ("ita", "staff", ", branches: [br-a], person: it.a"),
            ("ops", "ops", ""),
        ],
    );
    let d = Daemon::start(&f);
    let gaps = |t: &str| {
        let (code, s) = common::access::call(&d, "GET", "/api/v1/status", Some(t), "");
        assert_eq!(code, 200, "{s}");
        s["roster_gaps"].as_array().map(Vec::len)
    };
    assert_eq!(gaps("a"), Some(warned.len()));
    assert_eq!(gaps("b"), Some(0));
    // A person's calendar key (it never expires) goes to their own token and
    // to the operations centre, not to a colleague's viewer token.
    let calendar = |t: &str| {
        let (code, p) = common::access::call(&d, "GET", "/api/v1/people/it.a", Some(t), "");
        assert_eq!(code, 200, "{p}");
        p["calendar"]
            .as_str()
            .map(|c| c.contains("shifts.ics?key="))
    };
    assert_eq!(calendar("a"), None);
    assert_eq!(calendar("ita"), Some(true));
    assert_eq!(calendar("ops"), Some(true));
    drop(d);
    let strict = f.run(&["check", "--horizon", "3d", "--strict"]);
    assert_eq!(strict.code, 1, "{strict:?}");
    assert!(strict.stderr.contains(": error: gap "), "{strict:?}");
    // The nights covered: no gap.
    f.write(
        "rosters/it-duty.yaml",
        "id: it-duty-a\nrole: it-duty\nbranches: [br-a]\nlayers:\n  - name: days\n    start: 2026-01-01T08:00\n    shift: 1d\n    people: [it.a]\n    only: { from: \"08:00\", to: \"20:00\" }\n  - name: nights\n    start: 2026-01-01T20:00\n    shift: 7d\n    people: [it.b, head.a]\n    only: { from: \"20:00\", to: \"08:00\" }\n",
    );
    let out = f.run(&["check", "--strict"]);
    assert!(out.code == 0 && !out.stderr.contains("gap"), "{out:?}");
}

/// A mistake in a roster is pointed at, and the daemon keeps the rosters it had.
#[test]
fn a_bad_roster_is_pointed_at_by_file_line_and_column() {
    let f = Fixture::engine();
    f.write(
        "rosters/it-duty.yaml",
        "id: it-duty-a\nrole: it-duty\nbranches: [br-a, br-z]\nlayers:\n  - name: days\n    start: 2026-01-01 08:00\n    shift: one day\n    people: [it.a, nobody.here]\n    only: { days: [Mon, Funday], from: \"8am\", to: \"20:00\" }\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    for want in [
        "rosters/it-duty.yaml:3:11: branches: unknown branch `br-z`",
        "rosters/it-duty.yaml:6:12: layers[0].start: `2026-01-01 08:00`: expected a local time as YYYY-MM-DDTHH:MM[:SS]",
        "rosters/it-duty.yaml:7:12: layers[0].shift: invalid duration `one day`",
        "rosters/it-duty.yaml:8:20: layers[0].people: unknown person `nobody.here`",
        "layers[0].only.days: `Funday`: expected a weekday",
        "layers[0].only.from: `8am`: expected a time of day as HH:MM",
    ] {
        assert!(
            out.stderr.contains(want),
            "missing `{want}`:\n{}",
            out.stderr
        );
    }
}

/// Rosters reload through the one reload path: a bad one is refused and the
/// daemon keeps the set it had; a good one takes effect at once.
#[test]
fn a_roster_reloads_and_a_bad_one_keeps_the_previous_set() {
    let f = Fixture::engine();
    let roster = |person: &str| {
        format!(
            "id: it-duty-a\nrole: it-duty\nbranches: [br-a]\nlayers:\n  - name: days\n    start: 2026-01-01T08:00\n    shift: 1d\n    people: [{person}]\n"
        )
    };
    f.write("rosters/it-duty.yaml", &roster("it.a"));
    let d = Daemon::start(&f);
    let who = || d.get("/api/v1/oncall?branch=br-a")["items"][0]["person"].clone();
    assert_eq!(who(), "it.a");
    f.write("rosters/it-duty.yaml", &roster("nobody.here"));
    let (code, body) = d.post("/api/v1/reload", "");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.to_string().contains("unknown person `nobody.here`"),
        "{body}"
    );
    assert_eq!(who(), "it.a", "the previous set is kept");
    f.write("rosters/it-duty.yaml", &roster("it.b"));
    let (code, body) = d.post("/api/v1/reload", "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(who(), "it.b");
    // The directory removed underneath: refused, not every roster dropped
    // at once (each role would page everyone who holds it, silently).
    std::fs::rename(f.path("rosters"), f.path("rosters-aside")).unwrap();
    let (code, body) = d.post("/api/v1/reload", "");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.to_string().contains("rosters_dir: ")
            && body.to_string().contains("is gone (it held 1 file(s))"),
        "{body}"
    );
    assert_eq!(who(), "it.b", "the previous set is kept");
    // An empty directory is how to drop them.
    std::fs::create_dir(f.path("rosters")).unwrap();
    let (code, body) = d.post("/api/v1/reload", "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(who(), serde_json::Value::Null);
    // A time that is not RFC 3339 is a 400 naming the field.
    let bad = d
        .http
        .get(format!("{}/api/v1/oncall?at=tomorrow", d.url))
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let body: serde_json::Value = bad.json().unwrap();
    assert_eq!(body["field"], "at", "{body}");
}

/// The events of an `.ics` text, read back by a parser: (UID, summary, start, end).
fn events(text: &str) -> Vec<(String, String, String, String)> {
    let unfolded = icalendar::parser::unfold(text);
    let cal = icalendar::parser::read_calendar(&unfolded).expect("a valid RFC 5545 calendar");
    cal.components
        .iter()
        .filter(|c| c.name.as_str() == "VEVENT")
        .map(|c| {
            let p = |n: &str| {
                c.find_prop(n)
                    .map(|p| p.val.as_str().to_string())
                    .unwrap_or_default()
            };
            (p("UID"), p("SUMMARY"), p("DTSTART"), p("DTEND"))
        })
        .collect()
}

/// A roster's calendar and a person's own (by their signed link, without a
/// token): one event per turn, clipped to the layer's window, stable UIDs.
#[test]
fn calendars_list_each_turn_and_a_persons_link_needs_no_token_but_its_key() {
    let f = Fixture::engine();
    f.write(
        "rosters/it-duty.yaml",
        "id: it-duty-a\nrole: it-duty\nbranches: [br-a]\nlayers:\n  - name: days\n    start: 2026-01-01T08:00\n    shift: 1d\n    people: [it.a, it.b]\n    only: { from: \"08:00\", to: \"20:00\" }\n",
    );
    let d = Daemon::start(&f);
    let get = |path: &str| {
        let r = d.http.get(format!("{}{path}", d.url)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (code, text) = get("/api/v1/rosters/it-duty-a.ics");
    assert_eq!(code, 200, "{text}");
    let all = events(&text);
    // Ninety days of day turns (the one under way included).
    assert!((90..=91).contains(&all.len()), "{} events", all.len());
    // The last is clipped at the horizon.
    for (_, summary, start, end) in &all[..all.len() - 1] {
        // 08:00 to 20:00 in Shanghai is 00:00 to 12:00 UTC.
        assert!(
            start.ends_with("T000000Z") && end.ends_with("T120000Z"),
            "{start} {end}"
        );
        assert!(summary.starts_with("it-duty on duty: IT "), "{summary}");
    }
    assert!(
        all.windows(2).all(|w| w[0].1 != w[1].1),
        "turns alternate between IT A and IT B"
    );
    let uids: std::collections::BTreeSet<&String> = all.iter().map(|e| &e.0).collect();
    assert_eq!(uids.len(), all.len(), "every UID its own");
    let again = events(&get("/api/v1/rosters/it-duty-a.ics").1);
    // The turn under way too: its start is the turn's, not the fetch's.
    assert_eq!(again[0].0, all[0].0, "the same turn keeps its UID");
    assert_eq!(again[1].0, all[1].0, "the same turn keeps its UID");
    // A person's own calendar, by the link the API gives.
    let link = d.get("/api/v1/people/it.a")["calendar"]
        .as_str()
        .unwrap()
        .to_string();
    let path = link
        .split_once("/api/v1/")
        .map(|(_, p)| format!("/api/v1/{p}"))
        .unwrap();
    let (code, mine) = get(&path);
    assert_eq!(code, 200, "{mine}");
    let mine = events(&mine);
    assert!((44..=46).contains(&mine.len()), "{} turns", mine.len());
    assert!(
        mine.iter().all(|e| e.1 == "it-duty on duty: IT A"),
        "{mine:?}"
    );
    // Another person's key does not open it; nor does none.
    let b_key = d.get("/api/v1/people/it.b")["calendar"]
        .as_str()
        .unwrap()
        .split_once("key=")
        .unwrap()
        .1
        .to_string();
    assert_eq!(
        get(&format!("/api/v1/people/it.a/shifts.ics?key={b_key}")).0,
        404
    );
    assert_eq!(get("/api/v1/people/it.a/shifts.ics").0, 404);
    let out = f.run(&["oncall", "--calendar-link", "it.a", "--url", &d.url]);
    assert!(out.stdout.trim_end().ends_with(&path), "{out:?}");
}

/// The example rosters (IT duty across the east region with a night cover;
/// branch heads covered on holidays) leave no hole in the next four weeks.
#[test]
fn the_example_rosters_cover_every_role_the_bundled_playbooks_need() {
    let f = Fixture::bundled();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rosters");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        f.write(
            &format!("rosters/{name}"),
            &std::fs::read_to_string(&p).unwrap(),
        );
        n += 1;
    }
    assert_eq!(n, 4);
    let out = f.run(&["check", "--horizon", "28d", "--strict"]);
    assert!(
        out.code == 0 && out.stdout.contains("4 rosters") && !out.stderr.contains("gap"),
        "{out:?}"
    );
}

/// Leave that the roster does not cover is a gap `check` reports, with who
/// is away; an override over it closes the gap.
#[test]
fn leave_without_an_override_is_a_gap_check_reports() {
    let f = Fixture::engine();
    let tomorrow = (branchguard::clock::now() + chrono::Duration::days(1))
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    let cfg = cfg.replace(
        "{ id: it.a, name: IT A,",
        &format!("{{ id: it.a, name: IT A, away: [{{ from: {tomorrow}, to: {tomorrow} }}],"),
    );
    f.write("branchguard.yaml", &cfg);
    let roster = "id: it-duty-a\nrole: it-duty\nbranches: [br-a]\nlayers:\n  - name: always\n    start: 2026-01-01T00:00\n    shift: 7d\n    people: [it.a]\n";
    f.write("rosters/it-duty.yaml", roster);
    let out = f.run(&["check", "--horizon", "3d"]);
    let gaps: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(": warning: gap "))
        .collect();
    assert_eq!(gaps.len(), 1, "{out:?}");
    assert!(
        gaps[0].contains(&format!("gap {tomorrow} 00:00:00 +08:00 .. "))
            && gaps[0].contains("(it.a is away (layer always))"),
        "{gaps:?}"
    );
    f.write(
        "rosters/it-duty.yaml",
        &format!("{roster}overrides:\n  - {{ person: it.b, from: {tomorrow}T00:00, to: {tomorrow}T23:59:59 }}\n"),
    );
    let out = f.run(&["check", "--horizon", "3d", "--strict"]);
    // One second is left: to the end of the day is 24:00, not 23:59:59.
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("23:59:59 +08:00 .. "), "{out:?}");
}
