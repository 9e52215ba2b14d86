//! Turns the raw files into the typed model, checking every value and every
//! reference between files. Problems are collected, never thrown.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde_saphyr::Location;
use sha2::{Digest, Sha256};

use super::files::*;
use super::model::*;
use crate::diag::{Diagnostics, parse_yaml};
use crate::duration::{Calendar, Delay, parse_weekday};
use crate::event::Severity;
use crate::schedule::Schedule;
use crate::target::Target;
use crate::template::Template;

/// Loads the config file and the playbook and drill directories it names.
pub fn load(config_path: &Path) -> Result<Loaded, Diagnostics> {
    let mut diags = Diagnostics::default();
    let file = display(config_path);
    let text = match std::fs::read_to_string(config_path) {
        Ok(t) => t,
        Err(e) => {
            diags.file(&file, format!("cannot read config file: {e}"));
            return Err(diags);
        }
    };
    let raw: ConfigFile = match parse_yaml(&file, &text) {
        Ok(r) => r,
        Err(d) => {
            diags.push(d);
            return Err(diags);
        }
    };
    let base = config_path.parent().unwrap_or(Path::new(""));
    let playbooks_at = raw.playbooks_dir.as_ref().map(|s| s.referenced);
    let drills_at = raw.drills_dir.as_ref().map(|s| s.referenced);
    let config = compile_config(&file, base, raw, &mut diags);

    let playbook_files = read_dir_yaml(
        &config.playbooks_dir,
        &file,
        "playbooks_dir",
        playbooks_at,
        &mut diags,
    );
    let mut playbooks: Vec<Arc<Playbook>> = Vec::new();
    let mut seen_pb: BTreeMap<String, String> = BTreeMap::new();
    let mut unreadable_playbook = false;
    for (path, text) in playbook_files {
        let pfile = display(&path);
        match parse_yaml::<PlaybookFile>(&pfile, &text) {
            Err(d) => {
                diags.push(d);
                unreadable_playbook = true;
            }
            Ok(raw) => {
                if let Some(prev) = seen_pb.get(&raw.id.value) {
                    diags.at_value(
                        &pfile,
                        &raw.id,
                        format!(
                            "duplicate playbook id `{}`: already defined in {prev}",
                            raw.id.value
                        ),
                    );
                    continue;
                }
                seen_pb.insert(raw.id.value.clone(), pfile.clone());
                if let Some(pb) = compile_playbook(&pfile, &text, raw, &config, &mut diags) {
                    playbooks.push(Arc::new(pb));
                }
            }
        }
    }

    let drill_files = read_dir_yaml(
        &config.drills_dir,
        &file,
        "drills_dir",
        drills_at,
        &mut diags,
    );
    let mut drills = Vec::new();
    let mut seen_drill: BTreeMap<String, String> = BTreeMap::new();
    for (path, text) in drill_files {
        let dfile = display(&path);
        match parse_yaml::<DrillFile>(&dfile, &text) {
            Err(d) => diags.push(d),
            Ok(raw) => {
                if let Some(prev) = seen_drill.get(&raw.id.value) {
                    diags.at_value(
                        &dfile,
                        &raw.id,
                        format!(
                            "duplicate drill id `{}`: already defined in {prev}",
                            raw.id.value
                        ),
                    );
                    continue;
                }
                seen_drill.insert(raw.id.value.clone(), dfile.clone());
                // A drill whose playbook failed to load is reported against the playbook
                // only; one that could not even be parsed may hold any id.
                let playbook_failed = unreadable_playbook
                    || (seen_pb.contains_key(&raw.playbook.value)
                        && !playbooks.iter().any(|p| p.id == raw.playbook.value));
                if let Some(d) = compile_drill(
                    &dfile,
                    raw,
                    &config,
                    &playbooks,
                    playbook_failed,
                    &mut diags,
                ) {
                    drills.push(Arc::new(d));
                }
            }
        }
    }

    if diags.is_empty() {
        Ok(Loaded {
            config: Arc::new(config),
            playbooks,
            drills,
        })
    } else {
        Err(diags)
    }
}

fn display(p: &Path) -> String {
    let s = p.display().to_string();
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}

