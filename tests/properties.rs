//! Property tests: parsers never panic on arbitrary input, and the calendar and
//! duration arithmetic keep their promises for any input.

use chrono::{DateTime, Datelike, Days, NaiveDate, Timelike};
use proptest::prelude::*;

use branchguard::duration::{Calendar, Delay};
use branchguard::template::{Template, VARIABLES};

fn calendar() -> Calendar {
    Calendar {
        timezone: "Asia/Shanghai".parse().unwrap(),
        holidays: [
            (2026, 10, 1),
            (2026, 10, 2),
            (2027, 1, 1),
            (2027, 2, 8),
            (2028, 5, 1),
        ]
        .iter()
        .map(|(y, m, d)| NaiveDate::from_ymd_opt(*y, *m, *d).unwrap())
        .collect(),
        ..Calendar::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fixed_durations_print_as_they_parse(secs in 1u64..50_000_000) {
        let d = Delay::Fixed(std::time::Duration::from_secs(secs));
        prop_assert_eq!(Delay::parse(&d.to_string()), Ok(d));
    }

    #[test]
    fn working_days_land_on_a_working_day_at_the_same_time(start in 1_767_225_600i64..1_893_456_000, n in 1u32..40) {
        let cal = calendar();
        let from = DateTime::from_timestamp(start, 0).unwrap();
        let due = cal.add_working_days(from, n);
        let (a, b) = (from.with_timezone(&cal.timezone), due.with_timezone(&cal.timezone));
        prop_assert!(due > from);
        prop_assert!(cal.is_working_day(b.date_naive()), "{} is not a working day", b);
        prop_assert_eq!((a.hour(), a.minute(), a.second()), (b.hour(), b.minute(), b.second()));
        let mut counted = 0;
        let mut d = a.date_naive();
        while d < b.date_naive() {
            d = d.checked_add_days(Days::new(1)).unwrap();
            if cal.is_working_day(d) {
                counted += 1;
            }
        }
        prop_assert_eq!(counted, n, "from {} ({:?}) to {}", a, a.weekday(), b);
    }

    #[test]
    fn event_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = branchguard::event::parse_json(&body);
        let _ = branchguard::sources::alertmanager::parse(&body);
    }

    #[test]
    fn event_json_with_wrong_types_names_a_field(kind in prop_oneof![Just("1"), Just("true"), Just("[]"), Just("{}"), Just("null")],
                                                 field in prop_oneof![Just("kind"), Just("branch"), Just("severity"), Just("status"), Just("summary"), Just("occurred_at")]) {
        let mut v = serde_json::json!({"kind": "k", "branch": "b"});
        v[field] = serde_json::from_str(kind).unwrap();
        let r = branchguard::event::parse_json(v.to_string().as_bytes());
        // `summary: null` is allowed (absent); everything else is refused naming the field.
        if !(kind == "null" && matches!(field, "summary" | "severity" | "status" | "occurred_at")) {
            let e = r.unwrap_err();
            prop_assert_eq!(e.field.as_deref(), Some(field), "{}", e.message);
        }
    }

    #[test]
    fn templates_never_panic_and_render_every_known_variable(s in ".{0,64}", picks in proptest::collection::vec(0usize..VARIABLES.len(), 0..6)) {
        let _ = Template::parse(&s);
        let text: String = picks.iter().map(|i| format!("<{{{{{}}}}}>", VARIABLES[*i])).collect();
        let t = Template::parse(&text).unwrap();
        let vars = VARIABLES.iter().map(|v| (v.to_string(), "x".to_string())).collect();
        let out = t.render(&vars);
        prop_assert!(!out.contains("{{"), "{}", out);
        prop_assert_eq!(out.matches("<x>").count(), picks.len());
    }
}

/// Pieces of playbooks, right and wrong, shuffled into files.
const FRAGMENTS: &[&str] = &[
    "id: x\n",
    "name: y\n",
    "trigger: { kind: k }\n",
    "steps:\n",
    "  - { id: a, deadline: 5m }\n",
    "  - id: b\n    deadline: [\n",
    "  - { id: c, deadline: 1h, when: \"tier >= 2\" }\n",
    "tiers: [{ level: 1, name: one }]\n",
    "\t",
    ": ",
    "- ",
    "{",
    "}",
    "\"",
    "id: x\n",
    "bogus: 1\n",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever is in a playbook file, loading reports problems with a place and never panics.
    #[test]
    fn any_playbook_text_loads_or_is_reported_with_a_location(parts in proptest::collection::vec(proptest::sample::select(FRAGMENTS), 0..12)) {
        let text = parts.concat();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("branchguard.yaml"), "branches: [{ id: b1, name: B }]\n").unwrap();
        std::fs::create_dir(dir.path().join("playbooks")).unwrap();
        std::fs::write(dir.path().join("playbooks/p.yaml"), &text).unwrap();
        if let Err(d) = branchguard::config::load(&dir.path().join("branchguard.yaml")) {
            prop_assert!(!d.is_empty());
            for x in &d.0 {
                prop_assert!(x.line >= 1 && x.column >= 1);
                prop_assert!(x.file.ends_with("p.yaml") || x.file.ends_with("branchguard.yaml"), "{}", x);
            }
        }
    }
}
