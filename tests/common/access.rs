//! API tokens and one-click links for tests: a token's secret is
//! `secret-<name>-0123456789`, configured by its SHA-256 as the daemon
//! wants it; links are signed with the daemon's own secret, read off its
//! data directory (as an attacker with that file could).

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Daemon, Fixture};

pub fn secret(name: &str) -> String {
    format!("secret-{name}-0123456789")
}

/// Adds `auth.tokens` to the fixture's configuration: (name, role, extra
/// fields such as `, person: it.a`).
pub fn add_tokens(f: &Fixture, tokens: &[(&str, &str, &str)]) {
    let mut auth = String::from("auth:\n  tokens:\n");
    for (name, role, more) in tokens {
        let hash = hex::encode(Sha256::digest(secret(name).as_bytes()));
        auth.push_str(&format!(
            "    - {{ name: {name}, role: {role}, token_sha256: \"{hash}\"{more} }}\n"
        ));
    }
    let cfg = std::fs::read_to_string(f.path("branchguard.yaml")).unwrap();
    f.write("branchguard.yaml", &format!("{cfg}{auth}"));
}

/// A request with the named token (or none): status and JSON body.
pub fn call(d: &Daemon, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let url = format!("{}{path}", d.url);
    let mut r = match method {
        "GET" => d.http.get(url),
        _ => d
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string()),
    };
    if let Some(t) = token {
        r = r.bearer_auth(secret(t));
    }
    let r = r.send().expect("request");
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

/// A one-click link token for `action` on a step, signed with the daemon's
/// secret, valid until `expires` (Unix seconds).
pub fn sign_link(
    f: &Fixture,
    incident: i64,
    step: &str,
    person: &str,
    action: branchguard::engine::LinkAction,
    expires: i64,
) -> String {
    let hexed = std::fs::read_to_string(f.path("data/link-secret")).unwrap();
    let key = branchguard::notify::links::Secret::from_bytes(&hex::decode(hexed.trim()).unwrap());
    key.sign(&branchguard::notify::links::Claims {
        incident,
        step: step.into(),
        person: person.into(),
        action,
        expires,
    })
}

/// An hour from now, for a link.
pub fn in_an_hour() -> i64 {
    (branchguard::clock::now() + chrono::Duration::hours(1)).timestamp()
}
