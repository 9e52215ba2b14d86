//! The export for auditors (`branchguard export`, `audit verify --file`):
//! a period's incidents with their history, outbox and audit rows as JSON
//! Lines, checkable without the database.
//!
//! Two things hold a file together. Each line ends with `"mac"`, an
//! HMAC-SHA256 with the audit key over the line's exact bytes before it and
//! the previous line's `mac`, so a changed byte, a removed, inserted or
//! moved line breaks the line where it happened or the next; the closing
//! `end` line counts the lines, so a cut-off file is caught. And each
//! history and audit line is the database's own audit row with its chain
//! hash, checked again here, and each incident's exact stored bytes must
//! match the digest its last `incident.saved` row recorded: the export
//! carries the database's evidence, not only the exporter's word. Outbox
//! rows are not in the audit chain; the line signatures alone cover them.
//!
//! **Invariant:** an export line is signed over its exact bytes; no
//! re-serialisation sits between what was read and what is checked.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::store::audit::{AuditKey, hash, keyed_hash};
use crate::store::records::{Record, incident_of};
use crate::store::{OutboxRow, Reader, StoreError};

/// The format's version, in the first line.
pub const FORMAT: u32 = 1;

/// The longest line `verify` reads (an incident with a long history is a
/// few hundred kilobytes).
const MAX_LINE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored incident {0} is not valid JSON: {1}")]
    Body(i64, serde_json::Error),
}

/// What was written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub incidents: u64,
    pub history: u64,
    pub audit: u64,
    pub outbox: u64,
    pub lines: u64,
}

/// Signs lines in order.
struct Signer<'k> {
    key: &'k AuditKey,
    prev: String,
}

impl Signer<'_> {
    fn mac(key: &AuditKey, prev: &str, content: &str) -> String {
        key.sign(&["export-v1", prev, content])
    }

    /// `content` (one JSON object) with its `mac` as the last field.
    fn line(&mut self, content: &str) -> String {
        let mac = Signer::mac(self.key, &self.prev, content);
        let body = content.strip_suffix('}').unwrap_or(content);
        let line = format!("{body},\"mac\":\"{mac}\"}}\n");
        self.prev = mac;
        line
    }
}

#[derive(Serialize)]
struct IncidentLine<'a> {
    r#type: &'static str,
    id: i64,
    opened_at: DateTime<Utc>,
    /// The stored bytes, as they are.
    body: &'a RawValue,
}

#[derive(Deserialize)]
struct RowLine {
    r#type: String,
    seq: i64,
    at: String,
    entity: String,
    what: String,
    by: String,
    via: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

fn outbox_json(o: &OutboxRow) -> serde_json::Value {
    serde_json::json!({
        "type": "outbox",
        "id": o.id,
        "incident": o.incident,
        "step": o.step,
        "channel": o.channel.as_str(),
        "target": o.target,
        "recipient": o.recipient,
        "person": o.person,
        "subject": o.subject,
        "body": o.body,
        "payload": o.payload,
        "created_at": o.created_at,
        "attempts": o.attempts,
        "delivered_at": o.delivered_at,
        "failed_at": o.failed_at,
        "last_error": o.last_error,
        "urgent": o.urgent,
    })
}

/// Writes records as signed lines.
pub struct ExportWriter<'a> {
    signer: Signer<'a>,
    out: &'a mut dyn Write,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    counts: Counts,
}

