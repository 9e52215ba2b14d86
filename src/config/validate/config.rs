//! `branchguard.yaml` itself: addresses, calendar, branches, people,
//! notification channels, host thresholds, tokens and engine settings, each
//! section checked by its own function.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use chrono_tz::Tz;

use sha2::{Digest, Sha256};

use super::channels::Notify;
use super::*;
use crate::duration::{Calendar, parse_weekday};

pub(super) fn compile_config(
    file: &str,
    base: &Path,
    raw: ConfigFile,
    diags: &mut Diagnostics,
) -> Config {
    let rel = |p: Option<String>, default: &str| -> PathBuf {
        let p = PathBuf::from(p.unwrap_or_else(|| default.to_string()));
        if p.is_absolute() { p } else { base.join(p) }
    };
    let (listen, public_url) = addresses(file, &raw, diags);
    let calendar = calendar(file, &raw, diags);
    let branch_ids: BTreeSet<String> = raw.branches.iter().map(|b| b.id.value.clone()).collect();
    let branches = branches::branches(file, &raw, &branch_ids, diags);
    let people = people(file, &raw, &branch_ids, diags);
    let Notify {
        email,
        webhooks,
        delivery,
        ops_channel,
    } = channels::notify(file, &raw, diags);
    let contacts = channels::contacts(file, &raw, &branch_ids, &people, &webhooks, diags);
    let away = raw
        .people
        .iter()
        .map(|p| (p.id.value.clone(), away(file, p, calendar.timezone, diags)))
        .filter(|(_, spans)| !spans.is_empty())
        .collect();
    let host = host(file, &raw, &branch_ids, diags);
    let limits = limits(file, &raw, diags);
    let auth = auth(file, &raw, &branch_ids, &people, &limits, diags);
    let tls = tls(base, &raw, file, diags);
    let maintenance = branches::maintenance(file, &raw, &branch_ids, diags);
    // `check` refuses what `run` would: without tokens every request is
    // allowed, so only this machine may reach the daemon.
    if let Some(v) = &raw.listen
        && !listen.ip().is_loopback()
        && auth.tokens.is_empty()
    {
        diags.at_value(
            file,
            v,
            format!(
                "listen: {listen} is not a loopback address, and no API tokens are configured: without `auth.tokens` every request is allowed, so branchguard listens on loopback addresses only (127.0.0.1 or [::1])"
            ),
        );
    }
    // Loopback alone does not keep strangers out: a proxy on this machine
    // (as SECURITY.md suggests for TLS) makes every client it serves local.
    if let Some(v) = &raw.public_url
        && auth.tokens.is_empty()
        && !names_this_machine(&v.value)
    {
        diags.warn_at_value(
            file,
            v,
            format!(
                "public_url: {} is not this machine, and no API tokens are configured: every request to branchguard is allowed, so a proxy here that forwards to it would give every client it serves full rights; configure `auth.tokens`",
                v.value
            ),
        );
    }
    let engine = engine(file, &raw, diags);
    let data_dir = rel(raw.data_dir.clone(), "data");
    let audit = audit(file, base, &data_dir, &raw, diags);
    let store = store(file, &data_dir, raw.store.as_ref(), diags);
    let ha = ha(file, &raw, &store, diags);
    Config {
        file: PathBuf::from(file),
        listen,
        public_url,
        data_dir,
        playbooks_dir: rel(raw.playbooks_dir.map(|s| s.value), "playbooks"),
        drills_dir: rel(raw.drills_dir.map(|s| s.value), "drills"),
        rosters_dir: rel(raw.rosters_dir.map(|s| s.value), "rosters"),
        spool_dir: rel(raw.spool_dir, "spool"),
        watch_files: raw.watch_files.unwrap_or(true),
        calendar,
        email,
        webhooks,
        ops_channel,
        roster: roster(&people),
        away,
        people,
        contacts,
        branches,
        host,
        auth,
        limits,
        tls,
        maintenance,
        engine,
        delivery,
        audit,
        store,
        ha,
    }
}

