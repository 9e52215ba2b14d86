//! Per-person digests and webhook rate limits against the real daemon, a real
//! SMTP server and a real webhook receiver: the first message goes at once,
//! the rest of a window's messages to the same person come as one email with
//! every incident and its own links; drill and real are never mixed; a rate
//! limited webhook channel gets one digest payload instead of a request each.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::sinks::{HookServer, SmtpServer, free_port};
use common::{Daemon, Fixture, delivered_rows, step, wait_for};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
/// The digest window of these tests, and the webhook's minimum interval.
const WINDOW_S: i64 = 3;
const INTERVAL_S: i64 = 2;

fn fixture(smtp_port: u16, hook: &str) -> Fixture {
    let f = Fixture::engine();
    let notify = format!(
        "notify:\n  digest: {WINDOW_S}s\n  email:\n    from: \"Branch Guard <guard@bank.example>\"\n    smtp: {{ host: 127.0.0.1, port: {smtp_port}, security: none, timeout: 5s }}\n  retry: {{ initial: 200ms, max: 1s, horizon: 1h }}\n  webhooks:\n    ops-centre: {{ url: \"{hook}\", min_interval: {INTERVAL_S}s }}\n"
    );
    f.set_notify(&notify);
    f.write("playbooks/atm.yaml", common::ATM_PLAYBOOK);
    f.write(
        "playbooks/announce.yaml",
        "id: announce\nname: Announce\ntrigger: { kind: lobby.announce }\ngroup_by: [branch, n]\nsteps:\n  - id: screen\n    action: { webhook: ops-centre, body: \"Notice {{labels.n}}\" }\n    deadline: 1h\n",
    );
    f.write(
        "drills/atm-drill.yaml",
        "id: atm-drill\nplaybook: atm\nevent: { kind: atm.down, labels: { atm: drill } }\nbranches: [br-a]\ntimeout: 2m\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    f
}

fn atm_events(from: usize, to: usize) -> String {
    Value::Array(
        (from..to)
            .map(|i| json!({"kind": "atm.down", "branch": "br-a", "labels": {"atm": format!("atm-{i}")}}))
            .collect(),
    )
    .to_string()
}

/// A digest's sections: (subject, text) of each message it carries.
fn sections(text: &str) -> Vec<(String, String)> {
    let re = regex::Regex::new(r"(?m)^---------- \d+ of \d+: (.*?) ----------\r?$").unwrap();
    let heads: Vec<(usize, usize, String)> = re
        .captures_iter(text)
        .map(|c| {
            let m = c.get(0).unwrap();
            (m.start(), m.end(), c[1].to_string())
        })
        .collect();
    heads
        .iter()
        .enumerate()
        .map(|(k, (_, end, subject))| {
            let stop = heads.get(k + 1).map_or(text.len(), |h| h.0);
            (subject.clone(), text[*end..stop].to_string())
        })
        .collect()
}

#[test]
fn a_window_of_messages_to_one_person_is_one_digest_with_each_incidents_own_working_links() {
    let smtp = SmtpServer::start();
    let smtp_port = smtp.port;
    let hooks = HookServer::start(&[]);
    let f = fixture(smtp_port, &hooks.url);
    let d = Daemon::start(&f);
    // The first message goes at once, on its own.
    let (code, first) = d.post("/api/v1/events", &atm_events(0, 1));
    assert_eq!(code, 202, "{first}");
    let single = wait_for(WAIT, "the first mail", || {
        smtp.to("it.a@bank.example").into_iter().next()
    });
    assert_eq!(single.messages(), 1);
    // Nineteen more real incidents and a drill, within the window.
    let (code, more) = d.post("/api/v1/events", &atm_events(1, 20));
    assert_eq!(code, 202, "{more}");
    let (code, drill) = d.post("/api/v1/drills/atm-drill/run", r#"{"branch":"br-a"}"#);
    assert_eq!(code, 202, "{drill}");
    let drill_incident = drill["incidents"][0].as_i64().unwrap();
    // Someone else's first message is not held behind it.a's window.
    let (code, other) = d.post(
        "/api/v1/events",
        &json!([{"kind": "atm.down", "branch": "br-b", "labels": {"atm": "b-1"}}]).to_string(),
    );
    assert_eq!(code, 202, "{other}");
    let other_incident = other["incidents"][0].as_i64().unwrap();
    let mut real: Vec<i64> = vec![first["incidents"][0].as_i64().unwrap()];
    real.extend(
        more["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap()),
    );
    assert_eq!(real.len(), 20);
    wait_for(WAIT, "all 21 messages to it.a", || {
        let n: usize = smtp
            .to("it.a@bank.example")
            .iter()
            .map(|m| m.messages())
            .sum();
        (n >= 21).then_some(())
    });
    let mails = smtp.to("it.a@bank.example");
    // One at once, then one real digest and one drill digest (or the drill
    // alone): a handful, not twenty-one.
    assert!(mails.len() <= 4, "{} mails", mails.len());
    // Each mail its own Message-ID: a digest's names its set, never its
    // first row's (a mail store that drops repeats would drop the digest).
    let ids: std::collections::BTreeSet<String> = mails
        .iter()
        .map(|m| m.header("Message-ID").unwrap_or_default())
        .collect();
    assert_eq!(ids.len(), mails.len(), "{ids:?}");
    for m in &mails {
        let id = m.header("Message-ID").unwrap_or_default();
        let digest = m.messages() > 1;
        assert_eq!(id.starts_with("<branchguard-digest-"), digest, "{id}");
        assert_eq!(id.starts_with("<branchguard-row-"), !digest, "{id}");
    }
    let link_re = regex::Regex::new(r"/incidents/(\d+)").unwrap();
    let ack_re = regex::Regex::new(r"Acknowledge this step:\s+(\S+)").unwrap();
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    let mut ack_links: BTreeMap<i64, String> = BTreeMap::new();
    for m in &mails {
        let drill_mail = m.subject().starts_with("[DRILL]");
        let text = m.text();
        let parts = if m.messages() > 1 {
            sections(&text)
        } else {
            vec![(m.subject(), text.clone())]
        };
        assert_eq!(parts.len(), m.messages(), "{text}");
        for (subject, body) in parts {
            // Drill and real are never in the same mail.
            assert_eq!(
                subject.starts_with("[DRILL]"),
                drill_mail,
                "{subject} in {}",
                m.subject()
            );
            let id: i64 = link_re.captures(&body).expect("an incident link")[1]
                .parse()
                .unwrap();
            *seen.entry(id).or_default() += 1;
            // Each message keeps its branch, step, deadline and own link.
            assert!(
                body.contains("Branch:    Branch A (br-a)") && body.contains("Deadline:"),
                "{body}"
            );
            let ack = ack_re.captures(&body).expect("an acknowledge link")[1].to_string();
            ack_links.insert(id, ack);
        }
    }
    let mut expected: Vec<i64> = real.clone();
    expected.push(drill_incident);
    expected.sort();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), expected);
    assert!(seen.values().all(|n| *n == 1), "each once: {seen:?}");
    // No message waited longer than the window (plus a little for the send).
    // The receiver has every mail before the daemon records the sends.
    for id in &expected {
        for row in delivered_rows(&d, *id) {
            let at =
                |k: &str| chrono::DateTime::parse_from_rfc3339(row[k].as_str().unwrap()).unwrap();
            let waited = at("delivered_at") - at("created_at");
            assert!(
                waited <= chrono::Duration::seconds(WINDOW_S + 2),
                "row {} waited {waited}",
                row["id"]
            );
        }
    }
    wait_for(WAIT, "it.b's first mail", || {
        smtp.to("it.b@bank.example").into_iter().next()
    });
    // it.b's first mail went at once, not after it.a's window: measured
    // against its own row, so a slow machine does not make it look held.
    let other = &delivered_rows(&d, other_incident)[0];
    let at = |k: &str| chrono::DateTime::parse_from_rfc3339(other[k].as_str().unwrap()).unwrap();
    let waited = at("delivered_at") - at("created_at");
    assert!(
        waited < chrono::Duration::seconds(WINDOW_S),
        "it.b's first mail waited {waited}, as long as it.a's window"
    );
    // A link from the digest acts on its own incident only.
    let (a, b) = (real[10], real[11]);
    let path = ack_links[&a].trim_start_matches("http://127.0.0.1:9700");
    let r = d.http.post(format!("{}{path}", d.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(step(&d.incident(a), "fix")["state"], "acknowledged");
    assert_eq!(step(&d.incident(b), "fix")["state"], "notified");
}

#[test]
fn a_rate_limited_webhook_gets_one_digest_payload_per_interval_with_every_message_once() {
    let smtp = SmtpServer::start();
    let hooks = HookServer::start(&[]);
    let refused = free_port();
    let f = fixture(refused.port, &hooks.url);
    drop(smtp);
    let d = Daemon::start(&f);
    let notices = |from: usize, to: usize| {
        Value::Array(
            (from..to)
                .map(|i| json!({"kind": "lobby.announce", "branch": "br-a", "labels": {"n": i.to_string()}}))
                .collect(),
        )
        .to_string()
    };
    let (code, body) = d.post("/api/v1/events", &notices(0, 1));
    assert_eq!(code, 202, "{body}");
    wait_for(WAIT, "the first request", || {
        (!hooks.requests().is_empty()).then_some(())
    });
    for k in 0..3 {
        let (code, body) = d.post("/api/v1/events", &notices(1 + 10 * k, 11 + 10 * k));
        assert_eq!(code, 202, "{body}");
    }
    let ids = |h: &common::sinks::Hook| -> Vec<i64> {
        match h.body["schema"].as_str() {
            Some("branchguard.digest.v1") => h.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_i64().unwrap())
                .collect(),
            _ => vec![h.body["id"].as_i64().unwrap()],
        }
    };
    let got = wait_for(WAIT, "all 31 notices", || {
        let got = hooks.requests();
        (got.iter().map(|h| ids(h).len()).sum::<usize>() >= 31).then_some(got)
    });
    // 31 notices within a few seconds: a request now, then one digest per
    // interval — not 31 requests.
    assert!(got.len() <= 4, "{} requests", got.len());
    let digest = got
        .iter()
        .find(|h| h.body["schema"] == "branchguard.digest.v1")
        .expect("a digest payload");
    assert_eq!(
        digest.body["count"].as_u64().unwrap() as usize,
        ids(digest).len()
    );
    assert_eq!(digest.body["drill"], false);
    assert!(
        digest.body["items"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Notice ")),
        "{}",
        digest.body
    );
    assert!(
        digest
            .header("Idempotency-Key")
            .is_some_and(|k| k.starts_with("branchguard-digest-"))
    );
    let mut all: Vec<i64> = got.iter().flat_map(ids).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "no notice twice");
    assert_eq!(n, 31);
}