impl<'a> ExportWriter<'a> {
    pub fn new(
        key: &'a AuditKey,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        out: &'a mut dyn Write,
    ) -> ExportWriter<'a> {
        ExportWriter {
            signer: Signer {
                key,
                prev: String::new(),
            },
            out,
            from,
            to,
            counts: Counts::default(),
        }
    }

    fn put(&mut self, content: &str) -> std::io::Result<()> {
        self.counts.lines += 1;
        self.out.write_all(self.signer.line(content).as_bytes())
    }

    /// One record, as a backend gives them ([`Record`]'s order).
    pub fn record(&mut self, r: Record) -> Result<(), ExportError> {
        let c = &mut self.counts;
        let content = match r {
            Record::Chain { head, signed_from } => serde_json::json!({
                "type": "export",
                "format": FORMAT,
                "from": self.from,
                "to": self.to,
                "written_at": crate::clock::now(),
                "chain": { "rows": head.rows, "hash": head.hash },
                "signed_from": signed_from,
            })
            .to_string(),
            Record::Incident {
                id,
                opened_at,
                body,
            } => {
                c.incidents += 1;
                let raw = RawValue::from_string(body).map_err(|e| ExportError::Body(id, e))?;
                serde_json::to_string(&IncidentLine {
                    r#type: "incident",
                    id,
                    opened_at,
                    body: &raw,
                })
                .map_err(|e| ExportError::Body(id, e))?
            }
            Record::Audit(a) => {
                let kind = if a.entity.starts_with("incident:") {
                    c.history += 1;
                    "history"
                } else {
                    c.audit += 1;
                    "audit"
                };
                serde_json::json!({
                    "type": kind,
                    "seq": a.seq,
                    "at": a.at,
                    "entity": a.entity,
                    "what": a.what,
                    "by": a.by,
                    "via": a.via,
                    "detail": a.detail,
                    "prev_hash": a.prev_hash,
                    "hash": a.hash,
                })
                .to_string()
            }
            Record::Outbox(o) => {
                c.outbox += 1;
                outbox_json(&o).to_string()
            }
        };
        Ok(self.put(&content)?)
    }

    /// The closing line, which counts the lines.
    pub fn finish(mut self) -> Result<Counts, ExportError> {
        let c = self.counts.clone();
        let end = serde_json::json!({
            "type": "end",
            "lines": c.lines + 1,
            "incidents": c.incidents,
            "history": c.history,
            "audit": c.audit,
            "outbox": c.outbox,
        })
        .to_string();
        self.put(&end)?;
        self.out.flush()?;
        Ok(self.counts)
    }
}

/// Writes every incident opened in `[from, to)` to `out`, signed with `key`.
pub fn write(
    reader: &dyn Reader,
    key: &AuditKey,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<Counts, ExportError> {
    let mut w = ExportWriter::new(key, from, to, out);
    // The sink speaks the store's error; ours is kept aside and given back.
    let mut fault = None;
    let read = reader.records(from, to, &mut |r| {
        w.record(r).map_err(|e| {
            fault = Some(e);
            StoreError::Corrupt {
                what: "export".into(),
                detail: "stopped".into(),
            }
        })
    });
    read.map_err(|e| fault.take().unwrap_or(ExportError::Store(e)))?;
    w.finish()
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok {
        counts: Counts,
        from: String,
        to: String,
    },
    Broken {
        /// The line (from 1) where the file stops being what was exported.
        line: u64,
        /// What that line is (`history line, audit row 812`), when it can be read.
        what: String,
        reason: String,
    },
}

fn digest(body: &str) -> String {
    hex::encode(Sha256::digest(body.as_bytes()))
}

/// Splits a line into its signed content and its `mac`.
fn split(line: &str) -> Option<(String, &str)> {
    const TAG: &str = ",\"mac\":\"";
    let rest = line.strip_suffix("\"}")?;
    let at = rest.len().checked_sub(64)?;
    let mac = rest.get(at..)?;
    let body = rest.get(..at)?.strip_suffix(TAG)?;
    mac.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| (format!("{body}}}"), mac))
}

/// What a line is, for a person: its type and id.
fn describe(v: &serde_json::Value) -> String {
    let n = |k: &str| v[k].as_i64().map(|n| n.to_string()).unwrap_or_default();
    match v["type"].as_str() {
        Some("incident") => format!("incident {}", n("id")),
        Some("history") => format!("history line, audit row {}", n("seq")),
        Some("audit") => format!("audit row {}", n("seq")),
        Some("outbox") => format!("outbox row {}", n("id")),
        Some(t) => t.to_string(),
        None => "unreadable".to_string(),
    }
}