/// Whether a URL's host is this machine (loopback, or `localhost`).
fn names_this_machine(url: &str) -> bool {
    // By hand: loading touches no network library (tests/architecture.rs).
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        // Not an http(s) URL is said on its own.
        return true;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit('@').next().unwrap_or_default();
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => hostport.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn addresses(file: &str, raw: &ConfigFile, diags: &mut Diagnostics) -> (SocketAddr, String) {
    let listen = match &raw.listen {
        Some(v) => v.value.parse::<SocketAddr>().unwrap_or_else(|_| {
            diags.at_value(
                file,
                v,
                format!(
                    "listen: invalid address `{}`: expected IP:PORT such as 127.0.0.1:9700",
                    v.value
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 9700))
        }),
        None => SocketAddr::from(([127, 0, 0, 1], 9700)),
    };
    let public_url = match &raw.public_url {
        Some(v) if !(v.value.starts_with("http://") || v.value.starts_with("https://")) => {
            diags.at_value(
                file,
                v,
                format!("public_url: `{}` is not an http(s) URL", v.value),
            );
            v.value.clone()
        }
        Some(v) => v.value.trim_end_matches('/').to_string(),
        None => format!("http://{listen}"),
    };
    (listen, public_url)
}

fn calendar(file: &str, raw: &ConfigFile, diags: &mut Diagnostics) -> Calendar {
    let timezone = match &raw.timezone {
        Some(v) => zone(file, v, diags).unwrap_or(Tz::UTC),
        None => Tz::UTC,
    };
    let mut calendar = Calendar {
        timezone,
        ..Calendar::default()
    };
    if let Some(c) = &raw.calendar {
        calendar.weekend = c
            .weekend
            .iter()
            .filter_map(|d| {
                parse_weekday(&d.value)
                    .map_err(|e| diags.at_value(file, d, format!("calendar.weekend: {e}")))
                    .ok()
            })
            .collect();
        calendar.holidays = c
            .holidays
            .iter()
            .filter_map(|d| {
                NaiveDate::parse_from_str(&d.value, "%Y-%m-%d")
                    .map_err(|_| {
                        diags.at_value(
                            file,
                            d,
                            format!(
                                "calendar.holidays: invalid date `{}`: expected YYYY-MM-DD",
                                d.value
                            ),
                        )
                    })
                    .ok()
            })
            .collect();
    }
    calendar
}

fn people(
    file: &str,
    raw: &ConfigFile,
    branch_ids: &BTreeSet<String>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Person> {
    let mut people: BTreeMap<String, Person> = BTreeMap::new();
    for p in &raw.people {
        if people.contains_key(&p.id.value) {
            diags.at_value(file, &p.id, format!("duplicate person id `{}`", p.id.value));
            continue;
        }
        if let Some(e) = &p.email
            && !looks_like_email(&e.value)
        {
            diags.at_value(
                file,
                e,
                format!("email: `{}` is not an email address", e.value),
            );
        }
        for b in &p.branches {
            if !branch_ids.contains(&b.value) {
                diags.at_value(
                    file,
                    b,
                    format!(
                        "people.branches: unknown branch `{}` for person `{}`",
                        b.value, p.id.value
                    ),
                );
            }
        }
        people.insert(
            p.id.value.clone(),
            Person {
                id: p.id.value.clone(),
                name: p.name.clone(),
                email: p.email.as_ref().map(|e| e.value.clone()),
                roles: p.roles.iter().map(|r| r.value.clone()).collect(),
                branches: p.branches.iter().map(|b| b.value.clone()).collect(),
            },
        );
    }
    people
}

/// A person's leave in the bank's time zone: a date `to` means to the end of
/// that day, as people say "away until the 26th".
fn away(
    file: &str,
    p: &PersonFile,
    tz: chrono_tz::Tz,
    diags: &mut Diagnostics,
) -> Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let mut out = Vec::new();
    for a in &p.away {
        let at = |v: &S, end: bool, diags: &mut Diagnostics| match crate::roster::parse_local(
            &v.value,
        ) {
            Ok(t) => {
                let date_only = !v.value.contains('T');
                let t = if end && date_only {
                    t + chrono::Duration::days(1)
                } else {
                    t
                };
                Some(crate::roster::to_utc(tz, t))
            }
            Err(e) => {
                diags.at_value(file, v, format!("people.away: {e}"));
                None
            }
        };
        if let (Some(f), Some(t)) = (at(&a.from, false, diags), at(&a.to, true, diags)) {
            if t <= f {
                diags.at_value(
                    file,
                    &a.to,
                    format!(
                        "people.away: `to` ({}) is not after `from` ({})",
                        a.to.value, a.from.value
                    ),
                );
            } else {
                out.push((f, t));
            }
        }
    }
    out
}

fn host(
    file: &str,
    raw: &ConfigFile,
    branch_ids: &BTreeSet<String>,
    diags: &mut Diagnostics,
) -> HostConfig {
    let Some(h) = &raw.host else {
        return HostConfig {
            interval: Duration::from_secs(15),
            disk_free_min_ratio: 0.10,
            memory_used_max_ratio: 0.90,
            cpu_used_max_ratio: 1.0,
            branch: None,
        };
    };
    if let Some(b) = &h.branch
        && !branch_ids.contains(&b.value)
    {
        diags.at_value(
            file,
            b,
            format!("host.branch: unknown branch `{}`", b.value),
        );
    }
    HostConfig {
        interval: opt_fixed(
            file,
            &h.interval,
            "host.interval",
            Duration::from_secs(15),
            diags,
        ),
        disk_free_min_ratio: percent(file, &h.disk_free_min, "host.disk_free_min", 0.10, diags),
        memory_used_max_ratio: percent(
            file,
            &h.memory_used_max,
            "host.memory_used_max",
            0.90,
            diags,
        ),
        cpu_used_max_ratio: percent(file, &h.cpu_used_max, "host.cpu_used_max", 1.0, diags),
        branch: h.branch.as_ref().map(|b| b.value.clone()),
    }
}

fn auth(
    file: &str,
    raw: &ConfigFile,
    branch_ids: &BTreeSet<String>,
    people: &BTreeMap<String, Person>,
    limits: &Limits,
    diags: &mut Diagnostics,
) -> AuthConfig {
    let mut tokens = Vec::new();
    let mut names = BTreeSet::new();
    for t in raw.auth.iter().flat_map(|a| a.tokens.iter()) {
        if !names.insert(t.name.value.clone()) {
            diags.at_value(
                file,
                &t.name,
                format!("duplicate token name `{}`", t.name.value),
            );
        }
        let role = match t.role.value.as_str() {
            "admin" => TokenRole::Admin,
            "ops" => TokenRole::Ops,
            "branch-head" => TokenRole::BranchHead,
            "staff" => TokenRole::Staff,
            "ingest" => TokenRole::Ingest,
            "viewer" => TokenRole::Viewer,
            other => {
                diags.at_value(file, &t.role, format!("auth.tokens.role: unknown role `{other}`: expected admin, ops, branch-head, staff, ingest or viewer"));
                TokenRole::Viewer
            }
        };
        for b in &t.branches {
            if !branch_ids.contains(&b.value) {
                diags.at_value(
                    file,
                    b,
                    format!("auth.tokens.branches: unknown branch `{}`", b.value),
                );
            }
        }
        let person = t.person.as_ref().and_then(|p| match people.get(&p.value) {
            Some(x) => Some(x),
            None => {
                diags.at_value(
                    file,
                    p,
                    format!("auth.tokens.person: unknown person `{}`", p.value),
                );
                None
            }
        });
        // A head's or a staff member's branches default to their person's.
        let mut branches: Vec<String> = t.branches.iter().map(|b| b.value.clone()).collect();
        if branches.is_empty()
            && matches!(role, TokenRole::BranchHead | TokenRole::Staff)
            && let Some(p) = person
        {
            branches = p.branches.iter().cloned().collect();
        }
        if matches!(role, TokenRole::BranchHead | TokenRole::Staff) && branches.is_empty() {
            diags.at_value(
                file,
                &t.role,
                format!(
                    "auth token `{}`: a {} token needs `branches` (or a `person` whose branches it takes)",
                    t.name.value,
                    role.as_str()
                ),
            );
        }
        if role == TokenRole::Staff && t.person.is_none() {
            diags.at_value(
                file,
                &t.role,
                format!(
                    "auth token `{}`: a staff token names its `person`: their actions are recorded as that person's",
                    t.name.value
                ),
            );
        }
        let sha256 = match (&t.token_env, &t.token_sha256) {
            (Some(var), None) => match std::env::var(var) {
                Ok(v) if v.len() >= 16 => Some(Sha256::digest(v.as_bytes()).into()),
                Ok(_) => {
                    diags.at_value(
                        file,
                        &t.name,
                        format!(
                            "auth token `{}`: the token in {var} is shorter than 16 characters",
                            t.name.value
                        ),
                    );
                    None
                }
                Err(_) => {
                    diags.at_value(
                        file,
                        &t.name,
                        format!("auth token `{}`: the environment variable {var} (token_env) is not set", t.name.value),
                    );
                    None
                }
            },
            (None, Some(h)) => {
                let bytes = hex::decode(h.value.trim()).ok().filter(|b| b.len() == 32);
                match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                    Some(b) => Some(b),
                    None => {
                        diags.at_value(
                            file,
                            h,
                            "auth.tokens.token_sha256: expected 64 hexadecimal characters (the SHA-256 of the token)",
                        );
                        None
                    }
                }
            }
            _ => {
                diags.at_value(
                    file,
                    &t.name,
                    format!(
                        "auth token `{}`: give exactly one of `token_env` or `token_sha256`",
                        t.name.value
                    ),
                );
                None
            }
        };
        if let Some(sha256) = sha256 {
            let default_rate = if role == TokenRole::Ingest {
                INGEST_RATE
            } else {
                limits.requests_per_second
            };
            let rate = match &t.rate {
                Some(r) if r.value == 0 => {
                    diags.at_value(
                        file,
                        r,
                        "auth.tokens.rate: must be at least 1 request per second",
                    );
                    default_rate
                }
                Some(r) => u32::try_from(r.value).unwrap_or(u32::MAX),
                None => default_rate,
            };
            tokens.push(TokenConfig {
                name: t.name.value.clone(),
                role,
                branches,
                person: t.person.as_ref().map(|p| p.value.clone()),
                sha256,
                rate,
            });
        }
    }
    AuthConfig {
        tokens,
        open_metrics: raw
            .auth
            .as_ref()
            .and_then(|a| a.open_metrics)
            .unwrap_or(true),
        open_healthz: raw
            .auth
            .as_ref()
            .and_then(|a| a.open_healthz)
            .unwrap_or(true),
    }
}

