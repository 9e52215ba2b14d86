//! PostgreSQL restarted under load, with a real leader and a real server
//! restart (`BRANCHGUARD_TEST_POSTGRES_CTL`, from `.ci/postgres`). Its own
//! test binary: the shared test server goes away for a moment, and cargo
//! runs test binaries one at a time.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use branchguard::store::pg_testing::Database;
use common::{Daemon, Fixture, wait_for};
use serde_json::{Value, json};

const KEY: &str = "6363636363636363636363636363636363636363636363636363636363636363";
const WAIT: Duration = Duration::from_secs(60);

fn ctl(action: &str) {
    let ctl = std::env::var("BRANCHGUARD_TEST_POSTGRES_CTL").unwrap_or_else(|_| {
        panic!("BRANCHGUARD_TEST_POSTGRES_CTL is not set: start the test server with `eval \"$(bash .ci/postgres)\"`")
    });
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{ctl} {action}"))
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl {action}");
}

#[test]
fn postgres_restarted_under_load_loses_no_accepted_event_and_answers_503_meanwhile() {
    let db = Database::create();
    let f = Fixture::engine();
    f.write("playbooks/atm.yaml", common::ATM_PLAYBOOK);
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write(
        "branchguard.yaml",
        &format!(
            "{cfg}\nstore:\n  postgres: {{ url_env: BG_DATABASE_URL }}\nha:\n  node: bg-a\n  lease: 20s\n"
        ),
    );
    let env = [
        ("BG_DATABASE_URL", db.url()),
        ("BRANCHGUARD_AUDIT_KEY", KEY),
        (
            "BRANCHGUARD_LINK_SECRET",
            "a-link-secret-for-the-restart-test-01",
        ),
    ];
    let d = Daemon::start_with_env(&f, &env);
    wait_for(WAIT, "the node to lead", || {
        (d.get("/api/v1/status")["ha"]["role"] == "leader").then_some(())
    });
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let url = d.url.clone();
            let (stop, accepted, refused) =
                (Arc::clone(&stop), Arc::clone(&accepted), Arc::clone(&refused));
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut got = Vec::new();
                let mut other = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let ev = json!({"kind": "atm.down", "branch": "br-a", "labels": {"atm": format!("{c}-{n}")}});
                    match http.post(format!("{url}/api/v1/events")).json(&ev).send() {
                        Ok(r) if r.status().as_u16() == 202 => {
                            let body: Value = r.json().unwrap();
                            got.push(body["events"][0].as_i64().unwrap());
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) if r.status().as_u16() == 503 => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            // A client backs off after a 503 before it tries
                            // again (pacing the load, not waiting on a state).
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Ok(r) => other.push(format!("{}", r.status())),
                        Err(e) => other.push(format!("{e}")),
                    }
                }
                (got, other)
            })
        })
        .collect();
    wait_for(WAIT, "events flowing", || {
        (accepted.load(Ordering::SeqCst) >= 100).then_some(())
    });
    ctl("restart -m fast -w");
    let at_restart = accepted.load(Ordering::SeqCst);
    wait_for(WAIT, "events accepted again after the restart", || {
        (accepted.load(Ordering::SeqCst) >= at_restart + 100).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let mut ids = Vec::new();
    let mut others = Vec::new();
    for t in clients {
        let (got, other) = t.join().unwrap();
        ids.extend(got);
        others.extend(other);
    }
    eprintln!(
        "accepted {}, answered 503 {} times during the restart",
        ids.len(),
        refused.load(Ordering::SeqCst)
    );
    assert!(
        others.is_empty(),
        "neither timeouts nor other answers: {others:?}"
    );
    let stored = wait_for(WAIT, "the event list", || {
        let r = reqwest::blocking::get(format!("{}/api/v1/events?limit=1", d.url)).ok()?;
        (r.status().as_u16() == 200).then(|| d.all_ids("/api/v1/events?kind=atm.down"))
    });
    let lost: Vec<&i64> = ids.iter().filter(|e| !stored.contains(e)).collect();
    assert!(
        lost.is_empty(),
        "{} accepted events lost: {lost:?}",
        lost.len()
    );
    assert_eq!(d.get("/api/v1/status")["ha"]["role"], "leader");
    d.stop();
    let v = f.run_env(&["audit", "verify"], &env);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
}