struct Check<'k> {
    key: &'k AuditKey,
    prev: String,
    line: u64,
    counts: Counts,
    period: Option<(String, String)>,
    signed_from: Option<i64>,
    ended: bool,
    /// Incident id -> (its line, the digest of its stored bytes).
    incidents: HashMap<i64, (u64, String)>,
    /// Incident id -> the digest its last `incident.saved` row recorded.
    saved: HashMap<i64, String>,
    last_audit: Option<(i64, String)>,
    seen_audit: HashSet<i64>,
}

type Fault = (String, String);

impl Check<'_> {
    fn fault(what: &str, reason: impl Into<String>) -> Result<(), Fault> {
        Err((what.to_string(), reason.into()))
    }

    fn line(&mut self, text: &str) -> Result<(), Fault> {
        if self.ended {
            return Check::fault("", "there is a line after the closing `end` line");
        }
        let Some((content, mac)) = split(text) else {
            return Check::fault(
                "",
                "it does not end with its signature (`\"mac\"`): it was changed or is not part of an export",
            );
        };
        let v: serde_json::Value = serde_json::from_str(&content).unwrap_or_default();
        let what = describe(&v);
        let want = Signer::mac(self.key, &self.prev, &content);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            want.as_bytes(),
            mac.as_bytes(),
        )) {
            return Check::fault(
                &what,
                "its signature does not hold: the line was changed, or a line before it was removed, inserted or moved (or the file was signed with another audit key)",
            );
        }
        self.prev = mac.to_string();
        let first = self.line == 1;
        match (v["type"].as_str(), first) {
            (Some("export"), true) => {
                if v["format"].as_u64() != Some(u64::from(FORMAT)) {
                    return Check::fault(&what, format!("format {} is not {FORMAT}", v["format"]));
                }
                self.signed_from = v["signed_from"].as_i64();
                self.period = Some((
                    v["from"].as_str().unwrap_or_default().to_string(),
                    v["to"].as_str().unwrap_or_default().to_string(),
                ));
                Ok(())
            }
            (_, true) => Check::fault(&what, "the first line is not the export's header"),
            (Some("incident"), _) => self.incident(&what, &content),
            (Some("history" | "audit"), _) => self.audit(&what, &content),
            (Some("outbox"), _) => {
                self.counts.outbox += 1;
                let id = v["incident"].as_i64().unwrap_or(-1);
                if !self.incidents.contains_key(&id) {
                    return Check::fault(&what, format!("incident {id} is not in the export"));
                }
                Ok(())
            }
            (Some("end"), _) => {
                self.ended = true;
                if v["lines"].as_u64() != Some(self.line) {
                    return Check::fault(
                        &what,
                        format!("it counts {} lines, the file has {}", v["lines"], self.line),
                    );
                }
                Ok(())
            }
            _ => Check::fault(&what, "unknown line type"),
        }
    }

    fn incident(&mut self, what: &str, content: &str) -> Result<(), Fault> {
        #[derive(Deserialize)]
        struct Line<'a> {
            id: i64,
            #[serde(borrow)]
            body: &'a RawValue,
        }
        let l: Line<'_> = serde_json::from_str(content)
            .map_err(|e| (what.to_string(), format!("not an incident line: {e}")))?;
        self.counts.incidents += 1;
        self.incidents
            .insert(l.id, (self.line, digest(l.body.get())));
        Ok(())
    }

    fn audit(&mut self, what: &str, content: &str) -> Result<(), Fault> {
        let a: RowLine = serde_json::from_str(content)
            .map_err(|e| (what.to_string(), format!("not an audit line: {e}")))?;
        let Some(id) = incident_of(&a.entity) else {
            return Check::fault(what, format!("`{}` is not about an incident", a.entity));
        };
        if !self.incidents.contains_key(&id) {
            return Check::fault(what, format!("incident {id} is not in the export"));
        }
        if (a.r#type == "history") != a.entity.starts_with("incident:") {
            return Check::fault(what, "its type does not match its entity");
        }
        if !self.seen_audit.insert(a.seq) {
            return Check::fault(what, "the same audit row appears twice");
        }
        if let Some((seq, h)) = &self.last_audit
            && a.seq == seq + 1
            && &a.prev_hash != h
        {
            return Check::fault(
                what,
                "its prev_hash is not the hash of the audit row before it",
            );
        }
        let signed = self.signed_from.is_some_and(|s| a.seq > s);
        let want = if signed {
            keyed_hash(
                self.key,
                &a.prev_hash,
                a.seq,
                &a.at,
                &a.entity,
                &a.what,
                &a.by,
                &a.via,
                &a.detail,
            )
        } else {
            hash(
                &a.prev_hash,
                a.seq,
                &a.at,
                &a.entity,
                &a.what,
                &a.by,
                &a.detail,
            )
        };
        if want != a.hash {
            return Check::fault(
                what,
                "its content does not match its audit-chain hash: it is not the row the database's chain holds",
            );
        }
        if a.what == "incident.saved" {
            self.saved.insert(id, a.detail.clone());
        }
        if a.r#type == "history" {
            self.counts.history += 1;
        } else {
            self.counts.audit += 1;
        }
        self.last_audit = Some((a.seq, a.hash));
        Ok(())
    }

    /// After the last line: the end was there, and each incident's bytes
    /// are those its audit rows recorded.
    fn finish(self) -> Verdict {
        if !self.ended {
            return Verdict::Broken {
                line: self.line + 1,
                what: String::new(),
                reason:
                    "the file ends without its closing `end` line: lines were removed from its end"
                        .into(),
            };
        }
        let mut order: Vec<(&i64, &(u64, String))> = self.incidents.iter().collect();
        order.sort_by_key(|(_, (line, _))| *line);
        for (id, (line, have)) in order {
            if let Some(want) = self.saved.get(id)
                && want != have
            {
                return Verdict::Broken {
                    line: *line,
                    what: format!("incident {id}"),
                    reason: "its stored bytes differ from the digest its last `incident.saved` audit row recorded".into(),
                };
            }
        }
        let (from, to) = self.period.unwrap_or_default();
        let mut counts = self.counts;
        counts.lines = self.line;
        Verdict::Ok { counts, from, to }
    }
}