fn limits(file: &str, raw: &ConfigFile, diags: &mut Diagnostics) -> Limits {
    let d = Limits::default();
    let Some(l) = &raw.limits else { return d };
    let mut at_least_1 = |v: &Option<S<usize>>, field: &str, default: usize| {
        positive(file, v, &format!("limits.{field}"), default, diags)
    };
    Limits {
        body_bytes: at_least_1(&l.body_bytes, "body_bytes", d.body_bytes),
        events_per_request: at_least_1(
            &l.events_per_request,
            "events_per_request",
            d.events_per_request,
        ),
        labels_per_event: l.labels_per_event.unwrap_or(d.labels_per_event),
        label_bytes: at_least_1(&l.label_bytes, "label_bytes", d.label_bytes),
        summary_bytes: at_least_1(&l.summary_bytes, "summary_bytes", d.summary_bytes),
        requests_per_second: u32::try_from(at_least_1(
            &l.requests_per_second,
            "requests_per_second",
            d.requests_per_second as usize,
        ))
        .unwrap_or(u32::MAX),
        burst: u32::try_from(at_least_1(&l.burst, "burst", d.burst as usize)).unwrap_or(u32::MAX),
        denied_per_second: u32::try_from(at_least_1(
            &l.denied_per_second,
            "denied_per_second",
            d.denied_per_second as usize,
        ))
        .unwrap_or(u32::MAX),
        denied_burst: u32::try_from(at_least_1(
            &l.denied_burst,
            "denied_burst",
            d.denied_burst as usize,
        ))
        .unwrap_or(u32::MAX),
        connections: at_least_1(&l.connections, "connections", d.connections),
        request_timeout: opt_fixed(
            file,
            &l.request_timeout,
            "limits.request_timeout",
            d.request_timeout,
            diags,
        ),
        header_timeout: opt_fixed(
            file,
            &l.header_timeout,
            "limits.header_timeout",
            d.header_timeout,
            diags,
        ),
        silence_max: opt_fixed(
            file,
            &l.silence_max,
            "limits.silence_max",
            d.silence_max,
            diags,
        ),
    }
}

