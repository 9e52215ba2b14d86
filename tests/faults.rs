//! Faults during a storm, through the real binary: `kill -9` in the middle of
//! an ingest burst loses no event that got a 202, nor its incident; the mail
//! server down through a storm delivers each message once; a webhook receiver
//! that hangs delays neither email nor the other channels.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Daemon, Fixture, wait_for};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Posts 100 `atm.down` events, each a new incident, half at br-a and half
/// at br-b; asserts the 202 and returns its body.
fn post_atm_batch(d: &Daemon, batch: usize) -> Value {
    let events: Vec<Value> = (0..100)
        .map(|i| {
            let branch = if i % 2 == 0 { "br-a" } else { "br-b" };
            json!({"kind": "atm.down", "branch": branch, "labels": {"atm": format!("{batch}-{i}")}})
        })
        .collect();
    let (code, body) = d.post("/api/v1/events", &Value::Array(events).to_string());
    assert_eq!(code, 202, "{body}");
    body
}

#[test]
fn kill_9_in_the_middle_of_a_storm_loses_no_event_that_got_a_202() {
    let f = Fixture::engine();
    // Every ATM its own incident, one step for the on-duty engineer: the
    // regional-outage storm.
    f.write("playbooks/atm.yaml", common::ATM_PLAYBOOK);
    assert_eq!(f.run(&["check"]).code, 0);
    let d = Daemon::start(&f);
    let url = d.url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (url, stop, count) = (url.clone(), Arc::clone(&stop), Arc::clone(&count));
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                let mut got: Vec<(i64, i64)> = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let branch = if n % 2 == 0 { "br-a" } else { "br-b" };
                    let ev = json!({"kind": "atm.down", "branch": branch, "labels": {"atm": format!("{c}-{n}")}});
                    // Once the daemon is gone, requests fail: the burst is over.
                    let Ok(r) = http.post(format!("{url}/api/v1/events")).json(&ev).send() else {
                        break;
                    };
                    if r.status().as_u16() != 202 {
                        continue;
                    }
                    let Ok(body) = r.json::<Value>() else { break };
                    got.push((
                        body["events"][0].as_i64().unwrap(),
                        body["incidents"][0].as_i64().unwrap(),
                    ));
                    count.fetch_add(1, Ordering::SeqCst);
                }
                got
            })
        })
        .collect();
    wait_for(WAIT, "a few hundred events accepted", || {
        (count.load(Ordering::SeqCst) >= 300).then_some(())
    });
    // Mid-burst: the clients are still sending.
    d.kill9();
    stop.store(true, Ordering::SeqCst);
    let accepted: Vec<(i64, i64)> = clients
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(accepted.len() >= 300);

    let d = Daemon::start(&f);
    let stored = d.all_ids("/api/v1/events?kind=atm.down");
    let lost: Vec<i64> = accepted
        .iter()
        .map(|(e, _)| *e)
        .filter(|e| !stored.contains(e))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} accepted events lost: {lost:?}",
        lost.len(),
        accepted.len()
    );
    // Each accepted event opened its own incident, and each is there.
    let incidents: std::collections::BTreeSet<i64> = accepted.iter().map(|(_, i)| *i).collect();
    assert_eq!(incidents.len(), accepted.len());
    let listed = d.all_ids("/api/v1/incidents?playbook=atm");
    let missing: Vec<&i64> = incidents.iter().filter(|i| !listed.contains(i)).collect();
    assert!(missing.is_empty(), "incidents lost: {missing:?}");
}