/// Checks an export with the audit key; an I/O error is the caller's to report.
pub fn verify(mut input: impl BufRead, key: &AuditKey) -> std::io::Result<Verdict> {
    let mut c = Check {
        key,
        prev: String::new(),
        line: 0,
        counts: Counts::default(),
        period: None,
        signed_from: None,
        ended: false,
        incidents: HashMap::new(),
        saved: HashMap::new(),
        last_audit: None,
        seen_audit: HashSet::new(),
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = std::io::Read::take(&mut input, MAX_LINE).read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        c.line += 1;
        let line = c.line;
        let broken = |what: String, reason: String| Verdict::Broken { line, what, reason };
        if buf.last() != Some(&b'\n') && n as u64 == MAX_LINE {
            return Ok(broken(
                String::new(),
                format!("it is longer than {} MiB", MAX_LINE >> 20),
            ));
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            return Ok(broken(String::new(), "it is not UTF-8".into()));
        };
        let text = text.strip_suffix('\n').unwrap_or(text);
        if let Err((what, reason)) = c.line(text) {
            return Ok(broken(what, reason));
        }
    }
    if c.line == 0 {
        return Ok(Verdict::Broken {
            line: 1,
            what: String::new(),
            reason: "the file is empty".into(),
        });
    }
    Ok(c.finish())
}

#[cfg(test)]
mod tests;