fn tls(base: &Path, raw: &ConfigFile, file: &str, diags: &mut Diagnostics) -> Option<TlsConfig> {
    let t = raw.tls.as_ref()?;
    let rel = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base.join(p) }
    };
    let (cert, key) = (rel(&t.cert.value), rel(&t.key.value));
    for (v, p, what) in [(&t.cert, &cert, "tls.cert"), (&t.key, &key, "tls.key")] {
        if !p.is_file() {
            diags.at_value(
                file,
                v,
                format!("{what}: {} is not a readable file", p.display()),
            );
        }
    }
    Some(TlsConfig { cert, key })
}

fn engine(file: &str, raw: &ConfigFile, diags: &mut Diagnostics) -> EngineConfig {
    EngineConfig {
        command_timeout: raw.engine.as_ref().map_or(Duration::from_secs(600), |e| {
            opt_fixed(
                file,
                &e.command_timeout,
                "engine.command_timeout",
                Duration::from_secs(600),
                diags,
            )
        }),
        max_batch: raw.engine.as_ref().map_or(1000, |e| {
            positive(file, &e.max_batch, "engine.max_batch", 1000, diags)
        }),
        queue: raw.engine.as_ref().map_or(QUEUE, |e| {
            positive(file, &e.queue, "engine.queue", QUEUE, diags)
        }),
    }
}

