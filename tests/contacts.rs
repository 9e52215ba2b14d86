//! People outside the bank: a notify step tells the regulator's desk by
//! email and the police liaison through a webhook, in its own words, only
//! for the branches each serves, with no link into the bank's pages.

mod common;

use std::time::Duration;

use common::sinks::{HookServer, SmtpServer};
use common::{Daemon, Fixture, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn fixture(smtp_port: u16, hook: &str) -> Fixture {
    let f = Fixture::engine();
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    let cfg = cfg
        .replace(
            "notify:\n",
            &format!("notify:\n  email:\n    from: \"Branch Guard <guard@bank.example>\"\n    smtp: {{ host: 127.0.0.1, port: {smtp_port}, security: none, timeout: 5s }}\n"),
        )
        .replace(
            "    ops-centre: { url: \"http://127.0.0.1:9/hook\" }\n",
            &format!("    ops-centre: {{ url: \"http://127.0.0.1:9/hook\" }}\n    police: {{ url: \"{hook}\" }}\n"),
        )
        .replace(
            "branches:\n",
            "contacts:\n  - { id: regulator-desk, name: Regulator duty desk, email: desk@regulator.example, branches: [br-a] }\n  - { id: police-liaison, name: Police liaison, webhook: police, branches: all }\nbranches:\n",
        );
    f.write("branchguard.yaml", &cfg);
    f.write(
        "playbooks/leak.yaml",
        "id: leak\nname: Data leak\ntrigger: { kind: data.leak }\nsteps:\n  - id: tell-outside\n    action:\n      notify: [contact:regulator-desk, contact:police-liaison]\n      message: \"{{branch_name}} reports a suspected data leak: {{summary}}\"\n    deadline: 1h\n",
    );
    f
}

#[test]
fn contacts_get_the_steps_own_words_for_the_branches_they_serve() {
    let smtp = SmtpServer::start();
    let hook = HookServer::start(&[]);
    let f = fixture(smtp.port, &hook.url);
    assert_eq!(f.run(&["check"]).code, 0, "{:?}", f.run(&["check"]));
    let d = Daemon::start(&f);
    let (code, b) = d.post(
        "/api/v1/events",
        r#"{"kind":"data.leak","branch":"br-a","summary":"customer list on a public share"}"#,
    );
    assert_eq!(code, 202, "{b}");
    let mail = wait_for(WAIT, "the regulator's mail", || {
        smtp.to("desk@regulator.example").into_iter().next()
    });
    let text = mail.text();
    assert!(
        text.starts_with("Branch A reports a suspected data leak: customer list on a public share"),
        "{text}"
    );
    assert!(
        !text.contains("grant="),
        "no way into the bank's pages: {text}"
    );
    assert!(mail.link_path().is_none(), "no one-click links: {text}");
    assert!(
        !text.contains("/incidents/"),
        "not even its address: {text}"
    );
    assert!(text.contains("— Branch A"), "signed by the branch: {text}");
    let req = wait_for(WAIT, "the police webhook", || {
        hook.requests().into_iter().next()
    });
    let words = req.body["text"].as_str().unwrap();
    assert!(words.starts_with("Branch A reports"), "{}", req.body);
    // By webhook as by mail: the words and the branch's name, no way into
    // the bank's pages (the text was the staff's, with the page's address).
    assert!(words.ends_with("— Branch A\n"), "{words:?}");
    // Nor the incident's number, step, owner or labels: the branch only.
    for k in ["links", "step", "event"] {
        assert!(req.body[k].is_null(), "{k}: {}", req.body);
    }
    assert_eq!(
        req.body["incident"],
        serde_json::json!({"branch": "br-a", "branch_name": "Branch A"})
    );
    assert!(
        !req.body.to_string().contains("/incidents/"),
        "{}",
        req.body
    );
    // br-b: the regulator's desk does not serve it; the history says so.
    let (code, b) = d.post(
        "/api/v1/events",
        r#"{"kind":"data.leak","branch":"br-b","summary":"laptop lost"}"#,
    );
    assert_eq!(code, 202, "{b}");
    let id = b["incidents"][0].as_i64().unwrap();
    let inc = d.incident(id);
    let done = common::history(&inc, "step.done");
    let line = done[0]["detail"].as_str().unwrap();
    assert!(
        line.contains("Regulator duty desk (does not serve br-b)"),
        "{line}"
    );
    assert!(line.contains("Police liaison <police>"), "{line}");
    wait_for(WAIT, "the second police request", || {
        (hook.requests().len() == 2).then_some(())
    });
    assert_eq!(smtp.to("desk@regulator.example").len(), 1);
}

#[test]
fn contact_mistakes_are_named_at_their_place() {
    let smtp = SmtpServer::start();
    let f = fixture(smtp.port, "http://127.0.0.1:9/x");
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace(
            "contacts:\n",
            "contacts:\n  - { id: fire, name: Fire department, branches: all }\n  - { id: it.a, name: Twin, email: x@y.example, branches: all }\n  - { id: press, name: Press, webhook: newsroom, branches: [br-z] }\n",
        ),
    );
    f.write(
        "playbooks/bad.yaml",
        "id: bad\nname: Bad\ntrigger: { kind: bad }\nsteps:\n  - id: a\n    assignee: contact:regulator-desk\n    deadline: 1h\n  - id: b\n    action: { notify: [contact:nobody] }\n    deadline: 1h\n  - id: c\n    action: { task: true, message: hello }\n    deadline: 1h\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    for want in [
        "contact `fire`: give `email` or `webhook`",
        "duplicate id `it.a`: a person or another contact has it",
        "contacts.press.webhook: unknown channel `newsroom`",
        "contacts.press.branches: unknown branch `br-z`",
        "steps.a.assignee: `contact:regulator-desk` is told, not asked",
        "steps.b.action.notify: unknown contact `nobody`",
        "steps.c.action.message: `message` belongs to a `notify` action, not `task`",
    ] {
        assert!(out.stderr.contains(want), "{want}\n{}", out.stderr);
    }
}