fn read_dir_yaml(
    dir: &Path,
    cfg_file: &str,
    field: &str,
    written_at: Option<Location>,
    diags: &mut Diagnostics,
) -> Vec<(PathBuf, String)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // The default directory may simply not exist: no playbooks or drills of that kind.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && written_at.is_none() => {
            return Vec::new();
        }
        Err(e) => {
            let msg = format!("{field}: cannot read directory {}: {e}", dir.display());
            match written_at {
                Some(at) => diags.at(cfg_file, at, msg),
                None => diags.file(cfg_file, msg),
            }
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        match std::fs::read_to_string(&p) {
            Ok(t) => out.push((p, t)),
            Err(e) => diags.file(&display(&p), format!("cannot read file: {e}")),
        }
    }
    out
}

fn delay(file: &str, v: &S, field: &str, diags: &mut Diagnostics) -> Option<Delay> {
    Delay::parse(&v.value)
        .map_err(|e| diags.at_value(file, v, format!("{field}: {e}")))
        .ok()
}

fn fixed(file: &str, v: &S, field: &str, diags: &mut Diagnostics) -> Option<Duration> {
    match delay(file, v, field, diags)? {
        Delay::Fixed(d) => Some(d),
        Delay::WorkingDays(_) => {
            diags.at_value(file, v, format!("{field}: working days are not allowed here: expected a duration such as `30s` or `10m`"));
            None
        }
    }
}

fn opt_fixed(
    file: &str,
    v: &Option<S>,
    field: &str,
    default: Duration,
    diags: &mut Diagnostics,
) -> Duration {
    v.as_ref()
        .and_then(|v| fixed(file, v, field, diags))
        .unwrap_or(default)
}

fn percent(file: &str, v: &Option<S>, field: &str, default: f64, diags: &mut Diagnostics) -> f64 {
    let Some(v) = v else { return default };
    let parsed = v
        .value
        .trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<f64>().ok());
    match parsed {
        Some(p) if (0.0..=100.0).contains(&p) => p / 100.0,
        _ => {
            diags.at_value(
                file,
                v,
                format!(
                    "{field}: invalid percentage `{}`: expected e.g. `10%`",
                    v.value
                ),
            );
            default
        }
    }
}

