//! Resolution with an injected clock: boundaries, windows across midnight,
//! daylight-saving changes, the bank's calendar, overrides and leave.

use super::*;

fn local(tz: Tz, s: &str) -> DateTime<Utc> {
    to_utc(tz, parse_local(s).unwrap())
}

fn layer(name: &str, start: &str, shift_h: i64, people: &[&str], only: Only) -> Layer {
    Layer {
        name: name.into(),
        start: parse_local(start).unwrap(),
        shift: chrono::Duration::hours(shift_h),
        people: people.iter().map(|p| p.to_string()).collect(),
        only,
        uncovered: false,
    }
}

fn roster(tz: Tz, layers: Vec<Layer>) -> Roster {
    Roster {
        id: "it-duty-east".into(),
        at: "rosters/it.yaml:1:5".into(),
        role: "it-duty".into(),
        branches: ["sh-001".to_string()].into(),
        tz,
        layers,
        overrides: Vec::new(),
        handoff: true,
    }
}

fn window(from: &str, to: &str, days: &[&str]) -> Only {
    Only {
        days: (!days.is_empty()).then(|| days.iter().map(|d| DayKind::parse(d).unwrap()).collect()),
        window: (!from.is_empty()).then(|| (parse_clock(from).unwrap(), parse_clock(to).unwrap())),
    }
}

fn who(r: &Roster, cal: &Calendar, at: DateTime<Utc>) -> Option<String> {
    r.on_duty(at, cal, &Away::new()).person
}

const SH: Tz = chrono_tz::Asia::Shanghai;

#[test]
fn a_turn_changes_exactly_at_its_boundary() {
    let r = roster(
        SH,
        vec![layer(
            "days",
            "2026-11-02T08:00",
            24,
            &["a", "b", "c"],
            Only::default(),
        )],
    );
    let cal = Calendar::default();
    let before = local(SH, "2026-11-03T07:59:59");
    let at = local(SH, "2026-11-03T08:00");
    assert_eq!(
        who(&r, &cal, local(SH, "2026-11-02T07:59:59")),
        None,
        "before the first turn"
    );
    assert_eq!(
        who(&r, &cal, local(SH, "2026-11-02T08:00")).as_deref(),
        Some("a")
    );
    assert_eq!(who(&r, &cal, before).as_deref(), Some("a"));
    assert_eq!(who(&r, &cal, at).as_deref(), Some("b"));
    assert_eq!(
        who(&r, &cal, local(SH, "2026-11-05T08:00")).as_deref(),
        Some("a"),
        "round again"
    );
    let (until, next) = r
        .until(before, at + chrono::Duration::days(30), &cal, &Away::new())
        .unwrap();
    assert_eq!((until, next.person.as_deref()), (at, Some("b")));
    assert_eq!(next.why, "layer days");
}

#[test]
fn a_night_window_crosses_midnight_and_belongs_to_the_day_it_started() {
    let r = roster(
        SH,
        vec![
            layer(
                "days",
                "2026-11-02T08:00",
                24,
                &["day"],
                window("08:00", "20:00", &[]),
            ),
            // Nights only from Friday: Friday 20:00 to Saturday 08:00.
            layer(
                "nights",
                "2026-11-02T20:00",
                24 * 7,
                &["night"],
                window("20:00", "08:00", &["Fri"]),
            ),
        ],
    );
    let cal = Calendar::default();
    // 2026-11-06 is a Friday.
    assert_eq!(
        who(&r, &cal, local(SH, "2026-11-06T19:59")).as_deref(),
        Some("day")
    );
    assert_eq!(
        who(&r, &cal, local(SH, "2026-11-06T20:00")).as_deref(),
        Some("night")
    );
    assert_eq!(
        who(&r, &cal, local(SH, "2026-11-07T03:00")).as_deref(),
        Some("night"),
        "Saturday small hours belong to Friday's night"
    );
    assert_eq!(
        who(&r, &cal, local(SH, "2026-11-07T08:00")).as_deref(),
        Some("day")
    );
    // Thursday night is nobody's: a gap from 20:00 to 08:00.
    let gaps = r.gaps(
        local(SH, "2026-11-05T08:00"),
        local(SH, "2026-11-06T08:00"),
        &cal,
        &Away::new(),
    );
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (gaps[0].from, gaps[0].until),
        (local(SH, "2026-11-05T20:00"), local(SH, "2026-11-06T08:00"))
    );
}

