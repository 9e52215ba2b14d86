//! `branchguard check` on bad input: every class of mistake is reported at its
//! exact `file:line:col`, and all mistakes of a run are reported together.

mod common;
use common::Fixture;

/// Runs `check` and asserts it failed with exactly these lines (prefix match on
/// each line's message, so wording can grow without losing the location check).
fn assert_errors(f: &Fixture, expected: &[&str]) {
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "check should fail\n{out:?}");
    let lines = out.error_lines();
    assert_eq!(
        lines.len(),
        expected.len(),
        "wrong number of errors:\n{}",
        out.stderr
    );
    for (line, want) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(want),
            "expected a line starting with\n  {want}\ngot\n  {line}\nall:\n{}",
            out.stderr
        );
    }
}

#[test]
fn valid_network_passes_with_a_summary() {
    let f = Fixture::base();
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        "ok: 2 branches, 3 people, 1 playbooks, 1 drills"
    );
}

#[test]
fn bundled_network_passes() {
    let f = Fixture::bundled();
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .starts_with("ok: 3 branches, 17 people, 7 playbooks, 4 drills"),
        "{}",
        out.stdout
    );
}

#[test]
fn yaml_syntax_error() {
    let f = Fixture::base();
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down\nsteps: []\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1);
    let lines = out.error_lines();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("playbooks/failover.yaml:4:"),
        "{}",
        lines[0]
    );
}

#[test]
fn unknown_field_names_it_and_the_expected_ones() {
    let f = Fixture::base();
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down }\nsteps:\n  - id: switch\n    deadlin: 15m\n",
    );
    assert_errors(
        &f,
        &[
            "playbooks/failover.yaml:6:5: steps[0].deadlin: unknown field `deadlin`, expected one of id, title, assignee",
        ],
    );
}

#[test]
fn wrong_type() {
    let f = Fixture::base();
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down }\nsteps:\n  - id: switch\n    deadline: 15m\n    critical: maybe\n",
    );
    assert_errors(
        &f,
        &["playbooks/failover.yaml:7:15: steps[0].critical: invalid boolean"],
    );
}

#[test]
fn wrong_type_in_the_config_file() {
    let f = Fixture::base();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace(
            "listen: 127.0.0.1:0",
            "listen: 127.0.0.1:0\npeople_count: 3",
        ),
    );
    assert_errors(
        &f,
        &["branchguard.yaml:2:1: people_count: unknown field `people_count`"],
    );
}

#[test]
fn a_zero_count_is_an_error_at_its_place_not_silently_raised() {
    let f = Fixture::base();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace(
            "listen: 127.0.0.1:0",
            "listen: 127.0.0.1:0\nengine: { max_batch: 0 }\nlimits:\n  body_bytes: 0\n  burst: 5",
        ),
    );
    assert_errors(
        &f,
        &[
            "branchguard.yaml:4:15: limits.body_bytes: must be at least 1 (leave it out for the default, 1048576)",
            "branchguard.yaml:2:22: engine.max_batch: must be at least 1 (leave it out for the default, 1000)",
        ],
    );
}

#[test]
fn duplicate_key() {
    let f = Fixture::base();
    f.write(
        "drills/failover-drill.yaml",
        "id: failover-drill\nplaybook: failover\nbranches: all\nevent: { kind: system.down, labels: { system: core } }\nplaybook: failover\n",
    );
    assert_errors(
        &f,
        &["drills/failover-drill.yaml:5:1: duplicate mapping key: playbook"],
    );
}

#[test]
fn duplicate_ids() {
    let f = Fixture::base();
    f.write(
        "playbooks/zz-copy.yaml",
        "id: failover\nname: Copy\ntrigger: { kind: other }\nsteps:\n  - { id: a, deadline: 5m }\n  - { id: a, deadline: 5m }\n",
    );
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace(
            "branches:\n",
            "  - { id: it.a, name: Again, roles: [staff] }\nbranches:\n",
        ),
    );
    assert_errors(
        &f,
        &[
            "branchguard.yaml:10:11: duplicate person id `it.a`",
            "playbooks/zz-copy.yaml:1:5: duplicate playbook id `failover`: already defined in playbooks/failover.yaml",
        ],
    );
}

