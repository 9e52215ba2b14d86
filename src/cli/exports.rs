//! `branchguard export` and `audit verify --file`: the auditor's file,
//! written from the database and checked without it (`crate::export`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::emit;
use crate::config::Records;
use crate::export::{self, Verdict};
use crate::store::audit::{self, AuditKey};

/// The key from the environment, else from the configuration's key file.
fn key(records: Option<&Records>) -> anyhow::Result<AuditKey> {
    let from_file = match records {
        Some(r) => AuditKey::load(&r.key_file)?,
        None => AuditKey::load(Path::new(""))?,
    };
    match from_file {
        Some(k) => Ok(k),
        None => bail!(
            "no audit key: an export is signed with it; give audit.key_file in the configuration ({}) or {} (hex)",
            records.map_or_else(
                || "--config".to_string(),
                |r| r.key_file.display().to_string()
            ),
            audit::KEY_ENV
        ),
    }
}

/// `migrate --from-sqlite DIR`: the SQLite database copied into the
/// configuration's PostgreSQL database, and the copy's audit log checked.
pub fn migrate(r: &Records, from: &Path) -> anyhow::Result<ExitCode> {
    let key = crate::store::AuditKey::load(&r.key_file)?.with_context(|| {
        format!(
            "no audit key at {} (nor in {}): the copy's audit log is checked with it",
            r.key_file.display(),
            audit::KEY_ENV
        )
    })?;
    let (copied, check) = crate::store::migrate_from_sqlite(from, &r.store, key)
        .with_context(|| format!("cannot copy {} into {}", from.display(), r.store))?;
    for (table, rows) in &copied {
        outln!("{table}: {rows} rows");
    }
    match check {
        crate::store::AuditCheck::Ok { rows, .. } => {
            outln!(
                "copied into {}: audit log ok ({rows} rows, signed chain intact)",
                r.store
            );
            Ok(ExitCode::SUCCESS)
        }
        crate::store::AuditCheck::Broken { seq, reason } => {
            outln!("the copy's audit log is BROKEN at row {seq}: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

pub fn export(r: &Records, from: &str, to: &str, out: &Path) -> anyhow::Result<ExitCode> {
    let bound = |v: &str, end: bool, flag: &str| {
        crate::response::period_bound(v, end, r.timezone).with_context(|| {
            format!("invalid {flag} `{v}`: expected a date (2026-12-01) or an RFC 3339 time")
        })
    };
    let (from_t, to_t) = (bound(from, false, "--from")?, bound(to, true, "--to")?);
    if from_t >= to_t {
        bail!("--from {from} is not before --to {to}");
    }
    let key = key(Some(r))?;
    let store =
        crate::store::open_reader(&r.store).with_context(|| format!("cannot open {}", r.store))?;
    // An export carries the database's evidence; a broken log is said first.
    let published = audit::read_head(&r.data_dir, &key).map_err(anyhow::Error::msg)?;
    if let crate::store::AuditCheck::Broken { seq, reason } =
        store.verify_audit(Some(key.clone()), published.map(|(h, _)| h))?
    {
        bail!(
            "the audit log is broken at row {seq} ({reason}): nothing exported; see `branchguard audit verify`"
        );
    }
    let file = open_new(out)?;
    let mut w = std::io::BufWriter::new(&file);
    let written = export::write(store.as_ref(), &key, from_t, to_t, &mut w).and_then(|c| {
        Ok(w.into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
            .map(|_| c)?)
    });
    match written {
        Ok(c) => {
            outln!(
                "exported {} incident{} ({} history lines, {} audit rows, {} outbox rows) to {}: {} lines, each signed with the audit key",
                c.incidents,
                if c.incidents == 1 { "" } else { "s" },
                c.history,
                c.audit,
                c.outbox,
                out.display(),
                c.lines
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // Half a file would fail verification anyway; leave none.
            let _ = std::fs::remove_file(out);
            Err(e).with_context(|| format!("cannot export to {}", out.display()))
        }
    }
}

/// A new file, its owner's only: an export holds every message's text.
fn open_new(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (an export never overwrites a file)",
                path.display()
            )
        })
}

pub fn verify_file(path: &Path, r: Option<&Records>) -> anyhow::Result<ExitCode> {
    let key = key(r)?;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let verdict = export::verify(std::io::BufReader::new(file), &key)
        .with_context(|| format!("cannot read {}", path.display()))?;
    match verdict {
        Verdict::Ok {
            counts: c,
            from,
            to,
        } => {
            outln!(
                "export ok: {} incident{} opened from {from} to {to}, {} history lines, {} audit rows, {} outbox rows; all {} lines signed and in order, audit rows match their chain hashes, incidents their audited digests",
                c.incidents,
                if c.incidents == 1 { "" } else { "s" },
                c.history,
                c.audit,
                c.outbox,
                c.lines
            );
            Ok(ExitCode::SUCCESS)
        }
        Verdict::Broken { line, what, reason } => {
            let what = if what.is_empty() {
                String::new()
            } else {
                format!(" ({what})")
            };
            outln!("export BROKEN at line {line}{what}: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}
