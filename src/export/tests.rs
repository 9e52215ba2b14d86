use super::*;
use crate::store::audit::Chain;

fn key() -> AuditKey {
    AuditKey::from_bytes(&[7u8; 32])
}

const BODY: &str = r#"{"id":1,"status":"resolved","steps":[{"id":"switch"}]}"#;

/// An export of one incident: its stored bytes, the row that digested them,
/// two history lines (one from another incident in between is left out).
fn exported(body_digest: &str) -> Vec<u8> {
    let k = key();
    let mut chain = Chain::after(None, Some(k.clone()), false);
    let marker = chain.marker("2026-12-01T01:00:00.000Z");
    let state = chain.append(
        "2026-12-01T01:00:00.000Z",
        "incident-state:1",
        "incident.saved",
        "branchguard",
        "engine",
        body_digest,
    );
    let opened = chain.append(
        "2026-12-01T01:00:00.000Z",
        "incident:1",
        "incident.opened",
        "event",
        "engine",
        "core down",
    );
    let _other = chain.append(
        "2026-12-01T01:01:00.000Z",
        "incident:2",
        "incident.opened",
        "event",
        "engine",
        "x",
    );
    let acked = chain.append(
        "2026-12-01T01:02:00.000Z",
        "incident:1",
        "step.acknowledged",
        "it.a",
        "ops",
        "switch",
    );
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    let mut out = Vec::new();
    let mut w = ExportWriter::new(
        &k,
        at("2026-12-01T00:00:00Z"),
        at("2026-12-02T00:00:00Z"),
        &mut out,
    );
    for r in [
        Record::Chain {
            head: chain.head(),
            signed_from: Some(marker.seq),
        },
        Record::Incident {
            id: 1,
            opened_at: at("2026-12-01T01:00:00Z"),
            body: BODY.to_string(),
        },
        Record::Audit(state),
        Record::Audit(opened),
        Record::Audit(acked),
    ] {
        w.record(r).unwrap();
    }
    let counts = w.finish().unwrap();
    assert_eq!((counts.lines, counts.history, counts.audit), (6, 2, 1));
    out
}

fn check(file: &[u8]) -> Verdict {
    verify(file, &key()).unwrap()
}

fn broken_at(v: &Verdict) -> u64 {
    match v {
        Verdict::Broken { line, .. } => *line,
        Verdict::Ok { .. } => panic!("an altered export verified"),
    }
}

#[test]
fn an_export_verifies_with_its_key_and_not_with_another() {
    let file = exported(&digest(BODY));
    match check(&file) {
        Verdict::Ok { counts, from, .. } => {
            assert_eq!(
                (counts.incidents, counts.history, counts.audit, counts.lines),
                (1, 2, 1, 6)
            );
            assert_eq!(from, "2026-12-01T00:00:00Z");
        }
        other => panic!("{other:?}"),
    }
    let other = AuditKey::from_bytes(&[8u8; 32]);
    assert!(matches!(
        verify(&file[..], &other).unwrap(),
        Verdict::Broken { line: 1, .. }
    ));
}

/// Every single byte of the file matters: each one changed is caught, at
/// its own line or (for a line break) where the lines stop making sense.
#[test]
fn any_one_changed_byte_is_caught_at_its_line() {
    let file = exported(&digest(BODY));
    let line_of = |i: usize| file[..i].iter().filter(|b| **b == b'\n').count() as u64 + 1;
    for i in 0..file.len() {
        let mut bad = file.clone();
        bad[i] = if bad[i] == b'a' { b'b' } else { b'a' };
        let at = broken_at(&check(&bad));
        assert!(
            at == line_of(i) || (file[i] == b'\n' && at <= line_of(i) + 1),
            "byte {i} ({:?}) changed: broken at line {at}, not {}",
            file[i] as char,
            line_of(i)
        );
    }
}

#[test]
fn removed_inserted_moved_and_cut_lines_are_caught() {
    let file = exported(&digest(BODY));
    let text = String::from_utf8(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let join = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    // Line 4 removed: line 5 no longer follows.
    let mut removed = lines.clone();
    removed.remove(3);
    assert_eq!(broken_at(&check(join(&removed).as_bytes())), 4);
    // A line repeated.
    let mut twice = lines.clone();
    twice.insert(3, lines[3]);
    assert_eq!(broken_at(&check(join(&twice).as_bytes())), 5);
    // Two lines swapped.
    let mut moved = lines.clone();
    moved.swap(3, 4);
    assert_eq!(broken_at(&check(join(&moved).as_bytes())), 4);
    // The end cut off, and everything after the header.
    match check(join(&lines[..5]).as_bytes()) {
        Verdict::Broken {
            line: 6, reason, ..
        } => assert!(reason.contains("end"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(broken_at(&check(join(&lines[..1]).as_bytes())), 2);
    assert_eq!(broken_at(&check(b"")), 1);
}

/// Signed by someone with the key from a database whose incident row was
/// edited: the line signatures hold, the audit chain's digest does not.
#[test]
fn an_incident_that_differs_from_its_audited_digest_is_named() {
    let file = exported(&digest(r#"{"id":1,"status":"open"}"#));
    match check(&file) {
        Verdict::Broken { line, what, reason } => {
            assert_eq!((line, what.as_str()), (2, "incident 1"));
            assert!(reason.contains("incident.saved"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// An audit row altered and the export re-signed with the key: the row's
/// chain hash, which the database's chain holds, no longer matches.
#[test]
fn an_altered_audit_row_fails_its_chain_hash_even_when_the_file_is_re_signed() {
    let file = exported(&digest(BODY));
    let text = String::from_utf8(file).unwrap();
    let k = key();
    let mut s = Signer {
        key: &k,
        prev: String::new(),
    };
    let mut forged = String::new();
    for l in text.lines() {
        let (content, _) = split(l).unwrap();
        let content = content.replace("\"by\":\"it.a\"", "\"by\":\"mallory\"");
        forged.push_str(&s.line(&content));
    }
    match check(forged.as_bytes()) {
        Verdict::Broken { line, what, reason } => {
            assert_eq!((line, what.as_str()), (5, "history line, audit row 5"));
            assert!(reason.contains("audit-chain hash"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