#[test]
fn duplicate_step_id() {
    let f = Fixture::base();
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down, labels: { system: core } }\nsteps:\n  - { id: a, deadline: 5m }\n  - { id: a, deadline: 5m }\n",
    );
    f.write("drills/failover-drill.yaml", "id: d\nplaybook: failover\nbranches: all\nevent: { kind: system.down, labels: { system: core } }\n");
    assert_errors(&f, &["playbooks/failover.yaml:6:11: duplicate step id `a`"]);
}

#[test]
fn dangling_references() {
    let f = Fixture::base();
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down, labels: { system: core } }\nsteps:\n  - id: switch\n    assignee: role:wizard\n    deadline: 15m\n    escalate:\n      - { after: 10m, to: [person:nobody, channel:pager] }\n",
    );
    f.write(
        "drills/failover-drill.yaml",
        "id: failover-drill\nplaybook: failover\nbranches: [br-a, br-z]\nevent: { kind: system.down, labels: { system: core } }\n",
    );
    f.write(
        "drills/other.yaml",
        "id: other\nplaybook: no-such-playbook\nbranches: all\nevent: { kind: x }\n",
    );
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace("neighbours: [br-a]", "neighbours: [br-q]"),
    );
    assert_errors(
        &f,
        &[
            "branchguard.yaml:12:46: neighbours: unknown branch `br-q`",
            "playbooks/failover.yaml:6:15: steps.switch.assignee: unknown role `wizard`",
            "playbooks/failover.yaml:9:28: steps.switch.escalate.to: unknown person `nobody`",
            "playbooks/failover.yaml:9:43: steps.switch.escalate.to: unknown channel `pager`",
            "drills/failover-drill.yaml:3:11: branches: unknown branch `br-z`",
            "drills/other.yaml:2:11: playbook: unknown playbook `no-such-playbook`",
        ],
    );
}

#[test]
fn drill_target_for_a_missing_step_and_an_event_that_would_not_trigger() {
    let f = Fixture::base();
    f.write(
        "drills/failover-drill.yaml",
        "id: failover-drill\nplaybook: failover\nbranches: all\nevent: { kind: system.up, labels: { system: core } }\ntargets: { swich: 5m }\n",
    );
    assert_errors(
        &f,
        &[
            "drills/failover-drill.yaml:5:19: targets.swich: playbook `failover` has no step `swich`",
            "drills/failover-drill.yaml:4:16: event: this event would not trigger playbook `failover`",
        ],
    );
}

#[test]
fn bad_target_form() {
    let f = Fixture::base();
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down, labels: { system: core } }\nsteps:\n  - { id: switch, assignee: team:it, deadline: 15m }\n",
    );
    assert_errors(
        &f,
        &[
            "playbooks/failover.yaml:5:29: steps.switch.assignee: invalid target `team:it`: expected `person:ID`, `role:NAME`",
        ],
    );
}

#[test]
fn bad_durations() {
    let f = Fixture::base();
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down, labels: { system: core } }\nsteps:\n  - id: switch\n    deadline: 15 minuets\n  - id: visit\n    deadline: 3 working dayz\n  - id: cmd\n    action: { command: [\"true\"], timeout: 2 working days }\n    deadline: 5m\n",
    );
    assert_errors(
        &f,
        &[
            "playbooks/failover.yaml:6:15: steps.switch.deadline: invalid duration `15 minuets`",
            "playbooks/failover.yaml:8:15: steps.visit.deadline: invalid duration `3 working dayz`",
            "playbooks/failover.yaml:10:43: steps.cmd.action.timeout: working days are not allowed here",
        ],
    );
}