/// London changes its clocks on 2026-03-29 and 2026-10-25: a one-day turn
/// still starts at 08:00 local, the turn over the change is 23 or 25 hours,
/// and there is neither a gap nor an overlap.
#[test]
fn a_daily_rotation_keeps_its_hour_across_both_daylight_saving_changes() {
    let tz = chrono_tz::Europe::London;
    let r = roster(
        tz,
        vec![layer(
            "daily",
            "2026-03-20T08:00",
            24,
            &["a", "b"],
            Only::default(),
        )],
    );
    let cal = Calendar::default();
    for (first, change) in [("2026-03-27", "2026-03-29"), ("2026-10-23", "2026-10-25")] {
        let from = local(tz, &format!("{first}T08:00"));
        let until = from + chrono::Duration::hours(108);
        assert!(r.gaps(from, until, &cal, &Away::new()).is_empty());
        let mut t = from;
        let mut lengths = Vec::new();
        while let Some((next, d)) = r.until(t, until, &cal, &Away::new()) {
            assert_eq!(
                next.with_timezone(&tz).format("%H:%M:%S").to_string(),
                "08:00:00",
                "{next}"
            );
            assert_ne!(
                d.person,
                who(&r, &cal, t),
                "the turn passes to the other person"
            );
            lengths.push((next - t).num_hours());
            t = next;
        }
        assert_eq!(lengths.len(), 4, "{lengths:?}");
        let expect = if change.ends_with("03-29") { 23 } else { 25 };
        // The turn that starts on the day before the change holds it.
        assert_eq!(lengths, vec![24, expect, 24, 24], "{first}: {lengths:?}");
    }
}

#[test]
fn holiday_and_weekend_layers_follow_the_banks_calendar() {
    let cal = Calendar {
        timezone: SH,
        holidays: [NaiveDate::from_ymd_opt(2026, 11, 4).unwrap()].into(),
        ..Calendar::default()
    };
    let r = roster(
        SH,
        vec![
            layer(
                "working",
                "2026-11-02T00:00",
                24,
                &["w"],
                window("", "", &["working"]),
            ),
            layer(
                "weekend",
                "2026-11-02T00:00",
                24,
                &["we"],
                window("", "", &["weekend"]),
            ),
            layer(
                "holidays",
                "2026-11-02T00:00",
                24,
                &["h"],
                window("", "", &["holiday"]),
            ),
        ],
    );
    assert_eq!(
        who(&r, &cal, local(SH, "2026-11-03T12:00")).as_deref(),
        Some("w"),
        "a Tuesday"
    );
    assert_eq!(
        who(&r, &cal, local(SH, "2026-11-04T12:00")).as_deref(),
        Some("h"),
        "a holiday Wednesday"
    );
    assert_eq!(
        who(&r, &cal, local(SH, "2026-11-07T12:00")).as_deref(),
        Some("we"),
        "a Saturday"
    );
    assert!(
        r.gaps(
            local(SH, "2026-11-02T00:00"),
            local(SH, "2026-11-16T00:00"),
            &cal,
            &Away::new()
        )
        .is_empty()
    );
}

#[test]
fn an_override_wins_over_every_layer_and_leave_makes_a_gap() {
    let mut r = roster(
        SH,
        vec![layer(
            "days",
            "2026-11-02T08:00",
            24,
            &["a", "b"],
            Only::default(),
        )],
    );
    let cal = Calendar::default();
    r.overrides.push(Override {
        person: "c".into(),
        from: local(SH, "2026-11-02T12:00"),
        to: local(SH, "2026-11-02T14:00"),
    });
    let d = r.on_duty(local(SH, "2026-11-02T13:00"), &cal, &Away::new());
    assert_eq!(
        (d.person.as_deref(), d.why.as_str()),
        (Some("c"), "override")
    );
    assert_eq!(
        who(&r, &cal, local(SH, "2026-11-02T14:00")).as_deref(),
        Some("a")
    );
    // b is away on the 3rd, noon to midnight: their turn falls to nobody.
    let away: Away = [(
        "b".to_string(),
        vec![(local(SH, "2026-11-03T12:00"), local(SH, "2026-11-04T00:00"))],
    )]
    .into();
    let d = r.on_duty(local(SH, "2026-11-03T13:00"), &cal, &away);
    assert_eq!(d.person, None);
    assert!(d.why.contains("b is away"), "{d:?}");
    let gaps = r.gaps(
        local(SH, "2026-11-02T08:00"),
        local(SH, "2026-11-06T08:00"),
        &cal,
        &away,
    );
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (gaps[0].from, gaps[0].until),
        (local(SH, "2026-11-03T12:00"), local(SH, "2026-11-04T00:00"))
    );
    // An override over the leave closes the gap.
    r.overrides.push(Override {
        person: "a".into(),
        from: local(SH, "2026-11-03T12:00"),
        to: local(SH, "2026-11-04T00:00"),
    });
    assert!(
        r.gaps(
            local(SH, "2026-11-02T08:00"),
            local(SH, "2026-11-06T08:00"),
            &cal,
            &away
        )
        .is_empty()
    );
}

