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

use super::*;
use crate::duration::{Calendar, parse_weekday};

/// The operations centre's channel when `notify.ops_channel` is not set.
const DEFAULT_OPS_CHANNEL: &str = "ops-centre";

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
    let branches = branches(file, &raw, &branch_ids, diags);
    let people = people(file, &raw, &branch_ids, diags);
    let Notify {
        email,
        webhooks,
        delivery,
        ops_channel,
    } = notify(file, &raw, diags);
    let host = host(file, &raw, &branch_ids, diags);
    let auth = auth(file, &raw, &branch_ids, &people, diags);
    let limits = limits(file, &raw, diags);
    let tls = tls(base, &raw, file, diags);
    let maintenance = maintenance(file, &raw, &branch_ids, diags);
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
    let engine = engine(file, &raw, diags);
    Config {
        file: PathBuf::from(file),
        listen,
        public_url,
        data_dir: rel(raw.data_dir, "data"),
        playbooks_dir: rel(raw.playbooks_dir.map(|s| s.value), "playbooks"),
        drills_dir: rel(raw.drills_dir.map(|s| s.value), "drills"),
        spool_dir: rel(raw.spool_dir, "spool"),
        watch_files: raw.watch_files.unwrap_or(true),
        calendar,
        email,
        webhooks,
        ops_channel,
        roster: roster(&people),
        people,
        branches,
        host,
        auth,
        limits,
        tls,
        maintenance,
        engine,
        delivery,
    }
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
        Some(v) => v.value.parse::<Tz>().unwrap_or_else(|_| {
            diags.at_value(
                file,
                v,
                format!(
                    "timezone: unknown time zone `{}`: expected an IANA name such as Asia/Shanghai",
                    v.value
                ),
            );
            Tz::UTC
        }),
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

