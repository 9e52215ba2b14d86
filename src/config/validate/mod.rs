//! Turns the raw files into the typed model, checking every value and every
//! reference between files. Problems are collected, never thrown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::Location;
use sha2::{Digest, Sha256};

mod branches;
mod channels;
mod config;
mod drill;
mod playbook;
mod roster;

use config::compile_config;
use drill::compile_drill;
use playbook::compile_playbook;

use super::files::*;
use super::model::*;
use crate::diag::{Diagnostics, parse_yaml};
use crate::duration::Delay;
use crate::event::Severity;
use crate::schedule::Schedule;
use crate::target::Target;
use crate::template::Template;

/// Loads the config file and the playbook and drill directories it names.
/// Whether a directory entry is one a load reads: a `.yaml` or `.yml` file.
pub fn is_yaml_file(p: &Path) -> bool {
    p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Where the records are kept, read from the configuration file alone.
#[derive(Debug, Clone)]
pub struct Records {
    pub data_dir: PathBuf,
    pub key_file: PathBuf,
    /// The database.
    pub store: crate::config::Database,
    /// The bank's zone, in which an export's dates are whole days.
    pub timezone: chrono_tz::Tz,
}

/// The data directory and the audit key file that `config_path` names,
/// without checking the rest of it: `audit verify` needs no API token
/// variables, playbooks or network, and works beside a running daemon.
pub fn records(config_path: &Path) -> Result<Records, Diagnostics> {
    #[derive(serde::Deserialize)]
    struct Loose {
        data_dir: Option<String>,
        audit: Option<LooseAudit>,
        timezone: Option<S>,
        store: Option<crate::config::files::StoreFile>,
    }
    #[derive(serde::Deserialize)]
    struct LooseAudit {
        key_file: Option<String>,
    }
    let mut diags = Diagnostics::default();
    let file = display(config_path);
    let text = match std::fs::read_to_string(config_path) {
        Ok(t) => t,
        Err(e) => {
            diags.file(&file, format!("cannot read config file: {e}"));
            return Err(diags);
        }
    };
    let raw: Loose = match parse_yaml(&file, &text) {
        Ok(r) => r,
        Err(d) => {
            diags.push(d);
            return Err(diags);
        }
    };
    let base = config_path.parent().unwrap_or(Path::new(""));
    let rel = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base.join(p) }
    };
    let data_dir = rel(raw.data_dir.as_deref().unwrap_or("data"));
    let key_file = raw
        .audit
        .and_then(|a| a.key_file)
        .map_or_else(|| data_dir.join("audit.key"), |k| rel(&k));
    let store = config::store(&file, &data_dir, raw.store.as_ref(), &mut diags);
    if !diags.is_empty() {
        return Err(diags);
    }
    let timezone = match &raw.timezone {
        Some(v) => match zone(&file, v, &mut diags) {
            Some(tz) => tz,
            None => return Err(diags),
        },
        None => chrono_tz::Tz::UTC,
    };
    Ok(Records {
        data_dir,
        key_file,
        store,
        timezone,
    })
}

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
            // The playbooks and drills are still read, so their own mistakes are
            // reported in the same run; checks against the configuration wait.
            parse_others(config_path, &text, &mut diags);
            return Err(diags);
        }
    };
    let base = config_path.parent().unwrap_or(Path::new(""));
    let playbooks_at = raw.playbooks_dir.as_ref().map(|s| s.referenced);
    let drills_at = raw.drills_dir.as_ref().map(|s| s.referenced);
    let rosters_at = raw.rosters_dir.as_ref().map(|s| s.referenced);
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

    event_loops(&playbooks, &mut diags);
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

    let rosters = roster::load_rosters(&config, &file, rosters_at, &mut diags);
    if diags.is_empty() {
        Ok(Loaded {
            config: Arc::new(config),
            playbooks,
            drills,
            rosters,
            warnings: diags.1,
        })
    } else {
        Err(diags)
    }
}

/// Where the directories are, read leniently from a config file that did not
/// parse as a whole (the defaults when even that fails).
#[derive(Debug, Default, serde::Deserialize)]
struct LooseDirs {
    playbooks_dir: Option<String>,
    drills_dir: Option<String>,
}

/// With a broken config file: parses the playbook and drill files for what can
/// be checked on their own (YAML, fields, types).
fn parse_others(config_path: &Path, text: &str, diags: &mut Diagnostics) {
    let base = config_path.parent().unwrap_or(Path::new(""));
    let dirs: LooseDirs = serde_saphyr::from_str(text).unwrap_or_default();
    let rel = |p: Option<String>, default: &str| {
        let p = PathBuf::from(p.unwrap_or_else(|| default.to_string()));
        if p.is_absolute() { p } else { base.join(p) }
    };
    let playbooks = rel(dirs.playbooks_dir, "playbooks");
    let drills = rel(dirs.drills_dir, "drills");
    let mut ignore = Diagnostics::default();
    for (path, text) in read_dir_yaml(&playbooks, "", "", None, &mut ignore) {
        if let Err(d) = parse_yaml::<PlaybookFile>(&display(&path), &text) {
            diags.push(d);
        }
    }
    for (path, text) in read_dir_yaml(&drills, "", "", None, &mut ignore) {
        if let Err(d) = parse_yaml::<DrillFile>(&display(&path), &text) {
            diags.push(d);
        }
    }
}