#[test]
fn a_window_left_uncovered_on_purpose_is_not_a_gap() {
    let mut quiet = layer(
        "closed",
        "2026-11-02T00:00",
        24,
        &[],
        window("20:00", "08:00", &[]),
    );
    quiet.uncovered = true;
    let r = roster(
        SH,
        vec![
            layer(
                "days",
                "2026-11-02T08:00",
                24,
                &["a"],
                window("08:00", "20:00", &[]),
            ),
            quiet,
        ],
    );
    let cal = Calendar::default();
    let d = r.on_duty(local(SH, "2026-11-02T23:00"), &cal, &Away::new());
    assert_eq!(d.person, None);
    assert!(d.intended);
    assert!(
        r.gaps(
            local(SH, "2026-11-02T08:00"),
            local(SH, "2026-11-09T08:00"),
            &cal,
            &Away::new()
        )
        .is_empty()
    );
}

/// One person in one-second turns: nobody's turn ever changes, and every
/// walk stops after a bounded number of instants instead of walking days of
/// seconds (on a request, or on the engine thread).
#[test]
fn walks_over_a_roster_of_one_second_turns_are_bounded() {
    let mut l = layer("seconds", "2026-11-02T08:00", 1, &["a"], Only::default());
    l.shift = chrono::Duration::seconds(1);
    let r = roster(SH, vec![l]);
    let cal = Calendar::default();
    let at = local(SH, "2026-11-03T08:00");
    let horizon = at + chrono::Duration::days(8);
    assert_eq!(r.until(at, horizon, &cal, &Away::new()), None);
    let again = r.recheck(at, horizon, &cal, &Away::new());
    assert!(again > at && again < horizon, "{again}");
    let segs = r.segments(at, at + chrono::Duration::days(90), &cal, &Away::new());
    assert_eq!(segs.len(), 1);
    assert!(
        segs[0].until < at + chrono::Duration::days(90),
        "what lies beyond is not claimed"
    );
    // Since its start a day before: found within the walk's bound.
    let began = r.since(at, chrono::Duration::days(8), &cal, &Away::new());
    assert_eq!(began, Some(local(SH, "2026-11-02T08:00")));
    // Three days of seconds since: past the bound, so not claimed.
    let later = local(SH, "2026-11-05T08:00");
    assert_eq!(
        r.since(later, chrono::Duration::days(8), &cal, &Away::new()),
        None
    );
}

/// The ends of what the API takes (1970 to 9999) are answered: chrono's
/// calendar runs far past them, so nothing here needs to saturate.
#[test]
fn the_end_of_the_calendar_is_answered_not_overflowed() {
    let r = roster(
        SH,
        vec![layer(
            "days",
            "2026-11-02T08:00",
            24,
            &["a", "b"],
            Only::default(),
        )],
    );
    let cal = Calendar::default();
    let end = DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
        .unwrap()
        .to_utc();
    assert!(r.on_duty(end, &cal, &Away::new()).person.is_some());
    let _ = r.until(end, end + chrono::Duration::days(8), &cal, &Away::new());
    let _ = r.since(end, chrono::Duration::days(8), &cal, &Away::new());
    assert!(
        !r.turns(
            end,
            end + chrono::Duration::days(90),
            &cal,
            &Away::new(),
            |p| p.to_string()
        )
        .is_empty()
    );
    let start = DateTime::parse_from_rfc3339("1970-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    assert_eq!(
        r.on_duty(start, &cal, &Away::new()).person,
        None,
        "before the first turn"
    );
    let _ = r.since(start, chrono::Duration::days(8), &cal, &Away::new());
}