/// Branches come first: people, neighbours and tokens refer to them.
fn branches(
    file: &str,
    raw: &ConfigFile,
    branch_ids: &BTreeSet<String>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Branch> {
    let mut branches: BTreeMap<String, Branch> = BTreeMap::new();
    for b in &raw.branches {
        if b.id.value.trim().is_empty() {
            diags.at_value(file, &b.id, "branches.id: must not be empty");
        }
        if branches.contains_key(&b.id.value) {
            diags.at_value(file, &b.id, format!("duplicate branch id `{}`", b.id.value));
            continue;
        }
        let branch_tz = b.timezone.as_ref().and_then(|tz| {
            tz.value
                .parse::<Tz>()
                .map_err(|_| {
                    diags.at_value(
                        file,
                        tz,
                        format!("timezone: unknown time zone `{}`", tz.value),
                    )
                })
                .ok()
        });
        for n in &b.neighbours {
            if !branch_ids.contains(&n.value) {
                diags.at_value(file, n, format!("neighbours: unknown branch `{}`", n.value));
            } else if n.value == b.id.value {
                diags.at_value(
                    file,
                    n,
                    format!(
                        "neighbours: branch `{}` cannot be its own neighbour",
                        n.value
                    ),
                );
            }
        }
        let mut systems = Vec::new();
        let mut names = BTreeSet::new();
        for s in &b.systems {
            if !names.insert(s.name.value.clone()) {
                diags.at_value(
                    file,
                    &s.name,
                    format!(
                        "duplicate system `{}` in branch `{}`",
                        s.name.value, b.id.value
                    ),
                );
            }
            let probe = s.probe.as_ref().map(|p| probe(file, &s.name, p, diags));
            systems.push(SystemConfig {
                name: s.name.value.clone(),
                probe,
            });
        }
        branches.insert(
            b.id.value.clone(),
            Branch {
                id: b.id.value.clone(),
                name: b.name.clone(),
                region: b.region.clone(),
                timezone: branch_tz,
                neighbours: b.neighbours.iter().map(|n| n.value.clone()).collect(),
                systems,
            },
        );
    }
    branches
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

struct Notify {
    email: Option<EmailConfig>,
    webhooks: BTreeMap<String, WebhookConfig>,
    delivery: DeliveryConfig,
    ops_channel: Option<String>,
}

fn notify(file: &str, raw: &ConfigFile, diags: &mut Diagnostics) -> Notify {
    let mut webhooks = BTreeMap::new();
    let mut email = None;
    let mut delivery = DeliveryConfig {
        retry_initial: Duration::from_secs(5),
        retry_max: Duration::from_secs(300),
        horizon: Duration::from_secs(24 * 3600),
        warn_after: Duration::from_secs(5 * 60),
        link_ttl: Duration::from_secs(72 * 3600),
        link_margin: Duration::from_secs(24 * 3600),
        in_flight: 8,
        digest: Duration::from_secs(30),
    };
    if let Some(n) = &raw.notify {
        delivery.in_flight = positive(
            file,
            &n.in_flight,
            "notify.in_flight",
            delivery.in_flight,
            diags,
        );
        delivery.digest = window(file, &n.digest, "notify.digest", delivery.digest, diags);
        if let Some(r) = &n.retry {
            delivery.retry_initial = opt_fixed(
                file,
                &r.initial,
                "notify.retry.initial",
                delivery.retry_initial,
                diags,
            );
            delivery.retry_max =
                opt_fixed(file, &r.max, "notify.retry.max", delivery.retry_max, diags);
            delivery.horizon = opt_fixed(
                file,
                &r.horizon,
                "notify.retry.horizon",
                delivery.horizon,
                diags,
            );
            delivery.warn_after = opt_fixed(
                file,
                &r.warn_after,
                "notify.retry.warn_after",
                delivery.warn_after,
                diags,
            );
            if delivery.retry_max < delivery.retry_initial
                && let Some(m) = &r.max
            {
                diags.at_value(
                    file,
                    m,
                    "notify.retry.max: must not be shorter than notify.retry.initial",
                );
            }
        }
        if let Some(l) = &n.links {
            delivery.link_ttl =
                opt_fixed(file, &l.ttl, "notify.links.ttl", delivery.link_ttl, diags);
            delivery.link_margin = opt_fixed(
                file,
                &l.margin,
                "notify.links.margin",
                delivery.link_margin,
                diags,
            );
        }
        if let Some(e) = &n.email {
            if !e.from.value.contains('@') {
                diags.at_value(
                    file,
                    &e.from,
                    format!(
                        "notify.email.from: `{}` is not an email address",
                        e.from.value
                    ),
                );
            }
            email = Some(EmailConfig {
                from: e.from.value.clone(),
                smtp: e.smtp.as_ref().map(|s| SmtpConfig {
                    host: s.host.clone(),
                    port: s.port.unwrap_or(match s.security {
                        SmtpSecurity::None => 25,
                        SmtpSecurity::Starttls => 587,
                        SmtpSecurity::Tls => 465,
                    }),
                    security: s.security,
                    username: s.username.clone(),
                    password_env: s.password_env.clone(),
                    timeout: opt_fixed(
                        file,
                        &s.timeout,
                        "notify.email.smtp.timeout",
                        Duration::from_secs(30),
                        diags,
                    ),
                }),
            });
        }
        for (name, w) in &n.webhooks {
            if !(w.url.value.starts_with("http://") || w.url.value.starts_with("https://")) {
                diags.at_value(
                    file,
                    &w.url,
                    format!(
                        "notify.webhooks.{name}.url: `{}` is not an http(s) URL",
                        w.url.value
                    ),
                );
            }
            webhooks.insert(
                name.clone(),
                WebhookConfig {
                    url: w.url.value.clone(),
                    headers: w.headers.clone(),
                    timeout: opt_fixed(file, &w.timeout, "timeout", Duration::from_secs(10), diags),
                    min_interval: Some(window(
                        file,
                        &w.min_interval,
                        &format!("notify.webhooks.{name}.min_interval"),
                        Duration::ZERO,
                        diags,
                    ))
                    .filter(|d| !d.is_zero()),
                },
            );
        }
    }
    let ops_channel = match raw.notify.as_ref().and_then(|n| n.ops_channel.as_ref()) {
        Some(c) if !webhooks.contains_key(&c.value) => {
            diags.at_value(
                file,
                c,
                format!(
                    "notify.ops_channel: unknown channel `{}`: expected one of the webhooks under notify.webhooks ({})",
                    c.value,
                    webhooks.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
            None
        }
        Some(c) => Some(c.value.clone()),
        None => webhooks
            .contains_key(DEFAULT_OPS_CHANNEL)
            .then(|| DEFAULT_OPS_CHANNEL.to_string()),
    };
    Notify {
        email,
        webhooks,
        delivery,
        ops_channel,
    }
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
            tokens.push(TokenConfig {
                name: t.name.value.clone(),
                role,
                branches,
                person: t.person.as_ref().map(|p| p.value.clone()),
                sha256,
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
        request_timeout: opt_fixed(
            file,
            &l.request_timeout,
            "limits.request_timeout",
            d.request_timeout,
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
    }
}

/// A count that must be at least 1: zero would silently disable the thing it
/// sizes (no request could pass, no event could be written), so it is an error.
fn positive(
    file: &str,
    v: &Option<S<usize>>,
    field: &str,
    default: usize,
    diags: &mut Diagnostics,
) -> usize {
    match v {
        None => default,
        Some(n) if n.value == 0 => {
            diags.at_value(
                file,
                n,
                format!("{field}: must be at least 1 (leave it out for the default, {default})"),
            );
            default
        }
        Some(n) => n.value,
    }
}

fn probe(file: &str, system: &S, p: &ProbeFile, diags: &mut Diagnostics) -> ProbeConfig {
    let given = [p.http.is_some(), p.tcp.is_some(), p.command.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given != 1 {
        diags.at(
            file,
            system.referenced,
            format!(
                "probe of `{}`: give exactly one of `http: URL`, `tcp: HOST:PORT` or `command: [PROGRAM, ARG, …]`",
                system.value
            ),
        );
    }
    if let Some(u) = &p.http
        && !(u.value.starts_with("http://") || u.value.starts_with("https://"))
    {
        diags.at_value(
            file,
            u,
            format!("probe.http: `{}` is not an http(s) URL", u.value),
        );
    }
    if let Some(t) = &p.tcp
        && !t.value.contains(':')
    {
        diags.at_value(
            file,
            t,
            format!("probe.tcp: `{}`: expected HOST:PORT", t.value),
        );
    }
    if let Some(c) = &p.command
        && c.value.is_empty()
    {
        diags.at_value(file, c, "probe.command: expected [PROGRAM, ARG, …]");
    }
    let value = p.value.as_ref().map(|v| {
        if p.http.is_none() {
            diags.at_value(
                file,
                &v.path,
                "probe.value: reads an `http` probe's JSON body: give `http`",
            );
        }
        if v.warn.is_none() && v.critical.is_none() {
            diags.at_value(
                file,
                &v.path,
                "probe.value: give `warn`, `critical` or both",
            );
        }
        if let (Some(w), Some(c)) = (v.warn, v.critical)
            && w > c
        {
            diags.at_value(
                file,
                &v.path,
                format!("probe.value: warn ({w}) is above critical ({c})"),
            );
        }
        ValueProbe {
            path: v.path.value.split('.').map(str::to_string).collect(),
            warn: v.warn,
            critical: v.critical,
            kind: v.kind.clone().unwrap_or_else(|| "value.high".into()),
        }
    });
    ProbeConfig {
        http: p.http.as_ref().map(|v| v.value.clone()),
        tcp: p.tcp.as_ref().map(|v| v.value.clone()),
        command: p.command.as_ref().map(|v| v.value.clone()),
        expect_status: p.expect_status,
        expect_body: p.expect_body.clone(),
        value,
        interval: opt_fixed(
            file,
            &p.interval,
            "probe.interval",
            Duration::from_secs(15),
            diags,
        ),
        timeout: opt_fixed(
            file,
            &p.timeout,
            "probe.timeout",
            Duration::from_secs(3),
            diags,
        ),
        failures: p.failures.unwrap_or(3).max(1),
        successes: p.successes.unwrap_or(2).max(1),
    }
}

fn maintenance(
    file: &str,
    raw: &ConfigFile,
    branch_ids: &BTreeSet<String>,
    diags: &mut Diagnostics,
) -> Vec<MaintenanceWindow> {
    let mut out = Vec::new();
    for m in &raw.maintenance {
        let start = crate::schedule::Schedule::parse(&m.start.value)
            .map_err(|e| diags.at_value(file, &m.start, format!("maintenance.start: {e}")))
            .ok();
        let duration = fixed(file, &m.duration, "maintenance.duration", diags);
        if let BranchSelection::List(l) = &m.branches.value {
            for b in l {
                if !branch_ids.contains(b) {
                    diags.at_value(
                        file,
                        &m.branches,
                        format!("maintenance.branches: unknown branch `{b}`"),
                    );
                }
            }
        }
        if m.matchers.is_empty() {
            diags.at_value(
                file,
                &m.name,
                format!(
                    "maintenance `{}`: give `matchers` (e.g. {{ system: core-banking }}): a window without them would silence every event of its branches",
                    m.name.value
                ),
            );
        }
        if let (Some(start), Some(duration)) = (start, duration) {
            out.push(MaintenanceWindow {
                name: m.name.value.clone(),
                start,
                duration,
                branches: m.branches.value.clone(),
                matchers: m.matchers.clone(),
            });
        }
    }
    out
}

/// The longest digest window or webhook interval: the delivery worker
/// remembers each recipient's last message for this long.
const WINDOW_MAX: Duration = Duration::from_secs(3600);

/// A digest window or webhook interval: a duration up to an hour, where `0s`
/// (unlike other durations) means "none".
fn window(
    file: &str,
    v: &Option<S>,
    field: &str,
    default: Duration,
    diags: &mut Diagnostics,
) -> Duration {
    let Some(s) = v else { return default };
    if humantime::parse_duration(s.value.trim()).is_ok_and(|d| d.is_zero()) {
        return Duration::ZERO;
    }
    match fixed(file, s, field, diags) {
        Some(d) if d > WINDOW_MAX => {
            diags.at_value(
                file,
                s,
                format!(
                    "{field}: `{}` is longer than 1h: expected at most `1h`, or `0s` for none",
                    s.value
                ),
            );
            default
        }
        Some(d) => d,
        None => default,
    }
}