#[test]
fn bad_cron_and_numeric_day_of_week() {
    let f = Fixture::base();
    f.write(
        "drills/failover-drill.yaml",
        "id: failover-drill\nplaybook: failover\nschedule: \"0 0 10 * * 3\"\nbranches: all\nevent: { kind: system.down, labels: { system: core } }\n",
    );
    f.write(
        "drills/second.yaml",
        "id: second\nplaybook: failover\nschedule: \"0 0 25 * * Wed\"\nbranches: all\nevent: { kind: system.down, labels: { system: core } }\n",
    );
    f.write(
        "drills/third.yaml",
        "id: third\nplaybook: failover\nschedule: \"10 * *\"\nbranches: all\nevent: { kind: system.down, labels: { system: core } }\n",
    );
    assert_errors(
        &f,
        &[
            "drills/failover-drill.yaml:3:11: schedule: day-of-week `3` is numeric: write days by name (e.g. MON-FRI, Sat,Sun), because cron dialects disagree on whether 1 is Sunday or Monday",
            "drills/second.yaml:3:11: schedule: invalid cron expression `0 0 25 * * Wed`: the hour field is out of range or malformed",
            "drills/third.yaml:3:11: schedule: cron expression `10 * *` has 3 fields",
        ],
    );
}

#[test]
fn bad_template_points_at_the_placeholder() {
    let f = Fixture::base();
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down, labels: { system: core } }\nsteps:\n  - id: run\n    action: { command: [\"scripts/failover.sh\", \"{{branch}}\", \"{{lables.system}}\"] }\n    deadline: 5m\n  - id: announce\n    action: { webhook: ops-centre, body: \"{{branch}} down at {{tyme}}\" }\n    deadline: 5m\n",
    );
    assert_errors(
        &f,
        &[
            "playbooks/failover.yaml:6:63: steps.run.action.command: unknown template variable `{{lables.system}}`",
            "playbooks/failover.yaml:9:62: steps.announce.action.body: unknown template variable `{{tyme}}`",
        ],
    );
}

#[test]
fn when_over_undefined_tier_and_bad_action_shape() {
    let f = Fixture::base();
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down, labels: { system: core } }\ntiers:\n  - { level: 1, name: low }\n  - { level: 2, name: high }\nsteps:\n  - { id: a, deadline: 5m, when: \"tier >= 3\" }\n  - { id: b, deadline: 5m, when: \"level > 1\" }\n  - id: c\n    deadline: 5m\n    action: { notify: [branch-head], webhook: ops-centre }\n",
    );
    assert_errors(
        &f,
        &[
            "playbooks/failover.yaml:8:34: steps.a.when: tier 3 is not defined: the playbook's tiers are 1, 2",
            "playbooks/failover.yaml:9:34: steps.b.when: invalid condition `level > 1`",
            "playbooks/failover.yaml:12:47: steps.c.action: `webhook` given together with `notify`",
        ],
    );
}