fn display(p: &Path) -> String {
    let s = p.display().to_string();
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}

pub(super) fn read_dir_yaml(
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
        .filter(|p| is_yaml_file(p))
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

/// An IANA time zone, or a precise error at the value.
pub(super) fn zone(file: &str, v: &S, diags: &mut Diagnostics) -> Option<chrono_tz::Tz> {
    v.value
        .parse::<chrono_tz::Tz>()
        .map_err(|_| {
            diags.at_value(
                file,
                v,
                format!(
                    "timezone: unknown time zone `{}`: expected an IANA name such as Asia/Shanghai",
                    v.value
                ),
            )
        })
        .ok()
}

pub(super) fn delay(file: &str, v: &S, field: &str, diags: &mut Diagnostics) -> Option<Delay> {
    Delay::parse(&v.value)
        .map_err(|e| diags.at_value(file, v, format!("{field}: {e}")))
        .ok()
}

pub(super) fn fixed(file: &str, v: &S, field: &str, diags: &mut Diagnostics) -> Option<Duration> {
    match delay(file, v, field, diags)? {
        Delay::Fixed(d) => Some(d),
        Delay::WorkingDays(_) => {
            diags.at_value(file, v, format!("{field}: working days are not allowed here: expected a duration such as `30s` or `10m`"));
            None
        }
    }
}

pub(super) fn opt_fixed(
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

pub(super) fn percent(
    file: &str,
    v: &Option<S>,
    field: &str,
    default: f64,
    diags: &mut Diagnostics,
) -> f64 {
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

pub(super) fn roster(
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

pub(super) fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty() && domain.contains('.') && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Checks that a target is well-formed and names something that exists.
pub(super) fn target(
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
        Target::Contact(c) if !allow_channel => Some(format!(
            "`contact:{c}` names no people: expected a person, role or head"
        )),
        Target::Contact(c) if !cfg.contacts.contains_key(c) => Some(format!(
            "unknown contact `{c}`: expected one of contacts ({})",
            cfg.contacts.keys().cloned().collect::<Vec<_>>().join(", ")
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
pub(super) fn template(
    file: &str,
    v: &S,
    field: &str,
    diags: &mut Diagnostics,
) -> Option<Template> {
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

/// A count that must be at least 1: zero would silently disable the thing it
/// sizes (no request could pass, no event could be written), so it is an error.
pub(super) fn positive(
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

/// Whether a step's `event` may open playbook `q`: its kind is `q`'s
/// trigger, and no fixed label or its severity rules it out (a templated
/// label might match, so it counts).
fn may_open(action: &Action, q: &Playbook) -> bool {
    let Action::Event {
        kind,
        labels,
        severity,
        ..
    } = action
    else {
        return false;
    };
    let t = &q.trigger;
    *kind == t.kind
        && t.severity_at_least.is_none_or(|s| *severity >= s)
        && t.labels.iter().all(|(k, v)| {
            labels
                .get(k)
                .is_some_and(|l| l.fixed().is_none_or(|f| f == v))
        })
}

/// Steps whose `event` opens a playbook that, through others, opens the
/// step's own playbook again: a loop `check` can see. (The daemon stops any
/// chain after a few incidents anyway.)
fn event_loops(playbooks: &[Arc<Playbook>], diags: &mut Diagnostics) {
    let next = |p: &Playbook| -> Vec<usize> {
        let mut out: Vec<usize> = playbooks
            .iter()
            .enumerate()
            .filter(|(_, q)| p.steps.iter().any(|s| may_open(&s.action, q)))
            .map(|(i, _)| i)
            .collect();
        out.dedup();
        out
    };
    for p in playbooks {
        for s in &p.steps {
            let Action::Event { kind, at, .. } = &s.action else {
                continue;
            };
            // Walk from what this step opens; a path back to `p` is a loop.
            let mut seen: BTreeSet<usize> = BTreeSet::new();
            let mut todo: Vec<(usize, Vec<String>)> = playbooks
                .iter()
                .enumerate()
                .filter(|(_, q)| may_open(&s.action, q))
                .map(|(i, q)| (i, vec![q.id.clone()]))
                .collect();
            while let Some((i, path)) = todo.pop() {
                if playbooks[i].id == p.id {
                    diags.at_pos(
                        &p.file,
                        at.0,
                        at.1,
                        format!(
                            "steps.{}.action.event.kind: `{kind}` opens {}, which opens `{}` again: a loop (each incident would open the next)",
                            s.id,
                            path.join(" → "),
                            p.id
                        ),
                    );
                    break;
                }
                if !seen.insert(i) {
                    continue;
                }
                for j in next(&playbooks[i]) {
                    let mut longer = path.clone();
                    longer.push(playbooks[j].id.clone());
                    todo.push((j, longer));
                }
            }
        }
    }
}