fn compile_config(file: &str, base: &Path, raw: ConfigFile, diags: &mut Diagnostics) -> Config {
    let rel = |p: Option<String>, default: &str| -> PathBuf {
        let p = PathBuf::from(p.unwrap_or_else(|| default.to_string()));
        if p.is_absolute() { p } else { base.join(p) }
    };
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

    // Branches first: people and neighbours refer to them.
    let mut branches: BTreeMap<String, Branch> = BTreeMap::new();
    let branch_ids: BTreeSet<String> = raw.branches.iter().map(|b| b.id.value.clone()).collect();
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
            let probe = s.probe.as_ref().map(|p| {
                match (&p.http, &p.tcp) {
                    (Some(_), Some(t)) => {
                        diags.at_value(file, t, "probe: give either `http` or `tcp`, not both")
                    }
                    (None, None) => diags.at(
                        file,
                        s.name.referenced,
                        format!(
                            "probe of `{}`: expected `http: URL` or `tcp: HOST:PORT`",
                            s.name.value
                        ),
                    ),
                    (Some(u), None)
                        if !(u.value.starts_with("http://") || u.value.starts_with("https://")) =>
                    {
                        diags.at_value(
                            file,
                            u,
                            format!("probe.http: `{}` is not an http(s) URL", u.value),
                        )
                    }
                    (None, Some(t)) if !t.value.contains(':') => diags.at_value(
                        file,
                        t,
                        format!("probe.tcp: `{}`: expected HOST:PORT", t.value),
                    ),
                    _ => {}
                }
                ProbeConfig {
                    http: p.http.as_ref().map(|v| v.value.clone()),
                    tcp: p.tcp.as_ref().map(|v| v.value.clone()),
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
            });
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

    let mut webhooks = BTreeMap::new();
    let mut email = None;
    let mut delivery = DeliveryConfig {
        retry_initial: Duration::from_secs(5),
        retry_max: Duration::from_secs(300),
        horizon: Duration::from_secs(24 * 3600),
        link_ttl: Duration::from_secs(72 * 3600),
    };
    if let Some(n) = &raw.notify {
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
                },
            );
        }
    }

    let host = match &raw.host {
        Some(h) => HostConfig {
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
        },
        None => HostConfig {
            interval: Duration::from_secs(15),
            disk_free_min_ratio: 0.10,
            memory_used_max_ratio: 0.90,
        },
    };

    let mut tokens = Vec::new();
    for t in raw.auth.iter().flat_map(|a| a.tokens.iter()) {
        let role = match t.role.value.as_str() {
            "ops" => TokenRole::Ops,
            "branch-head" => TokenRole::BranchHead,
            "viewer" => TokenRole::Viewer,
            other => {
                diags.at_value(file, &t.role, format!("auth.tokens.role: unknown role `{other}`: expected ops, branch-head or viewer"));
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
        if let Some(p) = &t.person
            && !people.contains_key(&p.value)
        {
            diags.at_value(
                file,
                p,
                format!("auth.tokens.person: unknown person `{}`", p.value),
            );
        }
        if t.token_env.is_some() == t.token_sha256.is_some() {
            diags.at_value(
                file,
                &t.name,
                format!(
                    "auth token `{}`: give exactly one of `token_env` or `token_sha256`",
                    t.name.value
                ),
            );
        }
        if let Some(h) = &t.token_sha256
            && (h.value.len() != 64 || !h.value.chars().all(|c| c.is_ascii_hexdigit()))
        {
            diags.at_value(
                file,
                h,
                "auth.tokens.token_sha256: expected 64 hexadecimal characters",
            );
        }
        tokens.push(TokenConfig {
            name: t.name.value.clone(),
            role,
            branches: t.branches.iter().map(|b| b.value.clone()).collect(),
            person: t.person.as_ref().map(|p| p.value.clone()),
            token_env: t.token_env.clone(),
            token_sha256: t
                .token_sha256
                .as_ref()
                .map(|h| h.value.to_ascii_lowercase()),
        });
    }

    let engine = EngineConfig {
        command_timeout: raw.engine.as_ref().map_or(Duration::from_secs(600), |e| {
            opt_fixed(
                file,
                &e.command_timeout,
                "engine.command_timeout",
                Duration::from_secs(600),
                diags,
            )
        }),
        max_batch: raw
            .engine
            .as_ref()
            .and_then(|e| e.max_batch)
            .unwrap_or(1000)
            .max(1),
    };

    Config {
        file: PathBuf::from(file),
        listen,
        public_url,
        data_dir: rel(raw.data_dir, "data"),
        playbooks_dir: rel(raw.playbooks_dir.map(|s| s.value), "playbooks"),
        drills_dir: rel(raw.drills_dir.map(|s| s.value), "drills"),
        spool_dir: rel(raw.spool_dir, "spool"),
        calendar,
        email,
        webhooks,
        roster: roster(&people),
        people,
        branches,
        host,
        tokens,
        engine,
        delivery,
    }
}

fn roster(
    people: &BTreeMap<String, Person>,
) -> std::collections::HashMap<(String, String), Vec<String>> {
    let mut r: std::collections::HashMap<(String, String), Vec<String>> =
        std::collections::HashMap::new();
    for p in people.values() {
        for b in &p.branches {
            for role in &p.roles {
                r.entry((b.clone(), role.clone()))
                    .or_default()
                    .push(p.id.clone());
            }
        }
    }
    r
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty() && domain.contains('.') && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Checks that a target is well-formed and names something that exists.
fn target(
    file: &str,
    v: &S,
    field: &str,
    cfg: &Config,
    allow_channel: bool,
    diags: &mut Diagnostics,
) -> Option<Target> {
    let t = match Target::parse(&v.value) {
        Ok(t) => t,
        Err(e) => {
            diags.at_value(file, v, format!("{field}: {e}"));
            return None;
        }
    };
    let problem = match &t {
        Target::Person(p) if !cfg.people.contains_key(p) => Some(format!("unknown person `{p}`")),
        Target::Role(r) if !cfg.people.values().any(|p| p.roles.contains(r)) => Some(format!(
            "unknown role `{r}`: no person in the configuration has it"
        )),
        Target::BranchHead | Target::NeighbourHeads
            if !cfg.people.values().any(|p| p.roles.contains("branch-head")) =>
        {
            Some("no person in the configuration has the role `branch-head`".to_string())
        }
        Target::Channel(c) if !allow_channel => Some(format!(
            "`channel:{c}` names no people: expected a person, role or head"
        )),
        Target::Channel(c) if !cfg.webhooks.contains_key(c) => Some(format!(
            "unknown channel `{c}`: expected one of the webhooks under notify.webhooks ({})",
            cfg.webhooks.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
        _ => None,
    };
    match problem {
        Some(p) => {
            diags.at_value(file, v, format!("{field}: {p}"));
            None
        }
        None => Some(t),
    }
}

/// Checks a template, pointing at the bad placeholder when the value is on one line.
fn template(file: &str, v: &S, field: &str, diags: &mut Diagnostics) -> Option<Template> {
    match Template::parse(&v.value) {
        Ok(t) => Some(t),
        Err(e) => {
            let loc = v.referenced;
            let quoted = loc.span().len() as usize > v.value.chars().count();
            let col = if v.value.contains('\n') {
                loc.column()
            } else {
                loc.column() + e.offset as u64 + u64::from(quoted)
            };
            diags.at_pos(file, loc.line(), col, format!("{field}: {}", e.message));
            None
        }
    }
}

fn compile_playbook(
    file: &str,
    text: &str,
    raw: PlaybookFile,
    cfg: &Config,
    diags: &mut Diagnostics,
) -> Option<Playbook> {
    let before = diags.len();
    if raw.id.value.trim().is_empty() {
        diags.at_value(file, &raw.id, "id: must not be empty");
    }
    if raw.steps.is_empty() {
        diags.at_value(file, &raw.id, "steps: a playbook needs at least one step");
    }
    let mut labels_re = BTreeMap::new();
    for (k, v) in &raw.trigger.labels_re {
        match anchored(&v.value) {
            Ok(r) => {
                labels_re.insert(k.clone(), Pattern(r));
            }
            Err(e) => diags.at_value(
                file,
                v,
                format!("trigger.labels_re.{k}: invalid regular expression: {e}"),
            ),
        }
    }
    let group_by: Vec<String> = match &raw.group_by {
        Some(g) => {
            for v in g {
                if v.value.trim().is_empty() {
                    diags.at_value(file, v, "group_by: empty field name");
                }
            }
            g.iter().map(|v| v.value.clone()).collect()
        }
        None => vec!["branch".to_string()],
    };
    let mut tiers: Vec<Tier> = Vec::new();
    for t in &raw.tiers {
        if t.level.value == 0 {
            diags.at_value(file, &t.level, "tiers.level: levels start at 1");
        }
        if tiers.iter().any(|x| x.level == t.level.value) {
            diags.at_value(
                file,
                &t.level,
                format!("tiers: duplicate level {}", t.level.value),
            );
        }
        tiers.push(Tier {
            level: t.level.value,
            name: t.name.clone(),
            labels: t.labels.clone(),
            severity_at_least: t.severity_at_least,
        });
    }
    tiers.sort_by_key(|t| t.level);

    let mut steps: Vec<Step> = Vec::new();
    let mut step_ids = BTreeSet::new();
    for s in &raw.steps {
        let sid = &s.id.value;
        if sid.trim().is_empty() {
            diags.at_value(file, &s.id, "steps.id: must not be empty");
        }
        if !step_ids.insert(sid.clone()) {
            diags.at_value(file, &s.id, format!("duplicate step id `{sid}`"));
        }
        let f = |name: &str| format!("steps.{sid}.{name}");
        let assignee = s
            .assignee
            .as_ref()
            .and_then(|a| target(file, a, &f("assignee"), cfg, true, diags));
        let action = s.action.as_ref().map_or(Some(Action::Task), |a| {
            compile_action(file, &a.value, a.referenced, sid, cfg, diags)
        });
        let deadline = delay(file, &s.deadline, &f("deadline"), diags);
        let weight = match &s.weight {
            Some(w) if !(w.value > 0.0 && w.value.is_finite()) => {
                diags.at_value(
                    file,
                    w,
                    format!("{}: must be a positive number", f("weight")),
                );
                1.0
            }
            Some(w) => w.value,
            None => 1.0,
        };
        let mut escalate = Vec::new();
        for e in &s.escalate {
            let after = delay(file, &e.after, &f("escalate.after"), diags);
            if e.to.is_empty() {
                diags.at_value(
                    file,
                    &e.after,
                    format!("{}: needs at least one target", f("escalate.to")),
                );
            }
            let to: Vec<Target> =
                e.to.iter()
                    .filter_map(|t| target(file, t, &f("escalate.to"), cfg, true, diags))
                    .collect();
            if let Some(after) = after {
                escalate.push(Escalation { after, to });
            }
        }
        let after_resolved = match &s.after {
            Some(a) if a.value == "resolved" => true,
            Some(a) => {
                diags.at_value(
                    file,
                    a,
                    format!(
                        "{}: unknown value `{}`: expected `resolved`",
                        f("after"),
                        a.value
                    ),
                );
                false
            }
            None => false,
        };
        let when = s
            .when
            .as_ref()
            .and_then(|w| match TierCondition::parse(&w.value) {
                Err(e) => {
                    diags.at_value(file, w, format!("{}: {e}", f("when")));
                    None
                }
                Ok(_) if tiers.is_empty() => {
                    diags.at_value(
                        file,
                        w,
                        format!(
                            "{}: `{}` but the playbook defines no tiers",
                            f("when"),
                            w.value
                        ),
                    );
                    None
                }
                Ok(c) if !tiers.iter().any(|t| t.level == c.level) => {
                    let levels: Vec<String> = tiers.iter().map(|t| t.level.to_string()).collect();
                    diags.at_value(
                        file,
                        w,
                        format!(
                            "{}: tier {} is not defined: the playbook's tiers are {}",
                            f("when"),
                            c.level,
                            levels.join(", ")
                        ),
                    );
                    None
                }
                Ok(c) => Some(c),
            });
        if let (Some(action), Some(deadline)) = (action, deadline) {
            steps.push(Step {
                id: sid.clone(),
                title: s.title.clone().unwrap_or_else(|| sid.replace('-', " ")),
                assignee,
                action,
                deadline,
                critical: s.critical,
                weight,
                escalate,
                after_resolved,
                when,
            });
        }
    }
    if diags.len() > before {
        return None;
    }
    Some(Playbook {
        id: raw.id.value,
        name: raw.name,
        description: raw.description,
        version: hex::encode(&Sha256::digest(text.as_bytes())[..6]),
        file: file.to_string(),
        trigger: Trigger {
            kind: raw.trigger.kind.value,
            labels: raw.trigger.labels,
            labels_re,
            severity_at_least: raw.trigger.severity_at_least,
        },
        group_by,
        resolve: raw.resolve,
        tiers,
        steps,
    })
}

fn compile_action(
    file: &str,
    a: &ActionFile,
    at: Location,
    sid: &str,
    cfg: &Config,
    diags: &mut Diagnostics,
) -> Option<Action> {
    let f = |name: &str| format!("steps.{sid}.action.{name}");
    let kinds: Vec<(&str, Location)> = [
        ("task", a.task.as_ref().map(|v| v.referenced)),
        ("notify", a.notify.as_ref().map(|v| v.referenced)),
        ("webhook", a.webhook.as_ref().map(|v| v.referenced)),
        ("command", a.command.as_ref().map(|v| v.referenced)),
        ("roll_call", a.roll_call.as_ref().map(|v| v.referenced)),
    ]
    .into_iter()
    .filter_map(|(k, l)| l.map(|l| (k, l)))
    .collect();
    let kind = match kinds.as_slice() {
        [(one, _)] => *one,
        [] => {
            diags.at(file, at, format!("steps.{sid}.action: expected one of task, notify, webhook, command or roll_call"));
            return None;
        }
        [_, (second, l), ..] => {
            diags.at(file, *l, format!("steps.{sid}.action: `{second}` given together with `{}`: a step has one action", kinds[0].0));
            return None;
        }
    };
    if let Some(b) = &a.body
        && kind != "webhook"
    {
        diags.at_value(
            file,
            b,
            format!(
                "{}: `body` belongs to a `webhook` action, not `{kind}`",
                f("body")
            ),
        );
    }
    if let Some(t) = &a.timeout
        && kind != "command"
    {
        diags.at_value(
            file,
            t,
            format!(
                "{}: `timeout` belongs to a `command` action, not `{kind}`",
                f("timeout")
            ),
        );
    }
    match kind {
        "task" => Some(Action::Task),
        "notify" => {
            let list = a.notify.as_ref()?;
            if list.value.is_empty() {
                diags.at_value(
                    file,
                    list,
                    format!("{}: needs at least one target", f("notify")),
                );
            }
            let ts: Vec<Target> = list
                .value
                .iter()
                .filter_map(|t| target(file, t, &f("notify"), cfg, true, diags))
                .collect();
            (ts.len() == list.value.len()).then_some(Action::Notify(ts))
        }
        "webhook" => {
            let ch = a.webhook.as_ref()?;
            if !cfg.webhooks.contains_key(&ch.value) {
                diags.at_value(
                    file,
                    ch,
                    format!(
                        "{}: unknown channel `{}`: it is not under notify.webhooks",
                        f("webhook"),
                        ch.value
                    ),
                );
                return None;
            }
            let body = match &a.body {
                Some(b) => Some(template(file, b, &f("body"), diags)?),
                None => None,
            };
            Some(Action::Webhook {
                channel: ch.value.clone(),
                body,
            })
        }
        "command" => {
            let argv = a.command.as_ref()?;
            if argv.value.is_empty() {
                diags.at_value(
                    file,
                    argv,
                    format!("{}: needs at least the program to run", f("command")),
                );
                return None;
            }
            let args: Vec<Template> = argv
                .value
                .iter()
                .filter_map(|t| template(file, t, &f("command"), diags))
                .collect();
            let timeout = opt_fixed(
                file,
                &a.timeout,
                &f("timeout"),
                cfg.engine.command_timeout,
                diags,
            );
            (args.len() == argv.value.len()).then_some(Action::Command {
                argv: args,
                timeout,
            })
        }
        "roll_call" => {
            let t = a.roll_call.as_ref()?;
            target(file, t, &f("roll_call"), cfg, false, diags).map(Action::RollCall)
        }
        _ => None,
    }
}

fn compile_drill(
    file: &str,
    raw: DrillFile,
    cfg: &Config,
    playbooks: &[Arc<Playbook>],
    playbook_failed: bool,
    diags: &mut Diagnostics,
) -> Option<Drill> {
    let before = diags.len();
    let pb = playbooks.iter().find(|p| p.id == raw.playbook.value);
    if pb.is_none() && !playbook_failed {
        let known: Vec<&str> = playbooks.iter().map(|p| p.id.as_str()).collect();
        diags.at_value(
            file,
            &raw.playbook,
            format!(
                "playbook: unknown playbook `{}`: expected one of {}",
                raw.playbook.value,
                known.join(", ")
            ),
        );
    }
    let schedule = raw.schedule.as_ref().and_then(|s| {
        Schedule::parse(&s.value)
            .map_err(|e| diags.at_value(file, s, format!("schedule: {e}")))
            .ok()
    });
    if let BranchSelection::List(list) = &raw.branches.value {
        if list.is_empty() {
            diags.at_value(
                file,
                &raw.branches,
                "branches: expected `all` or at least one branch",
            );
        }
        for b in list {
            if !cfg.branches.contains_key(b) {
                diags.at_value(
                    file,
                    &raw.branches,
                    format!("branches: unknown branch `{b}`"),
                );
            }
        }
    }
    let mut targets = BTreeMap::new();
    for (step, v) in &raw.targets {
        if let Some(pb) = pb
            && !pb.steps.iter().any(|s| &s.id == step)
        {
            diags.at_value(
                file,
                v,
                format!("targets.{step}: playbook `{}` has no step `{step}`", pb.id),
            );
        }
        if let Some(d) = delay(file, v, &format!("targets.{step}"), diags) {
            targets.insert(step.clone(), d);
        }
    }
    let severity = raw.event.severity.unwrap_or(Severity::Major);
    if let Some(pb) = pb {
        let probe = crate::event::Event {
            kind: raw.event.kind.value.clone(),
            branch: String::new(),
            severity,
            status: crate::event::Status::Firing,
            labels: raw.event.labels.clone(),
            summary: None,
            occurred_at: chrono::DateTime::UNIX_EPOCH,
            source: "drill".into(),
        };
        if !crate::matching::triggers(pb, &probe) {
            diags.at_value(file, &raw.event.kind, format!("event: this event would not trigger playbook `{}` (kind, labels or severity differ)", pb.id));
        }
    }
    let timeout = opt_fixed(
        file,
        &raw.timeout,
        "timeout",
        Duration::from_secs(30 * 60),
        diags,
    );
    let starting_deadline = opt_fixed(
        file,
        &raw.starting_deadline,
        "starting_deadline",
        Duration::from_secs(30 * 60),
        diags,
    );
    let pass_score = match &raw.pass_score {
        Some(p) if !(0.0..=100.0).contains(&p.value) => {
            diags.at_value(
                file,
                p,
                format!("pass_score: {} is out of range: expected 0 to 100", p.value),
            );
            80.0
        }
        Some(p) => p.value,
        None => 80.0,
    };
    if diags.len() > before || pb.is_none() {
        return None;
    }
    Some(Drill {
        id: raw.id.value.clone(),
        name: raw.name.unwrap_or(raw.id.value),
        file: file.to_string(),
        playbook: raw.playbook.value,
        schedule,
        branches: raw.branches.value,
        event: DrillEvent {
            kind: raw.event.kind.value,
            severity,
            labels: raw.event.labels,
            summary: raw.event.summary,
        },
        targets,
        timeout,
        missed: raw.missed,
        starting_deadline,
        pass_score,
        live: raw.live,
    })
}