#[test]
fn every_error_of_a_run_is_reported() {
    let f = Fixture::base();
    // One problem in each of the three kinds of file, plus a syntax error in a fourth.
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace("timezone: Asia/Shanghai", "timezone: Asia/Atlantis"),
    );
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down, labels: { system: core } }\nsteps:\n  - { id: switch, deadline: soon }\n  - { id: call, deadline: 5m, assignee: person:ghost }\n",
    );
    f.write("playbooks/broken.yaml", "id: [unclosed\n");
    f.write(
        "drills/failover-drill.yaml",
        "id: failover-drill\nplaybook: failover\nbranches: all\nevent: { kind: system.down, labels: { system: core } }\npass_score: 120\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1);
    let lines = out.error_lines();
    assert_eq!(lines.len(), 5, "{}", out.stderr);
    assert!(
        lines[0].starts_with("branchguard.yaml:2:11: timezone: unknown time zone `Asia/Atlantis`"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("playbooks/broken.yaml:1:5: "),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(
            "playbooks/failover.yaml:5:29: steps.switch.deadline: invalid duration `soon`"
        ),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with(
            "playbooks/failover.yaml:6:41: steps.call.assignee: unknown person `ghost`"
        ),
        "{}",
        lines[3]
    );
    // The drill's playbook failed to load, so the drill's own mistakes are still checked.
    assert!(
        lines[4].starts_with("drills/failover-drill.yaml:5:13: pass_score: 120 is out of range"),
        "{}",
        lines[4]
    );
    assert!(
        out.stderr.trim_end().ends_with("5 error(s)"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_action_without_an_action_key_points_at_the_action() {
    let f = Fixture::base();
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down, labels: { system: core } }\nsteps:\n  - id: a\n    deadline: 5m\n    action: { body: hello }\n",
    );
    assert_errors(
        &f,
        &[
            "playbooks/failover.yaml:7:13: steps.a.action: expected one of task, notify, webhook, command, roll_call or event",
        ],
    );
}

#[test]
fn a_configured_directory_that_is_missing_is_an_error_a_default_one_is_not() {
    let f = Fixture::base();
    std::fs::remove_dir_all(f.path("drills")).unwrap();
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("0 drills"), "{}", out.stdout);
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &format!("drills_dir: ./exercises\n{cfg}"),
    );
    assert_errors(
        &f,
        &["branchguard.yaml:1:13: drills_dir: cannot read directory ./exercises"],
    );
}

#[test]
fn an_ops_channel_that_is_not_a_configured_webhook_is_an_error_at_its_value() {
    let f = Fixture::base();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace("notify:\n", "notify:\n  ops_channel: ops-center\n"),
    );
    assert_errors(
        &f,
        &[
            "branchguard.yaml:4:16: notify.ops_channel: unknown channel `ops-center`: expected one of the webhooks under notify.webhooks (ops-centre)",
        ],
    );
}

#[test]
fn a_broken_config_file_does_not_hide_the_errors_of_playbooks_and_drills() {
    let f = Fixture::base();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write("branchguard.yaml", &format!("{cfg}listn: 1\n"));
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down\nsteps: []\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1);
    let lines = out.error_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("branchguard.yaml:13:1: listn: unknown field `listn`")),
        "{}",
        out.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("playbooks/failover.yaml:")),
        "the playbook's own error is reported too:\n{}",
        out.stderr
    );
}

#[test]
fn check_refuses_a_listen_address_that_run_would_refuse() {
    let f = Fixture::base();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace("listen: 127.0.0.1:0", "listen: 0.0.0.0:9700"),
    );
    let expected = "branchguard.yaml:1:9: listen: 0.0.0.0:9700 is not a loopback address";
    assert_errors(&f, &[expected]);
    let run = f.run(&["run"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains(expected), "{}", run.stderr);
}

