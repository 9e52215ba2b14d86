//! Notifications end to end: the real daemon, a real SMTP server and a real
//! webhook receiver on loopback. Delivery retries, restarts, one-click links,
//! roll call, and refused links.

mod common;

use std::time::Duration;

use common::sinks::{HookServer, Port, SmtpServer, free_port};
use common::{Daemon, Fixture, delivered_rows, history, step, wait_for};
use serde_json::Value;

const CORE_DOWN: &str = r#"{"kind":"system.down","branch":"br-a","severity":"critical","labels":{"system":"core"},"summary":"core down"}"#;
const WAIT: Duration = Duration::from_secs(20);

/// The engine fixture with email to `smtp_port`, the ops-centre webhook to `hook`,
/// and retries in hundreds of milliseconds.
fn fixture(smtp_port: u16, hook: &str) -> Fixture {
    let f = Fixture::engine();
    let notify = format!(
        "notify:\n  digest: 1s\n  email:\n    from: \"Branch Guard <guard@bank.example>\"\n    smtp: {{ host: 127.0.0.1, port: {smtp_port}, security: none, timeout: 5s }}\n  retry: {{ initial: 200ms, max: 1s, horizon: 1h, warn_after: 1s }}\n  webhooks:\n    ops-centre: {{ url: \"{hook}\", headers: {{ X-Source: branchguard }} }}\n"
    );
    f.set_notify(&notify);
    f.write(
        "playbooks/announce.yaml",
        "id: announce\nname: Announce\ntrigger: { kind: lobby.announce }\nsteps:\n  - id: screen\n    action: { webhook: ops-centre, body: \"Hello {{branch_name}}\" }\n    deadline: 1h\n",
    );
    f.write(
        "playbooks/evacuate.yaml",
        "id: evacuate\nname: Evacuate\ntrigger: { kind: disaster.alarm }\nresolve: manual\nsteps:\n  - id: roll-call\n    action: { roll_call: role:staff }\n    deadline: 1h\n    escalate:\n      - { after: 3s, to: [channel:ops-centre] }\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    f
}

fn outbox(inc: &Value) -> Vec<Value> {
    inc["outbox"].as_array().cloned().unwrap_or_default()
}

fn email_rows(inc: &Value) -> Vec<Value> {
    outbox(inc)
        .into_iter()
        .filter(|r| r["channel"] == "email")
        .collect()
}

/// A running daemon wired to a real SMTP server (started now or later) and a
/// real webhook receiver answering `script` first.
struct Env {
    smtp_port: u16,
    /// The SMTP port while nothing listens on it (the server starts down).
    smtp_down: Option<Port>,
    smtp: Option<SmtpServer>,
    hooks: HookServer,
    f: Fixture,
    d: Daemon,
}

impl Env {
    fn start(smtp_up: bool, script: &[u16]) -> Env {
        let reserved = free_port();
        let smtp_port = reserved.port;
        let (smtp, smtp_down) = if smtp_up {
            (Some(SmtpServer::start_on(reserved)), None)
        } else {
            (None, Some(reserved))
        };
        let hooks = HookServer::start(script);
        let f = fixture(smtp_port, &hooks.url);
        let d = Daemon::start(&f);
        Env {
            smtp_port,
            smtp_down,
            smtp,
            hooks,
            f,
            d,
        }
    }
}

#[test]
fn emails_arrive_with_deadline_and_a_link_that_get_shows_and_post_acknowledges() {
    let Env {
        smtp,
        hooks: _hooks,
        f: _f,
        d,
        ..
    } = Env::start(true, &[]);
    let smtp = smtp.expect("SMTP is up");
    d.post("/api/v1/events", CORE_DOWN);

    let mail = wait_for(WAIT, "the switchover email", || {
        smtp.to("it.a@bank.example").into_iter().next()
    });
    // What it asks first, then the branch and the step; short enough for a phone.
    assert_eq!(mail.subject(), "ACTION Branch A: switch");
    let text = mail.text();
    let inc = d.incident(1);
    let deadline =
        chrono::DateTime::parse_from_rfc3339(step(&inc, "switch")["deadline"].as_str().unwrap())
            .unwrap();
    let local = deadline
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M:%S +08:00")
        .to_string();
    assert!(
        text.contains(&format!("Deadline:  {local}")),
        "deadline in the branch's time zone:\n{text}"
    );
    assert!(
        text.contains("Branch:    Branch A (br-a)")
            && text.contains("Owner:     IT duty at Branch A: IT A"),
        "{text}"
    );

    let path = mail.link_path().expect("a one-click link");
    let html = mail.html();
    assert!(
        html.contains(&format!("{path}\" style=")) && html.contains(">Acknowledge this step</a>"),
        "the HTML part has the link as a button:\n{html}"
    );
    assert!(
        html.contains("Owner:     IT duty at Branch A: IT A"),
        "{html}"
    );
    let url = format!("{}{path}", d.url);
    let page = d.http.get(&url).send().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().unwrap();
    assert!(
        html.contains("<form method=\"post\">") && html.contains("IT A"),
        "{html}"
    );
    // A mail scanner fetching the link changes nothing.
    d.http.get(&url).send().unwrap();
    assert_eq!(
        step(&d.incident(1), "switch")["acknowledged_at"],
        Value::Null
    );

    let done = d.http.post(&url).send().unwrap();
    assert_eq!(done.status().as_u16(), 200);
    let inc = d.incident(1);
    let sw = step(&inc, "switch");
    assert_eq!(
        (sw["state"].as_str(), sw["by"].as_str()),
        (Some("acknowledged"), Some("it.a"))
    );
    assert!(
        sw["response_seconds"].as_f64().is_some_and(|r| r >= 0.0),
        "{sw}"
    );
    // The same link again: already used.
    let again = d.http.post(&url).send().unwrap();
    assert_eq!(again.status().as_u16(), 409);
    assert!(again.text().unwrap().contains("Already recorded"));
    let inc = wait_for(WAIT, "the refusal in the history", || {
        let inc = d.incident(1);
        (!history(&inc, "link.refused").is_empty()).then_some(inc)
    });
    assert!(
        history(&inc, "link.refused")[0]["detail"]
            .as_str()
            .unwrap()
            .contains("link has already been used")
    );
    // Opened again, the page says the link was used.
    let page = d.http.get(&url).send().unwrap().text().unwrap();
    assert!(page.contains("This link has already been used."), "{page}");
    // A link to a step the incident's resolution skipped says so, not
    // "already answered" (nobody answered it).
    d.post("/api/v1/events", &CORE_DOWN.replace("br-a", "br-b"));
    let mail = wait_for(WAIT, "IT B's email", || {
        smtp.to("it.b@bank.example").into_iter().next()
    });
    let url = format!("{}{}", d.url, mail.link_path().expect("a link"));
    let (code, body) = d.post("/api/v1/incidents/2/resolve", r#"{"by":"head.b"}"#);
    assert_eq!(code, 200, "{body}");
    let page = d.http.get(&url).send().unwrap();
    assert_eq!(page.status().as_u16(), 409);
    let page = page.text().unwrap();
    assert!(
        page.contains("This step was skipped: the incident was resolved before it was answered."),
        "{page}"
    );
}

#[test]
fn smtp_down_then_up_delivers_every_row_exactly_once() {
    let Env {
        smtp_down,
        hooks: _hooks,
        f: _f,
        d,
        ..
    } = Env::start(false, &[]);
    d.post("/api/v1/events", CORE_DOWN);
    // Nothing listens yet: attempts fail and are retried.
    wait_for(WAIT, "a failed attempt", || {
        let inc = d.incident(1);
        (history(&inc, "notification.retry")
            .iter()
            .any(|h| h["detail"].as_str().unwrap().contains("email to")))
        .then_some(())
    });
    let smtp = SmtpServer::start_on(smtp_down.expect("SMTP starts down"));
    // Once the step is overdue no more messages are created by themselves.
    wait_for(WAIT, "the overdue mark", || {
        (step(&d.incident(1), "switch")["state"] == "overdue").then_some(())
    });
    let before = email_rows(&d.incident(1)).len();
    // A later message goes through as well.
    d.post(
        "/api/v1/incidents/1/escalate",
        r#"{"by":"head.a","note":"check"}"#,
    );
    let inc = wait_for(WAIT, "every email delivered", || {
        let inc = d.incident(1);
        let rows = email_rows(&inc);
        (rows.len() > before && rows.iter().all(|r| r["delivered_at"].is_string())).then_some(inc)
    });
    let rows = email_rows(&inc);
    wait_for(WAIT, "every email row in a mail", || {
        (smtp.messages() >= rows.len()).then_some(())
    });
    // Each row once (a digest counts each of its messages), none sent again.
    assert_eq!(
        smtp.messages(),
        rows.len(),
        "{:?}",
        smtp.mails().iter().map(|m| m.subject()).collect::<Vec<_>>()
    );
    assert!(
        rows.iter().any(|r| r["attempts"].as_i64().unwrap() >= 2),
        "the first attempts failed: {rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r["last_error"].is_null() || r["delivered_at"].is_string())
    );
    let delivered = history(&inc, "notification.delivered")
        .iter()
        .filter(|h| h["detail"].as_str().unwrap().starts_with("email"))
        .count();
    assert_eq!(delivered, rows.len());
}

#[test]
fn rows_queued_at_kill_9_are_delivered_after_restart() {
    let Env {
        smtp_down,
        hooks: _hooks,
        f,
        d,
        ..
    } = Env::start(false, &[]);
    d.post("/api/v1/events", CORE_DOWN);
    wait_for(WAIT, "a failed attempt", || {
        (!history(&d.incident(1), "notification.retry").is_empty()).then_some(())
    });
    let queued = email_rows(&d.incident(1)).len();
    assert!(queued >= 1);
    d.kill9();
    let smtp = SmtpServer::start_on(smtp_down.expect("SMTP starts down"));
    let d = Daemon::start(&f);
    // Once the step is overdue no more emails are created by themselves.
    wait_for(WAIT, "the overdue mark", || {
        (step(&d.incident(1), "switch")["state"] == "overdue").then_some(())
    });
    let inc = wait_for(WAIT, "the queued emails delivered", || {
        let inc = d.incident(1);
        email_rows(&inc)
            .iter()
            .all(|r| r["delivered_at"].is_string())
            .then_some(inc)
    });
    let rows = email_rows(&inc).len();
    wait_for(WAIT, "the mails", || {
        (smtp.messages() >= rows).then_some(())
    });
    assert_eq!(smtp.messages(), rows);
}

#[test]
fn webhook_answering_500_twice_is_delivered_on_the_third_try_with_one_idempotency_key() {
    let Env {
        hooks, f: _f, d, ..
    } = Env::start(true, &[500, 500]);
    let (_, body) = d.post(
        "/api/v1/events",
        r#"{"kind":"lobby.announce","branch":"br-a"}"#,
    );
    let id = body["incidents"][0].as_i64().unwrap();
    let inc = wait_for(WAIT, "the webhook delivered", || {
        let inc = d.incident(id);
        outbox(&inc)
            .iter()
            .all(|r| r["delivered_at"].is_string())
            .then_some(inc)
    });
    let got = hooks.requests();
    assert_eq!(got.len(), 3, "500, 500, then 200: {got:?}");
    let keys: Vec<&str> = got
        .iter()
        .map(|h| h.header("idempotency-key").unwrap())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(got[2].header("x-source"), Some("branchguard"));
    let payload = &got[2].body;
    assert_eq!(payload["schema"], "branchguard.notification.v1");
    assert_eq!(payload["text"], "Hello Branch A");
    assert_eq!(payload["incident"]["id"], id);
    assert_eq!(payload["drill"], false);
    assert_eq!(payload["ask"], "NOTICE", "{payload}");
    assert_eq!(payload["urgent"], false, "{payload}");
    assert_eq!(format!("branchguard-{}", payload["id"]), keys[0]);
    assert_eq!(history(&inc, "notification.retry").len(), 2, "{inc}");
    assert_eq!(history(&inc, "notification.delivered").len(), 1, "{inc}");
    assert_eq!(outbox(&inc)[0]["attempts"], 3, "{inc}");
}

#[test]
fn roll_call_of_three_with_two_confirmed_names_and_escalates_the_third() {
    let Env {
        smtp,
        hooks,
        f: _f,
        d,
        ..
    } = Env::start(true, &[]);
    let smtp = smtp.expect("SMTP is up");
    let (_, body) = d.post(
        "/api/v1/events",
        r#"{"kind":"disaster.alarm","branch":"br-a"}"#,
    );
    let id = body["incidents"][0].as_i64().unwrap();
    let rc = step(&d.incident(id), "roll-call").clone();
    assert_eq!(
        rc["roll_call"]["people"],
        serde_json::json!(["guard.a", "head.a", "it.a"])
    );
    for who in ["head.a@bank.example", "it.a@bank.example"] {
        let mail = wait_for(WAIT, "the roll-call email", || {
            smtp.to(who).into_iter().next()
        });
        assert!(
            mail.text().contains("Confirm that you are safe"),
            "{}",
            mail.text()
        );
        let r = d
            .http
            .post(format!("{}{}", d.url, mail.link_path().unwrap()))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let inc = wait_for(WAIT, "the roll-call escalation", || {
        let inc = d.incident(id);
        (!history(&inc, "step.escalated").is_empty()).then_some(inc)
    });
    let rc = step(&inc, "roll-call");
    assert_eq!(rc["state"], "notified");
    assert_eq!(
        rc["roll_call"]["missing"],
        serde_json::json!([{"id": "guard.a", "name": "Guard A"}])
    );
    let detail = history(&inc, "step.escalated")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("not yet confirmed safe: Guard A (guard.a)"),
        "{detail}"
    );
    assert!(
        !detail.contains("Head A") && !detail.contains("IT A"),
        "{detail}"
    );
    let hook = wait_for(WAIT, "the escalation webhook", || {
        hooks.requests().into_iter().find(|h| {
            h.body["subject"]
                .as_str()
                .is_some_and(|s| s.contains("ESCALATION"))
        })
    });
    assert!(
        hook.body["text"].as_str().unwrap().contains("Guard A"),
        "{:?}",
        hook.body
    );
    // The third confirms: the roll call is done.
    let mail = wait_for(WAIT, "guard.a's roll-call email", || {
        smtp.to("guard.a@bank.example").into_iter().next()
    });
    let r = d
        .http
        .post(format!("{}{}", d.url, mail.link_path().unwrap()))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(step(&d.incident(id), "roll-call")["state"], "done");
}

#[test]
fn forged_and_expired_links_are_refused_with_a_page_counted_and_summarised() {
    let Env {
        smtp,
        hooks: _hooks,
        f,
        d,
        ..
    } = Env::start(true, &[]);
    let smtp = smtp.expect("SMTP is up");
    d.post("/api/v1/events", CORE_DOWN);
    let mail = wait_for(WAIT, "the switchover email", || {
        smtp.to("it.a@bank.example").into_iter().next()
    });
    let path = mail.link_path().unwrap();
    let token = path.trim_start_matches("/ack/");
    let (payload, sig) = token.split_once('.').unwrap();

    // Forged: the claims changed (another person), the signature kept.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
    claims["p"] = "head.a".into();
    let forged = format!(
        "/ack/{}.{sig}",
        b64.encode(serde_json::to_vec(&claims).unwrap())
    );
    for r in [
        d.http.get(format!("{}{forged}", d.url)).send().unwrap(),
        d.http.post(format!("{}{forged}", d.url)).send().unwrap(),
    ] {
        assert_eq!(r.status().as_u16(), 403);
        assert!(r.text().unwrap().contains("This link is not valid"));
    }
    // Expired: properly signed with the daemon's secret, but out of date.
    let secret = hex::decode(
        std::fs::read_to_string(f.path("data/link-secret"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let expired = branchguard::notify::links::Secret::from_bytes(&secret).sign(
        &branchguard::notify::links::Claims {
            incident: 1,
            step: "switch".into(),
            person: "it.a".into(),
            action: branchguard::engine::LinkAction::Ack,
            expires: branchguard::clock::now().timestamp() - 60,
        },
    );
    let r = d
        .http
        .post(format!("{}/ack/{expired}", d.url))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 410);
    let page = r.text().unwrap();
    assert!(page.contains("This link has expired"));
    // The advice names a way that exists: the CLI command for this very step.
    assert!(
        page.contains("<code>branchguard ack 1 switch --by it.a</code>"),
        "{page}"
    );
    assert_eq!(
        step(&d.incident(1), "switch")["acknowledged_at"],
        Value::Null,
        "nothing was recorded"
    );

    // Counted as refusals of this address, and in the audit log as the
    // address's summary line (one a minute), naming the first.
    let counted = d.metric("branchguard_requests_denied_total{reason=\"link_refused\"}");
    assert_eq!(counted, Some(3.0), "forged GET, forged POST, expired POST");
    let db = rusqlite::Connection::open(f.path("data/branchguard.db")).unwrap();
    let rows = || -> Vec<String> {
        db.prepare("SELECT detail FROM audit WHERE what IN ('auth.denied', 'link.refused')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let summary = wait_for(WAIT, "the summary row", || {
        let r = rows();
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert!(summary[0].contains("link refused"), "{summary:?}");
    // Guessing links: 300 more from this address meet 429s, and the audit
    // log gains nothing more within the minute.
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..300 {
        let code = d
            .http
            .post(format!("{}{forged}", d.url))
            .send()
            .unwrap()
            .status()
            .as_u16();
        *codes.entry(code).or_insert(0) += 1;
    }
    assert!(codes.get(&429).is_some_and(|n| *n > 200), "{codes:?}");
    // (The address is out of refusals: even its good requests wait. Its
    // bucket refills 5 a second, so a loaded machine can give one back
    // between two requests: a good request right after a refused guess is
    // refused too, at least once in twenty tries.)
    let waited = (0..20).any(|_| {
        let guess = d
            .http
            .post(format!("{}{forged}", d.url))
            .send()
            .unwrap()
            .status()
            .as_u16();
        guess == 429
            && d.post("/api/v1/events", r#"{"kind":"nothing","branch":"br-a"}"#)
                .0
                == 429
    });
    assert!(
        waited,
        "a good request from an address out of refusals was let through"
    );
    assert_eq!(rows().len(), 1, "{:?}", rows());
}

#[test]
fn a_reload_with_a_new_smtp_port_sends_the_next_mail_to_the_new_server() {
    let Env {
        smtp_port,
        smtp,
        hooks: _hooks,
        f,
        d,
        ..
    } = Env::start(true, &[]);
    let old = smtp.expect("SMTP is up");
    d.post("/api/v1/events", CORE_DOWN);
    wait_for(WAIT, "the first email, at the old server", || {
        old.to("it.a@bank.example").into_iter().next()
    });

    let new = SmtpServer::start();
    let new_port = new.port;
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    let moved = cfg.replace(
        &format!("port: {smtp_port},"),
        &format!("port: {new_port},"),
    );
    assert_ne!(cfg, moved, "the fixture names the SMTP port");
    f.write("branchguard.yaml", &moved);
    std::process::Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    wait_for(WAIT, "the SIGHUP reload", || {
        let s = d.get("/api/v1/status");
        (s["last_reload"]["trigger"] == "SIGHUP" && s["last_reload"]["ok"] == true).then_some(())
    });

    d.post("/api/v1/events", &CORE_DOWN.replace("\"br-a\"", "\"br-b\""));
    let mail = wait_for(WAIT, "the next email, at the new server", || {
        new.to("it.b@bank.example").into_iter().next()
    });
    assert!(mail.subject().contains("Branch B"), "{}", mail.subject());
    assert!(
        old.to("it.b@bank.example").is_empty(),
        "the old server got mail after the reload"
    );
}

#[test]
fn a_failing_channel_is_logged_once_and_shown_in_status_until_it_delivers() {
    let Env {
        hooks, f: _f, d, ..
    } = Env::start(true, &[500; 12]);
    d.post(
        "/api/v1/events",
        r#"{"kind":"lobby.announce","branch":"br-a"}"#,
    );
    let status = wait_for(WAIT, "the channel to be alarmed", || {
        let s = d.get("/api/v1/status");
        (s["failing_channels"]["ops-centre"]["alarmed"] == true).then_some(s)
    });
    let failing = &status["failing_channels"]["ops-centre"];
    assert!(
        failing["last_error"].as_str().unwrap().contains("500"),
        "{failing}"
    );
    let alarmed_at = failing["failed_attempts"].as_u64().unwrap();
    // More failed attempts after the alarm: still one warning.
    wait_for(WAIT, "more failed attempts", || {
        let s = d.get("/api/v1/status");
        (s["failing_channels"]["ops-centre"]["failed_attempts"].as_u64() >= Some(alarmed_at + 2))
            .then_some(())
    });
    let warnings = |log: &str| {
        log.lines()
            .filter(|l| l.contains("notification channel ops-centre has been failing"))
            .count()
    };
    assert_eq!(warnings(&d.log()), 1, "{}", d.log());
    // The receiver recovers (its script runs out): the channel is cleared.
    wait_for(WAIT, "the channel to deliver again", || {
        let s = d.get("/api/v1/status");
        s["failing_channels"]["ops-centre"].is_null().then_some(())
    });
    assert!(hooks.requests().len() >= 13);
    assert_eq!(warnings(&d.log()), 1);
}

#[test]
fn a_link_lives_until_its_step_deadline_plus_the_margin_even_past_its_ttl() {
    let Env {
        smtp,
        hooks: _h,
        f,
        d,
        ..
    } = Env::start(true, &[]);
    let smtp = smtp.expect("SMTP is up");
    // Links are sent with a TTL of one minute; the roll call is due in an hour.
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace("  retry:", "  links: { ttl: 1m, margin: 2h }\n  retry:"),
    );
    let (code, _) = d.post("/api/v1/reload", "");
    assert_eq!(code, 200);
    d.post(
        "/api/v1/events",
        r#"{"kind":"disaster.alarm","branch":"br-a"}"#,
    );
    let mail = wait_for(WAIT, "the roll-call email", || {
        smtp.to("guard.a@bank.example").into_iter().next()
    });
    let path = mail.link_path().expect("a link");
    let payload = path
        .trim_start_matches("/ack/")
        .split('.')
        .next()
        .unwrap()
        .to_string();
    use base64::Engine as _;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let deadline = chrono::DateTime::parse_from_rfc3339(
        step(&d.incident(1), "roll-call")["deadline"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let expires = claims["e"].as_i64().unwrap();
    assert!(
        expires >= deadline.timestamp() + 2 * 3600 - 1,
        "the link expires at {expires}, before the deadline {deadline} plus the margin"
    );
    let r = d.http.get(format!("{}{path}", d.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn a_webhook_step_is_done_when_delivered_not_when_queued() {
    let Env {
        hooks, f: _f, d, ..
    } = Env::start(true, &[500, 500]);
    let (_, body) = d.post(
        "/api/v1/events",
        r#"{"kind":"lobby.announce","branch":"br-a"}"#,
    );
    let id = body["incidents"][0].as_i64().unwrap();
    let inc = wait_for(WAIT, "the first failed attempt", || {
        let inc = d.incident(id);
        (!history(&inc, "notification.retry").is_empty()).then_some(inc)
    });
    // A slow test thread may look only after the third try succeeded.
    if history(&inc, "notification.delivered").is_empty() {
        assert_eq!(
            step(&inc, "screen")["state"],
            "notified",
            "not done while the receiver answers 500: {inc}"
        );
    }
    let inc = wait_for(WAIT, "the step done", || {
        let inc = d.incident(id);
        (step(&inc, "screen")["state"] == "done").then_some(inc)
    });
    assert_eq!(step(&inc, "screen")["by"], "branchguard");
    assert_eq!(hooks.requests().len(), 3);
    let done = history(&inc, "step.done");
    // Done with the delivery, after both refusals, not when queued.
    let at = |e: &Value| chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap();
    let delivered = history(&inc, "notification.delivered");
    assert_eq!(delivered.len(), 1, "{inc}");
    assert!(at(done[0]) >= at(delivered[0]), "{inc}");
    let retries = history(&inc, "notification.retry");
    assert_eq!(retries.len(), 2, "{inc}");
    assert!(retries.iter().all(|r| at(r) <= at(done[0])), "{inc}");
    assert!(
        done[0]["detail"]
            .as_str()
            .unwrap()
            .contains("announcement delivered to channel:ops-centre"),
        "{done:?}"
    );
}

#[test]
fn resolving_withdraws_an_undelivered_announcement_but_not_messages_to_people() {
    let Env {
        smtp, hooks, f, d, ..
    } = Env::start(true, &[500; 100]);
    let smtp = smtp.expect("SMTP is up");
    f.write(
        "playbooks/screen.yaml",
        "id: screen\nname: Screen\ntrigger: { kind: screen.test }\nresolve: manual\nsteps:\n  - id: show\n    action: { webhook: ops-centre, body: \"Maintenance in progress\" }\n    deadline: 1h\n  - id: tell\n    assignee: role:it-duty\n    deadline: 1h\n",
    );
    assert_eq!(d.post("/api/v1/reload", "").0, 200);
    let (_, body) = d.post(
        "/api/v1/events",
        r#"{"kind":"screen.test","branch":"br-a"}"#,
    );
    let id = body["incidents"][0].as_i64().unwrap();
    wait_for(WAIT, "a failed announcement attempt", || {
        let inc = d.incident(id);
        (!history(&inc, "notification.retry").is_empty()).then_some(())
    });
    let (code, _) = d.post(
        &format!("/api/v1/incidents/{id}/resolve"),
        r#"{"by":"head.a"}"#,
    );
    assert_eq!(code, 200);
    let inc = d.incident(id);
    let withdrawn = history(&inc, "notification.withdrawn");
    assert_eq!(withdrawn.len(), 1, "{inc}");
    let announcement = outbox(&inc)
        .into_iter()
        .find(|r| r["channel"] == "webhook" && r["step"] == "show")
        .unwrap();
    assert!(announcement["failed_at"].is_string(), "{announcement}");
    assert!(
        announcement["last_error"]
            .as_str()
            .unwrap()
            .starts_with("withdrawn"),
        "{announcement}"
    );
    // Settled: the worker never picks it up again. The email to a person is
    // not withdrawn.
    let attempts = announcement["attempts"].as_i64().unwrap();
    wait_for(WAIT, "the assignee's email", || {
        smtp.to("it.a@bank.example").into_iter().next()
    });
    // The receiver has the mail a moment before the daemon records the send.
    let inc = wait_for(WAIT, "the assignee's email recorded as sent", || {
        let inc = d.incident(id);
        let rows = email_rows(&inc);
        let sent = !rows.is_empty() && rows.iter().all(|r| r["delivered_at"].is_string());
        sent.then_some(inc)
    });
    let again = outbox(&inc)
        .into_iter()
        .find(|r| r["channel"] == "webhook" && r["step"] == "show")
        .unwrap();
    assert!(again["attempts"].as_i64().unwrap() <= attempts + 1);
    assert!(hooks.requests().len() as i64 <= attempts + 1);
}

/// An announcement queued and withdrawn in one round (its incident opened
/// and resolved by one request) is never sent: the rows a commit hands the
/// delivery worker are not started when that commit withdrew any.
#[test]
fn an_announcement_opened_and_resolved_in_one_request_is_never_sent() {
    let Env {
        hooks, f: _f, d, ..
    } = Env::start(true, &[]);
    let (code, body) = d.post(
        "/api/v1/events",
        r#"[{"kind":"lobby.announce","branch":"br-a"},{"kind":"lobby.announce","branch":"br-a","status":"resolved"}]"#,
    );
    assert_eq!(code, 202, "{body}");
    let id = body["incidents"][0].as_i64().unwrap();
    let inc = d.incident(id);
    assert_eq!(inc["status"], "resolved", "{inc}");
    assert_eq!(history(&inc, "notification.withdrawn").len(), 1, "{inc}");
    // A later announcement goes through the same lane: once it has arrived,
    // the withdrawn one would have too.
    let (_, later) = d.post(
        "/api/v1/events",
        r#"{"kind":"lobby.announce","branch":"br-b"}"#,
    );
    let later = later["incidents"][0].as_i64().unwrap();
    let got = wait_for(WAIT, "the later announcement", || {
        let got = hooks.requests();
        (!got.is_empty()).then_some(got)
    });
    let incidents: Vec<i64> = got
        .iter()
        .filter_map(|h| h.body["incident"]["id"].as_i64())
        .collect();
    assert_eq!(incidents, [later], "only the later one was sent");
    // Once the later one is recorded sent, the withdrawn row was never tried.
    delivered_rows(&d, later);
    let inc = d.incident(id);
    let withdrawn = outbox(&inc);
    assert_eq!(withdrawn.len(), 1, "{inc}");
    assert_eq!(withdrawn[0]["attempts"], 0, "{inc}");
    assert!(withdrawn[0]["delivered_at"].is_null(), "{inc}");
    assert_eq!(hooks.requests().len(), 1);
}

/// The one-click link labelled `label` in a mail's text, as a path.
fn link_labelled(mail: &common::sinks::Mail, label: &str) -> Option<String> {
    let text = mail.text();
    let mut lines = text.lines().map(str::trim_end);
    lines.find(|l| *l == format!("{label}:"))?;
    let url = lines.next()?;
    Some(url[url.find("/ack/")?..].to_string())
}

#[test]
fn messages_offer_done_and_escalate_links_name_owners_and_link_a_readable_page() {
    let Env {
        smtp,
        hooks: _h,
        f: _f,
        d,
        ..
    } = Env::start(true, &[]);
    let smtp = smtp.expect("SMTP is up");
    d.post("/api/v1/events", CORE_DOWN);
    let mail = wait_for(WAIT, "the switchover email", || {
        smtp.to("it.a@bank.example").into_iter().next()
    });
    // A task's email: acknowledge and done.
    assert!(
        link_labelled(&mail, "Acknowledge this step").is_some(),
        "{}",
        mail.text()
    );
    let done = link_labelled(&mail, "Mark this step done").expect("a done link");
    // The incident link opens a page for people, not JSON.
    let text = mail.text();
    let incident_url = text
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("Incident:  http"))
        .map(|rest| format!("http{rest}"))
        .expect("an incident link");
    // It carries a read-only grant for that incident (a browser sends no token).
    assert!(
        incident_url.contains("/incidents/1?grant="),
        "{incident_url}"
    );
    let path = &incident_url[incident_url.find("/incidents/").unwrap()..];
    let page = d.http.get(format!("{}{path}", d.url)).send().unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = page.text().unwrap();
    assert!(
        page.contains("Incident #1: Failover") && page.contains("IT duty at Branch A: IT A"),
        "{page}"
    );
    // The escalation at 2s reaches the branch head with what a head can do.
    let esc = wait_for(WAIT, "the escalation email", || {
        smtp.to("head.a@bank.example")
            .into_iter()
            .find(|m| m.subject().contains("ESCALATION"))
    });
    assert!(
        link_labelled(&esc, "Acknowledge for the team").is_some(),
        "{}",
        esc.text()
    );
    assert!(link_labelled(&esc, "Acknowledge this step").is_none());
    let escalate =
        link_labelled(&esc, "Escalate to the operations centre").expect("an escalate link");
    let show = d
        .http
        .get(format!("{}{escalate}", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    // Times on the link page carry the branch's zone.
    assert!(show.contains("+08:00"), "{show}");
    assert_eq!(
        d.http
            .post(format!("{}{escalate}", d.url))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let inc = d.incident(1);
    let escalated = history(&inc, "incident.escalated");
    assert_eq!(escalated.len(), 1, "{inc}");
    assert_eq!(escalated[0]["by"], "head.a");
    // The done link finishes the step.
    assert_eq!(
        d.http
            .post(format!("{}{done}", d.url))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let sw = step(&d.incident(1), "switch").clone();
    assert_eq!(
        (sw["state"].as_str(), sw["by"].as_str()),
        (Some("done"), Some("it.a"))
    );
}

#[test]
fn mail_files_are_named_by_time_incident_and_recipient() {
    let f = Fixture::engine();
    let d = Daemon::start(&f);
    d.post("/api/v1/events", CORE_DOWN);
    let names = wait_for(WAIT, "a mail file", || {
        let names: Vec<String> = std::fs::read_dir(f.path("data/mail"))
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".eml"))
            .collect();
        (!names.is_empty()).then_some(names)
    });
    let name = names
        .iter()
        .find(|n| n.ends_with("-it.a@bank.example.eml"))
        .unwrap_or_else(|| panic!("{names:?}"));
    // 20261124-091500-incident-1-row-3-it.a@bank.example.eml
    let parts: Vec<&str> = name.splitn(7, '-').collect();
    assert_eq!(parts[0].len(), 8, "{name}");
    assert_eq!(parts[1].len(), 6, "{name}");
    assert_eq!(
        (parts[2], parts[3], parts[4]),
        ("incident", "1", "row"),
        "{name}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with('.')),
        "no half-written files: {names:?}"
    );
}

#[test]
fn a_hanging_webhook_receiver_holds_only_its_own_lane_and_at_most_in_flight_requests() {
    // A receiver that accepts connections and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_url = format!("http://{}/hook", hang.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = std::sync::Arc::clone(&accepted);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in hang.incoming().flatten() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(s);
            }
        });
    }
    let smtp = SmtpServer::start();
    let smtp_port = smtp.port;
    let f = fixture(smtp_port, &hang_url);
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &cfg.replace("notify:\n", "notify:\n  in_flight: 2\n")
            .replace(
                "headers: { X-Source: branchguard } }",
                "headers: { X-Source: branchguard }, timeout: 60s }",
            ),
    );
    // Each announcement its own incident, so each its own request.
    f.write(
        "playbooks/announce.yaml",
        "id: announce\nname: Announce\ntrigger: { kind: lobby.announce }\ngroup_by: [branch, n]\nsteps:\n  - id: screen\n    action: { webhook: ops-centre, body: \"Hello {{branch_name}}\" }\n    deadline: 1h\n",
    );
    assert_eq!(f.run(&["check"]).code, 0);
    let d = Daemon::start(&f);
    // Five announcements for the hanging receiver: two go out, three wait.
    let mut announced = Vec::new();
    for b in ["br-a", "br-b", "br-a", "br-b", "br-a"] {
        let (code, body) = d.post(
            "/api/v1/events",
            &format!(
                r#"{{"kind":"lobby.announce","branch":"{b}","labels":{{"n":"{}"}}}}"#,
                announced.len()
            ),
        );
        assert_eq!(code, 202, "{body}");
        announced.push(body["incidents"][0].as_i64().unwrap());
    }
    announced.dedup();
    assert_eq!(announced.len(), 5);
    wait_for(WAIT, "two requests at the hanging receiver", || {
        (accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2).then_some(())
    });
    // Email is another lane: it goes out while the webhook lane is stuck
    // (the receiver's timeout is 60 s, the wait here 20 s).
    let (code, _) = d.post("/api/v1/events", CORE_DOWN);
    assert_eq!(code, 202);
    wait_for(WAIT, "the email while the webhook hangs", || {
        (!smtp.to("it.a@bank.example").is_empty()).then_some(())
    });
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "notify.in_flight: 2 bounds the requests at one receiver"
    );
    for id in announced {
        let inc = d.incident(id);
        assert!(
            history(&inc, "notification.delivered").is_empty()
                && history(&inc, "notification.failed").is_empty(),
            "{inc}"
        );
    }
}

/// A channel nobody listens on says why in words a person can act on
/// ("Connection refused"), not only the library's "error sending request".
#[test]
fn a_refused_channel_shows_the_cause_of_its_failure() {
    let smtp = SmtpServer::start();
    let closed = free_port();
    // Its secret in the path, as Slack's and Feishu's are.
    let f = fixture(
        smtp.port,
        &format!("http://127.0.0.1:{}/services/T0/B0/s3cr3tpart", closed.port),
    );
    let d = Daemon::start(&f);
    let (_, body) = d.post(
        "/api/v1/events",
        r#"{"kind":"lobby.announce","branch":"br-a"}"#,
    );
    let status = wait_for(WAIT, "the channel to be alarmed", || {
        let s = d.get("/api/v1/status");
        (s["failing_channels"]["ops-centre"]["alarmed"] == true).then_some(s)
    });
    let error = status["failing_channels"]["ops-centre"]["last_error"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(error.contains("connection refused"), "{status}");
    assert_eq!(error.matches("127.0.0.1").count(), 1, "said once: {error}");
    // Not the path: whoever may read the status or the incident may not
    // post to the channel.
    let inc = d.incident(body["incidents"][0].as_i64().unwrap());
    for said in [status.to_string(), inc.to_string()] {
        assert!(!said.contains("s3cr3tpart"), "{said}");
    }
}