/// SQLite in `data_dir`, or the PostgreSQL database whose URL the variable
/// `store.postgres.url_env` holds (read now: a daemon started without it
/// would otherwise fail at its first commit).
pub(super) fn store(
    file: &str,
    data_dir: &Path,
    raw: Option<&crate::config::files::StoreFile>,
    diags: &mut Diagnostics,
) -> crate::config::Database {
    let embedded = crate::config::Database::Embedded(data_dir.to_path_buf());
    let Some(pg) = raw.and_then(|s| s.postgres.as_ref()) else {
        return embedded;
    };
    let var = &pg.url_env;
    match std::env::var(&var.value) {
        Ok(url) if !url.trim().is_empty() => match crate::config::Database::postgres(url.trim()) {
            Ok(l) => l,
            Err(why) => {
                // The URL carries a password: never quoted.
                diags.at_value(
                    file,
                    var,
                    format!(
                        "store.postgres.url_env: the URL in {} cannot be used: {why}",
                        var.value
                    ),
                );
                embedded
            }
        },
        _ => {
            diags.at_value(
                file,
                var,
                format!(
                    "store.postgres.url_env: the environment variable {} is not set (it holds the database's URL, e.g. postgres://branchguard:PASSWORD@db.bank.internal:5432/branchguard)",
                    var.value
                ),
            );
            embedded
        }
    }
}

/// Active/standby needs the shared database; a lease between 3 s (renewed
/// every second) and 5 minutes (a dead leader's deadlines wait that long).
fn ha(
    file: &str,
    raw: &ConfigFile,
    store: &crate::config::Database,
    diags: &mut Diagnostics,
) -> Option<crate::config::HaConfig> {
    const LEASE: Duration = Duration::from_secs(12);
    let h = raw.ha.as_ref()?;
    let ok_name = !h.node.value.is_empty()
        && h.node.value.len() <= 64
        && h.node
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok_name {
        diags.at_value(
            file,
            &h.node,
            "ha.node: expected a name of letters, digits, `-`, `_` or `.` (at most 64), unique in the group",
        );
    }
    // A `store.postgres` whose URL was refused is said there, not again here.
    let named = raw.store.as_ref().is_some_and(|s| s.postgres.is_some());
    if matches!(store, crate::config::Database::Embedded(_)) && !named {
        diags.at_value(
            file,
            &h.node,
            "ha: active/standby needs a database the daemons share: set store.postgres (SQLite in data_dir is one machine's)",
        );
    }
    let lease = opt_fixed(file, &h.lease, "ha.lease", LEASE, diags);
    if let Some(v) = &h.lease
        && !(Duration::from_secs(3)..=Duration::from_secs(300)).contains(&lease)
    {
        diags.at_value(file, v, "ha.lease: expected between 3s and 5m");
    }
    Some(crate::config::HaConfig {
        node: h.node.value.clone(),
        lease,
    })
}

/// Events waiting for the engine at most: a hundred full rounds.
const QUEUE: usize = 100_000;

/// The audit key's file (relative to the config's directory) and the chain
/// head's publishing interval, at most ten minutes.
fn audit(
    file: &str,
    base: &Path,
    data_dir: &Path,
    raw: &ConfigFile,
    diags: &mut Diagnostics,
) -> AuditConfig {
    const MOST: Duration = Duration::from_secs(600);
    let a = raw.audit.as_ref();
    let key_file = a
        .and_then(|a| a.key_file.as_deref())
        .map(|p| {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { base.join(p) }
        })
        .unwrap_or_else(|| data_dir.join("audit.key"));
    let every = a.map_or(MOST, |a| {
        opt_fixed(file, &a.anchor_every, "audit.anchor_every", MOST, diags)
    });
    if let Some(v) = a.and_then(|a| a.anchor_every.as_ref())
        && every > MOST
    {
        diags.at_value(
            file,
            v,
            "audit.anchor_every: at most 10m (the chain head is published at least every ten minutes)",
        );
    }
    AuditConfig {
        key_file,
        anchor_every: every.min(MOST),
    }
}

#[cfg(test)]
mod this_machine_tests {
    #[test]
    fn a_url_names_this_machine_by_loopback_or_localhost() {
        for (url, here) in [
            ("http://127.0.0.1:9700", true),
            ("http://localhost:9700/x", true),
            ("https://[::1]:9700", true),
            ("http://user:pw@127.0.0.2/", true),
            ("https://guard.bank.example", false),
            ("http://10.0.0.5:9700", false),
            ("http://127.0.0.1.evil.example", false),
            ("https://[2001:db8::1]/", false),
        ] {
            assert_eq!(super::names_this_machine(url), here, "{url}");
        }
    }
}