#[test]
fn smtp_down_through_a_storm_of_a_thousand_incidents_delivers_each_mail_once_when_it_returns() {
    let f = Fixture::engine();
    let reserved = common::sinks::free_port();
    let smtp_port = reserved.port;
    f.set_notify(&format!(
        "notify:\n  email:\n    from: \"Branch Guard <guard@bank.example>\"\n    smtp: {{ host: 127.0.0.1, port: {smtp_port}, security: none, timeout: 5s }}\n  retry: {{ initial: 200ms, max: 1s, horizon: 1h }}\n  webhooks:\n    ops-centre: {{ url: \"http://127.0.0.1:9/hook\" }}\n"
    ));
    f.write("playbooks/atm.yaml", common::ATM_PLAYBOOK);
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    let d = Daemon::start(&f);
    let mut incidents = std::collections::BTreeSet::new();
    for batch in 0..10 {
        let body = post_atm_batch(&d, batch);
        incidents.extend(
            body["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap()),
        );
    }
    assert_eq!(incidents.len(), 1000);
    let metrics = || d.metrics();
    wait_for(
        WAIT,
        "attempts failing while the mail server is down",
        || {
            metrics()
                .contains("branchguard_notifications_total{channel=\"email\",outcome=\"retry\"}")
                .then_some(())
        },
    );
    let smtp = common::sinks::SmtpServer::start_on(reserved);
    wait_for(Duration::from_secs(90), "the backlog drained", || {
        metrics()
            .contains("\nbranchguard_outbox_pending 0\n")
            .then_some(())
    });
    // Every incident's message in exactly one mail, digests included: each
    // message in a digest carries its own incident link.
    let re = regex::Regex::new(r"/incidents/(\d+)").unwrap();
    let mut per_incident = std::collections::BTreeMap::<i64, usize>::new();
    let mails = smtp.mails();
    for m in &mails {
        let text = m.text();
        let ids: Vec<i64> = re
            .captures_iter(&text)
            .filter_map(|c| c[1].parse::<i64>().ok())
            .collect();
        assert!(!ids.is_empty(), "each mail names its incidents: {text}");
        for id in ids {
            *per_incident.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<_> = per_incident.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert_eq!(
        per_incident
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        incidents
    );
    // Two people (IT duty at br-a and br-b) had 500 messages each: digests,
    // not a thousand mails.
    assert!(mails.len() <= 40, "{} mails for two people", mails.len());
    // Links from a digest each work on their own: every 50th of them opens its page.
    let link = regex::Regex::new(r"http://127\.0\.0\.1:9700(/ack/[A-Za-z0-9_.-]+)").unwrap();
    let all: Vec<String> = mails
        .iter()
        .flat_map(|m| {
            link.captures_iter(&m.text())
                .map(|c| c[1].to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(all.len() >= 1000, "{} links", all.len());
    for path in all.iter().step_by(50) {
        let r = d.http.get(format!("{}{path}", d.url)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
}

#[test]
fn a_hanging_webhook_receiver_through_a_storm_delays_neither_email_nor_the_other_channel() {
    // A receiver that accepts every connection and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_url = format!("http://{}/announce", hang.local_addr().unwrap());
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let held = Arc::clone(&held);
        std::thread::spawn(move || {
            for s in hang.incoming().flatten() {
                held.lock().unwrap().push(s);
            }
        });
    }
    let smtp = common::sinks::SmtpServer::start();
    let smtp_port = smtp.port;
    let ops = common::sinks::HookServer::start(&[]);
    let f = Fixture::engine();
    f.set_notify(&format!(
        "notify:\n  digest: 1s\n  email:\n    from: \"Branch Guard <guard@bank.example>\"\n    smtp: {{ host: 127.0.0.1, port: {smtp_port}, security: none, timeout: 5s }}\n  webhooks:\n    lobby: {{ url: \"{hang_url}\", timeout: 60s }}\n    ops-centre: {{ url: \"{}\" }}\n",
        ops.url,
    ));
    f.write(
        "playbooks/atm.yaml",
        "id: atm\nname: ATM down\ntrigger: { kind: atm.down }\ngroup_by: [branch, atm]\nsteps:\n  - { id: fix, assignee: role:it-duty, deadline: 1h }\n  - { id: screen, action: { webhook: lobby, body: \"ATM {{labels.atm}} is out of order\" }, deadline: 1h }\n  - { id: tell, action: { webhook: ops-centre, body: \"ATM {{labels.atm}} down\" }, deadline: 1h }\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    let d = Daemon::start(&f);
    for batch in 0..5 {
        post_atm_batch(&d, batch);
    }
    // Every email and every ops-centre request arrives while the lobby
    // receiver holds its connections (its timeout, 60 s, is longer than this wait).
    wait_for(WAIT, "500 emails' worth of messages", || {
        (smtp.messages() >= 500).then_some(())
    });
    wait_for(WAIT, "500 ops-centre requests", || {
        (ops.requests().len() >= 500).then_some(())
    });
    assert_eq!(smtp.messages(), 500);
    assert_eq!(ops.requests().len(), 500);
    // The lobby lane holds at most its in-flight bound (default 8) and has
    // delivered nothing.
    let lobby = held.lock().unwrap().len();
    assert!(
        (1..=8).contains(&lobby),
        "{lobby} connections to the hanging receiver"
    );
    // The receivers have the last messages a moment before the daemon
    // records them sent: wait for the count to come down, then check it.
    let pending = wait_for(WAIT, "the delivered rows recorded", || {
        let m = d.metrics();
        let n: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix("branchguard_outbox_pending "))?
            .parse()
            .ok()?;
        (n <= 500).then_some(n)
    });
    assert_eq!(pending, 500, "the 500 lobby messages are still pending");
}