#[test]
fn relative_paths_are_relative_to_the_config_files_own_directory() {
    let f = Fixture::base();
    std::fs::create_dir_all(f.path("elsewhere")).unwrap();
    let out = Fixture {
        dir: tempfile::tempdir().unwrap(),
    }
    .run(&[
        "check",
        "--config",
        f.path("branchguard.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        "ok: 2 branches, 3 people, 1 playbooks, 1 drills",
        "the playbooks and drills next to the file were found"
    );
}

#[test]
fn lints_are_warnings_with_their_place_and_do_not_fail_check() {
    let f = Fixture::base();
    f.write(
        "playbooks/conflict.yaml",
        "id: conflict\nname: Conflict\ntrigger: { kind: customer.conflict }\ntiers:\n  - { level: 1, name: complaint, labels: { level: \"1\" } }\n  - { level: 2, name: safety, labels: { level: \"2\" } }\nsteps:\n  - id: calm\n    assignee: branch-head\n    deadline: 15m\n    escalate:\n      - { after: 20m, to: [channel:ops-centre] }\n  - id: police\n    assignee: branch-head\n    when: \"tier > 2\"\n    deadline: 5m\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "lints alone do not fail check: {out:?}");
    assert!(out.stdout.starts_with("ok: "), "{out:?}");
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(": warning: "))
        .collect();
    let expect = [
        "playbooks/conflict.yaml:12:18: warning: steps.calm.escalate.after: 20m is at or past the step's deadline (15m)",
        "playbooks/conflict.yaml:15:11: warning: steps.police.when: `tier > 2` holds at none of the playbook's tiers (1, 2)",
        "playbooks/failover.yaml:9:15: warning: steps.switch.assignee: nobody is `role:it-duty` at br-b",
    ];
    for want in expect {
        assert!(
            warnings.iter().any(|w| w.starts_with(want)),
            "missing `{want}` in:\n{}",
            out.stderr
        );
    }
    assert_eq!(warnings.len(), 3, "{}", out.stderr);
    assert!(out.stderr.contains("3 warning(s)"), "{}", out.stderr);
}

/// Without tokens every request is allowed: a `public_url` elsewhere means
/// a proxy will forward strangers to it, which loopback does not stop.
#[test]
fn a_public_url_elsewhere_without_tokens_is_warned_at_its_place() {
    let f = Fixture::engine();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    let out = f.run(&["check"]);
    assert!(!out.stderr.contains("public_url"), "{}", out.stderr);
    f.write(
        "branchguard.yaml",
        &cfg.replace(
            "public_url: http://127.0.0.1:9700",
            "public_url: https://guard.bank.example",
        ),
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "a warning: {out:?}");
    assert!(
        out.stderr.contains(
            "branchguard.yaml:3:13: warning: public_url: https://guard.bank.example is not this machine, and no API tokens are configured"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn digest_windows_take_zero_for_none_and_at_most_an_hour() {
    let f = Fixture::base();
    f.set_notify(
        "notify:\n  digest: 0s\n  webhooks:\n    ops-centre: { url: \"http://127.0.0.1:9/hook\", min_interval: 0s }\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    f.set_notify(
        "notify:\n  digest: 2h\n  webhooks:\n    ops-centre: { url: \"http://127.0.0.1:9/hook\", min_interval: 90m }\n",
    );
    assert_errors(
        &f,
        &[
            "branchguard.yaml:4:11: notify.digest: `2h` is longer than 1h: expected at most `1h`, or `0s` for none",
            "branchguard.yaml:6:65: notify.webhooks.ops-centre.min_interval: `90m` is longer than 1h: expected at most `1h`, or `0s` for none",
        ],
    );
}

/// Drill targets: `10m` (to the first answer), `{ done: 10m }` (to done),
/// `none` (not scored); a step whose target cannot fall within the drill's
/// timeout is warned about where it is written (exit 0), and a malformed
/// target is an error at its place.
#[test]
fn drill_targets_to_done_and_unreachable_ones_are_checked() {
    let f = Fixture::base();
    let pb = std::fs::read_to_string(f.path("playbooks/failover.yaml")).unwrap();
    f.write(
        "playbooks/failover.yaml",
        &format!("{pb}  - id: report\n    assignee: branch-head\n    deadline: 72h\n"),
    );
    f.write(
        "drills/failover-drill.yaml",
        "id: failover-drill\nplaybook: failover\nbranches: all\nevent: { kind: system.down, labels: { system: core } }\ntargets: { switch: { done: 5m } }\ntimeout: 30m\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("drills/") && l.contains("warning:"))
        .collect();
    assert_eq!(
        warnings,
        [
            "drills/failover-drill.yaml:6:10: warning: timeout: step `report`: its target (the step's deadline, 72h) cannot fall within the drill's timeout (30m): it is left out of the score (say `report: none` if that is meant)"
        ],
        "{}",
        out.stderr
    );
    // Said on purpose: no warning.
    f.write(
        "drills/failover-drill.yaml",
        "id: failover-drill\nplaybook: failover\nbranches: all\nevent: { kind: system.down, labels: { system: core } }\ntargets: { switch: { done: 5m }, report: none }\ntimeout: 30m\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("drills/"), "{}", out.stderr);
    f.write(
        "drills/failover-drill.yaml",
        "id: failover-drill\nplaybook: failover\nbranches: all\nevent: { kind: system.down, labels: { system: core } }\ntargets: { switch: { finished: 5m } }\n",
    );
    assert_errors(&f, &["drills/failover-drill.yaml:5:"]);
}

/// `after: STEP_ID` and `delay` (sequence): an unknown step, a cycle and a
/// delay with nothing to count from, each at its own place, all in one run.
#[test]
fn sequence_mistakes_are_named_where_they_are() {
    let f = Fixture::base();
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down }\nsteps:\n  - id: switch\n    assignee: role:it-duty\n    deadline: 15m\n  - id: hold\n    after: swtich\n    assignee: branch-head\n    deadline: 1h\n  - id: a\n    after: b\n    assignee: branch-head\n    deadline: 1h\n  - id: b\n    after: a\n    assignee: branch-head\n    deadline: 1h\n  - id: report\n    delay: 3d\n    assignee: branch-head\n    deadline: 4h\n  - id: release\n    after: switch\n    delay: 3 dais\n    assignee: branch-head\n    deadline: 4h\n",
    );
    assert_errors(
        &f,
        &[
            "playbooks/failover.yaml:21:12: steps.report.delay: `delay` needs `after` (a step id, or `resolved`)",
            "playbooks/failover.yaml:26:12: steps.release.delay:",
            "playbooks/failover.yaml:13:12: steps.a.after: a cycle (a → b → a)",
            "playbooks/failover.yaml:17:12: steps.b.after: a cycle (b → a → b)",
            "playbooks/failover.yaml:9:12: steps.hold.after: no step `swtich` in this playbook: expected `resolved` or one of a, b, hold, release, report, switch",
        ],
    );
    // Written right, it passes, and `match` shows when each step starts.
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down }\nsteps:\n  - id: switch\n    assignee: role:it-duty\n    deadline: 1h\n  - id: hold\n    after: switch\n    assignee: branch-head\n    deadline: 15m\n  - id: release-or-extend\n    after: hold\n    delay: 3d\n    assignee: branch-head\n    deadline: 4h\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// `every` shorter than the deadline is a warning at its place; `after`
/// naming a repeating step is an error at its place; `match` says how a
/// repeating step runs.
#[test]
fn repetition_mistakes_are_named_and_match_shows_the_schedule() {
    let f = Fixture::base();
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down }\nsteps:\n  - id: switch\n    assignee: role:it-duty\n    deadline: 15m\n  - id: update\n    every: 10m\n    assignee: branch-head\n    deadline: 1h\n  - id: after-update\n    after: update\n    assignee: branch-head\n    deadline: 1h\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("playbooks/failover.yaml:13:12: steps.after-update.after: `update` repeats (`every`): a step cannot wait for one that never ends"),
        "{}",
        out.stderr
    );
    // Without the step that waits: it passes, with the warning.
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down }\nsteps:\n  - id: switch\n    assignee: role:it-duty\n    deadline: 15m\n  - id: update\n    every: 10m\n    assignee: branch-head\n    deadline: 1h\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("playbooks/failover.yaml:9:12: warning: steps.update.every: 10m is shorter than the deadline (1h)"),
        "{}",
        out.stderr
    );
    f.write(
        "playbooks/failover.yaml",
        "id: failover\nname: Failover\ntrigger: { kind: system.down }\nsteps:\n  - id: switch\n    assignee: role:it-duty\n    deadline: 15m\n  - id: update\n    every: 48h\n    assignee: branch-head\n    deadline: 4h\n",
    );
    f.write("ev.json", r#"{"kind":"system.down","branch":"br-a"}"#);
    let out = f.run(&["match", "ev.json", "--at", "2026-11-24T09:00:00+08:00"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("update                   task       branch-head                  #1 due 2026-11-24 13:00:00 +08:00 (in 4h), then one every 48h until resolved"),
        "{}",
        out.stdout
    );
}
